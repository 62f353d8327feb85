//! From conversations to what a training step eats: token ids and labels.
//!
//! A conversation is rendered with the model's chat template and tokenized. `labels[i]` is `input_ids[i]` where
//! token `i` belongs to a trained assistant turn and -100 (ignored by the loss) everywhere else; labels are not
//! shifted — the training step compares the logits at `i` with `labels[i + 1]`, as Hugging Face models do.
//!
//! # Finding the assistant turns
//!
//! Templates differ in what they put around a message, so the spans are found by rendering, not by parsing. For a
//! trained assistant message `i`:
//!
//! - it starts where `render(messages[..i], add_generation_prompt = true)` ends: everything up to and including
//!   the assistant header is prompt;
//! - it ends where `render(messages[..=i])` stops agreeing with both the full conversation and the conversation
//!   with one more user message after it. What comes after the content up to that point (the end-of-turn token,
//!   `</s>`, `<|im_end|>`) is trained, so the model learns to stop; text a template adds only at the end of a
//!   conversation (a footer, a trailing generation prompt) is not.
//!
//! Character spans become token spans through the tokenizer's byte offsets: a token is trained when it overlaps a
//! span. Templates that render a conversation's beginning differently on its own than inside the whole (some add a
//! date, or drop earlier reasoning) cannot be masked this way; such a row fails with a message saying so.
//!
//! # Truncation
//!
//! Rows longer than [`EncodeOptions::max_len`] tokens are dropped ([`Truncation::Drop`], the default: a cut prompt
//! teaches the model to answer questions it did not see), or cut from the left ([`Truncation::Left`]: the oldest
//! context goes, the last assistant turn must survive whole, else the row is dropped). Both are counted in the
//! [`EncodeReport`].

use std::borrow::Cow;

use knowhow_models::ChatTemplate;
use serde::Serialize;
use tokenizers::Tokenizer;

use super::conversation::{Conversation, Message, Role};
use super::parse::Row;

/// The label of a token the loss ignores.
pub const IGNORE_INDEX: i64 = -100;

/// Renders messages to prompt text: the model's chat template, or [`plain_text`]. The flag is
/// `add_generation_prompt`. Errors are messages for the report.
pub type Render<'a> = dyn Fn(&[Message], bool) -> Result<String, String> + 'a;

/// The renderer for models without a chat template: each message's content as is, each assistant message followed
/// by `eos`. A prompt/completion row becomes `prompt + completion + eos` — put any separator (a space, a newline)
/// in the data itself, as OpenAI's legacy completion format did.
pub fn plain_text(eos: &str) -> impl Fn(&[Message], bool) -> Result<String, String> {
    let eos = eos.to_string();
    move |messages: &[Message], _add_generation_prompt: bool| {
        let mut text = String::new();
        for message in messages {
            text.push_str(&message.content);
            if message.role == Role::Assistant {
                text.push_str(&eos);
            }
        }
        Ok(text)
    }
}

/// The renderer for a model with a chat template (`ChatTemplate::from_model_dir`).
pub fn chat_template(template: &ChatTemplate) -> impl Fn(&[Message], bool) -> Result<String, String> + '_ {
    move |messages: &[Message], add_generation_prompt: bool| {
        let messages: Vec<serde_json::Value> = messages.iter().map(Message::to_template_value).collect();
        template
            .render(&messages, None, add_generation_prompt)
            .map_err(|e| e.to_string())
    }
}

/// How to handle rows over the length limit (see the module docs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Truncation {
    #[default]
    Drop,
    Left,
}

/// Options for [`encode`] and [`encode_rows`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodeOptions {
    /// Longest row in tokens.
    pub max_len: usize,
    pub truncation: Truncation,
    /// Let the tokenizer's post-processor add its special tokens (BOS). Off by default: chat templates write
    /// their own, as Hugging Face's `apply_chat_template(tokenize=True)` assumes.
    pub add_special_tokens: bool,
}

