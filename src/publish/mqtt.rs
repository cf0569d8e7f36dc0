//! The task that owns the MQTT client and the outbox. Everything that leaves
//! the device goes through its bounded channel; nothing else touches rumqttc.
//!
//! Predictions and events are *stored*: numbered and written to the
//! [`Outbox`] before anything is sent, handed to rumqttc at most `WINDOW` at
//! a time, and deleted once the broker's PUBACK names them. While the broker
//! is away the window fills and the rest waits on disk, so memory stays
//! bounded however long the outage. Status, command replies and telemetry
//! are sent directly (telemetry is QoS 0 and dropped, counted, when there is
//! no room).
//!
//! Matching PUBACKs to messages: rumqttc assigns packet ids in the order it
//! takes requests, and reports each with `Outgoing::Publish(pkid)`; a pkid
//! still in flight is a retransmission. rumqttc drops its unacknowledged
//! messages when the broker has lost the session; the driver keeps them
//! across the reconnect (see [`drive`]), so nothing handed over is lost and
//! the order of first transmissions is the order of hand-over.
//!
//! Size: every message is at most `mqtt.max_message_bytes` (topic, payload
//! and `seq`), and rumqttc is told a packet limit just above that, so it
//! never refuses what it was handed (it would drop the connection, and
//! resend the same packet after every reconnect). A larger message is
//! refused here, before it gets a `seq`, counted and reported; producers
//! trim theirs to fit. MQTT 3.1.1 (rumqttc's v4 client, which the agent
//! uses) has no Maximum Packet Size in CONNACK, so the broker cannot tell
//! its limit: the config must.

use rumqttc::{
    AsyncClient, Event, EventLoop, LastWill, MqttOptions, Outgoing as MqttOutgoing, Packet, QoS, Request, Transport,
};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

use crate::wire::events::{event_body, Event as AgentEvent};
use crate::wire::messages::{model_state_payload, status_payload, DeviceState};
use crate::wire::Topics;
use super::outbox::{Mode, NewMessage, Outbox};
use super::routes::{Delivery, Inbound, Routes};
use crate::config::{MqttConfig, OutboxConfig, SYSTEM_CA_BUNDLE};
use crate::util::throttle::Throttle;
use crate::wire::ActiveModel;

/// A PUBLISH packet's bytes besides topic and payload: fixed header (at
/// most 5), topic length (2), packet id (2), with room to spare.
const PACKET_OVERHEAD: usize = 16;
/// What `{"seq":N,` adds to a stored message's body, at most.
const SEQ_ROOM: usize = 32;
/// Unstored QoS 1 messages (replies, status) waiting for room with rumqttc;
/// more are dropped and counted (`mqtt.replies_dropped`).
const DIRECT_QUEUE: usize = 256;
/// Largest packet accepted from the broker. Larger ones break the
/// connection inside rumqttc before we could refuse them, so this is well
/// above the command limit (brokers should set `message_size_limit`).
const MAX_INCOMING_BYTES: usize = 8 << 20;
const RECONNECT_FIRST: Duration = Duration::from_millis(500);
const RECONNECT_MAX: Duration = Duration::from_secs(30);
/// Stored messages handed to rumqttc and not yet acknowledged, at most.
const WINDOW: usize = 64;
/// Room in rumqttc's request channel for direct messages besides the window.
const DIRECT_ROOM: usize = 32;
/// Stored messages taken from the producers' channel per outbox write.
const BATCH: usize = 256;
const HOUSEKEEPING: Duration = Duration::from_millis(250);

/// One message to publish, already serialised on the producer's thread.
#[derive(Debug)]
pub struct Outgoing {
    pub topic: String,
    pub payload: Vec<u8>,
    pub kind: Kind,
    /// The producer's own number for a stored message: once stored, the
    /// publisher reports `(tag, seq)` to its [`StoredHook`].
    pub tag: Option<u64>,
}

/// Told `(tag, seq)` for every tagged message once its `seq` is committed.
/// Runs on the publisher's task: it must never wait.
pub type StoredHook = Box<dyn Fn(u64, u64) + Send + Sync>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// QoS 1 through the outbox; `payload` is a JSON object that gets `seq`.
    Stored,
    /// QoS 1, retained, not stored (the device status).
    Retained,
    /// QoS 1, not stored (command replies).
    Direct,
    /// QoS 0, dropped when there is no room (telemetry).
    BestEffort,
}

impl Outgoing {
    pub fn new(topic: String, payload: Vec<u8>, kind: Kind) -> Outgoing {
        Outgoing { topic, payload, kind, tag: None }
    }

    pub fn stored(topic: String, body: Vec<u8>) -> Outgoing {
        Outgoing::new(topic, body, Kind::Stored)
    }

    /// Stored, and its `seq` reported to the publisher's hook with `tag`.
    pub fn stored_tagged(topic: String, body: Vec<u8>, tag: u64) -> Outgoing {
        Outgoing { tag: Some(tag), ..Outgoing::stored(topic, body) }
    }
}

pub use crate::wire::telemetry::OutboxFigures;

/// Figures telemetry reports about the connection and the outbox.
#[derive(Debug, Default)]
pub struct PublisherStats {
    pub connected: AtomicBool,
    pub submitted: AtomicU64,
    pub acknowledged: AtomicU64,
    pub connects: AtomicU64,
    pub best_effort_dropped: AtomicU64,
    /// Messages over the size cap, refused before they got a `seq`.
    pub refused: AtomicU64,
    /// Unstored QoS 1 messages (command replies) dropped: the queue to rumqttc was full.
    pub direct_dropped: AtomicU64,
    /// Inbound messages a consumer's full queue refused (see `Routes::add_counted`).
    pub inbound_dropped: AtomicU64,
    pub outbox: Mutex<OutboxFigures>,
}

/// The publisher's use of the MQTT client: the seam that lets delivery
/// (hand-over, packet-id pairing, acknowledgement) be tested without a broker.
pub trait Client {
    /// Queues a publish without waiting; an error means the client's queue is full.
    fn publish(&self, topic: String, qos: QoS, retain: bool, payload: Vec<u8>) -> Result<(), rumqttc::ClientError>;
    fn subscribe(&self, filter: String, qos: QoS) -> Result<(), rumqttc::ClientError>;
}

