//! `POST /v1/chat/completions`, as OpenAI defines it, over the served chat model (`--llm`), and over the
//! knowledge base: `model: "rag:COLLECTION"` (or a `"knowhow": {"collection", "mode", "k"}` extension object)
//! answers from the collection in the caller's namespace, with `[n]` markers in the text and `citations` on the
//! message, which plain OpenAI clients ignore.
//!
//! Generation runs on a model worker; its text reaches the client as it is written. A client that hangs up
//! raises the generation's [`Cancellation`], and the worker is free again after at most one more token.

pub mod adapters;
mod stream;
mod wire;

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use knowhow_core::{Cancellation, CollectionRef};
use knowhow_rag::answer::{answer, Answer, AnswerEvent, AnswerMode, AnswerOptions, Backend, PromptTemplates};
use knowhow_rag::llm::{ChatModel, ChatResponse, FinishReason, GenerationOptions, LlmError, Message, Role, Tool};
use knowhow_rag::{Mode, Options, Retriever};
use serde_json::{json, Value};

use crate::auth::Caller;
use crate::kb::{answer_error, answer_mode, rag_error};
use crate::metrics::TokenClock;
use crate::{ApiError, AppState};
use adapters::{Adapters, SharedModel};
use wire::ChatRequest;

/// The prefix of the knowledge base's model ids.
pub const RAG_PREFIX: &str = "rag:";

/// The chat model the server answers with (one generation at a time), and the adapters served over it.
pub struct ChatBackend {
    /// Its id in `/v1/models` and in requests.
    pub id: String,
    pub model: SharedModel,
    pub adapters: Adapters,
}

impl ChatBackend {
    /// `model`, served as `id`, without adapters.
    pub fn new(id: String, model: Box<dyn ChatModel + Send>) -> ChatBackend {
        ChatBackend {
            id,
            model: Arc::new(Mutex::new(model)),
            adapters: Adapters::none(),
        }
    }

    /// The model that writes the answer: the base model, or a served adapter (loaded now if needed).
    fn writer(&self, adapter: Option<usize>) -> Result<SharedModel, ApiError> {
        match adapter {
            None => Ok(self.model.clone()),
            Some(index) => self.adapters.model(index).map_err(llm_error),
        }
    }
}

/// What a request asked to talk to; `adapter` is the served adapter writing the answer, if any.
enum Target {
    Plain {
        adapter: Option<usize>,
    },
    Rag {
        adapter: Option<usize>,
        collection: CollectionRef,
        mode: AnswerMode,
        retrieval: Option<Mode>,
        k: usize,
    },
}

/// What a finished generation gave.
pub(crate) enum Reply {
    Chat(ChatResponse),
    Rag(Box<Answer>),
}

pub(crate) fn llm_error(error: LlmError) -> ApiError {
    match error {
        error @ LlmError::ContextOverflow { .. } => ApiError::invalid("messages", error.to_string()),
        LlmError::Cancelled => ApiError::new(StatusCode::BAD_REQUEST, "cancelled", "the client went away"),
        LlmError::Remote(message) => ApiError::new(StatusCode::BAD_GATEWAY, "upstream_error", message),
        other => ApiError::internal(other.to_string()),
    }
}

