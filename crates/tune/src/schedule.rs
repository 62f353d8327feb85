//! Learning-rate schedule: linear warm-up, then half a cosine down to a floor.
//!
//! The multiplier is the one of transformers' `get_cosine_with_min_lr_schedule_with_warmup` (with
//! `num_cycles = 0.5`), which with a floor of 0 is `get_cosine_schedule_with_warmup`:
//!
//! ```text
//! step < warmup:  step / max(1, warmup)
//! otherwise:      progress = (step − warmup) / max(1, total − warmup)
//!                 max(0, ½(1 + cos(π · progress)) · (1 − floor) + floor)
//! ```
//!
//! `step` counts the optimizer updates already made, so the first update uses `lr(0)` — which is 0 with a warm-up,
//! exactly as in a Hugging Face `Trainer` run.

use serde::{Deserialize, Serialize};

/// How long the warm-up lasts: a fraction of the total steps (rounded up, like transformers) or a step count.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Warmup {
    Ratio(f64),
    Steps(usize),
}

impl Warmup {
    pub fn steps(self, total_steps: usize) -> usize {
        match self {
            Warmup::Ratio(ratio) => (total_steps as f64 * ratio).ceil() as usize,
            Warmup::Steps(steps) => steps,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CosineSchedule {
    pub base_lr: f64,
    pub warmup_steps: usize,
    pub total_steps: usize,
    /// The floor as a fraction of `base_lr` (transformers' `min_lr_rate`).
    pub min_lr_ratio: f64,
}

impl CosineSchedule {
    /// The learning rate for the update that follows `step` completed updates.
    pub fn lr(&self, step: usize) -> f64 {
        self.base_lr * cosine_with_warmup(step, self.warmup_steps, self.total_steps, self.min_lr_ratio)
    }
}

/// The multiplier of the base learning rate at `step` (see the module documentation).
pub fn cosine_with_warmup(step: usize, warmup_steps: usize, total_steps: usize, min_lr_ratio: f64) -> f64 {
    if step < warmup_steps {
        return step as f64 / warmup_steps.max(1) as f64;
    }
    let progress = (step - warmup_steps) as f64 / total_steps.saturating_sub(warmup_steps).max(1) as f64;
    let cosine = 0.5 * (1.0 + (std::f64::consts::PI * progress).cos());
    (cosine * (1.0 - min_lr_ratio) + min_lr_ratio).max(0.0)
}
