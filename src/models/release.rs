//! The signed release record: what the trainer vouches for, in exact bytes,
//! with a detached ed25519 signature. The agent trusts a model only through
//! a record signed by a key pinned in its config, and checks every file
//! against the record's sha256 and size.
//!
//! Key files are one line: `ed25519-public <key_id> <base64>` and
//! `ed25519-secret <key_id> <base64>` (the 32-byte seed).

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

pub const RECORD_SCHEMA: u32 = 1;

/// Why a key file or a release record is not accepted. Each says what to do.
#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    #[error("cannot read /dev/urandom: {0}")]
    Random(std::io::Error),
    #[error("cannot read key file {}: {source}", path.display())]
    KeyRead { path: PathBuf, source: std::io::Error },
    #[error("{} is not a `{kind} <key_id> <base64>` key file", path.display())]
    KeyFormat { path: PathBuf, kind: &'static str },
    #[error("{}: bad base64: {source}", path.display())]
    KeyBase64 { path: PathBuf, source: base64::DecodeError },
    #[error("{}: the key is not 32 bytes", path.display())]
    KeyLength { path: PathBuf },
    #[error("{}: not an ed25519 public key: {source}", path.display())]
    NotPublicKey { path: PathBuf, source: ed25519_dalek::SignatureError },
    #[error("the release record is not valid JSON for schema {RECORD_SCHEMA}: {0}", RECORD_SCHEMA = RECORD_SCHEMA)]
    Malformed(serde_json::Error),
    #[error("release record schema {schema} is not {RECORD_SCHEMA}; upgrade the agent", RECORD_SCHEMA = RECORD_SCHEMA)]
    Schema { schema: u32 },
    #[error("signed by key \"{key_id}\", which is not among the pinned keys (registry.public_keys); pin the trainer's public key")]
    UnknownKey { key_id: String },
    #[error("the signature is not 64 bytes")]
    SignatureLength,
    #[error("the signature does not match the record (key \"{key_id}\"): the record or signature was altered")]
    BadSignature { key_id: String },
    #[error("the record names {name} but does not list it in files")]
    Unlisted { name: String },
    #[error("a file name in the record is not a plain file name")]
    FileName,
    #[error("expires_at {expires_at:?}: {source}")]
    ExpiryFormat { expires_at: String, source: humantime::TimestampError },
    #[error("the release expired at {expires_at}; the trainer must sign a fresh record")]
    Expired { expires_at: String },
    /// Never a version at or below the active one: that would be a replay.
    #[error("version {version} is not newer than the active version {active} (a replay of an old release?)")]
    NotNewer { version: u64, active: u64 },
    #[error("needs agent {required} or newer; this is {agent}", agent = crate::AGENT_VERSION)]
    AgentTooOld { required: String },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseRecord {
    pub schema: u32,
    /// The model's name; also the announcement topic's last level.
    pub name: String,
    /// Only ever increasing: the agent refuses a version not above its active one.
    pub version: u64,
    pub created_at: String,
    pub expires_at: String,
    pub min_agent_version: String,
    /// The ONNX file, its spec (`.toml`) and whatever the spec names (labels, taxonomy).
    pub files: Vec<FileRecord>,
    /// Which of `files` is the model and which its spec.
    pub model_file: String,
    pub spec_file: String,
    /// The model's input tensor shape, as the trainer exported it (e.g. [1, 3, 224, 224]; -1 = any).
    pub input_shape: Vec<i64>,
    /// Number of classes the model outputs (= lines in the labels file).
    pub output_classes: usize,
    /// One of `files`: a golden set (`GoldenSet` JSON) the model must pass on the device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub golden_file: Option<String>,
    pub key_id: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRecord {
    pub name: String,
    pub sha256: String,
    pub size: u64,
}

impl ReleaseRecord {
    pub fn file(&self, name: &str) -> Option<&FileRecord> {
        self.files.iter().find(|f| f.name == name)
    }
}

/// Labelled images a release must classify well enough before it serves.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GoldenSet {
    /// Share of samples that must get their road class, 0–1.
    pub min_accuracy: f32,
    pub samples: Vec<GoldenSample>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GoldenSample {
    /// An image file, relative to the golden set file (a plain name inside a release).
    pub image: String,
    /// The road class it must get.
    pub class: String,
}

pub struct SecretKey {
    pub key_id: String,
    key: SigningKey,
}

#[derive(Clone)]
pub struct PublicKey {
    pub key_id: String,
    key: VerifyingKey,
}

impl SecretKey {
    /// A new key from the operating system's random source.
    pub fn generate(key_id: &str) -> Result<SecretKey, ReleaseError> {
        let mut seed = [0u8; 32];
        use std::io::Read;
        std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut seed)).map_err(ReleaseError::Random)?;
        Ok(SecretKey { key_id: key_id.to_string(), key: SigningKey::from_bytes(&seed) })
    }

    pub fn load(path: &Path) -> Result<SecretKey, ReleaseError> {
        let (key_id, bytes) = read_key_file(path, "ed25519-secret")?;
        let seed: [u8; 32] = bytes.try_into().map_err(|_| ReleaseError::KeyLength { path: path.to_path_buf() })?;
        Ok(SecretKey { key_id, key: SigningKey::from_bytes(&seed) })
    }

    pub fn to_file_text(&self) -> String {
        format!("ed25519-secret {} {}\n", self.key_id, BASE64.encode(self.key.to_bytes()))
    }

    pub fn public(&self) -> PublicKey {
        PublicKey { key_id: self.key_id.clone(), key: self.key.verifying_key() }
    }

    pub fn sign(&self, bytes: &[u8]) -> Vec<u8> {
        self.key.sign(bytes).to_bytes().to_vec()
    }
}

