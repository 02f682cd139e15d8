//! CPU time and memory of a process, read from `/proc` (Linux only).

use std::path::PathBuf;

/// One reading of a process.
#[derive(Debug, Clone, Copy, Default, serde::Serialize, serde::Deserialize)]
pub struct ProcSample {
    /// utime + stime, seconds.
    pub cpu_s: f64,
    /// VmRSS, KiB.
    pub rss_kb: u64,
    /// Threads.
    pub threads: u64,
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no memory effects.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

fn dir(pid: Option<u32>) -> PathBuf {
    match pid {
        Some(p) => PathBuf::from(format!("/proc/{p}")),
        None => PathBuf::from("/proc/self"),
    }
}

/// Reads `/proc/<pid>/stat` and `/proc/<pid>/status` (`None`: this process).
pub fn sample(pid: Option<u32>) -> std::io::Result<ProcSample> {
    let d = dir(pid);
    let stat = std::fs::read_to_string(d.join("stat"))?;
    // The command name is in parentheses and may hold spaces: split after it.
    let after = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or_else(|| std::io::Error::other("malformed stat"))?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // Fields after the name start at field 3 (state); utime is 14, stime 15.
    let num = |i: usize| -> u64 { fields.get(i - 3).and_then(|f| f.parse().ok()).unwrap_or(0) };
    let cpu_s = (num(14) + num(15)) as f64 / clock_ticks();
    let status = std::fs::read_to_string(d.join("status"))?;
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Ok(ProcSample {
        cpu_s,
        rss_kb: field("VmRSS:"),
        threads: field("Threads:"),
    })
}

/// Open file descriptors of a process.
pub fn open_fds(pid: Option<u32>) -> usize {
    std::fs::read_dir(dir(pid).join("fd")).map_or(0, |d| d.count())
}

/// Busy and total CPU time of the whole machine (seconds), from `/proc/stat`.
pub fn machine_cpu() -> (f64, f64) {
    let Ok(stat) = std::fs::read_to_string("/proc/stat") else {
        return (0.0, 0.0);
    };
    let Some(line) = stat.lines().next() else {
        return (0.0, 0.0);
    };
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest fields are
    // already inside user / nice).
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    let hz = clock_ticks();
    ((total - idle) as f64 / hz, total as f64 / hz)
}

/// Cores used by processes other than `pids` over `window` (sampled).
pub fn others_busy(pids: &[Option<u32>], window: std::time::Duration) -> f64 {
    let cpu_of = |pids: &[Option<u32>]| -> f64 {
        pids.iter()
            .map(|&p| sample(p).map_or(0.0, |s| s.cpu_s))
            .sum()
    };
    let (b0, _) = machine_cpu();
    let c0 = cpu_of(pids);
    std::thread::sleep(window);
    let (b1, _) = machine_cpu();
    let c1 = cpu_of(pids);
    ((b1 - b0) - (c1 - c0)).max(0.0) / window.as_secs_f64()
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_self() {
        let s = super::sample(None).unwrap();
        assert!(s.rss_kb > 0);
        assert!(s.threads >= 1);
    }
}
