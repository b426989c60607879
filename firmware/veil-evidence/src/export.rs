//! Evidence exports: a time range of one or more cameras' footage as MP4 files (at most 60
//! minutes each) with a `manifest.json` signed by the device's Ed25519 key, and the check of
//! such a directory (`veild verify-export`).

use std::io::Write;
use std::path::{Path, PathBuf};

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use veil_core::config::FilterName;
use veil_core::{Error, ErrorKind};
use veil_media::h264::annexb::{avcc_to_annexb, nal_unit_type, nal_units};
use veil_media::h264::{EncoderSettings, Openh264Decoder, Openh264Encoder, VideoEncoder};
use veil_privacy::Engine;
use veil_store::{SampleFormat, SegmentLayout, Store, StoredFrame};

use crate::remux::{Piece, TIMESCALE};

/// Longest export (the request workflow asks for ranges, not archives).
const MAX_RANGE_MS: i64 = 24 * 3600 * 1000;
/// Longest file in an export.
const MAX_FILE_MS: i64 = 3600 * 1000;
/// A pause longer than this between frames starts a new file (at the next keyframe).
const MAX_JUMP_MS: i64 = 5_000;

/// The frames of one output file so far: when a new file must start.
#[derive(Debug, Clone, Copy)]
struct FileSpan {
    first_ms: i64,
    last_ms: i64,
    /// The last frame's distance from the one before (the last frame's duration, unknown
    /// otherwise).
    last_delta: u32,
}

impl FileSpan {
    fn new(at: i64) -> FileSpan {
        FileSpan {
            first_ms: at,
            last_ms: at,
            last_delta: 40,
        }
    }

    /// Whether a frame at `at` starts a new file: at a keyframe, once the file nears 60
    /// minutes or after a jump in the footage.
    fn ends_before(&self, at: i64, keyframe: bool) -> bool {
        keyframe && (at - self.first_ms >= MAX_FILE_MS - 60_000 || at - self.last_ms > MAX_JUMP_MS)
    }

    fn add(&mut self, at: i64) {
        if at > self.last_ms {
            self.last_delta = (at - self.last_ms).clamp(1, 1000) as u32;
        }
        self.last_ms = at;
    }
}

/// One camera over one range, exported into files named `<label>-NNN.mp4`.
#[derive(Debug, Clone, PartialEq)]
pub struct Stretch {
    pub camera: String,
    pub from_ms: i64,
    pub to_ms: i64,
    pub label: String,
}

/// A file an export carries besides video (an incident's report and data), listed in the
/// manifest with its hash, so the signature covers it.
#[derive(Debug, Clone, PartialEq)]
pub struct Attachment {
    pub name: String,
    pub content_type: String,
    pub bytes: Vec<u8>,
}

pub struct ExportRequest {
    pub cameras: Vec<String>,
    pub from_ms: i64,
    pub to_ms: i64,
    pub name: Option<String>,
    pub description: Option<String>,
    /// age (X25519) recipients every video file is encrypted to; none: plain files.
    pub recipients: Vec<age::x25519::Recipient>,
    /// The filter the recipient is entitled to: kept originals are anonymized with it, and
    /// anonymized footage recorded with another filter is anonymized again with it on top.
    /// None: each camera's configured filter.
    pub filter: Option<FilterName>,
    /// Stretches of footage each with its own camera and range (an incident's sequences);
    /// empty: every camera over `from_ms..to_ms`.
    pub stretches: Vec<Stretch>,
    pub attachments: Vec<Attachment>,
}

impl ExportRequest {
    /// What footage the export holds: the stretches, or each camera over the range.
    pub fn stretches(&self) -> Vec<Stretch> {
        if !self.stretches.is_empty() {
            return self.stretches.clone();
        }
        self.cameras
            .iter()
            .map(|c| Stretch {
                camera: c.clone(),
                from_ms: self.from_ms,
                to_ms: self.to_ms,
                label: c.clone(),
            })
            .collect()
    }
}

/// The export command's arguments before parsing.
pub struct ExportRequestArgs {
    pub cameras: Vec<String>,
    pub from: String,
    pub to: String,
    pub name: Option<String>,
    pub description: Option<String>,
    pub recipients: Vec<String>,
    pub filter: Option<String>,
}

