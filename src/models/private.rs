//! Files of the models wing — installed releases, staging, the store's
//! pointers, the trainer's keys — are created owner-only (0600 files, 0700
//! folders) whatever the umask: systemd's `UMask=0077` covers only the
//! service, not `cctv-agent release` or a hand-started agent. A mode given
//! at creation is still masked by the umask, so each is set again exactly.

use std::fs::{DirBuilder, File, OpenOptions, Permissions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use crate::util::fs::FileError;

pub const FILE_MODE: u32 = 0o600;
pub const DIR_MODE: u32 = 0o700;

/// Creates `dir` and any missing parents as 0700. A folder that already
/// exists keeps its mode: it may be the operator's (`release keygen --dir .`).
pub fn create_dir(dir: &Path) -> Result<(), FileError> {
    if dir.is_dir() {
        return Ok(());
    }
    DirBuilder::new().recursive(true).mode(DIR_MODE).create(dir).map_err(FileError::at("create", dir))?;
    std::fs::set_permissions(dir, Permissions::from_mode(DIR_MODE)).map_err(FileError::at("set the mode of", dir))
}

/// Opens `path` for writing as a 0600 file; `new` refuses an existing one
/// (keys), otherwise an existing file is truncated (`append` keeps it, for
/// resuming) and its mode corrected.
pub fn open_file(path: &Path, new: bool, append: bool) -> Result<File, FileError> {
    let mut options = OpenOptions::new();
    options.write(true).mode(FILE_MODE);
    if new {
        options.create_new(true);
    } else {
        options.create(true).append(append).truncate(!append);
    }
    let file = options.open(path).map_err(FileError::at("write", path))?;
    file.set_permissions(Permissions::from_mode(FILE_MODE)).map_err(FileError::at("set the mode of", path))?;
    Ok(file)
}

/// Writes a 0600 file atomically: temp file, fsync, rename, fsync the folder.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), FileError> {
    let tmp = path.with_extension("tmp");
    let mut file = open_file(&tmp, false, false)?;
    file.write_all(bytes).and_then(|()| file.sync_all()).map_err(FileError::at("write", &tmp))?;
    std::fs::rename(&tmp, path).map_err(FileError::at("rename into", path))?;
    if let Some(parent) = path.parent() {
        let _ = File::open(parent).and_then(|d| d.sync_all());
    }
    Ok(())
}

/// Copies `from` into a new 0600 file `to` and syncs it (`std::fs::copy`
/// would carry the source's mode over).
pub fn copy(from: &Path, to: &Path) -> Result<(), FileError> {
    let mut source = File::open(from).map_err(FileError::at("read", from))?;
    let mut target = open_file(to, false, false)?;
    std::io::copy(&mut source, &mut target).map_err(FileError::at("write", to))?;
    target.sync_all().map_err(FileError::at("sync", to))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn files_and_folders_are_owner_only_whatever_the_umask() {
        let dir = tempfile::tempdir().unwrap();
        // SAFETY: umask only changes this process's default; the test restores it.
        let old = unsafe { libc::umask(0o000) };
        let folder = dir.path().join("a/b");
        create_dir(&folder).unwrap();
        write_atomically(&folder.join("f"), b"x").unwrap();
        copy(&folder.join("f"), &folder.join("g")).unwrap();
        drop(open_file(&folder.join("h"), true, false).unwrap());
        unsafe { libc::umask(old) };
        assert_eq!((mode(&folder), mode(&dir.path().join("a"))), (0o700, 0o700));
        for f in ["f", "g", "h"] {
            assert_eq!(mode(&folder.join(f)), 0o600, "{f}");
        }
        assert!(open_file(&folder.join("h"), true, false).is_err(), "new refuses an existing file");
    }
}
