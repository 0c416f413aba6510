//! The IDX file format of MNIST: a big-endian header (magic number, then one
//! `u32` per dimension) followed by the raw `u8` data, often gzip-compressed.

use std::io::Read;
use std::path::Path;

use anyhow::{bail, Context, Result};

/// Magic number of an IDX file of `u8` images (3 dimensions).
pub(crate) const IMAGES_MAGIC: u32 = 2051;
/// Magic number of an IDX file of `u8` labels (1 dimension).
pub(crate) const LABELS_MAGIC: u32 = 2049;

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// `count` images of `rows × cols` bytes, row-major, back to back.
pub(crate) struct IdxImages {
    pub count: usize,
    pub rows: usize,
    pub cols: usize,
    pub pixels: Vec<u8>,
}

/// The advice that ends every "this file is damaged" error.
fn redownload_hint(path: &Path) -> String {
    format!(
        "delete {} and download it again (kusari downloads missing files into data/mnist by itself)",
        path.display()
    )
}

/// The bytes of `path`, gunzipped when they start with the gzip magic.
pub(crate) fn read_maybe_gz(path: &Path) -> Result<Vec<u8>> {
    let raw = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    if !raw.starts_with(&GZIP_MAGIC) {
        return Ok(raw);
    }
    gunzip(&raw).map_err(|e| {
        let problem = match e.downcast_ref::<GunzipError>() {
            Some(GunzipError::TooLarge) => format!(
                "{} inflates past {} MB, far more than any IDX file of MNIST's (47 MB); it is \
                 not an MNIST file, or it is damaged",
                path.display(),
                MAX_INFLATED >> 20
            ),
            Some(GunzipError::Truncated) => format!(
                "{} is not a complete gzip file; it is truncated",
                path.display()
            ),
            _ => format!("{} is a damaged gzip file ({e})", path.display()),
        };
        anyhow::anyhow!("{problem}: {}", redownload_hint(path))
    })
}

/// The most a gzip file may inflate to: bounds memory against a damaged or
/// hostile file (MNIST's largest is 47 MB).
pub(crate) const MAX_INFLATED: u64 = 1 << 30;

/// Why a gzip file could not be inflated.
#[derive(Debug)]
pub(crate) enum GunzipError {
    /// It ends before its last member does.
    Truncated,
    /// It inflates past [`MAX_INFLATED`].
    TooLarge,
    /// Its data is not valid deflate or gzip.
    Damaged(std::io::Error),
}

impl std::fmt::Display for GunzipError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Truncated => f.write_str("the gzip data ends early"),
            Self::TooLarge => f.write_str("the gzip data inflates past the bound"),
            Self::Damaged(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for GunzipError {}

/// Decompresses a whole gzip file held in memory, up to [`MAX_INFLATED`] bytes.
pub(crate) fn gunzip(gz: &[u8]) -> Result<Vec<u8>> {
    gunzip_at_most(gz, MAX_INFLATED)
}

/// [`gunzip`] with another bound.
fn gunzip_at_most(gz: &[u8], limit: u64) -> Result<Vec<u8>> {
    // The trailer's ISIZE (length mod 2^32) sizes the buffer up front; capped
    // so that a damaged trailer cannot request a huge allocation.
    let hint = gz
        .len()
        .checked_sub(4)
        .map(|at| u32::from_le_bytes([gz[at], gz[at + 1], gz[at + 2], gz[at + 3]]) as usize)
        .unwrap_or(0)
        .min(256 << 20);
    let mut out = Vec::with_capacity(hint);
    let mut reader = flate2::read::MultiGzDecoder::new(gz).take(limit + 1);
    match reader.read_to_end(&mut out) {
        Ok(_) if out.len() as u64 > limit => Err(GunzipError::TooLarge.into()),
        Ok(_) => Ok(out),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            Err(GunzipError::Truncated.into())
        }
        Err(e) => Err(GunzipError::Damaged(e).into()),
    }
}

fn header_u32(bytes: &[u8], index: usize) -> u32 {
    u32::from_be_bytes(bytes[index * 4..index * 4 + 4].try_into().unwrap())
}

