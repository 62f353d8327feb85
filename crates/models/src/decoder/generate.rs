//! Text generation: one token at a time through the KV cache, greedy or sampled, streamed as text.
//!
//! Three small parts make up [`generate`]: a [`Sampler`] (argmax, or temperature then top-p with a seeded RNG, as
//! transformers orders them), a [`TextStream`] (incremental detokenization that holds back bytes until they form
//! whole characters) and a [`StopFilter`] (holds back text that could still become a stop string, so the caller
//! never sees part of one).

use candle_core::{IndexOp, Tensor};
use tokenizers::Tokenizer;

use super::model::Decoder;
use super::rng::Rng;
use crate::error::Error;

/// How to generate.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateOptions {
    pub max_new_tokens: usize,
    /// 0 picks the most likely token (greedy); above 0 divides the logits before sampling.
    pub temperature: f64,
    /// Nucleus sampling: sample among the most likely tokens whose probabilities first reach `top_p` (1 = all).
    pub top_p: f64,
    /// The sampling RNG's seed: the same seed, prompt and model give the same output.
    pub seed: u64,
    /// Generation ends where any of these appears; the stop string itself is not part of the output.
    pub stop: Vec<String>,
    /// End-of-sequence ids in addition to the model's own (config.json and generation_config.json).
    pub eos_token_ids: Vec<u32>,
    /// Checked before each token: once raised, generation ends with [`Error::Cancelled`].
    pub cancel: knowhow_core::Cancellation,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        GenerateOptions {
            max_new_tokens: 256,
            temperature: 0.0,
            top_p: 1.0,
            seed: 0,
            stop: Vec::new(),
            eos_token_ids: Vec::new(),
            cancel: knowhow_core::Cancellation::default(),
        }
    }
}

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// An end-of-sequence token or a stop string.
    Stop,
    /// `max_new_tokens` were generated.
    Length,
}

impl FinishReason {
    /// As the OpenAI API spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
        }
    }
}

/// What [`generate`] produced.
#[derive(Debug, Clone, PartialEq)]
pub struct Generation {
    /// Every generated token, including a final end-of-sequence token (which the text leaves out).
    pub tokens: Vec<u32>,
    /// The generated text, cut before a stop string; exactly what the callback received.
    pub text: String,
    pub finish_reason: FinishReason,
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
}

/// Continues `prompt` (token ids, special tokens included) and calls `on_text` with each piece of text as soon as
/// it is certain (whole characters, not possibly part of a stop string).
pub fn generate(
    decoder: &Decoder,
    tokenizer: &Tokenizer,
    prompt: &[u32],
    options: &GenerateOptions,
    on_text: &mut dyn FnMut(&str),
) -> Result<Generation, Error> {
    if prompt.is_empty() {
        return Err(Error::Option {
            option: "prompt",
            problem: "is empty; generation needs at least one token (usually BOS)".to_owned(),
        });
    }
    let mut sampler = Sampler::new(options.temperature, options.top_p, options.seed)?;
    let mut eos = decoder.config().eos_token_ids.clone();
    eos.extend(&options.eos_token_ids);
    let mut stream = TextStream::default();
    let mut filter = StopFilter::new(options.stop.clone());
    let mut tokens = Vec::new();
    let mut finish_reason = FinishReason::Length;
    let mut cache = decoder.new_cache();
    let mut input = Tensor::new(prompt, decoder.device())?.unsqueeze(0)?;
    while tokens.len() < options.max_new_tokens {
        if options.cancel.is_cancelled() {
            return Err(Error::Cancelled);
        }
        let last = decoder.forward_last(&input, Some(&mut cache))?.i(0)?.to_vec1::<f32>()?;
        let token = sampler.sample(&last);
        tokens.push(token);
        if eos.contains(&token) {
            finish_reason = FinishReason::Stop;
            break;
        }
        let piece = stream.push(tokenizer, token)?;
        if filter.push(&piece, on_text) {
            finish_reason = FinishReason::Stop;
            break;
        }
        input = Tensor::new(&[token], decoder.device())?.unsqueeze(0)?;
    }
    if !filter.is_stopped() {
        let rest = stream.finish(tokenizer)?;
        if !filter.push(&rest, on_text) {
            filter.flush(on_text);
        } else {
            finish_reason = FinishReason::Stop;
        }
    }
    Ok(Generation {
        completion_tokens: tokens.len(),
        tokens,
        text: filter.into_text(),
        finish_reason,
        prompt_tokens: prompt.len(),
    })
}

/// Picks the next token from a row of logits.
#[derive(Debug, Clone)]
pub struct Sampler {
    temperature: f64,
    top_p: f64,
    rng: Rng,
}

impl Sampler {
    /// `temperature` 0 is greedy; `top_p` in (0, 1].
    pub fn new(temperature: f64, top_p: f64, seed: u64) -> Result<Self, Error> {
        if !(temperature >= 0.0 && temperature.is_finite()) {
            return Err(Error::Option {
                option: "temperature",
                problem: format!("is {temperature}; it must be 0 (greedy) or positive"),
            });
        }
        if !(top_p > 0.0 && top_p <= 1.0) {
            return Err(Error::Option {
                option: "top_p",
                problem: format!("is {top_p}; it must be in (0, 1]"),
            });
        }
        Ok(Sampler {
            temperature,
            top_p,
            rng: Rng::new(seed),
        })
    }

