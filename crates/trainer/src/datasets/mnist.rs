//! MNIST: 28×28 grayscale digits from the four standard IDX files
//! (`train-images-idx3-ubyte`, `train-labels-idx1-ubyte`, `t10k-…`), plain or
//! gzip-compressed.
//!
//! Where the files are read from is decided by [`resolve_dir`]: `--data-dir`,
//! else `$MNIST_DIR`, else `data/mnist` in the working folder — the one folder
//! that [`load_or_download`] fills by itself when files are missing.

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::idx;
use super::PixelRange;
use crate::dataset::ArrayDataset;

/// Rows of an MNIST image.
pub const ROWS: usize = 28;
/// Columns of an MNIST image.
pub const COLS: usize = 28;
/// Bytes of one MNIST image.
pub const IMAGE_LEN: usize = ROWS * COLS;
/// Number of classes (the digits 0–9).
pub const CLASSES: u8 = 10;

/// The environment variable naming the MNIST folder.
pub const ENV_VAR: &str = "MNIST_DIR";
/// The folder used when neither `--data-dir` nor `MNIST_DIR` is given,
/// relative to the working folder.
pub const DEFAULT_DIR: &str = "data/mnist";
/// Where the `.gz` files can be fetched from, tried in order.
pub const MIRRORS: [&str; 2] = [
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
];

/// One of the four MNIST files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MnistFile {
    /// Name without `.gz`, e.g. `train-images-idx3-ubyte`.
    pub name: &'static str,
    /// MD5 of the uncompressed file. The uncompressed content is what is
    /// checked, so any faithful gzip of it is accepted.
    pub md5: &'static str,
}

/// The four standard files with the MD5s of their uncompressed contents.
pub const FILES: [MnistFile; 4] = [
    MnistFile {
        name: "train-images-idx3-ubyte",
        md5: "6bbc9ace898e44ae57da46a324031adb",
    },
    MnistFile {
        name: "train-labels-idx1-ubyte",
        md5: "a25bea736e30d166cdddb491f175f624",
    },
    MnistFile {
        name: "t10k-images-idx3-ubyte",
        md5: "2646ac647ad5339dbf082846283269ea",
    },
    MnistFile {
        name: "t10k-labels-idx1-ubyte",
        md5: "27ae3e4e09519cfbb04c329615203637",
    },
];

/// The training (60000 images) or test (10000 images) part of MNIST.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    /// `train-*`: 60000 images.
    Train,
    /// `t10k-*`: 10000 images.
    Test,
}

impl Split {
    /// The images file's name without `.gz`.
    pub fn images_file(self) -> &'static str {
        match self {
            Split::Train => FILES[0].name,
            Split::Test => FILES[2].name,
        }
    }

    /// The labels file's name without `.gz`.
    pub fn labels_file(self) -> &'static str {
        match self {
            Split::Train => FILES[1].name,
            Split::Test => FILES[3].name,
        }
    }
}

impl fmt::Display for Split {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Split::Train => "train",
            Split::Test => "test",
        })
    }
}

/// MNIST images and labels as raw bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mnist {
    images: Vec<u8>,
    labels: Vec<u8>,
    count: usize,
}

