//! Whether a freshly booted root slot is healthy enough to keep (A/B updates).
//!
//! After a boot the bootloader has marked the slot as tried; unless it is confirmed, the next
//! boot starts the other slot. [`SlotCheck`] decides from probes of the daemon: the slot is
//! good once veild has run without a restart for `settle` and serves `/healthz`; it is bad when
//! that has not happened within `within` of the check's start (a daemon that refuses its
//! configuration, crashes in a loop, or never serves). Pure: time is given, the verdict polled.

use std::time::Duration;

/// One look at the daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// How long the service has been active without a restart (None: not active).
    pub active_for: Option<Duration>,
    /// Restarts of the service since boot.
    pub restarts: u32,
    /// `/healthz`: Ok, or why it did not answer 200.
    pub health: Result<(), String>,
    /// systemd has given up on the service (e.g. it refused its configuration, which is not
    /// restarted): why. No point in waiting for the deadline then.
    pub failed: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Good,
    /// Why the slot is given up, for the journal and the next boot's report.
    Bad(String),
}

#[derive(Debug)]
pub struct SlotCheck {
    deadline_ms: u64,
    within: Duration,
    settle: Duration,
    last_problem: String,
    verdict: Option<Verdict>,
}

impl SlotCheck {
    pub fn new(now_ms: u64, within: Duration, settle: Duration) -> Self {
        SlotCheck {
            deadline_ms: now_ms.saturating_add(within.as_millis() as u64),
            within,
            settle,
            last_problem: "veild was not looked at yet".into(),
            verdict: None,
        }
    }

    pub fn observe(&mut self, now_ms: u64, probe: &Probe) {
        if self.verdict.is_some() {
            return;
        }
        if let Some(why) = &probe.failed {
            self.verdict = Some(Verdict::Bad(why.clone()));
            return;
        }
        let problem = match (&probe.active_for, &probe.health) {
            (None, _) => Some(format!(
                "veild is not running ({} restarts since boot)",
                probe.restarts
            )),
            (Some(_), _) if probe.restarts > 0 => Some(format!(
                "veild restarted {} times since boot",
                probe.restarts
            )),
            (Some(_), Err(why)) => Some(format!("veild does not serve /healthz: {why}")),
            (Some(up), Ok(())) if *up < self.settle => Some(format!(
                "veild has run for {} s of the {} s asked",
                up.as_secs(),
                self.settle.as_secs()
            )),
            (Some(_), Ok(())) => None,
        };
        match problem {
            None if now_ms <= self.deadline_ms => self.verdict = Some(Verdict::Good),
            None => {}
            Some(p) => self.last_problem = p,
        }
    }

    /// What keeps the slot from being confirmed, as of the last probe.
    pub fn problem(&self) -> &str {
        &self.last_problem
    }

