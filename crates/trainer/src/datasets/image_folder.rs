//! A folder of PNG and JPEG images as a dataset: found recursively, in sorted
//! path order, decoded in parallel, turned into RGB, resized so the shorter
//! side is `size` and center-cropped to `size × size`.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use image::imageops::{self, FilterType};
use image::RgbImage;
use rayon::prelude::*;

use super::PixelRange;
use crate::dataset::ArrayDataset;

/// The largest accepted `size`: a 4096×4096 RGB image is 48 MiB.
pub const MAX_SIZE: u32 = 4096;

/// File extensions (lowercase) read as images; the content decides the format.
const EXTENSIONS: [&str; 3] = ["png", "jpg", "jpeg"];

/// RGB images of one size, `3 × size × size` bytes each (channel, row, column).
#[derive(Debug, Clone)]
pub struct ImageFolder {
    dir: PathBuf,
    size: u32,
    paths: Vec<PathBuf>,
    pixels: Vec<u8>,
    skipped: Vec<(PathBuf, String)>,
}

impl ImageFolder {
    /// Recursively reads the PNG and JPEG files under `dir` (by extension,
    /// any case; other files are ignored), resizes each so its shorter side is
    /// `size` (Catmull-Rom) and center-crops it to `size × size` RGB
    /// (grayscale is replicated, alpha dropped). Files that cannot be read or
    /// decoded are skipped with a warning each; it is an error when none is left.
    pub fn load(dir: &Path, size: u32) -> Result<ImageFolder> {
        if size == 0 {
            bail!("image size must be at least 1 pixel, got 0");
        }
        if size > MAX_SIZE {
            bail!("image size {size} is larger than the supported {MAX_SIZE}");
        }
        if !dir.is_dir() {
            if dir.exists() {
                bail!(
                    "{} is not a folder; give the folder that holds the images",
                    dir.display()
                );
            }
            bail!("image folder {} does not exist", dir.display());
        }
        let mut candidates = Vec::new();
        let mut skipped = Vec::new();
        let mut ignored = 0usize;
        let entries = std::fs::read_dir(dir)
            .with_context(|| format!("cannot read image folder {}", dir.display()))?;
        let mut walk_state = Walk {
            found: &mut candidates,
            skipped: &mut skipped,
            ignored: &mut ignored,
            visited: dir.canonicalize().into_iter().collect(),
        };
        walk_state.walk(entries, dir);
        candidates.sort();
        tracing::info!(
            "decoding {} images under {} to {size}×{size}{}",
            candidates.len(),
            dir.display(),
            if ignored > 0 {
                format!(" ({ignored} other files ignored)")
            } else {
                String::new()
            }
        );

        let decoded: Vec<Result<Vec<u8>, String>> = candidates
            .par_iter()
            .map(|path| {
                catch_unwind(AssertUnwindSafe(|| prepare(path, size)))
                    .unwrap_or_else(|_| Err("the decoder crashed on this file".to_string()))
            })
            .collect();

        let image_len = 3 * size as usize * size as usize;
        let readable = decoded.iter().filter(|d| d.is_ok()).count();
        let mut pixels = Vec::with_capacity(readable * image_len);
        let mut paths = Vec::with_capacity(readable);
        for (path, result) in candidates.into_iter().zip(decoded) {
            match result {
                Ok(chw) => {
                    pixels.extend_from_slice(&chw);
                    paths.push(path);
                }
                Err(why) => {
                    tracing::warn!("skipping {}: {why}", path.display());
                    skipped.push((path, why));
                }
            }
        }
        if !skipped.is_empty() {
            tracing::warn!(
                "skipped {} unreadable files under {}; read {} images",
                skipped.len(),
                dir.display(),
                paths.len()
            );
        }
        if paths.is_empty() {
            match skipped.first() {
                None => bail!(
                    "image folder {} holds no PNG or JPEG images (looked for {} files in it and its subfolders)",
                    dir.display(),
                    EXTENSIONS.map(|e| format!(".{e}")).join(", ")
                ),
                Some((path, why)) => bail!(
                    "none of the {} image files under {} could be read; the first, {}: {why}",
                    skipped.len(),
                    dir.display(),
                    path.display()
                ),
            }
        }
        Ok(ImageFolder {
            dir: dir.to_path_buf(),
            size,
            paths,
            pixels,
            skipped,
        })
    }

