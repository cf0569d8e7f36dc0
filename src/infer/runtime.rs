//! Finds and loads the ONNX Runtime shared library (ort's `load-dynamic`).
//!
//! Order: `ORT_DYLIB_PATH` if set; then `libonnxruntime.so` beside the
//! executable, in its parent folder (so test binaries in `target/release/deps`
//! find the one in `target/release`), in `../lib/cctv-agent` (the installed
//! layout), and finally the system's library search path.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

pub const LIBRARY_NAME: &str = "libonnxruntime.so";

static ENVIRONMENT: OnceLock<Result<ort::environment::Environment, String>> = OnceLock::new();

/// The process-wide ONNX Runtime environment, loading the library on first use.
pub fn environment() -> Result<&'static ort::environment::Environment, String> {
    ENVIRONMENT.get_or_init(load).as_ref().map_err(Clone::clone)
}

fn load() -> Result<ort::environment::Environment, String> {
    let path = locate()?;
    tracing::debug!(path = %path.display(), "loading ONNX Runtime");
    let builder = ort::init_from(&path).map_err(|e| {
        format!("cannot load ONNX Runtime from {}: {e}. Run `make ort` to fetch it, or set ORT_DYLIB_PATH", path.display())
    })?;
    builder
        .with_name("cctv-agent")
        .build()
        .map_err(|e| format!("cannot start ONNX Runtime from {}: {e}", path.display()))
}

/// Where the library will be loaded from.
pub fn locate() -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os("ORT_DYLIB_PATH") {
        let path = PathBuf::from(path);
        return if path.exists() {
            Ok(path)
        } else {
            Err(format!("ORT_DYLIB_PATH is {}, which does not exist: fix it or unset it", path.display()))
        };
    }
    let exe = std::env::current_exe().map_err(|e| format!("cannot find the running executable: {e}"))?;
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
    Err(format!(
        "ONNX Runtime library ({LIBRARY_NAME}) not found beside {} or in the system library folders: run `make ort` (or install it) or set ORT_DYLIB_PATH",
        exe.display()
    ))
}
