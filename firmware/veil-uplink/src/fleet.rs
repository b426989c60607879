//! The fleet side of the API, for `veilctl` and tests: connect as a fleet user, read retained
//! state and registries, send commands and wait for their replies (MQTT 5 response topic and
//! correlation data), follow events.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Packet, PublishProperties};
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use serde_json::Value;
use tokio::sync::mpsc;
use veil_core::{Error, ErrorKind};

use crate::topics::Topics;

/// How the fleet side connects.
pub struct FleetSettings {
    pub host: String,
    pub port: u16,
    pub tls: Option<Arc<rustls::ClientConfig>>,
    pub username: Option<String>,
    pub password: Option<String>,
    pub prefix: String,
}

/// A message received.
#[derive(Debug, Clone)]
pub struct Received {
    pub topic: String,
    pub payload: Bytes,
    pub retained: bool,
    pub correlation: Option<Bytes>,
}

pub struct FleetClient {
    client: AsyncClient,
    incoming: mpsc::UnboundedReceiver<Received>,
    prefix: String,
    me: String,
    next: u64,
}

impl FleetClient {
    /// Connects; fails with the broker's reason when it refuses.
    pub async fn connect(s: FleetSettings) -> Result<FleetClient, Error> {
        let me = format!("veilctl-{}-{}", std::process::id(), crate::session::nonce());
        let mut o = MqttOptions::new(&me, &s.host, s.port);
        o.set_keep_alive(Duration::from_secs(30));
        o.set_max_packet_size(Some(16 * 1024 * 1024));
        if let Some(u) = &s.username {
            o.set_credentials(u, s.password.clone().unwrap_or_default());
        }
        if let Some(tls) = &s.tls {
            o.set_transport(rumqttc::Transport::tls_with_config(
                rumqttc::TlsConfiguration::Rustls(tls.clone()),
            ));
        }
        let (client, mut eventloop) = AsyncClient::new(o, 64);
        // Wait for the connection before handing the client out.
        loop {
            match tokio::time::timeout(Duration::from_secs(15), eventloop.poll()).await {
                Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) => break,
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    return Err(Error::new(ErrorKind::Unavailable, crate::link::explain(&e)));
                }
                Err(_) => {
                    return Err(Error::new(
                        ErrorKind::DeadlineExceeded,
                        "no answer from the broker",
                    ));
                }
            }
        }
        let (tx, incoming) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let _ = tx.send(Received {
                            topic: String::from_utf8_lossy(&p.topic).into_owned(),
                            payload: p.payload.clone(),
                            retained: p.retain,
                            correlation: p.properties.and_then(|pr| pr.correlation_data),
                        });
                    }
                    Ok(_) => {}
                    Err(_) => {
                        if tx.is_closed() {
                            return;
                        }
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                }
            }
        });
        Ok(FleetClient {
            client,
            incoming,
            prefix: s.prefix,
            me,
            next: 0,
        })
    }

    pub async fn subscribe(&self, filter: &str) -> Result<(), Error> {
        self.client
            .subscribe(filter, QoS::AtLeastOnce)
            .await
            .map_err(|e| Error::new(ErrorKind::Unavailable, format!("subscribe: {e}")))
    }

    /// The next message, or `None` after `wait`.
    pub async fn next(&mut self, wait: Duration) -> Option<Received> {
        tokio::time::timeout(wait, self.incoming.recv())
            .await
            .ok()
            .flatten()
    }

    /// Every device's retained state, by device id (messages collected for `wait`).
    pub async fn devices(&mut self, wait: Duration) -> Result<BTreeMap<String, Value>, Error> {
        self.subscribe(&Topics::all_states(&self.prefix)).await?;
        let mut out = BTreeMap::new();
        while let Some(m) = self.next(wait).await {
            if let Some(d) = Topics::device_of_state(&self.prefix, &m.topic)
                && let Ok(v) = serde_json::from_slice(&m.payload)
            {
                out.insert(d.to_string(), v);
            }
        }
        Ok(out)
    }

    /// A retained message (a device's registry or state).
    pub async fn retained(&mut self, topic: &str, wait: Duration) -> Result<Value, Error> {
        self.subscribe(topic).await?;
        while let Some(m) = self.next(wait).await {
            if m.topic == topic {
                return serde_json::from_slice(&m.payload)
                    .map_err(|e| Error::invalid_input(format!("{topic}: not JSON: {e}")));
            }
        }
        Err(Error::not_found(format!(
            "nothing retained on {topic} (is the device registered?)"
        )))
    }

    /// Sends command `name` with `params` to `device` and waits for its reply.
    pub async fn call(
        &mut self,
        device: &str,
        name: &str,
        mut params: Value,
        wait: Duration,
    ) -> Result<Value, Error> {
        let topics = Topics::new(&self.prefix, device);
        let inbox = topics.reply(&self.me);
        self.subscribe(&inbox).await?;
        self.next += 1;
        let request_id = format!("{}-{}", self.me, self.next);
        if let Some(o) = params.as_object_mut() {
            o.entry("request_id")
                .or_insert_with(|| Value::String(request_id.clone()));
        }
        let correlation = Bytes::from(request_id.clone().into_bytes());
        let props = PublishProperties {
            response_topic: Some(inbox.clone()),
            correlation_data: Some(correlation.clone()),
            content_type: Some("application/json".into()),
            ..Default::default()
        };
        self.client
            .publish_with_properties(
                topics.command(name),
                QoS::AtLeastOnce,
                false,
                serde_json::to_vec(&params).expect("JSON values serialize"),
                props,
            )
            .await
            .map_err(|e| Error::new(ErrorKind::Unavailable, format!("publish: {e}")))?;
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let Some(m) = self.next(left).await else {
                return Err(Error::new(
                    ErrorKind::DeadlineExceeded,
                    format!("no reply from {device} within {wait:?} (offline? see its state)"),
                ));
            };
            if m.topic == inbox && m.correlation.as_ref() == Some(&correlation) {
                return serde_json::from_slice(&m.payload)
                    .map_err(|e| Error::invalid_input(format!("reply is not JSON: {e}")));
            }
        }
    }
}
