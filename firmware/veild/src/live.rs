//! Live view sessions on the running device: the desk's decisions (`veil_core::live`) carried
//! out — encodes opened on the cameras, WHIP relays started and stopped, events published,
//! usage records kept in `state/live.sqlite3` until the fleet acknowledges them.
//!
//! A relay only ever reads a privacy stage's output: the camera's own anonymized stream when
//! the session's filter is the camera's, else a branch with its own engine (masks included,
//! and kept up to date by the mask book). Frames as captured have no path here.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock, Weak};

use rusqlite::{Connection, params};
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc, watch};
use veil_core::config::FilterName;
use veil_core::live::{
    CameraLive, EncodeKey, EndedBy, LiveDesk, Output, PreviewSource, StartRequest, UsageRecord,
};
use veil_core::{Clock, Error, ErrorKind};
use veil_media::h264::EncodedFrame;
use veil_media::pipeline::{Branch, KeyframeTrigger};
use veil_uplink::session::EventSink;
use veil_uplink::whip::{EncodeFeed, RelayEvent, RelaySettings};

/// Seconds between checkpoints of running sessions for billing (a power loss costs at most
/// this much of a session's record).
pub const CHECKPOINT_SECS: u64 = 10;

/// What the service needs of the cameras.
pub trait LiveCameras: Send + Sync + 'static {
    /// The camera's own anonymized stream and its keyframe trigger.
    fn own_stream(
        &self,
        camera: &str,
    ) -> Option<(broadcast::Receiver<EncodedFrame>, KeyframeTrigger)>;
    /// A new anonymized encode of the camera through `filter`.
    fn branch(&self, camera: &str, filter: FilterName) -> Result<Branch, Error>;
    /// A JPEG of the camera's own anonymized output.
    fn snapshot(&self, camera: &str, max_width: u32) -> Result<Vec<u8>, Error>;
}

/// How long a preview waits for a picture of an encode before it reports none.
const PREVIEW_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// The page's preview of a camera through a filter, open until dropped: the pictures leave
/// the same privacy stage a live session with that filter reads.
pub struct LivePreview {
    id: u64,
    camera: String,
    filter: FilterName,
    service: Weak<LiveService>,
}

impl LivePreview {
    /// A JPEG of the next picture, at most `max_width` wide.
    pub fn jpeg(&self, max_width: u32) -> Result<Vec<u8>, Error> {
        let ended = || {
            Error::new(
                ErrorKind::Unavailable,
                format!(
                    "the preview of camera '{}' through '{}' ended: the owner's own live use \
                     took its encode, or the camera was reconfigured",
                    self.camera,
                    self.filter.as_str()
                ),
            )
        };
        let service = self.service.upgrade().ok_or_else(ended)?;
        let source = service
            .desk
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .preview_source(self.id)
            .ok_or_else(ended)?;
        match source {
            PreviewSource::Camera(camera) => service
                .cameras
                .get()
                .and_then(Weak::upgrade)
                .ok_or_else(ended)?
                .snapshot(&camera, max_width),
            PreviewSource::Encode(key) => {
                let snapshotter = service
                    .encodes
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get(&key)
                    .map(Branch::snapshotter)
                    .ok_or_else(|| {
                        Error::new(
                            ErrorKind::Unavailable,
                            format!(
                                "the encode of camera '{}' through '{}' is not running (see the log)",
                                key.camera,
                                key.filter.as_str()
                            ),
                        )
                    })?;
                let frame = snapshotter.take(PREVIEW_WAIT).ok_or_else(|| {
                    Error::new(
                        ErrorKind::Unavailable,
                        format!(
                            "camera '{}' through '{}' delivered no picture within {} s",
                            key.camera,
                            key.filter.as_str(),
                            PREVIEW_WAIT.as_secs()
                        ),
                    )
                })?;
                veil_media::thumbnail::jpeg(&frame, max_width, 80)
            }
        }
    }
}

