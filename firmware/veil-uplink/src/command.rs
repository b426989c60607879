//! Commands from the fleet: `<root>/cmd/<name>` with a JSON object carrying a `request_id`.
//! Everything is checked here, before any part of the device sees it; a payload that fails
//! becomes a rejected reply with a machine-readable code and a message naming the field.

use serde::Deserialize;
use serde_json::{Value, json};
use veil_core::{Error, ErrorKind};

/// Largest command payload accepted (a config patch is the biggest legitimate one).
pub const MAX_PAYLOAD: usize = 64 * 1024;

#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// The fleet's id for this request: replies and events carry it back.
    pub id: String,
    pub command: Command,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// The running configuration (secrets shown as `***`).
    ConfigGet,
    /// An RFC 7386 JSON merge patch on the configuration (as `config.get` shows it).
    ConfigPatch {
        patch: serde_json::Map<String, Value>,
    },
    /// A JPEG of a camera's anonymized picture, at most `width` pixels wide.
    Snapshot {
        camera: String,
        width: u32,
    },
    /// The camera's registry thumbnail: the very picture whose hash the registry shows.
    Thumbnail {
        camera: String,
    },
    /// Publish the registry again.
    RegistryGet,
    /// Restart the appliance.
    Reboot,
    /// A video request from an investigator: footage is held at once, the owner decides.
    RequestCreate(VideoRequest),
    /// The owner's decision on a pending request.
    RequestDecide {
        id: String,
        approve: bool,
        reason: Option<String>,
        by: Option<String>,
    },
    RequestCancel {
        id: String,
        reason: Option<String>,
    },
    /// Video requests and export jobs the device knows, newest first.
    RequestList,
    /// An export job ordered directly by the owner's side.
    ExportCreate(ExportJob),
    ExportCancel {
        job_id: String,
    },
    /// Open a live anonymized view session to a WHIP endpoint.
    LiveStart(veil_core::live::StartRequest),
    /// End one, as its consumer or as the owner's operator.
    LiveStop {
        session_id: String,
        by_owner: bool,
        reason: Option<String>,
    },
    /// Live sessions open and recently ended, with the capacity in use.
    LiveList,
    /// Usage records of ended sessions; `pending`: only those not yet acknowledged.
    LiveUsage {
        pending: bool,
    },
    /// The billing side has stored these records: the device stops sending them.
    LiveUsageAck {
        session_ids: Vec<String>,
    },
    /// A page of incident projects, filtered as on the page.
    IncidentList(veil_incident::ListQuery),
    /// Install a firmware bundle into the other slot and restart into it (one job at a time).
    OtaInstall(veil_core::ota::Order),
    /// The update job running or last ended.
    OtaStatus,
    /// Stop an update job before its install starts.
    OtaCancel {
        job_id: String,
    },
    /// One incident project with everything in it.
    IncidentGet {
        id: i64,
    },
    /// Known commands this firmware does not carry out yet (answered `unavailable`).
    NotYetAvailable(&'static str),
}

/// Commands the API defines but this firmware does not carry out yet.
const PLANNED: &[&str] = &[];

/// Where an investigator's case stands.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaseRef {
    /// `existing`, `new` or `none`.
    pub kind: String,
    #[serde(default)]
    pub reference: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Requester {
    pub name: String,
    #[serde(default)]
    pub organisation: Option<String>,
}

/// A request as the device keeps and shows it. Its range goes out twice: `from`/`to` in
/// RFC 3339, as `request.create` takes it, and `from_ms`/`to_ms` (ms since the epoch) for
/// arithmetic on the page.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct VideoRequest {
    pub id: String,
    pub requester: Requester,
    pub case: CaseRef,
    pub cameras: Vec<String>,
    pub from_ms: i64,
    pub to_ms: i64,
    pub reason: String,
}

/// An export job as the device keeps and shows it; its range goes out twice, as a request's.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ExportJob {
    pub job_id: String,
    pub cameras: Vec<String>,
    pub from_ms: i64,
    pub to_ms: i64,
    pub name: Option<String>,
    pub description: Option<String>,
    pub filter: Option<String>,
    /// Presigned PUT URLs by file name (`<camera>-001.mp4`, ..., `manifest.json`), when the
    /// fleet hands them over instead of the device using its own credentials.
    #[serde(default)]
    pub upload_urls: Option<std::collections::BTreeMap<String, String>>,
    /// An incident project's export: its sequences are the footage, its report and data
    /// travel along (ordered on the device's page, not over MQTT).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incident: Option<IncidentExport>,
}

/// RFC 3339 (UTC) of a time in ms since the epoch.
pub fn rfc3339(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| t.to_string())
        .unwrap_or_else(|_| ms.to_string())
}

