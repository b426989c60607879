//! Firmware updates ordered by the fleet (`ota.install`) as one job at a time, with AWS IoT
//! Jobs' statuses: QUEUED → IN_PROGRESS (downloading, verifying, installing, awaiting_reboot,
//! rebooting, confirming) → SUCCEEDED | FAILED | CANCELED; REJECTED for an order refused.
//!
//! [`OtaDesk`] decides; the daemon downloads, asks RAUC, reboots and reports what happened.
//! The job survives restarts and the reboot into the new slot (the daemon keeps what
//! [`Output::Save`] hands it): after the reboot the running version and the boot id tell
//! whether the new slot runs (then it waits for the slot to be confirmed good) or the
//! bootloader fell back to the old one. Pure: time and the system's answers are inputs,
//! outputs are polled.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::{Error, ErrorKind};

/// Where the bundle comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// An `https://` (or `http://`: the signature and version are what is trusted) URL,
    /// e.g. presigned.
    Url(String),
    /// An object key in the device's `[upload]` bucket, fetched with its credentials.
    S3Key(String),
    /// A bundle already on the device (uploaded on its page), by file name.
    Local(String),
}

/// When the device may restart into the new slot once it is installed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reboot {
    /// Right after the install.
    Now,
    /// Only when someone reboots it (the `reboot` command or the page).
    Manual,
    /// The next time the UTC clock is within [from, to) minutes of the day (wrapping midnight).
    Window { from_minute: u16, to_minute: u16 },
}

impl Reboot {
    /// `now`, `manual`, or a window `HH:MM-HH:MM` (UTC).
    pub fn parse(text: &str) -> Result<Reboot, Error> {
        match text {
            "now" => return Ok(Reboot::Now),
            "manual" => return Ok(Reboot::Manual),
            _ => {}
        }
        let minute = |t: &str| -> Option<u16> {
            let (h, m) = t.split_once(':')?;
            let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
            (h < 24 && m < 60 && t.len() == 5).then_some(h * 60 + m)
        };
        let window = text
            .split_once('-')
            .and_then(|(from, to)| Some((minute(from)?, minute(to)?)));
        match window {
            Some((from_minute, to_minute)) if from_minute != to_minute => Ok(Reboot::Window {
                from_minute,
                to_minute,
            }),
            _ => Err(Error::invalid_input(format!(
                "reboot '{text}': use \"now\", \"manual\" or a UTC window \"HH:MM-HH:MM\" (e.g. \
                 \"02:00-04:00\")"
            ))),
        }
    }

    /// When the restart may happen, as ms since the epoch (None: only by hand).
    pub fn time_from(&self, now_ms: i64) -> Option<i64> {
        const DAY: i64 = 86_400_000;
        match *self {
            Reboot::Now => Some(now_ms),
            Reboot::Manual => None,
            Reboot::Window {
                from_minute,
                to_minute,
            } => {
                let (from, to) = (from_minute as i64 * 60_000, to_minute as i64 * 60_000);
                let of_day = now_ms.rem_euclid(DAY);
                let inside = if from < to {
                    of_day >= from && of_day < to
                } else {
                    of_day >= from || of_day < to
                };
                if inside {
                    Some(now_ms)
                } else {
                    Some(now_ms - of_day + from + if of_day > from { DAY } else { 0 })
                }
            }
        }
    }
}

/// What the fleet asked for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    pub job_id: String,
    /// The version the bundle must carry (its manifest's `version`): what the device reports
    /// once it runs it; a bundle of another version is refused (no silent downgrade).
    pub version: String,
    pub source: Source,
    /// Lowercase hex SHA-256 of the whole bundle, checked after the download when given.
    pub sha256: Option<String>,
    pub reboot: Reboot,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Status {
    Queued,
    InProgress,
    Succeeded,
    Failed,
    Canceled,
    Rejected,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Queued => "QUEUED",
            Status::InProgress => "IN_PROGRESS",
            Status::Succeeded => "SUCCEEDED",
            Status::Failed => "FAILED",
            Status::Canceled => "CANCELED",
            Status::Rejected => "REJECTED",
        }
    }

    pub fn is_final(self) -> bool {
        !matches!(self, Status::Queued | Status::InProgress)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    Downloading,
    Verifying,
    Installing,
    AwaitingReboot,
    Rebooting,
    Confirming,
}

