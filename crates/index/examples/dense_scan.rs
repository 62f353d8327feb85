//! Measures the exact dense scan against the loop one would write first.
//!
//! Builds a collection of `ROWS` chunks (default 100,000) with random unit
//! vectors of `DIM` dimensions (default 384, as all-MiniLM-L6-v2) through
//! the real write path, then times `Reader::dense` (top 10) and a naive scan
//! of the same vectors held in memory: a scalar dot product per row, every
//! score collected and sorted.
//!
//! ```text
//! CARGO_TARGET_DIR=target/release-bench cargo run --release -p knowhow-index --example dense_scan [ROWS] [DIM] [QUERIES]
//! ```
//!
//! Threads: rayon's default (all cores); set `RAYON_NUM_THREADS=1` for one.

use std::time::Instant;

use knowhow_core::{Chunk, ChunkId, ChunkLocation, CollectionRef, Document, Metadata};
use knowhow_index::{DocumentUpdate, Filter, Home, ModelPin, SourceRecord, SourceUpdate};

const CHUNKS_PER_DOCUMENT: usize = 50;
const DOCUMENTS_PER_BATCH: usize = 40;
const K: usize = 10;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1).map(|a| a.parse::<usize>());
    let rows = args.next().transpose()?.unwrap_or(100_000);
    let dimension = args.next().transpose()?.unwrap_or(384);
    let queries = args.next().transpose()?.unwrap_or(50);
    let threads = rayon::current_num_threads();
    println!("dense_scan: {rows} rows x {dimension} dimensions, {queries} queries, top {K}, {threads} threads");

    let mut random = Random(0x5eed);
    let matrix: Vec<f32> = (0..rows).flat_map(|_| random.unit_vector(dimension)).collect();

    let dir = tempfile::tempdir()?;
    let home = Home::new(dir.path());
    let collection = CollectionRef::new("bench", "dense")?;
    let started = Instant::now();
    let mut writer = home.open_writer(&collection, true)?;
    writer.pin_model(&ModelPin {
        id: "random".into(),
        dimension: dimension as u32,
        pooling: "none".into(),
        normalized: true,
        checksum: knowhow_index::WeightsChecksum::Known("none".into()),
    })?;
    let documents = rows.div_ceil(CHUNKS_PER_DOCUMENT);
    for first in (0..documents).step_by(DOCUMENTS_PER_BATCH) {
        let batch = (first..documents.min(first + DOCUMENTS_PER_BATCH))
            .map(|d| document_update(d, rows, dimension, &matrix))
            .collect();
        writer.apply(vec![SourceUpdate {
            source: format!("batch-{first}"),
            record: SourceRecord::default(),
            documents: Some(batch),
        }])?;
    }
    writer.finish()?;
    let ingest = started.elapsed().as_secs_f64();
    println!(
        "ingest with vectors (redb + tantivy + vector file): {ingest:.1} s, {:.0} chunks/s",
        rows as f64 / ingest
    );

    let reader = home.open_reader(&collection)?;
    let query_vectors: Vec<Vec<f32>> = (0..queries).map(|_| random.unit_vector(dimension)).collect();
    reader.dense(&query_vectors[0], K, None)?;

    let started = Instant::now();
    let mut found = Vec::with_capacity(queries);
    for query in &query_vectors {
        found.push(reader.dense(query, K, None)?);
    }
    let dense_ms = started.elapsed().as_secs_f64() * 1e3 / queries as f64;

    let one_in_ten = Filter {
        metadata: vec![("decile".into(), "3".into())],
    };
    let started = Instant::now();
    for query in &query_vectors {
        reader.dense(query, K, Some(&one_in_ten))?;
    }
    let filtered_ms = started.elapsed().as_secs_f64() * 1e3 / queries as f64;

    let started = Instant::now();
    let mut naive_rows = Vec::with_capacity(queries);
    for query in &query_vectors {
        naive_rows.push(naive_top_k(&matrix, dimension, query, K));
    }
    let naive_ms = started.elapsed().as_secs_f64() * 1e3 / queries as f64;

    for (hits, naive) in found.iter().zip(&naive_rows) {
        let rows_found: Vec<usize> = hits.iter().map(|h| chunk_row(&h.id)).collect();
        assert_eq!(&rows_found, naive, "the scan and the naive loop disagree");
    }
    let gigabytes = (rows * dimension * 4) as f64 / 1e9;
    println!(
        "knowhow dense (exact scan):           {dense_ms:8.2} ms/query ({:.1} GB/s)",
        gigabytes / dense_ms * 1e3
    );
    println!("knowhow dense, metadata filter 1/10:  {filtered_ms:8.2} ms/query");
    println!(
        "naive loop (scalar, sort all):        {naive_ms:8.2} ms/query ({:.1} GB/s)",
        gigabytes / naive_ms * 1e3
    );
    println!(
        "speed-up over the naive loop: {:.1}x (same top {K} on every query)",
        naive_ms / dense_ms
    );
    Ok(())
}

/// Document `d` holds rows `d * CHUNKS_PER_DOCUMENT ..`, one chunk each.
fn document_update(d: usize, rows: usize, dimension: usize, matrix: &[f32]) -> DocumentUpdate {
    let id = format!("doc{d}");
    let first = d * CHUNKS_PER_DOCUMENT;
    let last = rows.min(first + CHUNKS_PER_DOCUMENT);
    let texts: Vec<String> = (first..last).map(|r| format!("chunk {r}")).collect();
    let text = texts.join(" ");
    let mut metadata = Metadata::new();
    metadata.insert("decile".into(), serde_json::json!(d % 10));
    let document = Document::new(
        id.clone(),
        format!("doc{d}.txt"),
        id.clone(),
        text,
        Vec::new(),
        Vec::new(),
        metadata,
    );
    let mut start = 0;
    let chunks = texts
        .iter()
        .zip(0u32..)
        .map(|(t, ordinal)| {
            let chunk = Chunk {
                id: ChunkId::new(&id, ordinal),
                text: t.clone(),
                location: ChunkLocation {
                    start,
                    end: start + t.len(),
                    char_start: start,
                    char_end: start + t.len(),
                    ..ChunkLocation::default()
                },
                tokens: 2,
            };
            start += t.len() + 1;
            chunk
        })
        .collect();
    let vectors = (first..last)
        .map(|r| matrix[r * dimension..(r + 1) * dimension].to_vec())
        .collect();
    DocumentUpdate {
        document,
        chunks,
        vectors: Some(vectors),
    }
}

fn chunk_row(id: &ChunkId) -> usize {
    let d: usize = id.document_id["doc".len()..].parse().expect("a benchmark document id");
    d * CHUNKS_PER_DOCUMENT + id.ordinal as usize
}

/// What one writes first: a dot product per row, every score sorted.
fn naive_top_k(matrix: &[f32], dimension: usize, query: &[f32], k: usize) -> Vec<usize> {
    let mut scores: Vec<(f32, usize)> = matrix
        .chunks_exact(dimension)
        .enumerate()
        .map(|(row, v)| (v.iter().zip(query).map(|(a, b)| a * b).sum(), row))
        .collect();
    scores.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    scores.into_iter().take(k).map(|(_, row)| row).collect()
}

/// xorshift64: deterministic random unit vectors.
struct Random(u64);

impl Random {
    fn next(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }

    fn unit_vector(&mut self, dimension: usize) -> Vec<f32> {
        let v: Vec<f32> = (0..dimension).map(|_| self.next()).collect();
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.into_iter().map(|x| x / norm).collect()
    }
}
