//! Re-embedding: moving a collection to another model while the old one
//! stays in force.

use knowhow_core::ChunkId;

use crate::{store, vectors, Error, ModelPin, Writer};

/// A chunk to embed again during a re-embedding: which one, and the text its
/// new vector must be computed from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkText {
    pub id: ChunkId,
    pub text: String,
}

/// How far a re-embedding is: chunks in the collection, and how many of them
/// already have a vector of the new model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReembedProgress {
    pub chunks: u64,
    pub staged: u64,
}

impl Writer {
    /// The model a re-embedding started and not yet finished moves to.
    pub fn reembed_target(&self) -> Result<Option<ModelPin>, Error> {
        store::model_pin(&self.db, store::REEMBED)
    }

    /// Starts re-embedding every chunk with `model`, or resumes the one
    /// already started with it (after a crash or kill). Until
    /// [`Writer::finish_reembed`] commits, the old pin and vectors stay in
    /// force: ingests and searches go on with the old model.
    ///
    /// The loop: [`Writer::reembed_todo`] gives chunks still lacking a new
    /// vector; embed them; [`Writer::stage_vectors`]; repeat until it gives
    /// none; then [`Writer::finish_reembed`]. Each stage is one durable
    /// transaction, so a re-run redoes none of the staged work.
    pub fn start_reembed(&mut self, model: &ModelPin) -> Result<ReembedProgress, Error> {
        model.validate()?;
        let mut batch = store::Batch::begin(&self.db)?;
        if batch.model_pin(store::REEMBED)?.as_ref() != Some(model) {
            batch.clear_staged_vectors()?;
            batch.set_model_pin(store::REEMBED, Some(model))?;
        }
        let (chunks, staged) = batch.reembed_counts()?;
        batch.commit()?;
        self.reembed_cursor = None;
        Ok(ReembedProgress { chunks, staged })
    }

    fn reembed_target_or_error(&self) -> Result<ModelPin, Error> {
        self.reembed_target()?.ok_or_else(|| Error::Reembed {
            collection: self.collection.clone(),
            problem: "none is in progress: start one with start_reembed".into(),
        })
    }

    /// Up to `limit` chunks that have no vector of the new model yet; empty
    /// when every chunk has one. Chunks changed by an ingest since they were
    /// staged come back again.
    pub fn reembed_todo(&mut self, limit: usize) -> Result<Vec<ChunkText>, Error> {
        self.reembed_target_or_error()?;
        let after = self.reembed_cursor.take();
        let (chunks, at_end) = store::unstaged_chunks(&self.db, after.as_ref(), limit.max(1))?;
        if chunks.is_empty() && after.is_some() {
            // One more pass from the start: an ingest may have replaced a
            // chunk behind the cursor (dropping its staged vector).
            return self.reembed_todo(limit);
        }
        if !at_end {
            self.reembed_cursor = chunks.last().map(|c| c.id.clone());
        }
        Ok(chunks
            .into_iter()
            .map(|c| ChunkText { id: c.id, text: c.text })
            .collect())
    }

    /// Stores the new model's vectors of `chunks` (as [`Writer::reembed_todo`]
    /// gave them), in one durable transaction. A chunk whose text has changed
    /// since is skipped: it comes back from `reembed_todo`. Returns how many
    /// were staged.
    pub fn stage_vectors(&mut self, chunks: &[ChunkText], vectors: &[Vec<f32>]) -> Result<usize, Error> {
        let target = self.reembed_target_or_error()?;
        if chunks.len() != vectors.len() {
            return Err(Error::Reembed {
                collection: self.collection.clone(),
                problem: format!("{} vectors for {} chunks", vectors.len(), chunks.len()),
            });
        }
        for (chunk, vector) in chunks.iter().zip(vectors) {
            vectors::check_vector(&target, vector).map_err(|problem| Error::InvalidVectors {
                document: chunk.id.document_id.clone(),
                problem: format!("chunk {}: {problem}", chunk.id.ordinal),
            })?;
        }
        let mut batch = store::Batch::begin(&self.db)?;
        let mut staged = 0;
        for (chunk, vector) in chunks.iter().zip(vectors) {
            if batch.chunk_text(&chunk.id)?.as_deref() == Some(chunk.text.as_str()) {
                batch.stage_vector(&chunk.id, vector)?;
                staged += 1;
            }
        }
        batch.commit()?;
        Ok(staged)
    }

    /// Switches the collection to the new model in one transaction: its
    /// vectors replace the old ones and it becomes the pin. Refused while any
    /// chunk lacks a new vector. The vector file is then rebuilt.
    pub fn finish_reembed(&mut self) -> Result<(), Error> {
        let target = self.reembed_target_or_error()?;
        let mut batch = store::Batch::begin(&self.db)?;
        let (chunks, staged) = batch.reembed_counts()?;
        if staged != chunks {
            return Err(Error::Reembed {
                collection: self.collection.clone(),
                problem: format!(
                    "{} of {chunks} chunks have no vector from {} yet: stage what reembed_todo gives, then finish",
                    chunks - staged,
                    target.id
                ),
            });
        }
        batch.swap_in_staged_vectors()?;
        batch.set_model_pin(store::PINNED, Some(&target))?;
        batch.set_model_pin(store::REEMBED, None)?;
        batch.commit()?;
        self.pin = Some(target);
        self.reembed_cursor = None;
        self.rebuild_vectors()?;
        self.vectors.commit(self.index_seq)
    }
}
