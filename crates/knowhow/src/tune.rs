//! `knowhow tune`: LoRA fine-tuning of a local base model into a registered adapter, and `knowhow eval tune`: the
//! adapter against its base on held-out rows.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Context as _;
use knowhow_models::decoder::ALL_TARGETS;
use knowhow_tune::error::TuneError;
use knowhow_tune::evaluate::{self, Checks, Comparison, EvalOptions, SideReport};
use knowhow_tune::pipeline::{self, Event, TuneOptions};
use knowhow_tune::registry::{self, Registry};
use knowhow_tune::schedule::Warmup;
use knowhow_tune::train::Progress;
use serde_json::json;

use crate::{output, Context};

/// `knowhow tune DATA --base MODEL_FOLDER --name NAME`.
#[derive(clap::Args)]
pub struct Args {
    /// Training data: JSONL of {"prompt","completion"}, {"messages":[...]} (OpenAI chat) or Alpaca rows
    data: PathBuf,
    /// Base model folder (Llama, Mistral or Qwen2 safetensors with tokenizer.json)
    #[arg(long, value_name = "MODEL_FOLDER")]
    base: PathBuf,
    /// Name to register the adapter under (letters, digits, '_', '.', '-'); each run adds a version
    #[arg(long)]
    name: String,
    /// LoRA rank
    #[arg(long, default_value_t = 8)]
    rank: usize,
    /// LoRA alpha (the update is scaled by alpha / rank)
    #[arg(long, default_value_t = 16.0)]
    alpha: f64,
    /// Dropout on the adapter's input while training
    #[arg(long, default_value_t = 0.05)]
    dropout: f64,
    /// Peak learning rate
    #[arg(long, default_value_t = 2e-4)]
    lr: f64,
    #[arg(long, default_value_t = 3)]
    epochs: usize,
    /// Rows per micro-batch
    #[arg(long, default_value_t = 4)]
    batch_size: usize,
    /// Micro-batches per optimizer step
    #[arg(long, default_value_t = 1)]
    grad_accum: usize,
    /// Longest row in tokens; longer rows are dropped (and counted)
    #[arg(long, default_value_t = 1024)]
    max_length: usize,
    /// Adapted layers, comma-separated: q,k,v,o,gate,up,down (or full names such as q_proj)
    #[arg(long, value_delimiter = ',', default_value = "q,k,v,o,gate,up,down")]
    targets: Vec<String>,
    /// Warm-up: a fraction of the steps (0.03) or a step count (10)
    #[arg(long, default_value = "0.03")]
    warmup: String,
    /// Validation loss every N steps (default: at the end)
    #[arg(long, value_name = "N")]
    eval_every: Option<usize>,
    /// Checkpoint every N steps (always at the end and on Ctrl-C)
    #[arg(long, value_name = "N")]
    save_every: Option<usize>,
    /// Stop after N evaluations without a better validation loss
    #[arg(long, value_name = "N")]
    patience: Option<usize>,
    /// Seeds the split, the adapter's initialisation and the batch order
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Validation rows from this file instead of 10% of DATA
    #[arg(long, value_name = "FILE")]
    val: Option<PathBuf>,
    /// Test rows from this file instead of 10% of DATA
    #[arg(long, value_name = "FILE")]
    test: Option<PathBuf>,
    #[command(flatten)]
    mix: crate::data::MixArgs,
    /// Continue the interrupted run of NAME from its last checkpoint
    #[arg(long)]
    resume: bool,
}

/// `q` → `q_proj`, `gate` → `gate_proj`; full names pass through.
fn target_names(short: &[String]) -> anyhow::Result<Vec<String>> {
    short
        .iter()
        .map(|name| {
            let full = if name.ends_with("_proj") {
                name.clone()
            } else {
                format!("{name}_proj")
            };
            if ALL_TARGETS.contains(&full.as_str()) {
                Ok(full)
            } else {
                anyhow::bail!("--targets: unknown layer {name:?}; choose from q,k,v,o,gate,up,down")
            }
        })
        .collect()
}

fn warmup(text: &str) -> anyhow::Result<Warmup> {
    if let Ok(steps) = text.parse::<usize>() {
        return Ok(Warmup::Steps(steps));
    }
    match text.parse::<f64>() {
        Ok(ratio) if (0.0..1.0).contains(&ratio) => Ok(Warmup::Ratio(ratio)),
        _ => anyhow::bail!("--warmup {text:?}: give a fraction of the steps in [0, 1) or a whole number of steps"),
    }
}

