//! File helpers shared by the wings: atomic writes, free space, hashing,
//! and file-safe names.

use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// A file operation that failed, with the path it was about.
#[derive(Debug, thiserror::Error)]
#[error("cannot {action} {}: {source}", path.display())]
pub struct FileError {
    pub action: &'static str,
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

impl FileError {
    pub fn new(action: &'static str, path: &Path, source: std::io::Error) -> FileError {
        FileError { action, path: path.to_path_buf(), source }
    }

    /// A closure for `map_err`: `read(path).map_err(FileError::at("read", path))`.
    pub fn at<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> FileError + 'a {
        move |source| FileError::new(action, path, source)
    }
}

/// Writes `bytes` to `path` through a temporary file, synced, then renamed,
/// and syncs the folder: after a crash the file is either old or new.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), FileError> {
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::File::create(&tmp).map_err(FileError::at("write", &tmp))?;
    file.write_all(bytes).and_then(|()| file.sync_all()).map_err(FileError::at("write", &tmp))?;
    std::fs::rename(&tmp, path).map_err(FileError::at("rename a file to", path))?;
    if let Some(dir) = path.parent() {
        let _ = std::fs::File::open(dir).and_then(|d| d.sync_all());
    }
    Ok(())
}

/// Free bytes for unprivileged writers on the file system holding `folder`.
pub fn free_bytes(folder: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(folder.as_os_str().as_bytes()).ok()?;
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid NUL-terminated path and a zeroed out-parameter.
    if unsafe { libc::statvfs(path.as_ptr(), &mut stat) } != 0 {
        return None;
    }
    Some(stat.f_bavail as u64 * stat.f_frsize as u64)
}

/// The sha256 of a file as lowercase hex, read in 64 KiB pieces.
pub fn sha256_file(path: &Path) -> Result<String, FileError> {
    let mut file = std::fs::File::open(path).map_err(FileError::at("read", path))?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buffer).map_err(FileError::at("read", path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

/// Bytes as lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A camera id as part of a file name: anything but letters, digits, `-` and `_` becomes `_`.
pub fn file_safe(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect()
}
