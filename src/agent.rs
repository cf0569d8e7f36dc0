//! The supervisor: loads the model, starts every part, and shuts them down
//! in order. Only this module spawns threads and tasks.
//!
//! Start: model → publisher task (opens the outbox) → command task →
//! inference thread → camera threads → telemetry task.
//! Stop (on `shutdown`): cameras stop taking frames → the frame queue closes
//! and inference finishes what is queued → telemetry stops → the publisher
//! stores what it holds, publishes `offline`, and delivers from the outbox
//! for up to `FLUSH_DEADLINE`; the rest waits there for the next start.

use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

use crate::pipeline::camera::CameraWorker;
use crate::ops::commands::CommandTask;
use crate::config::Config;
use crate::models::store::ModelStore;
use crate::models::switch::ModelSwitch;
use crate::monitor::samples::Sampler;
use crate::monitor::{MonitorFigures, MonitorSender, MonitorTask};
use crate::models::release::PublicKey;
use crate::models::updater::Updater;
use crate::pipeline::frame_queue::FrameQueue;
use crate::util::health::Health;
use crate::pipeline::inference::InferenceWorker;
use crate::infer::{ActiveModel, Classifier};
use crate::ops::notify::Notifier;
use crate::publish::sink::EventSink;
use crate::publish::{mqtt, Publisher, PublisherStats};
use crate::wire::Topics;
use crate::util::shutdown::Shutdown;
use crate::pipeline::stats::{CameraState, CameraStats};
use crate::ops::telemetry::TelemetryTask;

