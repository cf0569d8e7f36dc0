//! Periodic device and pipeline figures on `…/telemetry`.
//!
//! Sampling the system (sysinfo, sysfs) blocks briefly, so it runs on the
//! blocking pool. Telemetry is the one message that may be dropped: if the
//! publisher's queue is full the message is counted and skipped, because a
//! newer one follows.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use sysinfo::{Disks, Pid, ProcessRefreshKind, ProcessesToUpdate, System};
use tokio::sync::mpsc;

use crate::config::TelemetryConfig;
use crate::context::Context;
use crate::pipeline::frame_queue::FrameQueue;
use crate::wire::telemetry::MonitorFigures;
use crate::wire::ActiveModel;
use crate::wire::rfc3339;
use crate::wire::telemetry::{AgentFigures, MqttFigures, SystemFigures, TelemetryMessage};
use crate::publish::mqtt::Kind;
use crate::publish::{Outgoing, PublisherStats};
use crate::wire::Topics;
use crate::util::shutdown::Shutdown;
use crate::pipeline::stats::CameraStats;

pub struct TelemetryTask {
    device_id: String,
    topics: Topics,
    interval: Duration,
    sysfs_root: PathBuf,
    state_dir: PathBuf,
    model: ActiveModel,
    cameras: Vec<Arc<CameraStats>>,
    publisher: Arc<PublisherStats>,
    queue: Arc<FrameQueue>,
    sink: mpsc::Sender<Outgoing>,
    /// The monitor's figures (None: monitoring off).
    monitor: Option<Arc<std::sync::Mutex<MonitorFigures>>>,
    shutdown: Shutdown,
}

impl TelemetryTask {
    pub fn new(
        context: &Context,
        config: &TelemetryConfig,
        state_dir: &Path,
        cameras: Vec<Arc<CameraStats>>,
        publisher: Arc<PublisherStats>,
        queue: Arc<FrameQueue>,
    ) -> TelemetryTask {
        TelemetryTask {
            device_id: context.device_id.clone(),
            topics: context.topics.clone(),
            interval: Duration::from_secs(config.interval_seconds),
            sysfs_root: config.sysfs_root.clone(),
            state_dir: state_dir.to_path_buf(),
            model: context.active_model.clone(),
            cameras,
            publisher,
            queue,
            sink: context.outgoing.clone(),
            monitor: None,
            shutdown: context.shutdown.clone(),
        }
    }

    /// Reports the monitor's figures too.
    pub fn with_monitor(mut self, figures: Arc<std::sync::Mutex<MonitorFigures>>) -> TelemetryTask {
        self.monitor = Some(figures);
        self
    }

