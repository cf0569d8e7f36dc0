//! Installed models on the device: `<models_dir>/<name>-<version>/` holds a
//! release's files, its record and signature; `<models_dir>/active` names the
//! one to serve. A folder is complete before it gets its final name, and
//! `active` is replaced atomically, so after a crash at any moment the agent
//! finds either the old model or the new one, never half of one.

use std::path::{Path, PathBuf};

use crate::util::fs::{copy_private, create_private_dir_all, write_atomically};
use crate::models::release::{self, PublicKey, ReleaseError, ReleaseRecord};
use crate::util::fs::{sha256_file, FileError};

const ACTIVE: &str = "active";
/// Versions an operator rolled back from: never installed again.
const REFUSED: &str = "refused";
/// A version an operator pinned: no automatic updates while it exists.
const PINNED: &str = "pinned";
const RECORD: &str = "release.json";
const SIGNATURE: &str = "release.sig";
/// The last refusal sent as `model_rejected` (manifest digest and the active
/// version it was judged against), so a restart does not report it again.
const REPORTED: &str = "reported";
const STAGING: &str = "staging";
/// Names the store writes, beside a release's files or beside its folders:
/// no release file may take one (`release::check_record`).
pub const RESERVED_NAMES: &[&str] = &[ACTIVE, REFUSED, PINNED, RECORD, SIGNATURE, REPORTED, STAGING];

pub struct ModelStore {
    dir: PathBuf,
}

/// Why an installed release cannot be used or a change to the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    File(#[from] FileError),
    /// The installed record or signature no longer verifies.
    #[error(transparent)]
    Release(#[from] ReleaseError),
    #[error("{} does not match its release record: the installed model was altered; the configured model serves until a new release installs", path.display())]
    Altered { path: PathBuf },
    #[error("cannot rename {} to {}: {source}", from.display(), to.display())]
    Rename { from: PathBuf, to: PathBuf, source: std::io::Error },
    /// A name that would make a path outside the models folder: refused
    /// here too, whatever checked it before (defence in depth).
    #[error("{name:?} is not a plain name inside the models folder; nothing was written")]
    OutsideModels { name: String },
}

/// A verified, installed release.
#[derive(Debug, Clone)]
pub struct InstalledModel {
    pub dir: PathBuf,
    pub record: ReleaseRecord,
}

impl InstalledModel {
    pub fn model_path(&self) -> PathBuf {
        self.dir.join(&self.record.model_file)
    }

    pub fn spec_path(&self) -> PathBuf {
        self.dir.join(&self.record.spec_file)
    }
}

impl ModelStore {
    pub fn new(dir: &Path) -> ModelStore {
        ModelStore { dir: dir.to_path_buf() }
    }

    /// Where a release's files are downloaded (kept across restarts, so a
    /// download resumes).
    /// The digest comes from the registry: anything but `sha256:<64 hex>`
    /// gets no folder at all.
    pub fn staging(&self, manifest_digest: &str) -> Result<PathBuf, StoreError> {
        if !super::registry::is_digest(manifest_digest) {
            return Err(StoreError::OutsideModels { name: manifest_digest.chars().take(80).collect() });
        }
        Ok(self.dir.join(STAGING).join(manifest_digest.trim_start_matches("sha256:")))
    }

    /// `<models_dir>/<name>`, if `name` is a plain name (no `/`, no `..`, not absolute).
    fn inside(&self, name: &str) -> Result<PathBuf, StoreError> {
        release::check_name("installed release", name).map_err(|_| StoreError::OutsideModels { name: name.chars().take(80).collect() })?;
        Ok(self.dir.join(name))
    }

