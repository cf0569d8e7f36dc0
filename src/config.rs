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
    /// A number or length outside what `run` can use.
    #[error("config {origin}: `{key}` {problem}")]
    Bound { origin: String, key: String, problem: BoundError },
}

impl ConfigError {
    /// The key the error is about, when it is about one.
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::Read { .. } | ConfigError::Parse { .. } => None,
            ConfigError::Invalid { key, .. } | ConfigError::Url { key, .. } | ConfigError::TopicLevel { key, .. } | ConfigError::Bound { key, .. } => {
                Some(key)
            }
        }
    }
}

/// Why a value is outside what the agent can use, with the range it must be
/// in; follows the key's name (`mqtt.queue_capacity is ...`).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BoundError {
    #[error("is {value}: write a whole number from {min} to {max}")]
    Integer { value: u64, min: u64, max: u64 },
    /// Also a NaN or an infinity, which no range contains.
    #[error("is {value}: write a number from {min} to {max}")]
    Number { value: f64, min: f64, max: f64 },
    #[error("is {len} characters long: write at most {max}")]
    Length { len: usize, max: usize },
    #[error("has {count} entries: write from {min} to {max}")]
    Count { count: usize, min: usize, max: usize },
    /// Control characters in a name or path (they garble logs and payloads).
    #[error("contains a control character: write printable text only")]
    Control,
}

/// Why `mqtt.url` is not a broker address. Its text follows the key's name
/// (`mqtt.url is ...`), so it is the problem, not a separate cause. No
/// variant repeats a URL that holds credentials.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error("is \"{url}\": write mqtt://HOST[:PORT] or mqtts://HOST[:PORT] (e.g. mqtt://127.0.0.1:1883)")]
    Scheme { url: String },
    #[error("has port \"{port}\", which is not a number from 1 to 65535")]
    Port { port: String },
    #[error("\"{url}\" has no host: write e.g. mqtt://127.0.0.1:1883")]
    NoHost { url: String },
    #[error("has host \"{host}\", which is not a host name or address: write mqtt://HOST[:PORT] with no path")]
    Host { host: String },
    /// `user:password@` in the URL: it would be taken for the host, and the
    /// URL is printed in logs. The URL is not repeated here.
    #[error("contains a user name or password (\"…@\"), which is not repeated here: write mqtt://HOST[:PORT], the user name in mqtt.username and the password in the file mqtt.password_file (or $CCTV_MQTT_PASSWORD)")]
    Credentials,
}

/// Why a value cannot be one level of an MQTT topic (a device or camera id,
/// the topic root); follows the key's name. Ids also name state files and
/// appear in every payload, so they are short and plain.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicLevelError {
    #[error("is empty")]
    Empty,
    #[error("is {len} characters long: write at most {max} (letters, digits, '.', '-' or '_')", max = MAX_ID_CHARS)]
    TooLong { len: usize },
    #[error("{value:?} contains {reserved:?}, which MQTT topics reserve: use letters, digits, '.', '-' or '_'")]
    Reserved { value: String, reserved: char },
    #[error("{value:?} starts with '$', which brokers keep for their own topics ($SYS): use letters, digits, '.', '-' or '_'")]
    Dollar { value: String },
    #[error("{value:?} contains {found:?}: use ASCII letters, digits, '.', '-' or '_'")]
    Charset { value: String, found: char },
}

/// Longest device id, camera id or topic root.
pub const MAX_ID_CHARS: usize = 64;

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
    /// The detector cameras with `regions = "detector"` use.
    #[serde(default)]
    pub detector: DetectorConfig,
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
    /// Vehicle counts per interval (tracked cameras).
    #[serde(default)]
    pub counts: CountsConfig,
    /// The installer's local page (annotated frames, counts); off when absent.
    #[serde(default)]
    pub view: Option<ViewConfig>,
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
    #[error("registry url {0:?} has no host")]
    NoHost(String),
    /// Not repeated: the URL is logged with every registry error.
    #[error("registry url contains a user name or password (\"…@\"), which is not repeated here: remove it (URLs are logged)")]
    Credentials,
}

impl RegistryUrl {
    /// `url` is `http(s)://host[:port]/<repository>`.
    pub fn parse(url: &str) -> Result<RegistryUrl, RegistryUrlError> {
        if url.contains('@') {
            return Err(RegistryUrlError::Credentials);
        }
        let (scheme, rest) = url.split_once("://").ok_or_else(|| RegistryUrlError::NoScheme(url.to_string()))?;
        if scheme != "http" && scheme != "https" {
            return Err(RegistryUrlError::Scheme(url.to_string()));
        }
        let (host, repository) = rest.split_once('/').ok_or_else(|| RegistryUrlError::NoRepository(url.to_string()))?;
        if host.is_empty() {
            return Err(RegistryUrlError::NoHost(url.to_string()));
        }
        if repository.trim_end_matches('/').is_empty() {
            return Err(RegistryUrlError::NoRepository(url.to_string()));
        }
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

/// The bundled detector's file name; it sits beside the bundled classifier.
pub const BUNDLED_DETECTOR: &str = "yolov3_tiny.onnx";

/// `[detector]`: the model that finds vehicles for `regions = "detector"`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DetectorConfig {
    /// The ONNX file; its spec is the `.toml` beside it unless `spec` says
    /// otherwise. Default: the bundled detector beside `model.path`.
    pub path: Option<PathBuf>,
    pub spec: Option<PathBuf>,
    /// Detector releases from a registry repository of their own; off when absent.
    pub registry: Option<DetectorRegistryConfig>,
}

/// `[detector.registry]`: where detector releases come from. Everything
/// else (the pinned keys, the poll interval, the size and latency limits)
/// is `[registry]`'s, which it needs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetectorRegistryConfig {
    /// The detector's own repository, e.g. http://127.0.0.1:5000/roadside/vehicle-detector
    /// (never `registry.url`'s: each repository holds releases of one kind).
    pub url: String,
    #[serde(default = "default_tag")]
    pub tag: String,
    /// Installed detector releases; `<state_dir>/detector-models` when not
    /// set. Never inside `registry.models_dir` (nor it inside this).
    #[serde(default)]
    pub models_dir: PathBuf,
}

impl Config {
    /// The detector's ONNX file (the bundled one unless `[detector] path` names another).
    pub fn detector_path(&self) -> PathBuf {
        self.detector.path.clone().unwrap_or_else(|| self.model.path.with_file_name(BUNDLED_DETECTOR))
    }

    pub fn detector_spec_path(&self) -> PathBuf {
        self.detector.spec.clone().unwrap_or_else(|| self.detector_path().with_extension("toml"))
    }

    /// Whether any camera finds its regions with the detector.
    pub fn uses_detector(&self) -> bool {
        self.cameras.iter().any(|c| c.regions == RegionsConfig::Detector)
    }

    /// The registry settings the detector's updater uses: `[detector.registry]`'s
    /// repository, tag and models folder, and `[registry]`'s keys, poll
    /// interval and limits (its probation keys do not apply: a detector has
    /// no probation). None without both sections.
    pub fn detector_registry(&self) -> Option<RegistryConfig> {
        let (registry, detector) = (self.registry.as_ref()?, self.detector.registry.as_ref()?);
        Some(RegistryConfig { url: detector.url.clone(), tag: detector.tag.clone(), models_dir: detector.models_dir.clone(), ..registry.clone() })
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
    /// Follows each vehicle across frames and reports it once; off when absent.
    #[serde(default)]
    pub tracking: Option<TrackingConfig>,
    /// Lanes a tracked vehicle is placed in (by its box's bottom centre).
    #[serde(default)]
    pub lanes: Vec<LaneConfig>,
    /// Counting lines a tracked vehicle crosses.
    #[serde(default)]
    pub lines: Vec<LineConfig>,
    /// Image points and their ground positions in metres: gives speeds.
    #[serde(default)]
    pub calibration: Option<CalibrationConfig>,
    /// Publish a prediction per frame too. Default: off when tracking is on.
    #[serde(default)]
    pub publish_frames: Option<bool>,
    /// `regions = "detector"`: run the detector on every N-th frame (tracking in between). Default 1.
    #[serde(default)]
    pub detect_every: Option<u32>,
    /// `regions = "detector"`: skip the detector while motion finds nothing
    /// and no vehicle is tracked. Default on.
    #[serde(default)]
    pub motion_gate: Option<bool>,
    /// `regions = "detector"` with the gate: detect anyway once every this
    /// many seconds of a closed gate (a vehicle that stands still from the
    /// start moves nothing); 0 = never. Default 10.
    #[serde(default)]
    pub gate_recheck_seconds: Option<u64>,
    /// Areas no picture leaving the device may show (filled solid black in
    /// samples, snapshots and the page), and optionally hidden from inference too.
    #[serde(default)]
    pub privacy_masks: Vec<PrivacyMaskConfig>,
}

/// `[[cameras.privacy_masks]]`: an area of the image filled solid black
/// before any of its pixels leave the device.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrivacyMaskConfig {
    /// Corners `[x, y]` in frame pixels, in order around the area.
    pub polygon: Vec<[f64; 2]>,
    /// Fill it before region finding and classification too, so that nothing
    /// in it is ever found (a garden, a footpath). Default: only the
    /// pictures that leave are masked, and a vehicle overlapping the mask is
    /// still classified whole.
    #[serde(default)]
    pub apply_to_inference: bool,
}

/// How a detector camera runs its detector, with the defaults filled in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Detection {
    pub every: u32,
    pub motion_gate: bool,
    pub recheck_seconds: u64,
}

/// `[cameras.tracking]`: how regions become vehicles.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrackingConfig {
    /// Least overlap (IoU) of a region with a track's predicted box to be the same vehicle.
    pub iou_gate: f64,
    /// Frames with a region before a new track counts as a vehicle.
    pub confirm_hits: u32,
    /// Processed frames in a row without its region before a vehicle has left.
    pub max_misses: u32,
    /// Classify a vehicle on every k-th frame it is seen (1 = every frame).
    pub classify_every: u32,
    /// A region within this many pixels of the frame's edge is cut off: it does not vote.
    pub edge_margin: u32,
}

