//! A private network for live-relay tests and `veild bench live`: a network namespace with
//! only loopback, where 127.0.0.2 is an address of its own, and a WHIP ingest peer that no
//! one here wrote (aiortc, `scripts/peers/whip-ingest.py`) listening on it.
//!
//! aiortc's ICE leaves out 127.0.0.1, so the peer needs another loopback address; giving the
//! host's own loopback one would change the machine, a namespace changes nothing outside
//! itself. A process enters it by running itself again under `ip netns exec` (needs root).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use veil_core::{Error, ErrorKind};

/// Set in the environment of a process running inside a namespace made here.
pub const INSIDE_ENV: &str = "TESTBED_NETNS";
/// The address the peer listens on inside the namespace.
pub const PEER_HOST: &str = "127.0.0.2";

pub struct Namespace {
    name: String,
}

impl Namespace {
    pub fn create() -> Result<Namespace, Error> {
        use std::sync::atomic::{AtomicU32, Ordering};
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "veil-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let ns = Namespace { name };
        ns.ip(&["netns", "add", &ns.name])?;
        ns.ip(&["-n", &ns.name, "link", "set", "lo", "up"])?;
        ns.ip(&["-n", &ns.name, "addr", "add", "127.0.0.2/8", "dev", "lo"])?;
        Ok(ns)
    }

    fn ip(&self, args: &[&str]) -> Result<(), Error> {
        let out = Command::new("ip").args(args).output().map_err(|e| {
            Error::new(
                ErrorKind::Unavailable,
                format!("cannot run 'ip' (iproute2): {e}"),
            )
        })?;
        if out.status.success() {
            Ok(())
        } else {
            Err(Error::new(
                ErrorKind::PermissionDenied,
                format!(
                    "ip {} failed (network namespaces need root): {}",
                    args.join(" "),
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
            ))
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `program` run inside the namespace, with [`INSIDE_ENV`] set.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name])
            .arg(program)
            .env(INSIDE_ENV, &self.name);
        c
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Whether this process runs inside a namespace made by [`Namespace`].
pub fn inside() -> bool {
    std::env::var_os(INSIDE_ENV).is_some()
}

/// Runs the named test of the current test binary again inside a fresh namespace and panics
/// unless it passes. Call it first in a test: `if !testbed::inside() { return testbed::rerun_inside("name"); }`.
pub fn rerun_inside(test: &str) {
    let ns = Namespace::create().unwrap_or_else(|e| panic!("{e}"));
    let exe = std::env::current_exe().expect("test binary path");
    let status = ns
        .command(exe)
        .args([
            test,
            "--exact",
            "--include-ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .status()
        .expect("run the test inside the namespace");
    assert!(
        status.success(),
        "{test} failed inside network namespace {}",
        ns.name()
    );
}

/// The aiortc WHIP ingest (scripts/peers/whip-ingest.py), started on [`PEER_HOST`].
pub struct IngestPeer {
    child: Child,
    pub port: u16,
    pub token: String,
}

pub fn peer_script() -> PathBuf {
    std::env::var_os("VEIL_WHIP_PEER")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../scripts/peers/whip-ingest.py"
            ))
        })
}

