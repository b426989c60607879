//! The store's good and bad paths: ranges and gaps, holds and retention, and every kind of
//! damage a technician may meet (another device's index, a corrupt index, damaged or missing
//! sample files, stray files, a full disk).

use std::collections::BTreeMap;
use std::path::Path;

use veil_core::ErrorKind;
use veil_faults::SmallDisk;
use veil_store::retention::{CameraRetention, Hold};
use veil_store::{Store, WriterSettings};

const T0: i64 = 1_700_000_000_000;

/// Records `seconds` of 25 fps footage from `start` (keyframe every second).
fn record(store: &std::sync::Arc<Store>, camera: &str, start: i64, seconds: i64) {
    let mut w = store.writer(
        camera,
        WriterSettings {
            segment_ms: 10_000,
            flush_ms: 1_000,
            ..WriterSettings::default()
        },
    );
    for i in 0..seconds * 25 {
        w.write(start + i * 40, i % 25 == 0, &[i as u8; 1000])
            .unwrap();
    }
    w.close().unwrap();
}

#[test]
fn footage_reads_back_from_the_keyframe_before_the_range_with_gaps_reported() {
    let dir = tempfile::tempdir().unwrap();
    let (store, report) = Store::open(dir.path(), "dev-a").unwrap();
    assert!(report.is_clean());
    record(&store, "cam", T0, 30);
    record(&store, "cam", T0 + 60_000, 10);
    // 3 segments of 10 s, then a 30 s gap, then one more.
    assert_eq!(store.segments().unwrap().len(), 4);
    let mut frames = Vec::new();
    let cov = store
        .read("cam", T0 + 12_500, T0 + 65_000, |f| {
            frames.push(f);
            Ok(())
        })
        .unwrap();
    assert_eq!(
        frames[0].wall_ms,
        T0 + 12_000,
        "starts at the keyframe before"
    );
    assert!(frames[0].keyframe);
    assert_eq!(frames.last().unwrap().wall_ms, T0 + 64_960);
    assert_eq!(cov.gaps, vec![(T0 + 30_000, T0 + 60_000)]);
    assert_eq!(store.verify().unwrap(), Vec::<String>::new());

    // Bad ranges and unknown cameras.
    let e = store.read("cam", T0 + 5, T0, |_| Ok(())).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    assert!(e.message().contains("not before"), "{e}");
    let e = store.coverage("nope", T0, T0 + 1).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
    assert!(e.message().contains("camera 'nope'"), "{e}");
    let empty = store.coverage("cam", T0 - 10_000, T0 - 5_000).unwrap();
    assert!(empty.segments.is_empty());
    assert_eq!(empty.gaps, vec![(T0 - 10_000, T0 - 5_000)]);
}

#[test]
fn retention_evicts_old_footage_but_never_held_footage() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(dir.path(), "dev-a").unwrap();
    record(&store, "cam", T0, 60); // 6 segments of 10 s
    store
        .hold(&Hold {
            id: "request-42".into(),
            camera: "cam".into(),
            from_ms: T0 + 15_000,
            to_ms: T0 + 25_000,
            reason: "video request 42".into(),
        })
        .unwrap();
    let limits = BTreeMap::from([(
        "cam".to_string(),
        CameraRetention {
            max_age_ms: Some(30_000),
            max_bytes: None,
        },
    )]);
    let plan = store.enforce(&limits, None, T0 + 90_000).unwrap();
    // Segments ending before T0+60s go, except the two the hold touches (10-20 s, 20-30 s).
    assert_eq!(plan.evict.len(), 3);
    let left: Vec<i64> = store
        .segments()
        .unwrap()
        .iter()
        .map(|s| s.start_ms - T0)
        .collect();
    assert_eq!(left, vec![10_000, 20_000, 50_000]);
    let files = std::fs::read_dir(dir.path().join("cam")).unwrap().count();
    assert_eq!(files, 3, "evicted files are gone from the disk");
    assert!(store.release("request-42").unwrap());
    store.enforce(&limits, None, T0 + 90_000).unwrap();
    assert_eq!(store.segments().unwrap().len(), 1);
}

