//! A small OCI distribution client (HTTP or HTTPS through rustls): what the
//! agent needs to pull a model artifact, and what the trainer needs to push
//! one. Every manifest and blob is checked against its digest; model blobs
//! stream to a file that a later attempt resumes.
//!
//! The registry is not trusted to behave: digests it names must look like
//! digests before they reach a URL or a path, a manifest is read up to
//! 1 MiB, a blob up to its descriptor's size, every transfer has a deadline
//! and a minimum rate (a trickle cannot hold the updater), and a redirect
//! is followed only to the registry's own scheme, host and port.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::{RegistryUrl, RegistryUrlError};
use crate::util::fs::{hex, sha256_file, FileError};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

pub const MANIFEST_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
pub const ARTIFACT_TYPE: &str = "application/vnd.cctv.model.v1";
pub const RECORD_TYPE: &str = "application/vnd.cctv.release.v1+json";
pub const SIGNATURE_TYPE: &str = "application/vnd.cctv.release.signature.v1";
pub const FILE_TYPE: &str = "application/vnd.cctv.model.file.v1";
pub const TITLE: &str = "org.opencontainers.image.title";
/// Largest manifest read (a release's manifest is a few KiB).
pub const MAX_MANIFEST_BYTES: u64 = 1 << 20;
/// Most layers a manifest may list (a release lists at most 256 files and a signature).
pub const MAX_LAYERS: usize = 512;
/// Redirects followed per request (each to the registry's own origin).
const MAX_REDIRECTS: usize = 5;

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
    limits: TransferLimits,
    /// "No Docker-Content-Digest" is said once per process, not per poll.
    told_no_digest: AtomicBool,
}

/// How slow a transfer may be before it is given up (and retried later).
#[derive(Debug, Clone, Copy)]
struct TransferLimits {
    /// The first seconds of a transfer are not held to the minimum rate.
    grace: Duration,
    /// Bytes per second, averaged over the transfer after the grace period.
    min_rate: u64,
}

impl TransferLimits {
    /// 4 KiB/s: a 20 MB model over a poor cellular link still arrives; a
    /// registry sending a byte every 20 s is dropped after about half a minute.
    const DEFAULT: TransferLimits = TransferLimits { grace: Duration::from_secs(20), min_rate: 4 << 10 };

    /// The whole transfer's deadline: what `size` bytes take at the minimum
    /// rate, plus the grace period and a minute for connecting and headers.
    fn deadline(&self, size: u64) -> Duration {
        self.grace + Duration::from_secs(60 + size / self.min_rate.max(1))
    }
}

pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex(&Sha256::digest(bytes)))
}

