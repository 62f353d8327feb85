//! From files to chunks: [`walk`] finds the files, [`load`] turns each into
//! normalized [`knowhow_core::Document`]s, [`chunk`] cuts documents into
//! token-bounded [`knowhow_core::Chunk`]s along their structure.
//!
//! Nothing here touches storage; the index crate commits what this crate
//! produces.

pub mod chunk;
pub mod load;
pub mod walk;
