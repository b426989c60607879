//! Live view sessions: who may watch which camera, through which filter, for how long, and
//! which of the board's few anonymized encodes each one holds.
//!
//! The desk is sans-IO (str0m's shape): calls take the time and change state, then the caller
//! drains [`LiveDesk::poll`] for what to do — connect or disconnect a relay, open or close an
//! encode, publish an event, keep a usage record. It never touches a socket or a thread, so
//! every rule below is tested without either.
//!
//! Rules:
//! - a session whose filter is the camera's own shares the camera's stream (no extra encode);
//!   any other (camera, filter) pair needs an encode of its own, shared by every session on it;
//! - at most `capacity` such extra encodes run at once; a request that needs one more preempts
//!   the lowest-priority encode whose sessions all rank below it, or is rejected;
//! - a camera whose policy says `operator` waits for an operator's answer (or times out);
//! - every session that was accepted ends with exactly one usage record;
//! - the page's preview of a camera through a filter reads the same encode a session with
//!   that filter would: it shares one that runs, takes a free one, or is refused; it never
//!   preempts anyone, and the owner's own sessions preempt it like a shared view.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

use crate::config::{FilterName, LiveApproval};
use crate::{Error, ErrorKind};

/// How long an operator has to answer before the request is refused for them.
pub const APPROVAL_TIMEOUT_MS: u64 = 60_000;
/// Longest session a consumer may ask for (24 h; a 24/7 view renews).
pub const MAX_DURATION_S: u64 = 24 * 3600;
/// Ended sessions kept for the page's list.
const RECENT: usize = 50;

/// Whose use a session serves. The owner's own (police, city surveillance) outranks a shared
/// view by another domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    #[default]
    Shared,
    Owner,
}

/// An encode the relays read from: a camera seen through a filter.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct EncodeKey {
    pub camera: String,
    pub filter: FilterName,
}

/// What `live.start` asks for (already checked field by field by the command parser).
#[derive(Clone, PartialEq, Eq)]
pub struct StartRequest {
    pub id: String,
    pub camera: String,
    /// The consuming organisation's id.
    pub consumer: String,
    pub filter: FilterName,
    pub priority: Priority,
    pub max_duration_s: u64,
    /// The WHIP endpoint and its bearer token (kept until the session ends, never published).
    pub endpoint: String,
    pub token: String,
    /// ICE servers to gather through before the offer (`turn:` ones are used).
    pub ice_servers: Vec<IceServerSpec>,
    /// Offer only relayed candidates: the viewer never learns the device's address.
    pub relay_only: bool,
}

/// One ICE server URL with its credentials (from `live.start`'s `ice_servers`).
#[derive(Clone, PartialEq, Eq)]
pub struct IceServerSpec {
    pub url: String,
    pub username: Option<String>,
    pub credential: Option<String>,
}

/// Without the credential: a request may end up in a log.
impl std::fmt::Debug for IceServerSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IceServerSpec")
            .field("url", &self.url)
            .field("username", &self.username)
            .field("credential", &self.credential.as_ref().map(|_| "***"))
            .finish()
    }
}

/// Without the bearer token: a request may end up in a log.
impl std::fmt::Debug for StartRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StartRequest")
            .field("id", &self.id)
            .field("camera", &self.camera)
            .field("consumer", &self.consumer)
            .field("filter", &self.filter)
            .field("priority", &self.priority)
            .field("max_duration_s", &self.max_duration_s)
            .field("endpoint", &self.endpoint)
            .field("token", &"***")
            .field("ice_servers", &self.ice_servers)
            .field("relay_only", &self.relay_only)
            .finish()
    }
}

/// What the desk knows of a camera.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CameraLive {
    /// The filter the camera's own stream is anonymized with.
    pub filter: FilterName,
    pub approval: LiveApproval,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Waiting for an operator on the web page.
    AwaitingOperator,
    /// The relay is connecting to the endpoint.
    Starting,
    /// Frames flow.
    Active,
}

/// Who ended a session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EndedBy {
    Consumer,
    /// An operator of the owner's (the name they signed in with, or the fleet's `by`).
    Operator(String),
    Device,
}