    pub async fn run(self) {
        let shutdown = self.shutdown.clone();
        let started = Instant::now();
        let mut dropped = 0u64;
        let (root, state_dir) = (self.sysfs_root.clone(), self.state_dir.clone());
        let mut sampler = match tokio::task::spawn_blocking(move || SystemSampler::new(root, state_dir)).await {
            Ok(Ok(sampler)) => sampler,
            Ok(Err(error)) => return tracing::error!(%error, "cannot read system figures; telemetry is off"),
            Err(error) => return tracing::error!(%error, "system sampling failed to start; telemetry is off"),
        };
        let mut ticker = tokio::time::interval(self.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await; // the first tick is immediate; CPU use needs an interval
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = shutdown.wait() => return,
            }
            let (back, system, agent) = match tokio::task::spawn_blocking(move || {
                let (system, agent) = sampler.sample();
                (sampler, system, agent)
            })
            .await
            {
                Ok(result) => result,
                Err(error) => {
                    tracing::error!(%error, "system sampling failed; telemetry is off");
                    return;
                }
            };
            sampler = back;
            let message = TelemetryMessage {
                device: &self.device_id,
                at: rfc3339(SystemTime::now()),
                agent_version: crate::AGENT_VERSION,
                uptime_s: started.elapsed().as_secs(),
                model: &self.model.read().map(|m| m.clone()).unwrap_or_else(|e| e.into_inner().clone()),
                system,
                agent: AgentFigures { frame_queue: self.queue.len(), ..agent },
                cameras: self.cameras.iter().map(|c| c.snapshot()).collect(),
                mqtt: MqttFigures {
                    connected: self.publisher.connected.load(Ordering::SeqCst),
                    submitted: self.publisher.submitted.load(Ordering::SeqCst),
                    acknowledged: self.publisher.acknowledged.load(Ordering::SeqCst),
                    connects: self.publisher.connects.load(Ordering::SeqCst),
                    telemetry_dropped: dropped + self.publisher.best_effort_dropped.load(Ordering::SeqCst),
                    refused: self.publisher.refused.load(Ordering::SeqCst),
                    replies_dropped: self.publisher.direct_dropped.load(Ordering::SeqCst),
                    inbound_dropped: self.publisher.inbound_dropped.load(Ordering::SeqCst),
                    outbox: self.publisher.outbox.lock().map(|o| o.clone()).unwrap_or_default(),
                },
                monitor: self.monitor.as_ref().and_then(|m| m.lock().ok().map(|m| m.clone())),
            };
            let payload = match serde_json::to_vec(&message) {
                Ok(payload) => payload,
                Err(error) => {
                    tracing::error!(%error, "cannot serialise telemetry");
                    continue;
                }
            };
            let outgoing = Outgoing::new(self.topics.telemetry(), payload, Kind::BestEffort);
            if let Err(mpsc::error::TrySendError::Full(_)) = self.sink.try_send(outgoing) {
                dropped += 1;
                tracing::debug!(dropped, "telemetry dropped: publisher queue full");
            }
        }
    }
}

/// Reads CPU, memory, disk and temperatures.
pub struct SystemSampler {
    system: System,
    pid: Pid,
    sysfs_root: PathBuf,
    state_dir: PathBuf,
}

impl SystemSampler {
    pub fn new(sysfs_root: PathBuf, state_dir: PathBuf) -> Result<SystemSampler, sysinfo::Error> {
        let mut system = System::new()?;
        system.refresh_cpu_usage();
        let pid = sysinfo::get_current_pid()?;
        Ok(SystemSampler { system, pid, sysfs_root, state_dir })
    }

    pub fn sample(&mut self) -> (SystemFigures, AgentFigures) {
        self.system.refresh_cpu_usage();
        self.system.refresh_memory();
        self.system.refresh_processes_specifics(
            ProcessesToUpdate::Some(&[self.pid]),
            true,
            ProcessRefreshKind::nothing().with_memory().with_cpu(),
        );
        let process = self.system.process(self.pid);
        let system = SystemFigures {
            cpu_percent: self.system.global_cpu_usage(),
            load_1m: System::load_average().map(|l| l.one).unwrap_or(0.0),
            memory_total_bytes: self.system.total_memory(),
            memory_used_bytes: self.system.used_memory(),
            state_disk_free_bytes: free_space(&self.state_dir),
            temperatures_c: crate::ops::sensors::temperatures(&self.sysfs_root),
            sensors: crate::ops::sensors::iio(&self.sysfs_root),
        };
        let agent = AgentFigures {
            rss_bytes: process.map(|p| p.memory()),
            cpu_percent: process.map(|p| p.cpu_usage()),
            frame_queue: 0,
        };
        (system, agent)
    }
}

/// Free space on the file system that holds `path` (the longest mount point that contains it).
fn free_space(path: &Path) -> Option<u64> {
    let path = path.canonicalize().ok()?;
    let disks = Disks::new_with_refreshed_list().ok()?;
    disks
        .iter()
        .filter(|d| path.starts_with(d.mount_point()))
        .max_by_key(|d| d.mount_point().as_os_str().len())
        .map(|d| d.available_space())
}

