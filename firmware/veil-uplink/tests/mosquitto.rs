//! The session against a real broker: Debian's mosquitto with a TLS listener, a CA made here,
//! password authentication and a per-user ACL. The fleet side is mosquitto's own clients
//! (`mosquitto_pub`, `mosquitto_sub`), an MQTT implementation independent of ours.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use veil_core::Error;
use veil_uplink::session::SessionSettings;
use veil_uplink::{Device, Session, Topics};

use std::net::SocketAddr;

use veil_faults::{FaultRelay, Faults};
use veil_uplink::testing::Broker;

/// Test double of the appliance behind the session: two cameras, a snapshot that is a fixed
/// byte string.
struct TestDevice;

impl Device for TestDevice {
    fn state(&self, online: bool) -> Value {
        json!({ "online": online, "firmware": "test" })
    }
    fn registry(&self) -> Value {
        json!({ "cameras": [{ "id": "gate" }, { "id": "yard" }] })
    }
    fn telemetry(&self) -> Value {
        json!({ "cpu_percent": 1.0 })
    }
    fn handle(&self, command: &veil_uplink::Command) -> Result<Value, Error> {
        match command {
            veil_uplink::Command::Snapshot { camera, width } if camera == "gate" => {
                Ok(json!({ "camera": camera, "width": width }))
            }
            veil_uplink::Command::Snapshot { camera, .. } => Err(Error::not_found(format!(
                "no camera '{camera}' on this device"
            ))),
            veil_uplink::Command::RequestCreate(r) => Ok(json!({
                "request": { "id": r.id, "status": "pending", "cameras": r.cameras, "case": r.case }
            })),
            veil_uplink::Command::RequestList => Ok(json!({
                "requests": [],
                "jobs": [{ "id": "job-vr-1", "status": "IN_PROGRESS", "progress": 0.5 }]
            })),
            veil_uplink::Command::LiveStart(r) => Ok(json!({
                "session_id": r.id, "state": "starting",
                "seen": {
                    "camera": r.camera, "consumer": r.consumer, "filter": r.filter.as_str(),
                    "priority": r.priority, "max_duration_s": r.max_duration_s,
                    "endpoint": r.endpoint, "token": r.token, "debug": format!("{r:?}"),
                    "relay_only": r.relay_only,
                    "ice": r.ice_servers.iter().map(|i| &i.url).collect::<Vec<_>>(),
                }
            })),
            veil_uplink::Command::LiveList => Ok(json!({
                "capacity": 2, "encodes_in_use": 1,
                "sessions": [{ "id": "s1", "phase": "active" }],
                "recent": [{ "id": "s0", "outcome": "ended", "by": "consumer", "reason": "stopped" }],
            })),
            other => Ok(json!({ "handled": format!("{other:?}") })),
        }
    }
}

fn settings(broker: &Broker, ca: &str, password: &str) -> SessionSettings {
    let config = veil_core::config::MqttConfig {
        broker: format!("mqtts://localhost:{}", broker.port),
        ca_file: Some(broker.path(ca)),
        client_cert: None,
        client_key: None,
        username: Some("dev1".into()),
        password: Some(password.into()),
        topic_prefix: "veil".into(),
        telemetry_seconds: 5,
        keep_alive_seconds: 5,
    };
    SessionSettings::from_config(&config, "dev1").unwrap()
}

async fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The session's settings with the broker reached through `relay`.
fn through(broker: &Broker, relay: &FaultRelay) -> SessionSettings {
    let mut s = settings(broker, "ca.crt", "s3cret");
    s.port = relay.port;
    s
}