    /// An [`ArrayDataset`] with example shape `[3, size, size]` (C, H, W),
    /// pixels mapped by `range`, without labels.
    pub fn to_dataset(&self, range: PixelRange) -> Result<ArrayDataset> {
        let side = self.size as usize;
        ArrayDataset::from_shared(range.convert(&self.pixels), &[3, side, side], None)
    }

    /// The files that were skipped, and why.
    pub fn skipped(&self) -> &[(PathBuf, String)] {
        &self.skipped
    }

    /// Number of images read.
    pub fn len(&self) -> usize {
        self.paths.len()
    }

    /// Whether there are no images.
    pub fn is_empty(&self) -> bool {
        self.paths.is_empty()
    }

    /// The side of every image, in pixels.
    pub fn size(&self) -> u32 {
        self.size
    }

    /// The folder the images came from.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file of each image, in dataset order (sorted).
    pub fn paths(&self) -> &[PathBuf] {
        &self.paths
    }

    /// All images, `len() × 3 × size × size` bytes.
    pub fn pixels(&self) -> &[u8] {
        &self.pixels
    }

    /// The `3 × size × size` bytes of image `index` (channel, row, column).
    pub fn image(&self, index: usize) -> &[u8] {
        let len = 3 * self.size as usize * self.size as usize;
        &self.pixels[index * len..(index + 1) * len]
    }
}

/// Collects image files under a folder into `found`; unreadable subfolders
/// go to `skipped`. Symlinked folders are followed, each real folder once,
/// so that a link back up the tree cannot loop.
struct Walk<'a> {
    found: &'a mut Vec<PathBuf>,
    skipped: &'a mut Vec<(PathBuf, String)>,
    ignored: &'a mut usize,
    visited: std::collections::HashSet<PathBuf>,
}

impl Walk<'_> {
    fn walk(&mut self, entries: std::fs::ReadDir, dir: &Path) {
        let mut paths = vec![];
        for entry in entries {
            match entry {
                Ok(entry) => paths.push(entry.path()),
                Err(e) => {
                    tracing::warn!("skipping an entry of {}: {e}", dir.display());
                    self.skipped
                        .push((dir.to_path_buf(), format!("cannot list folder: {e}")));
                }
            }
        }
        // In name order, so that which link to a folder is read is always the same.
        paths.sort();
        for path in paths {
            // Follows symlinks, so a linked folder counts as a folder.
            if path.is_dir() {
                let real = match path.canonicalize() {
                    Ok(real) => real,
                    Err(e) => {
                        tracing::warn!("skipping folder {}: {e}", path.display());
                        self.skipped
                            .push((path, format!("cannot resolve folder: {e}")));
                        continue;
                    }
                };
                if !self.visited.insert(real.clone()) {
                    tracing::warn!(
                        "skipping folder {}: it is {}, which is read already (a symlink loop or \
                         a second link to it)",
                        path.display(),
                        real.display()
                    );
                    continue;
                }
                match std::fs::read_dir(&path) {
                    Ok(sub) => self.walk(sub, &path),
                    Err(e) => {
                        tracing::warn!("skipping folder {}: {e}", path.display());
                        self.skipped
                            .push((path, format!("cannot list folder: {e}")));
                    }
                }
            } else if has_image_extension(&path) {
                self.found.push(path);
            } else {
                *self.ignored += 1;
            }
        }
    }
}

fn has_image_extension(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

/// Decodes `path` and returns its `size × size` center crop as CHW bytes.
fn prepare(path: &Path, size: u32) -> Result<Vec<u8>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot open: {e}"))?;
    let reader = image::ImageReader::new(std::io::Cursor::new(&bytes))
        .with_guessed_format()
        .map_err(|e| format!("cannot read: {e}"))?;
    if reader.format() == Some(image::ImageFormat::Jpeg) && !jpeg_is_complete(&bytes) {
        // The JPEG decoder fills a cut-off image with grey without an error.
        return Err("the JPEG is truncated (its image data has no end marker)".to_string());
    }
    let image = reader.decode().map_err(|e| format!("cannot decode: {e}"))?;
    let rgb = image.into_rgb8();
    if rgb.width() == 0 || rgb.height() == 0 {
        return Err("the image is empty".to_string());
    }
    Ok(to_chw(&resize_and_crop(rgb, size)))
}

