//! Evidence exports: a time range of one or more cameras' footage as MP4 files (at most 60
//! minutes each) with a `manifest.json` signed by the device's Ed25519 key, and the check of
//! such a directory (`veild verify-export`).

use std::io::Write;
use std::path::{Path, PathBuf};

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use veil_core::{Error, ErrorKind};
use veil_media::h264::Openh264Decoder;
use veil_media::h264::annexb::{nal_unit_type, nal_units};
use veil_store::Store;

/// Longest export (the request workflow asks for ranges, not archives).
const MAX_RANGE_MS: i64 = 24 * 3600 * 1000;
/// Longest file in an export.
const MAX_FILE_MS: i64 = 3600 * 1000;
/// MP4 timescale: milliseconds, the store's resolution.
const TIMESCALE: u32 = 1000;

pub struct ExportRequest {
    pub cameras: Vec<String>,
    pub from_ms: i64,
    pub to_ms: i64,
    pub name: Option<String>,
    pub description: Option<String>,
    /// age (X25519) recipients every video file is encrypted to; none: plain files.
    pub recipients: Vec<age::x25519::Recipient>,
}

/// The export command's arguments before parsing.
pub struct ExportRequestArgs {
    pub cameras: Vec<String>,
    pub from: String,
    pub to: String,
    pub name: Option<String>,
    pub description: Option<String>,
    pub recipients: Vec<String>,
}

impl ExportRequestArgs {
    pub fn parse(self) -> Result<ExportRequest, Error> {
        Ok(ExportRequest {
            from_ms: parse_time(&self.from)?,
            to_ms: parse_time(&self.to)?,
            cameras: self.cameras,
            name: self.name,
            description: self.description,
            recipients: self
                .recipients
                .iter()
                .map(|r| {
                    r.parse::<age::x25519::Recipient>().map_err(|e| {
                        Error::invalid_input(format!(
                            "recipient '{r}' is not an age X25519 public key (age1...): {e}"
                        ))
                    })
                })
                .collect::<Result<_, _>>()?,
        })
    }
}

pub struct Identity<'a> {
    pub device_id: &'a str,
    pub firmware: &'a str,
    pub key: &'a SigningKey,
    /// Filter each camera's footage was recorded with, by camera id.
    pub filters: &'a dyn Fn(&str) -> String,
}

fn rfc3339(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| t.to_string())
        .unwrap_or_else(|_| ms.to_string())
}

/// Parses an RFC 3339 time (`2026-11-23T10:00:00Z`) to ms since the epoch.
pub fn parse_time(text: &str) -> Result<i64, Error> {
    text.parse::<jiff::Timestamp>()
        .map(|t| t.as_millisecond())
        .map_err(|e| {
            Error::invalid_input(format!(
                "'{text}' is not an RFC 3339 time such as 2026-11-23T10:00:00Z: {e}"
            ))
        })
}

/// The device's signing key, created on first use (`state/device-ed25519.key`, mode 0600).
pub fn device_key(state_dir: &Path) -> Result<SigningKey, Error> {
    let path = state_dir.join("device-ed25519.key");
    match std::fs::read(&path) {
        Ok(bytes) => {
            let seed: [u8; 32] = bytes.try_into().map_err(|_| {
                Error::invalid_input(format!(
                    "{} is not a 32-byte Ed25519 key: restore it from backup (exports signed \
                     with it can only be verified against its public key)",
                    path.display()
                ))
            })?;
            Ok(SigningKey::from_bytes(&seed))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut seed = [0u8; 32];
            std::fs::File::open("/dev/urandom")
                .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut seed))
                .map_err(|e| Error::wrap(ErrorKind::Internal, "cannot read /dev/urandom", e))?;
            std::fs::create_dir_all(state_dir)
                .map_err(|e| Error::wrap(ErrorKind::Internal, "cannot create the state dir", e))?;
            let tmp = path.with_extension("tmp");
            {
                use std::os::unix::fs::OpenOptionsExt;
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .mode(0o600)
                    .open(&tmp)
                    .map_err(|e| Error::wrap(ErrorKind::Internal, "cannot write the key", e))?;
                f.write_all(&seed)
                    .and_then(|_| f.sync_all())
                    .map_err(|e| Error::wrap(ErrorKind::Internal, "cannot write the key", e))?;
            }
            std::fs::rename(&tmp, &path)
                .map_err(|e| Error::wrap(ErrorKind::Internal, "cannot write the key", e))?;
            Ok(SigningKey::from_bytes(&seed))
        }
        Err(e) => Err(Error::wrap(
            ErrorKind::Internal,
            format!("cannot read {}", path.display()),
            e,
        )),
    }
}

