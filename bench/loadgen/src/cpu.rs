//! CPU time of a process from /proc/PID/stat (all its threads together).

use std::io;

/// Failures reading a process's CPU time.
#[derive(Debug, thiserror::Error)]
pub enum CpuError {
    #[error("reading /proc/{pid}/stat: {source}")]
    Read { pid: u32, source: io::Error },
    #[error("/proc/{pid}/stat has no utime/stime fields: {line}")]
    Parse { pid: u32, line: String },
}

/// utime + stime of process `pid` (summed over its threads), in seconds.
pub fn process_cpu_seconds(pid: u32) -> Result<f64, CpuError> {
    let line = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_err(|source| CpuError::Read { pid, source })?;
    let ticks = parse_stat_ticks(&line).ok_or_else(|| CpuError::Parse {
        pid,
        line: line.trim().to_owned(),
    })?;
    Ok(ticks as f64 / clock_ticks_per_second())
}

/// User and system CPU time of a process, in seconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct CpuTimes {
    pub user_s: f64,
    pub system_s: f64,
}

impl CpuTimes {
    /// User plus system.
    pub fn total(self) -> f64 {
        self.user_s + self.system_s
    }

    /// What was spent between `earlier` and `self`.
    pub fn since(self, earlier: CpuTimes) -> CpuTimes {
        CpuTimes {
            user_s: self.user_s - earlier.user_s,
            system_s: self.system_s - earlier.system_s,
        }
    }
}

/// utime and stime of process `pid` (summed over its threads), apart.
pub fn process_cpu_times(pid: u32) -> Result<CpuTimes, CpuError> {
    let line = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_err(|source| CpuError::Read { pid, source })?;
    let (user, system) = parse_stat_user_system(&line).ok_or_else(|| CpuError::Parse {
        pid,
        line: line.trim().to_owned(),
    })?;
    let hz = clock_ticks_per_second();
    Ok(CpuTimes {
        user_s: user as f64 / hz,
        system_s: system as f64 / hz,
    })
}

/// utime + stime in clock ticks from one /proc/PID/stat line. The command name
/// (field 2) may contain spaces and parentheses, so fields are counted from the
/// last `)`: state is field 3, utime 14, stime 15.
pub fn parse_stat_ticks(line: &str) -> Option<u64> {
    let (utime, stime) = parse_stat_user_system(line)?;
    Some(utime + stime)
}

/// utime and stime in clock ticks from one /proc/PID/stat line (see [`parse_stat_ticks`]).
fn parse_stat_user_system(line: &str) -> Option<(u64, u64)> {
    let after_name = &line[line.rfind(')')? + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime, stime))
}

/// This process's user + system CPU time (all threads), in seconds, from
/// getrusage: exact, where /proc counts clock ticks.
pub fn own_cpu_seconds() -> f64 {
    // SAFETY: getrusage writes one rusage struct into the zeroed local it is given;
    // RUSAGE_SELF cannot fail.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf only reads a configuration value.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as f64 } else { 100.0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_with_spaces_and_parentheses() {
        let line = "4242 (ovs (vswitchd) x) S 1 4242 4242 0 -1 4194560 1234 0 0 0 700 55 0 0 20 0 9 0 100 0 0";
        assert_eq!(parse_stat_ticks(line), Some(755));
        assert_eq!(parse_stat_ticks("4242 (x) S 1 2"), None);
    }

    #[test]
    fn proc_stat_agrees_with_getrusage_while_spinning() {
        let pid = std::process::id();
        let (proc_before, rusage_before) = (process_cpu_seconds(pid).unwrap(), own_cpu_seconds());
        // Spin until the kernel has charged 0.3 s, however loaded the machine is.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let mut x = 0u64;
        while own_cpu_seconds() - rusage_before < 0.3 && std::time::Instant::now() < deadline {
            for _ in 0..10_000 {
                x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
            }
        }
        let proc_delta = process_cpu_seconds(pid).unwrap() - proc_before;
        let rusage_delta = own_cpu_seconds() - rusage_before;
        assert!(rusage_delta >= 0.3, "spun 20 s without 0.3 s of CPU");
        // Clock ticks are 10 ms; other test threads may add a little to both.
        assert!(
            (proc_delta - rusage_delta).abs() < 0.1,
            "/proc says {proc_delta}, getrusage {rusage_delta}"
        );
    }
}
