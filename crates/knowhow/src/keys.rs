//! `knowhow keys`: the API keys `knowhow serve` accepts (see `knowhow_server::keys`).

use std::process::ExitCode;

use knowhow_core::time::UtcDateTime;
use knowhow_server::keys::{parse_expiry, KeyRecord, KeyStore, NewKey, Role};
use serde_json::json;

use crate::{output, Context};

#[derive(clap::Subcommand)]
pub enum Command {
    /// Make a key for the namespace (--namespace) and print it once (only its SHA-256 is kept)
    Create {
        /// Another namespace the key may use (repeatable); a request then names one with ?namespace=NS
        #[arg(long = "also", value_name = "NS")]
        also: Vec<String>,
        /// read: search, ask, chat, embed; write: also upload and delete documents; admin: also create and drop
        /// collections
        #[arg(long, default_value = "read", value_parser = ["read", "write", "admin"])]
        role: String,
        /// Requests per minute the key may make (answered 429 with retry-after beyond) [default: no limit]
        #[arg(long, value_name = "N")]
        rpm: Option<u32>,
        /// Last day the key works, YYYY-MM-DD (UTC) [default: never expires]
        #[arg(long, value_name = "DATE")]
        expires: Option<String>,
    },
    /// List the keys: prefix, namespaces, role, limits, state (never the keys themselves)
    List,
    /// Revoke a key by its prefix; a running server refuses it from its next request
    Revoke {
        /// The key's prefix as `keys list` shows it (or the whole key)
        prefix: String,
    },
}

pub fn run(context: &Context, command: Command) -> anyhow::Result<ExitCode> {
    let store = KeyStore::in_home(context.home.root());
    match command {
        Command::Create {
            also,
            role,
            rpm,
            expires,
        } => {
            let expires = expires
                .map(|d| parse_expiry(&d))
                .transpose()
                .map_err(anyhow::Error::msg)?;
            let role: Role = role.parse().map_err(anyhow::Error::msg)?;
            let mut namespaces = vec![context.collection.namespace.clone()];
            namespaces.extend(also.into_iter().filter(|ns| *ns != context.collection.namespace));
            let (key, record) = store.create(&NewKey {
                namespaces,
                role,
                rpm,
                expires,
            })?;
            if context.json {
                let mut value = record_json(&record);
                value["key"] = json!(key);
                output::json_line(&value);
            } else {
                outln!("{key}");
                eprintln!(
                    "created {} ({} in {}): this is the only time the key is shown; keep it safe",
                    record.prefix,
                    record.role.name(),
                    record.namespaces.join(", ")
                );
            }
        }
        Command::List => {
            let records = store.list()?;
            if context.json {
                let rows: Vec<serde_json::Value> = records.iter().map(record_json).collect();
                output::json_line(&json!({"keys": rows}));
                return Ok(ExitCode::SUCCESS);
            }
            if records.is_empty() {
                outln!(
                    "no API keys: `knowhow serve` answers loopback only; `knowhow keys create --namespace NS` makes one"
                );
            }
            for record in &records {
                outln!(
                    "{}  {:<5}  {:<8}  {:<12}  {}",
                    record.prefix,
                    record.role.name(),
                    state(record),
                    record.rpm.map_or("no limit".into(), |rpm| format!("{rpm}/min")),
                    record.namespaces.join(", ")
                );
            }
        }
        Command::Revoke { prefix } => {
            let record = store.revoke(&prefix)?;
            if context.json {
                output::json_line(&record_json(&record));
            } else {
                outln!("revoked {}", record.prefix);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn state(record: &KeyRecord) -> &'static str {
    match (record.revoked, record.active(knowhow_core::time::unix_now())) {
        (Some(_), _) => "revoked",
        (None, false) => "expired",
        (None, true) => "active",
    }
}

fn record_json(record: &KeyRecord) -> serde_json::Value {
    let date = |seconds: u64| UtcDateTime::from_unix(seconds).rfc3339();
    json!({
        "prefix": record.prefix,
        "namespaces": record.namespaces,
        "role": record.role,
        "rpm": record.rpm,
        "expires": record.expires.map(date),
        "created": date(record.created),
        "revoked": record.revoked.map(date),
        "state": state(record),
    })
}
