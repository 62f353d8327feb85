//! Tiny random Llama, Mistral and Qwen2 checkpoints and PEFT LoRA adapters, in the real Hugging Face formats,
//! against transformers and peft.
//!
//! `fixtures/make_tiny_decoders.py` creates the models (GQA, tied and untied embeddings, llama3 RoPE, biases, a
//! sliding window shorter than the sequence, one sharded checkpoint), adapters saved by peft's `save_pretrained`, their
//! `merge_and_unload` results, and the reference logits, greedy generations, losses and LoRA gradients; these tests
//! load the same folders and must agree (logits and gradients within 1e-4, merged weights and the loss within 1e-5).
//! The round-trip test runs the script again to load a knowhow-saved adapter in peft. It needs a Python with torch,
//! transformers, tokenizers and peft:
//!
//! ```text
//! KNOWHOW_PYTHON=/work/pyref/venv/bin/python cargo test -p knowhow-models --test decoder_hf
//! ```

mod python_reference;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::OnceLock;

use candle_core::{Device, Tensor};
use knowhow_models::decoder::generate::{StopFilter, TextStream};
use knowhow_models::decoder::{
    causal_lm_loss, generate, load_tokenizer, peft, Decoder, FinishReason, GenerateOptions, LoraConfig,
};
use serde::Deserialize;

const TOLERANCE: f32 = 1e-4;

#[derive(Deserialize)]
struct Reference {
    batch: Vec<Vec<u32>>,
    labels: Vec<Vec<i64>>,
    unicode_text: String,
    models: Vec<ModelCase>,
    adapters: Vec<AdapterCase>,
}

#[derive(Deserialize)]
struct ModelCase {
    name: String,
    logits: Vec<f32>,
    prompt: Vec<u32>,
    greedy: Vec<u32>,
    max_new_tokens: usize,
}

#[derive(Deserialize)]
struct AdapterCase {
    name: String,
    base: String,
    logits: Vec<f32>,
    loss: f32,
    grads: BTreeMap<String, Vec<f32>>,
}

struct Fixtures {
    python: String,
    dir: PathBuf,
    reference: Reference,
}

const SCRIPT: &str = "make_tiny_decoders.py";

/// The generator's folder and reference, and the Python that made them; `None` (skipped) without KNOWHOW_PYTHON.
fn fixtures(test: &str) -> Option<&'static Fixtures> {
    static GENERATED: OnceLock<Fixtures> = OnceLock::new();
    python_reference::once(&GENERATED, test, |python| {
        let (dir, reference) = python_reference::generate(&python, SCRIPT, "knowhow-models-tiny-decoders");
        Fixtures { python, dir, reference }
    })
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "lengths differ");
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

fn flat(tensor: &Tensor) -> Vec<f32> {
    tensor.flatten_all().unwrap().to_vec1().unwrap()
}

fn batch_tensor(rows: &[Vec<u32>]) -> Tensor {
    Tensor::new(rows.to_vec(), &Device::Cpu).unwrap()
}

fn assert_close(ours: &[f32], theirs: &[f32], tolerance: f32, what: &str) {
    let diff = max_abs_diff(ours, theirs);
    eprintln!("{what}: max abs diff {diff:e}");
    assert!(diff <= tolerance, "{what}: max abs diff {diff} > {tolerance}");
}

#[test]
fn logits_match_transformers() {
    let Some(f) = fixtures("logits_match_transformers") else {
        return;
    };
    let input = batch_tensor(&f.reference.batch);
    for case in &f.reference.models {
        let decoder = Decoder::load(&f.dir.join(&case.name)).unwrap();
        let logits = decoder.forward(&input, None).unwrap();
        assert_eq!(logits.dims(), &[3, 12, decoder.config().vocab_size]);
        assert_close(&flat(&logits), &case.logits, TOLERANCE, &case.name);
    }
}

#[test]
fn kv_cache_logits_equal_the_full_forward() {
    let Some(f) = fixtures("kv_cache_logits_equal_the_full_forward") else {
        return;
    };
    let input = batch_tensor(&f.reference.batch);
    for case in &f.reference.models {
        let decoder = Decoder::load(&f.dir.join(&case.name)).unwrap();
        let full = decoder.forward(&input, None).unwrap();
        let mut cache = decoder.new_cache();
        // A prompt chunk, single tokens, then a chunk again: positions 0..5, 5, 6, 7..12.
        let mut start = 0;
        for length in [5, 1, 1, 5] {
            let chunk = input.narrow(1, start, length).unwrap();
            let logits = decoder.forward(&chunk, Some(&mut cache)).unwrap();
            let expected = full.narrow(1, start, length).unwrap();
            assert_close(
                &flat(&logits),
                &flat(&expected),
                TOLERANCE,
                &format!("{} cached {start}+{length}", case.name),
            );
            start += length;
            assert_eq!(cache.len(), start);
        }
    }
}

