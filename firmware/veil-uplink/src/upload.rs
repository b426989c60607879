//! Evidence upload to S3-compatible object storage (AWS S3, MinIO, Garage, Ceph): multipart
//! with SigV4-signed requests (`rusty-s3`, sans-IO) over `ureq`, up to N parts in flight, each
//! part's MD5 sent as `Content-MD5` (the server refuses a damaged part) and compared with the
//! ETag it answers; a resume journal written after every acknowledged part, so a reboot or a
//! network cut resumes without re-sending finished parts; retries with backoff on 5xx and
//! network errors; a bandwidth cap; the object's size checked at the end; the manifest uploaded
//! last, as the completion marker. Presigned PUT URLs handed over in a job are the other way in.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use md5::{Digest, Md5};
use rusty_s3::actions::{
    CompleteMultipartUpload, CreateMultipartUpload, HeadObject, PutObject, S3Action, UploadPart,
};
use rusty_s3::{Bucket, Credentials, UrlStyle};
use serde::{Deserialize, Serialize};
use veil_core::backoff::Backoff;
use veil_core::{Error, ErrorKind};

/// How long a signed request stays valid.
const SIGNED_FOR: Duration = Duration::from_secs(3600);
/// S3's smallest part (all but the last).
pub const MIN_PART: u64 = 5 * 1024 * 1024;

/// Where uploads go.
#[derive(Clone)]
pub enum Target {
    /// The device's own credentials, scoped by the store's policy to `prefix`.
    SigV4 {
        bucket: Box<Bucket>,
        credentials: Box<Credentials>,
        /// Prepended to every object key (e.g. `dev1/`).
        prefix: String,
    },
    /// One presigned PUT URL per file name, handed over in a job.
    Presigned(BTreeMap<String, url::Url>),
}

impl Target {
    pub fn sigv4(
        endpoint: &str,
        region: &str,
        bucket: &str,
        access_key: &str,
        secret_key: &str,
        prefix: &str,
    ) -> Result<Target, Error> {
        let url: url::Url = endpoint
            .parse()
            .map_err(|e| Error::invalid_input(format!("upload endpoint '{endpoint}': {e}")))?;
        let bucket = Bucket::new(url, UrlStyle::Path, bucket.to_string(), region.to_string())
            .map_err(|e| Error::invalid_input(format!("upload bucket '{bucket}': {e}")))?;
        Ok(Target::SigV4 {
            bucket: Box::new(bucket),
            credentials: Box::new(Credentials::new(access_key, secret_key)),
            prefix: prefix.to_string(),
        })
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Parts in flight at once.
    pub parallel: usize,
    pub part_size: u64,
    /// Bytes per second at most (None: as fast as the link goes).
    pub max_bytes_per_second: Option<u64>,
    /// Tries per request before the upload fails.
    pub attempts: u32,
    /// A server that keeps its answer back this long (or stops reading a part for this long
    /// past what the slowest supported link needs) is given up on and the request tried again.
    pub stall: Duration,
}

/// The slowest link an upload is meant to survive (32 kbit/s): sending a part may take as
/// long as this rate needs, plus `Settings::stall`.
const SLOWEST_LINK_BYTES_PER_SEC: u64 = 4 * 1024;

impl Default for Settings {
    fn default() -> Self {
        Settings {
            parallel: 5,
            part_size: 16 * 1024 * 1024,
            max_bytes_per_second: None,
            attempts: 6,
            stall: Duration::from_secs(120),
        }
    }
}

/// One file of an export.
#[derive(Debug, Clone)]
pub struct Upload {
    pub path: PathBuf,
    /// Object name relative to the target's prefix (the file name for presigned targets).
    pub name: String,
    pub bytes: u64,
}

/// What has been acknowledged, per object; written after every part.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Journal {
    pub objects: BTreeMap<String, ObjectProgress>,
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct ObjectProgress {
    pub upload_id: Option<String>,
    pub part_size: u64,
    /// Part number → ETag the server answered.
    pub parts: BTreeMap<u16, String>,
    pub done: bool,
}

impl Journal {
    pub fn load(path: &Path) -> Result<Journal, Error> {
        match std::fs::read(path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| {
                Error::invalid_input(format!("upload journal {} is damaged: {e}", path.display()))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Journal::default()),
            Err(e) => Err(Error::wrap(
                ErrorKind::Internal,
                format!("cannot read {}", path.display()),
                e,
            )),
        }
    }

