//! Crash-safe, durable file writing: write to a temporary name, flush the
//! contents to the disk, rename, then flush the folder, so that a reader
//! never sees a half-written file and a file renamed into place survives a
//! power loss with its contents.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// Writes `bytes` to `path` atomically and durably (temporary file in the
/// same folder, synced, renamed, folder synced).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut file = AtomicFile::create(path)?;
    file.write_all(bytes)
        .with_context(|| format!("cannot write {}", path.display()))?;
    file.commit()
}

/// A file written under a temporary name that appears at its path, complete
/// and synced, on [`AtomicFile::commit`]; dropped without a commit (an
/// error, a panic) it is removed. For outputs too large to build in memory.
pub struct AtomicFile {
    path: PathBuf,
    tmp: PathBuf,
    file: Option<std::io::BufWriter<File>>,
}

impl AtomicFile {
    /// Opens the temporary file beside `path`.
    pub fn create(path: &Path) -> Result<Self> {
        let tmp = temp_sibling(path);
        let file = File::create(&tmp).with_context(|| {
            format!(
                "cannot write {}; check that its folder exists and is writable",
                path.display()
            )
        })?;
        Ok(Self {
            path: path.to_path_buf(),
            tmp,
            file: Some(std::io::BufWriter::with_capacity(1 << 20, file)),
        })
    }

    /// Syncs the contents, renames the file into place and syncs its folder.
    pub fn commit(mut self) -> Result<()> {
        let writer = self.file.take().expect("an uncommitted file");
        let result = (|| -> std::io::Result<()> {
            let file = writer.into_inner().map_err(|e| e.into_error())?;
            file.sync_all()?;
            drop(file);
            std::fs::rename(&self.tmp, &self.path)?;
            sync_parent(&self.path)
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&self.tmp);
        }
        result.with_context(|| {
            format!(
                "cannot write {}; check that the disk has room",
                self.path.display()
            )
        })
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.file.as_mut().expect("an uncommitted file").write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.as_mut().expect("an uncommitted file").flush()
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// Creates the folder `path` atomically: `fill` writes into a temporary
/// folder, whose files are then synced before it is renamed into place. An
/// existing folder at `path` is replaced.
pub fn write_dir_atomic(path: &Path, fill: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let tmp = temp_sibling(path);
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp)
        .with_context(|| format!("cannot create folder {}", tmp.display()))?;
    let result = fill(&tmp)
        .and_then(|()| {
            sync_folder_contents(&tmp).with_context(|| format!("cannot sync {}", tmp.display()))
        })
        .and_then(|()| {
            if path.exists() {
                std::fs::remove_dir_all(path)
                    .with_context(|| format!("cannot replace {}", path.display()))?;
            }
            std::fs::rename(&tmp, path)
                .and_then(|()| sync_parent(path))
                .with_context(|| format!("cannot write {}", path.display()))
        });
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    result
}

/// Syncs every file in `dir` (not below it) and `dir` itself.
fn sync_folder_contents(dir: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            File::open(entry.path())?.sync_all()?;
        }
    }
    File::open(dir)?.sync_all()
}

/// Syncs the folder holding `path`, so that a rename into it is durable.
fn sync_parent(path: &Path) -> std::io::Result<()> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    File::open(parent)?.sync_all()
}

/// Gives `path` the permissions a newly created file gets (0666 less the
/// umask): writers that create through a private temporary file (the
/// safetensors crate) leave 0600 behind.
pub fn give_default_permissions(path: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let umask = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|status| {
                let line = status.lines().find(|l| l.starts_with("Umask:"))?;
                u32::from_str_radix(line["Umask:".len()..].trim(), 8).ok()
            })
            .unwrap_or(0o022);
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666 & !umask))
            .with_context(|| format!("cannot set the permissions of {}", path.display()))?;
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

/// The suffix of every temporary name kusari writes.
const TEMP_SUFFIX: &str = ".tmp";

/// A hidden temporary name beside `path`, unique to this process:
/// `.NAME.PID.tmp`.
pub fn temp_sibling(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.{}{TEMP_SUFFIX}", std::process::id()))
}