#[test]
fn greedy_generation_matches_transformers() {
    let Some(f) = fixtures("greedy_generation_matches_transformers") else {
        return;
    };
    for case in &f.reference.models {
        let dir = f.dir.join(&case.name);
        let decoder = Decoder::load(&dir).unwrap();
        let tokenizer = load_tokenizer(&dir).unwrap();
        let options = GenerateOptions {
            max_new_tokens: case.max_new_tokens,
            ..GenerateOptions::default()
        };
        let mut streamed = String::new();
        let generation = generate(&decoder, &tokenizer, &case.prompt, &options, &mut |text| {
            streamed.push_str(text)
        })
        .unwrap();
        assert_eq!(generation.tokens, case.greedy, "{}", case.name);
        assert_eq!(generation.prompt_tokens, case.prompt.len());
        assert_eq!(generation.completion_tokens, generation.tokens.len());
        assert_eq!(streamed, generation.text, "{}: the stream is the text", case.name);
        let eos = &decoder.config().eos_token_ids;
        let ended_on_eos = generation.tokens.last().is_some_and(|id| eos.contains(id));
        let content: Vec<u32> = generation
            .tokens
            .iter()
            .copied()
            .filter(|id| !eos.contains(id))
            .collect();
        assert_eq!(
            generation.text,
            tokenizer.decode(&content, true).unwrap(),
            "{}",
            case.name
        );
        let expected_reason = if ended_on_eos {
            FinishReason::Stop
        } else {
            FinishReason::Length
        };
        assert_eq!(generation.finish_reason, expected_reason, "{}", case.name);
    }
}

#[test]
fn sampling_repeats_for_a_seed_and_stops_at_stop_strings() {
    let Some(f) = fixtures("sampling_repeats_for_a_seed_and_stops_at_stop_strings") else {
        return;
    };
    let case = &f.reference.models[0];
    let dir = f.dir.join(&case.name);
    let decoder = Decoder::load(&dir).unwrap();
    let tokenizer = load_tokenizer(&dir).unwrap();
    let sample = |seed, stop: Vec<String>| {
        let options = GenerateOptions {
            max_new_tokens: 20,
            temperature: 0.9,
            top_p: 0.9,
            seed,
            stop,
            ..GenerateOptions::default()
        };
        let mut streamed = String::new();
        let generation = generate(&decoder, &tokenizer, &case.prompt, &options, &mut |t| {
            streamed.push_str(t)
        })
        .unwrap();
        assert_eq!(streamed, generation.text);
        generation
    };
    let first = sample(3, Vec::new());
    assert_eq!(first, sample(3, Vec::new()));
    assert_ne!(first.tokens, sample(4, Vec::new()).tokens);

    // A stop string taken from the middle of the sampled text: the same run ends just before it.
    let chars: Vec<char> = first.text.chars().collect();
    assert!(chars.len() >= 6, "sampled text too short: {:?}", first.text);
    let start = chars.len() / 2;
    let stop: String = chars[start..start + 3].iter().collect();
    let stopped = sample(3, vec![stop.clone()]);
    let cut = first.text.find(&stop).unwrap();
    assert_eq!(stopped.text, first.text[..cut]);
    assert_eq!(stopped.finish_reason, FinishReason::Stop);
    assert!(stopped.tokens.len() <= first.tokens.len());

    // A raised cancellation flag ends generation before the next token.
    let cancel = knowhow_core::Cancellation::new();
    cancel.cancel();
    let options = GenerateOptions {
        cancel,
        ..GenerateOptions::default()
    };
    let cancelled = generate(&decoder, &tokenizer, &case.prompt, &options, &mut |_| {});
    assert!(
        matches!(cancelled, Err(knowhow_models::Error::Cancelled)),
        "{cancelled:?}"
    );
}