impl Client for AsyncClient {
    fn publish(&self, topic: String, qos: QoS, retain: bool, payload: Vec<u8>) -> Result<(), rumqttc::ClientError> {
        self.try_publish(topic, qos, retain, payload)
    }

    fn subscribe(&self, filter: String, qos: QoS) -> Result<(), rumqttc::ClientError> {
        self.try_subscribe(filter, qos)
    }
}

pub struct Publisher {
    options: MqttOptions,
    device_id: String,
    topics: Topics,
    /// The model serving now, for the status and `…/model` payloads.
    active_model: ActiveModel,
    stats: Arc<PublisherStats>,
    outbox: OutboxConfig,
    /// Where inbound messages go; filled by the consumers before the start.
    routes: Option<Routes>,
    on_stored: Option<StoredHook>,
    /// `mqtt.max_message_bytes`: topic + payload (+ `seq`) of any message sent.
    max_message_bytes: usize,
    /// What was refused for its size and not yet reported (`message_refused`).
    refused: Mutex<Refused>,
    /// Warnings a flood could repeat thousands of times a second.
    client_full_log: Throttle,
    direct_dropped_log: Throttle,
    refused_log: Throttle,
}

/// Messages refused for their size since the last `message_refused` event.
#[derive(Debug, Default)]
struct Refused {
    count: u64,
    topic: String,
    bytes: u64,
    reported_at: Option<std::time::Instant>,
}

/// At most one `message_refused` event per this interval (the count covers the rest).
const REFUSED_REPORT_INTERVAL: Duration = Duration::from_secs(10);

/// Why the publisher would not take a message.
#[derive(Debug, thiserror::Error)]
pub enum RefusedError {
    #[error("a message of {bytes} bytes (topic, payload and seq) on {topic} is over mqtt.max_message_bytes = {max}")]
    TooLarge { topic: String, bytes: usize, max: usize },
}

/// Why the MQTT client cannot be set up from the config.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("mqtt.url {0}")]
    Url(crate::config::UrlError),
    #[error("cannot read {what} {}: {source}", path.display())]
    File { what: &'static str, path: std::path::PathBuf, source: std::io::Error },
    #[error("mqtt.username is set but there is no password: set mqtt.password_file or CCTV_MQTT_PASSWORD")]
    NoPassword,
}

