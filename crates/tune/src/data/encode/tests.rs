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
        shape: crate::data::parse::Shape::PromptCompletion,
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
        shape: crate::data::parse::Shape::PromptCompletion,
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
