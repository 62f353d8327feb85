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
//! questions (see `crates/rag/tests/answer/squad.rs`, which prints the distribution):
//! the best source of an answerable question covers a median 0.78 of its
//! terms, and 99% of them cover 0.38 or more; questions about things the
//! collection never mentions share at most one term in three with any source
//! ("What is the boiling point of mercury?": only "point"). The default
//! [`DEFAULT_MIN_TERM_COVERAGE`] of 0.35 sits between the two. Set it
//! to 0 to never abstain on evidence (e.g. for a dense model over paraphrasing
//! or cross-lingual collections, where the question's words need not appear).

pub mod agent;
mod audit;
pub mod citations;
mod evidence;
pub mod extractive;
mod pipeline;
pub mod prompt;
pub mod sources;

use std::path::PathBuf;

use knowhow_index::Reader;
use serde::Serialize;

use crate::llm::{ChatModel, GenerationOptions, LlmError, Message, Usage};
use crate::models::{Embedder, Reranker};
use crate::retrieve::{Mode, Retrieved};

pub use audit::{answers_log, AuditChunk, AuditRecord, AuditSource};
pub use citations::{Checked, Citation};
pub use evidence::{is_abstention, question_terms, term_coverage};
pub use extractive::{Extract, ExtractOptions};
pub use pipeline::answer;
pub(crate) use pipeline::{add_usage, effective_mode, fetch_chunks};
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
    /// Boxed because a retrieval error is the largest of these, and every
    /// `Result` of the answer code would otherwise carry its size.
    #[error(transparent)]
    Retrieve(Box<crate::Error>),
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

impl From<crate::Error> for AnswerError {
    fn from(error: crate::Error) -> Self {
        AnswerError::Retrieve(Box::new(error))
    }
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

impl Answer {
    /// The answer to `question` before any work: no sources, no text, not
    /// abstained, written by `backend`. Every answer starts here, so a new
    /// field gets its starting value in this one place.
    pub(crate) fn new(question: &str, mode: AnswerMode, backend: &Backend) -> Answer {
        Answer {
            question: question.to_string(),
            mode,
            retrieval: None,
            model: match backend {
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
        }
    }
}

#[cfg(test)]
mod tests;