/// Bad links between the device and mosquitto, made by a fault relay: a broker that answers
/// late (while telemetry and events keep coming), a throttled link, and connections cut in the
/// middle of the TLS handshake. The session finishes each handshake it starts, makes one
/// connection at a time, waits (backoff) between attempts and says why one failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_throttled_and_cut_links_still_connect_one_handshake_at_a_time() {
    let broker = Broker::start();
    let target: SocketAddr = ([127, 0, 0, 1], broker.port).into();
    let topics = Topics::new("veil", "dev1");

    // The broker's first answer comes 3 s late; telemetry is due every 200 ms meanwhile.
    let relay = FaultRelay::start(
        target,
        Faults {
            answer_delay: Duration::from_secs(3),
            ..Default::default()
        },
    );
    let mut s = through(&broker, &relay);
    s.telemetry_every = Duration::from_millis(200);
    let session = Session::start(s, Arc::new(TestDevice));
    let status = session.status().clone();
    wait_for("connected through a slow broker", || status.connected()).await;
    assert_eq!(
        relay.accepted(),
        1,
        "a handshake under way was dropped and another started"
    );
    assert_eq!((status.connections(), status.last_error()), (1, None));
    session.stop().await;

    // 64 kbit/s each way: connected, and a command is answered.
    let relay = FaultRelay::start(
        target,
        Faults {
            bytes_per_sec: Some(8_000),
            ..Default::default()
        },
    );
    let session = Session::start(through(&broker, &relay), Arc::new(TestDevice));
    let status = session.status().clone();
    wait_for("connected through a throttled link", || status.connected()).await;
    let reply = broker.listen(&topics.reply("slow-1"), 1, "%p");
    broker.publish(
        &topics.command("snapshot"),
        r#"{"request_id":"slow-1","camera":"gate","width":64}"#,
        &[],
    );
    let out = String::from_utf8(reply.wait_with_output().unwrap().stdout).unwrap();
    assert!(out.contains(r#""ok":true"#), "{out}");
    assert_eq!(relay.accepted(), 1);
    session.stop().await;

    // The first two connections are cut 100 bytes into the TLS handshake.
    let relay = FaultRelay::start(
        target,
        Faults {
            cut_after: Some((2, 100)),
            ..Default::default()
        },
    );
    let session = Session::start(through(&broker, &relay), Arc::new(TestDevice));
    let status = session.status().clone();
    wait_for("connected after two cut handshakes", || status.connected()).await;
    assert_eq!(
        relay.accepted(),
        3,
        "one connection at a time, each after the last failed"
    );
    assert_eq!(status.connections(), 1);
    let why = status
        .last_error()
        .expect("the cut handshakes left a reason");
    assert!(!why.is_empty());
    session.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tls_the_device_is_born_registers_and_answers_commands() {
    let mut broker = Broker::start();
    let session = Session::start(settings(&broker, "ca.crt", "s3cret"), Arc::new(TestDevice));
    let status = session.status().clone();
    wait_for("connected", || status.connected()).await;
    let topics = Topics::new("veil", "dev1");
    let state: Value = serde_json::from_str(&broker.receive(&topics.state(), 1, "%p")[0]).unwrap();
    assert_eq!(state["online"], true);
    let registry = broker.receive(&topics.registry(), 1, "%r %p");
    assert!(
        registry[0].starts_with("1 "),
        "registry not retained: {registry:?}"
    );

    // A command with an MQTT 5 response topic (in the device's reply branch, where the ACL
    // lets it publish) and correlation data: the reply goes there, with the same data.
    let console = topics.reply("console-1");
    let listener = broker.listen(&console, 1, "%D %p");
    broker.publish(
        &topics.command("snapshot"),
        r#"{"request_id":"r-1","camera":"gate","width":320}"#,
        &[
            "-D",
            "publish",
            "response-topic",
            &console,
            "-D",
            "publish",
            "correlation-data",
            "c0ffee",
        ],
    );
    let out = String::from_utf8(listener.wait_with_output().unwrap().stdout).unwrap();
    let (correlation, reply) = out.trim().split_once(' ').unwrap();
    assert_eq!(correlation, "c0ffee");
    let reply: Value = serde_json::from_str(reply).unwrap();
    assert_eq!(reply["ok"], true, "{reply}");
    assert_eq!(reply["result"]["width"], 320);

    // A response topic outside the device's reply branch is not followed: the reply goes to
    // reply/<request_id>, and nothing to the topic the command named.
    let mut elsewhere = broker.listen("fleet/elsewhere", 1, "%p");
    let own = broker.listen(&topics.reply("r-1b"), 1, "%p");
    broker.publish(
        &topics.command("config.get"),
        r#"{"request_id":"r-1b"}"#,
        &["-D", "publish", "response-topic", "fleet/elsewhere"],
    );
    let out = String::from_utf8(own.wait_with_output().unwrap().stdout).unwrap();
    assert!(out.contains(r#""ok":true"#), "{out}");
    // The reply went out; anything to the other topic would have been published before it.
    std::thread::sleep(std::time::Duration::from_millis(500));
    let _ = elsewhere.kill();
    let stray = elsewhere.wait_with_output().unwrap().stdout;
    assert!(
        stray.is_empty(),
        "published outside its branch: {}",
        String::from_utf8_lossy(&stray)
    );

    // Without a response topic: reply/<request_id>. Rejections carry a code and a message.
    for (name, payload, code) in [
        (
            "snapshot",
            r#"{"request_id":"r-2","camera":"nope"}"#,
            "not_found",
        ),
        (
            "snapshot",
            r#"{"request_id":"r-3","camera":5}"#,
            "invalid_input",
        ),
        ("launch", r#"{"request_id":"r-4"}"#, "not_found"),
        ("config.patch", r#"{"request_id":"r-5"}"#, "invalid_input"),
    ] {
        let id = serde_json::from_str::<Value>(payload).unwrap()["request_id"]
            .as_str()
            .unwrap()
            .to_string();
        let listener = broker.listen(&topics.reply(&id), 1, "%p");
        broker.publish(&topics.command(name), payload, &[]);
        let out = String::from_utf8(listener.wait_with_output().unwrap().stdout).unwrap();
        let reply: Value =
            serde_json::from_str(out.trim()).unwrap_or_else(|_| panic!("{name}: {out}"));
        if code == "ok" {
            assert_eq!(reply["ok"], true, "{reply}");
        } else {
            assert_eq!(reply["error"]["code"], code, "{name}: {reply}");
            assert!(reply["error"]["message"].as_str().unwrap().len() > 10);
        }
    }
    // Malformed JSON: rejected on reply/unknown, and the device keeps answering.
    let listener = broker.listen(&topics.reply("unknown"), 1, "%p");
    broker.publish(&topics.command("snapshot"), "{not json", &[]);
    let out = String::from_utf8(listener.wait_with_output().unwrap().stdout).unwrap();
    assert!(out.contains("not JSON"), "{out}");

    // Telemetry flows.
    let telemetry = broker.receive(&topics.telemetry(), 1, "%p");
    assert!(telemetry[0].contains("cpu_percent"), "{telemetry:?}");

    // The broker restarts (and, without persistence, forgets every retained message): the
    // session reconnects and the registry is retained again.
    broker.restart();
    wait_for("reconnected", || {
        status.connections() >= 2 && status.connected()
    })
    .await;
    let registry = broker.receive(&topics.registry(), 1, "%r %p");
    assert!(
        registry[0].starts_with("1 ") && registry[0].contains("yard"),
        "{registry:?}"
    );

    // A clean stop leaves the retained state offline.
    session.stop().await;
    let state: Value = serde_json::from_str(&broker.receive(&topics.state(), 1, "%p")[0]).unwrap();
    assert_eq!(state["online"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_ca_or_password_is_reported_in_words() {
    let broker = Broker::start();
    let session = Session::start(
        settings(&broker, "other-ca.crt", "s3cret"),
        Arc::new(TestDevice),
    );
    let status = session.status().clone();
    wait_for("a TLS error", || status.last_error().is_some()).await;
    let e = status.last_error().unwrap();
    assert!(
        e.contains("TLS failed") && e.contains("mqtt.ca_file"),
        "{e}"
    );
    assert!(!status.connected());
    session.stop().await;

    let session = Session::start(settings(&broker, "ca.crt", "wrong"), Arc::new(TestDevice));
    let status = session.status().clone();
    wait_for("a refusal", || status.last_error().is_some()).await;
    let e = status.last_error().unwrap();
    assert!(e.contains("refused the credentials"), "{e}");
    assert!(!status.connected());
    session.stop().await;
}

/// Not a test on its own: a device session in a child process, killed by the test below.
#[test]
fn child_device() {
    let (Ok(port), Ok(dir)) = (
        std::env::var("VEIL_TEST_BROKER_PORT"),
        std::env::var("VEIL_TEST_BROKER_DIR"),
    ) else {
        return;
    };
    let config = veil_core::config::MqttConfig {
        broker: format!("mqtts://localhost:{port}"),
        ca_file: Some(PathBuf::from(dir).join("ca.crt")),
        client_cert: None,
        client_key: None,
        username: Some("dev1".into()),
        password: Some("s3cret".into()),
        topic_prefix: "veil".into(),
        telemetry_seconds: 60,
        keep_alive_seconds: 5,
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let session = Session::start(
            SessionSettings::from_config(&config, "dev1").unwrap(),
            Arc::new(TestDevice),
        );
        wait_for("connected", || session.status().connected()).await;
        println!("connected");
        tokio::time::sleep(Duration::from_secs(3600)).await;
    });
}

#[test]
fn the_last_will_marks_a_killed_device_offline() {
    let broker = Broker::start();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_device",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env("VEIL_TEST_BROKER_PORT", broker.port.to_string())
        .env("VEIL_TEST_BROKER_DIR", broker.path(""))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    while !line.contains("connected") {
        line.clear();
        assert!(
            std::io::BufRead::read_line(&mut out, &mut line).unwrap() > 0,
            "child ended"
        );
    }
    let topics = Topics::new("veil", "dev1");
    let state: Value = serde_json::from_str(&broker.receive(&topics.state(), 1, "%p")[0]).unwrap();
    assert_eq!(state["online"], true);
    child.kill().unwrap(); // SIGKILL: no goodbye, the broker publishes the last will
    child.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let state: Value =
            serde_json::from_str(&broker.receive(&topics.state(), 1, "%p")[0]).unwrap();
        if state["online"] == false {
            // Nothing in it that was only true when the connection was made.
            assert!(
                state.get("uptime_seconds").is_none() && state.get("time").is_none(),
                "{state}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "the last will never came");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// veilctl running on a thread of its own (for verbs that wait for events the test sends).
fn veilctl_waiting(
    broker: &Broker,
    args: &[&str],
) -> std::thread::JoinHandle<std::process::Output> {
    let port = broker.port;
    let ca = broker.path("ca.crt");
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    std::thread::spawn(move || {
        Command::new(env!("CARGO_BIN_EXE_veilctl"))
            .args(["--broker", &format!("mqtts://localhost:{port}")])
            .arg("--ca-file")
            .arg(ca)
            .args(["--username", "fleet", "--password", "fleetpw"])
            .args(args)
            .output()
            .unwrap()
    })
}

fn veilctl(broker: &Broker, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_veilctl"))
        .args(["--broker", &format!("mqtts://localhost:{}", broker.port)])
        .arg("--ca-file")
        .arg(broker.path("ca.crt"))
        .args(["--username", "fleet", "--timeout", "10"])
        .env("VEILCTL_PASSWORD", "fleetpw")
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn veilctl_lists_devices_reads_registries_and_sends_commands() {
    let broker = Broker::start();
    let session = Session::start(settings(&broker, "ca.crt", "s3cret"), Arc::new(TestDevice));
    let status = session.status().clone();
    wait_for("connected", || status.connected()).await;
    let b = &broker;
    // veilctl blocks this worker; the session runs on the other.
    let (ok, out, err) = veilctl(b, &["devices"]);
    assert!(ok, "{err}");
    let devices: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(devices["dev1"]["online"], true, "{out}");

    let (ok, out, err) = veilctl(b, &["registry", "dev1"]);
    assert!(ok, "{err}");
    assert!(out.contains("yard"), "{out}");
    let (ok, out, err) = veilctl(
        b,
        &[
            "send",
            "dev1",
            "snapshot",
            r#"{"camera":"gate","width":200}"#,
        ],
    );
    assert!(ok, "{err}");
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["width"], 200);
    // Refusals and bad input: exit 1 with the device's code and message.
    let (ok, _, err) = veilctl(b, &["send", "dev1", "snapshot", r#"{"camera":"nope"}"#]);
    assert!(
        !ok && err.contains("not_found") && err.contains("nope"),
        "{err}"
    );
    let (ok, _, err) = veilctl(b, &["send", "dev1", "snapshot", "{oops"]);
    assert!(!ok && err.contains("parameters are not JSON"), "{err}");
    let (ok, _, err) = veilctl(b, &["registry", "ghost"]);
    assert!(!ok && err.contains("nothing retained"), "{err}");
    session.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn veilctl_sends_a_video_request_and_follows_its_job_to_the_end() {
    let broker = Broker::start();
    let session = Session::start(settings(&broker, "ca.crt", "s3cret"), Arc::new(TestDevice));
    let status = session.status().clone();
    wait_for("connected", || status.connected()).await;
    let b = &broker;
    let (ok, out, err) = veilctl(
        b,
        &[
            "request",
            "dev1",
            "--id",
            "vr-1",
            "--camera",
            "gate",
            "--from",
            "2026-11-23T10:00:00Z",
            "--to",
            "2026-11-23T10:30:00Z",
            "--reason",
            "burglary",
            "--requester",
            "D. Inspector",
            "--case",
            "existing",
            "--case-ref",
            "2026-4711",
        ],
    );
    assert!(ok, "{err}");
    let reply: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(reply["request"]["status"], "pending");
    assert_eq!(reply["request"]["case"]["reference"], "2026-4711");
    // The device checks what veilctl sends: a bad time is refused, naming the field.
    let (ok, _, err) = veilctl(
        b,
        &[
            "request",
            "dev1",
            "--id",
            "vr-2",
            "--camera",
            "gate",
            "--from",
            "soon",
            "--to",
            "2026-11-23T10:30:00Z",
            "--reason",
            "x",
            "--requester",
            "y",
        ],
    );
    assert!(!ok && err.contains("field 'from'"), "{err}");

    // follow: the job is in progress, then the device reports it done.
    let follower = veilctl_waiting(&broker, &["follow", "dev1", "job-vr-1"]);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    session.publish_event(&json!({
        "type": "job.status", "job_id": "job-other", "status": "FAILED", "progress": 0.1
    }));
    session.publish_event(&json!({
        "type": "job.status", "job_id": "job-vr-1", "status": "SUCCEEDED", "progress": 1.0
    }));
    let out = tokio::task::spawn_blocking(move || follower.join().unwrap())
        .await
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("job-vr-1: IN_PROGRESS 50 %") && err.contains("job-vr-1: SUCCEEDED 100 %"),
        "{err}"
    );
    session.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn veilctl_runs_live_sessions_follows_them_and_collects_their_usage() {
    let broker = Broker::start();
    let session = Session::start(settings(&broker, "ca.crt", "s3cret"), Arc::new(TestDevice));
    let status = session.status().clone();
    wait_for("connected", || status.connected()).await;
    let b = &broker;
    let start = |extra: &[&str]| {
        let mut args = vec![
            "live",
            "start",
            "dev1",
            "--id",
            "s1",
            "--camera",
            "gate",
            "--consumer",
            "traffic",
            "--endpoint",
            "https://ingest.example/whip/gate",
        ];
        args.extend_from_slice(extra);
        veilctl(b, &args)
    };
    // What the device's own parser made of it.
    let (ok, out, err) = start(&["--filter", "silhouette", "--token", "t0k3n"]);
    assert!(ok, "{err}");
    let reply: Value = serde_json::from_str(&out).unwrap();
    let seen = &reply["seen"];
    assert_eq!(reply["state"], "starting");
    assert_eq!(
        (
            &seen["filter"],
            &seen["priority"],
            &seen["max_duration_s"],
            &seen["token"]
        ),
        (
            &json!("silhouette"),
            &json!("shared"),
            &json!(3600),
            &json!("t0k3n")
        )
    );
    assert!(!seen["debug"].as_str().unwrap().contains("t0k3n"), "{seen}");
    // Through a TURN server only; the credential stays out of the debug form.
    let (ok, out, err) = start(&[
        "--filter",
        "silhouette",
        "--token",
        "t0k3n",
        "--ice-server",
        "turn:t.example.com",
        "--ice-username",
        "u",
        "--ice-credential",
        "turn-pw",
        "--relay-only",
    ]);
    assert!(ok, "{err}");
    let seen = &serde_json::from_str::<Value>(&out).unwrap()["seen"];
    assert_eq!(
        (&seen["relay_only"], &seen["ice"]),
        (&json!(true), &json!(["turn:t.example.com"]))
    );
    assert!(
        !seen["debug"].as_str().unwrap().contains("turn-pw"),
        "{seen}"
    );
    let (ok, _, err) = start(&["--filter", "silhouette", "--token", "t", "--relay-only"]);
    assert!(!ok && err.contains("needs a turn: server"), "{err}");
    // The device refuses what it cannot parse, naming the field.
    let (ok, _, err) = start(&["--filter", "sepia", "--token", "t"]);
    assert!(!ok && err.contains("filter"), "{err}");
    let (ok, _, err) = start(&["--filter", "strict", "--token", "t", "--priority", "vip"]);
    assert!(!ok && err.contains("priority"), "{err}");
    let (ok, _, err) = veilctl(b, &["live", "stop", "dev1", "s1", "--by", "nobody"]);
    assert!(!ok && err.contains("by"), "{err}");

    // follow: the session runs (from live.list), then the device says it was preempted.
    let follower = veilctl_waiting(&broker, &["live", "follow", "dev1", "s1"]);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    session.publish_event(&json!({
        "type": "live.session", "session_id": "s9", "state": "ended", "reason": "stopped"
    }));
    session.publish_event(&json!({
        "type": "live.session", "session_id": "s1", "state": "preempted",
        "reason": "preempted: the owner's own use needs this live encode"
    }));
    let out = tokio::task::spawn_blocking(move || follower.join().unwrap())
        .await
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("s1: active")
            && err.contains("live session s1 preempted: preempted: the owner"),
        "{err}"
    );
    assert!(!err.contains("s9"), "{err}");
    // An ended session is reported from the list at once; an unknown one is an error.
    let (ok, _, err) = veilctl(b, &["live", "follow", "dev1", "s0"]);
    assert!(ok && err.contains("s0: ended: stopped"), "{err}");
    let (ok, _, err) = veilctl(b, &["live", "follow", "dev1", "nope"]);
    assert!(!ok && err.contains("knows no live session 'nope'"), "{err}");
    // Usage, acknowledged by id.
    let (ok, out, err) = veilctl(b, &["live", "usage", "dev1", "--pending"]);
    assert!(
        ok && out.contains("LiveUsage { pending: true }"),
        "{out}{err}"
    );
    let (ok, out, err) = veilctl(b, &["live", "ack", "dev1", "s0", "s1"]);
    assert!(ok && out.contains(r#"[\"s0\", \"s1\"]"#), "{out}{err}");
    session.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_can_sign_in_with_a_client_certificate_and_not_without() {
    let broker = Broker::start();
    let mtls = |cert: bool| {
        let config = veil_core::config::MqttConfig {
            broker: format!("mqtts://localhost:{}", broker.mtls_port),
            ca_file: Some(broker.path("ca.crt")),
            client_cert: cert.then(|| broker.path("client-dev1.crt")),
            client_key: cert.then(|| broker.path("client-dev1.key")),
            username: None,
            password: None,
            topic_prefix: "veil".into(),
            telemetry_seconds: 60,
            keep_alive_seconds: 5,
        };
        SessionSettings::from_config(&config, "dev1").unwrap()
    };
    let session = Session::start(mtls(true), Arc::new(TestDevice));
    let status = session.status().clone();
    wait_for("connected with a certificate", || status.connected()).await;
    // The certificate's CN is the user the ACL knows: the device may publish its state.
    let state: Value =
        serde_json::from_str(&broker.receive(&Topics::new("veil", "dev1").state(), 1, "%p")[0])
            .unwrap();
    assert_eq!(state["online"], true);
    session.stop().await;

    let session = Session::start(mtls(false), Arc::new(TestDevice));
    let status = session.status().clone();
    wait_for("a refusal", || status.last_error().is_some()).await;
    assert!(!status.connected());
    let e = status.last_error().unwrap();
    assert!(e.contains("requires a client certificate"), "{e}");
    session.stop().await;
}

/// A broker that speaks only MQTT 3.1.1 (rumqttd with a v4 listener): the device falls back
/// to 3.1.1, is born, answers commands on reply/<request_id>, and says so in its status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_that_speaks_only_mqtt_3_1_1_gets_a_3_1_1_session() {
    let broker = veil_uplink::testing::Broker311::start();
    let config = veil_core::config::MqttConfig {
        broker: format!("mqtt://127.0.0.1:{}", broker.port),
        ca_file: None,
        client_cert: None,
        client_key: None,
        username: None,
        password: None,
        topic_prefix: "veil".into(),
        telemetry_seconds: 5,
        keep_alive_seconds: 5,
    };
    let settings = SessionSettings::from_config(&config, "dev1").unwrap();
    let topics = settings.topics.clone();
    veil_uplink::session::probe(&settings)
        .await
        .expect("the page's connection test falls back too");
    let session = Session::start(settings, Arc::new(TestDevice));
    let status = session.status().clone();
    wait_for("a 3.1.1 connection", || status.connected()).await;
    assert_eq!(status.protocol(), "3.1.1");
    // The retained state is the birth. (rumqttd may publish the last will of the MQTT 5
    // CONNECT it turned away first: the fleet sees "offline" for that moment, then "online".)
    wait_for("the retained birth state", || {
        let out = broker
            .listen(&topics.state(), 1)
            .wait_with_output()
            .unwrap()
            .stdout;
        serde_json::from_slice::<Value>(&out).is_ok_and(|s| s["online"] == true)
    })
    .await;
    let reply = broker.listen(&topics.reply("r-311"), 1);
    broker.publish(
        &topics.command("snapshot"),
        r#"{"request_id":"r-311","camera":"gate","width":320}"#,
    );
    let out = reply.wait_with_output().unwrap().stdout;
    let reply: Value = serde_json::from_slice(&out).expect("a reply");
    assert_eq!(reply["result"]["width"], 320, "{reply}");
    let rejected = broker.listen(&topics.reply("r-312"), 1);
    broker.publish(&topics.command("launch"), r#"{"request_id":"r-312"}"#);
    let out = rejected.wait_with_output().unwrap().stdout;
    let rejected: Value = serde_json::from_slice(&out).expect("a rejection");
    assert_eq!(rejected["error"]["code"], "not_found", "{rejected}");
    session.stop().await;
}