/// Client options from the config: address, TLS, session, keep-alive, packet size, credentials.
/// The agent and `release publish --mqtt` both connect with these.
pub fn options(config: &MqttConfig, client_id: &str) -> Result<MqttOptions, SetupError> {
    let broker = config.broker().map_err(SetupError::Url)?;
    let mut options = MqttOptions::new(client_id, broker.host.clone(), broker.port);
    options.set_keep_alive(Duration::from_secs(config.keep_alive_seconds.max(5)));
    // rumqttc refuses a larger packet by dropping the connection; the
    // publisher never hands it one (see the module doc).
    options.set_max_packet_size(MAX_INCOMING_BYTES, config.max_message_bytes + PACKET_OVERHEAD);
    options.set_clean_session(!config.persistent_session);
    options.set_inflight((WINDOW + DIRECT_ROOM) as u16);
    if broker.tls {
        let read = |path: &std::path::Path, what: &'static str| {
            crate::util::fs::read_regular_file(path, MAX_TLS_FILE_BYTES).map_err(|source| SetupError::File { what, path: path.to_path_buf(), source })
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

/// Largest password file and certificate (or key) file read.
const MAX_PASSWORD_BYTES: u64 = 4 << 10;
const MAX_TLS_FILE_BYTES: u64 = 1 << 20;

/// The broker password: `mqtt.password_file`, else `CCTV_MQTT_PASSWORD`.
fn password(config: &MqttConfig) -> Result<String, SetupError> {
    if let Some(path) = &config.password_file {
        let file = |source| SetupError::File { what: "mqtt.password_file", path: path.clone(), source };
        let bytes = crate::util::fs::read_regular_file(path, MAX_PASSWORD_BYTES).map_err(file)?;
        let text = String::from_utf8(bytes).map_err(|_| file(std::io::Error::new(std::io::ErrorKind::InvalidData, "is not UTF-8 text")))?;
        return Ok(text.trim_end_matches(['\r', '\n']).to_string());
    }
    std::env::var("CCTV_MQTT_PASSWORD").map_err(|_| SetupError::NoPassword)
}

const TLS_HINT: &str = "check mqtt.ca_file (the CA that signed the broker's certificate), that the URL's host is in that certificate, and the client certificate if the broker wants one";

/// What to check for a connection error an operator will see in the log,
/// decided by the error's kind.
fn hint(error: &rumqttc::ConnectionError) -> &'static str {
    use rumqttc::{ConnectReturnCode, ConnectionError};
    let tls_in_io = |e: &std::io::Error| e.get_ref().is_some_and(|inner| inner.is::<rustls::Error>());
    match error {
        ConnectionError::Tls(_) => TLS_HINT,
        ConnectionError::ConnectionRefused(ConnectReturnCode::NotAuthorized | ConnectReturnCode::BadUserNamePassword) => {
            "the broker refused the credentials: check mqtt.username and the password"
        }
        ConnectionError::Io(e) if tls_in_io(e) => TLS_HINT,
        _ => "check mqtt.url and that the broker is running",
    }
}

/// When the log last said the outbox was dropping, and the count then.
struct DropLog {
    total: u64,
    at: Option<std::time::Instant>,
}

const DROP_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// What the driver tells the publisher, in the order rumqttc reported it.
#[derive(Debug)]
enum Notice {
    Connected,
    Published(u16),
    Acknowledged(u16),
}

/// The publisher's side of delivery: what is with rumqttc and not yet acknowledged.
struct InFlight {
    /// QoS 1 messages handed over whose packet id rumqttc has not reported
    /// yet, in hand-over order; `None` for messages that are not stored.
    awaiting_pkid: VecDeque<Option<u64>>,
    by_pkid: HashMap<u16, Option<u64>>,
    /// Every stored message numbered below this was handed over (or dropped),
    /// except after the outbox got its disk back (see `housekeeping`).
    handed_below: u64,
    /// Stored messages handed over and not acknowledged.
    handed: HashSet<u64>,
    /// Unstored QoS 1 messages waiting for room (retained status first).
    direct: VecDeque<Outgoing>,
    /// Unstored QoS 1 messages handed over and not acknowledged, at most `DIRECT_ROOM`.
    direct_unacked: usize,
}

impl InFlight {
    fn new() -> InFlight {
        InFlight {
            awaiting_pkid: VecDeque::new(),
            by_pkid: HashMap::new(),
            handed_below: 0,
            handed: HashSet::new(),
            direct: VecDeque::new(),
            direct_unacked: 0,
        }
    }
}

impl Publisher {
    pub fn new(device_id: &str, topics: &Topics, active_model: &ActiveModel, options: MqttOptions, outbox: OutboxConfig) -> Publisher {
        Publisher {
            options,
            device_id: device_id.to_string(),
            topics: topics.clone(),
            active_model: active_model.clone(),
            stats: Arc::default(),
            outbox,
            routes: None,
            on_stored: None,
            max_message_bytes: crate::config::DEFAULT_MAX_MESSAGE_BYTES,
            refused: Mutex::default(),
            client_full_log: Throttle::for_warnings(),
            direct_dropped_log: Throttle::for_warnings(),
            refused_log: Throttle::for_warnings(),
        }
    }

    /// `mqtt.max_message_bytes`; use the same value as for [`options`].
    pub fn with_max_message_bytes(mut self, max: usize) -> Publisher {
        self.max_message_bytes = max;
        self
    }

    /// Inbound messages go through `routes`; the publisher subscribes to each filter on every connect.
    pub fn with_routes(mut self, routes: Routes) -> Publisher {
        self.routes = Some(routes);
        self
    }

    /// `hook(tag, seq)` for every tagged stored message, once stored.
    pub fn with_stored_hook(mut self, hook: StoredHook) -> Publisher {
        self.on_stored = Some(hook);
        self
    }

    /// The figures telemetry reports (shared, updated as the publisher runs).
    pub fn stats(&self) -> Arc<PublisherStats> {
        self.stats.clone()
    }

    /// Publishes what arrives on `rx` until every sender is gone, then
    /// publishes `offline`, keeps delivering from the outbox for up to
    /// `flush_deadline`, and disconnects. What is left stays in the outbox.
    pub async fn run(mut self, mut rx: mpsc::Receiver<Outgoing>, flush_deadline: Duration) {
        let status_topic = self.topics.status();
        let last_will = self.status(DeviceState::Offline);
        self.options.set_last_will(LastWill::new(&status_topic, last_will, QoS::AtLeastOnce, true));
        let (host, port) = self.options.broker_address();
        let (client, eventloop) = AsyncClient::new(self.options.clone(), WINDOW + DIRECT_ROOM);
        let (notice_tx, mut notices) = mpsc::unbounded_channel();
        let routes = self.routes.take().unwrap_or_default();
        let filters: Vec<(&'static str, String)> = routes.filters().map(|(name, filter)| (name, filter.to_string())).collect();
        let driver = tokio::spawn(drive(eventloop, format!("{host}:{port}"), self.stats.clone(), notice_tx, routes));

        let config = self.outbox.clone();
        let mut outbox = tokio::task::block_in_place(|| Outbox::open(&config.path, config.max_bytes, config.memory_bytes));
        if let Some(error) = outbox.disk_error().map(ToString::to_string) {
            self.report_disk_failure(&mut outbox, error, 0);
        } else if !outbox.is_empty() {
            tracing::info!(messages = outbox.len(), from_seq = outbox.first_seq(), "delivering what the outbox kept from the last run");
        }
        let mut flight = InFlight::new();
        let mut housekeeping = tokio::time::interval(HOUSEKEEPING);
        let mut drops_logged = DropLog { total: outbox.dropped_total(), at: None };
        let mut batch = Vec::with_capacity(BATCH);

        loop {
            tokio::select! {
                biased;
                Some(notice) = notices.recv() => self.on_notice(notice, &client, &filters, &mut outbox, &mut flight),
                count = rx.recv_many(&mut batch, BATCH) => {
                    if count == 0 {
                        break;
                    }
                    self.accept(std::mem::take(&mut batch), &client, &mut outbox, &mut flight);
                }
                _ = housekeeping.tick() => self.housekeeping(&mut outbox, &mut flight, &mut drops_logged),
            }
            self.hand_over(&client, &mut outbox, &mut flight);
            self.update_figures(&outbox);
        }

        let offline = Outgoing::new(status_topic, self.status(DeviceState::Offline), Kind::Retained);
        self.send_direct(&client, offline, &mut flight);
        let deadline = tokio::time::Instant::now() + flush_deadline;
        while !(outbox.is_empty() && flight.awaiting_pkid.is_empty() && flight.by_pkid.is_empty() && flight.direct.is_empty()) {
            tokio::select! {
                Some(notice) = notices.recv() => self.on_notice(notice, &client, &filters, &mut outbox, &mut flight),
                _ = tokio::time::sleep_until(deadline) => break,
            }
            self.hand_over(&client, &mut outbox, &mut flight);
        }
        self.housekeeping(&mut outbox, &mut flight, &mut drops_logged);
        if let Err(error) = tokio::task::block_in_place(|| outbox.flush_acknowledged(true)) {
            tracing::error!(%error, "cannot record acknowledged messages in the outbox; they will be sent again");
        }
        self.update_figures(&outbox);
        if !outbox.is_empty() {
            tracing::warn!(messages = outbox.len(), from_seq = outbox.first_seq(), "stopping with messages the broker has not acknowledged; they stay in the outbox for the next start");
        }
        let _ = client.disconnect().await;
        if tokio::time::timeout(Duration::from_secs(1), driver).await.is_err() {
            tracing::debug!("MQTT event loop did not stop after disconnect");
        }
    }

    /// Stored messages count `seq` in; nothing larger than the cap reaches rumqttc.
    fn check_size(&self, message: &Outgoing) -> Result<(), RefusedError> {
        let seq = if message.kind == Kind::Stored { SEQ_ROOM } else { 0 };
        let bytes = message.topic.len() + message.payload.len() + seq;
        if bytes > self.max_message_bytes {
            return Err(RefusedError::TooLarge { topic: message.topic.clone(), bytes, max: self.max_message_bytes });
        }
        Ok(())
    }

    /// Counts a message refused for its size; housekeeping reports it.
    fn refuse(&self, error: RefusedError) {
        let RefusedError::TooLarge { topic, bytes, .. } = &error;
        self.stats.refused.fetch_add(1, Ordering::SeqCst);
        // A producer should have trimmed it: worth an error, but not one per message.
        if let Some(suppressed) = self.refused_log.allow() {
            tracing::error!(%error, suppressed, "message refused: not numbered, not sent");
        }
        let mut refused = self.refused.lock().unwrap_or_else(|e| e.into_inner());
        refused.count += 1;
        refused.topic = topic.clone();
        refused.bytes = *bytes as u64;
    }

    /// The `message_refused` event for what was refused since the last one
    /// (at most one per `REFUSED_REPORT_INTERVAL`).
    fn report_refused(&self, outbox: &mut Outbox) {
        let event = {
            let mut refused = self.refused.lock().unwrap_or_else(|e| e.into_inner());
            if refused.count == 0 || refused.reported_at.is_some_and(|at| at.elapsed() < REFUSED_REPORT_INTERVAL) {
                return;
            }
            refused.reported_at = Some(std::time::Instant::now());
            AgentEvent::MessageRefused {
                refused: std::mem::take(&mut refused.count),
                refused_total: self.stats.refused.load(Ordering::SeqCst),
                topic: std::mem::take(&mut refused.topic),
                bytes: refused.bytes,
                max_bytes: self.max_message_bytes as u64,
            }
        };
        let body = event_body(&self.device_id, &event);
        tokio::task::block_in_place(|| outbox.append_report(NewMessage { topic: self.topics.events(), body }));
    }

    fn status(&self, state: DeviceState) -> Vec<u8> {
        let model = self.active_model.read().map(|m| m.clone()).ok();
        status_payload(&self.device_id, state, model.as_ref())
    }

    /// Stores what must survive, sends the rest.
    fn accept(&self, batch: Vec<Outgoing>, client: &impl Client, outbox: &mut Outbox, flight: &mut InFlight) {
        let mut stored = Vec::new();
        let mut tags = Vec::new();
        for message in batch {
            if let Err(error) = self.check_size(&message) {
                self.refuse(error);
                continue;
            }
            match message.kind {
                Kind::Stored => {
                    if let Some(tag) = message.tag {
                        tags.push((stored.len() as u64, tag));
                    }
                    stored.push(NewMessage { topic: message.topic, body: message.payload });
                }
                Kind::Retained | Kind::Direct => self.send_direct(client, message, flight),
                Kind::BestEffort => {
                    // Not queued while the broker is away: stale telemetry would only delay the rest.
                    if !self.stats.connected.load(Ordering::SeqCst)
                        || client.publish(message.topic, QoS::AtMostOnce, false, message.payload).is_err() {
                        self.stats.best_effort_dropped.fetch_add(1, Ordering::SeqCst);
                    }
                }
            }
        }
        if stored.is_empty() {
            return;
        }
        let was_on_disk = outbox.mode() == Mode::Disk;
        let first_seq = tokio::task::block_in_place(|| outbox.append_numbered(stored, flight.handed_below));
        if let Some(hook) = &self.on_stored {
            for (position, tag) in tags {
                hook(tag, first_seq + position);
            }
        }
        if was_on_disk && outbox.mode() == Mode::Memory {
            let error = outbox.disk_error().map(ToString::to_string).unwrap_or_default();
            self.report_disk_failure(outbox, error, flight.handed_below);
        }
    }

    fn report_disk_failure(&self, outbox: &mut Outbox, error: String, handed_below: u64) {
        tracing::error!(
            path = %self.outbox.path.display(),
            %error,
            memory_bytes = outbox.capacity(),
            "the outbox cannot be written: keeping messages in memory (lost if the agent stops) and retrying every 30 s; make the folder writable or free disk space"
        );
        let event = AgentEvent::OutboxUnavailable { path: self.outbox.path.display().to_string(), error };
        self.store_event(outbox, event, handed_below);
    }

    fn store_event(&self, outbox: &mut Outbox, event: AgentEvent, handed_below: u64) {
        let body = event_body(&self.device_id, &event);
        tokio::task::block_in_place(|| outbox.append(vec![NewMessage { topic: self.topics.events(), body }], handed_below));
    }

    /// Deletes acknowledged messages, reports drops (while connected, so
    /// reports do not pile up in an outage), retries a failed disk.
    fn housekeeping(&self, outbox: &mut Outbox, flight: &mut InFlight, logged: &mut DropLog) {
        if let Err(error) = tokio::task::block_in_place(|| outbox.flush_acknowledged(false)) {
            tracing::warn!(%error, "cannot delete acknowledged messages from the outbox yet");
        }
        let total = outbox.dropped_total();
        if total > logged.total && logged.at.is_none_or(|at| at.elapsed() >= DROP_LOG_INTERVAL) {
            tracing::warn!(
                dropped = total - logged.total,
                dropped_total = total,
                capacity_bytes = outbox.capacity(),
                "outbox full: dropping the oldest messages; raise [outbox] max_bytes if outages this long are expected"
            );
            *logged = DropLog { total, at: Some(std::time::Instant::now()) };
        }
        let connected = self.stats.connected.load(Ordering::SeqCst);
        if let Some(dropped) = if connected { outbox.take_dropped() } else { None } {
            tracing::info!(count = dropped.count, first_seq = dropped.first_seq, last_seq = dropped.last_seq, "reporting dropped messages");
            let event = AgentEvent::OutboxOverflow {
                dropped: dropped.count,
                first_seq: dropped.first_seq,
                last_seq: dropped.last_seq,
                dropped_total: outbox.dropped_total(),
            };
            let body = event_body(&self.device_id, &event);
            tokio::task::block_in_place(|| outbox.append_report(NewMessage { topic: self.topics.events(), body }));
        }
        if connected {
            self.report_refused(outbox);
        }
        if outbox.mode() == Mode::Memory && tokio::task::block_in_place(|| outbox.retry_disk()) {
            tracing::info!(path = %self.outbox.path.display(), messages = outbox.len(), "the outbox is back on disk");
            // Older messages the disk kept while it could not be read are
            // readable again: hand over from the start (skipping those in flight).
            flight.handed_below = 0;
            self.store_event(outbox, AgentEvent::OutboxRestored { path: self.outbox.path.display().to_string() }, flight.handed_below);
        }
    }

    fn on_notice(&self, notice: Notice, client: &impl Client, filters: &[(&'static str, String)], outbox: &mut Outbox, flight: &mut InFlight) {
        match notice {
            Notice::Connected => {
                // Every (re)connect: the Last Will may have said offline meanwhile.
                let online = Outgoing::new(self.topics.status(), self.status(DeviceState::Online), Kind::Retained);
                self.send_direct(client, online, flight);
                if let Ok(model) = self.active_model.read() {
                    let payload = model_state_payload(&self.device_id, &model);
                    self.send_direct(client, Outgoing::new(self.topics.model(), payload, Kind::Retained), flight);
                }
                for (consumer, filter) in filters {
                    if let Err(error) = client.subscribe(filter.clone(), QoS::AtLeastOnce) {
                        tracing::error!(%error, consumer, %filter, "cannot subscribe");
                    }
                }
            }
            Notice::Published(0) => {} // QoS 0
            Notice::Published(pkid) => {
                if !flight.by_pkid.contains_key(&pkid) {
                    match flight.awaiting_pkid.pop_front() {
                        Some(seq) => drop(flight.by_pkid.insert(pkid, seq)),
                        None => tracing::error!(pkid, "MQTT sent a message the publisher did not hand over"),
                    }
                }
            }
            Notice::Acknowledged(pkid) => match flight.by_pkid.remove(&pkid) {
                Some(Some(seq)) => {
                    outbox.acknowledge(seq);
                    flight.handed.remove(&seq);
                    self.stats.acknowledged.fetch_add(1, Ordering::SeqCst);
                }
                Some(None) => {
                    flight.direct_unacked = flight.direct_unacked.saturating_sub(1);
                    self.stats.acknowledged.fetch_add(1, Ordering::SeqCst);
                }
                None => tracing::debug!(pkid, "acknowledgement for an unknown packet id"),
            },
        }
    }

    /// Hands stored messages to rumqttc, oldest first, while connected and
    /// the window has room. While the broker is away they wait on disk,
    /// where the byte cap applies to all of them.
    fn hand_over(&self, client: &impl Client, outbox: &mut Outbox, flight: &mut InFlight) {
        self.hand_over_direct(client, flight);
        if !self.stats.connected.load(Ordering::SeqCst) {
            return;
        }
        // Every PUBACK comes through here: skip the read when nothing new was stored.
        while flight.handed.len() < WINDOW && flight.handed_below < outbox.next_seq() {
            let entries = tokio::task::block_in_place(|| outbox.read(flight.handed_below, WINDOW - flight.handed.len()));
            if entries.is_empty() {
                return;
            }
            let progress = flight.handed_below;
            for entry in entries {
                if flight.handed.contains(&entry.seq) {
                    flight.handed_below = entry.seq + 1;
                    continue;
                }
                if entry.topic.len() + entry.payload.len() > self.max_message_bytes {
                    // Stored by an earlier run with a larger cap: numbered, so a
                    // counted drop (reported by `outbox_overflow`), never a reconnect loop.
                    if let Some(suppressed) = self.refused_log.allow() {
                        tracing::error!(seq = entry.seq, bytes = entry.topic.len() + entry.payload.len(), max = self.max_message_bytes, suppressed, "a stored message is over mqtt.max_message_bytes; dropped (reported as outbox_overflow)");
                    }
                    outbox.give_up(entry.seq);
                    flight.handed_below = entry.seq + 1;
                    continue;
                }
                flight.awaiting_pkid.push_back(Some(entry.seq));
                if let Err(error) = client.publish(entry.topic, QoS::AtLeastOnce, false, entry.payload) {
                    // Cannot happen while the window is smaller than the channel; try again later.
                    flight.awaiting_pkid.pop_back();
                    if let Some(suppressed) = self.client_full_log.allow() {
                        tracing::warn!(%error, suppressed, "MQTT client queue is full");
                    }
                    return;
                }
                flight.handed.insert(entry.seq);
                flight.handed_below = entry.seq + 1;
                self.stats.submitted.fetch_add(1, Ordering::SeqCst);
            }
            if flight.handed_below == progress {
                return;
            }
        }
    }

    /// QoS 1, not stored: the status and command replies. They wait in a
    /// bounded queue for room with rumqttc (the status ahead of replies);
    /// when it is full a reply is dropped and counted, never silently.
    fn send_direct(&self, client: &impl Client, message: Outgoing, flight: &mut InFlight) {
        if flight.direct.len() >= DIRECT_QUEUE {
            // The status must go out: it takes the place of the newest reply.
            let dropped = if message.kind == Kind::Retained { flight.direct.pop_back() } else { None };
            self.stats.direct_dropped.fetch_add(1, Ordering::SeqCst);
            if let Some(suppressed) = self.direct_dropped_log.allow() {
                let topic = dropped.as_ref().unwrap_or(&message).topic.as_str();
                tracing::warn!(%topic, suppressed, queued = DIRECT_QUEUE, "too many replies waiting for the broker; one dropped (counted in telemetry as mqtt.replies_dropped)");
            }
            if dropped.is_none() {
                return;
            }
        }
        if message.kind == Kind::Retained {
            let position = flight.direct.iter().take_while(|m| m.kind == Kind::Retained).count();
            flight.direct.insert(position, message);
        } else {
            flight.direct.push_back(message);
        }
        self.hand_over_direct(client, flight);
    }

    /// Hands queued unstored messages to rumqttc while fewer than `DIRECT_ROOM` are unacknowledged.
    fn hand_over_direct(&self, client: &impl Client, flight: &mut InFlight) {
        while flight.direct_unacked < DIRECT_ROOM {
            let Some(message) = flight.direct.pop_front() else { return };
            let retain = message.kind == Kind::Retained;
            flight.awaiting_pkid.push_back(None);
            match client.publish(message.topic.clone(), QoS::AtLeastOnce, retain, message.payload.clone()) {
                Ok(()) => {
                    flight.direct_unacked += 1;
                    self.stats.submitted.fetch_add(1, Ordering::SeqCst);
                }
                Err(error) => {
                    flight.awaiting_pkid.pop_back();
                    flight.direct.push_front(message);
                    if let Some(suppressed) = self.client_full_log.allow() {
                        tracing::warn!(%error, suppressed, "MQTT client queue is full; replies wait");
                    }
                    return;
                }
            }
        }
    }

    fn update_figures(&self, outbox: &Outbox) {
        let figures = OutboxFigures {
            mode: Some(outbox.mode()),
            messages: outbox.len() as u64,
            bytes: outbox.bytes(),
            capacity_bytes: outbox.capacity(),
            dropped: outbox.dropped_total(),
        };
        if let Ok(mut slot) = self.stats.outbox.lock() {
            *slot = figures;
        }
    }
}

/// Drives rumqttc's event loop: connects, reconnects with jittered
/// exponential backoff, and reports what it sees in order.
///
/// rumqttc moves unacknowledged messages to `pending` when a connection
/// fails, and clears `pending` when the next broker has no session for us;
/// taking them out at the failure and putting them back after the CONNACK
/// means they are always sent again.
async fn drive(
    mut eventloop: EventLoop,
    broker: String,
    stats: Arc<PublisherStats>,
    notices: mpsc::UnboundedSender<Notice>,
    routes: Routes,
) {
    let mut backoff = RECONNECT_FIRST;
    let mut kept: VecDeque<Request> = VecDeque::new();
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(connack))) => {
                tracing::info!(%broker, session_present = connack.session_present, "connected to MQTT broker");
                kept.append(&mut eventloop.pending);
                eventloop.pending = std::mem::take(&mut kept);
                stats.connected.store(true, Ordering::SeqCst);
                stats.connects.fetch_add(1, Ordering::SeqCst);
                let _ = notices.send(Notice::Connected);
                backoff = RECONNECT_FIRST;
            }
            Ok(Event::Outgoing(MqttOutgoing::Publish(pkid))) => {
                let _ = notices.send(Notice::Published(pkid));
            }
            Ok(Event::Incoming(Packet::PubAck(ack))) => {
                let _ = notices.send(Notice::Acknowledged(ack.pkid));
            }
            Ok(Event::Incoming(Packet::Publish(publish))) => {
                let inbound = Inbound { topic: publish.topic, payload: publish.payload.to_vec(), retained: publish.retain };
                let topic = inbound.topic.clone();
                match routes.deliver(inbound) {
                    Delivery::Taken => {}
                    // The consumer counted nothing (add_counted): its queue was full.
                    Delivery::Refused => drop(stats.inbound_dropped.fetch_add(1, Ordering::SeqCst)),
                    Delivery::NoRoute => tracing::debug!(%topic, "message on a topic no consumer registered; ignored"),
                }
            }
            Ok(Event::Outgoing(MqttOutgoing::Disconnect)) => {
                stats.connected.store(false, Ordering::SeqCst);
                return;
            }
            Ok(_) => {}
            Err(error) => {
                kept.append(&mut eventloop.pending);
                let was_connected = stats.connected.swap(false, Ordering::SeqCst);
                let wait = backoff.mul_f64(0.5 + fastrand::f64() * 0.5);
                let hint = hint(&error);
                if was_connected {
                    tracing::warn!(%broker, %error, unacknowledged = kept.len(), "lost the MQTT broker; reconnecting");
                } else {
                    tracing::warn!(%broker, %error, retry_in_ms = wait.as_millis() as u64, hint, "cannot connect to the MQTT broker");
                }
                tokio::time::sleep(wait).await;
                backoff = (backoff * 2).min(RECONNECT_MAX);
            }
        }
    }
}