/// The bytes a manifest's signature covers: the manifest without its `signature`, as compact
/// JSON with keys sorted.
fn signed_bytes(manifest: &Value) -> Vec<u8> {
    let mut m = manifest.clone();
    if let Some(o) = m.as_object_mut() {
        o.remove("signature");
    }
    serde_json::to_vec(&m).expect("JSON values serialize")
}

/// One MP4 file being written.
struct Mp4File {
    writer: mp4::Mp4Writer<std::io::BufWriter<std::fs::File>>,
    path: PathBuf,
    first_ms: i64,
    last_ms: i64,
    frames: u64,
    pending: Option<(i64, bool, Vec<u8>)>,
}

fn avcc(annexb: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(annexb.len() + 16);
    for nal in nal_units(annexb) {
        // Parameter sets live in the sample description, not in the samples.
        if matches!(nal_unit_type(nal), 7..=9) {
            continue;
        }
        out.extend_from_slice(&(nal.len() as u32).to_be_bytes());
        out.extend_from_slice(nal);
    }
    out
}

fn mp4_err(path: &Path) -> impl FnOnce(mp4::Error) -> Error + '_ {
    move |e| Error::internal(format!("cannot write MP4 {}: {e}", path.display()))
}

impl Mp4File {
    fn create(path: PathBuf, keyframe: &[u8]) -> Result<Mp4File, Error> {
        let (mut sps, mut pps) = (None, None);
        for nal in nal_units(keyframe) {
            match nal_unit_type(nal) {
                7 => sps = Some(nal.to_vec()),
                8 => pps = Some(nal.to_vec()),
                _ => {}
            }
        }
        let (Some(sps), Some(pps)) = (sps, pps) else {
            return Err(Error::internal(format!(
                "{}: the keyframe carries no SPS/PPS",
                path.display()
            )));
        };
        let mut decoder = Openh264Decoder::new()?;
        let picture = match decoder.decode(keyframe)? {
            Some(p) => p,
            None => decoder
                .flush()?
                .into_iter()
                .next()
                .ok_or_else(|| Error::internal("the first keyframe does not decode"))?,
        };
        let file = std::fs::File::create(&path).map_err(|e| {
            Error::wrap(
                ErrorKind::Internal,
                format!("cannot create {}", path.display()),
                e,
            )
        })?;
        let config = mp4::Mp4Config {
            major_brand: "isom".parse().expect("fourcc"),
            minor_version: 512,
            compatible_brands: ["isom", "iso2", "avc1", "mp41"]
                .iter()
                .map(|b| b.parse().expect("fourcc"))
                .collect(),
            timescale: TIMESCALE,
        };
        let mut writer = mp4::Mp4Writer::write_start(std::io::BufWriter::new(file), &config)
            .map_err(mp4_err(&path))?;
        writer
            .add_track(&mp4::TrackConfig {
                track_type: mp4::TrackType::Video,
                timescale: TIMESCALE,
                language: "und".into(),
                media_conf: mp4::MediaConfig::AvcConfig(mp4::AvcConfig {
                    width: picture.width() as u16,
                    height: picture.height() as u16,
                    seq_param_set: sps,
                    pic_param_set: pps,
                }),
            })
            .map_err(mp4_err(&path))?;
        Ok(Mp4File {
            writer,
            path,
            first_ms: 0,
            last_ms: 0,
            frames: 0,
            pending: None,
        })
    }

    /// Adds a frame; each sample is written when the next one gives its duration.
    fn push(&mut self, at: i64, keyframe: bool, data: &[u8]) -> Result<(), Error> {
        if let Some((t, k, d)) = self.pending.take() {
            self.write(t, k, d, (at - t).max(1) as u32)?;
        } else {
            self.first_ms = at;
        }
        self.pending = Some((at, keyframe, avcc(data)));
        self.last_ms = at;
        Ok(())
    }