impl veil_web::PreviewFeed for LivePreview {
    fn jpeg(&self, max_width: u32) -> Result<Vec<u8>, Error> {
        LivePreview::jpeg(self, max_width)
    }
}

impl Drop for LivePreview {
    fn drop(&mut self) {
        if let Some(service) = self.service.upgrade() {
            // The viewer's stream ends on an async worker; closing an encode joins its threads.
            let id = self.id;
            let runtime = service.runtime.clone();
            runtime.spawn_blocking(move || service.with_desk(|d, _| d.close_preview(id)));
        }
    }
}

pub struct LiveService {
    desk: Mutex<LiveDesk>,
    clock: Arc<dyn Clock>,
    runtime: tokio::runtime::Handle,
    cameras: OnceLock<Weak<dyn LiveCameras>>,
    encodes: Mutex<HashMap<EncodeKey, Branch>>,
    relays: Mutex<HashMap<String, watch::Sender<bool>>>,
    usage: Mutex<Connection>,
    events: Mutex<Option<EventSink>>,
    audit: Arc<veil_store::audit::AuditLog>,
    /// This service, for the relay tasks' callbacks.
    me: Weak<LiveService>,
}

fn db_err(e: rusqlite::Error) -> Error {
    Error::wrap(
        ErrorKind::Internal,
        "live usage records (state/live.sqlite3)",
        e,
    )
}

