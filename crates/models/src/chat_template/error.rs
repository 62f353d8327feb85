//! What goes wrong while loading or rendering a chat template.

use std::path::PathBuf;

/// Why a chat template could not be loaded or rendered. Messages name the file the template came from and, for
/// template errors, the line of the template.
#[derive(Debug, thiserror::Error)]
pub enum ChatTemplateError {
    #[error("cannot read {}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },

    #[error("{} is not valid JSON: {source}", path.display())]
    Json { path: PathBuf, source: serde_json::Error },

    #[error("{}: `{field}` {problem}", path.display())]
    Config {
        path: PathBuf,
        field: String,
        problem: String,
    },

    /// The template text does not parse.
    #[error("{origin}, template line {line}: {message}; fix the template or pass another one")]
    Syntax {
        origin: String,
        line: usize,
        message: String,
    },

    /// The template failed while rendering (an undefined value used, a type error).
    #[error("{origin}, template line {line}: {message}")]
    Render {
        origin: String,
        line: usize,
        message: String,
    },

    /// The template itself refused the conversation with `raise_exception(...)`, e.g. roles that do not
    /// alternate.
    #[error("{origin}, template line {line}: the chat template refused the conversation: {message}")]
    Raised {
        origin: String,
        line: usize,
        message: String,
    },

    /// The input is not what templates take (a message that is not a JSON object, no template for the request).
    #[error("{origin}: {problem}")]
    Input { origin: String, problem: String },
}
