//! The training loop: named `Var`s, a loss closure over batches, AdamW with warm-up and cosine decay.
//!
//! The loop knows nothing about models or datasets. It walks `epochs` shuffled passes over the training batches,
//! groups `grad_accum` of them into one optimizer step, clips the gradient's global norm, evaluates on the
//! validation batches, stops early when validation stops improving, and checkpoints so a run can be resumed
//! exactly: the resumed run computes the same losses and parameters, bit for bit, as one that never stopped
//! (as long as the loss closure is deterministic — dropout must draw from a seeded source for that).
//!
//! Output directory layout:
//!
//! ```text
//! OUTPUT/metrics.jsonl                 one JSON line per step (MetricsLine), appended and flushed
//! OUTPUT/checkpoint-STEP/              the last `keep_checkpoints` checkpoints
//!        adapter_model.safetensors     the trainable parameters under their given (PEFT) names
//!        optimizer.safetensors         AdamW state
//!        trainer_state.json            TrainerState: where the loop stands, early-stopping state, the config
//! OUTPUT/best/                         the checkpoint with the lowest validation loss so far
//! ```
//!
//! Checkpoints are written into a temporary directory and renamed into place, so a crash never leaves a half one.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use candle_core::{DType, Tensor, Var};
use serde::{Deserialize, Serialize};

use crate::optim::{AdamW, AdamWConfig, OptimError};
use crate::schedule::{CosineSchedule, Warmup};

/// File names inside a checkpoint directory.
pub const PARAMS_FILE: &str = "adapter_model.safetensors";
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";
pub const STATE_FILE: &str = "trainer_state.json";
/// The metrics log inside the output directory.
pub const METRICS_FILE: &str = "metrics.jsonl";
/// The directory name of the best checkpoint inside the output directory.
pub const BEST_DIR: &str = "best";
const CHECKPOINT_PREFIX: &str = "checkpoint-";
const STATE_VERSION: u32 = 1;

/// Everything that shapes a run. Serialized into every checkpoint's `trainer_state.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TrainConfig {
    pub epochs: usize,
    /// The peak learning rate, reached at the end of the warm-up.
    pub lr: f64,
    pub warmup: Warmup,
    /// The floor of the cosine decay, as a fraction of `lr`.
    pub min_lr_ratio: f64,
    pub weight_decay: f64,
    pub betas: (f64, f64),
    pub eps: f64,
    /// Micro-batches per optimizer step. The loss is the token-weighted mean over all of them, so the step is the
    /// one a single batch holding them all would give.
    pub grad_accum: usize,
    /// Clip the global L2 norm of the gradient to this (torch's `clip_grad_norm_`); `None` does not clip.
    pub max_grad_norm: Option<f64>,
    /// Evaluate on the validation batches every this many steps (and after the last step); `None`: only at the end.
    pub eval_every: Option<usize>,
    /// Checkpoint every this many steps; a checkpoint is also written after the last step, on early stop and on
    /// interruption.
    pub save_every: Option<usize>,
    /// How many `checkpoint-STEP` directories to keep (`best/` is kept apart); `None` keeps all.
    pub keep_checkpoints: Option<usize>,
    /// Stop after this many evaluations in a row without a lower validation loss; `None` never stops early.
    pub early_stopping_patience: Option<usize>,
    /// Seeds the order of the batches in each epoch.
    pub seed: u64,
    pub output_dir: PathBuf,
    /// Set it (from a Ctrl-C handler, see [`stop_on_ctrl_c`], or a test) to finish the current step, write a
    /// checkpoint and return.
    #[serde(skip)]
    pub stop: Arc<AtomicBool>,
}

impl Default for TrainConfig {
    /// The common LoRA recipe: 3 epochs at 2e-4, 3% warm-up, cosine to 0, no weight decay, clip at 1.0.
    fn default() -> Self {
        Self {
            epochs: 3,
            lr: 2e-4,
            warmup: Warmup::Ratio(0.03),
            min_lr_ratio: 0.0,
            weight_decay: 0.0,
            betas: (0.9, 0.999),
            eps: 1e-8,
            grad_accum: 1,
            max_grad_norm: Some(1.0),
            eval_every: None,
            save_every: None,
            keep_checkpoints: Some(3),
            early_stopping_patience: None,
            seed: 42,
            output_dir: PathBuf::from("output"),
            stop: Arc::new(AtomicBool::new(false)),
        }
    }
}

