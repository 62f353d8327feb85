//! `knowhow tune` interrupted and resumed gives the loss curve of the uninterrupted run, with LoRA dropout on: the
//! resumed run must continue the dropout masks (and the batch order, and the optimizer) where the first one stopped.
//! The same resume with the masks drawn afresh gives another curve, so the comparison would catch a resume that
//! forgot them.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use knowhow_testkit_tiny::{self as tiny, TinyOptions};
use knowhow_tune::pipeline::{tune, Event, TuneOptions};
use knowhow_tune::schedule::Warmup;
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

    // Stop after step 4 (mid second epoch), then resume: once continuing the dropout masks, once drawing them afresh.
    let interrupt = |name: &str| {
        let first = options(name);
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
    };
    let resume = |name: &str, continue_dropout_masks: bool| {
        let mut again = options(name);
        again.resume = true;
        again.continue_dropout_masks = continue_dropout_masks;
        let resumed = tune(&home, &again, &mut |_| {}).unwrap();
        assert_eq!(resumed.stop_reason, StopReason::Completed);
        losses(&resumed.run_dir)
    };
    interrupt("resumed");
    let got = resume("resumed", true);
    interrupt("fresh-masks");
    let fresh_masks = resume("fresh-masks", false);

    let expected = losses(&whole.run_dir);
    assert_eq!(expected.len(), 6);
    for curve in [&got, &fresh_masks] {
        assert_eq!(
            curve.iter().map(|(step, _)| *step).collect::<Vec<_>>(),
            [1, 2, 3, 4, 5, 6]
        );
    }
    let same = |want: f64, have: f64| (want - have).abs() <= 1e-6 * want.abs();
    for ((step, want), (_, have)) in expected.iter().zip(&got) {
        assert!(same(*want, *have), "step {step}: {have} after resuming, {want} without");
    }
    // Dropout is on: the same steps without continuing its masks would differ (the test's power).
    assert!(expected.windows(2).all(|pair| pair[0].1 != pair[1].1));
    for ((step, want), (_, have)) in expected.iter().zip(&fresh_masks) {
        if *step <= 4 {
            assert!(
                same(*want, *have),
                "step {step} ran before the interruption: {have}, {want}"
            );
        } else {
            assert!(
                !same(*want, *have),
                "step {step}: {have} with the masks drawn afresh, as {want} without interruption: the masks do not matter"
            );
        }
    }
}