impl Mnist {
    /// Builds MNIST from `images` (N × 784 bytes, row-major) and N `labels`
    /// (each below 10), e.g. to make small synthetic data for tests.
    pub fn from_raw(images: Vec<u8>, labels: Vec<u8>) -> Result<Self> {
        if !images.len().is_multiple_of(IMAGE_LEN) {
            bail!(
                "{} image bytes are not a whole number of 28×28 images",
                images.len()
            );
        }
        let count = images.len() / IMAGE_LEN;
        if labels.len() != count {
            bail!("{count} images but {} labels", labels.len());
        }
        if let Some(at) = labels.iter().position(|&l| l >= CLASSES) {
            bail!("label {} at index {at} is not a digit 0–9", labels[at]);
        }
        Ok(Self {
            images,
            labels,
            count,
        })
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether there are no images.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// All images, `len() * 784` bytes, each row-major.
    pub fn images(&self) -> &[u8] {
        &self.images
    }

    /// The 784 bytes of image `index`.
    pub fn image(&self, index: usize) -> &[u8] {
        &self.images[index * IMAGE_LEN..(index + 1) * IMAGE_LEN]
    }

    /// One label (0–9) per image.
    pub fn labels(&self) -> &[u8] {
        &self.labels
    }

    /// The first `n` images (all if fewer).
    pub fn take(&self, n: usize) -> Self {
        let n = n.min(self.count);
        Self {
            images: self.images[..n * IMAGE_LEN].to_vec(),
            labels: self.labels[..n].to_vec(),
            count: n,
        }
    }

    /// An [`ArrayDataset`] with example shape `[1, 28, 28]` (C, H, W), pixels
    /// mapped by `range`, and the digits as `u32` labels.
    pub fn to_dataset(&self, range: PixelRange) -> Result<ArrayDataset> {
        let values = range.convert(&self.images);
        let labels = self.labels.iter().map(|&l| u32::from(l)).collect();
        ArrayDataset::from_shared(values, &[1, ROWS, COLS], Some(labels))
    }

    /// Writes the split's two files, gzip-compressed, into `dir` (created if
    /// needed), each atomically — e.g. to make a small MNIST folder for tests.
    pub fn save(&self, dir: &Path, split: Split) -> Result<()> {
        use std::io::Write;
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create folder {}", dir.display()))?;
        let files = [
            (
                split.images_file(),
                idx::encode_images(&self.images, ROWS, COLS),
            ),
            (split.labels_file(), idx::encode_labels(&self.labels)),
        ];
        for (name, raw) in files {
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            gz.write_all(&raw)?;
            crate::fsutil::write_atomic(&dir.join(format!("{name}.gz")), &gz.finish()?)?;
        }
        Ok(())
    }
}

/// The file for `name` in `dir`: plain, `.gz`, or with the `.idx` spelling
/// some copies use (`train-images.idx3-ubyte`).
pub fn find_file(dir: &Path, name: &str) -> Option<PathBuf> {
    let dotted = name.replacen("-idx", ".idx", 1);
    [
        name.to_string(),
        format!("{name}.gz"),
        dotted.clone(),
        format!("{dotted}.gz"),
    ]
    .into_iter()
    .map(|candidate| dir.join(candidate))
    .find(|path| path.is_file())
}

/// Names of those of the four standard files that `dir` lacks.
pub fn missing_files(dir: &Path) -> Vec<&'static str> {
    FILES
        .iter()
        .filter(|f| find_file(dir, f.name).is_none())
        .map(|f| f.name)
        .collect()
}

/// How to point kusari at MNIST and where to get it; ends several errors.
pub fn where_to_get_help() -> String {
    format!(
        "Point kusari at MNIST in one of three ways: pass --data-dir DIR, set the environment \
         variable {ENV_VAR}=DIR, or put the files in {DEFAULT_DIR}/ under the working folder \
         (kusari downloads them there by itself when they are absent). The four files \
         ({}, each plain or .gz) can be fetched from {} or {}",
        FILES.map(|f| format!("{}.gz", f.name)).join(", "),
        MIRRORS[0],
        MIRRORS[1]
    )
}

