//! `knowhow quickstart`: the whole RAG loop on a small real corpus shipped
//! inside the binary — ingest, then three questions answered with sources.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;
use knowhow_core::CollectionRef;
use knowhow_rag::answer::{AnswerContext, AnswerMode, AnswerOptions, PromptTemplates};

use knowhow_rag::pipeline::IngestOptions;

use crate::search::{self, RetrievalTuning};
use crate::{ask, ingest, llm, Context};

/// The sample corpus: SQuAD v1.1's "Super Bowl 50" article (Wikipedia text,
/// CC BY-SA 4.0), as committed under `samples/super-bowl-50/`.
const CORPUS: &[(&str, &str)] = &[
    (
        "01-overview.md",
        include_str!("../../../samples/super-bowl-50/01-overview.md"),
    ),
    (
        "02-background.md",
        include_str!("../../../samples/super-bowl-50/02-background.md"),
    ),
    (
        "03-teams.md",
        include_str!("../../../samples/super-bowl-50/03-teams.md"),
    ),
    (
        "04-pregame.md",
        include_str!("../../../samples/super-bowl-50/04-pregame.md"),
    ),
    (
        "05-broadcasting.md",
        include_str!("../../../samples/super-bowl-50/05-broadcasting.md"),
    ),
    (
        "06-entertainment.md",
        include_str!("../../../samples/super-bowl-50/06-entertainment.md"),
    ),
    (
        "07-game-summary.md",
        include_str!("../../../samples/super-bowl-50/07-game-summary.md"),
    ),
];

const LICENSE: &str = include_str!("../../../samples/super-bowl-50/LICENSE.md");

/// Three questions whose answers are in the corpus (from SQuAD's own
/// questions on it).
pub const QUESTIONS: [&str; 3] = [
    "Who performed the national anthem before the game?",
    "How much did CBS charge for a 30-second commercial during the game?",
    "Which stadium hosted the game?",
];

/// The collection the quickstart fills, in the current namespace.
pub const COLLECTION: &str = "quickstart";

#[derive(clap::Args)]
pub struct Args {
    /// Who writes the answers (see `knowhow ask --help`) [default: extractive]
    #[arg(long, env = "KNOWHOW_LLM", value_name = "SPEC")]
    pub llm: Option<String>,
    #[command(flatten)]
    pub generation: llm::GenerationArgs,
}

pub fn run(context: &Context, args: Args) -> anyhow::Result<ExitCode> {
    let context = Context {
        home: knowhow_index::Home::new(context.home.root()),
        collection: CollectionRef::new(&context.collection.namespace, COLLECTION)?,
        json: context.json,
    };
    let corpus = context.home.root().join("samples").join("super-bowl-50");
    write_corpus(&corpus)?;
    if !context.json {
        outln!(
            "knowhow quickstart: a knowledge base over {} files of Wikipedia's \"Super Bowl 50\" article \
             (CC BY-SA 4.0; see {}).\n",
            CORPUS.len(),
            corpus.join("LICENSE.md").display()
        );
    }
    let summary = ingest::ingest_paths(
        &context,
        std::slice::from_ref(&corpus),
        &ingest_options(),
        None,
        32,
        false,
    )?;
    if let Some(failure) = summary.failures.first() {
        anyhow::bail!(
            "the sample corpus did not ingest: {}: {}",
            failure.source,
            failure.error
        );
    }
    if !context.json {
        outln!(
            "Ingested into collection {}: {} documents added, {} files unchanged, {} chunks written.\n",
            context.collection,
            summary.documents_added,
            summary.files_unchanged,
            summary.chunks_written
        );
    }
    let reader = context.home.open_reader(&context.collection)?;
    let tuning = default_tuning();
    let retriever = search::retriever(&context, &reader, None, &tuning)?;
    let mut model = llm::load(&context, args.llm.as_deref(), &args.generation)?;
    let options = AnswerOptions {
        templates: PromptTemplates::for_collection(&context.home, &context.collection)?,
        generation: args.generation.options(),
        ..AnswerOptions::default()
    };
    let answer_context = AnswerContext {
        reader: &reader,
        embedder: retriever.embedder(),
        reranker: None,
        retrieval: retriever.options(),
        k: 8,
    };
    for (number, question) in QUESTIONS.iter().enumerate() {
        if !context.json {
            outln!("── Question {} of {}: {question}\n", number + 1, QUESTIONS.len());
        }
        let answer = ask::ask(
            &context,
            question,
            &answer_context,
            model.as_deref_mut(),
            AnswerMode::Hybrid,
            &options,
            false,
        )?;
        ask::log_answer(&context, &answer, args.generation.adapter_name())?;
        if !context.json {
            outln!();
        }
    }
    if !context.json {
        outln!(
            "Next: `knowhow -c {COLLECTION} ask \"your question\"`, `knowhow ingest YOUR_FOLDER`, \
             `knowhow ask --llm openai:http://localhost:11434/v1#llama3.2 ...` for a model-written answer, \
             and `knowhow log` for the audit log."
        );
        if !std::env::var_os("PATH").is_some_and(|path| on_path(&path, "knowhow")) {
            outln!(
                "(`knowhow` is not on your PATH yet: `cargo install --path crates/knowhow` puts it there; until \
                 then, run each command as `cargo run --release -p knowhow -- ARGUMENTS`.)"
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Whether an executable file `name` is in one of the folders of `path` (a `PATH` value): run through
/// `cargo run`, the binary is not, and the "Next:" commands would fail as printed.
fn on_path(path: &std::ffi::OsStr, name: &str) -> bool {
    let file = format!("{name}{}", std::env::consts::EXE_SUFFIX);
    std::env::split_paths(path).any(|dir| dir.join(&file).is_file())
}

/// Writes the corpus files that are missing or differ (so a re-run ingests
/// nothing new).
fn write_corpus(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    for (name, text) in CORPUS.iter().chain([&("LICENSE.md", LICENSE)]) {
        let path = dir.join(name);
        if std::fs::read_to_string(&path).ok().as_deref() != Some(*text) {
            std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
        }
    }
    Ok(())
}

/// The sample's files only (not its license), and nothing left of an older sample.
fn ingest_options() -> IngestOptions {
    let mut options = IngestOptions {
        prune: true,
        ..IngestOptions::default()
    };
    options.walk.globs = vec!["0*.md".into()];
    options
}

fn default_tuning() -> RetrievalTuning {
    RetrievalTuning {
        embed_model: None,
        rerank_model: String::new(),
        candidates: 100,
        rerank_top: 50,
        rrf_k: knowhow_rag::fusion::DEFAULT_K,
        lexical_weight: 1.0,
        dense_weight: 1.0,
        filters: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_binary_is_on_the_path_only_when_a_folder_of_it_holds_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = format!("knowhow{}", std::env::consts::EXE_SUFFIX);
        std::fs::write(dir.path().join(&file), b"").unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        let both = std::env::join_paths([elsewhere.path(), dir.path()]).unwrap();
        assert!(on_path(&both, "knowhow"));
        assert!(!on_path(elsewhere.path().as_os_str(), "knowhow"));
        assert!(!on_path(std::ffi::OsStr::new(""), "knowhow"));
    }
}
