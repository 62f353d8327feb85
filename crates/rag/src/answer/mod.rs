//! Grounded answers: from a question to an answer that cites its sources.
//!
//! ```text
//! hybrid | dense | lexical | rerank : retrieve top-k ─▶ chunks ─▶ merge + pack into the prompt ─▶ model ─▶ citations
//! agentic      : the model calls `search` (several hops), results numbered as they come ─▶ answer ─▶ citations
//! long-context : every chunk, merged per document, when the collection fits the context ─▶ model ─▶ citations
//! extractive   : (no model) retrieve ─▶ best 1–3 sentences of the sources, each with its marker
//! ```
//!
//! # Abstention
//! An answer says "not found in the documents" (and lists the closest
//! sources) when the evidence is too weak to ask the model at all, or when
//! the model replies with the abstention phrase.
//!
//! Weak evidence is measured by **query-term coverage**: the largest fraction
//! of the question's terms (after the index's analyzer: lowercased, stemmed,
//! stop words dropped) that one source contains. Retrieval scores cannot serve
//! across modes — BM25 is unbounded and grows with the query's length, cosine
//! similarities of one model cluster in a narrow band, RRF scores only encode
//! ranks, cross-encoder logits have no fixed scale — while coverage means the
//! same whichever mode found the sources. Calibration on SQuAD's Super Bowl 50
//! questions (see `tests/answer_squad.rs`, which prints the distribution):
//! the best source of an answerable question covers a median 0.78 of its
//! terms, and 99% of them cover 0.38 or more; questions about things the
//! collection never mentions share at most one term in three with any source
//! ("What is the boiling point of mercury?": only "point"). The default
//! [`DEFAULT_MIN_TERM_COVERAGE`] of 0.35 sits between the two. Set it
//! to 0 to never abstain on evidence (e.g. for a dense model over paraphrasing
//! or cross-lingual collections, where the question's words need not appear).

pub mod agent;
pub mod citations;
pub mod extractive;
pub mod prompt;
pub mod sources;

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use knowhow_index::{Reader, SourceChunk};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::llm::{ChatModel, GenerationOptions, LlmError, Message, Tool, Usage};
use crate::models::{Embedder, Reranker};
use crate::retrieve::{retrieve, Mode, Retrieved};

pub use citations::{Checked, Citation};
pub use extractive::{Extract, ExtractOptions};
pub use prompt::{PromptTemplates, Template};
pub use sources::Source;

/// What a model must answer, exactly, when the sources lack the answer.
pub const DEFAULT_ABSTAIN_PHRASE: &str = "I could not find the answer in the documents.";

/// The text of every abstaining answer.
pub const NOT_FOUND: &str = "Not found in the documents.";

/// See the module documentation, "Abstention".
pub const DEFAULT_MIN_TERM_COVERAGE: f32 = 0.35;

/// What can go wrong while answering.
#[derive(Debug, thiserror::Error)]
pub enum AnswerError {
    #[error(transparent)]
    Retrieve(#[from] crate::Error),
    #[error(transparent)]
    Index(#[from] knowhow_index::Error),
    #[error(transparent)]
    Llm(#[from] LlmError),
    #[error("prompt template {name}: {message}")]
    Template { name: String, message: String },
    #[error("cannot read prompt template {}: {source}", .path.display())]
    TemplateFile { path: PathBuf, source: std::io::Error },
    #[error(
        "the prompt needs {needed} tokens before any source, but only {available} are available \
         (the model's context minus the answer's max tokens): shorten the templates or lower max tokens"
    )]
    PromptTooLong { needed: usize, available: usize },
    #[error(
        "long-context mode needs {needed} tokens for the whole collection, but the model's context leaves \
         {available} (context minus the answer's max tokens): use a retrieval mode (hybrid, dense, lexical, \
         agentic) or a model with a longer context"
    )]
    TooLongForContext { needed: usize, available: usize },
    #[error("agentic answering needs a language model: configure one (the extractive answerer cannot call tools)")]
    AgenticNeedsModel,
    #[error("cannot write the audit log {}: {source}", .path.display())]
    Audit { path: PathBuf, source: std::io::Error },
}

/// How to find the sources.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AnswerMode {
    /// BM25 top-k.
    Lexical,
    /// Nearest vectors top-k.
    Dense,
    /// BM25 ‖ dense, fused: the default.
    #[default]
    Hybrid,
    /// Hybrid, re-scored by a cross-encoder.
    Rerank,
    /// The model searches, several times if it needs to.
    Agentic,
    /// The whole collection in the prompt, when it fits.
    LongContext,
}

