//! Reading generated samples saved as NumPy `.npy` arrays of `uint8`
//! pixels, shape `(N, H, W)` (grey) or `(N, H, W, 3)` (RGB), as most GAN
//! code (kusari's included) writes them.

use std::path::Path;

use anyhow::{bail, ensure, Context, Result};
use candle_core::{Device, Tensor};

const MAGIC: &[u8] = b"\x93NUMPY";
const HOW_TO_SAVE: &str = "save samples with numpy as `np.save(path, images.astype(np.uint8))`, \
     shaped (N, H, W) or (N, H, W, 3)";

/// The shape and pixel bytes of a C-ordered `uint8` `.npy` array.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NpyBytes {
    /// The array's shape as the header gives it.
    pub shape: Vec<usize>,
    /// The pixels, row-major.
    pub data: Vec<u8>,
}

/// Parses a `.npy` file's contents, accepting only C-ordered `uint8` data.
pub fn parse_npy_u8(bytes: &[u8]) -> Result<NpyBytes> {
    ensure!(
        bytes.len() >= 10 && bytes.starts_with(MAGIC),
        "this is not a .npy file (it does not start with the NumPy magic string); {HOW_TO_SAVE}"
    );
    let major = bytes[6];
    let (header_len, header_start) = match major {
        1 => (
            usize::from(u16::from_le_bytes([bytes[8], bytes[9]])),
            10usize,
        ),
        2 | 3 => {
            ensure!(bytes.len() >= 12, "the .npy header is cut short");
            let len = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
            (len as usize, 12)
        }
        v => bail!(".npy format version {v} is not supported (1, 2 and 3 are)"),
    };
    let header_end: usize = header_start
        .checked_add(header_len)
        .context("the .npy header length is corrupt")?;
    ensure!(bytes.len() >= header_end, "the .npy header is cut short");
    let header = std::str::from_utf8(&bytes[header_start..header_end])
        .context("the .npy header is not text")?;

    let descr = header_value(header, "descr")?;
    let descr = descr.trim().trim_matches(|c| c == '\'' || c == '"');
    if !matches!(descr, "|u1" | "<u1" | ">u1" | "=u1" | "u1" | "|B" | "B") {
        bail!(
            "the samples have dtype `{descr}` but must be uint8 (`|u1`) pixels 0..255; {HOW_TO_SAVE}"
        );
    }
    let fortran = header_value(header, "fortran_order")?;
    if fortran.trim() != "False" {
        bail!(
            "the samples are stored in Fortran order; save them C-ordered (np.ascontiguousarray)"
        );
    }
    let shape = parse_shape(header_value(header, "shape")?)?;

    let data = &bytes[header_end..];
    let want = shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .with_context(|| {
            format!("the .npy header's shape {shape:?} is impossibly large; the file is corrupt")
        })?;
    ensure!(
        data.len() == want,
        "the .npy header promises shape {shape:?} ({want} bytes) but the file holds {} bytes of data; \
         the file is truncated or corrupt",
        data.len()
    );
    Ok(NpyBytes {
        shape,
        data: data.to_vec(),
    })
}

/// The text after `'key':` in a header dict, up to the next top-level comma or `}`.
fn header_value<'a>(header: &'a str, key: &str) -> Result<&'a str> {
    let find = |quote: char| header.find(&format!("{quote}{key}{quote}"));
    let start = find('\'')
        .or_else(|| find('"'))
        .with_context(|| format!("the .npy header has no `{key}` entry: {header}"))?;
    let rest = &header[start + key.len() + 2..];
    let rest = rest
        .trim_start()
        .strip_prefix(':')
        .with_context(|| format!("the .npy header's `{key}` entry is malformed: {header}"))?;
    let mut depth = 0i32;
    for (i, c) in rest.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' | '}' if depth == 0 => return Ok(&rest[..i]),
            _ => {}
        }
    }
    Ok(rest)
}

fn parse_shape(text: &str) -> Result<Vec<usize>> {
    let inner = text
        .trim()
        .strip_prefix('(')
        .and_then(|t| t.strip_suffix(')'))
        .with_context(|| format!("the .npy shape `{text}` is not a tuple"))?;
    inner
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.trim_end_matches('L')
                .parse::<usize>()
                .with_context(|| format!("the .npy shape `{text}` is not a tuple of sizes"))
        })
        .collect()
}

/// Reads `uint8` images from a `.npy` file as an `f32` tensor `[N, 1, H, W]`
/// with pixels mapped from `0..=255` to `[-1, 1]` (the range the GANs
/// generate in). RGB images `(N, H, W, 3)` become grey by the ITU-R BT.601
/// luma weights; `(N, H, W, 1)` is accepted as grey.
pub fn read_npy_images(path: &Path) -> Result<Tensor> {
    let bytes = std::fs::read(path)
        .with_context(|| format!("cannot read samples file {}", path.display()))?;
    let npy =
        parse_npy_u8(&bytes).with_context(|| format!("reading samples file {}", path.display()))?;
    images_from_u8(&npy).with_context(|| format!("reading samples file {}", path.display()))
}