impl EndedBy {
    pub fn label(&self) -> String {
        match self {
            EndedBy::Consumer => "consumer".into(),
            EndedBy::Operator(name) => format!("operator:{name}"),
            EndedBy::Device => "device".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Session {
    pub id: String,
    pub camera: String,
    pub consumer: String,
    pub filter: FilterName,
    pub priority: Priority,
    pub max_duration_s: u64,
    pub phase: Phase,
    pub requested_ms: u64,
    /// When it was accepted (automatically or by an operator).
    pub accepted_ms: Option<u64>,
    /// When the first frame reached the endpoint's connection.
    pub active_ms: Option<u64>,
    pub bytes_sent: u64,
    /// Reads an encode of its own (its filter is not the camera's); set when accepted.
    pub own_encode: bool,
    #[serde(skip)]
    pub endpoint: String,
    #[serde(skip)]
    pub token: String,
    #[serde(skip)]
    pub ice_servers: Vec<IceServerSpec>,
    pub relay_only: bool,
}

impl Session {
    /// The bill's line if the session ended at `now_ms` (also a checkpoint while it runs, so
    /// a power loss costs at most the time since the last one).
    pub fn usage(&self, now_ms: u64, outcome: &str, reason: &str) -> UsageRecord {
        let seconds_viewed = self
            .active_ms
            .map(|a| now_ms.saturating_sub(a).div_ceil(1000))
            .unwrap_or(0);
        UsageRecord {
            session_id: self.id.clone(),
            consumer: self.consumer.clone(),
            camera: self.camera.clone(),
            filter: self.filter.as_str().into(),
            priority: self.priority,
            started_ms: self
                .active_ms
                .or(self.accepted_ms)
                .unwrap_or(self.requested_ms),
            ended_ms: now_ms,
            seconds_viewed,
            bytes_sent: self.bytes_sent,
            outcome: outcome.into(),
            reason: reason.into(),
        }
    }

    pub fn key(&self) -> EncodeKey {
        EncodeKey {
            camera: self.camera.clone(),
            filter: self.filter,
        }
    }
}

/// An ended session, for the page and the fleet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Ended {
    pub id: String,
    pub camera: String,
    pub consumer: String,
    pub filter: FilterName,
    /// `ended` (someone stopped it, or its time ran out), `failed`, `refused`, `preempted`.
    pub outcome: &'static str,
    pub by: String,
    pub reason: String,
    pub ended_ms: u64,
}

/// What one session cost: the bill's line. Kept on the device until the fleet acknowledges it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageRecord {
    pub session_id: String,
    pub consumer: String,
    pub camera: String,
    pub filter: String,
    pub priority: Priority,
    pub started_ms: u64,
    pub ended_ms: u64,
    /// From the first frame sent to the end, whole seconds rounded up (0 if none was sent).
    pub seconds_viewed: u64,
    pub bytes_sent: u64,
    pub outcome: String,
    pub reason: String,
}

/// What the caller must do, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Start this encode (another privacy engine and encoder on the camera's frames).
    OpenEncode(EncodeKey),
    /// Stop it: no session reads it any more.
    CloseEncode(EncodeKey),
    /// Start the session's relay to its endpoint.
    Connect(Session),
    /// Tear the session's relay down (DELETE the WHIP resource).
    Disconnect(String),
    /// Publish on the fleet's event topic and tell the page.
    Event(serde_json::Value),
    /// Keep (durably) and publish.
    Usage(UsageRecord),
}

/// Whether a start was taken on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Accepted {
    AwaitingOperator,
    Starting,
    /// The same request again: nothing changes.
    AlreadyKnown,
}

/// A preview on the device's page: what a consumer of `key` would get, for the installer.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Preview {
    key: EncodeKey,
    opened_ms: u64,
    /// Reads an extra encode (its filter is not the camera's).
    own_encode: bool,
}

/// Where an open preview's pictures come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PreviewSource {
    /// The camera's own anonymized stream.
    Camera(String),
    /// An extra encode (the caller looks it up by key).
    Encode(EncodeKey),
}

/// How long the bill of a session that ended waits for its relay's final count of bytes (the
/// relay reports it once it has torn the connection down); past that it goes out with the
/// last count.
pub const FINAL_COUNT_WAIT_MS: u64 = 5_000;

pub struct LiveDesk {
    capacity: usize,
    cameras: BTreeMap<String, CameraLive>,
    sessions: BTreeMap<String, Session>,
    /// Bills of sessions that ended while their relay ran, waiting for its final count, with
    /// the time they ended.
    closing: BTreeMap<String, (UsageRecord, u64)>,
    previews: BTreeMap<u64, Preview>,
    next_preview: u64,
    recent: VecDeque<Ended>,
    outputs: VecDeque<Output>,
}

impl LiveDesk {
    /// `capacity`: the board's `max_live_encodes`.
    pub fn new(capacity: u32) -> LiveDesk {
        LiveDesk {
            capacity: capacity as usize,
            cameras: BTreeMap::new(),
            sessions: BTreeMap::new(),
            closing: BTreeMap::new(),
            previews: BTreeMap::new(),
            next_preview: 1,
            recent: VecDeque::new(),
            outputs: VecDeque::new(),
        }
    }

