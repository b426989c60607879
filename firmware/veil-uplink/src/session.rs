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
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{LastWill, Packet, PublishProperties};
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use serde_json::Value;
use tokio::sync::{mpsc, watch};
use veil_core::backoff::Backoff;
use veil_core::config::MqttConfig;
use veil_core::{Error, ErrorKind};

use crate::command::{self, Command};
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

/// How the session connects; built from `[mqtt]`.
#[derive(Clone)]
pub struct SessionSettings {
    pub host: String,
    pub port: u16,
    pub tls: Option<Arc<rustls::ClientConfig>>,
    pub client_id: String,
    pub username: Option<String>,
    pub password: Option<String>,
    pub topics: Topics,
    pub telemetry_every: Duration,
    pub keep_alive: Duration,
}

impl SessionSettings {
    pub fn from_config(config: &MqttConfig, device_id: &str) -> Result<SessionSettings, Error> {
        let address = config
            .address()
            .map_err(|e| Error::invalid_input(format!("mqtt.broker: {e}")))?;
        let tls = if address.tls {
            let ca = config.ca_file.as_deref().ok_or_else(|| {
                Error::new(
                    ErrorKind::NotConfigured,
                    "mqtt.ca_file is needed for mqtts://",
                )
            })?;
            let client = config
                .client_cert
                .as_deref()
                .zip(config.client_key.as_deref());
            Some(crate::tls::client_config(ca, client)?)
        } else {
            None
        };
        Ok(SessionSettings {
            host: address.host,
            port: address.port,
            tls,
            client_id: device_id.to_string(),
            username: config.username.clone(),
            password: config.password.clone(),
            topics: Topics::new(&config.topic_prefix, device_id),
            telemetry_every: Duration::from_secs(config.telemetry_seconds as u64),
            keep_alive: Duration::from_secs(config.keep_alive_seconds as u64),
        })
    }

    fn options(&self, will: Vec<u8>) -> MqttOptions {
        let mut o = MqttOptions::new(&self.client_id, &self.host, self.port);
        o.set_keep_alive(self.keep_alive);
        // A persistent session: the broker keeps the subscription and queued commands for a
        // day while the device is away.
        o.set_clean_start(false);
        o.set_session_expiry_interval(Some(86_400));
        o.set_max_packet_size(Some(1024 * 1024));
        o.set_connection_timeout(10);
        o.set_last_will(LastWill::new(
            self.topics.state(),
            will,
            QoS::AtLeastOnce,
            true,
            None,
        ));
        if let Some(user) = &self.username {
            o.set_credentials(user, self.password.clone().unwrap_or_default());
        }
        if let Some(tls) = &self.tls {
            o.set_transport(rumqttc::Transport::tls_with_config(
                rumqttc::TlsConfiguration::Rustls(tls.clone()),
            ));
        }
        o
    }
}

/// The session's state, for status pages and metrics.
#[derive(Debug, Default)]
pub struct SessionStatus {
    connected: AtomicBool,
    connections: AtomicU64,
    last_error: Mutex<Option<String>>,
    queued: AtomicU64,
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

/// A broker error in words a technician can act on.
pub(crate) fn explain(e: &rumqttc::v5::ConnectionError) -> String {
    use rumqttc::v5::ConnectionError as C;
    use rumqttc::v5::mqttbytes::v5::ConnectReturnCode as R;
    match e {
        C::ConnectionRefused(R::BadUserNamePassword) | C::ConnectionRefused(R::NotAuthorized) => {
            "broker refused the credentials (mqtt.username / mqtt.password, or the client \
             certificate)"
                .into()
        }
        C::ConnectionRefused(code) => format!("broker refused the connection: {code:?}"),
        C::Tls(t) => format!(
            "TLS failed: {t} (is mqtt.ca_file the CA that signed the broker's certificate, and \
             does the broker's name match mqtt.broker?)"
        ),
        C::Io(io) => format!("cannot reach the broker: {io}"),
        other => {
            let text = other.to_string();
            if text.contains("CertificateRequired") {
                format!(
                    "the broker requires a client certificate (mqtt.client_cert and \
                     mqtt.client_key): {text}"
                )
            } else {
                text
            }
        }
    }
}

/// Connects once with `settings` (as `<client id>-probe`, a clean session, no last will, so
/// the running session is not disturbed) and disconnects: the "test connection" button. The
/// error says what failed in words.
pub async fn probe(settings: &SessionSettings) -> Result<(), Error> {
    let mut probe = settings.clone();
    probe.client_id = format!("{}-probe-{}", settings.client_id, nonce() % 100_000);
    let mut options = probe.options(Vec::new());
    options.set_clean_start(true);
    options.set_session_expiry_interval(None);
    let (client, mut events) = AsyncClient::new(options, 10);
    let answer = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match events.poll().await {
                Ok(Event::Incoming(rumqttc::v5::Incoming::ConnAck(_))) => return Ok(()),
                Ok(_) => continue,
                Err(e) => return Err(explain(&e)),
            }
        }
    })
    .await;
    let _ = client.disconnect().await;
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

