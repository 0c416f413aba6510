//! [`Judge`]: the trained MNIST classifier that scores generated digits,
//! saved once to a cache folder and loaded from there afterwards.

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use candle_core::{DType, Device, Tensor};
use kusari_trainer::fsutil;
use kusari_trainer::{ParamStore, State};
use serde::{Deserialize, Serialize};

use super::lenet::LeNet;

/// File name of the cached judge's weights; its metadata sits beside it
/// with the extension `.json`.
pub const JUDGE_FILE: &str = "mnist-judge-v1.safetensors";

const FORMAT: &str = "kusari-mnist-judge";
const FORMAT_VERSION: u32 = 1;

/// Images classified per forward pass: bounds memory, not results.
const CLASSIFY_BATCH: usize = 500;

/// What the metadata file records about a trained judge.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JudgeInfo {
    /// Always `kusari-mnist-judge`.
    pub format: String,
    /// Version of the file format and architecture (1).
    pub version: u32,
    /// Accuracy on the 10,000 MNIST test images.
    pub test_accuracy: f64,
    /// Training epochs.
    pub epochs: usize,
    /// Seed of initialization, shuffling and dropout.
    pub seed: u64,
    /// Wall-clock training time, including the per-epoch test evaluations.
    pub train_seconds: f64,
    /// The kusari version that trained it.
    pub kusari_version: String,
}

impl JudgeInfo {
    pub(crate) fn new(epochs: usize, seed: u64) -> Self {
        Self {
            format: FORMAT.to_string(),
            version: FORMAT_VERSION,
            test_accuracy: f64::NAN,
            epochs,
            seed,
            train_seconds: 0.0,
            kusari_version: env!("CARGO_PKG_VERSION").to_string(),
        }
    }
}

/// The MNIST classifier that judges samples: its penultimate-layer
/// features feed FID, its class probabilities the Inception Score and
/// the class shares.
///
/// Cloning is cheap; clones share weights.
#[derive(Debug, Clone)]
pub struct Judge {
    params: ParamStore,
    net: LeNet,
    pub(crate) info: JudgeInfo,
    /// The weights file it was loaded from or saved to, if any.
    path: Option<PathBuf>,
    device: Device,
}

/// The folder kusari caches downloaded or trained artefacts in:
/// `$KUSARI_CACHE_DIR`, else `$XDG_CACHE_HOME/kusari`, else `~/.cache/kusari`.
pub fn cache_dir() -> Result<PathBuf> {
    cache_dir_from(
        std::env::var_os("KUSARI_CACHE_DIR"),
        std::env::var_os("XDG_CACHE_HOME"),
        std::env::var_os("HOME"),
    )
}

/// [`cache_dir`] from given variable values (empty counts as unset).
pub fn cache_dir_from(
    kusari: Option<OsString>,
    xdg: Option<OsString>,
    home: Option<OsString>,
) -> Result<PathBuf> {
    let set = |v: Option<OsString>| v.filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(dir) = set(kusari) {
        return Ok(dir);
    }
    if let Some(dir) = set(xdg) {
        return Ok(dir.join("kusari"));
    }
    if let Some(home) = set(home) {
        return Ok(home.join(".cache").join("kusari"));
    }
    bail!("cannot find a cache folder: set KUSARI_CACHE_DIR (or XDG_CACHE_HOME or HOME)")
}

fn metadata_path(weights: &Path) -> PathBuf {
    weights.with_extension("json")
}

impl Judge {
    pub(crate) fn from_parts(params: ParamStore, net: LeNet, info: JudgeInfo) -> Self {
        Self {
            params,
            net,
            info,
            path: None,
            device: Device::Cpu,
        }
    }

    /// A judge with random weights: its scores mean nothing. For testing
    /// code that uses a judge without training one.
    pub fn untrained(seed: u64) -> Result<Self> {
        let params = ParamStore::new();
        let net = LeNet::new(
            &params,
            &mut kusari_trainer::Rng::derived(seed, "judge/init"),
            &Device::Cpu,
        )?;
        Ok(Self::from_parts(params, net, JudgeInfo::new(0, seed)))
    }

    /// Where the judge is cached: `mnist-judge-v1.safetensors` in [`cache_dir`].
    pub fn cache_path() -> Result<PathBuf> {
        Ok(cache_dir()?.join(JUDGE_FILE))
    }

    /// What is known about how the judge was trained.
    pub fn info(&self) -> &JudgeInfo {
        &self.info
    }

    /// The weights file this judge was loaded from or saved to.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// The device the judge's weights live on (the CPU).
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The judge's parameters (for inspection and tests).
    pub fn params(&self) -> &ParamStore {
        &self.params
    }

