//! RTSP against an IP camera we did not write: GStreamer's RTSP server (scripts/peers).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use veil_core::{Clock, ErrorKind, SystemClock};
use veil_faults::{FaultRelay, Faults};
use veil_media::rtsp::{RtspOptions, RtspSource, RtspTransport};
use veil_media::source::Source;

/// The GStreamer camera, stopped on drop.
struct Camera {
    child: Child,
    url: String,
}

impl Drop for Camera {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port for a GStreamer camera, free now, from below the kernel's ephemeral range: a
/// listener another test binds to port 0 meanwhile can never be handed the same one (that
/// race once had the garbage test reach an authenticating camera).
fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let seed = std::process::id()
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
    loop {
        let n = seed.wrapping_add(NEXT.fetch_add(7919, Ordering::Relaxed));
        let port = 20_000 + (n % 10_000) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

fn gstreamer_available() -> bool {
    let ok = Command::new("/usr/bin/python3")
        .args(["-c", "import gi; gi.require_version('GstRtspServer', '1.0'); from gi.repository import GstRtspServer"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            std::env::var_os("VEIL_MEDIA_DIR").is_none(),
            "GStreamer RTSP server missing: scripts/test installs it"
        );
        eprintln!("GStreamer RTSP server not installed: skipping");
    }
    ok
}

fn start_camera(port: u16, extra: &[&str]) -> Camera {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../scripts/peers/rtsp-camera.py"
    );
    let mut child = Command::new("/usr/bin/python3")
        .arg(script)
        .arg(port.to_string())
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(
        line.starts_with("rtsp://"),
        "camera did not start: {line:?}"
    );
    Camera {
        child,
        url: line.trim().to_string(),
    }
}

fn options(url: &str) -> RtspOptions {
    RtspOptions {
        url: url.to_string(),
        username: None,
        password: None,
        transport: RtspTransport::Tcp,
        stall_timeout: Duration::from_secs(5),
        fps_hint: 25,
    }
}

fn clock() -> Arc<dyn Clock> {
    Arc::new(SystemClock::new())
}

/// Pulls `n` pictures; checks size, sequence continuity and that the picture moves.
fn pull(source: &mut RtspSource, n: u64) {
    let mut last_sum = 0u64;
    let mut changes = 0;
    for i in 0..n {
        let f = source
            .next_frame()
            .unwrap_or_else(|e| panic!("picture {i}: {e}"))
            .unwrap();
        assert_eq!((f.width(), f.height()), (640, 360));
        assert_eq!(f.meta.seq, i);
        let sum: u64 = f.y().iter().step_by(7).map(|&p| p as u64).sum();
        changes += u32::from(sum != last_sum);
        last_sum = sum;
    }
    assert!(
        changes as u64 > n / 2,
        "the picture does not move: {changes} changes in {n}"
    );
}

#[test]
fn pulls_h264_over_tcp_with_digest_auth_from_url_credentials() {
    if !gstreamer_available() {
        return;
    }
    let port = free_port();
    let cam = start_camera(port, &["--user", "admin", "--password", "p@ss"]);
    let url = cam.url.replace("rtsp://", "rtsp://admin:p%40ss@");
    let mut src = RtspSource::open(&options(&url), clock()).unwrap();
    assert_eq!(src.fps(), 25);
    pull(&mut src, 50);
}

#[test]
fn pulls_over_udp_with_basic_auth_from_options() {
    if !gstreamer_available() {
        return;
    }
    let port = free_port();
    let cam = start_camera(
        port,
        &["--user", "viewer", "--password", "pw", "--auth", "basic"],
    );
    let opts = RtspOptions {
        username: Some("viewer".into()),
        password: Some("pw".into()),
        transport: RtspTransport::Udp,
        ..options(&cam.url)
    };
    let mut src = RtspSource::open(&opts, clock()).unwrap();
    pull(&mut src, 20);
}

#[test]
fn a_wrong_password_is_a_clear_error_without_the_password() {
    if !gstreamer_available() {
        return;
    }
    let port = free_port();
    let cam = start_camera(port, &["--user", "admin", "--password", "right"]);
    let url = cam.url.replace("rtsp://", "rtsp://admin:wrong-secret@");
    let e = RtspSource::open(&options(&url), clock())
        .err()
        .expect("must be refused");
    assert_eq!(e.kind(), ErrorKind::Unauthenticated, "{e}");
    assert!(e.to_string().contains("refused the credentials"), "{e}");
    assert!(
        !e.to_string().contains("wrong-secret"),
        "password leaked: {e}"
    );
}

#[test]
fn a_camera_that_dies_is_reported_and_reconnects_when_back() {
    if !gstreamer_available() {
        return;
    }
    let port = free_port();
    let cam = start_camera(port, &[]);
    let mut opts = options(&cam.url);
    opts.stall_timeout = Duration::from_secs(2);
    let mut src = RtspSource::open(&opts, clock()).unwrap();
    pull(&mut src, 10);
    drop(cam);
    let t0 = Instant::now();
    let e = loop {
        match src.next_frame() {
            Ok(_) => assert!(
                t0.elapsed() < Duration::from_secs(10),
                "frames keep coming from a dead camera"
            ),
            Err(e) => break e,
        }
    };
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    assert!(e.to_string().contains("127.0.0.1"), "{e}");
    let _back = start_camera(port, &[]);
    let mut src = RtspSource::open(&opts, clock()).unwrap();
    pull(&mut src, 10);
}

#[test]
fn garbage_from_the_server_is_an_error_not_a_crash() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut buf = [0u8; 1024];
        let _ = s.read(&mut buf);
        let junk: Vec<u8> = (0..4096u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let _ = s.write_all(b"RTSP/1.0 200 OK\r\nCSeq: 1\r\nContent-Length: 4000\r\n\r\n");
        let _ = s.write_all(&junk);
    });
    let mut opts = options(&format!("rtsp://127.0.0.1:{port}/cam"));
    opts.stall_timeout = Duration::from_secs(3);
    let e = RtspSource::open(&opts, clock())
        .err()
        .expect("garbage must not open");
    assert!(
        matches!(e.kind(), ErrorKind::Unavailable | ErrorKind::InvalidInput),
        "{e}"
    );
    server.join().unwrap();
}

