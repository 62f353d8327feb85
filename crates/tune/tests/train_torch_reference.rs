//! AdamW, gradient clipping and the learning-rate schedule against torch and transformers.
//!
//! The test writes the cases (parameters, gradients, learning rates), `fixtures/train_torch_reference.py` runs
//! `torch.optim.AdamW`, `clip_grad_norm_` and transformers' cosine schedules on them, and the Rust results must
//! agree within 1e-6. It needs a Python with torch and transformers:
//!
//! ```text
//! KNOWHOW_PYTHON=/work/pyref/venv/bin/python cargo test -p knowhow-tune --test train_torch_reference
//! ```

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::{Device, Tensor, Var};
use knowhow_testkit::env::{required_env, run_python};
use knowhow_tune::optim::{AdamW, AdamWConfig};
use knowhow_tune::schedule::CosineSchedule;
use knowhow_tune::train::clip_grad_norm;
use serde::Deserialize;
use serde_json::json;

const TOLERANCE: f64 = 1e-6;

#[derive(Deserialize)]
struct Reference {
    adamw: AdamWReference,
    clip: ClipReference,
    schedules: Vec<Vec<f64>>,
}

#[derive(Deserialize)]
struct AdamWReference {
    params_after_step: Vec<BTreeMap<String, Vec<f64>>>,
    exp_avg: BTreeMap<String, Vec<f64>>,
    exp_avg_sq: BTreeMap<String, Vec<f64>>,
    step: BTreeMap<String, u64>,
}

#[derive(Deserialize)]
struct ClipReference {
    norm: f64,
    grads: Vec<Vec<f64>>,
}

/// Deterministic f32 values in about [-scale, scale], as f64 so JSON carries them exactly.
fn values(count: usize, seed: usize, scale: f32) -> Vec<f64> {
    (0..count)
        .map(|i| ((((i + seed) * 37 + seed * 11) % 29) as f32 / 14.0 - 1.0) * scale)
        .map(f64::from)
        .collect()
}

fn to_f32(values: &[f64]) -> Vec<f32> {
    values.iter().map(|&v| v as f32).collect()
}

fn assert_close(what: &str, ours: &[f32], theirs: &[f64]) {
    assert_eq!(ours.len(), theirs.len(), "{what}: length");
    for (i, (a, b)) in ours.iter().zip(theirs).enumerate() {
        assert!((*a as f64 - b).abs() <= TOLERANCE, "{what}[{i}]: ours {a}, torch {b}");
    }
}

fn run_reference(python: &str, cases: &serde_json::Value) -> Reference {
    let dir = tempfile::tempdir().unwrap();
    let (input, output) = (dir.path().join("cases.json"), dir.path().join("reference.json"));
    std::fs::write(&input, serde_json::to_vec(cases).unwrap()).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/train_torch_reference.py");
    run_python(python, &script, [&input, &output]);
    serde_json::from_slice(&std::fs::read(&output).unwrap()).unwrap()
}

