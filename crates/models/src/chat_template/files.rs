//! Reading a model folder's templates and special tokens: `chat_template.jinja`, `additional_chat_templates/`,
//! `tokenizer_config.json` and `special_tokens_map.json`.

use std::path::Path;

use serde_json::{Map, Value as Json};

/// `chat_template.jinja` (as `default`) and `additional_chat_templates/NAME.jinja`, as `(name, text, origin)`.
pub(super) fn template_files(dir: &Path) -> Result<Vec<(String, String, String)>, crate::Error> {
    let mut files = Vec::new();
    let main = dir.join("chat_template.jinja");
    if main.is_file() {
        files.push(("default".to_string(), main));
    }
    let extra_dir = dir.join("additional_chat_templates");
    if extra_dir.is_dir() {
        let entries = std::fs::read_dir(&extra_dir).map_err(|source| crate::Error::Read {
            path: extra_dir.clone(),
            source,
        })?;
        let mut extra = Vec::new();
        for entry in entries {
            let path = entry
                .map_err(|source| crate::Error::Read {
                    path: extra_dir.clone(),
                    source,
                })?
                .path();
            let name = path.file_name().and_then(|name| name.to_str()).unwrap_or_default();
            if let Some(stem) = name.strip_suffix(".jinja") {
                extra.push((stem.to_string(), path.clone()));
            }
        }
        extra.sort();
        files.extend(extra);
    }
    files
        .into_iter()
        .map(|(name, path)| {
            let text = std::fs::read_to_string(&path).map_err(|source| crate::Error::Read {
                path: path.clone(),
                source,
            })?;
            Ok((name, text, path.display().to_string()))
        })
        .collect()
}

/// `chat_template` of `tokenizer_config.json`: a string, or a list of `{"name", "template"}`.
pub(super) fn config_templates(
    path: &Path,
    config: &Map<String, Json>,
) -> Result<Vec<(String, String, String)>, crate::Error> {
    let problem = |problem: &str| crate::Error::Config {
        path: path.to_owned(),
        field: "chat_template".into(),
        problem: problem.into(),
    };
    match config.get("chat_template") {
        None | Some(Json::Null) => Ok(Vec::new()),
        Some(Json::String(text)) => Ok(vec![(
            "default".to_string(),
            text.clone(),
            format!("{} (`chat_template`)", path.display()),
        )]),
        Some(Json::Array(entries)) => entries
            .iter()
            .map(|entry| {
                let name = entry.get("name").and_then(Json::as_str);
                let template = entry.get("template").and_then(Json::as_str);
                match (name, template) {
                    (Some(name), Some(template)) => Ok((
                        name.to_string(),
                        template.to_string(),
                        format!("{} (`chat_template` named {name:?})", path.display()),
                    )),
                    _ => Err(problem("has an entry without a string `name` and `template`")),
                }
            })
            .collect(),
        Some(_) => Err(problem(
            "must be a template string or a list of {\"name\", \"template\"} objects",
        )),
    }
}

/// A special token written as a string or as a serialized `AddedToken` (`{"content": "<s>", ...}`).
pub(super) fn special_token(path: &Path, key: &str, value: &Json) -> Result<Option<String>, crate::Error> {
    match value {
        Json::Null => Ok(None),
        Json::String(token) => Ok(Some(token.clone())),
        Json::Object(fields) => match fields.get("content") {
            Some(Json::String(token)) => Ok(Some(token.clone())),
            _ => Err(crate::Error::Config {
                path: path.to_owned(),
                field: key.into(),
                problem: "is an object without a string `content`".into(),
            }),
        },
        _ => Err(crate::Error::Config {
            path: path.to_owned(),
            field: key.into(),
            problem: "must be a string or an AddedToken object".into(),
        }),
    }
}

pub(super) fn read_optional_json_object(path: &Path) -> Result<Option<Map<String, Json>>, crate::Error> {
    if !path.is_file() {
        return Ok(None);
    }
    let bytes = std::fs::read(path).map_err(|source| crate::Error::Read {
        path: path.to_owned(),
        source,
    })?;
    let json: Json = serde_json::from_slice(&bytes).map_err(|source| crate::Error::Json {
        path: path.to_owned(),
        source,
    })?;
    match json {
        Json::Object(map) => Ok(Some(map)),
        _ => Err(crate::Error::Config {
            path: path.to_owned(),
            field: "(top level)".into(),
            problem: "must be a JSON object".into(),
        }),
    }
}