impl PublicKey {
    pub fn load(path: &Path) -> Result<PublicKey, ReleaseError> {
        let (key_id, bytes) = read_key_file(path, "ed25519-public")?;
        let bytes: [u8; 32] = bytes.try_into().map_err(|_| ReleaseError::KeyLength { path: path.to_path_buf() })?;
        let key = VerifyingKey::from_bytes(&bytes).map_err(|source| ReleaseError::NotPublicKey { path: path.to_path_buf(), source })?;
        Ok(PublicKey { key_id, key })
    }

    pub fn to_file_text(&self) -> String {
        format!("ed25519-public {} {}\n", self.key_id, BASE64.encode(self.key.to_bytes()))
    }
}

fn read_key_file(path: &Path, kind: &'static str) -> Result<(String, Vec<u8>), ReleaseError> {
    let text = std::fs::read_to_string(path).map_err(|source| ReleaseError::KeyRead { path: path.to_path_buf(), source })?;
    let parts: Vec<&str> = text.split_whitespace().collect();
    match parts.as_slice() {
        [k, key_id, data] if *k == kind => {
            let bytes = BASE64.decode(data).map_err(|source| ReleaseError::KeyBase64 { path: path.to_path_buf(), source })?;
            Ok((key_id.to_string(), bytes))
        }
        _ => Err(ReleaseError::KeyFormat { path: path.to_path_buf(), kind }),
    }
}

/// Checks a new release: signature by a pinned key, not expired, newer than
/// `active_version`, this agent new enough. Each error says what to do.
pub fn verify(record_bytes: &[u8], signature: &[u8], keys: &[PublicKey], active_version: u64) -> Result<ReleaseRecord, ReleaseError> {
    let record = verify_signature(record_bytes, signature, keys)?;
    let expires = humantime::parse_rfc3339(&record.expires_at)
        .map_err(|source| ReleaseError::ExpiryFormat { expires_at: record.expires_at.clone(), source })?;
    if expires <= SystemTime::now() {
        return Err(ReleaseError::Expired { expires_at: record.expires_at });
    }
    if record.version <= active_version {
        return Err(ReleaseError::NotNewer { version: record.version, active: active_version });
    }
    if version_tuple(crate::AGENT_VERSION) < version_tuple(&record.min_agent_version) {
        return Err(ReleaseError::AgentTooOld { required: record.min_agent_version });
    }
    Ok(record)
}