    fn write(
        &mut self,
        at: i64,
        keyframe: bool,
        data: Vec<u8>,
        duration: u32,
    ) -> Result<(), Error> {
        let sample = mp4::Mp4Sample {
            start_time: (at - self.first_ms) as u64,
            duration,
            rendering_offset: 0,
            is_sync: keyframe,
            bytes: bytes::Bytes::from(data),
        };
        self.writer
            .write_sample(1, &sample)
            .map_err(mp4_err(&self.path))?;
        self.frames += 1;
        Ok(())
    }

    /// Finishes the file; the last frame lasts `last_duration` ms. Returns its entry for the
    /// manifest.
    fn finish(mut self, last_duration: u32) -> Result<Value, Error> {
        if let Some((t, k, d)) = self.pending.take() {
            self.write(t, k, d, last_duration)?;
        }
        self.writer.write_end().map_err(mp4_err(&self.path))?;
        let mut inner = self.writer.into_writer();
        inner.flush().map_err(|e| {
            Error::wrap(
                ErrorKind::Internal,
                format!("cannot write {}", self.path.display()),
                e,
            )
        })?;
        let file = inner
            .into_inner()
            .map_err(|e| Error::internal(format!("cannot write {}: {e}", self.path.display())))?;
        file.sync_all().map_err(|e| {
            Error::wrap(
                ErrorKind::Internal,
                format!("cannot sync {}", self.path.display()),
                e,
            )
        })?;
        let (sha, size) = sha256_file(&self.path)?;
        Ok(json!({
            "file": self.path.file_name().map(|n| n.to_string_lossy().into_owned()),
            "sha256": sha,
            "bytes": size,
            "frames": self.frames,
            "from": rfc3339(self.first_ms),
            "to": rfc3339(self.last_ms + last_duration as i64),
        }))
    }
}

fn sha256_file(path: &Path) -> Result<(String, u64), Error> {
    let mut f = std::fs::File::open(path).map_err(|e| {
        Error::wrap(
            ErrorKind::Internal,
            format!("cannot read {}", path.display()),
            e,
        )
    })?;
    let mut h = Sha256::new();
    let n = std::io::copy(&mut f, &mut h).map_err(|e| {
        Error::wrap(
            ErrorKind::Internal,
            format!("cannot read {}", path.display()),
            e,
        )
    })?;
    Ok((hex::encode(h.finalize()), n))
}

/// Replaces a finished file by its age encryption to `recipients` (`NAME.age`), updating its
/// manifest entry: size and SHA-256 of what is on disk, and of the plaintext.
fn encrypt_file(
    dir: &Path,
    entry: &mut Value,
    recipients: &[age::x25519::Recipient],
) -> Result<(), Error> {
    let name = entry["file"].as_str().unwrap_or_default().to_string();
    let (plain, sealed) = (dir.join(&name), dir.join(format!("{name}.age")));
    let fail = |e: &dyn std::fmt::Display| {
        Error::internal(format!("cannot encrypt {}: {e}", plain.display()))
    };
    let encryptor =
        age::Encryptor::with_recipients(recipients.iter().map(|r| r as &dyn age::Recipient))
            .map_err(|e| fail(&e))?;
    let out = std::fs::File::create(&sealed).map_err(|e| fail(&e))?;
    let mut writer = encryptor
        .wrap_output(std::io::BufWriter::new(out))
        .map_err(|e| fail(&e))?;
    let mut input = std::fs::File::open(&plain).map_err(|e| fail(&e))?;
    std::io::copy(&mut input, &mut writer).map_err(|e| fail(&e))?;
    let mut inner = writer.finish().map_err(|e| fail(&e))?;
    inner.flush().map_err(|e| fail(&e))?;
    inner
        .into_inner()
        .map_err(|e| fail(&e))?
        .sync_all()
        .map_err(|e| fail(&e))?;
    std::fs::remove_file(&plain).map_err(|e| fail(&e))?;
    let (sha, size) = sha256_file(&sealed)?;
    entry["plaintext_sha256"] = entry["sha256"].take();
    entry["plaintext_bytes"] = entry["bytes"].take();
    entry["file"] = json!(format!("{name}.age"));
    entry["sha256"] = json!(sha);
    entry["bytes"] = json!(size);
    entry["encryption"] = json!("age-x25519");
    Ok(())
}

