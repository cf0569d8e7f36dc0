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
/// and syncs the folder: after a crash the file is either old or new. The
/// file is created owner-only (0600) whatever the umask: what the agent
/// keeps (baselines, samples, model records) is nobody else's to read.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), FileError> {
    use std::os::unix::fs::OpenOptionsExt;
    use std::sync::atomic::{AtomicU64, Ordering};
    // A name of its own, created new (`create_new` also refuses a link): a
    // file or link already there (`path` may be the user's choice, as
    // `snapshot --out` is) is never written or followed, and two writers
    // never share one. A crash's leftover may hold a name (a container's pid
    // is the same every start): the next number, and the clock, give another.
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let name = path.file_name().map_or_else(|| "file".into(), |n| n.to_string_lossy().to_string());
    let mut attempt = 0;
    let (tmp, mut file) = loop {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
        let tmp = path.with_file_name(format!(".{name}.{}-{}-{nanos}.tmp", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed)));
        match std::fs::OpenOptions::new().write(true).create_new(true).mode(PRIVATE_FILE).open(&tmp) {
            Ok(file) => break (tmp, file),
            Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists && attempt < 8 => attempt += 1,
            Err(error) => return Err(FileError::new("write", &tmp, error)),
        }
    };
    // On the handle, not the name: the umask may have taken bits `mode` asked for.
    let written = file
        .set_permissions(std::os::unix::fs::PermissionsExt::from_mode(PRIVATE_FILE))
        .and_then(|()| file.write_all(bytes))
        .and_then(|()| file.sync_all())
        .map_err(FileError::at("write", &tmp))
        .and_then(|()| std::fs::rename(&tmp, path).map_err(FileError::at("rename a file to", path)));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written?;
    if let Some(dir) = path.parent() {
        let _ = std::fs::File::open(dir).and_then(|d| d.sync_all());
    }
    Ok(())
}

/// Owner read and write.
pub const PRIVATE_FILE: u32 = 0o600;
/// Owner only.
pub const PRIVATE_DIR: u32 = 0o700;

fn set_mode(path: &Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

/// `create_dir_all`, with every folder it creates owner-only (0700)
/// whatever the umask. Folders that already exist keep their mode (an
/// operator may have opened one up on purpose), except `dir` itself when
/// it was just made.
pub fn create_private_dir_all(dir: &Path) -> Result<(), FileError> {
    use std::os::unix::fs::DirBuilderExt;
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new().recursive(true).mode(PRIVATE_DIR).create(dir).map_err(FileError::at("create", dir))?;
    // The umask can only take bits away from 0700; this puts none back, but
    // says what is meant if the umask was odd (e.g. 0100).
    set_mode(dir, PRIVATE_DIR).map_err(FileError::at("create", dir))
}

/// Creates `dir` if needed (owner-only, see [`create_private_dir_all`]) and
/// proves it can be written by creating and removing a file in it.
pub fn check_writable_dir(dir: &Path) -> Result<(), FileError> {
    use std::os::unix::fs::OpenOptionsExt;
    create_private_dir_all(dir)?;
    let probe = dir.join(format!(".write-check-{}", std::process::id()));
    std::fs::OpenOptions::new().write(true).create_new(true).mode(PRIVATE_FILE).open(&probe).map_err(FileError::at("create a file in", dir))?;
    std::fs::remove_file(&probe).map_err(FileError::at("remove a file from", dir))
}

/// Opens `path` for writing as an owner-only (0600) file: `new` refuses an
/// existing one (keys); otherwise an existing file is truncated, or kept
/// with `append` (resumed downloads), and its mode corrected.
pub fn open_private_file(path: &Path, new: bool, append: bool) -> Result<std::fs::File, FileError> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = std::fs::OpenOptions::new();
    // A symlink planted where a download or key goes is not written through.
    options.write(true).mode(PRIVATE_FILE).custom_flags(libc::O_NOFOLLOW);
    if new {
        options.create_new(true);
    } else {
        options.create(true).append(append).truncate(!append);
    }
    let file = options.open(path).map_err(FileError::at("write", path))?;
    set_mode(path, PRIVATE_FILE).map_err(FileError::at("set the mode of", path))?;
    Ok(file)
}