fn check_magic(bytes: &[u8], path: &Path, expected: u32, what: &str) -> Result<()> {
    if bytes.len() < 4 {
        bail!(
            "{} holds {} bytes, too few for an IDX header; it is truncated: {}",
            path.display(),
            bytes.len(),
            redownload_hint(path)
        );
    }
    let magic = header_u32(bytes, 0);
    if magic != expected {
        bail!(
            "{} is not an IDX {what} file: its magic number is {magic} (0x{magic:08x}), expected {expected}; \
             check that the right file is in the right place, or {}",
            path.display(),
            redownload_hint(path)
        );
    }
    Ok(())
}

/// Checks that exactly `header + data` bytes are present.
fn check_length(bytes: &[u8], path: &Path, header: usize, data: u64, what: &str) -> Result<()> {
    let expected = header as u64 + data;
    let actual = bytes.len() as u64;
    if actual < expected {
        bail!(
            "{} is truncated: its header promises {what} ({expected} bytes) but the file holds {actual} bytes: {}",
            path.display(),
            redownload_hint(path)
        );
    }
    if actual > expected {
        bail!(
            "{} has {} bytes more than its header promises ({what}, {expected} bytes); it is not a valid IDX file: {}",
            path.display(),
            actual - expected,
            redownload_hint(path)
        );
    }
    Ok(())
}

/// Parses an IDX images file (magic 2051) already read into memory.
pub(crate) fn parse_images(mut bytes: Vec<u8>, path: &Path) -> Result<IdxImages> {
    const HEADER: usize = 16;
    check_magic(&bytes, path, IMAGES_MAGIC, "images")?;
    if bytes.len() < HEADER {
        bail!(
            "{} is truncated: it ends inside its {HEADER}-byte header: {}",
            path.display(),
            redownload_hint(path)
        );
    }
    let [count, rows, cols] = [1, 2, 3].map(|i| header_u32(&bytes, i) as usize);
    let data = count as u64 * rows as u64 * cols as u64;
    check_length(
        &bytes,
        path,
        HEADER,
        data,
        &format!("{count} images of {rows}×{cols}"),
    )?;
    bytes.drain(..HEADER);
    Ok(IdxImages {
        count,
        rows,
        cols,
        pixels: bytes,
    })
}

/// Parses an IDX labels file (magic 2049) already read into memory.
pub(crate) fn parse_labels(mut bytes: Vec<u8>, path: &Path) -> Result<Vec<u8>> {
    const HEADER: usize = 8;
    check_magic(&bytes, path, LABELS_MAGIC, "labels")?;
    if bytes.len() < HEADER {
        bail!(
            "{} is truncated: it ends inside its {HEADER}-byte header: {}",
            path.display(),
            redownload_hint(path)
        );
    }
    let count = header_u32(&bytes, 1) as usize;
    check_length(
        &bytes,
        path,
        HEADER,
        count as u64,
        &format!("{count} labels"),
    )?;
    bytes.drain(..HEADER);
    Ok(bytes)
}

/// The bytes of an IDX images file holding `pixels` (`count` images of
/// `rows × cols`): for tests and for writing subsets.
pub(crate) fn encode_images(pixels: &[u8], rows: usize, cols: usize) -> Vec<u8> {
    let count = pixels.len() / (rows * cols);
    let mut out = Vec::with_capacity(16 + pixels.len());
    for v in [IMAGES_MAGIC, count as u32, rows as u32, cols as u32] {
        out.extend_from_slice(&v.to_be_bytes());
    }
    out.extend_from_slice(pixels);
    out
}

/// The bytes of an IDX labels file holding `labels`.
pub(crate) fn encode_labels(labels: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + labels.len());
    for v in [LABELS_MAGIC, labels.len() as u32] {
        out.extend_from_slice(&v.to_be_bytes());
    }
    out.extend_from_slice(labels);
    out
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(bytes).unwrap();
        gz.finish().unwrap()
    }

    #[test]
    fn gzip_that_inflates_too_far_is_named_as_such_not_as_truncated() {
        let gz = gzip(&vec![0u8; 5000]);
        assert_eq!(gunzip_at_most(&gz, 5000).unwrap().len(), 5000);
        let err = gunzip_at_most(&gz, 4999).unwrap_err();
        assert!(
            matches!(err.downcast_ref(), Some(GunzipError::TooLarge)),
            "{err}"
        );
        let err = gunzip_at_most(&gz[..gz.len() - 10], 5000).unwrap_err();
        assert!(
            matches!(err.downcast_ref(), Some(GunzipError::Truncated)),
            "{err}"
        );
    }
}
