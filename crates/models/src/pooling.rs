//! Pooling token vectors into one sentence vector, and L2 normalisation, as sentence-transformers' `Pooling` and
//! `Normalize` modules do.

use std::ops::Range;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{config_error, read_json, Error};

/// How a sentence vector is made from its token vectors (special tokens included, as in sentence-transformers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pooling {
    /// The first token (`[CLS]` / `<s>`).
    Cls,
    /// The average of all tokens.
    Mean,
    /// The element-wise maximum over all tokens.
    Max,
    /// The sum of all tokens divided by the square root of their number.
    MeanSqrtLen,
    /// The last token (`[SEP]` / `</s>` / EOS), for decoder-style embedders.
    LastToken,
}

/// `1_Pooling/config.json`: one boolean per mode, as sentence-transformers writes it.
#[derive(Deserialize)]
struct PoolingConfig {
    word_embedding_dimension: Option<usize>,
    #[serde(default)]
    pooling_mode_cls_token: bool,
    #[serde(default)]
    pooling_mode_mean_tokens: bool,
    #[serde(default)]
    pooling_mode_max_tokens: bool,
    #[serde(default)]
    pooling_mode_mean_sqrt_len_tokens: bool,
    #[serde(default)]
    pooling_mode_weightedmean_tokens: bool,
    #[serde(default)]
    pooling_mode_lasttoken: bool,
}

impl Pooling {
    /// Reads a sentence-transformers pooling config. Exactly one mode must be on (sentence-transformers would
    /// concatenate several, which no supported model does). Returns the mode and `word_embedding_dimension`.
    pub(crate) fn read_config(path: &Path) -> Result<(Pooling, Option<usize>), Error> {
        let config: PoolingConfig = read_json(path)?;
        if config.pooling_mode_weightedmean_tokens {
            return Err(config_error(
                path,
                "pooling_mode_weightedmean_tokens",
                "is not supported",
            ));
        }
        let modes = [
            ("pooling_mode_cls_token", config.pooling_mode_cls_token, Pooling::Cls),
            (
                "pooling_mode_mean_tokens",
                config.pooling_mode_mean_tokens,
                Pooling::Mean,
            ),
            ("pooling_mode_max_tokens", config.pooling_mode_max_tokens, Pooling::Max),
            (
                "pooling_mode_mean_sqrt_len_tokens",
                config.pooling_mode_mean_sqrt_len_tokens,
                Pooling::MeanSqrtLen,
            ),
            (
                "pooling_mode_lasttoken",
                config.pooling_mode_lasttoken,
                Pooling::LastToken,
            ),
        ];
        let enabled: Vec<_> = modes.iter().filter(|(_, on, _)| *on).collect();
        match enabled.as_slice() {
            [(_, _, mode)] => Ok((*mode, config.word_embedding_dimension)),
            [] => Err(config_error(
                path,
                "pooling_mode_*",
                "none is true; set exactly one pooling mode",
            )),
            several => {
                let names: Vec<_> = several.iter().map(|(name, _, _)| *name).collect();
                Err(config_error(
                    path,
                    "pooling_mode_*",
                    format!(
                        "{} are all true; knowhow supports exactly one pooling mode",
                        names.join(", ")
                    ),
                ))
            }
        }
    }

    /// Pools one sequence: rows `tokens` of `hidden`, a row-major matrix `width` floats wide. An empty sequence pools
    /// to zeros.
    pub fn pool(self, hidden: &[f32], width: usize, tokens: Range<usize>) -> Vec<f32> {
        let rows = &hidden[tokens.start * width..tokens.end * width];
        let count = tokens.len();
        if count == 0 {
            return vec![0.0; width];
        }
        let row = |index: usize| &rows[index * width..(index + 1) * width];
        match self {
            Pooling::Cls => row(0).to_vec(),
            Pooling::LastToken => row(count - 1).to_vec(),
            Pooling::Max => rows.chunks_exact(width).fold(row(0).to_vec(), |mut max, row| {
                max.iter_mut().zip(row).for_each(|(m, &x)| *m = m.max(x));
                max
            }),
            Pooling::Mean | Pooling::MeanSqrtLen => {
                let mut sum = vec![0.0f32; width];
                for row in rows.chunks_exact(width) {
                    sum.iter_mut().zip(row).for_each(|(s, &x)| *s += x);
                }
                let divisor = match self {
                    Pooling::Mean => count as f32,
                    _ => (count as f32).sqrt(),
                };
                sum.iter_mut().for_each(|s| *s /= divisor);
                sum
            }
        }
    }
}

