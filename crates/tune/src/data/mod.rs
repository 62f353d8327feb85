//! Fine-tuning datasets: from the JSONL files people have to token ids and loss masks.
//!
//! ```text
//! FILE.jsonl ─parse─▶ rows (prompt/completion | OpenAI chat | Alpaca → Conversation), bad lines reported by line and field
//!            ─dedupe─▶ unique rows ─split─▶ train / validation / test (+ general rows mixed into train)
//!            ─encode─▶ chat template → tokens → labels (-100 outside trained assistant turns) ─pad_batch─▶ batches
//! ```
//!
//! - [`parse`]: shape detection and validation per line ([`parse_jsonl`]).
//! - [`dataset`]: a file loaded, duplicates removed ([`Dataset`], [`check`]), the order-free [`rows_checksum`].
//! - [`split`](mod@split): the seeded, stable split and the mixing of general data ([`split()`]).
//! - [`encode`]: the chat template, tokenization, loss masks, truncation and padding ([`encode_rows`], [`pad_batch`]).
//! - [`stats`](mod@stats): row and token-length statistics ([`stats()`]).
//!
//! Every report is a serde struct, for a table or `--json`. A bad line never stops a run unless `strict` is set,
//! and never disappears: it is in the report with its file, line and field.

pub mod conversation;
pub mod dataset;
pub mod encode;
pub mod parse;
pub mod split;
pub mod stats;

use std::path::PathBuf;

pub use conversation::{checksum, Conversation, Message, Role};
pub use dataset::{check, rows_checksum, CheckOptions, CheckReport, Dataset, Duplicate};
pub use encode::{
    chat_template, encode, encode_rows, pad_batch, plain_text, unpadded, Batch, EncodeOptions, EncodeReport, Encoded,
    Outcome, Render, RowFailure, Truncation, IGNORE_INDEX,
};
pub use parse::{parse_jsonl, LineError, Row, Shape, ShapeCounts};
pub use split::{split, Mix, MixReport, PartReport, Ratios, SplitOptions, SplitReport};
pub use stats::{stats, Counting, LengthDistribution, Stats, StatsOptions, TokenStats};

/// Why a dataset operation failed as a whole. Single bad lines are not errors: they are [`LineError`]s in the
/// report, unless `strict` turns them into [`DataError::InvalidLines`].
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error(
        "{path}: {} invalid line(s) and strict mode is on; fix them or drop strict mode to skip them. First: {}",
        errors.len(),
        errors.first().map(ToString::to_string).unwrap_or_default()
    )]
    InvalidLines { path: PathBuf, errors: Vec<LineError> },
    #[error("{0}")]
    Option(String),
    #[error("tokenizer: {0}")]
    Tokenizer(String),
}