/// How long shutdown waits for the broker to acknowledge what was sent.
const FLUSH_DEADLINE: Duration = Duration::from_secs(3);
/// Longest a shutdown may take before the agent exits regardless.
const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(8);

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("cannot load the model: {0}")]
    Model(#[from] crate::infer::ModelError),
    #[error("registry: {0}")]
    Registry(crate::models::release::ReleaseError),
    #[error("mqtt: {0}")]
    Mqtt(#[from] crate::publish::mqtt::SetupError),
    #[error("inference stopped: {0}")]
    Inference(String),
    #[error("an internal task panicked ({0}); this is a bug: the agent exits so that systemd restarts it")]
    Panicked(String),
    #[error("cannot start a thread: {0}")]
    Thread(std::io::Error),
}

pub async fn run(config: Config, shutdown: Shutdown) -> Result<(), AgentError> {
    let notifier = Arc::new(Notifier::from_env());
    notifier.status("loading the model");
    let keys = match &config.registry {
        Some(registry) => registry.public_keys.iter().map(|p| PublicKey::load(p)).collect::<Result<Vec<_>, _>>().map_err(AgentError::Registry)?,
        None => Vec::new(),
    };
    let model_config = config.clone();
    let load_keys = keys.clone();
    let classifier = tokio::task::spawn_blocking(move || load_model(&model_config, &load_keys))
        .await
        .map_err(|e| AgentError::Panicked(e.to_string()))??;
    let model = classifier.identity().clone();
    tracing::info!(name = %model.name, version = %model.version, sha256 = %model.sha256, "model loaded");
    let active_model: ActiveModel = Arc::new(std::sync::RwLock::new(model.clone()));

    let topics = Topics::new(&config.mqtt.topic_root, &config.device_id);
    let publisher_stats = Arc::new(PublisherStats::default());
    let (sink, outgoing) = mpsc::channel(config.mqtt.queue_capacity);
    let (commands_tx, commands_rx) = mpsc::channel(COMMAND_QUEUE);
    let (wake_tx, wake_rx) = std::sync::mpsc::sync_channel(1);
    let (monitor_tx, monitor_rx) = mpsc::channel(crate::monitor::QUEUE);
    let monitor_sender = config.monitor.enabled.then(|| MonitorSender { tx: monitor_tx, dropped: Default::default() });
    let publisher = Publisher {
        options: mqtt::options(&config.mqtt, &config.mqtt.client_id(&config.device_id)).map_err(AgentError::Mqtt)?,
        device_id: config.device_id.clone(),
        topics: topics.clone(),
        active_model: active_model.clone(),
        stats: publisher_stats.clone(),
        outbox: config.outbox.clone(),
        commands: commands_tx,
        announcements: config.registry.as_ref().map(|_| wake_tx),
        monitor: monitor_sender.clone(),
    };
    let publisher = tokio::spawn(publisher.run(outgoing, FLUSH_DEADLINE));
    // New models for the inference thread, from the updater and operator commands.
    let (swap_tx, swap_rx) = std::sync::mpsc::sync_channel(1);
    let commands = CommandTask {
        device_id: config.device_id.clone(),
        topics: topics.clone(),
        model: active_model.clone(),
        started: std::time::Instant::now(),
        sink: sink.clone(),
        models: config.registry.as_ref().map(|registry| {
            Arc::new(ModelSwitch {
                store: ModelStore::new(&registry.models_dir),
                keys: keys.clone(),
                configured: config.model.clone(),
                swap: swap_tx.clone(),
                active: active_model.clone(),
            })
        }),
    };
    let commands = tokio::spawn(commands.run(commands_rx));

    let health = Arc::new(Health::new());
    let queue = Arc::new(FrameQueue::new());
    let camera_stats: Vec<Arc<CameraStats>> = config.cameras.iter().map(|c| Arc::new(CameraStats::new(&c.id))).collect();

    // Samples: the sampler thread encodes and saves crops the inference thread offers.
    let (sample_tap, samples) = if config.samples.enabled {
        let (sampler, tap, tx, rx) = Sampler::new(config.samples.clone(), config.device_id.clone(), topics.samples_prefix(), sink.downgrade());
        let stats = sampler.stats.clone();
        // Not joined: it ends when the inference thread and the monitor let go of it.
        std::thread::Builder::new().name("sampler".into()).spawn(move || sampler.run(rx)).map_err(AgentError::Thread)?;
        (Some(tap), Some((tx, stats)))
    } else {
        (None, None)
    };
    let monitor_figures = Arc::new(std::sync::Mutex::new(MonitorFigures::default()));
    let monitor = monitor_sender.as_ref().map(|sender| {
        let task = MonitorTask {
            device_id: config.device_id.clone(),
            topics: topics.clone(),
            config: config.monitor.clone(),
            dir: config.state_dir.join("monitor"),
            active: active_model.clone(),
            classes: road_classes(&classifier),
            publisher: sink.downgrade(),
            samples,
            figures: monitor_figures.clone(),
            dropped: sender.dropped.clone(),
        };
        tokio::spawn(task.run(monitor_rx, shutdown.clone()))
    });

    let (inference_done, mut inference_result) = oneshot::channel();
    let worker = InferenceWorker {
        device_id: config.device_id.clone(),
        classifier,
        queue: queue.clone(),
        stats: camera_stats.clone(),
        topics: topics.clone(),
        sink: sink.clone(),
        heartbeat: health.register("inference"),
        updates: swap_rx,
        active: active_model.clone(),
        events: EventSink::new(&config.device_id, topics.events(), &sink),
        confidence: Default::default(),
        probation: None,
        monitor: monitor.is_some(),
        samples: sample_tap,
    };
    std::thread::Builder::new()
        .name("inference".into())
        .spawn(move || {
            let _ = inference_done.send(worker.run());
        })
        .map_err(AgentError::Thread)?;

    let mut cameras = Vec::new();
    for (index, camera) in config.cameras.iter().enumerate() {
        let worker = CameraWorker {
            index,
            config: camera.clone(),
            queue: queue.clone(),
            stats: camera_stats[index].clone(),
            shutdown: shutdown.clone(),
            heartbeat: health.register(format!("camera {}", camera.id)),
            events: EventSink::new(&config.device_id, topics.events(), &sink),
            lost_since: Default::default(),
            monitor: monitor_sender.clone().map(|sender| (sender, config.monitor.drift.input_every_frames)),
        };
        let handle = std::thread::Builder::new()
            .name(format!("camera-{}", camera.id))
            .spawn(move || worker.run())
            .map_err(AgentError::Thread)?;
        cameras.push(handle);
    }

    if let Some(registry) = config.registry.clone() {
        let updater = Updater {
            store: ModelStore::new(&registry.models_dir),
            config: registry,
            keys,
            active: active_model.clone(),
            intra_threads: config.model.intra_threads,
            events: EventSink::new(&config.device_id, topics.events(), &sink),
            swap: swap_tx,
            wake: wake_rx,
            shutdown: shutdown.clone(),
        };
        // Not joined: a download or validation in progress is safe to abandon.
        std::thread::Builder::new().name("updater".into()).spawn(move || updater.run()).map_err(AgentError::Thread)?;
    }

    let telemetry = TelemetryTask {
        device_id: config.device_id.clone(),
        topics,
        interval: Duration::from_secs(config.telemetry.interval_seconds),
        sysfs_root: config.telemetry.sysfs_root.clone(),
        state_dir: config.state_dir.clone(),
        model: active_model.clone(),
        cameras: camera_stats.clone(),
        publisher: publisher_stats.clone(),
        queue: queue.clone(),
        sink,
        monitor: monitor.is_some().then(|| monitor_figures.clone()),
    };
    let telemetry = tokio::spawn(telemetry.run(shutdown.clone()));
    // Ready once every camera has opened or failed its first attempt (stream
    // opens time out after 5 s), or after READY_WAIT whatever they do.
    notifier.status("opening cameras");
    let opening = std::time::Instant::now();
    while camera_stats.iter().any(|c| c.state() == CameraState::Starting) && opening.elapsed() < READY_WAIT {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tracing::info!(device = %config.device_id, cameras = cameras.len(), "agent serving");
    notifier.ready();
    let supervision = Supervision {
        notifier: notifier.clone(),
        health,
        stall_limit: Duration::from_secs(config.watchdog.stall_seconds),
        cameras: camera_stats,
        publisher: publisher_stats,
    };
    tokio::spawn(supervision.run(shutdown.clone()));

    // Serve until asked to stop, or until inference stops on its own (an error).
    let early_end = tokio::select! {
        _ = shutdown.wait() => None,
        result = &mut inference_result => Some(result),
    };
    shutdown.trigger();
    tracing::info!("shutting down");
    notifier.stopping();
    notifier.status("shutting down: finishing queued frames, flushing MQTT");
    let stop = async move {
        // Closing first wakes cameras waiting for room; what is queued is still classified.
        queue.close();
        tokio::task::spawn_blocking(move || cameras.into_iter().for_each(|c| drop(c.join()))).await.ok();
        let result = match early_end {
            Some(result) => result,
            None => inference_result.await,
        };
        let _ = telemetry.await;
        if let Some(monitor) = monitor {
            let _ = monitor.await;
        }
        // The command task holds a sender; the publisher ends only without it.
        commands.abort();
        let _ = publisher.await;
        result
    };
    let result = match tokio::time::timeout(SHUTDOWN_DEADLINE, stop).await {
        Ok(result) => result,
        Err(_) => {
            tracing::error!(deadline_s = SHUTDOWN_DEADLINE.as_secs(), "shutdown took too long (is the broker reachable?); exiting with messages undelivered");
            return Ok(());
        }
    };
    match result {
        Ok(Ok(())) => Ok(()),
        Ok(Err(error)) => Err(AgentError::Inference(error)),
        Err(_) => Err(AgentError::Panicked("the inference thread".into())),
    }
}

/// Feeds systemd's watchdog while every thread makes progress, and keeps
/// its STATUS line current.
struct Supervision {
    notifier: Arc<Notifier>,
    health: Arc<Health>,
    stall_limit: Duration,
    cameras: Vec<Arc<CameraStats>>,
    publisher: Arc<PublisherStats>,
}

impl Supervision {
    async fn run(self, shutdown: Shutdown) {
        let tick = self.notifier.watchdog_interval().map(|w| w / 2).unwrap_or(STATUS_INTERVAL).min(STATUS_INTERVAL);
        let mut ticker = tokio::time::interval(tick);
        let mut last_status = std::time::Instant::now() - STATUS_INTERVAL;
        let mut reported_stall = false;
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = shutdown.wait() => return,
            }
            let stalled = self.health.stalled(self.stall_limit);
            if stalled.is_empty() {
                self.notifier.watchdog();
                reported_stall = false;
            } else if !reported_stall {
                let parts: Vec<String> = stalled.iter().map(|(name, d)| format!("{name} ({} s)", d.as_secs())).collect();
                tracing::error!(stalled = %parts.join(", "), "no progress: withholding the systemd watchdog so the agent is restarted");
                self.notifier.status(&format!("stalled: {}", parts.join(", ")));
                reported_stall = true;
            }
            if stalled.is_empty() && last_status.elapsed() >= STATUS_INTERVAL {
                last_status = std::time::Instant::now();
                self.notifier.status(&self.status_line());
            }
        }
    }

    fn status_line(&self) -> String {
        use std::sync::atomic::Ordering;
        let cameras: Vec<String> = self
            .cameras
            .iter()
            .map(|c| {
                let s = c.snapshot();
                format!("{} {:?} {} classified", s.id, s.state, s.frames_processed).to_lowercase()
            })
            .collect();
        let broker = if self.publisher.connected.load(Ordering::SeqCst) { "broker connected" } else { "broker not connected" };
        format!("serving: {}; {broker}", cameras.join(", "))
    }
}

