//! `knowhow serve`: the knowledge base and the models over HTTP (see `knowhow_server`).

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use knowhow_server::chat::ChatBackend;
use knowhow_server::{ServeOptions, Server};
use serde_json::json;

use crate::{embedding, output, Context};

#[derive(clap::Args)]
pub struct Args {
    /// Address to listen on; port 0 picks a free one. Beyond loopback only once `knowhow keys create` has made
    /// a key: a server without keys must not answer the network
    #[arg(long, default_value = "127.0.0.1:8080", value_name = "ADDRESS")]
    listen: SocketAddr,
    /// Chat model served on /v1/chat/completions (and behind the rag:COLLECTION models): local:MODEL_FOLDER
    /// (model id `local`) or openai:BASE_URL#MODEL (model id MODEL) [default: no chat model]
    #[arg(long, env = "KNOWHOW_LLM", value_name = "SPEC")]
    llm: Option<String>,
    /// Embedding model served on /v1/embeddings: a name, a folder, or openai:BASE_URL#MODEL
    #[arg(long, default_value = knowhow_hub::DEFAULT_EMBEDDING_MODEL, value_name = "MODEL")]
    embed_model: String,
    /// Texts per embedding batch
    #[arg(long, default_value_t = 32, value_name = "N")]
    embed_batch: usize,
    /// Requests waiting for a model worker beyond which the server answers 503 with retry-after
    #[arg(long, default_value_t = 64, value_name = "N")]
    queue: usize,
    /// Largest request body accepted, in bytes (larger ones are answered 413)
    #[arg(long, default_value_t = ServeOptions::default().max_body_bytes, value_name = "BYTES")]
    max_body_bytes: usize,
    /// Largest document upload accepted, all its files together, in bytes (larger ones are answered 413)
    #[arg(long, default_value_t = ServeOptions::default().max_upload_bytes, value_name = "BYTES")]
    max_upload_bytes: usize,
}

pub fn run(context: &Context, args: Args) -> anyhow::Result<ExitCode> {
    let options = ServeOptions {
        listen: args.listen,
        queue: args.queue,
        max_body_bytes: args.max_body_bytes,
        max_upload_bytes: args.max_upload_bytes,
        ..ServeOptions::default()
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(serve(context, &args, &options))
}

async fn serve(context: &Context, args: &Args, options: &ServeOptions) -> anyhow::Result<ExitCode> {
    let server = match Server::bind(options, context.home.clone()).await {
        Err(error @ knowhow_server::ServeError::NotLoopback(_)) => {
            let error = output::fail(&anyhow::Error::from(error));
            eprintln!("hint: `knowhow keys create --namespace NS` makes a key; then every request needs one");
            return Ok(error);
        }
        other => other?,
    };
    let address = server.local_addr()?;
    let keys = knowhow_server::keys::KeyStore::in_home(context.home.root()).list()?;
    if context.json {
        output::json_line(&json!({"listening": format!("http://{address}"), "keys": !keys.is_empty()}));
    } else if keys.is_empty() {
        eprintln!("knowhow serve: listening on http://{address} without API keys (loopback only; Ctrl-C stops)");
    } else {
        eprintln!("knowhow serve: listening on http://{address}; every /v1 request needs an API key (Ctrl-C stops)");
    }
    // The model loads beside the server, which answers /health (and 503 on /ready) meanwhile; a model that cannot
    // load stops the server with its error.
    let failure: Arc<Mutex<Option<anyhow::Error>>> = Arc::default();
    let (failed, on_failure) = tokio::sync::oneshot::channel::<()>();
    {
        let readiness = server.readiness();
        let failure = failure.clone();
        let spec = args.embed_model.clone();
        let batch = args.embed_batch;
        let resolve_context = context.clone();
        let llm = args.llm.clone();
        std::thread::spawn(move || {
            let loaded = load_chat(&resolve_context, llm.as_deref()).and_then(|chat| {
                let embedder =
                    embedding::load(&resolve_context, &spec, batch).with_context(|| format!("cannot serve {spec}"))?;
                Ok((chat, embedder))
            });
            match loaded {
                Ok((chat, embedder)) => {
                    if !resolve_context.json {
                        let chatting = chat
                            .as_ref()
                            .map(|c| format!(", chatting as {}", c.id))
                            .unwrap_or_default();
                        eprintln!("knowhow serve: ready, embedding with {}{chatting}", embedder.pin);
                    }
                    if let Some(chat) = chat {
                        readiness.set_chat(chat);
                    }
                    readiness.set_embedder(embedder);
                }
                Err(error) => {
                    *failure.lock().expect("no panic holds it") = Some(error);
                    let _ = failed.send(());
                }
            }
        });
    }
    let shutdown = async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            Ok(()) = on_failure => {}
        }
    };
    server.run(shutdown).await?;
    if let Some(error) = failure.lock().expect("no panic holds it").take() {
        return Err(error);
    }
    Ok(ExitCode::SUCCESS)
}

/// The `--llm` model with its id in `/v1/models`: `local` for a local folder, the model's name for a remote one.
fn load_chat(context: &Context, spec: Option<&str>) -> anyhow::Result<Option<ChatBackend>> {
    let Some(spec) = spec else {
        return Ok(None);
    };
    let generation = crate::llm::GenerationArgs {
        max_tokens: 512,
        temperature: 0.0,
        top_p: 1.0,
        seed: None,
        stop: Vec::new(),
        context_tokens: 8192,
        adapter: None,
    };
    let loaded =
        crate::llm::load(context, Some(spec), &generation).with_context(|| format!("cannot serve --llm {spec}"))?;
    let Some(model) = loaded else {
        return Ok(None);
    };
    let id = match spec.strip_prefix("openai:") {
        Some(remote) => remote.rsplit_once('#').map_or(remote, |(_, model)| model).to_string(),
        None => "local".to_string(),
    };
    Ok(Some(ChatBackend {
        id,
        model: std::sync::Mutex::new(model),
    }))
}