/// Who writes the answer.
pub enum Backend<'m> {
    Llm(&'m mut dyn ChatModel),
    /// Quotes the best sentences of the sources; no model.
    Extractive,
}

/// What to search and with which models.
pub struct AnswerContext<'a> {
    pub reader: &'a Reader,
    /// The collection's pinned model; without it, retrieval is lexical.
    pub embedder: Option<&'a Embedder>,
    pub reranker: Option<&'a Reranker>,
    pub retrieval: &'a crate::Options,
    /// Chunks to retrieve (before merging and packing).
    pub k: usize,
}

/// How to answer.
#[derive(Clone, Debug)]
pub struct AnswerOptions {
    pub templates: PromptTemplates,
    pub abstain_phrase: String,
    /// Abstain without asking the model when no source holds at least this
    /// fraction of the question's terms (module documentation, "Abstention").
    pub min_term_coverage: f32,
    /// Sampling; `max_tokens` is also the answer's reserve in the context.
    pub generation: GenerationOptions,
    /// Agentic: rounds of tool calls before the model must answer.
    pub max_steps: usize,
    /// Agentic: chunks a search returns when the model does not say.
    pub search_k: usize,
    pub extract: ExtractOptions,
    /// Sources listed with an abstaining answer.
    pub closest_sources: usize,
}

impl Default for AnswerOptions {
    fn default() -> Self {
        AnswerOptions {
            templates: PromptTemplates::default(),
            abstain_phrase: DEFAULT_ABSTAIN_PHRASE.into(),
            min_term_coverage: DEFAULT_MIN_TERM_COVERAGE,
            generation: GenerationOptions::default(),
            max_steps: 4,
            search_k: 5,
            extract: ExtractOptions::default(),
            closest_sources: 3,
        }
    }
}

/// Progress of an answer, as it happens.
#[derive(Debug, PartialEq)]
pub enum AnswerEvent<'a> {
    /// A piece of the model's text. Streamed text is raw: the final
    /// [`Answer::text`] has invalid citation markers removed.
    Token(&'a str),
    /// The model called a tool (agentic).
    ToolCall {
        id: &'a str,
        name: &'a str,
        arguments: &'a str,
    },
    /// A tool call's result: the source numbers it gave, or what was wrong
    /// with the call.
    ToolResult {
        id: &'a str,
        sources: &'a [usize],
        error: Option<&'a str>,
    },
    /// Something the user should know (a fallback, a limit reached).
    Notice(&'a str),
}

/// Why an answer abstained.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum Abstention {
    /// No source covers enough of the question's terms; the model was not
    /// asked.
    WeakEvidence { coverage: f32, threshold: f32 },
    /// Retrieval found nothing.
    NoSources,
    /// The model answered with the abstention phrase (or nothing).
    Model,
    /// No sentence of the sources shares a term with the question
    /// (extractive).
    NoSentence,
}

/// A grounded answer and everything needed to check and audit it.
#[derive(Clone, Debug, Serialize)]
pub struct Answer {
    pub question: String,
    pub mode: AnswerMode,
    /// The retrieval mode actually used (after a fallback); `None` for
    /// long-context.
    pub retrieval: Option<Mode>,
    /// The model's name, or "extractive".
    pub model: String,
    pub extractive: bool,
    /// The answer, invalid citation markers removed; [`NOT_FOUND`] when it
    /// abstained.
    pub text: String,
    pub abstained: bool,
    pub abstention: Option<Abstention>,
    pub citations: Vec<Citation>,
    /// Numbers cited that named no source (removed from the text).
    pub invalid_citations: Vec<usize>,
    /// The sources cited, by number.
    pub cited: Vec<Source>,
    /// Every source given to the model (or to the extractive answerer).
    pub sources: Vec<Source>,
    /// With an abstaining answer: the best sources found, to read instead.
    pub closest: Vec<Source>,
    /// Chunks retrieved, best first (per search, in agentic mode).
    pub retrieved: Vec<Retrieved>,
    /// The exact messages sent to the model (for agentic: the conversation
    /// as last sent). Empty for extractive answers.
    pub prompt: Vec<Message>,
    /// sha256 (hex) of the JSON of the prompt messages and the tools offered;
    /// for extractive answers, of the JSON of the sources.
    pub prompt_hash: String,
    pub usage: Option<Usage>,
    /// Model calls made.
    pub steps: usize,
    pub latency_ms: u64,
    /// Fallbacks, limits and other things the reader should know.
    pub notes: Vec<String>,
}