#[test]
fn an_index_from_another_device_or_a_corrupt_one_is_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    drop(Store::open(dir.path(), "dev-a").unwrap());
    let e = Store::open(dir.path(), "dev-b").err().unwrap();
    assert_eq!(e.kind(), ErrorKind::Conflict);
    assert!(
        e.message()
            .contains("belongs to device dev-a, this is dev-b"),
        "{e}"
    );

    let bad = tempfile::tempdir().unwrap();
    std::fs::write(bad.path().join("index.sqlite3"), vec![0x5a; 8192]).unwrap();
    let e = Store::open(bad.path(), "dev-a").err().unwrap();
    assert!(e.message().contains("not a usable SQLite database"), "{e}");
}

#[test]
fn damaged_missing_and_stray_files_are_found_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(dir.path(), "dev-a").unwrap();
    record(&store, "cam", T0, 30);
    let segs = store.segments().unwrap();
    // Flip a byte in the first segment, delete the second, add a stray file.
    let first = dir.path().join(&segs[0].file);
    let mut bytes = std::fs::read(&first).unwrap();
    bytes[100] ^= 0xff;
    std::fs::write(&first, bytes).unwrap();
    let problems = store.verify().unwrap();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].contains("SHA-256 does not match"),
        "{problems:?}"
    );
    std::fs::remove_file(dir.path().join(&segs[1].file)).unwrap();
    std::fs::write(dir.path().join("cam/9999.seg"), b"stray").unwrap();
    drop(store);

    let (store, report) = Store::open(dir.path(), "dev-a").unwrap();
    assert_eq!(report.rows_without_file, 1);
    assert_eq!(report.orphan_files, 1);
    assert_eq!(store.segments().unwrap().len(), 2);
    // The missing stretch shows as a gap.
    let cov = store.coverage("cam", T0, T0 + 30_000).unwrap();
    assert_eq!(cov.gaps, vec![(T0 + 10_000, T0 + 20_000)]);
    // A truncated sample file is an error naming it, not a panic or garbage frames.
    let third = dir.path().join(&store.segments().unwrap()[1].file);
    let len = std::fs::metadata(&third).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&third)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let e = store
        .read("cam", T0 + 20_000, T0 + 30_000, |_| Ok(()))
        .unwrap_err();
    assert!(e.message().contains("truncated sample file"), "{e}");
    assert!(e.message().contains(&third.display().to_string()), "{e}");
}

#[test]
fn a_full_disk_is_an_error_and_leaves_a_consistent_store() {
    let disk = SmallDisk::mount(3);
    let root = disk.path().join("footage");
    let (store, _) = Store::open(&root, "dev-a").unwrap();
    let mut w = store.writer("cam", WriterSettings::default());
    let mut err = None;
    for i in 0..100_000i64 {
        if let Err(e) = w.write(T0 + i * 40, i % 25 == 0, &[7u8; 4000]) {
            err = Some(e);
            break;
        }
    }
    let e = err.expect("the disk never filled");
    assert_eq!(e.kind(), ErrorKind::ResourceExhausted, "{e}");
    drop(w);
    drop(store);
    // Reopened: recovery cuts the segment back to its last flush, and everything verifies.
    let (store, _) = Store::open(&root, "dev-a").unwrap();
    assert_eq!(store.verify().unwrap(), Vec::<String>::new());
    assert!(!store.segments().unwrap().is_empty());
    // Eviction makes room and recording goes on.
    store.enforce(&BTreeMap::new(), Some(0), T0).unwrap();
    record(&store, "cam", T0 + 3_600_000, 5);
    assert_eq!(store.verify().unwrap(), Vec::<String>::new());
}

