//! What `knowhow data stats FILE` shows: rows per shape, duplicates, token lengths and the tokens an epoch costs.

use std::path::Path;

use serde::Serialize;
use tokenizers::Tokenizer;

use super::conversation::Message;
use super::dataset::{CheckReport, Dataset};
use super::encode::{encode_full, truncate, unpadded, EncodeOptions, Outcome, Render, RowFailure, Truncation};
use super::DataError;

/// Options for [`stats`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatsOptions {
    /// The training length limit: rows over it are counted, and the epoch estimate applies `truncation`.
    pub max_len: usize,
    pub truncation: Truncation,
    pub add_special_tokens: bool,
    /// Any bad line fails the run.
    pub strict: bool,
}

impl Default for StatsOptions {
    fn default() -> Self {
        let encode = EncodeOptions::default();
        StatsOptions {
            max_len: encode.max_len,
            truncation: encode.truncation,
            add_special_tokens: encode.add_special_tokens,
            strict: false,
        }
    }
}

/// Minimum, median, 95th percentile (nearest rank) and maximum of a set of lengths; all 0 when it is empty.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct LengthDistribution {
    pub count: usize,
    pub min: usize,
    pub median: usize,
    pub p95: usize,
    pub max: usize,
    pub mean: f64,
}

impl LengthDistribution {
    pub fn of(mut lengths: Vec<usize>) -> LengthDistribution {
        if lengths.is_empty() {
            return LengthDistribution::default();
        }
        lengths.sort_unstable();
        let rank = |percent: usize| lengths[(percent * lengths.len()).div_ceil(100).max(1) - 1];
        LengthDistribution {
            count: lengths.len(),
            min: lengths[0],
            median: rank(50),
            p95: rank(95),
            max: lengths[lengths.len() - 1],
            mean: lengths.iter().sum::<usize>() as f64 / lengths.len() as f64,
        }
    }
}

/// How token counts were made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Counting {
    /// The model's chat template (or the plain-text renderer) was applied: exact training lengths.
    Template,
    /// No renderer was given: message contents one per line, without template tokens — an underestimate.
    MessageText,
}

/// Token-level statistics over the unique rows.
#[derive(Debug, Clone, Serialize)]
pub struct TokenStats {
    pub counting: Counting,
    /// Tokens outside trained assistant turns.
    pub prompt: LengthDistribution,
    /// Tokens in trained assistant turns (with their end-of-turn tokens).
    pub completion: LengthDistribution,
    pub total: LengthDistribution,
    pub max_len: usize,
    pub truncation: Truncation,
    pub over_max_len: usize,
    /// Of those, rows the truncation rule would drop.
    pub dropped_rows: usize,
    /// Tokens one epoch processes, after truncation.
    pub tokens_per_epoch: usize,
    /// Of those, the tokens the loss is computed on.
    pub trained_tokens_per_epoch: usize,
    pub failed: Vec<RowFailure>,
}

/// Everything `data stats` reports.
#[derive(Debug, Clone, Serialize)]
pub struct Stats {
    /// Lines, shapes, bad lines, duplicates, checksum.
    pub input: CheckReport,
    /// Present when a tokenizer was given.
    pub tokens: Option<TokenStats>,
}

/// Row statistics for `path`, and token statistics when a tokenizer is given. `render` is the model's chat
/// template (or [`super::plain_text`]); without it lengths count message text only (see [`Counting`]).
pub fn stats(
    path: &Path,
    tokenizer: Option<&Tokenizer>,
    render: Option<&Render>,
    options: &StatsOptions,
) -> Result<Stats, DataError> {
    let dataset = Dataset::load(path, options.strict)?;
    let tokens = tokenizer.map(|tokenizer| {
        let tokenizer = unpadded(tokenizer);
        match render {
            Some(render) => token_stats(&dataset, &tokenizer, render, Counting::Template, options),
            None => token_stats(&dataset, &tokenizer, &message_text, Counting::MessageText, options),
        }
    });
    Ok(Stats {
        input: CheckReport::of(&dataset),
        tokens,
    })
}

/// Each message's content on its own line.
fn message_text(messages: &[Message], _add_generation_prompt: bool) -> Result<String, String> {
    Ok(messages.iter().map(|m| format!("{}\n", m.content)).collect())
}

fn token_stats(
    dataset: &Dataset,
    tokenizer: &Tokenizer,
    render: &Render,
    counting: Counting,
    options: &StatsOptions,
) -> TokenStats {
    let encode = EncodeOptions {
        max_len: options.max_len,
        truncation: options.truncation,
        add_special_tokens: options.add_special_tokens,
    };
    let (mut prompt, mut completion, mut total) = (Vec::new(), Vec::new(), Vec::new());
    let mut stats = TokenStats {
        counting,
        prompt: LengthDistribution::default(),
        completion: LengthDistribution::default(),
        total: LengthDistribution::default(),
        max_len: options.max_len,
        truncation: options.truncation,
        over_max_len: 0,
        dropped_rows: 0,
        tokens_per_epoch: 0,
        trained_tokens_per_epoch: 0,
        failed: Vec::new(),
    };
    for row in &dataset.rows {
        let full = match encode_full(&row.conversation, render, tokenizer, encode.add_special_tokens) {
            Ok(full) => full,
            Err(message) => {
                stats.failed.push(RowFailure {
                    line: row.line,
                    message,
                });
                continue;
            }
        };
        let length = full.encoded.input_ids.len();
        let trained = full.encoded.trained_tokens();
        prompt.push(length - trained);
        completion.push(trained);
        total.push(length);
        if length > options.max_len {
            stats.over_max_len += 1;
        }
        match truncate(full, &encode) {
            Outcome::Kept(encoded) | Outcome::Truncated { encoded, .. } => {
                stats.tokens_per_epoch += encoded.input_ids.len();
                stats.trained_tokens_per_epoch += encoded.trained_tokens();
            }
            Outcome::Dropped { .. } => stats.dropped_rows += 1,
        }
    }
    stats.prompt = LengthDistribution::of(prompt);
    stats.completion = LengthDistribution::of(completion);
    stats.total = LengthDistribution::of(total);
    stats
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let d = LengthDistribution::of((1..=100).rev().collect());
        assert_eq!((d.count, d.min, d.median, d.p95, d.max), (100, 1, 50, 95, 100));
        assert_eq!(d.mean, 50.5);
        let one = LengthDistribution::of(vec![7]);
        assert_eq!((one.min, one.median, one.p95, one.max), (7, 7, 7, 7));
        assert_eq!(LengthDistribution::of(vec![]).count, 0);
    }
}