/// One line of the audit log.
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
pub struct AuditRecord {
    /// Seconds since the Unix epoch.
    pub at: u64,
    pub question: String,
    pub mode: String,
    pub retrieved: Vec<AuditChunk>,
    pub model: String,
    /// The fine-tuned adapter the model ran with, if any.
    pub adapter: Option<String>,
    pub prompt_hash: String,
    pub latency_ms: u64,
    pub abstained: bool,
    /// The sources cited.
    pub cited: Vec<AuditSource>,
}

#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
pub struct AuditChunk {
    pub document_id: String,
    pub ordinal: u32,
    pub score: f32,
}

#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
pub struct AuditSource {
    pub number: usize,
    pub document_id: String,
    pub ordinals: Vec<u32>,
}

impl Answer {
    /// The audit record of this answer.
    pub fn audit_record(&self, adapter: Option<String>) -> AuditRecord {
        AuditRecord {
            at: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            question: self.question.clone(),
            mode: serde_json::to_value(self.mode)
                .ok()
                .and_then(|v| v.as_str().map(String::from))
                .unwrap_or_default(),
            retrieved: self
                .retrieved
                .iter()
                .map(|r| AuditChunk {
                    document_id: r.document_id.clone(),
                    ordinal: r.ordinal,
                    score: r.score,
                })
                .collect(),
            model: self.model.clone(),
            adapter,
            prompt_hash: self.prompt_hash.clone(),
            latency_ms: self.latency_ms,
            abstained: self.abstained,
            cited: self
                .cited
                .iter()
                .map(|s| AuditSource {
                    number: s.number,
                    document_id: s.document_id.clone(),
                    ordinals: s.ordinals.clone(),
                })
                .collect(),
        }
    }
}

impl AuditRecord {
    /// Appends the record as one JSON line to `path` (created if missing).
    pub fn append_to(&self, path: &Path) -> Result<(), AnswerError> {
        let audit = |source| AnswerError::Audit {
            path: path.to_path_buf(),
            source,
        };
        let mut line = serde_json::to_vec(self).map_err(|e| audit(e.into()))?;
        line.push(b'\n');
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(audit)?;
        // One write per line: concurrent appenders do not interleave lines.
        file.write_all(&line).map_err(audit)
    }
}

/// Answers `question` over `context`'s collection.
pub fn answer(
    question: &str,
    context: &AnswerContext,
    backend: Backend,
    mode: AnswerMode,
    options: &AnswerOptions,
    on_event: &mut dyn FnMut(AnswerEvent),
) -> Result<Answer, AnswerError> {
    let started = Instant::now();
    let mut answer = Answer {
        question: question.to_string(),
        mode,
        retrieval: None,
        model: match &backend {
            Backend::Llm(model) => model.name(),
            Backend::Extractive => "extractive".into(),
        },
        extractive: matches!(backend, Backend::Extractive),
        text: String::new(),
        abstained: false,
        abstention: None,
        citations: Vec::new(),
        invalid_citations: Vec::new(),
        cited: Vec::new(),
        sources: Vec::new(),
        closest: Vec::new(),
        retrieved: Vec::new(),
        prompt: Vec::new(),
        prompt_hash: String::new(),
        usage: None,
        steps: 0,
        latency_ms: 0,
        notes: Vec::new(),
    };
    match (mode, backend) {
        (AnswerMode::Agentic, Backend::Extractive) => return Err(AnswerError::AgenticNeedsModel),
        (AnswerMode::Agentic, Backend::Llm(model)) => {
            let run = agent::run(question, context, model, options, on_event)?;
            answer.retrieval = Some(effective_mode(Mode::Hybrid, context).0);
            answer.prompt_hash = hash_prompt(&run.messages, &run.tools);
            answer.prompt = run.messages;
            answer.sources = run.sources;
            answer.retrieved = run.retrieved;
            answer.usage = run.usage;
            answer.steps = run.steps;
            answer.notes = run.notes;
            if answer.sources.is_empty() && !is_abstention(&run.text, &options.abstain_phrase) {
                abstain(&mut answer, Abstention::NoSources, options);
            } else {
                finish_model_answer(&mut answer, &run.text, options);
            }
        }
        (AnswerMode::LongContext, backend) => {
            let ids = context.reader.chunk_ids()?;
            let chunks: Vec<SourceChunk> = context.reader.chunks(&ids)?.into_iter().flatten().collect();
            let sources = sources::whole_documents(&chunks);
            answer_from(&mut answer, backend, sources, None, options, on_event)?;
        }
        (_, backend) => {
            let wanted = match mode {
                AnswerMode::Lexical => Mode::Lexical,
                AnswerMode::Dense => Mode::Dense,
                AnswerMode::Rerank => Mode::Rerank,
                _ => Mode::Hybrid,
            };
            let (retrieval, fallback) = effective_mode(wanted, context);
            if let Some(note) = fallback {
                on_event(AnswerEvent::Notice(&note));
                answer.notes.push(note);
            }
            answer.retrieval = Some(retrieval);
            answer.retrieved = retrieve(
                context.reader,
                question,
                context.k,
                retrieval,
                context.embedder,
                context.reranker,
                context.retrieval,
            )?;
            let chunks = fetch_chunks(context.reader, &answer.retrieved)?;
            answer_from(&mut answer, backend, Vec::new(), Some(&chunks), options, on_event)?;
        }
    }
    answer.latency_ms = started.elapsed().as_millis() as u64;
    Ok(answer)
}

