//! No input makes kusari panic or abort: hundreds of mutated and truncated
//! IDX, gzip, `.npy`, PNG, JPEG and snapshot files (deterministic seeds)
//! each end in `Ok` or an `Err`. An abort (a huge allocation) would end
//! this test process, which fails the test as loudly as a panic.

mod common;

use std::io::Write;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

use anyhow::Result;
use candle_core::Device;
use common::*;
use kusari_models::eval::npy::{images_from_u8, parse_npy_u8};
use kusari_models::ObjectiveConfig;
use kusari_trainer::datasets::image_folder::ImageFolder;
use kusari_trainer::datasets::mnist::{self, Mnist, Split};
use kusari_trainer::State;

/// Cases per kind of file.
const CASES: u64 = 100;

/// xorshift64*: the same mutations on every machine.
struct Mutator(u64);

impl Mutator {
    fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    /// One to four edits of `bytes`: a cut, flipped or overwritten bytes, a
    /// size-like word made huge or zero, inserted or repeated bytes.
    /// Headers are where the sizes live, so edits favour the first 64 bytes.
    fn mutate(&mut self, bytes: &[u8]) -> Vec<u8> {
        let mut out = bytes.to_vec();
        for _ in 0..1 + self.below(4) {
            let len = out.len().max(1);
            let at = if self.below(2) == 0 {
                self.below(len.min(64))
            } else {
                self.below(len)
            };
            match self.below(7) {
                0 => out.truncate(at),
                1 => {
                    if let Some(b) = out.get_mut(at) {
                        *b ^= 1 << self.below(8);
                    }
                }
                2 => {
                    if let Some(b) = out.get_mut(at) {
                        *b = [0, 0xFF, 0x7F, 0x80][self.below(4)];
                    }
                }
                3 => {
                    let word: [u8; 4] =
                        [[0xFF; 4], [0x7F, 0xFF, 0xFF, 0xFF], [0; 4], [0, 0, 0, 1]][self.below(4)];
                    for (k, w) in word.iter().enumerate() {
                        if let Some(b) = out.get_mut(at + k) {
                            *b = *w;
                        }
                    }
                }
                4 => {
                    let extra: Vec<u8> =
                        (0..1 + self.below(16)).map(|_| self.next() as u8).collect();
                    let at = at.min(out.len());
                    out.splice(at..at, extra);
                }
                5 => {
                    let end = (at + 1 + self.below(256)).min(out.len());
                    let chunk = out[at.min(end)..end].to_vec();
                    out.extend_from_slice(&chunk);
                }
                _ => {
                    let digits = b"0123456789";
                    if let Some(b) = out.get_mut(at) {
                        *b = digits[self.below(10)];
                    }
                }
            }
        }
        out
    }
}

/// Runs `attempt` on `CASES` mutations of `base`; every one must return
/// (`Ok` or `Err`) without panicking. Returns how many were errors.
fn survives(what: &str, base: &[u8], mut attempt: impl FnMut(&[u8]) -> Result<()>) -> usize {
    let mut errors = 0;
    let mut panics = vec![];
    for case in 0..CASES {
        let mut mutator = Mutator::new(case + 1);
        let input = mutator.mutate(base);
        match catch_unwind(AssertUnwindSafe(|| attempt(&input))) {
            Ok(Ok(())) => {}
            Ok(Err(_)) => errors += 1,
            Err(_) => panics.push(case),
        }
    }
    assert!(
        panics.is_empty(),
        "{what}: cases {panics:?} panicked (rerun one with Mutator::new(case + 1))"
    );
    errors
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(bytes).unwrap();
    gz.finish().unwrap()
}

#[test]
fn mutated_mnist_files_give_errors_not_panics() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let images: Vec<u8> = (0..20 * 784).map(|i| (i * 31 % 251) as u8).collect();
    let labels: Vec<u8> = (0..20).map(|i| (i % 10) as u8).collect();
    let valid = Mnist::from_raw(images, labels)?;
    let raw_dir = dir.path().join("raw");
    valid.save(&raw_dir, Split::Train)?;
    let mut total_errors = 0;
    for name in ["train-images-idx3-ubyte", "train-labels-idx1-ubyte"] {
        let gz = std::fs::read(raw_dir.join(format!("{name}.gz")))?;
        let idx = flate2::read::GzDecoder::new(gz.as_slice());
        let idx: Vec<u8> = std::io::Read::bytes(idx).collect::<std::io::Result<_>>()?;
        for (form, base) in [("gzip", &gz), ("IDX inside gzip", &idx)] {
            let case_dir = dir.path().join(format!("{name}-{}", form.len()));
            valid.save(&case_dir, Split::Train)?;
            let target = case_dir.join(format!("{name}.gz"));
            let attempt = |bytes: &[u8]| -> Result<()> {
                if form == "gzip" {
                    std::fs::write(&target, bytes)?;
                } else {
                    std::fs::write(&target, gzip(bytes))?;
                }
                let loaded = mnist::load(&case_dir, Split::Train)?;
                loaded.to_dataset(kusari_trainer::datasets::PixelRange::MinusOneOne)?;
                Ok(())
            };
            total_errors += survives(&format!("{name} as {form}"), base, attempt);
        }
    }
    // The mutations are not all harmless: most must be caught.
    assert!(total_errors > CASES as usize, "{total_errors}");
    Ok(())
}

