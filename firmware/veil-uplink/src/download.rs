//! Resumable downloads of large files (firmware bundles) over HTTP(S) or from the device's S3
//! bucket: the file is fetched in ranges of [`CHUNK`] bytes into `<dest>.part`, each range a
//! request whose every wait is bounded, so a stalled or dropped link costs one range and a
//! restart (of the link, the daemon, or the board) resumes where the file ends. `If-Range`
//! with the first answer's ETag makes a changed object start over instead of being spliced.
//! The whole file's SHA-256 is checked at the end when the caller knows it.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusty_s3::S3Action;
use sha2::{Digest, Sha256};
use veil_core::backoff::Backoff;
use veil_core::{Error, ErrorKind};

/// Bytes per range request.
pub const CHUNK: u64 = 4 * 1024 * 1024;
/// The slowest link a range must still come through on before it is given up (32 kbit/s).
const SLOWEST_LINK_BYTES_PER_SEC: u64 = 4 * 1024;

/// Where the file is.
pub enum Origin {
    Url(url::Url),
    /// An object of the `[upload]` bucket, each range request signed anew.
    S3 {
        bucket: Box<rusty_s3::Bucket>,
        credentials: Box<rusty_s3::Credentials>,
        key: String,
    },
}

impl Origin {
    /// An object of the device's `[upload]` bucket (`key` as is, not under the device's
    /// prefix: one bundle serves a fleet), with the TLS its endpoint needs.
    pub fn in_bucket(
        upload: &veil_core::config::UploadConfig,
        key: &str,
    ) -> Result<(Origin, Option<ureq::tls::TlsConfig>), Error> {
        let endpoint = upload
            .endpoint
            .parse()
            .map_err(|e| Error::invalid_input(format!("upload.endpoint: {e}")))?;
        let bucket = rusty_s3::Bucket::new(
            endpoint,
            rusty_s3::UrlStyle::Path,
            upload.bucket.clone(),
            upload.region.clone(),
        )
        .map_err(|e| Error::invalid_input(format!("upload.bucket: {e}")))?;
        let tls = upload
            .ca_file
            .as_deref()
            .map(crate::upload::ureq_tls_with_ca)
            .transpose()?;
        let origin = Origin::S3 {
            bucket: Box::new(bucket),
            credentials: Box::new(rusty_s3::Credentials::new(
                upload.access_key.clone(),
                upload.secret_key.clone(),
            )),
            key: key.to_string(),
        };
        Ok((origin, tls))
    }

    fn url(&self) -> url::Url {
        match self {
            Origin::Url(u) => u.clone(),
            Origin::S3 {
                bucket,
                credentials,
                key,
            } => bucket
                .get_object(Some(credentials), key)
                .sign(Duration::from_secs(3600)),
        }
    }

    /// For messages: never the query (a presigned URL's signature).
    pub fn describe(&self) -> String {
        match self {
            Origin::Url(u) => format!(
                "{}://{}{}",
                u.scheme(),
                u.host_str().unwrap_or(""),
                u.path()
            ),
            Origin::S3 { bucket, key, .. } => format!("s3 object {}/{key}", bucket.name()),
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// A server silent this long within a range fails that request (it is tried again).
    pub stall: Duration,
    /// Tries in a row without progress before the download fails.
    pub attempts: u32,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            stall: Duration::from_secs(30),
            attempts: 8,
        }
    }
}

/// Why a download stopped early on the caller's word.
pub const CANCELED: &str = "the download was canceled";

