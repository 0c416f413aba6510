//! `kusari sample`: generated images from a snapshot, as a NumPy `.npy` file
//! of `uint8` with shape `(N, H, W)` for gray or `(N, H, W, 3)` for RGB.

use std::io::Write;
use std::path::Path;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Tensor};
use kusari_models::{GenWeights, Generator, Phase};
use kusari_trainer::datasets::PixelRange;
use kusari_trainer::device::parse_device;
use kusari_trainer::fsutil::write_atomic;
use kusari_trainer::{Rng, State};

use crate::args::{SampleArgs, SampleWeights};
use crate::train::config_from_snapshot;

/// Noise for `kusari sample` comes from this stream of `--seed`.
const SAMPLE_STREAM: &str = "sample/z";
/// Images generated per forward pass (bounds memory for large N).
const CHUNK: usize = 500;

pub fn run(args: &SampleArgs) -> Result<()> {
    if args.n == 0 {
        bail!("--n must be at least 1");
    }
    if args.out.extension().and_then(|e| e.to_str()) != Some("npy") {
        bail!("--out must name a .npy file, got {}", args.out.display());
    }
    let device = parse_device(&args.device)?;
    let state = State::load(&args.snapshot, &device)?;
    let config = config_from_snapshot(&state, &args.snapshot)?;
    let gen = Generator::new(&config.model.model, &device, &mut Rng::new(0))?;
    let weights = match args.weights {
        None => GenWeights::best_in(&state),
        Some(SampleWeights::Live) => GenWeights::Live,
        Some(SampleWeights::Average) => GenWeights::Average,
    };
    gen.load_snapshot_weights(&state, weights)?;

    let mut rng = Rng::derived(args.seed, SAMPLE_STREAM);
    let mut bytes = Vec::with_capacity(args.n * config.image().len());
    let mut done = 0;
    while done < args.n {
        let n = CHUNK.min(args.n - done);
        let z = gen.sample_z(n, &mut rng)?;
        let images = gen.forward(&z, &mut Phase::Eval)?;
        bytes.extend(to_bytes_nhwc(&images, config.data.pixel_range)?);
        done += n;
    }
    let image = config.image();
    let shape: Vec<usize> = if image.channels == 1 {
        vec![args.n, image.height, image.width]
    } else {
        vec![args.n, image.height, image.width, image.channels]
    };
    write_npy_u8(&args.out, &shape, &bytes)?;
    let which = match weights {
        GenWeights::Live => "G's trained weights",
        GenWeights::Average => "the moving average of G's weights",
    };
    eprintln!(
        "wrote {} images {:?} from {which} to {}",
        args.n,
        shape,
        args.out.display()
    );
    Ok(())
}

/// `[N, C, H, W]` values → bytes in `N, H, W, C` order.
fn to_bytes_nhwc(images: &Tensor, range: PixelRange) -> Result<Vec<u8>> {
    let nhwc = images
        .permute((0, 2, 3, 1))?
        .contiguous()?
        .to_dtype(DType::F32)?;
    let values: Vec<f32> = nhwc.flatten_all()?.to_vec1()?;
    Ok(values.into_iter().map(|v| range.to_u8(v)).collect())
}

/// Writes a version-1.0 `.npy` file of `uint8`, atomically.
pub fn write_npy_u8(path: &Path, shape: &[usize], data: &[u8]) -> Result<()> {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let shape_text = if dims.len() == 1 {
        format!("({},)", dims[0])
    } else {
        format!("({})", dims.join(", "))
    };
    let mut header = format!("{{'descr': '|u1', 'fortran_order': False, 'shape': {shape_text}, }}");
    // Magic (6) + version (2) + length (2) + header + newline, padded to a multiple of 64.
    let unpadded = 10 + header.len() + 1;
    header.push_str(&" ".repeat((64 - unpadded % 64) % 64));
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len() + data.len());
    out.write_all(b"\x93NUMPY\x01\x00")?;
    out.write_all(&(header.len() as u16).to_le_bytes())?;
    out.write_all(header.as_bytes())?;
    out.write_all(data)?;
    write_atomic(path, &out).with_context(|| format!("writing {}", path.display()))
}
