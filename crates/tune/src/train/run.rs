//! One training run: [`train()`], and the steps its loop takes for each optimizer step — pick the micro-batches,
//! step, validate, record, checkpoint, decide whether to stop.

use std::fs;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use candle_core::Var;

use super::checkpoint::{self, TrainerState, BEST_DIR};
use super::gradients::{accumulate_gradients, clip_grad_norm, evaluate, global_grad_norm};
use super::metrics::{MetricsLine, MetricsLog};
use super::{io_error, LossFn, Progress, StopReason, TrainConfig, TrainError, TrainReport};
use crate::optim::AdamW;
use crate::schedule::CosineSchedule;

/// Trains `params` (and nothing else) on `train_batches`.
///
/// `resume_from` names a checkpoint directory: parameters, optimizer state and position are restored from it and
/// the run goes on as if it had never stopped; metrics lines past the checkpoint's step are dropped from the log.
/// `on_progress` is called after every step (the `knowhow` binary draws its progress bar from it); setting
/// [`TrainConfig::stop`] ends the run after the current step, with a checkpoint.
pub fn train<B>(
    params: &[(String, Var)],
    train_batches: &[B],
    val_batches: &[B],
    loss: &LossFn<'_, B>,
    config: &TrainConfig,
    resume_from: Option<&Path>,
    on_progress: &mut dyn FnMut(&Progress),
) -> Result<TrainReport, TrainError> {
    config.validate(params, train_batches.len())?;
    let mut run = Run::start(params, train_batches.len(), config, resume_from)?;
    while run.state.epoch < config.epochs {
        let group = run.next_group(train_batches);
        let step = run.optimizer_step(&group, loss)?;
        let val_loss = run.validate_if_due(val_batches, loss)?;
        run.record(&step, val_loss, on_progress)?;
        let stop = run.stop_reason();
        run.checkpoint_if_due(stop.is_some())?;
        if let Some(reason) = stop {
            run.report.stop_reason = reason;
            break;
        }
    }
    Ok(run.finish())
}

/// A run in progress: the loop's state between steps.
struct Run<'a> {
    params: &'a [(String, Var)],
    config: &'a TrainConfig,
    num_batches: usize,
    schedule: CosineSchedule,
    optimizer: AdamW,
    /// What checkpoints record.
    state: TrainerState,
    metrics: MetricsLog,
    /// The current epoch's order, drawn when the epoch starts.
    order: Option<EpochOrder>,
    pace: Pace,
    report: TrainReport,
}

/// This run's time and throughput, apart from what the runs before a resume did.
struct Pace {
    started: Instant,
    elapsed_before_s: f64,
    steps_before: usize,
    tokens: u64,
    /// Time spent in optimizer steps (validation and checkpoints excluded), for tokens per second.
    train_time: Duration,
}

/// What one optimizer step did.
struct StepStats {
    loss: f64,
    tokens: usize,
    lr: f64,
    /// Before clipping.
    grad_norm: f64,
    time: Duration,
}

impl<'a> Run<'a> {
    /// Sets up the schedule and optimizer, the output directory and the metrics log, from scratch or from the
    /// checkpoint in `resume_from`.
    fn start(
        params: &'a [(String, Var)],
        num_batches: usize,
        config: &'a TrainConfig,
        resume_from: Option<&Path>,
    ) -> Result<Run<'a>, TrainError> {
        let total_steps = num_batches.div_ceil(config.grad_accum) * config.epochs;
        let schedule = CosineSchedule {
            base_lr: config.lr,
            warmup_steps: config.warmup.steps(total_steps),
            total_steps,
            min_lr_ratio: config.min_lr_ratio,
        };
        let mut optimizer = AdamW::new(params, config.adamw())?;
        let output_dir = &config.output_dir;
        fs::create_dir_all(output_dir).map_err(io_error(output_dir))?;
        let state = match resume_from {
            Some(dir) => checkpoint::resume(dir, params, &mut optimizer, num_batches, total_steps, config)?,
            None => TrainerState::fresh(num_batches, total_steps, config),
        };
        let metrics = MetricsLog::open(output_dir, resume_from.map(|_| state.step))?;
        let report = TrainReport {
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
        let pace = Pace {
            started: Instant::now(),
            elapsed_before_s: state.elapsed_s,
            steps_before: state.step,
            tokens: 0,
            train_time: Duration::ZERO,
        };
        Ok(Run {
            params,
            config,
            num_batches,
            schedule,
            optimizer,
            state,
            metrics,
            order: None,
            pace,
            report,
        })
    }

