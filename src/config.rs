//! The agent's configuration file (TOML).
//!
//! Every default lives here, in the `Default` impls and `default_*` functions,
//! and nowhere else. Unknown keys are errors (`deny_unknown_fields`), and every
//! error names the key and what to write instead.

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::Deserialize;
use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};

/// The configuration `cctv-agent run` uses when no `--config` is given:
/// the bundled model, the bundled clip, a broker on this machine.
pub const DEMO_CONFIG: &str = include_str!("../config/demo.toml");

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config {origin}: {message}")]
    Parse { origin: String, message: String },
    #[error("config {origin}: `{key}` {problem}")]
    Invalid { origin: String, key: String, problem: String },
    /// `mqtt.url` is not a broker address.
    #[error("config {origin}: `{key}` {problem}")]
    Url { origin: String, key: String, problem: UrlError },
    /// A device or camera id, or the topic root, cannot be a topic level.
    #[error("config {origin}: `{key}` {problem}")]
    TopicLevel { origin: String, key: String, problem: TopicLevelError },
}

/// Why `mqtt.url` is not a broker address. Its text follows the key's name
/// (`mqtt.url is ...`), so it is the problem, not a separate cause.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error("is \"{url}\": write mqtt://HOST[:PORT] or mqtts://HOST[:PORT] (e.g. mqtt://127.0.0.1:1883)")]
    Scheme { url: String },
    #[error("has port \"{port}\", which is not a number from 1 to 65535")]
    Port { port: String },
    #[error("\"{url}\" has no host: write e.g. mqtt://127.0.0.1:1883")]
    NoHost { url: String },
}

/// Why a value cannot be one level of an MQTT topic; follows the key's name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicLevelError {
    #[error("is empty")]
    Empty,
    #[error("\"{value}\" contains {reserved:?}, which MQTT topics reserve: use letters, digits, '-' or '_'")]
    Reserved { value: String, reserved: char },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Names this device in every topic and payload.
    pub device_id: String,
    /// Where the agent keeps what must survive a restart (the outbox).
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    pub mqtt: MqttConfig,
    #[serde(default)]
    pub outbox: OutboxConfig,
    /// Model updates from an OCI registry; off when absent.
    #[serde(default)]
    pub registry: Option<RegistryConfig>,
    pub model: ModelConfig,
    #[serde(default)]
    pub telemetry: TelemetryConfig,
    #[serde(default)]
    pub watchdog: WatchdogConfig,
    /// Ground-truth feedback, drift and alerts.
    #[serde(default)]
    pub monitor: MonitorConfig,
    /// Crops saved for retraining.
    #[serde(default)]
    pub samples: SamplesConfig,
    pub cameras: Vec<CameraConfig>,
}

fn default_state_dir() -> PathBuf {
    PathBuf::from("/var/lib/cctv-agent")
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttConfig {
    /// `mqtt://host[:port]` or `mqtts://host[:port]`.
    pub url: String,
    /// First topic level; topics are `<topic_root>/<device_id>/...`.
    #[serde(default = "default_topic_root")]
    pub topic_root: String,
    /// MQTT client id; defaults to `cctv-agent-<device_id>`.
    #[serde(default)]
    pub client_id: Option<String>,
    #[serde(default = "default_keep_alive_seconds")]
    pub keep_alive_seconds: u64,
    /// PEM file of the CA(s) that signed the broker's certificate (mqtts only).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Client certificate and key (PEM) for brokers that require mutual TLS.
    #[serde(default)]
    pub client_cert_file: Option<PathBuf>,
    #[serde(default)]
    pub client_key_file: Option<PathBuf>,
    /// Refuse to connect without TLS (an `mqtt://` URL is then a config error).
    #[serde(default)]
    pub require_tls: bool,
    /// User name for brokers that want one; the password comes from
    /// `password_file` or the `CCTV_MQTT_PASSWORD` environment variable, and
    /// is never logged.
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// Messages waiting for the publisher before producers wait in turn.
    #[serde(default = "default_queue_capacity")]
    pub queue_capacity: usize,
    /// Keep the MQTT session on the broker across disconnects, so commands
    /// sent while the device was away still arrive (needs a fixed client id).
    #[serde(default = "default_persistent_session")]
    pub persistent_session: bool,
    /// Largest message the agent sends (topic and payload, `seq` included),
    /// kept below the broker's limit: larger ones are trimmed by their
    /// producer or refused before they get a `seq`. MQTT 3.1.1 has no way
    /// for the broker to say its limit, so set this at or below it.
    #[serde(default = "default_max_message_bytes")]
    pub max_message_bytes: usize,
}

pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 256 << 10;

fn default_max_message_bytes() -> usize {
    DEFAULT_MAX_MESSAGE_BYTES
}

/// `mqtt.max_message_bytes` bounds: a sample chunk (~45 KiB) must fit, and
/// no more than the agent accepts from the broker itself.
pub const MESSAGE_BYTES_RANGE: std::ops::RangeInclusive<usize> = (64 << 10)..=(8 << 20);

fn default_persistent_session() -> bool {
    true
}

/// Predictions and events wait here, on disk, until the broker has them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutboxConfig {
    /// The store file; `<state_dir>/outbox.redb` when not set.
    pub path: PathBuf,
    /// Most bytes of messages kept; when full, the oldest go first (counted
    /// and reported). At ~1 KiB per prediction, 64 MiB holds about 18 minutes
    /// of a camera at 60 frames per second.
    pub max_bytes: u64,
    /// Most bytes kept in memory while the store cannot be written.
    pub memory_bytes: u64,
}

