//! Counters and gauges, exposed as Prometheus text on `/metrics`.

use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};

use tokio::sync::watch;

use crate::sip::register::RegistrationState;
use crate::store::StoreStats;

/// Process-wide counters. Gauges that are cheaper to compute on demand
/// (operators online, calls by state) are passed to [`Metrics::render`].
#[derive(Debug, Default)]
pub struct Metrics {
    /// Open presence sockets.
    pub presence_sockets: AtomicI64,
    /// Open audio sockets.
    pub audio_sockets: AtomicI64,
    /// Frames from operators to the carrier.
    pub frames_to_carrier: AtomicU64,
    /// Frames from the carrier to operators.
    pub frames_to_operator: AtomicU64,
    /// Frames dropped by a full queue (slow peer).
    pub frames_dropped: AtomicU64,
    /// Calls ended, total.
    pub calls_ended: AtomicU64,
    /// Failed API-key attempts.
    pub auth_failures: AtomicU64,
    /// Each registering SIP trunk's name and registration state (set once
    /// the SIP endpoint has started).
    pub sip_registrations: Mutex<Vec<(String, watch::Receiver<RegistrationState>)>>,
    /// 1 while the node drains (see [`crate::engine::Engine::drain`]).
    pub draining: AtomicU64,
    /// Calls of other nodes that operators here take part in.
    pub remote_calls: AtomicU64,
    /// The call store's record-write counters (set when the engine is
    /// built).
    pub store: OnceLock<Arc<StoreStats>>,
}

impl Metrics {
    /// Adds one to a counter.
    pub fn inc(c: &AtomicU64) {
        c.fetch_add(1, Relaxed);
    }

    /// Renders the exposition text. `tasks_alive` is the runtime's live task
    /// count (every socket and call owns tasks, so a leak shows here first).
    pub fn render(
        &self,
        operators_online: usize,
        calls_by_state: &[(&str, usize)],
        tasks_alive: usize,
    ) -> String {
        let mut s = String::with_capacity(1024);
        let _ = writeln!(
            s,
            "# HELP audin_operators_online Operators with an authenticated presence socket \
             (on every node of the cluster with --cluster)."
        );
        let _ = writeln!(s, "# TYPE audin_operators_online gauge");
        let _ = writeln!(s, "audin_operators_online {operators_online}");
        let _ = writeln!(
            s,
            "# HELP audin_draining 1 while this node drains (SIGTERM): no new calls or sessions."
        );
        let _ = writeln!(s, "# TYPE audin_draining gauge");
        let _ = writeln!(s, "audin_draining {}", self.draining.load(Relaxed));
        let _ = writeln!(
            s,
            "# HELP audin_remote_calls Calls owned by other nodes that operators on this node are offered or hold."
        );
        let _ = writeln!(s, "# TYPE audin_remote_calls gauge");
        let _ = writeln!(s, "audin_remote_calls {}", self.remote_calls.load(Relaxed));
        let _ = writeln!(s, "# HELP audin_calls Live calls on this node by state.");
        let _ = writeln!(s, "# TYPE audin_calls gauge");
        for (state, n) in calls_by_state {
            let _ = writeln!(s, "audin_calls{{state=\"{state}\"}} {n}");
        }
        let _ = writeln!(s, "# HELP audin_calls_ended_total Calls ended since start.");
        let _ = writeln!(s, "# TYPE audin_calls_ended_total counter");
        let _ = writeln!(
            s,
            "audin_calls_ended_total {}",
            self.calls_ended.load(Relaxed)
        );
        let _ = writeln!(s, "# HELP audin_sockets_open Open WebSockets by kind.");
        let _ = writeln!(s, "# TYPE audin_sockets_open gauge");
        let _ = writeln!(
            s,
            "audin_sockets_open{{kind=\"presence\"}} {}",
            self.presence_sockets.load(Relaxed)
        );
        let _ = writeln!(
            s,
            "audin_sockets_open{{kind=\"audio\"}} {}",
            self.audio_sockets.load(Relaxed)
        );
        let _ = writeln!(s, "# HELP audin_frames_relayed_total Audio frames relayed.");
        let _ = writeln!(s, "# TYPE audin_frames_relayed_total counter");
        let _ = writeln!(
            s,
            "audin_frames_relayed_total{{direction=\"to_carrier\"}} {}",
            self.frames_to_carrier.load(Relaxed)
        );
        let _ = writeln!(
            s,
            "audin_frames_relayed_total{{direction=\"to_operator\"}} {}",
            self.frames_to_operator.load(Relaxed)
        );
        let _ = writeln!(
            s,
            "# HELP audin_frames_dropped_total Audio frames dropped for a slow peer."
        );
        let _ = writeln!(s, "# TYPE audin_frames_dropped_total counter");
        let _ = writeln!(
            s,
            "audin_frames_dropped_total {}",
            self.frames_dropped.load(Relaxed)
        );
        let _ = writeln!(
            s,
            "# HELP audin_api_key_failures_total Failed API-key attempts."
        );
        let _ = writeln!(s, "# TYPE audin_api_key_failures_total counter");
        let _ = writeln!(
            s,
            "audin_api_key_failures_total {}",
            self.auth_failures.load(Relaxed)
        );
        let _ = writeln!(
            s,
            "# HELP audin_runtime_tasks_alive Tasks alive on the server's runtime."
        );
        let _ = writeln!(s, "# TYPE audin_runtime_tasks_alive gauge");
        let _ = writeln!(s, "audin_runtime_tasks_alive {tasks_alive}");
        self.render_registrations(&mut s);
        self.render_store(&mut s);
        s
    }

