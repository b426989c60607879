//! `veild slot-check`: after a boot from an A/B root slot, confirms the slot with RAUC once the
//! daemon is healthy, or marks it bad and reboots so the bootloader starts the other slot.
//! The decision is `veil_core::slot::SlotCheck`; this module only probes and acts: systemd for
//! the service's state, `/healthz` over the device's own HTTPS, `rauc status` for the verdict.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use veil_core::slot::{Probe, SlotCheck, Verdict};

use crate::settings::Settings;

const SETTLE: Duration = Duration::from_secs(30);
const EVERY: Duration = Duration::from_secs(2);
const UNIT: &str = "veild.service";

/// The slot this boot came from (`rauc.slot=` on the kernel command line), if any.
pub fn booted_slot(cmdline: &str) -> Option<&str> {
    cmdline
        .split_whitespace()
        .find_map(|arg| arg.strip_prefix("rauc.slot="))
        .filter(|s| !s.is_empty())
}

pub fn run(settings: Result<Settings, String>, within: Duration) -> ExitCode {
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    let Some(slot) = booted_slot(&cmdline) else {
        println!(
            "not booted from an A/B slot (no rauc.slot= on the kernel command line): nothing to confirm"
        );
        return ExitCode::SUCCESS;
    };
    let verdict = match settings {
        Ok(settings) => watch(slot, &settings, within),
        Err(why) => Verdict::Bad(format!("veild refuses this slot's configuration: {why}")),
    };
    act(slot, verdict)
}

/// Probes the daemon until the check has a verdict.
fn watch(slot: &str, settings: &Settings, within: Duration) -> Verdict {
    let cert = settings.data_dir.join("state").join("https-cert.pem");
    let mut agent = None;
    let url = healthz_url(settings.config.http.listen);
    let started = Instant::now();
    let now_ms = || started.elapsed().as_millis() as u64;
    let mut check = SlotCheck::new(now_ms(), within, SETTLE);
    println!(
        "slot {slot}: waiting up to {} s for veild to be healthy",
        within.as_secs()
    );
    // Since when this check has seen the current run of the service (by its invocation id):
    // a lower bound of how long it has been up, on the monotonic clock, whatever the wall clock
    // does.
    let mut seen: Option<(String, Instant)> = None;
    loop {
        let (active, restarts, invocation, failed) = service_state();
        if agent.is_none() {
            // Made by veild at its first start: looked for again until it is there.
            agent = healthz_agent(&cert).unwrap_or_else(|e| {
                eprintln!("slot-check: {e}");
                None
            });
        }
        if !active {
            seen = None;
        } else if seen.as_ref().is_none_or(|(id, _)| *id != invocation) {
            seen = Some((invocation, Instant::now()));
        }
        let health = match &agent {
            Some(agent) if active => healthz(agent, &url),
            Some(_) => Err("not running".into()),
            None => Err(format!(
                "no device certificate in {}",
                settings.data_dir.join("state").display()
            )),
        };
        let probe = Probe {
            active_for: seen.as_ref().map(|(_, since)| since.elapsed()),
            restarts,
            health,
            failed,
        };
        let before = check.problem().to_string();
        check.observe(now_ms(), &probe);
        if check.problem() != before {
            println!("slot {slot}: {}", check.problem());
        }
        if let Some(v) = check.poll(now_ms()) {
            return v;
        }
        std::thread::sleep(EVERY);
    }
}

/// Confirms the slot, or marks it bad and reboots into the other one.
fn act(slot: &str, verdict: Verdict) -> ExitCode {
    match verdict {
        Verdict::Good => match rauc(&["status", "mark-good"]) {
            Ok(()) => {
                println!("slot {slot} confirmed: veild healthy");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("slot {slot} is healthy but could not be confirmed: {e}");
                ExitCode::FAILURE
            }
        },
        Verdict::Bad(why) => {
            eprintln!(
                "slot {slot} failed its health check: {why}; marking it bad and rebooting into the other slot"
            );
            if let Err(e) = rauc(&["status", "mark-bad"]) {
                eprintln!(
                    "could not mark slot {slot} bad ({e}); the bootloader will skip it anyway, it was not confirmed"
                );
            }
            let _ = Command::new("systemctl").arg("reboot").status();
            ExitCode::FAILURE
        }
    }
}

