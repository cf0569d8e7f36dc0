//! The supervisor: loads the model, starts every part, and shuts them down
//! in order. Only this module spawns the long-lived threads and tasks.
//!
//! Start: model → the shared [`Context`] → the consumers of inbound topics
//! (commands, monitor, updater), each registering its route → publisher task
//! (opens the outbox) → inference thread → camera threads → telemetry task.
//! Components are built with their own constructors from the context; this
//! module only wires them and spawns.
//! Stop (on `shutdown`): cameras stop taking frames → the frame queue closes
//! and inference finishes what is queued → telemetry stops → the publisher
//! stores what it holds, publishes `offline`, and delivers from the outbox
//! for up to `FLUSH_DEADLINE`; the rest waits there for the next start.

use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

use crate::config::Config;
use crate::context::Context;
use crate::infer::{Classifier, Detector};
use crate::pipeline::detection::DetectionStage;
use crate::models::recorder::RollbackRecorder;
use crate::models::release::PublicKey;
use crate::models::store::{InstalledModel, ModelStore};
use crate::models::switch::ModelSwitch;
use crate::models::target::{ClassifierReleases, DetectorReleases};
use crate::models::updater::{Announcements, Updater};
use crate::monitor::samples::Sampler;
use crate::monitor::MonitorTask;
use crate::ops::commands::CommandTask;
use crate::ops::notify::Notifier;
use crate::ops::telemetry::TelemetryTask;
use crate::pipeline::camera::CameraWorker;
use crate::pipeline::frame_queue::FrameQueue;
use crate::pipeline::inference::InferenceWorker;
use crate::pipeline::stats::{CameraState, CameraStats};
use crate::pipeline::vehicles::VehicleStage;
use crate::publish::{mqtt, Publisher, PublisherStats, Routes};
use crate::track::ids::TrackIds;
use crate::track::journal;
use crate::util::health::Health;
use crate::util::shutdown::Shutdown;
use crate::view::hub::ViewHub;
use crate::view::live::{LiveTap, VehicleCounter};
use crate::wire::{ActiveModel, ModelKind, Topics};