impl serde::Serialize for VideoRequest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut m = s.serialize_struct("VideoRequest", 9)?;
        m.serialize_field("id", &self.id)?;
        m.serialize_field("requester", &self.requester)?;
        m.serialize_field("case", &self.case)?;
        m.serialize_field("cameras", &self.cameras)?;
        m.serialize_field("from", &rfc3339(self.from_ms))?;
        m.serialize_field("to", &rfc3339(self.to_ms))?;
        m.serialize_field("from_ms", &self.from_ms)?;
        m.serialize_field("to_ms", &self.to_ms)?;
        m.serialize_field("reason", &self.reason)?;
        m.end()
    }
}

impl serde::Serialize for ExportJob {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut m = s.serialize_struct("ExportJob", 11)?;
        m.serialize_field("job_id", &self.job_id)?;
        m.serialize_field("cameras", &self.cameras)?;
        m.serialize_field("from", &rfc3339(self.from_ms))?;
        m.serialize_field("to", &rfc3339(self.to_ms))?;
        m.serialize_field("from_ms", &self.from_ms)?;
        m.serialize_field("to_ms", &self.to_ms)?;
        m.serialize_field("name", &self.name)?;
        m.serialize_field("description", &self.description)?;
        m.serialize_field("filter", &self.filter)?;
        m.serialize_field("upload_urls", &self.upload_urls)?;
        if let Some(incident) = &self.incident {
            m.serialize_field("incident", incident)?;
        }
        m.end()
    }
}