    /// The record-write queue: a growing `queued` or any `retries` means
    /// the store is (or was) unreachable; `dropped` means records were lost.
    fn render_store(&self, s: &mut String) {
        let Some(stats) = self.store.get() else {
            return;
        };
        let (queued, retries, dropped) = stats.snapshot();
        let _ = writeln!(
            s,
            "# HELP audin_store_record_writes_queued Call record writes waiting for the store."
        );
        let _ = writeln!(s, "# TYPE audin_store_record_writes_queued gauge");
        let _ = writeln!(s, "audin_store_record_writes_queued {queued}");
        let _ = writeln!(
            s,
            "# HELP audin_store_record_write_retries_total Call record writes retried while the store was unreachable."
        );
        let _ = writeln!(s, "# TYPE audin_store_record_write_retries_total counter");
        let _ = writeln!(s, "audin_store_record_write_retries_total {retries}");
        let _ = writeln!(
            s,
            "# HELP audin_store_record_writes_dropped_total Call record writes lost (queue full or refused)."
        );
        let _ = writeln!(s, "# TYPE audin_store_record_writes_dropped_total counter");
        let _ = writeln!(s, "audin_store_record_writes_dropped_total {dropped}");
    }

    /// One 0/1 gauge per registering trunk and state (an alert on
    /// `state="failed"` catches a trunk that stopped taking our REGISTERs).
    fn render_registrations(&self, s: &mut String) {
        let registrations = self.sip_registrations.lock().expect("metrics lock");
        if registrations.is_empty() {
            return;
        }
        let _ = writeln!(
            s,
            "# HELP audin_sip_registration SIP trunk registration state (1 = current)."
        );
        let _ = writeln!(s, "# TYPE audin_sip_registration gauge");
        for (trunk, state) in registrations.iter() {
            let current = state.borrow().as_str();
            for label in ["registered", "failed", "unregistered"] {
                // Trunk names are `[A-Za-z0-9_.-]` (checked when configured):
                // nothing to escape in a label.
                let _ = writeln!(
                    s,
                    "audin_sip_registration{{trunk=\"{trunk}\",state=\"{label}\"}} {}",
                    u8::from(current == label)
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registering_trunks_show_their_current_state() {
        let metrics = Metrics::default();
        assert!(!metrics.render(0, &[], 1).contains("audin_sip_registration"));
        let (state, rx) = watch::channel(RegistrationState::Registered { expires: 3600 });
        *metrics.sip_registrations.lock().unwrap() = vec![("tr_1".into(), rx)];
        let text = metrics.render(0, &[], 1);
        assert!(text.contains("audin_sip_registration{trunk=\"tr_1\",state=\"registered\"} 1"));
        assert!(text.contains("audin_sip_registration{trunk=\"tr_1\",state=\"failed\"} 0"));
        state.send_replace(RegistrationState::Failed { status: Some(403) });
        let text = metrics.render(0, &[], 1);
        assert!(text.contains("audin_sip_registration{trunk=\"tr_1\",state=\"failed\"} 1"));
        assert!(text.contains("audin_sip_registration{trunk=\"tr_1\",state=\"registered\"} 0"));
    }
}