/// Whether a JPEG's last scan is followed by an end-of-image marker. Inside
/// scan data a 0xFF byte is always followed by 0x00 or a restart marker, so
/// the last start-of-scan (FF DA) is the main image's, and a complete file
/// has FF D9 after it.
fn jpeg_is_complete(bytes: &[u8]) -> bool {
    let marker_at = |m: u8| bytes.windows(2).rposition(|w| w == [0xFF, m]);
    match (marker_at(0xDA), marker_at(0xD9)) {
        (Some(scan), Some(end)) => end > scan,
        _ => false,
    }
}

/// Scales `image` so its shorter side is `size`, then cuts out the centered
/// `size × size` square.
pub(crate) fn resize_and_crop(image: RgbImage, size: u32) -> RgbImage {
    let (w, h) = image.dimensions();
    let shorter = w.min(h) as u64;
    let scaled =
        |side: u32| ((side as u64 * size as u64 + shorter / 2) / shorter).max(size as u64) as u32;
    let (nw, nh) = if w <= h {
        (size, scaled(h))
    } else {
        (scaled(w), size)
    };
    let resized = if (nw, nh) == (w, h) {
        image
    } else {
        imageops::resize(&image, nw, nh, FilterType::CatmullRom)
    };
    if (nw, nh) == (size, size) {
        return resized;
    }
    imageops::crop_imm(&resized, (nw - size) / 2, (nh - size) / 2, size, size).to_image()
}

