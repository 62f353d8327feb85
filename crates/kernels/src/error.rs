//! What can go wrong when a kernel is handed a tensor it cannot run on.

/// An input the kernels cannot use, or an error from candle itself.
///
/// Converts into [`candle_core::Error`], so `?` works inside model code that returns `candle_core::Result`.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error(
        "{op}: `{arg}` is on {device}; knowhow-kernels runs on the CPU only — use candle's own op on other devices"
    )]
    NotOnCpu {
        op: &'static str,
        arg: &'static str,
        device: String,
    },

    #[error("{op}: `{arg}` has dtype {dtype:?}, expected f32 — convert it with `.to_dtype(DType::F32)`")]
    NotF32 {
        op: &'static str,
        arg: &'static str,
        dtype: candle_core::DType,
    },

    #[error(
        "{op}: `{arg}` (shape {shape:?}, strides {strides:?}) is not laid out contiguously — call `.contiguous()` first"
    )]
    NotContiguous {
        op: &'static str,
        arg: &'static str,
        shape: Vec<usize>,
        strides: Vec<usize>,
    },

    #[error("{op}: {message}")]
    Shape { op: &'static str, message: String },

    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

impl From<KernelError> for candle_core::Error {
    fn from(error: KernelError) -> Self {
        match error {
            KernelError::Candle(error) => error,
            other => candle_core::Error::wrap(other),
        }
    }
}

/// Shorthand for results of this crate.
pub type Result<T> = std::result::Result<T, KernelError>;
