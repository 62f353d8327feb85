//! Prompt assembly: a system message and a user message, both rendered from
//! minijinja templates, with the sources packed into the model's context.
//!
//! # Templates
//! Both templates see the same variables:
//! - `sources`: the numbered sources, each with `number`, `title`, `source`,
//!   `location` (pages or heading path), `heading_path`, `pages`,
//!   `document_id`, `char_start`, `char_end`, `text` and `block` (the source
//!   as a numbered block, as tool results show it);
//! - `question`;
//! - `abstain_phrase`: what the model must answer when the sources do not
//!   hold the answer;
//! - `agentic`: true when the model finds its sources with the `search` tool.
//!
//! The defaults are [`DEFAULT_SYSTEM_TEMPLATE`] and [`DEFAULT_USER_TEMPLATE`].
//! A collection overrides them with files in its directory,
//! `HOME/collections/NS/COLL/prompt.jinja` (system) and
//! `HOME/collections/NS/COLL/question.jinja` (user) — see
//! [`PromptTemplates::for_collection`]; a caller overrides either per call
//! with a string or a file ([`Template::from_file`]).
//!
//! # Packing
//! Chunks are added in rank order while the whole prompt still fits
//! `context − answer reserve` tokens (counted by the caller's counter, over
//! the rendered messages, so the budget holds whatever the templates add);
//! a chunk that does not fit is left out and smaller ones after it may still
//! go in. Overlapping and adjacent chunks merge (see [`super::sources`]).

use std::path::Path;

use knowhow_core::{ChunkId, CollectionRef};
use knowhow_index::{Home, SourceChunk};
use serde::Serialize;

use super::sources::{self, Source};
use super::AnswerError;
use crate::llm::Message;

/// The default system prompt: cite every claim, abstain with an exact phrase.
pub const DEFAULT_SYSTEM_TEMPLATE: &str = "\
You answer questions using only the {% if agentic %}sources that the search tool returns{% else %}numbered \
sources given with the question{% endif %}.
- Support every claim with the number of the source it comes from, in square brackets right after the claim, \
like [1], or [1][3] when several sources support it.
- Use only what the sources say. Do not add facts from elsewhere, and do not cite a source for something it does \
not say.
- If the sources do not contain the answer, reply with exactly this sentence and nothing else: {{ abstain_phrase }}
{%- if agentic %}
- Call the search tool to find sources: each result is numbered, and numbers stay the same across searches. \
Search again with other words, or for a part of the question, when the results do not answer it.
{%- endif %}
- Answer concisely, in the language of the question.";

/// The default user message: the numbered sources, then the question.
pub const DEFAULT_USER_TEMPLATE: &str = "\
{% if sources %}Sources:

{% for source in sources %}{{ source.block }}

{% endfor %}{% endif %}Question: {{ question }}";

/// A template and where it came from (named in errors).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template {
    pub name: String,
    pub text: String,
}

impl Template {
    pub fn new(name: impl Into<String>, text: impl Into<String>) -> Template {
        Template {
            name: name.into(),
            text: text.into(),
        }
    }

    /// Reads a template file.
    pub fn from_file(path: &Path) -> Result<Template, AnswerError> {
        let text = std::fs::read_to_string(path).map_err(|source| AnswerError::TemplateFile {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(Template::new(path.display().to_string(), text))
    }
}

/// The system and user message templates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PromptTemplates {
    pub system: Template,
    pub user: Template,
}

impl Default for PromptTemplates {
    fn default() -> Self {
        PromptTemplates {
            system: Template::new("the default system template", DEFAULT_SYSTEM_TEMPLATE),
            user: Template::new("the default user template", DEFAULT_USER_TEMPLATE),
        }
    }
}

/// File name of a collection's system template, in its directory.
pub const COLLECTION_SYSTEM_FILE: &str = "prompt.jinja";
/// File name of a collection's user template, in its directory.
pub const COLLECTION_USER_FILE: &str = "question.jinja";

impl PromptTemplates {
    /// The templates of collection `c`: `prompt.jinja` and `question.jinja`
    /// in `HOME/collections/NS/COLL/` where present, else the defaults.
    pub fn for_collection(home: &Home, c: &CollectionRef) -> Result<PromptTemplates, AnswerError> {
        let dir = home.root().join("collections").join(&c.namespace).join(&c.collection);
        let mut templates = PromptTemplates::default();
        let system = dir.join(COLLECTION_SYSTEM_FILE);
        if system.is_file() {
            templates.system = Template::from_file(&system)?;
        }
        let user = dir.join(COLLECTION_USER_FILE);
        if user.is_file() {
            templates.user = Template::from_file(&user)?;
        }
        Ok(templates)
    }
}

/// What the templates render.
pub struct PromptInput<'a> {
    pub templates: &'a PromptTemplates,
    pub question: &'a str,
    pub abstain_phrase: &'a str,
    pub agentic: bool,
}

