//! Resumable downloads (firmware bundles) from a real S3-compatible server (s3s-fs: SigV4
//! checked, ranges), directly and through a fault relay: a link cut in the middle of a range,
//! a download stopped and resumed later, an object replaced between two runs, a wrong
//! checksum, a missing object and refused credentials.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sha2::{Digest, Sha256};
use veil_core::ErrorKind;
use veil_faults::{FaultRelay, Faults};
use veil_uplink::download::{CANCELED, CHUNK, Origin, Settings, fetch, part_path};
use veil_uplink::testing::{S3_ACCESS_KEY, S3_BUCKET, S3_SECRET_KEY, S3Server};

fn data(bytes: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..bytes)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn sha(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn s3_origin(endpoint: &str, secret: &str, key: &str) -> Origin {
    Origin::S3 {
        bucket: Box::new(
            rusty_s3::Bucket::new(
                endpoint.parse().unwrap(),
                rusty_s3::UrlStyle::Path,
                S3_BUCKET,
                "us-east-1",
            )
            .unwrap(),
        ),
        credentials: Box::new(rusty_s3::Credentials::new(S3_ACCESS_KEY, secret)),
        key: key.into(),
    }
}

fn quick() -> Settings {
    Settings {
        stall: Duration::from_secs(30),
        attempts: 4,
    }
}

#[test]
fn a_bundle_arrives_intact_from_the_bucket_and_from_a_presigned_url() {
    let s3 = S3Server::start();
    let bytes = data(9 * 1024 * 1024 + 123, 1);
    s3.put_object("bundles/v2.raucb", &bytes);
    let dir = tempfile::tempdir().unwrap();

    let dest = dir.path().join("a.raucb");
    let mut seen = Vec::new();
    let n = fetch(
        &s3_origin(&s3.endpoint(), S3_SECRET_KEY, "bundles/v2.raucb"),
        &dest,
        Some(&sha(&bytes)),
        quick(),
        None,
        &mut |have, total| {
            seen.push((have, total));
            true
        },
    )
    .unwrap();
    assert_eq!(n, bytes.len() as u64);
    assert_eq!(std::fs::read(&dest).unwrap(), bytes);
    assert!(!part_path(&dest).exists());
    // One range per 4 MiB, each reported.
    assert_eq!(
        seen.iter().map(|s| s.0).collect::<Vec<_>>(),
        vec![0, CHUNK, 2 * CHUNK, bytes.len() as u64]
    );

    let dest = dir.path().join("b.raucb");
    let url = s3.presign_get("bundles/v2.raucb", Duration::from_secs(600));
    fetch(
        &Origin::Url(url),
        &dest,
        None,
        quick(),
        None,
        &mut |_, _| true,
    )
    .unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), bytes);
}

#[test]
fn a_link_cut_in_the_middle_of_a_range_resumes_where_the_file_ends() {
    let s3 = S3Server::start();
    let bytes = data(10 * 1024 * 1024, 2);
    s3.put_object("v2.raucb", &bytes);
    // Slow enough that the second range is still on the wire when the link is cut.
    let relay = Arc::new(FaultRelay::start(
        ([127, 0, 0, 1], s3.port).into(),
        Faults {
            bytes_per_sec: Some(2 * 1024 * 1024),
            ..Faults::default()
        },
    ));
    let endpoint = format!("http://127.0.0.1:{}", relay.port);
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("v2.raucb");
    let cut = Arc::new(AtomicBool::new(false));
    let cutter = {
        let (relay, cut) = (relay.clone(), cut.clone());
        std::thread::spawn(move || {
            // Once the first range is in, cut whatever is on the wire a moment later.
            while !cut.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(20));
            }
            std::thread::sleep(Duration::from_millis(500));
            relay.cut_all();
        })
    };
    fetch(
        &s3_origin(&endpoint, S3_SECRET_KEY, "v2.raucb"),
        &dest,
        Some(&sha(&bytes)),
        quick(),
        None,
        &mut |have, _| {
            if have >= CHUNK {
                cut.store(true, Ordering::SeqCst);
            }
            true
        },
    )
    .unwrap();
    cutter.join().unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), bytes);
    assert!(
        relay.accepted() >= 2,
        "the cut connection was replaced by a new one"
    );
}