/// The job as kept across restarts and reported.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    pub order: Order,
    pub status: Status,
    pub step: Option<Step>,
    /// 0 to 1: download to 0.6, install to 0.9, then the reboot and the confirmation.
    pub progress: f64,
    pub reason: Option<String>,
    /// The version running when the order came.
    pub from_version: String,
    /// The boot the install happened in: another boot id means the device restarted since.
    pub install_boot: Option<String>,
    /// When the restart into the new slot is due (ms since the epoch; None: by hand).
    pub reboot_at_ms: Option<i64>,
    pub created_ms: i64,
    pub updated_ms: i64,
}

/// What the daemon is to do, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Keep the job (it must survive a power cut).
    Save(Job),
    /// Publish the job's status (`job.status`) and audit it.
    Report(Job),
    /// Fetch the bundle (resuming what is already there); answer with [`OtaDesk::downloaded`]
    /// or [`OtaDesk::failed`].
    Download(Order),
    /// Stop a download under way (the job was canceled).
    StopDownload,
    /// Check the bundle's signature and read its manifest; answer with [`OtaDesk::verified`].
    Verify,
    /// Install into the other slot; answer with [`OtaDesk::installed`].
    Install,
    Reboot,
    /// Ask whether the booted slot is marked good yet; answer with [`OtaDesk::slot_good`].
    CheckSlot,
    /// The bundle file is no longer needed.
    RemoveBundle,
}

/// Download and install shares of the progress.
const DOWNLOADED: f64 = 0.6;
const INSTALLED: f64 = 0.9;

#[derive(Debug)]
pub struct OtaDesk {
    job: Option<Job>,
    running_version: String,
    outputs: VecDeque<Output>,
    /// The progress last reported (reports come in steps of at least 10 %).
    reported: f64,
}

impl OtaDesk {
    /// The desk after a start: `job` as last saved, the version and boot this start runs in.
    pub fn restore(job: Option<Job>, running_version: &str, boot_id: &str, now_ms: i64) -> Self {
        let mut desk = OtaDesk {
            job: None,
            running_version: running_version.to_string(),
            outputs: VecDeque::new(),
            reported: 0.0,
        };
        let Some(job) = job else { return desk };
        desk.reported = job.progress;
        let rebooted = job.install_boot.as_deref().is_some_and(|b| b != boot_id);
        let status = job.status;
        desk.job = Some(job);
        if status.is_final() {
            return desk;
        }
        let step = desk.job.as_ref().and_then(|j| j.step);
        match step {
            _ if rebooted => desk.after_reboot(now_ms),
            None | Some(Step::Downloading | Step::Verifying | Step::Installing) => {
                // Interrupted before the install ended: the other slot is not bootable, so
                // start over from the download (which resumes what it has).
                desk.advance(now_ms, Step::Downloading, 0.0, None);
                let order = desk.job.as_ref().map(|j| j.order.clone());
                desk.outputs.extend(order.map(Output::Download));
            }
            Some(Step::AwaitingReboot) => {}
            Some(Step::Rebooting) => desk.outputs.push_back(Output::Reboot),
            Some(Step::Confirming) => desk.outputs.push_back(Output::CheckSlot),
        }
        desk
    }

    pub fn job(&self) -> Option<&Job> {
        self.job.as_ref()
    }

