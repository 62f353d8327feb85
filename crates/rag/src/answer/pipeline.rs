//! The answering pipeline: sources found (by retrieval, the agent or the
//! whole collection), the prompt built, the model or the extractive answerer
//! run, and the reply checked for abstention and citations.

use std::time::Instant;

use knowhow_core::ChunkId;
use knowhow_index::{Reader, SourceChunk};
use sha2::{Digest, Sha256};

use super::evidence::{is_abstention, term_coverage};
use super::{
    agent, citations, extractive, prompt, sources, Abstention, Answer, AnswerContext, AnswerError, AnswerEvent,
    AnswerMode, AnswerOptions, Backend, Source, NOT_FOUND,
};
use crate::llm::{Message, Tool, Usage};
use crate::retrieve::{retrieve, Mode, Retrieved};

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
    let mut answer = Answer::new(question, mode, &backend);
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
pub(super) fn enough_evidence(answer: &mut Answer, options: &AnswerOptions) -> bool {
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
    let ids: Vec<ChunkId> = retrieved.iter().map(|r| r.id.clone()).collect();
    Ok(reader
        .chunks(&ids)?
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
