//! `audin-loadgen`: drives operators and calls against a running (or
//! spawned) `audin-server` through the native `audin-operator` SDK, and
//! measures what the service does under that load.
//!
//! - [`load`]: one load run: N operators online, M concurrent echo calls
//!   (inbound through `POST /dev/sim/calls`, outbound to the sim echo number),
//!   20 ms paced stamped frames, latency / loss / setup / go-online figures.
//! - [`lean`]: the lean generator (`--lean`): the protocol spoken directly,
//!   many calls per task on one shared tick, for runs where the SDK would
//!   cost more CPU than the server it measures.
//! - [`server`]: spawning a release `audin-server --dev` with a temp
//!   database, and provisioning one phone number per operator in it.
//! - [`sipp`]: SIPp as the dev trunk's far end (answers, echoes RTP), for
//!   the SIP load step.
//! - [`procfs`]: CPU (utime + stime) and RSS of a process from `/proc`.
//! - [`stamp`]: the 160-byte stamped frame.
//! - [`report`]: the JSON report and its human summary; [`doc`]: the
//!   Markdown tables and PNG plots of `docs/performance-load.md`, of the
//!   SIP block of `docs/performance.md` and of the cluster block of
//!   `docs/performance-cluster.md`.
//! - [`cluster`]: the JSON of the cluster benchmark (`audin-relay-latency
//!   --json`, in the testkit), read by `report-cluster`.
//! - [`stack`]: the WebSocket stack comparison harness (`ws_stack_bench`).
//!
//! It is a measuring tool: it must not be depended on by the product crates,
//! and it only ever targets loopback addresses.

pub mod cluster;
pub mod doc;
pub mod lean;
pub mod load;
pub mod procfs;
pub mod report;
pub mod server;
pub mod sipp;
pub mod stack;
pub mod stamp;
pub mod stats;

/// Raises the soft `RLIMIT_NOFILE` to the hard limit (2,000 calls need
/// two sockets each in the load generator and again in the server, which
/// inherits the limit when spawned by us). Returns the new soft limit.
pub fn raise_nofile_limit() -> std::io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        if lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
    }
    Ok(lim.rlim_cur)
}