impl ExportRequestArgs {
    pub fn parse(self) -> Result<ExportRequest, Error> {
        let filter = match &self.filter {
            None => None,
            Some(name) => Some(parse_filter(name)?),
        };
        Ok(ExportRequest {
            filter,
            stretches: Vec::new(),
            attachments: Vec::new(),
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

/// The filter preset named `name` (as in the configuration).
pub fn parse_filter(name: &str) -> Result<FilterName, Error> {
    serde_json::from_value(json!(name)).map_err(|_| {
        Error::invalid_input(format!(
            "unknown filter '{name}': use faces-plates, strict, faces, motion, silhouette or \
             masks-only"
        ))
    })
}

/// Makes the privacy engine that anonymizes a camera's footage again with a filter.
pub type EngineFactory<'a> = dyn Fn(&str, FilterName) -> Result<Engine, Error> + 'a;

pub struct Identity<'a> {
    pub device_id: &'a str,
    pub firmware: &'a str,
    pub key: &'a SigningKey,
    /// Each camera's configured filter, by camera id (None: not configured any more).
    pub filters: &'a dyn Fn(&str) -> Option<FilterName>,
    pub engines: &'a EngineFactory<'a>,
    pub watch: Watch<'a>,
}

/// Who follows an export: told how far it is (0 to 1, by footage time covered), and able to
/// stop it between two frames (a job canceled while it runs).
#[derive(Clone, Copy)]
pub struct Watch<'a> {
    pub progress: &'a (dyn Fn(f64) + Sync),
    pub cancel: &'a std::sync::atomic::AtomicBool,
}

static NEVER: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn ignore(_: f64) {}

impl Watch<'static> {
    /// Nobody follows: the export runs to its end.
    pub fn none() -> Watch<'static> {
        Watch {
            progress: &ignore,
            cancel: &NEVER,
        }
    }
}

impl Watch<'_> {
    /// Camera `index` of `cameras` has covered footage up to `at_ms` of `from..to`.
    fn at(
        &self,
        index: usize,
        cameras: usize,
        at_ms: i64,
        from: i64,
        to: i64,
    ) -> Result<(), Error> {
        if self.cancel.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(Error::new(ErrorKind::Conflict, "the export was canceled"));
        }
        let within = (at_ms - from) as f64 / (to - from).max(1) as f64;
        (self.progress)((index as f64 + within.clamp(0.0, 1.0)) / cameras.max(1) as f64);
        Ok(())
    }
}

pub(crate) use veil_uplink::command::rfc3339;

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
    let seed = crate::keystore::secret(
        state_dir,
        "device-ed25519.key",
        "exports signed with it can only be verified against its public key",
    )?;
    Ok(SigningKey::from_bytes(&seed))
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
        let name = self
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        Ok(file_entry(
            &name,
            sha,
            size,
            self.frames,
            self.first_ms,
            self.last_ms + last_duration as i64,
        ))
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
    if request.cameras.is_empty() && request.stretches.is_empty() {
        return Err(Error::invalid_input("name at least one camera to export"));
    }
    for s in request.stretches() {
        let (from, to) = (s.from_ms, s.to_ms);
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
        if s.label.is_empty() || s.label.contains('/') || s.label.starts_with('.') {
            return Err(Error::invalid_input(format!(
                "'{}' cannot name export files",
                s.label
            )));
        }
    }
    for a in &request.attachments {
        if a.name.is_empty()
            || a.name.contains('/')
            || a.name.starts_with('.')
            || a.name == "manifest.json"
        {
            return Err(Error::invalid_input(format!(
                "'{}' cannot name an attachment",
                a.name
            )));
        }
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
    // Hold the footage while exporting, so retention cannot evict it halfway.
    let hold_id = format!(
        "export-{}-{}",
        std::process::id(),
        jiff::Timestamp::now().as_millisecond()
    );
    let stretches = request.stretches();
    for (i, s) in stretches.iter().enumerate() {
        store.hold(&veil_store::retention::Hold {
            id: format!("{hold_id}-{i}"),
            camera: s.camera.clone(),
            from_ms: s.from_ms,
            to_ms: s.to_ms,
            reason: format!("export to {}", out.display()),
        })?;
    }
    let result = export_held(store, request, out, identity);
    for i in 0..stretches.len() {
        if let Err(e) = store.release(&format!("{hold_id}-{i}")) {
            tracing::warn!(error = %e, "cannot release the export's hold");
        }
    }
    if result.is_err() {
        // The directory was empty: a half export (a full disk, a read error) must not stay
        // behind looking like evidence, nor block the next try.
        if let Ok(entries) = std::fs::read_dir(out) {
            for entry in entries.flatten() {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
    result.map_err(|e| {
        if disk_full(&e) {
            Error::new(
                ErrorKind::ResourceExhausted,
                format!(
                    "{} is full: {e}; nothing of the export was kept",
                    out.display()
                ),
            )
        } else {
            e
        }
    })
}

/// Whether an ENOSPC is somewhere in the error's chain.
fn disk_full(e: &Error) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        if c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::StorageFull)
        {
            return true;
        }
        cause = c.source();
    }
    e.message().contains("No space left on device")
}

