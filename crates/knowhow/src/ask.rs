//! `knowhow ask`: a grounded answer with its sources, streamed as it is
//! written, and one line in the audit log.

use std::io::Write;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use knowhow_rag::answer::{
    answer, Answer, AnswerContext, AnswerEvent, AnswerMode, AnswerOptions, Backend, PromptTemplates, Source, Template,
};
use knowhow_rag::llm::{ChatModel, Message};

use knowhow_rag::Mode;

use crate::search::{self, RetrievalTuning};
use crate::{llm, Context};

/// How `ask` finds its sources.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum AskMode {
    /// BM25 and dense retrieval fused (lexical when the collection has no vectors)
    Hybrid,
    /// Dense retrieval only: naive RAG
    Dense,
    /// BM25 only
    Lexical,
    /// Hybrid, re-ranked by a cross-encoder
    Rerank,
    /// The model calls a `search` tool, several times if it needs to
    Agentic,
    /// The whole collection in the prompt, when it fits the model's context
    LongContext,
}

impl AskMode {
    fn answer_mode(self) -> AnswerMode {
        match self {
            AskMode::Hybrid => AnswerMode::Hybrid,
            AskMode::Dense => AnswerMode::Dense,
            AskMode::Lexical => AnswerMode::Lexical,
            AskMode::Rerank => AnswerMode::Rerank,
            AskMode::Agentic => AnswerMode::Agentic,
            AskMode::LongContext => AnswerMode::LongContext,
        }
    }

    /// The retrieval mode to prepare; `None` picks hybrid when the collection
    /// has vectors and a model to embed queries, lexical otherwise.
    fn retrieval(self) -> Option<Mode> {
        match self {
            AskMode::Hybrid | AskMode::Agentic => None,
            AskMode::Dense => Some(Mode::Dense),
            AskMode::Lexical | AskMode::LongContext => Some(Mode::Lexical),
            AskMode::Rerank => Some(Mode::Rerank),
        }
    }
}

#[derive(clap::Args)]
pub struct Args {
    /// The question, in plain words
    pub question: String,
    /// Who writes the answer: openai:BASE_URL#MODEL (any OpenAI-compatible server: vLLM, Ollama, llama.cpp,
    /// TGI, OpenAI; key from OPENAI_API_KEY), local:MODEL_FOLDER (a Llama, Mistral or Qwen2 model run here), or
    /// extractive (no model: quotes the best sentences of the sources) [default: extractive]
    #[arg(long, env = "KNOWHOW_LLM", value_name = "SPEC")]
    pub llm: Option<String>,
    #[command(flatten)]
    pub generation: llm::GenerationArgs,
    /// How to find the sources
    #[arg(long, value_enum, default_value = "hybrid")]
    pub mode: AskMode,
    /// Chunks to retrieve (merged per document, then packed into the model's context)
    #[arg(short, default_value_t = 8)]
    pub k: usize,
    /// Print the exact prompt sent to the model
    #[arg(long)]
    pub show_prompt: bool,
    /// System prompt template (minijinja) [default: the collection's prompt.jinja, else the built-in one]
    #[arg(long, value_name = "FILE")]
    pub system_template: Option<PathBuf>,
    /// Abstain without asking the model when no source holds this fraction of the question's terms (0 never)
    #[arg(long, default_value_t = knowhow_rag::answer::DEFAULT_MIN_TERM_COVERAGE, value_name = "FRACTION")]
    pub min_coverage: f32,
    /// Agentic mode: rounds of tool calls before the model must answer
    #[arg(long, default_value_t = 4, value_name = "N")]
    pub max_steps: usize,
    #[command(flatten)]
    pub retrieval: RetrievalTuning,
}

/// The audit log of a namespace: one JSON line per answer.
pub fn audit_log_path(context: &Context) -> PathBuf {
    knowhow_rag::answer::answers_log(context.home.root(), &context.collection.namespace)
}

/// Appends `answer` to the namespace's audit log.
pub fn log_answer(context: &Context, answer: &Answer, adapter: Option<String>) -> anyhow::Result<()> {
    answer.audit_record(adapter).append_to(&audit_log_path(context))?;
    Ok(())
}

