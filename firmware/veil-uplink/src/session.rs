//! The device's MQTT 5 session: TLS with the fleet CA, a retained last will that marks the
//! device offline, a persistent session (commands sent while the device was away arrive when it
//! is back), reconnection with jittered exponential backoff, and on every connection the birth
//! state and the registry (retained), the command subscription (QoS 1), then whatever waited
//! in the outbox. Replies go to the command's MQTT 5 response topic with its correlation data,
//! or to `reply/<request_id>`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use serde_json::Value;
use tokio::sync::{mpsc, watch};
use veil_core::backoff::Backoff;
use veil_core::{Error, ErrorKind};

use crate::command::{self, Command};
pub use crate::link::SessionSettings;
use crate::link::{Client, EventLoop, Failure, Incoming, Protocol};
use crate::outbox::{Message, Outbox};
use crate::topics::Topics;

/// What the session asks of the device. Calls may block (a snapshot waits for a frame): they
/// run on blocking threads.
pub trait Device: Send + Sync + 'static {
    /// The birth state (`online: true`); the last will is the same with `online: false`.
    fn state(&self, online: bool) -> Value;
    fn registry(&self) -> Value;
    fn telemetry(&self) -> Value;
    /// Carries out a checked command; the result is the reply's `result`.
    fn handle(&self, command: &Command) -> Result<Value, Error>;
}

/// The session's state, for status pages and metrics.
#[derive(Debug, Default)]
pub struct SessionStatus {
    connected: AtomicBool,
    connections: AtomicU64,
    last_error: Mutex<Option<String>>,
    queued: AtomicU64,
    /// Set once the broker turned MQTT 5 away: the session speaks 3.1.1 from then on.
    v311: AtomicBool,
}

impl SessionStatus {
    pub fn connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }
    /// How many times the session (re)connected.
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }
    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
    /// The protocol of the session: `5`, or `3.1.1` for a broker that refused 5.
    pub fn protocol(&self) -> &'static str {
        if self.v311.load(Ordering::Relaxed) {
            crate::link::Protocol::V311.as_str()
        } else {
            crate::link::Protocol::V5.as_str()
        }
    }
    /// Messages waiting for the broker.
    pub fn queued(&self) -> u64 {
        self.queued.load(Ordering::Relaxed)
    }
    fn set_error(&self, e: String) {
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
    }
}

/// Publishes events into a session's outbox; cheap to clone.
#[derive(Clone)]
pub struct EventSink {
    tx: mpsc::UnboundedSender<Message>,
    topic: String,
}

impl EventSink {
    pub fn send(&self, event: &Value) {
        let _ = self.tx.send(Message {
            topic: self.topic.clone(),
            payload: serde_json::to_vec(event).expect("JSON values serialize"),
            retain: false,
        });
    }
}

/// Publishes the registry again (retained) when cameras or thumbnails change; while the
/// broker is away it does nothing, since every connect publishes the registry anew.
#[derive(Clone)]
pub struct RegistrySink {
    tx: mpsc::UnboundedSender<Message>,
    topic: String,
    status: Arc<SessionStatus>,
}

impl RegistrySink {
    pub fn send(&self, registry: &Value) {
        if self.status.connected() {
            let _ = self.tx.send(Message {
                topic: self.topic.clone(),
                payload: serde_json::to_vec(registry).expect("JSON values serialize"),
                retain: true,
            });
        }
    }
}

pub struct Session {
    status: Arc<SessionStatus>,
    events: mpsc::UnboundedSender<Message>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    topics: Topics,
}

/// Connects once with `settings` (as `<client id>-probe`, a clean session, no last will, so
/// the running session is not disturbed) and disconnects: the "test connection" button. The
/// error says what failed in words.
pub async fn probe(settings: &SessionSettings) -> Result<(), Error> {
    let mut probe = settings.clone();
    probe.client_id = format!("{}-probe-{}", settings.client_id, nonce() % 100_000);
    let answer = tokio::time::timeout(Duration::from_secs(10), async {
        let mut protocol = Protocol::V5;
        loop {
            let (client, mut events) = crate::link::connect(&probe, protocol, Vec::new(), true, 10);
            let outcome = loop {
                match events.poll().await {
                    Ok(Incoming::ConnAck) => break Ok(()),
                    Ok(_) => continue,
                    Err(f) => break Err(f),
                }
            };
            client.disconnect().await;
            match outcome {
                Ok(()) => return Ok(()),
                Err(f) if f.protocol_refused && protocol == Protocol::V5 => {
                    protocol = Protocol::V311;
                }
                Err(f) => return Err(f.message),
            }
        }
    })
    .await;
    match answer {
        Ok(Ok(())) => Ok(()),
        Ok(Err(reason)) => Err(Error::new(ErrorKind::Unavailable, reason)),
        Err(_) => Err(Error::new(
            ErrorKind::DeadlineExceeded,
            format!(
                "no answer from the broker {}:{} within 10 s",
                settings.host, settings.port
            ),
        )),
    }
}

