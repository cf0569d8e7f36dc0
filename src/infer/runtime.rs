//! Finds and loads the ONNX Runtime shared library (ort's `load-dynamic`).
//!
//! Order: `ORT_DYLIB_PATH` if set; then `libonnxruntime.so` beside the
//! executable, in its parent folder (so test binaries in `target/release/deps`
//! find the one in `target/release`), in `../lib/cctv-agent` (the installed
//! layout), and finally the system's library search path.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

pub const LIBRARY_NAME: &str = "libonnxruntime.so";

/// Why ONNX Runtime cannot be used; each says where it was looked for or
/// loaded from, and what to do.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("ORT_DYLIB_PATH is {}, which does not exist: fix it or unset it", path.display())]
    EnvPathMissing { path: PathBuf },
    #[error("cannot find the running executable: {0}")]
    Executable(#[source] std::io::Error),
    #[error("ONNX Runtime library ({LIBRARY_NAME}) not found beside {} or in the system library folders: run `make ort` (or install it) or set ORT_DYLIB_PATH", exe.display())]
    NotFound { exe: PathBuf },
    #[error("cannot load ONNX Runtime from {}: {source}. Run `make ort` to fetch it, or set ORT_DYLIB_PATH", path.display())]
    Load { path: PathBuf, #[source] source: ort::LoadDynamicError },
    #[error("cannot start ONNX Runtime from {}: {source}", path.display())]
    Start { path: PathBuf, #[source] source: ort::Error },
}

/// Loaded once: a failure is kept and given to every later caller.
static ENVIRONMENT: OnceLock<Result<ort::environment::Environment, RuntimeError>> = OnceLock::new();

/// The process-wide ONNX Runtime environment, loading the library on first use.
pub fn environment() -> Result<&'static ort::environment::Environment, &'static RuntimeError> {
    ENVIRONMENT.get_or_init(load).as_ref()
}

fn load() -> Result<ort::environment::Environment, RuntimeError> {
    let path = locate()?;
    tracing::debug!(path = %path.display(), "loading ONNX Runtime");
    let builder = ort::init_from(&path).map_err(|source| RuntimeError::Load { path: path.clone(), source })?;
    builder.with_name("cctv-agent").build().map_err(|source| RuntimeError::Start { path, source })
}

/// Where the library will be loaded from.
pub fn locate() -> Result<PathBuf, RuntimeError> {
    if let Some(path) = std::env::var_os("ORT_DYLIB_PATH") {
        let path = PathBuf::from(path);
        return if path.exists() { Ok(path) } else { Err(RuntimeError::EnvPathMissing { path }) };
    }
    let exe = std::env::current_exe().map_err(RuntimeError::Executable)?;
    let exe_dir = exe.parent().unwrap_or(Path::new("."));
    let candidates = [
        exe_dir.join(LIBRARY_NAME),
        exe_dir.join("..").join(LIBRARY_NAME),
        exe_dir.join("../lib/cctv-agent").join(LIBRARY_NAME),
    ];
    if let Some(found) = candidates.iter().find(|p| p.exists()) {
        return Ok(found.clone());
    }
    let system = ["/usr/lib", "/usr/local/lib", "/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu"];
    if let Some(found) = system.iter().map(|d| Path::new(d).join(LIBRARY_NAME)).find(|p| p.exists()) {
        return Ok(found);
    }
    Err(RuntimeError::NotFound { exe })
}