/// The library's error, naming the flag that set what it complains about.
fn with_flag(error: TuneError) -> anyhow::Error {
    match error {
        TuneError::ZeroBatchSize => anyhow::anyhow!("--batch-size must be at least 1"),
        TuneError::NothingToResume { dir } => anyhow::anyhow!(
            "nothing to resume: {} holds no checkpoint; run without --resume",
            dir.display()
        ),
        TuneError::NothingEncoded {
            max_length,
            dropped,
            failed,
        } => anyhow::anyhow!(
            "no training row could be encoded within --max-length {max_length} ({dropped} dropped, {failed} failed)"
        ),
        TuneError::InvalidRegex { pattern, message } => {
            anyhow::anyhow!("--regex {pattern:?} is not a valid pattern: {message}")
        }
        other => other.into(),
    }
}

/// Sets `stop` on the first Ctrl-C, so training finishes its step, checkpoints and returns; a second Ctrl-C exits
/// at once (status 130). The handler is process-wide and can be installed once.
fn stop_on_ctrl_c(stop: Arc<AtomicBool>) -> anyhow::Result<()> {
    ctrlc::set_handler(move || {
        if stop.swap(true, Ordering::SeqCst) {
            std::process::exit(130);
        }
        eprintln!("stopping after this step and saving a checkpoint (Ctrl-C again to quit now)");
    })
    .context("installing the Ctrl-C handler")
}

/// A training `on_progress` callback that draws on `bar`: steps done, loss, learning rate, tokens/s, validation
/// loss and the ETA computed from this run's pace (the bar's own would count steps done before a resume).
fn progress_bar(bar: indicatif::ProgressBar) -> impl FnMut(&Progress) {
    let style = indicatif::ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} steps {msg}")
        .expect("the template is valid")
        .progress_chars("=> ");
    bar.set_style(style);
    move |progress: &Progress| {
        bar.set_length(progress.total_steps as u64);
        bar.set_position(progress.step as u64);
        let best = progress
            .best_val_loss
            .map(|loss| format!(" best val {loss:.4}"))
            .unwrap_or_default();
        bar.set_message(format!(
            "loss {:.4}{best} lr {:.2e} {:.0} tok/s eta {}",
            progress.loss,
            progress.lr,
            progress.tokens_per_s,
            indicatif::HumanDuration(progress.eta)
        ));
    }
}