/// Where veild answers on this machine: loopback for a wildcard listener (no name lookup; the
/// device certificate names 127.0.0.1 and ::1), else the address it listens on.
fn healthz_url(listen: SocketAddr) -> String {
    let ip = match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    format!("https://{}/healthz", SocketAddr::new(ip, listen.port()))
}

/// An HTTPS client that trusts only the device's own certificate (made at veild's first start).
fn healthz_agent(cert: &Path) -> Result<Option<ureq::Agent>, String> {
    let pem = match std::fs::read(cert) {
        Ok(p) => p,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{}: {e}", cert.display())),
    };
    let certs: Vec<ureq::tls::Certificate<'static>> = ureq::tls::parse_pem(&pem)
        .filter_map(|item| match item {
            Ok(ureq::tls::PemItem::Certificate(c)) => Some(c.to_owned()),
            _ => None,
        })
        .collect();
    let tls = ureq::tls::TlsConfig::builder()
        .root_certs(ureq::tls::RootCerts::from(certs))
        .build();
    let config = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .tls_config(tls)
        .build();
    Ok(Some(config.into()))
}

fn healthz(agent: &ureq::Agent, url: &str) -> Result<(), String> {
    match agent.get(url).call() {
        Ok(r) if r.status() == 200 => Ok(()),
        Ok(mut r) => Err(format!(
            "{}: {}",
            r.status(),
            r.body_mut().read_to_string().unwrap_or_default().trim()
        )),
        Err(e) => Err(e.to_string()),
    }
}

/// The service as systemd sees it: active or not, its restarts since boot, which run of it this
/// is (a new invocation id is a new start), and why it failed if systemd gave up on it.
fn service_state() -> (bool, u32, String, Option<String>) {
    let out = Command::new("systemctl")
        .args([
            "show",
            UNIT,
            "--property=ActiveState,NRestarts,InvocationID,Result,ExecMainStatus",
        ])
        .output();
    let text = out
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix('='))
            .unwrap_or("")
            .to_string()
    };
    let failed = (field("ActiveState") == "failed").then(|| {
        format!(
            "veild failed and systemd will not start it again ({}, exit status {})",
            field("Result"),
            field("ExecMainStatus")
        )
    });
    (
        field("ActiveState") == "active",
        field("NRestarts").parse().unwrap_or(0),
        field("InvocationID"),
        failed,
    )
}

fn rauc(args: &[&str]) -> Result<(), String> {
    let out = Command::new("rauc")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run rauc: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "rauc {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn healthz_is_asked_on_loopback_for_a_wildcard_listener() {
        assert_eq!(
            healthz_url("0.0.0.0:443".parse().unwrap()),
            "https://127.0.0.1:443/healthz"
        );
        assert_eq!(
            healthz_url("[::]:8443".parse().unwrap()),
            "https://[::1]:8443/healthz"
        );
        assert_eq!(
            healthz_url("10.0.0.7:443".parse().unwrap()),
            "https://10.0.0.7:443/healthz"
        );
    }

    #[test]
    fn the_booted_slot_comes_from_the_kernel_command_line() {
        assert_eq!(
            booted_slot(
                "BOOT_IMAGE=(hd0,gpt3)/vmlinuz root=PARTLABEL=root-b ro rauc.slot=B panic=10"
            ),
            Some("B")
        );
        assert_eq!(booted_slot("root=/dev/vda1 ro quiet"), None);
        assert_eq!(booted_slot("rauc.slot= ro"), None);
    }
}