fn export_held(
    store: &Store,
    request: &ExportRequest,
    out: &Path,
    identity: &Identity,
) -> Result<Value, Error> {
    let stretches = request.stretches();
    let from = stretches
        .iter()
        .map(|s| s.from_ms)
        .min()
        .unwrap_or(request.from_ms);
    let to = stretches
        .iter()
        .map(|s| s.to_ms)
        .max()
        .unwrap_or(request.to_ms);
    let mut cameras = Vec::new();
    for (i, s) in stretches.iter().enumerate() {
        let at = |ms: i64| {
            identity
                .watch
                .at(i, stretches.len(), ms, s.from_ms, s.to_ms)
        };
        cameras.push(export_camera(store, request, out, identity, s, &at)?);
    }
    let mut attachments = Vec::new();
    for a in &request.attachments {
        let path = out.join(&a.name);
        std::fs::write(&path, &a.bytes).map_err(|e| {
            Error::wrap(
                ErrorKind::Internal,
                format!("cannot write {}", path.display()),
                e,
            )
        })?;
        let mut entry = json!({
            "file": a.name,
            "content_type": a.content_type,
            "sha256": hex::encode(Sha256::digest(&a.bytes)),
            "bytes": a.bytes.len(),
        });
        if !request.recipients.is_empty() {
            encrypt_file(out, &mut entry, &request.recipients)?;
        }
        attachments.push(entry);
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
    if !attachments.is_empty() {
        manifest["attachments"] = json!(attachments);
    }
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

/// Parses a manifest, refusing a key that appears twice in one object: the signature covers
/// the parsed value (the last of the two), and another reader taking the first would see
/// content no one signed.
fn strict_json(text: &str) -> Result<Value, String> {
    use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
    struct Strict;
    impl<'de> DeserializeSeed<'de> for Strict {
        type Value = Value;
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
            d.deserialize_any(self)
        }
    }
    impl<'de> Visitor<'de> for Strict {
        type Value = Value;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("JSON")
        }
        fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
            Ok(Value::Bool(v))
        }
        fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
            Ok(Value::from(v))
        }
        fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
            Ok(Value::from(v))
        }
        fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
            Ok(Value::from(v))
        }
        fn visit_str<E>(self, v: &str) -> Result<Value, E> {
            Ok(Value::String(v.to_string()))
        }
        fn visit_unit<E>(self) -> Result<Value, E> {
            Ok(Value::Null)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
            let mut items = Vec::new();
            while let Some(v) = seq.next_element_seed(Strict)? {
                items.push(v);
            }
            Ok(Value::Array(items))
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
            let mut object = serde_json::Map::new();
            while let Some(key) = map.next_key::<String>()? {
                let value = map.next_value_seed(Strict)?;
                if object.insert(key.clone(), value).is_some() {
                    return Err(serde::de::Error::custom(format!(
                        "key '{key}' appears twice in one object"
                    )));
                }
            }
            Ok(Value::Object(object))
        }
    }
    let mut de = serde_json::Deserializer::from_str(text);
    let value = Strict
        .deserialize(&mut de)
        .and_then(|v| de.end().map(|_| v))
        .map_err(|e| format!("not a valid manifest: {e}"))?;
    Ok(value)
}

/// A file's manifest entry.
fn file_entry(name: &str, sha256: String, bytes: u64, frames: u64, from: i64, to: i64) -> Value {
    json!({
        "file": name,
        "sha256": sha256,
        "bytes": bytes,
        "frames": frames,
        "from": rfc3339(from),
        "to": rfc3339(to),
    })
}