/// The most bytes a stored message's body on `topic` may have under the cap
/// (`mqtt.max_message_bytes`), leaving room for the `seq` the outbox adds.
pub fn stored_body_budget(max_message_bytes: usize, topic: &str) -> usize {
    max_message_bytes.saturating_sub(topic.len() + SEQ_ROOM)
}

/// Sends a command reply (QoS 1, not stored) through the publisher's channel.
pub fn reply(topic: String, payload: Vec<u8>) -> Outgoing {
    Outgoing::new(topic, payload, Kind::Direct)
}

#[cfg(test)]
mod tests {
    //! Delivery without a broker, through the [`Client`] seam: what is handed
    //! over, how packet ids pair with stored messages, what an
    //! acknowledgement deletes. The real-Mosquitto tests (tests/delivery.rs)
    //! cover the same under restarts and outages.
    use super::*;
    use std::cell::{Cell, RefCell};
    use std::sync::Mutex;

    #[derive(Default)]
    struct FakeClient {
        /// (topic, qos, retain)
        published: RefCell<Vec<(String, QoS, bool)>>,
        subscribed: RefCell<Vec<String>>,
        queue_full: Cell<bool>,
    }

    impl Client for FakeClient {
        fn publish(&self, topic: String, qos: QoS, retain: bool, payload: Vec<u8>) -> Result<(), rumqttc::ClientError> {
            if self.queue_full.get() {
                let request = Request::Publish(rumqttc::Publish::new(topic, qos, payload));
                return Err(rumqttc::ClientError::TryRequest(request));
            }
            self.published.borrow_mut().push((topic, qos, retain));
            Ok(())
        }