impl Default for TrackingConfig {
    fn default() -> Self {
        TrackingConfig { iou_gate: 0.2, confirm_hits: 3, max_misses: 12, classify_every: 1, edge_margin: 2 }
    }
}

/// `[[cameras.lanes]]`: a lane's area on the image.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LaneConfig {
    pub id: String,
    /// Corners `[x, y]` in frame pixels, in order around the lane.
    pub polygon: Vec<[f64; 2]>,
}

/// `[[cameras.lines]]`: a counting line on the image. A vehicle moving from
/// its right to its left, looking from `from` toward `to`, crosses it forward.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LineConfig {
    pub id: String,
    pub from: [f64; 2],
    pub to: [f64; 2],
}

/// `[cameras.calibration]`: four image points (pixels) and where they are on
/// the road (metres), no three of either in a row.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CalibrationConfig {
    pub image: [[f64; 2]; 4],
    pub ground: [[f64; 2]; 4],
}

/// `[counts]`: the per-interval vehicle counts of tracked cameras.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CountsConfig {
    /// Length of a counting interval; intervals start on multiples of it (UTC).
    pub interval_seconds: u64,
}

impl Default for CountsConfig {
    fn default() -> Self {
        CountsConfig { interval_seconds: 60 }
    }
}

/// `[view]`: the local page that shows installers what the agent sees.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ViewConfig {
    /// `IP:PORT` the page is served on, e.g. 127.0.0.1:8080.
    pub listen: String,
    /// A file holding the token every request must carry. Required unless
    /// `listen` is a loopback address: the page shows the road and the
    /// lanes to whoever reaches the port.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// Frames per second taken for the page (each is drawn on and encoded).
    #[serde(default = "default_view_max_fps")]
    pub max_fps: f64,
}

fn default_view_max_fps() -> f64 {
    2.0
}

/// Largest token file read.
const MAX_TOKEN_BYTES: u64 = 4 << 10;

/// Why `view.token_file` gives no token; the agent cannot serve the page safely without it.
#[derive(Debug, thiserror::Error)]
pub enum TokenFileError {
    #[error("cannot read view.token_file {}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("view.token_file {} is empty: write the token (one line of printable text) into it", path.display())]
    Empty { path: PathBuf },
}

impl ViewConfig {
    /// `listen` as an address (`Config::parse` has checked it parses).
    pub fn listen_addr(&self) -> Result<std::net::SocketAddr, std::net::AddrParseError> {
        self.listen.parse()
    }

    /// The time between two frames taken for the page.
    pub fn frame_interval(&self) -> std::time::Duration {
        std::time::Duration::from_secs_f64(1.0 / self.max_fps)
    }

    /// The token in `token_file`, without surrounding whitespace (a file
    /// written by `echo` ends in a newline); None without a `token_file`.
    pub fn read_token(&self) -> Result<Option<String>, TokenFileError> {
        let Some(path) = &self.token_file else { return Ok(None) };
        let read = |source| TokenFileError::Read { path: path.clone(), source };
        let bytes = crate::util::fs::read_regular_file(path, MAX_TOKEN_BYTES).map_err(read)?;
        let text = String::from_utf8(bytes).map_err(|_| read(std::io::Error::new(std::io::ErrorKind::InvalidData, "is not UTF-8 text")))?;
        let token = text.trim();
        if token.is_empty() {
            return Err(TokenFileError::Empty { path: path.clone() });
        }
        Ok(Some(token.to_string()))
    }
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
    /// Objects found by the detector model (`[detector]`), gated by motion.
    Detector,
    /// Fixed rectangles `[x, y, w, h]` in pixels (lanes).
    Fixed(Vec<[u32; 4]>),
}