pub(crate) async fn completions(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let request: ChatRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError::invalid(
            "body",
            format!("the request body is not a chat completion request: {e}"),
        )
    })?;
    let Some(backend) = state.chat.get().cloned() else {
        return Err(ApiError::not_found(format!(
            "model {:?} is not served here: this server serves no chat model",
            request.model
        ))
        .with_param("model")
        .with_code("model_not_found"));
    };
    let target = target(&caller, &backend, &request)?;
    let messages = request.messages()?;
    let tools = request.tools()?;
    let cancel = Cancellation::new();
    // Checked here, before any reply; the default length, which needs the model, is set on the worker.
    let mut options = GenerationOptions {
        cancel: cancel.clone(),
        ..request.generation(usize::MAX, 0)?
    };
    let length_asked = request.max_tokens().is_some();
    let reader = match &target {
        Target::Rag { collection, .. } => Some(state.reader(collection).await?),
        Target::Plain { .. } => None,
    };
    let (tokens, received) = tokio::sync::mpsc::unbounded_channel::<String>();
    let work_state = state.clone();
    let key = caller.prefix.clone();
    let adapter_name = target
        .adapter()
        .map(|index| backend.adapters.served()[index].name.clone());
    let work = move || -> Result<Reply, ApiError> {
        let writer = backend.writer(target.adapter())?;
        let mut model = writer.lock().expect("no panic holds the model");
        if !length_asked {
            // About what the chat template adds: a few tokens per message.
            let prompt: usize = messages.iter().map(|m| model.count_tokens(&m.content) + 4).sum();
            options.max_tokens = options
                .max_tokens
                .min(model.context_tokens().saturating_sub(prompt))
                .max(1);
        }
        let options = options;
        let mut clock = TokenClock::start();
        let mut send = |text: &str| {
            clock.tick();
            // A closed channel means nobody reads the stream anymore.
            if tokens.send(text.to_string()).is_err() {
                options.cancel.cancel();
            }
        };
        let reply = match target {
            Target::Plain { .. } => model
                .chat(&messages, &tools, &options, &mut send)
                .map(Reply::Chat)
                .map_err(llm_error),
            Target::Rag {
                collection,
                mode,
                retrieval,
                k,
                ..
            } => {
                let question = last_user_message(&messages)?;
                let reader = reader.expect("a RAG target has its reader");
                let embedder = work_state.embedder.get().cloned();
                let reranker = work_state.reranker.get().cloned();
                let retriever =
                    Retriever::with_models(&reader, &collection, retrieval, &Options::default(), embedder, reranker)
                        .map_err(|e| rag_error(&collection, e))?;
                let answer_options = AnswerOptions {
                    templates: PromptTemplates::for_collection(&work_state.home, &collection)
                        .map_err(|e| ApiError::internal(e.to_string()))?,
                    generation: options.clone(),
                    ..AnswerOptions::default()
                };
                let context = knowhow_rag::answer::AnswerContext {
                    reader: &reader,
                    embedder: retriever.embedder(),
                    reranker: retriever.reranker(),
                    retrieval: retriever.options(),
                    k,
                };
                let mut on_event = |event: AnswerEvent<'_>| {
                    if let AnswerEvent::Token(text) = event {
                        send(text);
                    }
                };
                let answer = answer(
                    &question,
                    &context,
                    Backend::Llm(&mut **model),
                    mode,
                    &answer_options,
                    &mut on_event,
                )
                .map_err(|e| answer_error(&collection, e))?;
                let mut record = answer.audit_record(adapter_name);
                record.key = key;
                let log = knowhow_rag::answer::answers_log(work_state.home.root(), &collection.namespace);
                record.append_to(&log).map_err(|e| ApiError::internal(e.to_string()))?;
                Ok(Reply::Rag(Box::new(answer)))
            }
        }?;
        let usage = reply.said(None).usage.unwrap_or_default();
        work_state
            .metrics
            .generated(&clock, usage.prompt_tokens, usage.completion_tokens);
        Ok(reply)
    };
    let result = state.workers.submit(work)?;
    let header = stream::Header::new(&request.model);
    if request.stream {
        let usage = request.include_usage();
        return Ok(stream::respond(
            header,
            usage,
            request.max_tokens(),
            received,
            result,
            cancel,
        ));
    }
    // Held until the reply is complete: dropped early (the client hung up, dropping this future), it cancels.
    let _tokens = received;
    let reply = result.await??;
    Ok(Json(complete(&header, &reply, request.max_tokens())).into_response())
}

impl Target {
    fn adapter(&self) -> Option<usize> {
        match self {
            Target::Plain { adapter } | Target::Rag { adapter, .. } => *adapter,
        }
    }
}