#[test]
fn text_stream_never_splits_a_character() {
    let Some(f) = fixtures("text_stream_never_splits_a_character") else {
        return;
    };
    let tokenizer = load_tokenizer(&f.dir.join(&f.reference.models[0].name)).unwrap();
    let text = &f.reference.unicode_text;
    let ids = tokenizer.encode(text.as_str(), false).unwrap().get_ids().to_vec();
    let mut stream = TextStream::default();
    let mut pieces = Vec::new();
    for &id in &ids {
        pieces.push(stream.push(&tokenizer, id).unwrap());
    }
    pieces.push(stream.finish(&tokenizer).unwrap());
    assert_eq!(pieces.concat(), *text);
    assert!(pieces.iter().all(|piece| !piece.contains('\u{FFFD}')), "{pieces:?}");
    assert!(
        pieces[..ids.len()].iter().any(String::is_empty),
        "some token ends inside a character and must wait: {pieces:?}"
    );
    // Streaming through a stop filter reassembles the same text when no stop string occurs.
    let mut filter = StopFilter::new(vec!["never there".to_owned()]);
    let mut out = String::new();
    for piece in &pieces {
        filter.push(piece, &mut |t| out.push_str(t));
    }
    filter.flush(&mut |t| out.push_str(t));
    assert_eq!(out, *text);
}

fn adapter_model(f: &Fixtures, case: &AdapterCase) -> Decoder {
    let mut decoder = Decoder::load(&f.dir.join(&case.base)).unwrap();
    peft::load_adapter(&mut decoder, &f.dir.join(&case.name)).unwrap();
    decoder
}

#[test]
fn peft_adapters_give_peft_logits() {
    let Some(f) = fixtures("peft_adapters_give_peft_logits") else {
        return;
    };
    let input = batch_tensor(&f.reference.batch);
    for case in &f.reference.adapters {
        let decoder = adapter_model(f, case);
        let logits = decoder.forward(&input, None).unwrap();
        assert_close(&flat(&logits), &case.logits, TOLERANCE, &case.name);
        let base = Decoder::load(&f.dir.join(&case.base)).unwrap();
        let base_logits = flat(&base.forward(&input, None).unwrap());
        assert!(
            max_abs_diff(&base_logits, &case.logits) > 0.1,
            "{}: the adapter must matter",
            case.name
        );
        // An adapter over a shared base (as knowhow serve holds several) gives peft's logits, and the base it
        // shares stays as it was.
        let mut shared = base.share_base();
        peft::load_adapter(&mut shared, &f.dir.join(&case.name)).unwrap();
        let shared_logits = flat(&shared.forward(&input, None).unwrap());
        assert_close(&shared_logits, &case.logits, TOLERANCE, &case.name);
        assert_eq!(
            flat(&base.forward(&input, None).unwrap()),
            base_logits,
            "{}: base changed",
            case.name
        );
    }
}

#[test]
fn merged_weights_match_merge_and_unload() {
    let Some(f) = fixtures("merged_weights_match_merge_and_unload") else {
        return;
    };
    let input = batch_tensor(&f.reference.batch);
    for case in &f.reference.adapters {
        let out = tempfile::tempdir().unwrap();
        let merged_dir = out.path().join("merged");
        peft::merge_adapter(&f.dir.join(&case.base), &f.dir.join(&case.name), &merged_dir).unwrap();
        let ours = candle_core::safetensors::load(merged_dir.join("model.safetensors"), &Device::Cpu).unwrap();
        let theirs = candle_core::safetensors::load(
            f.dir.join(format!("{}-merged", case.name)).join("model.safetensors"),
            &Device::Cpu,
        )
        .unwrap();
        for (key, tensor) in &theirs {
            let mine = ours
                .get(key)
                .unwrap_or_else(|| panic!("{}: merged file lacks {key}", case.name));
            let diff = max_abs_diff(&flat(mine), &flat(tensor));
            assert!(diff <= 1e-5, "{} {key}: max abs diff {diff}", case.name);
        }
        assert_eq!(ours.len(), theirs.len(), "{}: same tensors", case.name);
        // The merged folder is a complete model: it loads alone and gives the adapter's logits.
        let merged = Decoder::load(&merged_dir).unwrap();
        load_tokenizer(&merged_dir).unwrap();
        let logits = merged.forward(&input, None).unwrap();
        assert_close(
            &flat(&logits),
            &case.logits,
            TOLERANCE,
            &format!("{} merged", case.name),
        );
    }
}

