//! Test scaffolding shared by the workspace's tests, and only by tests: every crate takes it as a
//! dev-dependency, so nothing here is linked into the `knowhow` binary.
//!
//! - `env`: the environment switches of the real-model and Python-reference tests, and `../shared/data`.
//! - `http`: the one local HTTP test server (OpenAI-shaped chat and embeddings, package indexes, hubs).
//! - `tiny`: a tiny Llama pre-trained from scratch in seconds, for tests that need a decoder that has learnt something.

pub mod env;
pub mod http;
pub mod tiny;
