//! LoRA (Hu et al., 2021) with PEFT's semantics: a frozen linear layer `y = W x + b` gains a trainable low-rank
//! update, `y = W x + b + B (A dropout(x)) · scaling`, with `A: [r, in]` initialised like PEFT (Kaiming-uniform with
//! `a = √5`, i.e. uniform in `±1/√in`), `B: [out, r]` zeros (so training starts from the base model) and
//! `scaling = alpha / r` (`alpha / √r` with rsLoRA).

use std::sync::atomic::{AtomicU64, Ordering};

use candle_core::backend::BackendStorage;
use candle_core::op::{Add, Mul};
use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Storage, Tensor, Var};

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

    /// Makes the next training forward draw the mask of forward number `calls`, as if `calls` had already run: a
    /// resumed run continues the dropout sequence of the run it continues.
    pub fn set_dropout_calls(&self, calls: u64) {
        self.dropout_calls.store(calls, Ordering::Relaxed);
    }

    /// The dropout of this forward pass: the mask's seed and probability, `None` when not dropping. Each training
    /// forward draws a fresh seed from `(dropout_seed, call number)`.
    fn dropout_for_call(&self, training: bool) -> Option<(u64, f64)> {
        (training && self.dropout > 0.0).then(|| {
            let call = self.dropout_calls.fetch_add(1, Ordering::Relaxed);
            (
                self.dropout_seed ^ call.wrapping_mul(0x9E37_79B9_7F4A_7C15),
                self.dropout,
            )
        })
    }
}

/// Inverted dropout's multipliers, as `torch.nn.Dropout` in training mode: 0 with probability `p`, else `1/(1-p)`.
fn dropout_mask(seed: u64, p: f64, len: usize) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    let keep = (1.0 / (1.0 - p)) as f32;
    (0..len).map(|_| if rng.next_f64() < p { 0.0 } else { keep }).collect()
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
        let mut y = match &self.lora {
            Some(lora) => x.apply_op3(
                lora.a.as_tensor(),
                lora.b.as_tensor(),
                LoraLinear {
                    weight: self.weight.clone(),
                    scaling: lora.scaling,
                    dropout: lora.dropout_for_call(training),
                },
            )?,
            None => matmul_transposed(&x, &self.weight)?,
        };
        if let Some(bias) = &self.bias {
            y = y.broadcast_add(bias)?;
        }
        leading.push(out);
        y.reshape(leading)
    }
}

/// `x · Wᵀ` for `x: [rows, in]` and `W: [out, in]`. When `x` is part of a training graph and `W` is frozen, the
/// product goes through [`FrozenWeightMatmul`], whose backward pass skips the weight's gradient.
pub(crate) fn matmul_transposed(x: &Tensor, weight: &Tensor) -> Result<Tensor> {
    if x.track_op() && !weight.track_op() && x.device().is_cpu() {
        x.apply_op2(weight, FrozenWeightMatmul)
    } else {
        x.matmul(&weight.t()?)
    }
}

/// `x · Wᵀ` with a gradient for `x` only. candle's own matmul always computes both operands' gradients: for a frozen
/// weight that is a third matmul per layer in every backward pass, and a weight-sized buffer held until the step
/// ends (measured on a 40M-parameter Qwen2 shape: a third of the step time).
struct FrozenWeightMatmul;

impl CustomOp2 for FrozenWeightMatmul {
    fn name(&self) -> &'static str {
        "frozen-weight-matmul"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        x_layout: &Layout,
        w: &CpuStorage,
        w_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (rows, input) = x_layout.shape().dims2()?;
        let (out, weight_input) = w_layout.shape().dims2()?;
        if input != weight_input {
            candle_core::bail!(
                "frozen-weight-matmul: x is [{rows}, {input}] but the weight is [{out}, {weight_input}]"
            );
        }
        let product = x.matmul(w, (1, rows, out, input), x_layout, &w_layout.transpose(0, 1)?)?;
        Ok((product, Shape::from((rows, out))))
    }

    fn bwd(
        &self,
        _x: &Tensor,
        weight: &Tensor,
        _product: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        Ok((Some(grad.matmul(weight)?), None))
    }
}