    /// The active model, checked again: signature by a pinned key and every
    /// file's sha256. None when nothing was installed yet.
    pub fn active(&self, keys: &[PublicKey]) -> Result<Option<InstalledModel>, StoreError> {
        let name = match std::fs::read_to_string(self.dir.join(ACTIVE)) {
            Ok(name) => name.trim().to_string(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(FileError::new("read", &self.dir.join(ACTIVE), e).into()),
        };
        self.check(&self.inside(&name)?, keys).map(Some)
    }

    /// The record bytes of the active installed release, unchecked (to
    /// recognise the same release at the tag; `active` checks it).
    pub fn active_record_bytes(&self) -> Option<Vec<u8>> {
        let name = std::fs::read_to_string(self.dir.join(ACTIVE)).ok()?;
        std::fs::read(self.inside(name.trim()).ok()?.join(RECORD)).ok()
    }

    /// Signature and files of the release installed in `dir`.
    fn check(&self, dir: &Path, keys: &[PublicKey]) -> Result<InstalledModel, StoreError> {
        let dir = dir.to_path_buf();
        let read = |file: &str| std::fs::read(dir.join(file)).map_err(FileError::at("read", &dir.join(file)));
        let record = release::verify_signature(&read(RECORD)?, &read(SIGNATURE)?, keys)?;
        for file in &record.files {
            let path = dir.join(&file.name);
            let size = std::fs::metadata(&path).map_err(FileError::at("read", &path))?.len();
            if size != file.size || sha256_file(&path)? != file.sha256 {
                return Err(StoreError::Altered { path });
            }
        }
        // Installed before spec paths were checked: refused at start as well.
        let spec = dir.join(&record.spec_file);
        let spec_text = std::fs::read_to_string(&spec).map_err(FileError::at("read", &spec))?;
        release::check_spec(&record, &spec_text)?;
        Ok(InstalledModel { dir, record })
    }

    /// Every installed release that still checks out, by version.
    pub fn installed(&self, keys: &[PublicKey]) -> Vec<InstalledModel> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else { return Vec::new() };
        let mut found: Vec<InstalledModel> = entries
            .filter_map(|e| e.ok())
            .filter(|e| e.path().is_dir() && !e.file_name().to_string_lossy().ends_with(".partial") && e.file_name() != STAGING)
            .filter_map(|e| self.check(&e.path(), keys).map_err(|error| tracing::warn!(%error, "installed model skipped")).ok())
            .collect();
        found.sort_by_key(|m| m.record.version);
        found
    }

    /// Serve `model` from the next start on (None: the configured model).
    pub fn set_active(&self, model: Option<&InstalledModel>) -> Result<(), StoreError> {
        match model {
            Some(model) => {
                let name = model.dir.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
                Ok(write_atomically(&self.dir.join(ACTIVE), name.as_bytes())?)
            }
            None => match std::fs::remove_file(self.dir.join(ACTIVE)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(FileError::new("remove", &self.dir.join(ACTIVE), e).into()),
                _ => Ok(()),
            },
        }
    }

    pub fn refused(&self) -> Vec<u64> {
        std::fs::read_to_string(self.dir.join(REFUSED)).unwrap_or_default().split_whitespace().filter_map(|v| v.parse().ok()).collect()
    }

    pub fn refuse(&self, version: u64) -> Result<(), StoreError> {
        let mut refused = self.refused();
        refused.push(version);
        create_private_dir_all(&self.dir)?;
        let text: Vec<String> = refused.iter().map(u64::to_string).collect();
        Ok(write_atomically(&self.dir.join(REFUSED), text.join("\n").as_bytes())?)
    }

    /// The refusal last reported: (manifest digest, active version).
    pub fn reported(&self) -> Option<(String, u64)> {
        let text = std::fs::read_to_string(self.dir.join(REPORTED)).ok()?;
        let (digest, active) = text.trim().split_once(' ')?;
        Some((digest.to_string(), active.parse().ok()?))
    }

    pub fn set_reported(&self, digest: &str, active: u64) -> Result<(), StoreError> {
        create_private_dir_all(&self.dir)?;
        Ok(write_atomically(&self.dir.join(REPORTED), format!("{digest} {active}").as_bytes())?)
    }

    pub fn pinned(&self) -> Option<u64> {
        std::fs::read_to_string(self.dir.join(PINNED)).ok()?.trim().parse().ok()
    }

    pub fn set_pinned(&self, version: Option<u64>) -> Result<(), StoreError> {
        match version {
            Some(v) => {
                create_private_dir_all(&self.dir)?;
                Ok(write_atomically(&self.dir.join(PINNED), v.to_string().as_bytes())?)
            }
            None => {
                let _ = std::fs::remove_file(self.dir.join(PINNED));
                Ok(())
            }
        }
    }

