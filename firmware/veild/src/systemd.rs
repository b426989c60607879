//! systemd integration: readiness, status text, stopping, and the watchdog.
//! Every call is a no-op when the daemon does not run under systemd (`NOTIFY_SOCKET` unset).

use std::time::Duration;

use sd_notify::NotifyState;

fn send(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!("systemd notification failed: {e}");
    }
}

pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

pub fn stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
}

pub fn watchdog() {
    send(&[NotifyState::Watchdog]);
}

/// How often to ping the watchdog: half its timeout, as sd_watchdog_enabled(3) advises.
pub fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled().map(|timeout| timeout / 2)
}

/// Where the daemon asks for the machine's restart: the image's `veil-reboot.path` watches
/// it and restarts the machine as root, so the daemon itself needs no privilege for it.
pub const REBOOT_REQUEST: &str = "reboot-requested";

/// Restarts the machine two seconds from now (time for a reply and an audit entry to leave):
/// `systemctl reboot` where the daemon may, else through [`REBOOT_REQUEST`] in `data_dir`.
/// Only under systemd: a development run refuses.
pub fn reboot_soon(data_dir: &std::path::Path) -> Result<(), veil_core::Error> {
    use veil_core::{Error, ErrorKind};
    if std::env::var_os("INVOCATION_ID").is_none() {
        return Err(Error::new(
            ErrorKind::Conflict,
            "reboot works on the device (veild under systemd); this veild runs outside it",
        ));
    }
    let request = data_dir.join(REBOOT_REQUEST);
    std::thread::Builder::new()
        .name("reboot".into())
        .spawn(move || {
            std::thread::sleep(Duration::from_secs(2));
            let direct = std::process::Command::new("systemctl")
                .args(["--no-ask-password", "reboot"])
                .stderr(std::process::Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if !direct && let Err(e) = std::fs::write(&request, b"") {
                tracing::error!(error = %e, path = %request.display(), "cannot ask for the restart");
            }
        })
        .map_err(|e| Error::wrap(ErrorKind::Internal, "cannot start the reboot", e))?;
    Ok(())
}