/// A stored frame as an Annex B access unit.
fn annexb_of(frame: &StoredFrame) -> Result<std::borrow::Cow<'_, [u8]>, Error> {
    match frame.format {
        SampleFormat::AnnexB => Ok(std::borrow::Cow::Borrowed(&frame.data)),
        SampleFormat::Avcc => {
            let mut out = Vec::with_capacity(frame.data.len() + 16);
            avcc_to_annexb(&frame.data, 4, &mut out).map_err(|e| {
                Error::internal(format!(
                    "stored frame at {} is damaged: {e}",
                    rfc3339(frame.wall_ms)
                ))
            })?;
            Ok(std::borrow::Cow::Owned(out))
        }
    }
}

/// Exports one camera's footage over the request's range; returns its manifest entry.
fn export_camera(
    store: &Store,
    request: &ExportRequest,
    out: &Path,
    identity: &Identity,
    stretch: &Stretch,
    at: &dyn Fn(i64) -> Result<(), Error>,
) -> Result<Value, Error> {
    let camera = stretch.camera.as_str();
    let (from, to) = (stretch.from_ms, stretch.to_ms);
    let (coverage, layouts) = store.layout(camera, from, to)?;
    if layouts.iter().all(|l| l.samples.is_empty()) {
        return Err(Error::not_found(format!(
            "no footage of camera '{camera}' between {} and {}",
            rfc3339(from),
            rfc3339(to)
        )));
    }
    let configured = (identity.filters)(camera);
    let originals = layouts.iter().any(|l| l.segment.sealed);
    // Anonymized footage leaves as recorded unless the recipient's filter differs.
    let reanonymize = originals || (request.filter.is_some() && request.filter != configured);
    let filter = request.filter.or(configured);
    let mut files = Vec::new();
    let (mut actual_from, mut actual_to) = (i64::MAX, i64::MIN);
    if !reanonymize
        && layouts
            .iter()
            .all(|l| l.segment.format == SampleFormat::Avcc)
    {
        remux_camera(
            out,
            &stretch.label,
            &layouts,
            &mut files,
            &mut actual_from,
            &mut actual_to,
            at,
        )?;
    } else {
        let mut writer = FileWriter {
            out,
            camera: &stretch.label,
            files: &mut files,
            current: None,
            actual: (i64::MAX, i64::MIN),
        };
        if reanonymize {
            let filter = filter.ok_or_else(|| {
                Error::invalid_input(format!(
                    "camera '{camera}' is no longer configured: name the filter to anonymize \
                     its footage with (--filter)"
                ))
            })?;
            let mut again = Reanonymizer::new((identity.engines)(camera, filter)?, &layouts)?;
            store.read(camera, from, to, |f| {
                at(f.wall_ms)?;
                again.frame(&f, &mut writer)
            })?;
        } else {
            store.read(camera, from, to, |f| {
                at(f.wall_ms)?;
                writer.frame(f.wall_ms, f.keyframe, &annexb_of(&f)?)
            })?;
        }
        (actual_from, actual_to) = writer.finish()?;
    }
    if !request.recipients.is_empty() {
        for entry in &mut files {
            encrypt_file(out, entry, &request.recipients)?;
        }
    }
    Ok(json!({
        "id": camera,
        "requested": { "from": rfc3339(from), "to": rfc3339(to) },
        "filter": filter.map(FilterName::as_str).unwrap_or("unknown"),
        "source": if originals { "originals, anonymized on export" } else if reanonymize { "anonymized, anonymized again on export" } else { "anonymized as recorded" },
        "actual": { "from": rfc3339(actual_from), "to": rfc3339(actual_to) },
        "gaps": coverage.gaps.iter().map(|(a, b)| json!({"from": rfc3339(*a), "to": rfc3339(*b)})).collect::<Vec<_>>(),
        "files": files,
    }))
}

