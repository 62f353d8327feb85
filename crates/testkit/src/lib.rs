//! Test scaffolding shared by the workspace's tests, and only by tests: every crate takes it as a
//! dev-dependency, so nothing here is linked into the `knowhow` binary.
//!
//! - `env`: the environment switches of the real-model and Python-reference tests, and `../shared/data`.
//! - `http`: the one local HTTP test server (OpenAI-shaped chat and embeddings, package indexes, hubs).
//!
//! It depends on nothing of the workspace and nothing heavier than `serde_json`, so that a crate's tests can take it
//! without building candle or the models. The tiny pre-trained Llama, which needs both, is `knowhow-testkit-tiny`.

pub mod env;
pub mod http;
