//! `kusari sample`: generated images from a snapshot, as a NumPy `.npy` file
//! of `uint8` with shape `(N, H, W)` for gray or `(N, H, W, 3)` for RGB.

use std::io::Write;
use std::path::Path;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Tensor};
use kusari_models::{GenWeights, Generator, Phase};
use kusari_trainer::datasets::PixelRange;
use kusari_trainer::device::parse_device;
use kusari_trainer::fsutil::AtomicFile;
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
    if let Some((key, value)) = gen.params().state().first_non_finite()? {
        bail!(
            "{} holds G weights that are not finite (`{key}` is {value}): the run had diverged \
             when it was written, and its images would be blank. Sample from an earlier \
             snapshot_iter_* of the run (kusari writes those only while every value is finite)",
            args.snapshot.display()
        );
    }

    let image = config.image();
    let shape: Vec<usize> = if image.channels == 1 {
        vec![args.n, image.height, image.width]
    } else {
        vec![args.n, image.height, image.width, image.channels]
    };
    let bytes = args
        .n
        .checked_mul(image.len())
        .filter(|&b| b <= isize::MAX as usize)
        .with_context(|| format!("--n {} images would not fit in any file", args.n))?;
    let folder = match args.out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if let Some(free) = free_bytes(folder) {
        // The header and some room to spare.
        if bytes as u64 + (1 << 20) > free {
            bail!(
                "--n {} images need {:.1} GB in {}, which has {:.1} GB free; ask for fewer \
                 images or write elsewhere",
                args.n,
                bytes as f64 / 1e9,
                folder.display(),
                free as f64 / 1e9
            );
        }
    }

    let mut file = AtomicFile::create(&args.out)?;
    file.write_all(&npy_u8_header(&shape))?;
    let mut rng = Rng::derived(args.seed, SAMPLE_STREAM);
    let mut done = 0;
    while done < args.n {
        let n = CHUNK.min(args.n - done);
        let z = gen.sample_z(n, &mut rng)?;
        let images = gen.forward(&z, &mut Phase::Eval)?;
        let chunk = to_bytes_nhwc(&images, config.data.pixel_range)?;
        file.write_all(&chunk)
            .with_context(|| format!("writing {}", args.out.display()))?;
        done += n;
    }
    file.commit()?;
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

/// Bytes free to this user on the filesystem holding `folder` (None where unknown).
fn free_bytes(folder: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(folder.as_os_str().as_bytes()).ok()?;
    // SAFETY: `path` is a NUL-terminated string and `stats` a plain struct
    // that statvfs fills.
    let mut stats: libc::statvfs = unsafe { std::mem::zeroed() };
    let status = unsafe { libc::statvfs(path.as_ptr(), &mut stats) };
    (status == 0).then(|| stats.f_bavail as u64 * stats.f_frsize as u64)
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

/// The header of a version-1.0 `.npy` file of `uint8` with this shape.
fn npy_u8_header(shape: &[usize]) -> Vec<u8> {
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
    let mut out = Vec::with_capacity(10 + header.len());
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out
}
