//! Tokenization as sentence-transformers and transformers do it, on top of a model's `tokenizer.json`.
//!
//! The file's own padding and truncation settings are switched off: padding because batches are packed
//! ([`crate::bert::PackedBatch`]), truncation because the length limit is the embedder's `max_seq_length`, not what
//! the file happens to say (all-MiniLM-L6-v2's says 128; sentence-transformers uses 256). Special tokens come from the
//! file's post-processor, so `[CLS] … [SEP]` and `<s> … </s></s> … </s>` are each model's own.

use std::path::{Path, PathBuf};

use tokenizers::{Encoding, PostProcessor, Tokenizer, TruncationDirection};

use serde::Deserialize;

use crate::error::{read_optional_json, Error};

/// Texts tokenized and sorted by length together. Sorting a whole corpus at once would hold all its token ids in
/// memory; windows of this many texts bound that while still giving every batch sequences of similar length.
pub(crate) const SORT_WINDOW: usize = 1024;

/// One sequence ready for the model: token ids with special tokens, and their token types.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Tokens {
    pub ids: Vec<u32>,
    pub type_ids: Vec<u32>,
}

/// A model's tokenizer with sentence-transformers' truncation rules.
pub(crate) struct TextTokenizer {
    tokenizer: Tokenizer,
    path: PathBuf,
}

impl TextTokenizer {
    /// Loads `tokenizer.json`.
    pub fn load(path: &Path) -> Result<Self, Error> {
        let load_error = |message: String| Error::TokenizerLoad {
            path: path.to_owned(),
            message,
        };
        if !path.is_file() {
            return Err(load_error(
                "no such file (the model folder needs a tokenizer.json)".to_owned(),
            ));
        }
        let mut tokenizer = Tokenizer::from_file(path).map_err(|error| load_error(error.to_string()))?;
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(None)
            .map_err(|error| load_error(error.to_string()))?;
        Ok(TextTokenizer {
            tokenizer,
            path: path.to_owned(),
        })
    }

    /// Tokens of `text` without special tokens and without truncation: what a chunk costs against the model's
    /// sequence budget.
    pub fn count_tokens(&self, text: &str) -> Result<usize, Error> {
        Ok(self
            .tokenizer
            .encode_fast(text, false)
            .map_err(|error| self.tokenize_error(error))?
            .len())
    }

    /// Each text as one sequence of at most `max_length` tokens, special tokens included; longer texts lose their end
    /// (as `tokenizer(text, truncation=True, max_length=max_length)` in transformers).
    pub fn encode_texts(&self, texts: &[&str], max_length: usize) -> Result<Vec<Tokens>, Error> {
        let budget = max_length.saturating_sub(self.special_token_count(false));
        let encodings = self
            .tokenizer
            .encode_batch_fast(texts.to_vec(), false)
            .map_err(|e| self.tokenize_error(e))?;
        encodings
            .into_iter()
            .map(|mut encoding| {
                truncate(&mut encoding, budget);
                self.with_special_tokens(encoding, None)
            })
            .collect()
    }

    /// Each `(first, second)` pair as one sequence of at most `max_length` tokens, special tokens included. The second
    /// text is shortened first, as transformers' `truncation="only_second"` does; only when the first text alone fills
    /// the budget is it cut too, keeping half of the budget for the second.
    pub fn encode_pairs(&self, first: &str, seconds: &[&str], max_length: usize) -> Result<Vec<Tokens>, Error> {
        let budget = max_length.saturating_sub(self.special_token_count(true));
        let first = self
            .tokenizer
            .encode_fast(first, false)
            .map_err(|e| self.tokenize_error(e))?;
        let seconds = self
            .tokenizer
            .encode_batch_fast(seconds.to_vec(), false)
            .map_err(|e| self.tokenize_error(e))?;
        seconds
            .into_iter()
            .map(|mut second| {
                let (first_length, second_length) = pair_lengths(first.len(), second.len(), budget);
                let mut first = first.clone();
                truncate(&mut first, first_length);
                truncate(&mut second, second_length);
                self.with_special_tokens(first, Some(second))
            })
            .collect()
    }

    /// How many special tokens the post-processor adds to a single text or to a pair.
    fn special_token_count(&self, pair: bool) -> usize {
        self.tokenizer
            .get_post_processor()
            .map_or(0, |processor| processor.added_tokens(pair))
    }