        fn subscribe(&self, filter: String, _qos: QoS) -> Result<(), rumqttc::ClientError> {
            self.subscribed.borrow_mut().push(filter);
            Ok(())
        }
    }

    struct Rig {
        publisher: Publisher,
        client: FakeClient,
        outbox: Outbox,
        flight: InFlight,
        _dir: tempfile::TempDir,
    }

    impl Rig {
        fn new() -> Rig {
            let dir = tempfile::tempdir().unwrap();
            let active: ActiveModel = Arc::new(std::sync::RwLock::new(crate::wire::ModelIdentity {
                name: "m".into(),
                version: "1".into(),
                sha256: "00".into(),
            }));
            let config = OutboxConfig { path: dir.path().join("outbox.redb"), ..Default::default() };
            let outbox = Outbox::open(&config.path, config.max_bytes, config.memory_bytes);
            let publisher = Publisher::new("pole", &Topics::new("cctv", "pole"), &active, MqttOptions::new("t", "localhost", 1883), config);
            let flight = InFlight::new();
            Rig { publisher, client: FakeClient::default(), outbox, flight, _dir: dir }
        }

        fn store(&mut self, messages: impl IntoIterator<Item = Outgoing>) {
            self.publisher.accept(messages.into_iter().collect(), &self.client, &mut self.outbox, &mut self.flight);
            self.publisher.hand_over(&self.client, &mut self.outbox, &mut self.flight);
        }

