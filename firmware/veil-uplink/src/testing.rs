//! A real broker for tests (here and in veild's): Debian's mosquitto with a TLS listener on a
//! free loopback port, a CA made with openssl, password authentication (`dev1`/`s3cret` for the
//! device, `fleet`/`fleetpw` for the fleet side) and a per-user ACL. The fleet side talks
//! through mosquitto's own clients, an MQTT implementation independent of ours.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn sh(program: &str, args: &[&str], dir: &Path) {
    let out = Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// An EC key and a certificate for `cn` signed by the test CA (`ca.crt`), as `{name}.key` /
/// `{name}.crt` in `dir`, with the X.509 extensions `ext`.
fn issue_cert(dir: &Path, name: &str, cn: &str, ext: &str) {
    let (key, csr, crt, extfile) = (
        format!("{name}.key"),
        format!("{name}.csr"),
        format!("{name}.crt"),
        format!("{name}.ext"),
    );
    let subject = format!("/CN={cn}");
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut req = vec!["req"];
    req.extend(ec);
    req.extend(["-keyout", &key, "-out", &csr, "-subj", &subject]);
    sh("openssl", &req, dir);
    std::fs::write(dir.join(&extfile), ext).unwrap();
    sh(
        "openssl",
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &crt,
            "-days",
            "2",
            "-extfile",
            &extfile,
        ],
        dir,
    );
}

/// A CA (`{ca_name}.crt`), and for the test CA `ca` a server certificate for localhost, made
/// with openssl in `dir`.
pub fn make_pki(dir: &Path, ca_name: &str) {
    let (ca, ca_key, subject) = (
        format!("{ca_name}.crt"),
        format!("{ca_name}.key"),
        format!("/CN={ca_name}"),
    );
    sh(
        "openssl",
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &ca_key,
            "-out",
            &ca,
            "-days",
            "2",
            "-subj",
            &subject,
        ],
        dir,
    );
    if ca_name == "ca" {
        issue_cert(
            dir,
            "server",
            "localhost",
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n\
             keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
        );
    }
}

pub struct Broker {
    dir: tempfile::TempDir,
    /// TLS with passwords.
    pub port: u16,
    /// TLS with client certificates (mTLS): the certificate's CN is the user name.
    pub mtls_port: u16,
    child: Option<Child>,
}