/// The camera behind a bad link (veil-faults' relay, RTSP interleaved over TCP): a slow,
/// throttled link still delivers every picture in order; a link that goes silent mid-stream,
/// or is cut, is an `Unavailable` error naming the camera rather than a hang or a crash; a
/// camera that refuses connections too; and the source opens again once the link is back.
#[test]
fn a_slow_silent_cut_or_refusing_link_is_reported_and_recovered_from() {
    if !gstreamer_available() {
        return;
    }
    let cam = start_camera(free_port(), &[]);
    let server: std::net::SocketAddr = cam
        .url
        .trim_start_matches("rtsp://")
        .split('/')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let relay = FaultRelay::start(
        server,
        Faults {
            answer_delay: Duration::from_millis(500),
            bytes_per_sec: Some(400_000),
            ..Faults::default()
        },
    );
    let url = cam
        .url
        .replace(&server.to_string(), &relay.addr().to_string());
    // Ten times the held-back answer: a loaded machine does not turn the slow link into a
    // failure; a silent one is still reported after it.
    let mut opts = options(&url);
    opts.stall_timeout = Duration::from_secs(5);
    let mut src = RtspSource::open(&opts, clock()).unwrap();
    pull(&mut src, 30);

    let reported = |src: &mut RtspSource| loop {
        match src.next_frame() {
            Ok(_) => {}
            Err(e) => break e,
        }
    };
    relay.silence(true);
    let e = reported(&mut src);
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    assert!(e.to_string().contains("127.0.0.1"), "{e}");
    relay.cut_all();
    relay.silence(false);

    relay.set(Faults::default());
    let mut src = RtspSource::open(&opts, clock()).unwrap();
    pull(&mut src, 10);
    relay.cut_all();
    let e = reported(&mut src);
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");

    relay.set(Faults {
        refuse: true,
        ..Faults::default()
    });
    let e = RtspSource::open(&opts, clock())
        .err()
        .expect("a refusing camera must not open");
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    assert!(e.to_string().contains("127.0.0.1"), "{e}");

    relay.set(Faults::default());
    let mut src = RtspSource::open(&opts, clock()).unwrap();
    pull(&mut src, 10);
}

/// A camera's answers are input the device did not write. A fake camera answers OPTIONS and
/// DESCRIBE with a valid H.264 session description spoilt at random (proptest;
/// `PROPTEST_CASES` raises the count), and junk to anything after: opening the source ends in
/// a clear error or a source, never a panic or a hang.
mod sdp_fuzz {
    use std::io::{BufRead, BufReader, Write};
    use std::net::TcpListener;

    use proptest::prelude::*;

    use super::*;

    const SDP: &str = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=cam\r\nt=0 0\r\n\
        m=video 0 RTP/AVP 96\r\nc=IN IP4 0.0.0.0\r\na=rtpmap:96 H264/90000\r\n\
        a=fmtp:96 packetization-mode=1;profile-level-id=42c01e;sprop-parameter-sets=Z0LAHtkDxWhAAAADAEAAAAwDxYuS,aMuMsg==\r\n\
        a=control:track1\r\n";