/// Reads the `split` of MNIST from `dir`: `{train,t10k}-{images-idx3,labels-idx1}-ubyte`,
/// plain or `.gz`. Checks magic numbers, 28×28 images, matching counts,
/// labels 0–9, and that each file is exactly as long as its header says.
pub fn load(dir: &Path, split: Split) -> Result<Mnist> {
    if !dir.exists() {
        bail!(
            "MNIST folder {} does not exist. {}",
            dir.display(),
            where_to_get_help()
        );
    }
    if !dir.is_dir() {
        bail!(
            "{} is not a folder; MNIST is read from a folder of IDX files. {}",
            dir.display(),
            where_to_get_help()
        );
    }
    let names = [split.images_file(), split.labels_file()];
    let found = names.map(|name| find_file(dir, name));
    let [Some(images_path), Some(labels_path)] = found else {
        let missing: Vec<_> = names
            .iter()
            .zip(&found)
            .filter(|(_, path)| path.is_none())
            .map(|(name, _)| format!("{name}.gz"))
            .collect();
        bail!(
            "MNIST folder {} lacks {} (plain or .gz) for the {split} split. {}",
            dir.display(),
            missing.join(" and "),
            where_to_get_help()
        );
    };

    let (images, labels) = rayon::join(
        || idx::read_maybe_gz(&images_path).and_then(|b| idx::parse_images(b, &images_path)),
        || idx::read_maybe_gz(&labels_path).and_then(|b| idx::parse_labels(b, &labels_path)),
    );
    let (images, labels) = (images?, labels?);
    if (images.rows, images.cols) != (ROWS, COLS) {
        bail!(
            "{} holds {}×{} images, but MNIST images are 28×28; is it really an MNIST file?",
            images_path.display(),
            images.rows,
            images.cols
        );
    }
    if images.count != labels.len() {
        bail!(
            "{} holds {} images but {} holds {} labels; the two files must come from the same split \
             (delete them and download both again)",
            images_path.display(),
            images.count,
            labels_path.display(),
            labels.len()
        );
    }
    if let Some(at) = labels.iter().position(|&l| l >= CLASSES) {
        bail!(
            "{}: label {} at index {at} is not a digit 0–9; the file is damaged (delete it and download it again)",
            labels_path.display(),
            labels[at]
        );
    }
    tracing::debug!(
        count = images.count,
        "read MNIST {split} from {}",
        dir.display()
    );
    Ok(Mnist {
        images: images.pixels,
        labels,
        count: images.count,
    })
}

/// Where the MNIST folder comes from, and its path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MnistSource {
    /// Given explicitly (`--data-dir`).
    Explicit(PathBuf),
    /// From the `MNIST_DIR` environment variable.
    Env(PathBuf),
    /// The default `data/mnist` in the working folder, the one folder
    /// kusari downloads into.
    Default(PathBuf),
}

impl MnistSource {
    /// The folder to read.
    pub fn path(&self) -> &Path {
        match self {
            MnistSource::Explicit(p) | MnistSource::Env(p) | MnistSource::Default(p) => p,
        }
    }

    /// Whether this is the default folder, where missing files are downloaded.
    pub fn is_default(&self) -> bool {
        matches!(self, MnistSource::Default(_))
    }

    /// Where the path came from, for messages: `--data-dir`, `MNIST_DIR`, or `the default folder`.
    pub fn origin(&self) -> &'static str {
        match self {
            MnistSource::Explicit(_) => "--data-dir",
            MnistSource::Env(_) => ENV_VAR,
            MnistSource::Default(_) => "the default folder",
        }
    }
}

impl fmt::Display for MnistSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (from {})", self.path().display(), self.origin())
    }
}

/// The folder to read: `explicit` (`--data-dir`), else `$MNIST_DIR`, else
/// `data/mnist` in the working folder.
pub fn resolve_dir(explicit: Option<&Path>) -> MnistSource {
    resolve_dir_from(explicit, std::env::var_os(ENV_VAR))
}

/// [`resolve_dir`] with the value of `MNIST_DIR` given rather than read
/// from the environment. An empty value counts as unset.
pub fn resolve_dir_from(explicit: Option<&Path>, env_value: Option<OsString>) -> MnistSource {
    if let Some(dir) = explicit {
        return MnistSource::Explicit(dir.to_path_buf());
    }
    match env_value {
        Some(value) if !value.is_empty() => MnistSource::Env(PathBuf::from(value)),
        _ => MnistSource::Default(PathBuf::from(DEFAULT_DIR)),
    }
}