/// A source as templates see it: its fields plus `location` and `block`.
#[derive(Serialize)]
struct TemplateSource<'a> {
    #[serde(flatten)]
    source: &'a Source,
    location: String,
    block: String,
}

/// Renders the system and user messages for `sources`.
pub fn render(input: &PromptInput, sources: &[Source]) -> Result<Vec<Message>, AnswerError> {
    let sources: Vec<TemplateSource> = sources
        .iter()
        .map(|source| TemplateSource {
            source,
            location: source.location(),
            block: source.block(),
        })
        .collect();
    let context = minijinja::context! {
        sources => minijinja::Value::from(minijinja::value::Serde(&sources)),
        question => input.question,
        abstain_phrase => input.abstain_phrase,
        agentic => input.agentic,
    };
    let mut env = minijinja::Environment::new();
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
    let render = |template: &Template| {
        env.render_str(&template.text, &context)
            .map_err(|e| AnswerError::Template {
                name: template.name.clone(),
                message: e.to_string(),
            })
    };
    Ok(vec![
        Message::system(render(&input.templates.system)?),
        Message::user(render(&input.templates.user)?),
    ])
}

/// Tokens `messages` take, by `count_tokens`, summed over their contents.
pub fn prompt_tokens(messages: &[Message], count_tokens: &dyn Fn(&str) -> usize) -> usize {
    messages.iter().map(|m| count_tokens(&m.content)).sum()
}

/// An assembled prompt.
#[derive(Clone, Debug)]
pub struct Prompt {
    pub messages: Vec<Message>,
    /// The sources in the prompt, numbered as the messages show them.
    pub sources: Vec<Source>,
    /// Chunks left out because they did not fit.
    pub left_out: Vec<ChunkId>,
    /// Tokens of the messages, by the caller's counter.
    pub tokens: usize,
}

