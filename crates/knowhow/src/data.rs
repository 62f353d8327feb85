//! `knowhow data check|split|stats FILE`: fine-tuning datasets before training.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use knowhow_models::decoder::{load_tokenizer, DecoderConfig};
use knowhow_models::ChatTemplate;
use knowhow_tune::data::{self, CheckOptions, CheckReport, Message, SplitOptions, StatsOptions};

use crate::{output, Context};

#[derive(clap::Subcommand)]
pub enum Command {
    /// Validate a JSONL dataset: every bad line with its line number and field; exits 1 when any line is bad
    Check { file: PathBuf },
    /// Split into train / validation / test JSONL (seeded; a row's part depends only on its content)
    Split {
        file: PathBuf,
        /// Folder for train.jsonl, validation.jsonl and test.jsonl
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Share of rows for validation
        #[arg(long, default_value_t = 0.1)]
        val_ratio: f64,
        /// Share of rows for test
        #[arg(long, default_value_t = 0.1)]
        test_ratio: f64,
        #[command(flatten)]
        mix: MixArgs,
    },
    /// Rows per shape, duplicates and, with --base, token lengths under the model's chat template
    Stats {
        file: PathBuf,
        /// Model folder whose tokenizer and chat template count the tokens
        #[arg(long, value_name = "MODEL_FOLDER")]
        base: Option<PathBuf>,
        /// Training length limit: longer rows are counted as dropped
        #[arg(long, default_value_t = 1024)]
        max_length: usize,
    },
}

/// General-purpose rows mixed into the training part, the usual guard against forgetting what the base knew.
#[derive(clap::Args)]
pub struct MixArgs {
    /// General-purpose rows (any dataset shape) to mix into the training part
    #[arg(long, value_name = "FILE")]
    mix: Option<PathBuf>,
    /// Share of the final training part made of --mix rows (0.1-0.2 is usual)
    #[arg(long, value_name = "R", default_value_t = 0.15, requires = "mix")]
    mix_ratio: f64,
}

impl MixArgs {
    pub fn mix(&self) -> Option<data::Mix> {
        self.mix.as_ref().map(|path| data::Mix {
            path: path.clone(),
            ratio: self.mix_ratio,
        })
    }
}

pub fn run(context: &Context, command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Check { file } => check(context, &file),
        Command::Split {
            file,
            out,
            seed,
            val_ratio,
            test_ratio,
            mix,
        } => {
            let options = SplitOptions {
                seed,
                ratios: data::Ratios {
                    train: 1.0 - val_ratio - test_ratio,
                    validation: val_ratio,
                    test: test_ratio,
                },
                mix: mix.mix(),
                ..SplitOptions::default()
            };
            let report = data::split(&file, &out, &options)?;
            if context.json {
                output::json_line(&serde_json::to_value(&report)?);
            } else {
                print_errors(&report.input);
                for (name, part) in [
                    ("train", &report.train),
                    ("validation", &report.validation),
                    ("test", &report.test),
                ] {
                    outln!("{name:<11} {:>7} rows  {}", part.rows, part.path.display());
                }
                if let Some(mix) = &report.mix {
                    outln!(
                        "mixed in {} general rows ({} wanted for {:.0}% of train; {} equal to task rows skipped)",
                        mix.mixed,
                        mix.wanted,
                        100.0 * mix.ratio,
                        mix.overlapping_task_rows
                    );
                }
                for warning in &report.warnings {
                    eprintln!("warning: {warning}");
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Stats { file, base, max_length } => stats(context, &file, base.as_deref(), max_length),
    }
}

fn check(context: &Context, file: &Path) -> anyhow::Result<ExitCode> {
    let report = data::check(file, &CheckOptions::default())?;
    if context.json {
        output::json_line(&serde_json::to_value(&report)?);
    } else {
        print_summary(&report);
        print_errors(&report);
    }
    Ok(if report.invalid_lines > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn print_summary(report: &CheckReport) {
    let shapes = &report.shapes;
    outln!("{}", report.path.display());
    outln!("  lines           {:>7}", report.lines);
    outln!(
        "  valid rows      {:>7}  (prompt/completion {}, chat {}, alpaca {})",
        report.valid_rows,
        shapes.prompt_completion,
        shapes.chat,
        shapes.alpaca
    );
    outln!("  invalid lines   {:>7}", report.invalid_lines);
    outln!("  duplicates      {:>7}", report.duplicates.len());
    outln!("  unique rows     {:>7}", report.unique_rows);
    outln!("  sha256          {}", report.checksum);
}

fn print_errors(report: &CheckReport) {
    for error in &report.errors {
        let field = error.field.as_deref().map(|f| format!(" [{f}]")).unwrap_or_default();
        outln!("  line {}{field}: {}", error.line, error.message);
    }
}

fn stats(context: &Context, file: &Path, base: Option<&Path>, max_length: usize) -> anyhow::Result<ExitCode> {
    let options = StatsOptions {
        max_len: max_length,
        ..StatsOptions::default()
    };
    let report = match base {
        None => data::stats(file, None, None, &options)?,
        Some(base) => {
            let tokenizer = load_tokenizer(base)?;
            let template = ChatTemplate::from_model_dir(base)?;
            let config = DecoderConfig::from_file(&base.join("config.json"))?;
            let eos = config
                .eos_token_ids
                .first()
                .and_then(|&id| tokenizer.id_to_token(id))
                .unwrap_or_default();
            let plain = data::plain_text(&eos);
            let render = |messages: &[Message], generation: bool| match &template {
                Some(template) => {
                    let values: Vec<serde_json::Value> = messages.iter().map(Message::to_template_value).collect();
                    template.render(&values, None, generation).map_err(|e| e.to_string())
                }
                None => plain(messages, generation),
            };
            data::stats(file, Some(&tokenizer), Some(&render), &options)?
        }
    };
    if context.json {
        output::json_line(&serde_json::to_value(&report)?);
        return Ok(ExitCode::SUCCESS);
    }
    print_summary(&report.input);
    if let Some(tokens) = &report.tokens {
        outln!(
            "  tokens          {:>7} {:>7} {:>7} {:>7} {:>9}",
            "min",
            "median",
            "p95",
            "max",
            "mean"
        );
        for (label, d) in [
            ("prompt", &tokens.prompt),
            ("completion", &tokens.completion),
            ("total", &tokens.total),
        ] {
            outln!(
                "    {label:<13} {:>7} {:>7} {:>7} {:>7} {:>9.1}",
                d.min,
                d.median,
                d.p95,
                d.max,
                d.mean
            );
        }
        outln!("  over --max-length {}: {} rows", tokens.max_len, tokens.over_max_len);
        outln!(
            "  tokens per epoch {} ({} trained)",
            tokens.tokens_per_epoch,
            tokens.trained_tokens_per_epoch
        );
    }
    Ok(ExitCode::SUCCESS)
}
