//! The one shape every dataset row becomes: a conversation whose assistant turns say whether they are trained.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Who speaks a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
        }
    }
}

/// One message. `train` is true for assistant messages the loss is computed on (OpenAI's `"weight": 1`, the
/// default) and always false for system and user messages.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Message {
    pub role: Role,
    pub content: String,
    pub train: bool,
}

impl Message {
    pub fn system(content: impl Into<String>) -> Message {
        Message {
            role: Role::System,
            content: content.into(),
            train: false,
        }
    }

    pub fn user(content: impl Into<String>) -> Message {
        Message {
            role: Role::User,
            content: content.into(),
            train: false,
        }
    }

    /// A trained assistant message.
    pub fn assistant(content: impl Into<String>) -> Message {
        Message {
            role: Role::Assistant,
            content: content.into(),
            train: true,
        }
    }

    /// `{"role", "content"}`, the shape chat templates read.
    pub fn to_template_value(&self) -> serde_json::Value {
        serde_json::json!({ "role": self.role.as_str(), "content": self.content })
    }
}

/// How a message is written in the normalized files: OpenAI's chat fine-tuning shape, with `"weight": 0` only on
/// assistant messages that are not trained (weight 1 is the default there, so it is left out).
#[derive(Serialize)]
struct WireMessage<'a> {
    role: Role,
    content: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    weight: Option<u8>,
}

impl Serialize for Message {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        WireMessage {
            role: self.role,
            content: &self.content,
            weight: (self.role == Role::Assistant && !self.train).then_some(0),
        }
        .serialize(serializer)
    }
}

/// A dataset row after normalisation, whatever shape it was written in.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Conversation {
    pub messages: Vec<Message>,
}

impl Conversation {
    /// The row as one line of the normalized JSONL (no newline). Deterministic: the same conversation always gives
    /// the same bytes, which is what duplicate detection, the split order and the checksum rely on.
    pub fn to_json_line(&self) -> String {
        // Serializing strings, enums and small integers into a String cannot fail.
        serde_json::to_string(self).expect("a conversation always serializes")
    }

    /// sha256 of [`Conversation::to_json_line`]: equal for exactly the rows that normalize to the same conversation.
    pub fn hash(&self) -> [u8; 32] {
        Sha256::digest(self.to_json_line().as_bytes()).into()
    }

    /// Indices of the assistant messages the loss is computed on.
    pub fn trained_turns(&self) -> impl Iterator<Item = usize> + '_ {
        self.messages
            .iter()
            .enumerate()
            .filter(|(_, m)| m.train)
            .map(|(i, _)| i)
    }
}

/// The dataset checksum the adapter registry records: sha256 (lower-case hex) of the rows as written in normalized
/// JSONL, one line each ending in `\n` — so it equals `sha256sum` of a file [`super::split`] wrote.
pub fn checksum<'a>(rows: impl IntoIterator<Item = &'a Conversation>) -> String {
    let mut hasher = Sha256::new();
    for row in rows {
        hasher.update(row.to_json_line().as_bytes());
        hasher.update(b"\n");
    }
    hex(&hasher.finalize())
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut out, b| {
        let _ = write!(out, "{b:02x}");
        out
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weight_is_written_only_for_untrained_assistant_messages() {
        let mut skipped = Message::assistant("draft");
        skipped.train = false;
        let conversation = Conversation {
            messages: vec![
                Message::system("s"),
                Message::user("u"),
                skipped,
                Message::assistant("a"),
            ],
        };
        assert_eq!(
            conversation.to_json_line(),
            r#"{"messages":[{"role":"system","content":"s"},{"role":"user","content":"u"},{"role":"assistant","content":"draft","weight":0},{"role":"assistant","content":"a"}]}"#
        );
        assert_eq!(conversation.trained_turns().collect::<Vec<_>>(), vec![3]);
    }

    #[test]
    fn checksum_is_sha256_of_the_written_lines() {
        let rows = [Conversation {
            messages: vec![Message::user("q"), Message::assistant("a")],
        }];
        let text = format!("{}\n", rows[0].to_json_line());
        assert_eq!(checksum(&rows), hex(&Sha256::digest(text.as_bytes())));
        assert_eq!(checksum(&rows).len(), 64);
        assert_ne!(checksum(&rows), checksum(&[]));
    }
}
