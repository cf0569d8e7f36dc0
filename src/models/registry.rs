//! A small OCI distribution client (HTTP or HTTPS through rustls): what the
//! agent needs to pull a model artifact, and what the trainer needs to push
//! one. Every manifest and blob is checked against its digest; model blobs
//! stream to a file that a later attempt resumes.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::util::fs::{hex, sha256_file};
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


fn describe(error: ureq::Error) -> String {
    match error {
        ureq::Error::Status(code, response) => {
            let url = response.get_url().to_string();
            let body = response.into_string().unwrap_or_default();
            format!("{url} answered {code}: {}", body.chars().take(200).collect::<String>().trim())
        }
        ureq::Error::Transport(transport) => format!("cannot reach the registry ({transport}): check registry.url and the device's network"),
    }
}

impl Registry {
    /// `url` is `http(s)://host[:port]/<repository>`.
    pub fn new(url: &str) -> Result<Registry, String> {
        let (scheme, rest) = url.split_once("://").ok_or_else(|| format!("registry url {url:?} has no http:// or https://"))?;
        if scheme != "http" && scheme != "https" {
            return Err(format!("registry url {url:?}: use http:// or https://"));
        }
        let (host, repository) = rest.split_once('/').ok_or_else(|| format!("registry url {url:?} names no repository (…/roadside/vehicle-classifier)"))?;
        let http = ureq::AgentBuilder::new().timeout_connect(Duration::from_secs(10)).timeout_read(Duration::from_secs(30)).build();
        Ok(Registry { base: format!("{scheme}://{host}"), repository: repository.trim_end_matches('/').to_string(), http })
    }

    fn url(&self, path: &str) -> String {
        format!("{}/v2/{}/{path}", self.base, self.repository)
    }

    /// The digest the tag points at now (a HEAD request), or None if there is no such tag.
    pub fn tag_digest(&self, tag: &str) -> Result<Option<String>, String> {
        match self.http.head(&self.url(&format!("manifests/{tag}"))).set("Accept", MANIFEST_TYPE).call() {
            Ok(response) => Ok(response.header("Docker-Content-Digest").map(str::to_string)),
            Err(ureq::Error::Status(404, _)) => Ok(None),
            Err(error) => Err(describe(error)),
        }
    }

    /// The manifest at `digest`, checked against it.
    pub fn manifest(&self, digest: &str) -> Result<(Manifest, Vec<u8>), String> {
        let response = self.http.get(&self.url(&format!("manifests/{digest}"))).set("Accept", MANIFEST_TYPE).call().map_err(describe)?;
        let mut bytes = Vec::new();
        response.into_reader().take(1 << 20).read_to_end(&mut bytes).map_err(|e| format!("reading the manifest: {e}"))?;
        if sha256_digest(&bytes) != digest {
            return Err(format!("the manifest's bytes do not match its digest {digest}"));
        }
        let manifest: Manifest = serde_json::from_slice(&bytes).map_err(|e| format!("the manifest is not an OCI image manifest: {e}"))?;
        Ok((manifest, bytes))
    }

    /// A small blob in memory, checked against its descriptor.
    pub fn blob(&self, descriptor: &Descriptor, max: u64) -> Result<Vec<u8>, String> {
        if descriptor.size > max {
            return Err(format!("blob {} is {} bytes, over the {max}-byte limit", descriptor.digest, descriptor.size));
        }
        let response = self.http.get(&self.url(&format!("blobs/{}", descriptor.digest))).call().map_err(describe)?;
        let mut bytes = Vec::new();
        response.into_reader().take(descriptor.size + 1).read_to_end(&mut bytes).map_err(|e| format!("reading blob {}: {e}", descriptor.digest))?;
        if bytes.len() as u64 != descriptor.size || sha256_digest(&bytes) != descriptor.digest {
            return Err(format!("blob {} does not match its digest and size: altered in the registry or in transit", descriptor.digest));
        }
        Ok(bytes)
    }

    /// Streams a blob to `path`, resuming from what a previous attempt left
    /// there, then checks size and digest (and deletes the file if they do not match).
    pub fn blob_to_file(&self, descriptor: &Descriptor, path: &Path) -> Result<(), String> {
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
            let response = request.call().map_err(describe)?;
            let resumed = response.status() == 206;
            let mut file = std::fs::OpenOptions::new()
                .create(true)
                .write(true)
                .append(resumed)
                .truncate(!resumed)
                .open(path)
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
            let remaining = if resumed { descriptor.size - have } else { descriptor.size };
            std::io::copy(&mut response.into_reader().take(remaining), &mut file).map_err(|e| format!("downloading {}: {e}", descriptor.digest))?;
            file.sync_all().map_err(|e| format!("cannot sync {}: {e}", path.display()))?;
        }
        let size = std::fs::metadata(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?.len();
        let sha256 = sha256_file(path).map_err(|e| e.to_string())?;
        if size != descriptor.size || format!("sha256:{sha256}") != descriptor.digest {
            let _ = std::fs::remove_file(path);
            return Err(format!("blob {} does not match its digest and size: altered in the registry or in transit", descriptor.digest));
        }
        Ok(())
    }

    /// Uploads a blob (monolithic POST then PUT); returns its descriptor.
    pub fn push_blob(&self, media_type: &str, bytes: &[u8], title: Option<&str>) -> Result<Descriptor, String> {
        let digest = sha256_digest(bytes);
        let started = self.http.post(&self.url("blobs/uploads/")).call().map_err(describe)?;
        let location = started.header("Location").ok_or("the registry gave no upload location")?.to_string();
        let location = if location.starts_with('/') { format!("{}{location}", self.base) } else { location };
        let separator = if location.contains('?') { '&' } else { '?' };
        self.http
            .put(&format!("{location}{separator}digest={digest}"))
            .set("Content-Type", "application/octet-stream")
            .send_bytes(bytes)
            .map_err(describe)?;
        let mut annotations = BTreeMap::new();
        if let Some(title) = title {
            annotations.insert(TITLE.to_string(), title.to_string());
        }
        Ok(Descriptor { media_type: media_type.to_string(), digest, size: bytes.len() as u64, annotations })
    }

    /// Puts a manifest under `tag` (moving the tag); returns its digest.
    pub fn push_manifest(&self, tag: &str, manifest: &Manifest) -> Result<String, String> {
        let bytes = serde_json::to_vec(manifest).map_err(|e| e.to_string())?;
        self.http.put(&self.url(&format!("manifests/{tag}"))).set("Content-Type", MANIFEST_TYPE).send_bytes(&bytes).map_err(describe)?;
        Ok(sha256_digest(&bytes))
    }
}

