//! The `cctv-agent` command line. Errors end here: printed with their causes,
//! and turned into exit codes (1: failed at run time, 2: bad config or usage).

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use cctv_agent::config::{Config, SourceKind};
use cctv_agent::infer::Classifier;
use cctv_agent::util::shutdown::Shutdown;

#[derive(Parser)]
#[command(name = "cctv-agent", version, about = "Classifies vehicles in CCTV streams and publishes predictions over MQTT")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon. Without --config: the built-in demo (bundled model and clip, broker on 127.0.0.1:1883).
    Run {
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Classify still images with exactly the pipeline's preprocessing; one JSON line per image.
    Classify {
        /// The ONNX model; its spec is the .toml beside it.
        #[arg(long, default_value = "models/efficientnet_lite0.onnx")]
        model: PathBuf,
        #[arg(required = true)]
        images: Vec<PathBuf>,
    },
    /// Find objects in still images with the detector (its every label, after its NMS: the pipeline then keeps vehicle labels, one box per vehicle); one JSON line per image.
    Detect {
        /// The detector's ONNX model; its spec is the .toml beside it.
        #[arg(long, default_value = "models/yolov3_tiny.onnx")]
        model: PathBuf,
        #[arg(required = true)]
        images: Vec<PathBuf>,
    },
    /// Validate a config file; names the bad key and what to write instead.
    CheckConfig { file: PathBuf },
    /// Draw what a camera's pipeline sees (lanes, lines, calibration points,
    /// regions, tracks) on one of its frames, as a JPEG. Needs no network.
    Snapshot {
        /// Without it: the built-in demo (its camera `road`).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// The camera's id (`[[cameras]] id`).
        #[arg(long)]
        camera: String,
        #[arg(long, default_value = "snapshot.jpg")]
        out: PathBuf,
        /// Draw this frame of a file (0-based)…
        #[arg(long, conflicts_with = "seconds")]
        frame: Option<u64>,
        /// …or the frame at this many seconds of the camera's clock (after
        /// this long tracking, for a live camera). Default 3.
        #[arg(long)]
        seconds: Option<f64>,
    },
    /// The trainer's side of a model release: keys, signing, pushing, announcing.
    #[command(subcommand)]
    Release(ReleaseCommand),
    /// Print predictions and status changes as they arrive.
    Watch {
        /// Broker; defaults to the one in --config, else mqtt://127.0.0.1:1883.
        #[arg(long)]
        url: Option<String>,
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Device id to watch; `+` for all.
        #[arg(long, default_value = "+")]
        device: String,
        /// Print raw JSON payloads.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum ReleaseCommand {
    /// Create a signing key pair: <dir>/<key-id>.key (keep it secret) and <dir>/<key-id>.pub (pin it on devices).
    Keygen {
        #[arg(long)]
        key_id: String,
        #[arg(long, default_value = ".")]
        dir: PathBuf,
    },
    /// Sign a model into a release record, push it to the registry, move the tag, and announce it.
    Publish {
        /// Registry repository, e.g. http://127.0.0.1:5000/roadside/vehicle-classifier
        #[arg(long)]
        registry: String,
        #[arg(long, default_value = "champion")]
        tag: String,
        /// The secret key file from `release keygen`.
        #[arg(long)]
        key: PathBuf,
        /// The ONNX file; its spec is the .toml beside it unless --spec says otherwise.
        #[arg(long)]
        model: PathBuf,
        #[arg(long)]
        spec: Option<PathBuf>,
        /// A golden set every device must classify well enough first (JSON:
        /// {"min_accuracy": 0.8, "samples": [{"image": "car.jpg", "class": "car"}, ...]}).
        #[arg(long)]
        golden: Option<PathBuf>,
        /// Must be above the version every device runs.
        #[arg(long)]
        version: u64,
        /// How long devices may install this release (e.g. 30d).
        #[arg(long, default_value = "30d", value_parser = humantime::parse_duration)]
        expires_in: std::time::Duration,
        /// An exact expiry instead (RFC 3339); a past one makes a release every device refuses.
        #[arg(long, value_parser = humantime::parse_rfc3339)]
        expires_at: Option<std::time::SystemTime>,
        #[arg(long, default_value = cctv_agent::AGENT_VERSION)]
        min_agent_version: String,
        /// Broker for the retained announcement on <topic-root>/fleet/models/<name>
        /// (overrides the URL in --mqtt-config).
        #[arg(long)]
        mqtt: Option<String>,
        /// An agent config file whose [mqtt] section (URL, CA, client certificate,
        /// user and password_file or CCTV_MQTT_PASSWORD) the announcement connects with.
        #[arg(long)]
        mqtt_config: Option<PathBuf>,
        /// Default: mqtt.topic_root of --mqtt-config, else cctv.
        #[arg(long)]
        topic_root: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CCTV_LOG").unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,ort=warn")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let result = match cli.command {
        Command::Run { config } => load_config(config.as_deref()).and_then(run),
        Command::Classify { model, images } => classify(&model, &images),
        Command::Detect { model, images } => detect(&model, &images),
        Command::CheckConfig { file } => check_config(&file),
        Command::Snapshot { config, camera, out, frame, seconds } => snapshot(config.as_deref(), &camera, &out, frame, seconds),
        Command::Watch { url, config, device, json } => watch(url, config.as_deref(), device, json),
        Command::Release(command) => release(command),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {}", explain(&error));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes, each cause left out where the message before
/// it already says it (the library's messages include their cause's text).
fn explain(error: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in error.chain() {
        let part = cause.to_string();
        if !text.contains(&part) {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(&part);
        }
    }
    text
}

fn release(command: ReleaseCommand) -> Result<ExitCode> {
    use cctv_agent::models::trainer;
    match command {
        ReleaseCommand::Keygen { key_id, dir } => {
            let (secret, public) = trainer::keygen(&key_id, &dir)?;
            println!("secret key: {} (keep it on the trainer only)", secret.display());
            println!("public key: {} (add it to registry.public_keys on every device)", public.display());
        }
        ReleaseCommand::Publish { registry, tag, key, model, spec, golden, version, expires_in, expires_at, min_agent_version, mqtt, mqtt_config, topic_root } => {
            let mut mqtt = match (mqtt_config, mqtt) {
                (Some(path), url) => {
                    let mut config = Config::load(&path)?.mqtt;
                    config.url = url.unwrap_or(config.url);
                    Some(config)
                }
                (None, Some(url)) => Some(cctv_agent::config::MqttConfig::for_url(&url)),
                (None, None) => None,
            };
            if let (Some(mqtt), Some(root)) = (&mut mqtt, topic_root) {
                mqtt.topic_root = root;
            }
            let publication = trainer::Publication {
                registry_url: registry,
                tag,
                key,
                model,
                spec,
                golden,
                version,
                expires_in,
                expires_at,
                min_agent_version,
                mqtt,
            };
            let (record, digest) = trainer::publish(&publication)?;
            println!("{} version {} pushed as {digest} (tag {})", record.name, record.version, publication.tag);
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn load_config(path: Option<&Path>) -> Result<Config> {
    match path {
        Some(path) => Ok(Config::load(path)?),
        None => {
            tracing::info!("no --config given: running the built-in demo (bundled model and clip, broker on 127.0.0.1:1883)");
            Ok(Config::demo()?)
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().context("cannot start the async runtime")
}

fn run(config: Config) -> Result<ExitCode> {
    // FFmpeg reads RTSP over UDP by default, which loses packets on busy links.
    if std::env::var_os("OPENCV_FFMPEG_CAPTURE_OPTIONS").is_none() {
        std::env::set_var("OPENCV_FFMPEG_CAPTURE_OPTIONS", "rtsp_transport;tcp");
    }
    let runtime = runtime()?;
    let result = runtime.block_on(async {
        let shutdown = Shutdown::new();
        tokio::spawn(stop_on_signals(shutdown.clone()));
        cctv_agent::agent::run(config, shutdown).await
    });
    // Dropping the runtime would wait for every blocking task, including a
    // join on a camera thread stuck in its driver: the agent has already
    // given up on those (and said so), so the process must not wait either.
    runtime.shutdown_timeout(std::time::Duration::from_millis(200));
    result?;
    Ok(ExitCode::SUCCESS)
}

/// First SIGTERM/SIGINT: shut down in order. Second: exit at once.
async fn stop_on_signals(shutdown: Shutdown) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    for count in 0.. {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        if count == 0 {
            tracing::info!("signal received; finishing in-flight work (send it again to exit at once)");
            shutdown.trigger();
        } else {
            tracing::warn!("second signal: exiting now");
            std::process::exit(130);
        }
    }
}

fn classify(model: &Path, images: &[PathBuf]) -> Result<ExitCode> {
    let mut classifier = Classifier::load(model, &model.with_extension("toml"), 1)?;
    let mut failed = false;
    for image in images {
        match classify_one(&mut classifier, image) {
            Ok(line) => println!("{line}"),
            Err(error) => {
                eprintln!("error: {}: {}", image.display(), explain(&error));
                failed = true;
            }
        }
    }
    Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

/// A still image as OpenCV decodes it (BGR), or why not.
fn read_image(image: &Path) -> Result<opencv::core::Mat> {
    use opencv::prelude::*;
    // OpenCV would wait for ever on a FIFO.
    cctv_agent::util::fs::check_regular_file(image).context("cannot read it as an image")?;
    let path = image.to_str().context("image path is not UTF-8")?;
    let frame = opencv::imgcodecs::imread(path, opencv::imgcodecs::IMREAD_COLOR)?;
    if frame.empty() {
        anyhow::bail!("cannot read it as an image (missing, or not a format OpenCV decodes)");
    }
    Ok(frame)
}

fn snapshot(config: Option<&Path>, camera: &str, out: &Path, frame: Option<u64>, seconds: Option<f64>) -> Result<ExitCode> {
    use cctv_agent::view::snapshot::{take, At};
    let config = match config {
        Some(path) => Config::load(path)?,
        None => Config::demo()?,
    };
    let at = match (frame, seconds) {
        (Some(n), _) => At::Frame(n),
        (None, Some(s)) if s.is_finite() && s >= 0.0 => At::Seconds(s),
        (None, Some(s)) => anyhow::bail!("--seconds {s}: give a number of seconds, 0 or more"),
        (None, None) => At::Seconds(3.0),
    };
    let taken = take(&config, camera, at, out)?;
    println!(
        "{}: camera {camera}, frame {} (t={:.2} s, {}x{}): {} regions, {} tracks in view, {} vehicles reported before it",
        out.display(),
        taken.frame_index,
        taken.clock_s,
        taken.width,
        taken.height,
        taken.regions,
        taken.tracks,
        taken.vehicles
    );
    if taken.ended_early {
        eprintln!("warning: the source ended before the frame asked for; this is its last frame");
    }
    Ok(ExitCode::SUCCESS)
}

fn detect(model: &Path, images: &[PathBuf]) -> Result<ExitCode> {
    let mut detector = cctv_agent::infer::Detector::load(model, &model.with_extension("toml"), 1)?;
    let mut failed = false;
    for image in images {
        let line = read_image(image).and_then(|frame| Ok(detector.detect(&frame)?)).and_then(|found| {
            let detections: Vec<serde_json::Value> = found
                .iter()
                .map(|d| {
                    serde_json::json!({
                        "label": detector.label(d),
                        "score": d.score,
                        "box": d.bbox,
                        "road_class": detector.road_classes(d).first(),
                    })
                })
                .collect();
            let identity = detector.identity();
            Ok(serde_json::to_string(&serde_json::json!({
                "image": image,
                "model": { "name": identity.name, "version": identity.version },
                "detections": detections,
            }))?)
        });
        match line {
            Ok(line) => println!("{line}"),
            Err(error) => {
                eprintln!("error: {}: {}", image.display(), explain(&error));
                failed = true;
            }
        }
    }
    Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

fn classify_one(classifier: &mut Classifier, image: &Path) -> Result<String> {
    use opencv::prelude::*;
    let frame = read_image(image)?;
    let whole = opencv::core::Rect::new(0, 0, frame.cols(), frame.rows());
    let region = classifier.classify(&frame, &[whole])?.remove(0);
    Ok(serde_json::to_string(&serde_json::json!({
        "image": image,
        "class": region.class,
        "score": region.score,
        "top_k": region.top_k,
    }))?)
}

fn check_config(file: &Path) -> Result<ExitCode> {
    match Config::load(file) {
        Ok(config) => {
            let mut warnings = Vec::new();
            if !config.model.path.exists() {
                warnings.push(format!("model.path {} does not exist (yet)", config.model.path.display()));
            }
            if config.uses_detector() {
                let (model, spec) = (config.detector_path(), config.detector_spec_path());
                if !model.exists() {
                    warnings.push(format!("the detector {} (a camera has regions = \"detector\") does not exist (yet)", model.display()));
                }
                // A spec that is there must be one `run` can use.
                if spec.exists() {
                    if let Err(error) = cctv_agent::infer::detector_spec::DetectorSpec::load(&spec) {
                        eprintln!("error: the detector's {error}");
                        return Ok(ExitCode::from(2));
                    }
                }
            }
            for camera in &config.cameras {
                if let SourceKind::File(path) = camera.source() {
                    if !path.exists() {
                        warnings.push(format!("camera `{}`: file {} does not exist (yet)", camera.id, path.display()));
                    }
                }
            }
            // `run` refuses to start without a readable, non-empty token.
            if let Some(view) = &config.view {
                if let Err(error) = view.read_token() {
                    warnings.push(format!("{error}: `run` will not start until it is readable"));
                }
            }
            for warning in &warnings {
                eprintln!("warning: {warning}");
            }
            println!("{}: OK ({} camera(s), broker {})", file.display(), config.cameras.len(), config.mqtt.url);
            Ok(ExitCode::SUCCESS)
        }
        Err(error) => {
            eprintln!("error: {error}");
            Ok(ExitCode::from(2))
        }
    }
}

fn watch(url: Option<String>, config: Option<&Path>, device: String, json: bool) -> Result<ExitCode> {
    let mut mqtt = match config {
        Some(path) => Config::load(path)?.mqtt,
        None => cctv_agent::config::MqttConfig::for_url("mqtt://127.0.0.1:1883"),
    };
    if let Some(url) = url {
        mqtt.url = url;
    }
    let client_id = format!("cctv-watch-{}", std::process::id());
    let options = cctv_agent::publish::mqtt::options(&mqtt, &client_id)?;
    let watch = cctv_agent::ops::watch::WatchOptions { options, topic_root: mqtt.topic_root.clone(), device, json };
    runtime()?.block_on(cctv_agent::ops::watch::run(watch)).map_err(anyhow::Error::msg)?;
    Ok(ExitCode::SUCCESS)
}