#[test]
fn adamw_clipping_and_schedule_match_torch() {
    let test = "adamw_clipping_and_schedule_match_torch";
    let Some(python) = required_env("KNOWHOW_PYTHON", test, "/work/pyref/venv/bin/python") else {
        return;
    };

    let shapes: [(&str, Vec<usize>); 2] = [("lora_A.weight", vec![3, 4]), ("lora_B.weight", vec![5])];
    let initial: BTreeMap<&str, Vec<f64>> = shapes
        .iter()
        .enumerate()
        .map(|(i, (name, shape))| (*name, values(shape.iter().product(), i, 1.5)))
        .collect();
    let lrs = [1e-2, 5e-3, 2e-2, 1e-3, 3e-2];
    // Step 3 gives lora_B no gradient: torch skips it that step, weight decay included.
    let grads: Vec<BTreeMap<&str, Option<Vec<f64>>>> = (0..lrs.len())
        .map(|step| {
            shapes
                .iter()
                .enumerate()
                .map(|(i, (name, shape))| {
                    let grad = (step != 2 || i == 0).then(|| values(shape.iter().product(), 7 * step + i + 3, 0.3));
                    (*name, grad)
                })
                .collect()
        })
        .collect();
    let config = AdamWConfig {
        betas: (0.9, 0.95),
        eps: 1e-8,
        weight_decay: 0.1,
    };
    let clip_grads = [values(6, 1, 2.0), values(3, 2, 5.0)];
    let schedules = [
        (2e-4, 3, 20, 0.0),
        (1e-3, 0, 7, 0.0),
        (5e-4, 4, 15, 0.1),
        (1.0, 10, 10, 0.0),
    ];
    let cases = json!({
        "adamw": {
            "params": shapes.iter().map(|(name, shape)| (*name, json!({"shape": shape, "values": initial[name]})))
                .collect::<BTreeMap<_, _>>(),
            "grads": grads,
            "lrs": lrs,
            "betas": [config.betas.0, config.betas.1],
            "eps": config.eps,
            "weight_decay": config.weight_decay,
        },
        "clip": {"grads": clip_grads, "max_norm": 1.0},
        "schedules": schedules.iter().map(|&(base_lr, warmup_steps, total_steps, min_lr_ratio)| json!({
            "base_lr": base_lr, "warmup_steps": warmup_steps, "total_steps": total_steps, "min_lr_ratio": min_lr_ratio,
        })).collect::<Vec<_>>(),
    });
    let reference = run_reference(&python, &cases);

    // AdamW, five steps; then the state saved, loaded into a fresh optimizer, and compared again.
    let params: Vec<(String, Var)> = shapes
        .iter()
        .map(|(name, shape)| {
            let var = Var::from_slice(&to_f32(&initial[name]), shape.as_slice(), &Device::Cpu).unwrap();
            (name.to_string(), var)
        })
        .collect();
    let mut optimizer = AdamW::new(&params, config).unwrap();
    for (step, lr) in lrs.iter().enumerate() {
        let step_grads: Vec<Option<Tensor>> = params
            .iter()
            .map(|(name, var)| {
                grads[step][name.as_str()]
                    .as_ref()
                    .map(|g| Tensor::from_vec(to_f32(g), var.shape(), &Device::Cpu).unwrap())
            })
            .collect();
        optimizer.step(&step_grads, *lr).unwrap();
        for (name, var) in &params {
            let ours = var.as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap();
            assert_close(
                &format!("{name} after step {}", step + 1),
                &ours,
                &reference.adamw.params_after_step[step][name],
            );
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let saved = dir.path().join("optimizer.safetensors");
    optimizer.save(&saved).unwrap();
    let mut reloaded = AdamW::new(&params, config).unwrap();
    reloaded.load(&saved).unwrap();
    let expected_steps: Vec<u64> = params.iter().map(|(name, _)| reference.adamw.step[name]).collect();
    assert_eq!(reloaded.steps(), expected_steps);
    let state = reloaded.state_tensors().unwrap();
    for (name, _) in &params {
        for (moment, theirs) in [
            ("exp_avg", &reference.adamw.exp_avg),
            ("exp_avg_sq", &reference.adamw.exp_avg_sq),
        ] {
            let ours = state[&format!("{name}.{moment}")]
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            assert_close(&format!("{name}.{moment}"), &ours, &theirs[name]);
        }
    }

    // clip_grad_norm_.
    let mut grads: Vec<Option<Tensor>> = clip_grads
        .iter()
        .map(|g| Some(Tensor::new(to_f32(g), &Device::Cpu).unwrap()))
        .collect();
    let norm = clip_grad_norm(&mut grads, 1.0).unwrap();
    assert!(
        (norm - reference.clip.norm).abs() <= TOLERANCE,
        "norm: ours {norm}, torch {}",
        reference.clip.norm
    );
    for (i, grad) in grads.iter().enumerate() {
        let ours = grad.as_ref().unwrap().to_vec1::<f32>().unwrap();
        assert_close(&format!("clipped gradient {i}"), &ours, &reference.clip.grads[i]);
    }

    // The learning rate of every update, as transformers' LambdaLR hands it to the optimizer.
    for (&(base_lr, warmup_steps, total_steps, min_lr_ratio), theirs) in schedules.iter().zip(&reference.schedules) {
        let schedule = CosineSchedule {
            base_lr,
            warmup_steps,
            total_steps,
            min_lr_ratio,
        };
        assert_eq!(theirs.len(), total_steps);
        for (step, their_lr) in theirs.iter().enumerate() {
            let ours = schedule.lr(step);
            assert!(
                (ours - their_lr).abs() <= 1e-12 * base_lr,
                "{schedule:?} step {step}: ours {ours}, theirs {their_lr}"
            );
        }
    }
}