/// `sha256:` and 64 lowercase hex digits: the only digests this client
/// puts into a URL or a folder name.
pub fn is_digest(digest: &str) -> bool {
    digest.strip_prefix("sha256:").is_some_and(|hex| hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
}

/// At most 80 characters of a value from the registry, for a message.
fn shown(value: &str) -> String {
    value.chars().take(80).collect()
}

/// An OCI image manifest from these bytes, every digest in it well formed.
pub fn parse_manifest(bytes: &[u8]) -> Result<Manifest, RegistryError> {
    let manifest: Manifest = serde_json::from_slice(bytes).map_err(RegistryError::Manifest)?;
    if manifest.layers.len() > MAX_LAYERS {
        return Err(RegistryError::ManifestField { reason: format!("it lists {} layers, more than {MAX_LAYERS}", manifest.layers.len()) });
    }
    if let Some(bad) = std::iter::once(&manifest.config).chain(&manifest.layers).find(|d| !is_digest(&d.digest)) {
        return Err(RegistryError::ManifestField { reason: format!("descriptor digest {:?} is not sha256:<64 hex digits>", shown(&bad.digest)) });
    }
    Ok(manifest)
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
    #[error("the manifest {digest} is over {MAX_MANIFEST_BYTES} bytes: not a release's manifest; check what the tag points at", MAX_MANIFEST_BYTES = MAX_MANIFEST_BYTES)]
    ManifestTooLarge { digest: String },
    #[error("blob {digest} does not match its digest and size: altered in the registry or in transit")]
    DigestMismatch { digest: String },
    #[error("blob {digest} is {size} bytes, over the {max}-byte limit")]
    TooLarge { digest: String, size: u64, max: u64 },
    #[error("the manifest is not an OCI image manifest: {0}")]
    Manifest(serde_json::Error),
    #[error("the manifest is not a usable OCI image manifest: {reason}")]
    ManifestField { reason: String },
    /// The tag's digest header is not a digest (never put in a URL or a path).
    #[error("the registry named the tag's digest {value:?}, which is not sha256:<64 hex digits>; check the registry")]
    BadDigest { value: String },
    /// The answer ended before its size: a reset or a proxy's limit; a
    /// download keeps what it has and resumes.
    #[error("{what}: the answer ended after {got} of {size} bytes (connection broken off); the agent tries again")]
    Truncated { what: String, got: u64, size: u64 },
    /// A resumed download's bytes do not add up (a part from an earlier
    /// attempt, or a registry that answered the wrong range): start over.
    #[error("the resumed download of {digest} does not match; it starts over at the next attempt")]
    ResumeMismatch { digest: String },
    #[error("{what}: {got} bytes in {secs} s, below the minimum of {min_rate} bytes/s (or past its deadline); check the device's uplink or the registry; the agent tries again")]
    TooSlow { what: String, got: u64, secs: u64, min_rate: u64 },
    #[error("the registry redirected {from} to {to}, which is not the same scheme, host and port; redirects elsewhere are not followed (point registry.url at the server that holds the blobs)")]
    Redirect { from: String, to: String },
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
    /// cure it: a blob over its limit, a manifest (whose bytes matched its
    /// digest) that is not one. Anything else says nothing certain about the
    /// release and is tried again: no answer, any error status (a 5xx, but
    /// also an expired credential's 401/403 or a registry that lags behind
    /// its tag with a 404), a broken-off answer, a local file error, and
    /// bytes that do not match their digest ([`RegistryError::is_garbled`]:
    /// the updater refuses the release only after several such downloads).
    pub fn condemns_release(&self) -> bool {
        matches!(
            self,
            RegistryError::TooLarge { .. }
                | RegistryError::Manifest(_)
                | RegistryError::ManifestField { .. }
                | RegistryError::ManifestTooLarge { .. }
        )
    }

    /// A blob whose bytes do not match its digest: the registry's copy was
    /// altered, or one answer was damaged in transit (a proxy, a bad link).
    /// One answer cannot tell which, so the updater downloads it again a
    /// bounded number of times before it refuses the release.
    pub fn is_garbled(&self) -> bool {
        matches!(self, RegistryError::DigestMismatch { .. })
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

/// Reads from a transfer while it keeps its deadline and minimum rate;
/// the verdict says which it broke.
struct Guarded<R> {
    inner: R,
    limits: TransferLimits,
    started: Instant,
    deadline: Instant,
    got: u64,
    too_slow: bool,
}

impl<R: Read> Guarded<R> {
    fn new(inner: R, limits: TransferLimits, size: u64) -> Guarded<R> {
        let started = Instant::now();
        Guarded { inner, limits, started, deadline: started + limits.deadline(size), got: 0, too_slow: false }
    }

    fn error(&self, what: String) -> RegistryError {
        RegistryError::TooSlow { what, got: self.got, secs: self.started.elapsed().as_secs(), min_rate: self.limits.min_rate }
    }

    /// What a read error of a transfer of `size` bytes means: too slow,
    /// broken off before its length, or another I/O failure.
    fn failure(&self, what: String, size: u64, source: std::io::Error) -> RegistryError {
        if self.too_slow {
            self.error(what)
        } else if source.kind() == std::io::ErrorKind::UnexpectedEof {
            RegistryError::Truncated { what, got: self.got, size }
        } else {
            RegistryError::Body { what, source }
        }
    }
}

impl<R: Read> Read for Guarded<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.got += n as u64;
        let now = Instant::now();
        let counted = now.saturating_duration_since(self.started).saturating_sub(self.limits.grace);
        let owed = (counted.as_secs_f64() * self.limits.min_rate as f64) as u64;
        if n > 0 && (now > self.deadline || self.got < owed) {
            self.too_slow = true;
            return Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "transfer below its minimum rate"));
        }
        Ok(n)
    }
}

