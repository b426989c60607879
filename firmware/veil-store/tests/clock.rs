//! The wall clock of a recording device steps: NTP corrects it by an hour after a boot
//! without a network, a technician sets it, daylight saving is misapplied. A property test
//! (proptest; `PROPTEST_CASES` raises the count) records a camera at 25 fps while the clock
//! jumps by random steps (±1 h, ±seconds), then checks what was recorded: the store verifies,
//! every frame the writer kept reads back exactly once with the time it was recorded at,
//! no segment ends before it starts, and held footage survives eviction.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use veil_store::retention::Hold;
use veil_store::{Store, WriterSettings, Written};

const T0: i64 = 1_760_000_000_000;
const HOUR: i64 = 3_600_000;

fn step() -> impl Strategy<Value = i64> {
    prop_oneof![
        Just(HOUR),
        Just(-HOUR),
        Just(-2 * HOUR),
        (-30_000i64..30_000),
        Just(-40),
        Just(0),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: veil_faults::proptest_cases(24),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn recording_through_clock_steps_keeps_every_frame_once(
        steps in prop::collection::vec((1usize..400, step()), 0..5),
        frames in 100usize..400,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = Store::open(dir.path(), "dev-clock").unwrap();
        let mut w = store.writer("cam", WriterSettings {
            segment_ms: 4_000,
            flush_ms: 1_000,
            ..WriterSettings::default()
        });
        let steps: BTreeMap<usize, i64> = steps.into_iter().collect();
        let mut offset = 0i64;
        // Frame number -> the wall time it was recorded at, for the frames the writer kept.
        let mut kept = BTreeMap::new();
        for i in 0..frames {
            offset += steps.get(&i).copied().unwrap_or(0);
            let wall = T0 + i as i64 * 40 + offset;
            let data = (i as u64).to_be_bytes();
            match w.write(wall, i % 25 == 0, &data).unwrap() {
                Written::SkippedUntilKeyframe { .. } => {}
                _ => {
                    kept.insert(i as u64, wall);
                }
            }
        }
        w.close().unwrap();
        prop_assert_eq!(store.verify().unwrap(), Vec::<String>::new());

        let (lo, hi) = (
            kept.values().min().copied().unwrap_or(T0),
            kept.values().max().copied().unwrap_or(T0) + 1,
        );
        let mut seen = BTreeSet::new();
        store
            .read("cam", lo, hi, |f| {
                let i = u64::from_be_bytes(f.data[..8].try_into().unwrap());
                assert!(seen.insert(i), "frame {i} read twice");
                assert_eq!(Some(&f.wall_ms), kept.get(&i), "frame {i} has another time");
                Ok(())
            })
            .unwrap();
        let expected: BTreeSet<u64> = kept.keys().copied().collect();
        prop_assert_eq!(&seen, &expected, "frames lost or invented");

        // A segment never ends before it starts, whichever way the clock went.
        for seg in store.segments().unwrap() {
            prop_assert!(seg.start_ms <= seg.end_ms, "segment {} ends before it starts", seg.id);
        }

        // A hold over the first second recorded survives evicting everything else.
        let first = kept.values().next().copied().unwrap_or(T0);
        store.hold(&Hold {
            id: "case-1".into(),
            camera: "cam".into(),
            from_ms: first,
            to_ms: first + 1_000,
            reason: "evidence".into(),
        }).unwrap();
        store.enforce(&BTreeMap::new(), Some(0), hi + HOUR).unwrap();
        let mut held = 0;
        store.read("cam", first, first + 1_000, |_| { held += 1; Ok(()) }).unwrap();
        prop_assert!(held > 0, "held footage was evicted");
        prop_assert_eq!(store.verify().unwrap(), Vec::<String>::new());
    }
}