impl<'de> Deserialize<'de> for RegionsConfig {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct RegionsVisitor;
        const EXPECTED: &str = r#""full", "motion", "detector", or a list of [x, y, w, h] such as [[0, 100, 640, 200]]"#;
        impl<'de> Visitor<'de> for RegionsVisitor {
            type Value = RegionsConfig;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(EXPECTED)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                match v {
                    "full" => Ok(RegionsConfig::Full),
                    "motion" => Ok(RegionsConfig::Motion),
                    "detector" => Ok(RegionsConfig::Detector),
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
    /// Whether each frame's prediction is published (tracked cameras publish vehicles instead, unless asked).
    pub fn publishes_frames(&self) -> bool {
        self.publish_frames.unwrap_or(self.tracking.is_none())
    }

    /// How it runs the detector; None unless `regions = "detector"`.
    pub fn detection(&self) -> Option<Detection> {
        (self.regions == RegionsConfig::Detector).then(|| Detection {
            every: self.detect_every.unwrap_or(1),
            motion_gate: self.motion_gate.unwrap_or(true),
            recheck_seconds: self.gate_recheck_seconds.unwrap_or(10),
        })
    }

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

    /// The URL as logs, events and telemetry show it: `rtsp://user:pw@host/…`
    /// becomes `rtsp://***@host/…` (cameras take credentials in the URL;
    /// nobody reading the broker should see them).
    pub fn shown_url(&self) -> String {
        let url = self.url.as_str();
        let Some(scheme_end) = url.find("://") else { return url.to_string() };
        let authority_start = scheme_end + 3;
        let authority_end = url[authority_start..].find('/').map_or(url.len(), |i| authority_start + i);
        match url[authority_start..authority_end].rfind('@') {
            Some(at) => format!("{}***{}", &url[..authority_start], &url[authority_start + at..]),
            None => url.to_string(),
        }
    }
}

/// Stream protocols a camera may use. FFmpeg knows many more, and some
/// (`async:`, `concat:`, `pipe:`, `subfile:`) read local files or pipes in
/// ways no check here sees (a FIFO behind `async:file://` blocked every
/// camera): those are refused.
const STREAM_SCHEMES: &[&str] = &["rtsp", "rtsps", "rtmp", "rtmps", "http", "https", "srt", "udp", "tcp"];

/// Broker address parsed from `mqtt.url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerAddress {
    pub host: String,
    pub port: u16,
    pub tls: bool,
}

impl MqttConfig {
    pub fn broker(&self) -> Result<BrokerAddress, UrlError> {
        // First: `user:pw@host` would otherwise be taken for a host (or
        // repeated by a scheme error), and printed.
        if self.url.contains('@') {
            return Err(UrlError::Credentials);
        }
        let (tls, rest) = if let Some(rest) = self.url.strip_prefix("mqtt://") {
            (false, rest)
        } else if let Some(rest) = self.url.strip_prefix("mqtts://") {
            (true, rest)
        } else {
            return Err(UrlError::Scheme { url: self.url.clone() });
        };
        let rest = rest.trim_end_matches('/');
        let (host, port) = match rest.rsplit_once(':').filter(|(_, port)| !port.ends_with(']')) {
            Some((host, port)) => match port.parse::<u16>() {
                Ok(port) if port > 0 => (host.to_string(), port),
                _ => return Err(UrlError::Port { port: port.to_string() }),
            },
            None => (rest.to_string(), if tls { 8883 } else { 1883 }),
        };
        if host.is_empty() {
            return Err(UrlError::NoHost { url: self.url.clone() });
        }
        if host.len() > 253 || host.chars().any(|c| c.is_whitespace() || c.is_control() || matches!(c, '/' | '?' | '#' | '@')) {
            return Err(UrlError::Host { host });
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
        let read = |source| ConfigError::Read { path: path.to_path_buf(), source };
        let bytes = crate::util::fs::read_regular_file(path, MAX_CONFIG_BYTES).map_err(read)?;
        let text = String::from_utf8(bytes).map_err(|_| read(std::io::Error::new(std::io::ErrorKind::InvalidData, "is not UTF-8 text")))?;
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
        self.detector.path = self.detector.path.as_deref().map(resolve);
        self.detector.spec = self.detector.spec.as_deref().map(resolve);
        if let Some(registry) = &mut self.detector.registry {
            registry.models_dir = if registry.models_dir.as_os_str().is_empty() {
                self.state_dir.join("detector-models")
            } else {
                resolve(&registry.models_dir)
            };
        }
        self.mqtt.ca_file = self.mqtt.ca_file.as_deref().map(resolve);
        self.mqtt.client_cert_file = self.mqtt.client_cert_file.as_deref().map(resolve);
        self.mqtt.client_key_file = self.mqtt.client_key_file.as_deref().map(resolve);
        self.mqtt.password_file = self.mqtt.password_file.as_deref().map(resolve);
        if let Some(view) = &mut self.view {
            view.token_file = view.token_file.as_deref().map(resolve);
        }
        self.telemetry.sysfs_root = resolve(&self.telemetry.sysfs_root);
        for camera in &mut self.cameras {
            if let SourceKind::File(p) = camera.source() {
                camera.url = resolve(&p).display().to_string();
            }
        }
    }

    /// Every key `run` uses, with the range it can use. One table per
    /// section, so that a key added later is checked where its section is.
    fn validate(&self, origin: &str) -> Result<(), ConfigError> {
        let check = Check { origin };
        let invalid = |key: &str, problem: String| check.invalid(key, problem);
        check.id("device_id", &self.device_id)?;
        check.path("state_dir", &self.state_dir)?;

        let mqtt = &self.mqtt;
        check.text("mqtt.url", &mqtt.url, MAX_URL_CHARS)?;
        let broker = mqtt.broker().map_err(|problem| ConfigError::Url { origin: origin.to_string(), key: "mqtt.url".into(), problem })?;
        check.id("mqtt.topic_root", &mqtt.topic_root)?;
        if let Some(client_id) = &mqtt.client_id {
            // Brokers must take 23 characters; most take more, none unbounded.
            check.text("mqtt.client_id", client_id, MAX_NAME_CHARS)?;
            if client_id.is_empty() {
                return Err(invalid("mqtt.client_id", "is empty: remove it for the default cctv-agent-<device_id>".into()));
            }
        }
        if let Some(username) = &mqtt.username {
            check.text("mqtt.username", username, MAX_NAME_CHARS)?;
        }
        for (key, path) in [
            ("mqtt.ca_file", &mqtt.ca_file),
            ("mqtt.client_cert_file", &mqtt.client_cert_file),
            ("mqtt.client_key_file", &mqtt.client_key_file),
            ("mqtt.password_file", &mqtt.password_file),
        ] {
            if let Some(path) = path {
                check.path(key, path)?;
            }
        }
        // MQTT's keep-alive is 16 bits of seconds.
        check.int("mqtt.keep_alive_seconds", mqtt.keep_alive_seconds, 1..=u16::MAX as u64)?;
        // A tokio channel of this many slots; producers wait when it is full.
        check.int("mqtt.queue_capacity", mqtt.queue_capacity as u64, 1..=1 << 16)?;
        if mqtt.require_tls && !broker.tls {
            return Err(invalid("mqtt.url", format!("is \"{}\", plain text, but mqtt.require_tls is set: use mqtts://", mqtt.url)));
        }
        if mqtt.client_cert_file.is_some() != mqtt.client_key_file.is_some() {
            return Err(invalid("mqtt.client_cert_file", "and mqtt.client_key_file go together: set both for mutual TLS, or neither".into()));
        }
        if mqtt.password_file.is_some() && mqtt.username.is_none() {
            return Err(invalid("mqtt.password_file", "is set without mqtt.username: add the user name".into()));
        }
        // Below the broker's packet limit (Mosquitto's default is none, many set 1 MiB or more).
        check.int("mqtt.max_message_bytes", self.mqtt.max_message_bytes as u64, *MESSAGE_BYTES_RANGE.start() as u64..=*MESSAGE_BYTES_RANGE.end() as u64)?;

        check.path("outbox.path", &self.outbox.path)?;
        check.int("outbox.max_bytes", self.outbox.max_bytes, MIN_OUTBOX_BYTES..=1 << 40)?;
        check.int("outbox.memory_bytes", self.outbox.memory_bytes, MIN_OUTBOX_BYTES..=1 << 30)?;

        if let Some(registry) = &self.registry {
            check.text("registry.url", &registry.url, MAX_URL_CHARS)?;
            RegistryUrl::parse(&registry.url).map_err(|e| invalid("registry.url", e.to_string()))?;
            check_tag(&registry.tag).map_err(|problem| invalid("registry.tag", problem))?;
            check.int("registry.poll_seconds", registry.poll_seconds, 1..=7 * DAY)?;
            if registry.public_keys.is_empty() {
                return Err(invalid("registry.public_keys", "is empty: pin at least one trainer key (cctv-agent release keygen)".into()));
            }
            check.count("registry.public_keys", registry.public_keys.len(), 1..=64)?;
            for (i, key) in registry.public_keys.iter().enumerate() {
                check.path(&format!("registry.public_keys[{i}]"), key)?;
            }
            check.path("registry.models_dir", &registry.models_dir)?;
            check.int("registry.max_model_bytes", registry.max_model_bytes, 1..=1 << 36)?;
            check.num("registry.latency_budget_ms", registry.latency_budget_ms as f64, 0.01..=60_000.0)?;
            // Each run is a full-frame classification, timed; they are kept to sort.
            check.int("registry.validation_runs", registry.validation_runs as u64, 1..=1000)?;
            check.int("registry.probation_frames", registry.probation_frames, 0..=1_000_000)?;
            check.num("registry.probation_min_score_ratio", registry.probation_min_score_ratio as f64, 0.0..=1.0)?;
        }

        self.validate_detector_registry(&check)?;

        check.path("model.path", &self.model.path)?;
        if let Some(spec) = &self.model.spec {
            check.path("model.spec", spec)?;
        }
        for (key, path) in [("detector.path", &self.detector.path), ("detector.spec", &self.detector.spec)] {
            if let Some(path) = path {
                check.path(key, path)?;
            }
        }
        check.int("model.intra_threads", self.model.intra_threads as u64, 1..=64)?;
        check.int("telemetry.interval_seconds", self.telemetry.interval_seconds, 1..=DAY)?;
        check.path("telemetry.sysfs_root", &self.telemetry.sysfs_root)?;
        check.int("watchdog.stall_seconds", self.watchdog.stall_seconds, 1..=DAY)?;
        check.int("counts.interval_seconds", self.counts.interval_seconds, 1..=DAY)?;
        self.validate_view(&check)?;
        self.validate_monitor(&check)?;
        self.validate_cameras(&check)
    }

    fn validate_detector_registry(&self, check: &Check) -> Result<(), ConfigError> {
        let Some(detector) = &self.detector.registry else { return Ok(()) };
        let Some(registry) = &self.registry else {
            return Err(check.invalid(
                "detector.registry",
                "needs a [registry] section: detector releases are verified with its public_keys and held to its limits; add [registry] (url, public_keys) or remove [detector.registry]".into(),
            ));
        };
        if !self.uses_detector() {
            return Err(check.invalid("detector.registry", "is set, but no camera has regions = \"detector\": set it on a camera, or remove [detector.registry]".into()));
        }
        check.text("detector.registry.url", &detector.url, MAX_URL_CHARS)?;
        let url = RegistryUrl::parse(&detector.url).map_err(|e| check.invalid("detector.registry.url", e.to_string()))?;
        if RegistryUrl::parse(&registry.url).is_ok_and(|classifier| classifier == url) {
            return Err(check.invalid(
                "detector.registry.url",
                format!("is registry.url's repository ({}): give the detector a repository of its own (e.g. …/roadside/vehicle-detector); each holds releases of one kind", url.repository),
            ));
        }
        check_tag(&detector.tag).map_err(|problem| check.invalid("detector.registry.tag", problem))?;
        check.path("detector.registry.models_dir", &detector.models_dir)?;
        let (mine, theirs) = (&detector.models_dir, &registry.models_dir);
        if mine.starts_with(theirs) || theirs.starts_with(mine) {
            return Err(check.invalid(
                "detector.registry.models_dir",
                format!("is {}, which overlaps registry.models_dir ({}): give detector releases a folder of their own (the default is <state_dir>/detector-models)", mine.display(), theirs.display()),
            ));
        }
        Ok(())
    }

    fn validate_view(&self, check: &Check) -> Result<(), ConfigError> {
        let Some(view) = &self.view else { return Ok(()) };
        check.text("view.listen", &view.listen, MAX_NAME_CHARS)?;
        let address = view.listen_addr().map_err(|_| {
            check.invalid("view.listen", format!("is {:?}: write IP:PORT, e.g. 127.0.0.1:8080 (this machine only) or 0.0.0.0:8080 (with view.token_file)", view.listen))
        })?;
        match &view.token_file {
            Some(path) => check.path("view.token_file", path)?,
            // An IPv4-mapped 127.0.0.1 (::ffff:127.0.0.1) is loopback too.
            None if !address.ip().to_canonical().is_loopback() => {
                return Err(check.invalid(
                    "view.token_file",
                    format!("is not set, but view.listen ({address}) is reachable from other machines: write a token into a file only the agent can read and name it in view.token_file, or listen on 127.0.0.1"),
                ))
            }
            None => {}
        }
        check.num("view.max_fps", view.max_fps, 0.2..=10.0)
    }

    fn validate_monitor(&self, check: &Check) -> Result<(), ConfigError> {
        let (m, d, s) = (&self.monitor, &self.monitor.drift, &self.samples);
        // Sizes of windows and books kept in memory.
        for (key, value, max) in [
            ("monitor.remember_predictions", m.remember_predictions as u64, 1_000_000),
            ("monitor.feedback_window", m.feedback_window as u64, 100_000),
            ("monitor.min_labelled", m.min_labelled as u64, 100_000),
            ("monitor.drift.class_window", d.class_window as u64, 100_000),
            ("monitor.drift.reference_regions", d.reference_regions as u64, 1_000_000),
            ("monitor.drift.input_window", d.input_window as u64, 10_000),
            ("monitor.drift.input_every_frames", d.input_every_frames, 100_000),
        ] {
            check.int(key, value, 1..=max)?;
        }
        check.int("monitor.feedback_window_seconds", m.feedback_window_seconds, 1..=366 * DAY)?;
        check.int("monitor.retrain_interval_seconds", m.retrain_interval_seconds, 0..=366 * DAY)?;
        if m.min_labelled > m.feedback_window {
            return Err(check.invalid("monitor.min_labelled", format!("is {} but the window holds only monitor.feedback_window = {}: lower it or widen the window", m.min_labelled, m.feedback_window)));
        }
        // Each pair: (alert key, alert value, clear key, clear value, most either can be, true when the alert is for low values).
        for (alert, a, clear, c, max, low) in [
            ("monitor.precision_alert_below", m.precision_alert_below, "monitor.precision_clear_at", m.precision_clear_at, 1.0, true),
            ("monitor.drift.class_mix_alert_above", d.class_mix_alert_above, "monitor.drift.class_mix_clear_below", d.class_mix_clear_below, 1.0, false),
            ("monitor.drift.confidence_alert_below", d.confidence_alert_below, "monitor.drift.confidence_clear_at", d.confidence_clear_at, 1.0, true),
            ("monitor.drift.brightness_alert_below", d.brightness_alert_below, "monitor.drift.brightness_clear_at", d.brightness_clear_at, 255.0, true),
            ("monitor.drift.contrast_alert_below", d.contrast_alert_below, "monitor.drift.contrast_clear_at", d.contrast_clear_at, 255.0, true),
            // The variance of the Laplacian of 8-bit pixels stays far below this.
            ("monitor.drift.sharpness_alert_below", d.sharpness_alert_below, "monitor.drift.sharpness_clear_at", d.sharpness_clear_at, 1e7, true),
        ] {
            check.num(alert, a, 0.0..=max)?;
            check.num(clear, c, 0.0..=max)?;
            if (low && c < a) || (!low && c > a) {
                let side = if low { "at or above" } else { "at or below" };
                return Err(check.invalid(clear, format!("is {c}: it must be {side} {alert} ({a}), or the alert could never clear")));
            }
        }
        check.path("samples.dir", &s.dir)?;
        check.num("samples.low_confidence_below", s.low_confidence_below as f64, 0.0..=1.0)?;
        check.num("samples.random_rate", s.random_rate, 0.0..=1.0)?;
        check.int("samples.max_per_hour", s.max_per_hour as u64, 0..=1_000_000)?;
        check.int("samples.max_side", s.max_side as u64, 16..=4096)?;
        check.int("samples.max_bytes", s.max_bytes, 1 << 20..=1 << 40)?;
        // The recent ring holds decoded RGB crops of up to max_side² pixels.
        let most_recent = (MAX_RECENT_BYTES / (3 * s.max_side as u64 * s.max_side as u64)).min(100_000);
        check.int("samples.recent", s.recent as u64, 0..=most_recent)?;
        Ok(())
    }

    fn validate_cameras(&self, check: &Check) -> Result<(), ConfigError> {
        if self.cameras.is_empty() {
            return Err(check.invalid("cameras", "is empty: add at least one [[cameras]] table with `id` and `url`".into()));
        }
        // Each camera is a thread with its own decoder.
        check.count("cameras", self.cameras.len(), 1..=MAX_CAMERAS)?;
        let mut seen = HashSet::new();
        for (i, camera) in self.cameras.iter().enumerate() {
            let key = |field: &str| format!("cameras[{i}].{field}");
            check.id(&key("id"), &camera.id)?;
            if !seen.insert(camera.id.as_str()) {
                return Err(check.invalid(&key("id"), format!("\"{}\" is used twice: give each camera its own id", camera.id)));
            }
            check.text(&key("url"), &camera.url, MAX_URL_CHARS)?;
            if camera.url.trim().is_empty() {
                return Err(check.invalid(&key("url"), "is empty: write a file path, rtsp:// URL or /dev/videoN".into()));
            }
            if let SourceKind::Stream(url) = camera.source() {
                let scheme = url.split("://").next().unwrap_or_default().to_ascii_lowercase();
                if !STREAM_SCHEMES.contains(&scheme.as_str()) {
                    return Err(check.invalid(
                        &key("url"),
                        format!("uses the protocol \"{}\": write a file path, a /dev/videoN device, or a URL starting with one of {}", scheme.chars().take(32).collect::<String>(), STREAM_SCHEMES.iter().map(|s| format!("{s}://")).collect::<Vec<_>>().join(", ")),
                    ));
                }
            }
            if let RegionsConfig::Fixed(rects) = &camera.regions {
                if rects.is_empty() {
                    return Err(check.invalid(&key("regions"), "is an empty list: give at least one [x, y, w, h], or write \"full\"".into()));
                }
                check.count(&key("regions"), rects.len(), 1..=MAX_FIXED_REGIONS)?;
                if let Some(r) = rects.iter().find(|r| r[2] == 0 || r[3] == 0) {
                    return Err(check.invalid(&key("regions"), format!("has {r:?} with zero width or height")));
                }
                // x + w and y + h stay far from overflowing any integer type.
                if let Some(r) = rects.iter().find(|r| r[0] as u64 + r[2] as u64 > MAX_FRAME_SIDE || r[1] as u64 + r[3] as u64 > MAX_FRAME_SIDE) {
                    return Err(check.invalid(&key("regions"), format!("has {r:?}, which ends beyond {MAX_FRAME_SIDE} pixels")));
                }
            }
            check.int(&key("max_regions"), camera.max_regions as u64, 1..=MAX_FIXED_REGIONS as u64)?;
            // 64×64 to 8192×8192.
            check.int(&key("max_frame_pixels"), camera.max_frame_pixels, MIN_FRAME_PIXELS..=MAX_FRAME_PIXELS)?;
            let streaming = !matches!(camera.source(), SourceKind::File(_));
            if streaming && (camera.loop_file || camera.replay == Replay::Asap) {
                return Err(check.invalid(&key("replay"), "and `loop` apply to files only: remove them for a live camera".into()));
            }
            let m = &camera.motion;
            // Below 1: a blob the size of the frame is still reported.
            check.num(&key("motion.min_area_fraction"), m.min_area_fraction, 0.0..=0.999)?;
            check.int(&key("motion.warmup_frames"), m.warmup_frames as u64, 0..=100_000)?;
            check.int(&key("motion.analysis_width"), m.analysis_width as u64, 32..=4096)?;
            check.num(&key("motion.learning_rate"), m.learning_rate, 0.0..=1.0)?;
            self.validate_tracking(check, camera, &key)?;
            Self::validate_masks(check, camera, &key)?;
            if camera.regions == RegionsConfig::Detector {
                if let Some(every) = camera.detect_every {
                    // At 25 fps, 30 frames is more than a second unseen: a fast vehicle crosses a view in that.
                    check.int(&key("detect_every"), every as u64, 1..=30)?;
                }
                if let Some(seconds) = camera.gate_recheck_seconds {
                    check.int(&key("gate_recheck_seconds"), seconds, 0..=86_400)?;
                }
            } else {
                let given = [("detect_every", camera.detect_every.is_some()), ("motion_gate", camera.motion_gate.is_some()), ("gate_recheck_seconds", camera.gate_recheck_seconds.is_some())];
                if let Some((name, _)) = given.iter().find(|(_, set)| *set) {
                    return Err(check.invalid(&key(name), "applies to regions = \"detector\" only: remove it, or set regions = \"detector\"".into()));
                }
            }
        }
        Ok(())
    }

    fn validate_masks(check: &Check, camera: &CameraConfig, key: &dyn Fn(&str) -> String) -> Result<(), ConfigError> {
        check.count(&key("privacy_masks"), camera.privacy_masks.len(), 0..=MAX_MASKS)?;
        for (j, mask) in camera.privacy_masks.iter().enumerate() {
            let name = key(&format!("privacy_masks[{j}].polygon"));
            if mask.polygon.len() > MAX_POLYGON_POINTS {
                check.count(&name, mask.polygon.len(), 3..=MAX_POLYGON_POINTS)?;
            }
            for c in mask.polygon.iter().flatten() {
                check.num(&name, *c, 0.0..=MAX_FRAME_SIDE as f64)?;
            }
            crate::util::plane::check_polygon(&mask.polygon).map_err(|e| check.invalid(&name, e.to_string()))?;
        }
        Ok(())
    }

    fn validate_tracking(&self, check: &Check, camera: &CameraConfig, key: &dyn Fn(&str) -> String) -> Result<(), ConfigError> {
        let Some(t) = &camera.tracking else {
            let needs = [("lanes", !camera.lanes.is_empty()), ("lines", !camera.lines.is_empty()), ("calibration", camera.calibration.is_some())];
            if let Some((name, _)) = needs.iter().find(|(_, set)| *set) {
                return Err(check.invalid(&key(name), "needs tracking: add a [cameras.tracking] table (every key has a default) or remove it".into()));
            }
            return Ok(());
        };
        check.num(&key("tracking.iou_gate"), t.iou_gate, 0.01..=0.95)?;
        check.int(&key("tracking.confirm_hits"), t.confirm_hits as u64, 1..=1000)?;
        check.int(&key("tracking.max_misses"), t.max_misses as u64, 1..=10_000)?;
        // A vehicle is in view for ~100 frames: classified less often than this, it barely votes.
        check.int(&key("tracking.classify_every"), t.classify_every as u64, 1..=50)?;
        check.int(&key("tracking.edge_margin"), t.edge_margin as u64, 0..=1000)?;
        check.count(&key("lanes"), camera.lanes.len(), 0..=MAX_LANES)?;
        check.count(&key("lines"), camera.lines.len(), 0..=MAX_LANES)?;
        let coordinate = |name: &str, p: &[f64; 2]| -> Result<(), ConfigError> {
            for c in p {
                check.num(name, *c, 0.0..=MAX_FRAME_SIDE as f64)?;
            }
            Ok(())
        };
        let mut ids = HashSet::new();
        for (j, lane) in camera.lanes.iter().enumerate() {
            let name = key(&format!("lanes[{j}]"));
            check.id(&format!("{name}.id"), &lane.id)?;
            if !ids.insert(lane.id.as_str()) {
                return Err(check.invalid(&format!("{name}.id"), format!("\"{}\" is used twice: give each lane its own id", lane.id)));
            }
            if lane.polygon.len() > MAX_POLYGON_POINTS {
                check.count(&format!("{name}.polygon"), lane.polygon.len(), 3..=MAX_POLYGON_POINTS)?;
            }
            for p in &lane.polygon {
                coordinate(&format!("{name}.polygon"), p)?;
            }
            crate::util::plane::check_polygon(&lane.polygon).map_err(|e| check.invalid(&format!("{name}.polygon"), e.to_string()))?;
        }
        let mut ids = HashSet::new();
        for (j, line) in camera.lines.iter().enumerate() {
            let name = key(&format!("lines[{j}]"));
            check.id(&format!("{name}.id"), &line.id)?;
            if !ids.insert(line.id.as_str()) {
                return Err(check.invalid(&format!("{name}.id"), format!("\"{}\" is used twice: give each line its own id", line.id)));
            }
            coordinate(&format!("{name}.from"), &line.from)?;
            coordinate(&format!("{name}.to"), &line.to)?;
            if (line.from[0] - line.to[0]).hypot(line.from[1] - line.to[1]) < 1.0 {
                return Err(check.invalid(&format!("{name}.to"), format!("is {:?}, the same point as `from`: a line needs two ends at least a pixel apart", line.to)));
            }
        }
        if let Some(c) = &camera.calibration {
            for p in &c.image {
                coordinate(&key("calibration.image"), p)?;
            }
            for c in c.ground.iter().flatten() {
                check.num(&key("calibration.ground"), *c, -MAX_GROUND_METRES..=MAX_GROUND_METRES)?;
            }
            use crate::util::plane::{check_four_points, Homography};
            for (name, points) in [("calibration.image", &c.image), ("calibration.ground", &c.ground)] {
                check_four_points(points).map_err(|e| check.invalid(&key(name), e.to_string()))?;
            }
            crate::util::plane::check_polygon(&c.ground).map_err(|e| check.invalid(&key("calibration.ground"), format!("{e}: list the ground points in the same order as the image points, around the quadrilateral")))?;
            crate::util::plane::check_polygon(&c.image).map_err(|e| check.invalid(&key("calibration.image"), format!("{e}: list the image points in order around the quadrilateral")))?;
            let h = Homography::from_points(&c.image, &c.ground).map_err(|e| check.invalid(&key("calibration"), e.to_string()))?;
            // Every point speeds are measured at must be on the near side of the horizon.
            let measured: Vec<[f64; 2]> = camera.lanes.iter().flat_map(|l| l.polygon.iter().copied()).chain(c.image.iter().copied()).collect();
            if !h.holds_over(&measured) {
                return Err(check.invalid(&key("calibration"), "puts the horizon inside the calibrated points or the lanes: the image points must be four spots on the road, in the same order as their ground positions".into()));
            }
        }
        Ok(())
    }
}

const DAY: u64 = 86_400;
/// Largest config file read (the example is ~8 KiB).
const MAX_CONFIG_BYTES: u64 = 1 << 20;
/// Longest URL (broker, registry, camera).
const MAX_URL_CHARS: usize = 2048;
/// Longest client id or user name.
const MAX_NAME_CHARS: usize = 256;
/// Longest path in the config (Linux's PATH_MAX).
const MAX_PATH_BYTES: usize = 4096;
const MAX_CAMERAS: usize = 64;
const MAX_FIXED_REGIONS: usize = 64;
/// Lanes, and counting lines, per camera.
const MAX_LANES: usize = 32;
/// Privacy masks per camera.
const MAX_MASKS: usize = 32;
const MAX_POLYGON_POINTS: usize = 64;
/// Farthest calibration point from the ground origin (a camera sees well under a kilometre).
const MAX_GROUND_METRES: f64 = 10_000.0;
/// Largest frame side a fixed region may reach.
const MAX_FRAME_SIDE: u64 = 1 << 15;
/// Most memory the samples' recent ring may take.
const MAX_RECENT_BYTES: u64 = 512 << 20;

/// Checks against bounds, turned into errors that name the key.
struct Check<'a> {
    origin: &'a str,
}

impl Check<'_> {
    fn invalid(&self, key: &str, problem: String) -> ConfigError {
        ConfigError::Invalid { origin: self.origin.to_string(), key: key.to_string(), problem }
    }

