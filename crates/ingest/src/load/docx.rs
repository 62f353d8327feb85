//! DOCX placeholder: replaced by the WordprocessingML reader.
use super::{Extracted, LoadError};
pub(crate) fn load(_bytes: &[u8], _max_expanded_bytes: u64) -> Result<Extracted, LoadError> {
    Err(LoadError::new("DOCX support not built yet"))
}
