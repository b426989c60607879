//! Uploads against a real S3-compatible server (s3s-fs: SigV4 checked, multipart, presigned
//! URLs): bytes arrive intact, a server killed mid-upload is resumed without re-sending
//! acknowledged parts, bad credentials and tampered or expired presigned URLs fail clearly.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use sha2::{Digest, Sha256};
use veil_core::ErrorKind;
use veil_faults::{FaultRelay, Faults};
use veil_uplink::testing::{
    MotoS3, S3_ACCESS_KEY, S3_BUCKET, S3_SECRET_KEY, S3RVER_KEY, S3Server, S3rver,
};
use veil_uplink::upload::{Journal, Settings, Target, Upload, Uploader};

fn file(dir: &Path, name: &str, bytes: usize, seed: u64) -> Upload {
    let mut x = seed | 1;
    let data: Vec<u8> = (0..bytes)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let path = dir.join(name);
    std::fs::File::create(&path)
        .unwrap()
        .write_all(&data)
        .unwrap();
    Upload {
        path,
        name: name.into(),
        bytes: bytes as u64,
    }
}

fn sha(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Each file is stored under `prefix` with the same bytes (`read` fetches an object).
fn assert_stored(files: &[&Upload], prefix: &str, read: impl Fn(&str) -> Option<Vec<u8>>) {
    for f in files {
        let stored = read(&format!("{prefix}{}", f.name)).expect("object stored");
        assert_eq!(
            sha(&stored),
            sha(&std::fs::read(&f.path).unwrap()),
            "{}",
            f.name
        );
    }
}

fn target(s3: &S3Server, secret: &str) -> Target {
    Target::sigv4(
        &s3.endpoint(),
        "us-east-1",
        S3_BUCKET,
        S3_ACCESS_KEY,
        secret,
        "dev1/job-1/",
    )
    .unwrap()
}

const MIB: usize = 1024 * 1024;

/// The test server's bucket reached through `relay`, objects under `prefix`.
fn via(relay: &FaultRelay, prefix: &str) -> Target {
    Target::sigv4(
        &format!("http://{}", relay.addr()),
        "us-east-1",
        S3_BUCKET,
        S3_ACCESS_KEY,
        S3_SECRET_KEY,
        prefix,
    )
    .unwrap()
}

#[test]
fn multipart_uploads_arrive_intact_with_the_manifest_last() {
    let s3 = S3Server::start();
    let dir = tempfile::tempdir().unwrap();
    let video = file(dir.path(), "yard-001.mp4", 23 * MIB + 17, 1);
    let small = file(dir.path(), "yard-002.mp4", 300_000, 2);
    let manifest = file(dir.path(), "manifest.json", 2_000, 3);
    let settings = Settings {
        part_size: 5 * MIB as u64,
        ..Settings::default()
    };
    let seen = std::sync::Mutex::new(Vec::new());
    let summary = Uploader::new(target(&s3, S3_SECRET_KEY), settings)
        .upload(
            &[video.clone(), small.clone()],
            &manifest,
            &dir.path().join("journal.json"),
            &|done, total| {
                seen.lock().unwrap().push((done, total));
            },
        )
        .unwrap();
    assert_eq!(summary.objects.last().unwrap(), "dev1/job-1/manifest.json");
    assert_stored(&[&video, &small, &manifest], "dev1/job-1/", |k| {
        s3.object(k)
    });
    let seen = seen.into_inner().unwrap();
    assert_eq!(
        seen.last().unwrap().0,
        seen.last().unwrap().1,
        "progress ends at 100 %"
    );
    assert!(seen.len() >= 5, "progress per part: {seen:?}");
    // Uploading again finds everything done in the journal: nothing is sent.
    let again = Uploader::new(target(&s3, S3_SECRET_KEY), settings)
        .upload(
            &[video, small],
            &manifest,
            &dir.path().join("journal.json"),
            &|_, _| {},
        )
        .unwrap();
    assert_eq!(again.sent, 0);
}

/// The same upload against moto, a second S3 implementation written apart from s3s-fs: the
/// multipart start (`?uploads`), parts and completion are understood there too.
#[test]
fn multipart_uploads_work_against_a_second_s3_implementation() {
    let moto = MotoS3::start();
    let dir = tempfile::tempdir().unwrap();
    let video = file(dir.path(), "yard-001.mp4", 11 * MIB + 5, 4);
    let manifest = file(dir.path(), "manifest.json", 1_500, 5);
    let target = Target::sigv4(
        &moto.endpoint(),
        "us-east-1",
        S3_BUCKET,
        S3_ACCESS_KEY,
        S3_SECRET_KEY,
        "dev1/job-2/",
    )
    .unwrap();
    let settings = Settings {
        part_size: 5 * MIB as u64,
        ..Settings::default()
    };
    let summary = Uploader::new(target, settings)
        .upload(
            std::slice::from_ref(&video),
            &manifest,
            &dir.path().join("journal.json"),
            &|_, _| {},
        )
        .unwrap();
    assert_eq!(summary.objects.last().unwrap(), "dev1/job-2/manifest.json");
    assert_stored(&[&video, &manifest], "dev1/job-2/", |k| moto.object(k));
}

/// A third implementation, s3rver (Node.js): the multipart upload arrives intact (its ETag is
/// the whole object's MD5, checked against the file instead of the parts'), and an unknown
/// access key is refused as a permission problem.
#[test]
fn multipart_uploads_work_against_a_third_s3_implementation() {
    let s3rver = S3rver::start();
    let dir = tempfile::tempdir().unwrap();
    let video = file(dir.path(), "yard-001.mp4", 11 * MIB + 7, 15);
    let manifest = file(dir.path(), "manifest.json", 1_200, 16);
    let target = |key: &str| {
        Target::sigv4(
            &s3rver.endpoint(),
            "us-east-1",
            S3_BUCKET,
            key,
            S3RVER_KEY,
            "dev1/job-5/",
        )
        .unwrap()
    };
    let settings = Settings {
        part_size: 5 * MIB as u64,
        ..Settings::default()
    };
    let summary = Uploader::new(target(S3RVER_KEY), settings)
        .upload(
            std::slice::from_ref(&video),
            &manifest,
            &dir.path().join("journal.json"),
            &|_, _| {},
        )
        .unwrap();
    assert_eq!(summary.objects.last().unwrap(), "dev1/job-5/manifest.json");
    assert_stored(&[&video, &manifest], "dev1/job-5/", |k| s3rver.object(k));
    let e = Uploader::new(target("NOT-A-KEY"), settings)
        .upload(
            std::slice::from_ref(&video),
            &manifest,
            &dir.path().join("journal-2.json"),
            &|_, _| {},
        )
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{e}");
}

#[test]
fn a_server_killed_mid_upload_is_resumed_without_resending_acknowledged_parts() {
    let mut s3 = S3Server::start();
    let dir = tempfile::tempdir().unwrap();
    let video = file(dir.path(), "yard-001.mp4", 40 * MIB, 9);
    let manifest = file(dir.path(), "manifest.json", 1_000, 10);
    let journal = dir.path().join("journal.json");
    // Paced to 8 MiB/s so the kill lands in the middle; few attempts so the first run gives up.
    let slow = Settings {
        part_size: 5 * MIB as u64,
        parallel: 2,
        max_bytes_per_second: Some(8 * MIB as u64),
        attempts: 2,
        ..Settings::default()
    };
    let to_s3 = target(&s3, S3_SECRET_KEY);
    let first = std::thread::scope(|scope| {
        let run = scope.spawn(|| {
            Uploader::new(to_s3.clone(), slow).upload(
                std::slice::from_ref(&video),
                &manifest,
                &journal,
                &|_, _| {},
            )
        });
        std::thread::sleep(Duration::from_millis(2500));
        s3.stop();
        run.join().unwrap()
    });
    let e = first.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    let acknowledged = Journal::load(&journal).unwrap().objects["dev1/job-1/yard-001.mp4"]
        .parts
        .len();
    assert!(
        (1..8).contains(&acknowledged),
        "{acknowledged} parts acknowledged before the kill"
    );
    s3.restart();
    let summary = Uploader::new(
        target(&s3, S3_SECRET_KEY),
        Settings {
            part_size: 5 * MIB as u64,
            ..Settings::default()
        },
    )
    .upload(
        std::slice::from_ref(&video),
        &manifest,
        &journal,
        &|_, _| {},
    )
    .unwrap();
    assert_eq!(summary.parts_resumed, acknowledged as u64);
    assert!(
        summary.sent < video.bytes + manifest.bytes,
        "re-sent everything: {summary:?}"
    );
    let stored = s3.object("dev1/job-1/yard-001.mp4").unwrap();
    assert_eq!(sha(&stored), sha(&std::fs::read(&video.path).unwrap()));
}

/// Through a bad link (veil-faults' relay): the answers come late, both directions are
/// throttled, and the first three connections are cut 1 MiB into a part. Every cut part is
/// sent again and completes; what the relay carried shows that no acknowledged part was sent
/// twice (at most the cut bytes and the requests' headers on top of the file).
#[test]
fn cuts_mid_part_on_a_slow_link_resend_only_the_cut_parts() {
    let s3 = S3Server::start();
    let relay = FaultRelay::start(
        ([127, 0, 0, 1], s3.port).into(),
        Faults {
            answer_delay: Duration::from_millis(300),
            bytes_per_sec: Some(16 * MIB as u64),
            cut_after: Some((3, MIB)),
            ..Faults::default()
        },
    );
    let dir = tempfile::tempdir().unwrap();
    let video = file(dir.path(), "yard-001.mp4", 12 * MIB + 3, 11);
    let manifest = file(dir.path(), "manifest.json", 900, 12);
    let through = via(&relay, "dev1/job-3/");
    let settings = Settings {
        part_size: 5 * MIB as u64,
        parallel: 2,
        ..Settings::default()
    };
    let summary = Uploader::new(through, settings)
        .upload(
            std::slice::from_ref(&video),
            &manifest,
            &dir.path().join("journal.json"),
            &|_, _| {},
        )
        .unwrap();
    assert_eq!(summary.objects.last().unwrap(), "dev1/job-3/manifest.json");
    assert_stored(&[&video, &manifest], "dev1/job-3/", |k| s3.object(k));
    assert!(
        relay.accepted() > 3,
        "the cut connections were not replaced"
    );
    let budget = video.bytes + manifest.bytes + 3 * MIB as u64 + 64 * 1024;
    assert!(
        relay.bytes_to_server() <= budget,
        "{} bytes carried for {} bytes of files: parts were sent twice",
        relay.bytes_to_server(),
        video.bytes + manifest.bytes
    );
}

/// A link that goes silent (the relay swallows everything, both ways) holds no upload
/// forever: the stalled request is given up after `stall` and tried again on a new
/// connection, and once the link is back the upload completes intact. The link comes back as
/// soon as the relay sees that second connection, so the outcome does not depend on timing.
#[test]
fn a_link_that_goes_silent_is_given_up_on_and_the_upload_completes_when_it_is_back() {
    let s3 = S3Server::start();
    let relay = FaultRelay::start(([127, 0, 0, 1], s3.port).into(), Faults::default());
    relay.silence(true);
    let dir = tempfile::tempdir().unwrap();
    let video = file(dir.path(), "yard-001.mp4", 6 * MIB, 13);
    let manifest = file(dir.path(), "manifest.json", 700, 14);
    let through = via(&relay, "dev1/job-4/");
    let settings = Settings {
        part_size: 5 * MIB as u64,
        parallel: 1,
        stall: Duration::from_secs(2),
        ..Settings::default()
    };
    let summary = std::thread::scope(|scope| {
        let run = scope.spawn(|| {
            Uploader::new(through, settings).upload(
                std::slice::from_ref(&video),
                &manifest,
                &dir.path().join("journal.json"),
                &|_, _| {},
            )
        });
        while relay.accepted() < 2 && !run.is_finished() {
            std::thread::sleep(Duration::from_millis(20));
        }
        relay.silence(false);
        run.join().unwrap()
    })
    .unwrap();
    assert!(summary.retries >= 1, "{summary:?}");
    assert_stored(&[&video, &manifest], "dev1/job-4/", |k| s3.object(k));
}

#[test]
fn bad_credentials_and_tampered_or_expired_presigned_urls_fail_clearly() {
    let s3 = S3Server::start();
    let dir = tempfile::tempdir().unwrap();
    let manifest = file(dir.path(), "manifest.json", 1_000, 4);
    let video = file(dir.path(), "yard-001.mp4", 100_000, 5);
    let e = Uploader::new(target(&s3, "wrong-secret"), Settings::default())
        .upload(
            std::slice::from_ref(&video),
            &manifest,
            &dir.path().join("j1.json"),
            &|_, _| {},
        )
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{e}");
    assert!(
        e.message().contains("yard-001.mp4") && e.message().contains("403"),
        "{e}"
    );

    // Presigned PUTs, as a fleet hands them over in a job.
    let presign = |key: &str, valid: Duration| s3.presign_put(key, valid);
    let urls: BTreeMap<String, url::Url> = [
        (
            "yard-001.mp4".to_string(),
            presign("in/yard-001.mp4", Duration::from_secs(600)),
        ),
        (
            "manifest.json".to_string(),
            presign("in/manifest.json", Duration::from_secs(600)),
        ),
    ]
    .into();
    Uploader::new(Target::Presigned(urls.clone()), Settings::default())
        .upload(
            std::slice::from_ref(&video),
            &manifest,
            &dir.path().join("j2.json"),
            &|_, _| {},
        )
        .unwrap();
    assert_eq!(
        s3.object("in/yard-001.mp4").unwrap(),
        std::fs::read(&video.path).unwrap()
    );

    let mut tampered = urls.clone();
    let url = tampered.get_mut("yard-001.mp4").unwrap();
    let bent = url.as_str().replace("in/yard-001.mp4", "in/other.mp4");
    *url = bent.parse().unwrap();
    let e = Uploader::new(Target::Presigned(tampered), Settings::default())
        .upload(
            std::slice::from_ref(&video),
            &manifest,
            &dir.path().join("j3.json"),
            &|_, _| {},
        )
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{e}");
    assert!(s3.object("in/other.mp4").is_none());

    let mut expired = urls;
    expired.insert(
        "yard-001.mp4".into(),
        presign("in/late.mp4", Duration::from_secs(1)),
    );
    std::thread::sleep(Duration::from_millis(2100));
    let e = Uploader::new(Target::Presigned(expired), Settings::default())
        .upload(&[video], &manifest, &dir.path().join("j4.json"), &|_, _| {})
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{e}");
    assert!(s3.object("in/late.mp4").is_none());
}
