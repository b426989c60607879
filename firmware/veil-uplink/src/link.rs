//! One MQTT connection of either protocol: 5 (the device's own) or 3.1.1 (for brokers that
//! turn 5 away). The session speaks to a [`Client`] and reads an [`EventLoop`]; only this file
//! knows which protocol is underneath. 3.1.1 has no response topic, correlation data or
//! content type: replies then go to `reply/<request_id>`.

use std::time::Duration;

use bytes::Bytes;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{LastWill, Packet, PublishProperties};

use std::sync::Arc;

use veil_core::config::MqttConfig;
use veil_core::{Error, ErrorKind};

use crate::topics::Topics;

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
}

/// What a refusal of the credentials tells a technician (either protocol).
pub(crate) const REFUSED_CREDENTIALS: &str = "broker refused the credentials (mqtt.username / \
     mqtt.password, or the client certificate)";

/// A TLS failure in words a technician can act on (either protocol).
pub(crate) fn tls_failed(t: &dyn std::fmt::Display) -> String {
    format!(
        "TLS failed: {t} (is mqtt.ca_file the CA that signed the broker's certificate, and does \
         the broker's name match mqtt.broker?)"
    )
}

/// A broker error in words a technician can act on.
pub(crate) fn explain(e: &rumqttc::v5::ConnectionError) -> String {
    use rumqttc::v5::ConnectionError as C;
    use rumqttc::v5::mqttbytes::v5::ConnectReturnCode as R;
    match e {
        C::ConnectionRefused(R::BadUserNamePassword) | C::ConnectionRefused(R::NotAuthorized) => {
            REFUSED_CREDENTIALS.into()
        }
        C::ConnectionRefused(code) => format!("broker refused the connection: {code:?}"),
        C::Tls(t) => tls_failed(t),
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    V5,
    V311,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::V5 => "5",
            Protocol::V311 => "3.1.1",
        }
    }
}

#[derive(Clone)]
pub enum Client {
    V5(rumqttc::v5::AsyncClient),
    V4(rumqttc::AsyncClient),
}

pub enum EventLoop {
    V5(Box<rumqttc::v5::EventLoop>),
    V4(Box<rumqttc::EventLoop>),
}

/// A command (or any message) that arrived.
pub struct Message {
    pub topic: String,
    pub payload: Bytes,
    /// MQTT 5 only.
    pub response_topic: Option<String>,
    pub correlation: Option<Bytes>,
}

pub enum Incoming {
    ConnAck,
    Publish(Message),
    Other,
}

/// A failed poll: the words for a technician, and whether the broker refused the protocol.
pub struct Failure {
    pub message: String,
    pub protocol_refused: bool,
}

/// A client and its event loop for `settings` in `protocol`, with `will` as last will.
pub fn connect(
    settings: &SessionSettings,
    protocol: Protocol,
    will: Vec<u8>,
    clean: bool,
    capacity: usize,
) -> (Client, EventLoop) {
    match protocol {
        Protocol::V5 => {
            let mut o =
                rumqttc::v5::MqttOptions::new(&settings.client_id, &settings.host, settings.port);
            o.set_keep_alive(settings.keep_alive);
            o.set_clean_start(clean);
            o.set_session_expiry_interval((!clean).then_some(86_400));
            o.set_max_packet_size(Some(1024 * 1024));
            o.set_connection_timeout(10);
            if !will.is_empty() {
                o.set_last_will(LastWill::new(
                    settings.topics.state(),
                    will,
                    QoS::AtLeastOnce,
                    true,
                    None,
                ));
            }
            if let Some(user) = &settings.username {
                o.set_credentials(user, settings.password.clone().unwrap_or_default());
            }
            if let Some(tls) = &settings.tls {
                o.set_transport(rumqttc::Transport::tls_with_config(
                    rumqttc::TlsConfiguration::Rustls(tls.clone()),
                ));
            }
            let (c, l) = rumqttc::v5::AsyncClient::new(o, capacity);
            (Client::V5(c), EventLoop::V5(Box::new(l)))
        }
        Protocol::V311 => {
            let mut o =
                rumqttc::MqttOptions::new(&settings.client_id, &settings.host, settings.port);
            o.set_keep_alive(settings.keep_alive);
            o.set_clean_session(clean);
            o.set_max_packet_size(1024 * 1024, 1024 * 1024);
            if !will.is_empty() {
                o.set_last_will(rumqttc::LastWill::new(
                    settings.topics.state(),
                    will,
                    rumqttc::QoS::AtLeastOnce,
                    true,
                ));
            }
            if let Some(user) = &settings.username {
                o.set_credentials(user, settings.password.clone().unwrap_or_default());
            }
            if let Some(tls) = &settings.tls {
                o.set_transport(rumqttc::Transport::tls_with_config(
                    rumqttc::TlsConfiguration::Rustls(tls.clone()),
                ));
            }
            let (c, l) = rumqttc::AsyncClient::new(o, capacity);
            (Client::V4(c), EventLoop::V4(Box::new(l)))
        }
    }
}

fn qos4(at_least_once: bool) -> rumqttc::QoS {
    if at_least_once {
        rumqttc::QoS::AtLeastOnce
    } else {
        rumqttc::QoS::AtMostOnce
    }
}

fn qos5(at_least_once: bool) -> QoS {
    if at_least_once {
        QoS::AtLeastOnce
    } else {
        QoS::AtMostOnce
    }
}