    /// Serves one client: answers each request in turn, `describe` to DESCRIBE.
    fn fake_camera(describe: Vec<u8>) -> (u16, std::thread::JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let Ok((s, _)) = listener.accept() else {
                return;
            };
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            let mut reader = BufReader::new(s.try_clone().unwrap());
            let mut out = s;
            for _ in 0..6 {
                let mut request = Vec::new();
                loop {
                    let mut line = String::new();
                    match reader.read_line(&mut line) {
                        Ok(0) | Err(_) => return,
                        Ok(_) if line == "\r\n" => break,
                        Ok(_) => request.push(line),
                    }
                }
                let cseq = request
                    .iter()
                    .find_map(|l| l.strip_prefix("CSeq: "))
                    .unwrap_or("1\r\n")
                    .trim()
                    .to_string();
                let answer = match request.first().map(String::as_str) {
                    Some(l) if l.starts_with("OPTIONS") => format!(
                        "RTSP/1.0 200 OK\r\nCSeq: {cseq}\r\nPublic: OPTIONS, DESCRIBE, SETUP, PLAY\r\n\r\n"
                    )
                    .into_bytes(),
                    Some(l) if l.starts_with("DESCRIBE") => {
                        let mut a = format!(
                            "RTSP/1.0 200 OK\r\nCSeq: {cseq}\r\nContent-Type: application/sdp\r\n\
                             Content-Base: rtsp://127.0.0.1/cam/\r\nContent-Length: {}\r\n\r\n",
                            describe.len()
                        )
                        .into_bytes();
                        a.extend_from_slice(&describe);
                        a
                    }
                    _ => format!("RTSP/1.0 454 Session Not Found\r\nCSeq: {cseq}\r\n\r\n").into_bytes(),
                };
                if out.write_all(&answer).is_err() {
                    return;
                }
            }
        });
        (port, server)
    }

    #[derive(Debug, Clone)]
    enum Spoil {
        Flip(usize, u8),
        Cut(usize),
        DropLine(usize),
        Insert(usize, String),
    }

    fn spoil() -> impl Strategy<Value = Spoil> {
        prop_oneof![
            (any::<usize>(), 1u8..=255).prop_map(|(i, b)| Spoil::Flip(i, b)),
            any::<usize>().prop_map(Spoil::Cut),
            any::<usize>().prop_map(Spoil::DropLine),
            (any::<usize>(), "[a-z]=[ -~]{0,40}\r\n").prop_map(|(i, l)| Spoil::Insert(i, l)),
        ]
    }

    fn apply(mut sdp: Vec<u8>, s: &Spoil) -> Vec<u8> {
        if sdp.is_empty() {
            return sdp;
        }
        let len = sdp.len();
        match s {
            Spoil::Flip(i, b) => sdp[i % len] ^= b,
            Spoil::Cut(i) => sdp.truncate(i % len),
            Spoil::DropLine(i) => {
                let text = String::from_utf8_lossy(&sdp).into_owned();
                let mut lines: Vec<&str> = text.split_inclusive("\r\n").collect();
                lines.remove(i % lines.len());
                sdp = lines.concat().into_bytes();
            }
            Spoil::Insert(i, line) => {
                let text = String::from_utf8_lossy(&sdp).into_owned();
                let mut lines: Vec<&str> = text.split_inclusive("\r\n").collect();
                let at = i % lines.len();
                lines.insert(at, line);
                sdp = lines.concat().into_bytes();
            }
        }
        sdp
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: veil_faults::proptest_cases(32),
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        #[test]
        fn a_spoilt_session_description_is_an_error_not_a_crash(
            spoils in prop::collection::vec(spoil(), 0..4),
        ) {
            let sdp = spoils.iter().fold(SDP.as_bytes().to_vec(), apply);
            let (port, server) = fake_camera(sdp);
            let mut opts = options(&format!("rtsp://127.0.0.1:{port}/cam"));
            opts.stall_timeout = Duration::from_secs(3);
            match RtspSource::open(&opts, clock()) {
                Ok(_) => {}
                Err(e) => {
                    prop_assert!(
                        matches!(e.kind(), ErrorKind::Unavailable | ErrorKind::InvalidInput),
                        "{e}"
                    );
                    prop_assert!(e.to_string().contains("127.0.0.1"), "{e}");
                }
            }
            let _ = server.join();
        }
    }
}
