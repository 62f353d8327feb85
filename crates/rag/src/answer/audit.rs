//! The audit log: one JSON line per answer, enough to tell afterwards what
//! was asked, what was retrieved and cited, and which model and prompt
//! answered.

use std::io::Write;
use std::path::{Path, PathBuf};

use knowhow_core::ChunkId;
use serde::Serialize;

use super::{Answer, AnswerError};

/// One line of the audit log.
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
pub struct AuditRecord {
    /// Seconds since the Unix epoch.
    pub at: u64,
    pub question: String,
    pub mode: String,
    pub retrieved: Vec<AuditChunk>,
    pub model: String,
    /// The fine-tuned adapter the model ran with, if any.
    pub adapter: Option<String>,
    pub prompt_hash: String,
    pub latency_ms: u64,
    pub abstained: bool,
    /// The sources cited.
    pub cited: Vec<AuditSource>,
    /// The public prefix of the API key the question came with (answers given by `knowhow serve`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// The audit log of a namespace in the home at `home_root`: one JSON line per answer, from the CLI and the server.
pub fn answers_log(home_root: &Path, namespace: &str) -> PathBuf {
    home_root.join("logs").join(namespace).join("answers.jsonl")
}

/// A retrieved chunk and its final score, written flat: `document_id`,
/// `ordinal`, `score`.
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
pub struct AuditChunk {
    #[serde(flatten)]
    pub id: ChunkId,
    pub score: f32,
}

#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
pub struct AuditSource {
    pub number: usize,
    pub document_id: String,
    pub ordinals: Vec<u32>,
}

impl Answer {
    /// The audit record of this answer.
    pub fn audit_record(&self, adapter: Option<String>) -> AuditRecord {
        AuditRecord {
            at: knowhow_core::time::unix_now(),
            question: self.question.clone(),
            mode: serde_json::to_value(self.mode)
                .ok()
                .and_then(|v| v.as_str().map(String::from))
                .unwrap_or_default(),
            retrieved: self
                .retrieved
                .iter()
                .map(|r| AuditChunk {
                    id: r.id.clone(),
                    score: r.score,
                })
                .collect(),
            model: self.model.clone(),
            adapter,
            prompt_hash: self.prompt_hash.clone(),
            latency_ms: self.latency_ms,
            abstained: self.abstained,
            cited: self
                .cited
                .iter()
                .map(|s| AuditSource {
                    number: s.number,
                    document_id: s.document_id.clone(),
                    ordinals: s.ordinals.clone(),
                })
                .collect(),
            key: None,
        }
    }
}

impl AuditRecord {
    /// Appends the record as one JSON line to `path` (created if missing).
    pub fn append_to(&self, path: &Path) -> Result<(), AnswerError> {
        let audit = |source| AnswerError::Audit {
            path: path.to_path_buf(),
            source,
        };
        let mut line = serde_json::to_vec(self).map_err(|e| audit(e.into()))?;
        line.push(b'\n');
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(audit)?;
        }
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(audit)?;
        // One write per line: concurrent appenders do not interleave lines.
        file.write_all(&line).map_err(audit)
    }
}