impl Default for OutboxConfig {
    fn default() -> Self {
        OutboxConfig { path: PathBuf::new(), max_bytes: 64 << 20, memory_bytes: 8 << 20 }
    }
}

/// Where new models come from, and what they must pass on this device.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryConfig {
    /// `http(s)://host[:port]/<repository>`, e.g. http://127.0.0.1:5000/roadside/vehicle-classifier
    pub url: String,
    #[serde(default = "default_tag")]
    pub tag: String,
    #[serde(default = "default_poll_seconds")]
    pub poll_seconds: u64,
    /// Public key files (`cctv-agent release keygen`) whose signatures are trusted.
    pub public_keys: Vec<PathBuf>,
    /// Installed models; `<state_dir>/models` when not set.
    #[serde(default)]
    pub models_dir: PathBuf,
    #[serde(default = "default_max_model_bytes")]
    pub max_model_bytes: u64,
    /// A new model whose p95 full-frame latency here is above this is refused.
    #[serde(default = "default_latency_budget_ms")]
    pub latency_budget_ms: f32,
    #[serde(default = "default_validation_runs")]
    pub validation_runs: usize,
    /// Frames a new release classifies while the previous model stays
    /// loaded; 0 turns probation off.
    #[serde(default = "default_probation_frames")]
    pub probation_frames: u64,
    /// Probation fails if the new model's mean top-1 score is below this
    /// share of the previous model's on the same feed.
    #[serde(default = "default_probation_min_score_ratio")]
    pub probation_min_score_ratio: f32,
}

/// `registry.url` taken apart: `base` is `http(s)://host[:port]`, `repository`
/// the path after it. Parsed here so that config validation needs nothing
/// from the models wing, which builds its client from this.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryUrl {
    pub base: String,
    pub repository: String,
}

/// What is wrong with a `registry.url`.
#[derive(Debug, thiserror::Error)]
pub enum RegistryUrlError {
    #[error("registry url {0:?} has no http:// or https://")]
    NoScheme(String),
    #[error("registry url {0:?}: use http:// or https://")]
    Scheme(String),
    #[error("registry url {0:?} names no repository (…/roadside/vehicle-classifier)")]
    NoRepository(String),
}

impl RegistryUrl {
    /// `url` is `http(s)://host[:port]/<repository>`.
    pub fn parse(url: &str) -> Result<RegistryUrl, RegistryUrlError> {
        let (scheme, rest) = url.split_once("://").ok_or_else(|| RegistryUrlError::NoScheme(url.to_string()))?;
        if scheme != "http" && scheme != "https" {
            return Err(RegistryUrlError::Scheme(url.to_string()));
        }
        let (host, repository) = rest.split_once('/').ok_or_else(|| RegistryUrlError::NoRepository(url.to_string()))?;
        Ok(RegistryUrl { base: format!("{scheme}://{host}"), repository: repository.trim_end_matches('/').to_string() })
    }
}

fn default_probation_frames() -> u64 {
    200
}
fn default_probation_min_score_ratio() -> f32 {
    0.5
}

fn default_tag() -> String {
    "champion".into()
}
fn default_poll_seconds() -> u64 {
    300
}
fn default_max_model_bytes() -> u64 {
    256 << 20
}
fn default_latency_budget_ms() -> f32 {
    250.0
}
fn default_validation_runs() -> usize {
    20
}

/// Smallest outbox that holds the messages in flight.
const MIN_OUTBOX_BYTES: u64 = 16 << 10;

fn default_topic_root() -> String {
    "cctv".into()
}
fn default_keep_alive_seconds() -> u64 {
    30
}
fn default_queue_capacity() -> usize {
    256
}
/// CA bundle used for `mqtts://` when `ca_file` is not set (Debian's).
pub const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// The ONNX file. Its spec (preprocessing, labels) is read from the
    /// `.toml` of the same name beside it unless `spec` says otherwise.
    pub path: PathBuf,
    #[serde(default)]
    pub spec: Option<PathBuf>,
    /// ONNX Runtime intra-op threads. 1 is fastest on a 2-core device.
    #[serde(default = "default_intra_threads")]
    pub intra_threads: usize,
}

fn default_intra_threads() -> usize {
    1
}

