//! The model updater: a thread that watches a registry repository's tag,
//! and for each new release downloads, verifies, validates and installs it
//! away from the frame path, then hands the loaded model to the inference
//! thread, which swaps it in between two frames. One updater per kind of
//! model, each with its own repository and model store: what differs between
//! kinds (loading, checks on this device, where the model goes) is its
//! [`Target`]; the rest is here.
//!
//! A release is refused — with a `model_rejected` event, the old model
//! serving on — if a file does not match its digest in [`MAX_GARBLED`]
//! downloads in a row, the record is not signed by a pinned key, has
//! expired, is not newer than the active version, needs a newer agent, is
//! of another kind than the repository's (a classifier among detectors), its
//! spec names a file that is not one of the release's, it does not load,
//! does not match its record's shapes, or is too slow on this device. A
//! registry that cannot be reached, answers with an error status (server
//! trouble, credentials, a tag that points at what it does not serve yet),
//! breaks off or trickles only means "try again"
//! (`RegistryError::condemns_release`): with backoff from 1 s up to
//! `poll_seconds`, and the release is not remembered as seen. A refusal
//! that depended on the active version ("not newer") is judged again once
//! the active version changes (an operator's rollback).
//!
//! The release already serving, found at the tag again (every start), is
//! not a refusal: it is passed over quietly. A refusal is reported once
//! per release digest and active version, across restarts (the store
//! remembers the last one).
//!
//! Announcements only wake the threads ([`Announcements`]: one route for
//! every updater): however many arrive, each checks its registry at most
//! once per [`MIN_CHECK_INTERVAL`].

use std::path::Path;
use std::sync::mpsc::{Receiver, SyncSender};
use std::time::{Duration, Instant};

use super::target::{Target, ValidationError};
use crate::config::RegistryConfig;
use crate::context::Context;
use crate::infer::spec::ModelKind;
use crate::infer::ActiveModel;
use crate::models::registry::{Registry, RegistryError, RECORD_TYPE, SIGNATURE_TYPE};
use crate::models::release::{self, PublicKey, ReleaseError, ReleaseRecord};
use crate::models::store::{ModelStore, StoreError};
use crate::publish::sink::EventSink;
use crate::publish::{Inbound, Routes};
use crate::util::fs::FileError;
use crate::util::shutdown::Shutdown;
use crate::util::throttle::Throttle;
use crate::wire::events::Event;

/// Largest release record or signature accepted.
const MAX_SMALL_BLOB: u64 = 1 << 20;
/// Free space to leave on the models' file system after a download.
const MIN_FREE_AFTER: u64 = 64 << 20;
/// However many announcements arrive, the registry is asked at most this often.
pub const MIN_CHECK_INTERVAL: Duration = Duration::from_secs(2);
/// First wait after a transient failure; it doubles up to `poll_seconds`.
const FIRST_RETRY: Duration = Duration::from_secs(1);
/// Downloads of a release that do not match their digest before it is
/// refused: one garbled answer may be transit damage, the same mismatch
/// every time is the registry's copy.
pub const MAX_GARBLED: u32 = 3;

/// Release announcements (`<root>/fleet/models/+`) for every updater: the
/// publisher hands a message to the first route that matches, so there is
/// one route, and it wakes each updater.
#[derive(Default)]
pub struct Announcements {
    wakes: Vec<SyncSender<()>>,
}

impl Announcements {
    /// A wake-up for one more updater: one pending at most, so a flood of
    /// announcements is one check.
    fn listen(&mut self) -> Receiver<()> {
        let (wake_tx, wake) = std::sync::mpsc::sync_channel(1);
        self.wakes.push(wake_tx);
        wake
    }

    /// Registers the route (none without an updater).
    pub fn route(self, context: &Context, routes: &mut Routes) {
        if self.wakes.is_empty() {
            return;
        }
        let announced_log = Throttle::for_warnings();
        routes.add("model updaters", format!("{}+", context.topics.fleet_models_prefix()), move |inbound: Inbound| {
            if let Some(suppressed) = announced_log.allow() {
                tracing::info!(topic = %inbound.topic, suppressed, "model release announced");
            }
            for wake in &self.wakes {
                let _ = wake.try_send(());
            }
        });
    }
}

pub struct Updater<T: Target> {
    config: RegistryConfig,
    keys: Vec<PublicKey>,
    store: ModelStore,
    /// The model of this kind serving now (the inference thread replaces it when it swaps).
    active: ActiveModel,
    target: T,
    events: EventSink,
    /// An announcement arrived: check now rather than at the next poll.
    wake: Receiver<()>,
    shutdown: Shutdown,
}

