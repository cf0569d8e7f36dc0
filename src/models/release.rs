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

use crate::infer::spec::ModelKind;

pub const RECORD_SCHEMA: u32 = 1;
/// Longest model name, file name or key id a release may carry.
pub const MAX_NAME_LEN: usize = 64;
/// Largest release version: JSON's safe integers (2^53 − 1), so that every
/// consumer reads a version exactly, whatever its JSON library; the same
/// bound as a model spec's version.
pub use crate::infer::spec::MAX_VERSION;
/// Most files a release may list (model, spec, labels, taxonomy, golden set and its images).
pub const MAX_FILES: usize = 256;

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
    /// A name that would reach a path: the model's (its folder), a file's, a key id.
    #[error("the {what} {name:?} is not a plain name: use 1 to {MAX_NAME_LEN} of A-Z a-z 0-9 . _ -, not starting with a dot", MAX_NAME_LEN = MAX_NAME_LEN)]
    Name { what: &'static str, name: String },
    #[error("version {version} is outside 1 to {MAX_VERSION} (JSON's safe integers); publish a version in that range", MAX_VERSION = MAX_VERSION)]
    Version { version: u64 },
    #[error("the record lists {count} files, more than {MAX_FILES}", MAX_FILES = MAX_FILES)]
    TooManyFiles { count: usize },
    #[error("the record lists {name} twice")]
    DuplicateFile { name: String },
    #[error("the sha256 of {name} in the record is not 64 lowercase hex digits")]
    Sha256Format { name: String },
    /// Sizes chosen to wrap around a u64 sum and slip under the size limits.
    #[error("the file sizes in the record add up to more than 2^64 bytes")]
    SizeOverflow,
    #[error("expires_at {expires_at:?}: {source}")]
    ExpiryFormat { expires_at: String, source: humantime::TimestampError },
    #[error("the release expired at {expires_at}; the trainer must sign a fresh record")]
    Expired { expires_at: String },
    /// Never a version at or below the active one: that would be a replay.
    #[error("version {version} is not newer than the active version {active} (a replay of an old release?)")]
    NotNewer { version: u64, active: u64 },
    #[error("needs agent {required} or newer; this is {agent}", agent = crate::AGENT_VERSION)]
    AgentTooOld { required: String },
    /// A version no comparison can place (`v9.0.0`, `latest`) must not pass as "old enough".
    #[error("min_agent_version {value:?} is not a version: write 1 to 3 numbers separated by dots (e.g. 0.1.0)")]
    AgentVersionFormat { value: String },
    /// The store keeps its own files under these names: a release file so
    /// named would be overwritten, fail its sha256 and be fetched at every start.
    #[error("the file name {name:?} is reserved for the agent's model store; rename the file")]
    ReservedName { name: String },
    #[error("the release's spec {spec} is not a valid model spec: {reason}")]
    SpecInvalid { spec: String, reason: String },
    /// Every file the spec names is read at every start, so it must be one
    /// of the release's own (sha256-verified) files, beside the spec.
    #[error("the spec's {key} = {path:?} is not a plain file name: a release's spec may name only files of the release, by their plain name")]
    SpecPathNotPlain { key: &'static str, path: String },
    #[error("the spec's {key} = {name:?} is not one of the release's files: every file the spec names must be listed (and so verified) in the signed record")]
    SpecPathUnlisted { key: &'static str, name: String },
    /// The record's kind decides which repository takes it and how it is
    /// loaded: the spec must be of that kind.
    #[error("the release's spec {spec} is a {spec_kind}'s, but the record says it is a {record_kind} release")]
    SpecKind { spec: String, spec_kind: ModelKind, record_kind: ModelKind },
    #[error("a detector release has no golden set (one with boxes may come later): publish it without --golden")]
    GoldenForDetector,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseRecord {
    pub schema: u32,
    /// The model's name; also the announcement topic's last level.
    pub name: String,
    /// What the model does. Absent means `classifier`: a record signed
    /// before kinds existed reads as what it was, and still verifies (the
    /// signature covers the record's exact bytes, which are parsed, never
    /// serialised again). Written only for a detector, so a classifier's
    /// record stays one that older agents (which refuse unknown fields) take,
    /// and a detector's is one they refuse.
    #[serde(default, skip_serializing_if = "ModelKind::is_classifier")]
    pub kind: ModelKind,
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
    /// One of `files`: a golden set (`GoldenSet` JSON) the model must pass on
    /// the device. Classifiers only.
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
        check_name("key id", key_id)?;
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
            check_name("key id", key_id)?;
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
    let required = agent_version(&record.min_agent_version).ok_or_else(|| ReleaseError::AgentVersionFormat { value: shown(&record.min_agent_version) })?;
    let this = agent_version(crate::AGENT_VERSION).unwrap_or_default();
    if this < required {
        return Err(ReleaseError::AgentTooOld { required: record.min_agent_version });
    }
    Ok(record)
}

/// The record, if a pinned key signed these exact bytes and it is well formed
/// (all an installed model needs at start: it may have expired since).
pub fn verify_signature(record_bytes: &[u8], signature: &[u8], keys: &[PublicKey]) -> Result<ReleaseRecord, ReleaseError> {
    let record = parse_record(record_bytes)?;
    let key = keys.iter().find(|k| k.key_id == record.key_id).ok_or_else(|| ReleaseError::UnknownKey { key_id: record.key_id.clone() })?;
    let signature: [u8; 64] = signature.try_into().map_err(|_| ReleaseError::SignatureLength)?;
    key.key
        .verify(record_bytes, &Signature::from_bytes(&signature))
        .map_err(|_| ReleaseError::BadSignature { key_id: record.key_id.clone() })?;
    Ok(record)
}

/// The record in these bytes, every field that reaches a path, a sum or an
/// event checked (signed or not: a trainer's key can be stolen, and a bug
/// in a trainer's tool must not become a path outside the models folder).
pub fn parse_record(record_bytes: &[u8]) -> Result<ReleaseRecord, ReleaseError> {
    let record: ReleaseRecord = serde_json::from_slice(record_bytes).map_err(ReleaseError::Malformed)?;
    if record.schema != RECORD_SCHEMA {
        return Err(ReleaseError::Schema { schema: record.schema });
    }
    check_record(&record)?;
    Ok(record)
}

/// The bounds of [`parse_record`], for a record about to be signed too.
pub fn check_record(record: &ReleaseRecord) -> Result<(), ReleaseError> {
    check_name("model name", &record.name)?;
    check_name("key id", &record.key_id)?;
    if record.version == 0 || record.version > MAX_VERSION {
        return Err(ReleaseError::Version { version: record.version });
    }
    if record.files.len() > MAX_FILES {
        return Err(ReleaseError::TooManyFiles { count: record.files.len() });
    }
    if agent_version(&record.min_agent_version).is_none() {
        return Err(ReleaseError::AgentVersionFormat { value: shown(&record.min_agent_version) });
    }
    for (i, file) in record.files.iter().enumerate() {
        check_name("file name", &file.name)?;
        if super::store::RESERVED_NAMES.contains(&file.name.as_str()) {
            return Err(ReleaseError::ReservedName { name: file.name.clone() });
        }
        if record.files[..i].iter().any(|f| f.name == file.name) {
            return Err(ReleaseError::DuplicateFile { name: file.name.clone() });
        }
        if file.sha256.len() != 64 || !file.sha256.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(ReleaseError::Sha256Format { name: file.name.clone() });
        }
    }
    total_size(record)?;
    if record.kind == ModelKind::Detector && record.golden_file.is_some() {
        return Err(ReleaseError::GoldenForDetector);
    }
    for name in [&record.model_file, &record.spec_file].into_iter().chain(&record.golden_file) {
        if record.file(name).is_none() {
            return Err(ReleaseError::Unlisted { name: shown(name) });
        }
    }
    Ok(())
}

/// The sum of the record's file sizes, if it fits in a u64.
pub fn total_size(record: &ReleaseRecord) -> Result<u64, ReleaseError> {
    record.files.iter().try_fold(0u64, |sum, f| sum.checked_add(f.size)).ok_or(ReleaseError::SizeOverflow)
}

/// A name that becomes part of a path (a model's folder, a file, a key
/// file): 1 to 64 of `[A-Za-z0-9._-]`, not starting with a dot (so neither
/// `..`, a hidden file, nor anything with a `/`).
pub fn check_name(what: &'static str, name: &str) -> Result<(), ReleaseError> {
    let plain = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && !name.starts_with('.')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if plain {
        Ok(())
    } else {
        Err(ReleaseError::Name { what, name: shown(name) })
    }
}

/// At most 80 characters of a name from outside, for an error message.
fn shown(name: &str) -> String {
    name.chars().take(80).collect()
}

/// `MAJOR[.MINOR[.PATCH]]`, all decimal, as a tuple padded with zeros
/// (`1.2` = `1.2.0`); None for anything else (a `v` prefix, a suffix, text).
fn agent_version(version: &str) -> Option<[u64; 3]> {
    let parts: Vec<&str> = version.split('.').collect();
    if parts.len() > 3 {
        return None;
    }
    let mut tuple = [0u64; 3];
    for (slot, part) in tuple.iter_mut().zip(&parts) {
        if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        *slot = part.parse().ok()?;
    }
    Some(tuple)
}

/// Checks what the spec (`spec_text`, the release's `spec_file`) names:
/// it is a spec of the record's kind, and every path in it is a plain name
/// listed in `record`, so it is read from the release's own folder and its
/// sha256 was verified. For a release being published, verified, or loaded
/// at start.
pub fn check_spec(record: &ReleaseRecord, spec_text: &str) -> Result<(), ReleaseError> {
    let (kind, named) = spec_files(&record.spec_file, spec_text)?;
    if kind != record.kind {
        return Err(ReleaseError::SpecKind { spec: shown(&record.spec_file), spec_kind: kind, record_kind: record.kind });
    }
    for (key, path) in &named {
        let name = path.to_str().filter(|n| check_name("file name", n).is_ok());
        let name = name.ok_or_else(|| ReleaseError::SpecPathNotPlain { key, path: shown(&path.to_string_lossy()) })?;
        if record.file(name).is_none() {
            return Err(ReleaseError::SpecPathUnlisted { key, name: name.to_string() });
        }
    }
    Ok(())
}

/// Files a spec names: (its key, the path as written).
pub type NamedFiles = Vec<(&'static str, PathBuf)>;

/// A spec's kind and every file it names, by key (paths as written,
/// relative to the spec): what a release of it carries beside the model and
/// the spec.
pub fn spec_files(spec_name: &str, spec_text: &str) -> Result<(ModelKind, NamedFiles), ReleaseError> {
    let invalid = |e: toml::de::Error| ReleaseError::SpecInvalid { spec: shown(spec_name), reason: e.to_string().trim_end().to_string() };
    match ModelKind::of(spec_text).map_err(invalid)? {
        ModelKind::Classifier => {
            let spec: crate::infer::spec::SpecFile = toml::from_str(spec_text).map_err(invalid)?;
            // Destructured without `..`: a path key added to the spec must be
            // added here, or this does not compile.
            let crate::infer::spec::SpecFile { name: _, version: _, kind: _, labels, taxonomy, input: _, output: _, reference: _ } = spec;
            Ok((ModelKind::Classifier, vec![("labels", labels), ("taxonomy", taxonomy)]))
        }
        // The same guard, beside the detector spec's private file type.
        ModelKind::Detector => Ok((ModelKind::Detector, crate::infer::detector_spec::DetectorSpec::named_files(spec_text).map_err(invalid)?)),
    }
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
        let file = FileRecord { name: "m.onnx".into(), sha256: "0".repeat(64), size: 1 };
        let spec = FileRecord { name: "m.toml".into(), sha256: "0".repeat(64), size: 1 };
        serde_json::to_vec(&ReleaseRecord {
            schema: 1,
            name: "m".into(),
            kind: ModelKind::Classifier,
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

    fn signed_with(trainer: &SecretKey, edit: impl Fn(&mut serde_json::Value)) -> Result<ReleaseRecord, ReleaseError> {
        let mut value: serde_json::Value = serde_json::from_slice(&record(2, "2999-01-01T00:00:00Z", "trainer")).unwrap();
        edit(&mut value);
        let bytes = serde_json::to_vec(&value).unwrap();
        verify(&bytes, &trainer.sign(&bytes), &[trainer.public()], 1)
    }

    #[test]
    fn a_signed_record_with_a_name_that_leaves_the_models_folder_or_an_unsafe_version_is_refused() {
        let trainer = SecretKey::generate("trainer").unwrap();
        for name in ["../../victim", "/tmp/victim", "a/b", ".hidden", "", "x y", &"n".repeat(65), "é"] {
            let err = signed_with(&trainer, |r| r["name"] = name.into()).unwrap_err();
            assert!(matches!(err, ReleaseError::Name { what: "model name", .. }), "{name:?}: {err}");
            let err = signed_with(&trainer, |r| r["files"][0]["name"] = name.into()).unwrap_err();
            assert!(matches!(err, ReleaseError::Name { what: "file name", .. }), "{name:?}: {err}");
        }
        assert!(signed_with(&trainer, |r| r["name"] = "road-v2_final.1".into()).is_ok());
        for version in [0, MAX_VERSION + 1, u64::MAX] {
            let err = signed_with(&trainer, |r| r["version"] = version.into()).unwrap_err();
            assert!(matches!(err, ReleaseError::Version { .. }) && err.to_string().contains("safe integers"), "{err}");
        }
        assert_eq!(signed_with(&trainer, |r| r["version"] = MAX_VERSION.into()).unwrap().version, MAX_VERSION);
        // Sizes that wrap a u64 sum around to a small number.
        let err = signed_with(&trainer, |r| {
            r["files"][0]["size"] = (u64::MAX - 50).into();
            r["files"][1]["size"] = 151.into();
        })
        .unwrap_err();
        assert!(matches!(err, ReleaseError::SizeOverflow), "{err}");
        let err = signed_with(&trainer, |r| r["files"][1]["name"] = "m.onnx".into()).unwrap_err();
        assert!(matches!(err, ReleaseError::DuplicateFile { .. }), "{err}");
    }

    #[test]
    fn a_file_named_like_one_of_the_stores_own_is_refused() {
        let trainer = SecretKey::generate("trainer").unwrap();
        for name in crate::models::store::RESERVED_NAMES {
            let err = signed_with(&trainer, |r| r["files"][1]["name"] = (*name).into()).unwrap_err();
            assert!(matches!(&err, ReleaseError::ReservedName { name: n } if n == name) && err.to_string().contains("reserved"), "{name}: {err}");
        }
        for name in ["release.json", "release.sig", "active"] {
            let mut value: serde_json::Value = serde_json::from_slice(&record(2, "2999-01-01T00:00:00Z", "trainer")).unwrap();
            value["files"][1]["name"] = name.into();
            let record: ReleaseRecord = serde_json::from_value(value).unwrap();
            assert!(matches!(check_record(&record), Err(ReleaseError::ReservedName { .. })), "publish refuses {name} too");
        }
    }

    #[test]
    fn a_min_agent_version_that_is_not_a_version_is_refused() {
        let trainer = SecretKey::generate("trainer").unwrap();
        for bad in ["v9.0.0", "latest", "", "1..0", "1.0.0.0", "1.0.0-rc1", " 1.0", "99999999999999999999"] {
            let err = signed_with(&trainer, |r| r["min_agent_version"] = bad.into()).unwrap_err();
            assert!(matches!(err, ReleaseError::AgentVersionFormat { .. }) && err.to_string().contains("is not a version"), "{bad:?}: {err}");
        }
        for ok in ["0.1.0", "0.1", "0", "0.0.9"] {
            assert!(signed_with(&trainer, |r| r["min_agent_version"] = ok.into()).is_ok(), "{ok}");
        }
        for newer in ["9.0.0", "0.2", "1"] {
            let err = signed_with(&trainer, |r| r["min_agent_version"] = newer.into()).unwrap_err();
            assert!(matches!(err, ReleaseError::AgentTooOld { .. }), "{newer}: {err}");
        }
    }

    #[test]
    fn every_path_a_spec_names_must_be_a_listed_plain_name() {
        let mut record: ReleaseRecord = serde_json::from_slice(&record(2, "2999-01-01T00:00:00Z", "trainer")).unwrap();
        for name in ["labels.txt", "tax.toml"] {
            record.files.push(FileRecord { name: name.into(), sha256: "0".repeat(64), size: 1 });
        }
        let bundled = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/models/efficientnet_lite0.toml")).unwrap();
        let spec = |labels: &str, taxonomy: &str| {
            bundled
                .replace("labels = \"imagenet_labels.txt\"", &format!("labels = {labels:?}"))
                .replace("taxonomy = \"road_taxonomy.toml\"", &format!("taxonomy = {taxonomy:?}"))
        };
        assert!(check_spec(&record, &spec("labels.txt", "tax.toml")).is_ok());
        for outside in ["/tmp/x/labels.txt", "../labels.txt", "sub/labels.txt", ".labels.txt", ""] {
            let err = check_spec(&record, &spec(outside, "tax.toml")).unwrap_err();
            assert!(matches!(err, ReleaseError::SpecPathNotPlain { key: "labels", .. }) && err.to_string().contains("labels"), "{outside}: {err}");
            let err = check_spec(&record, &spec("labels.txt", outside)).unwrap_err();
            assert!(matches!(err, ReleaseError::SpecPathNotPlain { key: "taxonomy", .. }), "{outside}: {err}");
        }
        let err = check_spec(&record, &spec("other.txt", "tax.toml")).unwrap_err();
        assert!(matches!(err, ReleaseError::SpecPathUnlisted { key: "labels", .. }) && err.to_string().contains("not one of the release's files"), "{err}");
        assert!(matches!(check_spec(&record, "labels = 3"), Err(ReleaseError::SpecInvalid { .. })));
    }

    #[test]
    fn a_record_says_its_kind_only_when_a_detector_and_the_signature_covers_it() {
        let trainer = SecretKey::generate("trainer").unwrap();
        let keys = [trainer.public()];
        // A classifier's record is written as before kinds existed, and such a record reads as a classifier's.
        let classifier = record(2, "2999-01-01T00:00:00Z", "trainer");
        assert!(!String::from_utf8_lossy(&classifier).contains("kind"));
        assert_eq!(verify(&classifier, &trainer.sign(&classifier), &keys, 1).unwrap().kind, ModelKind::Classifier);
        let mut value: serde_json::Value = serde_json::from_slice(&classifier).unwrap();
        value["kind"] = "detector".into();
        let detector = serde_json::to_vec(&value).unwrap();
        let signature = trainer.sign(&detector);
        assert_eq!(verify(&detector, &signature, &keys, 1).unwrap().kind, ModelKind::Detector);
        assert!(String::from_utf8_lossy(&serde_json::to_vec(&parse_record(&detector).unwrap()).unwrap()).contains(r#""kind":"detector""#));
        // Its kind cannot be changed or dropped under the same signature.
        for altered in [String::from_utf8_lossy(&detector).replace(r#""kind":"detector","#, ""), String::from_utf8_lossy(&detector).replace("detector", "classifier")] {
            let err = verify(altered.as_bytes(), &signature, &keys, 1).unwrap_err();
            assert!(matches!(err, ReleaseError::BadSignature { .. }), "{altered}: {err}");
        }
        value["kind"] = "tracker".into();
        let unknown = serde_json::to_vec(&value).unwrap();
        assert!(matches!(verify(&unknown, &trainer.sign(&unknown), &keys, 1), Err(ReleaseError::Malformed(_))));
        // A detector release has no golden set.
        value["kind"] = "detector".into();
        value["golden_file"] = "m.onnx".into();
        let golden = serde_json::to_vec(&value).unwrap();
        let err = verify(&golden, &trainer.sign(&golden), &keys, 1).unwrap_err();
        assert!(matches!(err, ReleaseError::GoldenForDetector) && err.to_string().contains("without --golden"), "{err}");
    }

    #[test]
    fn a_detector_spec_names_its_labels_and_must_be_of_the_records_kind() {
        let mut record: ReleaseRecord = serde_json::from_slice(&record(2, "2999-01-01T00:00:00Z", "trainer")).unwrap();
        record.kind = ModelKind::Detector;
        record.files.push(FileRecord { name: "coco_labels.txt".into(), sha256: "0".repeat(64), size: 1 });
        let bundled = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/models/yolov3_tiny.toml")).unwrap();
        assert!(check_spec(&record, &bundled).is_ok());
        for outside in ["/tmp/x/coco_labels.txt", "../coco_labels.txt", ""] {
            let spec = bundled.replace("labels = \"coco_labels.txt\"", &format!("labels = {outside:?}"));
            let err = check_spec(&record, &spec).unwrap_err();
            assert!(matches!(err, ReleaseError::SpecPathNotPlain { key: "labels", .. }), "{outside}: {err}");
        }
        let err = check_spec(&record, &bundled.replace("labels = \"coco_labels.txt\"", "labels = \"other.txt\"")).unwrap_err();
        assert!(matches!(err, ReleaseError::SpecPathUnlisted { key: "labels", .. }), "{err}");
        // A detector's spec in a classifier's record, and the reverse.
        let classifier_spec = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/models/efficientnet_lite0.toml")).unwrap();
        let err = check_spec(&record, &classifier_spec).unwrap_err();
        assert!(matches!(err, ReleaseError::SpecKind { spec_kind: ModelKind::Classifier, record_kind: ModelKind::Detector, .. }), "{err}");
        record.kind = ModelKind::Classifier;
        let err = check_spec(&record, &bundled).unwrap_err();
        assert!(err.to_string().contains("is a detector's, but the record says it is a classifier release"), "{err}");
        assert!(matches!(check_spec(&record, "kind = \"detector\"\nlabels = 3"), Err(ReleaseError::SpecInvalid { .. })));
    }

    #[test]
    fn key_ids_are_plain_names() {
        for key_id in ["../evil", "/etc/evil", "a/b", ".k", ""] {
            assert!(matches!(SecretKey::generate(key_id), Err(ReleaseError::Name { what: "key id", .. })), "{key_id:?}");
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.pub");
        std::fs::write(&path, format!("ed25519-public ../evil {}\n", BASE64.encode([0u8; 32]))).unwrap();
        assert!(matches!(PublicKey::load(&path), Err(ReleaseError::Name { .. })));
    }

    mod properties {
        use super::super::*;
        use proptest::prelude::*;

        fn any_name() -> impl Strategy<Value = String> {
            prop_oneof![
                "[A-Za-z0-9._-]{1,64}",
                "[A-Za-z0-9./_-]{0,70}",
                "(\\.\\./)+[a-z]{1,8}",
                "/[a-z/]{1,20}",
                any::<String>(),
            ]
        }

        fn any_file() -> impl Strategy<Value = serde_json::Value> {
            (any_name(), prop_oneof!["[0-9a-f]{64}", any::<String>()], any::<u64>())
                .prop_map(|(name, sha256, size)| serde_json::json!({"name": name, "sha256": sha256, "size": size}))
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

            #[test]
            fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
                let _ = parse_record(&bytes);
            }

            #[test]
            fn a_parsed_record_is_always_within_its_bounds(
                name in any_name(),
                key_id in any_name(),
                version in prop_oneof![any::<u64>(), 0..=MAX_VERSION + 2, Just(MAX_VERSION)],
                files in proptest::collection::vec(any_file(), 0..6),
                model in any::<prop::sample::Index>(),
            ) {
                let model_file = files.get(model.index(files.len().max(1))).map(|f| f["name"].clone()).unwrap_or("m.onnx".into());
                let value = serde_json::json!({
                    "schema": 1, "name": name, "version": version, "created_at": "2026-01-01T00:00:00Z",
                    "expires_at": "2999-01-01T00:00:00Z", "min_agent_version": "0.1.0", "files": files,
                    "model_file": model_file, "spec_file": model_file, "input_shape": [1, 3, 224, 224],
                    "output_classes": 3, "key_id": key_id,
                });
                let bytes = serde_json::to_vec(&value).unwrap();
                if let Ok(record) = parse_record(&bytes) {
                    prop_assert!((1..=MAX_VERSION).contains(&record.version));
                    for n in std::iter::once(&record.name).chain(&[record.key_id.clone()]).chain(record.files.iter().map(|f| &f.name)) {
                        prop_assert!(!n.is_empty() && n.len() <= MAX_NAME_LEN && !n.starts_with('.') && !n.contains('/'), "{n:?}");
                        prop_assert!(!std::path::Path::new(n).is_absolute());
                    }
                    prop_assert!(total_size(&record).is_ok());
                    prop_assert!(record.files.iter().map(|f| f.size as u128).sum::<u128>() <= u64::MAX as u128);
                    prop_assert!(record.file(&record.model_file).is_some());
                }
            }
        }
    }
}