#[test]
fn kept_originals_are_encrypted_on_disk_and_open_only_with_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let key = veil_store::SealKey::from_bytes([3; 32]);
    {
        let (store, _) = Store::open(dir.path(), "dev-a").unwrap();
        let mut w = store
            .writer("cam", WriterSettings::default())
            .sealed(key.clone());
        for i in 0..50i64 {
            let frame = format!("ORIGINAL-FACE-{i:04}").repeat(20);
            w.write(T0 + i * 40, i % 25 == 0, frame.as_bytes()).unwrap();
        }
        w.close().unwrap();
        let seg = &store.segments().unwrap()[0];
        assert!(seg.sealed);
        let bytes = std::fs::read(dir.path().join(&seg.file)).unwrap();
        assert!(
            !bytes.windows(8).any(|w| w == b"ORIGINAL"),
            "plaintext on disk"
        );
        assert_eq!(store.verify().unwrap(), Vec::<String>::new());
    }
    // Without the key: a clear refusal, not garbage frames.
    let (store, _) = Store::open(dir.path(), "dev-a").unwrap();
    let e = store.read("cam", T0, T0 + 2_000, |_| Ok(())).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::PermissionDenied);
    assert!(e.message().contains("encrypted originals"), "{e}");
    // With the key: the frames as written.
    store.set_seal_key(key);
    let mut n = 0i64;
    store
        .read("cam", T0, T0 + 2_000, |f| {
            assert_eq!(
                f.data,
                format!("ORIGINAL-FACE-{n:04}").repeat(20).as_bytes()
            );
            n += 1;
            Ok(())
        })
        .unwrap();
    assert_eq!(n, 50);
    // Another device's key (a copied disk): refused, naming the file.
    let dir2 = tempfile::tempdir().unwrap();
    copy_dir(dir.path(), dir2.path());
    let (other, _) = Store::open(dir2.path(), "dev-a").unwrap();
    other.set_seal_key(veil_store::SealKey::from_bytes([4; 32]));
    let e = other.read("cam", T0, T0 + 2_000, |_| Ok(())).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::PermissionDenied);
    assert!(e.message().contains("does not decrypt"), "{e}");
}

fn copy_dir(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            std::fs::create_dir_all(&target).unwrap();
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[test]
fn an_index_of_the_first_schema_is_migrated_and_its_footage_kept() {
    let dir = tempfile::tempdir().unwrap();
    {
        // A store as the first release wrote it: schema 1, Annex B samples.
        let db = rusqlite::Connection::open(dir.path().join("index.sqlite3")).unwrap();
        db.execute_batch(
            "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
             CREATE TABLE segments (id INTEGER PRIMARY KEY AUTOINCREMENT, camera TEXT NOT NULL,
               start_ms INTEGER NOT NULL, end_ms INTEGER NOT NULL, frames INTEGER NOT NULL,
               bytes INTEGER NOT NULL, sha256 BLOB, open INTEGER NOT NULL,
               timing BLOB NOT NULL, keyframes BLOB NOT NULL);
             CREATE INDEX segments_by_time ON segments (camera, start_ms);
             CREATE TABLE holds (id TEXT PRIMARY KEY, camera TEXT NOT NULL,
               from_ms INTEGER NOT NULL, to_ms INTEGER NOT NULL, reason TEXT NOT NULL);
             CREATE TABLE garbage (file TEXT PRIMARY KEY);
             INSERT INTO meta VALUES ('device_id', 'dev-a');
             PRAGMA user_version = 1;",
        )
        .unwrap();
    }
    let (store, _) = Store::open(dir.path(), "dev-a").unwrap();
    record(&store, "cam", T0, 2);
    let seg = &store.segments().unwrap()[0];
    assert_eq!(seg.format, veil_store::SampleFormat::AnnexB);
    assert!(!seg.sealed);
    let version: i64 = rusqlite::Connection::open(dir.path().join("index.sqlite3"))
        .unwrap()
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(version, 2);
}
