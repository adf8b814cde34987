//! How a dataplane thread sleeps and is scheduled: a `timerfd` wake-up timer
//! with nanosecond resolution (epoll's own timeout is in milliseconds, too
//! coarse to wake shortly before a frame due in 2 ms), the thread's timer
//! slack, the opt-in `SCHED_FIFO` policy, and the CPU a dataplane thread is pinned to.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum SchedError {
    #[error("cannot create the dataplane's wake-up timer (timerfd_create): {0}")]
    CreateTimer(#[source] io::Error),
    #[error("cannot arm the dataplane's wake-up timer (timerfd_settime): {0}")]
    ArmTimer(#[source] io::Error),
    #[error(
        "switch.realtime_priority = {priority}: the kernel refused SCHED_FIFO for the dataplane \
         threads ({source}); it needs CAP_SYS_NICE (kept after the privilege drop when this key \
         is set) or an RLIMIT_RTPRIO of at least {priority} (`ulimit -r`), and, inside a cgroup \
         with the cpu controller, a real-time budget (cpu.rt_runtime_us); unset the key to run \
         without it"
    )]
    Realtime { priority: u8, source: io::Error },
    #[error("cannot read the CPUs this process may run on (sched_getaffinity): {0}")]
    AllowedCpus(#[source] io::Error),
    #[error(
        "cannot run dataplane thread {worker} on CPU {cpus} (sched_setaffinity: {source}); \
         the CPU may have gone offline or left this process's cpuset since the switch started"
    )]
    Pin {
        worker: usize,
        /// The CPUs asked for (one when pinning, the allowed set when letting go), as ranges.
        cpus: String,
        source: io::Error,
    },
}

/// A one-shot monotonic timer whose fd epoll watches.
#[derive(Debug)]
pub struct WakeTimer {
    fd: OwnedFd,
}

impl WakeTimer {
    /// A nonblocking, disarmed timer on `CLOCK_MONOTONIC` (the clock of `Instant`).
    pub fn new() -> Result<Self, SchedError> {
        // SAFETY: timerfd_create takes no pointers; the result is checked.
        let fd = unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(SchedError::CreateTimer(io::Error::last_os_error()));
        }
        // SAFETY: fd is a new descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Self { fd })
    }

    /// Fires once, `after` from now (a zero duration fires at once: timerfd
    /// would read zero as "disarm").
    pub fn arm(&self, after: Duration) -> Result<(), SchedError> {
        let after = after.max(Duration::from_nanos(1));
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: after.as_secs() as libc::time_t,
                tv_nsec: libc::c_long::from(after.subsec_nanos() as i32),
            },
        };
        // SAFETY: spec is a valid itimerspec for the call; the old value is not asked for.
        let rc =
            unsafe { libc::timerfd_settime(self.fd.as_raw_fd(), 0, &spec, std::ptr::null_mut()) };
        if rc < 0 {
            return Err(SchedError::ArmTimer(io::Error::last_os_error()));
        }
        Ok(())
    }

    /// Consumes an expiry so the next one is reported again (nothing to read is fine).
    pub fn clear(&self) {
        let mut expirations = 0u64;
        // SAFETY: reads at most 8 bytes into a local u64; the fd is nonblocking.
        let _ = unsafe {
            libc::read(
                self.fd.as_raw_fd(),
                (&mut expirations as *mut u64).cast(),
                std::mem::size_of::<u64>(),
            )
        };
    }
}

impl AsRawFd for WakeTimer {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// Lets the calling thread's timers fire as asked rather than up to 50 µs
/// late (the default slack), which a window of a few tens of µs cannot absorb.
pub fn tighten_timer_slack() {
    // SAFETY: PR_SET_TIMERSLACK takes an integer; it cannot fail for a positive value.
    let _ = unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong, 0, 0, 0) };
}

/// Puts the calling thread under `SCHED_FIFO` at `priority` (1..=99).
pub fn set_realtime(priority: u8) -> Result<(), SchedError> {
    let param = libc::sched_param {
        sched_priority: i32::from(priority),
    };
    // SAFETY: param is a valid sched_param; pid 0 is the calling thread.
    let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) };
    if rc < 0 {
        return Err(SchedError::Realtime {
            priority,
            source: io::Error::last_os_error(),
        });
    }
    Ok(())
}

/// The CPUs the calling thread may run on (its affinity mask, within its cpuset), ascending.
pub fn allowed_cpus() -> Result<Vec<usize>, SchedError> {
    // SAFETY: cpu_set_t is plain bits; all zeroes is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: the size passed is that of `set`, which the kernel fills; pid 0 is this thread.
    let rc = unsafe { libc::sched_getaffinity(0, std::mem::size_of_val(&set), &mut set) };
    if rc < 0 {
        return Err(SchedError::AllowedCpus(io::Error::last_os_error()));
    }
    Ok((0..libc::CPU_SETSIZE as usize)
        // SAFETY: cpu is below CPU_SETSIZE, within `set`.
        .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
        .collect())
}