    fn bound(&self, key: &str, problem: BoundError) -> ConfigError {
        ConfigError::Bound { origin: self.origin.to_string(), key: key.to_string(), problem }
    }

    fn int(&self, key: &str, value: u64, range: std::ops::RangeInclusive<u64>) -> Result<(), ConfigError> {
        if range.contains(&value) {
            return Ok(());
        }
        Err(self.bound(key, BoundError::Integer { value, min: *range.start(), max: *range.end() }))
    }

    /// Refuses NaN and the infinities too: no range contains them.
    fn num(&self, key: &str, value: f64, range: std::ops::RangeInclusive<f64>) -> Result<(), ConfigError> {
        if range.contains(&value) {
            return Ok(());
        }
        Err(self.bound(key, BoundError::Number { value, min: *range.start(), max: *range.end() }))
    }

    fn count(&self, key: &str, count: usize, range: std::ops::RangeInclusive<usize>) -> Result<(), ConfigError> {
        if range.contains(&count) {
            return Ok(());
        }
        Err(self.bound(key, BoundError::Count { count, min: *range.start(), max: *range.end() }))
    }

    /// Printable text of at most `max` characters.
    fn text(&self, key: &str, value: &str, max: usize) -> Result<(), ConfigError> {
        let len = value.chars().count();
        if len > max {
            return Err(self.bound(key, BoundError::Length { len, max }));
        }
        if value.chars().any(char::is_control) {
            return Err(self.bound(key, BoundError::Control));
        }
        Ok(())
    }

