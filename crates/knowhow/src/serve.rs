//! `knowhow serve`: the knowledge base and the models over HTTP (see `knowhow_server`).

use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use knowhow_rag::llm::local::LocalChatModel;
use knowhow_rag::llm::ChatModel;
use knowhow_server::chat::adapters::{Adapters, LoadAdapter, ServedAdapter};
use knowhow_server::chat::ChatBackend;
use knowhow_server::log::{self, Level, LogFormat};
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
    /// LoRA adapter served over the local --llm model, as model NAME (repeatable): a name from
    /// `knowhow adapters list` (NAME or NAME@N), or a PEFT adapter folder. Loaded on first use
    #[arg(long = "adapter", value_name = "NAME")]
    adapters: Vec<String>,
    /// Memory the loaded adapters may take together, in MiB; past it the one used longest ago is let go
    #[arg(long, default_value_t = 2048, value_name = "MIB")]
    adapter_memory_mib: u64,
    /// Cross-encoder served on /v1/rerank (TEI's shape) and for the rerank mode: a name, a folder, or
    /// tei:URL, cohere:URL#MODEL, jina:URL#MODEL [default: none]
    #[arg(long, value_name = "MODEL")]
    rerank_model: Option<String>,
    /// Embedding model served on /v1/embeddings: a name, a folder, or openai:BASE_URL#MODEL
    #[arg(long, default_value = knowhow_hub::DEFAULT_EMBEDDING_MODEL, value_name = "MODEL")]
    embed_model: String,
    /// Texts per embedding batch
    #[arg(long, default_value_t = 32, value_name = "N")]
    embed_batch: usize,
    /// Requests waiting for a thread beyond which the server answers 503 with retry-after
    #[arg(long, default_value_t = 64, value_name = "N")]
    queue: usize,
    /// Threads answering search, ask and embeddings; the embedding model embeds what they wait for together,
    /// so more concurrent requests make bigger, cheaper batches
    #[arg(long, default_value_t = ServeOptions::default().retrieval_threads, value_name = "N")]
    retrieval_threads: usize,
    /// How the log on stderr is written: text for a person, json for a log collector (one object per line,
    /// every request included)
    #[arg(long, value_enum, default_value_t = LogFormatArg::Text, value_name = "FORMAT")]
    log_format: LogFormatArg,
    /// Largest request body accepted, in bytes (larger ones are answered 413)
    #[arg(long, default_value_t = ServeOptions::default().max_body_bytes, value_name = "BYTES")]
    max_body_bytes: usize,
    /// Largest document upload accepted, all its files together, in bytes (larger ones are answered 413)
    #[arg(long, default_value_t = ServeOptions::default().max_upload_bytes, value_name = "BYTES")]
    max_upload_bytes: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum LogFormatArg {
    Text,
    Json,
}

pub fn run(context: &Context, args: Args) -> anyhow::Result<ExitCode> {
    log::set_format(match args.log_format {
        LogFormatArg::Text => LogFormat::Text,
        LogFormatArg::Json => LogFormat::Json,
    });
    let options = ServeOptions {
        listen: args.listen,
        queue: args.queue,
        retrieval_threads: args.retrieval_threads,
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
    } else {
        let message = if keys.is_empty() {
            format!("listening on http://{address} without API keys (loopback only; Ctrl-C stops)")
        } else {
            format!("listening on http://{address}; every /v1 request needs an API key (Ctrl-C stops)")
        };
        let fields = json!({"address": format!("http://{address}"), "keys": !keys.is_empty()});
        log::event(Level::Info, "listening", &message, fields);
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
        let adapters = args.adapters.clone();
        let adapter_budget = args.adapter_memory_mib.saturating_mul(1 << 20);
        let rerank_model = args.rerank_model.clone();
        std::thread::spawn(move || {
            let loaded = load_chat(&resolve_context, llm.as_deref(), &adapters, adapter_budget).and_then(|chat| {
                let reranker = rerank_model
                    .map(|spec| {
                        let resolve = embedding::resolve_options(&resolve_context, true);
                        knowhow_rag::load_reranker(&spec, &resolve).with_context(|| format!("cannot serve {spec}"))
                    })
                    .transpose()?;
                let embedder =
                    embedding::load(&resolve_context, &spec, batch).with_context(|| format!("cannot serve {spec}"))?;
                Ok((chat, reranker, embedder))
            });
            match loaded {
                Ok((chat, reranker, embedder)) => {
                    let chatting = chat
                        .as_ref()
                        .map(|c| format!(", chatting as {}", c.id))
                        .unwrap_or_default();
                    let message = format!("ready, embedding with {}{chatting}", embedder.pin);
                    let fields = json!({"embedding": embedder.pin.id, "chat": chat.as_ref().map(|c| &c.id)});
                    if let Some(chat) = chat {
                        readiness.set_chat(chat);
                    }
                    if let Some(reranker) = reranker {
                        readiness.set_reranker(reranker);
                    }
                    readiness.set_embedder(embedder);
                    // Said once it is true: a client that waits for this line may send at once.
                    if !resolve_context.json {
                        log::event(Level::Info, "ready", &message, fields);
                    }
                }
                Err(error) => {
                    *failure.lock().expect("no panic holds it") = Some(error);
                    let _ = failed.send(());
                }
            }
        });
    }
    // Ctrl-C, or SIGTERM (what a service manager or a container runtime sends): stop taking connections, finish
    // the requests in flight, then exit.
    let shutdown = async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            () = terminated() => {}
            Ok(()) = on_failure => {}
        }
    };
    server.run(shutdown).await?;
    if let Some(error) = failure.lock().expect("no panic holds it").take() {
        return Err(error);
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(unix)]
async fn terminated() {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut signal) => {
            signal.recv().await;
        }
        Err(_) => std::future::pending().await,
    }
}