/// Answers from ranked `chunks` (packed into the prompt) or, when `None`,
/// from `whole` sources that must all fit (long-context).
fn answer_from(
    answer: &mut Answer,
    backend: Backend,
    whole: Vec<Source>,
    chunks: Option<&[(SourceChunk, f32)]>,
    options: &AnswerOptions,
    on_event: &mut dyn FnMut(AnswerEvent),
) -> Result<(), AnswerError> {
    let input = prompt::PromptInput {
        templates: &options.templates,
        question: &answer.question,
        abstain_phrase: &options.abstain_phrase,
        agentic: false,
    };
    let model = match backend {
        Backend::Extractive => {
            answer.sources = match chunks {
                Some(chunks) => sources::merge(chunks),
                None => whole,
            };
            answer.prompt_hash = sha256_hex(&serde_json::to_vec(&answer.sources).unwrap_or_default());
            answer.notes.push(
                "extractive answer: sentences quoted from the sources, chosen by term overlap with the \
                 question; no language model wrote it"
                    .into(),
            );
            if !enough_evidence(answer, options) {
                return Ok(());
            }
            match extractive::extract(&answer.question, &answer.sources, options.extract) {
                Some(extract) => set_text(answer, &extract.text),
                None => abstain(answer, Abstention::NoSentence, options),
            }
            return Ok(());
        }
        Backend::Llm(model) => model,
    };
    let available = model.context_tokens().saturating_sub(options.generation.max_tokens);
    let count = |text: &str| model.count_tokens(text);
    match chunks {
        Some(chunks) => {
            let packed = prompt::assemble(&input, chunks, available, &count)?;
            if !packed.left_out.is_empty() {
                answer.notes.push(format!(
                    "{} of {} retrieved chunks did not fit the model's context and were left out",
                    packed.left_out.len(),
                    chunks.len()
                ));
            }
            answer.prompt = packed.messages;
            answer.sources = packed.sources;
        }
        None => {
            let messages = prompt::render(&input, &whole)?;
            let needed = prompt::prompt_tokens(&messages, &count);
            if needed > available {
                return Err(AnswerError::TooLongForContext { needed, available });
            }
            answer.prompt = messages;
            answer.sources = whole;
        }
    }
    answer.prompt_hash = hash_prompt(&answer.prompt, &[]);
    if !enough_evidence(answer, options) {
        answer
            .notes
            .push("the model was not asked: the sources do not cover the question".into());
        return Ok(());
    }
    let response = model.chat(&answer.prompt, &[], &options.generation, &mut |t| {
        on_event(AnswerEvent::Token(t))
    })?;
    answer.steps = 1;
    answer.usage = response.usage;
    finish_model_answer(answer, &response.content, options);
    Ok(())
}