/// A few changing digits for client ids and jitter.
pub(crate) fn nonce() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos())
}

fn jitter() -> f64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    (nanos % 1000) as f64 / 1000.0
}

impl Session {
    /// Starts the session on the current tokio runtime.
    pub fn start(settings: SessionSettings, device: Arc<dyn Device>) -> Session {
        let status = Arc::new(SessionStatus::default());
        let (events, events_rx) = mpsc::unbounded_channel();
        let (stop, stop_rx) = watch::channel(false);
        let topics = settings.topics.clone();
        let task = tokio::spawn(run(settings, device, status.clone(), events_rx, stop_rx));
        Session {
            status,
            events,
            stop,
            task,
            topics,
        }
    }

    pub fn status(&self) -> &Arc<SessionStatus> {
        &self.status
    }

    /// Publishes an event (QoS 1); held in the outbox while the broker is away.
    pub fn publish_event(&self, event: &Value) {
        self.event_sink().send(event);
    }

    /// A handle that publishes the registry again from anywhere.
    pub fn registry_sink(&self) -> RegistrySink {
        RegistrySink {
            tx: self.events.clone(),
            topic: self.topics.registry(),
            status: self.status.clone(),
        }
    }

    /// A handle that publishes events from anywhere (threads included).
    pub fn event_sink(&self) -> EventSink {
        EventSink {
            tx: self.events.clone(),
            topic: self.topics.events(),
        }
    }

    /// Marks the device offline (retained state), disconnects, and ends the session.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(5), self.task).await;
    }
}

/// An event loop with one `poll` under way, which owns the loop until it returns it.
type Polling = std::pin::Pin<
    Box<dyn std::future::Future<Output = (EventLoop, Result<Incoming, Failure>)> + Send>,
>;

/// Polls `events` once, after `delay` (the backoff before a reconnection). The session keeps
/// this future across its `select!`: rumqttc makes the TCP, TLS and MQTT handshakes inside
/// `poll`, so dropping a poll that lost a race to a timer would cut a half-made connection
/// and start over, and a slow link would never get connected.
fn poll_after(mut events: EventLoop, delay: Duration) -> Polling {
    Box::pin(async move {
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let outcome = events.poll().await;
        (events, outcome)
    })
}

/// The last will: the state with `online: false` but without `uptime_seconds` and `time`,
/// which nobody knows when the broker publishes it (the device is gone by then; the will is
/// fixed when the connection is made). A clean stop publishes the full state itself.
fn last_will(device: &dyn Device) -> Vec<u8> {
    let mut state = device.state(false);
    if let Some(m) = state.as_object_mut() {
        m.remove("uptime_seconds");
        m.remove("time");
    }
    serde_json::to_vec(&state).expect("JSON values serialize")
}