#[test]
fn a_stopped_download_resumes_later_and_a_replaced_object_starts_over() {
    let s3 = S3Server::start();
    let first = data(9 * 1024 * 1024, 3);
    s3.put_object("v2.raucb", &first);
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("v2.raucb");
    let origin = s3_origin(&s3.endpoint(), S3_SECRET_KEY, "v2.raucb");

    // Stopped after the first range (the daemon restarting, the job moving on).
    let e = fetch(&origin, &dest, None, quick(), None, &mut |have, _| {
        have == 0
    })
    .unwrap_err();
    assert_eq!(e.to_string(), CANCELED);
    assert_eq!(std::fs::metadata(part_path(&dest)).unwrap().len(), CHUNK);

    // Resumed: starts at the first byte it does not have.
    let mut starts = Vec::new();
    fetch(
        &origin,
        &dest,
        Some(&sha(&first)),
        quick(),
        None,
        &mut |have, _| {
            starts.push(have);
            true
        },
    )
    .unwrap();
    assert_eq!(starts[0], CHUNK);
    assert_eq!(std::fs::read(&dest).unwrap(), first);

    // The object is replaced between two runs: the part is not spliced onto the new one.
    std::fs::remove_file(&dest).unwrap();
    fetch(&origin, &dest, None, quick(), None, &mut |have, _| {
        have == 0
    })
    .unwrap_err();
    let second = data(9 * 1024 * 1024, 4);
    s3.put_object("v2.raucb", &second);
    let got = fetch(
        &origin,
        &dest,
        Some(&sha(&second)),
        quick(),
        None,
        &mut |_, _| true,
    );
    match got {
        Ok(_) => assert_eq!(std::fs::read(&dest).unwrap(), second),
        // A server that ignores If-Range: the checksum catches the splice, nothing is kept.
        Err(e) => {
            assert!(e.to_string().contains("SHA-256"), "{e}");
            assert!(!part_path(&dest).exists());
        }
    }
}

/// A fetch that must fail: its error.
fn refused(origin: &Origin, dest: &std::path::Path, sha256: Option<&str>) -> veil_core::Error {
    fetch(origin, dest, sha256, quick(), None, &mut |_, _| true).unwrap_err()
}

#[test]
fn wrong_checksums_missing_objects_and_refused_credentials_fail_clearly() {
    let s3 = S3Server::start();
    let bytes = data(1024 * 1024, 5);
    s3.put_object("v2.raucb", &bytes);
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("v2.raucb");

    let e = refused(
        &s3_origin(&s3.endpoint(), S3_SECRET_KEY, "v2.raucb"),
        &dest,
        Some(&"0".repeat(64)),
    );
    assert!(e.to_string().contains("is not the"), "{e}");
    assert!(!dest.exists() && !part_path(&dest).exists());

    let e = refused(
        &s3_origin(&s3.endpoint(), S3_SECRET_KEY, "nope.raucb"),
        &dest,
        None,
    );
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    assert!(
        e.to_string().contains("s3 object evidence/nope.raucb"),
        "{e}"
    );

    let e = refused(
        &s3_origin(&s3.endpoint(), "wrong-secret", "v2.raucb"),
        &dest,
        None,
    );
    assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{e}");

    // Nothing listens: tried again with backoff, then given up with what is kept.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}/v2.raucb").parse().unwrap();
    let e = fetch(
        &Origin::Url(url),
        &dest,
        None,
        Settings {
            stall: Duration::from_secs(5),
            attempts: 2,
        },
        None,
        &mut |_, _| true,
    )
    .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    assert!(e.to_string().contains("2 tries in a row"), "{e}");
}

#[test]
fn a_server_without_ranges_sends_the_whole_file_which_is_streamed_to_disk() {
    // Python's http.server answers every GET with 200 and the whole file.
    let dir = tempfile::tempdir().unwrap();
    let bytes = data(6 * 1024 * 1024, 6);
    std::fs::write(dir.path().join("v2.raucb"), &bytes).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut server = std::process::Command::new("/usr/bin/python3")
        .args([
            "-m",
            "http.server",
            "--bind",
            "127.0.0.1",
            &port.to_string(),
        ])
        .current_dir(dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("Debian's python3");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "http.server did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let dest = dir.path().join("got.raucb");
    let url = format!("http://127.0.0.1:{port}/v2.raucb").parse().unwrap();
    let got = fetch(
        &Origin::Url(url),
        &dest,
        Some(&sha(&bytes)),
        quick(),
        None,
        &mut |_, _| true,
    );
    let _ = server.kill();
    let _ = server.wait();
    assert_eq!(got.unwrap(), bytes.len() as u64);
    assert_eq!(std::fs::read(&dest).unwrap(), bytes);
}
