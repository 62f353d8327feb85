//! Does the adapter do better than the base model, on rows neither saw in training?
//!
//! For each held-out row, the base model and base + adapter are measured side by side:
//!
//! - **loss and perplexity** on the completion tokens (the trained assistant turn and its end token), the prompt
//!   given: the same number that validation loss reports;
//! - **greedy generation** of the prompt, then task metrics on the text: exact match with the reference (as JSON
//!   values when both parse, so `{"a":1}` equals `{"a": 1}`; else trimmed text), JSON-valid rate, JSON-schema-valid
//!   rate (a schema from the user) and regex match rate (a pattern from the user, searched anywhere; anchor it with
//!   `^...$` for a full match).

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;

use knowhow_models::decoder::{generate, peft, GenerateOptions};

use crate::base::Base;
use crate::batch::{batch_loss_sum, make_batches};
use crate::data::{self, EncodeOptions, Row};
use crate::error::TuneError;

/// The user's format checks.
pub struct Checks {
    schema: Option<jsonschema::Validator>,
    regex: Option<regex::Regex>,
}

impl Checks {
    /// `schema`: a JSON Schema document; `regex`: a pattern in the `regex` crate's syntax.
    pub fn new(schema: Option<&serde_json::Value>, regex: Option<&str>) -> Result<Checks, TuneError> {
        let schema = schema
            .map(|schema| {
                jsonschema::validator_for(schema)
                    .map_err(|error| TuneError::Invalid(format!("the JSON schema is not valid: {error}")))
            })
            .transpose()?;
        let regex = regex
            .map(|pattern| {
                regex::Regex::new(pattern).map_err(|error| TuneError::InvalidRegex {
                    pattern: pattern.to_string(),
                    message: error.to_string(),
                })
            })
            .transpose()?;
        Ok(Checks { schema, regex })
    }

    /// No schema, no regex: exact match and JSON validity only.
    pub fn none() -> Checks {
        Checks {
            schema: None,
            regex: None,
        }
    }
}

/// The text as JSON, when it is exactly one JSON value (surrounding whitespace allowed).
pub fn parse_json(text: &str) -> Option<serde_json::Value> {
    serde_json::from_str(text.trim()).ok()
}

/// Equal as JSON values when both parse, else equal as trimmed text.
pub fn exact_match(output: &str, reference: &str) -> bool {
    match (parse_json(output), parse_json(reference)) {
        (Some(a), Some(b)) => a == b,
        _ => output.trim() == reference.trim(),
    }
}

/// Counts of the task metrics over a set of outputs.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct TaskCounts {
    pub rows: usize,
    pub exact_match: usize,
    pub json_valid: usize,
    /// `None` when no schema was given.
    pub schema_valid: Option<usize>,
    /// `None` when no pattern was given.
    pub regex_match: Option<usize>,
}

impl TaskCounts {
    pub fn new(checks: &Checks) -> TaskCounts {
        TaskCounts {
            schema_valid: checks.schema.as_ref().map(|_| 0),
            regex_match: checks.regex.as_ref().map(|_| 0),
            ..TaskCounts::default()
        }
    }

    /// Scores one generated `output` against its `reference`.
    pub fn add(&mut self, checks: &Checks, output: &str, reference: &str) {
        self.rows += 1;
        self.exact_match += usize::from(exact_match(output, reference));
        let json = parse_json(output);
        self.json_valid += usize::from(json.is_some());
        if let (Some(count), Some(validator)) = (self.schema_valid.as_mut(), &checks.schema) {
            *count += usize::from(json.as_ref().is_some_and(|value| validator.is_valid(value)));
        }
        if let (Some(count), Some(regex)) = (self.regex_match.as_mut(), &checks.regex) {
            *count += usize::from(regex.is_match(output));
        }
    }

    pub fn rates(&self) -> TaskRates {
        let rate = |count: usize| count as f64 / self.rows.max(1) as f64;
        TaskRates {
            exact_match: rate(self.exact_match),
            json_valid: rate(self.json_valid),
            schema_valid: self.schema_valid.map(rate),
            regex_match: self.regex_match.map(rate),
        }
    }
}

/// [`TaskCounts`] as fractions of the rows.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TaskRates {
    pub exact_match: f64,
    pub json_valid: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schema_valid: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub regex_match: Option<f64>,
}

/// One model's results.
#[derive(Debug, Clone, Serialize)]
pub struct SideReport {
    /// Mean cross-entropy over the completion tokens.
    pub loss: f64,
    pub perplexity: f64,
    pub completion_tokens: usize,
    pub rates: TaskRates,
    pub counts: TaskCounts,
}

/// A row with both outputs, for a reader to see what the numbers mean.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    pub line: usize,
    pub prompt: String,
    pub reference: String,
    pub base: String,
    pub adapter: String,
}

/// Base vs base + adapter on one test file.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    pub test_path: PathBuf,
    /// Rows evaluated (valid, unique, with an assistant turn to compare).
    pub rows: usize,
    /// [`data::rows_checksum`] of those rows: equals the card's `dataset.test_sha256` when they are the held-out split.
    pub test_sha256: String,
    pub base_model: PathBuf,
    pub adapter: PathBuf,
    pub base: SideReport,
    #[serde(rename = "with_adapter")]
    pub tuned: SideReport,
    pub samples: Vec<Sample>,
    pub seconds: f64,
}