/// A client certificate for `cn` signed by the test CA: `client-<cn>.crt` / `.key` in `dir`.
pub fn make_client_cert(dir: &Path, cn: &str) {
    issue_cert(
        dir,
        &format!("client-{cn}"),
        cn,
        "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=clientAuth\n",
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Broker {
    pub fn start() -> Broker {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        // Started as root, mosquitto reads its files as user 'mosquitto'.
        sh("chmod", &["755", d.to_str().unwrap()], d);
        make_pki(d, "ca");
        make_pki(d, "other-ca");
        std::fs::write(d.join("passwd"), "").unwrap();
        sh("mosquitto_passwd", &["-b", "passwd", "dev1", "s3cret"], d);
        sh("mosquitto_passwd", &["-b", "passwd", "fleet", "fleetpw"], d);
        std::fs::write(
            d.join("acl"),
            "user dev1\ntopic readwrite veil/v1/dev1/#\n\nuser fleet\ntopic readwrite veil/#\ntopic readwrite fleet/#\n",
        )
        .unwrap();
        sh("chown", &["mosquitto:", "passwd", "acl", "server.key"], d);
        make_client_cert(d, "dev1");
        let (port, mtls_port) = (free_port(), free_port());
        std::fs::write(
            d.join("mosquitto.conf"),
            format!(
                "persistence false\nlog_dest stdout\nallow_anonymous false\n\
                 password_file {0}/passwd\nacl_file {0}/acl\n\
                 listener {port} 127.0.0.1\n\
                 cafile {0}/ca.crt\ncertfile {0}/server.crt\nkeyfile {0}/server.key\n\
                 listener {mtls_port} 127.0.0.1\n\
                 cafile {0}/ca.crt\ncertfile {0}/server.crt\nkeyfile {0}/server.key\n\
                 require_certificate true\nuse_identity_as_username true\n",
                d.display()
            ),
        )
        .unwrap();
        let mut b = Broker {
            dir,
            port,
            mtls_port,
            child: None,
        };
        b.run();
        b
    }

    fn run(&mut self) {
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(self.dir.path().join("mosquitto.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto (Debian package mosquitto)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err()
            || std::net::TcpStream::connect(("127.0.0.1", self.mtls_port)).is_err()
        {
            assert!(Instant::now() < deadline, "mosquitto did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn restart(&mut self) {
        self.stop();
        self.run();
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn client_args(&self) -> Vec<String> {
        vec![
            "-h".into(),
            "localhost".into(),
            "-p".into(),
            self.port.to_string(),
            "--cafile".into(),
            self.path("ca.crt").display().to_string(),
            "-u".into(),
            "fleet".into(),
            "-P".into(),
            "fleetpw".into(),
            "-V".into(),
            "mqttv5".into(),
        ]
    }

    /// `mosquitto_sub` for the next `count` messages on `topic` as `format` lines (15 s at most).
    fn subscriber(&self, topic: &str, count: usize, format: &str) -> Command {
        let mut c = Command::new("mosquitto_sub");
        c.args(self.client_args()).args([
            "-t",
            topic,
            "-C",
            &count.to_string(),
            "-W",
            "15",
            "-F",
            format,
        ]);
        c
    }

    /// The next `count` messages on `topic` (retained ones included) as `format` lines.
    pub fn receive(&self, topic: &str, count: usize, format: &str) -> Vec<String> {
        let out = self.subscriber(topic, count, format).output().unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// Follows `topic` until dropped, collecting each message's payload.
    pub fn follow(&self, topic: &str) -> Follower {
        let mut child = Command::new("mosquitto_sub")
            .args(self.client_args())
            .args(["-t", topic, "-F", "%p"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn({
            let lines = lines.clone();
            move || {
                use std::io::BufRead;
                for line in std::io::BufReader::new(stdout)
                    .lines()
                    .map_while(Result::ok)
                {
                    lines.lock().unwrap().push(line);
                }
            }
        });
        std::thread::sleep(Duration::from_millis(300));
        Follower { child, lines }
    }

    /// Starts listening on `topic` in the background; collect with `Child::wait_with_output`.
    pub fn listen(&self, topic: &str, count: usize, format: &str) -> Child {
        let child = self
            .subscriber(topic, count, format)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        // mosquitto_sub has no "subscribed" signal: give it a moment.
        std::thread::sleep(Duration::from_millis(300));
        child
    }

    pub fn publish(&self, topic: &str, payload: &str, extra: &[&str]) {
        let out = Command::new("mosquitto_pub")
            .args(self.client_args())
            .args(["-t", topic, "-m", payload, "-q", "1"])
            .args(extra)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A real S3-compatible server for tests: `s3s-fs` (installed by `scripts/test` into
/// `~/.cache/veil/tools/s3s-fs`, or named by `VEIL_S3S_FS`), which checks SigV4 signatures
/// and supports multipart uploads and presigned URLs. Access key `veil-ak`, secret `veil-sk`,
/// one bucket `evidence`.
pub struct S3Server {
    dir: tempfile::TempDir,
    pub port: u16,
    child: Option<Child>,
}

pub const S3_ACCESS_KEY: &str = "veil-ak";
pub const S3_SECRET_KEY: &str = "veil-sk";
pub const S3_BUCKET: &str = "evidence";

fn s3s_fs() -> PathBuf {
    if let Ok(p) = std::env::var("VEIL_S3S_FS") {
        return PathBuf::from(p);
    }
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    PathBuf::from(home).join(".cache/veil/tools/s3s-fs/bin/s3s-fs")
}

impl S3Server {
    pub fn start() -> S3Server {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("data").join(S3_BUCKET)).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut s = S3Server {
            dir,
            port,
            child: None,
        };
        s.run();
        s
    }

    fn run(&mut self) {
        let bin = s3s_fs();
        let child = Command::new(&bin)
            .args(["--host", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--access-key", S3_ACCESS_KEY, "--secret-key", S3_SECRET_KEY])
            .arg(self.dir.path().join("data"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "{} (run scripts/test to install s3s-fs): {e}",
                    bin.display()
                )
            });
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "s3s-fs did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// A presigned PUT URL for `key` in the bucket, valid for `valid`, as a fleet would hand
    /// one over in a job.
    pub fn presign_put(&self, key: &str, valid: Duration) -> url::Url {
        use rusty_s3::S3Action;
        let (bucket, creds) = self.bucket();
        rusty_s3::actions::PutObject::new(&bucket, Some(&creds), key).sign(valid)
    }

    /// The bucket and the credentials that open it.
    fn bucket(&self) -> (rusty_s3::Bucket, rusty_s3::Credentials) {
        let bucket = rusty_s3::Bucket::new(
            self.endpoint().parse().unwrap(),
            rusty_s3::UrlStyle::Path,
            S3_BUCKET,
            "us-east-1",
        )
        .unwrap();
        (
            bucket,
            rusty_s3::Credentials::new(S3_ACCESS_KEY, S3_SECRET_KEY),
        )
    }

    /// A presigned GET URL for `key` in the bucket, valid for `valid`.
    pub fn presign_get(&self, key: &str, valid: Duration) -> url::Url {
        use rusty_s3::S3Action;
        let (bucket, creds) = self.bucket();
        rusty_s3::actions::GetObject::new(&bucket, Some(&creds), key).sign(valid)
    }

    /// Places an object, written into the server's own files.
    pub fn put_object(&self, key: &str, bytes: &[u8]) {
        let path = self.dir.path().join("data").join(S3_BUCKET).join(key);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    }

    /// The bytes of an object, read from the server's own files.
    pub fn object(&self, key: &str) -> Option<Vec<u8>> {
        std::fs::read(self.dir.path().join("data").join(S3_BUCKET).join(key)).ok()
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn restart(&mut self) {
        self.stop();
        self.run();
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A second, independent S3 implementation: moto's server (Python, from PyPI), with the
/// bucket made over its own API. It does not check signatures; s3s-fs does.
pub struct MotoS3 {
    pub port: u16,
    child: Child,
}

impl MotoS3 {
    pub fn start() -> MotoS3 {
        let bin = std::env::var("VEIL_MOTO")
            .map(PathBuf::from)
            .unwrap_or_else(|_| {
                let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
                PathBuf::from(home).join(".cache/veil/tools/moto/bin/moto_server")
            });
        let port = free_port();
        let child = Command::new(&bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("{} (run scripts/test to install moto): {e}", bin.display())
            });
        let s = MotoS3 { port, child };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let made = ureq::put(&format!("{}/{S3_BUCKET}", s.endpoint())).send_empty();
            if made.is_ok() {
                return s;
            }
            assert!(Instant::now() < deadline, "moto did not start: {made:?}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The bytes of an object, read back over S3 (a signed GET: moto refuses anonymous
    /// reads of private objects).
    pub fn object(&self, key: &str) -> Option<Vec<u8>> {
        signed_get(&self.endpoint(), S3_ACCESS_KEY, S3_SECRET_KEY, key)
    }
}

impl Drop for MotoS3 {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The bytes of object `key` in the test bucket, read back with a signed GET.
fn signed_get(endpoint: &str, access_key: &str, secret: &str, key: &str) -> Option<Vec<u8>> {
    use rusty_s3::S3Action;
    let bucket = rusty_s3::Bucket::new(
        endpoint.parse().ok()?,
        rusty_s3::UrlStyle::Path,
        S3_BUCKET,
        "us-east-1",
    )
    .ok()?;
    let creds = rusty_s3::Credentials::new(access_key, secret);
    let url = rusty_s3::actions::GetObject::new(&bucket, Some(&creds), key)
        .sign(Duration::from_secs(300));
    let mut r = ureq::get(url.as_str()).call().ok()?;
    r.body_mut().with_config().limit(1 << 30).read_to_vec().ok()
}

/// A third S3 implementation, written apart from both others: s3rver (Node.js, from npm). It
/// knows one access key ([`S3RVER_KEY`], also the secret) and refuses others; it does not
/// check SigV4 signatures themselves (s3s-fs does). Multipart objects get the MD5 of their
/// whole bytes as ETag, not AWS's MD5 of the parts' MD5s.
pub struct S3rver {
    pub port: u16,
    child: Child,
    _dir: tempfile::TempDir,
}

/// s3rver's fixed access key, and its secret.
pub const S3RVER_KEY: &str = "S3RVER";

impl S3rver {
    pub fn start() -> S3rver {
        let bin = std::env::var("VEIL_S3RVER")
            .map(PathBuf::from)
            .unwrap_or_else(|_| {
                let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
                PathBuf::from(home).join(".cache/veil/tools/s3rver/node_modules/.bin/s3rver")
            });
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let child = Command::new(&bin)
            .args(["-d"])
            .arg(dir.path())
            .args(["-a", "127.0.0.1", "-p", &port.to_string(), "--silent"])
            .args(["--no-vhost-buckets", "--configure-bucket", S3_BUCKET])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "{} (run scripts/test to install s3rver): {e}",
                    bin.display()
                )
            });
        let s = S3rver {
            port,
            child,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "s3rver did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        s
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The bytes of an object, read back with a signed GET.
    pub fn object(&self, key: &str) -> Option<Vec<u8>> {
        signed_get(&self.endpoint(), S3RVER_KEY, S3RVER_KEY, key)
    }
}

impl Drop for S3rver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Messages on a topic as they arrive (see [`Broker::follow`]).
pub struct Follower {
    child: Child,
    lines: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Follower {
    /// Every payload so far, parsed as JSON (others left out).
    pub fn json(&self) -> Vec<serde_json::Value> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// The first message `matches` accepts, waiting up to `limit`.
    pub fn wait_for(
        &self,
        what: &str,
        limit: Duration,
        matches: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let start = std::time::Instant::now();
        loop {
            if let Some(v) = self.json().into_iter().find(|v| matches(v)) {
                return v;
            }
            assert!(
                start.elapsed() < limit,
                "{what}: not seen within {limit:?}; seen: {:?}",
                self.json()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A broker that speaks MQTT 3.1.1 only: rumqttd with one v4 listener on 127.0.0.1 (what a
/// fleet on an older broker has). `scripts/test` installs it; clients here are Debian's
/// mosquitto_pub / mosquitto_sub with `-V mqttv311`.
pub struct Broker311 {
    child: Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Broker311 {
    pub fn start() -> Broker311 {
        let bin = std::env::var_os("VEIL_RUMQTTD")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                PathBuf::from(std::env::var("HOME").unwrap_or_default())
                    .join(".cache/veil/tools/rumqttd/bin/rumqttd")
            });
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = dir.path().join("rumqttd.toml");
        std::fs::write(
            &config,
            format!(
                "id = 0\n[router]\nid = 0\nmax_connections = 100\nmax_outgoing_packet_count = 200\n\
                 max_segment_size = 104857600\nmax_segment_count = 10\n\
                 [v4.1]\nname = \"v4-1\"\nlisten = \"127.0.0.1:{port}\"\nnext_connection_delay_ms = 1\n\
                 [v4.1.connections]\nconnection_timeout_ms = 60000\nmax_payload_size = 1048576\n\
                 max_inflight_count = 100\ndynamic_filters = true\n"
            ),
        )
        .unwrap();
        let child = Command::new(&bin)
            .arg("--config")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {} (scripts/test installs it): {e}",
                    bin.display()
                )
            });
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "rumqttd did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        Broker311 {
            child,
            port,
            _dir: dir,
        }
    }

    fn args(&self) -> Vec<String> {
        vec![
            "-h".into(),
            "127.0.0.1".into(),
            "-p".into(),
            self.port.to_string(),
            "-V".into(),
            "mqttv311".into(),
        ]
    }

    /// The next `count` payloads on `topic` (15 s at most), started in the background.
    pub fn listen(&self, topic: &str, count: usize) -> Child {
        let child = Command::new("mosquitto_sub")
            .args(self.args())
            .args([
                "-t",
                topic,
                "-C",
                &count.to_string(),
                "-W",
                "15",
                "-F",
                "%p",
            ])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(300));
        child
    }

    pub fn publish(&self, topic: &str, payload: &str) {
        let ok = Command::new("mosquitto_pub")
            .args(self.args())
            .args(["-t", topic, "-m", payload, "-q", "1"])
            .status()
            .unwrap()
            .success();
        assert!(ok, "mosquitto_pub to rumqttd failed");
    }
}

impl Drop for Broker311 {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