pub fn run(context: &Context, args: Args) -> anyhow::Result<ExitCode> {
    let mut options = TuneOptions::new(args.data.clone(), args.base.clone(), args.name.clone());
    options.lora.r = args.rank;
    options.lora.alpha = args.alpha;
    options.lora.dropout = args.dropout;
    options.lora.targets = target_names(&args.targets)?;
    options.lr = args.lr;
    options.epochs = args.epochs;
    options.batch_size = args.batch_size;
    options.grad_accum = args.grad_accum;
    options.max_length = args.max_length;
    options.warmup = warmup(&args.warmup)?;
    options.eval_every = args.eval_every;
    options.save_every = args.save_every;
    options.patience = args.patience;
    options.seed = args.seed;
    options.validation_file = args.val.clone();
    options.test_file = args.test.clone();
    options.mix = args.mix.mix();
    options.resume = args.resume;
    stop_on_ctrl_c(options.stop.clone())?;

    let bar = output::progress(0, context.json, "training");
    let mut draw = progress_bar(bar.clone());
    let json = context.json;
    let outcome = pipeline::tune(context.home.root(), &options, &mut |event| match event {
        Event::Prepared {
            split,
            train,
            validation,
            trainable,
            total,
        } => {
            for error in &split.input.errors {
                eprintln!("warning: skipped {error}");
            }
            for failure in train.failed.iter().chain(&validation.failed) {
                eprintln!("warning: line {}: {}", failure.line, failure.message);
            }
            if let Some(mix) = &split.mix {
                if !json {
                    eprintln!(
                        "mix: {} general rows in the training part ({} wanted for {:.0}%)",
                        mix.mixed,
                        mix.wanted,
                        100.0 * mix.ratio
                    );
                }
            }
            if train.dropped_rows > 0 {
                eprintln!(
                    "warning: {} training rows are longer than --max-length {} and were dropped",
                    train.dropped_rows, options.max_length
                );
            }
            if !json {
                eprintln!(
                    "data: {} train / {} validation / {} test rows ({} train tokens); training {trainable} of \
                     {total} parameters ({:.2}%)",
                    split.train.rows,
                    split.validation.rows,
                    split.test.rows,
                    train.tokens,
                    100.0 * trainable as f64 / total.max(1) as f64
                );
            }
        }
        Event::Step(progress) => draw(progress),
    })
    .map_err(with_flag)?;
    bar.finish_and_clear();

    let Some(card) = &outcome.card else {
        let checkpoint = outcome
            .checkpoint
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        if context.json {
            output::json_line(&serde_json::to_value(&outcome)?);
        }
        eprintln!(
            "interrupted at step {}/{}; checkpoint {checkpoint}. Continue with the same command and --resume",
            outcome.steps, outcome.total_steps
        );
        return Ok(ExitCode::from(130));
    };
    if context.json {
        output::json_line(&serde_json::to_value(&outcome)?);
    } else {
        let metrics = &card.metrics;
        outln!(
            "registered {}@{} in {}",
            card.name,
            card.version,
            outcome
                .adapter_dir
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default()
        );
        outln!(
            "  {} steps ({}), {:.1}s, train loss {}, validation loss {}",
            metrics.steps,
            metrics.stop_reason,
            metrics.train_seconds,
            number(metrics.train_loss),
            number(metrics.val_loss)
        );
        if outcome.split.test.rows > 0 {
            outln!(
                "  held-out test rows: {} (in {}); compare with the base: knowhow eval tune {}@{} --data {}",
                outcome.split.test.rows,
                outcome.split.test.path.display(),
                card.name,
                card.version,
                outcome.split.test.path.display()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn number(value: Option<f64>) -> String {
    value.map_or_else(|| "-".to_string(), |v| format!("{v:.4}"))
}

/// `knowhow eval tune ADAPTER --data TEST`.
#[derive(clap::Args)]
pub struct EvalArgs {
    /// A registered adapter (NAME or NAME@VERSION) or a PEFT adapter folder
    adapter: String,
    /// Test rows (JSONL, same shapes as for training); the prompt is all but the last answer
    #[arg(long, value_name = "TEST")]
    data: PathBuf,
    /// Base model folder [default: the one recorded with the adapter]
    #[arg(long, value_name = "MODEL_FOLDER")]
    base: Option<PathBuf>,
    /// JSON Schema file that answers must satisfy (adds the schema-valid rate)
    #[arg(long, value_name = "FILE")]
    schema: Option<PathBuf>,
    /// Pattern answers must match, anywhere (anchor with ^...$); adds the regex match rate
    #[arg(long, value_name = "R")]
    regex: Option<String>,
    /// Most tokens generated per answer
    #[arg(long, default_value_t = 128)]
    max_new_tokens: usize,
    /// Rows shown with both answers
    #[arg(long, default_value_t = 3)]
    samples: usize,
}

/// The base folder for an adapter: `--base`, else the card's, else `adapter_config.json`'s
/// `base_model_name_or_path` when that is a folder here.
fn base_for(adapter_dir: &Path, card: Option<&registry::Card>, given: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    if let Some(base) = given {
        return Ok(base);
    }
    if let Some(card) = card {
        return Ok(PathBuf::from(&card.base_model.path));
    }
    let config_path = adapter_dir.join(knowhow_models::decoder::peft::ADAPTER_CONFIG);
    let config: serde_json::Value = serde_json::from_slice(&std::fs::read(&config_path)?)
        .with_context(|| format!("{} is not JSON", config_path.display()))?;
    match config["base_model_name_or_path"].as_str() {
        Some(path) if Path::new(path).is_dir() => Ok(PathBuf::from(path)),
        other => anyhow::bail!(
            "{}: base_model_name_or_path is {other:?}, not a folder here; pass --base MODEL_FOLDER",
            config_path.display()
        ),
    }
}

pub fn evaluate(context: &Context, args: EvalArgs) -> anyhow::Result<ExitCode> {
    let home = context.home.root();
    let adapter_dir = registry::resolve_adapter(home, &args.adapter)?;
    let card = registry::read_card(&adapter_dir).ok();
    let base = base_for(&adapter_dir, card.as_ref(), args.base.clone())?;
    if let Some(card) = &card {
        let sha = registry::weights_sha256(&base)?;
        if sha != card.base_model.sha256 {
            eprintln!(
                "warning: {} is not the base this adapter was trained on (weights sha256 {sha}, card says {})",
                base.display(),
                card.base_model.sha256
            );
        }
    }
    let schema = match &args.schema {
        Some(path) => Some(
            serde_json::from_slice::<serde_json::Value>(
                &std::fs::read(path).with_context(|| format!("reading {}", path.display()))?,
            )
            .with_context(|| format!("{} is not JSON", path.display()))?,
        ),
        None => None,
    };
    let checks = Checks::new(schema.as_ref(), args.regex.as_deref()).map_err(with_flag)?;
    let options = EvalOptions {
        max_new_tokens: args.max_new_tokens,
        samples: args.samples,
        ..EvalOptions::default()
    };
    let rows = knowhow_tune::data::Dataset::load(&args.data, false)?.rows.len() as u64;
    let bar = output::progress(rows * 2, context.json, "generating");
    let comparison = evaluate::compare(&base, &adapter_dir, &args.data, &checks, &options, &mut || bar.inc(1))?;
    bar.finish_and_clear();

    let held_out = card
        .as_ref()
        .map(|card| card.dataset.test_sha256 == comparison.test_sha256);
    if let Some(card) = card {
        let registry = Registry::new(home);
        let reference = registry::AdapterRef {
            name: card.name.clone(),
            version: Some(card.version),
        };
        if let Ok(mut entry) = registry.get(&reference) {
            if entry.dir.canonicalize().ok() == adapter_dir.canonicalize().ok() {
                entry.card.metrics.evaluation = Some(summary(&comparison, held_out));
                registry.update_card(&entry)?;
            }
        }
    }
    if context.json {
        let mut value = serde_json::to_value(&comparison)?;
        value["held_out_split"] = json!(held_out);
        output::json_line(&value);
    } else {
        print_table(&args.adapter, &comparison, held_out);
    }
    Ok(ExitCode::SUCCESS)
}

/// What the card records of an evaluation.
fn summary(comparison: &Comparison, held_out: Option<bool>) -> serde_json::Value {
    let side =
        |report: &SideReport| json!({"loss": report.loss, "perplexity": report.perplexity, "rates": report.rates});
    json!({
        "test_path": comparison.test_path,
        "rows": comparison.rows,
        "test_sha256": comparison.test_sha256,
        "held_out_split": held_out,
        "base": side(&comparison.base),
        "with_adapter": side(&comparison.tuned),
        "evaluated": knowhow_core::time::UtcDateTime::now().rfc3339(),
    })
}

fn print_table(adapter: &str, comparison: &Comparison, held_out: Option<bool>) {
    let note = match held_out {
        Some(true) => ", the adapter's held-out test split",
        Some(false) => ", not the adapter's held-out split",
        None => "",
    };
    outln!(
        "{adapter} on {} ({} rows{note})",
        comparison.test_path.display(),
        comparison.rows
    );
    outln!("  {:<14} {:>12} {:>12}", "", "base", "+adapter");
    let (base, tuned) = (&comparison.base, &comparison.tuned);
    outln!("  {:<14} {:>12.4} {:>12.4}", "loss", base.loss, tuned.loss);
    outln!(
        "  {:<14} {:>12.3} {:>12.3}",
        "perplexity",
        base.perplexity,
        tuned.perplexity
    );
    let percent = |rate: f64| format!("{:.1}%", rate * 100.0);
    let rows = [
        (
            "exact match",
            Some(base.rates.exact_match),
            Some(tuned.rates.exact_match),
        ),
        ("JSON valid", Some(base.rates.json_valid), Some(tuned.rates.json_valid)),
        ("schema valid", base.rates.schema_valid, tuned.rates.schema_valid),
        ("regex match", base.rates.regex_match, tuned.rates.regex_match),
    ];
    for (label, b, t) in rows {
        if let (Some(b), Some(t)) = (b, t) {
            outln!("  {label:<14} {:>12} {:>12}", percent(b), percent(t));
        }
    }
    for sample in &comparison.samples {
        outln!("  line {}: {:?}", sample.line, sample.prompt);
        outln!("    expected  {:?}", sample.reference);
        outln!("    base      {:?}", sample.base);
        outln!("    +adapter  {:?}", sample.adapter);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn the_progress_bar_follows_the_steps() {
        let bar = indicatif::ProgressBar::hidden();
        let mut on_progress = progress_bar(bar.clone());
        for step in 1..=6 {
            on_progress(&Progress {
                step,
                total_steps: 6,
                epoch: step as f64 / 2.0,
                loss: 1.0 / step as f64,
                lr: 1e-3,
                grad_norm: 0.5,
                tokens_per_s: 1200.0,
                val_loss: None,
                best_val_loss: (step > 3).then_some(0.25),
                elapsed: Duration::from_secs(step as u64),
                eta: Duration::from_secs(6 - step as u64),
            });
        }
        assert_eq!((bar.position(), bar.length()), (6, Some(6)));
        let message = bar.message();
        assert!(
            message.starts_with("loss ") && message.contains(" best val 0.2500") && message.contains(" tok/s eta "),
            "{message}"
        );
    }
}