impl TrainConfig {
    fn adamw(&self) -> AdamWConfig {
        AdamWConfig {
            betas: self.betas,
            eps: self.eps,
            weight_decay: self.weight_decay,
        }
    }
}

/// Where a run stands; written to `trainer_state.json` in every checkpoint.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TrainerState {
    pub version: u32,
    /// Optimizer steps done.
    pub step: usize,
    /// The epoch in progress (0-based).
    pub epoch: usize,
    /// Training batches of the current epoch already consumed.
    pub position_in_epoch: usize,
    /// The state of the shuffling generator at the start of the current epoch; the epoch's order is drawn from it.
    pub epoch_rng_state: u64,
    pub best_val_loss: Option<f64>,
    pub best_step: Option<usize>,
    pub evals_without_improvement: usize,
    /// Training time so far, over all the runs that led here.
    pub elapsed_s: f64,
    pub tokens: u64,
    pub num_train_batches: usize,
    pub total_steps: usize,
    pub config: TrainConfig,
}

/// Handed to the `on_progress` callback after every step.
#[derive(Clone, Debug)]
pub struct Progress {
    pub step: usize,
    pub total_steps: usize,
    /// Fractional epochs done (1.5 = half-way through the second epoch).
    pub epoch: f64,
    pub loss: f64,
    pub lr: f64,
    /// The gradient's global norm before clipping.
    pub grad_norm: f64,
    /// Average over this run so far.
    pub tokens_per_s: f64,
    pub val_loss: Option<f64>,
    pub best_val_loss: Option<f64>,
    pub elapsed: Duration,
    pub eta: Duration,
}

/// One line of `metrics.jsonl`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MetricsLine {
    pub step: usize,
    pub epoch: f64,
    pub loss: f64,
    pub lr: f64,
    pub grad_norm: f64,
    /// Tokens (as the loss closure counts them) in this step.
    pub tokens: usize,
    /// This step's tokens over this step's training time.
    pub tokens_per_s: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub val_loss: Option<f64>,
    pub elapsed_s: f64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    Completed,
    EarlyStopped,
    Interrupted,
}