impl Default for EncodeOptions {
    fn default() -> Self {
        EncodeOptions {
            max_len: 2048,
            truncation: Truncation::Drop,
            add_special_tokens: false,
        }
    }
}

/// One training row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    pub input_ids: Vec<u32>,
    /// `input_ids[i]` on trained tokens, [`IGNORE_INDEX`] elsewhere.
    pub labels: Vec<i64>,
}

impl Encoded {
    /// Tokens the loss is computed on.
    pub fn trained_tokens(&self) -> usize {
        self.labels.iter().filter(|&&label| label != IGNORE_INDEX).count()
    }
}

/// What happened to one conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Kept(Encoded),
    /// Cut from the left by `removed` tokens.
    Truncated {
        encoded: Encoded,
        removed: usize,
    },
    /// Over the limit and not truncatable; `tokens` is its full length.
    Dropped {
        tokens: usize,
    },
}

/// A row that could not be encoded (its template failed, or its turns could not be located).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RowFailure {
    pub line: usize,
    pub message: String,
}

/// What [`encode_rows`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct EncodeReport {
    pub rows: usize,
    /// Rows in the output, truncated ones included.
    pub encoded: usize,
    pub truncated_rows: usize,
    /// Tokens cut off truncated rows.
    pub truncated_tokens: usize,
    pub dropped_rows: usize,
    /// Full length of the dropped rows.
    pub dropped_tokens: usize,
    pub failed: Vec<RowFailure>,
    /// Tokens in the output rows: what one epoch processes.
    pub tokens: usize,
    /// Of those, the ones the loss is computed on.
    pub trained_tokens: usize,
}

/// A conversation tokenized in full, before any length limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Full {
    pub encoded: Encoded,
    /// Index of the first token of the last trained assistant turn.
    pub last_turn_start: usize,
}

/// Renders, tokenizes and masks one conversation, then applies the length limit.
pub fn encode(
    conversation: &Conversation,
    render: &Render,
    tokenizer: &Tokenizer,
    options: &EncodeOptions,
) -> Result<Outcome, String> {
    Ok(truncate(
        encode_full(conversation, render, tokenizer, options.add_special_tokens)?,
        options,
    ))
}

/// Encodes rows, collecting failures, truncations and drops in the report instead of stopping.
pub fn encode_rows(
    rows: &[Row],
    render: &Render,
    tokenizer: &Tokenizer,
    options: &EncodeOptions,
) -> (Vec<Encoded>, EncodeReport) {
    let mut report = EncodeReport {
        rows: rows.len(),
        ..EncodeReport::default()
    };
    let tokenizer = unpadded(tokenizer);
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let encoded = match encode(&row.conversation, render, &tokenizer, options) {
            Err(message) => {
                report.failed.push(RowFailure {
                    line: row.line,
                    message,
                });
                continue;
            }
            Ok(Outcome::Dropped { tokens }) => {
                report.dropped_rows += 1;
                report.dropped_tokens += tokens;
                continue;
            }
            Ok(Outcome::Truncated { encoded, removed }) => {
                report.truncated_rows += 1;
                report.truncated_tokens += removed;
                encoded
            }
            Ok(Outcome::Kept(encoded)) => encoded,
        };
        report.encoded += 1;
        report.tokens += encoded.input_ids.len();
        report.trained_tokens += encoded.trained_tokens();
        out.push(encoded);
    }
    (out, report)
}

/// Applies [`EncodeOptions::max_len`] and [`EncodeOptions::truncation`].
pub fn truncate(full: Full, options: &EncodeOptions) -> Outcome {
    let length = full.encoded.input_ids.len();
    if length <= options.max_len {
        return Outcome::Kept(full.encoded);
    }
    let removed = length - options.max_len;
    match options.truncation {
        Truncation::Left if removed <= full.last_turn_start => {
            let Encoded { input_ids, labels } = full.encoded;
            Outcome::Truncated {
                encoded: Encoded {
                    input_ids: input_ids[removed..].to_vec(),
                    labels: labels[removed..].to_vec(),
                },
                removed,
            }
        }
        Truncation::Left | Truncation::Drop => Outcome::Dropped { tokens: length },
    }
}