/// Exports AVCC footage by copying the stored samples into MP4 files (see `remux`).
fn remux_camera(
    out: &Path,
    camera: &str,
    layouts: &[SegmentLayout],
    files: &mut Vec<Value>,
    actual_from: &mut i64,
    actual_to: &mut i64,
    at: &dyn Fn(i64) -> Result<(), Error>,
) -> Result<(), Error> {
    let mut span: Option<FileSpan> = None;
    let mut pieces: Vec<Piece> = Vec::new();
    let mut finish = |pieces: &mut Vec<Piece>, span: FileSpan| -> Result<(), Error> {
        let name = format!("{camera}-{:03}.mp4", files.len() + 1);
        let w = crate::remux::write_mp4(&out.join(&name), pieces, span.last_delta)?;
        *actual_to = (*actual_to).max(w.end_ms);
        at(w.end_ms)?;
        files.push(file_entry(
            &name, w.sha256, w.bytes, w.frames, w.first_ms, w.end_ms,
        ));
        pieces.clear();
        Ok(())
    };
    for layout in layouts {
        for s in &layout.samples {
            if let Some(sp) = span
                && sp.ends_before(s.wall_ms, s.keyframe)
            {
                finish(&mut pieces, sp)?;
                span = None;
            }
            match &mut span {
                None if !s.keyframe => continue,
                None => span = Some(FileSpan::new(s.wall_ms)),
                Some(sp) => sp.add(s.wall_ms),
            }
            if pieces.last().is_none_or(|p| p.path != layout.path) {
                pieces.push(Piece {
                    path: layout.path.clone(),
                    samples: Vec::new(),
                });
            }
            pieces.last_mut().expect("pushed").samples.push(*s);
            *actual_from = (*actual_from).min(s.wall_ms);
        }
    }
    if let Some(sp) = span {
        finish(&mut pieces, sp)?;
    }
    Ok(())
}

/// Writes frames (Annex B) into MP4 files of at most 60 minutes, a new one after a jump.
struct FileWriter<'a> {
    out: &'a Path,
    camera: &'a str,
    files: &'a mut Vec<Value>,
    current: Option<(Mp4File, FileSpan)>,
    actual: (i64, i64),
}

impl FileWriter<'_> {
    fn frame(&mut self, at: i64, keyframe: bool, annexb: &[u8]) -> Result<(), Error> {
        if let Some((_, span)) = &self.current
            && span.ends_before(at, keyframe)
        {
            self.close()?;
        }
        match &mut self.current {
            None if !keyframe => return Ok(()),
            None => {
                let name = format!("{}-{:03}.mp4", self.camera, self.files.len() + 1);
                let file = Mp4File::create(self.out.join(name), annexb)?;
                self.current = Some((file, FileSpan::new(at)));
            }
            Some((_, span)) => span.add(at),
        }
        self.actual.0 = self.actual.0.min(at);
        let (file, _) = self.current.as_mut().expect("opened above");
        file.push(at, keyframe, annexb)
    }

    fn close(&mut self) -> Result<(), Error> {
        if let Some((file, span)) = self.current.take() {
            self.actual.1 = self.actual.1.max(span.last_ms + span.last_delta as i64);
            self.files.push(file.finish(span.last_delta)?);
        }
        Ok(())
    }

    /// Closes the last file; returns the actual range written.
    fn finish(mut self) -> Result<(i64, i64), Error> {
        self.close()?;
        Ok(self.actual)
    }
}

/// How far a detector's newest answer may trail a re-anonymized frame (footage time): about
/// what it trails live.
const REANONYMIZE_LAG: std::time::Duration = std::time::Duration::from_millis(500);
const DETECTOR_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Decodes stored footage, runs it through a privacy engine, and encodes it again. Output
/// keyframes fall where the footage's keyframes were, so files split at the same frames.
struct Reanonymizer {
    decoder: Openh264Decoder,
    engine: Engine,
    encoder: Option<(Openh264Encoder, (u32, u32))>,
    fps: u32,
    origin_ms: Option<i64>,
    seq: u64,
}

impl Reanonymizer {
    fn new(engine: Engine, layouts: &[SegmentLayout]) -> Result<Reanonymizer, Error> {
        // The rate the footage was recorded at sets the encoder's rate control.
        let (frames, ms) = layouts.iter().fold((0u64, 0i64), |(n, t), l| {
            (
                n + l.segment.frames,
                t + (l.segment.end_ms - l.segment.start_ms),
            )
        });
        let fps = if ms > 0 {
            (frames as f64 * 1000.0 / ms as f64).round() as u32
        } else {
            15
        };
        Ok(Reanonymizer {
            decoder: Openh264Decoder::new()?,
            engine,
            encoder: None,
            fps: fps.clamp(1, 60),
            origin_ms: None,
            seq: 0,
        })
    }