/// Abstains (and returns false) when no source covers enough of the question.
fn enough_evidence(answer: &mut Answer, options: &AnswerOptions) -> bool {
    if answer.sources.is_empty() {
        abstain(answer, Abstention::NoSources, options);
        return false;
    }
    let coverage = term_coverage(&answer.question, &answer.sources);
    if coverage < options.min_term_coverage {
        let threshold = options.min_term_coverage;
        abstain(answer, Abstention::WeakEvidence { coverage, threshold }, options);
        return false;
    }
    true
}

/// Words that make a sentence a question but say nothing of its subject;
/// the index's analyzer keeps them (Lucene's stop words are few).
const QUESTION_WORDS: &[&str] = &[
    "what", "which", "who", "whom", "whose", "when", "where", "why", "how", "do", "does", "did", "has", "have", "had",
    "were", "been", "can", "could", "would", "should", "many", "much",
];

/// The distinct terms of `question` that say what it is about: the index's
/// analysis, without question words.
pub fn question_terms(question: &str) -> BTreeSet<String> {
    let content: Vec<&str> = question
        .split(|c: char| !c.is_alphanumeric() && c != '\'')
        .filter(|word| !QUESTION_WORDS.contains(&word.to_lowercase().as_str()))
        .collect();
    knowhow_index::analyze(&content.join(" ")).into_iter().collect()
}

/// The largest fraction of [`question_terms`] that one of `sources`
/// contains; 1 for a question without such terms (nothing to judge by).
pub fn term_coverage(question: &str, sources: &[Source]) -> f32 {
    let terms = question_terms(question);
    if terms.is_empty() {
        return 1.0;
    }
    sources
        .iter()
        .map(|source| {
            let present: BTreeSet<String> = knowhow_index::analyze(&source.text).into_iter().collect();
            terms.intersection(&present).count() as f32 / terms.len() as f32
        })
        .fold(0.0, f32::max)
}

/// Whether the model's `text` is the abstention `phrase` (or empty): compared
/// ignoring case, spacing and a trailing full stop, anywhere in the text.
pub fn is_abstention(text: &str, phrase: &str) -> bool {
    let normalize = |s: &str| {
        s.split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .to_lowercase()
            .trim_end_matches('.')
            .to_string()
    };
    let (text, phrase) = (normalize(text), normalize(phrase));
    text.is_empty() || (!phrase.is_empty() && text.contains(&phrase))
}

fn finish_model_answer(answer: &mut Answer, text: &str, options: &AnswerOptions) {
    if is_abstention(text, &options.abstain_phrase) {
        abstain(answer, Abstention::Model, options);
    } else {
        set_text(answer, text);
    }
}

/// Sets the answer's text with its citations checked against its sources.
fn set_text(answer: &mut Answer, text: &str) {
    let checked = citations::check(text, answer.sources.len());
    if !checked.invalid.is_empty() {
        answer.notes.push(format!(
            "citations of sources that were not given were removed: {:?}",
            checked.invalid
        ));
    }
    answer.cited = checked
        .cited
        .iter()
        .filter_map(|&n| answer.sources.get(n - 1).cloned())
        .collect();
    answer.text = checked.text;
    answer.citations = checked.citations;
    answer.invalid_citations = checked.invalid;
}

fn abstain(answer: &mut Answer, why: Abstention, options: &AnswerOptions) {
    answer.text = NOT_FOUND.into();
    answer.abstained = true;
    answer.abstention = Some(why);
    answer.citations.clear();
    answer.cited.clear();
    answer.closest = answer.sources.iter().take(options.closest_sources).cloned().collect();
}

/// The retrieval mode to run for `wanted` with the models at hand, and a note
/// when it falls back.
pub(crate) fn effective_mode(wanted: Mode, context: &AnswerContext) -> (Mode, Option<String>) {
    match wanted {
        Mode::Lexical => (Mode::Lexical, None),
        _ if context.embedder.is_none() => (
            Mode::Lexical,
            Some(format!(
                "no embedding model: {} retrieval fell back to lexical (BM25)",
                mode_name(wanted)
            )),
        ),
        Mode::Rerank if context.reranker.is_none() => (
            Mode::Hybrid,
            Some("no re-ranking model: rerank retrieval fell back to hybrid".into()),
        ),
        mode => (mode, None),
    }
}

fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::Lexical => "lexical",
        Mode::Dense => "dense",
        Mode::Hybrid => "hybrid",
        Mode::Rerank => "rerank",
    }
}

