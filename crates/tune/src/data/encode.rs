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
pub(crate) mod tests;
