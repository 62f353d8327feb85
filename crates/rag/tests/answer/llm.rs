//! The LLM answer paths (retrieval modes, agentic, long-context) over a real
//! index, driven by a scripted chat model.
//!
//! `ScriptedChatModel` is a test double, used only because no language model
//! able to follow instructions can run here: it returns the responses a test
//! scripts (answers, tool calls) and records every prompt it receives, so the
//! tests check what knowhow sends and how it treats what comes back. Every
//! test using it says so in its name.

use crate::support;

use std::collections::VecDeque;

use knowhow_index::{Home, Reader};
use knowhow_ingest::chunk::ChunkOptions;
use knowhow_rag::answer::{
    answer, Abstention, AnswerContext, AnswerError, AnswerEvent, AnswerMode, AnswerOptions, AuditRecord, Backend,
    DEFAULT_ABSTAIN_PHRASE, NOT_FOUND,
};
use knowhow_rag::llm::{
    ChatModel, ChatResponse, FinishReason, GenerationOptions, LlmError, Message, Role, Tool, ToolCall, Usage,
};
use knowhow_rag::Options;

/// Returns scripted responses in order and records the prompts it got.
struct ScriptedChatModel {
    script: VecDeque<ChatResponse>,
    /// Every call: the messages and the tools offered.
    seen: Vec<(Vec<Message>, Vec<Tool>)>,
    context: usize,
}

impl ScriptedChatModel {
    fn new(context: usize, script: Vec<ChatResponse>) -> ScriptedChatModel {
        ScriptedChatModel {
            script: script.into(),
            seen: Vec::new(),
            context,
        }
    }
}

/// Tokens are whitespace-separated words here.
fn words(text: &str) -> usize {
    text.split_whitespace().count()
}

impl ChatModel for ScriptedChatModel {
    fn name(&self) -> String {
        "scripted-test-model".into()
    }

    fn context_tokens(&self) -> usize {
        self.context
    }

    fn count_tokens(&self, text: &str) -> usize {
        words(text)
    }

    fn chat(
        &mut self,
        messages: &[Message],
        tools: &[Tool],
        _options: &GenerationOptions,
        on_token: &mut dyn FnMut(&str),
    ) -> Result<ChatResponse, LlmError> {
        self.seen.push((messages.to_vec(), tools.to_vec()));
        let response = self
            .script
            .pop_front()
            .ok_or_else(|| LlmError::Model("the script has no more responses".into()))?;
        for piece in response.content.split_inclusive(' ') {
            on_token(piece);
        }
        Ok(response)
    }
}

fn say(text: &str) -> ChatResponse {
    ChatResponse {
        content: text.into(),
        tool_calls: Vec::new(),
        finish_reason: FinishReason::Stop,
        usage: Some(Usage {
            prompt_tokens: 100,
            completion_tokens: 10,
        }),
    }
}

fn search(id: &str, arguments: &str) -> ChatResponse {
    ChatResponse {
        content: String::new(),
        tool_calls: vec![ToolCall {
            id: id.into(),
            name: "search".into(),
            arguments: arguments.into(),
        }],
        finish_reason: FinishReason::ToolCalls,
        usage: Some(Usage {
            prompt_tokens: 50,
            completion_tokens: 5,
        }),
    }
}

const DOCUMENTS: &[(&str, &str, &str)] = &[
    (
        "curie",
        "Marie Curie",
        "Marie Curie was born in Warsaw in 1867. She studied physics and chemistry at the University of Paris.",
    ),
    (
        "warsaw",
        "Warsaw",
        "Warsaw is the capital of Poland. The population of Warsaw is about 1.8 million people.",
    ),
    (
        "paris",
        "Paris",
        "Paris is the capital of France. The Seine flows through Paris.",
    ),
    (
        "radium",
        "Radium",
        "Radium is a radioactive element discovered in 1898. It glows faintly blue.",
    ),
];

fn collection(dir: &std::path::Path) -> Reader {
    let documents: Vec<(String, String, String)> = DOCUMENTS
        .iter()
        .map(|(id, title, text)| (id.to_string(), title.to_string(), text.to_string()))
        .collect();
    support::collection(&Home::new(dir), &documents, ChunkOptions::new(128, 16).unwrap())
}

