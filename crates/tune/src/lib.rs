//! Fine-tuning for knowhow: datasets, LoRA training, evaluation against the
//! base model and the adapter registry.

pub mod data;
pub mod evaluate;
pub mod optim;
pub mod pipeline;
pub mod registry;
pub mod schedule;
pub mod tiny;
pub mod train;