/// Copies `from` into a new owner-only file `to` and syncs it
/// (`std::fs::copy` would carry the source's mode over).
pub fn copy_private(from: &Path, to: &Path) -> Result<(), FileError> {
    let mut source = std::fs::File::open(from).map_err(FileError::at("read", from))?;
    let mut target = open_private_file(to, false, false)?;
    std::io::copy(&mut source, &mut target).map_err(FileError::at("write", to))?;
    target.sync_all().map_err(FileError::at("write", to))
}

/// Makes sure `file` is owner-only (0600), e.g. one a library created.
pub fn make_private(file: &Path) -> Result<(), FileError> {
    set_mode(file, PRIVATE_FILE).map_err(FileError::at("set the mode of", file))
}

/// Reads a small file an operator pointed the agent at (a password, a
/// config, a certificate): only a regular file — a FIFO would block the
/// read for ever, `/dev/zero` would never end — and at most `max_bytes`.
pub fn read_regular_file(path: &Path, max_bytes: u64) -> std::io::Result<Vec<u8>> {
    use std::io::{Error, ErrorKind};
    check_regular_file(path)?;
    let mut bytes = Vec::new();
    std::fs::File::open(path)?.take(max_bytes + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max_bytes {
        return Err(Error::new(ErrorKind::InvalidData, format!("is larger than {max_bytes} bytes")));
    }
    Ok(bytes)
}

/// Refuses anything but a regular file (after symlinks), without opening it.
pub fn check_regular_file(path: &Path) -> std::io::Result<()> {
    if std::fs::metadata(path)?.is_file() {
        Ok(())
    } else {
        Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "is not a regular file"))
    }
}

/// Why [`lock_dir`] failed.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("another process holds {}", .0.display())]
    Held(PathBuf),
    #[error(transparent)]
    File(#[from] FileError),
}

/// Takes an exclusive lock on `dir/name` for as long as the returned file
/// lives (the kernel drops it when the process ends, however it ends).
pub fn lock_dir(dir: &Path, name: &str) -> Result<std::fs::File, LockError> {
    use std::os::fd::AsRawFd;
    let path = dir.join(name);
    let file = open_private_file(&path, false, true)?;
    // SAFETY: flock on a descriptor this function owns.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let error = std::io::Error::last_os_error();
        return Err(match error.raw_os_error() {
            Some(libc::EWOULDBLOCK) => LockError::Held(path),
            _ => LockError::File(FileError::new("lock", &path, error)),
        });
    }
    Ok(file)
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

/// A camera id as part of a file name, injectively: ASCII letters, digits
/// and `-` stay, every other byte (`_` too) becomes `_xx` (lowercase hex),
/// so `cam.1` → `cam_2e1` and `cam_1` → `cam_5f1` never meet, and
/// [`file_safe_decode`] gives the id back.
pub fn file_safe(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' {
            out.push(b as char);
        } else {
            out.push_str(&format!("_{b:02x}"));
        }
    }
    out
}