pub fn run(context: &Context, args: Args) -> anyhow::Result<ExitCode> {
    let reader = context.home.open_reader(&context.collection)?;
    let retriever = search::retriever(context, &reader, args.mode.retrieval(), &args.retrieval)?;
    let mut model = llm::load(context, args.llm.as_deref(), &args.generation)?;
    let mut options = AnswerOptions {
        templates: PromptTemplates::for_collection(&context.home, &context.collection)?,
        min_term_coverage: args.min_coverage,
        generation: args.generation.options(),
        max_steps: args.max_steps,
        ..AnswerOptions::default()
    };
    if let Some(path) = &args.system_template {
        options.templates.system = Template::from_file(path)?;
    }
    let answer_context = AnswerContext {
        reader: &reader,
        embedder: retriever.embedder(),
        reranker: retriever.reranker(),
        retrieval: retriever.options(),
        k: args.k,
    };
    let answer = ask(
        context,
        &args.question,
        &answer_context,
        model.as_deref_mut(),
        args.mode.answer_mode(),
        &options,
        args.show_prompt,
    )?;
    log_answer(context, &answer, args.generation.adapter_name())?;
    Ok(ExitCode::SUCCESS)
}

/// Answers one question and prints it: streamed text on stdout, tool calls
/// and notices on stderr, then the sources; or one JSON object.
pub fn ask(
    context: &Context,
    question: &str,
    answer_context: &AnswerContext,
    model: Option<&mut (dyn ChatModel + Send + 'static)>,
    mode: AnswerMode,
    options: &AnswerOptions,
    show_prompt: bool,
) -> anyhow::Result<Answer> {
    let backend = match model {
        Some(model) => Backend::Llm(model),
        None => Backend::Extractive,
    };
    let json = context.json;
    let mut streamed = false;
    let mut noticed = Vec::new();
    let mut stdout = std::io::stdout();
    let mut on_event = |event: AnswerEvent| match event {
        AnswerEvent::Token(text) if !json => {
            streamed = true;
            out!("{text}");
            let _ = stdout.flush();
        }
        AnswerEvent::ToolCall { name, arguments, .. } if !json => eprintln!("→ {name}({arguments})"),
        AnswerEvent::ToolResult { sources, error, .. } if !json => match error {
            Some(error) => eprintln!("← error: {error}"),
            None => eprintln!("← sources {sources:?}"),
        },
        AnswerEvent::Notice(notice) if !json => {
            eprintln!("note: {notice}");
            noticed.push(notice.to_string());
        }
        _ => {}
    };
    let answer = answer(question, answer_context, backend, mode, options, &mut on_event)?;
    if json {
        crate::output::json_line(&serde_json::to_value(&answer)?);
        return Ok(answer);
    }
    if streamed {
        outln!();
        if answer.abstained || !answer.invalid_citations.is_empty() {
            outln!("\n{}", answer.text);
        }
    } else {
        outln!("{}", answer.text);
    }
    if !answer.invalid_citations.is_empty() {
        eprintln!(
            "note: removed citation markers that name no source: {:?}",
            answer.invalid_citations
        );
    }
    for note in answer.notes.iter().filter(|note| !noticed.contains(note)) {
        eprintln!("note: {note}");
    }
    print_sources(&answer);
    if show_prompt {
        print_prompt(&answer.prompt);
    }
    eprintln!(
        "{} · {} · {}",
        answer.model,
        mode_label(&answer),
        humantime(Duration::from_millis(answer.latency_ms))
    );
    Ok(answer)
}

fn mode_label(answer: &Answer) -> String {
    let mode = serde_json::to_value(answer.mode)
        .ok()
        .and_then(|v| v.as_str().map(String::from))
        .unwrap_or_default();
    match answer.retrieval {
        Some(retrieval) if format!("{retrieval:?}").to_lowercase() != mode => {
            format!("{mode} ({} retrieval)", format!("{retrieval:?}").to_lowercase())
        }
        _ => mode,
    }
}

fn humantime(elapsed: Duration) -> String {
    if elapsed.as_millis() < 1000 {
        format!("{} ms", elapsed.as_millis())
    } else {
        format!("{:.1} s", elapsed.as_secs_f64())
    }
}

fn print_sources(answer: &Answer) {
    let (heading, sources): (&str, &[Source]) = if answer.abstained {
        ("Closest sources:", &answer.closest)
    } else if answer.cited.is_empty() {
        ("Sources (none cited):", &answer.sources)
    } else {
        ("Sources:", &answer.cited)
    };
    if sources.is_empty() {
        return;
    }
    outln!("\n{heading}");
    for source in sources {
        let location = source.location();
        let location = if location.is_empty() {
            String::new()
        } else {
            format!(" — {location}")
        };
        outln!(
            "  [{}] {}{location}\n      {} (chars {}–{})",
            source.number,
            source.title,
            source.source,
            source.char_start,
            source.char_end
        );
    }
}

fn print_prompt(prompt: &[Message]) {
    if prompt.is_empty() {
        outln!("\n(no prompt: the extractive answerer calls no model)");
        return;
    }
    outln!("\n── prompt ──");
    for message in prompt {
        outln!(
            "[{}]\n{}\n",
            serde_json::to_value(message.role).unwrap_or_default(),
            message.content
        );
    }
}