    pub fn sample(&mut self, logits: &[f32]) -> u32 {
        if self.temperature == 0.0 {
            return argmax(logits);
        }
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
        let mut candidates: Vec<(u32, f64)> = logits
            .iter()
            .enumerate()
            .map(|(id, &logit)| (id as u32, ((logit as f64 - max) / self.temperature).exp()))
            .collect();
        let total: f64 = candidates.iter().map(|(_, weight)| weight).sum();
        candidates.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        // The nucleus: a token stays while the probability of the tokens before it is below top_p.
        let mut before = 0.0;
        let kept = candidates
            .iter()
            .take_while(|(_, weight)| {
                let keep = before < self.top_p;
                before += weight / total;
                keep
            })
            .count()
            .max(1);
        let candidates = &candidates[..kept];
        let mass: f64 = candidates.iter().map(|(_, weight)| weight).sum();
        let mut target = self.rng.next_f64() * mass;
        for &(id, weight) in candidates {
            if target < weight {
                return id;
            }
            target -= weight;
        }
        candidates[kept - 1].0
    }
}

/// The first index of the largest logit (as `torch.argmax`).
fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (index, &logit) in logits.iter().enumerate() {
        if logit > logits[best] {
            best = index;
        }
    }
    best as u32
}

/// Incremental detokenization: decodes a window of recent tokens and returns only the new, complete text. A token
/// that ends inside a multi-byte character (byte-level BPE) yields nothing until the character is complete.
#[derive(Debug, Clone, Default)]
pub struct TextStream {
    ids: Vec<u32>,
    /// Tokens before this one are already fully returned; they stay out of the decoded window.
    prefix_offset: usize,
    /// Tokens before this one have been returned as text.
    read_offset: usize,
}

impl TextStream {
    /// Adds a token; returns the text it completes (often empty).
    pub fn push(&mut self, tokenizer: &Tokenizer, id: u32) -> Result<String, Error> {
        self.ids.push(id);
        let before = decode(tokenizer, &self.ids[self.prefix_offset..self.read_offset])?;
        let after = decode(tokenizer, &self.ids[self.prefix_offset..])?;
        if after.len() > before.len() && !after.ends_with('\u{FFFD}') {
            if let Some(new) = after.get(before.len()..) {
                // Decoding a window may differ from decoding everything only at the window's start (leading-space
                // rules), so the window moves on to start at the last returned token.
                self.prefix_offset = self.read_offset;
                self.read_offset = self.ids.len();
                return Ok(new.to_owned());
            }
        }
        Ok(String::new())
    }

    /// The text still held back at the end of generation (possibly with replacement characters).
    pub fn finish(&mut self, tokenizer: &Tokenizer) -> Result<String, Error> {
        let before = decode(tokenizer, &self.ids[self.prefix_offset..self.read_offset])?;
        let after = decode(tokenizer, &self.ids[self.prefix_offset..])?;
        self.prefix_offset = self.ids.len();
        self.read_offset = self.ids.len();
        Ok(after.get(before.len()..).unwrap_or_default().to_owned())
    }
}

fn decode(tokenizer: &Tokenizer, ids: &[u32]) -> Result<String, Error> {
    tokenizer.decode(ids, true).map_err(|error| Error::Tokenize {
        path: "tokenizer.json".into(),
        message: error.to_string(),
    })
}

/// Passes text through until a stop string appears, holding back any tail that could be the start of one.
#[derive(Debug, Clone, Default)]
pub struct StopFilter {
    stops: Vec<String>,
    text: String,
    /// Bytes of `text` handed to the callback.
    emitted: usize,
    stopped: bool,
}

impl StopFilter {
    pub fn new(stops: Vec<String>) -> Self {
        StopFilter {
            stops: stops.into_iter().filter(|stop| !stop.is_empty()).collect(),
            ..StopFilter::default()
        }
    }

    /// Adds text; emits what is decided. Returns true once a stop string has been found (the text is cut before
    /// it, and nothing more is accepted).
    pub fn push(&mut self, piece: &str, on_text: &mut dyn FnMut(&str)) -> bool {
        if self.stopped {
            return true;
        }
        self.text.push_str(piece);
        // A stop string cannot start inside emitted text: that text would have been held back as its prefix.
        let pending = &self.text[self.emitted..];
        let found = self.stops.iter().filter_map(|stop| pending.find(stop.as_str())).min();
        let end = match found {
            Some(start) => self.emitted + start,
            None => self.text.len() - self.held_back(),
        };
        if end > self.emitted {
            on_text(&self.text[self.emitted..end]);
            self.emitted = end;
        }
        if found.is_some() {
            self.text.truncate(end);
            self.stopped = true;
        }
        self.stopped
    }