impl Registry {
    /// `url` is `http(s)://host[:port]/<repository>`.
    pub fn new(url: &str) -> Result<Registry, RegistryError> {
        Registry::with_limits(url, TransferLimits::DEFAULT)
    }

    fn with_limits(url: &str, limits: TransferLimits) -> Result<Registry, RegistryError> {
        let RegistryUrl { base, repository } = RegistryUrl::parse(url)?;
        // Redirects are followed by `call`, which checks where they lead.
        let http = ureq::AgentBuilder::new().timeout_connect(Duration::from_secs(10)).timeout_read(Duration::from_secs(30)).redirects(0).build();
        Ok(Registry { base, repository, http, limits, told_no_digest: AtomicBool::new(false) })
    }

    fn url(&self, path: &str) -> String {
        format!("{}/v2/{}/{path}", self.base, self.repository)
    }

    /// `scheme://host[:port]` of an absolute URL.
    fn origin(url: &str) -> Option<&str> {
        let after = url.find("://")? + 3;
        Some(&url[..url[after..].find(['/', '?', '#']).map_or(url.len(), |i| after + i)])
    }

    /// Sends `make(url)` and follows redirects that stay at the registry's
    /// origin (an absolute path, or an absolute URL with the same scheme,
    /// host and port); anything else is refused, not followed.
    fn call(&self, url: &str, make: impl Fn(&str) -> ureq::Request) -> Result<ureq::Response, RegistryError> {
        let mut url = url.to_string();
        for _ in 0..=MAX_REDIRECTS {
            let response = make(&url).call()?;
            if !(300..400).contains(&response.status()) {
                return Ok(response);
            }
            let location = response.header("Location").unwrap_or_default().to_string();
            let next = if location.starts_with('/') && !location.starts_with("//") {
                format!("{}{location}", self.base)
            } else {
                location.clone()
            };
            let same = Registry::origin(&next).is_some_and(|o| o.eq_ignore_ascii_case(&self.base));
            if !same {
                return Err(RegistryError::Redirect { from: url, to: shown(&location) });
            }
            url = next;
        }
        Err(RegistryError::Redirect { from: url, to: format!("more than {MAX_REDIRECTS} redirects") })
    }