    /// Moves a verified, validated release from `staging` into its folder and
    /// makes it the active one.
    pub fn install(&self, staging: &Path, record_bytes: &[u8], signature: &[u8], record: &ReleaseRecord) -> Result<InstalledModel, StoreError> {
        let name = format!("{}-{}", record.name, record.version);
        // Every path below is checked to be a plain name in the models folder
        // before anything is removed or written.
        let dir = self.inside(&name)?;
        let partial = self.inside(&format!("{name}.partial"))?;
        for file in &record.files {
            release::check_name("file name", &file.name).map_err(|_| StoreError::OutsideModels { name: file.name.chars().take(80).collect() })?;
        }
        create_private_dir_all(&self.dir)?;
        let _ = std::fs::remove_dir_all(&partial);
        create_private_dir_all(&partial)?;
        for file in &record.files {
            let copied = partial.join(&file.name);
            copy_private(&staging.join(&file.name), &copied)?;
        }
        write_atomically(&partial.join(RECORD), record_bytes)?;
        write_atomically(&partial.join(SIGNATURE), signature)?;
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::rename(&partial, &dir).map_err(|source| StoreError::Rename { from: partial.clone(), to: dir.clone(), source })?;
        write_atomically(&self.dir.join(ACTIVE), name.as_bytes())?;
        let _ = std::fs::remove_dir_all(staging);
        Ok(InstalledModel { dir, record: record.clone() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::release::FileRecord;

    fn record(name: &str, file: &str) -> ReleaseRecord {
        ReleaseRecord {
            schema: 1,
            name: name.into(),
            kind: Default::default(),
            version: 2,
            created_at: String::new(),
            expires_at: String::new(),
            min_agent_version: "0.1.0".into(),
            files: vec![FileRecord { name: file.into(), sha256: "0".repeat(64), size: 1 }],
            model_file: file.into(),
            spec_file: file.into(),
            input_shape: vec![],
            output_classes: 1,
            golden_file: None,
            key_id: "k".into(),
        }
    }

    /// Even a record that skipped verification cannot make install touch a
    /// path outside the models folder.
    #[test]
    fn install_refuses_names_outside_the_models_folder_and_touches_nothing_there() {
        let root = tempfile::tempdir().unwrap();
        let models = root.path().join("state/models");
        let staging = root.path().join("staging");
        std::fs::create_dir_all(&staging).unwrap();
        std::fs::write(staging.join("m.onnx"), b"m").unwrap();
        // What `../../victim` and an absolute name would have replaced.
        let victim = root.path().join("victim-2");
        std::fs::create_dir_all(&victim).unwrap();
        std::fs::write(victim.join("keep"), b"precious").unwrap();
        let store = ModelStore::new(&models);
        let absolute = format!("{}/victim", root.path().display());
        for (name, file) in [("../../victim", "m.onnx"), (absolute.as_str(), "m.onnx"), ("ok", "../m.onnx"), ("ok", "/etc/passwd")] {
            let err = store.install(&staging, b"{}", b"sig", &record(name, file)).unwrap_err();
            assert!(matches!(err, StoreError::OutsideModels { .. }), "{name} {file}: {err}");
        }
        assert_eq!(std::fs::read(victim.join("keep")).unwrap(), b"precious");
        assert_eq!(std::fs::read_dir(&victim).unwrap().count(), 1);
        assert!(!models.join(ACTIVE).exists() && !root.path().join("active").exists());
        assert!(matches!(store.staging("sha256:../../x"), Err(StoreError::OutsideModels { .. })));

        // A plain name installs, owner-only.
        use std::os::unix::fs::PermissionsExt;
        let installed = store.install(&staging, b"{}", b"sig", &record("road", "m.onnx")).unwrap();
        assert_eq!(installed.dir, models.join("road-2"));
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!((mode(&models), mode(&installed.dir)), (0o700, 0o700));
        for file in ["m.onnx", RECORD, SIGNATURE] {
            assert_eq!(mode(&installed.dir.join(file)), 0o600, "{file}");
        }
        assert_eq!(mode(&models.join(ACTIVE)), 0o600);
        std::fs::write(models.join(ACTIVE), "../../victim-2").unwrap();
        assert!(matches!(store.active(&[]), Err(StoreError::OutsideModels { .. })));
    }

    /// A release installed before spec paths were checked, whose spec names
    /// a file outside its folder, is not served at start.
    #[test]
    fn an_installed_release_whose_spec_names_an_outside_file_is_refused_at_start() {
        let root = tempfile::tempdir().unwrap();
        let models = root.path().join("models");
        let dir = models.join("road-2");
        std::fs::create_dir_all(&dir).unwrap();
        let bundled = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/models/efficientnet_lite0.toml")).unwrap();
        let spec = bundled.replace("labels = \"imagenet_labels.txt\"", "labels = \"/tmp/x/labels.txt\"");
        let mut record = record("road", "m.onnx");
        record.spec_file = "m.toml".into();
        record.files.clear();
        for (name, bytes) in [("m.onnx", b"model".as_slice()), ("m.toml", spec.as_bytes()), ("road_taxonomy.toml", b"t")] {
            std::fs::write(dir.join(name), bytes).unwrap();
            let sha256 = crate::models::registry::sha256_digest(bytes).trim_start_matches("sha256:").to_string();
            record.files.push(FileRecord { name: name.into(), sha256, size: bytes.len() as u64 });
        }
        let key = release::SecretKey::generate("k").unwrap();
        let bytes = serde_json::to_vec(&record).unwrap();
        std::fs::write(dir.join(RECORD), &bytes).unwrap();
        std::fs::write(dir.join(SIGNATURE), key.sign(&bytes)).unwrap();
        std::fs::write(models.join(ACTIVE), "road-2").unwrap();
        let store = ModelStore::new(&models);
        let err = store.active(&[key.public()]).unwrap_err();
        assert!(matches!(err, StoreError::Release(ReleaseError::SpecPathNotPlain { key: "labels", .. })), "{err}");
        assert!(store.installed(&[key.public()]).is_empty());
    }
}