    fn last_step(&self) -> bool {
        self.state.step == self.state.total_steps
    }

    /// The micro-batches of the next step: the next `grad_accum` of the epoch's shuffled order (fewer at its end).
    fn next_group<'b, B>(&mut self, train_batches: &'b [B]) -> Vec<&'b B> {
        let epoch = self.state.epoch;
        if self.order.as_ref().is_none_or(|order| order.epoch != epoch) {
            self.order = Some(EpochOrder::draw(epoch, self.state.epoch_rng_state, self.num_batches));
        }
        let order = &self.order.as_ref().expect("the epoch order was just drawn").order;
        let start = self.state.position_in_epoch;
        order[start..(start + self.config.grad_accum).min(self.num_batches)]
            .iter()
            .map(|&i| &train_batches[i])
            .collect()
    }

    /// Forward and backward over `group`, clipping, one AdamW step at the scheduled rate; then moves the position
    /// past `group`. A step with no tokens or a non-finite loss is an error: going on would train on nothing or
    /// spread NaNs into every parameter.
    fn optimizer_step<B>(&mut self, group: &[&B], loss: &LossFn<'_, B>) -> Result<StepStats, TrainError> {
        let started = Instant::now();
        let mut step = accumulate_gradients(self.params, group, loss)?;
        if step.tokens == 0 {
            return Err(TrainError::NoTokens {
                step: self.state.step + 1,
            });
        }
        if !step.loss.is_finite() {
            return Err(TrainError::NonFiniteLoss {
                step: self.state.step + 1,
                loss: step.loss,
            });
        }
        let grad_norm = match self.config.max_grad_norm {
            Some(max_norm) => clip_grad_norm(&mut step.grads, max_norm)?,
            None => global_grad_norm(&step.grads)?,
        };
        let lr = self.schedule.lr(self.state.step);
        self.optimizer.step(&step.grads, lr)?;
        let stats = StepStats {
            loss: step.loss,
            tokens: step.tokens,
            lr,
            grad_norm,
            time: started.elapsed(),
        };
        self.advance(group.len(), &stats);
        Ok(stats)
    }

    /// Counts the step and moves the position past its `batches`, into the next epoch at the end of one.
    fn advance(&mut self, batches: usize, stats: &StepStats) {
        self.pace.train_time += stats.time;
        self.pace.tokens += stats.tokens as u64;
        let state = &mut self.state;
        state.step += 1;
        state.tokens += stats.tokens as u64;
        state.position_in_epoch += batches;
        if state.position_in_epoch >= self.num_batches {
            state.epoch += 1;
            state.position_in_epoch = 0;
            state.epoch_rng_state = self
                .order
                .as_ref()
                .expect("a step draws its epoch's order")
                .next_rng_state;
        }
        state.elapsed_s = self.pace.elapsed_before_s + self.pace.started.elapsed().as_secs_f64();
        self.report.steps = state.step;
        self.report.last_loss = Some(stats.loss);
    }

    /// The validation loss when one is due (every `eval_every` steps and after the last step). A new best is
    /// saved as `best/`; anything else counts toward early stopping.
    fn validate_if_due<B>(&mut self, val_batches: &[B], loss: &LossFn<'_, B>) -> Result<Option<f64>, TrainError> {
        let due = self
            .config
            .eval_every
            .is_some_and(|every| every > 0 && self.state.step % every == 0)
            || self.last_step();
        if !due || val_batches.is_empty() {
            return Ok(None);
        }
        let val_loss = evaluate(val_batches, loss)?;
        self.report.last_val_loss = Some(val_loss);
        let state = &mut self.state;
        if state.best_val_loss.is_none_or(|best| val_loss < best) {
            state.best_val_loss = Some(val_loss);
            state.best_step = Some(state.step);
            state.evals_without_improvement = 0;
            let best = checkpoint::save_checkpoint(
                &self.config.output_dir,
                BEST_DIR,
                self.params,
                &self.optimizer,
                &self.state,
            )?;
            self.report.best_checkpoint = Some(best);
        } else {
            state.evals_without_improvement += 1;
        }
        self.report.best_val_loss = self.state.best_val_loss;
        self.report.best_step = self.state.best_step;
        Ok(Some(val_loss))
    }

    /// Appends the step's line to the metrics log and hands its [`Progress`] to `on_progress`.
    fn record(
        &mut self,
        step: &StepStats,
        val_loss: Option<f64>,
        on_progress: &mut dyn FnMut(&Progress),
    ) -> Result<(), TrainError> {
        let state = &self.state;
        let epoch = state.epoch as f64 + state.position_in_epoch as f64 / self.num_batches as f64;
        self.metrics.append(&MetricsLine {
            step: state.step,
            epoch,
            loss: step.loss,
            lr: step.lr,
            grad_norm: step.grad_norm,
            tokens: step.tokens,
            tokens_per_s: step.tokens as f64 / step.time.as_secs_f64().max(1e-9),
            val_loss,
            elapsed_s: state.elapsed_s,
        })?;
        let steps_this_run = state.step - self.pace.steps_before;
        let eta = self
            .pace
            .started
            .elapsed()
            .mul_f64((state.total_steps - state.step) as f64 / steps_this_run as f64);
        on_progress(&Progress {
            step: state.step,
            total_steps: state.total_steps,
            epoch,
            loss: step.loss,
            lr: step.lr,
            grad_norm: step.grad_norm,
            tokens_per_s: self.pace.tokens as f64 / self.pace.train_time.as_secs_f64().max(1e-9),
            val_loss,
            best_val_loss: state.best_val_loss,
            elapsed: Duration::from_secs_f64(state.elapsed_s),
            eta,
        });
        Ok(())
    }

    /// Why the run ends after this step, if it does: patience used up, or a stop requested before the last step
    /// (the last step completes the run whatever was asked).
    fn stop_reason(&self) -> Option<StopReason> {
        let early_stop = self
            .config
            .early_stopping_patience
            .is_some_and(|patience| self.state.evals_without_improvement >= patience);
        if early_stop {
            Some(StopReason::EarlyStopped)
        } else if self.config.stop.load(Ordering::SeqCst) && !self.last_step() {
            Some(StopReason::Interrupted)
        } else {
            None
        }
    }

    /// Writes `checkpoint-STEP` when one is due — every `save_every` steps, after the last step, and when the run
    /// is `stopping` — and prunes the old ones.
    fn checkpoint_if_due(&mut self, stopping: bool) -> Result<(), TrainError> {
        let step = self.state.step;
        let save_due = self
            .config
            .save_every
            .is_some_and(|every| every > 0 && step % every == 0);
        if !(save_due || self.last_step() || stopping) {
            return Ok(());
        }
        let output_dir = &self.config.output_dir;
        let name = checkpoint::checkpoint_name(step);
        let saved = checkpoint::save_checkpoint(output_dir, &name, self.params, &self.optimizer, &self.state)?;
        self.report.last_checkpoint = Some(saved);
        checkpoint::prune_checkpoints(output_dir, self.config.keep_checkpoints, step)
    }

    fn finish(self) -> TrainReport {
        TrainReport {
            tokens: self.pace.tokens,
            elapsed: self.pace.started.elapsed(),
            ..self.report
        }
    }
}

/// The shuffled order of one epoch's batches.
struct EpochOrder {
    epoch: usize,
    order: Vec<usize>,
    /// The generator's state after drawing `order`: the next epoch's `epoch_rng_state`.
    next_rng_state: u64,
}

impl EpochOrder {
    fn draw(epoch: usize, rng_state: u64, num_batches: usize) -> EpochOrder {
        let mut rng = SplitMix64(rng_state);
        let order = rng.permutation(num_batches);
        EpochOrder {
            epoch,
            order,
            next_rng_state: rng.0,
        }
    }
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
