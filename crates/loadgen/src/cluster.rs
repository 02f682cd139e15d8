//! The JSON of `audin-relay-latency --json` (crates/testkit): the cluster
//! benchmark's runs (mode × calls × nodes), read by `audin-loadgen
//! report-cluster` ([`crate::doc::write_cluster`]).
//!
//! The one schema of that file: the binary builds these structs and
//! writes them (`Serialize`), and `report-cluster` reads them back
//! (`Deserialize`). Every field has a default, so a JSON from an older or
//! newer writer still reads.

use serde::{Deserialize, Serialize};

/// One `audin-relay-latency` invocation.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ClusterRun {
    /// `audin-relay-latency`.
    pub tool: String,
    /// `release` or `debug`.
    pub server_build: String,
    /// Seconds measured per run (`--secs`).
    pub secs: u64,
    /// Where it ran.
    pub machine: crate::report::Machine,
    /// One per run, in the order they ran.
    pub steps: Vec<ClusterStep>,
}

/// One run: `calls` concurrent calls in `mode` on `nodes` nodes.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ClusterStep {
    /// `single`, `direct`, `relayed`, `spread` or `spread-steered`.
    pub mode: String,
    /// Nodes running (`single`: 1).
    pub nodes: usize,
    /// Concurrent calls.
    pub calls: usize,
    /// The measured window, seconds.
    pub window_s: f64,
    /// Operators (presence) per node.
    pub operators_per_node: Vec<usize>,
    /// Calls per node (the call's node).
    pub calls_per_node: Vec<usize>,
    /// Audio sockets open per node (from each node's `/metrics`).
    pub audio_sockets_per_node: Vec<f64>,
    /// Calls whose audio socket is not on the call's node.
    pub relayed_calls: usize,
    /// Frame accounting.
    pub frames: ClusterFrames,
    /// Round trip (operator → server(s) → sim echo → operator), ms, all
    /// calls.
    pub rtt_ms: Option<Rtt>,
    /// Round trip of the calls whose audio socket is on the call's node.
    pub rtt_local_ms: Option<Rtt>,
    /// Round trip of the others (frames over NATS both ways).
    pub rtt_relayed_ms: Option<Rtt>,
    /// CPU seconds in the window.
    pub cpu_s: ClusterCpu,
    /// CPU, ms per call-second.
    pub cpu_ms_per_call_second: ClusterCpu,
    /// The whole machine's busy share of all its cores in the window.
    pub whole_machine_share: f64,
    /// VmRSS of the servers, KiB.
    pub rss_kb: ClusterRss,
    /// RSS per call, KiB.
    pub rss_per_call_kb: RssPerCall,
    /// 1-minute load average at the window's start and end.
    pub load_avg_1m: Vec<String>,
}

/// Frames of the window.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ClusterFrames {
    /// Sent.
    pub sent: u64,
    /// Echoed back (first time).
    pub returned: u64,
    /// Not back a second after the window.
    pub lost: u64,
    /// Back with other bytes (must be 0).
    pub altered: u64,
    /// Back twice.
    pub duplicates: u64,
    /// Dropped by the SDK's queues.
    pub sdk_dropped: u64,
}

/// Round-trip percentiles, ms (nearest rank).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Rtt {
    /// Frames.
    pub count: usize,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest.
    pub max: f64,
}

/// CPU by process (seconds, or ms per call-second).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ClusterCpu {
    /// Node 1, node 2, …
    pub nodes: Vec<f64>,
    /// nats-server (none without NATS).
    pub nats_server: Option<f64>,
    /// The nodes and nats-server together.
    pub servers_and_nats: f64,
    /// The load generator (SDK operators).
    pub generator: f64,
    /// The machine's busy time less the processes above.
    pub rest_of_machine: f64,
    /// All of it.
    pub whole_machine: f64,
}

/// VmRSS of the servers, KiB.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ClusterRss {
    /// Node 1, node 2, …
    pub nodes: Vec<RssPoints>,
    /// nats-server (none without NATS).
    pub nats_server: Option<RssPoints>,
}

/// VmRSS of one process at the points of a run, KiB.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct RssPoints {
    /// Before any operator connected.
    pub idle: u64,
    /// Every operator online, before the calls.
    pub online: u64,
    /// When the window opened.
    pub window_start: u64,
    /// When it closed.
    pub window_end: u64,
}

/// RSS per call, KiB.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct RssPerCall {
    /// The nodes together: window start − every operator online.
    pub nodes: f64,
    /// The nodes together: window start − before the operators (one
    /// operator per call).
    pub nodes_with_operator: f64,
    /// nats-server: window start − before the operators.
    pub nats_server: Option<f64>,
}