fn context<'a>(reader: &'a Reader, retrieval: &'a Options) -> AnswerContext<'a> {
    AnswerContext {
        reader,
        embedder: None,
        reranker: None,
        retrieval,
        k: 3,
    }
}

#[test]
fn hybrid_answer_cites_numbered_sources_and_drops_invalid_markers_with_a_scripted_test_model() {
    let dir = tempfile::tempdir().unwrap();
    let reader = collection(dir.path());
    let retrieval = Options::default();
    let script = "Marie Curie was born in Warsaw [1], a city of 1.8 million [2][9].";
    let mut model = ScriptedChatModel::new(4096, vec![say(script)]);
    let mut streamed = String::new();
    let mut notices = Vec::new();
    let answer = answer(
        "Where was Marie Curie born, and how big is Warsaw?",
        &context(&reader, &retrieval),
        Backend::Llm(&mut model),
        AnswerMode::Hybrid,
        &AnswerOptions::default(),
        &mut |event| match event {
            AnswerEvent::Token(t) => streamed.push_str(t),
            AnswerEvent::Notice(n) => notices.push(n.to_string()),
            other => panic!("unexpected {other:?}"),
        },
    )
    .unwrap();

    // What the model got: the system rules, then numbered sources and the question.
    assert_eq!(model.seen.len(), 1);
    let (messages, tools) = &model.seen[0];
    assert!(tools.is_empty());
    assert_eq!(messages, &answer.prompt);
    assert_eq!(messages[0].role, Role::System);
    assert!(messages[0].content.contains(DEFAULT_ABSTAIN_PHRASE));
    let user = &messages[1].content;
    assert!(
        user.contains("[1] Marie Curie — /docs/curie.txt\nMarie Curie was born in Warsaw in 1867."),
        "{user}"
    );
    assert!(user.contains("[2] "), "{user}");
    assert!(user.ends_with("Question: Where was Marie Curie born, and how big is Warsaw?"));

    // What came back: [9] names no source, so it is removed and reported.
    assert_eq!(streamed, script);
    assert_eq!(
        answer.text,
        "Marie Curie was born in Warsaw [1], a city of 1.8 million [2]."
    );
    assert_eq!(answer.invalid_citations, [9]);
    assert!(answer.notes.iter().any(|n| n.contains("[9]")));
    assert!(!answer.abstained);
    let cited: Vec<&str> = answer.cited.iter().map(|s| s.document_id.as_str()).collect();
    assert_eq!(cited, ["curie", "warsaw"]);
    assert_eq!(answer.cited[0].char_start, 0);
    assert_eq!(answer.cited[0].char_end, DOCUMENTS[0].2.chars().count());

    // Without an embedding model, hybrid fell back to lexical, and said so.
    assert_eq!(answer.retrieval, Some(knowhow_rag::Mode::Lexical));
    assert!(
        notices.iter().any(|n| n.contains("fell back to lexical")),
        "{notices:?}"
    );
    assert_eq!(answer.retrieved[0].id.document_id, "curie");
    assert_eq!(answer.model, "scripted-test-model");
    assert_eq!(answer.usage.map(|u| u.completion_tokens), Some(10));
    assert_eq!(answer.prompt_hash.len(), 64);

    // The same prompt hashes the same; the audit log gets one line per answer.
    let mut again = ScriptedChatModel::new(4096, vec![say(script)]);
    let second = knowhow_rag::answer::answer(
        "Where was Marie Curie born, and how big is Warsaw?",
        &context(&reader, &retrieval),
        Backend::Llm(&mut again),
        AnswerMode::Hybrid,
        &AnswerOptions::default(),
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(second.prompt_hash, answer.prompt_hash);
    let log = dir.path().join("audit.jsonl");
    answer
        .audit_record(Some("support-tone-v2".into()))
        .append_to(&log)
        .unwrap();
    second.audit_record(None).append_to(&log).unwrap();
    let lines: Vec<AuditRecord> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0].mode, "hybrid");
    assert_eq!(lines[0].adapter.as_deref(), Some("support-tone-v2"));
    assert_eq!(lines[0].prompt_hash, answer.prompt_hash);
    assert_eq!(lines[0].cited[0].document_id, "curie");
    assert_eq!(lines[0].retrieved.len(), answer.retrieved.len());
    assert!(!lines[0].abstained);
}

