//! The decoder-only transformer shared by Llama, Mistral and Qwen2: token embedding, `L` pre-norm blocks of
//!
//! ```text
//! h = x + Attention(RMSNorm(x))      causal (optionally windowed) multi-head attention, RoPE on q and k,
//!                                    grouped-query: each key/value head serves num_heads / num_kv_heads query heads
//! y = h + W_down (SiLU(W_gate n) ⊙ W_up n),  n = RMSNorm(h)
//! ```
//!
//! then a final RMSNorm and the output projection to vocabulary logits.
//!
//! Every operation is differentiable (so LoRA adapters, or a whole model built on a `VarMap`, can be trained), and
//! inference and training take the same path. RMSNorm, RoPE, the causal softmax and the adapted linear layers are
//! our own ops with hand-written backward passes (`rms_norm`, `rope`, `causal_softmax`, `lora`), which run on
//! the CPU only; a product with a frozen weight skips the weight's gradient (`lora::matmul_transposed`); the embedding
//! lookup, SiLU, the attention matmuls and the residual sums are candle's ops. Checked against transformers.

use candle_core::{Device, Result, Tensor};
use candle_nn::{Init, VarBuilder};

use super::causal_softmax::CausalSoftmax;
use super::config::{DecoderConfig, RopeScaling};
use super::lora::{matmul_transposed, Linear, Lora, LoraConfig, ALL_TARGETS};
use super::rms_norm::rms_norm;
use super::rng::Rng;
use super::rope::rope;

/// Keys and values of every position seen so far, per layer, so that generation feeds one new token per step.
pub struct KvCache {
    layers: Vec<Option<(Tensor, Tensor)>>,
}

impl KvCache {
    pub fn new(config: &DecoderConfig) -> Self {
        KvCache {
            layers: vec![None; config.num_hidden_layers],
        }
    }