#[test]
fn training_step_loss_and_gradients_match_torch() {
    let Some(f) = fixtures("training_step_loss_and_gradients_match_torch") else {
        return;
    };
    let input = batch_tensor(&f.reference.batch);
    let labels = Tensor::new(f.reference.labels.clone(), &Device::Cpu).unwrap();
    for case in &f.reference.adapters {
        let mut decoder = adapter_model(f, case);
        decoder.set_training(true);
        let logits = decoder.forward(&input, None).unwrap();
        let loss = causal_lm_loss(&logits, &labels).unwrap();
        let value = loss.to_scalar::<f32>().unwrap();
        assert!(
            (value - case.loss).abs() <= 1e-5,
            "{}: loss {value} vs torch {}",
            case.name,
            case.loss
        );
        let grads = loss.backward().unwrap();
        let vars = decoder.lora_vars();
        let names: Vec<&String> = vars.iter().map(|(name, _)| name).collect();
        let torch_names: Vec<&String> = case.grads.keys().collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(sorted, torch_names, "{}: the same trainable tensors", case.name);
        for (name, var) in &vars {
            let grad = grads
                .get(var)
                .unwrap_or_else(|| panic!("{}: no gradient for {name}", case.name));
            let ours = flat(grad);
            let theirs = &case.grads[name];
            let scale = theirs.iter().fold(1f32, |m, v| m.max(v.abs()));
            let diff = max_abs_diff(&ours, theirs);
            assert!(
                diff <= TOLERANCE * scale,
                "{} {name}: gradient max abs diff {diff} (scale {scale})",
                case.name
            );
            assert!(ours.iter().any(|g| *g != 0.0), "{} {name}: gradient is zero", case.name);
        }
    }
}

#[test]
fn saved_adapter_round_trips_through_peft() {
    let Some(f) = fixtures("saved_adapter_round_trips_through_peft") else {
        return;
    };
    let base_dir = f.dir.join("llama-tied-llama3-bias");
    let mut decoder = Decoder::load(&base_dir).unwrap();
    let config = LoraConfig {
        r: 4,
        alpha: 8.0,
        dropout: 0.1,
        targets: ["q_proj", "v_proj", "o_proj", "up_proj"].map(String::from).to_vec(),
        use_rslora: false,
    };
    decoder.add_lora(&config, 7).unwrap();
    let input = batch_tensor(&f.reference.batch);
    let before = flat(&decoder.forward(&input, None).unwrap());
    // B starts at zero; give it values as training would, so the adapter changes the output.
    for (index, (name, var)) in decoder.lora_vars().into_iter().enumerate() {
        if name.contains("lora_B") {
            let values = Tensor::randn(0f32, 0.3, var.shape(), &Device::Cpu).unwrap();
            var.set(&values).unwrap();
            assert!(index % 2 == 1, "B follows A");
        }
    }
    let ours = flat(&decoder.forward(&input, None).unwrap());
    assert!(max_abs_diff(&before, &ours) > 0.1);

    let out = tempfile::tempdir().unwrap();
    let adapter_dir = out.path().join("adapter");
    peft::save_adapter(&decoder, &adapter_dir, base_dir.to_str().unwrap()).unwrap();
    let batch_path = out.path().join("batch.json");
    std::fs::write(&batch_path, serde_json::to_vec(&f.reference.batch).unwrap()).unwrap();
    let result_path = out.path().join("peft_logits.json");
    python_reference::run(
        &f.python,
        SCRIPT,
        &[
            "check-adapter",
            base_dir.to_str().unwrap(),
            adapter_dir.to_str().unwrap(),
            batch_path.to_str().unwrap(),
            result_path.to_str().unwrap(),
        ],
    );
    let theirs: HashMap<String, Vec<f32>> = serde_json::from_slice(&std::fs::read(&result_path).unwrap()).unwrap();
    assert_close(&ours, &theirs["logits"], TOLERANCE, "knowhow adapter in peft");

    // And back: the saved folder loads into a fresh base with the same logits and settings.
    let mut reloaded = Decoder::load(&base_dir).unwrap();
    peft::load_adapter(&mut reloaded, &adapter_dir).unwrap();
    assert_eq!(reloaded.lora_config(), Some(&config));
    assert_close(
        &flat(&reloaded.forward(&input, None).unwrap()),
        &ours,
        1e-6,
        "reloaded adapter",
    );
    reloaded.remove_lora();
    assert!(reloaded.lora_vars().is_empty());
    assert_close(
        &flat(&reloaded.forward(&input, None).unwrap()),
        &before,
        TOLERANCE,
        "adapter removed",
    );
}
