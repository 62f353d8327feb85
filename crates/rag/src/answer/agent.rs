//! The agent loop: the model finds its own sources with a `search` tool.
//!
//! ```text
//! system + question ─▶ model ─┬─ tool calls ─▶ search each ─▶ numbered results ─▶ model ─▶ …
//!                             └─ text ─▶ the answer
//! ```
//!
//! Every chunk a search returns gets the next source number the first time
//! it is seen and keeps it: a later search returning it again shows the same
//! number, so citations stay valid across hops. Chunks are not merged here
//! (a merge would renumber sources the model already saw). Results that do
//! not fit the context left are not given. After `max_steps` rounds of tool
//! calls the model is asked once more, without tools, to answer from what it
//! found, and the answer notes the limit.

use std::collections::HashMap;

use knowhow_core::ChunkId;
use knowhow_index::SourceChunk;
use serde::Deserialize;

use super::prompt::{prompt_tokens, render, PromptInput};
use super::sources::{merge, Source};
use super::{add_usage, effective_mode, AnswerContext, AnswerError, AnswerEvent, AnswerOptions};
use crate::llm::{ChatModel, ChatResponse, Message, Role, Tool, Usage};
use crate::retrieve::{retrieve, Retrieved};

/// The name of the search tool.
pub const SEARCH_TOOL: &str = "search";

/// Most chunks one search may ask for.
pub const MAX_SEARCH_K: usize = 20;

/// The `search` tool as the model sees it.
pub fn search_tool() -> Tool {
    Tool {
        name: SEARCH_TOOL.into(),
        description: "Search the document collection. Returns numbered passages; cite them by number, like [3].".into(),
        parameters: serde_json::json!({
            "type": "object",
            "properties": {
                "query": {"type": "string", "description": "What to look for: keywords or a question."},
                "k": {
                    "type": "integer",
                    "minimum": 1,
                    "maximum": MAX_SEARCH_K,
                    "description": "How many passages to return."
                }
            },
            "required": ["query"],
            "additionalProperties": false
        }),
    }
}

#[derive(Deserialize)]
struct SearchArguments {
    query: String,
    k: Option<usize>,
}

/// What the loop did, for the caller to turn into an answer.
pub(crate) struct AgentRun {
    /// The final answer as the model wrote it.
    pub text: String,
    /// The conversation as last sent to the model.
    pub messages: Vec<Message>,
    pub tools: Vec<Tool>,
    pub sources: Vec<Source>,
    pub retrieved: Vec<Retrieved>,
    pub usage: Option<Usage>,
    /// Model calls made.
    pub steps: usize,
    pub notes: Vec<String>,
}

/// Runs the loop for `question`.
pub(crate) fn run(
    question: &str,
    context: &AnswerContext,
    model: &mut dyn ChatModel,
    options: &AnswerOptions,
    on_event: &mut dyn FnMut(AnswerEvent),
) -> Result<AgentRun, AnswerError> {
    let input = PromptInput {
        templates: &options.templates,
        question,
        abstain_phrase: &options.abstain_phrase,
        agentic: true,
    };
    let budget = model.context_tokens().saturating_sub(options.generation.max_tokens);
    let mut messages = render(&input, &[])?;
    let tools = vec![search_tool()];
    let (mode, fallback) = effective_mode(crate::Mode::Hybrid, context);
    if let Some(note) = &fallback {
        on_event(AnswerEvent::Notice(note));
    }
    let mut run = AgentRun {
        text: String::new(),
        messages: Vec::new(),
        tools: tools.clone(),
        sources: Vec::new(),
        retrieved: Vec::new(),
        usage: None,
        steps: 0,
        notes: fallback.into_iter().collect(),
    };
    let mut numbers: HashMap<ChunkId, usize> = HashMap::new();
    loop {
        let last = run.steps == options.max_steps;
        if last {
            let note = format!(
                "the step limit ({} searching steps) was reached: the model was asked to answer from the sources found",
                options.max_steps
            );
            on_event(AnswerEvent::Notice(&note));
            run.notes.push(note);
            messages.push(Message::user(format!(
                "You have used all {} search steps. Answer now from the numbered sources above, citing them, \
                 or reply with exactly: {}",
                options.max_steps, options.abstain_phrase
            )));
        }
        let offered: &[Tool] = if last { &[] } else { &tools };
        let response: ChatResponse = model.chat(&messages, offered, &options.generation, &mut |t| {
            on_event(AnswerEvent::Token(t))
        })?;
        run.steps += 1;
        run.usage = add_usage(run.usage, response.usage);
        if last || response.tool_calls.is_empty() {
            run.text = response.content;
            break;
        }
        messages.push(Message {
            role: Role::Assistant,
            content: response.content,
            tool_calls: response.tool_calls.clone(),
            tool_call_id: None,
        });
        for call in &response.tool_calls {
            on_event(AnswerEvent::ToolCall {
                id: &call.id,
                name: &call.name,
                arguments: &call.arguments,
            });
            let used = prompt_tokens(&messages, &|t| model.count_tokens(t));
            let room = budget.saturating_sub(used);
            let result = search(&call.name, &call.arguments, context, mode, options)
                .map(|found| give_results(found, room, &mut numbers, &mut run, &|t| model.count_tokens(t)));
            let content = match result {
                Ok(given) => {
                    on_event(AnswerEvent::ToolResult {
                        id: &call.id,
                        sources: &given.numbers,
                        error: None,
                    });
                    given.content
                }
                // The model asked wrongly (an unknown tool, bad arguments):
                // tell it, so it can ask again.
                Err(SearchError::Request(problem)) => {
                    on_event(AnswerEvent::ToolResult {
                        id: &call.id,
                        sources: &[],
                        error: Some(&problem),
                    });
                    format!("error: {problem}")
                }
                Err(SearchError::Failed(error)) => return Err(error),
            };
            messages.push(Message::tool(call.id.clone(), content));
        }
    }
    run.messages = messages;
    Ok(run)
}

