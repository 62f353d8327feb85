//! Documents with deterministic vectors for the vector tests.
//!
//! A chunk's vector is a pseudo-random unit vector drawn from a seed that
//! names the document, its version and the chunk, so a test can recompute
//! what any stored chunk must hold, and two chunks' vectors are nearly
//! orthogonal (each is its own nearest neighbour by a wide margin).

use knowhow_core::{Chunk, ChunkId, ChunkLocation, CollectionRef, Document, Metadata};
use knowhow_index::{DocumentUpdate, ModelPin, SourceRecord, SourceUpdate, WeightsChecksum};

pub const DIMENSION: u32 = 24;

pub fn pin(id: &str, dimension: u32) -> ModelPin {
    ModelPin {
        id: id.to_string(),
        dimension,
        pooling: "mean".into(),
        normalized: true,
        checksum: WeightsChecksum::Known(format!("sha256-of-{id}")),
    }
}

pub fn collection() -> CollectionRef {
    CollectionRef::new("test", "vectors").expect("valid name")
}

/// A unit vector drawn from `seed` (FNV-1a of it, then xorshift).
pub fn unit_vector(seed: &str, dimension: u32) -> Vec<f32> {
    let mut state = seed.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    }) | 1;
    let raw: Vec<f32> = (0..dimension)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect();
    let norm = raw.iter().map(|x| x * x).sum::<f32>().sqrt();
    raw.into_iter().map(|x| x / norm).collect()
}

/// The vector chunk `ordinal` of version `version` of document `id` has.
pub fn chunk_vector(id: &str, version: u32, ordinal: u32, model: &str) -> Vec<f32> {
    unit_vector(&format!("{model}/{id}/v{version}/{ordinal}"), DIMENSION)
}

/// Version `version` of document `id`: `chunks` paragraphs, each a chunk
/// whose text names the document, version and chunk.
pub fn document(id: &str, source: &str, version: u32, chunks: u32, metadata: Metadata) -> (Document, Vec<Chunk>) {
    let paragraphs: Vec<String> = (0..chunks)
        .map(|o| format!("Document {id} version {version} paragraph {o} about topic {}.", o % 3))
        .collect();
    let text = paragraphs.join("\n\n");
    let doc = Document::new(
        id.to_string(),
        source.to_string(),
        format!("Title {id}"),
        text.clone(),
        Vec::new(),
        Vec::new(),
        metadata,
    );
    let mut start = 0;
    let chunks = paragraphs
        .iter()
        .zip(0u32..)
        .map(|(p, ordinal)| {
            let chunk = Chunk {
                id: ChunkId::new(id, ordinal),
                text: p.clone(),
                location: ChunkLocation {
                    start,
                    end: start + p.len(),
                    char_start: start,
                    char_end: start + p.len(),
                    ..ChunkLocation::default()
                },
                tokens: 10,
            };
            start += p.len() + 2;
            chunk
        })
        .collect();
    (doc, chunks)
}

/// Parses the version back out of a stored chunk text.
pub fn version_of(chunk_text: &str) -> u32 {
    let after = chunk_text.split(" version ").nth(1).expect("a version in the text");
    after
        .split(' ')
        .next()
        .and_then(|v| v.parse().ok())
        .expect("a version number")
}

/// A document update with the vectors of `model` (or none).
pub fn update(
    id: &str,
    source: &str,
    version: u32,
    chunks: u32,
    metadata: Metadata,
    model: Option<&str>,
) -> DocumentUpdate {
    let (document, chunks) = document(id, source, version, chunks, metadata);
    let vectors = model.map(|m| {
        (0..chunks.len() as u32)
            .map(|o| chunk_vector(id, version, o, m))
            .collect()
    });
    DocumentUpdate {
        document,
        chunks,
        vectors,
    }
}

/// A source holding the given documents.
pub fn source_update(source: &str, documents: Vec<DocumentUpdate>) -> SourceUpdate {
    SourceUpdate {
        source: source.to_string(),
        record: SourceRecord {
            bytes: 1,
            modified_ns: 1,
            file_hash: Some(format!("hash-{source}")),
            settings: "test".into(),
            document_ids: Vec::new(),
        },
        documents: Some(documents),
    }
}

pub fn metadata(pairs: &[(&str, serde_json::Value)]) -> Metadata {
    pairs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
}