/// How to evaluate.
#[derive(Debug, Clone)]
pub struct EvalOptions {
    pub max_new_tokens: usize,
    pub max_length: usize,
    pub batch_size: usize,
    /// Rows shown with both outputs.
    pub samples: usize,
}

impl Default for EvalOptions {
    fn default() -> Self {
        EvalOptions {
            max_new_tokens: 128,
            max_length: 1024,
            batch_size: 8,
            samples: 5,
        }
    }
}

/// A row split into what the model sees and what it should answer: everything before the last trained assistant
/// turn, and that turn's text.
fn prompt_and_reference(row: &Row) -> Option<(&[data::Message], &str)> {
    let last = row.conversation.trained_turns().last()?;
    Some((
        &row.conversation.messages[..last],
        row.conversation.messages[last].content.as_str(),
    ))
}

/// Loss, perplexity and task metrics of `base` (as it is: with or without an adapter attached) on `rows`; also
/// returns each row's generated text.
pub fn evaluate_model(
    base: &Base,
    rows: &[Row],
    checks: &Checks,
    options: &EvalOptions,
    on_row: &mut dyn FnMut(),
) -> Result<(SideReport, Vec<String>), TuneError> {
    let encode_options = EncodeOptions {
        max_len: options.max_length,
        ..EncodeOptions::default()
    };
    let (encoded, _) = base.encode(rows, &encode_options);
    let mut loss_sum = 0.0f64;
    let mut tokens = 0usize;
    for batch in make_batches(encoded, options.batch_size, base.pad_id()) {
        let (sum, count) = batch_loss_sum(&base.decoder, &batch)?;
        loss_sum += f64::from(sum.to_scalar::<f32>()?);
        tokens += count;
    }
    let loss = if tokens > 0 { loss_sum / tokens as f64 } else { f64::NAN };

    let generate_options = GenerateOptions {
        max_new_tokens: options.max_new_tokens,
        eos_token_ids: base.stop_ids(),
        ..GenerateOptions::default()
    };
    let mut counts = TaskCounts::new(checks);
    let mut outputs = Vec::with_capacity(rows.len());
    for row in rows {
        let Some((prompt, reference)) = prompt_and_reference(row) else {
            continue;
        };
        let text = base
            .render(prompt, true)
            .map_err(|message| TuneError::Invalid(format!("line {}: the chat template failed: {message}", row.line)))?;
        let ids = base
            .tokenizer
            .encode(text.as_str(), encode_options.add_special_tokens)
            .map_err(|error| TuneError::Invalid(format!("line {}: tokenizing the prompt: {error}", row.line)))?
            .get_ids()
            .to_vec();
        let generation = generate(&base.decoder, &base.tokenizer, &ids, &generate_options, &mut |_| {})?;
        counts.add(checks, &generation.text, reference);
        outputs.push(generation.text);
        on_row();
    }
    Ok((
        SideReport {
            loss,
            perplexity: loss.exp(),
            completion_tokens: tokens,
            rates: counts.rates(),
            counts,
        },
        outputs,
    ))
}

/// Evaluates the base model in `base_dir` with and without the PEFT adapter in `adapter_dir` on the rows of
/// `test_path`. `on_row` is called after each generation (twice per row).
pub fn compare(
    base_dir: &Path,
    adapter_dir: &Path,
    test_path: &Path,
    checks: &Checks,
    options: &EvalOptions,
    on_row: &mut dyn FnMut(),
) -> Result<Comparison, TuneError> {
    let started = Instant::now();
    let dataset = data::Dataset::load(test_path, false)?;
    let rows: Vec<Row> = dataset
        .rows
        .into_iter()
        .filter(|row| prompt_and_reference(row).is_some())
        .collect();
    if rows.is_empty() {
        return Err(TuneError::Invalid(format!(
            "{}: no valid row with an assistant answer to compare (see `knowhow data check`)",
            test_path.display()
        )));
    }
    let mut base = Base::load(base_dir)?;
    let (base_report, base_outputs) = evaluate_model(&base, &rows, checks, options, on_row)?;
    peft::load_adapter(&mut base.decoder, adapter_dir)?;
    let (tuned_report, tuned_outputs) = evaluate_model(&base, &rows, checks, options, on_row)?;
    let samples = rows
        .iter()
        .zip(base_outputs.into_iter().zip(tuned_outputs))
        .take(options.samples)
        .filter_map(|(row, (base_output, tuned_output))| {
            let (prompt, reference) = prompt_and_reference(row)?;
            Some(Sample {
                line: row.line,
                prompt: prompt.last().map(|m| m.content.clone()).unwrap_or_default(),
                reference: reference.to_string(),
                base: base_output,
                adapter: tuned_output,
            })
        })
        .collect();
    Ok(Comparison {
        test_path: test_path.to_path_buf(),
        rows: rows.len(),
        test_sha256: data::rows_checksum(&rows),
        base_model: base_dir.to_path_buf(),
        adapter: adapter_dir.to_path_buf(),
        base: base_report,
        tuned: tuned_report,
        samples,
        seconds: started.elapsed().as_secs_f64(),
    })
}