/// The record, if a pinned key signed these exact bytes and it is well formed
/// (all an installed model needs at start: it may have expired since).
pub fn verify_signature(record_bytes: &[u8], signature: &[u8], keys: &[PublicKey]) -> Result<ReleaseRecord, ReleaseError> {
    let record: ReleaseRecord = serde_json::from_slice(record_bytes).map_err(ReleaseError::Malformed)?;
    if record.schema != RECORD_SCHEMA {
        return Err(ReleaseError::Schema { schema: record.schema });
    }
    let key = keys.iter().find(|k| k.key_id == record.key_id).ok_or_else(|| ReleaseError::UnknownKey { key_id: record.key_id.clone() })?;
    let signature: [u8; 64] = signature.try_into().map_err(|_| ReleaseError::SignatureLength)?;
    key.key
        .verify(record_bytes, &Signature::from_bytes(&signature))
        .map_err(|_| ReleaseError::BadSignature { key_id: record.key_id.clone() })?;
    for name in [&record.model_file, &record.spec_file].into_iter().chain(&record.golden_file) {
        if record.file(name).is_none() {
            return Err(ReleaseError::Unlisted { name: name.clone() });
        }
    }
    if record.files.iter().any(|f| f.name.contains('/') || f.name.starts_with('.') || f.name.is_empty()) {
        return Err(ReleaseError::FileName);
    }
    Ok(record)
}

fn version_tuple(version: &str) -> Vec<u64> {
    version.split(['.', '-']).map_while(|p| p.parse().ok()).collect()
}

/// A model's version as a number; a spec's free-text version counts as 0
/// unless it is a plain integer.
pub fn numeric_version(version: &str) -> u64 {
    version.trim().parse().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(version: u64, expires_at: &str, key_id: &str) -> Vec<u8> {
        let file = FileRecord { name: "m.onnx".into(), sha256: "00".into(), size: 1 };
        let spec = FileRecord { name: "m.toml".into(), sha256: "00".into(), size: 1 };
        serde_json::to_vec(&ReleaseRecord {
            schema: 1,
            name: "m".into(),
            version,
            created_at: "2026-01-01T00:00:00Z".into(),
            expires_at: expires_at.into(),
            min_agent_version: "0.1.0".into(),
            files: vec![file, spec],
            model_file: "m.onnx".into(),
            spec_file: "m.toml".into(),
            input_shape: vec![1, 3, 224, 224],
            output_classes: 1000,
            golden_file: None,
            key_id: key_id.into(),
        })
        .unwrap()
    }

    #[test]
    fn a_record_signed_by_a_pinned_key_passes_and_every_alteration_fails() {
        let trainer = SecretKey::generate("trainer").unwrap();
        let other = SecretKey::generate("trainer").unwrap();
        let keys = [trainer.public()];
        let bytes = record(2, "2999-01-01T00:00:00Z", "trainer");
        let signature = trainer.sign(&bytes);
        assert_eq!(verify(&bytes, &signature, &keys, 1).unwrap().version, 2);

        let mut altered = bytes.clone();
        let at = altered.len() - 3;
        altered[at] ^= 1;
        assert!(verify(&altered, &signature, &keys, 1).is_err());
        let err = verify(&bytes, &other.sign(&bytes), &keys, 1).unwrap_err();
        assert!(matches!(err, ReleaseError::BadSignature { .. }) && err.to_string().contains("does not match"), "{err}");
        let unknown = record(2, "2999-01-01T00:00:00Z", "someone");
        let err = verify(&unknown, &trainer.sign(&unknown), &keys, 1).unwrap_err();
        assert!(matches!(err, ReleaseError::UnknownKey { .. }) && err.to_string().contains("not among the pinned keys"), "{err}");
        let expired = record(2, "2020-01-01T00:00:00Z", "trainer");
        let err = verify(&expired, &trainer.sign(&expired), &keys, 1).unwrap_err();
        assert!(matches!(err, ReleaseError::Expired { .. }) && err.to_string().contains("expired"), "{err}");
        let err = verify(&bytes, &signature, &keys, 2).unwrap_err();
        assert!(matches!(err, ReleaseError::NotNewer { version: 2, active: 2 }) && err.to_string().contains("not newer"), "{err}");
    }

    #[test]
    fn key_files_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let key = SecretKey::generate("k1").unwrap();
        std::fs::write(dir.path().join("k1.key"), key.to_file_text()).unwrap();
        std::fs::write(dir.path().join("k1.pub"), key.public().to_file_text()).unwrap();
        let loaded = SecretKey::load(&dir.path().join("k1.key")).unwrap();
        let public = PublicKey::load(&dir.path().join("k1.pub")).unwrap();
        let bytes = record(5, "2999-01-01T00:00:00Z", "k1");
        assert!(verify(&bytes, &loaded.sign(&bytes), &[public], 0).is_ok());
    }
}