async fn run(
    settings: SessionSettings,
    device: Arc<dyn Device>,
    status: Arc<SessionStatus>,
    mut events: mpsc::UnboundedReceiver<Message>,
    mut stop: watch::Receiver<bool>,
) {
    let topics = settings.topics.clone();
    let will = last_will(&*device);
    let mut protocol = Protocol::V5;
    let (mut client, eventloop) =
        crate::link::connect(&settings, protocol, will.clone(), false, 256);
    let mut polling = poll_after(eventloop, Duration::ZERO);
    let mut outbox = Outbox::new(60);
    let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
    let mut telemetry = tokio::time::interval(settings.telemetry_every);
    telemetry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut spoke_5 = false;
    loop {
        tokio::select! {
            (mut eventloop, event) = &mut polling => {
                let mut delay = Duration::ZERO;
                match event {
                    Ok(Incoming::ConnAck) => {
                        status.connected.store(true, Ordering::Relaxed);
                        status.connections.fetch_add(1, Ordering::Relaxed);
                        spoke_5 |= protocol == Protocol::V5;
                        backoff.reset();
                        tracing::info!(host = %settings.host, port = settings.port, protocol = protocol.as_str(), "connected to the fleet broker");
                        on_connect(&client, &topics, &*device).await;
                        flush(&client, &mut outbox, &status);
                    }
                    Ok(Incoming::Publish(p)) => {
                        let (client, topics, device) = (client.clone(), topics.clone(), device.clone());
                        tokio::spawn(async move { answer(&client, &topics, device, p).await });
                    }
                    Ok(Incoming::Other) => {}
                    Err(failure) if failure.protocol_refused && protocol == Protocol::V5 && !spoke_5 => {
                        // A broker that never took MQTT 5 from this device: speak 3.1.1 to it.
                        tracing::warn!(error = %failure.message, "the fleet broker refused MQTT 5; using MQTT 3.1.1");
                        protocol = Protocol::V311;
                        status.v311.store(true, Ordering::Relaxed);
                        (client, eventloop) = crate::link::connect(&settings, protocol, will.clone(), false, 256);
                    }
                    Err(failure) => {
                        let was = status.connected.swap(false, Ordering::Relaxed);
                        if was {
                            tracing::warn!(error = %failure.message, "lost the fleet broker; reconnecting");
                        } else {
                            tracing::warn!(error = %failure.message, "cannot connect to the fleet broker");
                        }
                        status.set_error(failure.message);
                        delay = backoff.next_delay(jitter());
                    }
                }
                polling = poll_after(eventloop, delay);
            },
            _ = telemetry.tick() => {
                let payload = serde_json::to_vec(&device.telemetry()).expect("JSON values serialize");
                outbox.push_telemetry(Message { topic: topics.telemetry(), payload, retain: false });
                if status.connected() {
                    flush(&client, &mut outbox, &status);
                }
            }
            Some(m) = events.recv() => {
                outbox.push_event(m);
                if status.connected() {
                    flush(&client, &mut outbox, &status);
                }
            }
            _ = stop.changed() => {
                if status.connected() {
                    let offline = serde_json::to_vec(&device.state(false)).expect("JSON values serialize");
                    let _ = client.publish(topics.state(), true, offline).await;
                    client.disconnect().await;
                    // Let the event loop send both before the task ends.
                    let limit = Duration::from_secs(2);
                    let _ = tokio::time::timeout(limit, async {
                        let (mut eventloop, _) = polling.await;
                        eventloop.drain_until_disconnect(limit).await;
                    })
                    .await;
                }
                break;
            }
        }
        status.queued.store(outbox.len() as u64, Ordering::Relaxed);
    }
    status.connected.store(false, Ordering::Relaxed);
}

async fn on_connect(client: &Client, topics: &Topics, device: &dyn Device) {
    let birth = serde_json::to_vec(&device.state(true)).expect("JSON values serialize");
    let registry = serde_json::to_vec(&device.registry()).expect("JSON values serialize");
    client.subscribe(topics.commands_filter()).await;
    let _ = client.publish(topics.state(), true, birth).await;
    let _ = client.publish(topics.registry(), true, registry).await;
}

/// Hands queued messages to the client until its request queue is full.
fn flush(client: &Client, outbox: &mut Outbox, status: &SessionStatus) {
    while let Some((m, event)) = outbox.pop() {
        if let Err(e) = client.try_publish(m.topic.clone(), event, m.retain, m.payload.clone()) {
            tracing::debug!(error = %e, "client queue full; keeping the message");
            outbox.unpop(m, event);
            break;
        }
    }
    status.queued.store(outbox.len() as u64, Ordering::Relaxed);
}

/// Checks a command, carries it out, and replies.
async fn answer(
    client: &Client,
    topics: &Topics,
    device: Arc<dyn Device>,
    p: crate::link::Message,
) {
    let Some(name) = topics.command_name(&p.topic).map(str::to_string) else {
        return;
    };
    let reply = match command::parse(&name, &p.payload) {
        Ok(request) => {
            let id = request.id.clone();
            if matches!(request.command, Command::RegistryGet) {
                let registry =
                    serde_json::to_vec(&device.registry()).expect("JSON values serialize");
                let _ = client.publish(topics.registry(), true, registry).await;
            }
            let outcome = tokio::task::spawn_blocking(move || device.handle(&request.command))
                .await
                .unwrap_or_else(|_| Err(Error::internal("the command handler crashed")));
            match outcome {
                Ok(result) => command::reply_ok(&id, result),
                Err(e) => command::reply_error(Some(&id), &e),
            }
        }
        Err(e) => {
            tracing::info!(command = %name, error = %e, "command rejected");
            command::reply_error(command::request_id_of(&p.payload).as_deref(), &e)
        }
    };
    // A response topic outside the device's own reply branch is ignored: a command must not
    // make the device publish elsewhere.
    let to = p
        .response_topic
        .clone()
        .filter(|t| topics.is_reply_topic(t))
        .unwrap_or_else(|| topics.reply(reply["request_id"].as_str().unwrap_or("unknown")));
    let payload = Bytes::from(serde_json::to_vec(&reply).expect("JSON values serialize"));
    if let Err(e) = client.reply(to, payload, p.correlation.clone()).await {
        tracing::warn!(error = %e, "cannot queue a reply");
    }
}
