//! Telling systemd where the switch is (`Type=notify`, `sd_notify(3)`): ready once
//! the control socket answers and every port forwards, stopping when it shuts down,
//! and, across `tapswitch upgrade`, which process is the service now.
//!
//! Without `NOTIFY_SOCKET` (not started by systemd) every call does nothing. The
//! variable is left in the environment on purpose: the process `upgrade` starts
//! inherits it and is the one that says `STOPPING=1` in the end.
//!
//! The upgrade: the old process, still the service's main process, sends
//! `MAINPID=<new pid>` once the new one answered it is ready, and then never
//! `STOPPING=1` (its exit is no longer the service's). So the unit needs no more
//! than `NotifyAccess=main`: only the main process of the moment ever speaks.

use sd_notify::NotifyState;

/// The switch forwards and its control socket answers.
pub fn ready(ports: usize) {
    let status = format!("forwarding on {ports} ports");
    send(&[NotifyState::Ready, NotifyState::Status(&status)]);
}

/// The switch shuts down (not after a handover: the service goes on in the new process).
pub fn stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
}

/// The process `pid` (the successor of an upgrade) is the service's main process now.
pub fn main_pid(pid: u32) {
    let status = format!("handed over to pid {pid}");
    send(&[NotifyState::MainPid(pid), NotifyState::Status(&status)]);
}

fn send(states: &[NotifyState]) {
    // A service manager that cannot be told is no reason to stop forwarding.
    if let Err(error) = sd_notify::notify(states) {
        let socket = std::env::var_os("NOTIFY_SOCKET").unwrap_or_default();
        tracing::warn!(%error, socket = %socket.to_string_lossy(), "could not notify the service manager");
    }
}