        fn notice(&mut self, notice: Notice) {
            let filters = [("commands", "cctv/pole/cmd/+".to_string())];
            self.publisher.on_notice(notice, &self.client, &filters, &mut self.outbox, &mut self.flight);
            self.publisher.hand_over(&self.client, &mut self.outbox, &mut self.flight);
        }

        fn connect(&mut self) {
            self.publisher.stats.connected.store(true, Ordering::SeqCst);
            self.notice(Notice::Connected);
        }

        fn stored_topics(&self) -> Vec<String> {
            self.client.published.borrow().iter().filter(|(_, qos, retain)| *qos == QoS::AtLeastOnce && !retain).map(|(t, _, _)| t.clone()).collect()
        }
    }

    fn prediction(n: u64) -> Outgoing {
        Outgoing::stored(format!("cctv/pole/predictions/p{n}"), br#"{"n":1}"#.to_vec())
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn nothing_is_handed_over_before_the_broker_is_connected_then_oldest_first() {
        let mut rig = Rig::new();
        rig.store((0..3).map(prediction));
        assert!(rig.client.published.borrow().is_empty());
        assert_eq!(rig.outbox.len(), 3);
        rig.connect();
        // status and model state (retained), the subscription, then the stored messages in order.
        assert_eq!(*rig.client.subscribed.borrow(), ["cctv/pole/cmd/+"]);
        assert_eq!(rig.stored_topics(), ["cctv/pole/predictions/p0", "cctv/pole/predictions/p1", "cctv/pole/predictions/p2"]);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn packet_ids_pair_in_hand_over_order_and_an_ack_deletes_exactly_its_message() {
        let mut rig = Rig::new();
        rig.connect(); // two retained direct messages: pkids 1 and 2
        rig.store((0..3).map(prediction)); // seq 1, 2, 3 → pkids 3, 4, 5
        for pkid in 1..=5 {
            rig.notice(Notice::Published(pkid));
        }
        rig.notice(Notice::Published(4)); // a retransmission: still seq 2
        rig.notice(Notice::Acknowledged(4));
        let left: Vec<u64> = rig.outbox.read(0, 10).iter().map(|e| e.seq).collect();
        assert_eq!(rig.outbox.len(), 2);
        rig.outbox.flush_acknowledged(true).unwrap();
        assert_eq!(rig.outbox.read(0, 10).iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 3], "before flush: {left:?}");
        // Acks of the direct messages delete nothing stored.
        rig.notice(Notice::Acknowledged(1));
        rig.notice(Notice::Acknowledged(2));
        assert_eq!(rig.outbox.len(), 2);
        rig.notice(Notice::Acknowledged(3));
        rig.notice(Notice::Acknowledged(5));
        assert!(rig.outbox.is_empty());
        assert_eq!(rig.publisher.stats.acknowledged.load(Ordering::SeqCst), 5);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn at_most_a_window_is_unacknowledged_and_each_ack_lets_one_more_go() {
        let mut rig = Rig::new();
        rig.connect();
        rig.store((0..(WINDOW as u64 + 10)).map(prediction));
        assert_eq!(rig.stored_topics().len(), WINDOW);
        for pkid in 1..=(WINDOW as u16 + 2) {
            rig.notice(Notice::Published(pkid));
        }
        rig.notice(Notice::Acknowledged(3)); // the first stored message
        assert_eq!(rig.stored_topics().len(), WINDOW + 1);
        assert_eq!(rig.stored_topics().last().unwrap(), &format!("cctv/pole/predictions/p{WINDOW}"));
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_full_client_queue_keeps_the_message_stored_for_the_next_hand_over() {
        let mut rig = Rig::new();
        rig.connect();
        rig.client.queue_full.set(true);
        rig.store([prediction(0)]);
        assert!(rig.stored_topics().is_empty());
        assert_eq!(rig.outbox.len(), 1);
        rig.client.queue_full.set(false);
        rig.publisher.hand_over(&rig.client, &mut rig.outbox, &mut rig.flight);
        assert_eq!(rig.stored_topics(), ["cctv/pole/predictions/p0"]);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn the_stored_hook_hears_each_tag_with_the_seq_it_got() {
        let heard: Arc<Mutex<Vec<(u64, u64)>>> = Default::default();
        let mut rig = Rig::new();
        let sink = heard.clone();
        rig.publisher.on_stored = Some(Box::new(move |tag, seq| sink.lock().unwrap().push((tag, seq))));
        rig.store([prediction(0), Outgoing::stored_tagged("t".into(), b"{}".to_vec(), 70), prediction(1), Outgoing::stored_tagged("t".into(), b"{}".to_vec(), 71)]);
        rig.store([Outgoing::stored_tagged("t".into(), b"{}".to_vec(), 72)]);
        // seq starts at 1; untagged messages are numbered too.
        assert_eq!(*heard.lock().unwrap(), [(70, 2), (71, 4), (72, 5)]);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn telemetry_is_dropped_and_counted_while_the_broker_is_away() {
        let mut rig = Rig::new();
        rig.store([Outgoing::new("cctv/pole/telemetry".into(), b"{}".to_vec(), Kind::BestEffort)]);
        assert_eq!(rig.publisher.stats.best_effort_dropped.load(Ordering::SeqCst), 1);
        rig.connect();
        rig.store([Outgoing::new("cctv/pole/telemetry".into(), b"{}".to_vec(), Kind::BestEffort)]);
        assert!(rig.client.published.borrow().iter().any(|(t, qos, _)| t == "cctv/pole/telemetry" && *qos == QoS::AtMostOnce));
        assert_eq!(rig.outbox.len(), 0);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_message_over_the_cap_is_refused_before_it_gets_a_seq_counted_and_reported() {
        let mut rig = Rig::new();
        rig.publisher.max_message_bytes = 64 << 10;
        let heard: Arc<Mutex<Vec<(u64, u64)>>> = Default::default();
        let sink = heard.clone();
        rig.publisher.on_stored = Some(Box::new(move |tag, seq| sink.lock().unwrap().push((tag, seq))));
        let big = Outgoing::stored_tagged("cctv/pole/fleet".into(), format!("{{\"x\":\"{}\"}}", "x".repeat(64 << 10)).into_bytes(), 1);
        rig.store([prediction(0), big, Outgoing::stored_tagged("t".into(), b"{}".to_vec(), 2)]);
        // Numbers stay gapless: the refused message never got one, and tags pair with the right seq.
        assert_eq!(rig.outbox.read(0, 10).iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2]);
        assert_eq!(*heard.lock().unwrap(), [(2, 2)]);
        assert_eq!(rig.publisher.stats.refused.load(Ordering::SeqCst), 1);
        // An oversized reply never reaches the client either.
        rig.connect();
        rig.store([reply("cctv/pole/cmd/x/reply".into(), vec![b'x'; 70 << 10])]);
        assert!(!rig.client.published.borrow().iter().any(|(t, _, _)| t.ends_with("/reply")));
        // Once connected, housekeeping reports what was refused in one event.
        let mut logged = DropLog { total: 0, at: None };
        rig.publisher.housekeeping(&mut rig.outbox, &mut rig.flight, &mut logged);
        let events: Vec<serde_json::Value> = rig.outbox.read(0, 10).iter().filter(|e| e.topic == "cctv/pole/events").map(|e| serde_json::from_slice(&e.payload).unwrap()).collect();
        assert_eq!(events.len(), 1, "{events:?}");
        assert_eq!((events[0]["kind"].as_str(), events[0]["refused"].as_u64(), events[0]["refused_total"].as_u64()), (Some("message_refused"), Some(2), Some(2)));
        assert_eq!(events[0]["topic"], "cctv/pole/cmd/x/reply");
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_stored_message_over_the_cap_from_an_earlier_run_is_a_counted_drop_not_a_hand_over() {
        let mut rig = Rig::new();
        rig.store([prediction(0), Outgoing::stored("cctv/pole/x".into(), format!("{{\"x\":\"{}\"}}", "x".repeat(100 << 10)).into_bytes()), prediction(2)]);
        rig.publisher.max_message_bytes = 64 << 10; // the config was lowered since
        rig.connect();
        assert_eq!(rig.stored_topics(), ["cctv/pole/predictions/p0", "cctv/pole/predictions/p2"]);
        assert_eq!(rig.outbox.dropped_total(), 1);
        assert_eq!(rig.outbox.take_dropped(), Some(crate::publish::outbox::Dropped { count: 1, first_seq: 2, last_seq: 2 }));
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn replies_beyond_the_room_wait_in_a_bounded_queue_and_the_rest_are_counted() {
        let mut rig = Rig::new();
        rig.connect(); // status and model: two direct messages in flight
        let replies = DIRECT_QUEUE + DIRECT_ROOM + 10;
        rig.store((0..replies).map(|n| reply(format!("cctv/pole/cmd/ping/reply/{n}"), b"{}".to_vec())));
        let sent = |rig: &Rig| rig.client.published.borrow().iter().filter(|(t, _, _)| t.contains("/reply")).count();
        assert_eq!(sent(&rig), DIRECT_ROOM - 2, "at most DIRECT_ROOM unacknowledged");
        assert_eq!(rig.flight.direct.len(), DIRECT_QUEUE);
        assert_eq!(rig.publisher.stats.direct_dropped.load(Ordering::SeqCst) as usize, replies - (DIRECT_ROOM - 2) - DIRECT_QUEUE);
        // Each acknowledgement lets the next one go, in order.
        for pkid in 1..=DIRECT_ROOM as u16 {
            rig.notice(Notice::Published(pkid));
        }
        rig.notice(Notice::Acknowledged(3));
        assert_eq!(sent(&rig), DIRECT_ROOM - 1);
        assert_eq!(rig.client.published.borrow().last().unwrap().0, format!("cctv/pole/cmd/ping/reply/{}", DIRECT_ROOM - 2));
        // The status goes ahead of the waiting replies, and is never the one dropped.
        rig.connect();
        assert_eq!(rig.flight.direct.front().map(|m| m.topic.as_str()), Some("cctv/pole/status"));
    }

    #[test]
    fn the_size_cap_is_bounded_in_the_config() {
        let config = |value: &str| {
            let text = crate::config::DEMO_CONFIG.replace("[mqtt]\n", &format!("[mqtt]\nmax_message_bytes = {value}\n"));
            assert!(text.contains("max_message_bytes"), "the demo config has an [mqtt] section");
            crate::config::Config::parse(&text, "test", std::path::Path::new("."))
        };
        for bad in ["1000", "1073741824"] {
            let error = config(bad).unwrap_err().to_string();
            assert!(error.contains("mqtt.max_message_bytes") && error.contains("from 65536 to 8388608"), "{error}");
        }
        assert_eq!(config("131072").unwrap().mqtt.max_message_bytes, 131072);
        assert_eq!(crate::config::Config::demo().unwrap().mqtt.max_message_bytes, 256 << 10);
    }
}
