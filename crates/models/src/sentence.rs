//! Sentence embedders in the sentence-transformers format: a BERT-family encoder, a pooling step and an optional L2
//! normalisation, as the model folder's `modules.json` lists them.
//!
//! A folder like all-MiniLM-L6-v2's holds:
//!
//! ```text
//! modules.json                 Transformer (path ""), Pooling ("1_Pooling"), Normalize ("2_Normalize")
//! config.json                  the encoder's hyper-parameters
//! model.safetensors            its weights
//! tokenizer.json               its tokenizer
//! sentence_bert_config.json    max_seq_length (tokens, special tokens included), do_lower_case
//! 1_Pooling/config.json        which pooling: cls, mean, max, mean_sqrt_len or lasttoken
//! ```

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::bert::{BertConfig, BertModel, Checkpoint, PackedBatch};
use crate::error::{config_error, read_json, read_optional_json, Error};
use crate::pooling::{l2_normalize, Pooling};
use crate::tokenize::{batches_longest_first, declared_max_length, TextTokenizer, SORT_WINDOW};
use crate::LoadOptions;

/// What determines an embedder's vectors, so that a collection can pin it and refuse vectors from another model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelInfo {
    /// The encoder's `model_type`: `"bert"`, `"roberta"` or `"xlm-roberta"`.
    pub architecture: String,
    /// Length of each vector.
    pub dimension: usize,
    pub pooling: Pooling,
    /// Whether vectors are scaled to unit length (a `Normalize` module), so that dot product equals cosine.
    pub normalize: bool,
    /// Longest input in tokens, special tokens included; longer texts are cut.
    pub max_seq_length: usize,
}

/// A sentence-transformers model run with knowhow's own encoder. Safe to share between threads.
pub struct SentenceEmbedder {
    model: BertModel,
    tokenizer: TextTokenizer,
    info: ModelInfo,
    /// sentence-transformers' `do_lower_case`: lowercase texts before the tokenizer sees them.
    lowercase: bool,
    batch_size: usize,
}

impl SentenceEmbedder {
    /// Loads the model in `dir`, a sentence-transformers folder. A folder without `modules.json` is taken as a plain
    /// Hugging Face encoder with mean pooling and no normalisation, as sentence-transformers does.
    pub fn load(dir: &Path, options: LoadOptions) -> Result<Self, Error> {
        options.check()?;
        let pipeline = Pipeline::read(dir)?;
        let transformer = &pipeline.transformer_dir;
        let config = BertConfig::read(&transformer.join("config.json"))?;
        let sentence_config: SentenceBertConfig =
            read_optional_json(&transformer.join("sentence_bert_config.json"))?.unwrap_or_default();

        let (pooling, pooled_dimension) = match &pipeline.pooling_config {
            Some(path) => Pooling::read_config(path)?,
            None => (Pooling::Mean, None),
        };
        if let (Some(path), Some(dimension)) = (&pipeline.pooling_config, pooled_dimension) {
            if dimension != config.hidden_size {
                return Err(config_error(
                    path,
                    "word_embedding_dimension",
                    format!("is {dimension} but the encoder's hidden_size is {}", config.hidden_size),
                ));
            }
        }
        let declared = match sentence_config.max_seq_length {
            Some(length) => Some(length),
            None => declared_max_length(transformer)?,
        };
        let max_seq_length = options.resolve_max_length(declared, config.max_tokens())?;

        let tokenizer = TextTokenizer::load(&transformer.join("tokenizer.json"))?;
        let model = Checkpoint::open(&transformer.join("model.safetensors"))?.load_encoder(&config)?;
        let info = ModelInfo {
            architecture: config.model_type.clone(),
            dimension: config.hidden_size,
            pooling,
            normalize: pipeline.normalize,
            max_seq_length,
        };
        Ok(SentenceEmbedder {
            model,
            tokenizer,
            info,
            lowercase: sentence_config.do_lower_case,
            batch_size: options.batch_size,
        })
    }

    /// One vector per text, in the order of `texts`. Texts longer than [`Self::max_seq_length`] are cut.
    pub fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, Error> {
        let mut vectors = Vec::with_capacity(texts.len());
        for window in texts.chunks(SORT_WINDOW) {
            vectors.extend(self.embed_window(window)?);
        }
        Ok(vectors)
    }