    /// Replaces the journal atomically (write, sync, rename).
    pub fn save(&self, path: &Path) -> Result<(), Error> {
        let tmp = path.with_extension("tmp");
        let write = || -> std::io::Result<()> {
            use std::io::Write;
            let mut f = File::create(&tmp)?;
            f.write_all(&serde_json::to_vec(self).expect("journal serializes"))?;
            f.sync_all()?;
            std::fs::rename(&tmp, path)
        };
        write().map_err(|e| {
            Error::wrap(
                ErrorKind::Internal,
                format!("cannot write {}", path.display()),
                e,
            )
        })
    }
}

/// What an upload did.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Summary {
    pub objects: Vec<String>,
    pub bytes: u64,
    /// Bytes sent in this run (less than `bytes` when it resumed).
    pub sent: u64,
    pub parts_resumed: u64,
    pub retries: u64,
    /// Seconds spent sending data, and waiting for the store to assemble multipart objects.
    pub transfer_seconds: f64,
    pub complete_seconds: f64,
}

/// Paces sends to a byte rate.
struct Pacer {
    cap: Option<u64>,
    start: Instant,
    sent: AtomicU64,
}

impl Pacer {
    fn wait(&self, bytes: u64) {
        let total = self.sent.fetch_add(bytes, Ordering::SeqCst) + bytes;
        if let Some(cap) = self.cap.filter(|c| *c > 0) {
            let due = Duration::from_secs_f64(total as f64 / cap as f64);
            if let Some(ahead) = due.checked_sub(self.start.elapsed()) {
                std::thread::sleep(ahead);
            }
        }
    }
}

/// `POST <key>?uploads`, presigned, in the spelling the S3 API documents. rusty-s3 writes
/// `?uploads=1`, which some servers refuse (moto 5.2 answers 500). The bare `uploads` and
/// `uploads=` are one parameter to SigV4 (both canonicalize as `uploads=`), so the signature
/// holds for the bare form.
fn create_multipart_url(
    bucket: &Bucket,
    credentials: &Credentials,
    key: &str,
) -> Result<url::Url, Error> {
    let url = bucket
        .object_url(key)
        .map_err(|e| Error::invalid_input(format!("{key}: not a usable object key: {e}")))?;
    let mut signed = rusty_s3::signing::sign(
        &jiff::Timestamp::now(),
        rusty_s3::Method::Post,
        url,
        credentials.key(),
        credentials.secret(),
        credentials.token(),
        bucket.region(),
        SIGNED_FOR.as_secs(),
        std::iter::once(("uploads", "")),
        std::iter::empty(),
    );
    let query: Vec<&str> = signed
        .query()
        .unwrap_or_default()
        .split('&')
        .map(|p| if p == "uploads=" { "uploads" } else { p })
        .collect();
    let query = query.join("&");
    signed.set_query(Some(&query));
    Ok(signed)
}

/// An HTTP agent whose every wait is bounded: a stalled server fails the request (and it is
/// tried again) instead of holding an upload forever.
fn agent(settings: &Settings, tls: Option<ureq::tls::TlsConfig>) -> ureq::Agent {
    let sending = Duration::from_secs(settings.part_size / SLOWEST_LINK_BYTES_PER_SEC);
    let mut config = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_connect(Some(Duration::from_secs(10)))
        .timeout_send_body(Some(settings.stall + sending))
        .timeout_recv_response(Some(settings.stall))
        .timeout_recv_body(Some(settings.stall));
    if let Some(tls) = tls {
        config = config.tls_config(tls);
    }
    config.build().into()
}

/// A failed exchange: the HTTP status (None: the network failed) and what went wrong.
type Failure = (Option<u16>, String);
/// A successful exchange: status, ETag, body.
type Answer = (u16, Option<String>, String);

