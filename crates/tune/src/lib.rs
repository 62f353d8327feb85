//! Fine-tuning for knowhow: datasets, LoRA training, evaluation against the base model and the adapter registry.
//!
//! Module dependencies run one way: `data`, `optim`, `schedule`, `train` and `registry` know nothing of models
//! loaded for fine-tuning; `base` (a loaded base model) and `batch` (batches and their loss) build on `data`;
//! `evaluate` and `pipeline` build on those and never on each other.

pub mod base;
pub mod batch;
pub mod data;
pub mod error;
pub mod evaluate;
pub mod optim;
pub mod pipeline;
pub mod registry;
pub mod schedule;
pub mod train;