/// Which project an export job is of, and the case the evidence belongs to.
#[derive(Debug, Clone, PartialEq, serde::Serialize, Deserialize)]
pub struct IncidentExport {
    pub project: i64,
    /// `{"kind": "existing", "reference": …}`, `{"kind": "new"}` or `{"kind": "none"}`.
    pub case: Value,
    /// age X25519 recipients (`age1…`) every file is encrypted to; none: plain files.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recipients: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IncidentGetParams {
    #[allow(dead_code)]
    request_id: String,
    id: i64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigPatchParams {
    #[allow(dead_code)]
    request_id: String,
    patch: serde_json::Map<String, Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RequestCreateParams {
    #[allow(dead_code)]
    request_id: String,
    id: String,
    requester: Requester,
    case: CaseRef,
    cameras: Vec<String>,
    from: String,
    to: String,
    reason: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RequestDecideParams {
    #[allow(dead_code)]
    request_id: String,
    id: String,
    decision: String,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    by: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RequestCancelParams {
    #[allow(dead_code)]
    request_id: String,
    id: String,
    #[serde(default)]
    reason: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExportCreateParams {
    request_id: String,
    #[serde(default)]
    job_id: Option<String>,
    cameras: Vec<String>,
    from: String,
    to: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    filter: Option<String>,
    #[serde(default)]
    upload_urls: Option<std::collections::BTreeMap<String, String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OtaInstallParams {
    #[allow(dead_code)]
    request_id: String,
    job_id: String,
    version: String,
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    s3_key: Option<String>,
    #[serde(default)]
    sha256: Option<String>,
    #[serde(default)]
    reboot: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExportCancelParams {
    #[allow(dead_code)]
    request_id: String,
    job_id: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LiveStartParams {
    #[allow(dead_code)]
    request_id: String,
    session_id: String,
    camera: String,
    consumer: String,
    filter: veil_core::config::FilterName,
    #[serde(default)]
    priority: veil_core::live::Priority,
    max_duration_s: u64,
    endpoint: String,
    token: String,
    #[serde(default)]
    ice_servers: Vec<IceServerParams>,
    #[serde(default)]
    ice_transport_policy: IceTransportPolicy,
}

/// An ICE server as WebRTC's RTCIceServer spells it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IceServerParams {
    urls: OneOrMany,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    credential: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize, Default, PartialEq)]
#[serde(rename_all = "lowercase")]
enum IceTransportPolicy {
    #[default]
    All,
    Relay,
}

/// The ICE servers of a `live.start`, one per URL, checked.
fn ice_servers(
    name: &str,
    servers: Vec<IceServerParams>,
    policy: IceTransportPolicy,
) -> Result<Vec<veil_core::live::IceServerSpec>, Error> {
    if servers.len() > 8 {
        return Err(Error::invalid_input(format!(
            "{name}: field 'ice_servers': at most 8 servers, found {}",
            servers.len()
        )));
    }
    let mut out = Vec::new();
    for (i, server) in servers.into_iter().enumerate() {
        let field = format!("ice_servers[{i}]");
        let urls = match server.urls {
            OneOrMany::One(url) => vec![url],
            OneOrMany::Many(urls) => urls,
        };
        if urls.is_empty() || urls.len() > 8 {
            return Err(Error::invalid_input(format!(
                "{name}: field '{field}.urls': 1 to 8 URLs"
            )));
        }
        for url in urls {
            let lower = url.to_ascii_lowercase();
            let known = ["stun:", "stuns:", "turn:", "turns:"]
                .iter()
                .any(|s| lower.starts_with(s));
            if !known || url.len() > 512 || !url.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(Error::invalid_input(format!(
                    "{name}: field '{field}.urls': '{}' is not a stun:, stuns:, turn: or turns: URL",
                    url.escape_default()
                )));
            }
            let turn = lower.starts_with("turn");
            if turn && (server.username.is_none() || server.credential.is_none()) {
                return Err(Error::invalid_input(format!(
                    "{name}: field '{field}': a TURN server needs 'username' and 'credential'"
                )));
            }
            out.push(veil_core::live::IceServerSpec {
                url,
                username: server.username.clone(),
                credential: server.credential.clone(),
            });
        }
    }
    if policy == IceTransportPolicy::Relay
        && !out
            .iter()
            .any(|s| crate::turn::parse_turn_url(&s.url).is_ok())
    {
        return Err(Error::invalid_input(format!(
            "{name}: field 'ice_transport_policy': \"relay\" needs a turn: server (UDP) in \
             'ice_servers'"
        )));
    }
    Ok(out)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "lowercase")]
enum StopParty {
    Consumer,
    Owner,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LiveStopParams {
    #[allow(dead_code)]
    request_id: String,
    session_id: String,
    by: StopParty,
    #[serde(default)]
    reason: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LiveUsageParams {
    #[allow(dead_code)]
    request_id: String,
    #[serde(default)]
    pending: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LiveUsageAckParams {
    #[allow(dead_code)]
    request_id: String,
    session_ids: Vec<String>,
}

/// An RFC 3339 time in a command, as ms since the epoch.
fn time_field(name: &str, field: &str, text: &str) -> Result<i64, Error> {
    text.parse::<jiff::Timestamp>()
        .map(|t| t.as_millisecond())
        .map_err(|e| {
            Error::invalid_input(format!(
                "{name}: field '{field}': '{text}' is not an RFC 3339 time such as \
                 2026-11-23T10:00:00Z: {e}"
            ))
        })
}

/// Checks a time range and camera list shared by requests and export jobs.
fn check_range(name: &str, cameras: &[String], from_ms: i64, to_ms: i64) -> Result<(), Error> {
    if cameras.is_empty() || cameras.len() > 16 {
        return Err(Error::invalid_input(format!(
            "{name}: field 'cameras': name 1 to 16 cameras"
        )));
    }
    if from_ms >= to_ms {
        return Err(Error::invalid_input(format!(
            "{name}: the range is empty or reversed: 'from' must be before 'to'"
        )));
    }
    if to_ms - from_ms >= 24 * 3600 * 1000 {
        return Err(Error::invalid_input(
            "Export range must be shorter than 1 day",
        ));
    }
    Ok(())
}

/// An id for a request or job (same rule as request ids: it becomes part of names).
fn check_id(name: &str, field: &str, id: &str) -> Result<(), Error> {
    check_request_id(id).map_err(|e| {
        Error::invalid_input(format!(
            "{name}: field '{field}': {}",
            e.replacen("request_id", "id", 1)
        ))
    })
}

fn ota_order(p: OtaInstallParams) -> Result<veil_core::ota::Order, Error> {
    use veil_core::ota::{Reboot, Source};
    const NAME: &str = "ota.install";
    check_id(NAME, "job_id", &p.job_id)?;
    if p.version.is_empty()
        || p.version.len() > 64
        || !p
            .version
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._+-~".contains(c))
    {
        return Err(Error::invalid_input(
            "ota.install: field 'version': 1 to 64 letters, digits, '.', '_', '+', '-' or '~' (the \
             bundle manifest's version)",
        ));
    }
    let source = match (p.url, p.s3_key) {
        (Some(url), None) => {
            let parsed: url::Url = url.parse().map_err(|e| {
                Error::invalid_input(format!("ota.install: field 'url': not a URL: {e}"))
            })?;
            if !matches!(parsed.scheme(), "https" | "http") || parsed.host_str().is_none() {
                return Err(Error::invalid_input(
                    "ota.install: field 'url': must be an https:// (or http://) URL with a host",
                ));
            }
            Source::Url(url)
        }
        (None, Some(key)) => {
            if key.is_empty() || key.len() > 1024 || key.chars().any(char::is_control) {
                return Err(Error::invalid_input(
                    "ota.install: field 's3_key': 1 to 1024 printable characters",
                ));
            }
            Source::S3Key(key)
        }
        _ => {
            return Err(Error::invalid_input(
                "ota.install: give the bundle as exactly one of 'url' or 's3_key'",
            ));
        }
    };
    if let Some(sha) = &p.sha256
        && (sha.len() != 64 || !sha.chars().all(|c| c.is_ascii_hexdigit()))
    {
        return Err(Error::invalid_input(
            "ota.install: field 'sha256': 64 hexadecimal digits",
        ));
    }
    let reboot = match p.reboot.as_deref() {
        None => Reboot::Now,
        Some(text) => Reboot::parse(text)
            .map_err(|e| Error::invalid_input(format!("ota.install: field {e}")))?,
    };
    Ok(veil_core::ota::Order {
        job_id: p.job_id,
        version: p.version,
        source,
        sha256: p.sha256.map(|s| s.to_ascii_lowercase()),
        reboot,
    })
}

fn text_field(name: &str, field: &str, text: &str, max: usize) -> Result<(), Error> {
    if text.trim().is_empty() || text.chars().count() > max || text.chars().any(char::is_control) {
        return Err(Error::invalid_input(format!(
            "{name}: field '{field}': must be 1 to {max} printable characters"
        )));
    }
    Ok(())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ThumbnailParams {
    #[allow(dead_code)]
    request_id: String,
    camera: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SnapshotParams {
    #[allow(dead_code)]
    request_id: String,
    camera: String,
    #[serde(default = "default_width")]
    width: u32,
}

fn default_width() -> u32 {
    640
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NoParams {
    #[allow(dead_code)]
    request_id: String,
}

/// A request id: 1 to 64 of letters, digits, `-`, `_`, `.` (it becomes a topic level).
fn check_request_id(id: &str) -> Result<(), String> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "request_id must be 1 to 64 letters, digits, '-', '_' or '.', found '{}'",
            id.chars().take(80).collect::<String>()
        ))
    }
}

fn typed<T: for<'de> Deserialize<'de>>(name: &str, value: &Value) -> Result<T, Error> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        Error::invalid_input(if path == "." {
            format!("{name}: {inner}")
        } else {
            format!("{name}: field '{path}': {inner}")
        })
    })
}

/// The request id a payload carries, if one can be read (so even a rejection can be matched).
pub fn request_id_of(payload: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(payload).ok()?;
    let id = v.get("request_id")?.as_str()?;
    check_request_id(id).ok()?;
    Some(id.to_string())
}

/// Checks a command `name` with its `payload`.
pub fn parse(name: &str, payload: &[u8]) -> Result<Request, Error> {
    if payload.len() > MAX_PAYLOAD {
        return Err(Error::new(
            ErrorKind::ResourceExhausted,
            format!(
                "payload of {} bytes is over the {MAX_PAYLOAD}-byte limit",
                payload.len()
            ),
        ));
    }
    let value: Value = serde_json::from_slice(payload)
        .map_err(|e| Error::invalid_input(format!("payload is not JSON: {e}")))?;
    let Some(object) = value.as_object() else {
        return Err(Error::invalid_input(
            "payload must be a JSON object with a request_id",
        ));
    };
    let id = match object.get("request_id") {
        Some(Value::String(id)) => id.clone(),
        Some(_) => return Err(Error::invalid_input("request_id must be a string")),
        None => return Err(Error::invalid_input("request_id is missing")),
    };
    check_request_id(&id).map_err(Error::invalid_input)?;
    let command = match name {
        "config.get" => {
            typed::<NoParams>(name, &value)?;
            Command::ConfigGet
        }
        "registry.get" => {
            typed::<NoParams>(name, &value)?;
            Command::RegistryGet
        }
        "config.patch" => {
            let p: ConfigPatchParams = typed(name, &value)?;
            if p.patch.is_empty() {
                return Err(Error::invalid_input(
                    "config.patch: field 'patch': name at least one key to change",
                ));
            }
            Command::ConfigPatch { patch: p.patch }
        }
        "reboot" => {
            typed::<NoParams>(name, &value)?;
            Command::Reboot
        }
        "snapshot" => {
            let p: SnapshotParams = typed(name, &value)?;
            if !(64..=3840).contains(&p.width) {
                return Err(Error::invalid_input(format!(
                    "snapshot: field 'width': must be 64 to 3840 pixels, found {}",
                    p.width
                )));
            }
            Command::Snapshot {
                camera: p.camera,
                width: p.width,
            }
        }
        "thumbnail" => {
            let p: ThumbnailParams = typed(name, &value)?;
            Command::Thumbnail { camera: p.camera }
        }
        "request.create" => {
            let p: RequestCreateParams = typed(name, &value)?;
            check_id(name, "id", &p.id)?;
            let (from_ms, to_ms) = (
                time_field(name, "from", &p.from)?,
                time_field(name, "to", &p.to)?,
            );
            check_range(name, &p.cameras, from_ms, to_ms)?;
            text_field(name, "reason", &p.reason, 2000)?;
            text_field(name, "requester.name", &p.requester.name, 200)?;
            if !matches!(p.case.kind.as_str(), "existing" | "new" | "none") {
                return Err(Error::invalid_input(format!(
                    "{name}: field 'case.kind': must be existing, new or none, found '{}'",
                    p.case.kind
                )));
            }
            if p.case.kind == "existing"
                && p.case
                    .reference
                    .as_deref()
                    .is_none_or(|r| r.trim().is_empty())
            {
                return Err(Error::invalid_input(format!(
                    "{name}: field 'case.reference': an existing case needs its reference"
                )));
            }
            Command::RequestCreate(VideoRequest {
                id: p.id,
                requester: p.requester,
                case: p.case,
                cameras: p.cameras,
                from_ms,
                to_ms,
                reason: p.reason,
            })
        }
        "request.decide" => {
            let p: RequestDecideParams = typed(name, &value)?;
            let approve = match p.decision.as_str() {
                "approve" => true,
                "decline" => false,
                other => {
                    return Err(Error::invalid_input(format!(
                        "{name}: field 'decision': must be approve or decline, found '{other}'"
                    )));
                }
            };
            if !approve && p.reason.as_deref().is_none_or(|r| r.trim().is_empty()) {
                return Err(Error::invalid_input(format!(
                    "{name}: field 'reason': a decline needs a reason for the requester"
                )));
            }
            Command::RequestDecide {
                id: p.id,
                approve,
                reason: p.reason,
                by: p.by,
            }
        }
        "request.cancel" => {
            let p: RequestCancelParams = typed(name, &value)?;
            Command::RequestCancel {
                id: p.id,
                reason: p.reason,
            }
        }
        "request.list" => {
            typed::<NoParams>(name, &value)?;
            Command::RequestList
        }
        "export.create" => {
            let p: ExportCreateParams = typed(name, &value)?;
            let job_id = p.job_id.unwrap_or_else(|| format!("job-{}", p.request_id));
            check_id(name, "job_id", &job_id)?;
            let (from_ms, to_ms) = (
                time_field(name, "from", &p.from)?,
                time_field(name, "to", &p.to)?,
            );
            check_range(name, &p.cameras, from_ms, to_ms)?;
            Command::ExportCreate(ExportJob {
                job_id,
                cameras: p.cameras,
                from_ms,
                to_ms,
                name: p.name,
                description: p.description,
                filter: p.filter,
                upload_urls: p.upload_urls,
                incident: None,
            })
        }
        "ota.install" => Command::OtaInstall(ota_order(typed(name, &value)?)?),
        "ota.status" => {
            typed::<NoParams>(name, &value)?;
            Command::OtaStatus
        }
        "ota.cancel" => {
            let p: ExportCancelParams = typed(name, &value)?;
            Command::OtaCancel { job_id: p.job_id }
        }
        "export.cancel" => {
            let p: ExportCancelParams = typed(name, &value)?;
            Command::ExportCancel { job_id: p.job_id }
        }
        "live.start" => {
            let p: LiveStartParams = typed(name, &value)?;
            check_id(name, "session_id", &p.session_id)?;
            check_id(name, "consumer", &p.consumer)?;
            text_field(name, "camera", &p.camera, 64)?;
            crate::whip::check_endpoint(&p.endpoint)
                .map_err(|e| Error::invalid_input(format!("{name}: {}", e.message())))?;
            if p.token.is_empty()
                || p.token.len() > 4096
                || !p.token.bytes().all(|b| b.is_ascii_graphic())
            {
                return Err(Error::invalid_input(format!(
                    "{name}: field 'token': the endpoint's bearer token, 1 to 4096 visible ASCII \
                     characters"
                )));
            }
            if !(1..=veil_core::live::MAX_DURATION_S).contains(&p.max_duration_s) {
                return Err(Error::invalid_input(format!(
                    "{name}: field 'max_duration_s': must be 1 to {} seconds, found {}",
                    veil_core::live::MAX_DURATION_S,
                    p.max_duration_s
                )));
            }
            Command::LiveStart(veil_core::live::StartRequest {
                id: p.session_id,
                camera: p.camera,
                consumer: p.consumer,
                filter: p.filter,
                priority: p.priority,
                max_duration_s: p.max_duration_s,
                endpoint: p.endpoint,
                token: p.token,
                relay_only: p.ice_transport_policy == IceTransportPolicy::Relay,
                ice_servers: ice_servers(name, p.ice_servers, p.ice_transport_policy)?,
            })
        }
        "live.stop" => {
            let p: LiveStopParams = typed(name, &value)?;
            if let Some(r) = &p.reason {
                text_field(name, "reason", r, 500)?;
            }
            Command::LiveStop {
                session_id: p.session_id,
                by_owner: matches!(p.by, StopParty::Owner),
                reason: p.reason,
            }
        }
        "live.list" => {
            typed::<NoParams>(name, &value)?;
            Command::LiveList
        }
        "live.usage" => {
            let p: LiveUsageParams = typed(name, &value)?;
            Command::LiveUsage { pending: p.pending }
        }
        "live.usage.ack" => {
            let p: LiveUsageAckParams = typed(name, &value)?;
            if p.session_ids.is_empty() || p.session_ids.len() > 1000 {
                return Err(Error::invalid_input(format!(
                    "{name}: field 'session_ids': name 1 to 1000 sessions"
                )));
            }
            for id in &p.session_ids {
                check_id(name, "session_ids", id)?;
            }
            Command::LiveUsageAck {
                session_ids: p.session_ids,
            }
        }
        "incident.list" => {
            let mut query = value.clone();
            if let Some(m) = query.as_object_mut() {
                m.remove("request_id");
            }
            let q: veil_incident::ListQuery = typed(name, &query)?;
            for (field, t) in [("from", &q.from), ("to", &q.to)] {
                if let Some(t) = t {
                    time_field(name, field, t)?;
                }
            }
            if q.limit.is_some_and(|l| !(1..=500).contains(&l)) {
                return Err(Error::invalid_input(format!(
                    "{name}: field 'limit': 1 to 500 projects a page"
                )));
            }
            Command::IncidentList(q)
        }
        "incident.get" => {
            let p: IncidentGetParams = typed(name, &value)?;
            if p.id < 1 {
                return Err(Error::invalid_input(format!(
                    "{name}: field 'id': project numbers start at 1"
                )));
            }
            Command::IncidentGet { id: p.id }
        }
        other => match PLANNED.iter().find(|p| **p == other) {
            Some(p) => Command::NotYetAvailable(p),
            None => {
                return Err(Error::not_found(format!(
                    "unknown command '{}': known are config.get, config.patch, registry.get, snapshot, thumbnail, \
                     reboot, request.create, request.decide, request.cancel, request.list, \
                     export.create, export.cancel, live.start, live.stop, live.list, live.usage, \
                     live.usage.ack, incident.list, incident.get, ota.install, ota.status, \
                     ota.cancel",
                    other.chars().take(64).collect::<String>()
                )));
            }
        },
    };
    Ok(Request { id, command })
}

/// A successful reply.
pub fn reply_ok(request_id: &str, result: Value) -> Value {
    json!({ "request_id": request_id, "ok": true, "result": result })
}

/// A rejected or failed reply: `code` is machine-readable (`invalid_input`, `not_found`, ...).
pub fn reply_error(request_id: Option<&str>, error: &Error) -> Value {
    json!({
        "request_id": request_id,
        "ok": false,
        "error": { "code": error.kind().code(), "message": error.message() },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rejected(name: &str, payload: &str) -> Error {
        parse(name, payload.as_bytes()).unwrap_err()
    }

    #[test]
    fn update_orders_are_checked_field_by_field() {
        use veil_core::ota::{Reboot, Source};
        let r = parse(
            "ota.install",
            br#"{"request_id":"r-1","job_id":"ota-7","version":"2.0.0","s3_key":"bundles/v2.raucb","reboot":"02:00-04:00","sha256":"ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef0123456789"}"#,
        )
        .unwrap();
        let Command::OtaInstall(order) = r.command else {
            panic!("not an install")
        };
        assert_eq!(order.source, Source::S3Key("bundles/v2.raucb".into()));
        assert_eq!(
            order.reboot,
            Reboot::Window {
                from_minute: 120,
                to_minute: 240
            }
        );
        assert!(order.sha256.unwrap().starts_with("abcdef"));
        for (payload, says) in [
            (
                r#"{"request_id":"r","job_id":"j","version":"2"}"#,
                "exactly one of",
            ),
            (
                r#"{"request_id":"r","job_id":"j","version":"2","url":"ftp://x/b","s3_key":"k"}"#,
                "exactly one of",
            ),
            (
                r#"{"request_id":"r","job_id":"j","version":"2","url":"file:///etc/passwd"}"#,
                "https://",
            ),
            (
                r#"{"request_id":"r","job_id":"j","version":"2 0","url":"https://x/b"}"#,
                "'version'",
            ),
            (
                r#"{"request_id":"r","job_id":"j/..","version":"2","url":"https://x/b"}"#,
                "'job_id'",
            ),
            (
                r#"{"request_id":"r","job_id":"j","version":"2","url":"https://x/b","sha256":"12"}"#,
                "'sha256'",
            ),
            (
                r#"{"request_id":"r","job_id":"j","version":"2","url":"https://x/b","reboot":"later"}"#,
                "HH:MM-HH:MM",
            ),
            (
                r#"{"request_id":"r","job_id":"j","version":"2","url":"https://x/b","force":true}"#,
                "force",
            ),
        ] {
            let e = rejected("ota.install", payload);
            assert_eq!(e.kind(), ErrorKind::InvalidInput, "{payload}");
            assert!(e.to_string().contains(says), "{payload}: {e}");
        }
    }

    #[test]
    fn good_commands_parse() {
        let r = parse("snapshot", br#"{"request_id":"r-1","camera":"gate"}"#).unwrap();
        assert_eq!(r.id, "r-1");
        assert_eq!(
            r.command,
            Command::Snapshot {
                camera: "gate".into(),
                width: 640
            }
        );
        assert_eq!(
            parse("config.get", br#"{"request_id":"a.b_c"}"#)
                .unwrap()
                .command,
            Command::ConfigGet
        );
        assert!(matches!(
            parse(
                "config.patch",
                br#"{"request_id":"x","patch":{"upload":null}}"#
            )
            .unwrap()
            .command,
            Command::ConfigPatch { .. }
        ));
        let Command::IncidentList(q) = parse(
            "incident.list",
            br#"{"request_id":"i","status":"s2","type":"t1","q":"oil","limit":20}"#,
        )
        .unwrap()
        .command
        else {
            panic!("not an incident list")
        };
        assert_eq!(
            (q.status.as_deref(), q.type_id.as_deref(), q.limit),
            (Some("s2"), Some("t1"), Some(20))
        );
        for (bad, field) in [
            (&br#"{"request_id":"i","colour":"red"}"#[..], "colour"),
            (br#"{"request_id":"i","limit":0}"#, "limit"),
            (br#"{"request_id":"i","from":"monday"}"#, "from"),
            (br#"{"request_id":"i","sort":"size"}"#, "sort"),
        ] {
            let e = parse("incident.list", bad).unwrap_err();
            assert!(e.message().contains(field), "{e}");
        }
        assert_eq!(
            parse("incident.get", br#"{"request_id":"i","id":7}"#)
                .unwrap()
                .command,
            Command::IncidentGet { id: 7 }
        );
        assert!(parse("incident.get", br#"{"request_id":"i","id":"7"}"#).is_err());
        assert!(parse("incident.get", br#"{"request_id":"i","id":0}"#).is_err());
        for bad in [
            &br#"{"request_id":"x"}"#[..],
            br#"{"request_id":"x","patch":{}}"#,
            br#"{"request_id":"x","patch":[1]}"#,
        ] {
            let e = parse("config.patch", bad).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
            assert!(e.message().contains("patch"), "{e}");
        }
    }

    #[test]
    fn bad_payloads_get_a_code_and_a_message_naming_the_problem() {
        let cases = [
            ("snapshot", "{", ErrorKind::InvalidInput, "not JSON"),
            ("snapshot", "[1]", ErrorKind::InvalidInput, "JSON object"),
            (
                "snapshot",
                "{}",
                ErrorKind::InvalidInput,
                "request_id is missing",
            ),
            (
                "snapshot",
                r#"{"request_id":7}"#,
                ErrorKind::InvalidInput,
                "must be a string",
            ),
            (
                "snapshot",
                r#"{"request_id":"a/b"}"#,
                ErrorKind::InvalidInput,
                "letters, digits",
            ),
            (
                "snapshot",
                r#"{"request_id":"r"}"#,
                ErrorKind::InvalidInput,
                "missing field `camera`",
            ),
            (
                "snapshot",
                r#"{"request_id":"r","camera":"c","width":"big"}"#,
                ErrorKind::InvalidInput,
                "field 'width'",
            ),
            (
                "snapshot",
                r#"{"request_id":"r","camera":"c","width":10}"#,
                ErrorKind::InvalidInput,
                "64 to 3840",
            ),
            (
                "config.get",
                r#"{"request_id":"r","extra":1}"#,
                ErrorKind::InvalidInput,
                "unknown field `extra`",
            ),
            (
                "launch",
                r#"{"request_id":"r"}"#,
                ErrorKind::NotFound,
                "unknown command 'launch'",
            ),
        ];
        for (name, payload, kind, words) in cases {
            let e = rejected(name, payload);
            assert_eq!(e.kind(), kind, "{payload}: {e}");
            assert!(e.message().contains(words), "{payload}: {e}");
        }
        let big = format!(
            r#"{{"request_id":"r","pad":"{}"}}"#,
            "x".repeat(MAX_PAYLOAD)
        );
        assert_eq!(
            rejected("config.get", &big).kind(),
            ErrorKind::ResourceExhausted
        );
        assert_eq!(
            request_id_of(br#"{"request_id":"r-9","camera":5}"#).as_deref(),
            Some("r-9")
        );
        let reply = reply_error(Some("r"), &rejected("launch", r#"{"request_id":"r"}"#));
        assert_eq!(reply["error"]["code"], "not_found");
    }

    #[test]
    fn live_commands_are_checked_field_by_field() {
        let good = r#"{"request_id":"r","session_id":"s-1","camera":"gate","consumer":"traffic",
            "filter":"silhouette","max_duration_s":3600,"endpoint":"https://ingest.example/whip",
            "token":"abc"}"#;
        let Command::LiveStart(s) = parse("live.start", good.as_bytes()).unwrap().command else {
            panic!()
        };
        assert_eq!(s.priority, veil_core::live::Priority::Shared);
        assert_eq!(s.filter, veil_core::config::FilterName::Silhouette);
        let cases = [
            (good.replace("silhouette", "x-ray"), "field 'filter'"),
            (good.replace("3600", "0"), "max_duration_s"),
            (good.replace("3600", "90000"), "max_duration_s"),
            (
                good.replace("https://ingest.example/whip", "ftp://x"),
                "endpoint",
            ),
            (good.replace(r#""abc""#, r#""a b""#), "token"),
            (good.replace(r#""traffic""#, r#""a/b""#), "consumer"),
            (good.replace(r#""s-1""#, r#""""#), "session_id"),
            (
                good.replace(r#""filter""#, r#""filtre""#),
                "unknown field `filtre`",
            ),
            (
                good.replace(r#""token":"abc""#, r#""token":"abc","priority":"vip""#),
                "field 'priority'",
            ),
        ];
        for (payload, words) in cases {
            let e = rejected("live.start", &payload);
            assert_eq!(e.kind(), ErrorKind::InvalidInput, "{payload}: {e}");
            assert!(e.message().contains(words), "{payload}: {e}");
        }
        // ICE servers as RTCIceServer spells them; relay-only needs a usable turn: server.
        let with =
            |extra: &str| good.replace(r#""token":"abc""#, &format!(r#""token":"abc",{extra}"#));
        let relayed = with(
            r#""ice_servers":[{"urls":["stun:s.example.com","turn:t.example.com?transport=udp"],
            "username":"u","credential":"p"},{"urls":"stun:other.example.com"}],
            "ice_transport_policy":"relay""#,
        );
        let Command::LiveStart(s) = parse("live.start", relayed.as_bytes()).unwrap().command else {
            panic!()
        };
        assert!(s.relay_only);
        let urls: Vec<&str> = s.ice_servers.iter().map(|i| i.url.as_str()).collect();
        assert_eq!(
            urls,
            [
                "stun:s.example.com",
                "turn:t.example.com?transport=udp",
                "stun:other.example.com"
            ]
        );
        assert_eq!(s.ice_servers[1].credential.as_deref(), Some("p"));
        assert!(!format!("{s:?}").contains("\"p\""), "{s:?}");
        let cases = [
            (
                with(r#""ice_servers":[{"urls":"http://x"}]"#),
                "ice_servers[0].urls",
            ),
            (
                with(r#""ice_servers":[{"urls":"turn:t"}]"#),
                "needs 'username' and 'credential'",
            ),
            (with(r#""ice_servers":[{"urls":[]}]"#), "1 to 8 URLs"),
            (
                with(r#""ice_servers":[{"urls":"stun:s","password":"x"}]"#),
                "unknown field `password`",
            ),
            (
                with(r#""ice_transport_policy":"relay""#),
                "needs a turn: server",
            ),
            (
                with(
                    r#""ice_servers":[{"urls":"turns:t","username":"u","credential":"p"}],"ice_transport_policy":"relay""#,
                ),
                "needs a turn: server",
            ),
            (
                with(r#""ice_transport_policy":"direct""#),
                "field 'ice_transport_policy'",
            ),
        ];
        for (payload, words) in cases {
            let e = rejected("live.start", &payload);
            assert_eq!(e.kind(), ErrorKind::InvalidInput, "{payload}: {e}");
            assert!(e.message().contains(words), "{payload}: {e}");
        }
        assert!(matches!(
            parse(
                "live.stop",
                br#"{"request_id":"r","session_id":"s","by":"owner"}"#
            )
            .unwrap()
            .command,
            Command::LiveStop { by_owner: true, .. }
        ));
        let e = rejected(
            "live.stop",
            r#"{"request_id":"r","session_id":"s","by":"anyone"}"#,
        );
        assert!(e.message().contains("field 'by'"), "{e}");
        let e = rejected("live.usage.ack", r#"{"request_id":"r","session_ids":[]}"#);
        assert!(e.message().contains("1 to 1000"), "{e}");
    }

    /// Property: no payload, however mangled, panics the parser; every outcome is a request or
    /// an error with a code. Seeded pseudo-random payloads built from JSON fragments and bytes.
    #[test]
    fn random_payloads_never_panic() {
        let fragments: [&[u8]; 14] = [
            b"{",
            b"}",
            b"[",
            b"]",
            b"\"request_id\"",
            b":",
            b",",
            b"\"r-1\"",
            b"\"camera\"",
            b"\"width\"",
            b"640",
            b"null",
            b"\"\\u0000\"",
            b"1e999",
        ];
        let names = [
            "snapshot",
            "config.get",
            "config.patch",
            "reboot",
            "x",
            "export.create",
            "",
            "request.create",
            "request.decide",
            "live.start",
            "live.stop",
            "live.usage.ack",
            "ota.install",
        ];
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..20_000 {
            let mut payload = Vec::new();
            for _ in 0..next() % 12 {
                if next() % 5 == 0 {
                    payload.push((next() % 256) as u8);
                } else {
                    payload
                        .extend_from_slice(fragments[(next() % fragments.len() as u64) as usize]);
                }
            }
            let name = names[(next() % names.len() as u64) as usize];
            match parse(name, &payload) {
                Ok(r) => assert!(check_request_id(&r.id).is_ok()),
                Err(e) => assert!(!e.kind().code().is_empty() && !e.message().is_empty()),
            }
        }
    }
}

#[cfg(test)]
mod doc_tests {
    /// Every command the parser knows is in the MQTT API document.
    #[test]
    fn every_command_is_documented() {
        let doc = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../docs/mqtt-api.md"
        ))
        .expect("docs/mqtt-api.md");
        for name in [
            "config.get",
            "config.patch",
            "thumbnail",
            "registry.get",
            "snapshot",
            "reboot",
            "request.create",
            "request.decide",
            "request.cancel",
            "request.list",
            "export.create",
            "export.cancel",
            "live.start",
            "live.stop",
            "live.list",
            "live.usage",
            "live.usage.ack",
            "incident.list",
            "incident.get",
            "ota.install",
            "ota.status",
            "ota.cancel",
        ]
        .iter()
        .chain(super::PLANNED)
        {
            assert!(
                doc.contains(&format!("`{name}`")),
                "docs/mqtt-api.md lacks `{name}`"
            );
        }
    }
}