/// Which model a request talks to (the base model, or an adapter by its name), and for the knowledge base
/// (`rag:COLLECTION`, `rag:COLLECTION+ADAPTER`, or the `knowhow` extension), where and how to retrieve.
fn target(caller: &Caller, backend: &ChatBackend, request: &ChatRequest) -> Result<Target, ApiError> {
    let not_served = |model: &str| {
        let adapters: Vec<&str> = backend.adapters.served().iter().map(|a| a.name.as_str()).collect();
        ApiError::not_found(format!(
            "model {model:?} is not served here: GET /v1/models lists what is (chat: {:?}, adapters: {adapters:?})",
            backend.id
        ))
        .with_param("model")
        .with_code("model_not_found")
    };
    let writer = |model: &str| -> Result<Option<usize>, ApiError> {
        if model == backend.id {
            return Ok(None);
        }
        backend.adapters.find(model).map(Some).ok_or_else(|| not_served(model))
    };
    let extension = request.knowhow.as_ref();
    let (name, adapter) = match request.model.strip_prefix(RAG_PREFIX) {
        Some(rag) => match rag.split_once('+') {
            Some((collection, adapter)) => (Some(collection.to_string()), writer(adapter)?),
            None => (Some(rag.to_string()), None),
        },
        None => (extension.map(|e| e.collection.clone()), writer(&request.model)?),
    };
    let Some(name) = name else {
        return Ok(Target::Plain { adapter });
    };
    let mode = match extension {
        Some(e) if e.rerank == Some(true) && e.mode.as_deref().is_some_and(|m| m != "rerank") => {
            return Err(ApiError::invalid(
                "knowhow.rerank",
                format!("rerank: true is the rerank mode; it cannot go with mode {:?}", e.mode),
            ))
        }
        Some(e) if e.rerank == Some(true) => Some("rerank".to_string()),
        Some(e) => e.mode.clone(),
        None => None,
    };
    let k = extension.and_then(|e| e.k);
    let collection = caller.collection(&name)?;
    let (mode, retrieval) = answer_mode(mode.as_deref(), true)?;
    let k = crate::kb::k(k, 8)?;
    Ok(Target::Rag {
        adapter,
        collection,
        mode,
        retrieval,
        k,
    })
}

fn last_user_message(messages: &[Message]) -> Result<String, ApiError> {
    messages
        .iter()
        .rev()
        .find(|m| m.role == Role::User)
        .map(|m| m.content.clone())
        .ok_or_else(|| ApiError::invalid("messages", "a knowledge-base answer needs a user message to answer"))
}

fn finish_reason(reason: FinishReason) -> &'static str {
    match reason {
        FinishReason::Stop => "stop",
        FinishReason::Length => "length",
        FinishReason::ToolCalls => "tool_calls",
    }
}

/// The citations of a knowledge-base answer, with each source's per-stage retrieval scores.
pub(crate) fn citations(answer: &Answer) -> Value {
    let cited: Vec<Value> = answer
        .cited
        .iter()
        .map(|source| {
            let first = source.ordinals.first().copied().unwrap_or_default();
            let retrieved = answer
                .retrieved
                .iter()
                .find(|r| r.id.document_id == source.document_id && source.ordinals.contains(&r.id.ordinal));
            json!({
                "n": source.number, "document_id": source.document_id, "chunk": first, "title": source.title,
                "source": source.source, "page": source.pages.map(|(first, _)| first),
                "heading": (!source.heading_path.is_empty()).then(|| source.heading_path.join(" › ")),
                "char_start": source.char_start, "char_end": source.char_end, "text": source.text,
                "scores": {
                    "lexical": retrieved.and_then(|r| r.lexical_score), "dense": retrieved.and_then(|r| r.dense_score),
                    "fused": retrieved.and_then(|r| r.fused_score), "rerank": retrieved.and_then(|r| r.rerank_score),
                },
            })
        })
        .collect();
    Value::Array(cited)
}

