//! The seed's per-epoch pictures: a grid of generated images from a fixed
//! noise batch (`generated_epoch{E}.png`), so epochs can be compared side by
//! side, and EBGAN's D auto-encoding fixed real images
//! (`reconstructed_epoch{E}.png`).

use anyhow::{Context as _, Result};
use candle_core::Tensor;
use kusari_trainer::extensions::{write_image_grid, GridPng, TensorBoardWriter};
use kusari_trainer::{Context, Extension, IntervalTrigger, Rng, Trigger};

use crate::nets::{AutoEncoder, Generator};

/// The random stream the fixed noise of [`GeneratedImages`] comes from.
pub const FIXED_NOISE_STREAM: &str = "images/fixed-z";

/// Saves `OUT/generated_epoch{E}.png`: G (evaluation mode) on the same noise
/// every time. Default trigger: every epoch.
pub struct GeneratedImages {
    gen: Generator,
    z: Tensor,
    value_range: (f32, f32),
    columns: usize,
    stem: String,
    tensorboard: Option<TensorBoardWriter>,
}

impl GeneratedImages {
    /// `n` images from noise drawn once from `seed`; pixel values in
    /// `value_range` map to black..white.
    pub fn new(gen: Generator, n: usize, seed: u64, value_range: (f32, f32)) -> Result<Self> {
        let z = gen.sample_z(n, &mut Rng::derived(seed, FIXED_NOISE_STREAM))?;
        Ok(Self {
            gen,
            z,
            value_range,
            columns: grid_columns(n),
            stem: "generated".into(),
            tensorboard: None,
        })
    }

    /// Also sends each grid to TensorBoard, as the image `images/{stem}`.
    pub fn tensorboard(mut self, writer: TensorBoardWriter) -> Self {
        self.tensorboard = Some(writer);
        self
    }

    /// Names the files `{stem}_epoch{E}.png` (and the extension `{stem}_images`),
    /// to save a second generator's images beside the first's: `kusari train
    /// --gen-ema` saves the averaged G's as `generated_average_epoch{E}.png`.
    pub fn file_stem(mut self, stem: impl Into<String>) -> Self {
        self.stem = stem.into();
        self
    }
}

/// Columns of a roughly square grid of `n` tiles.
fn grid_columns(n: usize) -> usize {
    ((n as f64).sqrt().ceil() as usize).max(1)
}

impl Extension for GeneratedImages {
    fn name(&self) -> String {
        format!("{}_images", self.stem)
    }

    fn default_trigger(&mut self) -> Box<dyn Trigger> {
        Box::new(IntervalTrigger::epochs(1.0))
    }

    fn call(&mut self, ctx: &mut Context<'_>) -> Result<()> {
        let images = self.gen.forward(&self.z, &mut crate::layers::Phase::Eval)?;
        let path = ctx
            .out()
            .join(format!("{}_epoch{}.png", self.stem, ctx.epoch()));
        let grid = write_image_grid(&path, &images, self.columns, self.value_range)
            .with_context(|| format!("saving {}", path.display()))?;
        send(
            &self.tensorboard,
            &format!("images/{}", self.stem),
            ctx,
            &grid,
        )
    }
}

/// Sends `grid` to TensorBoard at this iteration, when a writer is given.
fn send(
    writer: &Option<TensorBoardWriter>,
    tag: &str,
    ctx: &Context<'_>,
    grid: &GridPng,
) -> Result<()> {
    match writer {
        Some(writer) => writer.add_png(
            tag,
            ctx.iteration(),
            (grid.width, grid.height, grid.channels),
            &grid.png,
        ),
        None => Ok(()),
    }
}

/// Saves `OUT/reconstructed_epoch{E}.png`: the fixed real images and, below
/// each row of them, D's reconstructions (evaluation mode). Default trigger:
/// every epoch.
pub struct ReconstructedImages {
    dis: AutoEncoder,
    images: Tensor,
    value_range: (f32, f32),
    columns: usize,
    tensorboard: Option<TensorBoardWriter>,
}

impl ReconstructedImages {
    /// `images` (`[N, C, H, W]`) are shown with their reconstructions.
    pub fn new(dis: AutoEncoder, images: Tensor, value_range: (f32, f32)) -> Result<Self> {
        let n = images.dim(0)?;
        Ok(Self {
            dis,
            images,
            value_range,
            columns: grid_columns(n),
            tensorboard: None,
        })
    }

    /// Also sends each grid to TensorBoard, as the image `images/reconstructed`.
    pub fn tensorboard(mut self, writer: TensorBoardWriter) -> Self {
        self.tensorboard = Some(writer);
        self
    }
}

impl Extension for ReconstructedImages {
    fn name(&self) -> String {
        "reconstructed_images".into()
    }

    fn default_trigger(&mut self) -> Box<dyn Trigger> {
        Box::new(IntervalTrigger::epochs(1.0))
    }

    fn call(&mut self, ctx: &mut Context<'_>) -> Result<()> {
        let recon = self.dis.reconstruct(&self.images)?;
        // Interleave rows: originals, then their reconstructions.
        let n = self.images.dim(0)?;
        let mut rows = Vec::new();
        let mut start = 0;
        while start < n {
            let len = self.columns.min(n - start);
            rows.push(self.images.narrow(0, start, len)?);
            rows.push(recon.narrow(0, start, len)?);
            start += len;
        }
        let grid = if n % self.columns == 0 {
            Tensor::cat(&rows, 0)?
        } else {
            // A short last row would shift the pairs; show complete rows only.
            let full = n / self.columns * 2;
            Tensor::cat(&rows[..full.max(2).min(rows.len())], 0)?
        };
        let path = ctx
            .out()
            .join(format!("reconstructed_epoch{}.png", ctx.epoch()));
        let png = write_image_grid(&path, &grid, self.columns, self.value_range)
            .with_context(|| format!("saving {}", path.display()))?;
        send(&self.tensorboard, "images/reconstructed", ctx, &png)
    }
}