/// Lets the calling thread (dataplane thread `worker`) run on `cpus` only: one CPU pins
/// it, the allowed set lets it go. Threads it starts later inherit the mask.
pub fn run_current_thread_on(worker: usize, cpus: &[usize]) -> Result<(), SchedError> {
    let refused = |cpus: &[usize], source| SchedError::Pin {
        worker,
        cpus: cpu_ranges(cpus),
        source,
    };
    // SAFETY: cpu_set_t is plain bits; all zeroes is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &cpu in cpus {
        if cpu >= libc::CPU_SETSIZE as usize {
            return Err(refused(&[cpu], io::Error::from_raw_os_error(libc::EINVAL)));
        }
        // SAFETY: cpu was checked to be below CPU_SETSIZE, within `set`.
        unsafe { libc::CPU_SET(cpu, &mut set) };
    }
    // SAFETY: `set` is a valid cpu_set_t of the size passed; pid 0 is the calling thread.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set) };
    if rc < 0 {
        return Err(refused(cpus, io::Error::last_os_error()));
    }
    Ok(())
}

/// `0-3,6` for [0, 1, 2, 3, 6] (ascending input), as `taskset` and cpusets write them.
pub fn cpu_ranges(cpus: &[usize]) -> String {
    let mut ranges: Vec<String> = Vec::new();
    let mut i = 0;
    while i < cpus.len() {
        let start = cpus[i];
        while i + 1 < cpus.len() && cpus[i + 1] == cpus[i] + 1 {
            i += 1;
        }
        ranges.push(if cpus[i] == start {
            start.to_string()
        } else {
            format!("{start}-{}", cpus[i])
        });
        i += 1;
    }
    if ranges.is_empty() {
        "none".into()
    } else {
        ranges.join(",")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_pinned_to_an_allowed_cpu_runs_there_and_nowhere_else() {
        let allowed = allowed_cpus().unwrap();
        assert!(!allowed.is_empty());
        let last = *allowed.last().unwrap();
        // On a thread of its own: the test harness's threads keep their mask.
        let (after, running_on) = std::thread::spawn(move || {
            run_current_thread_on(0, &[last]).unwrap();
            // SAFETY: sched_getcpu takes nothing and returns the CPU or -1.
            let running_on = unsafe { libc::sched_getcpu() };
            (allowed_cpus().unwrap(), running_on)
        })
        .join()
        .unwrap();
        assert_eq!(after, vec![last]);
        assert_eq!(running_on, last as i32);
        // And let go again: the whole allowed set back.
        let all = allowed.clone();
        let again = std::thread::spawn(move || {
            run_current_thread_on(0, &[last]).unwrap();
            run_current_thread_on(0, &all).unwrap();
            allowed_cpus().unwrap()
        })
        .join()
        .unwrap();
        assert_eq!(again, allowed);
        assert_eq!(
            allowed_cpus().unwrap(),
            allowed,
            "the caller's mask is untouched"
        );
    }

    #[test]
    fn pinning_to_a_cpu_that_does_not_exist_says_which() {
        let error =
            std::thread::spawn(|| run_current_thread_on(3, &[libc::CPU_SETSIZE as usize - 1]))
                .join()
                .unwrap()
                .unwrap_err();
        let message = error.to_string();
        assert!(
            message.contains("dataplane thread 3 on CPU 1023"),
            "{message}"
        );
        assert!(matches!(error, SchedError::Pin { .. }), "{error:?}");
    }

    #[test]
    fn realtime_refused_without_cap_sys_nice_says_what_it_needs() {
        use crate::sys::privileges::{self, CAP_SYS_NICE, CapSet};
        // Capabilities are per thread: drop CAP_SYS_NICE on a thread of our own.
        let result = std::thread::spawn(|| {
            let (effective, _) = privileges::current_thread_caps().unwrap();
            privileges::set_thread_caps(effective.without(CapSet::of(&[CAP_SYS_NICE]))).unwrap();
            let rlimit = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            // SAFETY: a valid rlimit; lowering RLIMIT_RTPRIO to 0 affects no other test
            // (none runs real-time), and without CAP_SYS_NICE it is what refuses SCHED_FIFO.
            assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_RTPRIO, &rlimit) }, 0);
            set_realtime(10)
        })
        .join()
        .unwrap();
        let error = result.unwrap_err();
        let SchedError::Realtime { priority, source } = &error else {
            panic!("{error}");
        };
        assert_eq!(*priority, 10);
        assert_eq!(source.raw_os_error(), Some(libc::EPERM), "{error}");
        let message = error.to_string();
        for needed in [
            "switch.realtime_priority = 10",
            "CAP_SYS_NICE",
            "RLIMIT_RTPRIO",
        ] {
            assert!(message.contains(needed), "{message}");
        }
    }

    #[test]
    fn realtime_granted_with_cap_sys_nice() {
        std::thread::spawn(|| {
            assert!(crate::sys::privileges::thread_has(
                crate::sys::privileges::CAP_SYS_NICE
            ));
            set_realtime(1).unwrap();
            // SAFETY: pid 0 is this thread.
            assert_eq!(unsafe { libc::sched_getscheduler(0) }, libc::SCHED_FIFO);
        })
        .join()
        .unwrap();
    }

    #[test]
    fn timer_fires_once_and_is_cleared() {
        let timer = WakeTimer::new().unwrap();
        timer.arm(Duration::from_micros(200)).unwrap();
        let mut pfd = libc::pollfd {
            fd: timer.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let ready = unsafe { libc::poll(&mut pfd, 1, 5_000) };
        assert_eq!(ready, 1, "the timer did not fire within 5 s");
        timer.clear();
        pfd.revents = 0;
        // SAFETY: one valid pollfd.
        let ready = unsafe { libc::poll(&mut pfd, 1, 0) };
        assert_eq!(ready, 0, "a one-shot timer, cleared, is not readable");
    }
}