/// What a reply says, in the OpenAI fields: the text, its tool calls, why it ended, the tokens it took.
pub(crate) struct Said<'a> {
    pub content: &'a str,
    pub tool_calls: &'a [knowhow_rag::llm::ToolCall],
    pub finish_reason: &'static str,
    pub usage: Option<knowhow_rag::llm::Usage>,
}

impl Reply {
    pub(crate) fn said(&self, max_tokens: Option<usize>) -> Said<'_> {
        match self {
            Reply::Chat(response) => Said {
                content: &response.content,
                tool_calls: &response.tool_calls,
                finish_reason: finish_reason(response.finish_reason),
                usage: response.usage,
            },
            Reply::Rag(answer) => Said {
                content: &answer.text,
                tool_calls: &[],
                // The answer pipeline keeps no finish reason: a reply that used its whole budget was cut.
                finish_reason: match (answer.usage, max_tokens) {
                    (Some(usage), Some(max)) if usage.completion_tokens >= max => "length",
                    _ => "stop",
                },
                usage: answer.usage,
            },
        }
    }
}

fn usage_json(usage: Option<knowhow_rag::llm::Usage>) -> Value {
    let usage = usage.unwrap_or_default();
    json!({
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.prompt_tokens + usage.completion_tokens,
    })
}

fn tool_calls_json(calls: &[knowhow_rag::llm::ToolCall]) -> Vec<Value> {
    calls
        .iter()
        .map(|call| json!({"id": call.id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}}))
        .collect()
}

/// The whole answer, as one `chat.completion`.
fn complete(header: &stream::Header, reply: &Reply, max_tokens: Option<usize>) -> Value {
    let said = reply.said(max_tokens);
    let mut message = json!({
        "role": "assistant",
        "content": if said.content.is_empty() && !said.tool_calls.is_empty() { Value::Null } else { json!(said.content) },
    });
    if !said.tool_calls.is_empty() {
        message["tool_calls"] = json!(tool_calls_json(said.tool_calls));
    }
    if let Reply::Rag(answer) = reply {
        message["citations"] = citations(answer);
        message["abstained"] = json!(answer.abstained);
    }
    json!({
        "id": header.id, "object": "chat.completion", "created": header.created, "model": header.model,
        "choices": [{"index": 0, "message": message, "finish_reason": said.finish_reason, "logprobs": null}],
        "usage": usage_json(said.usage),
    })
}

/// The models `/v1/models` lists for the chat side: the base model and a `rag:` model per collection the caller
/// can see.
pub(crate) fn models(state: &AppState, caller: &Caller) -> Vec<Value> {
    let Some(backend) = state.chat.get() else {
        return Vec::new();
    };
    let mut listed =
        vec![json!({"id": backend.id, "object": "model", "created": state.started, "owned_by": "knowhow"})];
    for adapter in backend.adapters.served() {
        listed.push(json!({
            "id": adapter.name, "object": "model", "created": state.started, "owned_by": "knowhow",
            "parent": backend.id,
        }));
    }
    if let Ok(namespace) = caller.namespace() {
        let collections = state.home.list().unwrap_or_default();
        for collection in collections.iter().filter(|c| c.namespace == namespace) {
            listed.push(json!({
                "id": format!("{RAG_PREFIX}{}", collection.collection), "object": "model", "created": state.started,
                "owned_by": "knowhow", "parent": backend.id,
            }));
        }
    }
    listed
}

/// Every message of the request in knowhow's types, roles checked.
pub(crate) fn role(name: &str) -> Result<Role, ApiError> {
    match name {
        "system" | "developer" => Ok(Role::System),
        "user" => Ok(Role::User),
        "assistant" => Ok(Role::Assistant),
        "tool" => Ok(Role::Tool),
        other => Err(ApiError::invalid(
            "messages",
            format!("unknown role {other:?}: one of system, developer, user, assistant, tool"),
        )),
    }
}

pub(crate) fn tool(name: String, description: Option<String>, parameters: Option<Value>) -> Tool {
    Tool {
        name,
        description: description.unwrap_or_default(),
        parameters: parameters.unwrap_or_else(|| json!({"type": "object", "properties": {}})),
    }
}
