//! `metrics.jsonl`: one JSON line per optimizer step, appended and flushed as the run goes, so a crashed or
//! interrupted run leaves its curve behind; a resumed run rewinds it to its checkpoint.

use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{io_error, TrainError};

/// The metrics log inside the output directory.
pub const METRICS_FILE: &str = "metrics.jsonl";

/// One line of `metrics.jsonl`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MetricsLine {
    pub step: usize,
    pub epoch: f64,
    pub loss: f64,
    pub lr: f64,
    pub grad_norm: f64,
    /// Tokens (as the loss closure counts them) in this step.
    pub tokens: usize,
    /// This step's tokens over this step's training time.
    pub tokens_per_s: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub val_loss: Option<f64>,
    pub elapsed_s: f64,
}

/// The open log of a run.
pub(super) struct MetricsLog {
    path: PathBuf,
    file: File,
}

impl MetricsLog {
    /// Opens the log for appending. A fresh run (`resumed_at` = `None`) starts it empty; a resumed one keeps the
    /// lines up to the checkpoint's step, dropping those of steps that will be trained again.
    pub(super) fn open(output_dir: &Path, resumed_at: Option<usize>) -> Result<MetricsLog, TrainError> {
        let path = output_dir.join(METRICS_FILE);
        match resumed_at {
            Some(step) if path.exists() => {
                let reader = BufReader::new(File::open(&path).map_err(io_error(&path))?);
                let mut kept = String::new();
                for line in reader.lines() {
                    let line = line.map_err(io_error(&path))?;
                    let line_step = serde_json::from_str::<MetricsLine>(&line).map(|metrics| metrics.step);
                    if line_step.is_ok_and(|line_step| line_step <= step) {
                        kept.push_str(&line);
                        kept.push('\n');
                    }
                }
                let staging = output_dir.join(format!(".tmp-{METRICS_FILE}"));
                fs::write(&staging, kept).map_err(io_error(&staging))?;
                fs::rename(&staging, &path).map_err(io_error(&path))?;
            }
            _ => {
                File::create(&path).map_err(io_error(&path))?;
            }
        }
        let file = OpenOptions::new().append(true).open(&path).map_err(io_error(&path))?;
        Ok(MetricsLog { path, file })
    }

    /// Appends `line` and flushes it.
    pub(super) fn append(&mut self, line: &MetricsLine) -> Result<(), TrainError> {
        let mut text = serde_json::to_string(line).map_err(|source| TrainError::StateJson {
            path: self.path.clone(),
            source,
        })?;
        text.push('\n');
        self.file
            .write_all(text.as_bytes())
            .and_then(|()| self.file.flush())
            .map_err(io_error(&self.path))
    }
}