    /// Features `[N, 128]` and class probabilities `[N, 10]` (f32, on the
    /// CPU) of `images` `[N, 1, 28, 28]` with pixels in `[-1, 1]`, in
    /// batches and without dropout.
    pub fn classify(&self, images: &Tensor) -> Result<(Tensor, Tensor)> {
        let (n, _, _, _) = images.dims4().with_context(|| {
            format!(
                "the judge takes [N, 1, 28, 28] images, got {:?}",
                images.dims()
            )
        })?;
        ensure!(n > 0, "there are no images to classify");
        let images = images.to_device(self.device())?.to_dtype(DType::F32)?;
        let mut features = Vec::new();
        let mut probs = Vec::new();
        for start in (0..n).step_by(CLASSIFY_BATCH) {
            let batch = images.narrow(0, start, CLASSIFY_BATCH.min(n - start))?;
            let f = self.net.features(&batch, false)?;
            let logits = self.net.logits(&f, None)?;
            probs.push(candle_nn::ops::softmax_last_dim(&logits)?);
            features.push(f);
        }
        Ok((Tensor::cat(&features, 0)?, Tensor::cat(&probs, 0)?))
    }

    /// A fingerprint of the weights, so that cached statistics computed
    /// with one judge are never used with another.
    pub fn fingerprint(&self) -> Result<String> {
        // FNV-1a over names and the bits of every value.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let mut eat = |bytes: &[u8]| {
            for &b in bytes {
                h ^= u64::from(b);
                h = h.wrapping_mul(0x0000_0100_0000_01B3);
            }
        };
        for (name, var, _) in self.params.all() {
            eat(name.as_bytes());
            for x in var.as_tensor().flatten_all()?.to_vec1::<f32>()? {
                eat(&x.to_bits().to_le_bytes());
            }
        }
        Ok(format!("{h:016x}"))
    }

    /// Writes the weights to `path` (safetensors) and the metadata beside
    /// it (`.json`), each atomically; the weights file appears last, so its
    /// presence means both are complete.
    pub fn save(&mut self, path: &Path) -> Result<()> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| {
                format!(
                    "cannot create the judge's folder {}; set KUSARI_CACHE_DIR to a writable folder",
                    dir.display()
                )
            })?;
        }
        fsutil::write_atomic(
            &metadata_path(path),
            &serde_json::to_vec_pretty(&self.info)?,
        )?;
        let tensors: HashMap<String, Tensor> = self
            .params
            .all()
            .into_iter()
            .map(|(name, var, _)| (name, var.as_tensor().clone()))
            .collect();
        let tmp = fsutil::temp_sibling(path);
        let written = candle_core::safetensors::save(&tensors, &tmp)
            .map_err(anyhow::Error::from)
            .and_then(|()| fsutil::give_default_permissions(&tmp))
            .and_then(|()| Ok(std::fs::File::open(&tmp)?.sync_all()?))
            .and_then(|()| Ok(std::fs::rename(&tmp, path)?));
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        written.with_context(|| format!("cannot write the judge to {}", path.display()))?;
        self.path = Some(path.to_path_buf());
        Ok(())
    }

    /// Reads a judge written by [`Judge::save`].
    pub fn load(path: &Path) -> Result<Self> {
        let remedy = "delete it (and the .json beside it) to have kusari train a new judge";
        let meta_path = metadata_path(path);
        let meta = std::fs::read(&meta_path).with_context(|| {
            format!(
                "cannot read the judge's metadata {}; {remedy}",
                meta_path.display()
            )
        })?;
        let info: JudgeInfo = serde_json::from_slice(&meta).with_context(|| {
            format!(
                "the judge's metadata {} is corrupt; {remedy}",
                meta_path.display()
            )
        })?;
        if info.format != FORMAT || info.version != FORMAT_VERSION {
            bail!(
                "{} is a `{}` version {} file, but this kusari reads `{FORMAT}` version {FORMAT_VERSION}; {remedy}",
                meta_path.display(),
                info.format,
                info.version
            );
        }
        let tensors = candle_core::safetensors::load(path, &Device::Cpu).with_context(|| {
            format!(
                "cannot read the judge's weights {}; {remedy}",
                path.display()
            )
        })?;
        let mut state = State::new();
        for (name, tensor) in &tensors {
            state.put_tensor(name.clone(), tensor);
        }
        let params = ParamStore::new();
        // The initial values are overwritten by the loaded ones.
        let net = LeNet::new(&params, &mut kusari_trainer::Rng::new(0), &Device::Cpu)?;
        params
            .load_state(&state, &format!("the judge file {}", path.display()))
            .with_context(|| {
                format!(
                    "{} does not hold this kusari's judge; {remedy}",
                    path.display()
                )
            })?;
        Ok(Self {
            params,
            net,
            info,
            path: Some(path.to_path_buf()),
            device: Device::Cpu,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::lenet::{CLASSES, FEATURES};

    #[test]
    fn cache_folder_precedence() -> Result<()> {
        let s = |v: &str| Some(OsString::from(v));
        assert_eq!(
            cache_dir_from(s("/k"), s("/x"), s("/h"))?,
            PathBuf::from("/k")
        );
        assert_eq!(
            cache_dir_from(None, s("/x"), s("/h"))?,
            PathBuf::from("/x/kusari")
        );
        assert_eq!(
            cache_dir_from(s(""), s(""), s("/h"))?,
            PathBuf::from("/h/.cache/kusari")
        );
        let err = cache_dir_from(None, None, None).unwrap_err().to_string();
        assert!(err.contains("KUSARI_CACHE_DIR"), "{err}");
        Ok(())
    }

    fn images(n: usize) -> Result<Tensor> {
        let mut rng = kusari_trainer::Rng::new(9);
        Ok(rng.uniform_tensor((n, 1, 28, 28), -1.0, 1.0, &Device::Cpu)?)
    }

    #[test]
    fn classify_gives_features_and_probabilities() -> Result<()> {
        let judge = Judge::untrained(1)?;
        // More than one internal batch.
        let n = CLASSIFY_BATCH + 3;
        let (features, probs) = judge.classify(&images(n)?)?;
        assert_eq!(features.dims(), &[n, FEATURES]);
        assert_eq!(probs.dims(), &[n, CLASSES]);
        let sums = probs.sum(1)?.to_vec1::<f32>()?;
        assert!(sums.iter().all(|s| (s - 1.0).abs() < 1e-5), "rows sum to 1");
        assert!(
            features
                .flatten_all()?
                .to_vec1::<f32>()?
                .iter()
                .all(|&f| f >= 0.0),
            "ReLU features"
        );
        // Batching does not change results.
        let (_, first) = judge.classify(&images(n)?.narrow(0, 0, 2)?)?;
        let diff = (first - probs.narrow(0, 0, 2)?)?
            .abs()?
            .max_all()?
            .to_scalar::<f32>()?;
        assert!(diff < 1e-6, "{diff}");

        let err = judge
            .classify(&Tensor::zeros((2, 28, 28), DType::F32, &Device::Cpu)?)
            .unwrap_err();
        assert!(format!("{err:#}").contains("[N, 1, 28, 28]"), "{err:#}");
        let err = judge
            .classify(&Tensor::zeros((2, 3, 28, 28), DType::F32, &Device::Cpu)?)
            .unwrap_err();
        assert!(format!("{err:#}").contains("[N, 1, 28, 28]"), "{err:#}");
        Ok(())
    }

    #[test]
    fn save_and_load_round_trip_and_bad_files() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("sub").join(JUDGE_FILE);
        let mut judge = Judge::untrained(2)?;
        judge.info.test_accuracy = 0.5;
        judge.save(&path)?;
        assert_eq!(judge.path(), Some(path.as_path()));
        let names: Vec<String> = std::fs::read_dir(path.parent().unwrap())?
            .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect::<std::io::Result<_>>()?;
        assert_eq!(
            names.len(),
            2,
            "weights and metadata only, no temporaries: {names:?}"
        );

        let loaded = Judge::load(&path)?;
        assert_eq!(loaded.info(), judge.info());
        assert_eq!(loaded.fingerprint()?, judge.fingerprint()?);
        assert_ne!(Judge::untrained(3)?.fingerprint()?, judge.fingerprint()?);
        let x = images(4)?;
        let (fa, pa) = judge.classify(&x)?;
        let (fb, pb) = loaded.classify(&x)?;
        assert_eq!(fa.to_vec2::<f32>()?, fb.to_vec2::<f32>()?);
        assert_eq!(pa.to_vec2::<f32>()?, pb.to_vec2::<f32>()?);

        // Damaged or foreign files name the file and the fix.
        let meta = path.with_extension("json");
        let good_meta = std::fs::read(&meta)?;
        std::fs::write(&meta, b"{ not json")?;
        let err = format!("{:#}", Judge::load(&path).unwrap_err());
        assert!(
            err.contains("corrupt") && err.contains("delete it"),
            "{err}"
        );
        let other_version =
            String::from_utf8(good_meta.clone())?.replace("\"version\": 1", "\"version\": 7");
        std::fs::write(&meta, other_version)?;
        let err = format!("{:#}", Judge::load(&path).unwrap_err());
        assert!(err.contains("version 7"), "{err}");
        std::fs::write(&meta, &good_meta)?;
        std::fs::write(&path, b"garbage")?;
        let err = format!("{:#}", Judge::load(&path).unwrap_err());
        assert!(
            err.contains("cannot read the judge's weights") && err.contains(JUDGE_FILE),
            "{err}"
        );
        std::fs::remove_file(&meta)?;
        let err = format!("{:#}", Judge::load(&path).unwrap_err());
        assert!(err.contains("metadata"), "{err}");
        Ok(())
    }
}
