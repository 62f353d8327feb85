//! [`Base`]: a base model loaded for training or evaluation, with the tokenizer and chat template that turn rows
//! into its tokens.

use std::path::{Path, PathBuf};

use tokenizers::Tokenizer;

use knowhow_models::decoder::{load_tokenizer, Decoder};
use knowhow_models::ChatTemplate;

use crate::data::{self, EncodeOptions, EncodeReport, Encoded, Message};
use crate::error::TuneError;

/// A base model ready for training or evaluation: the decoder, its tokenizer and how it renders conversations.
pub struct Base {
    pub dir: PathBuf,
    pub decoder: Decoder,
    pub tokenizer: Tokenizer,
    /// `None`: the folder has no chat template; rows are rendered as plain prompt + completion + EOS.
    pub template: Option<ChatTemplate>,
    /// The end-of-sequence text the plain renderer appends (the model's first EOS token).
    eos_text: String,
}

impl Base {
    /// Loads `config.json`, the weights, `tokenizer.json` and the chat template (if any) of a Hugging Face folder.
    pub fn load(dir: &Path) -> Result<Base, TuneError> {
        let decoder = Decoder::load(dir)?;
        let tokenizer = load_tokenizer(dir)?;
        let template = ChatTemplate::from_model_dir(dir)?;
        let eos_text = decoder
            .config()
            .eos_token_ids
            .first()
            .and_then(|&id| tokenizer.id_to_token(id))
            .or_else(|| template.as_ref().and_then(|t| t.eos_token().map(str::to_string)))
            .ok_or_else(|| {
                TuneError::Invalid(format!(
                    "{}: the model declares no eos_token_id in config.json, so generations and training rows \
                     could not end; add one",
                    dir.display()
                ))
            })?;
        Ok(Base {
            dir: dir.to_path_buf(),
            decoder,
            tokenizer,
            template,
            eos_text,
        })
    }

    /// Renders `messages` as the model was trained to read them.
    pub fn render(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String, String> {
        match &self.template {
            Some(template) => {
                let values: Vec<serde_json::Value> = messages.iter().map(Message::to_template_value).collect();
                template
                    .render(&values, None, add_generation_prompt)
                    .map_err(|error| error.to_string())
            }
            None => data::plain_text(&self.eos_text)(messages, add_generation_prompt),
        }
    }

    /// Token ids that end a generation: the model's EOS ids and the template's `eos_token` (`<|im_end|>`, ...).
    pub fn stop_ids(&self) -> Vec<u32> {
        let mut ids = self.decoder.config().eos_token_ids.clone();
        let template_eos = self.template.as_ref().and_then(|t| t.eos_token());
        if let Some(id) = template_eos.and_then(|token| self.tokenizer.token_to_id(token)) {
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
        ids
    }

    /// The id padding positions hold (never trained: their labels are ignored).
    pub fn pad_id(&self) -> u32 {
        self.tokenizer
            .get_padding()
            .map(|p| p.pad_id)
            .or_else(|| self.decoder.config().eos_token_ids.first().copied())
            .unwrap_or(0)
    }

    /// Encodes rows with this model's template and tokenizer.
    pub fn encode(&self, rows: &[data::Row], options: &EncodeOptions) -> (Vec<Encoded>, EncodeReport) {
        let render = |messages: &[Message], generation: bool| self.render(messages, generation);
        data::encode_rows(rows, &render, &self.tokenizer, options)
    }

    /// Weights of the base model, counted from its configuration.
    pub fn parameter_count(&self) -> usize {
        let c = self.decoder.config();
        let (q, kv) = (c.num_attention_heads * c.head_dim, c.num_key_value_heads * c.head_dim);
        let bias = |on: bool, n: usize| if on { n } else { 0 };
        let attention = c.hidden_size * (q + 2 * kv)
            + q * c.hidden_size
            + bias(c.qkv_bias, q + 2 * kv)
            + bias(c.o_bias, c.hidden_size);
        let mlp = 3 * c.hidden_size * c.intermediate_size + bias(c.mlp_bias, 2 * c.intermediate_size + c.hidden_size);
        let layer = attention + mlp + 2 * c.hidden_size;
        let embeddings = c.vocab_size * c.hidden_size * if c.tie_word_embeddings { 1 } else { 2 };
        embeddings + c.num_hidden_layers * layer + c.hidden_size
    }
}
