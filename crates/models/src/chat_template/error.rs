//! What goes wrong while loading or rendering a chat template.

/// Why a chat template could not be loaded or rendered. Messages name the file the template came from and, for
/// template errors, the line of the template.
#[derive(Debug, thiserror::Error)]
pub enum ChatTemplateError {
    /// A template or configuration file could not be read, or does not hold what it should: the crate's own file
    /// errors, which name the file (and the field). Boxed: the crate's error is large, and every render returns
    /// this type.
    #[error(transparent)]
    File(Box<crate::Error>),

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

impl From<crate::Error> for ChatTemplateError {
    fn from(error: crate::Error) -> ChatTemplateError {
        ChatTemplateError::File(Box::new(error))
    }
}