async fn run(
    settings: SessionSettings,
    device: Arc<dyn Device>,
    status: Arc<SessionStatus>,
    mut events: mpsc::UnboundedReceiver<Message>,
    mut stop: watch::Receiver<bool>,
) {
    let topics = settings.topics.clone();
    let will = serde_json::to_vec(&device.state(false)).expect("JSON values serialize");
    let (client, mut eventloop) = AsyncClient::new(settings.options(will), 256);
    let mut outbox = Outbox::new(60);
    let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
    let mut telemetry = tokio::time::interval(settings.telemetry_every);
    telemetry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            event = eventloop.poll() => match event {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    status.connected.store(true, Ordering::Relaxed);
                    status.connections.fetch_add(1, Ordering::Relaxed);
                    backoff.reset();
                    tracing::info!(host = %settings.host, port = settings.port, "connected to the fleet broker");
                    on_connect(&client, &topics, &*device).await;
                    flush(&client, &mut outbox, &status);
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let (client, topics, device) = (client.clone(), topics.clone(), device.clone());
                    tokio::spawn(async move { answer(&client, &topics, device, p).await });
                }
                Ok(_) => {}
                Err(e) => {
                    let was = status.connected.swap(false, Ordering::Relaxed);
                    let message = explain(&e);
                    if was {
                        tracing::warn!(error = %message, "lost the fleet broker; reconnecting");
                    } else {
                        tracing::warn!(error = %message, "cannot connect to the fleet broker");
                    }
                    status.set_error(message);
                    let delay = backoff.next_delay(jitter());
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = stop.changed() => break,
                    }
                }
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
                    let _ = client.publish(topics.state(), QoS::AtLeastOnce, true, offline).await;
                    let _ = client.disconnect().await;
                    // Let the event loop send both before the task ends.
                    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
                    while let Ok(Ok(ev)) = tokio::time::timeout_at(deadline, eventloop.poll()).await {
                        if matches!(ev, Event::Outgoing(rumqttc::Outgoing::Disconnect)) {
                            break;
                        }
                    }
                }
                break;
            }
        }
        status.queued.store(outbox.len() as u64, Ordering::Relaxed);
    }
    status.connected.store(false, Ordering::Relaxed);
}

async fn on_connect(client: &AsyncClient, topics: &Topics, device: &dyn Device) {
    let birth = serde_json::to_vec(&device.state(true)).expect("JSON values serialize");
    let registry = serde_json::to_vec(&device.registry()).expect("JSON values serialize");
    let _ = client
        .subscribe(topics.commands_filter(), QoS::AtLeastOnce)
        .await;
    let _ = client
        .publish(topics.state(), QoS::AtLeastOnce, true, birth)
        .await;
    let _ = client
        .publish(topics.registry(), QoS::AtLeastOnce, true, registry)
        .await;
}

/// Hands queued messages to the client until its request queue is full.
fn flush(client: &AsyncClient, outbox: &mut Outbox, status: &SessionStatus) {
    while let Some((m, event)) = outbox.pop() {
        let qos = if event {
            QoS::AtLeastOnce
        } else {
            QoS::AtMostOnce
        };
        if let Err(e) = client.try_publish(m.topic.clone(), qos, m.retain, m.payload.clone()) {
            tracing::debug!(error = %e, "client queue full; keeping the message");
            outbox.unpop(m, event);
            break;
        }
    }
    status.queued.store(outbox.len() as u64, Ordering::Relaxed);
}

/// Checks a command, carries it out, and replies.
async fn answer(
    client: &AsyncClient,
    topics: &Topics,
    device: Arc<dyn Device>,
    p: rumqttc::v5::mqttbytes::v5::Publish,
) {
    let topic = String::from_utf8_lossy(&p.topic).into_owned();
    let Some(name) = topics.command_name(&topic).map(str::to_string) else {
        return;
    };
    let props = p.properties.clone().unwrap_or_default();
    let reply = match command::parse(&name, &p.payload) {
        Ok(request) => {
            let id = request.id.clone();
            if matches!(request.command, Command::RegistryGet) {
                let registry =
                    serde_json::to_vec(&device.registry()).expect("JSON values serialize");
                let _ = client
                    .publish(topics.registry(), QoS::AtLeastOnce, true, registry)
                    .await;
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
    let to = props
        .response_topic
        .clone()
        .unwrap_or_else(|| topics.reply(reply["request_id"].as_str().unwrap_or("unknown")));
    let reply_props = PublishProperties {
        correlation_data: props.correlation_data.clone(),
        content_type: Some("application/json".into()),
        ..Default::default()
    };
    let payload = Bytes::from(serde_json::to_vec(&reply).expect("JSON values serialize"));
    if let Err(e) = client
        .publish_with_properties(to, QoS::AtLeastOnce, false, payload, reply_props)
        .await
    {
        tracing::warn!(error = %e, "cannot queue a reply");
    }
}