/// Writes the export into `out` (created; must be empty) and returns its signed manifest.
pub fn export(
    store: &Store,
    request: &ExportRequest,
    out: &Path,
    identity: &Identity,
) -> Result<Value, Error> {
    let (from, to) = (request.from_ms, request.to_ms);
    if from >= to {
        return Err(Error::invalid_input(format!(
            "the export range is empty or reversed: {} is not before {}",
            rfc3339(from),
            rfc3339(to)
        )));
    }
    if to - from >= MAX_RANGE_MS {
        return Err(Error::invalid_input(
            "Export range must be shorter than 1 day",
        ));
    }
    if request.cameras.is_empty() {
        return Err(Error::invalid_input("name at least one camera to export"));
    }
    std::fs::create_dir_all(out).map_err(|e| {
        Error::wrap(
            ErrorKind::Internal,
            format!("cannot create {}", out.display()),
            e,
        )
    })?;
    if std::fs::read_dir(out)
        .map(|mut d| d.next().is_some())
        .unwrap_or(false)
    {
        return Err(Error::new(
            ErrorKind::Conflict,
            format!(
                "{} is not empty: export into a new directory",
                out.display()
            ),
        ));
    }
    // Hold the range while exporting, so retention cannot evict it halfway.
    let hold_id = format!(
        "export-{}-{}",
        std::process::id(),
        jiff::Timestamp::now().as_millisecond()
    );
    for camera in &request.cameras {
        store.hold(&veil_store::retention::Hold {
            id: format!("{hold_id}-{camera}"),
            camera: camera.clone(),
            from_ms: from,
            to_ms: to,
            reason: format!("export to {}", out.display()),
        })?;
    }
    let result = export_held(store, request, out, identity);
    for camera in &request.cameras {
        if let Err(e) = store.release(&format!("{hold_id}-{camera}")) {
            tracing::warn!(error = %e, "cannot release the export's hold");
        }
    }
    result
}

fn export_held(
    store: &Store,
    request: &ExportRequest,
    out: &Path,
    identity: &Identity,
) -> Result<Value, Error> {
    let (from, to) = (request.from_ms, request.to_ms);
    let mut cameras = Vec::new();
    for camera in &request.cameras {
        let coverage = store.coverage(camera, from, to)?;
        if coverage.segments.is_empty() {
            return Err(Error::not_found(format!(
                "no footage of camera '{camera}' between {} and {}",
                rfc3339(from),
                rfc3339(to)
            )));
        }
        let mut files: Vec<Value> = Vec::new();
        let mut current: Option<Mp4File> = None;
        let mut last_gap = 40u32;
        let (mut actual_from, mut actual_to) = (i64::MAX, i64::MIN);
        let mut previous_ms: Option<i64> = None;
        store.read(camera, from, to, |f| {
            if let Some(p) = previous_ms {
                last_gap = (f.wall_ms - p).clamp(1, 1000) as u32;
            }
            previous_ms = Some(f.wall_ms);
            let full = current
                .as_ref()
                .is_some_and(|c| f.keyframe && f.wall_ms - c.first_ms >= MAX_FILE_MS - 60_000);
            // A jump in the footage (a gap) also starts a new file, at the next keyframe.
            let jumped = current
                .as_ref()
                .is_some_and(|c| f.keyframe && f.wall_ms - c.last_ms > 5_000);
            if full || jumped {
                let done = current.take().expect("checked");
                files.push(done.finish(last_gap)?);
            }
            if current.is_none() {
                if !f.keyframe {
                    return Ok(());
                }
                let name = format!("{camera}-{:03}.mp4", files.len() + 1);
                current = Some(Mp4File::create(out.join(name), &f.data)?);
            }
            actual_from = actual_from.min(f.wall_ms);
            actual_to = actual_to.max(f.wall_ms);
            current
                .as_mut()
                .expect("opened")
                .push(f.wall_ms, f.keyframe, &f.data)
        })?;
        if let Some(c) = current.take() {
            files.push(c.finish(last_gap)?);
        }
        if !request.recipients.is_empty() {
            for entry in &mut files {
                encrypt_file(out, entry, &request.recipients)?;
            }
        }
        cameras.push(json!({
            "id": camera,
            "filter": (identity.filters)(camera),
            "actual": { "from": rfc3339(actual_from), "to": rfc3339(actual_to + last_gap as i64) },
            "gaps": coverage.gaps.iter().map(|(a, b)| json!({"from": rfc3339(*a), "to": rfc3339(*b)})).collect::<Vec<_>>(),
            "files": files,
        }));
    }
    let mut manifest = json!({
        "format": "veil-export/1",
        "device_id": identity.device_id,
        "firmware_version": identity.firmware,
        "created_at": jiff::Timestamp::now().to_string(),
        "name": request.name,
        "description": request.description,
        "requested": { "from": rfc3339(from), "to": rfc3339(to) },
        "encrypted_to": request.recipients.iter().map(|r| r.to_string()).collect::<Vec<_>>(),
        "cameras": cameras,
    });
    let signature = identity.key.sign(&signed_bytes(&manifest));
    manifest["signature"] = json!({
        "algorithm": "ed25519",
        "public_key": hex::encode(identity.key.verifying_key().to_bytes()),
        "value": hex::encode(signature.to_bytes()),
    });
    let path = out.join("manifest.json");
    let text = serde_json::to_string_pretty(&manifest).expect("JSON values serialize");
    std::fs::write(&path, text + "\n").map_err(|e| {
        Error::wrap(
            ErrorKind::Internal,
            format!("cannot write {}", path.display()),
            e,
        )
    })?;
    Ok(manifest)
}

