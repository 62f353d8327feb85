//! [`Catalog`]: read-only access to a collection's store, and the
//! consistency check of the store against its derived indexes.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;

use knowhow_core::Chunk;

use crate::lexical::LexicalIndex;
use crate::vectors::{self, VectorSnapshot};
use crate::{store, Error, ModelPin, SourceRecord, StoredDocument};

/// Read-only access to a collection's store.
///
/// Opening one is refused as busy while a [`crate::Writer`] holds the store
/// (see [`crate::Home::open_catalog`]). Each call reads committed state only,
/// a document together with its chunks in one read transaction, so a catalog
/// never shows half a document.
pub struct Catalog {
    db: redb::ReadOnlyDatabase,
    dir: PathBuf,
}

/// The result of [`Catalog::check`]: every way the store and the derived
/// indexes disagree. Empty means consistent.
#[derive(Debug, Default, serde::Serialize)]
pub struct CheckReport {
    pub documents: u64,
    pub chunks: u64,
    pub vectors: u64,
    pub problems: Vec<String>,
}

impl Catalog {
    /// The catalog of the store `db` of the collection in `dir`.
    pub(crate) fn new(db: redb::ReadOnlyDatabase, dir: PathBuf) -> Catalog {
        Catalog { db, dir }
    }

    pub fn documents(&self) -> Result<Vec<StoredDocument>, Error> {
        store::list_documents(&self.db)
    }

    pub fn document(&self, id: &str) -> Result<Option<(StoredDocument, Vec<Chunk>)>, Error> {
        store::read_document(&self.db, id)
    }

    pub fn sources(&self) -> Result<Vec<(String, SourceRecord)>, Error> {
        store::list_sources(&self.db)
    }

    /// The model the collection's vectors come from, if it pins one.
    pub fn model_pin(&self) -> Result<Option<ModelPin>, Error> {
        store::model_pin(&self.db, store::PINNED)
    }

    /// The model a re-embedding started and not yet finished moves to.
    pub fn reembed_target(&self) -> Result<Option<ModelPin>, Error> {
        store::model_pin(&self.db, store::REEMBED)
    }

    /// A document's vectors as stored, by chunk ordinal.
    pub fn vectors(&self, document_id: &str) -> Result<Vec<(u32, Vec<f32>)>, Error> {
        store::read_vectors(&self.db, document_id)
    }

