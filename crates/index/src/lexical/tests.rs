//! Unit tests of the lexical index: analysis, stored chunks, old layouts, and
//! the term-at-a-time ranker against tantivy's own.

use knowhow_core::{Chunk, ChunkId, ChunkLocation, Document};
use tantivy::collector::TopDocs;
use tantivy::schema::{Schema, FAST, STORED, STRING};
use tantivy::{Index, IndexWriter, TantivyDocument, Term};

use super::schema::schema;
use super::{analyze, LexicalIndex};
use crate::Error;

#[test]
fn analyzer_lowercases_stems_and_drops_stop_words() {
    assert_eq!(analyze("The Running of the Mice-cells"), ["run", "mice", "cell"]);
    assert_eq!(analyze("and or but"), Vec::<String>::new());
}

#[test]
fn chunks_come_back_with_their_document_fields_and_spans() {
    let dir = tempfile::tempdir().unwrap();
    let index = LexicalIndex::open_or_create(dir.path()).unwrap();
    let text = "Größe zählt. Second sentence here.";
    let doc = Document::new(
        "d1".into(),
        "/docs/d1.md".into(),
        "Doc one".into(),
        text.into(),
        Vec::new(),
        Vec::new(),
        Default::default(),
    );
    let second_start = text.find("Second").unwrap();
    let chunks = [
        Chunk {
            id: ChunkId::new("d1", 0),
            text: text[..second_start - 1].into(),
            location: ChunkLocation {
                heading_path: vec!["Top".into(), "Sub".into()],
                pages: Some((2, 3)),
                start: 0,
                end: second_start - 1,
                char_start: 0,
                char_end: 12,
            },
            tokens: 3,
        },
        Chunk {
            id: ChunkId::new("d1", 1),
            text: text[second_start..].into(),
            location: ChunkLocation {
                heading_path: Vec::new(),
                pages: None,
                start: second_start,
                end: text.len(),
                char_start: 13,
                char_end: text.chars().count(),
            },
            tokens: 3,
        },
    ];
    let mut writer = index.writer().unwrap();
    index.add_document(&writer, &doc, &chunks).unwrap();
    index.commit(&mut writer, 1).unwrap();
    index.reload().unwrap();

    assert_eq!(index.chunk_ids().unwrap(), [chunks[0].id.clone(), chunks[1].id.clone()]);
    let got = index
        .chunks(&[ChunkId::new("d1", 1), ChunkId::new("d1", 7), ChunkId::new("d1", 0)])
        .unwrap();
    let second = got[0].as_ref().unwrap();
    assert_eq!(second.id, chunks[1].id);
    assert_eq!(second.location, chunks[1].location);
    assert_eq!((second.location.char_start, second.location.char_end), (13, 34));
    assert_eq!(second.text, "Second sentence here.");
    assert!(got[1].is_none());
    let first = got[2].as_ref().unwrap();
    assert_eq!(
        (first.title.as_str(), first.source.as_str()),
        ("Doc one", "/docs/d1.md")
    );
    assert_eq!(first.location, chunks[0].location);
    assert_eq!(first.location.heading_path, ["Top", "Sub"]);
    assert_eq!(first.location.pages, Some((2, 3)));
    assert_eq!(
        first.text.chars().count(),
        first.location.char_end - first.location.char_start
    );
}

/// An index written before the span fields existed is rebuilt by a
/// writer (it opens empty and unstamped) and refused by a reader.
#[test]
fn an_index_of_the_older_layout_is_recreated_for_a_writer() {
    let dir = tempfile::tempdir().unwrap();
    let mut builder = Schema::builder();
    builder.add_text_field("doc_id", STRING | STORED | FAST);
    builder.add_text_field("text", STORED);
    let old = Index::create_in_dir(dir.path(), builder.build()).unwrap();
    let mut writer: IndexWriter = old.writer_with_num_threads(1, 15_000_000).unwrap();
    let mut prepared = writer.prepare_commit().unwrap();
    prepared.set_payload("7");
    prepared.commit().unwrap();
    drop((writer, old));

    assert!(matches!(LexicalIndex::open(dir.path()), Err(Error::Corrupt(_))));
    let index = LexicalIndex::open_or_create(dir.path()).unwrap();
    assert_eq!(index.committed_seq().unwrap(), None);
    assert_eq!(index.index.schema(), schema().0);
}

/// Several segments, deleted chunks, repeated query terms, terms absent
/// from the index: the term-at-a-time ranker must agree with tantivy's
/// own BM25 `BooleanQuery` + `TopDocs`.
#[test]
fn term_at_a_time_ranks_like_tantivy() {
    let dir = tempfile::tempdir().unwrap();
    let index = LexicalIndex::open_or_create(dir.path()).unwrap();
    let words = [
        "cell", "protein", "gene", "mouse", "cancer", "therapy", "blood", "brain", "virus", "immune", "dose", "trial",
        "risk", "heart", "liver",
    ];
    let mut state = 0x9e3779b97f4a7c15u64;
    let mut next = move |n: usize| {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 33) as usize % n
    };
    let mut writer = index.writer().unwrap();
    let f = index.fields;
    for segment in 0..3u64 {
        for i in 0..200u64 {
            let length = 3 + next(40);
            let text: Vec<&str> = (0..length).map(|_| words[next(words.len())]).collect();
            let mut d = TantivyDocument::new();
            d.add_text(f.doc_id, format!("doc{segment}-{i}"));
            d.add_u64(f.ordinal, 0);
            d.add_text(f.text, text.join(" "));
            writer.add_document(d).unwrap();
        }
        writer.commit().unwrap();
    }
    for i in (0..200).step_by(7) {
        writer.delete_term(Term::from_field_text(f.doc_id, &format!("doc1-{i}")));
    }
    writer.commit().unwrap();
    index.reload().unwrap();
    assert!(index.reader.searcher().segment_readers().len() > 1);

    let searcher = index.reader.searcher();
    let keys = index.read_chunk_keys(&searcher).unwrap();
    for query in [
        "cell protein",
        "gene gene mouse therapy",
        "virus immune immune risk unseenword",
        "heart",
    ] {
        let ours = index.rank(query, 50).unwrap();
        let tantivy_query = index.query(query).unwrap();
        let theirs = searcher
            .search(&*tantivy_query, &TopDocs::with_limit(50).order_by_score())
            .unwrap();
        assert_eq!(ours.len(), theirs.len(), "{query}");
        for (mine, (score, address)) in ours.iter().zip(&theirs) {
            assert!((mine.score - score).abs() < 1e-4, "{query}: {} vs {score}", mine.score);
            let key = &keys[address.segment_ord as usize][address.doc_id as usize];
            if (mine.score - score).abs() < 1e-6 && mine.id != key.id() {
                // Equal scores: both orders are a correct ranking.
                continue;
            }
            assert_eq!(mine.id, key.id(), "{query}");
        }
        assert!(ours.iter().all(|hit| !hit.id.document_id.starts_with("doc1-0")));
    }
    assert!(index.rank("the of and", 10).unwrap().is_empty());
}