enum SearchError {
    /// The call itself is wrong; the model is told.
    Request(String),
    /// Retrieval failed; the answer fails.
    Failed(AnswerError),
}

/// Runs one tool call: the chunks found, best first.
fn search(
    name: &str,
    arguments: &str,
    context: &AnswerContext,
    mode: crate::Mode,
    options: &AnswerOptions,
) -> Result<Found, SearchError> {
    if name != SEARCH_TOOL {
        return Err(SearchError::Request(format!(
            "there is no tool named {name:?}; the only tool is {SEARCH_TOOL:?}"
        )));
    }
    let arguments: SearchArguments = serde_json::from_str(arguments).map_err(|e| {
        SearchError::Request(format!(
            "the arguments must be a JSON object {{\"query\": string, \"k\": integer}}: {e}"
        ))
    })?;
    if arguments.query.trim().is_empty() {
        return Err(SearchError::Request("the query is empty".into()));
    }
    let k = arguments.k.unwrap_or(options.search_k).clamp(1, MAX_SEARCH_K);
    let retrieved = retrieve(
        context.reader,
        &arguments.query,
        k,
        mode,
        context.embedder,
        context.reranker,
        context.retrieval,
    )
    .map_err(|e| SearchError::Failed(e.into()))?;
    let chunks = super::fetch_chunks(context.reader, &retrieved).map_err(SearchError::Failed)?;
    Ok(Found { retrieved, chunks })
}

/// What one search found: the ranking, and the chunks' records in its order.
struct Found {
    retrieved: Vec<Retrieved>,
    chunks: Vec<(SourceChunk, f32)>,
}

struct Given {
    content: String,
    numbers: Vec<usize>,
}

/// Numbers the new chunks of a search (within `room` tokens) and writes the
/// tool message.
fn give_results(
    Found { retrieved, chunks }: Found,
    room: usize,
    numbers: &mut HashMap<ChunkId, usize>,
    run: &mut AgentRun,
    count_tokens: &dyn Fn(&str) -> usize,
) -> Given {
    run.retrieved.extend(retrieved);
    let mut blocks = Vec::new();
    let mut given = Vec::new();
    let mut used = 0;
    let mut left_out = 0;
    for (chunk, score) in chunks {
        if let Some(&number) = numbers.get(&chunk.id) {
            let block = format!("[{number}] (given above)");
            used += count_tokens(&block);
            blocks.push(block);
            given.push(number);
            continue;
        }
        let id = chunk.id.clone();
        let mut source = merge(&[(chunk, score)]).remove(0);
        source.number = run.sources.len() + 1;
        let block = source.block();
        let tokens = count_tokens(&block);
        if used + tokens > room {
            left_out += 1;
            continue;
        }
        used += tokens;
        numbers.insert(id, source.number);
        given.push(source.number);
        blocks.push(block);
        run.sources.push(source);
    }
    let mut content = if blocks.is_empty() {
        "No passages found.".to_string()
    } else {
        blocks.join("\n\n")
    };
    if left_out > 0 {
        content.push_str(&format!(
            "\n\n({left_out} more passages found do not fit the context: answer from these.)"
        ));
    }
    Given {
        content,
        numbers: given,
    }
}
