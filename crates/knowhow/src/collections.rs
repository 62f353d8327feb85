//! `knowhow collections`: the collections of a namespace.

use std::process::ExitCode;

use anyhow::bail;
use knowhow_core::CollectionRef;
use serde_json::json;

use crate::output;
use crate::Context;

#[derive(clap::Subcommand)]
pub enum Command {
    /// List collections (all namespaces with --all)
    List {
        #[arg(long)]
        all: bool,
    },
    /// Create an empty collection in the namespace
    Create { name: String },
    /// Delete a collection and everything in it
    Drop {
        name: String,
        /// Confirm the deletion (required)
        #[arg(long)]
        yes: bool,
    },
}

pub fn run(context: &Context, command: Command) -> anyhow::Result<ExitCode> {
    let namespace = &context.collection.namespace;
    match command {
        Command::List { all } => {
            let collections: Vec<CollectionRef> = context
                .home
                .list()?
                .into_iter()
                .filter(|c| all || &c.namespace == namespace)
                .collect();
            if context.json {
                let rows: Vec<_> = collections
                    .iter()
                    .map(|c| json!({"namespace": c.namespace, "collection": c.collection}))
                    .collect();
                output::json_line(&json!({"collections": rows}));
            } else {
                for c in &collections {
                    outln!("{c}");
                }
            }
        }
        Command::Create { name } => {
            let c = CollectionRef::new(namespace, &name)?;
            context.home.create(&c)?;
            if context.json {
                output::json_line(&json!({"created": c.to_string()}));
            } else {
                outln!("created {c}");
            }
        }
        Command::Drop { name, yes } => {
            let c = CollectionRef::new(namespace, &name)?;
            if !yes {
                bail!("dropping {c} deletes all its documents: pass --yes to confirm");
            }
            context.home.drop_collection(&c)?;
            if context.json {
                output::json_line(&json!({"dropped": c.to_string()}));
            } else {
                outln!("dropped {c}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
