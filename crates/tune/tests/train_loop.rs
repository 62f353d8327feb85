//! The training loop on a small real problem: linear regression `y = x·w + b` with candle `Var`s, batches of
//! different sizes, the mean squared error as the loss and rows as the "tokens".
//!
//! ```text
//! cargo test -p knowhow-tune --test train_loop
//! ```

use std::path::Path;
use std::sync::atomic::Ordering;

use candle_core::{DType, Device, Tensor, Var};
use knowhow_tune::schedule::{cosine_with_warmup, Warmup};
use knowhow_tune::train::{
    accumulate_gradients, clip_grad_norm, evaluate, global_grad_norm, latest_checkpoint, list_checkpoints, load_params,
    read_trainer_state, train, MetricsLine, Progress, StopReason, TrainConfig, TrainError, BEST_DIR, METRICS_FILE,
    OPTIMIZER_FILE, PARAMS_FILE, STATE_FILE,
};

struct Batch {
    x: Tensor,
    y: Tensor,
}

/// Batches of the given sizes; the features are a fixed pseudo-random pattern, the targets `x·w_true + 0.5`.
fn batches(sizes: &[usize], w_true: [f32; 3], offset: usize) -> Vec<Batch> {
    let mut row = offset;
    sizes
        .iter()
        .map(|&size| {
            let mut x = Vec::with_capacity(size * 3);
            let mut y = Vec::with_capacity(size);
            for _ in 0..size {
                let features: Vec<f32> = (0..3)
                    .map(|j| ((row * 7 + j * 5 + row * row * 3) % 13) as f32 / 6.0 - 1.0)
                    .collect();
                y.push(features.iter().zip(w_true).map(|(f, w)| f * w).sum::<f32>() + 0.5);
                x.extend(features);
                row += 1;
            }
            Batch {
                x: Tensor::from_vec(x, (size, 3), &Device::Cpu).unwrap(),
                y: Tensor::from_vec(y, (size, 1), &Device::Cpu).unwrap(),
            }
        })
        .collect()
}

/// The trainable `w`, `b`, plus a `scale` Var that the loss uses but that is not handed to the trainer.
struct Model {
    w: Var,
    b: Var,
    scale: Var,
}

impl Model {
    fn new(init: f32) -> Self {
        Self {
            w: Var::from_slice(&[init, -init, init * 0.5], (3, 1), &Device::Cpu).unwrap(),
            b: Var::zeros(1, DType::F32, &Device::Cpu).unwrap(),
            scale: Var::ones(1, DType::F32, &Device::Cpu).unwrap(),
        }
    }

    fn params(&self) -> Vec<(String, Var)> {
        vec![
            ("linear.weight".to_string(), self.w.clone()),
            ("linear.bias".to_string(), self.b.clone()),
        ]
    }

    fn loss(&self, batch: &Batch) -> candle_core::Result<(Tensor, usize)> {
        let prediction = batch.x.matmul(self.w.as_tensor())?.broadcast_add(self.b.as_tensor())?;
        let prediction = prediction.broadcast_mul(self.scale.as_tensor())?;
        let loss = (prediction - &batch.y)?.sqr()?.mean_all()?;
        Ok((loss, batch.x.dim(0)?))
    }

    fn values(&self) -> Vec<f32> {
        let mut values = self.w.as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        values.extend(self.b.as_tensor().to_vec1::<f32>().unwrap());
        values
    }
}

fn config(output_dir: &Path) -> TrainConfig {
    TrainConfig {
        epochs: 3,
        lr: 0.05,
        warmup: Warmup::Steps(2),
        weight_decay: 0.01,
        grad_accum: 2,
        max_grad_norm: Some(1.0),
        save_every: None,
        keep_checkpoints: None,
        output_dir: output_dir.to_path_buf(),
        ..TrainConfig::default()
    }
}

fn read_metrics(output_dir: &Path) -> Vec<MetricsLine> {
    std::fs::read_to_string(output_dir.join(METRICS_FILE))
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("metrics line {line:?}: {e}")))
        .collect()
}

