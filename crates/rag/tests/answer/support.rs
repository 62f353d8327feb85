//! Builds real collections for the answer tests: documents chunked by the
//! ingest crate's chunker, written through the index's `Writer`.

use knowhow_core::{CollectionRef, Document, Metadata};
use knowhow_index::{DocumentUpdate, Home, Reader, SourceRecord, SourceUpdate};
use knowhow_ingest::chunk::{chunk_document, estimate_tokens, ChunkOptions};

/// A collection in `home` holding `documents` as (id, title, text), chunked
/// with `options`, lexical only (no embedding model).
pub fn collection(home: &Home, documents: &[(String, String, String)], options: ChunkOptions) -> Reader {
    let c = CollectionRef::new("test", "answers").expect("valid name");
    let mut writer = home.open_writer(&c, true).expect("writer");
    let updates = documents
        .iter()
        .map(|(id, title, text)| {
            let document = Document::new(
                id.clone(),
                format!("/docs/{id}.txt"),
                title.clone(),
                text.clone(),
                Vec::new(),
                Vec::new(),
                Metadata::new(),
            );
            let chunks = chunk_document(&document, options, &estimate_tokens);
            SourceUpdate {
                source: document.source.clone(),
                record: SourceRecord::default(),
                documents: Some(vec![DocumentUpdate {
                    document,
                    chunks,
                    vectors: None,
                }]),
            }
        })
        .collect();
    writer.apply(updates).expect("apply");
    writer.finish().expect("finish");
    home.open_reader(&c).expect("reader")
}