    pub fn poll(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// The cameras now configured; sessions on a camera that went (or whose filter changed
    /// under a shared stream) fail.
    pub fn set_cameras(&mut self, cameras: BTreeMap<String, CameraLive>, now_ms: u64) {
        let gone: Vec<String> = self
            .sessions
            .values()
            .filter(|s| match cameras.get(&s.camera) {
                None => true,
                Some(now) => {
                    s.phase != Phase::AwaitingOperator && self.cameras.get(&s.camera) != Some(now)
                }
            })
            .map(|s| s.id.clone())
            .collect();
        let stale: Vec<u64> = self
            .previews
            .iter()
            .filter(|(_, p)| cameras.get(&p.key.camera) != self.cameras.get(&p.key.camera))
            .map(|(id, _)| *id)
            .collect();
        self.cameras = cameras;
        for id in stale {
            self.close_preview(id);
        }
        for id in gone {
            let reason = match self.sessions.get(&id) {
                Some(s) if self.cameras.contains_key(&s.camera) => {
                    format!("camera '{}' was reconfigured", s.camera)
                }
                Some(s) => format!("camera '{}' was removed", s.camera),
                None => continue,
            };
            self.end(&id, "failed", EndedBy::Device, reason, now_ms);
        }
    }

    pub fn sessions(&self) -> impl Iterator<Item = &Session> {
        self.sessions.values()
    }

    pub fn recent(&self) -> impl Iterator<Item = &Ended> {
        self.recent.iter().rev()
    }

    pub fn session(&self, id: &str) -> Option<&Session> {
        self.sessions.get(id)
    }

    /// Extra encodes running now.
    pub fn encodes_in_use(&self) -> usize {
        self.extra_encodes().len()
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Opens the page's preview of `camera` through `filter`; returns its id. It shares an
    /// encode that runs, takes a free one, or is refused with the reason; it preempts no one.
    pub fn open_preview(
        &mut self,
        camera: &str,
        filter: FilterName,
        now_ms: u64,
    ) -> Result<u64, Error> {
        if !self.cameras.contains_key(camera) {
            return Err(Error::not_found(format!(
                "no camera '{camera}' on this device"
            )));
        }
        let key = EncodeKey {
            camera: camera.into(),
            filter,
        };
        let own_encode = self.needs_encode(&key);
        let extra = self.extra_encodes();
        let opens = own_encode && !extra.contains_key(&key);
        if opens && extra.len() >= self.capacity {
            return Err(Error::new(
                ErrorKind::ResourceExhausted,
                format!(
                    "all {} live encodes of this device are in use; a preview through '{}' \
                     needs one (the camera's own filter needs none)",
                    self.capacity,
                    filter.as_str()
                ),
            ));
        }
        if opens {
            self.outputs.push_back(Output::OpenEncode(key.clone()));
        }
        let id = self.next_preview;
        self.next_preview += 1;
        self.previews.insert(
            id,
            Preview {
                key,
                opened_ms: now_ms,
                own_encode,
            },
        );
        Ok(id)
    }

    /// Where the preview's pictures come from; `None` once it ended (closed, preempted by
    /// the owner's own use, or its camera was reconfigured).
    pub fn preview_source(&self, id: u64) -> Option<PreviewSource> {
        let p = self.previews.get(&id)?;
        Some(if p.own_encode {
            PreviewSource::Encode(p.key.clone())
        } else {
            PreviewSource::Camera(p.key.camera.clone())
        })
    }

    /// The viewer went: the encode closes if nothing else reads it.
    pub fn close_preview(&mut self, id: u64) {
        let Some(p) = self.previews.remove(&id) else {
            return;
        };
        if p.own_encode && !self.extra_encodes().contains_key(&p.key) {
            self.outputs.push_back(Output::CloseEncode(p.key));
        }
    }

    pub fn start(&mut self, req: StartRequest, now_ms: u64) -> Result<Accepted, Error> {
        if let Some(s) = self.sessions.get(&req.id) {
            let same = s.camera == req.camera
                && s.consumer == req.consumer
                && s.filter == req.filter
                && s.endpoint == req.endpoint;
            return if same {
                Ok(Accepted::AlreadyKnown)
            } else {
                Err(Error::new(
                    ErrorKind::Conflict,
                    format!(
                        "live.start: session '{}' is already open with other parameters",
                        req.id
                    ),
                ))
            };
        }
        if self.recent.iter().any(|e| e.id == req.id) {
            return Err(Error::new(
                ErrorKind::Conflict,
                format!(
                    "live.start: session '{}' has ended; a new session needs a new id",
                    req.id
                ),
            ));
        }
        let Some(camera) = self.cameras.get(&req.camera).cloned() else {
            return Err(Error::not_found(format!(
                "live.start: no camera '{}' on this device",
                req.camera
            )));
        };
        if camera.approval == LiveApproval::Never {
            return Err(Error::new(
                ErrorKind::PermissionDenied,
                format!(
                    "live.start: camera '{}' is not shared live (its owner set live.approval = \"never\")",
                    req.camera
                ),
            ));
        }
        if req.max_duration_s == 0 || req.max_duration_s > MAX_DURATION_S {
            return Err(Error::invalid_input(format!(
                "live.start: field 'max_duration_s': must be 1 to {MAX_DURATION_S} seconds, found {}",
                req.max_duration_s
            )));
        }
        // Refuse now, not after an operator said yes, when it could never fit.
        let session = Session {
            id: req.id.clone(),
            camera: req.camera,
            consumer: req.consumer,
            filter: req.filter,
            priority: req.priority,
            max_duration_s: req.max_duration_s,
            phase: Phase::AwaitingOperator,
            requested_ms: now_ms,
            accepted_ms: None,
            active_ms: None,
            bytes_sent: 0,
            own_encode: false,
            endpoint: req.endpoint,
            token: req.token,
            ice_servers: req.ice_servers,
            relay_only: req.relay_only,
        };
        self.room_for(&session.key(), session.priority)?;
        let id = session.id.clone();
        self.sessions.insert(id.clone(), session);
        match camera.approval {
            LiveApproval::Automatic => {
                self.admit(&id, now_ms)?;
                Ok(Accepted::Starting)
            }
            LiveApproval::Operator | LiveApproval::Never => {
                let event = self.event(&id, "awaiting_operator", None, None, now_ms);
                self.outputs.push_back(Output::Event(event));
                Ok(Accepted::AwaitingOperator)
            }
        }
    }

    /// An operator's answer to a session waiting for one.
    pub fn decide(
        &mut self,
        id: &str,
        accept: bool,
        by: &str,
        reason: Option<&str>,
        now_ms: u64,
    ) -> Result<(), Error> {
        match self.sessions.get(id).map(|s| s.phase) {
            None => Err(Error::not_found(format!("no live session '{id}' is open"))),
            Some(Phase::AwaitingOperator) if accept => self.admit(id, now_ms).inspect_err(|e| {
                self.end(id, "refused", EndedBy::Device, e.message().into(), now_ms);
            }),
            Some(Phase::AwaitingOperator) => {
                let reason = reason.unwrap_or("all operators busy").to_string();
                self.end(id, "refused", EndedBy::Operator(by.into()), reason, now_ms);
                Ok(())
            }
            Some(_) => Err(Error::new(
                ErrorKind::Conflict,
                format!("live session '{id}' is not waiting for an operator"),
            )),
        }
    }

    /// The relay delivered its first frame.
    pub fn connected(&mut self, id: &str, now_ms: u64) {
        let Some(s) = self.sessions.get_mut(id) else {
            return;
        };
        if s.phase == Phase::Starting {
            s.phase = Phase::Active;
            s.active_ms = Some(now_ms);
            let event = self.event(id, "active", None, None, now_ms);
            self.outputs.push_back(Output::Event(event));
        }
    }

    /// Bytes the relay has sent so far (a running total).
    pub fn sent(&mut self, id: &str, bytes_total: u64) {
        if let Some(s) = self.sessions.get_mut(id) {
            s.bytes_sent = s.bytes_sent.max(bytes_total);
        } else if let Some((bill, _)) = self.closing.get_mut(id) {
            bill.bytes_sent = bill.bytes_sent.max(bytes_total);
        }
    }

    /// The session's relay is gone, having sent `bytes_total` in all: the bill of a session
    /// that ended goes out with that count.
    pub fn relay_closed(&mut self, id: &str, bytes_total: u64) {
        self.sent(id, bytes_total);
        self.bill(id);
    }

    /// The relay failed (endpoint refused or vanished, camera stopped), or never started: no
    /// relay runs any more, so the bill goes out at once.
    pub fn failed(&mut self, id: &str, reason: String, now_ms: u64) {
        if self.sessions.contains_key(id) {
            self.end(id, "failed", EndedBy::Device, reason, now_ms);
        }
        self.bill(id);
    }

    /// Sends every bill still waiting for its relay's count (the device is stopping).
    pub fn flush_bills(&mut self) {
        let ids: Vec<String> = self.closing.keys().cloned().collect();
        for id in ids {
            self.bill(&id);
        }
    }

    fn bill(&mut self, id: &str) {
        if let Some((bill, _)) = self.closing.remove(id) {
            self.outputs.push_back(Output::Usage(bill));
        }
    }

    pub fn stop(
        &mut self,
        id: &str,
        by: EndedBy,
        reason: Option<&str>,
        now_ms: u64,
    ) -> Result<(), Error> {
        if !self.sessions.contains_key(id) {
            return Err(Error::not_found(format!("no live session '{id}' is open")));
        }
        let reason = reason.unwrap_or("stopped").to_string();
        self.end(id, "ended", by, reason, now_ms);
        Ok(())
    }

    /// Ends what ran out of time: sessions past their maximum duration, requests no operator
    /// answered.
    pub fn tick(&mut self, now_ms: u64) {
        let late: Vec<String> = self
            .closing
            .iter()
            .filter(|(_, (_, ended))| now_ms >= ended.saturating_add(FINAL_COUNT_WAIT_MS))
            .map(|(id, _)| id.clone())
            .collect();
        for id in late {
            self.bill(&id);
        }
        let due: Vec<(String, String)> = self
            .sessions
            .values()
            .filter_map(|s| match s.phase {
                Phase::AwaitingOperator
                    if now_ms >= s.requested_ms.saturating_add(APPROVAL_TIMEOUT_MS) =>
                {
                    Some((s.id.clone(), "no operator answered in time".to_string()))
                }
                Phase::Starting | Phase::Active
                    if now_ms
                        >= s.accepted_ms
                            .unwrap_or(s.requested_ms)
                            .saturating_add(s.max_duration_s * 1000) =>
                {
                    Some((
                        s.id.clone(),
                        format!("maximum duration of {} s reached", s.max_duration_s),
                    ))
                }
                _ => None,
            })
            .collect();
        for (id, reason) in due {
            let outcome = if self.sessions[&id].phase == Phase::AwaitingOperator {
                "refused"
            } else {
                "ended"
            };
            self.end(&id, outcome, EndedBy::Device, reason, now_ms);
        }
    }

    /// The extra encodes now held, each with the highest priority among its sessions and the
    /// time its newest session was accepted.
    fn extra_encodes(&self) -> BTreeMap<EncodeKey, (Priority, u64)> {
        let mut keys: BTreeMap<EncodeKey, (Priority, u64)> = BTreeMap::new();
        for s in self.sessions.values() {
            if s.phase == Phase::AwaitingOperator || !s.own_encode {
                continue;
            }
            let entry = keys.entry(s.key()).or_insert((s.priority, 0));
            entry.0 = entry.0.max(s.priority);
            entry.1 = entry.1.max(s.accepted_ms.unwrap_or(0));
        }
        // A preview ranks as a shared view.
        for p in self.previews.values().filter(|p| p.own_encode) {
            let entry = keys.entry(p.key.clone()).or_insert((Priority::Shared, 0));
            entry.1 = entry.1.max(p.opened_ms);
        }
        keys
    }

    fn needs_encode(&self, key: &EncodeKey) -> bool {
        self.cameras
            .get(&key.camera)
            .is_some_and(|c| c.filter != key.filter)
    }

    /// Ok(None): fits as it is; Ok(Some(key)): fits once `key` is preempted; Err: no room.
    fn room_for(&self, key: &EncodeKey, priority: Priority) -> Result<Option<EncodeKey>, Error> {
        let extra = self.extra_encodes();
        if !self.needs_encode(key) || extra.contains_key(key) || extra.len() < self.capacity {
            return Ok(None);
        }
        // The lowest-ranked encode below the request; among equals, the newest.
        extra
            .iter()
            .filter(|(_, (p, _))| *p < priority)
            .min_by_key(|(_, (p, accepted))| (*p, std::cmp::Reverse(*accepted)))
            .map(|(k, _)| Some(k.clone()))
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::ResourceExhausted,
                    format!(
                        "all {} live encodes of this device are in use by sessions of equal or \
                         higher priority; try again later",
                        self.capacity
                    ),
                )
            })
    }

    fn admit(&mut self, id: &str, now_ms: u64) -> Result<(), Error> {
        let session = self.sessions[id].clone();
        if let Some(victim) = self.room_for(&session.key(), session.priority)? {
            // Previews first, so the last session to go closes the encode.
            let previews = self.previews.len();
            self.previews.retain(|_, p| p.key != victim);
            let removed_previews = self.previews.len() < previews;
            let victims: Vec<String> = self
                .sessions
                .values()
                .filter(|v| v.key() == victim && v.phase != Phase::AwaitingOperator)
                .map(|v| v.id.clone())
                .collect();
            let previews_only = removed_previews && victims.is_empty();
            for v in victims {
                let reason = "preempted: the owner's own use needs this live encode".to_string();
                self.end(&v, "preempted", EndedBy::Device, reason, now_ms);
            }
            if previews_only {
                self.outputs.push_back(Output::CloseEncode(victim));
            }
        }
        let own_encode = self.needs_encode(&session.key());
        let opens = own_encode && !self.extra_encodes().contains_key(&session.key());
        let s = self.sessions.get_mut(id).expect("present");
        s.own_encode = own_encode;
        s.phase = Phase::Starting;
        s.accepted_ms = Some(now_ms);
        let session = s.clone();
        if opens {
            self.outputs.push_back(Output::OpenEncode(session.key()));
        }
        let event = self.event(id, "starting", None, None, now_ms);
        self.outputs.push_back(Output::Event(event));
        self.outputs.push_back(Output::Connect(session));
        Ok(())
    }

    fn end(&mut self, id: &str, outcome: &'static str, by: EndedBy, reason: String, now_ms: u64) {
        let event = self.event(id, outcome, Some(&by), Some(&reason), now_ms);
        let Some(s) = self.sessions.remove(id) else {
            return;
        };
        if s.phase != Phase::AwaitingOperator {
            self.outputs.push_back(Output::Disconnect(s.id.clone()));
            if s.own_encode && !self.extra_encodes().contains_key(&s.key()) {
                self.outputs.push_back(Output::CloseEncode(s.key()));
            }
        }
        self.outputs.push_back(Output::Event(event));
        if s.accepted_ms.is_some() {
            // Its relay is still sending what it had queued: the bill waits for the final
            // count (relay_closed, or failed), FINAL_COUNT_WAIT_MS at most.
            self.closing
                .insert(s.id.clone(), (s.usage(now_ms, outcome, &reason), now_ms));
        }
        if self.recent.len() == RECENT {
            self.recent.pop_front();
        }
        self.recent.push_back(Ended {
            id: s.id,
            camera: s.camera,
            consumer: s.consumer,
            filter: s.filter,
            outcome,
            by: by.label(),
            reason,
            ended_ms: now_ms,
        });
    }

    fn event(
        &self,
        id: &str,
        state: &str,
        by: Option<&EndedBy>,
        reason: Option<&str>,
        now_ms: u64,
    ) -> serde_json::Value {
        let s = &self.sessions[id];
        let mut event = serde_json::json!({
            "type": "live.session",
            "session_id": s.id,
            "state": state,
            "camera": s.camera,
            "consumer": s.consumer,
            "filter": s.filter.as_str(),
            "priority": s.priority,
            "time_ms": now_ms,
        });
        if let Some(by) = by {
            event["by"] = by.label().into();
        }
        if let Some(reason) = reason {
            event["reason"] = reason.into();
        }
        event
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desk(capacity: u32, approval: LiveApproval) -> LiveDesk {
        let mut d = LiveDesk::new(capacity);
        let cameras = ["a", "b", "c"]
            .iter()
            .map(|c| {
                (
                    c.to_string(),
                    CameraLive {
                        filter: FilterName::FacesPlates,
                        approval,
                    },
                )
            })
            .collect();
        d.set_cameras(cameras, 0);
        d
    }

    fn req(id: &str, camera: &str, filter: FilterName, priority: Priority) -> StartRequest {
        StartRequest {
            id: id.into(),
            camera: camera.into(),
            consumer: "traffic".into(),
            filter,
            priority,
            max_duration_s: 600,
            endpoint: "https://ingest/whip".into(),
            token: "t".into(),
            ice_servers: Vec::new(),
            relay_only: false,
        }
    }

    fn drain(d: &mut LiveDesk) -> Vec<Output> {
        std::iter::from_fn(|| d.poll()).collect()
    }

    fn states(out: &[Output]) -> Vec<String> {
        out.iter()
            .filter_map(|o| match o {
                Output::Event(e) => Some(format!(
                    "{}:{}",
                    e["session_id"].as_str().unwrap(),
                    e["state"].as_str().unwrap()
                )),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn automatic_start_connects_and_a_stop_bills_the_seconds_viewed() {
        let mut d = desk(2, LiveApproval::Automatic);
        let r = req("s1", "a", FilterName::Silhouette, Priority::Shared);
        assert_eq!(d.start(r, 1000).unwrap(), Accepted::Starting);
        let out = drain(&mut d);
        assert!(
            matches!(&out[0], Output::OpenEncode(k) if k.camera == "a" && k.filter == FilterName::Silhouette)
        );
        assert!(matches!(&out[2], Output::Connect(s) if s.id == "s1"));
        d.connected("s1", 1500);
        d.sent("s1", 12345);
        assert_eq!(states(&drain(&mut d)), ["s1:active"]);
        d.stop("s1", EndedBy::Consumer, None, 11_600).unwrap();
        let out = drain(&mut d);
        assert_eq!(out[0], Output::Disconnect("s1".into()));
        assert!(matches!(&out[1], Output::CloseEncode(_)));
        assert!(
            !out.iter().any(|o| matches!(o, Output::Usage(_))),
            "billed before the relay's final count: {out:?}"
        );
        // The relay sent what it had queued before it closed: that is what is billed.
        d.sent("s1", 12_900);
        d.relay_closed("s1", 13_000);
        let out = drain(&mut d);
        let [Output::Usage(u)] = &out[..] else {
            panic!("{out:?}")
        };
        assert_eq!(
            (u.seconds_viewed, u.bytes_sent, u.started_ms),
            (11, 13_000, 1500)
        );
        d.relay_closed("s1", 14_000);
        assert!(drain(&mut d).is_empty(), "billed once");
        assert_eq!(d.recent().next().unwrap().by, "consumer");
        assert!(d.stop("s1", EndedBy::Consumer, None, 12_000).is_err());
    }

    #[test]
    fn the_cameras_own_filter_shares_its_stream_and_costs_no_encode() {
        let mut d = desk(0, LiveApproval::Automatic);
        d.start(req("s1", "a", FilterName::FacesPlates, Priority::Shared), 0)
            .unwrap();
        let out = drain(&mut d);
        assert!(!out.iter().any(|o| matches!(o, Output::OpenEncode(_))));
        assert_eq!(d.encodes_in_use(), 0);
        let e = d
            .start(req("s2", "a", FilterName::Strict, Priority::Owner), 0)
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ResourceExhausted);
    }

    #[test]
    fn sessions_on_the_same_camera_and_filter_share_one_encode() {
        let mut d = desk(1, LiveApproval::Automatic);
        d.start(req("s1", "a", FilterName::Strict, Priority::Shared), 0)
            .unwrap();
        d.start(req("s2", "a", FilterName::Strict, Priority::Shared), 0)
            .unwrap();
        let opens = drain(&mut d)
            .iter()
            .filter(|o| matches!(o, Output::OpenEncode(_)))
            .count();
        assert_eq!(opens, 1);
        d.stop("s1", EndedBy::Consumer, None, 5).unwrap();
        assert!(
            !drain(&mut d)
                .iter()
                .any(|o| matches!(o, Output::CloseEncode(_)))
        );
        d.stop("s2", EndedBy::Consumer, None, 5).unwrap();
        assert!(
            drain(&mut d)
                .iter()
                .any(|o| matches!(o, Output::CloseEncode(_)))
        );
    }

    #[test]
    fn an_owner_request_preempts_the_newest_shared_encode_and_a_shared_one_is_rejected() {
        let mut d = desk(2, LiveApproval::Automatic);
        d.start(req("old", "a", FilterName::Strict, Priority::Shared), 0)
            .unwrap();
        d.start(req("new", "b", FilterName::Strict, Priority::Shared), 10)
            .unwrap();
        drain(&mut d);
        let e = d
            .start(req("x", "c", FilterName::Strict, Priority::Shared), 20)
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ResourceExhausted);
        assert!(e.message().contains("all 2 live encodes"), "{e}");
        assert!(drain(&mut d).is_empty(), "a rejection changes nothing");
        d.start(req("police", "c", FilterName::Strict, Priority::Owner), 30)
            .unwrap();
        let out = drain(&mut d);
        assert_eq!(states(&out), ["new:preempted", "police:starting"]);
        // A relay that never reports its final count: billed after the wait all the same.
        d.tick(30 + FINAL_COUNT_WAIT_MS - 1);
        assert!(drain(&mut d).is_empty());
        d.tick(30 + FINAL_COUNT_WAIT_MS);
        let out = drain(&mut d);
        let Some(Output::Usage(u)) = out.iter().find(|o| matches!(o, Output::Usage(_))) else {
            panic!()
        };
        assert_eq!(u.outcome, "preempted");
        assert!(d.session("old").is_some());
        // Owner sessions are not preempted by owners.
        let e = d
            .start(req("p2", "b", FilterName::Silhouette, Priority::Owner), 40)
            .map(|_| ());
        assert!(e.is_ok(), "preempts 'old'");
        let e = d
            .start(req("p3", "b", FilterName::Motion, Priority::Owner), 50)
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ResourceExhausted);
    }

    #[test]
    fn an_operator_accepts_refuses_or_lets_it_time_out() {
        let mut d = desk(2, LiveApproval::Operator);
        assert_eq!(
            d.start(req("s1", "a", FilterName::Strict, Priority::Shared), 0)
                .unwrap(),
            Accepted::AwaitingOperator
        );
        assert_eq!(states(&drain(&mut d)), ["s1:awaiting_operator"]);
        assert_eq!(d.encodes_in_use(), 0, "waiting holds no encode");
        d.decide("s1", true, "olga", None, 5).unwrap();
        assert_eq!(states(&drain(&mut d)), ["s1:starting"]);
        assert!(d.decide("s1", true, "olga", None, 6).is_err());

        d.start(req("s2", "b", FilterName::Strict, Priority::Shared), 0)
            .unwrap();
        d.decide("s2", false, "olga", None, 7).unwrap();
        let out = drain(&mut d);
        assert_eq!(states(&out), ["s2:awaiting_operator", "s2:refused"]);
        assert!(
            !out.iter().any(|o| matches!(o, Output::Usage(_))),
            "nothing to bill"
        );
        let Output::Event(e) = &out[1] else { panic!() };
        assert_eq!(e["reason"], "all operators busy");
        assert_eq!(e["by"], "operator:olga");

        d.start(req("s3", "c", FilterName::Strict, Priority::Shared), 100)
            .unwrap();
        d.tick(100 + APPROVAL_TIMEOUT_MS - 1);
        d.tick(100 + APPROVAL_TIMEOUT_MS);
        assert_eq!(
            states(&drain(&mut d)),
            ["s3:awaiting_operator", "s3:refused"]
        );
    }

    #[test]
    fn duplicates_are_idempotent_and_reuse_of_an_ended_id_is_a_conflict() {
        let mut d = desk(2, LiveApproval::Automatic);
        let r = req("s1", "a", FilterName::Strict, Priority::Shared);
        d.start(r.clone(), 0).unwrap();
        assert_eq!(d.start(r.clone(), 1).unwrap(), Accepted::AlreadyKnown);
        let mut other = r.clone();
        other.filter = FilterName::Motion;
        assert_eq!(d.start(other, 2).unwrap_err().kind(), ErrorKind::Conflict);
        d.failed("s1", "endpoint answered 401".into(), 3);
        assert_eq!(d.start(r, 4).unwrap_err().kind(), ErrorKind::Conflict);
        let e = d
            .start(req("s9", "zz", FilterName::Strict, Priority::Shared), 0)
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotFound);
        let mut long = req("s8", "a", FilterName::Strict, Priority::Shared);
        long.max_duration_s = MAX_DURATION_S + 1;
        assert!(
            d.start(long, 0)
                .unwrap_err()
                .message()
                .contains("max_duration_s")
        );
    }

    #[test]
    fn the_maximum_duration_ends_a_session_and_a_removed_camera_fails_it() {
        let mut d = desk(2, LiveApproval::Automatic);
        d.start(req("s1", "a", FilterName::Strict, Priority::Shared), 1000)
            .unwrap();
        d.start(req("s2", "b", FilterName::Strict, Priority::Shared), 1000)
            .unwrap();
        d.connected("s1", 1200);
        drain(&mut d);
        d.tick(1000 + 600_000);
        let out = drain(&mut d);
        assert!(states(&out).contains(&"s1:ended".to_string()));
        assert!(states(&out).contains(&"s2:ended".to_string()));
        d.flush_bills();
        let out = drain(&mut d);
        let Some(Output::Usage(u)) = out
            .iter()
            .find(|o| matches!(o, Output::Usage(u) if u.session_id == "s1"))
        else {
            panic!()
        };
        assert_eq!(u.seconds_viewed, 600);
        let Some(Output::Usage(u)) = out
            .iter()
            .find(|o| matches!(o, Output::Usage(u) if u.session_id == "s2"))
        else {
            panic!()
        };
        assert_eq!(u.seconds_viewed, 0, "never got a frame");

        d.start(req("s3", "c", FilterName::Strict, Priority::Shared), 0)
            .unwrap();
        drain(&mut d);
        let mut cameras = BTreeMap::new();
        cameras.insert(
            "a".to_string(),
            CameraLive {
                filter: FilterName::FacesPlates,
                approval: LiveApproval::Automatic,
            },
        );
        d.set_cameras(cameras, 5);
        let out = drain(&mut d);
        assert_eq!(states(&out), ["s3:failed"]);
        assert!(out.contains(&Output::CloseEncode(EncodeKey {
            camera: "c".into(),
            filter: FilterName::Strict
        })));
    }

    #[test]
    fn a_preview_shares_or_takes_an_encode_is_refused_without_one_and_yields_to_the_owner() {
        let mut d = desk(1, LiveApproval::Automatic);
        // The camera's own filter: its stream, no encode.
        let own = d.open_preview("a", FilterName::FacesPlates, 0).unwrap();
        assert_eq!(
            d.preview_source(own),
            Some(PreviewSource::Camera("a".into()))
        );
        assert!(drain(&mut d).is_empty());
        // Another filter takes the free encode; a second preview of it shares it.
        let p1 = d.open_preview("a", FilterName::Silhouette, 10).unwrap();
        let p2 = d.open_preview("a", FilterName::Silhouette, 20).unwrap();
        let key = EncodeKey {
            camera: "a".into(),
            filter: FilterName::Silhouette,
        };
        assert_eq!(drain(&mut d), [Output::OpenEncode(key.clone())]);
        assert_eq!(
            d.preview_source(p2),
            Some(PreviewSource::Encode(key.clone()))
        );
        // A session on the same encode shares it too; a preview of a third pair finds none.
        d.start(req("s1", "a", FilterName::Silhouette, Priority::Shared), 30)
            .unwrap();
        assert!(
            !drain(&mut d)
                .iter()
                .any(|o| matches!(o, Output::OpenEncode(_)))
        );
        let e = d.open_preview("b", FilterName::Strict, 40).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ResourceExhausted);
        assert!(e.message().contains("own filter needs none"), "{e}");
        assert!(d.open_preview("zz", FilterName::Strict, 40).is_err());
        // The encode closes only when the last reader goes.
        d.close_preview(p1);
        d.stop("s1", EndedBy::Consumer, None, 50).unwrap();
        assert!(
            !drain(&mut d)
                .iter()
                .any(|o| matches!(o, Output::CloseEncode(_)))
        );
        d.close_preview(p2);
        assert_eq!(drain(&mut d), [Output::CloseEncode(key.clone())]);
        d.close_preview(p2); // twice is harmless
        assert!(drain(&mut d).is_empty());
        // A shared request cannot take a preview's encode; the owner's can.
        let p3 = d.open_preview("a", FilterName::Silhouette, 60).unwrap();
        drain(&mut d);
        let e = d
            .start(req("s2", "b", FilterName::Strict, Priority::Shared), 70)
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ResourceExhausted);
        d.start(req("s3", "b", FilterName::Strict, Priority::Owner), 80)
            .unwrap();
        let out = drain(&mut d);
        assert_eq!(out[0], Output::CloseEncode(key));
        assert!(matches!(&out[1], Output::OpenEncode(k) if k.camera == "b"));
        assert_eq!(d.preview_source(p3), None);
        // A reconfigured camera ends its previews.
        let p4 = d.open_preview("c", FilterName::FacesPlates, 90).unwrap();
        let mut cameras = d.cameras.clone();
        cameras.get_mut("c").unwrap().filter = FilterName::Strict;
        d.set_cameras(cameras, 100);
        assert_eq!(d.preview_source(p4), None);
        assert_eq!(
            d.preview_source(own),
            Some(PreviewSource::Camera("a".into()))
        );
    }
}
