//! The live relay against a WHIP ingest no one here wrote: aiortc (Debian python3-aiortc),
//! in a private network namespace. Frames come from the synthetic camera through a real
//! pipeline (a privacy stage that blanks the right half, openh264); the peer decodes them and
//! reads the burned-in counter back.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use veil_core::{Clock, SystemClock};
use veil_media::frame::{FrameMeta, FramePool};
use veil_media::pipeline::{Pipeline, PipelineConfig, PrivacyStage, openh264_factory};
use veil_media::synthetic::SyntheticSource;
use veil_uplink::testbed::{self, IngestPeer, TurnServer};
use veil_uplink::whip::{EncodeFeed, IceServer, RelayEvent, RelaySettings, relay};

/// A synthetic camera at 640x360, 25 fps, whose privacy stage blanks the bottom-right quarter
/// (clear of the burned-in strip at the top).
struct Camera {
    pipeline: Arc<Pipeline>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Camera {
    fn start() -> Camera {
        let clock: Arc<dyn Clock> = Arc::new(SystemClock::new());
        let privacy: PrivacyStage = Box::new(|f| {
            let (w, h) = (f.width() as usize, f.height() as usize);
            let y = f.planes_mut().0;
            for row in h / 2..h {
                y[row * w + w / 2..(row + 1) * w].fill(16);
            }
        });
        let pipeline = Arc::new(
            Pipeline::start(
                PipelineConfig::new("live-test", 25),
                privacy,
                openh264_factory(),
                clock.clone(),
            )
            .unwrap(),
        );
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let thread = std::thread::spawn({
            let (input, stop) = (pipeline.input(), stop.clone());
            move || {
                let (pool, src) = (FramePool::new(640, 360), SyntheticSource::new(640, 360));
                let mut seq = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let mut f = pool.get();
                    src.render(&mut f, FrameMeta::captured_now(seq, &*clock));
                    input.offer(f);
                    seq += 1;
                    std::thread::sleep(Duration::from_millis(40));
                }
            }
        });
        Camera {
            pipeline,
            stop,
            thread: Some(thread),
        }
    }

    fn feed(&self) -> EncodeFeed {
        EncodeFeed::new(self.pipeline.subscribe(), self.pipeline.keyframe_trigger())
    }
}