#[cfg(not(unix))]
async fn terminated() {
    std::future::pending().await
}

/// The `--llm` model with its id in `/v1/models` (`local` for a local folder, the model's name for a remote one),
/// and the `--adapter`s served over it.
fn load_chat(
    context: &Context,
    spec: Option<&str>,
    adapters: &[String],
    adapter_budget: u64,
) -> anyhow::Result<Option<ChatBackend>> {
    let Some(spec) = spec else {
        if !adapters.is_empty() {
            anyhow::bail!("--adapter needs the base model it adapts: add --llm local:MODEL_FOLDER");
        }
        return Ok(None);
    };
    if let Some(folder) = spec.strip_prefix("local:") {
        let base =
            LocalChatModel::load(Path::new(folder), None).with_context(|| format!("cannot serve --llm {spec}"))?;
        // Hashing the base weights reads the whole model: once per start, however many adapters check it.
        let mut base_sha256 = None;
        let served = adapters
            .iter()
            .map(|adapter| served_adapter(context, adapter, base.dir(), &mut base_sha256))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let over = base.share_base();
        let load: LoadAdapter =
            Box::new(move |dir: &Path| Ok(Box::new(over.with_adapter(dir)?) as Box<dyn ChatModel + Send>));
        let mut backend = ChatBackend::new("local".to_string(), Box::new(base));
        backend.adapters = Adapters::new(served, adapter_budget, load);
        return Ok(Some(backend));
    }
    if !adapters.is_empty() {
        anyhow::bail!("--adapter needs a local base model (--llm local:MODEL_FOLDER); a remote server applies its own");
    }
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
    let remote = spec.strip_prefix("openai:").unwrap_or(spec);
    let id = remote.rsplit_once('#').map_or(remote, |(_, model)| model).to_string();
    Ok(Some(ChatBackend::new(id, model)))
}

/// What `--adapter NAME` serves: the registered adapter (or folder) it names, checked against the base model it
/// was trained on when its card records one, so that an adapter never runs over weights it was not trained for.
/// `base_sha256` caches the base weights' hash between calls.
fn served_adapter(
    context: &Context,
    adapter: &str,
    base: &Path,
    base_sha256: &mut Option<String>,
) -> anyhow::Result<ServedAdapter> {
    let dir = knowhow_tune::registry::resolve_adapter(context.home.root(), adapter)?;
    let weights = dir.join(knowhow_models::decoder::peft::ADAPTER_WEIGHTS);
    let bytes = std::fs::metadata(&weights)
        .with_context(|| format!("--adapter {adapter}: cannot read {}", weights.display()))?
        .len();
    let (name, version) = match knowhow_tune::registry::read_card(&dir) {
        Ok(card) => {
            let base_sha256 = match base_sha256 {
                Some(hash) => hash.clone(),
                None => base_sha256
                    .insert(knowhow_tune::registry::weights_sha256(base)?)
                    .clone(),
            };
            if card.base_model.sha256 != base_sha256 {
                anyhow::bail!(
                    "--adapter {adapter} was trained on {} (weights sha256 {}), not on the --llm model {} ({}); \
                     serve it over its own base model",
                    card.base_model.path,
                    card.base_model.sha256,
                    base.display(),
                    base_sha256
                );
            }
            (card.name, Some(card.version))
        }
        // A PEFT folder from elsewhere: named after its folder.
        Err(_) => {
            let name = dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            (name, None)
        }
    };
    Ok(ServedAdapter {
        name,
        version,
        dir,
        bytes,
    })
}
