//! Crash-safe file writing: write to a temporary name, then rename, so that
//! a reader never sees a half-written file.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// Writes `bytes` to `path` atomically (temporary file in the same folder, then rename).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = temp_sibling(path);
    let result = (|| {
        std::fs::write(&tmp, bytes)?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.with_context(|| format!("cannot write {}", path.display()))
}

/// Creates the folder `path` atomically: `fill` writes into a temporary
/// folder which is then renamed into place. An existing folder at `path` is
/// replaced.
pub fn write_dir_atomic(path: &Path, fill: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let tmp = temp_sibling(path);
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp)
        .with_context(|| format!("cannot create folder {}", tmp.display()))?;
    let result = fill(&tmp).and_then(|()| {
        if path.exists() {
            std::fs::remove_dir_all(path)
                .with_context(|| format!("cannot replace {}", path.display()))?;
        }
        std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
    });
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    result
}

/// A hidden temporary name beside `path`, unique to this process.
pub fn temp_sibling(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.{}.tmp", std::process::id()))
}

/// Makes sure `dir` exists and is writable, with an error that says how to fix it.
pub fn ensure_writable_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| {
        format!(
            "cannot create output folder {}; choose a writable folder with --out",
            dir.display()
        )
    })?;
    let probe = dir.join(format!(".kusari-write-test.{}", std::process::id()));
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
        let names: Vec<_> = std::fs::read_dir(dir.path())?
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert!(names.iter().all(|n| !n.ends_with(".tmp")), "{names:?}");
        assert!(!dir.path().join("bad").exists());
        Ok(())
    }
}