impl ModelConfig {
    pub fn spec_path(&self) -> PathBuf {
        self.spec.clone().unwrap_or_else(|| self.path.with_extension("toml"))
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    pub interval_seconds: u64,
    /// Root of the sysfs tree read for sensors (tests point it at a fixture).
    pub sysfs_root: PathBuf,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig { interval_seconds: 10, sysfs_root: PathBuf::from("/sys") }
    }
}

/// How the agent judges its model in the field: feedback with the true
/// class (precision), and label-free drift per camera. An alert is raised
/// when a figure crosses `*_alert_*` with enough evidence, and cleared only
/// when it is back past `*_clear_*` (the gap between them stops flapping).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MonitorConfig {
    pub enabled: bool,
    /// Recent predictions remembered so that feedback can name them by `seq`
    /// (at ~60 predictions/s, 20000 is about 5 minutes).
    pub remember_predictions: usize,
    /// The precision window: the last this many labelled regions...
    pub feedback_window: usize,
    /// ...that are at most this old.
    pub feedback_window_seconds: u64,
    /// Labelled regions of the active model needed before precision can alert or clear.
    pub min_labelled: usize,
    /// The model's precision (share of labelled regions it named right).
    pub precision_alert_below: f64,
    pub precision_clear_at: f64,
    /// At most one retrain request per model and reason in this many seconds
    /// (alerts are still raised and cleared as they happen).
    pub retrain_interval_seconds: u64,
    pub drift: DriftConfig,
}

impl Default for MonitorConfig {
    fn default() -> Self {
        MonitorConfig {
            enabled: true,
            remember_predictions: 20_000,
            feedback_window: 500,
            feedback_window_seconds: 24 * 3600,
            min_labelled: 30,
            precision_alert_below: 0.40,
            precision_clear_at: 0.50,
            retrain_interval_seconds: 1800,
            drift: DriftConfig::default(),
        }
    }
}

/// Label-free drift, per camera.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DriftConfig {
    /// Regions per camera in the class-mix and confidence window.
    pub class_window: usize,
    /// Regions per camera a learned baseline is made of (when the model's
    /// spec has no `[reference]`). It is kept in `<state_dir>/monitor/`.
    pub reference_regions: usize,
    /// Total variation distance between the window's class mix and the
    /// baseline's (0 = same mix, 1 = no class in common).
    pub class_mix_alert_above: f64,
    pub class_mix_clear_below: f64,
    /// Mean top-1 score as a share of the baseline's.
    pub confidence_alert_below: f64,
    pub confidence_clear_at: f64,
    /// Input statistics are measured on every this many frames...
    pub input_every_frames: u64,
    /// ...and judged over the last this many measurements.
    pub input_window: usize,
    /// Mean luma, 0–255 (night, a covered lens).
    pub brightness_alert_below: f64,
    pub brightness_clear_at: f64,
    /// Standard deviation of luma (fog, glare).
    pub contrast_alert_below: f64,
    pub contrast_clear_at: f64,
    /// Variance of the Laplacian on a 320-pixel-wide copy (blur, a dirty or
    /// misted lens). It depends on the scene: the bundled clip reads ~750
    /// sharp and ~26 through a 4-pixel blur; read a site's own figure in
    /// telemetry (`monitor.cameras.<id>.sharpness`) and set this below it.
    pub sharpness_alert_below: f64,
    pub sharpness_clear_at: f64,
}

impl Default for DriftConfig {
    fn default() -> Self {
        DriftConfig {
            class_window: 500,
            reference_regions: 2000,
            class_mix_alert_above: 0.35,
            class_mix_clear_below: 0.25,
            confidence_alert_below: 0.70,
            confidence_clear_at: 0.85,
            input_every_frames: 25,
            input_window: 10,
            brightness_alert_below: 40.0,
            brightness_clear_at: 55.0,
            contrast_alert_below: 12.0,
            contrast_clear_at: 18.0,
            sharpness_alert_below: 50.0,
            sharpness_clear_at: 100.0,
        }
    }
}

/// Regions saved as JPEG crops with their metadata, for the trainer.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SamplesConfig {
    pub enabled: bool,
    /// Where crops are kept; `<state_dir>/samples` when not set.
    pub dir: PathBuf,
    /// Disk budget; the oldest samples go first.
    pub max_bytes: u64,
    /// Regions whose road-class score is below this are saved...
    pub low_confidence_below: f32,
    /// ...and this share of the others, at random...
    pub random_rate: f64,
    /// ...at most this many an hour (feedback-marked mistakes are not limited).
    pub max_per_hour: u32,
    /// Crops of the latest regions kept in memory, so that a region marked
    /// wrong by feedback can still be saved (0: off)...
    pub recent: usize,
    /// ...from the start; otherwise only within an hour of the last feedback
    /// message, since cropping and encoding every region costs CPU.
    pub recent_before_feedback: bool,
    /// Crops are scaled down to at most this many pixels on their longer side.
    pub max_side: u32,
    /// Publish each saved sample on `…/samples/<id>` (QoS 1, through the outbox).
    pub publish: bool,
}

