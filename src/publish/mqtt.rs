//! The task that owns the MQTT client. Everything that leaves the device
//! goes through its bounded channel; nothing else touches rumqttc.
//!
//! When full: producers wait (predictions are never dropped here), except
//! telemetry, which uses `try_send` and counts what it drops. While the
//! broker is away, rumqttc's own request queue fills, then this channel, then
//! the inference thread waits and live cameras drop their oldest frames.

use rumqttc::{AsyncClient, Event, EventLoop, LastWill, MqttOptions, Outgoing as MqttOutgoing, Packet, QoS, Transport};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

use crate::config::{MqttConfig, SYSTEM_CA_BUNDLE};

/// Largest message either way; a frame with many regions and top-k is a few KiB.
const MAX_PACKET_BYTES: usize = 1 << 20;
const RECONNECT_MAX: Duration = Duration::from_secs(30);

/// One message to publish, already serialised (serialising happens on the
/// producer's thread, not here).
#[derive(Debug)]
pub struct Outgoing {
    pub topic: String,
    pub payload: Vec<u8>,
    pub qos: QoS,
    pub retain: bool,
}

/// Figures telemetry reports about the connection.
#[derive(Debug, Default)]
pub struct PublisherStats {
    pub connected: AtomicBool,
    pub submitted: AtomicU64,
    pub acknowledged: AtomicU64,
    pub connects: AtomicU64,
}

pub struct Publisher {
    pub options: MqttOptions,
    pub status_topic: String,
    pub online_payload: Vec<u8>,
    pub offline_payload: Vec<u8>,
    pub stats: Arc<PublisherStats>,
}

/// Client options from the config: address, TLS, keep-alive, packet size.
pub fn options(config: &MqttConfig, client_id: &str) -> Result<MqttOptions, String> {
    let broker = config.broker()?;
    let mut options = MqttOptions::new(client_id, broker.host.clone(), broker.port);
    options.set_keep_alive(Duration::from_secs(config.keep_alive_seconds.max(5)));
    options.set_max_packet_size(MAX_PACKET_BYTES, MAX_PACKET_BYTES);
    if broker.tls {
        let read = |path: &std::path::Path, what: &str| {
            std::fs::read(path).map_err(|e| format!("cannot read {what} {}: {e}", path.display()))
        };
        let ca_path = config.ca_file.clone().unwrap_or_else(|| SYSTEM_CA_BUNDLE.into());
        let ca = read(&ca_path, "the CA file (mqtt.ca_file)")?;
        let client_auth = match (&config.client_cert_file, &config.client_key_file) {
            (Some(cert), Some(key)) => Some((read(cert, "mqtt.client_cert_file")?, read(key, "mqtt.client_key_file")?)),
            _ => None,
        };
        options.set_transport(Transport::tls_with_config(rumqttc::TlsConfiguration::Simple { ca, alpn: None, client_auth }));
    }
    if let Some(username) = &config.username {
        options.set_credentials(username.clone(), password(config)?);
    }
    Ok(options)
}

/// The broker password: `mqtt.password_file`, else `CCTV_MQTT_PASSWORD`.
fn password(config: &MqttConfig) -> Result<String, String> {
    if let Some(path) = &config.password_file {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read mqtt.password_file {}: {e}", path.display()))?;
        return Ok(text.trim_end_matches(['\r', '\n']).to_string());
    }
    std::env::var("CCTV_MQTT_PASSWORD")
        .map_err(|_| "mqtt.username is set but there is no password: set mqtt.password_file or CCTV_MQTT_PASSWORD".to_string())
}

/// What to check for a connection error an operator will see in the log.
fn hint(error: &str) -> &'static str {
    if error.contains("certificate") || error.contains("Certificate") || error.contains("Tls") || error.contains("tls") {
        "check mqtt.ca_file (the CA that signed the broker's certificate), that the URL's host is in that certificate, and the client certificate if the broker wants one"
    } else if error.contains("NotAuthorized") || error.contains("BadUserNamePassword") {
        "the broker refused the credentials: check mqtt.username and the password"
    } else {
        "check mqtt.url and that the broker is running"
    }
}