    fn path(&self, key: &str, path: &Path) -> Result<(), ConfigError> {
        use std::os::unix::ffi::OsStrExt;
        let bytes = path.as_os_str().as_bytes();
        if bytes.len() > MAX_PATH_BYTES {
            return Err(self.bound(key, BoundError::Length { len: bytes.len(), max: MAX_PATH_BYTES }));
        }
        if bytes.iter().any(|b| b.is_ascii_control()) {
            return Err(self.bound(key, BoundError::Control));
        }
        Ok(())
    }

    fn id(&self, key: &str, value: &str) -> Result<(), ConfigError> {
        check_topic_level(value).map_err(|problem| ConfigError::TopicLevel { origin: self.origin.to_string(), key: key.to_string(), problem })
    }
}

/// A device id, camera id or topic root: one MQTT topic level, a file-name
/// part and a payload field. Length first, so that the others can quote it.
fn check_topic_level(value: &str) -> Result<(), TopicLevelError> {
    let len = value.chars().count();
    if len == 0 {
        return Err(TopicLevelError::Empty);
    }
    if len > MAX_ID_CHARS {
        return Err(TopicLevelError::TooLong { len });
    }
    if let Some(reserved) = value.chars().find(|c| matches!(c, '/' | '+' | '#') || c.is_control()) {
        return Err(TopicLevelError::Reserved { value: value.to_string(), reserved });
    }
    if value.starts_with('$') {
        return Err(TopicLevelError::Dollar { value: value.to_string() });
    }
    if let Some(found) = value.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))) {
        return Err(TopicLevelError::Charset { value: value.to_string(), found });
    }
    Ok(())
}