    /// Verifies that every document has exactly its chunks, in order, that
    /// chunk text equals the document text at its span, that the lexical
    /// index holds exactly the stored chunks of every document, that every
    /// chunk has a vector of the pinned model (none without a pin), and that
    /// the vector file holds exactly the stored vectors.
    pub fn check(&self) -> Result<CheckReport, Error> {
        let mut report = CheckReport::default();
        let indexed = LexicalIndex::open(&self.dir.join("lexical"))?.chunk_counts()?;
        let pin = self.model_pin()?;
        let vector_file = VectorSnapshot::load(&self.dir.join("vectors"))?;
        let mut in_file: HashMap<&str, &vectors::DocRecord> = HashMap::new();
        match &vector_file {
            None => report.problems.push("the vector file is missing".into()),
            Some(snapshot) => {
                if snapshot.pin != pin {
                    report.problems.push(format!(
                        "the vector file holds vectors of {}, the store of {}",
                        describe_pin(snapshot.pin.as_ref()),
                        describe_pin(pin.as_ref())
                    ));
                }
                in_file = snapshot.docs.iter().map(|d| (d.id.as_str(), d)).collect();
            }
        }
        let mut stored_ids = BTreeSet::new();
        for stored in self.documents()? {
            let doc = &stored.document;
            report.documents += 1;
            stored_ids.insert(doc.id.clone());
            let Some((_, chunks)) = self.document(&doc.id)? else {
                report
                    .problems
                    .push(format!("document {} vanished during the check", doc.id));
                continue;
            };
            report.chunks += chunks.len() as u64;
            if chunks.len() != stored.chunk_count as usize {
                report.problems.push(format!(
                    "document {} has {} of its {} chunks",
                    doc.id,
                    chunks.len(),
                    stored.chunk_count
                ));
            }
            for (i, chunk) in chunks.iter().enumerate() {
                let span = chunk.location.start..chunk.location.end;
                if chunk.id.ordinal as usize != i || doc.text.get(span) != Some(chunk.text.as_str()) {
                    report
                        .problems
                        .push(format!("document {} chunk {} does not match its text span", doc.id, i));
                }
            }
            let in_index = indexed.get(&doc.id).copied().unwrap_or(0);
            if in_index != stored.chunk_count {
                report.problems.push(format!(
                    "document {} has {} chunks in the lexical index, {} in the store",
                    doc.id, in_index, stored.chunk_count
                ));
            }
            let stored_vectors = self.vectors(&doc.id)?;
            report.vectors += stored_vectors.len() as u64;
            report
                .problems
                .extend(check_vectors(&doc.id, &chunks, &stored_vectors, pin.as_ref()));
            if let Some(snapshot) = &vector_file {
                report.problems.extend(check_vector_file(
                    &doc.id,
                    &stored_vectors,
                    in_file.remove(doc.id.as_str()),
                    snapshot.matrix(),
                ));
            }
        }
        for (id, count) in &indexed {
            if !stored_ids.contains(id) {
                report
                    .problems
                    .push(format!("lexical index holds {count} chunks of unknown document {id}"));
            }
        }
        for id in in_file.keys() {
            report
                .problems
                .push(format!("the vector file holds vectors of unknown document {id}"));
        }
        Ok(report)
    }
}

fn describe_pin(pin: Option<&ModelPin>) -> String {
    pin.map_or_else(|| "no model".to_string(), ModelPin::to_string)
}

/// A document's stored vectors against its chunks and the pinned model.
fn check_vectors(id: &str, chunks: &[Chunk], stored: &[(u32, Vec<f32>)], pin: Option<&ModelPin>) -> Vec<String> {
    let Some(pin) = pin else {
        return if stored.is_empty() {
            Vec::new()
        } else {
            vec![format!(
                "document {id} has {} vectors but the collection pins no model",
                stored.len()
            )]
        };
    };
    let ordinals: Vec<u32> = chunks.iter().map(|c| c.id.ordinal).collect();
    let vector_ordinals: Vec<u32> = stored.iter().map(|(o, _)| *o).collect();
    let mut problems = Vec::new();
    if ordinals != vector_ordinals {
        problems.push(format!(
            "document {id} has vectors for chunks {vector_ordinals:?}, but chunks {ordinals:?}"
        ));
    }
    for (ordinal, vector) in stored {
        if let Err(problem) = vectors::check_vector(pin, vector) {
            problems.push(format!("document {id} chunk {ordinal} vector: {problem}"));
        }
    }
    problems
}

/// A document's stored vectors against its rows in the vector file.
fn check_vector_file(
    id: &str,
    stored: &[(u32, Vec<f32>)],
    record: Option<&vectors::DocRecord>,
    matrix: &[f32],
) -> Option<String> {
    let Some(record) = record else {
        return (!stored.is_empty()).then(|| format!("document {id} has no rows in the vector file"));
    };
    let ordinals: Vec<u32> = stored.iter().map(|(o, _)| *o).collect();
    if record.ordinals != ordinals {
        return Some(format!(
            "document {id} has rows for chunks {:?} in the vector file, vectors for {ordinals:?} in the store",
            record.ordinals
        ));
    }
    let first = record.first_row as usize;
    for (i, (ordinal, vector)) in stored.iter().enumerate() {
        let dimension = vector.len();
        let row = matrix.get((first + i) * dimension..(first + i + 1) * dimension);
        if row != Some(vector.as_slice()) {
            return Some(format!(
                "document {id} chunk {ordinal} differs between the vector file and the store"
            ));
        }
    }
    None
}