/// HTTPS trusting only the CA(s) in `ca_file` (a private object store) instead of the web PKI.
pub fn ureq_tls_with_ca(ca_file: &Path) -> Result<ureq::tls::TlsConfig, Error> {
    let pem = std::fs::read(ca_file).map_err(|e| {
        Error::wrap(
            ErrorKind::NotConfigured,
            format!("upload: cannot read {}", ca_file.display()),
            e,
        )
    })?;
    let certs: Vec<ureq::tls::Certificate<'static>> = ureq::tls::parse_pem(&pem)
        .filter_map(|item| match item {
            Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
            _ => None,
        })
        .collect();
    if certs.is_empty() {
        return Err(Error::invalid_input(format!(
            "upload: {} holds no certificate",
            ca_file.display()
        )));
    }
    Ok(ureq::tls::TlsConfig::builder()
        .root_certs(ureq::tls::RootCerts::from(certs))
        .build())
}

/// Whether a failed request is worth another try: the network, or the server's 5xx / 429.
fn retryable(status: Option<u16>) -> bool {
    status.is_none_or(|s| s >= 500 || s == 429 || s == 408)
}

pub struct Uploader {
    target: Target,
    settings: Settings,
    agent: ureq::Agent,
    retries: AtomicU64,
    complete_time: Mutex<Duration>,
}

impl Uploader {
    pub fn new(target: Target, settings: Settings) -> Uploader {
        Uploader {
            target,
            agent: agent(&settings, None),
            settings,
            retries: AtomicU64::new(0),
            complete_time: Mutex::new(Duration::ZERO),
        }
    }

    /// Trusts only the CA(s) in `ca_file` (a private object store) instead of the web PKI.
    pub fn with_ca_file(mut self, ca_file: &Path) -> Result<Uploader, Error> {
        let tls = ureq_tls_with_ca(ca_file)?;
        self.agent = agent(&self.settings, Some(tls));
        Ok(self)
    }

    /// Runs `request` until it succeeds, fails for good, or the attempts are spent.
    fn with_retries<T>(
        &self,
        what: &str,
        mut request: impl FnMut() -> Result<T, Failure>,
    ) -> Result<T, Error> {
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
        let mut attempt = 1;
        loop {
            match request() {
                Ok(v) => return Ok(v),
                Err((status, message)) if retryable(status) && attempt < self.settings.attempts => {
                    self.retries.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(%what, attempt, %message, "upload request failed; retrying");
                    std::thread::sleep(backoff.next_delay(0.5));
                    attempt += 1;
                }
                Err((status, message)) => {
                    let kind = match status {
                        Some(401) | Some(403) => ErrorKind::PermissionDenied,
                        Some(404) => ErrorKind::NotFound,
                        Some(s) if s < 500 => ErrorKind::InvalidInput,
                        _ => ErrorKind::Unavailable,
                    };
                    return Err(Error::new(kind, format!("{what}: {message}")));
                }
            }
        }
    }

    /// One HTTP exchange: (status, ETag, body).
    fn exchange(
        &self,
        method: &str,
        url: &url::Url,
        headers: &[(&str, String)],
        body: Option<&[u8]>,
    ) -> Result<Answer, Failure> {
        let mut request = ureq::http::Request::builder()
            .method(method)
            .uri(url.as_str());
        for (k, v) in headers {
            request = request.header(*k, v);
        }
        let sent = match body {
            Some(b) => self
                .agent
                .run(request.body(b).map_err(|e| (Some(0), e.to_string()))?),
            None => self
                .agent
                .run(request.body(()).map_err(|e| (Some(0), e.to_string()))?),
        };
        let mut response = sent.map_err(|e| (None, format!("network: {e}")))?;
        let status = response.status().as_u16();
        let etag = response
            .headers()
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .map(|v| v.trim_matches('"').to_string());
        let text = response.body_mut().read_to_string().unwrap_or_default();
        if status >= 300 {
            let reason = s3_error(&text).unwrap_or_else(|| format!("HTTP {status}"));
            return Err((Some(status), format!("{reason} (HTTP {status})")));
        }
        Ok((status, etag, text))
    }

    /// Lists at most one object under the prefix, signed like an upload: checks the address,
    /// the TLS trust, the credentials and the bucket in one request.
    pub fn probe(&self) -> Result<(), Error> {
        let Target::SigV4 {
            bucket,
            credentials,
            prefix,
        } = &self.target
        else {
            return Ok(());
        };
        let mut list = bucket.list_objects_v2(Some(credentials));
        list.with_prefix(prefix.clone());
        list.with_max_keys(1);
        let url = list.sign(Duration::from_secs(300));
        self.exchange("GET", &url, &[], None)
            .map(|_| ())
            .map_err(|(status, message)| {
                let kind = match status {
                    Some(401) | Some(403) => ErrorKind::PermissionDenied,
                    Some(404) => ErrorKind::NotFound,
                    _ => ErrorKind::Unavailable,
                };
                Error::new(kind, format!("the upload target answered: {message}"))
            })
    }