/// An OCI tag: `[A-Za-z0-9_][A-Za-z0-9._-]{0,127}` (it goes into URL paths).
fn check_tag(tag: &str) -> Result<(), String> {
    let first_ok = tag.chars().next().is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
    let rest_ok = tag.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
    if tag.len() > 128 || !first_ok || !rest_ok {
        return Err(format!("{:?} is not an OCI tag: write up to 128 letters, digits, '_', '.' or '-', not starting with '.' or '-'", tag.chars().take(130).collect::<String>()));
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
    fn the_view_is_off_by_default_and_its_keys_are_checked() {
        assert_eq!(parse(MINIMAL).unwrap().view, None);
        let with = |view: &str| parse(&format!("{MINIMAL}[view]\n{view}\n"));
        let view = with("listen = \"127.0.0.1:8080\"").unwrap().view.unwrap();
        assert_eq!((view.listen_addr().unwrap(), view.token_file.clone(), view.max_fps), ("127.0.0.1:8080".parse().unwrap(), None, 2.0));
        assert_eq!(view.frame_interval(), std::time::Duration::from_millis(500));
        let view = with("listen = \"0.0.0.0:8080\"\ntoken_file = \"view.token\"\nmax_fps = 0.2").unwrap().view.unwrap();
        assert_eq!(view.token_file, Some(PathBuf::from("/etc/cctv/view.token")), "relative to the config file");
        let cases = [
            ("listen = \"localhost\"", "view.listen", "write IP:PORT"),
            ("listen = \"127.0.0.1:8080\"\nmax_fps = 11", "view.max_fps", "from 0.2 to 10"),
            ("listen = \"127.0.0.1:8080\"\nmax_fps = 0.1", "view.max_fps", "from 0.2 to 10"),
        ];
        for (view, key, problem) in cases {
            let error = with(view).unwrap_err();
            assert_eq!(error.key(), Some(key), "{view}: {error}");
            assert!(error.to_string().contains(problem), "{view}: {error}");
        }
        let error = with("listen = \"127.0.0.1:8080\"\nport = 8080").unwrap_err().to_string();
        assert!(error.contains("port") && error.contains("token_file"), "unknown keys are refused: {error}");
    }

    #[test]
    fn a_view_reachable_from_other_machines_needs_a_token_file() {
        let with = |view: &str| parse(&format!("{MINIMAL}[view]\n{view}\n"));
        for listen in ["0.0.0.0:8080", "10.0.0.7:80", "[::]:8080"] {
            let error = with(&format!("listen = \"{listen}\"")).unwrap_err();
            assert_eq!(error.key(), Some("view.token_file"), "{listen}: {error}");
        }
        for listen in ["127.0.0.1:8080", "127.8.9.1:8080", "[::1]:8080", "[::ffff:127.0.0.1]:8080"] {
            assert!(with(&format!("listen = \"{listen}\"")).is_ok(), "{listen} is this machine only");
        }
    }

    #[test]
    fn the_view_token_is_read_trimmed_and_an_empty_or_missing_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("view.token");
        let view = |token_file: Option<PathBuf>| ViewConfig { listen: "127.0.0.1:0".into(), token_file, max_fps: 2.0 };
        assert_eq!(view(None).read_token().unwrap(), None);
        std::fs::write(&file, "s3cret-token\n").unwrap();
        assert_eq!(view(Some(file.clone())).read_token().unwrap().as_deref(), Some("s3cret-token"));
        std::fs::write(&file, " \n").unwrap();
        let error = view(Some(file.clone())).read_token().unwrap_err();
        assert!(matches!(&error, TokenFileError::Empty { path } if *path == file), "{error:?}");
        assert!(error.to_string().contains("view.token_file") && error.to_string().contains("view.token"), "{error}");
        let missing = dir.path().join("absent");
        let error = view(Some(missing.clone())).read_token().unwrap_err();
        assert!(matches!(&error, TokenFileError::Read { path, .. } if *path == missing), "{error:?}");
        assert!(error.to_string().contains("absent"), "{error}");
    }

    /// The first camera of MINIMAL, tracked, with `extra` written into its tables.
    fn tracked(extra: &str) -> String {
        MINIMAL.replacen("regions = \"motion\"\n", &format!("regions = \"motion\"\n[cameras.tracking]\n{extra}\n"), 1)
    }

    #[test]
    fn tracking_defaults_and_frames_follow_it() {
        let c = parse(&tracked("")).unwrap();
        let t = c.cameras[0].tracking.as_ref().unwrap();
        assert_eq!(*t, TrackingConfig::default());
        assert!(!c.cameras[0].publishes_frames(), "a tracked camera publishes vehicles, not frames");
        assert!(c.cameras[1].publishes_frames(), "an untracked one keeps its frames");
        assert_eq!(c.counts.interval_seconds, 60);
        let c = parse(&MINIMAL.replacen("regions = \"motion\"\n", "regions = \"motion\"\npublish_frames = true\n[cameras.tracking]\nclassify_every = 5\n", 1)).unwrap();
        assert!(c.cameras[0].publishes_frames());
        assert_eq!(c.cameras[0].tracking.as_ref().unwrap().classify_every, 5);
    }

    #[test]
    fn bad_lanes_lines_and_calibrations_name_their_key() {
        let lane = |polygon: &str| format!("[[cameras.lanes]]\nid = \"east-1\"\npolygon = {polygon}");
        let line = |from: &str, to: &str| format!("[[cameras.lines]]\nid = \"gantry\"\nfrom = {from}\nto = {to}");
        let calibration = |image: &str| format!("[cameras.calibration]\nimage = {image}\nground = [[0, 0], [3.5, 0], [3.5, 30], [0, 30]]");
        let cases = [
            (lane("[[0, 0], [10, 0]]"), "cameras[0].lanes[0].polygon", "has 2 points: a polygon needs at least 3"),
            (lane("[[0, 0], [10, 10], [10, 0], [0, 10]]"), "cameras[0].lanes[0].polygon", "crosses itself"),
            (lane("[[0, 0], [5, 5], [10, 10]]"), "cameras[0].lanes[0].polygon", "has no area"),
            (lane("[[0, 0], [1e9, 0], [0, 5]]"), "cameras[0].lanes[0].polygon", "write a number from 0 to"),
            (format!("{}\n{}", lane("[[0, 0], [9, 0], [0, 9]]"), lane("[[0, 0], [9, 0], [0, 9]]")), "cameras[0].lanes[1].id", "used twice"),
            (line("[480, 0]", "[480, 0]"), "cameras[0].lines[0].to", "the same point as `from`"),
            (line("[480, 0]", "[480, nan]"), "cameras[0].lines[0].to", "write a number"),
            (calibration("[[0, 0], [100, 0], [200, 0], [0, 50]]"), "cameras[0].calibration.image", "lie on one line"),
            ("iou_gate = 0".to_string(), "cameras[0].tracking.iou_gate", "write a number from 0.01 to 0.95"),
            ("max_misses = 0".to_string(), "cameras[0].tracking.max_misses", "from 1 to"),
            ("[[cameras.privacy_masks]]\npolygon = [[0, 0], [10, 10], [10, 0], [0, 10]]".to_string(), "cameras[0].privacy_masks[0].polygon", "crosses itself"),
            ("[[cameras.privacy_masks]]\npolygon = [[0, 0], [10, 0], [0, -1]]".to_string(), "cameras[0].privacy_masks[0].polygon", "write a number from 0 to"),
        ];
        for (extra, key, problem) in cases {
            let error = parse(&tracked(&extra)).unwrap_err();
            assert_eq!(error.key(), Some(key), "{extra}: {error}");
            assert!(error.to_string().contains(problem), "{extra}: {error}");
        }
        let unknown = parse(&tracked("[[cameras.privacy_masks]]\npolygon = [[0, 0], [10, 0], [0, 10]]\nblur = true")).unwrap_err().to_string();
        assert!(unknown.contains("blur") && unknown.contains("apply_to_inference"), "{unknown}");
        let masks = parse(&MINIMAL.replacen("regions = \"motion\"\n", "regions = \"motion\"\n[[cameras.privacy_masks]]\npolygon = [[0, 0], [10, 0], [0, 10]]\n", 1)).unwrap();
        assert_eq!(masks.cameras[0].privacy_masks, vec![PrivacyMaskConfig { polygon: vec![[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]], apply_to_inference: false }], "masks need no tracking");
        let collinear_ground = "[cameras.calibration]\nimage = [[0, 0], [100, 0], [100, 50], [0, 50]]\nground = [[0, 0], [1, 1], [2, 2], [0, 30]]";
        assert_eq!(parse(&tracked(collinear_ground)).unwrap_err().key(), Some("cameras[0].calibration.ground"));
        // Found by attacking: a ground quadrilateral listed out of order (a bow tie), and
        // one whose horizon falls inside the lanes, gave speeds of hundreds of km/h.
        let bow_tie = "[cameras.calibration]\nimage = [[0, 46], [960, 46], [960, 494], [0, 494]]\nground = [[0, 0], [30, 0], [0, 14], [30, 14]]";
        let error = parse(&tracked(bow_tie)).unwrap_err();
        assert_eq!(error.key(), Some("cameras[0].calibration.ground"), "{error}");
        assert!(error.to_string().contains("same order as the image points"), "{error}");
        let lanes = "[[cameras.lanes]]\nid = \"east-2\"\npolygon = [[0, 158], [960, 158], [960, 270], [0, 270]]\n";
        let horizon = format!("{lanes}[cameras.calibration]\nimage = [[240, 397], [720, 397], [960, 540], [0, 540]]\nground = [[0, 100], [14, 100], [14, 0], [0, 0]]");
        let error = parse(&tracked(&horizon)).unwrap_err();
        assert_eq!(error.key(), Some("cameras[0].calibration"), "{error}");
        assert!(error.to_string().contains("horizon"), "{error}");
        // The documented bounds are accepted as written.
        assert!(parse(&tracked("iou_gate = 0.01")).is_ok() && parse(&tracked("iou_gate = 0.95")).is_ok());
        // Lanes without tracking would never be used: said, not ignored.
        let untracked = MINIMAL.replacen("regions = \"motion\"\n", &format!("regions = \"motion\"\n{}\n", lane("[[0, 0], [9, 0], [0, 9]]")), 1);
        let error = parse(&untracked).unwrap_err();
        assert_eq!(error.key(), Some("cameras[0].lanes"), "{error}");
        assert!(error.to_string().contains("add a [cameras.tracking] table"), "{error}");
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
    fn a_detector_registry_takes_registrys_keys_and_limits_and_its_own_folder_and_is_checked() {
        let registry = "[registry]\nurl = \"http://127.0.0.1:5000/roadside/vc\"\npublic_keys = [\"keys/trainer.pub\"]\nlatency_budget_ms = 80\npoll_seconds = 7\n";
        let detector = "[detector.registry]\nurl = \"http://127.0.0.1:5000/roadside/vehicle-detector\"\n";
        let with = |extra: &str| format!("{}\n{extra}", MINIMAL.replace("regions = \"motion\"", "regions = \"detector\""));
        let c = parse(&with(&format!("{registry}{detector}"))).unwrap();
        let d = c.detector_registry().unwrap();
        assert_eq!((d.url.as_str(), d.tag.as_str()), ("http://127.0.0.1:5000/roadside/vehicle-detector", "champion"));
        assert_eq!(d.models_dir, PathBuf::from("/var/lib/cctv-agent/detector-models"));
        assert_eq!((d.public_keys, d.latency_budget_ms, d.poll_seconds), (vec![PathBuf::from("/etc/cctv/keys/trainer.pub")], 80.0, 7));
        assert!(parse(&with(registry)).unwrap().detector_registry().is_none());

        let cases = [
            (with(detector), "detector.registry", "needs a [registry] section"),
            (format!("{MINIMAL}\n{registry}{detector}"), "detector.registry", "no camera has regions = \"detector\""),
            (with(&format!("{registry}{}", detector.replace("vehicle-detector", "vc"))), "detector.registry.url", "a repository of its own"),
            (with(&format!("{registry}{}", detector.replace("http://", "ftp://"))), "detector.registry.url", "http"),
            (with(&format!("{registry}{detector}tag = \"../x\"\n")), "detector.registry.tag", "not an OCI tag"),
            (with(&format!("{registry}{detector}models_dir = \"/var/lib/cctv-agent/models/detector\"\n")), "detector.registry.models_dir", "overlaps registry.models_dir"),
            (with(&format!("{registry}models_dir = \"/srv/m\"\n{detector}models_dir = \"/srv\"\n")), "detector.registry.models_dir", "a folder of their own"),
            (with(&format!("{registry}{detector}probation_frames = 3\n")), "probation_frames", "unknown field"),
        ];
        for (text, key, problem) in cases {
            let err = parse(&text).unwrap_err();
            let message = err.to_string();
            assert!(message.contains(key) && message.contains(problem), "{key}: {message}");
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
        // `make run REGIONS=detector`: its detector is the bundled one, beside the model.
        let detector = Config::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("config/demo-detector.toml")).unwrap();
        assert!(detector.uses_detector());
        assert!(detector.detector_path().exists(), "{}", detector.detector_path().display());
        assert_eq!(detector.cameras[0].detection().unwrap(), Detection { every: 1, motion_gate: true, recheck_seconds: 10 });
    }

    #[test]
    fn detector_keys_on_a_camera_without_the_detector_are_refused() {
        for key in ["detect_every = 2", "motion_gate = false", "gate_recheck_seconds = 5"] {
            let error = parse(&MINIMAL.replacen("regions = \"motion\"\n", &format!("regions = \"motion\"\n{key}\n"), 1)).unwrap_err();
            assert!(error.to_string().contains("applies to regions = \"detector\" only"), "{key}: {error}");
        }
        let error = parse(&MINIMAL.replacen("regions = \"motion\"\n", "regions = \"detector\"\ndetect_every = 0\n", 1)).unwrap_err();
        assert!(error.to_string().contains("detect_every"), "{error}");
    }

    /// The configs of issue #12 that `check-config` passed and `run` then
    /// crashed on or misbehaved with; each is refused, naming its key.
    #[test]
    fn values_run_cannot_use_are_refused_with_the_key_and_the_range() {
        let registry = "[registry]\nurl = \"http://127.0.0.1:5000/roadside/vc\"\npublic_keys = [\"k.pub\"]\n";
        let long_id = "x".repeat(70_000);
        let camera_300 = "c".repeat(300);
        let cases: Vec<(String, &str)> = vec![
            (MINIMAL.replace("[model]", "queue_capacity = 4611686018427387904\n[model]"), "mqtt.queue_capacity"),
            (format!("{MINIMAL}\n{registry}validation_runs = 1000000000000"), "registry.validation_runs"),
            (format!("{MINIMAL}\n{registry}poll_seconds = 9223372036854775807"), "registry.poll_seconds"),
            (format!("{MINIMAL}\n{registry}latency_budget_ms = nan"), "registry.latency_budget_ms"),
            (format!("{MINIMAL}\n{registry}latency_budget_ms = -1.0"), "registry.latency_budget_ms"),
            (format!("{MINIMAL}\n{registry}probation_min_score_ratio = -0.5"), "registry.probation_min_score_ratio"),
            (format!("{MINIMAL}\n{registry}probation_min_score_ratio = nan"), "registry.probation_min_score_ratio"),
            (format!("{MINIMAL}\n{registry}tag = \"../x\""), "registry.tag"),
            (MINIMAL.replace("device_id = \"pole-17\"", &format!("device_id = \"{long_id}\"")), "device_id"),
            (MINIMAL.replace("[model]", "topic_root = \"$SYS\"\n[model]"), "mqtt.topic_root"),
            (MINIMAL.replace("[model]", "topic_root = \"a+b\"\n[model]"), "mqtt.topic_root"),
            (MINIMAL.replace("id = \"north\"", &format!("id = \"{camera_300}\"")), "cameras[0].id"),
            (MINIMAL.replace("id = \"north\"", "id = \"$north\""), "cameras[0].id"),
            (MINIMAL.replace("id = \"north\"", "id = \"no#rth\""), "cameras[0].id"),
            (MINIMAL.replace("interval_seconds = 10", "interval_seconds = 9223372036854775807"), "telemetry.interval_seconds"),
            (MINIMAL.replace("[model]", "keep_alive_seconds = 70000\n[model]"), "mqtt.keep_alive_seconds"),
            (format!("{MINIMAL}\n[samples]\nrandom_rate = nan"), "samples.random_rate"),
            (format!("{MINIMAL}\n[samples]\nlow_confidence_below = -1.0"), "samples.low_confidence_below"),
            (format!("{MINIMAL}\n[samples]\nrecent = 100000000"), "samples.recent"),
            (format!("{MINIMAL}\n[monitor]\nremember_predictions = 1000000000000"), "monitor.remember_predictions"),
            (format!("{MINIMAL}\n[monitor]\nfeedback_window_seconds = 9223372036854775807"), "monitor.feedback_window_seconds"),
            (format!("{MINIMAL}\n[monitor.drift]\nsharpness_alert_below = inf\nsharpness_clear_at = inf"), "monitor.drift.sharpness_alert_below"),
            (format!("{MINIMAL}\n[watchdog]\nstall_seconds = 9223372036854775807"), "watchdog.stall_seconds"),
            (format!("{MINIMAL}\n[outbox]\nmemory_bytes = 9223372036854775807"), "outbox.memory_bytes"),
            (MINIMAL.replace("intra_threads", "x").replace("[model]", "[model]\nintra_threads = 100000"), "model.intra_threads"),
            (MINIMAL.replace("regions = \"motion\"", "regions = \"motion\"\nmax_regions = 1000000"), "cameras[0].max_regions"),
            (MINIMAL.replace("regions = \"motion\"", "[cameras.motion]\nlearning_rate = nan"), "cameras[0].motion.learning_rate"),
            (MINIMAL.replace("[[0, 0, 100, 50]", "[[4294967295, 0, 100, 50]"), "cameras[1].regions"),
        ];
        for (text, key) in &cases {
            let err = parse(text).expect_err(key);
            assert_eq!(err.key(), Some(*key), "{err}");
            let message = err.to_string();
            assert!(message.contains(&format!("`{key}`")) && message.len() < 400, "{key}: {message}");
        }
        let err = parse(&cases[0].0).unwrap_err();
        assert!(matches!(err, ConfigError::Bound { problem: BoundError::Integer { value: 4611686018427387904, min: 1, max: 65536 }, .. }), "{err:?}");
        assert!(err.to_string().ends_with("is 4611686018427387904: write a whole number from 1 to 65536"), "{err}");
        let err = parse(&cases[3].0).unwrap_err();
        assert!(matches!(err, ConfigError::Bound { problem: BoundError::Number { value, .. }, .. } if value.is_nan()), "{err:?}");
        assert!(matches!(parse(&cases[8].0).unwrap_err(), ConfigError::TopicLevel { problem: TopicLevelError::TooLong { len: 70_000 }, .. }));
        assert!(matches!(parse(&cases[9].0).unwrap_err(), ConfigError::TopicLevel { problem: TopicLevelError::Dollar { .. }, .. }));
    }

    #[test]
    fn credentials_in_a_url_are_refused_without_repeating_them() {
        for url in ["mqtt://user:pw-secret@127.0.0.1:1883", "mqtts://pw-secret@broker", "tcp://user:pw-secret@host"] {
            let err = parse(&MINIMAL.replace("mqtt://127.0.0.1:1883", url)).unwrap_err();
            assert!(matches!(&err, ConfigError::Url { key, problem: UrlError::Credentials, .. } if key == "mqtt.url"), "{err:?}");
            let message = err.to_string();
            assert!(!message.contains("pw-secret") && message.contains("mqtt.password_file"), "{message}");
        }
        let registry = format!("{MINIMAL}\n[registry]\nurl = \"https://u:pw-secret@registry.example/roadside/vc\"\npublic_keys = [\"k.pub\"]\n");
        let err = parse(&registry).unwrap_err();
        assert_eq!(err.key(), Some("registry.url"));
        assert!(!err.to_string().contains("pw-secret"), "{err}");
        for (url, problem) in [
            ("mqtt://host:0", UrlError::Port { port: "0".into() }),
            ("mqtt://host/path", UrlError::Host { host: "host/path".into() }),
            ("mqtt://a b", UrlError::Host { host: "a b".into() }),
        ] {
            assert_eq!(MqttConfig::for_url(url).broker(), Err(problem), "{url}");
        }
        assert_eq!(MqttConfig::for_url("mqtt://[::1]:1884").broker().unwrap().port, 1884);
    }

    #[test]
    fn ids_are_plain_short_topic_levels() {
        for ok in ["pole-17", "cam.1", "cam_1", "A", &"x".repeat(MAX_ID_CHARS)] {
            assert_eq!(check_topic_level(ok), Ok(()), "{ok}");
        }
        for (bad, problem) in [
            ("", TopicLevelError::Empty),
            (&"x".repeat(MAX_ID_CHARS + 1) as &str, TopicLevelError::TooLong { len: MAX_ID_CHARS + 1 }),
            ("a/b", TopicLevelError::Reserved { value: "a/b".into(), reserved: '/' }),
            ("a\nb", TopicLevelError::Reserved { value: "a\nb".into(), reserved: '\n' }),
            ("$SYS", TopicLevelError::Dollar { value: "$SYS".into() }),
            ("cam 1", TopicLevelError::Charset { value: "cam 1".into(), found: ' ' }),
            ("北门", TopicLevelError::Charset { value: "北门".into(), found: '北' }),
        ] {
            assert_eq!(check_topic_level(bad), Err(problem), "{bad:?}");
        }
    }

    /// What `run` can use, said independently of the bounds in `validate`:
    /// durations within a year, memory-sized counts, finite non-negative
    /// figures, plain ids, a broker address without credentials.
    fn assert_usable(c: &Config) {
        const YEAR: u64 = 366 * 86_400;
        let secs = [c.mqtt.keep_alive_seconds, c.telemetry.interval_seconds, c.watchdog.stall_seconds, c.monitor.feedback_window_seconds, c.monitor.retrain_interval_seconds];
        assert!(secs.iter().all(|s| *s <= YEAR) && c.mqtt.keep_alive_seconds <= u16::MAX as u64, "{secs:?}");
        let (m, d, s) = (&c.monitor, &c.monitor.drift, &c.samples);
        let counts = [c.mqtt.queue_capacity, c.model.intra_threads, m.remember_predictions, m.feedback_window, m.min_labelled, d.class_window, d.reference_regions, d.input_window, s.recent, c.cameras.len()];
        assert!(counts.iter().all(|n| (*n as u64) <= 1_000_000), "{counts:?}");
        assert!(c.mqtt.queue_capacity >= 1 && c.model.intra_threads >= 1 && d.input_every_frames >= 1);
        assert!(c.outbox.max_bytes <= 1 << 40 && c.outbox.memory_bytes <= 1 << 40 && s.max_bytes <= 1 << 40);
        assert!((s.recent as u64) * 3 * (s.max_side as u64).pow(2) <= 1 << 30);
        let figures = [m.precision_alert_below, m.precision_clear_at, d.class_mix_alert_above, d.class_mix_clear_below, d.confidence_alert_below, d.confidence_clear_at, d.brightness_alert_below, d.brightness_clear_at, d.contrast_alert_below, d.contrast_clear_at, d.sharpness_alert_below, d.sharpness_clear_at, s.random_rate, s.low_confidence_below as f64];
        assert!(figures.iter().all(|f| f.is_finite() && *f >= 0.0), "{figures:?}");
        assert!(s.random_rate <= 1.0 && s.low_confidence_below <= 1.0);
        if let Some(r) = &c.registry {
            assert!(r.poll_seconds >= 1 && r.poll_seconds <= YEAR && r.validation_runs >= 1 && r.validation_runs <= 1_000_000);
            assert!(r.latency_budget_ms.is_finite() && r.latency_budget_ms > 0.0);
            assert!(r.probation_min_score_ratio.is_finite() && (0.0..=1.0).contains(&r.probation_min_score_ratio));
            assert!(!r.url.contains('@') && RegistryUrl::parse(&r.url).is_ok());
        }
        if let Some(d) = c.detector_registry() {
            let classifier = &c.registry.as_ref().unwrap().models_dir;
            assert!(!d.url.contains('@') && RegistryUrl::parse(&d.url).is_ok() && d.url != c.registry.as_ref().unwrap().url);
            assert!(!d.models_dir.starts_with(classifier) && !classifier.starts_with(&d.models_dir) && c.uses_detector());
        }
        let plain = |id: &str| !id.is_empty() && id.len() <= 64 && !id.starts_with('$') && id.chars().all(|c| c.is_ascii_alphanumeric() || ".-_".contains(c));
        assert!(plain(&c.device_id) && plain(&c.mqtt.topic_root), "{:?} {:?}", c.device_id, c.mqtt.topic_root);
        assert!(c.cameras.iter().all(|cam| plain(&cam.id) && cam.motion.learning_rate.is_finite() && cam.motion.min_area_fraction.is_finite()));
        assert!(!c.mqtt.url.contains('@') && c.mqtt.broker().is_ok());
        // A message cap below 64 KiB could not carry a sample chunk; above 8 MiB no broker would take it.
        assert!((64 << 10..=8 << 20).contains(&c.mqtt.max_message_bytes));
        assert!(c.cameras.iter().all(|cam| (64 * 64..=8192 * 8192).contains(&cam.max_frame_pixels)));
        assert!((1..=86_400).contains(&c.counts.interval_seconds));
        for cam in &c.cameras {
            if let Some(t) = &cam.tracking {
                assert!(t.iou_gate.is_finite() && t.iou_gate > 0.0 && t.iou_gate < 1.0 && t.confirm_hits >= 1 && t.max_misses >= 1 && t.classify_every >= 1);
            }
            assert!(cam.lines.iter().all(|l| l.from.iter().chain(&l.to).all(|c| c.is_finite()) && l.from != l.to));
            assert!(cam.lanes.iter().all(|l| l.polygon.len() >= 3 && l.polygon.iter().flatten().all(|c| c.is_finite())));
        }
    }

    #[derive(Debug, Clone, Copy)]
    enum Kind {
        Int,
        Float,
        Bool,
        Text,
    }

    /// A TOML literal of the kind a careless or hostile operator writes:
    /// mostly of the key's type (else TOML's own type error is all that is
    /// tested), at its edges.
    fn literal(kind: Kind) -> proptest::strategy::BoxedStrategy<String> {
        use proptest::prelude::*;
        let int = prop_oneof![Just(0i64), Just(1), Just(-1), Just(1 << 62), Just(i64::MAX), Just(i64::MIN), 0i64..100, 0i64..100_000, 0i64..10_000_000_000, any::<i64>()].prop_map(|n| n.to_string());
        let float = prop_oneof![
            Just("nan".to_string()),
            Just("inf".to_string()),
            Just("-inf".to_string()),
            Just("-0.0".to_string()),
            any::<f64>().prop_map(|f| format!("{f:?}")),
            (-1.0f64..2.0).prop_map(|f| format!("{f:?}")),
            (0.0f64..1e6).prop_map(|f| format!("{f:?}")),
        ];
        let text = prop_oneof![
            "[a-zA-Z0-9$#+/:@._ -]{0,80}".prop_map(|s| format!("{s:?}")),
            "(mqtts?|https?|rtsp)://[a-z0-9:@./_-]{0,40}".prop_map(|s| format!("{s:?}")),
            (1usize..100_000).prop_map(|n| format!("\"{}\"", "y".repeat(n))),
            any::<String>().prop_map(|s| format!("{s:?}")),
        ];
        let typed = match kind {
            Kind::Int => int.boxed(),
            Kind::Float => prop_oneof![float, int].boxed(),
            Kind::Bool => any::<bool>().prop_map(|b| b.to_string()).boxed(),
            Kind::Text => text.boxed(),
        };
        prop_oneof![9 => typed, 1 => Just("\"x\"".to_string())].boxed()
    }

    /// Every key, by section (`[[cameras]]` as the first camera's).
    const KEYS: &[(&str, &[(&str, Kind)])] = {
        use Kind::*;
        &[
            ("", &[("device_id", Text), ("state_dir", Text)]),
            ("mqtt", &[("url", Text), ("topic_root", Text), ("client_id", Text), ("keep_alive_seconds", Int), ("require_tls", Bool), ("username", Text), ("queue_capacity", Int), ("persistent_session", Bool), ("max_message_bytes", Int)]),
            ("outbox", &[("max_bytes", Int), ("memory_bytes", Int), ("path", Text)]),
            ("registry", &[("url", Text), ("tag", Text), ("poll_seconds", Int), ("max_model_bytes", Int), ("latency_budget_ms", Float), ("validation_runs", Int), ("probation_frames", Int), ("probation_min_score_ratio", Float)]),
            ("model", &[("intra_threads", Int), ("path", Text)]),
            ("telemetry", &[("interval_seconds", Int), ("sysfs_root", Text)]),
            ("watchdog", &[("stall_seconds", Int)]),
            ("monitor", &[("enabled", Bool), ("remember_predictions", Int), ("feedback_window", Int), ("feedback_window_seconds", Int), ("min_labelled", Int), ("precision_alert_below", Float), ("precision_clear_at", Float), ("retrain_interval_seconds", Int)]),
            ("monitor.drift", &[("class_window", Int), ("reference_regions", Int), ("class_mix_alert_above", Float), ("class_mix_clear_below", Float), ("confidence_alert_below", Float), ("confidence_clear_at", Float), ("input_every_frames", Int), ("input_window", Int), ("brightness_alert_below", Float), ("brightness_clear_at", Float), ("contrast_alert_below", Float), ("contrast_clear_at", Float), ("sharpness_alert_below", Float), ("sharpness_clear_at", Float)]),
            ("samples", &[("enabled", Bool), ("max_bytes", Int), ("low_confidence_below", Float), ("random_rate", Float), ("max_per_hour", Int), ("recent", Int), ("recent_before_feedback", Bool), ("max_side", Int), ("publish", Bool), ("dir", Text)]),
            ("counts", &[("interval_seconds", Int)]),
            ("cameras", &[("id", Text), ("url", Text), ("regions", Text), ("replay", Text), ("loop", Bool), ("max_regions", Int), ("max_frame_pixels", Int), ("publish_frames", Bool)]),
            ("cameras.motion", &[("min_area_fraction", Float), ("warmup_frames", Int), ("analysis_width", Int), ("learning_rate", Float)]),
            ("cameras.tracking", &[("iou_gate", Float), ("confirm_hits", Int), ("max_misses", Int), ("classify_every", Int), ("edge_margin", Int)]),
            ("cameras.lines", &[("id", Text), ("from", Text), ("to", Text)]),
        ]
    };

    /// One key of `KEYS` (section, key) and a value for it.
    fn an_override() -> impl proptest::strategy::Strategy<Value = (usize, usize, String)> {
        use proptest::prelude::*;
        (0..KEYS.len()).prop_flat_map(|section| (Just(section), 0..KEYS[section].1.len())).prop_flat_map(|(section, key)| (Just(section), Just(key), literal(KEYS[section].1[key].1)))
    }

    /// A valid config with `overrides` (section index, key index, literal) written over it.
    fn config_with(overrides: &[(usize, usize, String)]) -> String {
        let base: &[(&str, &[(&str, &str)])] = &[
            ("", &[("device_id", "\"pole-17\"")]),
            ("mqtt", &[("url", "\"mqtt://127.0.0.1:1883\"")]),
            ("outbox", &[]),
            ("registry", &[("url", "\"http://127.0.0.1:5000/roadside/vc\""), ("public_keys", "[\"k.pub\"]")]),
            ("model", &[("path", "\"m.onnx\"")]),
            ("telemetry", &[]),
            ("watchdog", &[]),
            ("monitor", &[]),
            ("monitor.drift", &[]),
            ("samples", &[]),
            ("counts", &[]),
            ("cameras", &[("id", "\"north\""), ("url", "\"clip.mp4\"")]),
            ("cameras.motion", &[]),
            ("cameras.tracking", &[]),
            ("cameras.lines", &[("id", "\"gantry\""), ("from", "[480, 0]"), ("to", "[480, 540]")]),
        ];
        let mut text = String::new();
        for (i, (section, keys)) in base.iter().enumerate() {
            match *section {
                "" => {}
                "cameras" => text.push_str("[[cameras]]\n"),
                "cameras.lines" => text.push_str("[[cameras.lines]]\n"),
                name => text.push_str(&format!("[{name}]\n")),
            }
            let mine: Vec<(&str, String)> = overrides.iter().filter(|(s, _, _)| *s == i).map(|(_, k, v)| (KEYS[i].1[*k].0, v.clone())).collect();
            for (key, value) in keys.iter().filter(|(k, _)| !mine.iter().any(|(m, _)| m == k)) {
                text.push_str(&format!("{key} = {value}\n"));
            }
            for (key, value) in mine {
                text.push_str(&format!("{key} = {value}\n"));
            }
        }
        text
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(5000))]

        #[test]
        fn any_text_is_refused_or_accepted_without_a_panic(text in proptest::prelude::any::<String>()) {
            if let Ok(config) = parse(&text) {
                assert_usable(&config);
            }
        }

        #[test]
        fn any_values_for_any_keys_are_refused_or_within_bounds(
            overrides in proptest::collection::vec(an_override(), 1..4)
        ) {
            let text = config_with(&overrides);
            match parse(&text) {
                Ok(config) => assert_usable(&config),
                // A refusal names a key, or is TOML's own error (which names the line).
                Err(error) => proptest::prop_assert!(error.key().is_some() || matches!(error, ConfigError::Parse { .. }), "{error}"),
            }
        }
    }

    #[test]
    fn camera_urls_are_shown_without_credentials_and_odd_protocols_are_refused() {
        let camera = |url: &str| CameraConfig { url: url.into(), ..parse(&config_with(&[])).unwrap().cameras[0].clone() };
        assert_eq!(camera("rtsp://admin:S3cret@10.0.0.5:554/stream?a=b@c").shown_url(), "rtsp://***@10.0.0.5:554/stream?a=b@c");
        assert_eq!(camera("rtsp://10.0.0.5/s").shown_url(), "rtsp://10.0.0.5/s");
        assert_eq!(camera("/data/clip.mp4").shown_url(), "/data/clip.mp4");
        for url in ["async:file:///tmp/fifo", "gopher://x/y", "subfile,,start,0,end,0,,:file:///etc/passwd"] {
            let text = config_with(&[]).replace("url = \"clip.mp4\"", &format!("url = {url:?}"));
            let error = parse(&text).unwrap_err();
            assert_eq!(error.key(), Some("cameras[0].url"), "{url}: {error}");
        }
    }

    #[test]
    fn the_generated_base_config_is_valid() {
        parse(&config_with(&[])).unwrap();
    }
}