/// [`resolve_dir`] then [`load`], first downloading the missing files when
/// the source is the default folder (feature `download`, on by default;
/// mirrors from `KUSARI_MNIST_MIRROR` if set). A folder given by
/// `--data-dir` or `MNIST_DIR` is only ever read.
pub fn load_or_download(explicit: Option<&Path>, split: Split) -> Result<Mnist> {
    let source = resolve_dir(explicit);
    #[cfg(feature = "download")]
    {
        let mirrors = super::mnist_download::mirrors_from_env()?;
        load_or_download_from(&source, split, &mirrors)
    }
    #[cfg(not(feature = "download"))]
    {
        load_from(&source, split).map_err(|e| {
            if source.is_default() {
                e.context("this kusari was built without the `download` feature, so fetch the files yourself")
            } else {
                e
            }
        })
    }
}

/// [`load_or_download`] for a resolved `source`, downloading from `mirrors`
/// (base URLs, tried in order) into the default folder.
#[cfg(feature = "download")]
pub fn load_or_download_from(
    source: &MnistSource,
    split: Split,
    mirrors: &[String],
) -> Result<Mnist> {
    if source.is_default() {
        let dir = source.path();
        let wanted: Vec<MnistFile> = FILES
            .into_iter()
            .filter(|f| find_file(dir, f.name).is_none())
            .collect();
        if !wanted.is_empty() {
            super::mnist_download::download(dir, &wanted, mirrors)?;
        }
    }
    load_from(source, split)
}