fn run(
    model: &Model,
    train_batches: &[Batch],
    val_batches: &[Batch],
    config: &TrainConfig,
    resume: Option<&Path>,
    on_progress: &mut dyn FnMut(&Progress),
) -> Result<knowhow_tune::train::TrainReport, TrainError> {
    let loss = |batch: &Batch, _training: bool| model.loss(batch);
    train(
        &model.params(),
        train_batches,
        val_batches,
        &loss,
        config,
        resume,
        on_progress,
    )
}

#[test]
fn loss_decreases_only_the_given_vars_change_and_the_log_parses() {
    let dir = tempfile::tempdir().unwrap();
    let model = Model::new(0.0);
    let train_batches = batches(&[4, 3, 5, 4, 2, 6, 4, 4], [1.5, -2.0, 0.7], 0);
    let val_batches = batches(&[5, 5], [1.5, -2.0, 0.7], 100);
    let config = TrainConfig {
        epochs: 40,
        eval_every: Some(10),
        ..config(dir.path())
    };
    let mut seen = Vec::new();
    let report = run(&model, &train_batches, &val_batches, &config, None, &mut |p| {
        seen.push(p.step)
    })
    .unwrap();

    assert_eq!(report.stop_reason, StopReason::Completed);
    assert_eq!(report.total_steps, 40 * 4);
    assert_eq!(report.steps, report.total_steps);
    assert_eq!(seen, (1..=report.total_steps).collect::<Vec<_>>());
    let lines = read_metrics(dir.path());
    assert_eq!(lines.iter().map(|l| l.step).collect::<Vec<_>>(), seen);
    let first = lines[0].loss;
    let last = lines.last().unwrap().loss;
    assert!(last < first * 0.01, "loss went from {first} to {last}");
    let val = report.last_val_loss.unwrap();
    assert!(val < 0.05, "validation loss {val}");

    // The Var the trainer was not given took part in the loss but kept its value.
    assert_eq!(model.scale.as_tensor().to_vec1::<f32>().unwrap(), vec![1.0]);

    let rows_per_epoch = 32;
    assert_eq!(lines.iter().map(|l| l.tokens).sum::<usize>(), rows_per_epoch * 40);
    for line in &lines {
        let expected_lr = 0.05 * cosine_with_warmup(line.step - 1, 2, report.total_steps, 0.0);
        assert!((line.lr - expected_lr).abs() < 1e-18, "lr at step {}", line.step);
        assert!(line.grad_norm.is_finite() && line.tokens > 0 && line.tokens_per_s > 0.0);
        assert_eq!(
            line.val_loss.is_some(),
            line.step % 10 == 0,
            "val_loss at step {}",
            line.step
        );
    }
    assert_eq!(lines.last().unwrap().epoch, 40.0);
    assert_eq!(lines.last().unwrap().val_loss, report.last_val_loss);
}

#[test]
fn accumulated_gradients_equal_those_of_one_big_batch() {
    let model = Model::new(0.3);
    let params = model.params();
    let loss = |batch: &Batch, _training: bool| model.loss(batch);
    let sizes = [1, 3, 4, 8];
    let micro = batches(&sizes, [1.0, 2.0, -1.0], 0);
    let whole = batches(&[16], [1.0, 2.0, -1.0], 0);

    let accumulated = accumulate_gradients(&params, &micro.iter().collect::<Vec<_>>(), &loss).unwrap();
    let single = accumulate_gradients(&params, &[&whole[0]], &loss).unwrap();
    assert_eq!(accumulated.tokens, 16);
    assert!(
        (accumulated.loss - single.loss).abs() < 1e-6,
        "{} vs {}",
        accumulated.loss,
        single.loss
    );
    for (a, s) in accumulated.grads.iter().zip(&single.grads) {
        let a = a.as_ref().unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let s = s.as_ref().unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        for (a, s) in a.iter().zip(&s) {
            assert!((a - s).abs() < 1e-6, "gradient {a} vs {s}");
        }
    }
    // The plain mean of the micro-batch means is a different number: the weighting matters here.
    let mean_of_means = micro
        .iter()
        .map(|b| model.loss(b).unwrap().0.to_scalar::<f32>().unwrap() as f64)
        .sum::<f64>()
        / sizes.len() as f64;
    assert!((mean_of_means - single.loss).abs() > 1e-3);

    // Through the loop: 4 micro-batches per step give the parameters of 1 batch per step.
    let dir_accumulated = tempfile::tempdir().unwrap();
    let dir_single = tempfile::tempdir().unwrap();
    let model_accumulated = Model::new(0.3);
    let model_single = Model::new(0.3);
    let config_accumulated = TrainConfig {
        epochs: 5,
        grad_accum: 4,
        ..config(dir_accumulated.path())
    };
    let config_single = TrainConfig {
        epochs: 5,
        grad_accum: 1,
        ..config(dir_single.path())
    };
    run(&model_accumulated, &micro, &[], &config_accumulated, None, &mut |_| {}).unwrap();
    run(&model_single, &whole, &[], &config_single, None, &mut |_| {}).unwrap();
    let (lines_a, lines_s) = (read_metrics(dir_accumulated.path()), read_metrics(dir_single.path()));
    assert_eq!(lines_a.len(), 5);
    for (a, s) in lines_a.iter().zip(&lines_s) {
        assert!((a.loss - s.loss).abs() < 1e-6 && (a.grad_norm - s.grad_norm).abs() < 1e-5 && a.tokens == s.tokens);
    }
    for (a, s) in model_accumulated.values().iter().zip(model_single.values()) {
        assert!((a - s).abs() < 1e-6, "parameter {a} vs {s}");
    }
}