impl<T: Target> Updater<T> {
    /// An updater for `config`'s repository, installing into its
    /// `models_dir`; `active` is the model of `target`'s kind serving now.
    /// Woken by `announcements` (register their route once every updater is built).
    pub fn new(context: &Context, config: RegistryConfig, keys: Vec<PublicKey>, active: ActiveModel, target: T, announcements: &mut Announcements) -> Updater<T> {
        Updater {
            store: ModelStore::new(&config.models_dir),
            config,
            keys,
            active,
            target,
            events: context.events(),
            wake: announcements.listen(),
            shutdown: context.shutdown.clone(),
        }
    }
}

/// Why an attempt ended without a new model.
enum Outcome {
    /// Nothing new at the tag.
    Unchanged,
    /// The registry could not be reached or answered with an error status: try again next poll.
    Retry(RetryReason),
    /// An operator pinned a version: look again after `unpin`.
    Paused,
    /// The tag points at the release serving now (as at every start).
    Current,
    /// This release will never do: remember its digest and wait for another.
    Rejected { stated: Stated, reason: Rejection },
    Activated,
}

/// What failed this time but may work at the next poll.
#[derive(Debug, thiserror::Error)]
enum RetryReason {
    #[error(transparent)]
    Registry(RegistryError),
    #[error(transparent)]
    Staging(FileError),
    #[error("only {free} bytes free for a {total}-byte release; free disk space")]
    DiskFull { free: u64, total: u64 },
    #[error(transparent)]
    Install(StoreError),
    #[error("the inference thread has stopped")]
    InferenceStopped,
    #[error("the registry named {0}")]
    Store(StoreError),
}

/// Why a release is refused (for good, or until the active version changes);
/// its Display is the `model_rejected` event's reason.
#[derive(Debug, thiserror::Error)]
enum Rejection {
    #[error("the manifest's config is {0}, not a release record")]
    NotARecord(String),
    /// An answer that proves the release bad (`RegistryError::condemns_release`).
    #[error(transparent)]
    Registry(RegistryError),
    /// Bytes that did not match their digest download after download.
    #[error("{error} ({downloads} downloads in a row)")]
    Garbled { downloads: u32, error: RegistryError },
    #[error("the release has no signature layer")]
    NoSignature,
    #[error(transparent)]
    Release(ReleaseError),
    #[error("version {0} was rolled back by an operator; publish a newer version")]
    RolledBack(u64),
    #[error("the release is {total} bytes, over registry.max_model_bytes ({max})")]
    TooLarge { total: u64, max: u64 },
    /// Each repository holds one kind of release, and each kind serves in its own place.
    #[error("the release is a {release} ({name}), but this is the {repository}'s repository ({url_key}): publish {release}s to {}", url_key_of(*release))]
    WrongKind { release: ModelKind, name: String, repository: ModelKind, url_key: &'static str },

    #[error("the release has no layer for {0}")]
    NoLayer(String),
    #[error("the layer for {0} does not match the signed record")]
    LayerMismatch(String),
    #[error(transparent)]
    Invalid(ValidationError),
}

/// The config key of a kind's repository.
fn url_key_of(kind: ModelKind) -> &'static str {
    match kind {
        ModelKind::Classifier => "registry.url",
        ModelKind::Detector => "detector.registry.url",
    }
}

/// A refused release's name and version as its record states them (signed
/// or not), for the event; unknown before the record is read.
#[derive(Debug, Clone, Default, PartialEq)]
struct Stated {
    name: Option<String>,
    version: Option<u64>,
}

impl Stated {
    fn of(record: &ReleaseRecord) -> Stated {
        Stated { name: Some(record.name.clone()), version: Some(record.version) }
    }
}

impl Memory {
    /// A registry error while fetching the release at `digest`: refuse it
    /// if the error proves it bad, or after [`MAX_GARBLED`] garbled
    /// downloads of it in a row; anything else is tried again (with backoff).
    fn registry_failure(&mut self, digest: &str, error: RegistryError, stated: Stated) -> Outcome {
        if error.condemns_release() {
            return Outcome::Rejected { stated, reason: Rejection::Registry(error) };
        }
        if error.is_garbled() {
            let downloads = match &self.garbled {
                Some((d, n)) if d == digest => n + 1,
                _ => 1,
            };
            if downloads >= MAX_GARBLED {
                self.garbled = None;
                return Outcome::Rejected { stated, reason: Rejection::Garbled { downloads, error } };
            }
            self.garbled = Some((digest.to_string(), downloads));
        }
        Outcome::Retry(RetryReason::Registry(error))
    }
}