/// The full records of retrieved chunks, in rank order, with their scores;
/// chunks removed since they were ranked are skipped.
pub(crate) fn fetch_chunks(reader: &Reader, retrieved: &[Retrieved]) -> Result<Vec<(SourceChunk, f32)>, AnswerError> {
    let keys: Vec<(String, u32)> = retrieved.iter().map(|r| (r.document_id.clone(), r.ordinal)).collect();
    Ok(reader
        .chunks(&keys)?
        .into_iter()
        .zip(retrieved)
        .filter_map(|(chunk, r)| chunk.map(|c| (c, r.score)))
        .collect())
}

pub(crate) fn add_usage(total: Option<Usage>, more: Option<Usage>) -> Option<Usage> {
    match (total, more) {
        (Some(a), Some(b)) => Some(Usage {
            prompt_tokens: a.prompt_tokens + b.prompt_tokens,
            completion_tokens: a.completion_tokens + b.completion_tokens,
        }),
        (a, b) => a.or(b),
    }
}

fn hash_prompt(messages: &[Message], tools: &[Tool]) -> String {
    let mut bytes = serde_json::to_vec(messages).unwrap_or_default();
    if !tools.is_empty() {
        bytes.extend(serde_json::to_vec(tools).unwrap_or_default());
    }
    sha256_hex(&bytes)
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::sources::{merge, tests::chunk};
    use super::*;

    fn sources(texts: &[&str]) -> Vec<Source> {
        let chunks: Vec<(SourceChunk, f32)> = texts
            .iter()
            .enumerate()
            .map(|(i, t)| (chunk(&format!("d{i}"), 0, t, 0, t.chars().count()), 1.0))
            .collect();
        merge(&chunks)
    }

    #[test]
    fn term_coverage_is_the_best_single_source_fraction_of_question_terms() {
        let given = sources(&["The Denver Broncos won Super Bowl 50.", "Tickets were expensive."]);
        // won, super, bowl, 50 → all in the first source.
        assert_eq!(term_coverage("Who won Super Bowl 50?", &given), 1.0);
        // ticket, price, super, bowl: super and bowl in the first source.
        assert!((term_coverage("What was the ticket price at the Super Bowl?", &given) - 0.5).abs() < 1e-6);
        assert_eq!(term_coverage("What is the boiling point of mercury?", &given), 0.0);
        assert_eq!(term_coverage("What is it?", &given), 1.0);
    }

    #[test]
    fn weak_evidence_abstains_at_the_threshold_and_lists_the_closest_sources() {
        let mut answer = Answer {
            question: "What is the boiling point of mercury?".into(),
            mode: AnswerMode::Hybrid,
            retrieval: None,
            model: "extractive".into(),
            extractive: true,
            text: String::new(),
            abstained: false,
            abstention: None,
            citations: Vec::new(),
            invalid_citations: Vec::new(),
            cited: Vec::new(),
            sources: sources(&["Mercury is a planet.", "Water boils at 100 degrees.", "a", "b"]),
            closest: Vec::new(),
            retrieved: Vec::new(),
            prompt: Vec::new(),
            prompt_hash: String::new(),
            usage: None,
            steps: 0,
            latency_ms: 0,
            notes: Vec::new(),
        };
        // boil, point, mercuri: one of three terms per source.
        let mut options = AnswerOptions {
            min_term_coverage: 0.34,
            ..AnswerOptions::default()
        };
        assert!(!enough_evidence(&mut answer, &options));
        assert!(answer.abstained);
        assert_eq!(answer.text, NOT_FOUND);
        assert_eq!(answer.closest.len(), 3);
        match answer.abstention {
            Some(Abstention::WeakEvidence { coverage, threshold }) => {
                assert!((coverage - 1.0 / 3.0).abs() < 1e-6);
                assert_eq!(threshold, 0.34);
            }
            other => panic!("{other:?}"),
        }
        options.min_term_coverage = 0.33;
        answer.abstained = false;
        assert!(enough_evidence(&mut answer, &options));
        assert!(!answer.abstained);
    }

    #[test]
    fn the_abstention_phrase_is_recognised_loosely_but_not_a_real_answer() {
        let phrase = DEFAULT_ABSTAIN_PHRASE;
        assert!(is_abstention("I could not find the answer in the documents.", phrase));
        assert!(is_abstention(
            "  i could not find the answer\nin the documents ",
            phrase
        ));
        assert!(is_abstention("", phrase));
        assert!(!is_abstention("The Broncos won [1].", phrase));
    }
}
