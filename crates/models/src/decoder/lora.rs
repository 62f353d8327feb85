//! LoRA (Hu et al., 2021) with PEFT's semantics: a frozen linear layer `y = W x + b` gains a trainable low-rank
//! update, `y = W x + b + B (A dropout(x)) · scaling`, with `A: [r, in]` initialised like PEFT (Kaiming-uniform with
//! `a = √5`, i.e. uniform in `±1/√in`), `B: [out, r]` zeros (so training starts from the base model) and
//! `scaling = alpha / r` (`alpha / √r` with rsLoRA).

use std::sync::atomic::{AtomicU64, Ordering};

use candle_core::{Result, Tensor, Var};

use super::rng::Rng;

/// The linear layers of a decoder block, in the order PEFT lists them.
pub const ALL_TARGETS: [&str; 7] = [
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
];

/// Which layers get adapters and how they are scaled.
#[derive(Debug, Clone, PartialEq)]
pub struct LoraConfig {
    /// Rank of the update.
    pub r: usize,
    /// `lora_alpha`: the update is scaled by `alpha / r` (or `alpha / √r` with `use_rslora`).
    pub alpha: f64,
    /// Probability of zeroing an input feature of the adapter path while training.
    pub dropout: f64,
    /// Module names (`q_proj`, ..., `down_proj`, see [`ALL_TARGETS`]).
    pub targets: Vec<String>,
    pub use_rslora: bool,
}

impl Default for LoraConfig {
    /// PEFT's defaults for a causal LM fine-tune: r 8, alpha 16, dropout 0.05, attention and MLP projections.
    fn default() -> Self {
        LoraConfig {
            r: 8,
            alpha: 16.0,
            dropout: 0.05,
            targets: ALL_TARGETS.iter().map(|t| t.to_string()).collect(),
            use_rslora: false,
        }
    }
}

impl LoraConfig {
    pub fn scaling(&self) -> f64 {
        lora_scaling(self.alpha, self.r, self.use_rslora)
    }
}

pub(crate) fn lora_scaling(alpha: f64, r: usize, use_rslora: bool) -> f64 {
    if use_rslora {
        alpha / (r as f64).sqrt()
    } else {
        alpha / r as f64
    }
}

/// One adapter: the two trainable factors and how their product is applied.
pub struct Lora {
    /// `[r, in]`.
    pub a: Var,
    /// `[out, r]`.
    pub b: Var,
    pub scaling: f64,
    pub dropout: f64,
    /// Each training forward draws a fresh mask from `(dropout_seed, call number)`: repeatable for a seed.
    dropout_seed: u64,
    dropout_calls: AtomicU64,
}

impl Lora {
    pub fn new(a: Var, b: Var, scaling: f64, dropout: f64, dropout_seed: u64) -> Self {
        Lora {
            a,
            b,
            scaling,
            dropout,
            dropout_seed,
            dropout_calls: AtomicU64::new(0),
        }
    }

    /// A fresh adapter for a `[out, in]` layer: A as PEFT initialises it (from `rng`), B zeros.
    pub fn init(out: usize, input: usize, config: &LoraConfig, rng: &mut Rng) -> Result<Self> {
        let bound = 1.0 / (input as f64).sqrt();
        let a: Vec<f32> = (0..config.r * input)
            .map(|_| rng.uniform(-bound, bound) as f32)
            .collect();
        let device = candle_core::Device::Cpu;
        let a = Var::from_tensor(&Tensor::from_vec(a, (config.r, input), &device)?)?;
        let b = Var::zeros((out, config.r), candle_core::DType::F32, &device)?;
        Ok(Lora::new(a, b, config.scaling(), config.dropout, rng.next_u64()))
    }

    /// `B (A dropout(x)) · scaling` for `x: [rows, in]`.
    fn forward(&self, x: &Tensor, training: bool) -> Result<Tensor> {
        let x = if training && self.dropout > 0.0 {
            self.dropout(x)?
        } else {
            x.clone()
        };
        x.matmul(&self.a.t()?)?.matmul(&self.b.t()?)? * self.scaling
    }