impl Default for SamplesConfig {
    fn default() -> Self {
        SamplesConfig {
            enabled: true,
            dir: PathBuf::new(),
            max_bytes: 64 << 20,
            low_confidence_below: 0.50,
            random_rate: 0.002,
            max_per_hour: 120,
            recent: 300,
            recent_before_feedback: false,
            max_side: 256,
            publish: true,
        }
    }
}

/// When systemd's watchdog is on (`WatchdogSec=`), the agent feeds it only
/// while every camera and inference thread makes progress.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WatchdogConfig {
    /// A thread silent this long (not waiting on another part) counts as
    /// hung. Above the 5 s stream timeouts and the slowest inference.
    pub stall_seconds: u64,
}

impl Default for WatchdogConfig {
    fn default() -> Self {
        WatchdogConfig { stall_seconds: 30 }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CameraConfig {
    pub id: String,
    /// A file path, an `rtsp://` (or `http(s)://`) URL, or a V4L2 device such as `/dev/video0`.
    pub url: String,
    #[serde(default)]
    pub regions: RegionsConfig,
    #[serde(default)]
    pub replay: Replay,
    #[serde(default, rename = "loop")]
    pub loop_file: bool,
    /// Classify at most this many regions per frame (the largest first).
    #[serde(default = "default_max_regions")]
    pub max_regions: usize,
    #[serde(default)]
    pub motion: MotionConfig,
    /// Frames larger than this (width × height) are refused before they are
    /// decoded: an 8000×8000 stream would take ~850 MB.
    #[serde(default = "default_max_frame_pixels")]
    pub max_frame_pixels: u64,
}

fn default_max_regions() -> usize {
    8
}

const MIN_FRAME_PIXELS: u64 = 64 * 64;
const MAX_FRAME_PIXELS: u64 = 8192 * 8192;

/// 4096 × 3072 (12.6 MP): above every common CCTV resolution up to 4K and 12 MP.
fn default_max_frame_pixels() -> u64 {
    4096 * 3072
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Replay {
    /// Paced at the file's frame rate; like a live camera, only the newest frame waits.
    #[default]
    Realtime,
    /// As fast as inference allows; no frame is dropped.
    Asap,
}

/// Which parts of a frame are classified.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum RegionsConfig {
    /// The whole frame.
    #[default]
    Full,
    /// Moving objects, found by background subtraction.
    Motion,
    /// Fixed rectangles `[x, y, w, h]` in pixels (lanes).
    Fixed(Vec<[u32; 4]>),
}

impl<'de> Deserialize<'de> for RegionsConfig {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct RegionsVisitor;
        const EXPECTED: &str = r#""full", "motion", or a list of [x, y, w, h] such as [[0, 100, 640, 200]]"#;
        impl<'de> Visitor<'de> for RegionsVisitor {
            type Value = RegionsConfig;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(EXPECTED)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                match v {
                    "full" => Ok(RegionsConfig::Full),
                    "motion" => Ok(RegionsConfig::Motion),
                    other => Err(E::custom(format!("unknown regions \"{other}\": write {EXPECTED}"))),
                }
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut rects = Vec::new();
                while let Some(rect) = seq.next_element::<[u32; 4]>()? {
                    rects.push(rect);
                }
                Ok(RegionsConfig::Fixed(rects))
            }
        }
        deserializer.deserialize_any(RegionsVisitor)
    }
}

/// Tuning for `regions = "motion"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MotionConfig {
    /// Smallest moving blob worth classifying, as a fraction of the frame area.
    pub min_area_fraction: f64,
    /// Frames the background model learns from before regions are reported.
    pub warmup_frames: u32,
    /// Width the frame is scaled to for background subtraction (speed).
    pub analysis_width: u32,
    /// How fast the background model adapts after warm-up (0–1 per frame):
    /// 0.002 forgets over ~500 frames (20 s at 25 fps).
    pub learning_rate: f64,
}

impl Default for MotionConfig {
    fn default() -> Self {
        MotionConfig { min_area_fraction: 0.004, warmup_frames: 10, analysis_width: 320, learning_rate: 0.002 }
    }
}

/// Where a camera's frames come from, decided from its `url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceKind {
    File(PathBuf),
    Stream(String),
    Device(PathBuf),
}

impl CameraConfig {
    pub fn source(&self) -> SourceKind {
        let url = self.url.as_str();
        if url.contains("://") && !url.starts_with("file://") {
            SourceKind::Stream(url.to_string())
        } else if url.starts_with("/dev/video") {
            SourceKind::Device(PathBuf::from(url))
        } else {
            SourceKind::File(PathBuf::from(url.trim_start_matches("file://")))
        }
    }
}

/// Broker address parsed from `mqtt.url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerAddress {
    pub host: String,
    pub port: u16,
    pub tls: bool,
}

