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
//!
//! The loop draws nothing on a terminal and installs no signal handler: the caller watches [`Progress`] through
//! the `on_progress` callback and asks for a stop through [`TrainConfig::stop`] (from a Ctrl-C handler, a time
//! limit, a test).
//!
//! - [`run`](mod@run): the loop itself, one optimizer step at a time ([`train()`]).
//! - [`gradients`]: accumulation over micro-batches, the global norm and its clipping, validation loss.
//! - [`checkpoint`]: [`TrainerState`], atomic saves, pruning, loading and the checks before a resume.
//! - [`metrics`]: the `metrics.jsonl` log ([`MetricsLine`]).

pub mod checkpoint;
pub mod gradients;
pub mod metrics;
pub mod run;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use candle_core::{Tensor, Var};
use serde::{Deserialize, Serialize};

use crate::optim::{AdamWConfig, OptimError};
use crate::schedule::Warmup;

pub use checkpoint::{
    latest_checkpoint, list_checkpoints, load_params, read_trainer_state, TrainerState, BEST_DIR, OPTIMIZER_FILE,
    PARAMS_FILE, STATE_FILE,
};
pub use gradients::{accumulate_gradients, clip_grad_norm, evaluate, global_grad_norm, AccumulatedStep};
pub use metrics::{MetricsLine, METRICS_FILE};
pub use run::train;

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
    /// The stop request: set it (from a Ctrl-C handler, another thread, the `on_progress` callback) and [`train()`]
    /// finishes the current step, writes a checkpoint and returns [`StopReason::Interrupted`]. The flag is read
    /// once per step, after the step's progress is reported.
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

    /// Refuses what cannot be trained, saying why, before anything is written.
    fn validate(&self, params: &[(String, Var)], num_train_batches: usize) -> Result<(), TrainError> {
        let problem = if params.is_empty() {
            Some("no trainable parameters were given".to_string())
        } else if num_train_batches == 0 {
            Some("there are no training batches".to_string())
        } else if self.epochs == 0 {
            Some("epochs must be at least 1".to_string())
        } else if self.grad_accum == 0 {
            Some("grad_accum must be at least 1".to_string())
        } else if !(self.lr.is_finite() && self.lr >= 0.0) {
            Some(format!("lr must be a non-negative number, not {}", self.lr))
        } else if self.keep_checkpoints == Some(0) {
            Some("keep_checkpoints must be at least 1 (or unset to keep all)".to_string())
        } else {
            let mut seen = HashSet::new();
            params
                .iter()
                .find(|(name, _)| !seen.insert(name.as_str()))
                .map(|(name, _)| {
                    format!("the parameter name `{name}` is given twice; checkpoints key parameters by name")
                })
        };
        match problem {
            Some(message) => Err(TrainError::Config(message)),
            None => Ok(()),
        }
    }
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
    /// The time left at this run's pace (steps done before a resume do not count toward the pace).
    pub eta: Duration,
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
