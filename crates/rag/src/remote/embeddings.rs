//! A client for OpenAI-compatible embedding servers (OpenAI, Azure-style proxies, vLLM, Text Embeddings
//! Inference, llama.cpp, Ollama, LiteLLM...).
//!
//! Wire format: `POST {base_url}/v1/embeddings` (or `{base_url}/embeddings` when the base URL already ends in
//! `/v1`) with `{"model": .., "input": [..], "encoding_format": "float"}` and, when asked for, `"dimensions"`;
//! the answer's `data[i].embedding` vectors are put back in input order by `data[i].index`.

use std::sync::OnceLock;

use super::http::{start_of, JsonPoster};
use super::{in_input_order, versioned_url, Error, RemoteConfig};

/// Embeds texts on an OpenAI-compatible server, `batch_size` texts per request.
#[derive(Debug)]
pub struct OpenAiEmbedder {
    poster: JsonPoster,
    model: String,
    batch_size: usize,
    dimensions: Option<usize>,
    dimension: OnceLock<usize>,
}

#[derive(serde::Serialize)]
struct EmbeddingsRequest<'a> {
    model: &'a str,
    input: &'a [&'a str],
    encoding_format: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    dimensions: Option<usize>,
}

#[derive(serde::Deserialize)]
struct EmbeddingsResponse {
    data: Vec<EmbeddingItem>,
}

#[derive(serde::Deserialize)]
struct EmbeddingItem {
    index: usize,
    embedding: Vec<f32>,
}

impl OpenAiEmbedder {
    /// Checks the configuration (URL scheme, batch size ≥ 1, timeout > 0, a model name); sends nothing.
    pub fn new(config: RemoteConfig) -> Result<Self, Error> {
        if config.model.trim().is_empty() {
            return Err(Error::Config(
                "model must name the embedding model, e.g. text-embedding-3-small".into(),
            ));
        }
        let poster = JsonPoster::new(&config, versioned_url(&config.base_url, "embeddings"))?;
        Ok(Self {
            poster,
            model: config.model,
            batch_size: config.batch_size,
            dimensions: None,
            dimension: OnceLock::new(),
        })
    }

    /// Asks the server for vectors of `dimensions` numbers (the `dimensions` parameter of OpenAI's
    /// text-embedding-3 models); a server that answers with another length is an error.
    pub fn with_dimensions(mut self, dimensions: usize) -> Self {
        self.dimensions = Some(dimensions);
        self
    }

    /// The endpoint this client posts to.
    pub fn url(&self) -> &str {
        self.poster.url()
    }

    pub fn model(&self) -> &str {
        &self.model
    }

    /// The vector length, known once the first response has arrived; every later response must match it.
    pub fn dimension(&self) -> Option<usize> {
        self.dimension.get().copied()
    }

    /// One vector per text, in the order of `texts`. Empty input sends nothing.
    pub fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, Error> {
        let mut vectors = Vec::with_capacity(texts.len());
        for batch in texts.chunks(self.batch_size) {
            vectors.extend(self.embed_batch(batch)?);
        }
        Ok(vectors)
    }

    fn embed_batch(&self, batch: &[&str]) -> Result<Vec<Vec<f32>>, Error> {
        let request = EmbeddingsRequest {
            model: &self.model,
            input: batch,
            encoding_format: "float",
            dimensions: self.dimensions,
        };
        let body = serde_json::to_vec(&request).expect("a struct of strings and numbers serializes");
        let text = self.poster.post(&body)?;
        let bad_response = |problem: String| Error::Response {
            url: self.poster.url().to_string(),
            problem,
            start: start_of(&text),
        };
        let response: EmbeddingsResponse = serde_json::from_str(&text).map_err(|error| {
            bad_response(format!(
                "expected {{\"data\": [{{\"index\": .., \"embedding\": [numbers]}}]}} ({error})"
            ))
        })?;
        let vectors = in_input_order(
            response.data.into_iter().map(|item| (item.index, item.embedding)),
            batch.len(),
        )
        .map_err(bad_response)?;
        for (index, vector) in vectors.iter().enumerate() {
            self.check_dimension(vector.len())
                .map_err(|problem| bad_response(format!("input {index}: {problem}")))?;
        }
        Ok(vectors)
    }

    fn check_dimension(&self, len: usize) -> Result<(), String> {
        if len == 0 {
            return Err("the embedding is empty".into());
        }
        if let Some(requested) = self.dimensions.filter(|requested| *requested != len) {
            return Err(format!(
                "asked for {requested} dimensions but got {len}; the model may not support the dimensions parameter"
            ));
        }
        let learned = *self.dimension.get_or_init(|| len);
        if learned != len {
            return Err(format!(
                "got a vector of {len} numbers, but earlier vectors had {learned}"
            ));
        }
        Ok(())
    }
}