#[test]
fn abstains_on_the_phrase_and_on_weak_evidence_with_a_scripted_test_model() {
    let dir = tempfile::tempdir().unwrap();
    let reader = collection(dir.path());
    let retrieval = Options::default();
    let mut model = ScriptedChatModel::new(4096, vec![say(DEFAULT_ABSTAIN_PHRASE)]);
    let answer = answer(
        "Where did Marie Curie study physics?",
        &context(&reader, &retrieval),
        Backend::Llm(&mut model),
        AnswerMode::Lexical,
        &AnswerOptions::default(),
        &mut |_| {},
    )
    .unwrap();
    assert!(answer.abstained);
    assert_eq!(answer.abstention, Some(Abstention::Model));
    assert_eq!(answer.text, NOT_FOUND);
    assert!(answer.cited.is_empty());
    assert_eq!(answer.closest[0].document_id, "curie");

    // Only "capital" matches: one term in three. The model is not asked.
    let mut silent = ScriptedChatModel::new(4096, Vec::new());
    let answer = knowhow_rag::answer::answer(
        "What is the capital of Mongolia's economy?",
        &context(&reader, &retrieval),
        Backend::Llm(&mut silent),
        AnswerMode::Lexical,
        &AnswerOptions::default(),
        &mut |_| {},
    )
    .unwrap();
    assert!(silent.seen.is_empty());
    assert!(answer.abstained);
    assert!(
        matches!(answer.abstention, Some(Abstention::WeakEvidence { .. })),
        "{:?}",
        answer.abstention
    );
    assert!(!answer.closest.is_empty());
}

