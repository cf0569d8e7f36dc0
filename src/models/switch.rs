//! Operator choices among models this device has verified: roll back to
//! the previous one, pin a version (no automatic updates while pinned), or
//! unpin. The configured model counts as verified (the operator installed
//! it); installed releases are checked again before they are loaded.

use std::sync::mpsc::SyncSender;

use crate::config::ModelConfig;
use crate::context::Context;
use crate::models::probation::ModelUpdate;
use crate::infer::{ActiveModel, Classifier, ModelError};
use crate::models::store::{InstalledModel, ModelStore, StoreError};
use crate::models::release::{numeric_version, PublicKey};
use crate::wire::messages::ModelChoice;

pub struct ModelSwitch {
    store: ModelStore,
    keys: Vec<PublicKey>,
    configured: ModelConfig,
    swap: SyncSender<ModelUpdate>,
    active: ActiveModel,
}

/// A model the device may serve: the configured one (None) or an installed release.
type Candidate = (u64, Option<InstalledModel>);

/// Why a rollback, pin or unpin changed nothing (the reply says so).
#[derive(Debug, thiserror::Error)]
pub enum SwitchError {
    /// The configured model's spec, read for its version.
    #[error(transparent)]
    ConfiguredSpec(ModelError),
    #[error("no verified model older than the active version {current} on this device (available: {available})")]
    NothingOlder { current: u64, available: String },
    #[error("version {version} is not a verified model on this device (available: {available})")]
    NotVerified { version: u64, available: String },
    #[error("version {version} does not load: {source}")]
    Load { version: u64, source: ModelError },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the inference thread has stopped")]
    InferenceStopped,
}

impl ModelSwitch {
    /// Chooses among the releases in `models_dir` and the `configured` model;
    /// a choice goes to the inference thread through `swap`.
    pub fn new(context: &Context, models_dir: &std::path::Path, keys: Vec<PublicKey>, configured: ModelConfig, swap: SyncSender<ModelUpdate>) -> ModelSwitch {
        ModelSwitch { store: ModelStore::new(models_dir), keys, configured, swap, active: context.active_model.clone() }
    }

    fn active_version(&self) -> u64 {
        self.active.read().map(|m| numeric_version(&m.version)).unwrap_or(0)
    }

    fn candidates(&self) -> Result<Vec<Candidate>, SwitchError> {
        let configured = crate::infer::ModelSpec::load(&self.configured.spec_path()).map_err(|e| SwitchError::ConfiguredSpec(ModelError::Spec(e)))?;
        let mut all: Vec<Candidate> = vec![(numeric_version(&configured.version), None)];
        all.extend(self.store.installed(&self.keys).into_iter().map(|m| (m.record.version, Some(m))));
        all.sort_by_key(|(v, _)| *v);
        Ok(all)
    }

    fn versions(candidates: &[Candidate]) -> String {
        candidates.iter().map(|(v, _)| v.to_string()).collect::<Vec<_>>().join(", ")
    }

    /// Back to the newest verified model older than the active one; the
    /// active version is never installed again automatically.
    pub fn rollback(&self) -> Result<ModelChoice, SwitchError> {
        let current = self.active_version();
        let candidates = self.candidates()?;
        let target = candidates
            .iter()
            .rev()
            .find(|(v, _)| *v < current)
            .cloned()
            .ok_or_else(|| SwitchError::NothingOlder { current, available: Self::versions(&candidates) })?;
        self.store.refuse(current)?;
        self.switch_to(target).map(|v| ModelChoice { version: Some(v), rolled_back_from: Some(current), pinned: None })
    }

    /// Serve `version` and stop automatic updates until `unpin`.
    pub fn pin(&self, version: u64) -> Result<ModelChoice, SwitchError> {
        let candidates = self.candidates()?;
        let target = candidates
            .iter()
            .find(|(v, _)| *v == version)
            .cloned()
            .ok_or_else(|| SwitchError::NotVerified { version, available: Self::versions(&candidates) })?;
        self.store.set_pinned(Some(version))?;
        self.switch_to(target).map(|v| ModelChoice { version: Some(v), pinned: Some(true), ..Default::default() })
    }

    pub fn unpin(&self) -> Result<ModelChoice, SwitchError> {
        self.store.set_pinned(None)?;
        Ok(ModelChoice { pinned: Some(false), ..Default::default() })
    }

    fn switch_to(&self, (version, installed): Candidate) -> Result<u64, SwitchError> {
        let threads = self.configured.intra_threads;
        let classifier = match &installed {
            Some(m) => Classifier::load(&m.model_path(), &m.spec_path(), threads).map(|c| c.with_version(version.to_string())),
            None => Classifier::load(&self.configured.path, &self.configured.spec_path(), threads),
        }
        .map_err(|source| SwitchError::Load { version, source })?;
        self.store.set_active(installed.as_ref())?;
        self.swap.send(ModelUpdate { classifier, probation: None }).map_err(|_| SwitchError::InferenceStopped)?;
        Ok(version)
    }
}