    fn embed_window(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, Error> {
        let lowered: Vec<String>;
        let texts: Vec<&str> = if self.lowercase {
            lowered = texts.iter().map(|text| text.to_lowercase()).collect();
            lowered.iter().map(String::as_str).collect()
        } else {
            texts.to_vec()
        };
        let sequences = self.tokenizer.encode_texts(&texts, self.info.max_seq_length)?;
        let mut vectors = vec![Vec::new(); sequences.len()];
        for indices in batches_longest_first(&sequences, self.batch_size) {
            let mut batch = PackedBatch::new();
            for &index in &indices {
                batch.push(&sequences[index].ids, &sequences[index].type_ids);
            }
            let hidden = self.model.forward(&batch)?.flatten_all()?.to_vec1::<f32>()?;
            for (&index, tokens) in indices.iter().zip(batch.sequences()) {
                let mut vector = self.info.pooling.pool(&hidden, self.info.dimension, tokens.clone());
                if self.info.normalize {
                    l2_normalize(&mut vector);
                }
                vectors[index] = vector;
            }
        }
        Ok(vectors)
    }

    /// Length of each vector.
    pub fn dimension(&self) -> usize {
        self.info.dimension
    }

    /// Longest input in tokens, special tokens included.
    pub fn max_seq_length(&self) -> usize {
        self.info.max_seq_length
    }

    /// Tokens the model sees for `text`, special tokens excluded and before truncation: a chunk fits the model whole
    /// when this is at most `max_seq_length()` minus the special tokens (2 for BERT). The tokenizers supported here
    /// accept any text; should one fail, the count is the text's byte length, an over-estimate, so that chunks stay
    /// small, and `embed` reports the error.
    pub fn count_tokens(&self, text: &str) -> usize {
        let counted = if self.lowercase {
            self.tokenizer.count_tokens(&text.to_lowercase())
        } else {
            self.tokenizer.count_tokens(text)
        };
        counted.unwrap_or(text.len())
    }

    /// Architecture, dimension, pooling, normalisation and length limit.
    pub fn info(&self) -> &ModelInfo {
        &self.info
    }
}

/// `sentence_bert_config.json`.
#[derive(Deserialize, Default)]
struct SentenceBertConfig {
    max_seq_length: Option<usize>,
    #[serde(default)]
    do_lower_case: bool,
}

/// One entry of `modules.json`.
#[derive(Deserialize)]
struct Module {
    #[serde(default)]
    path: String,
    #[serde(rename = "type")]
    kind: String,
}

/// The steps that `modules.json` lists, reduced to what knowhow runs: Transformer, Pooling, optionally Normalize.
#[derive(Debug, PartialEq)]
struct Pipeline {
    transformer_dir: PathBuf,
    /// `config.json` of the Pooling module; `None` (mean pooling) for a folder without `modules.json`.
    pooling_config: Option<PathBuf>,
    normalize: bool,
}

impl Pipeline {
    fn read(dir: &Path) -> Result<Self, Error> {
        let path = dir.join("modules.json");
        if !path.exists() {
            return Ok(Pipeline {
                transformer_dir: dir.to_owned(),
                pooling_config: None,
                normalize: false,
            });
        }
        let modules: Vec<Module> = read_json(&path)?;
        // "sentence_transformers.models.Pooling" → "Pooling".
        let kinds: Vec<&str> = modules
            .iter()
            .map(|module| module.kind.rsplit('.').next().unwrap_or(""))
            .collect();
        let normalize = match kinds.as_slice() {
            ["Transformer", "Pooling"] => false,
            ["Transformer", "Pooling", "Normalize"] => true,
            _ => {
                return Err(config_error(
                    &path,
                    "type",
                    format!(
                        "lists the modules [{}]; knowhow runs Transformer, Pooling and optionally Normalize, in \
                         that order",
                        kinds.join(", ")
                    ),
                ))
            }
        };
        Ok(Pipeline {
            transformer_dir: dir.join(&modules[0].path),
            pooling_config: Some(dir.join(&modules[1].path).join("config.json")),
            normalize,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_pipeline(modules_json: Option<&str>) -> (tempfile::TempDir, Result<Pipeline, Error>) {
        let dir = tempfile::tempdir().unwrap();
        if let Some(json) = modules_json {
            std::fs::write(dir.path().join("modules.json"), json).unwrap();
        }
        let pipeline = Pipeline::read(dir.path());
        (dir, pipeline)
    }

    #[test]
    fn reads_the_modules_of_a_sentence_transformers_folder() {
        let minilm = r#"[
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
            {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}]"#;
        let (dir, pipeline) = read_pipeline(Some(minilm));
        let expected = Pipeline {
            transformer_dir: dir.path().join(""),
            pooling_config: Some(dir.path().join("1_Pooling/config.json")),
            normalize: true,
        };
        assert_eq!(pipeline.unwrap(), expected);

        let unnormalised = r#"[{"path": "0_Transformer", "type": "sentence_transformers.models.Transformer"},
            {"path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]"#;
        let (dir, pipeline) = read_pipeline(Some(unnormalised));
        let pipeline = pipeline.unwrap();
        assert_eq!(
            (pipeline.transformer_dir, pipeline.normalize),
            (dir.path().join("0_Transformer"), false)
        );
    }

    #[test]
    fn a_plain_encoder_folder_gets_mean_pooling() {
        let (dir, pipeline) = read_pipeline(None);
        let expected = Pipeline {
            transformer_dir: dir.path().to_owned(),
            pooling_config: None,
            normalize: false,
        };
        assert_eq!(pipeline.unwrap(), expected);
    }

    #[test]
    fn unsupported_modules_are_named_in_the_error() {
        let with_dense = r#"[{"path": "", "type": "sentence_transformers.models.Transformer"},
            {"path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
            {"path": "2_Dense", "type": "sentence_transformers.models.Dense"}]"#;
        let (_dir, pipeline) = read_pipeline(Some(with_dense));
        let err = pipeline.unwrap_err();
        assert!(
            matches!(&err, Error::Config { path, problem, .. }
                if path.ends_with("modules.json") && problem.contains("Transformer, Pooling, Dense")),
            "{err}"
        );

        let (_dir, pipeline) = read_pipeline(Some(r#"[{"path": ""}]"#));
        let err = pipeline.unwrap_err();
        assert!(
            matches!(&err, Error::Json { path, source }
                if path.ends_with("modules.json") && source.to_string().contains("missing field `type`")),
            "{err}"
        );
    }
}