/// The tokenizer without the padding and truncation a model folder may configure (all-MiniLM's pads to 128):
/// rows are cut by [`truncate`], which knows where the answer is, and padded per batch by [`pad_batch`].
pub fn unpadded(tokenizer: &Tokenizer) -> Cow<'_, Tokenizer> {
    if tokenizer.get_padding().is_none() && tokenizer.get_truncation().is_none() {
        return Cow::Borrowed(tokenizer);
    }
    let mut plain = tokenizer.clone();
    plain.with_padding(None);
    // Removing truncation cannot fail: only new truncation parameters are checked.
    let _ = plain.with_truncation(None);
    Cow::Owned(plain)
}

/// Renders and tokenizes the whole conversation and masks everything outside its trained assistant turns.
pub fn encode_full(
    conversation: &Conversation,
    render: &Render,
    tokenizer: &Tokenizer,
    add_special_tokens: bool,
) -> Result<Full, String> {
    let messages = &conversation.messages;
    let full = render(messages, false).map_err(|e| format!("chat template: {e}"))?;
    let mut spans = Vec::new();
    for turn in conversation.trained_turns() {
        spans.push(turn_span(messages, turn, &full, render)?);
    }
    let encoding = unpadded(tokenizer)
        .encode(full.as_str(), add_special_tokens)
        .map_err(|e| format!("tokenizer: {e}"))?;
    let input_ids = encoding.get_ids().to_vec();
    let overlaps = |(start, end): (usize, usize), span: &std::ops::Range<usize>| start < span.end && end > span.start;
    let labels: Vec<i64> = input_ids
        .iter()
        .zip(encoding.get_offsets())
        .map(|(&id, &offsets)| {
            if spans.iter().any(|span| overlaps(offsets, span)) {
                i64::from(id)
            } else {
                IGNORE_INDEX
            }
        })
        .collect();
    let last = spans.last().ok_or("the conversation has no trained assistant turn")?;
    let last_turn_start = encoding
        .get_offsets()
        .iter()
        .position(|&offsets| overlaps(offsets, last))
        .ok_or("the last trained assistant turn produced no tokens")?;
    Ok(Full {
        encoded: Encoded { input_ids, labels },
        last_turn_start,
    })
}

/// The byte range of `full` that assistant message `turn` is trained on (see the module docs).
fn turn_span(messages: &[Message], turn: usize, full: &str, render: &Render) -> Result<std::ops::Range<usize>, String> {
    let template_error = |e: String| format!("chat template (messages up to {turn}): {e}");
    let before = render(&messages[..turn], true).map_err(template_error)?;
    if !full.starts_with(&before) {
        return Err(format!(
            "the chat template renders the messages before message {turn} differently on their own than inside the \
             whole conversation, so the assistant turn cannot be located for loss masking"
        ));
    }
    let through = render(&messages[..=turn], false).map_err(template_error)?;
    let mut end = common_prefix_len(&through, full);
    let mut probe = messages[..=turn].to_vec();
    probe.push(Message::user("\u{1}"));
    // A template may refuse the probe (some check the last role); the full conversation still bounds the turn.
    if let Ok(next) = render(&probe, false) {
        end = end.min(common_prefix_len(&through, &next));
    }
    let start = before.len();
    let content = messages[turn].content.trim();
    if end <= start || !full[start..end].contains(content) {
        return Err(format!(
            "the chat template output does not contain assistant message {turn} where expected (templates that \
             rewrite message content cannot be masked)"
        ));
    }
    Ok(start..end)
}

