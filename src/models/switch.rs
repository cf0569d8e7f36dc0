//! Operator choices among models this device has verified: roll back to
//! the previous one, pin a version (no automatic updates while pinned), or
//! unpin. The configured model counts as verified (the operator installed
//! it); installed releases are checked again before they are loaded.

use serde_json::{json, Value};
use std::sync::mpsc::SyncSender;

use crate::config::ModelConfig;
use crate::models::probation::ModelUpdate;
use crate::infer::{ActiveModel, Classifier};
use crate::models::store::{InstalledModel, ModelStore};
use crate::models::release::{numeric_version, PublicKey};

pub struct ModelSwitch {
    pub store: ModelStore,
    pub keys: Vec<PublicKey>,
    pub configured: ModelConfig,
    pub swap: SyncSender<ModelUpdate>,
    pub active: ActiveModel,
}

/// A model the device may serve: the configured one (None) or an installed release.
type Candidate = (u64, Option<InstalledModel>);

impl ModelSwitch {
    fn active_version(&self) -> u64 {
        self.active.read().map(|m| numeric_version(&m.version)).unwrap_or(0)
    }

    fn candidates(&self) -> Result<Vec<Candidate>, String> {
        let configured = crate::infer::ModelSpec::load(&self.configured.spec_path())?;
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
    pub fn rollback(&self) -> Result<Value, String> {
        let current = self.active_version();
        let candidates = self.candidates()?;
        let target = candidates.iter().rev().find(|(v, _)| *v < current).cloned().ok_or_else(|| {
            format!("no verified model older than the active version {current} on this device (available: {})", Self::versions(&candidates))
        })?;
        self.store.refuse(current)?;
        self.switch_to(target).map(|v| json!({"version": v, "rolled_back_from": current}))
    }

    /// Serve `version` and stop automatic updates until `unpin`.
    pub fn pin(&self, version: u64) -> Result<Value, String> {
        let candidates = self.candidates()?;
        let target = candidates.iter().find(|(v, _)| *v == version).cloned().ok_or_else(|| {
            format!("version {version} is not a verified model on this device (available: {})", Self::versions(&candidates))
        })?;
        self.store.set_pinned(Some(version))?;
        self.switch_to(target).map(|v| json!({"version": v, "pinned": true}))
    }

    pub fn unpin(&self) -> Result<Value, String> {
        self.store.set_pinned(None)?;
        Ok(json!({"pinned": false}))
    }

    fn switch_to(&self, (version, installed): Candidate) -> Result<u64, String> {
        let threads = self.configured.intra_threads;
        let classifier = match &installed {
            Some(m) => Classifier::load(&m.model_path(), &m.spec_path(), threads).map(|c| c.with_version(version.to_string())),
            None => Classifier::load(&self.configured.path, &self.configured.spec_path(), threads),
        }
        .map_err(|e| format!("version {version} does not load: {e}"))?;
        self.store.set_active(installed.as_ref())?;
        self.swap.send(ModelUpdate { classifier, probation: None }).map_err(|_| "the inference thread has stopped".to_string())?;
        Ok(version)
    }
}
