//! Checkpoints: what a `checkpoint-STEP` (or `best`) directory holds, how it is written without ever leaving a half
//! one, which are kept, and how a run is restored from one.

use std::collections::HashMap;
use std::fs::{self, File};
use std::path::{Path, PathBuf};

use candle_core::{Tensor, Var};
use serde::{Deserialize, Serialize};

use super::{io_error, TrainConfig, TrainError};
use crate::optim::AdamW;

/// File names inside a checkpoint directory.
pub const PARAMS_FILE: &str = "adapter_model.safetensors";
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";
pub const STATE_FILE: &str = "trainer_state.json";
/// The directory name of the best checkpoint inside the output directory.
pub const BEST_DIR: &str = "best";
const CHECKPOINT_PREFIX: &str = "checkpoint-";
const STATE_VERSION: u32 = 1;

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

impl TrainerState {
    /// The state before the first step of a new run.
    pub(super) fn fresh(num_train_batches: usize, total_steps: usize, config: &TrainConfig) -> TrainerState {
        TrainerState {
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
            num_train_batches,
            total_steps,
            config: config.clone(),
        }
    }

    /// Training batches consumed since the run began, over all epochs.
    pub fn batches_done(&self) -> usize {
        self.epoch * self.num_train_batches + self.position_in_epoch
    }
}

/// The name of the periodic checkpoint written after `step`.
pub(super) fn checkpoint_name(step: usize) -> String {
    format!("{CHECKPOINT_PREFIX}{step}")
}

/// Writes a checkpoint as `output_dir/name`, replacing one of that name, through a temporary directory.
pub(super) fn save_checkpoint(
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
    let tensors: HashMap<&str, Tensor> = params
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

/// Removes the oldest `checkpoint-STEP` directories beyond `keep`, never the one of `current_step`.
pub(super) fn prune_checkpoints(output_dir: &Path, keep: Option<usize>, current_step: usize) -> Result<(), TrainError> {
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

/// Restores parameters and optimizer from the checkpoint in `dir` and returns the state to go on from: the saved
/// position under this run's `config` and `total_steps`. Refuses a checkpoint of a run over other batches, whose
/// position would mean something else here.
pub(super) fn resume(
    dir: &Path,
    params: &[(String, Var)],
    optimizer: &mut AdamW,
    num_train_batches: usize,
    total_steps: usize,
    config: &TrainConfig,
) -> Result<TrainerState, TrainError> {
    let state = read_trainer_state(dir)?;
    load_params(dir, params)?;
    optimizer.load(&dir.join(OPTIMIZER_FILE))?;
    check_resumable(dir, &state, num_train_batches, config)?;
    Ok(TrainerState {
        total_steps,
        config: config.clone(),
        ..state
    })
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
