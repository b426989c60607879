//! Crash safety: a child process records and is killed with SIGKILL at random moments, over
//! and over, into the same store; every time the store must open, verify, and hold every frame
//! up to the last flush the child reported. Every other run seals its frames (kept originals,
//! AES-256-GCM), so recovery is proven for encrypted segments too.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use veil_store::{SealKey, Store, WriterSettings, Written};

const FRAME_MS: i64 = 40;

fn key() -> SealKey {
    SealKey::from_bytes([9; 32])
}

fn payload(i: i64) -> Vec<u8> {
    let size = 200 + (i * 7919 % 20_000) as usize;
    let mut p = vec![(i % 251) as u8; size];
    p[..8].copy_from_slice(&i.to_le_bytes());
    p
}

/// Not a test on its own: the recording child, run by the test below.
#[test]
fn child_writer() {
    let (Ok(dir), Ok(base)) = (
        std::env::var("VEIL_STORE_CHILD"),
        std::env::var("VEIL_STORE_BASE"),
    ) else {
        return;
    };
    let base: i64 = base.parse().unwrap();
    let (store, _) = Store::open(dir.as_ref(), "veil-test").unwrap();
    let mut w = store.writer(
        "cam",
        WriterSettings {
            segment_ms: 10_000,
            flush_ms: 500,
            ..WriterSettings::default()
        },
    );
    if std::env::var("VEIL_STORE_SEAL").is_ok() {
        w = w.sealed(key());
    }
    for i in 0.. {
        let t = base + i * FRAME_MS;
        match w.write(t, i % 25 == 0, &payload(i)).unwrap() {
            Written::Flushed(at) | Written::SkippedUntilKeyframe { flushed: Some(at) } => {
                println!("flushed {at}");
            }
            _ => {}
        }
    }
}

#[test]
fn sigkill_at_random_moments_loses_nothing_before_the_flush_horizon() {
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    eprintln!("seed {seed}");
    let mut random = move |n: u64| {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (seed >> 33) % n
    };
    let mut base = 1_700_000_000_000i64;
    let mut recovered_runs = 0;
    for run in 0..40 {
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "child_writer",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env("VEIL_STORE_CHILD", dir.path())
            .env("VEIL_STORE_BASE", base.to_string())
            .env(
                if run % 2 == 1 {
                    "VEIL_STORE_SEAL"
                } else {
                    "VEIL_STORE_PLAIN"
                },
                "1",
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Early kills (before the first flush) as well as late ones.
        std::thread::sleep(Duration::from_millis(5 + random(300)));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let horizon = BufReader::new(child.stdout.take().unwrap())
            .lines()
            .map_while(Result::ok)
            .filter_map(|l| {
                l.strip_prefix("flushed ")
                    .and_then(|v| v.parse::<i64>().ok())
            })
            .last();

        let (store, report) = Store::open(dir.path(), "veil-test").unwrap();
        store.set_seal_key(key());
        if !report.is_clean() {
            recovered_runs += 1;
        }
        assert_eq!(store.verify().unwrap(), Vec::<String>::new(), "run {run}");
        // The next run starts a minute after anything this one wrote, even when it was
        // killed before it could report a flush (its footage may still be durable).
        let next_base = store
            .segments()
            .unwrap()
            .iter()
            .map(|s| s.end_ms + 60_000)
            .max()
            .unwrap_or(base)
            .max(base);
        let Some(horizon) = horizon else {
            base = next_base;
            continue;
        };
        let mut expected = 0i64;
        let mut last = base;
        store
            .read("cam", base, horizon + 1, |f| {
                assert_eq!(f.wall_ms, base + expected * FRAME_MS, "run {run}");
                assert_eq!(
                    f.data,
                    payload(expected),
                    "run {run}: frame {expected} damaged"
                );
                assert_eq!(f.keyframe, expected % 25 == 0);
                expected += 1;
                last = f.wall_ms;
                Ok(())
            })
            .unwrap();
        assert_eq!(
            last, horizon,
            "run {run}: footage up to {horizon} was flushed, only up to {last} survived"
        );
        base = next_base;
    }
    assert!(
        recovered_runs > 0,
        "no run ever needed recovery: the kills came too late"
    );
}