/// The name [`file_safe`] was given, or None if `safe` is not one of its results.
pub fn file_safe_decode(safe: &str) -> Option<String> {
    let mut bytes = Vec::with_capacity(safe.len());
    let mut rest = safe.as_bytes();
    while let Some((&b, tail)) = rest.split_first() {
        if b == b'_' {
            let hex = std::str::from_utf8(tail.get(..2)?).ok()?;
            if hex.bytes().any(|c| c.is_ascii_uppercase()) {
                return None;
            }
            bytes.push(u8::from_str_radix(hex, 16).ok()?);
            rest = &tail[2..];
        } else if b.is_ascii_alphanumeric() || b == b'-' {
            bytes.push(b);
            rest = tail;
        } else {
            return None;
        }
    }
    String::from_utf8(bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn file_safe_names_are_distinct_for_distinct_ids_and_decode_back() {
        let ids = ["cam.1", "cam_1", "cam-1", "cam 1", "cam_2e1", "Cam.1", "北门", "南门", "", "_", "__"];
        let names: std::collections::HashSet<String> = ids.iter().map(|id| file_safe(id)).collect();
        assert_eq!(names.len(), ids.len(), "{names:?}");
        for id in ids {
            let safe = file_safe(id);
            assert!(safe.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'), "{safe}");
            assert_eq!(file_safe_decode(&safe).as_deref(), Some(id));
        }
        assert_eq!((file_safe("cam.1").as_str(), file_safe("cam_1").as_str(), file_safe("road").as_str()), ("cam_2e1", "cam_5f1", "road"));
        assert_eq!(file_safe_decode("cam.1"), None);
        assert_eq!(file_safe_decode("cam_2"), None);
    }

    proptest::proptest! {
        #[test]
        fn file_safe_is_injective(a in ".{0,12}", b in ".{0,12}") {
            proptest::prop_assert_eq!(file_safe(&a) == file_safe(&b), a == b);
            proptest::prop_assert_eq!(file_safe_decode(&file_safe(&a)), Some(a));
        }
    }

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn only_bounded_regular_files_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
        // A FIFO would block the read for ever; /dev/zero would never end.
        for path in [fifo.as_path(), Path::new("/dev/zero"), dir.path()] {
            let error = read_regular_file(path, 4096).unwrap_err();
            assert!(error.to_string().contains("not a regular file"), "{}: {error}", path.display());
        }
        let big = dir.path().join("big");
        std::fs::write(&big, vec![b'x'; 4097]).unwrap();
        assert!(read_regular_file(&big, 4096).unwrap_err().to_string().contains("larger than 4096 bytes"));
        std::fs::write(&big, b"secret\n").unwrap();
        assert_eq!(read_regular_file(&big, 4096).unwrap(), b"secret\n");
    }

    #[test]
    fn a_second_lock_on_a_folder_is_refused_while_the_first_is_held() {
        let dir = tempfile::tempdir().unwrap();
        let first = lock_dir(dir.path(), "agent.lock").unwrap();
        assert!(matches!(lock_dir(dir.path(), "agent.lock"), Err(LockError::Held(_))));
        drop(first);
        lock_dir(dir.path(), "agent.lock").unwrap();
    }

    #[test]
    fn a_symlink_where_a_private_file_goes_is_not_written_through() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"precious").unwrap();
        std::os::unix::fs::symlink(&victim, dir.path().join("download")).unwrap();
        assert!(open_private_file(&dir.path().join("download"), false, true).is_err());
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    }

    #[test]
    fn private_folders_and_atomic_writes_are_owner_only_whatever_the_umask() {
        let root = tempfile::tempdir().unwrap();
        // SAFETY: umask only changes this process's file-creation mask; the
        // other tests in this binary create files that do not check modes.
        let old = unsafe { libc::umask(0o022) };
        let dir = root.path().join("a/b");
        let made = create_private_dir_all(&dir);
        let file = dir.join("f.json");
        std::fs::write(dir.join("f.tmp"), b"left over").unwrap();
        std::fs::set_permissions(dir.join("f.tmp"), std::fs::Permissions::from_mode(0o644)).unwrap();
        let written = write_atomically(&file, b"{}");
        let copied = copy_private(&file, &dir.join("copy"));
        let opened = open_private_file(&dir.join("key"), true, false);
        unsafe { libc::umask(old) };
        made.unwrap();
        written.unwrap();
        copied.unwrap();
        drop(opened.unwrap());
        assert_eq!((mode(&root.path().join("a")), mode(&dir), mode(&file)), (0o700, 0o700, 0o600));
        assert_eq!((mode(&dir.join("copy")), mode(&dir.join("key"))), (0o600, 0o600));
        assert_eq!(std::fs::read(&file).unwrap(), b"{}");
        assert!(open_private_file(&dir.join("key"), true, false).is_err(), "`new` refuses an existing file");
        assert_eq!(std::fs::read(dir.join("f.tmp")).unwrap(), b"left over", "a file that happens to be named like a temporary one is not touched");
    }

    /// Found by attacking `snapshot --out`: the temporary file was `<out>.tmp`,
    /// truncated and followed if it was a link.
    #[test]
    fn an_atomic_write_follows_no_link_and_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim.txt");
        std::fs::write(&victim, b"precious").unwrap();
        std::os::unix::fs::symlink(&victim, dir.path().join("out.tmp")).unwrap();
        write_atomically(&dir.path().join("out.jpg"), b"picture").unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        assert_eq!(std::fs::read(dir.path().join("out.jpg")).unwrap(), b"picture");
        // Onto a folder: refused, and no temporary file left beside it.
        std::fs::create_dir(dir.path().join("folder")).unwrap();
        assert!(write_atomically(&dir.path().join("folder"), b"x").is_err());
        let names: Vec<String> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().to_string()).collect();
        assert!(names.iter().all(|n| !n.starts_with('.')), "{names:?}");
    }
}
