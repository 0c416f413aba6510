//! [`RunLock`]: one run per output folder.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// The lock file inside an output folder.
pub const LOCK_FILE: &str = ".kusari.lock";

/// An exclusive claim on an output folder, held until it is dropped or the
/// process ends in any way (the operating system releases the lock of a
/// killed process, so a crash never leaves a folder locked). A second run
/// asking for the same folder gets an error naming the holder.
///
/// It is an advisory `flock` on `OUT/.kusari.lock`, which holds the
/// holder's process id, host and start time for that message; the file
/// itself stays behind and means nothing while no process holds its lock.
#[derive(Debug)]
pub struct RunLock {
    _file: File,
    path: PathBuf,
}

impl RunLock {
    /// Claims `dir` (which must exist), or fails naming the run that holds it.
    pub fn acquire(dir: &Path) -> Result<Self> {
        let path = dir.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| {
                format!(
                    "cannot open the lock file {}; choose a writable folder with --out",
                    path.display()
                )
            })?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                let holder = if holder.is_empty() {
                    "another process".to_string()
                } else {
                    holder.to_string()
                };
                bail!(
                    "{} is in use by another kusari run ({holder}); wait for it to finish \
                     or stop it, or write this run elsewhere with --out",
                    dir.display()
                );
            }
            Err(TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("cannot lock {}", path.display()));
            }
        }
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .unwrap_or_default();
        let started = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let about = format!(
            "process {} on host {}, started at unix time {started}\n",
            std::process::id(),
            host.trim()
        );
        let recorded = file
            .set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| file.write_all(about.as_bytes()));
        recorded.with_context(|| format!("cannot write {}", path.display()))?;
        Ok(Self { _file: file, path })
    }

    /// The lock file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_claim_fails_until_the_first_is_released() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let first = RunLock::acquire(dir.path())?;
        let err = RunLock::acquire(dir.path()).unwrap_err().to_string();
        assert!(err.contains("in use by another kusari run"), "{err}");
        assert!(
            err.contains(&format!("process {}", std::process::id())),
            "{err}"
        );
        drop(first);
        let again = RunLock::acquire(dir.path())?;
        assert!(again.path().ends_with(LOCK_FILE));
        Ok(())
    }
}
