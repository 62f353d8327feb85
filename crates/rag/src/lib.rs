//! Retrieval beyond a single index: fusing ranked lists from several retrievers, and clients for hosted
//! embedding and re-ranking servers.
//!
//! - [`fusion`]: Reciprocal Rank Fusion of dense, lexical or any other ranked lists.
//! - [`remote`]: an OpenAI-compatible embeddings client and a `/rerank` client (TEI, Cohere, Jina), with shared
//!   retries and back-off.

pub mod fusion;
pub mod remote;
