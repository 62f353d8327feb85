//! A chat completion streamed as OpenAI streams it: server-sent `data:` chunks of `chat.completion.chunk`, all
//! with the same `id` and `created`; the text as `choices[0].delta.content`; tool calls as deltas with their
//! `index`; a last chunk with `finish_reason` (and, for a knowledge-base answer, `citations`); with
//! `stream_options.include_usage` every chunk carries `usage: null` and one more chunk with `choices: []` brings
//! the totals; then `data: [DONE]`. An error after the stream started is one `data: {"error": ...}` chunk.

use std::convert::Infallible;
use std::future::Future;
use std::time::Duration;

use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use knowhow_core::Cancellation;
use serde_json::{json, Value};
use tokio::sync::mpsc::UnboundedReceiver;

use super::{citations, tool_calls_json, usage_json, Reply};
use crate::workers::WorkError;
use crate::ApiError;

/// What every chunk of one completion shares.
pub(crate) struct Header {
    pub id: String,
    pub created: u64,
    pub model: String,
}

impl Header {
    pub fn new(model: &str) -> Header {
        let mut random = [0u8; 12];
        // An id need not be secret: should the system have no randomness, the clock still tells requests apart.
        if getrandom::fill(&mut random).is_err() {
            random[..8].copy_from_slice(&knowhow_core::time::unix_now().to_le_bytes());
        }
        Header {
            id: format!(
                "chatcmpl-{}",
                random.iter().map(|b| format!("{b:02x}")).collect::<String>()
            ),
            created: knowhow_core::time::unix_now(),
            model: model.to_string(),
        }
    }
}

/// Raises the generation's flag when the response body is dropped: the client hung up (or the stream ended,
/// when the flag no longer matters).
struct CancelOnDrop(Cancellation);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

/// Streams `tokens` as they come, then the end of `result`.
pub(crate) fn respond(
    header: Header,
    include_usage: bool,
    max_tokens: Option<usize>,
    mut tokens: UnboundedReceiver<String>,
    result: impl Future<Output = Result<Result<Reply, ApiError>, WorkError>> + Send + 'static,
    cancel: Cancellation,
) -> Response {
    let (events, received) = tokio::sync::mpsc::channel::<Event>(64);
    let flag = cancel.clone();
    tokio::spawn(async move {
        let chunk = |choices: Value| {
            let mut chunk = json!({
                "id": header.id, "object": "chat.completion.chunk", "created": header.created,
                "model": header.model, "choices": choices,
            });
            if include_usage {
                chunk["usage"] = Value::Null;
            }
            Event::default().data(chunk.to_string())
        };
        let delta = |delta: Value, finish: Option<&str>| {
            chunk(json!([{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": null}]))
        };
        let send = async |event: Event| {
            let gone = events.send(event).await.is_err();
            if gone {
                flag.cancel();
            }
            !gone
        };
        if !send(delta(json!({"role": "assistant", "content": ""}), None)).await {
            return;
        }
        while let Some(text) = tokens.recv().await {
            if !send(delta(json!({"content": text}), None)).await {
                return;
            }
        }
        let reply = match result.await {
            Ok(Ok(reply)) => reply,
            Ok(Err(error)) => {
                send(error_event(error)).await;
                return;
            }
            Err(error) => {
                send(error_event(error.into())).await;
                return;
            }
        };
        let said = reply.said(max_tokens);
        for (index, call) in tool_calls_json(said.tool_calls).into_iter().enumerate() {
            let opening = json!({"tool_calls": [{"index": index, "id": call["id"], "type": "function",
                                                 "function": {"name": call["function"]["name"], "arguments": ""}}]});
            let arguments = json!({"tool_calls": [{"index": index,
                                                   "function": {"arguments": call["function"]["arguments"]}}]});
            if !send(delta(opening, None)).await || !send(delta(arguments, None)).await {
                return;
            }
        }
        let mut last = json!({});
        if let Reply::Rag(answer) = &reply {
            last = json!({"citations": citations(answer), "abstained": answer.abstained});
        }
        if !send(delta(last, Some(said.finish_reason))).await {
            return;
        }
        if include_usage {
            let totals = json!({
                "id": header.id, "object": "chat.completion.chunk", "created": header.created,
                "model": header.model, "choices": [], "usage": usage_json(said.usage),
            });
            if !send(Event::default().data(totals.to_string())).await {
                return;
            }
        }
        send(Event::default().data("[DONE]")).await;
    });
    let guard = CancelOnDrop(cancel);
    let stream = futures_util::stream::unfold((received, guard), |(mut received, guard)| async move {
        let event = received.recv().await?;
        Some((Ok::<_, Infallible>(event), (received, guard)))
    });
    // Frequent keep-alive comments make a client that hung up visible even while no text comes (tool calls are
    // held back until they are complete).
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(1)))
        .into_response()
}

fn error_event(error: ApiError) -> Event {
    Event::default().data(error.body().to_string())
}