#[test]
fn agent_searches_twice_and_cites_both_hops_with_a_scripted_test_model() {
    let dir = tempfile::tempdir().unwrap();
    let reader = collection(dir.path());
    let retrieval = Options::default();
    let mut model = ScriptedChatModel::new(
        4096,
        vec![
            search("call-1", r#"{"query": "Marie Curie born", "k": 1}"#),
            search("call-2", r#"{"query": "Warsaw population"}"#),
            say("She was born in Warsaw [1], home to about 1.8 million people [2]."),
        ],
    );
    let mut events = Vec::new();
    let answer = answer(
        "What is the population of the city where Marie Curie was born?",
        &context(&reader, &retrieval),
        Backend::Llm(&mut model),
        AnswerMode::Agentic,
        &AnswerOptions::default(),
        &mut |event| match event {
            AnswerEvent::ToolCall { arguments, .. } => events.push(format!("call {arguments}")),
            AnswerEvent::ToolResult { sources, error, .. } => events.push(format!("result {sources:?} {error:?}")),
            _ => {}
        },
    )
    .unwrap();

    assert_eq!(model.seen.len(), 3);
    assert!(model
        .seen
        .iter()
        .all(|(_, tools)| tools.len() == 1 && tools[0].name == "search"));
    assert!(model.seen[0].1[0].parameters["required"][0] == "query");
    assert!(model.seen[0].0[0].content.contains("search tool"));
    // First hop: one passage, numbered 1.
    let first = model.seen[1].0.last().unwrap();
    assert_eq!(
        (first.role, first.tool_call_id.as_deref()),
        (Role::Tool, Some("call-1"))
    );
    assert!(first
        .content
        .starts_with("[1] Marie Curie — /docs/curie.txt\nMarie Curie was born in Warsaw"));
    // Second hop: the Warsaw article is new ([2]); the Curie passage keeps [1].
    let second = &model.seen[2].0.last().unwrap().content;
    assert!(second.contains("[2] Warsaw — /docs/warsaw.txt"), "{second}");
    assert!(second.contains("[1] (given above)"), "{second}");
    assert_eq!(events[0], r#"call {"query": "Marie Curie born", "k": 1}"#);
    assert_eq!(events[1], "result [1] None");
    assert!(
        events[3].starts_with("result [2, 1]") || events[3].starts_with("result [1, 2]"),
        "{events:?}"
    );

    assert_eq!(
        answer.text,
        "She was born in Warsaw [1], home to about 1.8 million people [2]."
    );
    let cited: Vec<&str> = answer.cited.iter().map(|s| s.document_id.as_str()).collect();
    assert_eq!(cited, ["curie", "warsaw"]);
    assert_eq!(answer.steps, 3);
    assert_eq!(answer.usage.map(|u| u.prompt_tokens), Some(200));
    assert_eq!(answer.prompt, model.seen[2].0);
    assert!(answer.retrieved.len() >= 2);
    assert!(!answer.notes.iter().any(|n| n.contains("step limit")));
}

#[test]
fn agent_stops_at_the_step_limit_and_says_so_with_a_scripted_test_model() {
    let dir = tempfile::tempdir().unwrap();
    let reader = collection(dir.path());
    let retrieval = Options::default();
    let mut model = ScriptedChatModel::new(
        4096,
        vec![
            search("bad", r#"{"q": "radium"}"#),
            search("call-2", r#"{"query": "radium discovered"}"#),
            // The model would go on searching; it gets no tools now.
            say("Radium was discovered in 1898 [1]."),
        ],
    );
    let options = AnswerOptions {
        max_steps: 2,
        ..AnswerOptions::default()
    };
    let answer = answer(
        "When was radium discovered?",
        &context(&reader, &retrieval),
        Backend::Llm(&mut model),
        AnswerMode::Agentic,
        &options,
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(model.seen.len(), 3);
    // Bad arguments are the model's to fix: it is told, nothing is numbered.
    let told = &model.seen[1].0.last().unwrap().content;
    assert!(told.starts_with("error: the arguments must be a JSON object"), "{told}");
    assert!(model.seen[2].1.is_empty(), "no tools after the step limit");
    let last = model.seen[2].0.last().unwrap();
    assert!(last.role == Role::User && last.content.contains("used all 2 search steps"));
    assert!(answer.notes.iter().any(|n| n.contains("step limit (2")));
    assert_eq!(answer.text, "Radium was discovered in 1898 [1].");
    assert_eq!(answer.cited[0].document_id, "radium");
}

#[test]
fn long_context_gives_every_document_or_refuses_with_a_scripted_test_model() {
    let dir = tempfile::tempdir().unwrap();
    let reader = collection(dir.path());
    let retrieval = Options::default();
    let mut model = ScriptedChatModel::new(4096, vec![say("Radium glows faintly blue [3].")]);
    let answer = answer(
        "What colour does radium glow?",
        &context(&reader, &retrieval),
        Backend::Llm(&mut model),
        AnswerMode::LongContext,
        &AnswerOptions::default(),
        &mut |_| {},
    )
    .unwrap();
    // Every document once, ordered by source path.
    let ids: Vec<&str> = answer.sources.iter().map(|s| s.document_id.as_str()).collect();
    assert_eq!(ids, ["curie", "paris", "radium", "warsaw"]);
    let user = &model.seen[0].0[1].content;
    for (_, _, text) in DOCUMENTS {
        assert_eq!(user.matches(text).count(), 1, "{text}");
    }
    assert_eq!(answer.cited[0].document_id, "radium");
    assert!(answer.retrieved.is_empty() && answer.retrieval.is_none());

    // A context that cannot hold the collection: refused, naming both sizes.
    let needed = knowhow_rag::answer::prompt::prompt_tokens(&answer.prompt, &words);
    let options = AnswerOptions::default();
    let small = options.generation.max_tokens + needed - 1;
    let mut model = ScriptedChatModel::new(small, Vec::new());
    let error = knowhow_rag::answer::answer(
        "What colour does radium glow?",
        &context(&reader, &retrieval),
        Backend::Llm(&mut model),
        AnswerMode::LongContext,
        &options,
        &mut |_| {},
    )
    .unwrap_err();
    match &error {
        AnswerError::TooLongForContext { needed: n, available } => {
            assert_eq!((*n, *available), (needed, needed - 1));
        }
        other => panic!("{other:?}"),
    }
    let message = error.to_string();
    assert!(message.contains(&needed.to_string()) && message.contains(&(needed - 1).to_string()));
    assert!(model.seen.is_empty());

    let refused = knowhow_rag::answer::answer(
        "q",
        &context(&reader, &retrieval),
        Backend::Extractive,
        AnswerMode::Agentic,
        &options,
        &mut |_| {},
    );
    assert!(matches!(refused, Err(AnswerError::AgenticNeedsModel)));
}