    fn with_special_tokens(&self, first: Encoding, second: Option<Encoding>) -> Result<Tokens, Error> {
        let encoding = self
            .tokenizer
            .post_process(first, second, true)
            .map_err(|e| self.tokenize_error(e))?;
        Ok(Tokens {
            ids: encoding.get_ids().to_vec(),
            type_ids: encoding.get_type_ids().to_vec(),
        })
    }

    fn tokenize_error(&self, error: tokenizers::Error) -> Error {
        Error::Tokenize {
            path: self.path.clone(),
            message: error.to_string(),
        }
    }
}

/// `tokenizer_config.json`, for the one field knowhow reads from it.
#[derive(Deserialize)]
struct TokenizerConfig {
    model_max_length: Option<f64>,
}

/// The `model_max_length` that a folder's `tokenizer_config.json` declares, if it declares a real one (transformers
/// writes 1e30 for "no limit").
pub(crate) fn declared_max_length(dir: &Path) -> Result<Option<usize>, Error> {
    let config: Option<TokenizerConfig> = read_optional_json(&dir.join("tokenizer_config.json"))?;
    Ok(config
        .and_then(|config| config.model_max_length)
        .filter(|n| (1.0..1e9).contains(n))
        .map(|n| n as usize))
}

/// Indices of the sequences grouped into batches of at most `batch_size`, longest sequences first, so that each batch
/// holds sequences of similar length (the order sentence-transformers uses).
pub(crate) fn batches_longest_first(sequences: &[Tokens], batch_size: usize) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..sequences.len()).collect();
    order.sort_by_key(|&index| std::cmp::Reverse(sequences[index].ids.len()));
    order.chunks(batch_size.max(1)).map(<[usize]>::to_vec).collect()
}

/// Keeps the first `max_length` tokens, dropping the rest rather than keeping them as overflow pieces.
fn truncate(encoding: &mut Encoding, max_length: usize) {
    if encoding.len() > max_length {
        encoding.truncate(max_length, 0, TruncationDirection::Right);
        encoding.take_overflowing();
    }
}

/// How many tokens of each text of a pair fit in `budget`: the second text gives way first.
fn pair_lengths(first: usize, second: usize, budget: usize) -> (usize, usize) {
    if first + second <= budget {
        (first, second)
    } else if first < budget {
        (first, budget - first)
    } else {
        let second = second.min(budget / 2);
        (budget - second, second)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_hold_similar_lengths_longest_first() {
        let sequences: Vec<Tokens> = [3, 9, 1, 7, 5]
            .iter()
            .map(|&n| Tokens {
                ids: vec![0; n],
                type_ids: vec![0; n],
            })
            .collect();
        assert_eq!(batches_longest_first(&sequences, 2), [vec![1, 3], vec![4, 0], vec![2]]);
    }

    #[test]
    fn declared_max_length_ignores_the_no_limit_sentinel() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(declared_max_length(dir.path()).unwrap(), None, "no file");
        let path = dir.path().join("tokenizer_config.json");
        std::fs::write(&path, r#"{"model_max_length": 512, "do_lower_case": true}"#).unwrap();
        assert_eq!(declared_max_length(dir.path()).unwrap(), Some(512));
        std::fs::write(&path, r#"{"model_max_length": 1000000000000000019884624838656}"#).unwrap();
        assert_eq!(declared_max_length(dir.path()).unwrap(), None);
        std::fs::write(&path, r#"{"model_max_length": "512"}"#).unwrap();
        let err = declared_max_length(dir.path()).unwrap_err();
        assert!(matches!(&err, Error::Json { path: at, .. } if *at == path), "{err}");
    }

    #[test]
    fn pair_truncation_shortens_the_second_text_first() {
        assert_eq!(pair_lengths(10, 20, 100), (10, 20), "fits");
        assert_eq!(pair_lengths(10, 500, 100), (10, 90), "passage cut");
        assert_eq!(
            pair_lengths(99, 500, 100),
            (99, 1),
            "long query still kept whole while it fits"
        );
        assert_eq!(
            pair_lengths(300, 500, 100),
            (50, 50),
            "query alone over budget: half each"
        );
        assert_eq!(pair_lengths(300, 20, 100), (80, 20), "short passage kept whole");
    }
}