impl Drop for Camera {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct Running {
    stop: watch::Sender<bool>,
    events: mpsc::UnboundedReceiver<RelayEvent>,
    task: tokio::task::JoinHandle<()>,
}

fn start(settings: RelaySettings, feed: EncodeFeed) -> Running {
    let (tx, events) = mpsc::unbounded_channel();
    let (stop, stop_rx) = watch::channel(false);
    let task = tokio::spawn(relay(settings, feed, tx, stop_rx));
    Running { stop, events, task }
}

async fn until_end(
    events: &mut mpsc::UnboundedReceiver<RelayEvent>,
    within: Duration,
) -> Vec<RelayEvent> {
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + within;
    while let Ok(Some(e)) = tokio::time::timeout_at(deadline, events.recv()).await {
        let last = matches!(e, RelayEvent::Ended { .. } | RelayEvent::Failed { .. });
        if !matches!(e, RelayEvent::Sent { .. }) {
            seen.push(e);
        }
        if last {
            break;
        }
    }
    seen
}

fn only_session(stats: &serde_json::Value) -> serde_json::Value {
    let map = stats.as_object().expect("stats object");
    assert_eq!(map.len(), 1, "{stats}");
    map.values().next().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_peer_receives_the_redacted_frames_in_order_and_in_time() {
    if !testbed::inside() {
        return testbed::rerun_inside("the_peer_receives_the_redacted_frames_in_order_and_in_time");
    }
    let peer = IngestPeer::start("secret-token").unwrap();
    let camera = Camera::start();
    let mut run = start(
        RelaySettings::new(peer.endpoint(), "secret-token"),
        camera.feed(),
    );
    let t0 = Instant::now();
    let mut first = None;
    while t0.elapsed() < Duration::from_secs(15) {
        let s = peer.stats();
        if let Some(session) = s.as_object().and_then(|m| m.values().next())
            && session["seqs"].as_array().is_some_and(|a| a.len() >= 50)
        {
            break;
        }
        if first.is_none()
            && let Ok(RelayEvent::FirstFrame) = run.events.try_recv()
        {
            first = Some(t0.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let session = only_session(&peer.stats());
    let seqs: Vec<u64> = session["seqs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    assert!(
        seqs.len() >= 50,
        "peer decoded {} frames: {session}",
        seqs.len()
    );
    assert!(
        seqs.windows(2).all(|w| w[1] > w[0]),
        "in order: {seqs:?} {session}"
    );
    let mut lat: Vec<f64> = session["latencies_ms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    lat.sort_by(f64::total_cmp);
    let p50 = lat[lat.len() / 2];
    assert!(p50 < 1000.0, "glass-to-glass p50 {p50} ms");
    // What a viewer gets is what left the privacy stage: the blanked quarter is flat black.
    let half = &session["bottom_right"];
    assert!(
        (half["mean"].as_f64().unwrap() - 16.0).abs() < 3.0 && half["sd"].as_f64().unwrap() < 3.0,
        "the bottom-right quarter is redacted at the peer: {half}"
    );
    assert_eq!(session["size"], serde_json::json!([640, 360]));

    run.stop.send(true).unwrap();
    let events = until_end(&mut run.events, Duration::from_secs(10)).await;
    assert!(
        matches!(events.last(), Some(RelayEvent::Ended { bytes }) if *bytes > 10_000),
        "{events:?}"
    );
    run.task.await.unwrap();
    assert_eq!(
        only_session(&peer.stats())["deleted"],
        true,
        "the WHIP resource was deleted"
    );
    eprintln!(
        "first frame after {first:?}, p50 {p50} ms over {} frames",
        lat.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_and_faults_end_the_relay_with_a_reason() {
    if !testbed::inside() {
        return testbed::rerun_inside("refusals_and_faults_end_the_relay_with_a_reason");
    }
    let mut peer = IngestPeer::start("right").unwrap();
    let camera = Camera::start();

    // A wrong bearer token: the endpoint's 401 in words.
    let mut run = start(RelaySettings::new(peer.endpoint(), "wrong"), camera.feed());
    let events = until_end(&mut run.events, Duration::from_secs(10)).await;
    let Some(RelayEvent::Failed { reason, .. }) = events.last() else {
        panic!("{events:?}")
    };
    assert!(
        reason.contains("refused the bearer token (401)"),
        "{reason}"
    );

    // Nothing listens there.
    let closed = format!("http://127.0.0.2:{}/whip", testbed::free_port("127.0.0.2"));
    let mut run = start(RelaySettings::new(closed, "right"), camera.feed());
    let events = until_end(&mut run.events, Duration::from_secs(15)).await;
    let Some(RelayEvent::Failed { reason, .. }) = events.last() else {
        panic!("{events:?}")
    };
    assert!(
        reason.contains("cannot reach the live endpoint"),
        "{reason}"
    );

    // The camera stops delivering mid-session (its pipeline kept open, so the relay
    // sees a gap, not a close).
    let mut settings = RelaySettings::new(peer.endpoint(), "right");
    settings.frame_gap = Duration::from_secs(2);
    let mut run = start(settings, camera.feed());
    wait_for(&mut run.events, |e| matches!(e, RelayEvent::FirstFrame)).await;
    let _open = camera.pipeline.clone();
    drop(camera);
    let events = until_end(&mut run.events, Duration::from_secs(20)).await;
    let Some(RelayEvent::Failed { reason, .. }) = events.last() else {
        panic!("{events:?}")
    };
    assert!(reason.contains("camera"), "{reason}");

    // The endpoint's network goes silent mid-session (the peer stopped, nothing closed):
    // the consent checks go unanswered and the relay ends the session, billing what it sent.
    let camera = Camera::start();
    let mut run = start(RelaySettings::new(peer.endpoint(), "right"), camera.feed());
    wait_for(&mut run.events, |e| matches!(e, RelayEvent::FirstFrame)).await;
    peer.freeze();
    let silent_since = Instant::now();
    let events = until_end(&mut run.events, Duration::from_secs(60)).await;
    let Some(RelayEvent::Failed { reason, bytes }) = events.last() else {
        panic!("{events:?}")
    };
    assert!(reason.contains("stopped answering"), "{reason}");
    assert!(*bytes > 0);
    eprintln!(
        "a silent consumer was noticed after {:.1} s",
        silent_since.elapsed().as_secs_f64()
    );
    peer.kill();
    let mut peer = IngestPeer::start("right").unwrap();

    // The endpoint dies mid-session: ICE notices.
    let mut run = start(RelaySettings::new(peer.endpoint(), "right"), camera.feed());
    wait_for(&mut run.events, |e| matches!(e, RelayEvent::FirstFrame)).await;
    peer.kill();
    let events = until_end(&mut run.events, Duration::from_secs(40)).await;
    let Some(RelayEvent::Failed { reason, bytes }) = events.last() else {
        panic!("{events:?}")
    };
    assert!(
        reason.contains("stopped answering") || reason.contains("closed"),
        "{reason}"
    );
    assert!(*bytes > 0);
}

/// Relay-only: the device offers nothing but a relayed candidate on a TURN server no one here
/// wrote (Debian's coturn), so every packet the peer gets went through it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_only_sessions_go_through_a_turn_server_and_bad_credentials_say_so() {
    if !testbed::inside() {
        return testbed::rerun_inside(
            "relay_only_sessions_go_through_a_turn_server_and_bad_credentials_say_so",
        );
    }
    let turn = TurnServer::start("veil", "turn-secret").unwrap();
    let peer = IngestPeer::start("tok").unwrap();
    let camera = Camera::start();
    let through = |credential: &str| {
        let mut settings = RelaySettings::new(peer.endpoint(), "tok");
        settings.ice_servers = vec![IceServer {
            url: turn.url(),
            username: Some(turn.username.clone()),
            credential: Some(credential.into()),
        }];
        settings.relay_only = true;
        settings
    };
    let mut run = start(through("turn-secret"), camera.feed());
    let t0 = Instant::now();
    let mut decoded = 0;
    while t0.elapsed() < Duration::from_secs(20) && decoded < 25 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        decoded = peer
            .stats()
            .as_object()
            .and_then(|m| m.values().next().cloned())
            .and_then(|s| s["seqs"].as_array().map(Vec::len))
            .unwrap_or(0);
    }
    let log = turn.log();
    assert!(
        decoded >= 25,
        "the peer decoded {decoded} frames through TURN\n{log}"
    );
    let session = only_session(&peer.stats());
    let half = &session["bottom_right"];
    assert!(half["sd"].as_f64().unwrap() < 3.0, "redacted: {half}");
    // coturn granted an allocation to this user and relayed to the peer's address.
    assert!(
        log.contains("ALLOCATE processed, success") && log.contains("user <veil>"),
        "{log}"
    );
    run.stop.send(true).unwrap();
    let events = until_end(&mut run.events, Duration::from_secs(10)).await;
    assert!(
        matches!(events.last(), Some(RelayEvent::Ended { .. })),
        "{events:?}"
    );
    run.task.await.unwrap();

    // A wrong credential: relay-only cannot start, and says why.
    let mut run = start(through("wrong"), camera.feed());
    let events = until_end(&mut run.events, Duration::from_secs(15)).await;
    let Some(RelayEvent::Failed { reason, .. }) = events.last() else {
        panic!("{events:?}")
    };
    assert!(
        reason.contains("check its username and credential"),
        "{reason}"
    );
    // Relay-only without a usable TURN server is refused before anything is sent.
    let mut settings = through("turn-secret");
    settings.ice_servers[0].url = "turns:127.0.0.2:5349".into();
    let mut run = start(settings, camera.feed());
    let events = until_end(&mut run.events, Duration::from_secs(10)).await;
    let Some(RelayEvent::Failed { reason, .. }) = events.last() else {
        panic!("{events:?}")
    };
    assert!(
        reason.contains("no TURN server is usable") && reason.contains("TLS"),
        "{reason}"
    );
    // The credential never shows in what is printed.
    let shown = format!("{:?}", through("turn-secret").ice_servers);
    assert!(!shown.contains("turn-secret"), "{shown}");
}

async fn wait_for(
    events: &mut mpsc::UnboundedReceiver<RelayEvent>,
    what: impl Fn(&RelayEvent) -> bool,
) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while let Ok(Some(e)) = tokio::time::timeout_at(deadline, events.recv()).await {
        assert!(!matches!(e, RelayEvent::Failed { .. }), "{e:?}");
        if what(&e) {
            return;
        }
    }
    panic!("event not seen in 15 s");
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

/// Fifty sessions one after another leave no socket, task or thread behind.
#[test]
fn fifty_sessions_leave_no_sockets_or_threads_behind() {
    if !testbed::inside() {
        return testbed::rerun_inside("fifty_sessions_leave_no_sockets_or_threads_behind");
    }
    // Idle blocking threads (signalling runs on them) end quickly, so a leak would show.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_keep_alive(Duration::from_millis(50))
        .enable_all()
        .build()
        .unwrap();
    let peer = IngestPeer::start("t").unwrap();
    let camera = Camera::start();
    let session = |n: usize| {
        runtime.block_on(async {
            let mut run = start(RelaySettings::new(peer.endpoint(), "t"), camera.feed());
            wait_for(&mut run.events, |e| matches!(e, RelayEvent::FirstFrame)).await;
            run.stop.send(true).unwrap();
            let events = until_end(&mut run.events, Duration::from_secs(10)).await;
            assert!(
                matches!(events.last(), Some(RelayEvent::Ended { .. })),
                "session {n}: {events:?}"
            );
            run.task.await.unwrap();
        })
    };
    session(0);
    std::thread::sleep(Duration::from_millis(300));
    let (fds, tasks) = (open_fds(), threads());
    for n in 1..=50 {
        session(n);
    }
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(open_fds(), fds, "file descriptors back to the baseline");
    assert_eq!(threads(), tasks, "threads back to the baseline");
    let deleted = peer
        .stats()
        .as_object()
        .unwrap()
        .values()
        .filter(|s| s["deleted"] == true)
        .count();
    assert_eq!(
        deleted, 51,
        "every session's resource deleted at the endpoint"
    );
}