    /// The verdict once there is one: Good as soon as a healthy probe came in time, Bad from
    /// the deadline on with the last problem seen.
    pub fn poll(&mut self, now_ms: u64) -> Option<Verdict> {
        if self.verdict.is_none() && now_ms > self.deadline_ms {
            self.verdict = Some(Verdict::Bad(format!(
                "not healthy within {} s: {}",
                self.within.as_secs(),
                self.last_problem
            )));
        }
        self.verdict.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SETTLE: Duration = Duration::from_secs(30);
    const WITHIN: Duration = Duration::from_secs(300);

    fn up(secs: u64) -> Probe {
        Probe {
            active_for: Some(Duration::from_secs(secs)),
            restarts: 0,
            health: Ok(()),
            failed: None,
        }
    }

    #[test]
    fn a_daemon_that_serves_long_enough_confirms_the_slot() {
        let mut c = SlotCheck::new(0, WITHIN, SETTLE);
        c.observe(5_000, &up(5));
        assert_eq!(c.poll(5_000), None);
        c.observe(31_000, &up(31));
        assert_eq!(c.poll(31_000), Some(Verdict::Good));
        // A later failure does not take a verdict back.
        c.observe(
            40_000,
            &Probe {
                active_for: None,
                ..up(0)
            },
        );
        assert_eq!(c.poll(400_000), Some(Verdict::Good));
    }

    #[test]
    fn a_refused_configuration_fails_the_slot_at_the_deadline_with_the_reason() {
        let mut c = SlotCheck::new(1_000, WITHIN, SETTLE);
        let down = Probe {
            active_for: None,
            health: Err("connection refused".into()),
            ..up(0)
        };
        c.observe(2_000, &down);
        assert_eq!(c.poll(301_000), None, "not before the deadline");
        let Some(Verdict::Bad(why)) = c.poll(301_001) else {
            panic!("no verdict")
        };
        assert_eq!(
            why,
            "not healthy within 300 s: veild is not running (0 restarts since boot)"
        );
    }

    #[test]
    fn a_crash_loop_is_not_healthy_even_while_it_answers() {
        let mut c = SlotCheck::new(0, WITHIN, SETTLE);
        c.observe(
            100_000,
            &Probe {
                restarts: 3,
                ..up(60)
            },
        );
        let Some(Verdict::Bad(why)) = c.poll(300_001) else {
            panic!("no verdict")
        };
        assert!(why.ends_with("veild restarted 3 times since boot"), "{why}");
    }

    #[test]
    fn an_unhealthy_answer_is_named() {
        let mut c = SlotCheck::new(0, WITHIN, SETTLE);
        c.observe(
            100_000,
            &Probe {
                health: Err("503: stopping".into()),
                ..up(60)
            },
        );
        let Some(Verdict::Bad(why)) = c.poll(300_001) else {
            panic!("no verdict")
        };
        assert!(
            why.ends_with("veild does not serve /healthz: 503: stopping"),
            "{why}"
        );
    }

    #[test]
    fn a_service_systemd_gave_up_on_fails_the_slot_at_once() {
        let mut c = SlotCheck::new(0, WITHIN, SETTLE);
        let failed = Probe {
            active_for: None,
            failed: Some("veild failed: exit-code, status 2".into()),
            ..up(0)
        };
        c.observe(3_000, &failed);
        assert_eq!(
            c.poll(3_000),
            Some(Verdict::Bad("veild failed: exit-code, status 2".into()))
        );
    }

    #[test]
    fn health_seen_after_the_deadline_is_too_late() {
        let mut c = SlotCheck::new(0, WITHIN, SETTLE);
        c.observe(300_001, &up(100));
        assert!(matches!(c.poll(300_001), Some(Verdict::Bad(_))));
    }

    proptest::proptest! {
        /// Over any sequence of probes, the slot is good only if some probe in time showed a
        /// settled, healthy, never-restarted daemon, and there is always a verdict after the
        /// deadline.
        #[test]
        fn verdict_follows_the_probes(
            probes in proptest::collection::vec(
                (0u64..400_000, proptest::option::of(0u64..100), 0u32..3, proptest::bool::ANY), 0..20)
        ) {
            let mut probes = probes;
            probes.sort_by_key(|p| p.0);
            let mut c = SlotCheck::new(0, WITHIN, SETTLE);
            let mut good_in_time = false;
            let mut decided_good = false;
            for (at, active, restarts, healthy) in &probes {
                let probe = Probe {
                    active_for: active.map(Duration::from_secs),
                    restarts: *restarts,
                    health: if *healthy { Ok(()) } else { Err("no".into()) },
                    failed: None,
                };
                if !decided_good && *at <= 300_000 && active.is_some_and(|a| a >= 30) && *restarts == 0 && *healthy {
                    good_in_time = true;
                }
                c.observe(*at, &probe);
                if c.poll(*at) == Some(Verdict::Good) { decided_good = true; }
            }
            let end = c.poll(300_001);
            proptest::prop_assert!(end.is_some());
            proptest::prop_assert_eq!(end == Some(Verdict::Good), good_in_time);
        }
    }
}