#[derive(Clone, Debug)]
pub struct TrainReport {
    pub stop_reason: StopReason,
    /// Optimizer steps done, counting those before a resume.
    pub steps: usize,
    pub total_steps: usize,
    pub last_loss: Option<f64>,
    pub last_val_loss: Option<f64>,
    pub best_val_loss: Option<f64>,
    pub best_step: Option<usize>,
    pub best_checkpoint: Option<PathBuf>,
    pub last_checkpoint: Option<PathBuf>,
    /// Tokens trained on in this run (not counting those before a resume).
    pub tokens: u64,
    pub elapsed: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("training: {0}")]
    Candle(#[from] candle_core::Error),
    #[error(transparent)]
    Optim(#[from] OptimError),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: not a trainer state written by knowhow ({source}); resume from a checkpoint-STEP directory")]
    StateJson { path: PathBuf, source: serde_json::Error },
    #[error("training config: {0}")]
    Config(String),
    #[error("checkpoint {path}: {message}")]
    Checkpoint { path: PathBuf, message: String },
    #[error("cannot resume from {path}: {message}")]
    ResumeMismatch { path: PathBuf, message: String },
    #[error("step {step}: the loss is {loss}; lower the learning rate or check the data for empty or broken rows")]
    NonFiniteLoss { step: usize, loss: f64 },
    #[error("step {step}: none of its batches has a token that counts toward the loss; drop such rows from the data")]
    NoTokens { step: usize },
    #[error("installing the Ctrl-C handler: {0}")]
    CtrlC(#[from] ctrlc::Error),
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> TrainError + '_ {
    move |source| TrainError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The loss closure: a batch and whether this is training (`false` during validation) to the mean loss over the
/// batch's tokens (a scalar tensor) and the number of those tokens.
pub type LossFn<'a, B> = dyn Fn(&B, bool) -> candle_core::Result<(Tensor, usize)> + 'a;

/// Trains `params` (and nothing else) on `train_batches`.
///
/// `resume_from` names a checkpoint directory: parameters, optimizer state and position are restored from it and
/// the run goes on as if it had never stopped; metrics lines past the checkpoint's step are dropped from the log.
/// `on_progress` is called after every step; [`progress_bar`] makes one that drives an indicatif bar.
pub fn train<B>(
    params: &[(String, Var)],
    train_batches: &[B],
    val_batches: &[B],
    loss: &LossFn<'_, B>,
    config: &TrainConfig,
    resume_from: Option<&Path>,
    on_progress: &mut dyn FnMut(&Progress),
) -> Result<TrainReport, TrainError> {
    validate(params, train_batches, config)?;
    let num_batches = train_batches.len();
    let steps_per_epoch = num_batches.div_ceil(config.grad_accum);
    let total_steps = steps_per_epoch * config.epochs;
    let schedule = CosineSchedule {
        base_lr: config.lr,
        warmup_steps: config.warmup.steps(total_steps),
        total_steps,
        min_lr_ratio: config.min_lr_ratio,
    };
    let mut optimizer = AdamW::new(params, config.adamw())?;
    let output_dir = &config.output_dir;
    fs::create_dir_all(output_dir).map_err(io_error(output_dir))?;

    let mut state = match resume_from {
        Some(dir) => {
            let state = load_checkpoint(dir, params, &mut optimizer)?;
            check_resumable(dir, &state, num_batches, config)?;
            TrainerState {
                total_steps,
                config: config.clone(),
                ..state
            }
        }
        None => TrainerState {
            version: STATE_VERSION,
            step: 0,
            epoch: 0,
            position_in_epoch: 0,
            epoch_rng_state: config.seed,
            best_val_loss: None,
            best_step: None,
            evals_without_improvement: 0,
            elapsed_s: 0.0,
            tokens: 0,
            num_train_batches: num_batches,
            total_steps,
            config: config.clone(),
        },
    };
    let mut metrics = open_metrics_log(output_dir, resume_from.map(|_| state.step))?;

    let run_start = Instant::now();
    let elapsed_before = state.elapsed_s;
    let steps_before = state.step;
    let mut run_tokens: u64 = 0;
    let mut train_time = Duration::ZERO;
    let mut epoch_order: Option<(usize, Vec<usize>, u64)> = None;
    let mut report = TrainReport {
        stop_reason: StopReason::Completed,
        steps: state.step,
        total_steps,
        last_loss: None,
        last_val_loss: None,
        best_val_loss: state.best_val_loss,
        best_step: state.best_step,
        best_checkpoint: state.best_step.map(|_| output_dir.join(BEST_DIR)),
        last_checkpoint: None,
        tokens: 0,
        elapsed: Duration::ZERO,
    };

    while state.epoch < config.epochs {
        if epoch_order.as_ref().is_none_or(|(epoch, _, _)| *epoch != state.epoch) {
            let mut rng = SplitMix64(state.epoch_rng_state);
            let order = rng.permutation(num_batches);
            epoch_order = Some((state.epoch, order, rng.0));
        }
        let (_, order, next_epoch_rng_state) = epoch_order.as_ref().expect("the epoch order was just drawn");
        let start = state.position_in_epoch;
        let group: Vec<&B> = order[start..(start + config.grad_accum).min(num_batches)]
            .iter()
            .map(|&i| &train_batches[i])
            .collect();

        let step_start = Instant::now();
        let mut step = accumulate_gradients(params, &group, loss)?;
        if step.tokens == 0 {
            return Err(TrainError::NoTokens { step: state.step + 1 });
        }
        if !step.loss.is_finite() {
            return Err(TrainError::NonFiniteLoss {
                step: state.step + 1,
                loss: step.loss,
            });
        }
        let grad_norm = match config.max_grad_norm {
            Some(max_norm) => clip_grad_norm(&mut step.grads, max_norm)?,
            None => global_grad_norm(&step.grads)?,
        };
        let lr = schedule.lr(state.step);
        optimizer.step(&step.grads, lr)?;
        let step_time = step_start.elapsed();
        train_time += step_time;
        run_tokens += step.tokens as u64;

        state.step += 1;
        state.tokens += step.tokens as u64;
        state.position_in_epoch += group.len();
        if state.position_in_epoch >= num_batches {
            state.epoch += 1;
            state.position_in_epoch = 0;
            state.epoch_rng_state = *next_epoch_rng_state;
        }
        state.elapsed_s = elapsed_before + run_start.elapsed().as_secs_f64();
        report.steps = state.step;
        report.last_loss = Some(step.loss);

        let last_step = state.step == total_steps;
        let eval_due = config
            .eval_every
            .is_some_and(|every| every > 0 && state.step % every == 0)
            || last_step;
        let val_loss = if eval_due && !val_batches.is_empty() {
            Some(evaluate(val_batches, loss)?)
        } else {
            None
        };
        if let Some(val_loss) = val_loss {
            report.last_val_loss = Some(val_loss);
            if state.best_val_loss.is_none_or(|best| val_loss < best) {
                state.best_val_loss = Some(val_loss);
                state.best_step = Some(state.step);
                state.evals_without_improvement = 0;
                let best = save_checkpoint(output_dir, BEST_DIR, params, &optimizer, &state)?;
                report.best_checkpoint = Some(best);
            } else {
                state.evals_without_improvement += 1;
            }
            report.best_val_loss = state.best_val_loss;
            report.best_step = state.best_step;
        }

        let epoch = state.epoch as f64 + state.position_in_epoch as f64 / num_batches as f64;
        let line = MetricsLine {
            step: state.step,
            epoch,
            loss: step.loss,
            lr,
            grad_norm,
            tokens: step.tokens,
            tokens_per_s: step.tokens as f64 / step_time.as_secs_f64().max(1e-9),
            val_loss,
            elapsed_s: state.elapsed_s,
        };
        append_metrics(&mut metrics, &output_dir.join(METRICS_FILE), &line)?;
        let steps_this_run = state.step - steps_before;
        let eta = run_start
            .elapsed()
            .mul_f64((total_steps - state.step) as f64 / steps_this_run as f64);
        on_progress(&Progress {
            step: state.step,
            total_steps,
            epoch,
            loss: step.loss,
            lr,
            grad_norm,
            tokens_per_s: run_tokens as f64 / train_time.as_secs_f64().max(1e-9),
            val_loss,
            best_val_loss: state.best_val_loss,
            elapsed: Duration::from_secs_f64(state.elapsed_s),
            eta,
        });

        let early_stop = config
            .early_stopping_patience
            .is_some_and(|patience| state.evals_without_improvement >= patience);
        let interrupted = config.stop.load(Ordering::SeqCst);
        let save_due = config
            .save_every
            .is_some_and(|every| every > 0 && state.step % every == 0);
        if save_due || last_step || early_stop || interrupted {
            let name = format!("{CHECKPOINT_PREFIX}{}", state.step);
            report.last_checkpoint = Some(save_checkpoint(output_dir, &name, params, &optimizer, &state)?);
            prune_checkpoints(output_dir, config.keep_checkpoints, state.step)?;
        }
        if early_stop {
            report.stop_reason = StopReason::EarlyStopped;
            break;
        }
        if interrupted && !last_step {
            report.stop_reason = StopReason::Interrupted;
            break;
        }
    }
    report.tokens = run_tokens;
    report.elapsed = run_start.elapsed();
    Ok(report)
}

fn validate<B>(params: &[(String, Var)], train_batches: &[B], config: &TrainConfig) -> Result<(), TrainError> {
    let problem = if params.is_empty() {
        Some("no trainable parameters were given".to_string())
    } else if train_batches.is_empty() {
        Some("there are no training batches".to_string())
    } else if config.epochs == 0 {
        Some("epochs must be at least 1".to_string())
    } else if config.grad_accum == 0 {
        Some("grad_accum must be at least 1".to_string())
    } else if !(config.lr.is_finite() && config.lr >= 0.0) {
        Some(format!("lr must be a non-negative number, not {}", config.lr))
    } else if config.keep_checkpoints == Some(0) {
        Some("keep_checkpoints must be at least 1 (or unset to keep all)".to_string())
    } else {
        let mut seen = HashSet::new();
        params
            .iter()
            .find(|(name, _)| !seen.insert(name.as_str()))
            .map(|(name, _)| format!("the parameter name `{name}` is given twice; checkpoints key parameters by name"))
    };
    match problem {
        Some(message) => Err(TrainError::Config(message)),
        None => Ok(()),
    }
}

fn check_resumable(
    dir: &Path,
    state: &TrainerState,
    num_batches: usize,
    config: &TrainConfig,
) -> Result<(), TrainError> {
    let mismatch = |message: String| {
        Err(TrainError::ResumeMismatch {
            path: dir.to_path_buf(),
            message,
        })
    };
    if state.num_train_batches != num_batches {
        return mismatch(format!(
            "it was trained on {} batches, this run has {num_batches}; resume with the same data and batch size",
            state.num_train_batches
        ));
    }
    if state.config.grad_accum != config.grad_accum {
        return mismatch(format!(
            "it used grad_accum {}, this run {}; resume with the same value",
            state.config.grad_accum, config.grad_accum
        ));
    }
    Ok(())
}

/// The gradients of one optimizer step, one slot per parameter (`None`: the loss does not depend on it).
pub struct AccumulatedStep {
    pub grads: Vec<Option<Tensor>>,
    /// The mean loss over all the tokens of the micro-batches.
    pub loss: f64,
    pub tokens: usize,
}

/// Forward and backward over `micro_batches`, one at a time, summing the gradients of `params`.
///
/// Each micro-batch's mean loss is weighted by its token count and the sum divided by the total, so loss and
/// gradients are those of the token mean over the union — what one batch holding all of them would give.
/// Micro-batches with no tokens are skipped.
pub fn accumulate_gradients<B>(
    params: &[(String, Var)],
    micro_batches: &[&B],
    loss: &LossFn<'_, B>,
) -> Result<AccumulatedStep, TrainError> {
    let mut grads: Vec<Option<Tensor>> = vec![None; params.len()];
    let mut weighted_loss = 0.0f64;
    let mut tokens = 0usize;
    for batch in micro_batches {
        let (batch_loss, batch_tokens) = loss(batch, true)?;
        if batch_tokens == 0 {
            continue;
        }
        let batch_loss = batch_loss.to_dtype(DType::F32)?;
        weighted_loss += batch_loss.to_scalar::<f32>()? as f64 * batch_tokens as f64;
        tokens += batch_tokens;
        let store = batch_loss.affine(batch_tokens as f64, 0.0)?.backward()?;
        for (slot, (_, var)) in grads.iter_mut().zip(params) {
            if let Some(grad) = store.get(var.as_tensor()) {
                *slot = Some(match slot.take() {
                    Some(sum) => (sum + grad)?,
                    None => grad.clone(),
                });
            }
        }
    }
    if tokens > 0 {
        let scale = 1.0 / tokens as f64;
        for grad in grads.iter_mut().flatten() {
            *grad = grad.affine(scale, 0.0)?;
        }
    }
    let loss = if tokens > 0 {
        weighted_loss / tokens as f64
    } else {
        f64::NAN
    };
    Ok(AccumulatedStep { grads, loss, tokens })
}

/// The L2 norm of all the gradients taken as one vector, computed as torch does: the norm of the per-tensor norms,
/// in f32.
pub fn global_grad_norm(grads: &[Option<Tensor>]) -> Result<f64, TrainError> {
    let norms = grads
        .iter()
        .flatten()
        .map(|grad| grad.to_dtype(DType::F32)?.sqr()?.sum_all()?.sqrt())
        .collect::<candle_core::Result<Vec<_>>>()?;
    if norms.is_empty() {
        return Ok(0.0);
    }
    let total = Tensor::stack(&norms, 0)?.sqr()?.sum_all()?.sqrt()?.to_scalar::<f32>()?;
    Ok(total as f64)
}

/// torch's `clip_grad_norm_`: scales all gradients by `max_norm / (norm + 1e-6)` when that is below 1.
/// Returns the norm before clipping.
pub fn clip_grad_norm(grads: &mut [Option<Tensor>], max_norm: f64) -> Result<f64, TrainError> {
    let norm = global_grad_norm(grads)?;
    let coefficient = max_norm / (norm + 1e-6);
    if coefficient < 1.0 {
        for grad in grads.iter_mut().flatten() {
            *grad = grad.affine(coefficient, 0.0)?;
        }
    }
    Ok(norm)
}

/// The token-weighted mean loss over `batches`, with the closure told it is not training.
pub fn evaluate<B>(batches: &[B], loss: &LossFn<'_, B>) -> Result<f64, TrainError> {
    let mut weighted = 0.0f64;
    let mut tokens = 0usize;
    for batch in batches {
        let (batch_loss, batch_tokens) = loss(batch, false)?;
        if batch_tokens == 0 {
            continue;
        }
        weighted += batch_loss.to_dtype(DType::F32)?.to_scalar::<f32>()? as f64 * batch_tokens as f64;
        tokens += batch_tokens;
    }
    Ok(if tokens > 0 { weighted / tokens as f64 } else { f64::NAN })
}

/// The shuffling generator (SplitMix64): its whole state is one `u64`, which checkpoints record.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A uniformly shuffled `0..n` (Fisher–Yates; Lemire's multiply for the bounded draw).
    fn permutation(&mut self, n: usize) -> Vec<usize> {
        let mut order: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            let j = ((self.next_u64() as u128 * (i as u128 + 1)) >> 64) as usize;
            order.swap(i, j);
        }
        order
    }
}

/// Writes a checkpoint as `output_dir/name`, replacing one of that name, through a temporary directory.
fn save_checkpoint(
    output_dir: &Path,
    name: &str,
    params: &[(String, Var)],
    optimizer: &AdamW,
    state: &TrainerState,
) -> Result<PathBuf, TrainError> {
    let staging = output_dir.join(format!(".tmp-{name}"));
    if staging.exists() {
        fs::remove_dir_all(&staging).map_err(io_error(&staging))?;
    }
    fs::create_dir_all(&staging).map_err(io_error(&staging))?;
    let tensors: std::collections::HashMap<&str, Tensor> = params
        .iter()
        .map(|(name, var)| (name.as_str(), var.as_tensor().clone()))
        .collect();
    candle_core::safetensors::save(&tensors, staging.join(PARAMS_FILE))?;
    optimizer.save(&staging.join(OPTIMIZER_FILE))?;
    let state_json = serde_json::to_vec_pretty(state).map_err(|source| TrainError::StateJson {
        path: staging.join(STATE_FILE),
        source,
    })?;
    let state_path = staging.join(STATE_FILE);
    fs::write(&state_path, state_json).map_err(io_error(&state_path))?;
    for file in [PARAMS_FILE, OPTIMIZER_FILE, STATE_FILE] {
        sync_path(&staging.join(file))?;
    }
    sync_path(&staging)?;

    let target = output_dir.join(name);
    if target.exists() {
        let old = output_dir.join(format!(".old-{name}"));
        if old.exists() {
            fs::remove_dir_all(&old).map_err(io_error(&old))?;
        }
        fs::rename(&target, &old).map_err(io_error(&target))?;
        fs::rename(&staging, &target).map_err(io_error(&target))?;
        fs::remove_dir_all(&old).map_err(io_error(&old))?;
    } else {
        fs::rename(&staging, &target).map_err(io_error(&target))?;
    }
    sync_path(output_dir)?;
    Ok(target)
}

fn sync_path(path: &Path) -> Result<(), TrainError> {
    File::open(path)
        .and_then(|file| file.sync_all())
        .map_err(io_error(path))
}

/// The `checkpoint-STEP` directories in `output_dir`, oldest first.
pub fn list_checkpoints(output_dir: &Path) -> Result<Vec<(usize, PathBuf)>, TrainError> {
    let mut found = Vec::new();
    for entry in fs::read_dir(output_dir).map_err(io_error(output_dir))? {
        let entry = entry.map_err(io_error(output_dir))?;
        let name = entry.file_name();
        let step = name
            .to_str()
            .and_then(|name| name.strip_prefix(CHECKPOINT_PREFIX)?.parse::<usize>().ok());
        if let Some(step) = step {
            found.push((step, entry.path()));
        }
    }
    found.sort();
    Ok(found)
}

/// The newest complete checkpoint in `output_dir`, for resuming a run that stopped.
pub fn latest_checkpoint(output_dir: &Path) -> Result<Option<PathBuf>, TrainError> {
    Ok(list_checkpoints(output_dir)?
        .into_iter()
        .rev()
        .map(|(_, path)| path)
        .find(|path| path.join(STATE_FILE).is_file()))
}

fn prune_checkpoints(output_dir: &Path, keep: Option<usize>, current_step: usize) -> Result<(), TrainError> {
    let Some(keep) = keep else { return Ok(()) };
    let checkpoints = list_checkpoints(output_dir)?;
    let excess = checkpoints.len().saturating_sub(keep);
    for (step, path) in checkpoints.into_iter().take(excess) {
        if step != current_step {
            fs::remove_dir_all(&path).map_err(io_error(&path))?;
        }
    }
    Ok(())
}

/// Loads the parameters saved in `checkpoint_dir` into `params` (every name must be there, with its shape).
pub fn load_params(checkpoint_dir: &Path, params: &[(String, Var)]) -> Result<(), TrainError> {
    let path = checkpoint_dir.join(PARAMS_FILE);
    if !path.is_file() {
        return Err(TrainError::Checkpoint {
            path: checkpoint_dir.to_path_buf(),
            message: format!("no {PARAMS_FILE}; name a checkpoint-STEP or best directory"),
        });
    }
    let saved = candle_core::safetensors::load(&path, &candle_core::Device::Cpu)?;
    for (name, var) in params {
        let tensor = saved.get(name).ok_or_else(|| TrainError::Checkpoint {
            path: path.clone(),
            message: format!("no tensor `{name}`; was it saved for the same model and adapter settings?"),
        })?;
        if tensor.dims() != var.dims() {
            return Err(TrainError::Checkpoint {
                path: path.clone(),
                message: format!(
                    "`{name}` has shape {:?}, the parameter has {:?}",
                    tensor.dims(),
                    var.dims()
                ),
            });
        }
        var.set(&tensor.to_dtype(var.dtype())?.to_device(var.device())?)?;
    }
    Ok(())
}

/// Reads `trainer_state.json` of a checkpoint.
pub fn read_trainer_state(checkpoint_dir: &Path) -> Result<TrainerState, TrainError> {
    let path = checkpoint_dir.join(STATE_FILE);
    let bytes = fs::read(&path).map_err(io_error(&path))?;
    serde_json::from_slice(&bytes).map_err(|source| TrainError::StateJson { path, source })
}

fn load_checkpoint(dir: &Path, params: &[(String, Var)], optimizer: &mut AdamW) -> Result<TrainerState, TrainError> {
    let state = read_trainer_state(dir)?;
    load_params(dir, params)?;
    optimizer.load(&dir.join(OPTIMIZER_FILE))?;
    Ok(state)
}

/// Opens the metrics log for appending. A fresh run (`resumed_at` = `None`) starts it empty; a resumed one keeps
/// the lines up to the checkpoint's step, dropping those of steps that will be trained again.
fn open_metrics_log(output_dir: &Path, resumed_at: Option<usize>) -> Result<File, TrainError> {
    let path = output_dir.join(METRICS_FILE);
    match resumed_at {
        Some(step) if path.exists() => {
            let reader = BufReader::new(File::open(&path).map_err(io_error(&path))?);
            let mut kept = String::new();
            for line in reader.lines() {
                let line = line.map_err(io_error(&path))?;
                let line_step = serde_json::from_str::<MetricsLine>(&line).map(|metrics| metrics.step);
                if line_step.is_ok_and(|line_step| line_step <= step) {
                    kept.push_str(&line);
                    kept.push('\n');
                }
            }
            let staging = output_dir.join(format!(".tmp-{METRICS_FILE}"));
            fs::write(&staging, kept).map_err(io_error(&staging))?;
            fs::rename(&staging, &path).map_err(io_error(&path))?;
        }
        _ => {
            File::create(&path).map_err(io_error(&path))?;
        }
    }
    OpenOptions::new().append(true).open(&path).map_err(io_error(&path))
}

fn append_metrics(file: &mut File, path: &Path, line: &MetricsLine) -> Result<(), TrainError> {
    let mut text = serde_json::to_string(line).map_err(|source| TrainError::StateJson {
        path: path.to_path_buf(),
        source,
    })?;
    text.push('\n');
    file.write_all(text.as_bytes())
        .and_then(|()| file.flush())
        .map_err(io_error(path))
}

/// Sets `stop` on the first Ctrl-C, so [`train`] finishes its step, checkpoints and returns; a second Ctrl-C exits
/// at once (status 130). The handler is process-wide and can be installed once.
pub fn stop_on_ctrl_c(stop: Arc<AtomicBool>) -> Result<(), TrainError> {
    ctrlc::set_handler(move || {
        if stop.swap(true, Ordering::SeqCst) {
            std::process::exit(130);
        }
        eprintln!("stopping after this step and saving a checkpoint (Ctrl-C again to quit now)");
    })?;
    Ok(())
}

/// An `on_progress` callback that draws on `bar`: steps done, loss, learning rate, tokens/s, validation loss and
/// the ETA computed from this run's pace (the bar's own would count steps done before a resume).
pub fn progress_bar(bar: indicatif::ProgressBar) -> impl FnMut(&Progress) {
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