    /// Emits whatever was held back (generation is over, so it cannot become a stop string any more).
    pub fn flush(&mut self, on_text: &mut dyn FnMut(&str)) {
        if self.emitted < self.text.len() {
            on_text(&self.text[self.emitted..]);
            self.emitted = self.text.len();
        }
    }

    pub fn is_stopped(&self) -> bool {
        self.stopped
    }

    /// All text accepted (cut before the stop string, if one was found).
    pub fn into_text(self) -> String {
        self.text
    }

    /// Length of the longest suffix of the pending text that is a proper prefix of some stop string.
    fn held_back(&self) -> usize {
        let pending = &self.text[self.emitted..];
        self.stops
            .iter()
            .flat_map(|stop| {
                (1..stop.len().min(pending.len() + 1))
                    .filter(|&length| stop.is_char_boundary(length) && pending.ends_with(&stop[..length]))
            })
            .max()
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn draws(sampler: &mut Sampler, logits: &[f32], count: usize) -> Vec<u32> {
        (0..count).map(|_| sampler.sample(logits)).collect()
    }

    #[test]
    fn greedy_takes_the_first_maximum() {
        let mut sampler = Sampler::new(0.0, 1.0, 0).unwrap();
        assert_eq!(sampler.sample(&[0.1, 3.0, -1.0, 3.0]), 1);
    }

    #[test]
    fn sampling_repeats_for_a_seed_and_varies_across_seeds() {
        let logits = [0.5f32, 0.4, 0.3, 0.2, 0.1, 0.0];
        let run = |seed| draws(&mut Sampler::new(1.0, 1.0, seed).unwrap(), &logits, 200);
        assert_eq!(run(42), run(42));
        assert_ne!(run(42), run(43));
        let mut seen = run(42);
        seen.sort();
        seen.dedup();
        assert_eq!(
            seen.len(),
            logits.len(),
            "every token is drawn at temperature 1 without top-p"
        );
    }

    #[test]
    fn top_p_samples_only_the_nucleus_in_proportion() {
        // Probabilities 0.5, 0.3, 0.15, 0.05 (logits are their logs).
        let logits: Vec<f32> = [0.5f32, 0.3, 0.15, 0.05].iter().map(|p| p.ln()).collect();
        let mut sampler = Sampler::new(1.0, 0.7, 1).unwrap();
        let drawn = draws(&mut sampler, &logits, 4000);
        assert!(
            drawn.iter().all(|&id| id < 2),
            "0.5 + 0.3 reach top_p 0.7; tokens 2 and 3 are outside"
        );
        let share = drawn.iter().filter(|&&id| id == 0).count() as f64 / drawn.len() as f64;
        assert!(
            (share - 0.5 / 0.8).abs() < 0.03,
            "token 0 drawn {share}, expected 0.625 within the nucleus"
        );
        let mut narrow = Sampler::new(1.0, 0.2, 1).unwrap();
        assert!(draws(&mut narrow, &logits, 100).iter().all(|&id| id == 0));
    }

    #[test]
    fn invalid_options_are_refused() {
        assert!(Sampler::new(-1.0, 1.0, 0).is_err());
        assert!(Sampler::new(1.0, 0.0, 0).is_err());
        assert!(Sampler::new(1.0, 1.5, 0).is_err());
    }

    fn run_filter(stops: &[&str], pieces: &[&str]) -> (Vec<String>, String, bool) {
        let mut filter = StopFilter::new(stops.iter().map(|s| s.to_string()).collect());
        let mut emitted = Vec::new();
        let mut stopped = false;
        for piece in pieces {
            stopped = filter.push(piece, &mut |text| emitted.push(text.to_owned()));
            if stopped {
                break;
            }
        }
        if !stopped {
            filter.flush(&mut |text| emitted.push(text.to_owned()));
        }
        (emitted, filter.into_text(), stopped)
    }

    #[test]
    fn stop_string_split_across_tokens_is_never_shown() {
        let (emitted, text, stopped) = run_filter(&["###END"], &["Hel", "lo ##", "#E", "ND and more"]);
        assert!(stopped);
        assert_eq!(text, "Hello ");
        assert_eq!(
            emitted,
            vec!["Hel", "lo "],
            "the '##' and '#E' tails were held back, then dropped"
        );
    }

    #[test]
    fn a_false_start_is_released_once_it_cannot_be_a_stop_string() {
        let (emitted, text, stopped) = run_filter(&["</answer>"], &["a </", "b> c", " </ans"]);
        assert!(!stopped);
        assert_eq!(
            emitted,
            vec!["a ", "</b> c", " ", "</ans"],
            "the last tail is released at the end"
        );
        assert_eq!(text, "a </b> c </ans");
        let (_, text, stopped) = run_filter(&["x", "yz"], &["ab", "cyzx"]);
        assert!(stopped);
        assert_eq!(text, "abc", "the earliest stop string wins");
    }

    #[test]
    fn held_back_text_respects_character_boundaries() {
        let (emitted, text, stopped) = run_filter(&["日本語"], &["a日", "本", "人"]);
        assert!(!stopped);
        assert_eq!(emitted, vec!["a", "日本人"]);
        assert_eq!(text, "a日本人");
    }
}