    fn key(&self, name: &str) -> String {
        match &self.target {
            Target::SigV4 { prefix, .. } => format!("{prefix}{name}"),
            Target::Presigned(_) => name.to_string(),
        }
    }

    /// Uploads `files` then `manifest` (last: its arrival marks the export complete).
    pub fn upload(
        &self,
        files: &[Upload],
        manifest: &Upload,
        journal_path: &Path,
        progress: &(dyn Fn(u64, u64) + Sync),
    ) -> Result<Summary, Error> {
        let journal = Mutex::new(Journal::load(journal_path)?);
        let total: u64 = files.iter().chain([manifest]).map(|f| f.bytes).sum();
        let done_bytes = AtomicU64::new(0);
        let pacer = Pacer {
            cap: self.settings.max_bytes_per_second,
            start: Instant::now(),
            sent: AtomicU64::new(0),
        };
        let mut summary = Summary::default();
        let started = Instant::now();
        for file in files.iter().chain([manifest]) {
            let key = self.key(&file.name);
            let finished = journal
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .objects
                .get(&key)
                .is_some_and(|o| o.done);
            if finished {
                done_bytes.fetch_add(file.bytes, Ordering::Relaxed);
                summary.objects.push(key);
                continue;
            }
            let whole = matches!(self.target, Target::Presigned(_))
                || file.bytes <= self.settings.part_size;
            let (sent, resumed, etag) = match &self.target {
                Target::Presigned(urls) => {
                    let url = urls.get(&file.name).ok_or_else(|| {
                        Error::invalid_input(format!(
                            "the job gives no upload URL for {}",
                            file.name
                        ))
                    })?;
                    let (sent, etag) = self.put_whole(url, file, &pacer)?;
                    (sent, 0, etag)
                }
                Target::SigV4 { .. } if file.bytes <= self.settings.part_size => {
                    let url = self.signed_put(&key)?;
                    let (sent, etag) = self.put_whole(&url, file, &pacer)?;
                    (sent, 0, etag)
                }
                Target::SigV4 { .. } => self.multipart(
                    file,
                    &key,
                    &journal,
                    journal_path,
                    &pacer,
                    &done_bytes,
                    total,
                    progress,
                )?,
            };
            self.check_object(&key, file, &etag)?;
            {
                let mut j = journal.lock().unwrap_or_else(|e| e.into_inner());
                j.objects.entry(key.clone()).or_default().done = true;
                j.save(journal_path)?;
            }
            summary.sent += sent;
            summary.parts_resumed += resumed;
            summary.objects.push(key);
            if whole {
                done_bytes.fetch_add(file.bytes, Ordering::Relaxed);
            }
            progress(done_bytes.load(Ordering::Relaxed), total);
        }
        summary.bytes = total;
        summary.retries = self.retries.load(Ordering::Relaxed);
        summary.complete_seconds = self
            .complete_time
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_secs_f64();
        summary.transfer_seconds = started.elapsed().as_secs_f64() - summary.complete_seconds;
        Ok(summary)
    }

    fn signed_put(&self, key: &str) -> Result<url::Url, Error> {
        match &self.target {
            Target::SigV4 {
                bucket,
                credentials,
                ..
            } => Ok(PutObject::new(bucket, Some(credentials), key).sign(SIGNED_FOR)),
            Target::Presigned(_) => Err(Error::internal("signed PUT on a presigned target")),
        }
    }

