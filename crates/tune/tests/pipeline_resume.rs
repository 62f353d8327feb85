//! `knowhow tune` interrupted and resumed gives the loss curve of the uninterrupted run, with LoRA dropout on: the
//! resumed run must continue the dropout masks (and the batch order, and the optimizer) where the first one stopped.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use knowhow_tune::pipeline::{tune, Event, TuneOptions};
use knowhow_tune::schedule::Warmup;
use knowhow_tune::tiny::{self, TinyOptions};
use knowhow_tune::train::{MetricsLine, StopReason};

fn losses(run_dir: &Path) -> Vec<(usize, f64)> {
    std::fs::read_to_string(run_dir.join("train").join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str::<MetricsLine>(line).unwrap())
        .map(|line| (line.step, line.loss))
        .collect()
}

#[test]
fn a_resumed_run_with_dropout_repeats_the_uninterrupted_loss_curve() {
    let work = tempfile::tempdir().unwrap();
    let base = work.path().join("base");
    let pairs = tiny::addition_pairs();
    tiny::pretrain(
        &base,
        &pairs,
        &TinyOptions {
            steps: 20,
            ..TinyOptions::default()
        },
    )
    .unwrap();
    let data = work.path().join("data.jsonl");
    let lines: Vec<String> = pairs[..40].iter().map(|(p, c)| tiny::jsonl_line(p, c)).collect();
    std::fs::write(&data, lines.join("\n") + "\n").unwrap();

    let options = |name: &str| {
        let mut options = TuneOptions::new(data.clone(), base.clone(), name.to_string());
        options.lora.dropout = 0.3;
        options.epochs = 2;
        // 32 training rows in batches of 4, 3 per step: steps of 3, 3 and 2 batches in each epoch.
        options.batch_size = 4;
        options.grad_accum = 3;
        options.lr = 1e-2;
        options.warmup = Warmup::Steps(1);
        options.save_every = Some(1);
        options
    };
    let home = work.path().join("home");
    let whole = tune(&home, &options("whole"), &mut |_| {}).unwrap();
    assert_eq!(whole.stop_reason, StopReason::Completed);
    assert_eq!(whole.total_steps, 6);

    // Stop after step 4 (mid second epoch), then resume.
    let first = options("resumed");
    let stop = Arc::clone(&first.stop);
    let interrupted = tune(&home, &first, &mut |event| {
        if let Event::Step(progress) = event {
            if progress.step == 4 {
                stop.store(true, Ordering::SeqCst);
            }
        }
    })
    .unwrap();
    assert_eq!(
        (interrupted.stop_reason, interrupted.steps),
        (StopReason::Interrupted, 4)
    );
    let mut again = options("resumed");
    again.resume = true;
    let resumed = tune(&home, &again, &mut |_| {}).unwrap();
    assert_eq!(resumed.stop_reason, StopReason::Completed);

    let (expected, got) = (losses(&whole.run_dir), losses(&resumed.run_dir));
    assert_eq!(expected.len(), 6);
    assert_eq!(
        got.iter().map(|(step, _)| *step).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5, 6]
    );
    for ((step, want), (_, have)) in expected.iter().zip(&got) {
        assert!(
            (want - have).abs() <= 1e-6 * want.abs(),
            "step {step}: {have} after resuming, {want} without"
        );
    }
    // Dropout is on: the same steps without continuing its masks would differ (the test's power).
    assert!(expected.windows(2).all(|pair| pair[0].1 != pair[1].1));
}
