//! Zero-copy access to the f32 buffers behind candle CPU tensors, wrapping results back into tensors, and the rule
//! for splitting row-wise work across threads.

use std::mem::MaybeUninit;

use candle_core::{CpuStorage, DType, Device, Layout, Storage, StorageRef, Tensor};
use rayon::prelude::*;

use crate::error::{KernelError, Result};

/// A read lock on an f32 CPU tensor's buffer, checked once so the kernels can index it freely.
pub(crate) struct CpuF32<'a> {
    storage: StorageRef<'a>,
    layout: &'a Layout,
}

impl<'a> CpuF32<'a> {
    /// Borrows `tensor`'s buffer (no copy); fails unless it is an f32 tensor on the CPU.
    pub(crate) fn borrow(op: &'static str, arg: &'static str, tensor: &'a Tensor) -> Result<Self> {
        if !tensor.device().is_cpu() {
            return Err(KernelError::NotOnCpu {
                op,
                arg,
                device: format!("{:?}", tensor.device().location()),
            });
        }
        if tensor.dtype() != DType::F32 {
            return Err(KernelError::NotF32 {
                op,
                arg,
                dtype: tensor.dtype(),
            });
        }
        let (storage, layout) = tensor.storage_and_layout();
        Ok(CpuF32 { storage, layout })
    }

    /// The whole buffer the tensor views, for strided access through [`Self::layout`].
    pub(crate) fn buffer(&self) -> &[f32] {
        match &*self.storage {
            Storage::Cpu(CpuStorage::F32(data)) => data,
            _ => unreachable!("CpuF32::borrow accepts only f32 CPU tensors"),
        }
    }

    pub(crate) fn layout(&self) -> &Layout {
        self.layout
    }

    /// The tensor's elements in row-major order; fails unless the tensor is contiguous.
    pub(crate) fn contiguous(&self, op: &'static str, arg: &'static str) -> Result<&[f32]> {
        match self.layout.contiguous_offsets() {
            Some((start, end)) => Ok(&self.buffer()[start..end]),
            None => Err(KernelError::NotContiguous {
                op,
                arg,
                shape: self.layout.dims().to_vec(),
                strides: self.layout.stride().to_vec(),
            }),
        }
    }
}

/// A `Vec` of `len` values written by `fill`, which gets the uninitialised buffer: outputs skip the zeroing pass
/// that `vec![0.0; len]` costs (calloc zeroes recycled memory — a third memory stream for a streaming kernel).
///
/// # Safety
/// `fill` must write every element of the slice it is given.
pub(crate) unsafe fn output_buffer(len: usize, fill: impl FnOnce(&mut [MaybeUninit<f32>])) -> Vec<f32> {
    let mut out = Vec::with_capacity(len);
    fill(&mut out.spare_capacity_mut()[..len]);
    out.set_len(len);
    out
}

/// `values` as initialised floats.
///
/// # Safety
/// Every element of `values` must have been written.
#[inline(always)]
pub(crate) unsafe fn assume_init(values: &mut [MaybeUninit<f32>]) -> &mut [f32] {
    &mut *(values as *mut [MaybeUninit<f32>] as *mut [f32])
}

/// Wraps a freshly computed buffer into a CPU tensor without copying it.
pub(crate) fn cpu_tensor(data: Vec<f32>, dims: &[usize]) -> Result<Tensor> {
    Ok(Tensor::from_vec(data, dims, &Device::Cpu)?)
}

/// Size of the last dimension of a tensor of rank ≥ 1, or a shape error naming the op and argument.
pub(crate) fn last_dim(op: &'static str, arg: &'static str, dims: &[usize]) -> Result<usize> {
    match dims.last() {
        Some(&n) if n > 0 => Ok(n),
        _ => Err(KernelError::Shape {
            op,
            message: format!("`{arg}` must have a non-empty last dimension, got {dims:?}"),
        }),
    }
}

/// About how many elements one parallel task handles: big enough that rayon's per-task cost (~1 µs) is noise,
/// small enough that two threads stay balanced on BERT-sized tensors.
const TASK_ELEMENTS: usize = 1 << 14;

/// Runs `kernel(first_row, src_rows, dst_rows)` over matching blocks of whole rows of `src` and `dst` (both
/// `row_len` wide), in parallel when there is enough work, on the calling thread otherwise.
pub(crate) fn for_each_row_block<F>(src: &[f32], dst: &mut [MaybeUninit<f32>], row_len: usize, kernel: F)
where
    F: Fn(usize, &[f32], &mut [MaybeUninit<f32>]) + Sync,
{
    let rows_per_block = TASK_ELEMENTS.div_ceil(row_len).max(1);
    let block = rows_per_block * row_len;
    if dst.len() <= block {
        kernel(0, src, dst);
    } else {
        src.par_chunks(block)
            .zip(dst.par_chunks_mut(block))
            .enumerate()
            .for_each(|(i, (src, dst))| kernel(i * rows_per_block, src, dst));
    }
}

/// Like [`for_each_row_block`] for kernels that read two inputs of the same shape.
pub(crate) fn for_each_row_block2<F>(a: &[f32], b: &[f32], dst: &mut [MaybeUninit<f32>], row_len: usize, kernel: F)
where
    F: Fn(&[f32], &[f32], &mut [MaybeUninit<f32>]) + Sync,
{
    let block = TASK_ELEMENTS.div_ceil(row_len).max(1) * row_len;
    if dst.len() <= block {
        kernel(a, b, dst);
    } else {
        a.par_chunks(block)
            .zip(b.par_chunks(block))
            .zip(dst.par_chunks_mut(block))
            .for_each(|((a, b), dst)| kernel(a, b, dst));
    }
}
