//! `knowhow adapters list|show|rm|export|merge`: the registry of trained adapters.

use std::path::PathBuf;
use std::process::ExitCode;

use knowhow_models::decoder::peft;
use knowhow_tune::registry::{AdapterRef, Registry};
use serde_json::json;

use crate::{output, Context};

#[derive(clap::Subcommand)]
pub enum Command {
    /// Every registered adapter version
    List,
    /// An adapter's card: base model, dataset, hyper-parameters, metrics
    Show {
        /// NAME (latest version) or NAME@VERSION
        adapter: String,
    },
    /// Remove NAME@VERSION, or every version of NAME
    Rm {
        /// NAME or NAME@VERSION, spelled exactly
        adapter: String,
    },
    /// Copy an adapter's PEFT folder (adapter_config.json, adapter_model.safetensors, card.json) to a new folder
    Export {
        adapter: String,
        /// The folder to create
        dest: PathBuf,
    },
    /// Write base + adapter as one full model folder (merged safetensors, config and tokenizer)
    Merge {
        adapter: String,
        /// The folder to create
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Base model folder [default: the one recorded on the adapter's card]
        #[arg(long, value_name = "MODEL_FOLDER")]
        base: Option<PathBuf>,
    },
}

pub fn run(context: &Context, command: Command) -> anyhow::Result<ExitCode> {
    let registry = Registry::new(context.home.root());
    match command {
        Command::List => {
            let entries = registry.list()?;
            if context.json {
                let cards: Vec<_> = entries
                    .iter()
                    .map(|e| json!({"name": e.card.name, "version": e.card.version, "path": e.dir, "card": e.card}))
                    .collect();
                output::json_line(&json!(cards));
            } else if entries.is_empty() {
                outln!("no adapters yet; train one with `knowhow tune DATA --base MODEL --name NAME`");
            } else {
                outln!(
                    "{:<24} {:>7} {:<20} {:>9} {:>9}  base",
                    "name",
                    "version",
                    "created",
                    "val loss",
                    "rows"
                );
                for entry in &entries {
                    let card = &entry.card;
                    outln!(
                        "{:<24} {:>7} {:<20} {:>9} {:>9}  {}",
                        card.name,
                        card.version,
                        card.created,
                        card.metrics.val_loss.map_or("-".into(), |l| format!("{l:.4}")),
                        card.dataset.train_rows,
                        card.base_model.path
                    );
                }
            }
        }
        Command::Show { adapter } => {
            let entry = registry.get(&AdapterRef::parse(&adapter)?)?;
            if context.json {
                output::json_line(&json!({"path": entry.dir, "card": entry.card}));
            } else {
                outln!("{}", entry.dir.display());
                outln!("{}", serde_json::to_string_pretty(&entry.card)?);
            }
        }
        Command::Rm { adapter } => {
            let removed = registry.remove(&AdapterRef::parse(&adapter)?)?;
            if context.json {
                output::json_line(&json!({"removed": removed}));
            } else {
                for dir in removed {
                    outln!("removed {}", dir.display());
                }
            }
        }
        Command::Export { adapter, dest } => {
            let entry = registry.export(&AdapterRef::parse(&adapter)?, &dest)?;
            if context.json {
                output::json_line(&json!({"name": entry.card.name, "version": entry.card.version, "path": dest}));
            } else {
                outln!(
                    "exported {}@{} to {}",
                    entry.card.name,
                    entry.card.version,
                    dest.display()
                );
            }
        }
        Command::Merge { adapter, out, base } => {
            let entry = registry.get(&AdapterRef::parse(&adapter)?)?;
            if out.exists() {
                anyhow::bail!("{} already exists; merge into a new folder", out.display());
            }
            let base = base.unwrap_or_else(|| PathBuf::from(&entry.card.base_model.path));
            peft::merge_adapter(&base, &entry.dir, &out)?;
            if context.json {
                output::json_line(&json!({"name": entry.card.name, "version": entry.card.version, "path": out}));
            } else {
                outln!(
                    "merged {}@{} into {} (base {})",
                    entry.card.name,
                    entry.card.version,
                    out.display(),
                    base.display()
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