impl MqttConfig {
    pub fn broker(&self) -> Result<BrokerAddress, UrlError> {
        let (tls, rest) = if let Some(rest) = self.url.strip_prefix("mqtt://") {
            (false, rest)
        } else if let Some(rest) = self.url.strip_prefix("mqtts://") {
            (true, rest)
        } else {
            return Err(UrlError::Scheme { url: self.url.clone() });
        };
        let rest = rest.trim_end_matches('/');
        let (host, port) = match rest.rsplit_once(':') {
            Some((host, port)) => {
                let port = port.parse::<u16>().map_err(|_| UrlError::Port { port: port.to_string() })?;
                (host.to_string(), port)
            }
            None => (rest.to_string(), if tls { 8883 } else { 1883 }),
        };
        if host.is_empty() {
            return Err(UrlError::NoHost { url: self.url.clone() });
        }
        Ok(BrokerAddress { host, port, tls })
    }

    /// A broker at `url` with every other setting at its default.
    pub fn for_url(url: &str) -> MqttConfig {
        MqttConfig {
            url: url.to_string(),
            topic_root: default_topic_root(),
            client_id: None,
            keep_alive_seconds: default_keep_alive_seconds(),
            ca_file: None,
            client_cert_file: None,
            client_key_file: None,
            require_tls: false,
            username: None,
            password_file: None,
            queue_capacity: default_queue_capacity(),
            persistent_session: default_persistent_session(),
            max_message_bytes: default_max_message_bytes(),
        }
    }

    pub fn client_id(&self, device_id: &str) -> String {
        self.client_id.clone().unwrap_or_else(|| format!("cctv-agent-{device_id}"))
    }
}