    /// A single PUT of a whole file (small files, presigned URLs).
    /// Returns the bytes sent and the object's expected ETag (its MD5).
    fn put_whole(
        &self,
        url: &url::Url,
        file: &Upload,
        pacer: &Pacer,
    ) -> Result<(u64, String), Error> {
        let mut bytes = Vec::with_capacity(file.bytes as usize);
        File::open(&file.path)
            .and_then(|mut f| f.read_to_end(&mut bytes))
            .map_err(|e| {
                Error::wrap(
                    ErrorKind::Internal,
                    format!("cannot read {}", file.path.display()),
                    e,
                )
            })?;
        let digest = Md5::digest(&bytes);
        let (md5, md5_hex) = (
            base64::engine::general_purpose::STANDARD.encode(digest),
            hex::encode(digest),
        );
        pacer.wait(bytes.len() as u64);
        self.with_retries(&format!("upload of {}", file.name), || {
            let (_, etag, _) =
                self.exchange("PUT", url, &[("Content-MD5", md5.clone())], Some(&bytes))?;
            match etag {
                Some(e) if !e.eq_ignore_ascii_case(&md5_hex) => Err((
                    Some(502),
                    format!("ETag {e} is not the file's MD5 {md5_hex}"),
                )),
                _ => Ok(()),
            }
        })?;
        Ok((bytes.len() as u64, md5_hex))
    }

