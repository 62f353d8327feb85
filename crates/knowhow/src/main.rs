//! The `knowhow` command line: parses arguments and hands each subcommand to
//! its module. Work happens in the library crates.

/// `println!` for the command's output. A reader that went away (`knowhow docs list | head`) ends the command
/// quietly with success, as ripgrep does, where `println!` would panic with a backtrace.
macro_rules! outln {
    () => {
        $crate::output::write_stdout(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::output::write_stdout(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// `print!` for the command's output, with `outln!`'s handling of a closed pipe.
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::output::write_stdout(format_args!($($arg)*))
    };
}

mod adapters;
mod ask;
mod collections;
mod data;
mod docs;
mod embed;
mod embedding;
mod eval;
mod ingest;
mod keys;
mod llm;
mod log;
mod model;
mod output;
mod quickstart;
mod reembed;
mod search;
mod serve;
mod tune;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use knowhow_core::CollectionRef;
use knowhow_index::Home;

/// knowhow: a knowledge base over your own documents, on your own machine.
///
/// Ingest a folder, search it, ask questions answered with citations, and
/// measure retrieval quality on a standard benchmark. Everything is stored
/// under the home directory (see --home). New here? Run `knowhow quickstart`.
#[derive(Parser)]
#[command(name = "knowhow", version, propagate_version = true)]
struct Cli {
    /// Where collections are stored [default: $XDG_DATA_HOME/knowhow, or ~/.local/share/knowhow]
    #[arg(long, global = true, env = "KNOWHOW_HOME", value_name = "DIR")]
    home: Option<PathBuf>,
    /// Namespace of the collection: nothing is shared across namespaces
    #[arg(short, long, global = true, default_value = "default", env = "KNOWHOW_NAMESPACE")]
    namespace: String,
    /// Collection to work on
    #[arg(short, long, global = true, default_value = "default", env = "KNOWHOW_COLLECTION")]
    collection: String,
    /// Machine-readable output: JSON (JSON Lines for streams such as ingest)
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Add files and folders to the collection (incremental: unchanged files are skipped)
    Ingest(ingest::Args),
    /// Search the collection (lexical, dense, hybrid or re-ranked)
    Search(search::Args),
    /// Embed texts: one per line in, one JSON vector per line out
    Embed(embed::Args),
    /// Move the collection to another embedding model, or add vectors to a lexical-only one
    Reembed(reembed::Args),
    /// List, show, remove or check documents
    #[command(subcommand)]
    Docs(docs::Command),
    /// List, create or drop collections
    #[command(subcommand)]
    Collections(collections::Command),
    /// Measure retrieval quality
    #[command(subcommand)]
    Eval(eval::Command),
    /// Answer a question from the collection, citing the sources
    Ask(ask::Args),
    /// Try knowhow on a small sample corpus: ingest it, ask three questions, show answers with sources
    Quickstart(quickstart::Args),
    /// Show the audit log: every answer, its sources, model and prompt hash
    Log(log::Args),
    /// LoRA fine-tune a local base model on a JSONL dataset and register the adapter
    Tune(tune::Args),
    /// Check, split or profile a fine-tuning dataset (JSONL)
    #[command(subcommand)]
    Data(data::Command),
    /// List, show, remove, export or merge fine-tuned adapters
    #[command(subcommand)]
    Adapters(adapters::Command),
    /// Serve the knowledge base and the models over HTTP: the OpenAI wire protocol (/v1/embeddings,
    /// /v1/models), the knowledge-base API (/v1/collections), /health, /ready and /metrics
    Serve(serve::Args),
    /// Create, list or revoke the API keys `knowhow serve` accepts
    #[command(subcommand)]
    Keys(keys::Command),
    /// Download, list or remove embedding and reranking models
    #[command(subcommand, after_long_help = model::RESOLUTION_HELP)]
    Model(model::Command),
}

/// What every command gets: where data lives, which collection, how to print.
#[derive(Clone)]
pub struct Context {
    pub home: Home,
    pub collection: CollectionRef,
    pub json: bool,
}

fn default_home() -> PathBuf {
    if let Some(data) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(data).join("knowhow");
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from);
    home.join(".local/share/knowhow")
}

fn main() -> ExitCode {
    // Model inference allocates and frees the same large buffers layer after
    // layer; glibc would unmap and fault them back in each time (measured:
    // a third of an encoder layer's time).
    knowhow_kernels::keep_freed_memory_for_reuse();
    let cli = Cli::parse();
    let collection = match CollectionRef::new(&cli.namespace, &cli.collection) {
        Ok(c) => c,
        Err(e) => return output::fail(&e.into()),
    };
    let context = Context {
        home: Home::new(cli.home.unwrap_or_else(default_home)),
        collection,
        json: cli.json,
    };
    let result = match cli.command {
        Command::Ingest(args) => ingest::run(&context, args),
        Command::Search(args) => search::run(&context, args),
        Command::Embed(args) => embed::run(&context, args),
        Command::Reembed(args) => reembed::run(&context, args),
        Command::Docs(command) => docs::run(&context, command),
        Command::Collections(command) => collections::run(&context, command),
        Command::Eval(command) => eval::run(&context, command),
        Command::Model(command) => model::run(&context, command),
        Command::Serve(args) => serve::run(&context, args),
        Command::Keys(command) => keys::run(&context, command),
        Command::Ask(args) => ask::run(&context, args),
        Command::Quickstart(args) => quickstart::run(&context, args),
        Command::Log(args) => log::run(&context, args),
        Command::Tune(args) => tune::run(&context, args),
        Command::Data(command) => data::run(&context, command),
        Command::Adapters(command) => adapters::run(&context, command),
    };
    match result {
        Ok(code) => code,
        Err(e) => output::fail(&e),
    }
}