/// A release judged for good, so the tag's digest is not fetched again
/// while it stays put, unless the judgement depended on the active version.
#[derive(Debug, Clone, PartialEq)]
struct Judged {
    digest: String,
    /// The active version a "not newer" refusal was made against.
    against: Option<u64>,
}

impl Judged {
    fn covers(&self, digest: &str, active: u64) -> bool {
        self.digest == digest && self.against.is_none_or(|v| v == active)
    }
}

/// What the thread remembers between checks.
#[derive(Debug, Default)]
struct Memory {
    judged: Option<Judged>,
    /// The digest whose `model_downloading` was sent: once, not per retry.
    downloading: Option<String>,
    /// A release whose bytes did not match their digest, and how many times.
    garbled: Option<(String, u32)>,
}

/// The wait after the n-th transient failure in a row: 1 s doubling, at most `cap`.
fn backoff(failures: u32, cap: Duration) -> Duration {
    FIRST_RETRY.saturating_mul(1 << failures.saturating_sub(1).min(16)).min(cap)
}

impl<T: Target> Updater<T> {
    pub fn run(self) {
        let kind = self.target.kind();
        let span = tracing::info_span!("updater", model = %kind);
        let _entered = span.enter();
        let registry = match Registry::new(&self.config.url) {
            Ok(registry) => registry,
            Err(error) => return tracing::error!(%error, "model updates are off: fix {}", url_key_of(kind)),
        };
        let mut memory = Memory::default();
        let poll = Duration::from_secs(self.config.poll_seconds);
        let mut failures = 0u32;
        // Transient failures repeat at every retry: one line per minute, with the count.
        let retry_log = Throttle::new(Duration::from_secs(60));
        loop {
            let checked = Instant::now();
            let wait = match self.check(&registry, &mut memory) {
                Outcome::Retry(error) => {
                    failures = failures.saturating_add(1);
                    let wait = backoff(failures, poll);
                    if let Some(suppressed) = retry_log.allow() {
                        tracing::warn!(%error, url = %self.config.url, failures, retry_in_s = wait.as_secs(), suppressed, "cannot fetch the model release; will retry");
                    }
                    wait
                }
                outcome => {
                    if failures > 0 {
                        tracing::info!(failures, "the model registry answers again");
                    }
                    failures = 0;
                    if let Outcome::Rejected { stated, reason } = outcome {
                        tracing::warn!(name = stated.name.as_deref(), version = stated.version, %reason, "model release rejected; the current model keeps serving");
                        self.events.send_blocking(Event::ModelRejected {
                            model_kind: kind,
                            name: stated.name,
                            version: stated.version.map(|v| v.to_string()),
                            reason: reason.to_string(),
                        });
                    }
                    poll
                }
            };
            if self.wait(checked, wait) {
                return;
            }
        }
    }