/// The `[N, 1, H, W]` images in `[-1, 1]` of parsed `.npy` pixel data.
pub fn images_from_u8(npy: &NpyBytes) -> Result<Tensor> {
    let (n, h, w, channels) = match npy.shape[..] {
        [n, h, w] => (n, h, w, 1),
        [n, h, w, c @ (1 | 3)] => (n, h, w, c),
        _ => bail!(
            "the samples have shape {:?}, but must be (N, H, W) or (N, H, W, 3); {HOW_TO_SAVE}",
            npy.shape
        ),
    };
    ensure!(
        n > 0 && h > 0 && w > 0,
        "the samples array is empty (shape {:?})",
        npy.shape
    );
    let to_unit = |v: f32| v / 255.0 * 2.0 - 1.0;
    let values: Vec<f32> = if channels == 3 {
        npy.data
            .chunks_exact(3)
            .map(|p| {
                let luma =
                    0.299 * f32::from(p[0]) + 0.587 * f32::from(p[1]) + 0.114 * f32::from(p[2]);
                to_unit(luma)
            })
            .collect()
    } else {
        npy.data.iter().map(|&b| to_unit(f32::from(b))).collect()
    };
    Ok(Tensor::from_vec(values, (n, 1, h, w), &Device::Cpu)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A version-1 `.npy` file as NumPy writes it (header padded to 64 bytes).
    pub(crate) fn npy_file(descr: &str, shape: &[usize], data: &[u8]) -> Vec<u8> {
        let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
        let shape = if dims.len() == 1 {
            format!("({},)", dims[0])
        } else {
            format!("({})", dims.join(", "))
        };
        let mut header =
            format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
        while (10 + header.len() + 1) % 64 != 0 {
            header.push(' ');
        }
        header.push('\n');
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(&[1, 0]);
        out.extend_from_slice(&(header.len() as u16).to_le_bytes());
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(data);
        out
    }

    #[test]
    fn reads_grey_and_rgb_uint8_images() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let grey: Vec<u8> = (0..2 * 3 * 4).map(|i| (i * 11) as u8).collect();
        let path = dir.path().join("grey.npy");
        std::fs::write(&path, npy_file("|u1", &[2, 3, 4], &grey))?;
        let t = read_npy_images(&path)?;
        assert_eq!(t.dims(), &[2, 1, 3, 4]);
        let v = t.flatten_all()?.to_vec1::<f32>()?;
        assert_eq!(v[0], -1.0);
        assert!((v[5] - (55.0 / 255.0 * 2.0 - 1.0)).abs() < 1e-6);

        let rgb: Vec<u8> = [255u8, 255, 255, 0, 0, 0].repeat(2);
        let path = dir.path().join("rgb.npy");
        std::fs::write(&path, npy_file("|u1", &[2, 1, 2, 3], &rgb))?;
        let v = read_npy_images(&path)?.flatten_all()?.to_vec1::<f32>()?;
        assert_eq!(v.len(), 4);
        assert!(
            (v[0] - 1.0).abs() < 1e-5 && (v[1] + 1.0).abs() < 1e-6,
            "{v:?}"
        );
        Ok(())
    }

    #[test]
    fn bad_files_get_clear_errors() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let check = |name: &str, bytes: Vec<u8>, needle: &str| -> Result<()> {
            let path = dir.path().join(name);
            std::fs::write(&path, bytes)?;
            let err = format!("{:#}", read_npy_images(&path).unwrap_err());
            assert!(err.contains(needle), "{name}: `{err}` lacks `{needle}`");
            assert!(err.contains(name), "{name}: `{err}` does not name the file");
            Ok(())
        };
        check(
            "floats.npy",
            npy_file("<f4", &[1, 2, 2], &[0; 16]),
            "dtype `<f4`",
        )?;
        check(
            "bools.npy",
            npy_file("|b1", &[1, 2, 2], &[0; 4]),
            "must be uint8",
        )?;
        check("flat.npy", npy_file("|u1", &[4], &[0; 4]), "(N, H, W)")?;
        check(
            "five.npy",
            npy_file("|u1", &[1, 1, 1, 1, 1], &[0]),
            "(N, H, W)",
        )?;
        check(
            "short.npy",
            npy_file("|u1", &[2, 2, 2], &[0; 7]),
            "truncated",
        )?;
        check(
            "text.npy",
            b"hello, this is not numpy".to_vec(),
            "not a .npy file",
        )?;
        let mut fortran = npy_file("|u1", &[1, 2, 2], &[0; 4]);
        let at = fortran.windows(5).position(|w| w == b"False").unwrap_or(0);
        fortran[at..at + 5].copy_from_slice(b"True ");
        check("fortran.npy", fortran, "Fortran")?;
        let missing = dir.path().join("missing.npy");
        let err = format!("{:#}", read_npy_images(&missing).unwrap_err());
        assert!(
            err.contains("cannot read samples file") && err.contains("missing.npy"),
            "{err}"
        );
        Ok(())
    }
}