/// A version-1 `.npy` file of `uint8` with the header's shape given as text.
fn npy_file(shape: &str, data: &[u8]) -> Vec<u8> {
    let mut header = format!("{{'descr': '|u1', 'fortran_order': False, 'shape': {shape}, }}");
    while !(10 + header.len() + 1).is_multiple_of(64) {
        header.push(' ');
    }
    header.push('\n');
    let mut npy = b"\x93NUMPY\x01\x00".to_vec();
    npy.extend_from_slice(&(header.len() as u16).to_le_bytes());
    npy.extend_from_slice(header.as_bytes());
    npy.extend_from_slice(data);
    npy
}

#[test]
fn mutated_npy_samples_give_errors_not_panics() {
    let data: Vec<u8> = (0..4 * 28 * 28).map(|i| (i % 256) as u8).collect();
    let npy = npy_file("(4, 28, 28)", &data);
    assert!(parse_npy_u8(&npy).is_ok());
    let errors = survives("npy", &npy, |bytes| {
        images_from_u8(&parse_npy_u8(bytes)?)?;
        Ok(())
    });
    assert!(errors > 0);
    // Shapes whose byte counts overflow or wrap to the data's length.
    for shape in [
        "(1152921504606846976, 28, 28)",
        "(18446744073709551615,)",
        "(4294967296, 4294967296, 0)",
        "(0, 28, 28)",
        "(-1, 28, 28)",
    ] {
        for body in [&[][..], &data[..]] {
            let bytes = npy_file(shape, body);
            let result = catch_unwind(|| parse_npy_u8(&bytes).and_then(|n| images_from_u8(&n)));
            assert!(
                matches!(result, Ok(Err(_))),
                "shape {shape} must be refused"
            );
        }
    }
}

#[test]
fn mutated_images_are_skipped_or_read_never_a_panic() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let picture = image::RgbImage::from_fn(24, 20, |x, y| {
        image::Rgb([(x * 9) as u8, (y * 11) as u8, 77])
    });
    for format in [image::ImageFormat::Png, image::ImageFormat::Jpeg] {
        let mut base = std::io::Cursor::new(Vec::new());
        picture.write_to(&mut base, format)?;
        let folder = dir.path().join(format!("{format:?}"));
        std::fs::create_dir_all(&folder)?;
        let extension = if format == image::ImageFormat::Png {
            "png"
        } else {
            "jpg"
        };
        let target = folder.join(format!("image.{extension}"));
        survives(&format!("{format:?}"), base.get_ref(), |bytes| {
            std::fs::write(&target, bytes)?;
            let read = ImageFolder::load(&folder, 16)?;
            read.to_dataset(kusari_trainer::datasets::PixelRange::MinusOneOne)?;
            Ok(())
        });
    }
    Ok(())
}

#[test]
fn mutated_snapshots_give_errors_not_panics() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let config = tiny_config(ObjectiveConfig::from_name("ebgan")?);
    let data = synthetic(40, config.model.image);
    let (mut trainer, _, _) = trainer(&config, data.clone(), 0, 3, &dir.path().join("run"))?;
    trainer.run()?;
    let snapshot = dir.path().join("snapshot");
    trainer.save_snapshot(&snapshot)?;
    let (mut fresh, _, _) = trainer_for_resume(&config, data, dir.path())?;
    fresh.load_state(&State::load(&snapshot, &Device::Cpu)?)?;

    let mut total_errors = 0;
    for file in ["state.json", "state.safetensors"] {
        let base = std::fs::read(snapshot.join(file))?;
        let case = dir.path().join(format!("case-{file}"));
        std::fs::create_dir_all(&case)?;
        for other in ["state.json", "state.safetensors"] {
            std::fs::copy(snapshot.join(other), case.join(other))?;
        }
        total_errors += survives(file, &base, |bytes| {
            std::fs::write(case.join(file), bytes)?;
            let state = State::load(&case, &Device::Cpu)?;
            fresh.load_state(&state)?;
            Ok(())
        });
    }
    assert!(total_errors > CASES as usize, "{total_errors}");
    Ok(())
}

/// A second trainer of the same configuration, to restore snapshots into.
fn trainer_for_resume(
    config: &kusari_models::Config,
    data: kusari_trainer::ArrayDataset,
    dir: &Path,
) -> Result<(TestTrainer, ReportLog, kusari_models::Nets)> {
    trainer(config, data, 0, 3, &dir.join("resumed"))
}
