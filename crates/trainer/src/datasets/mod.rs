//! Datasets that become [`ArrayDataset`](crate::dataset::ArrayDataset)s of
//! images: [`mnist`] (the IDX files, downloaded on first use) and
//! [`image_folder`] (a folder of PNG/JPEG files, resized and center-cropped).

mod idx;
pub mod image_folder;
pub mod mnist;
#[cfg(feature = "download")]
pub mod mnist_download;

use std::fmt;
use std::str::FromStr;

use anyhow::bail;

pub use image_folder::ImageFolder;
pub use mnist::{Mnist, MnistSource, Split};

/// How pixel bytes 0..=255 map to `f32`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum PixelRange {
    /// `v / 255`, in `[0, 1]`.
    ZeroOne,
    /// `v / 255 * 2 - 1`, in `[-1, 1]` (what a `tanh` generator produces).
    MinusOneOne,
}

impl PixelRange {
    /// The values that black and white map to.
    pub fn value_range(self) -> (f32, f32) {
        (self.to_f32(0), self.to_f32(255))
    }

    /// The value a pixel byte becomes.
    pub fn to_f32(self, byte: u8) -> f32 {
        let unit = byte as f32 / 255.0;
        match self {
            PixelRange::ZeroOne => unit,
            PixelRange::MinusOneOne => unit * 2.0 - 1.0,
        }
    }

    /// The pixel byte a value stands for (rounded; out-of-range values are
    /// clamped and NaN becomes 0), e.g. to save generated images.
    pub fn to_u8(self, value: f32) -> u8 {
        let unit = match self {
            PixelRange::ZeroOne => value,
            PixelRange::MinusOneOne => (value + 1.0) / 2.0,
        };
        // `as` saturates and maps NaN to 0.
        (unit.clamp(0.0, 1.0) * 255.0).round() as u8
    }

    /// The value of every byte, for converting many pixels quickly.
    pub fn table(self) -> [f32; 256] {
        std::array::from_fn(|b| self.to_f32(b as u8))
    }

    /// Converts bytes to values, allocated once, ready for
    /// [`ArrayDataset::from_shared`](crate::dataset::ArrayDataset::from_shared).
    pub fn convert(self, bytes: &[u8]) -> std::sync::Arc<[f32]> {
        let table = self.table();
        bytes.iter().map(|&b| table[b as usize]).collect()
    }
}

impl fmt::Display for PixelRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PixelRange::ZeroOne => "zero-one",
            PixelRange::MinusOneOne => "minus-one-one",
        })
    }
}

impl FromStr for PixelRange {
    type Err = anyhow::Error;

    /// Accepts `zero-one` / `0,1` and `minus-one-one` / `-1,1` (case and
    /// `-`/`_` insensitive).
    fn from_str(s: &str) -> anyhow::Result<Self> {
        let norm: String = s
            .trim()
            .to_ascii_lowercase()
            .chars()
            .filter(|c| !c.is_whitespace())
            .map(|c| if c == '_' { '-' } else { c })
            .collect();
        match norm.as_str() {
            "zero-one" | "zeroone" | "0,1" | "[0,1]" | "01" => Ok(PixelRange::ZeroOne),
            "minus-one-one" | "minusoneone" | "-1,1" | "[-1,1]" => Ok(PixelRange::MinusOneOne),
            _ => {
                bail!("unknown pixel range {s:?}; use zero-one ([0, 1]) or minus-one-one ([-1, 1])")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pixel_ranges_map_bytes_and_back() -> anyhow::Result<()> {
        assert_eq!(PixelRange::ZeroOne.to_f32(0), 0.0);
        assert_eq!(PixelRange::ZeroOne.to_f32(255), 1.0);
        assert_eq!(PixelRange::MinusOneOne.to_f32(0), -1.0);
        assert_eq!(PixelRange::MinusOneOne.to_f32(255), 1.0);
        assert!((PixelRange::MinusOneOne.to_f32(51) - (51.0 / 255.0 * 2.0 - 1.0)).abs() < 1e-7);
        for range in [PixelRange::ZeroOne, PixelRange::MinusOneOne] {
            for b in 0..=255u8 {
                assert_eq!(range.to_u8(range.to_f32(b)), b, "{range} {b}");
            }
            assert_eq!(range.to_u8(f32::NAN), 0);
            assert_eq!(range.to_u8(7.0), 255);
            assert_eq!(range.to_u8(-7.0), 0);
            assert_eq!(range.to_string().parse::<PixelRange>()?, range);
        }
        let bytes: Vec<u8> = (0..2000u32).map(|i| (i * 7 % 256) as u8).collect();
        let values = PixelRange::MinusOneOne.convert(&bytes);
        assert!(bytes
            .iter()
            .zip(values.iter())
            .all(|(&b, &v)| v == PixelRange::MinusOneOne.to_f32(b)));
        assert_eq!("[-1, 1]".parse::<PixelRange>()?, PixelRange::MinusOneOne);
        assert!("0-255".parse::<PixelRange>().is_err());
        Ok(())
    }
}