/// A TCP port free on `host` now.
pub fn free_port(host: &str) -> u16 {
    std::net::TcpListener::bind((host, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl IngestPeer {
    /// Starts the peer and waits until it listens (Debian's python3-aiortc, python3-aiohttp).
    pub fn start(token: &str) -> Result<IngestPeer, Error> {
        let port = free_port(PEER_HOST);
        let child = Command::new("/usr/bin/python3")
            .arg(peer_script())
            .args(["--host", PEER_HOST, "--port", &port.to_string()])
            .args(["--token", token])
            .stdout(Stdio::null())
            .spawn()
            .map_err(|e| {
                Error::new(
                    ErrorKind::Unavailable,
                    format!("cannot start the WHIP ingest peer: {e}"),
                )
            })?;
        let peer = IngestPeer {
            child,
            port,
            token: token.into(),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if std::net::TcpStream::connect((PEER_HOST, port)).is_ok() {
                return Ok(peer);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(Error::new(
            ErrorKind::Unavailable,
            "the WHIP ingest peer did not listen within 20 s (are python3-aiortc and \
             python3-aiohttp installed?)",
        ))
    }

    pub fn endpoint(&self) -> String {
        format!("http://{PEER_HOST}:{}/whip", self.port)
    }

    /// What the peer has received, per session (see the script's docs).
    pub fn stats(&self) -> serde_json::Value {
        let url = format!("http://{PEER_HOST}:{}/stats", self.port);
        ureq::get(&url)
            .call()
            .ok()
            .and_then(|mut r| r.body_mut().read_to_string().ok())
            .and_then(|text| serde_json::from_str(&text).ok())
            .unwrap_or(serde_json::Value::Null)
    }

    /// Stops the peer without closing anything (SIGSTOP): it neither answers nor sends, as
    /// when the consumer's network goes silent. `kill` still ends it.
    pub fn freeze(&self) {
        let _ = Command::new("kill")
            .args(["-STOP", &self.child.id().to_string()])
            .status();
    }

    /// Ends the peer at once, as an ingest that crashes does.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for IngestPeer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Debian's coturn as the TURN server (long-term credentials, UDP only), on [`PEER_HOST`]
/// inside the test's namespace. Its log is kept to show what it relayed.
pub struct TurnServer {
    child: Child,
    pub port: u16,
    pub username: String,
    pub password: String,
    dir: PathBuf,
}

impl TurnServer {
    pub fn start(username: &str, password: &str) -> Result<TurnServer, Error> {
        let unavailable = |what: String| Error::new(ErrorKind::Unavailable, what);
        let port = std::net::UdpSocket::bind((PEER_HOST, 0))
            .and_then(|s| s.local_addr())
            .map(|a| a.port())
            .map_err(|e| unavailable(format!("no free UDP port on {PEER_HOST}: {e}")))?;
        let dir = std::env::temp_dir().join(format!("veil-turn-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir)
            .map_err(|e| unavailable(format!("cannot create {}: {e}", dir.display())))?;
        let child = Command::new("turnserver")
            .args(["-n", "--listening-ip", PEER_HOST, "--relay-ip", PEER_HOST])
            .args(["--listening-port", &port.to_string()])
            .args(["--lt-cred-mech", "--realm", "veil.test"])
            .arg("--user")
            .arg(format!("{username}:{password}"))
            .args([
                "--allow-loopback-peers",
                "--no-cli",
                "--no-tls",
                "--no-dtls",
                "--no-tcp",
            ])
            .args(["--simple-log", "--no-stdout-log", "--verbose"])
            .arg("--log-file")
            .arg(dir.join("turn.log"))
            .arg("--pidfile")
            .arg(dir.join("turn.pid"))
            .arg("--userdb")
            .arg(dir.join("turndb"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| {
                unavailable(format!("cannot start turnserver (apt install coturn): {e}"))
            })?;
        let server = TurnServer {
            child,
            port,
            username: username.into(),
            password: password.into(),
            dir,
        };
        // Ready when it answers a STUN binding request.
        let probe = std::net::UdpSocket::bind((PEER_HOST, 0))
            .map_err(|e| unavailable(format!("no UDP socket: {e}")))?;
        probe
            .set_read_timeout(Some(Duration::from_millis(200)))
            .map_err(|e| unavailable(e.to_string()))?;
        let mut binding = vec![0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42];
        binding.extend_from_slice(b"veil-probe01");
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut buf = [0u8; 512];
        while Instant::now() < deadline {
            let _ = probe.send_to(&binding, (PEER_HOST, port));
            if probe.recv_from(&mut buf).is_ok() {
                return Ok(server);
            }
        }
        Err(unavailable(format!(
            "turnserver did not answer on {PEER_HOST}:{port} within 20 s:\n{}",
            server.log()
        )))
    }

    /// The server as an ICE server URL.
    pub fn url(&self) -> String {
        format!("turn:{PEER_HOST}:{}?transport=udp", self.port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("turn.log")).unwrap_or_default()
    }
}

impl Drop for TurnServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