/// Checks an export directory: the signature over the manifest, and every file's size and
/// SHA-256. `trusted_key` (hex) pins the device key; without it the manifest's own key is
/// used and reported, to be compared with the device's.
pub fn verify(dir: &Path, trusted_key: Option<&str>) -> Result<Value, Error> {
    let path = dir.join("manifest.json");
    let text = std::fs::read_to_string(&path).map_err(|e| {
        Error::new(
            ErrorKind::NotFound,
            format!("{}: cannot read: {e}", path.display()),
        )
    })?;
    let manifest: Value = serde_json::from_str(&text)
        .map_err(|e| Error::invalid_input(format!("{}: not JSON: {e}", path.display())))?;
    let sig = &manifest["signature"];
    let field = |name: &str| {
        sig[name].as_str().ok_or_else(|| {
            Error::invalid_input(format!("{}: signature.{name} is missing", path.display()))
        })
    };
    if field("algorithm")? != "ed25519" {
        return Err(Error::invalid_input("only ed25519 signatures are known"));
    }
    let key_hex = field("public_key")?;
    if let Some(trusted) = trusted_key
        && !trusted.eq_ignore_ascii_case(key_hex)
    {
        return Err(Error::new(
            ErrorKind::PermissionDenied,
            format!("signed by key {key_hex}, not by the trusted key {trusted}"),
        ));
    }
    let bad = |what: &str| Error::invalid_input(format!("{}: {what}", path.display()));
    let key_bytes: [u8; 32] = hex::decode(key_hex)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| bad("public key is not 32 bytes of hex"))?;
    let sig_bytes: [u8; 64] = hex::decode(field("value")?)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| bad("signature is not 64 bytes of hex"))?;
    let key = VerifyingKey::from_bytes(&key_bytes).map_err(|_| bad("public key is invalid"))?;
    key.verify(&signed_bytes(&manifest), &Signature::from_bytes(&sig_bytes))
        .map_err(|_| {
            Error::new(
                ErrorKind::PermissionDenied,
                format!(
                    "{}: the signature does not match: the manifest was altered",
                    path.display()
                ),
            )
        })?;
    let mut checked = 0;
    for cam in manifest["cameras"].as_array().into_iter().flatten() {
        for f in cam["files"].as_array().into_iter().flatten() {
            let name = f["file"]
                .as_str()
                .ok_or_else(|| bad("a file entry has no name"))?;
            if name.contains('/') || name.starts_with('.') {
                return Err(bad(&format!("file name '{name}' is not a plain name")));
            }
            let (sha, size) = sha256_file(&dir.join(name))
                .map_err(|e| Error::new(ErrorKind::NotFound, format!("{name}: {}", e.message())))?;
            if Some(size) != f["bytes"].as_u64() || Some(sha.as_str()) != f["sha256"].as_str() {
                return Err(Error::new(
                    ErrorKind::PermissionDenied,
                    format!("{name}: content does not match the manifest (altered or damaged)"),
                ));
            }
            checked += 1;
        }
    }
    Ok(json!({
        "valid": true,
        "device_id": manifest["device_id"],
        "public_key": key_hex,
        "files_checked": checked,
    }))
}
