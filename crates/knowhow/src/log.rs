//! `knowhow log`: the audit log of answers, newest last.

use std::io::BufRead;
use std::process::ExitCode;

use anyhow::Context as _;
use knowhow_core::time::UtcDateTime;
use knowhow_rag::answer::AuditRecord;

use crate::{ask, output, Context};

#[derive(clap::Args)]
pub struct Args {
    /// Show the last N answers
    #[arg(short = 'l', long, default_value_t = 20, value_name = "N")]
    pub last: usize,
}

pub fn run(context: &Context, args: Args) -> anyhow::Result<ExitCode> {
    let path = ask::audit_log_path(context);
    let file = match std::fs::File::open(&path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if !context.json {
                outln!("no answers logged yet in namespace {}", context.collection.namespace);
            }
            return Ok(ExitCode::SUCCESS);
        }
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let mut records = Vec::new();
    for (number, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.with_context(|| format!("cannot read {}", path.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        // A line cut short by a crash is the only damage an append-only log
        // can take: report it and show the rest.
        match serde_json::from_str::<AuditRecord>(&line) {
            Ok(record) => records.push(record),
            Err(e) => eprintln!("warning: {} line {}: {e}", path.display(), number + 1),
        }
    }
    let first = records.len().saturating_sub(args.last);
    for record in &records[first..] {
        if context.json {
            output::json_line(&serde_json::to_value(record)?);
            continue;
        }
        let cited: Vec<String> = record
            .cited
            .iter()
            .map(|s| format!("[{}] {}", s.number, s.document_id))
            .collect();
        outln!(
            "{}  {}  {}{}  {} ms  prompt {}",
            UtcDateTime::from_unix(record.at).readable(),
            record.mode,
            record.model,
            record.adapter.as_ref().map(|a| format!(" +{a}")).unwrap_or_default(),
            record.latency_ms,
            &record.prompt_hash[..record.prompt_hash.len().min(12)],
        );
        outln!("  Q: {}", record.question);
        if record.abstained {
            outln!("  abstained; {} chunks retrieved", record.retrieved.len());
        } else {
            outln!(
                "  cited: {}; {} chunks retrieved",
                cited.join(", "),
                record.retrieved.len()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