/// Fetches `origin` into `dest`, resuming `<dest>.part`. `progress(bytes, total)` is called
/// after every range; returning false cancels (the part is kept for a later resume).
pub fn fetch(
    origin: &Origin,
    dest: &Path,
    sha256: Option<&str>,
    settings: Settings,
    tls: Option<ureq::tls::TlsConfig>,
    progress: &mut dyn FnMut(u64, Option<u64>) -> bool,
) -> Result<u64, Error> {
    let part = part_path(dest);
    let etag_path = part.with_extension("part.etag");
    let mut config = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_connect(Some(Duration::from_secs(10)))
        .timeout_recv_response(Some(settings.stall))
        .timeout_recv_body(Some(
            settings.stall + Duration::from_secs(CHUNK / SLOWEST_LINK_BYTES_PER_SEC),
        ));
    if let Some(tls) = tls {
        config = config.tls_config(tls);
    }
    let agent: ureq::Agent = config.build().into();
    let mut have = std::fs::metadata(&part).map(|m| m.len()).unwrap_or(0);
    let mut etag = std::fs::read_to_string(&etag_path).ok();
    if etag.is_none() {
        have = 0; // A part without the ETag it came with cannot be trusted to continue.
    }
    let mut total: Option<u64> = None;
    let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
    let mut failures = 0;
    loop {
        if total.is_some_and(|t| have >= t) {
            break;
        }
        if !progress(have, total) {
            return Err(Error::new(ErrorKind::Conflict, CANCELED));
        }
        match range(&agent, origin, have, etag.as_deref(), &part) {
            Ok(Answer::Range {
                bytes,
                total: t,
                etag: e,
            }) => {
                if have == 0 {
                    etag = Some(e.unwrap_or_default());
                    write_file(&etag_path, etag.as_deref().unwrap_or("").as_bytes())?;
                }
                append(&part, have, &bytes)?;
                have += bytes.len() as u64;
                total = Some(t);
                failures = 0;
                backoff.reset();
            }
            Ok(Answer::Whole { bytes, etag: e }) => {
                // No ranges here (or the object changed): the whole file came in one answer,
                // already in the part file.
                write_file(&etag_path, e.unwrap_or_default().as_bytes())?;
                have = bytes;
                total = Some(have);
                etag = Some(String::new());
            }
            Ok(Answer::PastTheEnd { total: t }) if t == have && have > 0 => total = Some(t),
            Ok(Answer::PastTheEnd { .. }) => {
                // The part is longer than the object: it changed; start over.
                have = 0;
                etag = None;
            }
            Err((status, message)) => {
                let retry = status.is_none_or(|s| s >= 500 || s == 429 || s == 408);
                failures += 1;
                if !retry || failures >= settings.attempts {
                    let kind = match status {
                        Some(401 | 403) => ErrorKind::PermissionDenied,
                        Some(404) => ErrorKind::NotFound,
                        Some(s) if s < 500 => ErrorKind::InvalidInput,
                        _ => ErrorKind::Unavailable,
                    };
                    let tries = if retry {
                        format!(" ({failures} tries in a row; {have} bytes kept to resume)")
                    } else {
                        String::new()
                    };
                    return Err(Error::new(
                        kind,
                        format!("download of {}: {message}{tries}", origin.describe()),
                    ));
                }
                tracing::warn!(origin = %origin.describe(), have, %message, "download range failed; retrying");
                std::thread::sleep(backoff.next_delay(0.5));
            }
        }
    }
    progress(have, total);
    if let Some(want) = sha256 {
        let got = file_sha256(&part)?;
        if !got.eq_ignore_ascii_case(want) {
            let _ = std::fs::remove_file(&part);
            let _ = std::fs::remove_file(&etag_path);
            return Err(Error::invalid_input(format!(
                "download of {}: SHA-256 {got} is not the {want} the order gave (the file was \
                 removed; order it again)",
                origin.describe()
            )));
        }
    }
    std::fs::rename(&part, dest).map_err(|e| {
        Error::wrap(
            ErrorKind::Internal,
            format!("cannot move the download to {}", dest.display()),
            e,
        )
    })?;
    let _ = std::fs::remove_file(&etag_path);
    Ok(have)
}

/// Where a download in progress is kept.
pub fn part_path(dest: &Path) -> PathBuf {
    let mut name = dest.file_name().unwrap_or_default().to_os_string();
    name.push(".part");
    dest.with_file_name(name)
}

enum Answer {
    Range {
        bytes: Vec<u8>,
        total: u64,
        etag: Option<String>,
    },
    /// The whole file, written into the part file (its length).
    Whole {
        bytes: u64,
        etag: Option<String>,
    },
    PastTheEnd {
        total: u64,
    },
}

