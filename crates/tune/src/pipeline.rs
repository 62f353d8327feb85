//! `knowhow tune`: from a JSONL file and a base model folder to a registered LoRA adapter.
//!
//! ```text
//! DATA.jsonl ─split (seeded; --val/--test override)─▶ RUN/data/{train,validation,test}.jsonl
//!            ─encode with the base's chat template (plain prompt + completion + EOS without one)─▶ length-sorted batches
//! BASE/ ─load (frozen)─▶ + LoRA ─train (AdamW, warm-up + cosine, accumulation, clipping, checkpoints)─▶ best params
//!       ─save PEFT folder─▶ registry: HOME/adapters/NAME/vN/ with card.json
//! ```
//!
//! A run works in `HOME/tune/NAME/` (the split, `train/metrics.jsonl`, `train/checkpoint-STEP/`). An interrupted
//! run (Ctrl-C) leaves its checkpoint there and registers nothing; `resume` continues it exactly. A new run without
//! `resume` starts that folder afresh.

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use serde::Serialize;

use knowhow_models::decoder::{peft, LoraConfig};

use crate::base::Base;
use crate::batch::{batch_loss_sum, make_batches};
use crate::data::{self, Batch, EncodeOptions, EncodeReport, SplitOptions, SplitReport};
use crate::error::TuneError;
use crate::registry::{self, BaseModel, Card, DatasetInfo, Entry, HyperParameters, Metrics, MixInfo, Registry};
use crate::schedule::Warmup;
use crate::train::{self, Progress, StopReason, TrainConfig, TrainReport};

/// Everything `knowhow tune` takes.
#[derive(Debug, Clone)]
pub struct TuneOptions {
    pub data: PathBuf,
    pub base: PathBuf,
    pub name: String,
    pub lora: LoraConfig,
    pub lr: f64,
    pub epochs: usize,
    pub batch_size: usize,
    pub grad_accum: usize,
    pub max_length: usize,
    pub warmup: Warmup,
    pub eval_every: Option<usize>,
    pub save_every: Option<usize>,
    pub patience: Option<usize>,
    pub seed: u64,
    pub validation_file: Option<PathBuf>,
    pub test_file: Option<PathBuf>,
    /// General-purpose rows mixed into the training part.
    pub mix: Option<data::Mix>,
    /// Continue the interrupted run of `name` from its latest checkpoint.
    pub resume: bool,
    /// When resuming, draw the LoRA dropout masks on from where the interrupted run stopped (the default), so the
    /// resumed run trains exactly as one that never stopped. `false` draws them from the start of the seeded
    /// sequence, as a new run does: batches, order and optimizer still continue, the masks repeat those of the
    /// first steps, and the curve drifts from the uninterrupted one (what an inexact resume costs can be measured
    /// this way). Without dropout or without `resume` it changes nothing.
    pub continue_dropout_masks: bool,
    /// The stop request (see [`TrainConfig::stop`]): set it, from a Ctrl-C handler or the `on_event` callback, and
    /// the run finishes its step, checkpoints and returns unregistered.
    pub stop: Arc<AtomicBool>,
}

impl TuneOptions {
    /// PEFT's and Hugging Face's usual LoRA recipe for `data` on `base`, registered as `name`.
    pub fn new(data: PathBuf, base: PathBuf, name: String) -> TuneOptions {
        TuneOptions {
            data,
            base,
            name,
            lora: LoraConfig::default(),
            lr: 2e-4,
            epochs: 3,
            batch_size: 4,
            grad_accum: 1,
            max_length: 1024,
            warmup: Warmup::Ratio(0.03),
            eval_every: None,
            save_every: None,
            patience: None,
            seed: 42,
            validation_file: None,
            test_file: None,
            mix: None,
            resume: false,
            continue_dropout_masks: true,
            stop: Arc::new(AtomicBool::new(false)),
        }
    }
}

/// What a run did. `entry` is the registered adapter, `None` when the run was interrupted.
#[derive(Debug, Serialize)]
pub struct TuneOutcome {
    pub split: SplitReport,
    pub train_encoding: EncodeReport,
    pub validation_encoding: EncodeReport,
    pub run_dir: PathBuf,
    pub stop_reason: StopReason,
    pub steps: usize,
    pub total_steps: usize,
    /// The checkpoint to resume from, when interrupted.
    pub checkpoint: Option<PathBuf>,
    pub trainable_parameters: usize,
    pub total_parameters: usize,
    #[serde(skip)]
    pub entry: Option<Entry>,
    pub adapter_dir: Option<PathBuf>,
    pub card: Option<Card>,
}