/// The process id in a temporary name written by [`temp_sibling`] (or a
/// write probe of [`ensure_writable_dir`]).
fn temporary_owner(name: &str) -> Option<u32> {
    let rest = name.strip_prefix('.')?;
    let digits = match rest.strip_suffix(TEMP_SUFFIX) {
        Some(stem) => stem.rsplit_once('.')?.1,
        None => rest.strip_prefix(PROBE_PREFIX)?,
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Removes the temporary files and folders in `dir` that a killed kusari
/// process left (an interrupted snapshot, log or image write): those of
/// processes no longer running on this machine. Call it while holding the
/// folder's [`RunLock`], so that no other run writes there. Returns what
/// was removed.
pub fn remove_stale_temporaries(dir: &Path) -> Result<Vec<PathBuf>> {
    let own = std::process::id();
    let mut removed = vec![];
    let listing = match std::fs::read_dir(dir) {
        Ok(listing) => listing,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(removed),
        Err(e) => return Err(e).with_context(|| format!("cannot list {}", dir.display())),
    };
    for entry in listing {
        let entry = entry.with_context(|| format!("cannot list {}", dir.display()))?;
        let Some(owner) = entry.file_name().to_str().and_then(temporary_owner) else {
            continue;
        };
        if owner == own || process_is_running(owner) {
            continue;
        }
        let path = entry.path();
        let gone = if entry.file_type()?.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        gone.with_context(|| format!("cannot remove the stale temporary {}", path.display()))?;
        removed.push(path);
    }
    Ok(removed)
}

/// Whether a process with this id runs on this machine (Linux: /proc; elsewhere
/// every process is assumed alive, so nothing is removed by mistake).
fn process_is_running(pid: u32) -> bool {
    if cfg!(target_os = "linux") {
        Path::new("/proc").join(pid.to_string()).exists()
    } else {
        true
    }
}

const PROBE_PREFIX: &str = "kusari-write-test.";

/// Makes sure `dir` exists and is writable, with an error that says how to fix it.
pub fn ensure_writable_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| {
        format!(
            "cannot create output folder {}; choose a writable folder with --out",
            dir.display()
        )
    })?;
    let probe = dir.join(format!(".{PROBE_PREFIX}{}", std::process::id()));
    std::fs::write(&probe, b"").with_context(|| {
        format!(
            "output folder {} is not writable; choose a writable folder with --out",
            dir.display()
        )
    })?;
    let _ = std::fs::remove_file(probe);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_writes_leave_no_temporaries() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let file = dir.path().join("log");
        write_atomic(&file, b"one")?;
        write_atomic(&file, b"two")?;
        assert_eq!(std::fs::read(&file)?, b"two");
        let sub = dir.path().join("snap");
        write_dir_atomic(&sub, |tmp| Ok(std::fs::write(tmp.join("a"), b"x")?))?;
        assert!(sub.join("a").exists());
        let failed = write_dir_atomic(&dir.path().join("bad"), |_| anyhow::bail!("boom"));
        assert!(failed.is_err());
        {
            let mut dropped = AtomicFile::create(&dir.path().join("never"))?;
            dropped.write_all(b"half")?;
        }
        let names: Vec<_> = std::fs::read_dir(dir.path())?
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert!(names.iter().all(|n| !n.ends_with(".tmp")), "{names:?}");
        assert!(!dir.path().join("bad").exists());
        assert!(!dir.path().join("never").exists());
        Ok(())
    }

    #[test]
    fn temporaries_of_dead_processes_are_removed_and_nothing_else() -> Result<()> {
        let dir = tempfile::tempdir()?;
        // A pid above Linux's largest (4194304) belongs to no process.
        let dead = 4_194_400u32;
        let stale = [
            format!(".snapshot_iter_5.{dead}.tmp"),
            format!(".log.{dead}.tmp"),
            format!(".{PROBE_PREFIX}{dead}"),
        ];
        let kept = [
            format!(".log.{}.tmp", std::process::id()),
            "log".to_string(),
            ".hidden.tmp".to_string(),
            format!("snapshot_iter_{dead}"),
            format!(".log.{dead}x.tmp"),
        ];
        std::fs::create_dir(dir.path().join(&stale[0]))?;
        std::fs::write(dir.path().join(&stale[0]).join("state.json"), b"{")?;
        for name in stale[1..].iter().chain(&kept) {
            std::fs::write(dir.path().join(name), b"x")?;
        }
        let mut removed = remove_stale_temporaries(dir.path())?;
        removed.sort();
        let mut expected: Vec<PathBuf> = stale.iter().map(|n| dir.path().join(n)).collect();
        expected.sort();
        assert_eq!(removed, expected);
        for name in &kept {
            assert!(dir.path().join(name).exists(), "{name} was removed");
        }
        Ok(())
    }
}