    /// The final integrity check: the stored object's size and ETag (MD5 of a single PUT; MD5
    /// of the parts' MD5s and the part count for a multipart object, which the store computes
    /// from what it assembled; some stores give a multipart object the MD5 of its whole bytes,
    /// which is checked against the file instead) against what was sent.
    fn check_object(&self, key: &str, file: &Upload, expected_etag: &str) -> Result<(), Error> {
        let Target::SigV4 {
            bucket,
            credentials,
            ..
        } = &self.target
        else {
            // A presigned PUT grants nothing else; the PUT's own ETag was checked.
            return Ok(());
        };
        let url = HeadObject::new(bucket, Some(credentials), key).sign(SIGNED_FOR);
        let (size, etag) = self.with_retries(&format!("check of {key}"), || {
            let request = ureq::http::Request::builder()
                .method("HEAD")
                .uri(url.as_str());
            let response = self
                .agent
                .run(request.body(()).map_err(|e| (Some(0), e.to_string()))?)
                .map_err(|e| (None, format!("network: {e}")))?;
            let status = response.status().as_u16();
            if status >= 300 {
                return Err((Some(status), format!("HTTP {status}")));
            }
            let header = |name: &str| {
                response
                    .headers()
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(|v| v.trim_matches('"').to_string())
            };
            Ok((
                header("content-length").and_then(|v| v.parse::<u64>().ok()),
                header("etag"),
            ))
        })?;
        if size != Some(file.bytes) {
            return Err(Error::internal(format!(
                "{key}: the store holds {size:?} bytes, the export {}: upload damaged",
                file.bytes
            )));
        }
        if let Some(etag) = etag
            && !etag.eq_ignore_ascii_case(expected_etag)
            && !(expected_etag.contains('-') && is_whole_file_md5(&etag, &file.path))
        {
            return Err(Error::internal(format!(
                "{key}: the store's checksum {etag} is not the one sent ({expected_etag}): \
                 upload damaged"
            )));
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn multipart(
        &self,
        file: &Upload,
        key: &str,
        journal: &Mutex<Journal>,
        journal_path: &Path,
        pacer: &Pacer,
        done_bytes: &AtomicU64,
        total: u64,
        progress: &(dyn Fn(u64, u64) + Sync),
    ) -> Result<(u64, u64, String), Error> {
        let Target::SigV4 {
            bucket,
            credentials,
            ..
        } = &self.target
        else {
            return Err(Error::internal("multipart on a presigned target"));
        };
        // Up to 10,000 parts: large files get larger parts.
        let (upload_id, part_size) = {
            let known = journal
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .objects
                .get(key)
                .and_then(|o| o.upload_id.clone().map(|id| (id, o.part_size)));
            match known {
                Some(k) => k,
                None => {
                    let part_size = self
                        .settings
                        .part_size
                        .max(MIN_PART)
                        .max(file.bytes.div_ceil(10_000));
                    let url = create_multipart_url(bucket, credentials, key)?;
                    let (_, _, body) = self.with_retries(&format!("start of {key}"), || {
                        self.exchange("POST", &url, &[], None)
                    })?;
                    let id = CreateMultipartUpload::parse_response(&body)
                        .map_err(|e| {
                            Error::internal(format!(
                                "{key}: unreadable CreateMultipartUpload answer: {e}"
                            ))
                        })?
                        .upload_id()
                        .to_string();
                    let mut j = journal.lock().unwrap_or_else(|e| e.into_inner());
                    let o = j.objects.entry(key.to_string()).or_default();
                    o.upload_id = Some(id.clone());
                    o.part_size = part_size;
                    o.parts.clear();
                    j.save(journal_path)?;
                    (id, part_size)
                }
            }
        };
        let count = file.bytes.div_ceil(part_size) as u16;
        let acknowledged: Vec<u16> = journal
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .objects
            .get(key)
            .map(|o| o.parts.keys().copied().collect())
            .unwrap_or_default();
        let resumed = acknowledged.len() as u64;
        for n in &acknowledged {
            let len = (file.bytes - (*n as u64 - 1) * part_size).min(part_size);
            done_bytes.fetch_add(len, Ordering::Relaxed);
        }
        let missing: Vec<u16> = (1..=count).filter(|n| !acknowledged.contains(n)).collect();
        let next = AtomicUsize::new(0);
        let sent = AtomicU64::new(0);
        let source = File::open(&file.path).map_err(|e| {
            Error::wrap(
                ErrorKind::Internal,
                format!("cannot read {}", file.path.display()),
                e,
            )
        })?;
        let failure: Mutex<Option<Error>> = Mutex::new(None);
        std::thread::scope(|scope| {
            for _ in 0..self
                .settings
                .parallel
                .clamp(1, 16)
                .min(missing.len().max(1))
            {
                scope.spawn(|| {
                    let mut buf = Vec::new();
                    loop {
                        if failure.lock().unwrap_or_else(|e| e.into_inner()).is_some() {
                            return;
                        }
                        let i = next.fetch_add(1, Ordering::SeqCst);
                        let Some(&n) = missing.get(i) else { return };
                        let offset = (n as u64 - 1) * part_size;
                        let len = (file.bytes - offset).min(part_size) as usize;
                        buf.resize(len, 0);
                        if let Err(e) = source.read_exact_at(&mut buf, offset) {
                            *failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(Error::wrap(
                                ErrorKind::Internal,
                                format!("cannot read {}", file.path.display()),
                                e,
                            ));
                            return;
                        }
                        let md5 = Md5::digest(&buf);
                        let md5_b64 = base64::engine::general_purpose::STANDARD.encode(md5);
                        let md5_hex = hex::encode(md5);
                        pacer.wait(len as u64);
                        let url = UploadPart::new(bucket, Some(credentials), key, n, &upload_id)
                            .sign(SIGNED_FOR);
                        let result = self.with_retries(&format!("part {n} of {key}"), || {
                            let (_, etag, _) = self.exchange(
                                "PUT",
                                &url,
                                &[("Content-MD5", md5_b64.clone())],
                                Some(&buf),
                            )?;
                            let etag =
                                etag.ok_or((Some(502), "no ETag in the answer".to_string()))?;
                            if !etag.eq_ignore_ascii_case(&md5_hex) {
                                // The store kept other bytes than we sent: send again.
                                return Err((
                                    Some(502),
                                    format!("ETag {etag} is not the part's MD5 {md5_hex}"),
                                ));
                            }
                            Ok(etag)
                        });
                        match result {
                            Ok(etag) => {
                                let mut j = journal.lock().unwrap_or_else(|p| p.into_inner());
                                j.objects
                                    .entry(key.to_string())
                                    .or_default()
                                    .parts
                                    .insert(n, etag);
                                if let Err(e) = j.save(journal_path) {
                                    *failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                                    return;
                                }
                                drop(j);
                                sent.fetch_add(len as u64, Ordering::Relaxed);
                                let now = done_bytes.fetch_add(len as u64, Ordering::Relaxed)
                                    + len as u64;
                                progress(now, total);
                            }
                            Err(e) => {
                                *failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                                return;
                            }
                        }
                    }
                });
            }
        });
        if let Some(e) = failure.into_inner().unwrap_or_else(|p| p.into_inner()) {
            return Err(e);
        }
        let etags: Vec<String> = {
            let j = journal.lock().unwrap_or_else(|e| e.into_inner());
            let parts = &j.objects[key].parts;
            (1..=count)
                .map(|n| {
                    parts
                        .get(&n)
                        .cloned()
                        .ok_or_else(|| Error::internal(format!("{key}: part {n} missing")))
                })
                .collect::<Result<_, _>>()?
        };
        let completing = Instant::now();
        let complete = CompleteMultipartUpload::new(
            bucket,
            Some(credentials),
            key,
            &upload_id,
            etags.iter().map(String::as_str),
        );
        let url = complete.sign(SIGNED_FOR);
        let body = complete.body();
        self.with_retries(&format!("completion of {key}"), || {
            let (status, _, text) = self.exchange("POST", &url, &[], Some(body.as_bytes()))?;
            // S3 may answer 200 with an error document.
            match s3_error(&text) {
                Some(e) if text.contains("<Error>") => Err((Some(500.max(status)), e)),
                _ => Ok(()),
            }
        })?;
        *self.complete_time.lock().unwrap_or_else(|e| e.into_inner()) += completing.elapsed();
        Ok((
            sent.load(Ordering::Relaxed),
            resumed,
            multipart_etag(&etags),
        ))
    }
}

/// The ETag S3 gives a multipart object: the MD5 of the parts' MD5s, then the part count.
fn multipart_etag(part_etags: &[String]) -> String {
    let mut of_parts = Md5::new();
    for etag in part_etags {
        of_parts.update(hex::decode(etag).unwrap_or_default());
    }
    format!("{}-{}", hex::encode(of_parts.finalize()), part_etags.len())
}

/// The `Code: Message` of an S3 error document.
fn s3_error(body: &str) -> Option<String> {
    let tag = |name: &str| {
        let start = body.find(&format!("<{name}>"))? + name.len() + 2;
        let end = body[start..].find(&format!("</{name}>"))? + start;
        Some(body[start..end].to_string())
    };
    let code = tag("Code")?;
    Some(match tag("Message") {
        Some(m) => format!("{code}: {m}"),
        None => code,
    })
}

/// Whether `etag` is the MD5 of the file's whole bytes (read again to find out).
fn is_whole_file_md5(etag: &str, path: &Path) -> bool {
    if etag.len() != 32 {
        return false;
    }
    let Ok(mut f) = std::fs::File::open(path) else {
        return false;
    };
    let mut md5 = Md5::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match std::io::Read::read(&mut f, &mut buf) {
            Ok(0) => break,
            Ok(n) => md5.update(&buf[..n]),
            Err(_) => return false,
        }
    }
    hex::encode(md5.finalize()).eq_ignore_ascii_case(etag)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multipart_uploads_start_with_the_documented_bare_uploads_parameter() {
        let bucket = Bucket::new(
            "http://127.0.0.1:9000".parse().unwrap(),
            UrlStyle::Path,
            "evidence",
            "us-east-1",
        )
        .unwrap();
        let creds = Credentials::new("ak", "sk");
        let url = create_multipart_url(&bucket, &creds, "dev1/a b.mp4").unwrap();
        let query = url.query().unwrap();
        let params: Vec<&str> = query.split('&').collect();
        assert!(params.contains(&"uploads"), "{url}");
        assert!(!query.contains("uploads="), "{url}");
        assert!(query.contains("X-Amz-Signature="), "{url}");
        assert_eq!(url.path(), "/evidence/dev1/a%20b.mp4");
    }

    #[test]
    fn s3_errors_read_in_words_and_journals_survive_a_round_trip() {
        let body = "<?xml version=\"1.0\"?><Error><Code>SignatureDoesNotMatch</Code><Message>bad sig</Message></Error>";
        assert_eq!(
            s3_error(body).as_deref(),
            Some("SignatureDoesNotMatch: bad sig")
        );
        assert_eq!(s3_error("<html>"), None);
        assert!(retryable(None) && retryable(Some(503)) && !retryable(Some(403)));
        // Reference values from Python's hashlib.
        let parts = [
            "e09c80c42fda55f9d992e59ca6b3307d".to_string(),
            "e1faffe9c3c801f2f8c3fbe7cb032cb2".to_string(),
        ];
        assert_eq!(multipart_etag(&parts), "30e57f64e284aca6fd268ecbac8a42dc-2");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.json");
        let mut j = Journal::default();
        j.objects
            .entry("a".into())
            .or_default()
            .parts
            .insert(3, "etag".into());
        j.save(&path).unwrap();
        assert_eq!(Journal::load(&path).unwrap().objects["a"].parts[&3], "etag");
        std::fs::write(&path, "{").unwrap();
        assert!(
            Journal::load(&path)
                .unwrap_err()
                .message()
                .contains("damaged")
        );
    }
}
