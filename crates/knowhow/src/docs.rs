//! `knowhow docs`: what the collection holds.

use std::process::ExitCode;

use anyhow::bail;
use knowhow_index::Catalog;
use serde_json::json;

use crate::output;
use crate::Context;

#[derive(clap::Subcommand)]
pub enum Command {
    /// List documents (id, title, source, chunks)
    List,
    /// Show one document: metadata, sections, and its chunks
    Show {
        /// Document id, or its source path
        id: String,
        /// Print each chunk's text too
        #[arg(long)]
        chunks: bool,
    },
    /// Remove documents (ingesting their source again brings them back)
    Rm {
        /// Document ids or source paths
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Verify that the store and the search index agree
    Check,
}

pub fn run(context: &Context, command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::List => list(context),
        Command::Show { id, chunks } => show(context, &id, chunks),
        Command::Rm { ids } => rm(context, &ids),
        Command::Check => check(context),
    }
}

fn list(context: &Context) -> anyhow::Result<ExitCode> {
    let catalog = context.home.open_catalog(&context.collection)?;
    let documents = catalog.documents()?;
    if context.json {
        let rows: Vec<serde_json::Value> = documents
            .iter()
            .map(|s| {
                json!({"id": s.document.id, "title": s.document.title, "source": s.document.source,
                       "chunks": s.chunk_count, "hash": s.document.hash, "ingested_at": s.ingested_at})
            })
            .collect();
        output::json_line(&json!({"collection": context.collection.to_string(), "documents": rows}));
        return Ok(ExitCode::SUCCESS);
    }
    for s in &documents {
        outln!(
            "{}  {:>4} chunks  {}  ({})",
            s.document.id,
            s.chunk_count,
            s.document.title,
            s.document.source
        );
    }
    outln!("{} documents in {}", documents.len(), context.collection);
    Ok(ExitCode::SUCCESS)
}

/// Finds a document by id, or by source path when exactly one document has it.
fn resolve(catalog: &Catalog, key: &str) -> anyhow::Result<Option<String>> {
    if catalog.document(key)?.is_some() {
        return Ok(Some(key.to_string()));
    }
    let absolute = std::fs::canonicalize(key)
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    let ids: Vec<String> = catalog
        .sources()?
        .into_iter()
        .filter(|(source, _)| source == key || *source == absolute)
        .flat_map(|(_, record)| record.document_ids)
        .collect();
    match ids.len() {
        0 => Ok(None),
        1 => Ok(ids.into_iter().next()),
        n => bail!("{key} holds {n} documents (rows); name one by id"),
    }
}

fn show(context: &Context, key: &str, with_chunks: bool) -> anyhow::Result<ExitCode> {
    let catalog = context.home.open_catalog(&context.collection)?;
    let Some(id) = resolve(&catalog, key)? else {
        bail!("no document {key:?} in {}", context.collection);
    };
    let Some((stored, chunks)) = catalog.document(&id)? else {
        bail!("no document {key:?} in {}", context.collection);
    };
    let doc = &stored.document;
    if context.json {
        let chunks: Vec<serde_json::Value> = chunks
            .iter()
            .map(|c| {
                let at = &c.location;
                json!({"ordinal": c.id.ordinal, "heading_path": at.heading_path, "pages": at.pages,
                       "start": at.start, "end": at.end, "char_start": at.char_start, "char_end": at.char_end,
                       "tokens": c.tokens, "text": c.text})
            })
            .collect();
        output::json_line(&json!({
            "id": doc.id, "title": doc.title, "source": doc.source, "hash": doc.hash,
            "metadata": doc.metadata, "sections": doc.sections, "pages": doc.pages,
            "characters": doc.text.chars().count(), "ingested_at": stored.ingested_at, "chunks": chunks,
        }));
        return Ok(ExitCode::SUCCESS);
    }
    outln!(
        "{}\n  id: {}\n  source: {}\n  hash: {}",
        doc.title,
        doc.id,
        doc.source,
        doc.hash
    );
    outln!(
        "  {} characters, {} sections, {} pages, {} chunks",
        doc.text.chars().count(),
        doc.sections.len(),
        doc.pages.len(),
        chunks.len()
    );
    for (key, value) in &doc.metadata {
        outln!("  {key}: {value}");
    }
    for c in &chunks {
        let at = &c.location;
        let heading = if at.heading_path.is_empty() {
            String::new()
        } else {
            format!("  {}", at.heading_path.join(" › "))
        };
        let pages = at.pages.map(|(a, b)| format!("  pp. {a}-{b}")).unwrap_or_default();
        outln!(
            "  chunk {}: chars {}..{}, {} tokens{heading}{pages}",
            c.id.ordinal,
            at.char_start,
            at.char_end,
            c.tokens
        );
        if with_chunks {
            outln!("{}\n", c.text);
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn rm(context: &Context, keys: &[String]) -> anyhow::Result<ExitCode> {
    let ids: Vec<(String, Option<String>)> = {
        let catalog = context.home.open_catalog(&context.collection)?;
        keys.iter()
            .map(|k| Ok((k.clone(), resolve(&catalog, k)?)))
            .collect::<anyhow::Result<_>>()?
    };
    let mut writer = context.home.open_writer(&context.collection, false)?;
    let mut missing = 0;
    for (key, id) in ids {
        let removed = match &id {
            Some(id) => writer.remove_document(id)?,
            None => false,
        };
        missing += u32::from(!removed);
        if context.json {
            output::json_line(&json!({"key": key, "id": id, "removed": removed}));
        } else if removed {
            outln!("removed {}", id.unwrap_or_default());
        } else {
            eprintln!("no document {key:?} in {}", context.collection);
        }
    }
    writer.finish()?;
    Ok(if missing == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}

fn check(context: &Context) -> anyhow::Result<ExitCode> {
    // Opening a reader first replays anything the index lacks after a crash.
    drop(context.home.open_reader(&context.collection)?);
    let report = context.home.open_catalog(&context.collection)?.check()?;
    if context.json {
        output::json_line(&serde_json::to_value(&report)?);
    } else {
        outln!(
            "{}: {} documents, {} chunks, {} vectors",
            context.collection,
            report.documents,
            report.chunks,
            report.vectors
        );
        for problem in &report.problems {
            outln!("  problem: {problem}");
        }
        if report.problems.is_empty() {
            outln!("store, lexical index and vectors agree");
        }
    }
    Ok(if report.problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(3)
    })
}