#[test]
fn clipping_scales_the_global_norm_down_to_the_limit() {
    let g1 = Tensor::new(&[3.0f32, -4.0], &Device::Cpu).unwrap();
    let g2 = Tensor::new(&[[12.0f32]], &Device::Cpu).unwrap();
    let mut grads = vec![Some(g1.clone()), None, Some(g2.clone())];
    assert_eq!(global_grad_norm(&grads).unwrap(), 13.0);

    let unchanged = clip_grad_norm(&mut grads, 20.0).unwrap();
    assert_eq!(unchanged, 13.0);
    assert_eq!(grads[0].as_ref().unwrap().to_vec1::<f32>().unwrap(), vec![3.0, -4.0]);

    let norm = clip_grad_norm(&mut grads, 1.0).unwrap();
    assert_eq!(norm, 13.0);
    let clipped = global_grad_norm(&grads).unwrap();
    assert!((clipped - 1.0).abs() < 1e-6, "norm after clipping {clipped}");
    let coefficient = 1.0 / (13.0 + 1e-6);
    let first = grads[0].as_ref().unwrap().to_vec1::<f32>().unwrap();
    assert!((first[0] as f64 - 3.0 * coefficient).abs() < 1e-7 && (first[1] as f64 + 4.0 * coefficient).abs() < 1e-7);
    assert!(grads[1].is_none());

    // In the loop the log shows the norm before clipping, and clipping changes the trajectory.
    let train_batches = batches(&[4, 4], [30.0, -20.0, 10.0], 0);
    let dir_clipped = tempfile::tempdir().unwrap();
    let dir_free = tempfile::tempdir().unwrap();
    let (clipped_model, free_model) = (Model::new(0.0), Model::new(0.0));
    let all_at_once = TrainConfig {
        epochs: 1,
        grad_accum: 2,
        warmup: Warmup::Steps(0),
        ..config(dir_clipped.path())
    };
    let params = clipped_model.params();
    let loss = |batch: &Batch, _training: bool| clipped_model.loss(batch);
    let expected_norm = global_grad_norm(
        &accumulate_gradients(&params, &train_batches.iter().collect::<Vec<_>>(), &loss)
            .unwrap()
            .grads,
    )
    .unwrap();
    run(&clipped_model, &train_batches, &[], &all_at_once, None, &mut |_| {}).unwrap();
    let free = TrainConfig {
        max_grad_norm: None,
        output_dir: dir_free.path().to_path_buf(),
        ..all_at_once.clone()
    };
    run(&free_model, &train_batches, &[], &free, None, &mut |_| {}).unwrap();
    let logged = read_metrics(dir_clipped.path())[0].grad_norm;
    assert!(
        expected_norm > 1.0 && (logged - expected_norm).abs() < 1e-4,
        "{logged} vs {expected_norm}"
    );
    assert_ne!(clipped_model.values(), free_model.values());
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &to.join(entry.file_name()));
        } else {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

/// What must match between runs: everything but the timings.
fn curve(lines: &[MetricsLine]) -> Vec<MetricsLine> {
    lines
        .iter()
        .map(|line| MetricsLine {
            tokens_per_s: 0.0,
            elapsed_s: 0.0,
            ..line.clone()
        })
        .collect()
}

#[test]
fn stopping_and_resuming_gives_the_uninterrupted_run_bit_for_bit() {
    // 7 batches, 2 per step: 4 steps per epoch, the last one a single batch; 12 steps in all.
    let train_batches = batches(&[2, 3, 4, 2, 3, 4, 2], [1.0, -0.5, 2.0], 0);
    let val_batches = batches(&[6], [1.0, -0.5, 2.0], 50);
    let base = |dir: &Path| TrainConfig {
        save_every: Some(2),
        eval_every: Some(3),
        early_stopping_patience: Some(100),
        max_grad_norm: Some(0.5),
        ..config(dir)
    };

    let straight_dir = tempfile::tempdir().unwrap();
    let straight = Model::new(0.2);
    let report = run(
        &straight,
        &train_batches,
        &val_batches,
        &base(straight_dir.path()),
        None,
        &mut |_| {},
    )
    .unwrap();
    assert_eq!((report.steps, report.stop_reason), (12, StopReason::Completed));
    let expected = curve(&read_metrics(straight_dir.path()));

    // Stop after step 5, the first step of the second epoch.
    let stopped_dir = tempfile::tempdir().unwrap();
    let stopped_config = base(stopped_dir.path());
    let stop = stopped_config.stop.clone();
    let stopped = Model::new(0.2);
    let on_progress = &mut |p: &Progress| {
        if p.step == 5 {
            stop.store(true, Ordering::SeqCst);
        }
    };
    let report = run(
        &stopped,
        &train_batches,
        &val_batches,
        &stopped_config,
        None,
        on_progress,
    )
    .unwrap();
    assert_eq!((report.steps, report.stop_reason), (5, StopReason::Interrupted));
    let checkpoint_5 = stopped_dir.path().join("checkpoint-5");
    assert_eq!(report.last_checkpoint.as_deref(), Some(checkpoint_5.as_path()));
    assert_eq!(
        latest_checkpoint(stopped_dir.path()).unwrap().as_deref(),
        Some(checkpoint_5.as_path())
    );
    let state = read_trainer_state(&checkpoint_5).unwrap();
    assert_eq!((state.step, state.epoch, state.position_in_epoch), (5, 1, 2));
    // A second copy resumes from the epoch boundary (checkpoint-4), with step 5's line in its log to drop.
    let boundary_dir = tempfile::tempdir().unwrap();
    copy_dir(stopped_dir.path(), boundary_dir.path());

    for (dir, checkpoint) in [
        (stopped_dir.path(), "checkpoint-5"),
        (boundary_dir.path(), "checkpoint-4"),
    ] {
        // Fresh parameters with other values: everything must come from the checkpoint.
        let resumed = Model::new(-3.0);
        let resumed_config = base(dir);
        let checkpoint = dir.join(checkpoint);
        let report = run(
            &resumed,
            &train_batches,
            &val_batches,
            &resumed_config,
            Some(&checkpoint),
            &mut |_| {},
        )
        .unwrap();
        assert_eq!((report.steps, report.stop_reason), (12, StopReason::Completed));
        assert_eq!(
            curve(&read_metrics(dir)),
            expected,
            "resumed from {}",
            checkpoint.display()
        );
        assert_eq!(
            resumed.values(),
            straight.values(),
            "resumed from {}",
            checkpoint.display()
        );
    }

    // The data must be the same to resume.
    let other_dir = tempfile::tempdir().unwrap();
    let error = run(
        &Model::new(0.0),
        &train_batches[..6],
        &[],
        &base(other_dir.path()),
        Some(&checkpoint_5),
        &mut |_| {},
    )
    .unwrap_err();
    assert!(matches!(error, TrainError::ResumeMismatch { .. }), "{error}");
}

#[test]
fn the_stop_flag_finishes_the_step_and_writes_a_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let model = Model::new(0.0);
    let train_batches = batches(&[3, 3, 3, 3], [1.0, 1.0, 1.0], 0);
    let config = TrainConfig {
        warmup: Warmup::Steps(0),
        ..config(dir.path())
    };
    config.stop.store(true, Ordering::SeqCst);
    let before = model.values();
    let report = run(&model, &train_batches, &[], &config, None, &mut |_| {}).unwrap();

    assert_eq!((report.steps, report.stop_reason), (1, StopReason::Interrupted));
    let checkpoint = report.last_checkpoint.unwrap();
    for file in [PARAMS_FILE, OPTIMIZER_FILE, STATE_FILE] {
        assert!(checkpoint.join(file).is_file(), "{file} missing");
    }
    assert_eq!(read_trainer_state(&checkpoint).unwrap().step, 1);
    assert_eq!(read_metrics(dir.path()).len(), 1);
    // The checkpoint holds the parameters after the step.
    assert_ne!(model.values(), before);
    let loaded = Model::new(5.0);
    load_params(&checkpoint, &loaded.params()).unwrap();
    assert_eq!(loaded.values(), model.values());
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
}

