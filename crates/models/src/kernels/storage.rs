//! The f32 values of CPU tensors and variables as plain slices, without
//! copies: read under candle's storage lock, written through an in-place op.

use std::cell::RefCell;

use anyhow::{bail, Context, Result};
use candle_core::{CpuStorage, InplaceOp1, Layout, Storage, Tensor};

/// The values of a custom op's operand, which must be contiguous f32;
/// `what` names the op in the error otherwise.
pub fn operand<'a>(
    storage: &'a CpuStorage,
    layout: &Layout,
    what: &str,
) -> candle_core::Result<&'a [f32]> {
    use candle_core::backend::BackendStorage;
    let CpuStorage::F32(data) = storage else {
        candle_core::bail!("kusari's CPU {what} needs f32, got {:?}", storage.dtype());
    };
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => candle_core::bail!("kusari's CPU {what} needs contiguous operands"),
    }
}

/// Runs `f` on the values of `t`, a contiguous f32 tensor on the CPU.
pub fn read<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Result<R> {
    let (guard, layout) = t.storage_and_layout();
    let Storage::Cpu(CpuStorage::F32(data)) = &*guard else {
        bail!("the fast CPU step needs f32 tensors on the CPU");
    };
    let (start, end) = layout
        .contiguous_offsets()
        .context("the fast CPU step needs contiguous tensors")?;
    Ok(f(&data[start..end]))
}

/// Runs `f` on the values of `t` (a contiguous f32 CPU tensor, typically a
/// variable's) with write access; every tensor sharing the storage sees the
/// change.
pub fn write<R>(t: &Tensor, f: impl FnOnce(&mut [f32]) -> Result<R>) -> Result<R> {
    let op = WriteOp {
        f: RefCell::new(Some(f)),
        out: RefCell::new(None),
    };
    t.inplace_op1(&op)?;
    op.out.into_inner().context("the in-place op did not run")?
}

struct WriteOp<F, R> {
    f: RefCell<Option<F>>,
    out: RefCell<Option<Result<R>>>,
}

impl<F, R> InplaceOp1 for WriteOp<F, R>
where
    F: FnOnce(&mut [f32]) -> Result<R>,
{
    fn name(&self) -> &'static str {
        "kusari-write"
    }

    fn cpu_fwd(&self, storage: &mut CpuStorage, layout: &Layout) -> candle_core::Result<()> {
        let CpuStorage::F32(data) = storage else {
            candle_core::bail!("kusari-write: f32 storage expected");
        };
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("kusari-write: contiguous tensor expected");
        };
        let Some(f) = self.f.borrow_mut().take() else {
            candle_core::bail!("kusari-write: ran twice");
        };
        *self.out.borrow_mut() = Some(f(&mut data[start..end]));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn writes_reach_every_clone_and_reads_see_them() -> Result<()> {
        let v = Var::new(&[1f32, 2.0, 3.0], &Device::Cpu)?;
        let clone = v.clone();
        write(v.as_tensor(), |s| {
            s[1] = 5.0;
            Ok(())
        })?;
        assert_eq!(clone.to_vec1::<f32>()?, vec![1.0, 5.0, 3.0]);
        assert_eq!(read(clone.as_tensor(), |s| s.iter().sum::<f32>())?, 9.0);
        let err = write(v.as_tensor(), |_| -> Result<()> { bail!("inner failure") });
        assert!(err.unwrap_err().to_string().contains("inner failure"));
        let f64s = Tensor::new(&[1f64], &Device::Cpu)?;
        assert!(read(&f64s, |_| ()).is_err());
        Ok(())
    }
}