/// How long shutdown waits for the broker to acknowledge what was sent.
const FLUSH_DEADLINE: Duration = Duration::from_secs(3);
/// Longest a shutdown may take before the agent exits regardless.
const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(8);

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("cannot load the model: {0}")]
    Model(#[from] crate::infer::ModelError),
    /// A camera has `regions = "detector"`: the agent does not serve without its detector.
    #[error("cannot load the detector (a camera has regions = \"detector\"; [detector] path names another): {0}")]
    Detector(crate::infer::ModelError),
    #[error("registry: {0}")]
    Registry(crate::models::release::ReleaseError),
    #[error("mqtt: {0}")]
    Mqtt(#[from] crate::publish::mqtt::SetupError),
    #[error("inference stopped: {0}")]
    Inference(#[from] crate::pipeline::inference::PipelineError),
    #[error("an internal task panicked ({0}); this is a bug: the agent exits so that systemd restarts it")]
    Panicked(String),
    #[error("cannot start a thread: {0}")]
    Thread(std::io::Error),
    /// Unwritable at start: nothing that must survive a restart (the
    /// outbox, with it `seq`) could be kept, so the agent does not serve.
    #[error("state_dir cannot be written ({0}): make it writable by the agent's user (systemd: StateDirectory=), or set state_dir to a folder that is")]
    StateDir(crate::util::fs::FileError),
    /// Two agents on one state_dir would share an outbox (and a client id,
    /// and knock each other off the broker).
    #[error("state_dir {} is in use by another cctv-agent: stop it first (systemctl stop cctv-agent), or give this one its own state_dir", .0.display())]
    StateDirInUse(std::path::PathBuf),
    /// Tracked cameras number their vehicles from a counter in state_dir.
    #[error("{0}")]
    TrackIds(#[from] crate::track::ids::TrackIdError),
    #[error("{0}")]
    CountsJournal(#[from] crate::track::journal::JournalError),
    #[error("{0}")]
    ViewToken(#[from] crate::config::TokenFileError),
    #[error("cannot serve the view page on {listen} ({source}): is another program on that port? change view.listen, or remove [view]")]
    ViewListen { listen: String, source: std::io::Error },
}

pub async fn run(config: Config, shutdown: Shutdown) -> Result<(), AgentError> {
    let notifier = Arc::new(Notifier::from_env());
    // First, before anything could be stored only in memory: a state_dir
    // that cannot be written at start is a setup error, and systemd (or the
    // operator) hears of it by the exit status. A disk that fails later is
    // survived instead (the outbox keeps messages in memory and retries).
    let state_dir = config.state_dir.clone();
    // The lock is held until `run` returns.
    let _state_lock = tokio::task::spawn_blocking(move || {
        crate::util::fs::check_writable_dir(&state_dir).map_err(AgentError::StateDir)?;
        crate::util::fs::lock_dir(&state_dir, "agent.lock").map_err(|error| match error {
            crate::util::fs::LockError::Held(_) => AgentError::StateDirInUse(state_dir.clone()),
            crate::util::fs::LockError::File(error) => AgentError::StateDir(error),
        })
    })
    .await
    .map_err(|e| AgentError::Panicked(e.to_string()))??;
    // The page's token and port, before anything connects: a wrong one is a
    // setup error with nothing started to unwind.
    let view_setup = match &config.view {
        Some(view) => {
            let token = view.read_token()?;
            let listener = tokio::net::TcpListener::bind(&view.listen).await.map_err(|source| AgentError::ViewListen { listen: view.listen.clone(), source })?;
            Some((view, token, listener))
        }
        None => None,
    };
    // Tracked cameras number their vehicles from the state folder (read, and
    // the first block reserved, before anything connects), and keep their
    // open counts interval there: what a crashed run was counting is sent again.
    let tracking = if config.cameras.iter().any(|c| c.tracking.is_some()) {
        let state_dir = config.state_dir.clone();
        let tracked: Vec<String> = config.cameras.iter().filter(|c| c.tracking.is_some()).map(|c| c.id.clone()).collect();
        let open = move || -> Result<_, AgentError> {
            let ids = TrackIds::open(&state_dir.join("track_ids"))?;
            let dir = state_dir.join("counts");
            let recovered: Vec<_> = tracked.iter().filter_map(|camera| journal::recover(&dir, camera)).collect();
            for interval in &recovered {
                tracing::warn!(camera = %interval.camera, from = %interval.from, to = %interval.to, "the last run stopped without publishing these counts: sending them again, marked recovered");
            }
            Ok((ids, journal::CountsJournal::start(&dir)?, recovered))
        };
        Some(tokio::task::spawn_blocking(open).await.map_err(|e| AgentError::Panicked(e.to_string()))??)
    } else {
        None
    };
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
    let detector = match config.uses_detector() {
        true => {
            let (detector_config, load_keys) = (config.clone(), keys.clone());
            let detector = tokio::task::spawn_blocking(move || load_detector(&detector_config, &load_keys))
                .await
                .map_err(|e| AgentError::Panicked(e.to_string()))??;
            let identity = detector.identity();
            tracing::info!(name = %identity.name, version = %identity.version, sha256 = %identity.sha256, "detector loaded");
            Some(detector)
        }
        false => None,
    };

    let (outgoing, outgoing_rx) = mpsc::channel(config.mqtt.queue_capacity);
    let context = Context {
        device_id: config.device_id.clone(),
        topics: Topics::new(&config.mqtt.topic_root, &config.device_id),
        outgoing,
        active_model: Arc::new(std::sync::RwLock::new(model)),
        shutdown: shutdown.clone(),
    };
    // Inbound topics: each consumer registers its own while it is built.
    let mut routes = Routes::new();
    // New models for the inference thread, from the updater and operator commands.
    let (swap_tx, swap_rx) = std::sync::mpsc::sync_channel(1);
    let switch = config.registry.as_ref().map(|registry| {
        Arc::new(ModelSwitch::new(&context, &registry.models_dir, keys.clone(), config.model.clone(), swap_tx.clone()))
    });
    let commands = CommandTask::new(&context, switch, &mut routes);

    // Samples: the sampler thread encodes and saves crops the inference thread offers.
    let (sample_tap, samples) = if config.samples.enabled {
        let (sampler, tap, tx, rx) = Sampler::new(config.samples.clone(), &config.cameras, config.device_id.clone(), context.topics.samples_prefix(), context.outgoing.downgrade());
        let stats = sampler.stats();
        // Not joined: it ends when the inference thread and the monitor let go of it.
        std::thread::Builder::new().name("sampler".into()).spawn(move || sampler.run(rx)).map_err(AgentError::Thread)?;
        (Some(tap), Some((tx, stats)))
    } else {
        (None, None)
    };
    let monitor = config.monitor.enabled.then(|| {
        let dir = config.state_dir.join("monitor");
        let (task, sender) =
            MonitorTask::new(&context, config.monitor.clone(), dir, crate::monitor::feedback_classes(&classifier.spec().taxonomy), samples, &mut routes);
        (task.with_max_message_bytes(config.mqtt.max_message_bytes), sender)
    });

    // Rollbacks decided on the inference thread are written by this one.
    let mut recorder = None;
    let mut announcements = Announcements::default();
    let updater = match config.registry.clone() {
        Some(registry) => {
            let (handle, writer) = RollbackRecorder::new(&registry.models_dir);
            std::thread::Builder::new().name("model-store".into()).spawn(move || writer.run()).map_err(AgentError::Thread)?;
            recorder = Some(handle.clone());
            let target = ClassifierReleases { intra_threads: config.model.intra_threads, swap: swap_tx, recorder: handle };
            Some(Updater::new(&context, registry, keys.clone(), context.active_model.clone(), target, &mut announcements))
        }
        None => None,
    };
    // Detector releases: their own repository, store and updater; the
    // detection stage keeps `active_detector` naming the detector serving.
    let active_detector: Option<ActiveModel> = detector.as_ref().map(|d| Arc::new(std::sync::RwLock::new(d.identity().clone())));
    let (detector_updates, detector_updater) = match (config.detector_registry(), &active_detector) {
        (Some(registry), Some(active)) => {
            let (swap, updates) = std::sync::mpsc::sync_channel(1);
            let target = DetectorReleases { intra_threads: config.model.intra_threads, swap };
            (Some(updates), Some(Updater::new(&context, registry, keys, active.clone(), target, &mut announcements)))
        }
        _ => (None, None),
    };
    announcements.route(&context, &mut routes);

    let mut publisher = Publisher::new(
        &context.device_id,
        &context.topics,
        &context.active_model,
        mqtt::options(&config.mqtt, &config.mqtt.client_id(&config.device_id))?,
        config.outbox.clone(),
    )
    .with_routes(routes)
    .with_max_message_bytes(config.mqtt.max_message_bytes);
    if let Some((_, sender)) = &monitor {
        publisher = publisher.with_stored_hook(sender.stored_hook());
    }
    let publisher_stats = publisher.stats();
    let publisher = tokio::spawn(publisher.run(outgoing_rx, FLUSH_DEADLINE));
    let commands = tokio::spawn(commands.run());

    // The installer's page: the hub the frame path's taps feed, and its server.
    let view = match view_setup {
        Some((view, token, listener)) => {
            let hub = ViewHub::new(&config.device_id, config.cameras.iter().map(|c| c.id.clone()).collect());
            tracing::info!(listen = %view.listen, token = token.is_some(), "serving the view page");
            hub.follow_model(context.active_model.clone());
            let server = crate::view::server::serve(listener, hub.clone(), token, shutdown.clone());
            tokio::spawn(async move {
                if let Err(error) = server.await {
                    tracing::error!(%error, "the view page stopped; the agent goes on without it");
                }
            });
            Some((hub.clone(), LiveTap::start(hub, config.cameras.clone(), view.frame_interval()).map_err(AgentError::Thread)?))
        }
        None => None,
    };

    let health = Arc::new(Health::new());
    let queue = Arc::new(FrameQueue::new());
    let camera_stats: Vec<Arc<CameraStats>> = config.cameras.iter().map(|c| Arc::new(if c.detection().is_some() { CameraStats::new(&c.id).with_detector() } else { CameraStats::new(&c.id) })).collect();

    let mut worker = InferenceWorker::new(&context, classifier, queue.clone(), camera_stats.clone(), health.register("inference"), swap_rx);
    if let Some((_, sender)) = &monitor {
        worker = worker.with_tap(Box::new(sender.digest_tap()));
    }
    if let Some(tap) = &sample_tap {
        worker = worker.with_tap(Box::new(tap.clone()));
    }
    if let Some((ids, journal, recovered)) = tracking {
        let interval = Duration::from_secs(config.counts.interval_seconds);
        let mut stage = VehicleStage::new(&context.device_id, &context.topics, &config.cameras, interval, ids).with_journal(journal, recovered);
        if let Some((_, sender)) = &monitor {
            stage = stage.with_tap(Box::new(sender.vehicle_tap()));
        }
        // The frame tap's clone: one hourly sample budget for frames and vehicles.
        if let Some(tap) = &sample_tap {
            stage = stage.with_tap(Box::new(tap.clone()));
        }
        if let Some((hub, _)) = &view {
            stage = stage.with_tap(Box::new(VehicleCounter { hub: hub.clone() }));
        }
        worker = worker.with_vehicles(stage);
    }
    if let Some(detector) = detector {
        let stage = DetectionStage::new(detector, &config.cameras);
        worker = worker.with_detection(match active_detector {
            Some(active) => stage.with_active(active),
            None => stage,
        });
    }
    if let Some(updates) = detector_updates {
        worker = worker.with_detector_updates(updates);
    }
    if let Some((_, tap)) = view {
        worker = worker.with_view_tap(Box::new(tap));
    }
    // The sampler thread ends once its taps (and the monitor) are gone.
    drop(sample_tap);
    let (inference_done, mut inference_result) = oneshot::channel();
    std::thread::Builder::new()
        .name("inference".into())
        .spawn(move || {
            let _ = inference_done.send(worker.run());
        })
        .map_err(AgentError::Thread)?;

    let mut cameras = Vec::new();
    for (index, camera) in config.cameras.iter().enumerate() {
        let mut worker =
            CameraWorker::new(&context, index, camera.clone(), queue.clone(), camera_stats[index].clone(), health.register(format!("camera {}", camera.id)));
        if let Some((_, sender)) = &monitor {
            worker = worker.with_tap(Box::new(sender.input_tap(config.monitor.drift.input_every_frames)));
        }
        let handle = std::thread::Builder::new()
            .name(format!("camera-{}", camera.id))
            .spawn(move || worker.run())
            .map_err(AgentError::Thread)?;
        cameras.push((camera.id.clone(), handle));
    }

    if let Some(updater) = updater {
        // Not joined: a download or validation in progress is safe to abandon.
        std::thread::Builder::new().name("updater".into()).spawn(move || updater.run()).map_err(AgentError::Thread)?;
    }
    if let Some(updater) = detector_updater {
        std::thread::Builder::new().name("detector-updater".into()).spawn(move || updater.run()).map_err(AgentError::Thread)?;
    }

    let telemetry = TelemetryTask::new(&context, &config.telemetry, &config.state_dir, camera_stats.clone(), publisher_stats.clone(), queue.clone());
    let (telemetry, monitor) = match monitor {
        Some((task, _)) => (telemetry.with_monitor(task.figures()), Some(tokio::spawn(task.run()))),
        None => (telemetry, None),
    };
    let telemetry = tokio::spawn(telemetry.run());
    // The supervisor keeps no sender: the publisher ends once the producers have.
    drop(context);
    // Ready once every camera has opened or failed its first attempt (stream
    // opens time out after 5 s), or after READY_WAIT whatever they do.
    notifier.status("opening cameras");
    let opening = std::time::Instant::now();
    while camera_stats.iter().any(|c| c.state() == CameraState::Starting) && opening.elapsed() < READY_WAIT && !shutdown.is_triggered() {
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
    // Each part leaves this list when it has stopped; whatever is left at the
    // deadline is named in the log (a camera stuck in its driver, a broker
    // that does not acknowledge), and left behind: main does not wait for it.
    let stopping = Stopping::default();
    let stop = {
        let stopping = stopping.clone();
        async move {
            // Closing first wakes cameras waiting for room; what is queued is still classified.
            queue.close();
            let joins: Vec<_> = cameras
                .into_iter()
                .map(|(id, handle)| {
                    let part = stopping.add(format!("camera {id}"));
                    let stopping = stopping.clone();
                    tokio::task::spawn_blocking(move || {
                        drop(handle.join());
                        stopping.done(&part);
                    })
                })
                .collect();
            for join in joins {
                join.await.ok();
            }
            let part = stopping.add("inference (finishing queued frames)".into());
            let result = match early_end {
                Some(result) => result,
                None => inference_result.await,
            };
            stopping.done(&part);
            if let Some(recorder) = recorder {
                // A rollback decided on the last frames must survive the restart.
                tokio::task::spawn_blocking(move || recorder.flush(Duration::from_secs(2))).await.ok();
            }
            let _ = telemetry.await;
            if let Some(monitor) = monitor {
                let _ = monitor.await;
            }
            // The command task holds a sender; the publisher ends only without it.
            commands.abort();
            let part = stopping.add("the publisher (is the broker reachable?)".into());
            let _ = publisher.await;
            stopping.done(&part);
            result
        }
    };
    let result = match tokio::time::timeout(SHUTDOWN_DEADLINE, stop).await {
        Ok(result) => result,
        Err(_) => {
            let waiting_for = stopping.list();
            tracing::error!(deadline_s = SHUTDOWN_DEADLINE.as_secs(), %waiting_for, "shutdown took too long; exiting without it (undelivered messages wait in the outbox)");
            return Ok(());
        }
    };
    match result {
        Ok(Ok(())) => Ok(()),
        Ok(Err(error)) => Err(AgentError::Inference(error)),
        Err(_) => Err(AgentError::Panicked("the inference thread".into())),
    }
}

/// The parts a shutdown still waits for.
#[derive(Clone, Default)]
struct Stopping(Arc<std::sync::Mutex<Vec<String>>>);

impl Stopping {
    fn add(&self, part: String) -> String {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).push(part.clone());
        part
    }

    fn done(&self, part: &str) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).retain(|p| p != part);
    }

    fn list(&self) -> String {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).join(", ")
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

/// Longest wait for cameras' first open before telling systemd we are ready.
const READY_WAIT: Duration = Duration::from_secs(10);

/// How often the systemd STATUS line is refreshed.
const STATUS_INTERVAL: Duration = Duration::from_secs(5);

/// The model to serve at start: the active installed release if there is
/// one and it still checks out, else the configured model.
fn load_model(config: &Config, keys: &[PublicKey]) -> Result<Classifier, AgentError> {
    let installed = config.registry.as_ref().and_then(|registry| {
        installed_release(&registry.models_dir, keys, ModelKind::Classifier, |m| Classifier::load(&m.model_path(), &m.spec_path(), config.model.intra_threads))
    });
    match installed {
        Some(classifier) => Ok(classifier),
        None => Ok(Classifier::load(&config.model.path, &config.model.spec_path(), config.model.intra_threads)?),
    }
}

/// The detector to serve at start, the same way: the active installed
/// detector release (`[detector.registry]`) if it checks out, else `[detector]`'s.
fn load_detector(config: &Config, keys: &[PublicKey]) -> Result<Detector, AgentError> {
    let installed = config.detector_registry().and_then(|registry| {
        installed_release(&registry.models_dir, keys, ModelKind::Detector, |m| Detector::load(&m.model_path(), &m.spec_path(), config.model.intra_threads))
    });
    match installed {
        Some(detector) => Ok(detector),
        None => Detector::load(&config.detector_path(), &config.detector_spec_path(), config.model.intra_threads).map_err(AgentError::Detector),
    }
}

/// The active release in `models_dir`, loaded with its signed version, if
/// there is one, it verifies (signature, files, spec paths), it is of `kind`
/// and it loads; each failure logged (the configured model serves instead).
fn installed_release<M: Versioned>(models_dir: &std::path::Path, keys: &[PublicKey], kind: ModelKind, load: impl Fn(&InstalledModel) -> Result<M, crate::infer::ModelError>) -> Option<M> {
    let installed = match ModelStore::new(models_dir).active(keys) {
        Ok(Some(installed)) => installed,
        Ok(None) => return None,
        Err(error) => {
            tracing::error!(%error, model = %kind, "the installed model failed its checks; serving the configured model");
            return None;
        }
    };
    if installed.record.kind != kind {
        tracing::error!(dir = %installed.dir.display(), model = %kind, found = %installed.record.kind, "the installed release is of another kind; serving the configured model");
        return None;
    }
    match load(&installed) {
        Ok(model) => Some(model.versioned(installed.record.version.to_string())),
        Err(error) => {
            tracing::error!(%error, dir = %installed.dir.display(), model = %kind, "the installed model does not load; serving the configured model");
            None
        }
    }
}

/// A model that serves under its release's version rather than its spec's.
trait Versioned {
    fn versioned(self, version: String) -> Self;
}

impl Versioned for Classifier {
    fn versioned(self, version: String) -> Self {
        self.with_version(version)
    }
}

impl Versioned for Detector {
    fn versioned(self, version: String) -> Self {
        self.with_version(version)
    }
}
