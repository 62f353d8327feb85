//! The zip package a .docx is, read within a budget of expanded bytes.

use std::io::{Cursor, Read};

use zip::ZipArchive;

use crate::load::LoadError;

/// The zip archive, with what may still be expanded from it.
pub(super) struct Package<'a> {
    archive: ZipArchive<Cursor<&'a [u8]>>,
    /// Bytes that may still be expanded (visible to the tests, which shrink
    /// it to make a part outgrow its declared size).
    pub(super) budget: u64,
    limit: u64,
}

impl<'a> Package<'a> {
    /// Opens the archive and refuses it at once if its entries declare more
    /// than `limit` bytes in all.
    pub(super) fn open(bytes: &'a [u8], limit: u64) -> Result<Package<'a>, LoadError> {
        let mut archive = ZipArchive::new(Cursor::new(bytes))
            .map_err(|e| LoadError::new(format!("not a valid .docx (it is not a readable zip archive: {e})")))?;
        let mut declared = 0u64;
        for index in 0..archive.len() {
            let size = archive
                .by_index_raw(index)
                .map_err(|e| LoadError::new(format!("damaged .docx: {e}")))?
                .size();
            declared = declared.saturating_add(size);
        }
        if declared > limit {
            return Err(too_large(limit));
        }
        Ok(Package {
            archive,
            budget: limit,
            limit,
        })
    }

    /// Names of the parts starting with `prefix`, in natural order
    /// (header2 before header10).
    pub(super) fn part_names(&self, prefix: &str) -> Vec<String> {
        let mut names: Vec<String> = self
            .archive
            .file_names()
            .filter_map(Result::ok)
            .filter(|name| name.starts_with(prefix) && name.ends_with(".xml") && !name[prefix.len()..].contains('/'))
            .map(|name| name.into_owned())
            .collect();
        names.sort_by_key(|name| {
            let digits: String = name[prefix.len()..].chars().filter(char::is_ascii_digit).collect();
            (digits.parse::<u64>().unwrap_or(0), name.clone())
        });
        names
    }

    /// A part's text, or `None` if the archive has no such part. Reading
    /// stops one byte past the remaining budget: a part's declared size can
    /// lie, its expansion cannot.
    pub(super) fn read(&mut self, name: &str) -> Result<Option<String>, LoadError> {
        let file = match self.archive.by_name(name) {
            Ok(file) => file,
            Err(zip::result::ZipError::FileNotFound) => return Ok(None),
            Err(e) => return Err(LoadError::new(format!("damaged .docx: cannot read {name}: {e}"))),
        };
        let mut bytes = Vec::new();
        file.take(self.budget.saturating_add(1))
            .read_to_end(&mut bytes)
            .map_err(|e| LoadError::new(format!("damaged .docx: cannot read {name}: {e}")))?;
        let read = u64::try_from(bytes.len()).unwrap_or(u64::MAX);
        if read > self.budget {
            return Err(too_large(self.limit));
        }
        self.budget -= read;
        decode_xml(bytes)
            .map(Some)
            .map_err(|_| LoadError::new(format!("damaged .docx: {name} is not UTF-8 or UTF-16 text")))
    }
}

fn too_large(limit: u64) -> LoadError {
    LoadError::new(format!(
        "refused: the .docx would expand to more than {limit} bytes, which looks like a zip bomb; \
         if the file is trusted, raise the expansion limit"
    ))
}

/// XML parts are UTF-8, or UTF-16 with a byte-order mark.
fn decode_xml(bytes: Vec<u8>) -> Result<String, ()> {
    if let Some((encoding, bom_len)) = encoding_rs::Encoding::for_bom(&bytes) {
        let (text, had_errors) = encoding.decode_without_bom_handling(&bytes[bom_len..]);
        return if had_errors { Err(()) } else { Ok(text.into_owned()) };
    }
    String::from_utf8(bytes).map_err(|_| ())
}
