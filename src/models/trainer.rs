//! The trainer's side of a release (`cctv-agent release …`): make a key
//! pair, sign a model into a release record, push it to the registry as an
//! OCI artifact, move the tag, and announce it on MQTT (retained).

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::config::MqttConfig;
use crate::infer::detector_spec::DetectorSpec;
use crate::infer::spec::{Layout, ModelKind, SpecFile};
use crate::wire::releases::ReleaseAnnouncement;
use crate::wire::{rfc3339, Topics};
use crate::models::registry::{self, Descriptor, Manifest, Registry, RegistryError};
use crate::models::release::{FileRecord, GoldenSet, ReleaseError, ReleaseRecord, SecretKey, RECORD_SCHEMA};
use crate::util::fs::FileError;

/// Why `release keygen` or `release publish` failed; each says what to fix.
#[derive(Debug, thiserror::Error)]
pub enum TrainerError {
    #[error("cannot create {} (it must not exist yet): {source}", path.display())]
    KeyExists { path: PathBuf, source: std::io::Error },
    /// Making, reading or using a key.
    #[error(transparent)]
    Key(#[from] ReleaseError),
    #[error(transparent)]
    File(#[from] FileError),
    #[error("spec {}: {source}", path.display())]
    Spec { path: PathBuf, source: toml::de::Error },
    /// A detector's spec is loaded whole (labels too) before anything is pushed.
    #[error(transparent)]
    DetectorSpec(crate::infer::spec::SpecError),
    #[error("golden set {}: {source}", path.display())]
    Golden { path: PathBuf, source: serde_json::Error },
    #[error("{} has no file name", path.display())]
    NoFileName { path: PathBuf },
    #[error("two files of the release are named {name}; rename one")]
    SameName { name: String },
    #[error("cannot encode {what}: {source}")]
    Encode { what: &'static str, source: serde_json::Error },
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// The announcement's client options (URL, TLS files, password).
    #[error(transparent)]
    Mqtt(#[from] crate::publish::mqtt::SetupError),
    #[error("announcing on {topic}: {source}")]
    Announce { topic: String, source: rumqttc::ConnectionError },
    #[error("announcing on {topic}: {source}")]
    Queue { topic: String, source: rumqttc::ClientError },
}

/// Writes `<dir>/<key_id>.key` (the secret) and `<dir>/<key_id>.pub`, both
/// 0600 (`dir`, if created, 0700). The key id is a plain name, so both stay
/// inside `dir`.
pub fn keygen(key_id: &str, dir: &Path) -> Result<(PathBuf, PathBuf), TrainerError> {
    use std::io::Write;
    crate::models::release::check_name("key id", key_id)?;
    crate::util::fs::create_private_dir_all(dir)?;
    let key = SecretKey::generate(key_id)?;
    let secret = dir.join(format!("{key_id}.key"));
    let public = dir.join(format!("{key_id}.pub"));
    // Never overwrite a secret key; the public one is derived, so it may be.
    for (path, text, new) in [(&secret, key.to_file_text(), true), (&public, key.public().to_file_text(), false)] {
        let mut file = crate::util::fs::open_private_file(path, new, false).map_err(|e| TrainerError::KeyExists { path: path.clone(), source: e.source })?;
        file.write_all(text.as_bytes()).and_then(|()| file.sync_all()).map_err(FileError::at("write", path))?;
    }
    Ok((secret, public))
}

pub struct Publication {
    pub registry_url: String,
    pub tag: String,
    pub key: PathBuf,
    pub model: PathBuf,
    pub spec: Option<PathBuf>,
    /// A golden set (JSON: min_accuracy and samples of image + class); its
    /// images go with it. Classifiers only: a detector's is refused.
    pub golden: Option<PathBuf>,
    pub version: u64,
    pub expires_in: Duration,
    pub expires_at: Option<SystemTime>,
    pub min_agent_version: String,
    /// Announce on `<mqtt.topic_root>/fleet/models/<name>` at this broker,
    /// connecting as the agent does (TLS, CA, client certificate, credentials).
    pub mqtt: Option<MqttConfig>,
}

/// Signs and pushes a release; returns the record and the manifest digest.
pub fn publish(p: &Publication) -> Result<(ReleaseRecord, String), TrainerError> {
    // First, so that a missing CA file or password fails before anything is pushed.
    let announcer = match &p.mqtt {
        Some(mqtt) => Some((client_options(mqtt)?, mqtt.topic_root.as_str())),
        None => None,
    };
    let key = SecretKey::load(&p.key)?;
    let spec_path = p.spec.clone().unwrap_or_else(|| p.model.with_extension("toml"));
    let spec_text = std::fs::read_to_string(&spec_path).map_err(FileError::at("read the spec", &spec_path))?;
    // The spec's kind decides what it names and what the record says: a
    // detector (`kind = "detector"`) is released like a classifier, with its
    // labels, its input shape and its number of labels, and no golden set.
    let kind = ModelKind::of(&spec_text).map_err(|source| TrainerError::Spec { path: spec_path.clone(), source })?;
    let (name, layout, height, width) = match kind {
        ModelKind::Classifier => {
            let spec: SpecFile = toml::from_str(&spec_text).map_err(|source| TrainerError::Spec { path: spec_path.clone(), source })?;
            (spec.name, spec.input.layout, spec.input.height, spec.input.width)
        }
        ModelKind::Detector => {
            if p.golden.is_some() {
                return Err(ReleaseError::GoldenForDetector.into());
            }
            let spec = DetectorSpec::load(&spec_path).map_err(TrainerError::DetectorSpec)?;
            (spec.name, spec.input.layout, spec.input.height, spec.input.width)
        }
    };
    let base = spec_path.parent().unwrap_or(Path::new("."));
    let file_name = |path: &Path| {
        path.file_name().map(|n| n.to_string_lossy().to_string()).ok_or_else(|| TrainerError::NoFileName { path: path.to_path_buf() })
    };
    let (_, named) = crate::models::release::spec_files(&file_name(&spec_path)?, &spec_text)?;
    let labels_path = named.iter().find(|(key, _)| *key == "labels").map(|(_, path)| base.join(path));
    let mut paths = vec![p.model.clone(), spec_path.clone()];
    paths.extend(named.iter().map(|(_, path)| base.join(path)));
    let mut golden_bytes = None;
    if let Some(golden) = &p.golden {
        let text = std::fs::read_to_string(golden).map_err(FileError::at("read the golden set", golden))?;
        let mut set: GoldenSet = serde_json::from_str(&text).map_err(|source| TrainerError::Golden { path: golden.clone(), source })?;
        let golden_base = golden.parent().unwrap_or(Path::new("."));
        for sample in &mut set.samples {
            let image = golden_base.join(&sample.image);
            sample.image = file_name(&image)?;
            paths.push(image);
        }
        // Inside the release every file sits side by side: the set names them so.
        let bytes = serde_json::to_vec_pretty(&set).map_err(|source| TrainerError::Encode { what: "the golden set", source })?;
        golden_bytes = Some((file_name(golden)?, bytes));
    }
    paths.dedup();
    let mut files = Vec::new();
    let mut contents = Vec::new();
    let golden_entry = golden_bytes.clone().map(|(name, bytes)| (PathBuf::from(name), Some(bytes)));
    for (path, given) in paths.iter().map(|p| (p.clone(), None)).chain(golden_entry) {
        let bytes = match given {
            Some(bytes) => bytes,
            None => std::fs::read(&path).map_err(FileError::at("read", &path))?,
        };
        let name = file_name(&path)?;
        if files.iter().any(|f: &FileRecord| f.name == name) {
            return Err(TrainerError::SameName { name });
        }
        let sha256 = registry::sha256_digest(&bytes).trim_start_matches("sha256:").to_string();
        files.push(FileRecord { name, sha256, size: bytes.len() as u64 });
        contents.push(bytes);
    }
    let labels_name = labels_path.as_deref().map(file_name).transpose()?;
    let labels_bytes = labels_name.and_then(|name| files.iter().position(|f| f.name == name)).map(|i| contents[i].as_slice()).unwrap_or_default();
    let labels = String::from_utf8_lossy(labels_bytes).lines().filter(|l| !l.trim().is_empty()).count();
    let (h, w) = (height as i64, width as i64);
    let input_shape = if layout == Layout::Nhwc { vec![-1, h, w, 3] } else { vec![-1, 3, h, w] };
    let now = SystemTime::now();
    let record = ReleaseRecord {
        schema: RECORD_SCHEMA,
        name,
        kind,
        version: p.version,
        created_at: rfc3339(now),
        expires_at: rfc3339(p.expires_at.unwrap_or(now + p.expires_in)),
        min_agent_version: p.min_agent_version.clone(),
        model_file: file_name(&p.model)?,
        spec_file: file_name(&spec_path)?,
        files,
        input_shape,
        output_classes: labels,
        golden_file: golden_bytes.map(|(name, _)| name),
        key_id: key.key_id.clone(),
    };
    // What devices would refuse is refused here, before anything is pushed:
    // the spec goes out as written, so it must name its files as the release does.
    crate::models::release::check_record(&record)?;
    crate::models::release::check_spec(&record, &spec_text)?;
    let record_bytes = serde_json::to_vec_pretty(&record).map_err(|source| TrainerError::Encode { what: "the release record", source })?;
    let signature = key.sign(&record_bytes);

    let registry = Registry::new(&p.registry_url)?;
    let mut layers: Vec<Descriptor> = Vec::new();
    for (file, bytes) in record.files.iter().zip(&contents) {
        layers.push(registry.push_blob(registry::FILE_TYPE, bytes, Some(&file.name))?);
    }
    layers.push(registry.push_blob(registry::SIGNATURE_TYPE, &signature, Some("release.sig"))?);
    let config = registry.push_blob(registry::RECORD_TYPE, &record_bytes, None)?;
    let manifest = Manifest {
        schema_version: 2,
        media_type: registry::MANIFEST_TYPE.into(),
        artifact_type: Some(registry::ARTIFACT_TYPE.into()),
        config,
        layers,
    };
    let digest = registry.push_manifest(&p.tag, &manifest)?;
    if let Some((options, topic_root)) = announcer {
        announce(options, topic_root, &record, &p.registry_url, &p.tag, &digest)?;
    }
    Ok((record, digest))
}

/// The agent's client options, with this tool's own client id (never the
/// config's: that is a device's, and the broker would drop the device to let
/// this one in) and a clean session: nothing is left on the broker but the
/// retained message.
fn client_options(mqtt: &MqttConfig) -> Result<rumqttc::MqttOptions, TrainerError> {
    let mut options = crate::publish::mqtt::options(mqtt, &format!("cctv-release-{}", std::process::id()))?;
    options.set_clean_session(true);
    Ok(options)
}

/// The retained announcement on `<topic_root>/fleet/models/<name>`.
fn announce(options: rumqttc::MqttOptions, topic_root: &str, record: &ReleaseRecord, registry_url: &str, tag: &str, digest: &str) -> Result<(), TrainerError> {
    let (client, mut connection) = rumqttc::Client::new(options, 10);
    let topic = Topics::release_announcement(topic_root, &record.name);
    let announcement = ReleaseAnnouncement { name: &record.name, version: record.version, registry: registry_url, tag, digest, record };
    let payload = serde_json::to_vec(&announcement).map_err(|source| TrainerError::Encode { what: "the announcement", source })?;
    client
        .publish(&topic, rumqttc::QoS::AtLeastOnce, true, payload)
        .map_err(|source| TrainerError::Queue { topic: topic.clone(), source })?;
    for event in connection.iter() {
        match event {
            Ok(rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_))) => break,
            Ok(_) => {}
            Err(source) => return Err(TrainerError::Announce { topic, source }),
        }
    }
    let _ = client.disconnect();
    Ok(())
}
