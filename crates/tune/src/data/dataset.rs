//! A dataset file loaded: parsed, exact duplicates removed, everything that was left out accounted for.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::conversation::{checksum, Conversation};
use super::parse::{parse_jsonl, LineError, Row, ShapeCounts};
use super::DataError;

/// A row left out because an earlier row normalizes to the same conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Duplicate {
    pub line: usize,
    /// The line of the row that was kept.
    pub first_line: usize,
}

/// A file's rows after parsing and duplicate removal.
#[derive(Debug, Clone)]
pub struct Dataset {
    pub path: PathBuf,
    /// Lines read, blank ones included.
    pub lines: usize,
    /// Valid rows in file order, duplicates removed.
    pub rows: Vec<Row>,
    /// Valid rows per shape, duplicates included.
    pub shapes: ShapeCounts,
    pub errors: Vec<LineError>,
    pub duplicates: Vec<Duplicate>,
}

impl Dataset {
    /// Reads and parses `path`. Bad lines are collected in `errors`, unless `strict`, when they fail the load.
    pub fn load(path: &Path, strict: bool) -> Result<Dataset, DataError> {
        let bytes = std::fs::read(path).map_err(|source| DataError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let parsed = parse_jsonl(&bytes, &path.display().to_string());
        if strict && !parsed.errors.is_empty() {
            return Err(DataError::InvalidLines {
                path: path.to_path_buf(),
                errors: parsed.errors,
            });
        }
        let mut shapes = ShapeCounts::default();
        for row in &parsed.rows {
            shapes.add(row.shape);
        }
        let (rows, duplicates) = dedupe(parsed.rows);
        Ok(Dataset {
            path: path.to_path_buf(),
            lines: parsed.lines,
            rows,
            shapes,
            errors: parsed.errors,
            duplicates,
        })
    }

    pub fn conversations(&self) -> impl Iterator<Item = &Conversation> {
        self.rows.iter().map(|row| &row.conversation)
    }
}

/// Keeps the first row of each normalized conversation; reports the others.
pub fn dedupe(rows: Vec<Row>) -> (Vec<Row>, Vec<Duplicate>) {
    let mut first_line_of: HashMap<[u8; 32], usize> = HashMap::with_capacity(rows.len());
    let mut kept = Vec::with_capacity(rows.len());
    let mut duplicates = Vec::new();
    for row in rows {
        match first_line_of.entry(row.conversation.hash()) {
            std::collections::hash_map::Entry::Occupied(first) => duplicates.push(Duplicate {
                line: row.line,
                first_line: *first.get(),
            }),
            std::collections::hash_map::Entry::Vacant(slot) => {
                slot.insert(row.line);
                kept.push(row);
            }
        }
    }
    (kept, duplicates)
}

/// [`checksum`] of rows in a canonical order (sorted by their normalized line), so that the same set of rows gives
/// the same checksum whether it comes from the user's test file or the shuffled split the pipeline wrote.
pub fn rows_checksum(rows: &[Row]) -> String {
    let mut conversations: Vec<&Conversation> = rows.iter().map(|row| &row.conversation).collect();
    conversations.sort_by_cached_key(|conversation| conversation.to_json_line());
    checksum(conversations)
}

/// Options for [`check`].
#[derive(Debug, Clone, Default)]
pub struct CheckOptions {
    /// Any bad line fails the check with [`DataError::InvalidLines`] instead of being reported.
    pub strict: bool,
}

/// What `knowhow data check FILE` reports.
#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    pub path: PathBuf,
    pub lines: usize,
    /// Valid rows, duplicates included.
    pub valid_rows: usize,
    pub shapes: ShapeCounts,
    pub invalid_lines: usize,
    pub errors: Vec<LineError>,
    pub duplicates: Vec<Duplicate>,
    /// Valid rows after duplicate removal: what a split would use.
    pub unique_rows: usize,
    /// [`checksum`] of the unique rows in file order.
    pub checksum: String,
}

impl CheckReport {
    pub fn of(dataset: &Dataset) -> CheckReport {
        CheckReport {
            path: dataset.path.clone(),
            lines: dataset.lines,
            valid_rows: dataset.rows.len() + dataset.duplicates.len(),
            shapes: dataset.shapes,
            invalid_lines: dataset.errors.len(),
            errors: dataset.errors.clone(),
            duplicates: dataset.duplicates.clone(),
            unique_rows: dataset.rows.len(),
            checksum: checksum(dataset.conversations()),
        }
    }

    /// True when every non-blank line is a valid row.
    pub fn is_clean(&self) -> bool {
        self.errors.is_empty()
    }
}

/// Validates a dataset file: shapes, bad lines (with line and field), duplicates and the checksum.
pub fn check(path: &Path, options: &CheckOptions) -> Result<CheckReport, DataError> {
    Ok(CheckReport::of(&Dataset::load(path, options.strict)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicates_are_those_that_normalize_equal() {
        // The same pair written three ways (key order, an extra key, the chat shape) is one conversation.
        let text = [
            r#"{"prompt": "q", "completion": "a"}"#,
            r#"{"completion": "a", "prompt": "q", "id": 9}"#,
            r#"{"prompt": "q", "completion": "b"}"#,
            r#"{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}"#,
            r#"{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a", "weight": 1}]}"#,
        ]
        .join("\n");
        let (rows, duplicates) = dedupe(parse_jsonl(text.as_bytes(), "f").rows);
        assert_eq!(rows.iter().map(|r| r.line).collect::<Vec<_>>(), vec![1, 3]);
        assert_eq!(
            duplicates,
            vec![
                Duplicate { line: 2, first_line: 1 },
                Duplicate { line: 4, first_line: 1 },
                Duplicate { line: 5, first_line: 1 },
            ]
        );
    }
}