    pub fn poll(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// An `ota.install`: the job (a repeated order answers the job it made), or why not.
    pub fn order(&mut self, order: Order, now_ms: i64) -> Result<Job, Error> {
        if let Some(job) = &self.job {
            if job.order.job_id == order.job_id {
                return if job.order == order {
                    Ok(job.clone())
                } else {
                    Err(Error::new(
                        ErrorKind::Conflict,
                        format!(
                            "update job '{}' exists with other contents: use a new job_id",
                            order.job_id
                        ),
                    ))
                };
            }
            if !job.status.is_final() {
                return Err(self.reject(
                    order,
                    now_ms,
                    ErrorKind::Conflict,
                    format!(
                        "update job '{}' is still {} (cancel it first, or wait until it ends)",
                        job.order.job_id,
                        job.step.map(step_name).unwrap_or("queued")
                    ),
                ));
            }
        }
        if order.version == self.running_version {
            let why = format!("version {} is already running", order.version);
            return Err(self.reject(order, now_ms, ErrorKind::Conflict, why));
        }
        let job = Job {
            from_version: self.running_version.clone(),
            order: order.clone(),
            status: Status::Queued,
            step: None,
            progress: 0.0,
            reason: None,
            install_boot: None,
            reboot_at_ms: None,
            created_ms: now_ms,
            updated_ms: now_ms,
        };
        self.job = Some(job.clone());
        self.reported = 0.0;
        self.changed(true);
        self.advance(now_ms, Step::Downloading, 0.0, None);
        self.outputs.push_back(Output::Download(order));
        Ok(job)
    }

    /// A refused order is reported (REJECTED) but not kept: the running job stays the job.
    fn reject(&mut self, order: Order, now_ms: i64, kind: ErrorKind, why: String) -> Error {
        let job = Job {
            from_version: self.running_version.clone(),
            order,
            status: Status::Rejected,
            step: None,
            progress: 0.0,
            reason: Some(why.clone()),
            install_boot: None,
            reboot_at_ms: None,
            created_ms: now_ms,
            updated_ms: now_ms,
        };
        self.outputs.push_back(Output::Report(job));
        Error::new(kind, why)
    }

    /// Download progress (`total` when the server said it).
    pub fn downloading(&mut self, now_ms: i64, bytes: u64, total: Option<u64>) {
        if self.step() != Some(Step::Downloading) {
            return;
        }
        let share = total
            .filter(|t| *t > 0)
            .map(|t| (bytes.min(t) as f64 / t as f64) * DOWNLOADED)
            .unwrap_or(0.0);
        self.advance(now_ms, Step::Downloading, share, None);
    }

    pub fn downloaded(&mut self, now_ms: i64) {
        if self.step() == Some(Step::Downloading) {
            self.advance(now_ms, Step::Verifying, DOWNLOADED, None);
            self.outputs.push_back(Output::Verify);
        }
    }

    /// The bundle's signature held; its manifest says `version` and whether it is meant for
    /// this board (`compatible`).
    pub fn verified(&mut self, now_ms: i64, version: &str) {
        if self.step() != Some(Step::Verifying) {
            return;
        }
        let ordered = self.job.as_ref().map(|j| j.order.version.clone());
        match ordered {
            Some(v) if v != version => self.failed(
                now_ms,
                &format!(
                    "the bundle carries version {version}, the order asked for {v}: nothing was \
                     installed"
                ),
            ),
            _ => {
                self.advance(now_ms, Step::Installing, DOWNLOADED, None);
                self.outputs.push_back(Output::Install);
            }
        }
    }

    /// RAUC's progress through the install, 0 to 1.
    pub fn installing(&mut self, now_ms: i64, fraction: f64) {
        if self.step() == Some(Step::Installing) {
            let share = DOWNLOADED + fraction.clamp(0.0, 1.0) * (INSTALLED - DOWNLOADED);
            self.advance(now_ms, Step::Installing, share, None);
        }
    }

    /// The other slot holds the new firmware and is the next to boot.
    pub fn installed(&mut self, now_ms: i64, boot_id: &str) {
        if self.step() != Some(Step::Installing) {
            return;
        }
        let Some(job) = self.job.as_mut() else { return };
        job.install_boot = Some(boot_id.to_string());
        job.reboot_at_ms = job.order.reboot.time_from(now_ms);
        self.outputs.push_back(Output::RemoveBundle);
        self.advance(now_ms, Step::AwaitingReboot, INSTALLED, None);
        self.tick(now_ms);
    }

    /// Time passes: a restart that fell due happens.
    pub fn tick(&mut self, now_ms: i64) {
        if self.step() != Some(Step::AwaitingReboot) {
            return;
        }
        let due = self
            .job
            .as_ref()
            .and_then(|j| j.reboot_at_ms)
            .is_some_and(|at| at <= now_ms);
        if due {
            self.advance(now_ms, Step::Rebooting, INSTALLED, None);
            self.outputs.push_back(Output::Reboot);
        }
    }

    /// The booted slot is marked good (true), or not yet (false).
    pub fn slot_good(&mut self, now_ms: i64, good: bool) {
        if self.step() != Some(Step::Confirming) {
            return;
        }
        if good {
            self.finish(now_ms, Status::Succeeded, None);
        }
    }

    /// A step failed: the job ends FAILED with the reason (the slots are as they were).
    pub fn failed(&mut self, now_ms: i64, reason: &str) {
        if self.job.as_ref().is_some_and(|j| !j.status.is_final()) {
            self.outputs.push_back(Output::RemoveBundle);
            self.finish(now_ms, Status::Failed, Some(reason.to_string()));
        }
    }

    /// `ota.cancel`: possible until the install starts.
    pub fn cancel(&mut self, job_id: &str, now_ms: i64) -> Result<Job, Error> {
        let Some(job) = self.job.as_ref().filter(|j| j.order.job_id == job_id) else {
            return Err(Error::not_found(format!("no update job '{job_id}'")));
        };
        match (job.status, job.step) {
            (s, _) if s.is_final() => Err(Error::new(
                ErrorKind::Conflict,
                format!("update job '{job_id}' already ended {}", s.as_str()),
            )),
            (_, None | Some(Step::Downloading | Step::Verifying)) => {
                self.outputs.push_back(Output::StopDownload);
                self.outputs.push_back(Output::RemoveBundle);
                self.finish(
                    now_ms,
                    Status::Canceled,
                    Some("canceled by the fleet".into()),
                );
                Ok(self.job.clone().expect("the job is there"))
            }
            (_, Some(step)) => Err(Error::new(
                ErrorKind::Conflict,
                format!(
                    "update job '{job_id}' is {}: the other slot is being written or holds \
                     the new firmware; it can no longer be canceled",
                    step_name(step)
                ),
            )),
        }
    }

    fn after_reboot(&mut self, now_ms: i64) {
        let Some(job) = &self.job else { return };
        if self.running_version == job.order.version {
            self.advance(now_ms, Step::Confirming, INSTALLED, None);
            self.outputs.push_back(Output::CheckSlot);
        } else {
            let why = format!(
                "the device restarted but runs version {} again: the new slot did not pass its \
                 health check (or was never booted) and the bootloader went back to the old one",
                self.running_version
            );
            self.finish(now_ms, Status::Failed, Some(why));
        }
    }

    fn step(&self) -> Option<Step> {
        self.job
            .as_ref()
            .filter(|j| !j.status.is_final())
            .and_then(|j| j.step)
    }

    fn advance(&mut self, now_ms: i64, step: Step, progress: f64, reason: Option<String>) {
        let Some(job) = self.job.as_mut() else { return };
        let new_step = job.step != Some(step) || job.status != Status::InProgress;
        job.status = Status::InProgress;
        job.step = Some(step);
        job.progress = progress;
        job.reason = reason;
        job.updated_ms = now_ms;
        let report = new_step || progress - self.reported >= 0.1;
        self.changed(report);
    }

    fn finish(&mut self, now_ms: i64, status: Status, reason: Option<String>) {
        let Some(job) = self.job.as_mut() else { return };
        job.status = status;
        job.step = None;
        if status == Status::Succeeded {
            job.progress = 1.0;
        }
        job.reason = reason;
        job.updated_ms = now_ms;
        self.changed(true);
    }

    fn changed(&mut self, report: bool) {
        let Some(job) = &self.job else { return };
        self.outputs.push_back(Output::Save(job.clone()));
        if report {
            self.reported = job.progress;
            self.outputs.push_back(Output::Report(job.clone()));
        }
    }
}

pub fn step_name(step: Step) -> &'static str {
    match step {
        Step::Downloading => "downloading",
        Step::Verifying => "verifying",
        Step::Installing => "installing",
        Step::AwaitingReboot => "awaiting_reboot",
        Step::Rebooting => "rebooting",
        Step::Confirming => "confirming",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn order(id: &str, version: &str) -> Order {
        Order {
            job_id: id.into(),
            version: version.into(),
            source: Source::Url("https://updates.example/v2.raucb".into()),
            sha256: None,
            reboot: Reboot::Now,
        }
    }

    fn drain(desk: &mut OtaDesk) -> Vec<Output> {
        std::iter::from_fn(|| desk.poll()).collect()
    }

    fn reported(outputs: &[Output]) -> Vec<(Status, Option<Step>)> {
        outputs
            .iter()
            .filter_map(|o| match o {
                Output::Report(j) => Some((j.status, j.step)),
                _ => None,
            })
            .collect()
    }

    fn saved(outputs: &[Output]) -> Option<Job> {
        outputs.iter().rev().find_map(|o| match o {
            Output::Save(j) => Some(j.clone()),
            _ => None,
        })
    }

    #[test]
    fn an_update_runs_through_the_reboot_into_the_new_slot() {
        let mut desk = OtaDesk::restore(None, "1.0.0", "boot-1", 0);
        desk.order(order("ota-1", "2.0.0"), 10).unwrap();
        let out = drain(&mut desk);
        assert!(out.contains(&Output::Download(order("ota-1", "2.0.0"))));
        desk.downloading(20, 50, Some(100));
        desk.downloaded(30);
        assert!(drain(&mut desk).contains(&Output::Verify));
        desk.verified(40, "2.0.0");
        assert!(drain(&mut desk).contains(&Output::Install));
        desk.installing(45, 0.5);
        desk.installed(50, "boot-1");
        let out = drain(&mut desk);
        assert!(out.contains(&Output::Reboot), "{out:?}");
        let kept = saved(&out).unwrap();
        assert_eq!(kept.step, Some(Step::Rebooting));

        // The next boot runs the new version: confirmed once the slot is good.
        let mut desk = OtaDesk::restore(Some(kept), "2.0.0", "boot-2", 60_000);
        assert!(drain(&mut desk).contains(&Output::CheckSlot));
        desk.slot_good(61_000, false);
        assert_eq!(desk.job().unwrap().status, Status::InProgress);
        desk.slot_good(70_000, true);
        let out = drain(&mut desk);
        assert_eq!(reported(&out), vec![(Status::Succeeded, None)]);
        assert_eq!(desk.job().unwrap().progress, 1.0);
    }

    #[test]
    fn a_fall_back_to_the_old_slot_fails_the_job_with_the_reason() {
        let mut desk = OtaDesk::restore(None, "1.0.0", "boot-1", 0);
        desk.order(order("ota-1", "2.0.0"), 0).unwrap();
        desk.downloaded(1);
        desk.verified(2, "2.0.0");
        desk.installed(3, "boot-1");
        let kept = saved(&drain(&mut desk)).unwrap();
        let desk = OtaDesk::restore(Some(kept), "1.0.0", "boot-3", 500_000);
        let job = desk.job().unwrap();
        assert_eq!(job.status, Status::Failed);
        assert!(
            job.reason
                .as_deref()
                .unwrap()
                .contains("runs version 1.0.0 again")
        );
    }

    #[test]
    fn a_restart_before_the_reboot_keeps_waiting_for_the_window() {
        let mut desk = OtaDesk::restore(None, "1.0.0", "boot-1", 0);
        let mut o = order("ota-1", "2.0.0");
        o.reboot = Reboot::parse("02:00-04:00").unwrap();
        desk.order(o, 0).unwrap();
        desk.downloaded(1);
        desk.verified(2, "2.0.0");
        desk.installed(3, "boot-1");
        let out = drain(&mut desk);
        assert!(!out.contains(&Output::Reboot));
        let kept = saved(&out).unwrap();
        assert_eq!(kept.reboot_at_ms, Some(2 * 3_600_000));
        // veild restarts in the same boot: still waiting.
        let mut desk = OtaDesk::restore(Some(kept), "1.0.0", "boot-1", 1000);
        assert!(!drain(&mut desk).contains(&Output::Reboot));
        desk.tick(2 * 3_600_000 - 1);
        assert!(!drain(&mut desk).contains(&Output::Reboot));
        desk.tick(2 * 3_600_000);
        assert!(drain(&mut desk).contains(&Output::Reboot));
    }

    #[test]
    fn a_power_cut_during_the_download_or_install_starts_over() {
        let mut desk = OtaDesk::restore(None, "1.0.0", "boot-1", 0);
        desk.order(order("ota-1", "2.0.0"), 0).unwrap();
        desk.downloaded(1);
        desk.verified(2, "2.0.0");
        let kept = saved(&drain(&mut desk)).unwrap();
        assert_eq!(kept.step, Some(Step::Installing));
        let mut desk = OtaDesk::restore(Some(kept), "1.0.0", "boot-2", 10);
        assert!(drain(&mut desk).contains(&Output::Download(order("ota-1", "2.0.0"))));
    }

    #[test]
    fn orders_are_refused_with_a_reason() {
        let mut desk = OtaDesk::restore(None, "1.0.0", "boot-1", 0);
        let e = desk.order(order("ota-0", "1.0.0"), 0).unwrap_err();
        assert!(e.to_string().contains("already running"), "{e}");
        assert_eq!(reported(&drain(&mut desk)), vec![(Status::Rejected, None)]);
        desk.order(order("ota-1", "2.0.0"), 0).unwrap();
        // The same order again is the same job; another one waits its turn.
        assert_eq!(
            desk.order(order("ota-1", "2.0.0"), 5).unwrap().order.job_id,
            "ota-1"
        );
        assert_eq!(
            desk.order(order("ota-1", "3.0.0"), 5).unwrap_err().kind(),
            ErrorKind::Conflict
        );
        let e = desk.order(order("ota-2", "3.0.0"), 5).unwrap_err();
        assert!(e.to_string().contains("still downloading"), "{e}");
        assert_eq!(desk.job().unwrap().order.job_id, "ota-1");
    }

    #[test]
    fn a_bundle_of_another_version_is_not_installed() {
        let mut desk = OtaDesk::restore(None, "1.0.0", "boot-1", 0);
        desk.order(order("ota-1", "2.0.0"), 0).unwrap();
        desk.downloaded(1);
        desk.verified(2, "0.9.0");
        let out = drain(&mut desk);
        assert!(!out.contains(&Output::Install));
        assert_eq!(desk.job().unwrap().status, Status::Failed);
    }

    #[test]
    fn cancel_is_possible_until_the_install_starts() {
        let mut desk = OtaDesk::restore(None, "1.0.0", "boot-1", 0);
        desk.order(order("ota-1", "2.0.0"), 0).unwrap();
        let job = desk.cancel("ota-1", 5).unwrap();
        assert_eq!(job.status, Status::Canceled);
        assert!(drain(&mut desk).contains(&Output::StopDownload));
        desk.order(order("ota-2", "2.0.0"), 6).unwrap();
        desk.downloaded(7);
        desk.verified(8, "2.0.0");
        assert!(desk.cancel("ota-2", 9).is_err());
    }

    #[test]
    fn windows_wrap_midnight() {
        let w = Reboot::parse("23:00-01:00").unwrap();
        let h = 3_600_000;
        assert_eq!(w.time_from(23 * h + 5), Some(23 * h + 5));
        assert_eq!(w.time_from(h / 2), Some(h / 2));
        assert_eq!(w.time_from(2 * h), Some(23 * h));
        assert_eq!(Reboot::parse("manual").unwrap().time_from(5), None);
        for bad in ["", "2:00-04:00", "02:00-02:00", "25:00-01:00", "soon"] {
            assert!(Reboot::parse(bad).is_err(), "{bad}");
        }
    }

    proptest! {
        /// Whatever the inputs, their order and the restarts between them: progress never goes
        /// back within a boot, a final status never changes, a reboot is asked for only after
        /// an install and never twice in one run, and SUCCEEDED means the ordered version runs.
        #[test]
        fn jobs_move_forward(steps in proptest::collection::vec(0u8..9, 1..40)) {
            let mut version = "1.0.0".to_string();
            let mut boot = 1;
            let mut desk = OtaDesk::restore(None, &version, "boot-1", 0);
            let mut kept: Option<Job> = None;
            let mut installed = false;
            let mut last_progress = 0.0;
            let mut final_status: Option<Status> = None;
            for (t, step) in steps.into_iter().enumerate() {
                let now = t as i64 * 1000;
                match step {
                    0 => { let _ = desk.order(order("ota-1", "2.0.0"), now); }
                    1 => desk.downloading(now, 5, Some(10)),
                    2 => desk.downloaded(now),
                    3 => desk.verified(now, "2.0.0"),
                    4 => desk.installed(now, &format!("boot-{boot}")),
                    5 => desk.slot_good(now, true),
                    6 => { let _ = desk.cancel("ota-1", now); }
                    7 => {
                        // A reboot: into the new version only if it was installed.
                        boot += 1;
                        if installed { version = "2.0.0".into(); }
                        desk = OtaDesk::restore(kept.clone(), &version, &format!("boot-{boot}"), now);
                        last_progress = desk.job().map(|j| j.progress).unwrap_or(0.0);
                    }
                    _ => desk.failed(now, "the link broke"),
                }
                let mut reboots = 0;
                while let Some(out) = desk.poll() {
                    match out {
                        Output::Save(job) => {
                            if let Some(f) = final_status {
                                prop_assert_eq!(job.status, f, "a final status changed");
                            }
                            if job.status.is_final() { final_status = Some(job.status); }
                            if job.status == Status::Succeeded {
                                prop_assert_eq!(&version, "2.0.0");
                            }
                            if job.step == Some(Step::Downloading) && job.progress == 0.0 {
                                last_progress = 0.0;
                            }
                            prop_assert!(job.progress >= last_progress, "progress went back");
                            last_progress = job.progress;
                            kept = Some(job);
                        }
                        Output::Install => {}
                        Output::Reboot => {
                            reboots += 1;
                            prop_assert!(kept.as_ref().is_some_and(|j| j.install_boot.is_some()));
                        }
                        _ => {}
                    }
                }
                prop_assert!(reboots <= 1);
                if kept.as_ref().is_some_and(|j| j.install_boot.is_some()) { installed = true; }
            }
        }
    }
}