impl LiveService {
    /// Opens the usage book; records of sessions that were running when the device last
    /// stopped become final ones (outcome `failed`, the restart as reason).
    pub fn open(
        state: &Path,
        capacity: u32,
        clock: Arc<dyn Clock>,
        audit: Arc<veil_store::audit::AuditLog>,
    ) -> Result<Arc<LiveService>, Error> {
        let db = Connection::open(state.join("live.sqlite3")).map_err(db_err)?;
        db.execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = FULL;
             CREATE TABLE IF NOT EXISTS usage (
                 session_id TEXT PRIMARY KEY,
                 record TEXT NOT NULL,
                 ended_ms INTEGER NOT NULL,
                 acknowledged_ms INTEGER
             );
             CREATE TABLE IF NOT EXISTS running (
                 session_id TEXT PRIMARY KEY,
                 record TEXT NOT NULL
             );",
        )
        .map_err(db_err)?;
        let interrupted = recover_running(&db).map_err(db_err)?;
        if interrupted > 0 {
            tracing::warn!(
                sessions = interrupted,
                "live sessions were cut by a restart; their usage is recorded up to the last checkpoint"
            );
        }
        Ok(Arc::new_cyclic(|me| LiveService {
            desk: Mutex::new(LiveDesk::new(capacity)),
            clock,
            runtime: tokio::runtime::Handle::current(),
            cameras: OnceLock::new(),
            encodes: Mutex::new(HashMap::new()),
            relays: Mutex::new(HashMap::new()),
            usage: Mutex::new(db),
            events: Mutex::new(None),
            audit,
            me: me.clone(),
        }))
    }

    pub fn attach(&self, cameras: Weak<dyn LiveCameras>) {
        let _ = self.cameras.set(cameras);
    }

    /// Where events go once the fleet session runs; the records not yet acknowledged are
    /// published again (the billing side deduplicates by session id).
    pub fn set_events(&self, sink: EventSink) {
        *self.events.lock().unwrap_or_else(|e| e.into_inner()) = Some(sink);
    }

    pub fn republish_pending(&self) {
        if let Ok(records) = self.usage_records(true) {
            for r in records {
                self.publish(usage_event(&r));
            }
        }
    }

    fn now(&self) -> u64 {
        self.clock.wall_millis()
    }

    /// Runs one desk mutation, then carries out everything it decided.
    fn with_desk<T>(&self, f: impl FnOnce(&mut LiveDesk, u64) -> T) -> T {
        let now = self.now();
        let (value, outputs) = {
            let mut desk = self.desk.lock().unwrap_or_else(|e| e.into_inner());
            let value = f(&mut desk, now);
            (
                value,
                std::iter::from_fn(|| desk.poll()).collect::<Vec<_>>(),
            )
        };
        for output in outputs {
            self.apply(output);
        }
        value
    }

    pub fn set_cameras(&self, cameras: BTreeMap<String, CameraLive>) {
        self.with_desk(|d, now| d.set_cameras(cameras, now));
    }

    pub fn start(&self, request: StartRequest) -> Result<Value, Error> {
        let id = request.id.clone();
        let accepted = self.with_desk(|d, now| d.start(request, now))?;
        Ok(json!({ "session_id": id, "state": accepted }))
    }

    pub fn stop(&self, id: &str, by: EndedBy, reason: Option<&str>) -> Result<Value, Error> {
        let owner = matches!(by, EndedBy::Operator(_));
        let label = by.label();
        self.with_desk(|d, now| d.stop(id, by, reason, now))?;
        if owner {
            self.audit(&label, "live.stop", id, json!({ "reason": reason }));
        }
        Ok(json!({ "session_id": id, "state": "ended" }))
    }

    /// Opens the page's preview of `camera` through `filter` (see [`LiveDesk::open_preview`]).
    pub fn open_preview(&self, camera: &str, filter: FilterName) -> Result<LivePreview, Error> {
        let id = self.with_desk(|d, now| d.open_preview(camera, filter, now))?;
        Ok(LivePreview {
            id,
            camera: camera.into(),
            filter,
            service: self.me.clone(),
        })
    }

    /// An operator's answer on the web page.
    pub fn decide(
        &self,
        id: &str,
        accept: bool,
        by: &str,
        reason: Option<&str>,
    ) -> Result<Value, Error> {
        self.with_desk(|d, now| d.decide(id, accept, by, reason, now))?;
        let action = if accept { "live.accept" } else { "live.refuse" };
        self.audit(by, action, id, json!({ "reason": reason }));
        Ok(json!({ "session_id": id, "accepted": accept }))
    }

    /// Sessions open and recently ended, and the capacity in use.
    pub fn list(&self) -> Value {
        let desk = self.desk.lock().unwrap_or_else(|e| e.into_inner());
        // Each entry carries `session_id` as events and usage records name it (`id` stays for
        // the page and older consoles).
        let named = |v: Value| match v {
            Value::Object(mut m) => {
                if let Some(id) = m.get("id").cloned() {
                    m.insert("session_id".into(), id);
                }
                Value::Object(m)
            }
            other => other,
        };
        let sessions: Vec<Value> = desk.sessions().map(|s| named(json!(s))).collect();
        let recent: Vec<Value> = desk.recent().map(|s| named(json!(s))).collect();
        json!({
            "capacity": desk.capacity(),
            "encodes_in_use": desk.encodes_in_use(),
            "sessions": sessions,
            "recent": recent,
        })
    }

    pub fn usage_records(&self, pending_only: bool) -> Result<Vec<UsageRecord>, Error> {
        let db = self.usage.lock().unwrap_or_else(|e| e.into_inner());
        let sql = if pending_only {
            "SELECT record FROM usage WHERE acknowledged_ms IS NULL ORDER BY ended_ms"
        } else {
            "SELECT record FROM usage ORDER BY ended_ms DESC LIMIT 1000"
        };
        let mut stmt = db.prepare(sql).map_err(db_err)?;
        let rows = stmt
            .query_map([], |r| r.get::<_, String>(0))
            .map_err(db_err)?;
        Ok(rows
            .filter_map(|r| r.ok())
            .filter_map(|text| serde_json::from_str(&text).ok())
            .collect())
    }

    pub fn acknowledge(&self, ids: &[String]) -> Result<Value, Error> {
        let now = self.now();
        let db = self.usage.lock().unwrap_or_else(|e| e.into_inner());
        let mut done = 0;
        for id in ids {
            done += db
                .execute(
                    "UPDATE usage SET acknowledged_ms = ?1 WHERE session_id = ?2 AND acknowledged_ms IS NULL",
                    params![now as i64, id],
                )
                .map_err(db_err)?;
        }
        Ok(json!({ "acknowledged": done }))
    }

    /// Ends every session (the device is stopping): each gets its usage record now, and its
    /// relay deletes the endpoint's resource.
    pub fn shutdown(&self) {
        let ids: Vec<String> = {
            let desk = self.desk.lock().unwrap_or_else(|e| e.into_inner());
            desk.sessions().map(|s| s.id.clone()).collect()
        };
        for id in ids {
            let _ = self.with_desk(|d, now| {
                d.stop(&id, EndedBy::Device, Some("the device is stopping"), now)
            });
        }
        // The relays' final counts may not come before the device stops: bill what is known.
        self.with_desk(|d, _| d.flush_bills());
    }

    /// Time-outs, and a checkpoint of every running session for billing.
    pub fn tick(&self, checkpoint: bool) {
        self.with_desk(|d, now| d.tick(now));
        if checkpoint {
            let now = self.now();
            let running: Vec<UsageRecord> = {
                let desk = self.desk.lock().unwrap_or_else(|e| e.into_inner());
                desk.sessions()
                    .filter(|s| s.accepted_ms.is_some())
                    .map(|s| s.usage(now, "failed", "the device restarted during the session"))
                    .collect()
            };
            let db = self.usage.lock().unwrap_or_else(|e| e.into_inner());
            for r in running {
                let text = serde_json::to_string(&r).expect("records serialize");
                if let Err(e) = db.execute(
                    "INSERT OR REPLACE INTO running (session_id, record) VALUES (?1, ?2)",
                    params![r.session_id, text],
                ) {
                    tracing::warn!(error = %e, "cannot checkpoint a live session's usage");
                }
            }
        }
    }

    fn apply(&self, output: Output) {
        match output {
            Output::OpenEncode(key) => {
                let Some(cameras) = self.cameras.get().and_then(Weak::upgrade) else {
                    return;
                };
                match cameras.branch(&key.camera, key.filter) {
                    Ok(branch) => {
                        self.encodes
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .insert(key, branch);
                    }
                    // The Connect that follows finds no encode and fails the session.
                    Err(e) => {
                        tracing::warn!(camera = %key.camera, error = %e, "cannot open a live encode")
                    }
                }
            }
            Output::CloseEncode(key) => {
                let branch = self
                    .encodes
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&key);
                drop(branch); // joins its threads
            }
            Output::Connect(session) => self.connect(session),
            Output::Disconnect(id) => {
                if let Some(stop) = self
                    .relays
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&id)
                {
                    let _ = stop.send(true);
                }
            }
            Output::Event(event) => {
                tracing::info!(session = %event["session_id"], state = %event["state"], reason = %event["reason"], "live session");
                self.publish(event);
            }
            Output::Usage(record) => {
                self.keep(&record);
                self.publish(usage_event(&record));
            }
        }
    }

    fn keep(&self, record: &UsageRecord) {
        let text = serde_json::to_string(record).expect("records serialize");
        let mut db = self.usage.lock().unwrap_or_else(|e| e.into_inner());
        let stored = db.transaction().and_then(|tx| {
            tx.execute(
                "INSERT OR IGNORE INTO usage (session_id, record, ended_ms) VALUES (?1, ?2, ?3)",
                params![record.session_id, text, record.ended_ms as i64],
            )?;
            tx.execute(
                "DELETE FROM running WHERE session_id = ?1",
                params![record.session_id],
            )?;
            tx.commit()
        });
        if let Err(e) = stored {
            tracing::error!(session = %record.session_id, error = %e, "cannot keep a live usage record");
        }
    }

    fn publish(&self, mut event: Value) {
        event["time"] = jiff::Timestamp::now()
            .round(jiff::Unit::Millisecond)
            .map(|t| t.to_string())
            .unwrap_or_default()
            .into();
        if let Some(sink) = &*self.events.lock().unwrap_or_else(|e| e.into_inner()) {
            sink.send(&event);
        }
    }

    fn audit(&self, actor: &str, action: &str, subject: &str, after: Value) {
        if let Err(e) = self
            .audit
            .append(actor, action, subject, Value::Null, after)
        {
            tracing::error!(error = %e, "cannot write the audit log");
        }
    }

    fn feed(&self, session: &veil_core::live::Session) -> Option<EncodeFeed> {
        if session.own_encode {
            let encodes = self.encodes.lock().unwrap_or_else(|e| e.into_inner());
            let branch = encodes.get(&session.key())?;
            Some(EncodeFeed::new(
                branch.subscribe(),
                branch.keyframe_trigger(),
            ))
        } else {
            let cameras = self.cameras.get().and_then(Weak::upgrade)?;
            let (rx, keyframe) = cameras.own_stream(&session.camera)?;
            Some(EncodeFeed::new(rx, keyframe))
        }
    }

    fn connect(&self, session: veil_core::live::Session) {
        let Some(feed) = self.feed(&session) else {
            let reason = format!("camera '{}' has no running encode to share", session.camera);
            self.with_desk(|d, now| d.failed(&session.id, reason, now));
            return;
        };
        let mut settings = RelaySettings::new(session.endpoint.clone(), session.token.clone());
        settings.ice_servers = session
            .ice_servers
            .iter()
            .map(|s| veil_uplink::whip::IceServer {
                url: s.url.clone(),
                username: s.username.clone(),
                credential: s.credential.clone(),
            })
            .collect();
        settings.relay_only = session.relay_only;
        let (stop, stop_rx) = watch::channel(false);
        let (tx, mut rx) = mpsc::unbounded_channel();
        self.relays
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(session.id.clone(), stop);
        let me = self.me.clone();
        let id = session.id.clone();
        self.runtime
            .spawn(veil_uplink::whip::relay(settings, feed, tx, stop_rx));
        self.runtime.spawn(async move {
            while let Some(event) = rx.recv().await {
                let Some(service) = me.upgrade() else { return };
                let id = id.clone();
                let _ = tokio::task::spawn_blocking(move || service.on_relay(&id, event)).await;
            }
        });
    }

    fn on_relay(&self, id: &str, event: RelayEvent) {
        match event {
            RelayEvent::Answered { ice_servers } => {
                if !ice_servers.is_empty() {
                    tracing::debug!(
                        session = id,
                        servers = ice_servers.len(),
                        "endpoint offers ICE servers; host candidates are used"
                    );
                }
            }
            RelayEvent::FirstFrame => self.with_desk(|d, now| d.connected(id, now)),
            RelayEvent::Sent { bytes } => self.with_desk(|d, _| d.sent(id, bytes)),
            RelayEvent::Ended { bytes } => self.with_desk(|d, _| d.relay_closed(id, bytes)),
            RelayEvent::Failed { reason, bytes } => {
                self.relays
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(id);
                self.with_desk(|d, now| {
                    d.sent(id, bytes);
                    d.failed(id, reason, now)
                })
            }
        }
    }
}

fn usage_event(r: &UsageRecord) -> Value {
    json!({ "type": "live.usage", "record": r })
}

/// Turns the checkpoints of sessions cut by a restart into final records.
fn recover_running(db: &Connection) -> rusqlite::Result<usize> {
    let rows: Vec<(String, String)> = {
        let mut stmt = db.prepare("SELECT session_id, record FROM running")?;
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?
    };
    for (id, text) in &rows {
        let ended = serde_json::from_str::<UsageRecord>(text)
            .map(|r| r.ended_ms as i64)
            .unwrap_or(0);
        db.execute(
            "INSERT OR IGNORE INTO usage (session_id, record, ended_ms) VALUES (?1, ?2, ?3)",
            params![id, text, ended],
        )?;
        db.execute("DELETE FROM running WHERE session_id = ?1", params![id])?;
    }
    Ok(rows.len())
}
