//! A small OCI distribution client (HTTP or HTTPS through rustls): what the
//! agent needs to pull a model artifact, and what the trainer needs to push
//! one. Every manifest and blob is checked against its digest; model blobs
//! stream to a file that a later attempt resumes.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::{RegistryUrl, RegistryUrlError};
use crate::util::fs::{hex, sha256_file, FileError};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;
use std::time::Duration;

pub const MANIFEST_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
pub const ARTIFACT_TYPE: &str = "application/vnd.cctv.model.v1";
pub const RECORD_TYPE: &str = "application/vnd.cctv.release.v1+json";
pub const SIGNATURE_TYPE: &str = "application/vnd.cctv.release.signature.v1";
pub const FILE_TYPE: &str = "application/vnd.cctv.model.file.v1";
pub const TITLE: &str = "org.opencontainers.image.title";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub schema_version: u32,
    pub media_type: String,
    #[serde(default)]
    pub artifact_type: Option<String>,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl Descriptor {
    pub fn title(&self) -> Option<&str> {
        self.annotations.get(TITLE).map(String::as_str)
    }
}

pub struct Registry {
    base: String,
    repository: String,
    http: ureq::Agent,
}

pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex(&Sha256::digest(bytes)))
}


/// What went wrong talking to the registry. [`RegistryError::condemns_release`]
/// tells the updater whether to give up on a release or try again.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error(transparent)]
    Url(#[from] RegistryUrlError),
    /// No answer: DNS, connection, TLS or a timeout.
    #[error("cannot reach the registry ({0}): check registry.url and the device's network")]
    Unreachable(Box<ureq::Transport>),
    /// The registry answered an error status; `body` is the start of its answer.
    #[error("{url} answered {code}: {body} ({})", status_advice(*code))]
    Status { url: String, code: u16, body: String },
    /// An answer broke off while it was read.
    #[error("{what}: {source}")]
    Body { what: String, source: std::io::Error },
    #[error("the manifest's bytes do not match its digest {digest}")]
    ManifestMismatch { digest: String },
    #[error("blob {digest} does not match its digest and size: altered in the registry or in transit")]
    DigestMismatch { digest: String },
    #[error("blob {digest} is {size} bytes, over the {max}-byte limit")]
    TooLarge { digest: String, size: u64, max: u64 },
    #[error("the manifest is not an OCI image manifest: {0}")]
    Manifest(serde_json::Error),
    #[error("cannot encode the manifest: {0}")]
    Encode(serde_json::Error),
    #[error("the registry gave no upload location")]
    NoUploadLocation,
    /// A local file (a download in progress).
    #[error(transparent)]
    File(#[from] FileError),
}

impl RegistryError {
    /// The answer proves the release itself bad, so no later attempt can
    /// cure it: bytes that do not match their digest, a blob over its limit,
    /// a manifest (whose bytes matched its digest) that is not one. Anything
    /// else — no answer, any error status (a 5xx, but also an expired
    /// credential's 401/403 or a registry that lags behind its tag with a
    /// 404), bytes garbled in transit, a broken-off answer, a local file
    /// error — says nothing about the release and is tried again.
    pub fn condemns_release(&self) -> bool {
        matches!(self, RegistryError::DigestMismatch { .. } | RegistryError::TooLarge { .. } | RegistryError::Manifest(_))
    }
}

/// What an operator should check for an error status from the registry.
fn status_advice(code: u16) -> &'static str {
    match code {
        401 | 403 => "the registry refused this device: check its credentials and access to the repository",
        404 => "check the repository in registry.url and registry.tag; the release is tried again at the next poll",
        429 | 500..=599 => "the registry is overloaded or failing; the agent tries again at the next poll",
        _ => "check registry.url; the agent tries again at the next poll",
    }
}

