//! Loaders: one function per format, each returning the [`Extracted`] parts of
//! a document, and [`load_file`], which picks the loader from the file's
//! extension and gives each document its id and source.

mod docx;
mod html;
mod nesting;
mod pdf;
mod rows;
mod text;

use std::path::Path;

use knowhow_core::{Document, Metadata, Page, Section};

pub use nesting::MAX_NESTING_DEPTH;
pub use rows::RowFields;

/// What a loader extracted from one document, before it gets an id.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Extracted {
    pub title: String,
    pub text: String,
    pub sections: Vec<Section>,
    pub pages: Vec<Page>,
    pub metadata: Metadata,
}

/// Why a file (or one row of it) could not be loaded. The message is written
/// for the user: it names what is wrong and, where one exists, the way out;
/// a way out that is an ingest setting is [`LoadError::remedy`], which each
/// front end spells its own way.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct LoadError {
    pub message: String,
    pub remedy: Option<Remedy>,
}

impl LoadError {
    pub fn new(message: impl Into<String>) -> LoadError {
        LoadError {
            message: message.into(),
            remedy: None,
        }
    }

    /// The one error for a file with nothing to index, whatever its format:
    /// `why` says what it holds instead.
    pub(crate) fn no_text(why: &str) -> LoadError {
        LoadError::new(format!("has no text: {why}; there is nothing to index"))
    }
}

/// The ingest setting that would load what failed. Errors name it instead of
/// a command-line flag, so that the command line can say `--encoding X` and
/// an API `"encoding": "X"`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "setting", content = "value", rename_all = "snake_case")]
pub enum Remedy {
    /// Decode text with this encoding (the detector's best guess).
    Encoding(String),
    /// Name the field of a row that holds its text.
    TextField,
    /// Raise the size limit above which files are skipped.
    MaxFileSize,
}

/// The formats knowhow reads, chosen by file extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Markdown,
    Text,
    Html,
    Pdf,
    Docx,
    Csv,
    Jsonl,
}

impl Format {
    /// The format of a path, from its extension (case-insensitive).
    pub fn of(path: &Path) -> Option<Format> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        Some(match ext.as_str() {
            "md" | "markdown" | "mdx" => Format::Markdown,
            "txt" | "text" | "rst" | "log" => Format::Text,
            "html" | "htm" | "xhtml" => Format::Html,
            "pdf" => Format::Pdf,
            "docx" => Format::Docx,
            "csv" | "tsv" => Format::Csv,
            "jsonl" | "ndjson" => Format::Jsonl,
            _ => return None,
        })
    }

    /// Row formats give one document per row rather than one per file.
    pub fn is_rows(self) -> bool {
        matches!(self, Format::Csv | Format::Jsonl)
    }
}

/// Loader settings a user can change.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Decode text files with this encoding instead of requiring UTF-8.
    pub encoding: Option<&'static encoding_rs::Encoding>,
    /// Which fields of a CSV/JSONL row hold the id, title and text.
    pub row_fields: RowFields,
    /// A DOCX whose parts would expand past this many bytes is refused.
    pub max_expanded_bytes: u64,
}

impl Default for LoadOptions {
    fn default() -> LoadOptions {
        LoadOptions {
            encoding: None,
            row_fields: RowFields::default(),
            max_expanded_bytes: 256 * 1024 * 1024,
        }
    }
}

/// Everything loaded from one file: its documents, and the rows that failed
/// (row files only: one bad row never loses the others).
#[derive(Debug, Default)]
pub struct Loaded {
    pub documents: Vec<Document>,
    pub row_errors: Vec<RowError>,
}

/// A row of a CSV/JSONL file that could not become a document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowError {
    /// 1-based line number in the file.
    pub line: u64,
    pub message: String,
    pub remedy: Option<Remedy>,
}