/// Commands waiting to be handled; more are refused with a log line.
const COMMAND_QUEUE: usize = 16;

/// Longest wait for cameras' first open before telling systemd we are ready.
const READY_WAIT: Duration = Duration::from_secs(10);

/// How often the systemd STATUS line is refreshed.
const STATUS_INTERVAL: Duration = Duration::from_secs(5);

/// The classes feedback may name: the model's road classes and `none`.
fn road_classes(classifier: &Classifier) -> Vec<String> {
    let taxonomy = &classifier.spec().taxonomy;
    taxonomy.class_names().map(str::to_string).chain([crate::infer::taxonomy::NO_VEHICLE.to_string()]).collect()
}

/// The model to serve at start: the active installed release if there is
/// one and it still checks out, else the configured model.
fn load_model(config: &Config, keys: &[PublicKey]) -> Result<Classifier, AgentError> {
    if let Some(registry) = &config.registry {
        match ModelStore::new(&registry.models_dir).active(keys) {
            Ok(Some(installed)) => {
                match Classifier::load(&installed.model_path(), &installed.spec_path(), config.model.intra_threads) {
                    Ok(classifier) => return Ok(classifier.with_version(installed.record.version.to_string())),
                    Err(error) => tracing::error!(%error, dir = %installed.dir.display(), "the installed model does not load; serving the configured model"),
                }
            }
            Ok(None) => {}
            Err(error) => tracing::error!(%error, "the installed model failed its checks; serving the configured model"),
        }
    }
    Ok(Classifier::load(&config.model.path, &config.model.spec_path(), config.model.intra_threads)?)
}
