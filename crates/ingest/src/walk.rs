//! Finding the files to ingest: folders are walked recursively, skipping
//! hidden files and whatever `.gitignore`/`.ignore` files exclude (inside a git
//! repository or not), keeping only known formats that match the `--glob`
//! filters and fit under the size limit.

use std::path::{Path, PathBuf};

use ignore::overrides::OverrideBuilder;
use ignore::WalkBuilder;

use crate::load::{Format, Remedy};

#[derive(Debug, Clone)]
pub struct WalkOptions {
    /// Gitignore-style globs; when any is given, a file must match one
    /// (`!pattern` excludes).
    pub globs: Vec<String>,
    /// Files larger than this are skipped with a message.
    pub max_file_bytes: u64,
}

impl Default for WalkOptions {
    fn default() -> WalkOptions {
        WalkOptions {
            globs: Vec::new(),
            max_file_bytes: 64 * 1024 * 1024,
        }
    }
}

/// The result of a walk: files to load, in a stable order, and the files
/// passed over with the reason.
#[derive(Debug, Default)]
pub struct Found {
    pub files: Vec<(PathBuf, Format)>,
    pub skipped: Vec<Skipped>,
    /// When the folders hold files but the filters left none to consider: which filter took how many.
    pub filtered_out: Option<FilteredOut>,
}

/// Files of the walked folders that the walk's filters left out, by filter; counted only when they left nothing,
/// so that "0 files" can say why.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct FilteredOut {
    /// Every file under the folders.
    pub files: usize,
    /// Hidden: a name on the way starting with `.`.
    pub hidden: usize,
    /// Excluded by `.gitignore` / `.ignore` files.
    pub ignored: usize,
    /// Not matched by the `--glob` filters.
    pub unmatched: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    pub path: PathBuf,
    pub reason: SkipReason,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SkipReason {
    UnsupportedType,
    TooLarge { bytes: u64, limit: u64 },
    Unreadable(String),
}

impl SkipReason {
    /// The ingest setting that would take the file, where one would.
    pub fn remedy(&self) -> Option<Remedy> {
        match self {
            SkipReason::TooLarge { .. } => Some(Remedy::MaxFileSize),
            SkipReason::UnsupportedType | SkipReason::Unreadable(_) => None,
        }
    }
}

impl std::fmt::Display for SkipReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SkipReason::UnsupportedType => write!(f, "unsupported file type"),
            SkipReason::TooLarge { bytes, limit } => write!(f, "{bytes} bytes is over the {limit}-byte limit"),
            SkipReason::Unreadable(why) => write!(f, "cannot read: {why}"),
        }
    }
}

/// Walks `roots` (files or folders). A root that does not exist is an error:
/// it is almost always a typo, and silently ingesting nothing would hide it.
pub fn walk(roots: &[PathBuf], options: &WalkOptions) -> Result<Found, String> {
    let mut found = Found::default();
    for root in roots {
        let root = std::fs::canonicalize(root).map_err(|e| format!("{}: {e}", root.display()))?;
        let mut overrides = OverrideBuilder::new(&root);
        for glob in &options.globs {
            overrides.add(glob).map_err(|e| format!("invalid glob {glob:?}: {e}"))?;
        }
        let overrides = overrides.build().map_err(|e| e.to_string())?;
        if root.is_file() {
            // A file named explicitly is taken even if hidden or ignored.
            consider(&root, options, &mut found);
            continue;
        }
        let walker = WalkBuilder::new(&root)
            .hidden(true)
            .git_ignore(true)
            .git_exclude(true)
            .require_git(false)
            .overrides(overrides)
            // Globs that whitelist would otherwise let hidden files back in.
            .filter_entry(|entry| entry.depth() == 0 || !entry.file_name().to_string_lossy().starts_with('.'))
            .sort_by_file_path(Path::cmp)
            .build();
        for entry in walker {
            match entry {
                Ok(entry) if entry.file_type().is_some_and(|t| t.is_file()) => {
                    consider(entry.path(), options, &mut found);
                }
                Ok(_) => {}
                Err(e) => found.skipped.push(Skipped {
                    path: error_path(&e).unwrap_or_else(|| root.clone()),
                    reason: SkipReason::Unreadable(e.to_string()),
                }),
            }
        }
    }
    found.files.dedup_by(|a, b| a.0 == b.0);
    if found.files.is_empty() && found.skipped.is_empty() {
        found.filtered_out = filtered_out(roots);
    }
    Ok(found)
}

/// Counts what each filter took from the folders among `roots`: every file, then those left once hidden files
/// are put aside, then those left by the ignore files; the globs took the rest (the walk found nothing).
fn filtered_out(roots: &[PathBuf]) -> Option<FilteredOut> {
    let mut counts = FilteredOut::default();
    for root in roots.iter().filter(|r| r.is_dir()) {
        let files = |walker: ignore::Walk| {
            walker
                .flatten()
                .filter(|e| e.file_type().is_some_and(|t| t.is_file()))
                .count()
        };
        let all = files(WalkBuilder::new(root).standard_filters(false).build());
        let visible = files(
            WalkBuilder::new(root)
                .standard_filters(false)
                .filter_entry(|entry| entry.depth() == 0 || !entry.file_name().to_string_lossy().starts_with('.'))
                .build(),
        );
        let kept = files(
            WalkBuilder::new(root)
                .hidden(true)
                .git_ignore(true)
                .git_exclude(true)
                .require_git(false)
                .filter_entry(|entry| entry.depth() == 0 || !entry.file_name().to_string_lossy().starts_with('.'))
                .build(),
        );
        counts.files += all;
        counts.hidden += all - visible;
        counts.ignored += visible.saturating_sub(kept);
        counts.unmatched += kept;
    }
    (counts.files > 0).then_some(counts)
}