/// [`load`] with errors that say where the folder came from.
pub fn load_from(source: &MnistSource, split: Split) -> Result<Mnist> {
    let dir = source.path();
    match source {
        MnistSource::Explicit(_) | MnistSource::Env(_) if !dir.exists() => bail!(
            "MNIST folder {} (given by {}) does not exist. {}",
            dir.display(),
            source.origin(),
            where_to_get_help()
        ),
        _ => load(dir, split),
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;
    use crate::dataset::Dataset;

    /// `n` synthetic images whose pixels encode their index and position.
    fn synthetic(n: usize) -> Mnist {
        let images = (0..n * IMAGE_LEN)
            .map(|i| ((i / IMAGE_LEN) * 31 + i % 251) as u8)
            .collect();
        let labels = (0..n).map(|i| (i * 3 % 10) as u8).collect();
        Mnist::from_raw(images, labels).unwrap()
    }

    fn write_raw(dir: &Path, split: Split, mnist: &Mnist) {
        std::fs::write(
            dir.join(split.images_file()),
            idx::encode_images(mnist.images(), ROWS, COLS),
        )
        .unwrap();
        std::fs::write(
            dir.join(split.labels_file()),
            idx::encode_labels(mnist.labels()),
        )
        .unwrap();
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(bytes).unwrap();
        gz.finish().unwrap()
    }

    fn message(result: Result<Mnist>) -> String {
        format!("{:#}", result.expect_err("expected an error"))
    }

    #[test]
    fn gz_round_trip() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let mnist = synthetic(7);
        mnist.save(dir.path(), Split::Test)?;
        assert!(dir.path().join("t10k-images-idx3-ubyte.gz").is_file());
        let loaded = load(dir.path(), Split::Test)?;
        assert_eq!(loaded, mnist);
        assert_eq!(loaded.len(), 7);
        assert_eq!(loaded.image(3), mnist.image(3));
        // The train split is not there.
        let err = message(load(dir.path(), Split::Train));
        assert!(
            err.contains("train-images-idx3-ubyte.gz and train-labels-idx1-ubyte.gz"),
            "{err}"
        );
        Ok(())
    }

    #[test]
    fn raw_round_trip_and_dataset() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let mnist = synthetic(5);
        write_raw(dir.path(), Split::Train, &mnist);
        let loaded = load(dir.path(), Split::Train)?;
        assert_eq!(loaded, mnist);

        let ds = loaded.to_dataset(PixelRange::MinusOneOne)?;
        assert_eq!(ds.len(), 5);
        assert_eq!(ds.example_shape(), &[1, 28, 28]);
        let e = ds.get(2)?;
        assert_eq!(e.label, Some(u32::from(mnist.labels()[2])));
        let expected: Vec<f32> = mnist
            .image(2)
            .iter()
            .map(|&b| b as f32 / 255.0 * 2.0 - 1.0)
            .collect();
        assert_eq!(e.values, expected);
        let ds01 = loaded.to_dataset(PixelRange::ZeroOne)?;
        assert_eq!(ds01.values_of(4)[100], mnist.image(4)[100] as f32 / 255.0);
        Ok(())
    }

    #[test]
    fn dotted_names_are_found() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let mnist = synthetic(2);
        std::fs::write(
            dir.path().join("train-images.idx3-ubyte"),
            idx::encode_images(mnist.images(), ROWS, COLS),
        )?;
        std::fs::write(
            dir.path().join("train-labels.idx1-ubyte.gz"),
            gzip(&idx::encode_labels(mnist.labels())),
        )?;
        assert_eq!(load(dir.path(), Split::Train)?, mnist);
        Ok(())
    }

    #[test]
    fn wrong_magic_names_the_file() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let mnist = synthetic(3);
        write_raw(dir.path(), Split::Train, &mnist);
        // A labels file where the images file should be.
        std::fs::write(
            dir.path().join("train-images-idx3-ubyte"),
            idx::encode_labels(mnist.labels()),
        )?;
        let err = message(load(dir.path(), Split::Train));
        assert!(err.contains("train-images-idx3-ubyte"), "{err}");
        assert!(err.contains("magic number is 2049"), "{err}");
        assert!(err.contains("expected 2051"), "{err}");
        Ok(())
    }

    #[test]
    fn truncated_files_say_so_and_how_to_fix() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let mnist = synthetic(4);
        write_raw(dir.path(), Split::Train, &mnist);
        let path = dir.path().join("train-images-idx3-ubyte");
        let full = std::fs::read(&path)?;
        std::fs::write(&path, &full[..full.len() - 100])?;
        let err = message(load(dir.path(), Split::Train));
        assert!(
            err.contains("train-images-idx3-ubyte is truncated"),
            "{err}"
        );
        assert!(err.contains("4 images of 28×28"), "{err}");
        assert!(err.contains("download it again"), "{err}");

        // Too long is an error too.
        let mut long = full.clone();
        long.push(0);
        std::fs::write(&path, &long)?;
        let err = message(load(dir.path(), Split::Train));
        assert!(
            err.contains("1 bytes more than its header promises"),
            "{err}"
        );

        // A truncated .gz.
        std::fs::remove_file(&path)?;
        let gz = gzip(&full);
        let gz_path = dir.path().join("train-images-idx3-ubyte.gz");
        std::fs::write(&gz_path, &gz[..gz.len() / 2])?;
        let err = message(load(dir.path(), Split::Train));
        assert!(
            err.contains("train-images-idx3-ubyte.gz is not a complete gzip file"),
            "{err}"
        );
        assert!(err.contains("truncated"), "{err}");

        // A header cut short.
        std::fs::write(&gz_path, gzip(&full[..10]))?;
        let err = message(load(dir.path(), Split::Train));
        assert!(err.contains("truncated"), "{err}");
        Ok(())
    }

    #[test]
    fn count_mismatch_and_bad_labels_are_errors() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let mnist = synthetic(4);
        write_raw(dir.path(), Split::Test, &mnist);
        std::fs::write(
            dir.path().join("t10k-labels-idx1-ubyte"),
            idx::encode_labels(&[1, 2, 3]),
        )?;
        let err = message(load(dir.path(), Split::Test));
        assert!(err.contains("holds 4 images"), "{err}");
        assert!(
            err.contains("t10k-labels-idx1-ubyte holds 3 labels"),
            "{err}"
        );

        std::fs::write(
            dir.path().join("t10k-labels-idx1-ubyte"),
            idx::encode_labels(&[1, 2, 3, 12]),
        )?;
        let err = message(load(dir.path(), Split::Test));
        assert!(err.contains("label 12 at index 3"), "{err}");

        // Not 28×28.
        std::fs::write(
            dir.path().join("t10k-images-idx3-ubyte"),
            idx::encode_images(&[0; 4 * 32 * 32], 32, 32),
        )?;
        let err = message(load(dir.path(), Split::Test));
        assert!(err.contains("32×32"), "{err}");
        assert!(Mnist::from_raw(vec![0; 784 * 2], vec![1]).is_err());
        assert!(Mnist::from_raw(vec![0; 785], vec![1]).is_err());
        Ok(())
    }

    #[test]
    fn missing_folder_explains_the_three_ways() {
        let dir = tempfile::tempdir().unwrap();
        let gone = dir.path().join("nowhere");
        let err = message(load(&gone, Split::Train));
        assert!(err.contains(&gone.display().to_string()), "{err}");
        for needle in [
            "does not exist",
            "--data-dir",
            "MNIST_DIR",
            "data/mnist",
            MIRRORS[0],
        ] {
            assert!(err.contains(needle), "missing {needle:?} in {err}");
        }
        let err = message(load_from(&MnistSource::Env(gone.clone()), Split::Train));
        assert!(err.contains("given by MNIST_DIR"), "{err}");
    }

    #[test]
    fn resolve_order_is_explicit_then_env_then_default() {
        let explicit = Path::new("/x/explicit");
        let env = Some(OsString::from("/y/env"));
        assert_eq!(
            resolve_dir_from(Some(explicit), env.clone()),
            MnistSource::Explicit(explicit.into())
        );
        assert_eq!(
            resolve_dir_from(None, env),
            MnistSource::Env("/y/env".into())
        );
        let default = resolve_dir_from(None, None);
        assert_eq!(default, MnistSource::Default("data/mnist".into()));
        assert!(default.is_default());
        assert_eq!(resolve_dir_from(None, Some(OsString::new())), default);
        assert_eq!(resolve_dir_from(Some(explicit), None).path(), explicit);
    }

    /// Real MNIST, when `MNIST_DIR` points at it.
    #[test]
    fn real_mnist_when_available() -> Result<()> {
        let Some(dir) = std::env::var_os(ENV_VAR).filter(|v| !v.is_empty()) else {
            eprintln!("skipped: MNIST_DIR is not set");
            return Ok(());
        };
        let dir = PathBuf::from(dir);
        let start = std::time::Instant::now();
        let train = load(&dir, Split::Train).with_context(|| {
            format!("MNIST_DIR={} is set but does not hold MNIST", dir.display())
        })?;
        eprintln!("read 60000 MNIST training images in {:?}", start.elapsed());
        let test = load(&dir, Split::Test)?;
        assert_eq!(train.len(), 60_000);
        assert_eq!(test.len(), 10_000);
        assert_eq!(train.labels()[0], 5);
        assert_eq!(test.labels()[0], 7);
        assert!(train.labels().iter().chain(test.labels()).all(|&l| l < 10));
        // Every digit is common.
        for digit in 0..10 {
            let n = train.labels().iter().filter(|&&l| l == digit).count();
            assert!((5000..7000).contains(&n), "digit {digit}: {n}");
        }
        let ds = train.to_dataset(PixelRange::ZeroOne)?;
        assert_eq!(ds.len(), 60_000);
        let mean =
            ds.all_values().iter().map(|&v| v as f64).sum::<f64>() / ds.all_values().len() as f64;
        assert!((mean - 0.1307).abs() < 1e-3, "mean pixel {mean}");
        Ok(())
    }
}