    /// Inverted dropout (survivors scaled by `1/(1-p)`), as `torch.nn.Dropout` in training mode.
    fn dropout(&self, x: &Tensor) -> Result<Tensor> {
        let call = self.dropout_calls.fetch_add(1, Ordering::Relaxed);
        let mut rng = Rng::new(self.dropout_seed ^ call.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let keep = (1.0 / (1.0 - self.dropout)) as f32;
        let mask: Vec<f32> = (0..x.elem_count())
            .map(|_| if rng.next_f64() < self.dropout { 0.0 } else { keep })
            .collect();
        x * Tensor::from_vec(mask, x.shape(), x.device())?
    }
}

/// A linear layer of the decoder (weight `[out, in]`, optional bias) that may carry a LoRA adapter.
pub struct Linear {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
    pub lora: Option<Lora>,
}

impl Linear {
    pub fn new(weight: Tensor, bias: Option<Tensor>) -> Self {
        Linear {
            weight,
            bias,
            lora: None,
        }
    }

    /// `(out, in)`.
    pub fn dims(&self) -> Result<(usize, usize)> {
        self.weight.dims2()
    }

    /// `x Wᵀ + b (+ the adapter's update)` for `x: [..., in]`.
    pub fn forward(&self, x: &Tensor, training: bool) -> Result<Tensor> {
        let (out, input) = self.dims()?;
        let mut leading = x.dims().to_vec();
        leading.pop();
        let rows: usize = leading.iter().product();
        let x = x.reshape((rows, input))?;
        let mut y = x.matmul(&self.weight.t()?)?;
        if let Some(bias) = &self.bias {
            y = y.broadcast_add(bias)?;
        }
        if let Some(lora) = &self.lora {
            y = (y + lora.forward(&x, training)?)?;
        }
        leading.push(out);
        y.reshape(leading)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    #[test]
    fn fresh_adapter_changes_nothing_and_is_seeded() {
        let config = LoraConfig {
            r: 2,
            dropout: 0.5,
            ..LoraConfig::default()
        };
        let weight = Tensor::randn(0f32, 1.0, (3, 5), &Device::Cpu).unwrap();
        let x = Tensor::randn(0f32, 1.0, (2, 4, 5), &Device::Cpu).unwrap();
        let plain = Linear::new(weight.clone(), None);
        let mut adapted = Linear::new(weight, None);
        adapted.lora = Some(Lora::init(3, 5, &config, &mut Rng::new(1)).unwrap());
        let difference = (plain.forward(&x, true).unwrap() - adapted.forward(&x, true).unwrap())
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert_eq!(difference, 0.0, "B starts at zero");
        let a = |seed| {
            let lora = Lora::init(3, 5, &config, &mut Rng::new(seed)).unwrap();
            lora.a.flatten_all().unwrap().to_vec1::<f32>().unwrap()
        };
        assert_eq!(a(1), a(1));
        assert_ne!(a(1), a(2));
        let bound = 1.0 / 5f32.sqrt();
        assert!(a(1).iter().all(|v| v.abs() <= bound));
        assert_eq!(config.scaling(), 8.0);
        assert_eq!(lora_scaling(8.0, 4, true), 4.0);
    }

    #[test]
    fn dropout_only_in_training_and_scales_survivors() {
        let lora = Lora::new(
            Var::ones((4, 1000), DType::F32, &Device::Cpu).unwrap(),
            Var::ones((1, 4), DType::F32, &Device::Cpu).unwrap(),
            1.0,
            0.25,
            9,
        );
        let x = Tensor::ones((1, 1000), DType::F32, &Device::Cpu).unwrap();
        let eval = lora.forward(&x, false).unwrap().to_vec2::<f32>().unwrap()[0][0];
        assert_eq!(eval, 4000.0);
        let dropped = lora.dropout(&x).unwrap().to_vec2::<f32>().unwrap().remove(0);
        let zeros = dropped.iter().filter(|v| **v == 0.0).count();
        assert!((200..300).contains(&zeros), "{zeros} of 1000 dropped at p=0.25");
        assert!(dropped.iter().all(|v| *v == 0.0 || (*v - 4.0 / 3.0).abs() < 1e-6));
    }
}