fn consider(path: &Path, options: &WalkOptions, found: &mut Found) {
    let skip = |reason| Skipped {
        path: path.to_path_buf(),
        reason,
    };
    let Some(format) = Format::of(path) else {
        found.skipped.push(skip(SkipReason::UnsupportedType));
        return;
    };
    match std::fs::metadata(path) {
        Ok(meta) if meta.len() > options.max_file_bytes => found.skipped.push(skip(SkipReason::TooLarge {
            bytes: meta.len(),
            limit: options.max_file_bytes,
        })),
        Ok(_) => found.files.push((path.to_path_buf(), format)),
        Err(e) => found.skipped.push(skip(SkipReason::Unreadable(e.to_string()))),
    }
}

fn error_path(error: &ignore::Error) -> Option<PathBuf> {
    match error {
        ignore::Error::WithPath { path, .. } => Some(path.clone()),
        ignore::Error::WithDepth { err, .. } | ignore::Error::WithLineNumber { err, .. } => error_path(err),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(root: &Path, rel: &str, bytes: &[u8]) {
        let path = root.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    }

    #[test]
    fn a_walk_that_finds_nothing_says_which_filter_took_the_files() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(root, ".gitignore", b"drafts/\n");
        write(root, ".notes/secret.md", b"hidden");
        write(root, "drafts/a.md", b"ignored");
        write(root, "b.md", b"not a .txt");
        let options = WalkOptions {
            globs: vec!["*.txt".into()],
            ..WalkOptions::default()
        };
        let found = walk(&[root.to_path_buf()], &options).unwrap();
        assert!(found.files.is_empty());
        let expected = FilteredOut {
            files: 4,
            hidden: 2,
            ignored: 1,
            unmatched: 1,
        };
        assert_eq!(found.filtered_out, Some(expected));
        // Something found: nothing to explain.
        let found = walk(&[root.to_path_buf()], &WalkOptions::default()).unwrap();
        assert_eq!(found.filtered_out, None);
    }

    fn names(found: &Found, root: &Path) -> Vec<String> {
        found
            .files
            .iter()
            .map(|(p, _)| p.strip_prefix(root).unwrap().to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn walk_skips_hidden_ignored_unsupported_and_large_files() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        write(&root, "a.md", b"# a");
        write(&root, "sub/b.txt", b"b");
        write(&root, "sub/deep/c.jsonl", b"{}");
        write(&root, ".hidden/d.md", b"d");
        write(&root, ".e.md", b"e");
        write(&root, ".gitignore", b"build/\n*.log.txt\n");
        write(&root, "build/f.md", b"f");
        write(&root, "g.log.txt", b"g");
        write(&root, "h.png", b"h");
        write(&root, "big.txt", &[b'x'; 2000]);
        let options = WalkOptions {
            globs: vec![],
            max_file_bytes: 1000,
        };
        let found = walk(std::slice::from_ref(&root), &options).unwrap();
        assert_eq!(names(&found, &root), ["a.md", "sub/b.txt", "sub/deep/c.jsonl"]);
        let skipped: Vec<(String, &SkipReason)> = found
            .skipped
            .iter()
            .map(|s| (s.path.file_name().unwrap().to_string_lossy().into_owned(), &s.reason))
            .collect();
        assert!(skipped.contains(&("h.png".into(), &SkipReason::UnsupportedType)));
        assert!(skipped.contains(&(
            "big.txt".into(),
            &SkipReason::TooLarge {
                bytes: 2000,
                limit: 1000
            }
        )));
    }

    #[test]
    fn globs_filter_and_explicit_files_are_always_taken() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        write(&root, "a.md", b"a");
        write(&root, "b.txt", b"b");
        write(&root, "notes/c.md", b"c");
        write(&root, ".secret.md", b"s");
        let options = WalkOptions {
            globs: vec!["*.md".into(), "!notes/**".into()],
            ..WalkOptions::default()
        };
        assert_eq!(
            names(&walk(std::slice::from_ref(&root), &options).unwrap(), &root),
            ["a.md"]
        );
        let explicit = walk(&[root.join(".secret.md")], &WalkOptions::default()).unwrap();
        assert_eq!(names(&explicit, &root), [".secret.md"]);
    }

    #[test]
    fn a_missing_root_is_an_error_naming_it() {
        let err = walk(&[PathBuf::from("/no/such/dir")], &WalkOptions::default()).unwrap_err();
        assert!(err.starts_with("/no/such/dir"), "{err}");
    }
}