    /// The digest the tag points at now (a HEAD request), or None if there
    /// is no such tag. A registry that leaves out `Docker-Content-Digest`
    /// costs a GET of the manifest, whose digest is computed from its bytes.
    pub fn tag_digest(&self, tag: &str) -> Result<Option<String>, RegistryError> {
        let url = self.url(&format!("manifests/{tag}"));
        let timeout = self.limits.deadline(0);
        let head = self.call(&url, |u| self.http.head(u).set("Accept", MANIFEST_TYPE).timeout(timeout));
        let header = match head {
            Ok(response) => response.header("Docker-Content-Digest").map(str::to_string),
            Err(RegistryError::Status { code: 404, .. }) => return Ok(None),
            Err(error) => return Err(error),
        };
        if let Some(digest) = header {
            return if is_digest(&digest) { Ok(Some(digest)) } else { Err(RegistryError::BadDigest { value: shown(&digest) }) };
        }
        if !self.told_no_digest.swap(true, Ordering::Relaxed) {
            tracing::warn!(%url, "the registry sends no Docker-Content-Digest header; the agent computes it from the manifest (a GET per poll instead of a HEAD)");
        }
        match self.manifest_bytes(&url, tag) {
            Ok(bytes) => Ok(Some(sha256_digest(&bytes))),
            Err(RegistryError::Status { code: 404, .. }) => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// Up to [`MAX_MANIFEST_BYTES`] of the manifest at `url`.
    fn manifest_bytes(&self, url: &str, what: &str) -> Result<Vec<u8>, RegistryError> {
        let timeout = self.limits.deadline(MAX_MANIFEST_BYTES);
        let response = self.call(url, |u| self.http.get(u).set("Accept", MANIFEST_TYPE).timeout(timeout))?;
        let mut reader = Guarded::new(response.into_reader().take(MAX_MANIFEST_BYTES + 1), self.limits, MAX_MANIFEST_BYTES);
        let mut bytes = Vec::new();
        if let Err(source) = reader.read_to_end(&mut bytes) {
            return Err(reader.failure(format!("reading manifest {}", shown(what)), MAX_MANIFEST_BYTES, source));
        }
        if bytes.len() as u64 > MAX_MANIFEST_BYTES {
            return Err(RegistryError::ManifestTooLarge { digest: shown(what) });
        }
        Ok(bytes)
    }

    /// The manifest at `digest`, checked against it.
    pub fn manifest(&self, digest: &str) -> Result<(Manifest, Vec<u8>), RegistryError> {
        if !is_digest(digest) {
            return Err(RegistryError::BadDigest { value: shown(digest) });
        }
        let bytes = self.manifest_bytes(&self.url(&format!("manifests/{digest}")), digest)?;
        if sha256_digest(&bytes) != digest {
            return Err(RegistryError::ManifestMismatch { digest: digest.to_string() });
        }
        Ok((parse_manifest(&bytes)?, bytes))
    }

    /// A small blob in memory, checked against its descriptor.
    pub fn blob(&self, descriptor: &Descriptor, max: u64) -> Result<Vec<u8>, RegistryError> {
        if descriptor.size > max {
            return Err(RegistryError::TooLarge { digest: descriptor.digest.clone(), size: descriptor.size, max });
        }
        if !is_digest(&descriptor.digest) {
            return Err(RegistryError::BadDigest { value: shown(&descriptor.digest) });
        }
        let what = format!("reading blob {}", descriptor.digest);
        let timeout = self.limits.deadline(descriptor.size);
        let response = self.call(&self.url(&format!("blobs/{}", descriptor.digest)), |u| self.http.get(u).timeout(timeout))?;
        let mut reader = Guarded::new(response.into_reader().take(descriptor.size + 1), self.limits, descriptor.size);
        let mut bytes = Vec::new();
        if let Err(source) = reader.read_to_end(&mut bytes) {
            return Err(reader.failure(what, descriptor.size, source));
        }
        if (bytes.len() as u64) < descriptor.size {
            return Err(RegistryError::Truncated { what, got: bytes.len() as u64, size: descriptor.size });
        }
        if bytes.len() as u64 != descriptor.size || sha256_digest(&bytes) != descriptor.digest {
            return Err(RegistryError::DigestMismatch { digest: descriptor.digest.clone() });
        }
        Ok(bytes)
    }

    /// Streams a blob to `path` (0600), resuming from what a previous attempt
    /// left there, never past the descriptor's size, then checks size and
    /// digest (and deletes the file if they do not match). An answer that
    /// breaks off keeps what arrived, for the next attempt to resume.
    pub fn blob_to_file(&self, descriptor: &Descriptor, path: &Path) -> Result<(), RegistryError> {
        if !is_digest(&descriptor.digest) {
            return Err(RegistryError::BadDigest { value: shown(&descriptor.digest) });
        }
        let have = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        if have > descriptor.size {
            let _ = std::fs::remove_file(path);
        }
        let have = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        let mut resumed = false;
        if have < descriptor.size {
            if have > 0 {
                tracing::info!(digest = %descriptor.digest, have, size = descriptor.size, "resuming an interrupted download");
            }
            let timeout = self.limits.deadline(descriptor.size - have);
            let response = self.call(&self.url(&format!("blobs/{}", descriptor.digest)), |u| {
                let request = self.http.get(u).timeout(timeout);
                if have > 0 { request.set("Range", &format!("bytes={have}-")) } else { request }
            })?;
            resumed = response.status() == 206;
            if resumed && !response.header("Content-Range").is_some_and(|r| r.starts_with(&format!("bytes {have}-"))) {
                let _ = std::fs::remove_file(path);
                return Err(RegistryError::ResumeMismatch { digest: descriptor.digest.clone() });
            }
            let mut file = crate::util::fs::open_private_file(path, false, resumed)?;
            let remaining = if resumed { descriptor.size - have } else { descriptor.size };
            let what = format!("downloading {}", descriptor.digest);
            let mut reader = Guarded::new(response.into_reader().take(remaining), self.limits, remaining);
            let copied = std::io::copy(&mut reader, &mut file);
            file.sync_all().map_err(FileError::at("sync", path))?;
            match copied {
                Err(source) => return Err(reader.failure(what, remaining, source)),
                Ok(n) if n < remaining => return Err(RegistryError::Truncated { what, got: n, size: remaining }),
                Ok(_) => {}
            }
        }
        let size = std::fs::metadata(path).map_err(FileError::at("read", path))?.len();
        let sha256 = sha256_file(path)?;
        if size != descriptor.size || format!("sha256:{sha256}") != descriptor.digest {
            let _ = std::fs::remove_file(path);
            // Bytes from two attempts prove nothing about the release: start over.
            if resumed || have > 0 {
                return Err(RegistryError::ResumeMismatch { digest: descriptor.digest.clone() });
            }
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
        assert!(!mismatch.condemns_release() && mismatch.is_garbled());
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

    /// A one-connection-per-request HTTP server on loopback: what a real
    /// registry cannot be made to do on cue (redirect away, leave out a
    /// header, send 2 MiB, trickle). `answer` gets the request head.
    fn serve(answer: impl Fn(&str, &mut std::net::TcpStream) + Send + 'static) -> (u16, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
        use std::io::{BufRead, BufReader};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = requests.clone();
        std::thread::spawn(move || {
            for mut stream in listener.incoming().flatten() {
                counted.fetch_add(1, Ordering::SeqCst);
                let mut head = String::new();
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                while reader.read_line(&mut head).map(|n| n > 2).unwrap_or(false) {}
                answer(&head, &mut stream);
            }
        });
        (port, requests)
    }

    fn reply(stream: &mut std::net::TcpStream, status: &str, headers: &str, body: &[u8]) {
        use std::io::Write;
        let _ = write!(stream, "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n{headers}\r\n", body.len());
        let _ = stream.write_all(body);
    }

    fn descriptor(bytes: &[u8]) -> Descriptor {
        Descriptor { media_type: FILE_TYPE.into(), digest: sha256_digest(bytes), size: bytes.len() as u64, annotations: BTreeMap::new() }
    }

    #[test]
    fn a_redirect_to_another_host_is_not_followed_and_one_to_the_same_host_is() {
        let (elsewhere, reached) = serve(|_, s| reply(s, "200 OK", "", b"x"));
        let (port, _) = serve(move |head, s| {
            if head.contains("/away") {
                reply(s, "307 Temporary Redirect", &format!("Location: http://localhost:{elsewhere}/blob\r\n"), b"");
            } else if head.contains("/v2/r/blobs/") {
                reply(s, "307 Temporary Redirect", "Location: /here\r\n", b"");
            } else {
                reply(s, "200 OK", "", b"x");
            }
        });
        let registry = Registry::new(&format!("http://127.0.0.1:{port}/r")).unwrap();
        assert_eq!(registry.blob(&descriptor(b"x"), 10).unwrap(), b"x");
        let err = registry.call(&format!("http://127.0.0.1:{port}/away"), |u| registry.http.get(u)).unwrap_err();
        assert!(matches!(err, RegistryError::Redirect { .. }) && !err.condemns_release(), "{err}");
        assert!(err.to_string().contains("not the same scheme, host and port"), "{err}");
        assert_eq!(reached.load(Ordering::SeqCst), 0, "the other host was never asked");
    }

    #[test]
    fn a_missing_digest_header_is_computed_and_an_oversized_manifest_is_named_as_such() {
        let manifest = br#"{"schemaVersion":2,"mediaType":"m","config":{"mediaType":"c","digest":"sha256:0000000000000000000000000000000000000000000000000000000000000000","size":1},"layers":[]}"#;
        let (port, _) = serve(move |head, s| {
            if head.starts_with("HEAD") {
                reply(s, "200 OK", "", b"");
            } else if head.contains("/huge/") {
                reply(s, "200 OK", "", &vec![b' '; 2 << 20]);
            } else {
                reply(s, "200 OK", "", manifest);
            }
        });
        let registry = Registry::new(&format!("http://127.0.0.1:{port}/r")).unwrap();
        let digest = registry.tag_digest("champion").unwrap().unwrap();
        assert_eq!(digest, sha256_digest(manifest));
        assert!(registry.manifest(&digest).is_ok());
        let huge = Registry::new(&format!("http://127.0.0.1:{port}/huge")).unwrap();
        let err = huge.manifest(&digest).unwrap_err();
        assert!(matches!(err, RegistryError::ManifestTooLarge { .. }) && err.to_string().contains("over 1048576 bytes"), "{err}");
        assert!(matches!(huge.manifest("sha256:../../etc"), Err(RegistryError::BadDigest { .. })));
    }

    #[test]
    fn a_bad_digest_header_never_reaches_a_url() {
        let (port, requests) = serve(|_, s| reply(s, "200 OK", "Docker-Content-Digest: sha256:../../../x\r\n", b""));
        let registry = Registry::new(&format!("http://127.0.0.1:{port}/r")).unwrap();
        let err = registry.tag_digest("champion").unwrap_err();
        assert!(matches!(err, RegistryError::BadDigest { .. }) && !err.condemns_release(), "{err}");
        assert_eq!(requests.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_trickle_is_given_up_and_a_broken_off_download_is_kept_to_resume() {
        let body = vec![7u8; 4000];
        let d = descriptor(&body);
        let sent = body.clone();
        let (port, _) = serve(move |head, s| {
            use std::io::Write;
            if head.contains("/slow/") {
                let _ = write!(s, "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", sent.len());
                for b in &sent {
                    if s.write_all(&[*b]).is_err() {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            } else {
                // Half the body, then the connection drops.
                let _ = write!(s, "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", sent.len());
                let _ = s.write_all(&sent[..2000]);
            }
        });
        let limits = TransferLimits { grace: Duration::from_millis(300), min_rate: 1000 };
        let slow = Registry::with_limits(&format!("http://127.0.0.1:{port}/slow"), limits).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let started = Instant::now();
        let err = slow.blob_to_file(&d, &dir.path().join("slow")).unwrap_err();
        assert!(matches!(err, RegistryError::TooSlow { .. }) && !err.condemns_release(), "{err}");
        assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
        let err = slow.blob(&d, 1 << 20).unwrap_err();
        assert!(matches!(err, RegistryError::TooSlow { .. }), "{err}");

        let broken = Registry::with_limits(&format!("http://127.0.0.1:{port}/broken"), limits).unwrap();
        let path = dir.path().join("broken");
        let err = broken.blob_to_file(&d, &path).unwrap_err();
        assert!(matches!(err, RegistryError::Truncated { got: 2000, .. }) && !err.condemns_release(), "{err}");
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 2000, "kept for resuming");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let err = broken.blob(&d, 1 << 20).unwrap_err();
        assert!(matches!(err, RegistryError::Truncated { .. }) && !err.condemns_release(), "{err}");
    }

    mod properties {
        use super::super::*;
        use proptest::prelude::*;

        fn any_descriptor() -> impl Strategy<Value = serde_json::Value> {
            (prop_oneof!["sha256:[0-9a-f]{64}", "sha256:[0-9a-f./]{0,70}", any::<String>()], any::<u64>())
                .prop_map(|(digest, size)| serde_json::json!({"mediaType": "x", "digest": digest, "size": size}))
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

            #[test]
            fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
                let _ = parse_manifest(&bytes);
            }

            #[test]
            fn a_parsed_manifest_names_only_well_formed_digests(
                config in any_descriptor(),
                layers in proptest::collection::vec(any_descriptor(), 0..8),
            ) {
                let value = serde_json::json!({"schemaVersion": 2, "mediaType": MANIFEST_TYPE, "config": config, "layers": layers});
                if let Ok(manifest) = parse_manifest(&serde_json::to_vec(&value).unwrap()) {
                    prop_assert!(manifest.layers.len() <= MAX_LAYERS);
                    for d in std::iter::once(&manifest.config).chain(&manifest.layers) {
                        prop_assert!(is_digest(&d.digest), "{:?}", d.digest);
                        prop_assert!(!d.digest.contains('/') && d.digest.len() == 71);
                    }
                }
            }
        }
    }
}