/// Stages of a run, for the CLI to report as they happen.
pub enum Event<'a> {
    /// The data is split and encoded; training starts.
    Prepared {
        split: &'a SplitReport,
        train: &'a EncodeReport,
        validation: &'a EncodeReport,
        trainable: usize,
        total: usize,
    },
    Step(&'a Progress),
}

/// Runs the whole pipeline (see the module docs). `on_event` sees the prepared data and every training step.
pub fn tune(home: &Path, options: &TuneOptions, on_event: &mut dyn FnMut(Event)) -> Result<TuneOutcome, TuneError> {
    registry::validate_name(&options.name)?;
    if options.batch_size == 0 {
        return Err(TuneError::ZeroBatchSize);
    }
    let run_dir = home.join("tune").join(&options.name);
    let train_dir = run_dir.join("train");
    let resume_from = if options.resume {
        Some(
            train::latest_checkpoint(&train_dir)?
                .ok_or_else(|| TuneError::NothingToResume { dir: train_dir.clone() })?,
        )
    } else {
        if run_dir.exists() {
            std::fs::remove_dir_all(&run_dir).map_err(|source| TuneError::Io {
                path: run_dir.clone(),
                source,
            })?;
        }
        None
    };

    let split_options = SplitOptions {
        seed: options.seed,
        validation_file: options.validation_file.clone(),
        test_file: options.test_file.clone(),
        mix: options.mix.clone(),
        ..SplitOptions::default()
    };
    let split = data::split(&options.data, &run_dir.join("data"), &split_options)?;
    let train_rows = data::Dataset::load(&split.train.path, true)?.rows;
    let validation_rows = data::Dataset::load(&split.validation.path, true)?.rows;
    if train_rows.is_empty() {
        return Err(TuneError::Invalid(format!(
            "{}: no valid training rows (see `knowhow data check {}`)",
            options.data.display(),
            options.data.display()
        )));
    }

    let mut base = Base::load(&options.base)?;
    let encode_options = EncodeOptions {
        max_len: options.max_length,
        ..EncodeOptions::default()
    };
    let (train_encoded, train_encoding) = base.encode(&train_rows, &encode_options);
    let (validation_encoded, validation_encoding) = base.encode(&validation_rows, &encode_options);
    if train_encoded.is_empty() {
        return Err(TuneError::NothingEncoded {
            max_length: options.max_length,
            dropped: train_encoding.dropped_rows,
            failed: train_encoding.failed.len(),
        });
    }
    let pad_id = base.pad_id();
    let train_batches = make_batches(train_encoded, options.batch_size, pad_id);
    let validation_batches = make_batches(validation_encoded, options.batch_size, pad_id);

    base.decoder.add_lora(&options.lora, options.seed)?;
    if let Some(checkpoint) = resume_from.as_ref().filter(|_| options.continue_dropout_masks) {
        // Validation runs without dropout: each training batch consumed so far drew exactly one mask per layer.
        let state = train::read_trainer_state(checkpoint)?;
        base.decoder.set_dropout_calls(state.batches_done() as u64);
    }
    let params = base.decoder.lora_vars();
    let trainable: usize = params.iter().map(|(_, var)| var.elem_count()).sum();
    let total = base.parameter_count() + trainable;
    on_event(Event::Prepared {
        split: &split,
        train: &train_encoding,
        validation: &validation_encoding,
        trainable,
        total,
    });

    let config = TrainConfig {
        epochs: options.epochs,
        lr: options.lr,
        warmup: options.warmup,
        grad_accum: options.grad_accum,
        eval_every: options.eval_every,
        save_every: options.save_every,
        early_stopping_patience: options.patience,
        seed: options.seed,
        output_dir: train_dir.clone(),
        stop: options.stop.clone(),
        ..TrainConfig::default()
    };
    let base = RefCell::new(base);
    let loss = |batch: &Batch, training: bool| {
        let mut base = base.borrow_mut();
        base.decoder.set_training(training);
        let (sum, count) = batch_loss_sum(&base.decoder, batch)?;
        Ok(((sum / count.max(1) as f64)?, count))
    };
    let report = train::train(
        &params,
        &train_batches,
        &validation_batches,
        &loss,
        &config,
        resume_from.as_deref(),
        &mut |progress| on_event(Event::Step(progress)),
    )?;
    let mut base = base.into_inner();
    base.decoder.set_training(false);

    let mut outcome = TuneOutcome {
        split,
        train_encoding,
        validation_encoding,
        run_dir: run_dir.clone(),
        stop_reason: report.stop_reason,
        steps: report.steps,
        total_steps: report.total_steps,
        checkpoint: report.last_checkpoint.clone(),
        trainable_parameters: trainable,
        total_parameters: total,
        entry: None,
        adapter_dir: None,
        card: None,
    };
    if report.stop_reason == StopReason::Interrupted {
        return Ok(outcome);
    }
    let saved_step = match &report.best_checkpoint {
        Some(best) => {
            train::load_params(best, &params)?;
            report.best_step
        }
        None => Some(report.steps),
    };
    let staged = run_dir.join("adapter");
    let base_path = options.base.canonicalize().unwrap_or_else(|_| options.base.clone());
    peft::save_adapter(&base.decoder, &staged, &base_path.display().to_string())?;
    let card = card(
        options,
        &base_path,
        &outcome,
        &report,
        saved_step,
        train_steps_warmup(&config, &report),
    )?;
    let entry = Registry::new(home).register(&staged, card)?;
    outcome.adapter_dir = Some(entry.dir.clone());
    outcome.card = Some(entry.card.clone());
    outcome.entry = Some(entry);
    Ok(outcome)
}