    /// Positions cached (the position of the next token).
    pub fn len(&self) -> usize {
        match self.layers.first() {
            Some(Some((k, _))) => k.dim(2).unwrap_or(0),
            _ => 0,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A Llama / Mistral / Qwen2 causal language model.
pub struct Decoder {
    config: DecoderConfig,
    /// `[vocab, hidden]`.
    embed_tokens: Tensor,
    layers: Vec<Block>,
    norm: Tensor,
    /// `None` when tied to `embed_tokens`.
    lm_head: Option<Tensor>,
    inv_freq: Vec<f32>,
    training: bool,
    lora: Option<LoraConfig>,
}

struct Block {
    input_layernorm: Tensor,
    post_attention_layernorm: Tensor,
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    o_proj: Linear,
    gate_proj: Linear,
    up_proj: Linear,
    down_proj: Linear,
    sliding_window: Option<usize>,
}

impl Block {
    /// The block's linear layers with their PEFT module paths, in PEFT's order.
    fn linears(&self) -> [(&'static str, &Linear); 7] {
        [
            ("self_attn.q_proj", &self.q_proj),
            ("self_attn.k_proj", &self.k_proj),
            ("self_attn.v_proj", &self.v_proj),
            ("self_attn.o_proj", &self.o_proj),
            ("mlp.gate_proj", &self.gate_proj),
            ("mlp.up_proj", &self.up_proj),
            ("mlp.down_proj", &self.down_proj),
        ]
    }

    /// The same block over the same tensors, without an adapter.
    fn share_base(&self) -> Block {
        let share = |linear: &Linear| Linear::new(linear.weight.clone(), linear.bias.clone());
        Block {
            input_layernorm: self.input_layernorm.clone(),
            post_attention_layernorm: self.post_attention_layernorm.clone(),
            q_proj: share(&self.q_proj),
            k_proj: share(&self.k_proj),
            v_proj: share(&self.v_proj),
            o_proj: share(&self.o_proj),
            gate_proj: share(&self.gate_proj),
            up_proj: share(&self.up_proj),
            down_proj: share(&self.down_proj),
            sliding_window: self.sliding_window,
        }
    }

    fn linears_mut(&mut self) -> [(&'static str, &mut Linear); 7] {
        [
            ("self_attn.q_proj", &mut self.q_proj),
            ("self_attn.k_proj", &mut self.k_proj),
            ("self_attn.v_proj", &mut self.v_proj),
            ("self_attn.o_proj", &mut self.o_proj),
            ("mlp.gate_proj", &mut self.gate_proj),
            ("mlp.up_proj", &mut self.up_proj),
            ("mlp.down_proj", &mut self.down_proj),
        ]
    }
}

/// Weights as transformers initialises them (normal, std 0.02; zero biases; unit norms) when `vb` creates variables
/// (a `VarMap`); ignored when it reads a checkpoint.
const INIT_WEIGHT: Init = Init::Randn { mean: 0.0, stdev: 0.02 };

fn linear(vb: VarBuilder, out: usize, input: usize, bias: bool) -> Result<Linear> {
    let weight = vb.get_with_hints((out, input), "weight", INIT_WEIGHT)?;
    let bias = if bias {
        Some(vb.get_with_hints(out, "bias", Init::Const(0.0))?)
    } else {
        None
    };
    Ok(Linear::new(weight, bias))
}

impl Decoder {
    /// Builds the model from `vb` (`model.embed_tokens.weight`, `model.layers.N...`, `lm_head.weight` as in Hugging
    /// Face checkpoints). On a `VarBuilder::from_varmap` every weight becomes a trainable variable.
    pub fn new(config: DecoderConfig, vb: VarBuilder) -> Result<Self> {
        let c = &config;
        let model = vb.pp("model");
        let embed_tokens = model.get_with_hints((c.vocab_size, c.hidden_size), "embed_tokens.weight", INIT_WEIGHT)?;
        let (q_out, kv_out) = (c.num_attention_heads * c.head_dim, c.num_key_value_heads * c.head_dim);
        let mut layers = Vec::with_capacity(c.num_hidden_layers);
        for (index, sliding_window) in c.sliding_windows.iter().enumerate() {
            let vb = model.pp(format!("layers.{index}"));
            let attn = vb.pp("self_attn");
            let mlp = vb.pp("mlp");
            let norm = |name: &str| vb.get_with_hints(c.hidden_size, &format!("{name}.weight"), Init::Const(1.0));
            layers.push(Block {
                input_layernorm: norm("input_layernorm")?,
                post_attention_layernorm: norm("post_attention_layernorm")?,
                q_proj: linear(attn.pp("q_proj"), q_out, c.hidden_size, c.qkv_bias)?,
                k_proj: linear(attn.pp("k_proj"), kv_out, c.hidden_size, c.qkv_bias)?,
                v_proj: linear(attn.pp("v_proj"), kv_out, c.hidden_size, c.qkv_bias)?,
                o_proj: linear(attn.pp("o_proj"), c.hidden_size, q_out, c.o_bias)?,
                gate_proj: linear(mlp.pp("gate_proj"), c.intermediate_size, c.hidden_size, c.mlp_bias)?,
                up_proj: linear(mlp.pp("up_proj"), c.intermediate_size, c.hidden_size, c.mlp_bias)?,
                down_proj: linear(mlp.pp("down_proj"), c.hidden_size, c.intermediate_size, c.mlp_bias)?,
                sliding_window: *sliding_window,
            });
        }
        let norm = model.get_with_hints(c.hidden_size, "norm.weight", Init::Const(1.0))?;
        let lm_head = if c.tie_word_embeddings {
            None
        } else {
            Some(vb.get_with_hints((c.vocab_size, c.hidden_size), "lm_head.weight", INIT_WEIGHT)?)
        };
        let inv_freq = inverse_frequencies(c);
        Ok(Decoder {
            config,
            embed_tokens,
            layers,
            norm,
            lm_head,
            inv_freq,
            training: false,
            lora: None,
        })
    }

    /// A second decoder over this one's base weights, without its adapter. Tensors are shared, not copied (a candle
    /// tensor is a reference to its storage), so an adapter loaded into the copy costs only the adapter's own
    /// weights: what serving several adapters over one base model needs.
    pub fn share_base(&self) -> Decoder {
        Decoder {
            config: self.config.clone(),
            embed_tokens: self.embed_tokens.clone(),
            layers: self.layers.iter().map(Block::share_base).collect(),
            norm: self.norm.clone(),
            lm_head: self.lm_head.clone(),
            inv_freq: self.inv_freq.clone(),
            training: false,
            lora: None,
        }
    }

    pub fn config(&self) -> &DecoderConfig {
        &self.config
    }

    pub fn device(&self) -> &Device {
        self.embed_tokens.device()
    }

    /// A new, empty cache for [`Decoder::forward`].
    pub fn new_cache(&self) -> KvCache {
        KvCache::new(&self.config)
    }

    /// Training mode turns LoRA dropout on.
    pub fn set_training(&mut self, training: bool) {
        self.training = training;
    }

    pub fn is_training(&self) -> bool {
        self.training
    }

    /// Logits `[batch, seq, vocab]` (f32) for `input_ids: [batch, seq]` (u32). With a cache, the tokens continue
    /// the cached positions and their keys and values are appended; without one they start at position 0. The mask
    /// is causal only: right padding in a training batch is the loss mask's business.
    pub fn forward(&self, input_ids: &Tensor, cache: Option<&mut KvCache>) -> Result<Tensor> {
        let hidden = self.hidden_states(input_ids, cache)?;
        self.logits(&hidden)
    }

    /// Logits `[batch, vocab]` of the last position only: what generation needs, without projecting every prompt
    /// position onto the vocabulary.
    pub fn forward_last(&self, input_ids: &Tensor, cache: Option<&mut KvCache>) -> Result<Tensor> {
        let hidden = self.hidden_states(input_ids, cache)?;
        let last = hidden.dim(1)? - 1;
        self.logits(&hidden.narrow(1, last, 1)?)?.squeeze(1)
    }

    /// The final normed hidden states `[batch, seq, hidden]`.
    fn hidden_states(&self, input_ids: &Tensor, mut cache: Option<&mut KvCache>) -> Result<Tensor> {
        let (batch, seq) = input_ids.dims2()?;
        let offset = cache.as_ref().map_or(0, |cache| cache.len());
        let c = &self.config;
        let mut x =
            self.embed_tokens
                .index_select(&input_ids.flatten_all()?, 0)?
                .reshape((batch, seq, c.hidden_size))?;
        let (cos, sin) = self.rotary_tables(offset, seq)?;
        for (index, layer) in self.layers.iter().enumerate() {
            let layer_cache = cache.as_mut().map(|cache| &mut cache.layers[index]);
            let normed = rms_norm(&x, &layer.input_layernorm, c.rms_norm_eps)?;
            let attended = self.attention(layer, &normed, &cos, &sin, offset, layer_cache)?;
            x = (x + attended)?;
            let normed = rms_norm(&x, &layer.post_attention_layernorm, c.rms_norm_eps)?;
            let gate = layer.gate_proj.forward(&normed, self.training)?.silu()?;
            let up = layer.up_proj.forward(&normed, self.training)?;
            x = (x + layer.down_proj.forward(&(gate * up)?, self.training)?)?;
        }
        rms_norm(&x, &self.norm, c.rms_norm_eps)
    }

    /// Logits `[n, vocab]` of the flattened positions `positions` (u32 indices into `batch · seq`) only. A training
    /// loss needs just the positions that predict a kept label, and the vocabulary projection, the largest matmul of
    /// a small model, then skips the prompt and the padding.
    pub fn forward_positions(&self, input_ids: &Tensor, positions: &Tensor) -> Result<Tensor> {
        let hidden = self.hidden_states(input_ids, None)?;
        let (batch, seq, hidden_size) = hidden.dims3()?;
        self.project(&hidden.reshape((batch * seq, hidden_size))?.index_select(positions, 0)?)
    }

    /// `[batch, seq, hidden]` → `[batch, seq, vocab]` through the output projection (or the tied embeddings).
    fn logits(&self, hidden: &Tensor) -> Result<Tensor> {
        let (batch, seq, hidden_size) = hidden.dims3()?;
        self.project(&hidden.reshape((batch * seq, hidden_size))?)?
            .reshape((batch, seq, self.config.vocab_size))
    }

    /// `[rows, hidden]` → `[rows, vocab]`.
    fn project(&self, hidden: &Tensor) -> Result<Tensor> {
        matmul_transposed(hidden, self.lm_head.as_ref().unwrap_or(&self.embed_tokens))
    }

    fn attention(
        &self,
        layer: &Block,
        x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        offset: usize,
        cache: Option<&mut Option<(Tensor, Tensor)>>,
    ) -> Result<Tensor> {
        let c = &self.config;
        let (batch, seq, _) = x.dims3()?;
        let heads = |projection: &Linear, count: usize| -> Result<Tensor> {
            projection
                .forward(x, self.training)?
                .reshape((batch, seq, count, c.head_dim))?
                .transpose(1, 2)?
                .contiguous()
        };
        let q = rope(&heads(&layer.q_proj, c.num_attention_heads)?, cos, sin)?;
        let mut k = rope(&heads(&layer.k_proj, c.num_key_value_heads)?, cos, sin)?;
        let mut v = heads(&layer.v_proj, c.num_key_value_heads)?;
        if let Some(cache) = cache {
            if let Some((past_k, past_v)) = cache.as_ref() {
                k = Tensor::cat(&[past_k, &k], 2)?;
                v = Tensor::cat(&[past_v, &v], 2)?;
            }
            *cache = Some((k.clone(), v.clone()));
        }
        let k = repeat_kv(&k, c.group_size())?;
        let v = repeat_kv(&v, c.group_size())?;
        let probabilities = CausalSoftmax {
            scale: 1.0 / (c.head_dim as f32).sqrt(),
            offset,
            window: layer.sliding_window,
        }
        .apply(&q.matmul(&k.t()?)?)?;
        let out =
            probabilities
                .matmul(&v)?
                .transpose(1, 2)?
                .reshape((batch, seq, c.num_attention_heads * c.head_dim))?;
        layer.o_proj.forward(&out, self.training)
    }

    /// `cos` and `sin` of `position · inv_freq`, `[seq, head_dim / 2]`, computed in f32 as transformers does.
    fn rotary_tables(&self, offset: usize, seq: usize) -> Result<(Tensor, Tensor)> {
        let half = self.inv_freq.len();
        let angles: Vec<f32> = (offset..offset + seq)
            .flat_map(|position| self.inv_freq.iter().map(move |f| position as f32 * f))
            .collect();
        let cos = angles.iter().map(|a| a.cos()).collect();
        let sin = angles.iter().map(|a| a.sin()).collect();
        let device = self.device();
        Ok((
            Tensor::from_vec(cos, (seq, half), device)?,
            Tensor::from_vec(sin, (seq, half), device)?,
        ))
    }

    /// Adds a fresh adapter (A seeded from `seed`, B zeros) to each targeted layer. Replaces any existing adapter.
    pub fn add_lora(&mut self, config: &LoraConfig, seed: u64) -> Result<()> {
        check_lora_config(config)?;
        let mut rng = Rng::new(seed);
        for layer in &mut self.layers {
            for (path, linear) in layer.linears_mut() {
                linear.lora = None;
                if is_target(config, path) {
                    let (out, input) = linear.dims()?;
                    linear.lora = Some(Lora::init(out, input, config, &mut rng)?);
                }
            }
        }
        self.lora = Some(config.clone());
        Ok(())
    }

    /// Puts an adapter (loaded from a file) on layer `layer`'s module `path` (`self_attn.q_proj`, `mlp.down_proj`).
    pub(crate) fn set_lora(&mut self, layer: usize, path: &str, lora: Lora) -> Result<()> {
        let block = self
            .layers
            .get_mut(layer)
            .ok_or_else(|| candle_core::Error::Msg(format!("the model has no layer {layer}")))?;
        let (_, linear) = block
            .linears_mut()
            .into_iter()
            .find(|(name, _)| *name == path)
            .ok_or_else(|| candle_core::Error::Msg(format!("the model has no module {path}")))?;
        let (out, input) = linear.dims()?;
        let (r, a_in) = lora.a.dims2()?;
        let (b_out, b_r) = lora.b.dims2()?;
        if a_in != input || b_out != out || b_r != r {
            candle_core::bail!(
                "layers.{layer}.{path}: adapter shapes A {:?}, B {:?} do not fit the [{out}, {input}] weight",
                lora.a.dims(),
                lora.b.dims()
            );
        }
        linear.lora = Some(lora);
        Ok(())
    }

    pub(crate) fn set_lora_config(&mut self, config: LoraConfig) {
        self.lora = Some(config);
    }

    /// The adapter's settings, if one is attached.
    pub fn lora_config(&self) -> Option<&LoraConfig> {
        self.lora.as_ref()
    }

    /// Every adapter factor as `(PEFT key, variable)`, in PEFT's order (layer, then q, k, v, o, gate, up, down; A
    /// before B): `base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight`, ... Hand these to an optimizer.
    pub fn lora_vars(&self) -> Vec<(String, candle_core::Var)> {
        let mut vars = Vec::new();
        for (index, layer) in self.layers.iter().enumerate() {
            for (path, linear) in layer.linears() {
                if let Some(lora) = &linear.lora {
                    let prefix = format!("base_model.model.model.layers.{index}.{path}");
                    vars.push((format!("{prefix}.lora_A.weight"), lora.a.clone()));
                    vars.push((format!("{prefix}.lora_B.weight"), lora.b.clone()));
                }
            }
        }
        vars
    }

    /// Sets every adapter's count of training forwards (see `Lora::set_dropout_calls`). Each training forward
    /// draws fresh dropout masks from that count, so a run resumed after `n` forwards must start at `n` to continue
    /// with the masks of the run it continues.
    pub fn set_dropout_calls(&self, calls: u64) {
        for layer in &self.layers {
            for (_, linear) in layer.linears() {
                if let Some(lora) = &linear.lora {
                    lora.set_dropout_calls(calls);
                }
            }
        }
    }

    /// Drops every adapter: the model is the base model again.
    pub fn remove_lora(&mut self) {
        for layer in &mut self.layers {
            for (_, linear) in layer.linears_mut() {
                linear.lora = None;
            }
        }
        self.lora = None;
    }
}

pub(crate) fn check_lora_config(config: &LoraConfig) -> Result<()> {
    if config.r == 0 {
        candle_core::bail!("LoRA rank r must be at least 1");
    }
    if !(0.0..1.0).contains(&config.dropout) {
        candle_core::bail!("LoRA dropout must be in [0, 1), got {}", config.dropout);
    }
    if let Some(unknown) = config.targets.iter().find(|t| !ALL_TARGETS.contains(&t.as_str())) {
        candle_core::bail!("unknown LoRA target {unknown:?}; known: {}", ALL_TARGETS.join(", "));
    }
    if config.targets.is_empty() {
        candle_core::bail!("LoRA needs at least one target module");
    }
    Ok(())
}

fn is_target(config: &LoraConfig, path: &str) -> bool {
    let module = path.rsplit('.').next().unwrap_or(path);
    config.targets.iter().any(|target| target == module)
}

/// RoPE's inverse frequencies `theta^(-2i/d)`, rescaled for Llama 3.1 when configured.
fn inverse_frequencies(config: &DecoderConfig) -> Vec<f32> {
    let dim = config.head_dim;
    // As transformers: the exponent in f32, the power in f32 (`base ** (arange / dim)` on a float tensor).
    let base: Vec<f32> = (0..dim / 2)
        .map(|i| 1.0 / (config.rope_theta as f32).powf((2 * i) as f32 / dim as f32))
        .collect();
    match config.rope_scaling {
        RopeScaling::None => base,
        RopeScaling::Llama3 {
            factor,
            low_freq_factor,
            high_freq_factor,
            original_max_position_embeddings: old_context,
        } => {
            let low_freq_wavelen = old_context / low_freq_factor;
            let high_freq_wavelen = old_context / high_freq_factor;
            base.into_iter()
                .map(|f| {
                    let f = f as f64;
                    let wavelen = 2.0 * std::f64::consts::PI / f;
                    let scaled = if wavelen > low_freq_wavelen { f / factor } else { f };
                    let medium = wavelen >= high_freq_wavelen && wavelen <= low_freq_wavelen;
                    if medium {
                        let smooth = (old_context / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor);
                        ((1.0 - smooth) * scaled / factor + smooth * scaled) as f32
                    } else {
                        scaled as f32
                    }
                })
                .collect()
        }
    }
}

/// Key/value heads `[b, kv_heads, t, d]` repeated to `[b, kv_heads · group, t, d]`, each `group` times in a row.
fn repeat_kv(x: &Tensor, group: usize) -> Result<Tensor> {
    if group == 1 {
        return Ok(x.clone());
    }
    let (batch, kv_heads, positions, dim) = x.dims4()?;
    Tensor::cat(&vec![x; group], 2)?.reshape((batch, kv_heads * group, positions, dim))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decoder::config::Architecture;
    use crate::decoder::loss::{causal_lm_loss, causal_lm_loss_sum, decoder_loss_sum};
    use crate::decoder::max_abs_diff;
    use candle_core::DType;
    use candle_nn::{Optimizer, VarMap};

    fn tiny_config() -> DecoderConfig {
        DecoderConfig {
            architecture: Architecture::Llama,
            vocab_size: 16,
            hidden_size: 16,
            intermediate_size: 32,
            num_hidden_layers: 2,
            num_attention_heads: 4,
            num_key_value_heads: 2,
            head_dim: 4,
            rms_norm_eps: 1e-5,
            rope_theta: 10_000.0,
            rope_scaling: RopeScaling::None,
            max_position_embeddings: 64,
            tie_word_embeddings: true,
            qkv_bias: false,
            o_bias: false,
            mlp_bias: false,
            sliding_windows: vec![None, Some(3)],
            eos_token_ids: vec![0],
        }
    }

    #[test]
    fn decoders_can_be_shared_between_threads() {
        fn shareable<T: Send + Sync>() {}
        shareable::<Decoder>();
    }

    #[test]
    fn a_model_built_on_a_varmap_learns_a_sequence() {
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        let decoder = Decoder::new(tiny_config(), vb).unwrap();
        assert_eq!(
            varmap.all_vars().len(),
            1 + 2 * 9 + 1,
            "embeddings, 9 per block, final norm (tied head)"
        );
        let input = Tensor::new(&[[1u32, 5, 9, 13, 2, 6, 10, 14]], &Device::Cpu).unwrap();
        let labels = input.to_dtype(DType::I64).unwrap();
        let mut optimizer = candle_nn::AdamW::new_lr(varmap.all_vars(), 0.05).unwrap();
        let loss_at = |decoder: &Decoder| causal_lm_loss(&decoder.forward(&input, None).unwrap(), &labels).unwrap();
        let first = loss_at(&decoder).to_scalar::<f32>().unwrap();
        assert!((first - 16f32.ln()).abs() < 0.1, "starts near uniform: {first}");
        for _ in 0..80 {
            optimizer.backward_step(&loss_at(&decoder)).unwrap();
        }
        let last = loss_at(&decoder).to_scalar::<f32>().unwrap();
        assert!(last < 0.2 * first, "loss {first} -> {last}");
        // The last-position shortcut agrees with the full forward.
        let full = decoder
            .forward(&input, None)
            .unwrap()
            .narrow(1, 7, 1)
            .unwrap()
            .squeeze(1)
            .unwrap();
        let last_only = decoder.forward_last(&input, None).unwrap();
        let diff = max_abs_diff(&full, &last_only);
        assert!(diff < 1e-6);
    }

    #[test]
    fn the_training_loss_equals_the_full_logits_loss_with_the_same_adapter_gradients() {
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        Decoder::new(tiny_config(), vb).unwrap();
        // Frozen copies of the weights, as a loaded model has them, and an adapter whose B is not zero (so that A
        // has a gradient too).
        let frozen = varmap
            .data()
            .lock()
            .unwrap()
            .iter()
            .map(|(name, var)| (name.clone(), var.as_tensor().detach()))
            .collect();
        let mut decoder = Decoder::new(
            tiny_config(),
            VarBuilder::from_tensors(frozen, DType::F32, &Device::Cpu),
        )
        .unwrap();
        let config = LoraConfig {
            r: 2,
            dropout: 0.0,
            ..LoraConfig::default()
        };
        decoder.add_lora(&config, 7).unwrap();
        let vars = decoder.lora_vars();
        for (_, var) in vars.iter().filter(|(name, _)| name.contains("lora_B")) {
            var.set(&Tensor::randn(0f32, 0.5, var.shape(), &Device::Cpu).unwrap())
                .unwrap();
        }

        let input = Tensor::new(&[[1u32, 5, 9, 13, 2, 6], [3, 4, 5, 6, 7, 8]], &Device::Cpu).unwrap();
        let labels = Tensor::new(
            &[[-100i64, -100, 9, 13, 2, -100], [-100, 4, -100, 6, 7, 8]],
            &Device::Cpu,
        )
        .unwrap();
        let (full, full_count) = causal_lm_loss_sum(&decoder.forward(&input, None).unwrap(), &labels).unwrap();
        let (picked, picked_count) = decoder_loss_sum(&decoder, &input, &labels).unwrap();
        assert_eq!((full_count, picked_count), (7, 7));
        let scalar = |t: &Tensor| t.to_scalar::<f32>().unwrap();
        assert!((scalar(&full) - scalar(&picked)).abs() < 1e-5);

        let full_grads = full.backward().unwrap();
        let picked_grads = picked.backward().unwrap();
        for (name, var) in &vars {
            let (a, b) = (full_grads.get(var).unwrap(), picked_grads.get(var).unwrap());
            let diff = max_abs_diff(a, b);
            let size = scalar(&a.abs().unwrap().max_all().unwrap());
            assert!(
                size > 0.0 && diff <= 1e-5 * size.max(1.0),
                "{name}: {diff} (gradient up to {size})"
            );
        }
    }
}