    fn frame(&mut self, f: &StoredFrame, sink: &mut FileWriter) -> Result<(), Error> {
        let Some(mut picture) = self.decoder.decode(&annexb_of(f)?)? else {
            // Our encoders emit no reordered frames: no picture means a damaged frame.
            return Ok(());
        };
        let origin = *self.origin_ms.get_or_insert(f.wall_ms);
        picture.meta.capture_mono =
            std::time::Duration::from_millis((f.wall_ms - origin).max(0) as u64);
        picture.meta.capture_wall_ms = f.wall_ms.max(0) as u64;
        picture.meta.seq = self.seq;
        self.seq += 1;
        self.engine
            .process_paced(&mut picture, REANONYMIZE_LAG, DETECTOR_WAIT);
        let size = (picture.width(), picture.height());
        if self.encoder.as_ref().is_none_or(|(_, s)| *s != size) {
            let mut settings = EncoderSettings::for_stream(size.0, size.1, self.fps);
            // Keyframes only where the footage had them (forced below).
            settings.keyframe_interval = self.fps * 3600;
            self.encoder = Some((Openh264Encoder::new(settings)?, size));
        }
        let (encoder, _) = self.encoder.as_mut().expect("set above");
        if let Some(e) = encoder.encode(&picture, f.keyframe)? {
            sink.frame(f.wall_ms, e.keyframe, &e.data)?;
        }
        Ok(())
    }
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
    let manifest =
        strict_json(&text).map_err(|e| Error::invalid_input(format!("{}: {e}", path.display())))?;
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
    let attachments = json!([{ "files": manifest["attachments"] }]);
    for cam in manifest["cameras"]
        .as_array()
        .into_iter()
        .flatten()
        .chain(attachments.as_array().into_iter().flatten())
    {
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

/// `veild verify-export` is what a court's expert runs on evidence: property tests (proptest;
/// `PROPTEST_CASES` raises the count) spoil a signed export (a byte of a file, a file
/// removed, any value of the manifest, a key given twice, the manifest cut short) and check
/// that it is never called valid unless nothing changed, and never panics.
#[cfg(test)]
mod verify_fuzz {
    use proptest::prelude::*;

    use super::*;

    /// A signed export of two files in `dir`, as the exporter lays it out.
    fn export(dir: &Path, seed: u8) -> SigningKey {
        let key = SigningKey::from_bytes(&[seed | 1; 32]);
        let mut files = Vec::new();
        for (name, len) in [("yard-001.mp4", 3000usize), ("report.pdf", 700)] {
            let bytes: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(seed | 3)).collect();
            std::fs::write(dir.join(name), &bytes).unwrap();
            let (sha, size) = sha256_file(&dir.join(name)).unwrap();
            files.push(json!({"file": name, "bytes": size, "sha256": sha}));
        }
        let mut manifest = json!({
            "device_id": "dev1",
            "cameras": [{"camera": "yard", "files": [files[0]]}],
            "attachments": [files[1]],
        });
        let signature = key.sign(&signed_bytes(&manifest));
        manifest["signature"] = json!({
            "algorithm": "ed25519",
            "public_key": hex::encode(key.verifying_key().to_bytes()),
            "value": hex::encode(signature.to_bytes()),
        });
        std::fs::write(
            dir.join("manifest.json"),
            serde_json::to_string_pretty(&manifest).unwrap() + "\n",
        )
        .unwrap();
        key
    }

    #[derive(Debug, Clone)]
    enum Spoil {
        FileByte(bool, usize, u8),
        RemoveFile(bool),
        /// The n-th leaf value of the manifest becomes this.
        Leaf(usize, Value),
        /// A key of the top object given again, first, with another value.
        Twice(usize),
        Cut(usize),
    }

    fn spoil() -> impl Strategy<Value = Spoil> {
        prop_oneof![
            (any::<bool>(), any::<usize>(), 1u8..=255)
                .prop_map(|(a, i, b)| Spoil::FileByte(a, i, b)),
            any::<bool>().prop_map(Spoil::RemoveFile),
            (
                any::<usize>(),
                prop_oneof![
                    Just(Value::Null),
                    any::<i64>().prop_map(Value::from),
                    "[a-f0-9/.]{0,70}".prop_map(Value::String),
                    Just(json!([])),
                ]
            )
                .prop_map(|(i, v)| Spoil::Leaf(i, v)),
            any::<usize>().prop_map(Spoil::Twice),
            any::<usize>().prop_map(Spoil::Cut),
        ]
    }

    fn leaf_count(v: &Value) -> usize {
        match v {
            Value::Object(m) => m.values().map(leaf_count).sum(),
            Value::Array(a) => a.iter().map(leaf_count).sum(),
            _ => 1,
        }
    }

    /// Replaces the `n`-th leaf with `new`; whether that changed it.
    fn replace_leaf(v: &mut Value, n: &mut usize, new: &Value) -> Option<bool> {
        match v {
            Value::Object(m) => m.values_mut().find_map(|x| replace_leaf(x, n, new)),
            Value::Array(a) => a.iter_mut().find_map(|x| replace_leaf(x, n, new)),
            _ if *n == 0 => {
                let changed = v != new;
                *v = new.clone();
                Some(changed)
            }
            _ => {
                *n -= 1;
                None
            }
        }
    }

    /// Spoils the export in `dir`; false when the spoiling changed nothing.
    fn apply(dir: &Path, s: &Spoil) -> bool {
        let file = |first: bool| dir.join(if first { "yard-001.mp4" } else { "report.pdf" });
        let manifest = dir.join("manifest.json");
        let text = std::fs::read_to_string(&manifest).unwrap();
        match s {
            Spoil::FileByte(first, i, b) => {
                let Ok(mut bytes) = std::fs::read(file(*first)) else {
                    return false;
                };
                let at = i % bytes.len();
                bytes[at] ^= b;
                std::fs::write(file(*first), bytes).unwrap();
                true
            }
            Spoil::RemoveFile(first) => std::fs::remove_file(file(*first)).is_ok(),
            Spoil::Leaf(i, v) => {
                let Ok(mut m) = serde_json::from_str::<Value>(&text) else {
                    return false;
                };
                let mut n = i % leaf_count(&m);
                let changed = replace_leaf(&mut m, &mut n, v).unwrap_or(false);
                std::fs::write(&manifest, serde_json::to_string_pretty(&m).unwrap()).unwrap();
                changed
            }
            Spoil::Twice(i) => {
                let Some(m) = serde_json::from_str::<Value>(&text)
                    .ok()
                    .filter(Value::is_object)
                else {
                    return false;
                };
                let keys: Vec<&String> = m.as_object().expect("an object").keys().collect();
                let key = keys[i % keys.len()];
                let spoilt = text.replacen('{', &format!("{{\n  {key:?}: \"forged\","), 1);
                std::fs::write(&manifest, spoilt).unwrap();
                true
            }
            Spoil::Cut(i) => {
                if text.is_empty() {
                    return false;
                }
                let at = i % text.len();
                std::fs::write(&manifest, &text[..at]).unwrap();
                // Only the closing white space cut: the same manifest.
                at < text.trim_end().len()
            }
        }
    }

    #[test]
    fn an_untouched_export_is_valid_and_counts_its_files() {
        let dir = tempfile::tempdir().unwrap();
        let key = export(dir.path(), 7);
        let report = verify(
            dir.path(),
            Some(&hex::encode(key.verifying_key().to_bytes())),
        )
        .unwrap();
        assert_eq!(report["files_checked"], 2, "{report}");
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: veil_faults::proptest_cases(64),
            ..ProptestConfig::default()
        })]

        #[test]
        fn a_spoilt_export_is_never_valid(seed in any::<u8>(), spoils in prop::collection::vec(spoil(), 1..3)) {
            let dir = tempfile::tempdir().unwrap();
            export(dir.path(), seed);
            let mut changed = false;
            for s in &spoils {
                changed |= apply(dir.path(), s);
            }
            let outcome = verify(dir.path(), None);
            if changed {
                prop_assert!(outcome.is_err(), "{spoils:?} still verifies: {outcome:?}");
                let e = outcome.unwrap_err();
                prop_assert!(e.to_string().len() > 10, "vague: {e}");
            }
        }
    }
}