/// Length in bytes of the longest common prefix of `a` and `b`, on a character boundary.
fn common_prefix_len(a: &str, b: &str) -> usize {
    let mut length = a.bytes().zip(b.bytes()).take_while(|(x, y)| x == y).count();
    while !a.is_char_boundary(length) {
        length -= 1;
    }
    length
}

/// Rows padded on the right to the longest in the batch, flattened row-major (`rows × seq_len`), ready for a
/// tensor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    pub rows: usize,
    pub seq_len: usize,
    /// Padding positions hold the pad id.
    pub input_ids: Vec<u32>,
    /// Padding positions hold [`IGNORE_INDEX`].
    pub labels: Vec<i64>,
    /// 1 on real tokens, 0 on padding.
    pub attention_mask: Vec<u32>,
}

/// Pads `rows` to the longest of them.
pub fn pad_batch<'a>(rows: impl IntoIterator<Item = &'a Encoded>, pad_id: u32) -> Batch {
    let rows: Vec<&Encoded> = rows.into_iter().collect();
    let seq_len = rows.iter().map(|row| row.input_ids.len()).max().unwrap_or(0);
    let mut batch = Batch {
        rows: rows.len(),
        seq_len,
        input_ids: Vec::with_capacity(rows.len() * seq_len),
        labels: Vec::with_capacity(rows.len() * seq_len),
        attention_mask: Vec::with_capacity(rows.len() * seq_len),
    };
    for row in rows {
        let padding = seq_len - row.input_ids.len();
        batch.input_ids.extend(
            row.input_ids
                .iter()
                .copied()
                .chain(std::iter::repeat_n(pad_id, padding)),
        );
        batch.labels.extend(
            row.labels
                .iter()
                .copied()
                .chain(std::iter::repeat_n(IGNORE_INDEX, padding)),
        );
        batch
            .attention_mask
            .extend(std::iter::repeat_n(1, row.input_ids.len()).chain(std::iter::repeat_n(0, padding)));
    }
    batch
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A word-level tokenizer over `words` plus ChatML, `<s>` and `</s>` special tokens; whitespace splits words and is
    /// dropped, punctuation runs are their own tokens.
    pub(crate) fn word_tokenizer(words: &[&str]) -> Tokenizer {
        let specials = ["<unk>", "<pad>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"];
        let mut vocab = serde_json::Map::new();
        for (id, token) in specials.iter().chain(words).enumerate() {
            vocab.insert(token.to_string(), id.into());
        }
        let added: Vec<serde_json::Value> = specials
            .iter()
            .enumerate()
            .map(|(id, content)| {
                serde_json::json!({"id": id, "content": content, "single_word": false, "lstrip": false,
                    "rstrip": false, "normalized": false, "special": true})
            })
            .collect();
        let json = serde_json::json!({
            "version": "1.0",
            "added_tokens": added,
            "pre_tokenizer": {"type": "Whitespace"},
            "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "<unk>"},
        });
        json.to_string().parse().expect("a valid tokenizer")
    }

    /// ChatML as Qwen writes it.
    pub(crate) fn chatml(messages: &[Message], add_generation_prompt: bool) -> Result<String, String> {
        let mut text = String::new();
        for message in messages {
            text.push_str(&format!(
                "<|im_start|>{}\n{}<|im_end|>\n",
                message.role.as_str(),
                message.content
            ));
        }
        if add_generation_prompt {
            text.push_str("<|im_start|>assistant\n");
        }
        Ok(text)
    }

    const WORDS: &[&str] = &[
        "system",
        "user",
        "assistant",
        "be",
        "brief",
        "what",
        "is",
        "two",
        "plus",
        "four",
        "?",
        "thanks",
        "draft",
        "welcome",
        "you",
        "are",
        "the",
        "end",
        "footer",
        "it",
    ];

    fn ids(tokenizer: &Tokenizer, text: &str) -> Vec<u32> {
        tokenizer.encode(text, false).unwrap().get_ids().to_vec()
    }

    fn masked(count: usize) -> Vec<i64> {
        vec![IGNORE_INDEX; count]
    }

    fn as_labels(ids: &[u32]) -> Vec<i64> {
        ids.iter().map(|&id| i64::from(id)).collect()
    }

    fn kept(outcome: Outcome) -> Encoded {
        match outcome {
            Outcome::Kept(encoded) => encoded,
            other => panic!("expected the row kept whole, got {other:?}"),
        }
    }

    #[test]
    fn plain_prompt_completion_masks_exactly_the_prompt() {
        let tokenizer = word_tokenizer(WORDS);
        let conversation = Conversation {
            messages: vec![Message::user("what is two plus two ?"), Message::assistant(" four")],
        };
        let render = plain_text("</s>");
        let encoded = kept(encode(&conversation, &render, &tokenizer, &EncodeOptions::default()).unwrap());
        let prompt = ids(&tokenizer, "what is two plus two ?");
        let answer = ids(&tokenizer, " four</s>");
        assert_eq!(encoded.input_ids, [prompt.clone(), answer.clone()].concat());
        assert_eq!(encoded.labels, [masked(prompt.len()), as_labels(&answer)].concat());
        assert_eq!(answer.len(), 2, "the completion and the end of sequence are trained");
        assert!(
            !encoded.input_ids.contains(&0),
            "no unknown tokens: the test vocabulary covers the text"
        );

        // A tokenizer configured to pad (as model folders often are) still gives the unpadded row.
        let mut padding = word_tokenizer(WORDS);
        padding.with_padding(Some(tokenizers::PaddingParams {
            strategy: tokenizers::PaddingStrategy::Fixed(32),
            ..Default::default()
        }));
        let again = kept(encode(&conversation, &render, &padding, &EncodeOptions::default()).unwrap());
        assert_eq!(again, encoded);
    }

    #[test]
    fn chat_template_trains_only_weighted_assistant_turns_and_their_end_token() {
        let tokenizer = word_tokenizer(WORDS);
        let mut draft = Message::assistant("draft");
        draft.train = false;
        let messages = vec![
            Message::system("be brief"),
            Message::user("what is two plus two ?"),
            draft,
            Message::user("thanks"),
            Message::assistant("you are welcome"),
        ];
        let conversation = Conversation {
            messages: messages.clone(),
        };
        let encoded = kept(encode(&conversation, &chatml, &tokenizer, &EncodeOptions::default()).unwrap());
        let prompt = ids(&tokenizer, &chatml(&messages[..4], true).unwrap());
        let answer = ids(&tokenizer, "you are welcome<|im_end|>");
        assert_eq!(encoded.input_ids, [prompt.clone(), answer.clone()].concat());
        assert_eq!(encoded.labels, [masked(prompt.len()), as_labels(&answer)].concat());

        // With both assistant turns trained, the first one is trained too and the user turn between is not.
        let mut both = conversation.clone();
        both.messages[2].train = true;
        let encoded = kept(encode(&both, &chatml, &tokenizer, &EncodeOptions::default()).unwrap());
        let first_prompt = ids(&tokenizer, &chatml(&messages[..2], true).unwrap());
        let first = ids(&tokenizer, "draft<|im_end|>");
        let between = ids(
            &tokenizer,
            "<|im_start|>user\nthanks<|im_end|>\n<|im_start|>assistant\n",
        );
        assert_eq!(
            encoded.labels,
            [
                masked(first_prompt.len()),
                as_labels(&first),
                masked(between.len()),
                as_labels(&answer)
            ]
            .concat()
        );
    }

    #[test]
    fn text_a_template_adds_after_the_conversation_is_not_trained() {
        let tokenizer = word_tokenizer(WORDS);
        let with_footer = |messages: &[Message], add_generation_prompt: bool| {
            let text = chatml(messages, add_generation_prompt)?;
            Ok(if add_generation_prompt {
                text
            } else {
                format!("{text}the end footer")
            })
        };
        let conversation = Conversation {
            messages: vec![Message::user("what is two plus two ?"), Message::assistant("four")],
        };
        let encoded = kept(encode(&conversation, &with_footer, &tokenizer, &EncodeOptions::default()).unwrap());
        let footer = ids(&tokenizer, "the end footer");
        let answer = ids(&tokenizer, "four<|im_end|>");
        assert_eq!(encoded.input_ids[encoded.input_ids.len() - 3..], footer[..]);
        assert_eq!(
            encoded.labels[encoded.labels.len() - 5..],
            [as_labels(&answer), masked(3)].concat()[..]
        );
    }

    #[test]
    fn a_template_that_rewrites_earlier_turns_is_a_row_failure() {
        let tokenizer = word_tokenizer(WORDS);
        let inconsistent = |messages: &[Message], add_generation_prompt: bool| {
            let text = chatml(messages, add_generation_prompt)?;
            Ok(format!("{}{text}", messages.len()))
        };
        let rows = vec![Row {
            line: 3,
            shape: super::super::parse::Shape::PromptCompletion,
            conversation: Conversation {
                messages: vec![Message::user("what"), Message::assistant("four")],
            },
        }];
        let (encoded, report) = encode_rows(&rows, &inconsistent, &tokenizer, &EncodeOptions::default());
        assert!(encoded.is_empty());
        assert_eq!(report.failed.len(), 1);
        assert_eq!(report.failed[0].line, 3);
        assert!(
            report.failed[0].message.contains("differently on their own"),
            "{}",
            report.failed[0].message
        );
    }

    fn row(line: usize, prompt: &str, answer: &str) -> Row {
        Row {
            line,
            shape: super::super::parse::Shape::PromptCompletion,
            conversation: Conversation {
                messages: vec![Message::user(prompt), Message::assistant(answer)],
            },
        }
    }

    #[test]
    fn over_long_rows_are_dropped_or_cut_from_the_left_and_reported() {
        let tokenizer = word_tokenizer(WORDS);
        let render = plain_text("</s>");
        // Lengths with the end token: 4, 8 and 8 tokens, of which the completion and end token are 2, 2 and 6.
        let rows = vec![
            row(1, "two ?", " four"),
            row(2, "what is two plus two ?", " four"),
            row(3, "what ?", " four four four four four"),
        ];
        let drop = EncodeOptions {
            max_len: 5,
            ..EncodeOptions::default()
        };
        let (encoded, report) = encode_rows(&rows, &render, &tokenizer, &drop);
        assert_eq!(encoded.len(), 1);
        assert_eq!(
            (report.dropped_rows, report.dropped_tokens, report.truncated_rows),
            (2, 16, 0)
        );
        assert_eq!((report.tokens, report.trained_tokens), (4, 2));

        let left = EncodeOptions {
            truncation: Truncation::Left,
            ..drop
        };
        let (encoded, report) = encode_rows(&rows, &render, &tokenizer, &left);
        assert_eq!((report.truncated_rows, report.truncated_tokens), (1, 3));
        assert_eq!(
            (report.dropped_rows, report.dropped_tokens),
            (1, 8),
            "row 3's completion alone is too long"
        );
        let whole = kept(encode(&rows[1].conversation, &render, &tokenizer, &EncodeOptions::default()).unwrap());
        assert_eq!(encoded[1].input_ids, whole.input_ids[3..]);
        assert_eq!(encoded[1].labels, whole.labels[3..]);
        assert_eq!(encoded[1].trained_tokens(), 2);
    }

    #[test]
    fn batches_pad_on_the_right_with_ignored_labels() {
        let long = Encoded {
            input_ids: vec![5, 6, 7],
            labels: vec![IGNORE_INDEX, 6, 7],
        };
        let short = Encoded {
            input_ids: vec![8],
            labels: vec![8],
        };
        let batch = pad_batch([&long, &short], 1);
        assert_eq!((batch.rows, batch.seq_len), (2, 3));
        assert_eq!(batch.input_ids, vec![5, 6, 7, 8, 1, 1]);
        assert_eq!(batch.labels, vec![IGNORE_INDEX, 6, 7, 8, IGNORE_INDEX, IGNORE_INDEX]);
        assert_eq!(batch.attention_mask, vec![1, 1, 1, 1, 0, 0]);
        assert_eq!(pad_batch([], 0).input_ids.len(), 0);
    }

    /// Qwen2.5's template, system-prompt branch trimmed: ChatML with a default system message.
    const QWEN_LIKE: &str = r"{%- if messages[0]['role'] == 'system' %}{{- '<|im_start|>system\n' + messages[0]['content'] + '<|im_end|>\n' }}{%- else %}{{- '<|im_start|>system\nyou are brief<|im_end|>\n' }}{%- endif %}{%- for message in messages %}{%- if message.role != 'system' %}{{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>' + '\n' }}{%- endif %}{%- endfor %}{%- if add_generation_prompt %}{{- '<|im_start|>assistant\n' }}{%- endif %}";

    /// Llama 2's shape: the user turn in `[INST]`, the answer trimmed and closed by `eos_token`, roles checked.
    const LLAMA2_LIKE: &str = r"{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + message['content'] | trim + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ ' ' + message['content'] | trim + ' ' + eos_token }}{% endif %}{% endfor %}";

    #[test]
    fn real_jinja_templates_mask_everything_but_the_answers() {
        let mut words = WORDS.to_vec();
        words.extend(["[", "]", "[/", "INST"]);
        let tokenizer = word_tokenizer(&words);
        let conversation = Conversation {
            messages: vec![
                Message::user("what is two plus two ?"),
                Message::assistant("four"),
                Message::user("thanks"),
                Message::assistant("you are welcome"),
            ],
        };
        let qwen = ChatTemplate::from_str(QWEN_LIKE, None, Some("<|im_end|>")).unwrap();
        let render = chat_template(&qwen);
        let encoded = kept(encode(&conversation, &render, &tokenizer, &EncodeOptions::default()).unwrap());
        let full = render(&conversation.messages, false).unwrap();
        assert!(
            full.starts_with("<|im_start|>system\nyou are brief<|im_end|>"),
            "{full}"
        );
        let trained: Vec<u32> = encoded
            .labels
            .iter()
            .filter(|&&l| l != IGNORE_INDEX)
            .map(|&l| l as u32)
            .collect();
        assert_eq!(trained, ids(&tokenizer, "four<|im_end|> you are welcome<|im_end|>"));
        assert!(!encoded.input_ids.contains(&0), "no unknown tokens");

        // Here the answer is trimmed and the end token comes after a space, and the next turn starts with `<s>`.
        let llama = ChatTemplate::from_str(LLAMA2_LIKE, Some("<s>"), Some("</s>")).unwrap();
        let render = chat_template(&llama);
        let encoded = kept(encode(&conversation, &render, &tokenizer, &EncodeOptions::default()).unwrap());
        let trained: Vec<u32> = encoded
            .labels
            .iter()
            .filter(|&&l| l != IGNORE_INDEX)
            .map(|&l| l as u32)
            .collect();
        assert_eq!(trained, ids(&tokenizer, "four </s> you are welcome </s>"));
        assert!(!encoded.input_ids.contains(&0), "no unknown tokens");
        assert_eq!(
            encoded.input_ids,
            ids(
                &tokenizer,
                "<s>[INST] what is two plus two ? [/INST] four </s><s>[INST] thanks [/INST] you are welcome </s>"
            )
        );
    }

    #[test]
    fn common_prefix_stops_on_a_character_boundary() {
        assert_eq!(common_prefix_len("aé", "aè"), 1);
        assert_eq!(common_prefix_len("abc", "abd"), 2);
        assert_eq!(common_prefix_len("ab", "ab"), 2);
    }
}
