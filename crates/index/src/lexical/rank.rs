//! BM25 ranking term at a time, for retrieval and evaluation.

use knowhow_core::ChunkId;
use tantivy::query::Bm25Weight;
use tantivy::schema::IndexRecordOption;

use super::LexicalIndex;
use crate::Error;

/// A ranked chunk without its display fields: what evaluation and fusion
/// need. The score is the ranker's own (BM25, inner product): only scores of
/// one ranker compare.
#[derive(Debug, Clone, PartialEq)]
pub struct ScoredChunk {
    pub id: ChunkId,
    pub score: f32,
}

impl LexicalIndex {
    /// Top `k` chunks for `text` by BM25, without display fields.
    ///
    /// Scores term at a time into one dense accumulator per segment, reading
    /// posting lists block by block, then selects the top `k`. The ranking is
    /// the same as tantivy's `BooleanQuery` of the same terms (see the test
    /// `term_at_a_time_ranks_like_tantivy`), but for the long bag-of-words
    /// queries retrieval sends (a claim, a question) and the deep `k` that
    /// document-level evaluation needs, block-max WAND prunes little and pays
    /// for its bookkeeping; a sequential pass over the postings does not.
    pub(crate) fn rank(&self, text: &str, k: usize) -> Result<Vec<ScoredChunk>, Error> {
        let terms = self.query_terms(text);
        if terms.is_empty() || k == 0 {
            return Ok(Vec::new());
        }
        let searcher = self.reader.searcher();
        let weights = terms
            .iter()
            .map(|(term, count)| {
                let weight = Bm25Weight::for_terms(&searcher, std::slice::from_ref(term))?;
                Ok(weight.boost_by(*count as f32))
            })
            .collect::<Result<Vec<_>, Error>>()?;
        let mut candidates: Vec<(f32, u32, u32)> = Vec::new();
        for (segment_ord, segment) in searcher.segment_readers().iter().enumerate() {
            let inverted = segment.inverted_index(self.fields.text)?;
            let fieldnorms = segment.get_fieldnorms_reader(self.fields.text)?;
            let mut scores = vec![0f32; segment.max_doc() as usize];
            for ((term, _), weight) in terms.iter().zip(&weights) {
                let Some(mut postings) = inverted
                    .read_block_postings(term, IndexRecordOption::WithFreqs)
                    .map_err(self.read_error())?
                else {
                    continue;
                };
                while !postings.docs().is_empty() {
                    for (&doc, &freq) in postings.docs().iter().zip(postings.freqs()) {
                        scores[doc as usize] += weight.score(fieldnorms.fieldnorm_id(doc), freq);
                    }
                    postings.advance();
                }
            }
            let alive = segment.alive_bitset();
            candidates.extend(
                scores
                    .iter()
                    .enumerate()
                    .filter(|&(doc, &score)| score > 0.0 && alive.is_none_or(|a| a.is_alive(doc as u32)))
                    .map(|(doc, &score)| (score, segment_ord as u32, doc as u32)),
            );
        }
        // Highest score first; ties in index order, as tantivy's collector.
        let order = |a: &(f32, u32, u32), b: &(f32, u32, u32)| b.0.total_cmp(&a.0).then((a.1, a.2).cmp(&(b.1, b.2)));
        if candidates.len() > k {
            candidates.select_nth_unstable_by(k - 1, order);
            candidates.truncate(k);
        }
        candidates.sort_unstable_by(order);
        let keys = self.chunk_keys(&searcher)?;
        Ok(candidates
            .into_iter()
            .map(|(score, segment_ord, doc)| ScoredChunk {
                id: keys.segments[segment_ord as usize][doc as usize].id(),
                score,
            })
            .collect())
    }
}
