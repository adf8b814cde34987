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

/// utime + stime in clock ticks from one /proc/PID/stat line. The command name
/// (field 2) may contain spaces and parentheses, so fields are counted from the
/// last `)`: state is field 3, utime 14, stime 15.
pub fn parse_stat_ticks(line: &str) -> Option<u64> {
    let after_name = &line[line.rfind(')')? + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
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
    fn own_process_cpu_time_grows_with_work() {
        let pid = std::process::id();
        let before = process_cpu_seconds(pid).unwrap();
        let start = std::time::Instant::now();
        let mut x = 0u64;
        while start.elapsed() < std::time::Duration::from_millis(300) {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
        let after = process_cpu_seconds(pid).unwrap();
        assert!(
            after - before >= 0.1,
            "spent 300 ms spinning, /proc shows {}",
            after - before
        );
    }
}