/// Loads one file already read into memory. `source` is the file's absolute
/// path: file documents take a hash of it as their id. An empty file, or one
/// of white space only, is refused the same way whatever its format.
pub fn load_bytes(format: Format, bytes: &[u8], source: &str, options: &LoadOptions) -> Result<Loaded, LoadError> {
    let content = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    if content.is_empty() {
        return Err(LoadError::no_text("the file is empty"));
    }
    if content.iter().all(u8::is_ascii_whitespace) {
        return Err(LoadError::no_text("the file holds only white space"));
    }
    let single = |mut extracted: Extracted| {
        if extracted.text.trim().is_empty() {
            return Err(LoadError::no_text("the file holds only white space"));
        }
        if extracted.title.trim().is_empty() {
            extracted.title = title_from_source(source);
        }
        Ok(Loaded {
            documents: vec![into_document(file_document_id(source), source.to_string(), extracted)],
            row_errors: Vec::new(),
        })
    };
    match format {
        Format::Markdown => single(text::load_markdown(bytes, options.encoding)?),
        Format::Text => single(text::load_text(bytes, options.encoding)?),
        Format::Html => single(html::load(bytes, options.encoding)?),
        Format::Pdf => single(pdf::load(bytes)?),
        Format::Docx => single(docx::load(bytes, options.max_expanded_bytes)?),
        Format::Csv => rows::load_csv(bytes, source, &options.row_fields),
        Format::Jsonl => rows::load_jsonl(bytes, source, &options.row_fields),
    }
}

/// Reads and loads a file, choosing the loader from its extension.
pub fn load_file(path: &Path, options: &LoadOptions) -> Result<Loaded, LoadError> {
    let format = Format::of(path)
        .ok_or_else(|| LoadError::new("unsupported file type (known: md txt html pdf docx csv jsonl)"))?;
    let bytes = std::fs::read(path).map_err(|e| LoadError::new(format!("cannot read: {e}")))?;
    load_bytes(format, &bytes, &path.to_string_lossy(), options)
}

/// The id of a whole-file document: 16 hex digits of blake3 of its path, so
/// the same file always gets the same id.
pub fn file_document_id(source: &str) -> String {
    blake3::hash(source.as_bytes()).to_hex()[..16].to_string()
}

fn into_document(id: String, source: String, e: Extracted) -> Document {
    Document::new(id, source, e.title, e.text, e.sections, e.pages, e.metadata)
}

/// The last path component without its extension: the title of last resort.
fn title_from_source(source: &str) -> String {
    Path::new(source)
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    const FORMATS: [Format; 7] = [
        Format::Markdown,
        Format::Text,
        Format::Html,
        Format::Pdf,
        Format::Docx,
        Format::Csv,
        Format::Jsonl,
    ];

    /// An empty Markdown file used to become a document of no chunks, while an
    /// empty DOCX was refused: every format now says the same.
    #[test]
    fn an_empty_or_blank_file_has_no_text_in_every_format() {
        let options = LoadOptions::default();
        for format in FORMATS {
            for (bytes, why) in [
                (&b""[..], "the file is empty"),
                (b"\xEF\xBB\xBF", "the file is empty"),
                (b" \n\t\r\n  ", "the file holds only white space"),
            ] {
                let err = load_bytes(format, bytes, "/docs/empty", &options).unwrap_err();
                let expected = format!("has no text: {why}; there is nothing to index");
                assert_eq!(err.message, expected, "{format:?} {bytes:?}");
            }
        }
        // Blank once decoded: UTF-16 spaces, Unicode white space.
        let mut utf16 = vec![0xFF, 0xFE];
        utf16.extend("  \u{3000}\n".encode_utf16().flat_map(u16::to_le_bytes));
        let nbsp = "\u{a0}\u{2003}\n".as_bytes();
        for (format, bytes) in [(Format::Text, &utf16[..]), (Format::Markdown, nbsp)] {
            let err = load_bytes(format, bytes, "/docs/blank", &options).unwrap_err();
            assert!(err.message.starts_with("has no text: "), "{format:?}: {err}");
        }
        let loaded = load_bytes(Format::Markdown, b"\n# Title\n", "/docs/a.md", &options).unwrap();
        assert_eq!(loaded.documents[0].title, "Title");
    }
}