impl Publisher {
    /// Publishes what arrives on `rx` until every sender is gone, then
    /// publishes `offline`, waits up to `flush_deadline` for the broker to
    /// acknowledge what was sent, and disconnects.
    pub async fn run(mut self, mut rx: mpsc::Receiver<Outgoing>, capacity: usize, flush_deadline: Duration) {
        self.options.set_last_will(LastWill::new(&self.status_topic, self.offline_payload.clone(), QoS::AtLeastOnce, true));
        let (host, port) = self.options.broker_address();
        let (client, eventloop) = AsyncClient::new(self.options.clone(), capacity);
        let (connected_tx, mut connected_rx) = watch::channel(0u64);
        let driver = tokio::spawn(drive(eventloop, format!("{host}:{port}"), self.stats.clone(), connected_tx));

        loop {
            tokio::select! {
                message = rx.recv() => match message {
                    Some(message) => self.publish(&client, message).await,
                    None => break,
                },
                Ok(()) = connected_rx.changed() => {
                    // Every (re)connect: the Last Will may have said offline meanwhile.
                    let online = self.status(self.online_payload.clone());
                    self.publish(&client, online).await;
                }
            }
        }

        let offline = self.status(self.offline_payload.clone());
        self.publish(&client, offline).await;
        let deadline = Instant::now() + flush_deadline;
        while self.stats.acknowledged.load(Ordering::SeqCst) < self.stats.submitted.load(Ordering::SeqCst)
            && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let unacknowledged =
            self.stats.submitted.load(Ordering::SeqCst).saturating_sub(self.stats.acknowledged.load(Ordering::SeqCst));
        if unacknowledged > 0 {
            tracing::warn!(unacknowledged, "shutting down with messages the broker has not acknowledged");
        }
        let _ = client.disconnect().await;
        if tokio::time::timeout(Duration::from_secs(1), driver).await.is_err() {
            tracing::debug!("MQTT event loop did not stop after disconnect");
        }
    }

    fn status(&self, payload: Vec<u8>) -> Outgoing {
        Outgoing { topic: self.status_topic.clone(), payload, qos: QoS::AtLeastOnce, retain: true }
    }

    async fn publish(&self, client: &AsyncClient, message: Outgoing) {
        let qos = message.qos;
        match client.publish(message.topic, qos, message.retain, message.payload).await {
            Ok(()) if qos != QoS::AtMostOnce => {
                self.stats.submitted.fetch_add(1, Ordering::SeqCst);
            }
            Ok(()) => {}
            Err(error) => tracing::error!(%error, "MQTT client refused a message; it is lost"),
        }
    }
}

/// Drives rumqttc's event loop: it connects, reconnects, and counts acks.
async fn drive(mut eventloop: EventLoop, broker: String, stats: Arc<PublisherStats>, connected: watch::Sender<u64>) {
    let mut backoff = Duration::from_millis(500);
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                tracing::info!(%broker, "connected to MQTT broker");
                stats.connected.store(true, Ordering::SeqCst);
                stats.connects.fetch_add(1, Ordering::SeqCst);
                connected.send_modify(|n| *n += 1);
                backoff = Duration::from_millis(500);
            }
            Ok(Event::Incoming(Packet::PubAck(_))) => {
                stats.acknowledged.fetch_add(1, Ordering::SeqCst);
            }
            Ok(Event::Outgoing(MqttOutgoing::Disconnect)) => {
                stats.connected.store(false, Ordering::SeqCst);
                return;
            }
            Ok(_) => {}
            Err(error) => {
                let was_connected = stats.connected.swap(false, Ordering::SeqCst);
                if was_connected {
                    tracing::warn!(%broker, %error, "lost the MQTT broker; reconnecting");
                } else {
                    let error = error.to_string();
                    tracing::warn!(%broker, %error, retry_in_ms = backoff.as_millis() as u64, hint = hint(&error), "cannot connect to the MQTT broker");
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(RECONNECT_MAX);
            }
        }
    }
}