/// Scales `vector` to unit Euclidean length, like `torch.nn.functional.normalize` (a zero vector stays zero).
pub fn l2_normalize(vector: &mut [f32]) {
    let norm = vector.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
    vector.iter_mut().for_each(|x| *x /= norm);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two sequences of 2-wide token vectors: [1,2] [3,-4] [5,0] then [7,8].
    const HIDDEN: [f32; 8] = [1.0, 2.0, 3.0, -4.0, 5.0, 0.0, 7.0, 8.0];

    #[test]
    fn pools_each_sequence_from_its_own_rows() {
        assert_eq!(Pooling::Cls.pool(&HIDDEN, 2, 0..3), [1.0, 2.0]);
        assert_eq!(Pooling::LastToken.pool(&HIDDEN, 2, 0..3), [5.0, 0.0]);
        assert_eq!(Pooling::Max.pool(&HIDDEN, 2, 0..3), [5.0, 2.0]);
        assert_eq!(Pooling::Mean.pool(&HIDDEN, 2, 0..3), [3.0, -2.0 / 3.0]);
        let sqrt3 = 3f32.sqrt();
        assert_eq!(Pooling::MeanSqrtLen.pool(&HIDDEN, 2, 0..3), [9.0 / sqrt3, -2.0 / sqrt3]);
        for pooling in [Pooling::Cls, Pooling::Mean, Pooling::Max, Pooling::LastToken] {
            assert_eq!(
                pooling.pool(&HIDDEN, 2, 3..4),
                [7.0, 8.0],
                "{pooling:?} of a one-token sequence"
            );
            assert_eq!(
                pooling.pool(&HIDDEN, 2, 4..4),
                [0.0, 0.0],
                "{pooling:?} of an empty sequence"
            );
        }
    }

    #[test]
    fn normalises_to_unit_length_and_leaves_zero_alone() {
        let mut vector = [3.0, -4.0];
        l2_normalize(&mut vector);
        assert_eq!(vector, [0.6, -0.8]);
        let mut zero = [0.0, 0.0];
        l2_normalize(&mut zero);
        assert_eq!(zero, [0.0, 0.0]);
    }

    fn read(json: &str) -> Result<(Pooling, Option<usize>), Error> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        std::fs::write(&path, json).unwrap();
        Pooling::read_config(&path)
    }

    #[test]
    fn reads_the_sentence_transformers_pooling_config() {
        let minilm = r#"{"word_embedding_dimension": 384, "pooling_mode_cls_token": false,
            "pooling_mode_mean_tokens": true, "pooling_mode_max_tokens": false,
            "pooling_mode_mean_sqrt_len_tokens": false}"#;
        assert_eq!(read(minilm).unwrap(), (Pooling::Mean, Some(384)));
        assert_eq!(
            read(r#"{"pooling_mode_cls_token": true}"#).unwrap(),
            (Pooling::Cls, None)
        );
        assert_eq!(
            read(r#"{"pooling_mode_lasttoken": true}"#).unwrap(),
            (Pooling::LastToken, None)
        );
    }

    #[test]
    fn pooling_config_errors_name_the_file_and_field() {
        for (json, expected) in [
            (r#"{"pooling_mode_mean_tokens": false}"#, "none is true"),
            (
                r#"{"pooling_mode_mean_tokens": true, "pooling_mode_cls_token": true}"#,
                "pooling_mode_cls_token, pooling_mode_mean_tokens",
            ),
            (
                r#"{"pooling_mode_weightedmean_tokens": true}"#,
                "`pooling_mode_weightedmean_tokens` is not supported",
            ),
            (r#"{"pooling_mode_mean_tokens": "yes"}"#, "line 1"),
        ] {
            let message = read(json).unwrap_err().to_string();
            assert!(message.contains("config.json"), "{message}");
            assert!(message.contains(expected), "{message} should contain {expected}");
        }
    }
}