/// A LoRA layer's `x·Wᵀ + s·(dropout(x)·Aᵀ)·Bᵀ` as one op of `(x, A, B)`, with the frozen `W` inside it.
///
/// Written with candle's ops, an adapted layer keeps the base product, the adapter's product and its scaled copy,
/// the dropout mask and the masked input alive in the training graph until the backward pass (for the decoder of
/// `bench/tune_speed.py`, some 600 MB). This op keeps only `x`; its backward pass recomputes the rank-r
/// intermediates and the mask (from its seed), and gives `x` a gradient only when `x` needs one.
struct LoraLinear {
    weight: Tensor,
    scaling: f64,
    /// `(seed, p)` of the dropout mask; `None` when not dropping.
    dropout: Option<(u64, f64)>,
}

impl CustomOp3 for LoraLinear {
    fn name(&self) -> &'static str {
        "lora-linear"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        x_layout: &Layout,
        a: &CpuStorage,
        a_layout: &Layout,
        b: &CpuStorage,
        b_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (rows, input) = x_layout.shape().dims2()?;
        let (r, a_input) = a_layout.shape().dims2()?;
        let (out, b_r) = b_layout.shape().dims2()?;
        let (weight, weight_layout) = self.weight.storage_and_layout();
        let Storage::Cpu(weight) = &*weight else {
            candle_core::bail!("lora-linear: the weight is not on the CPU");
        };
        if weight_layout.shape().dims2()? != (out, input) || a_input != input || b_r != r {
            candle_core::bail!(
                "lora-linear: x [{rows}, {input}], weight {:?}, A [{r}, {a_input}] and B [{out}, {b_r}] do not fit",
                weight_layout.shape().dims()
            );
        }
        let contiguous = |columns: usize| Layout::contiguous((rows, columns));
        let base = x.matmul(weight, (1, rows, out, input), x_layout, &weight_layout.transpose(0, 1)?)?;
        let dropped = match self.dropout {
            Some((seed, p)) => {
                let mask = CpuStorage::F32(dropout_mask(seed, p, rows * input));
                Some(x.binary_impl::<Mul>(&mask, x_layout, &contiguous(input))?)
            }
            None => None,
        };
        let (x, x_layout) = match &dropped {
            Some(dropped) => (dropped, contiguous(input)),
            None => (x, x_layout.clone()),
        };
        let down = x.matmul(a, (1, rows, r, input), &x_layout, &a_layout.transpose(0, 1)?)?;
        let down = down.affine(&contiguous(r), self.scaling, 0.0)?;
        let update = down.matmul(b, (1, rows, out, r), &contiguous(r), &b_layout.transpose(0, 1)?)?;
        let y = base.binary_impl::<Add>(&update, &contiguous(out), &contiguous(out))?;
        Ok((y, Shape::from((rows, out))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        a: &Tensor,
        b: &Tensor,
        _y: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        // Detached: gradients computed from the tracked A, B and x would otherwise carry a graph of their own, and
        // the accumulated gradients of A and B would keep every layer's backward intermediates alive.
        let needs_grad_x = x.track_op();
        let (x, a, b) = (x.detach(), a.detach(), b.detach());
        let mask = self
            .dropout
            .map(|(seed, p)| Tensor::from_vec(dropout_mask(seed, p, x.elem_count()), x.shape(), x.device()))
            .transpose()?;
        let dropped = match &mask {
            Some(mask) => (&x * mask)?,
            None => x.clone(),
        };
        // ∂/∂(s·dropout(x)·Aᵀ) = ∂y · B, and s once more on the way to A and to x.
        let grad_down = (grad.matmul(&b)? * self.scaling)?;
        let grad_a = grad_down.t()?.matmul(&dropped)?;
        let grad_b = grad.t()?.matmul(&(dropped.matmul(&a.t()?)? * self.scaling)?)?;
        let grad_x = if needs_grad_x {
            let through_adapter = grad_down.matmul(&a)?;
            let through_adapter = match &mask {
                Some(mask) => (through_adapter * mask)?,
                None => through_adapter,
            };
            Some((grad.matmul(&self.weight)? + through_adapter)?)
        } else {
            None
        };
        Ok((grad_x, Some(grad_a), Some(grad_b)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decoder::max_abs_diff as max_diff;
    use candle_core::{DType, Device};

    #[test]
    fn a_frozen_weight_gets_no_gradient_and_the_input_the_same_one() {
        let device = Device::Cpu;
        let weight = Tensor::randn(0f32, 1.0, (3, 5), &device).unwrap();
        let upstream = Tensor::randn(0f32, 1.0, (4, 3), &device).unwrap();
        let x = Var::randn(0f32, 1.0, (4, 5), &device).unwrap();

        let frozen = matmul_transposed(x.as_tensor(), &weight).unwrap();
        let plain = x.as_tensor().matmul(&weight.t().unwrap()).unwrap();
        assert!(max_diff(&frozen, &plain) < 1e-5);

        let frozen_grads = (frozen * &upstream).unwrap().sum_all().unwrap().backward().unwrap();
        let plain_grads = (plain * &upstream).unwrap().sum_all().unwrap().backward().unwrap();
        assert!(max_diff(frozen_grads.get(&x).unwrap(), plain_grads.get(&x).unwrap()) < 1e-5);
        // Besides x and the upstream factor, candle's matmul leaves one gradient: the weight's.
        let others = |grads: &candle_core::backprop::GradStore| {
            grads
                .get_ids()
                .filter(|&&id| id != x.id() && id != upstream.id())
                .count()
        };
        assert_eq!(others(&frozen_grads), 0);
        assert_eq!(others(&plain_grads), 1);
    }

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
        let difference = max_diff(&plain.forward(&x, true).unwrap(), &adapted.forward(&x, true).unwrap());
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
        let mut linear = Linear::new(Tensor::zeros((1, 1000), DType::F32, &Device::Cpu).unwrap(), None);
        linear.lora = Some(Lora::new(
            Var::ones((4, 1000), DType::F32, &Device::Cpu).unwrap(),
            Var::ones((1, 4), DType::F32, &Device::Cpu).unwrap(),
            1.0,
            0.25,
            9,
        ));
        let x = Tensor::ones((1, 1000), DType::F32, &Device::Cpu).unwrap();
        let y = |training| linear.forward(&x, training).unwrap().to_vec2::<f32>().unwrap()[0][0];
        assert_eq!(y(false), 4000.0);
        let (first, second) = (y(true), y(true));
        assert_ne!(first, second, "each training forward draws a fresh mask");
        // 4 · Σ mask: about 4 · 750 · 4/3 = 4000 in expectation.
        assert!((3600.0..4400.0).contains(&first), "{first}");

        let mask = dropout_mask(9, 0.25, 1000);
        let zeros = mask.iter().filter(|v| **v == 0.0).count();
        assert!((200..300).contains(&zeros), "{zeros} of 1000 dropped at p=0.25");
        assert!(mask.iter().all(|v| *v == 0.0 || (*v - 4.0 / 3.0).abs() < 1e-6));
    }

    #[test]
    fn the_fused_layer_has_the_gradients_of_the_same_layer_written_with_candle_ops() {
        let device = Device::Cpu;
        let (rows, input, out, r) = (6, 5, 4, 2);
        let weight = Tensor::randn(0f32, 1.0, (out, input), &device).unwrap();
        let x = Var::randn(0f32, 1.0, (rows, input), &device).unwrap();
        let a = Var::randn(0f32, 1.0, (r, input), &device).unwrap();
        let b = Var::randn(0f32, 1.0, (out, r), &device).unwrap();
        let upstream = Tensor::randn(0f32, 1.0, (rows, out), &device).unwrap();
        for dropout in [None, Some((5u64, 0.3))] {
            let fused = x
                .apply_op3(
                    &a,
                    &b,
                    LoraLinear {
                        weight: weight.clone(),
                        scaling: 1.5,
                        dropout,
                    },
                )
                .unwrap();
            let dropped = match dropout {
                Some((seed, p)) => (x.as_tensor()
                    * Tensor::from_vec(dropout_mask(seed, p, rows * input), (rows, input), &device).unwrap())
                .unwrap(),
                None => x.as_tensor().clone(),
            };
            let update = (dropped
                .matmul(&a.t().unwrap())
                .unwrap()
                .matmul(&b.t().unwrap())
                .unwrap()
                * 1.5)
                .unwrap();
            let plain = (x.matmul(&weight.t().unwrap()).unwrap() + update).unwrap();
            assert!(max_diff(&fused, &plain) < 1e-4);
            let fused_grads = (fused * &upstream).unwrap().sum_all().unwrap().backward().unwrap();
            let plain_grads = (plain * &upstream).unwrap().sum_all().unwrap().backward().unwrap();
            for var in [&x, &a, &b] {
                let diff = max_diff(fused_grads.get(var).unwrap(), plain_grads.get(var).unwrap());
                assert!(diff < 1e-4, "{dropout:?}: {diff}");
            }
        }
    }
}
