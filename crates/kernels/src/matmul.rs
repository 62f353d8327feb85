//! A thin, strided front end to the `gemm` crate (the engine behind candle's CPU matmul) for the kernels that need
//! more control than `Tensor::matmul` gives: row blocks with a fused epilogue, heads read in place.

/// A read-only f32 matrix in memory: element (i, j) is at `ptr + i·row_stride + j·col_stride`.
#[derive(Clone, Copy)]
pub(crate) struct MatRef {
    pub ptr: *const f32,
    pub row_stride: usize,
    pub col_stride: usize,
}

/// A writable f32 matrix in memory, addressed like [`MatRef`].
#[derive(Clone, Copy)]
pub(crate) struct MatMut {
    pub ptr: *mut f32,
    pub row_stride: usize,
    pub col_stride: usize,
}

// SAFETY: these are plain addresses; the functions that dereference them state who may write where.
unsafe impl Send for MatRef {}
unsafe impl Sync for MatRef {}
unsafe impl Send for MatMut {}
unsafe impl Sync for MatMut {}

/// dst[m×n] = scale · lhs[m×k] · rhs[k×n], on the calling thread, overwriting `dst` without reading it.
///
/// # Safety
/// Every element the three matrices address for these sizes must be valid (`dst` for writes, and not overlapping
/// the inputs), and no other thread may touch `dst`'s elements during the call.
pub(crate) unsafe fn gemm_serial(m: usize, n: usize, k: usize, dst: MatMut, lhs: MatRef, rhs: MatRef, scale: f32) {
    gemm_with(m, n, k, dst, lhs, rhs, scale, gemm::Parallelism::None)
}

/// dst = lhs · rhs like [`gemm_serial`], letting `gemm` split the work across rayon's threads (for one large
/// product).
///
/// # Safety
/// As for [`gemm_serial`].
pub(crate) unsafe fn gemm_parallel(m: usize, n: usize, k: usize, dst: MatMut, lhs: MatRef, rhs: MatRef) {
    let threads = rayon::current_num_threads();
    let parallelism = if threads > 1 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    gemm_with(m, n, k, dst, lhs, rhs, 1.0, parallelism)
}

#[allow(clippy::too_many_arguments)]
unsafe fn gemm_with(
    m: usize,
    n: usize,
    k: usize,
    dst: MatMut,
    lhs: MatRef,
    rhs: MatRef,
    scale: f32,
    parallelism: gemm::Parallelism,
) {
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        // An empty sum: gemm would leave `dst` untouched, but its contents are the caller's garbage.
        for i in 0..m {
            for j in 0..n {
                *dst.ptr.add(i * dst.row_stride + j * dst.col_stride) = 0.0;
            }
        }
        return;
    }
    // gemm computes dst := alpha·dst + beta·lhs·rhs; read_dst = false means dst is only written, so alpha is unused.
    gemm::gemm(
        m,
        n,
        k,
        dst.ptr,
        dst.col_stride as isize,
        dst.row_stride as isize,
        false,
        lhs.ptr,
        lhs.col_stride as isize,
        lhs.row_stride as isize,
        rhs.ptr,
        rhs.col_stride as isize,
        rhs.row_stride as isize,
        0.0,
        scale,
        false,
        false,
        false,
        parallelism,
    )
}