/// Assembles the prompt for `chunks` (rank order, best first, with scores):
/// as many as fit `budget` tokens, merged into numbered sources.
///
/// An error when even the prompt without sources exceeds the budget.
pub fn assemble(
    input: &PromptInput,
    chunks: &[(SourceChunk, f32)],
    budget: usize,
    count_tokens: &dyn Fn(&str) -> usize,
) -> Result<Prompt, AnswerError> {
    let mut messages = render(input, &[])?;
    let mut tokens = prompt_tokens(&messages, count_tokens);
    if tokens > budget {
        return Err(AnswerError::PromptTooLong {
            needed: tokens,
            available: budget,
        });
    }
    let mut chosen: Vec<(SourceChunk, f32)> = Vec::new();
    let mut sources = Vec::new();
    let mut left_out = Vec::new();
    for chunk in chunks {
        chosen.push(chunk.clone());
        let candidate = sources::merge(&chosen);
        let candidate_messages = render(input, &candidate)?;
        let candidate_tokens = prompt_tokens(&candidate_messages, count_tokens);
        if candidate_tokens <= budget {
            (sources, messages, tokens) = (candidate, candidate_messages, candidate_tokens);
        } else {
            chosen.pop();
            left_out.push(chunk.0.id.clone());
        }
    }
    Ok(Prompt {
        messages,
        sources,
        left_out,
        tokens,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::answer::sources::tests::chunk;

    fn words(text: &str) -> usize {
        text.split_whitespace().count()
    }

    fn input(templates: &PromptTemplates) -> PromptInput<'_> {
        PromptInput {
            templates,
            question: "What does zeta follow?",
            abstain_phrase: "NOT IN SOURCES",
            agentic: false,
        }
    }

    fn long_chunk(document: &str, words: usize) -> SourceChunk {
        let text: Vec<String> = (0..words).map(|i| format!("w{i}")).collect();
        let text = text.join(" ");
        chunk(document, 0, &text, 0, text.chars().count())
    }

    #[test]
    fn default_prompt_numbers_sources_and_demands_citations_and_the_phrase() {
        let templates = PromptTemplates::default();
        let text = "Alpha beta. Delta epsilon zeta.";
        let chunks = [(chunk("a", 0, text, 0, 11), 2.0), (chunk("b", 0, text, 12, 31), 1.0)];
        let prompt = assemble(&input(&templates), &chunks, 10_000, &words).unwrap();
        let [system, user] = &prompt.messages[..] else {
            panic!("two messages")
        };
        assert!(system.content.contains("[1]") && system.content.contains("NOT IN SOURCES"));
        assert!(!system.content.contains("search tool"));
        assert!(user
            .content
            .contains("[1] Title of a (Intro) — /docs/a.md\nAlpha beta."));
        assert!(user
            .content
            .contains("[2] Title of b (Intro) — /docs/b.md\nDelta epsilon zeta."));
        assert!(user.content.ends_with("Question: What does zeta follow?"));
        assert_eq!(prompt.tokens, words(&system.content) + words(&user.content));
    }

    #[test]
    fn packing_keeps_rank_order_within_the_budget_and_skips_what_does_not_fit() {
        let templates = PromptTemplates::default();
        let base = prompt_tokens(&render(&input(&templates), &[]).unwrap(), &words);
        // Each source block costs its words plus the header's 7 words
        // ("[1] Title of a (Intro) — /docs/a.md"); "Sources:" one more.
        let chunks = [
            (long_chunk("a", 50), 4.0),
            (long_chunk("b", 200), 3.0),
            (long_chunk("c", 30), 2.0),
            (long_chunk("d", 40), 1.0),
        ];
        let budget = base + 1 + (50 + 7) + (30 + 7) + 10;
        let prompt = assemble(&input(&templates), &chunks, budget, &words).unwrap();
        let ids: Vec<&str> = prompt.sources.iter().map(|s| s.document_id.as_str()).collect();
        assert_eq!(ids, ["a", "c"]);
        assert_eq!(prompt.left_out, [ChunkId::new("b", 0), ChunkId::new("d", 0)]);
        assert!(prompt.tokens <= budget);
        assert_eq!(prompt.tokens, prompt_tokens(&prompt.messages, &words));
        assert!(prompt.messages[1].content.contains("[2] Title of c"));

        let tiny = assemble(&input(&templates), &chunks, base - 1, &words);
        assert!(matches!(tiny, Err(AnswerError::PromptTooLong { .. })));
    }

    #[test]
    fn custom_and_collection_templates_replace_the_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::new(dir.path());
        let c = CollectionRef::new("ns", "docs").unwrap();
        assert_eq!(
            PromptTemplates::for_collection(&home, &c).unwrap(),
            PromptTemplates::default()
        );
        let coll_dir = dir.path().join("collections/ns/docs");
        std::fs::create_dir_all(&coll_dir).unwrap();
        std::fs::write(
            coll_dir.join(COLLECTION_SYSTEM_FILE),
            "Be terse. Say {{ abstain_phrase }} if unsure.",
        )
        .unwrap();
        let templates = PromptTemplates::for_collection(&home, &c).unwrap();
        let messages = render(&input(&templates), &[]).unwrap();
        assert_eq!(messages[0].content, "Be terse. Say NOT IN SOURCES if unsure.");
        assert_eq!(messages[1].content, "Question: What does zeta follow?");

        let broken = PromptTemplates {
            system: Template::new("my.jinja", "{{ no_such_variable }}"),
            ..PromptTemplates::default()
        };
        let error = render(&input(&broken), &[]).unwrap_err();
        assert!(
            matches!(&error, AnswerError::Template { name, .. } if name == "my.jinja"),
            "{error:?}"
        );
    }
}