impl From<ureq::Error> for RegistryError {
    fn from(error: ureq::Error) -> RegistryError {
        match error {
            ureq::Error::Status(code, response) => {
                let url = response.get_url().to_string();
                let body = response.into_string().unwrap_or_default();
                RegistryError::Status { url, code, body: body.chars().take(200).collect::<String>().trim().to_string() }
            }
            ureq::Error::Transport(transport) => RegistryError::Unreachable(Box::new(transport)),
        }
    }
}

impl Registry {
    /// `url` is `http(s)://host[:port]/<repository>`.
    pub fn new(url: &str) -> Result<Registry, RegistryError> {
        let RegistryUrl { base, repository } = RegistryUrl::parse(url)?;
        let http = ureq::AgentBuilder::new().timeout_connect(Duration::from_secs(10)).timeout_read(Duration::from_secs(30)).build();
        Ok(Registry { base, repository, http })
    }

    fn url(&self, path: &str) -> String {
        format!("{}/v2/{}/{path}", self.base, self.repository)
    }

    /// The digest the tag points at now (a HEAD request), or None if there is no such tag.
    pub fn tag_digest(&self, tag: &str) -> Result<Option<String>, RegistryError> {
        match self.http.head(&self.url(&format!("manifests/{tag}"))).set("Accept", MANIFEST_TYPE).call() {
            Ok(response) => Ok(response.header("Docker-Content-Digest").map(str::to_string)),
            Err(ureq::Error::Status(404, _)) => Ok(None),
            Err(error) => Err(error.into()),
        }
    }

    /// The manifest at `digest`, checked against it.
    pub fn manifest(&self, digest: &str) -> Result<(Manifest, Vec<u8>), RegistryError> {
        let response = self.http.get(&self.url(&format!("manifests/{digest}"))).set("Accept", MANIFEST_TYPE).call()?;
        let mut bytes = Vec::new();
        response.into_reader().take(1 << 20).read_to_end(&mut bytes).map_err(|source| RegistryError::Body { what: "reading the manifest".into(), source })?;
        if sha256_digest(&bytes) != digest {
            return Err(RegistryError::ManifestMismatch { digest: digest.to_string() });
        }
        let manifest: Manifest = serde_json::from_slice(&bytes).map_err(RegistryError::Manifest)?;
        Ok((manifest, bytes))
    }

    /// A small blob in memory, checked against its descriptor.
    pub fn blob(&self, descriptor: &Descriptor, max: u64) -> Result<Vec<u8>, RegistryError> {
        if descriptor.size > max {
            return Err(RegistryError::TooLarge { digest: descriptor.digest.clone(), size: descriptor.size, max });
        }
        let response = self.http.get(&self.url(&format!("blobs/{}", descriptor.digest))).call()?;
        let mut bytes = Vec::new();
        response
            .into_reader()
            .take(descriptor.size + 1)
            .read_to_end(&mut bytes)
            .map_err(|source| RegistryError::Body { what: format!("reading blob {}", descriptor.digest), source })?;
        if bytes.len() as u64 != descriptor.size || sha256_digest(&bytes) != descriptor.digest {
            return Err(RegistryError::DigestMismatch { digest: descriptor.digest.clone() });
        }
        Ok(bytes)
    }

    /// Streams a blob to `path`, resuming from what a previous attempt left
    /// there, then checks size and digest (and deletes the file if they do not match).
    pub fn blob_to_file(&self, descriptor: &Descriptor, path: &Path) -> Result<(), RegistryError> {
        let have = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        if have > descriptor.size {
            let _ = std::fs::remove_file(path);
        }
        let have = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        if have < descriptor.size {
            let mut request = self.http.get(&self.url(&format!("blobs/{}", descriptor.digest)));
            if have > 0 {
                tracing::info!(digest = %descriptor.digest, have, size = descriptor.size, "resuming an interrupted download");
                request = request.set("Range", &format!("bytes={have}-"));
            }
            let response = request.call()?;
            let resumed = response.status() == 206;
            let mut file = std::fs::OpenOptions::new()
                .create(true)
                .write(true)
                .append(resumed)
                .truncate(!resumed)
                .open(path)
                .map_err(FileError::at("write", path))?;
            let remaining = if resumed { descriptor.size - have } else { descriptor.size };
            std::io::copy(&mut response.into_reader().take(remaining), &mut file)
                .map_err(|source| RegistryError::Body { what: format!("downloading {}", descriptor.digest), source })?;
            file.sync_all().map_err(FileError::at("sync", path))?;
        }
        let size = std::fs::metadata(path).map_err(FileError::at("read", path))?.len();
        let sha256 = sha256_file(path)?;
        if size != descriptor.size || format!("sha256:{sha256}") != descriptor.digest {
            let _ = std::fs::remove_file(path);
            return Err(RegistryError::DigestMismatch { digest: descriptor.digest.clone() });
        }
        Ok(())
    }