impl Client {
    /// QoS 1.
    pub async fn publish(
        &self,
        topic: String,
        retain: bool,
        payload: Vec<u8>,
    ) -> Result<(), String> {
        match self {
            Client::V5(c) => c
                .publish(topic, QoS::AtLeastOnce, retain, payload)
                .await
                .map_err(|e| e.to_string()),
            Client::V4(c) => c
                .publish(topic, rumqttc::QoS::AtLeastOnce, retain, payload)
                .await
                .map_err(|e| e.to_string()),
        }
    }

    /// Without waiting: `Err` when the client's queue is full.
    pub fn try_publish(
        &self,
        topic: String,
        at_least_once: bool,
        retain: bool,
        payload: Vec<u8>,
    ) -> Result<(), String> {
        match self {
            Client::V5(c) => c
                .try_publish(topic, qos5(at_least_once), retain, payload)
                .map_err(|e| e.to_string()),
            Client::V4(c) => c
                .try_publish(topic, qos4(at_least_once), retain, payload)
                .map_err(|e| e.to_string()),
        }
    }

    pub async fn subscribe(&self, filter: String) {
        let _ = match self {
            Client::V5(c) => c
                .subscribe(filter, QoS::AtLeastOnce)
                .await
                .map_err(|e| e.to_string()),
            Client::V4(c) => c
                .subscribe(filter, rumqttc::QoS::AtLeastOnce)
                .await
                .map_err(|e| e.to_string()),
        };
    }

    /// A reply (QoS 1): with MQTT 5 its correlation data and content type go along.
    pub async fn reply(
        &self,
        to: String,
        payload: Bytes,
        correlation: Option<Bytes>,
    ) -> Result<(), String> {
        match self {
            Client::V5(c) => {
                let props = PublishProperties {
                    correlation_data: correlation,
                    content_type: Some("application/json".into()),
                    ..Default::default()
                };
                c.publish_with_properties(to, QoS::AtLeastOnce, false, payload, props)
                    .await
                    .map_err(|e| e.to_string())
            }
            Client::V4(c) => c
                .publish(to, rumqttc::QoS::AtLeastOnce, false, payload)
                .await
                .map_err(|e| e.to_string()),
        }
    }

    pub async fn disconnect(&self) {
        let _ = match self {
            Client::V5(c) => c.disconnect().await.map_err(|e| e.to_string()),
            Client::V4(c) => c.disconnect().await.map_err(|e| e.to_string()),
        };
    }
}

impl EventLoop {
    pub async fn poll(&mut self) -> Result<Incoming, Failure> {
        match self {
            EventLoop::V5(l) => match l.poll().await {
                Ok(rumqttc::v5::Event::Incoming(Packet::ConnAck(_))) => Ok(Incoming::ConnAck),
                Ok(rumqttc::v5::Event::Incoming(Packet::Publish(p))) => {
                    let props = p.properties.unwrap_or_default();
                    Ok(Incoming::Publish(Message {
                        topic: String::from_utf8_lossy(&p.topic).into_owned(),
                        payload: p.payload,
                        response_topic: props.response_topic,
                        correlation: props.correlation_data,
                    }))
                }
                Ok(_) => Ok(Incoming::Other),
                Err(e) => Err(Failure {
                    protocol_refused: refused_5(&e),
                    message: explain(&e),
                }),
            },
            EventLoop::V4(l) => match l.poll().await {
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_))) => Ok(Incoming::ConnAck),
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) => {
                    Ok(Incoming::Publish(Message {
                        topic: p.topic,
                        payload: p.payload,
                        response_topic: None,
                        correlation: None,
                    }))
                }
                Ok(_) => Ok(Incoming::Other),
                Err(e) => Err(Failure {
                    protocol_refused: false,
                    message: explain_311(&e),
                }),
            },
        }
    }

    /// Until the DISCONNECT left (or `limit`): a clean stop sends what was queued first.
    pub async fn drain_until_disconnect(&mut self, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let sent = match self {
                EventLoop::V5(l) => match tokio::time::timeout_at(deadline, l.poll()).await {
                    Ok(Ok(ev)) => matches!(
                        ev,
                        rumqttc::v5::Event::Outgoing(rumqttc::Outgoing::Disconnect)
                    ),
                    _ => true,
                },
                EventLoop::V4(l) => match tokio::time::timeout_at(deadline, l.poll()).await {
                    Ok(Ok(ev)) => {
                        matches!(ev, rumqttc::Event::Outgoing(rumqttc::Outgoing::Disconnect))
                    }
                    _ => true,
                },
            };
            if sent {
                return;
            }
        }
    }
}

/// Whether a broker turned the MQTT 5 CONNECT away for its protocol version: a refusal that
/// says so, or the connection closed without a word (what 3.1.1-only brokers do). The session
/// asks only before its first MQTT 5 CONNACK.
fn refused_5(e: &rumqttc::v5::ConnectionError) -> bool {
    use rumqttc::v5::ConnectionError as C;
    use rumqttc::v5::mqttbytes::v5::ConnectReturnCode as R;
    matches!(
        e,
        C::ConnectionRefused(R::UnsupportedProtocolVersion)
            | C::MqttState(rumqttc::v5::StateError::ConnectionAborted)
    )
}

/// A 3.1.1 broker error in words a technician can act on.
fn explain_311(e: &rumqttc::ConnectionError) -> String {
    use rumqttc::ConnectReturnCode as R;
    use rumqttc::ConnectionError as C;
    match e {
        C::ConnectionRefused(R::BadUserNamePassword) | C::ConnectionRefused(R::NotAuthorized) => {
            REFUSED_CREDENTIALS.into()
        }
        C::ConnectionRefused(code) => format!("broker refused the connection: {code:?}"),
        C::Tls(t) => tls_failed(t),
        C::Io(io) => format!("cannot reach the broker: {io}"),
        other => other.to_string(),
    }
}