fn train_steps_warmup(config: &TrainConfig, report: &TrainReport) -> usize {
    config.warmup.steps(report.total_steps)
}

fn card(
    options: &TuneOptions,
    base_path: &Path,
    outcome: &TuneOutcome,
    report: &TrainReport,
    saved_step: Option<usize>,
    warmup_steps: usize,
) -> Result<Card, TuneError> {
    let split = &outcome.split;
    Ok(Card {
        name: options.name.clone(),
        version: 0,
        base_model: BaseModel {
            path: base_path.display().to_string(),
            sha256: registry::weights_sha256(base_path)?,
        },
        dataset: DatasetInfo {
            path: options.data.display().to_string(),
            sha256: split.input.checksum.clone(),
            train_rows: split.train.rows,
            validation_rows: split.validation.rows,
            test_rows: split.test.rows,
            test_sha256: data::rows_checksum(&data::Dataset::load(&split.test.path, true)?.rows),
            mix: options
                .mix
                .as_ref()
                .zip(split.mix.as_ref())
                .map(|(mix, report)| MixInfo {
                    path: mix.path.display().to_string(),
                    sha256: report.input.checksum.clone(),
                    ratio: report.ratio,
                    rows: report.mixed,
                }),
        },
        hyper_parameters: HyperParameters {
            r: options.lora.r,
            alpha: options.lora.alpha,
            dropout: options.lora.dropout,
            targets: options.lora.targets.clone(),
            lr: options.lr,
            epochs: options.epochs,
            batch_size: options.batch_size,
            grad_accum: options.grad_accum,
            max_length: options.max_length,
            warmup_steps,
            seed: options.seed,
        },
        metrics: Metrics {
            steps: report.steps,
            tokens: report.tokens,
            train_seconds: report.elapsed.as_secs_f64(),
            train_loss: report.last_loss,
            val_loss: report.best_val_loss.or(report.last_val_loss),
            saved_step,
            stop_reason: stop_reason_name(report.stop_reason).to_string(),
            trainable_parameters: outcome.trainable_parameters,
            total_parameters: outcome.total_parameters,
            evaluation: None,
        },
        created: knowhow_core::time::UtcDateTime::now().rfc3339(),
        knowhow_version: env!("CARGO_PKG_VERSION").to_string(),
    })
}

pub fn stop_reason_name(reason: StopReason) -> &'static str {
    match reason {
        StopReason::Completed => "completed",
        StopReason::EarlyStopped => "early_stopped",
        StopReason::Interrupted => "interrupted",
    }
}