    /// Uploads a blob (monolithic POST then PUT); returns its descriptor.
    pub fn push_blob(&self, media_type: &str, bytes: &[u8], title: Option<&str>) -> Result<Descriptor, RegistryError> {
        let digest = sha256_digest(bytes);
        let started = self.http.post(&self.url("blobs/uploads/")).call()?;
        let location = started.header("Location").ok_or(RegistryError::NoUploadLocation)?.to_string();
        let location = if location.starts_with('/') { format!("{}{location}", self.base) } else { location };
        let separator = if location.contains('?') { '&' } else { '?' };
        self.http
            .put(&format!("{location}{separator}digest={digest}"))
            .set("Content-Type", "application/octet-stream")
            .send_bytes(bytes)?;
        let mut annotations = BTreeMap::new();
        if let Some(title) = title {
            annotations.insert(TITLE.to_string(), title.to_string());
        }
        Ok(Descriptor { media_type: media_type.to_string(), digest, size: bytes.len() as u64, annotations })
    }

    /// Puts a manifest under `tag` (moving the tag); returns its digest.
    pub fn push_manifest(&self, tag: &str, manifest: &Manifest) -> Result<String, RegistryError> {
        let bytes = serde_json::to_vec(manifest).map_err(RegistryError::Encode)?;
        self.http.put(&self.url(&format!("manifests/{tag}"))).set("Content-Type", MANIFEST_TYPE).send_bytes(&bytes)?;
        Ok(sha256_digest(&bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_errors_that_prove_the_release_bad_condemn_it() {
        let status = |code| RegistryError::Status { url: "http://r/v2/x".into(), code, body: String::new() };
        for code in [503, 429, 404, 401, 403, 400] {
            assert!(!status(code).condemns_release(), "{code}");
        }
        assert!(!RegistryError::ManifestMismatch { digest: "sha256:00".into() }.condemns_release());
        let mismatch = RegistryError::DigestMismatch { digest: "sha256:00".into() };
        assert!(mismatch.condemns_release());
        assert!(RegistryError::TooLarge { digest: "sha256:00".into(), size: 2, max: 1 }.condemns_release());
        assert!(mismatch.to_string().contains("does not match its digest"), "{mismatch}");
        let unreachable = Registry::new("http://127.0.0.1:1/roadside/vc").unwrap().tag_digest("champion").unwrap_err();
        assert!(matches!(unreachable, RegistryError::Unreachable(_)) && !unreachable.condemns_release(), "{unreachable}");
        assert!(unreachable.to_string().contains("check registry.url"), "{unreachable}");
    }

    #[test]
    fn a_registry_url_needs_http_and_a_repository() {
        assert!(matches!(Registry::new("ftp://x/vc"), Err(RegistryError::Url(RegistryUrlError::Scheme(_)))));
        assert!(matches!(Registry::new("http://x"), Err(RegistryError::Url(RegistryUrlError::NoRepository(_)))));
        let registry = Registry::new("https://r.example:5000/roadside/vc/").unwrap();
        assert_eq!(registry.url("manifests/champion"), "https://r.example:5000/v2/roadside/vc/manifests/champion");
    }
}