#[test]
fn early_stopping_triggers_and_the_best_checkpoint_is_kept() {
    // Training pulls the weights toward 2, validation wants 1: validation improves, then gets worse.
    let dir = tempfile::tempdir().unwrap();
    let model = Model::new(0.0);
    let train_batches = batches(&[4, 4, 4, 4], [2.0, 2.0, 2.0], 0);
    let val_batches = batches(&[8], [1.0, 1.0, 1.0], 40);
    let config = TrainConfig {
        epochs: 100,
        lr: 0.05,
        warmup: Warmup::Steps(0),
        grad_accum: 1,
        eval_every: Some(1),
        save_every: Some(1),
        keep_checkpoints: Some(2),
        early_stopping_patience: Some(3),
        ..config(dir.path())
    };
    let report = run(&model, &train_batches, &val_batches, &config, None, &mut |_| {}).unwrap();

    assert_eq!(report.stop_reason, StopReason::EarlyStopped);
    assert!(report.steps < report.total_steps);
    let best_step = report.best_step.unwrap();
    assert_eq!(report.steps, best_step + 3, "patience 3 with an evaluation every step");
    let lines = read_metrics(dir.path());
    let val_losses: Vec<f64> = lines.iter().map(|l| l.val_loss.unwrap()).collect();
    let minimum = val_losses.iter().cloned().fold(f64::INFINITY, f64::min);
    assert_eq!(report.best_val_loss, Some(minimum));
    assert_eq!(val_losses[best_step - 1], minimum);
    assert!(val_losses[0] > minimum && *val_losses.last().unwrap() > minimum);

    let best = dir.path().join(BEST_DIR);
    assert_eq!(report.best_checkpoint.as_deref(), Some(best.as_path()));
    assert_eq!(read_trainer_state(&best).unwrap().step, best_step);
    let reloaded = Model::new(0.0);
    load_params(&best, &reloaded.params()).unwrap();
    let loss = |batch: &Batch, _training: bool| reloaded.loss(batch);
    assert_eq!(evaluate(&val_batches, &loss).unwrap(), minimum);
    assert_ne!(reloaded.values(), model.values());

    // Only the last two step checkpoints remain; `best` is older than both and still there.
    let steps: Vec<usize> = list_checkpoints(dir.path())
        .unwrap()
        .into_iter()
        .map(|(step, _)| step)
        .collect();
    assert_eq!(steps, vec![report.steps - 1, report.steps]);
}

#[test]
fn bad_configs_are_refused_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let model = Model::new(0.0);
    let train_batches = batches(&[2], [1.0, 1.0, 1.0], 0);
    let loss = |batch: &Batch, _training: bool| model.loss(batch);
    let duplicated = vec![("w".to_string(), model.w.clone()), ("w".to_string(), model.b.clone())];
    let error = train(
        &duplicated,
        &train_batches,
        &[],
        &loss,
        &config(dir.path()),
        None,
        &mut |_| {},
    )
    .unwrap_err();
    assert!(error.to_string().contains("`w` is given twice"), "{error}");
    let zero_accum = TrainConfig {
        grad_accum: 0,
        ..config(dir.path())
    };
    let error = train(
        &model.params(),
        &train_batches,
        &[],
        &loss,
        &zero_accum,
        None,
        &mut |_| {},
    )
    .unwrap_err();
    assert!(error.to_string().contains("grad_accum"), "{error}");
}