    /// Until `checked + wait`, or an announcement (but not before
    /// `checked + MIN_CHECK_INTERVAL`), or shutdown (checked twice a
    /// second); true on shutdown.
    fn wait(&self, checked: Instant, wait: Duration) -> bool {
        let mut next = checked + wait;
        loop {
            if self.shutdown.is_triggered() {
                return true;
            }
            let left = next.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            match self.wake.recv_timeout(left.min(Duration::from_millis(500))) {
                Ok(()) => next = next.min(checked + MIN_CHECK_INTERVAL),
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                    if self.shutdown.sleep(left.min(Duration::from_millis(500))) {
                        return true;
                    }
                }
            }
        }
    }

    fn active_version(&self) -> u64 {
        self.active.read().map(|m| release::numeric_version(&m.version)).unwrap_or(0)
    }

    /// Whether this record is that of the installed release serving now:
    /// the same bytes as the active release's record (which was verified
    /// when it was loaded), and the model serving is its model.
    fn is_serving(&self, record_bytes: &[u8]) -> bool {
        if self.store.active_record_bytes().as_deref() != Some(record_bytes) {
            return false;
        }
        let Ok(record) = release::parse_record(record_bytes) else { return false };
        let Some(model) = record.file(&record.model_file) else { return false };
        self.active.read().is_ok_and(|m| m.name == record.name && m.version == record.version.to_string() && m.sha256 == model.sha256)
    }

    fn check(&self, registry: &Registry, memory: &mut Memory) -> Outcome {
        let digest = match registry.tag_digest(&self.config.tag) {
            Ok(Some(digest)) => digest,
            Ok(None) => return Outcome::Unchanged,
            Err(error) => return Outcome::Retry(RetryReason::Registry(error)),
        };
        let active = self.active_version();
        if memory.judged.as_ref().is_some_and(|j| j.covers(&digest, active)) {
            return Outcome::Unchanged;
        }
        let staging = match self.store.staging(&digest) {
            Ok(staging) => staging,
            Err(error) => return Outcome::Retry(RetryReason::Store(error)),
        };
        let outcome = self.try_release(registry, &digest, &staging, active, memory);
        if let Outcome::Rejected { .. } | Outcome::Current = outcome {
            let _ = std::fs::remove_dir_all(&staging);
        }
        match &outcome {
            Outcome::Retry(_) | Outcome::Paused => {}
            // Judged against this active version: a rollback makes them worth another look.
            Outcome::Rejected { reason: Rejection::Release(ReleaseError::NotNewer { .. }), .. } | Outcome::Current => {
                memory.judged = Some(Judged { digest: digest.clone(), against: Some(active) });
            }
            _ => memory.judged = Some(Judged { digest: digest.clone(), against: None }),
        }
        if !matches!(outcome, Outcome::Retry(_)) {
            memory.garbled = None;
        }
        match outcome {
            Outcome::Rejected { stated, reason } if self.store.reported() == Some((digest.clone(), active)) => {
                tracing::info!(version = stated.version, %reason, "model release refused again (reported before); the current model keeps serving");
                Outcome::Unchanged
            }
            Outcome::Rejected { stated, reason } => {
                if let Err(error) = self.store.set_reported(&digest, active) {
                    tracing::warn!(%error, "cannot note the refusal as reported: it is reported again after a restart");
                }
                Outcome::Rejected { stated, reason }
            }
            outcome => outcome,
        }
    }

    fn try_release(&self, registry: &Registry, digest: &str, staging: &Path, active: u64, memory: &mut Memory) -> Outcome {
        let rejected = |stated: Stated, reason: Rejection| Outcome::Rejected { stated, reason };
        let (manifest, _) = match registry.manifest(digest) {
            Ok(m) => m,
            Err(error) => return memory.registry_failure(digest, error, Stated::default()),
        };
        if manifest.config.media_type != RECORD_TYPE {
            return rejected(Stated::default(), Rejection::NotARecord(manifest.config.media_type));
        }
        let record_bytes = match registry.blob(&manifest.config, MAX_SMALL_BLOB) {
            Ok(bytes) => bytes,
            Err(error) => return memory.registry_failure(digest, error, Stated::default()),
        };
        let Some(signature_layer) = manifest.layers.iter().find(|l| l.media_type == SIGNATURE_TYPE) else {
            return rejected(Stated::default(), Rejection::NoSignature);
        };
        let signature = match registry.blob(signature_layer, MAX_SMALL_BLOB) {
            Ok(bytes) => bytes,
            Err(error) => return memory.registry_failure(digest, error, Stated::default()),
        };
        let record = match release::verify(&record_bytes, &signature, &self.keys, active) {
            Ok(record) => record,
            Err(ReleaseError::NotNewer { version, .. }) if version == active && self.is_serving(&record_bytes) => {
                tracing::debug!(version, "the release at the tag is the one serving");
                return Outcome::Current;
            }
            Err(reason) => {
                // For the event only: name and version as the (unverified) record states them.
                let stated = serde_json::from_slice::<ReleaseRecord>(&record_bytes).ok().map_or_else(Stated::default, |r| Stated::of(&r));
                return rejected(stated, Rejection::Release(reason));
            }
        };
        let stated = Stated::of(&record);
        // Signed, so what it says it is: a release of another kind would not
        // load here, or would serve in the wrong place.
        let kind = self.target.kind();
        if record.kind != kind {
            let reason = Rejection::WrongKind { release: record.kind, name: record.name.clone(), repository: kind, url_key: url_key_of(kind) };
            return rejected(stated.clone(), reason);
        }
        if self.store.refused().contains(&record.version) {
            return rejected(stated.clone(), Rejection::RolledBack(record.version));
        }
        if let Some(pinned) = self.store.pinned() {
            tracing::info!(pinned, release = record.version, "pinned by an operator: not installing (send cmd/unpin to allow updates)");
            return Outcome::Paused;
        }
        // Checked again here (verify did) so that no sum below can wrap.
        let total = match release::total_size(&record) {
            Ok(total) => total,
            Err(reason) => return rejected(stated.clone(), Rejection::Release(reason)),
        };
        if total > self.config.max_model_bytes {
            return rejected(stated.clone(), Rejection::TooLarge { total, max: self.config.max_model_bytes });
        }
        if memory.downloading.as_deref() != Some(digest) {
            tracing::info!(name = %record.name, version = record.version, "downloading a new model release");
            self.events.send_blocking(Event::ModelDownloading { model_kind: kind, name: record.name.clone(), version: record.version.to_string() });
            memory.downloading = Some(digest.to_string());
        }
        if let Err(e) = crate::util::fs::create_private_dir_all(staging) {
            return Outcome::Retry(RetryReason::Staging(e));
        }
        if let Some(free) = crate::util::fs::free_bytes(staging) {
            if total.checked_add(MIN_FREE_AFTER).is_none_or(|needed| free < needed) {
                return Outcome::Retry(RetryReason::DiskFull { free, total });
            }
        }
        for file in &record.files {
            let Some(layer) = manifest.layers.iter().find(|l| l.title() == Some(file.name.as_str())) else {
                return rejected(stated.clone(), Rejection::NoLayer(file.name.clone()));
            };
            if layer.digest != format!("sha256:{}", file.sha256) || layer.size != file.size {
                return rejected(stated.clone(), Rejection::LayerMismatch(file.name.clone()));
            }
            if let Err(error) = registry.blob_to_file(layer, &staging.join(&file.name)) {
                return memory.registry_failure(digest, error, stated.clone());
            }
        }
        // Before anything reads the files the spec names (labels, taxonomy).
        let spec = staging.join(&record.spec_file);
        let spec_text = match std::fs::read_to_string(&spec) {
            Ok(text) => text,
            Err(e) => return Outcome::Retry(RetryReason::Staging(FileError::new("read", &spec, e))),
        };
        if let Err(reason) = release::check_spec(&record, &spec_text) {
            return rejected(stated.clone(), Rejection::Release(reason));
        }
        self.events.send_blocking(Event::ModelVerified { model_kind: kind, name: record.name.clone(), version: record.version.to_string() });

        let model = match self.target.validate(staging, &record, &self.config) {
            Ok(model) => model,
            Err(reason) => return rejected(stated.clone(), Rejection::Invalid(reason)),
        };
        // What serves if this release fails probation: what is active now.
        let fallback = match self.target.has_probation() {
            true => match self.store.active(&self.keys) {
                Ok(active) => active,
                Err(error) => {
                    tracing::warn!(%error, "the active installed model does not verify; a failed probation falls back to the configured model");
                    None
                }
            },
            false => None,
        };
        let installed = match self.store.install(staging, &record_bytes, &signature, &record) {
            Ok(installed) => installed,
            Err(error) => return Outcome::Retry(RetryReason::Install(error)),
        };
        let identity = match self.target.hand_over(model, &record, &self.config, fallback) {
            Ok(identity) => identity,
            Err(_) => return Outcome::Retry(RetryReason::InferenceStopped),
        };
        tracing::info!(name = %identity.name, version = %identity.version, dir = %installed.dir.display(), "new model installed and handed to inference");
        Outcome::Activated
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_garbled_download_is_retried_and_refused_only_after_max_garbled_in_a_row() {
        let garbled = || RegistryError::DigestMismatch { digest: "sha256:00".into() };
        let version = |v: u64| Stated { name: Some("m".into()), version: Some(v) };
        let mut memory = Memory::default();
        for _ in 1..MAX_GARBLED {
            assert!(matches!(memory.registry_failure("sha256:a", garbled(), version(2)), Outcome::Retry(_)));
        }
        // Another release starts its own count.
        assert!(matches!(memory.registry_failure("sha256:b", garbled(), version(3)), Outcome::Retry(_)));
        for _ in 1..MAX_GARBLED - 1 {
            assert!(matches!(memory.registry_failure("sha256:b", garbled(), version(3)), Outcome::Retry(_)));
        }
        match memory.registry_failure("sha256:b", garbled(), version(3)) {
            Outcome::Rejected { stated: Stated { version: Some(3), .. }, reason } => {
                assert!(reason.to_string().contains("does not match its digest") && reason.to_string().contains("3 downloads in a row"), "{reason}")
            }
            _ => panic!("refused after {MAX_GARBLED} garbled downloads"),
        }
        let too_large = RegistryError::TooLarge { digest: "sha256:00".into(), size: 2, max: 1 };
        assert!(matches!(memory.registry_failure("sha256:c", too_large, Stated::default()), Outcome::Rejected { .. }));
    }
}
