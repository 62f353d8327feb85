//! Fine-tuning for knowhow: datasets, LoRA training, evaluation against the
//! base model and the adapter registry.