impl Config {
    /// Reads and validates a config file. Relative paths inside it are taken
    /// relative to the file's own folder.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Self::parse(&text, &path.display().to_string(), base)
    }

    /// The built-in demo config; its relative paths are taken from the current folder.
    pub fn demo() -> Result<Config, ConfigError> {
        Self::parse(DEMO_CONFIG, "(built-in demo)", Path::new("."))
    }

    pub fn parse(text: &str, origin: &str, base: &Path) -> Result<Config, ConfigError> {
        let mut config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            origin: origin.to_string(),
            message: e.to_string().trim_end().to_string(),
        })?;
        config.resolve_paths(base);
        config.validate(origin)?;
        Ok(config)
    }

    fn resolve_paths(&mut self, base: &Path) {
        let resolve = |p: &Path| if p.is_relative() { base.join(p) } else { p.to_path_buf() };
        self.state_dir = resolve(&self.state_dir);
        if let Some(registry) = &mut self.registry {
            registry.models_dir = if registry.models_dir.as_os_str().is_empty() {
                self.state_dir.join("models")
            } else {
                resolve(&registry.models_dir)
            };
            registry.public_keys = registry.public_keys.iter().map(|p| resolve(p)).collect();
        }
        self.outbox.path = if self.outbox.path.as_os_str().is_empty() {
            self.state_dir.join("outbox.redb")
        } else {
            resolve(&self.outbox.path)
        };
        self.samples.dir = if self.samples.dir.as_os_str().is_empty() {
            self.state_dir.join("samples")
        } else {
            resolve(&self.samples.dir)
        };
        self.model.path = resolve(&self.model.path);
        self.model.spec = self.model.spec.as_deref().map(resolve);
        self.mqtt.ca_file = self.mqtt.ca_file.as_deref().map(resolve);
        self.mqtt.client_cert_file = self.mqtt.client_cert_file.as_deref().map(resolve);
        self.mqtt.client_key_file = self.mqtt.client_key_file.as_deref().map(resolve);
        self.mqtt.password_file = self.mqtt.password_file.as_deref().map(resolve);
        self.telemetry.sysfs_root = resolve(&self.telemetry.sysfs_root);
        for camera in &mut self.cameras {
            if let SourceKind::File(p) = camera.source() {
                camera.url = resolve(&p).display().to_string();
            }
        }
    }

    fn validate_monitor(&self, invalid: &dyn Fn(&str, String) -> ConfigError) -> Result<(), ConfigError> {
        let (m, d, s) = (&self.monitor, &self.monitor.drift, &self.samples);
        for (key, value) in [
            ("monitor.remember_predictions", m.remember_predictions),
            ("monitor.feedback_window", m.feedback_window),
            ("monitor.min_labelled", m.min_labelled),
            ("monitor.drift.class_window", d.class_window),
            ("monitor.drift.reference_regions", d.reference_regions),
            ("monitor.drift.input_window", d.input_window),
            ("monitor.drift.input_every_frames", d.input_every_frames as usize),
        ] {
            if value == 0 {
                return Err(invalid(key, "must be at least 1".into()));
            }
        }
        if m.min_labelled > m.feedback_window {
            return Err(invalid("monitor.min_labelled", format!("is {} but the window holds only monitor.feedback_window = {}: lower it or widen the window", m.min_labelled, m.feedback_window)));
        }
        // Each pair: (alert key, alert value, clear key, clear value, true when the alert is for low values).
        for (alert, a, clear, c, low) in [
            ("monitor.precision_alert_below", m.precision_alert_below, "monitor.precision_clear_at", m.precision_clear_at, true),
            ("monitor.drift.class_mix_alert_above", d.class_mix_alert_above, "monitor.drift.class_mix_clear_below", d.class_mix_clear_below, false),
            ("monitor.drift.confidence_alert_below", d.confidence_alert_below, "monitor.drift.confidence_clear_at", d.confidence_clear_at, true),
            ("monitor.drift.brightness_alert_below", d.brightness_alert_below, "monitor.drift.brightness_clear_at", d.brightness_clear_at, true),
            ("monitor.drift.contrast_alert_below", d.contrast_alert_below, "monitor.drift.contrast_clear_at", d.contrast_clear_at, true),
            ("monitor.drift.sharpness_alert_below", d.sharpness_alert_below, "monitor.drift.sharpness_clear_at", d.sharpness_clear_at, true),
        ] {
            if !a.is_finite() || !c.is_finite() || a < 0.0 || c < 0.0 {
                return Err(invalid(alert, "and its clear value must be numbers ≥ 0".into()));
            }
            if (low && c < a) || (!low && c > a) {
                let side = if low { "at or above" } else { "at or below" };
                return Err(invalid(clear, format!("is {c}: it must be {side} {alert} ({a}), or the alert could never clear")));
            }
        }
        if !(0.0..=1.0).contains(&s.random_rate) {
            return Err(invalid("samples.random_rate", format!("is {}: write a share between 0 and 1", s.random_rate)));
        }
        if s.enabled && (s.max_side < 16 || s.max_bytes < 1 << 20) {
            return Err(invalid("samples.max_side", "must be at least 16 and samples.max_bytes at least 1 MiB".into()));
        }
        Ok(())
    }

    fn validate(&self, origin: &str) -> Result<(), ConfigError> {
        let invalid = |key: &str, problem: String| ConfigError::Invalid {
            origin: origin.to_string(),
            key: key.to_string(),
            problem,
        };
        let topic_level = |key: &str, problem| ConfigError::TopicLevel { origin: origin.to_string(), key: key.to_string(), problem };
        check_topic_level(&self.device_id).map_err(|p| topic_level("device_id", p))?;
        check_topic_level(&self.mqtt.topic_root).map_err(|p| topic_level("mqtt.topic_root", p))?;
        let broker = self.mqtt.broker().map_err(|problem| ConfigError::Url { origin: origin.to_string(), key: "mqtt.url".into(), problem })?;
        if self.mqtt.require_tls && !broker.tls {
            return Err(invalid("mqtt.url", format!("is \"{}\", plain text, but mqtt.require_tls is set: use mqtts://", self.mqtt.url)));
        }
        if self.mqtt.client_cert_file.is_some() != self.mqtt.client_key_file.is_some() {
            return Err(invalid("mqtt.client_cert_file", "and mqtt.client_key_file go together: set both for mutual TLS, or neither".into()));
        }
        if self.mqtt.password_file.is_some() && self.mqtt.username.is_none() {
            return Err(invalid("mqtt.password_file", "is set without mqtt.username: add the user name".into()));
        }
        if self.mqtt.queue_capacity == 0 {
            return Err(invalid("mqtt.queue_capacity", "must be at least 1".into()));
        }
        if !MESSAGE_BYTES_RANGE.contains(&self.mqtt.max_message_bytes) {
            let (min, max) = (MESSAGE_BYTES_RANGE.start(), MESSAGE_BYTES_RANGE.end());
            return Err(invalid("mqtt.max_message_bytes", format!("is {}: must be between {min} (64 KiB) and {max} (8 MiB), at most the broker's message size limit", self.mqtt.max_message_bytes)));
        }
        for (key, value) in [("outbox.max_bytes", self.outbox.max_bytes), ("outbox.memory_bytes", self.outbox.memory_bytes)] {
            if value < MIN_OUTBOX_BYTES {
                return Err(invalid(key, format!("is {value}: must be at least {MIN_OUTBOX_BYTES} (16 KiB)")));
            }
        }
        if let Some(registry) = &self.registry {
            RegistryUrl::parse(&registry.url).map_err(|e| invalid("registry.url", e.to_string()))?;
            if registry.public_keys.is_empty() {
                return Err(invalid("registry.public_keys", "is empty: pin at least one trainer key (cctv-agent release keygen)".into()));
            }
            if registry.poll_seconds == 0 {
                return Err(invalid("registry.poll_seconds", "must be at least 1".into()));
            }
        }
        if self.telemetry.interval_seconds == 0 {
            return Err(invalid("telemetry.interval_seconds", "must be at least 1 (seconds)".into()));
        }
        self.validate_monitor(&invalid)?;
        if self.watchdog.stall_seconds == 0 {
            return Err(invalid("watchdog.stall_seconds", "must be at least 1 (seconds)".into()));
        }
        if self.model.intra_threads == 0 {
            return Err(invalid("model.intra_threads", "must be at least 1".into()));
        }
        if self.cameras.is_empty() {
            return Err(invalid(
                "cameras",
                "is empty: add at least one [[cameras]] table with `id` and `url`".into(),
            ));
        }
        let mut seen = HashSet::new();
        for (i, camera) in self.cameras.iter().enumerate() {
            let key = |field: &str| format!("cameras[{i}].{field}");
            check_topic_level(&camera.id).map_err(|p| topic_level(&key("id"), p))?;
            if !seen.insert(camera.id.as_str()) {
                return Err(invalid(&key("id"), format!("\"{}\" is used twice: give each camera its own id", camera.id)));
            }
            if camera.url.trim().is_empty() {
                return Err(invalid(&key("url"), "is empty: write a file path, rtsp:// URL or /dev/videoN".into()));
            }
            if let RegionsConfig::Fixed(rects) = &camera.regions {
                if rects.is_empty() {
                    return Err(invalid(&key("regions"), "is an empty list: give at least one [x, y, w, h], or write \"full\"".into()));
                }
                if let Some(r) = rects.iter().find(|r| r[2] == 0 || r[3] == 0) {
                    return Err(invalid(&key("regions"), format!("has {r:?} with zero width or height")));
                }
            }
            if camera.max_regions == 0 {
                return Err(invalid(&key("max_regions"), "must be at least 1".into()));
            }
            if !(MIN_FRAME_PIXELS..=MAX_FRAME_PIXELS).contains(&camera.max_frame_pixels) {
                return Err(invalid(&key("max_frame_pixels"), format!("must be between {MIN_FRAME_PIXELS} (64×64) and {MAX_FRAME_PIXELS} (8192×8192)")));
            }
            let streaming = !matches!(camera.source(), SourceKind::File(_));
            if streaming && (camera.loop_file || camera.replay == Replay::Asap) {
                return Err(invalid(
                    &key("replay"),
                    "and `loop` apply to files only: remove them for a live camera".into(),
                ));
            }
            let m = &camera.motion;
            if !(0.0..1.0).contains(&m.min_area_fraction) || m.analysis_width < 32 || !(0.0..=1.0).contains(&m.learning_rate) {
                return Err(invalid(
                    &key("motion"),
                    "needs 0 <= min_area_fraction < 1, analysis_width >= 32 and 0 <= learning_rate <= 1".into(),
                ));
            }
        }
        Ok(())
    }
}