impl ClusterStep {
    /// The nodes' RSS when the window opened, KiB.
    pub fn nodes_rss_kb(&self) -> u64 {
        self.rss_kb.nodes.iter().map(|r| r.window_start).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::ClusterRun;
    use serde_json::Value;

    // One step of `audin-relay-latency --nodes 3 --modes spread --json`,
    // trimmed to round figures (every key the writer puts out).
    const SAMPLE: &str = r#"{
  "tool": "audin-relay-latency",
  "serverBuild": "release",
  "secs": 20,
  "machine": { "cpus": 2, "cpuModel": "AMD EPYC", "kernel": "6.18.44" },
  "steps": [
    {
      "mode": "spread",
      "nodes": 3,
      "calls": 50,
      "windowS": 20.0,
      "operatorsPerNode": [16, 17, 17],
      "callsPerNode": [17, 17, 16],
      "audioSocketsPerNode": [16.0, 17.0, 17.0],
      "relayedCalls": 34,
      "frames": { "sent": 50000, "returned": 50000, "lost": 0, "altered": 0, "duplicates": 0, "sdkDropped": 0 },
      "rttMs": { "count": 50000, "p50": 0.22, "p90": 0.4, "p99": 0.57, "max": 4.1 },
      "rttLocalMs": { "count": 16000, "p50": 0.09, "p90": 0.2, "p99": 0.31, "max": 3.0 },
      "rttRelayedMs": { "count": 34000, "p50": 0.27, "p90": 0.45, "p99": 0.62, "max": 4.1 },
      "cpuS": { "nodes": [1.09, 1.16, 1.12], "natsServer": 2.65, "serversAndNats": 6.02, "generator": 2.25, "restOfMachine": 0.0, "wholeMachine": 8.27 },
      "cpuMsPerCallSecond": { "nodes": [1.09, 1.16, 1.12], "natsServer": 2.65, "serversAndNats": 6.02, "generator": 2.25, "restOfMachine": 0.0, "wholeMachine": 8.27 },
      "wholeMachineShare": 0.21,
      "rssKb": {
        "nodes": [
          { "idle": 20000, "online": 22000, "windowStart": 24000, "windowEnd": 24100 },
          { "idle": 20000, "online": 22000, "windowStart": 24000, "windowEnd": 24100 },
          { "idle": 20000, "online": 22000, "windowStart": 24000, "windowEnd": 24100 }
        ],
        "natsServer": { "idle": 15000, "online": 15500, "windowStart": 16000, "windowEnd": 16000 }
      },
      "rssPerCallKb": { "nodes": 120.0, "nodesWithOperator": 240.0, "natsServer": 20.0 },
      "loadAvg1m": ["0.72", "0.51"]
    }
  ]
}"#;

    #[test]
    fn reads_the_relay_latency_json() {
        let run: ClusterRun = serde_json::from_str(SAMPLE).unwrap();
        assert_eq!(run.secs, 20);
        assert_eq!(run.machine.cpus, 2);
        let s = &run.steps[0];
        assert_eq!((s.mode.as_str(), s.nodes, s.calls), ("spread", 3, 50));
        assert_eq!(s.relayed_calls, 34);
        assert_eq!(s.frames.sent, 50_000);
        assert_eq!(s.rtt_ms.unwrap().p99, 0.57);
        assert_eq!(s.rtt_relayed_ms.unwrap().p50, 0.27);
        assert_eq!(s.cpu_ms_per_call_second.servers_and_nats, 6.02);
        assert_eq!(s.cpu_ms_per_call_second.nats_server, Some(2.65));
        assert_eq!(s.cpu_ms_per_call_second.nodes.len(), 3);
        assert_eq!(s.nodes_rss_kb(), 72_000);
        assert_eq!(s.rss_per_call_kb.nodes_with_operator, 240.0);
        assert_eq!(s.rss_kb.nats_server.unwrap().window_start, 16_000);
        assert_eq!(s.load_avg_1m, ["0.72", "0.51"]);
    }

    #[test]
    fn missing_and_null_fields_read_as_defaults() {
        let run: ClusterRun = serde_json::from_str(
            r#"{"steps":[{"mode":"single","calls":5,"rttLocalMs":null,"cpuMsPerCallSecond":{"natsServer":null},"extra":1}]}"#,
        )
        .unwrap();
        let s = &run.steps[0];
        assert_eq!(s.calls, 5);
        assert!(s.rtt_ms.is_none() && s.rtt_local_ms.is_none());
        assert_eq!(s.cpu_ms_per_call_second.nats_server, None);
        assert_eq!(s.rss_per_call_kb.nodes, 0.0);
    }

    /// What the binary writes is what `report-cluster` reads: the sample,
    /// read and written again, is the same JSON (same keys, same values,
    /// `null` where it was `null`).
    #[test]
    fn the_sample_round_trips() {
        let run: ClusterRun = serde_json::from_str(SAMPLE).unwrap();
        let written = serde_json::to_value(&run).unwrap();
        let sample: Value = serde_json::from_str(SAMPLE).unwrap();
        assert_eq!(written, sample);
        let again: ClusterRun = serde_json::from_value(written).unwrap();
        assert_eq!(serde_json::to_value(&again).unwrap(), sample);
    }

    /// A value that cannot be measured is written as `null`, not left out.
    #[test]
    fn none_is_written_as_null() {
        let run: ClusterRun =
            serde_json::from_str(r#"{"steps":[{"mode":"single","rttMs":null}]}"#).unwrap();
        let v = serde_json::to_value(&run).unwrap();
        let s = &v["steps"][0];
        assert_eq!(s["rttMs"], Value::Null);
        assert_eq!(s["rttRelayedMs"], Value::Null);
        assert_eq!(s["cpuS"]["natsServer"], Value::Null);
        assert_eq!(s["rssKb"]["natsServer"], Value::Null);
        assert_eq!(s["rssPerCallKb"]["natsServer"], Value::Null);
    }
}
