//! PNG encoding for the extensions that write images.

use std::path::Path;

use anyhow::{bail, Context as _, Result};

use crate::fsutil::write_atomic;

/// Pixel layouts the extensions write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pixels {
    Gray,
    Rgb,
}

impl Pixels {
    fn channels(self) -> usize {
        match self {
            Pixels::Gray => 1,
            Pixels::Rgb => 3,
        }
    }
}

/// Encodes 8-bit pixels, row by row, as PNG bytes.
pub(crate) fn encode_png(width: u32, height: u32, pixels: Pixels, data: &[u8]) -> Result<Vec<u8>> {
    let expected = width as usize * height as usize * pixels.channels();
    if data.len() != expected {
        bail!(
            "internal error: {width}x{height} {pixels:?} image needs {expected} bytes, got {}",
            data.len()
        );
    }
    let mut bytes = Vec::new();
    let mut encoder = png::Encoder::new(&mut bytes, width, height);
    encoder.set_color(match pixels {
        Pixels::Gray => png::ColorType::Grayscale,
        Pixels::Rgb => png::ColorType::Rgb,
    });
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header().context("encoding PNG")?;
    writer.write_image_data(data).context("encoding PNG")?;
    writer.finish().context("encoding PNG")?;
    Ok(bytes)
}

/// Writes a PNG file atomically.
pub(crate) fn write_png(
    path: &Path,
    width: u32,
    height: u32,
    pixels: Pixels,
    data: &[u8],
) -> Result<()> {
    write_atomic(path, &encode_png(width, height, pixels, data)?)
}