/// A topic level must not contain MQTT wildcards or separators.
fn check_topic_level(value: &str) -> Result<(), TopicLevelError> {
    if value.is_empty() {
        return Err(TopicLevelError::Empty);
    }
    if let Some(reserved) = value.chars().find(|c| matches!(c, '/' | '+' | '#') || c.is_control()) {
        return Err(TopicLevelError::Reserved { value: value.to_string(), reserved });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
device_id = "pole-17"
[mqtt]
url = "mqtt://127.0.0.1:1883"
[model]
path = "models/efficientnet_lite0.onnx"
[telemetry]
interval_seconds = 10
[[cameras]]
id = "north"
url = "rtsp://10.0.0.5/stream1"
regions = "motion"
[[cameras]]
id = "lanes"
url = "clip.mp4"
regions = [[0, 0, 100, 50], [100, 0, 100, 50]]
replay = "asap"
loop = true
"#;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, "test.toml", Path::new("/etc/cctv"))
    }

    #[test]
    fn the_documented_keys_parse_and_relative_paths_follow_the_file() {
        let c = parse(MINIMAL).unwrap();
        assert_eq!(c.cameras[0].regions, RegionsConfig::Motion);
        assert_eq!(c.cameras[0].source(), SourceKind::Stream("rtsp://10.0.0.5/stream1".into()));
        assert_eq!(c.cameras[1].regions, RegionsConfig::Fixed(vec![[0, 0, 100, 50], [100, 0, 100, 50]]));
        assert_eq!(c.cameras[1].replay, Replay::Asap);
        assert!(c.cameras[1].loop_file);
        assert_eq!(c.cameras[1].url, "/etc/cctv/clip.mp4");
        assert_eq!(c.model.path, PathBuf::from("/etc/cctv/models/efficientnet_lite0.onnx"));
        assert_eq!(c.model.spec_path(), PathBuf::from("/etc/cctv/models/efficientnet_lite0.toml"));
        assert_eq!(c.mqtt.broker().unwrap(), BrokerAddress { host: "127.0.0.1".into(), port: 1883, tls: false });
    }

    #[test]
    fn an_unknown_key_is_named_with_what_is_expected() {
        let text = MINIMAL.replace("interval_seconds = 10", "intervall_seconds = 10");
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.contains("intervall_seconds"), "{err}");
        assert!(err.contains("interval_seconds"), "{err}");
    }

    #[test]
    fn a_bad_regions_value_says_what_to_write() {
        let text = MINIMAL.replace("regions = \"motion\"", "regions = \"moving\"");
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.contains("moving") && err.contains("\"motion\""), "{err}");
    }

    #[test]
    fn semantic_errors_name_the_key() {
        let cases = [
            ("url = \"mqtt://127.0.0.1:1883\"", "url = \"tcp://x\"", "mqtt.url"),
            ("device_id = \"pole-17\"", "device_id = \"pole/17\"", "device_id"),
            ("id = \"lanes\"", "id = \"north\"", "cameras[1].id"),
            ("interval_seconds = 10", "interval_seconds = 0", "telemetry.interval_seconds"),
            ("regions = \"motion\"", "regions = \"motion\"\nloop = true", "cameras[0].replay"),
        ];
        for (from, to, key) in cases {
            let err = parse(&MINIMAL.replacen(from, to, 1)).unwrap_err().to_string();
            assert!(err.contains(&format!("`{key}`")), "{key}: {err}");
        }
    }

    #[test]
    fn a_bad_broker_url_or_topic_level_is_typed() {
        let err = parse(&MINIMAL.replace("127.0.0.1:1883", "127.0.0.1:http")).unwrap_err();
        assert!(matches!(&err, ConfigError::Url { key, problem: UrlError::Port { port }, .. } if key == "mqtt.url" && port == "http"), "{err:?}");
        assert!(err.to_string().ends_with("`mqtt.url` has port \"http\", which is not a number from 1 to 65535"), "{err}");
        let err = parse(&MINIMAL.replace("id = \"north\"", "id = \"north/1\"")).unwrap_err();
        assert!(matches!(&err, ConfigError::TopicLevel { problem: TopicLevelError::Reserved { reserved: '/', .. }, .. }), "{err:?}");
        assert_eq!(MqttConfig::for_url("mqtts://").broker(), Err(UrlError::NoHost { url: "mqtts://".into() }));
    }

    #[test]
    fn registry_and_outbox_settings_default_under_state_dir_and_are_checked() {
        let with = |extra: &str| format!("{MINIMAL}\n{extra}");
        let c = parse(&with("[registry]\nurl = \"http://127.0.0.1:5000/roadside/vc\"\npublic_keys = [\"keys/trainer.pub\"]")).unwrap();
        let registry = c.registry.unwrap();
        assert_eq!(registry.models_dir, PathBuf::from("/var/lib/cctv-agent/models"));
        assert_eq!(registry.public_keys, [PathBuf::from("/etc/cctv/keys/trainer.pub")]);
        assert_eq!((registry.tag.as_str(), registry.poll_seconds, registry.probation_frames), ("champion", 300, 200));
        assert_eq!(c.outbox.path, PathBuf::from("/var/lib/cctv-agent/outbox.redb"));
        let cases = [
            ("[registry]\nurl = \"http://127.0.0.1:5000/vc\"\npublic_keys = []", "registry.public_keys"),
            ("[registry]\nurl = \"ftp://x/vc\"\npublic_keys = [\"k.pub\"]", "registry.url"),
            ("[outbox]\nmax_bytes = 100", "outbox.max_bytes"),
        ];
        for (extra, key) in cases {
            let err = parse(&with(extra)).unwrap_err().to_string();
            assert!(err.contains(key), "{extra}: {err}");
        }
    }

    #[test]
    fn monitor_and_samples_default_as_documented_and_refuse_thresholds_that_could_not_clear() {
        let with = |extra: &str| format!("{MINIMAL}\n{extra}");
        let c = parse(MINIMAL).unwrap();
        assert!(c.monitor.enabled && c.samples.enabled);
        assert_eq!((c.monitor.precision_alert_below, c.monitor.precision_clear_at, c.monitor.min_labelled), (0.40, 0.50, 30));
        assert_eq!(c.samples.dir, PathBuf::from("/var/lib/cctv-agent/samples"));
        let cases = [
            ("[monitor]\nprecision_alert_below = 0.6\nprecision_clear_at = 0.5", "monitor.precision_clear_at"),
            ("[monitor.drift]\nclass_mix_alert_above = 0.2", "monitor.drift.class_mix_clear_below"),
            ("[monitor]\nfeedback_window = 10", "monitor.min_labelled"),
            ("[monitor.drift]\ninput_window = 0", "monitor.drift.input_window"),
            ("[samples]\nrandom_rate = 2.0", "samples.random_rate"),
            ("[monitor]\nprecision_alert = 0.4", "precision_alert"),
        ];
        for (extra, key) in cases {
            let err = parse(&with(extra)).unwrap_err().to_string();
            assert!(err.contains(key), "{extra}: {err}");
        }
    }

    #[test]
    fn the_demo_config_is_valid() {
        Config::demo().unwrap();
    }
}
