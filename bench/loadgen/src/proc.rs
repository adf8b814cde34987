//! Running helper programs (`ip`, `iperf3`, `ovs-*`, the switch) and owning the
//! ones left running: every child we start is stopped by its own PID.

use std::io;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// Failures of starting, running or stopping a helper program.
#[derive(Debug, thiserror::Error)]
pub enum ProcError {
    #[error("could not start `{command}`: {source}")]
    Spawn { command: String, source: io::Error },
    #[error("`{command}` failed ({status}): {stderr}")]
    Failed {
        command: String,
        status: ExitStatus,
        stderr: String,
    },
    #[error("waiting for `{command}` (pid {pid}) failed: {source}")]
    Wait {
        command: String,
        pid: u32,
        source: io::Error,
    },
}

/// Renders a command line for messages.
pub fn describe(program: &str, args: &[&str]) -> String {
    std::iter::once(program)
        .chain(args.iter().copied())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs `program args` to completion and returns its stdout; a non-zero exit is
/// an error carrying the program's stderr.
pub fn run(program: &str, args: &[&str]) -> Result<String, ProcError> {
    let output = output(program, args)?;
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Runs `program args` to completion; exit status is left to the caller.
pub fn output(program: &str, args: &[&str]) -> Result<Output, ProcError> {
    let command = describe(program, args);
    let output = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| ProcError::Spawn {
            command: command.clone(),
            source,
        })?;
    if !output.status.success() {
        return Err(ProcError::Failed {
            command,
            status: output.status,
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        });
    }
    Ok(output)
}

/// Runs `ip args`.
pub fn ip(args: &[&str]) -> Result<String, ProcError> {
    run("ip", args)
}

/// Whether `program` is found on `PATH` (or is an existing path).
pub fn on_path(program: &str) -> bool {
    if program.contains('/') {
        return std::path::Path::new(program).is_file();
    }
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}

/// A child process we started; dropping it sends SIGTERM to its PID, waits a
/// little, then SIGKILLs it and reaps it.
pub struct OwnedChild {
    child: Child,
    command: String,
    grace: Duration,
}

impl OwnedChild {
    /// Spawns `command`, which the caller has fully configured (stdio included).
    pub fn spawn(mut command: Command, grace: Duration) -> Result<Self, ProcError> {
        let description = format!("{:?}", command).replace('"', "");
        let child = command.spawn().map_err(|source| ProcError::Spawn {
            command: description.clone(),
            source,
        })?;
        Ok(Self {
            child,
            command: description,
            grace,
        })
    }

    /// The child's PID (for /proc accounting and messages).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Mutable access to the child (to take its pipes).
    pub fn child_mut(&mut self) -> &mut Child {
        &mut self.child
    }

    /// Returns the exit status if the child has already exited.
    pub fn try_status(&mut self) -> Result<Option<ExitStatus>, ProcError> {
        self.child
            .try_wait()
            .map_err(|source| self.wait_error(source))
    }

    /// Waits up to `limit` for the child to exit by itself.
    pub fn wait_for_exit(&mut self, limit: Duration) -> Result<Option<ExitStatus>, ProcError> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.try_status()? {
                return Ok(Some(status));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Sends SIGTERM, waits the grace period, then SIGKILL; returns the exit
    /// status and whether SIGKILL was needed.
    pub fn stop(&mut self) -> Result<(ExitStatus, bool), ProcError> {
        if let Some(status) = self.try_status()? {
            return Ok((status, false));
        }
        self.signal(libc::SIGTERM);
        if let Some(status) = self.wait_for_exit(self.grace)? {
            return Ok((status, false));
        }
        self.signal(libc::SIGKILL);
        let status = self
            .child
            .wait()
            .map_err(|source| self.wait_error(source))?;
        Ok((status, true))
    }

    fn signal(&self, signal: libc::c_int) {
        let Ok(pid) = libc::pid_t::try_from(self.child.id()) else {
            return;
        };
        // SAFETY: kill(2) takes plain integers; the PID is our own unreaped child
        // (try_wait has not reaped it), so it cannot name a recycled process.
        unsafe {
            libc::kill(pid, signal);
        }
    }

    fn wait_error(&self, source: io::Error) -> ProcError {
        ProcError::Wait {
            command: self.command.clone(),
            pid: self.child.id(),
            source,
        }
    }
}

impl Drop for OwnedChild {
    fn drop(&mut self) {
        if let Err(error) = self.stop() {
            eprintln!("warning: {error}");
        }
    }
}

/// Polls `probe` every `interval` until it returns true or `limit` passes.
pub fn wait_until(limit: Duration, interval: Duration, mut probe: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if probe() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(interval);
    }
}
