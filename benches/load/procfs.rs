//! Readings of `/proc` (Linux): a process's RSS, peak RSS and CPU ticks, and a core's busy and
//! stolen ticks. A figure that cannot be read is 0 (or `None`), never an error.

/// `(VmRSS in KiB, utime + stime in clock ticks)` of this process.
pub fn proc_self() -> (u64, u64) {
    (status_kb("VmRSS:"), cpu_ticks("/proc/self/stat"))
}

/// One KiB figure of `/proc/self/status` (`VmRSS:`, `VmHWM:`).
pub fn status_kb(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

pub fn cpu_ticks(stat_file: &str) -> u64 {
    // Fields after the `(comm)`: state is the 3rd field of the line, utime the 14th, stime the
    // 15th.
    std::fs::read_to_string(stat_file)
        .ok()
        .and_then(|s| {
            let rest = s.rsplit_once(')')?.1;
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
        })
        .unwrap_or(0)
}

/// `(busy, steal, total)` ticks of core `n` since boot.
pub fn core_ticks(n: usize) -> Option<(u64, u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().find(|l| l.starts_with(&format!("cpu{n} ")))?;
    let f: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal
    let [user, nice, system, idle, iowait, irq, softirq, steal] = f[..] else {
        return None;
    };
    let busy = user + nice + system + irq + softirq;
    Some((busy, steal, busy + idle + iowait + steal))
}

/// CPU ticks of process `root` and of its children (a PostgreSQL postmaster and its backends,
/// writers and checkpointer): what that server spends, summed. Children that ended since the
/// last reading take their ticks with them (a backend per connection lives as long as it).
pub fn tree_ticks(root: u32) -> u64 {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let mut ticks = 0;
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // After the `(comm)`: state, then the parent's pid.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if pid == root || ppid == Some(root) {
            ticks += cpu_ticks(&format!("/proc/{pid}/stat"));
        }
    }
    ticks
}
