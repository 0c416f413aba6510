//! [`write_image_grid`]: a batch of images tiled into one PNG (and
//! [`encode_image_grid`], the same in memory), for sample
//! extensions (generated digits, reconstructions).

use std::path::Path;

use anyhow::{bail, Context as _, Result};
use candle_core::{DType, Device, Tensor};

use super::png_file::{encode_png, Pixels};
use crate::fsutil::write_atomic;

/// The value of the 1-pixel lines between tiles and of empty cells.
const GAP: u8 = 255;

/// Tiles `images` (`[N, C, H, W]`, C = 1 for gray or 3 for RGB) into a grid
/// of `columns` columns and writes it as one PNG at `path`, atomically.
///
/// Pixel values are clamped to `value_range` and mapped linearly onto 0..255
/// (NaN becomes 0). Tiles are separated by 1-pixel white lines, so the image
/// is `cols·W + cols − 1` by `rows·H + rows − 1` pixels, with
/// `cols = min(columns, N)` and `rows = ⌈N / cols⌉`.
pub fn write_image_grid(
    path: &Path,
    images: &Tensor,
    columns: usize,
    value_range: (f32, f32),
) -> Result<GridPng> {
    let grid = encode_image_grid(images, columns, value_range)?;
    write_atomic(path, &grid.png)
        .with_context(|| format!("writing image grid {}", path.display()))?;
    Ok(grid)
}

/// An image grid encoded as PNG, with its size.
#[derive(Debug, Clone, PartialEq)]
pub struct GridPng {
    pub png: Vec<u8>,
    pub width: u32,
    pub height: u32,
    /// 1 for gray, 3 for RGB.
    pub channels: u32,
}

/// The grid [`write_image_grid`] writes, as PNG bytes in memory.
pub fn encode_image_grid(
    images: &Tensor,
    columns: usize,
    value_range: (f32, f32),
) -> Result<GridPng> {
    let (n, c, h, w) = images.dims4().with_context(|| {
        format!(
            "an image grid needs a tensor of shape [N, C, H, W], got {:?}",
            images.dims()
        )
    })?;
    let pixels = match c {
        1 => Pixels::Gray,
        3 => Pixels::Rgb,
        _ => bail!("an image grid needs 1 (gray) or 3 (RGB) channels, got {c}"),
    };
    if n == 0 || h == 0 || w == 0 {
        bail!(
            "an image grid needs at least one non-empty image, got shape {:?}",
            images.dims()
        );
    }
    if columns == 0 {
        bail!("an image grid needs at least one column");
    }
    let (low, high) = value_range;
    if !(low.is_finite() && high.is_finite() && low < high) {
        bail!("the value range of an image grid must be two finite numbers, low < high; got ({low}, {high})");
    }

    // [N, C, H, W] -> [N, H, W, C]: each tile row is then contiguous per pixel.
    let values: Vec<f32> = images
        .to_device(&Device::Cpu)?
        .to_dtype(DType::F32)?
        .permute((0, 2, 3, 1))?
        .flatten_all()?
        .to_vec1()?;

    let cols = columns.min(n);
    let rows = n.div_ceil(cols);
    let width = cols * w + cols - 1;
    let height = rows * h + rows - 1;
    let scale = 255.0 / (high - low);
    let mut canvas = vec![GAP; width * height * c];
    for (index, image) in values.chunks_exact(h * w * c).enumerate() {
        let (top, left) = ((index / cols) * (h + 1), (index % cols) * (w + 1));
        for y in 0..h {
            let source = &image[y * w * c..(y + 1) * w * c];
            let start = ((top + y) * width + left) * c;
            for (target, &v) in canvas[start..start + w * c].iter_mut().zip(source) {
                // `as u8` saturates and maps NaN to 0.
                *target = ((v.clamp(low, high) - low) * scale).round() as u8;
            }
        }
    }
    let png = encode_png(width as u32, height as u32, pixels, &canvas)?;
    Ok(GridPng {
        png,
        width: width as u32,
        height: height as u32,
        channels: c as u32,
    })
}