fn range(
    agent: &ureq::Agent,
    origin: &Origin,
    from: u64,
    etag: Option<&str>,
    part: &Path,
) -> Result<Answer, (Option<u16>, String)> {
    let url = origin.url();
    let mut request = ureq::http::Request::builder()
        .method("GET")
        .uri(url.as_str())
        .header("Range", format!("bytes={from}-{}", from + CHUNK - 1));
    if let Some(tag) = etag.filter(|t| !t.is_empty() && from > 0) {
        request = request.header("If-Range", tag);
    }
    let request = request.body(()).map_err(|e| (Some(0), e.to_string()))?;
    let mut response = agent.run(request).map_err(|e| (None, e.to_string()))?;
    let status = response.status().as_u16();
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let etag = header("etag");
    let content_range = header("content-range");
    let limit = CHUNK + 1;
    let mut read_body = |max: u64| -> Result<Vec<u8>, (Option<u16>, String)> {
        let mut bytes = Vec::new();
        response
            .body_mut()
            .as_reader()
            .take(max)
            .read_to_end(&mut bytes)
            .map_err(|e| (None, format!("the connection broke: {e}")))?;
        Ok(bytes)
    };
    match status {
        206 => {
            let total = content_range
                .as_deref()
                .and_then(|r| r.rsplit_once('/'))
                .and_then(|(_, t)| t.trim().parse::<u64>().ok())
                .ok_or((Some(206), "a 206 answer without Content-Range".to_string()))?;
            let bytes = read_body(limit)?;
            if bytes.len() as u64 > CHUNK || (bytes.is_empty() && from < total) {
                return Err((
                    Some(206),
                    format!("the server sent {} bytes for a range", bytes.len()),
                ));
            }
            Ok(Answer::Range { bytes, total, etag })
        }
        200 => {
            // A server without ranges: the body is the whole file, streamed to the disk (a
            // bundle is hundreds of MiB; the timeouts still bound every wait).
            let mut file = File::create(part)
                .map_err(|e| (Some(200), format!("cannot write {}: {e}", part.display())))?;
            let bytes = std::io::copy(&mut response.body_mut().as_reader(), &mut file)
                .map_err(|e| (None, format!("the connection broke: {e}")))?;
            file.sync_data()
                .map_err(|e| (Some(200), format!("cannot write {}: {e}", part.display())))?;
            Ok(Answer::Whole { bytes, etag })
        }
        416 => {
            let total = content_range
                .as_deref()
                .and_then(|r| r.rsplit_once('/'))
                .and_then(|(_, t)| t.trim().parse::<u64>().ok())
                .unwrap_or(0);
            Ok(Answer::PastTheEnd { total })
        }
        s => {
            let body = read_body(4096).unwrap_or_default();
            let text = String::from_utf8_lossy(&body);
            let detail = text
                .split("<Message>")
                .nth(1)
                .and_then(|m| m.split("</Message>").next())
                .unwrap_or("");
            Err((
                Some(s),
                format!(
                    "the server answered {s}{}",
                    if detail.is_empty() {
                        String::new()
                    } else {
                        format!(" ({detail})")
                    }
                ),
            ))
        }
    }
}

fn append(part: &Path, at: u64, bytes: &[u8]) -> Result<(), Error> {
    let io = |e| {
        Error::wrap(
            ErrorKind::Unavailable,
            format!("cannot write {}", part.display()),
            e,
        )
    };
    let mut file = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(false)
        .open(part)
        .map_err(io)?;
    file.set_len(at).map_err(io)?;
    std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(at)).map_err(io)?;
    file.write_all(bytes).map_err(io)?;
    // What is counted as downloaded must be on the disk: the resume trusts the file's length.
    file.sync_data().map_err(io)
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let mut f = File::create(path).map_err(|e| {
        Error::wrap(
            ErrorKind::Unavailable,
            format!("cannot write {}", path.display()),
            e,
        )
    })?;
    f.write_all(bytes)
        .and_then(|_| f.sync_data())
        .map_err(|e| Error::wrap(ErrorKind::Unavailable, "cannot write the download's tag", e))
}

pub fn file_sha256(path: &Path) -> Result<String, Error> {
    let mut file = File::open(path).map_err(|e| {
        Error::wrap(
            ErrorKind::NotFound,
            format!("cannot read {}", path.display()),
            e,
        )
    })?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file
            .read(&mut buf)
            .map_err(|e| Error::wrap(ErrorKind::Unavailable, "cannot read the download", e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}