/// Interleaved RGB rows → three planes (channel, row, column).
fn to_chw(image: &RgbImage) -> Vec<u8> {
    let plane = image.width() as usize * image.height() as usize;
    let mut out = vec![0u8; 3 * plane];
    for (i, px) in image.pixels().enumerate() {
        for c in 0..3 {
            out[c * plane + i] = px.0[c];
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use image::{GrayImage, Luma, Rgb, Rgba, RgbaImage};

    use super::*;
    use crate::dataset::Dataset;

    /// The RGB of solid test image `i`.
    fn color(i: usize) -> [u8; 3] {
        [(i * 12) as u8, 250 - (i * 11) as u8, (40 + i * 7) as u8]
    }

    fn pixel_at(folder: &ImageFolder, index: usize, row: usize, col: usize) -> [u8; 3] {
        let side = folder.size() as usize;
        let img = folder.image(index);
        std::array::from_fn(|c| img[c * side * side + row * side + col])
    }

    fn close(a: [u8; 3], b: [u8; 3], tol: u8) -> bool {
        a.iter().zip(&b).all(|(x, y)| x.abs_diff(*y) <= tol)
    }

    #[test]
    fn reads_nested_pngs_and_a_jpeg_and_skips_the_rest() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let root = dir.path();
        for sub in ["a/b", "c", "a/d"] {
            std::fs::create_dir_all(root.join(sub))?;
        }
        let folders = ["", "a", "a/b", "c", "a/d"];
        let mut expected = Vec::new();
        for i in 0..20 {
            let path = root.join(folders[i % 5]).join(format!("img{i:02}.png"));
            let [r, g, b] = color(i);
            let (w, h) = (10 + i as u32 % 7 * 5, 12 + i as u32 % 3 * 9);
            match i % 4 {
                // Grayscale and RGBA files become RGB.
                0 => GrayImage::from_pixel(w, h, Luma([r])).save(&path)?,
                1 => RgbaImage::from_pixel(w, h, Rgba([r, g, b, 100])).save(&path)?,
                _ => RgbImage::from_pixel(w, h, Rgb([r, g, b])).save(&path)?,
            }
            let want = if i % 4 == 0 { [r, r, r] } else { [r, g, b] };
            expected.push((path, want, 1));
        }
        let jpeg = root.join("c").join("photo.JPG");
        RgbImage::from_pixel(30, 24, Rgb([200, 60, 20]))
            .save_with_format(&jpeg, image::ImageFormat::Jpeg)?;
        expected.push((jpeg, [200, 60, 20], 4));
        let corrupt = root.join("a").join("broken.png");
        std::fs::write(&corrupt, b"\x89PNG\r\n\x1a\n this is not really a png")?;
        std::fs::write(root.join("a").join("notes.txt"), "not an image")?;
        expected.sort_by(|a, b| a.0.cmp(&b.0));

        let folder = ImageFolder::load(root, 8)?;
        assert_eq!(folder.len(), 21);
        assert_eq!(folder.skipped().len(), 1);
        assert_eq!(folder.skipped()[0].0, corrupt);
        assert!(
            folder.skipped()[0].1.contains("decode"),
            "{:?}",
            folder.skipped()
        );
        let paths: Vec<_> = expected.iter().map(|e| e.0.clone()).collect();
        assert_eq!(folder.paths(), paths.as_slice());
        for (i, (path, want, tol)) in expected.iter().enumerate() {
            for (row, col) in [(0, 0), (3, 4), (7, 7)] {
                let got = pixel_at(&folder, i, row, col);
                assert!(
                    close(got, *want, *tol),
                    "{}: {got:?} vs {want:?}",
                    path.display()
                );
            }
        }

        let ds = folder.to_dataset(PixelRange::ZeroOne)?;
        assert_eq!(ds.len(), 21);
        assert_eq!(ds.example_shape(), &[3, 8, 8]);
        assert_eq!(ds.get(0)?.label, None);
        assert_eq!(ds.values_of(5)[64], folder.image(5)[64] as f32 / 255.0);
        // Deterministic: the same folder reads the same.
        assert_eq!(ImageFolder::load(root, 8)?.pixels(), folder.pixels());
        Ok(())
    }

    #[test]
    fn truncated_images_are_skipped_by_name_and_linked_folders_followed_once() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let root = dir.path().join("images");
        std::fs::create_dir_all(root.join("own"))?;
        let outside = dir.path().join("elsewhere");
        std::fs::create_dir_all(&outside)?;
        let noisy = RgbImage::from_fn(64, 64, |x, y| {
            Rgb([(x * 37 % 251) as u8, (y * 53) as u8, (x ^ y) as u8])
        });
        let jpeg = root.join("own").join("whole.jpg");
        noisy.save_with_format(&jpeg, image::ImageFormat::Jpeg)?;
        let bytes = std::fs::read(&jpeg)?;
        let cut_jpeg = root.join("own").join("cut.jpg");
        std::fs::write(&cut_jpeg, &bytes[..bytes.len() * 2 / 3])?;
        let png = root.join("own").join("whole.png");
        noisy.save(&png)?;
        let bytes = std::fs::read(&png)?;
        let cut_png = root.join("own").join("cut.png");
        std::fs::write(&cut_png, &bytes[..bytes.len() * 2 / 3])?;
        RgbImage::from_pixel(9, 9, Rgb([1, 2, 3])).save(outside.join("linked.png"))?;
        std::os::unix::fs::symlink(&outside, root.join("link"))?;
        // A loop back to the root, and a second link to the same folder.
        std::os::unix::fs::symlink(&root, root.join("own").join("up"))?;
        std::os::unix::fs::symlink(&outside, root.join("own").join("again"))?;

        let folder = ImageFolder::load(&root, 8)?;
        let names: Vec<String> = folder
            .paths()
            .iter()
            .map(|p| p.strip_prefix(&root).unwrap().display().to_string())
            .collect();
        assert_eq!(names.len(), 3, "{names:?}");
        assert!(names.contains(&"own/whole.jpg".to_string()), "{names:?}");
        assert!(names.contains(&"own/whole.png".to_string()), "{names:?}");
        assert!(
            names.iter().any(|n| n.ends_with("linked.png")),
            "the symlinked folder is read: {names:?}"
        );
        let skipped: Vec<&PathBuf> = folder.skipped().iter().map(|(p, _)| p).collect();
        assert_eq!(skipped.len(), 2, "{:?}", folder.skipped());
        assert!(skipped.contains(&&cut_jpeg) && skipped.contains(&&cut_png));
        let why = &folder
            .skipped()
            .iter()
            .find(|(p, _)| *p == cut_jpeg)
            .unwrap()
            .1;
        assert!(why.contains("truncated"), "{why}");
        Ok(())
    }

    /// Column `x` of row `y` has a value unique to its position.
    fn ramp(w: u32, h: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| Rgb([(x * 6) as u8, (y * 5) as u8, 9]))
    }

    #[test]
    fn crop_without_resize_is_exact() {
        // Shorter side already 16: only the center 16×16 is cut out.
        let wide = resize_and_crop(ramp(40, 16), 16);
        assert_eq!(wide.dimensions(), (16, 16));
        for (x, y, px) in wide.enumerate_pixels() {
            assert_eq!(px.0, [((x + 12) * 6) as u8, (y * 5) as u8, 9]);
        }
        let tall = resize_and_crop(ramp(16, 41), 16);
        assert_eq!(tall.dimensions(), (16, 16));
        for (x, y, px) in tall.enumerate_pixels() {
            assert_eq!(px.0, [(x * 6) as u8, ((y + 12) * 5) as u8, 9]);
        }
        let chw = to_chw(&wide);
        assert_eq!(chw[0], wide.get_pixel(0, 0).0[0]);
        assert_eq!(chw[256 + 16 + 3], wide.get_pixel(3, 1).0[1]);
        assert_eq!(chw[512 + 255], 9);
    }

    #[test]
    fn resize_shorter_side_then_center_crop() -> Result<()> {
        // 40×20: red | green | blue in columns 0..10, 10..30, 30..40. Scaled
        // to 32×16, the green band is columns 8..24, exactly the center crop.
        let bands = RgbImage::from_fn(40, 20, |x, _| match x {
            0..10 => Rgb([255, 0, 0]),
            10..30 => Rgb([0, 255, 0]),
            _ => Rgb([0, 0, 255]),
        });
        let dir = tempfile::tempdir()?;
        bands.save(dir.path().join("bands.png"))?;
        // The same picture standing up.
        image::imageops::rotate90(&bands).save(dir.path().join("bands_tall.png"))?;
        let folder = ImageFolder::load(dir.path(), 16)?;
        assert_eq!(folder.len(), 2);
        for index in 0..2 {
            for row in 0..16 {
                for col in 0..16 {
                    let px = pixel_at(&folder, index, row, col);
                    assert!(px[1] > 200, "image {index} ({row}, {col}) = {px:?}");
                    let inner = if index == 0 { col } else { row };
                    if (2..14).contains(&inner) {
                        assert!(
                            close(px, [0, 255, 0], 1),
                            "image {index} ({row}, {col}) = {px:?}"
                        );
                    }
                }
            }
        }
        // Upscaling works too: 6×4 → 16×16.
        let small = resize_and_crop(RgbImage::from_pixel(6, 4, Rgb([10, 20, 30])), 16);
        assert_eq!(small.dimensions(), (16, 16));
        assert!(small.pixels().all(|p| close(p.0, [10, 20, 30], 1)));
        Ok(())
    }

    #[test]
    fn empty_missing_and_unreadable_folders_are_errors() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let root = dir.path();
        std::fs::create_dir_all(root.join("sub"))?;
        std::fs::write(root.join("sub").join("readme.md"), "# nothing")?;
        let err = format!("{:#}", ImageFolder::load(root, 8).unwrap_err());
        assert!(err.contains(&root.display().to_string()), "{err}");
        assert!(err.contains("no PNG or JPEG images"), "{err}");

        std::fs::write(root.join("sub").join("x.jpeg"), b"garbage")?;
        let err = format!("{:#}", ImageFolder::load(root, 8).unwrap_err());
        assert!(err.contains("none of the 1 image files"), "{err}");
        assert!(err.contains("x.jpeg"), "{err}");

        let gone = root.join("gone");
        let err = format!("{:#}", ImageFolder::load(&gone, 8).unwrap_err());
        assert!(
            err.contains("does not exist") && err.contains("gone"),
            "{err}"
        );

        RgbImage::from_pixel(4, 4, Rgb([1, 2, 3])).save(root.join("ok.png"))?;
        let err = format!("{:#}", ImageFolder::load(root, 0).unwrap_err());
        assert!(err.contains("at least 1"), "{err}");
        assert!(ImageFolder::load(&root.join("ok.png"), 8).is_err());
        assert_eq!(ImageFolder::load(root, 2)?.len(), 1);
        Ok(())
    }
}
