//! Runtime CPU-feature dispatch and the branch-free math the kernels share.
//!
//! Kernels are written once, as plain loops over blocks of [`BLOCK`] `f32` values with no branches in the hot loop,
//! which LLVM auto-vectorises. [`dispatch`] compiles each kernel three times — for AVX-512, for AVX2+FMA and for the
//! baseline target — and runs the best one the CPU supports, so a binary built for generic x86-64 still uses the wide
//! registers, and one built for another architecture still works.
//!
//! The trick that makes this work: the kernel body is `#[inline(always)]` and is called from a function carrying
//! `#[target_feature]`, so LLVM inlines the body there and vectorises it with those features.

use std::mem::MaybeUninit;

/// Width of a block of values a kernel processes per step of its hot loop: two AVX-512 registers, four AVX2
/// registers. Wider than one register on purpose: the steps of `exp` or `erf` on one register are a chain of
/// dependent instructions (≈ 50 cycles of latency), and independent registers in flight hide that latency.
pub(crate) const BLOCK: usize = 32;
const _: () = assert!(BLOCK.is_power_of_two(), "horizontal_sum halves the lanes down to one");

/// An instruction-set level a kernel can be compiled for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isa {
    /// AVX-512F (+VL/DQ/BW) with FMA: 16 f32 per register.
    Avx512,
    /// AVX2 with FMA: 8 f32 per register.
    Avx2Fma,
    /// Whatever the compilation target guarantees (SSE2 on x86-64); no fused multiply-add.
    Baseline,
}

impl Isa {
    /// The best level this CPU supports (detected once, then cached).
    pub fn detect() -> Isa {
        static DETECTED: std::sync::OnceLock<Isa> = std::sync::OnceLock::new();
        *DETECTED.get_or_init(|| {
            #[cfg(target_arch = "x86_64")]
            {
                if std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx512vl")
                    && std::arch::is_x86_feature_detected!("avx512dq")
                    && std::arch::is_x86_feature_detected!("avx512bw")
                    && std::arch::is_x86_feature_detected!("fma")
                {
                    return Isa::Avx512;
                }
                if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
                    return Isa::Avx2Fma;
                }
            }
            Isa::Baseline
        })
    }

    /// Every level this CPU can run, best first: lets tests check each compiled variant, not only the fastest.
    pub fn supported() -> &'static [Isa] {
        match Isa::detect() {
            Isa::Avx512 => &[Isa::Avx512, Isa::Avx2Fma, Isa::Baseline],
            Isa::Avx2Fma => &[Isa::Avx2Fma, Isa::Baseline],
            Isa::Baseline => &[Isa::Baseline],
        }
    }
}

/// A kernel body that [`dispatch`] can compile for several instruction sets.
///
/// Implementations must mark `run` `#[inline(always)]` (and everything it calls in its hot loop), otherwise it is
/// compiled only once, for the baseline target. `FMA` says whether fused multiply-add is available in hardware:
/// without it `f32::mul_add` is a slow library call, so [`fmadd`] falls back to a separate multiply and add.
pub(crate) trait Kernel {
    type Output;
    fn run<const FMA: bool>(self) -> Self::Output;
}

/// Runs `kernel` compiled for the best instruction set this CPU supports.
#[inline]
pub(crate) fn dispatch<K: Kernel>(kernel: K) -> K::Output {
    // SAFETY: `detect` only returns levels this CPU has.
    unsafe { run_on(Isa::detect(), kernel) }
}

/// Runs `kernel` compiled for `isa`, which must be one of [`Isa::supported`] (tests use it to check every variant).
#[cfg(test)]
pub(crate) fn dispatch_on<K: Kernel>(isa: Isa, kernel: K) -> K::Output {
    assert!(Isa::supported().contains(&isa), "{isa:?} is not supported by this CPU");
    // SAFETY: checked just above.
    unsafe { run_on(isa, kernel) }
}

/// # Safety
/// The CPU must support `isa`.
#[inline]
unsafe fn run_on<K: Kernel>(isa: Isa, kernel: K) -> K::Output {
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => run_avx512(kernel),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2Fma => run_avx2_fma(kernel),
        _ => kernel.run::<false>(),
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vl,avx512dq,avx512bw,avx2,fma")]
unsafe fn run_avx512<K: Kernel>(kernel: K) -> K::Output {
    kernel.run::<true>()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn run_avx2_fma<K: Kernel>(kernel: K) -> K::Output {
    kernel.run::<true>()
}

/// `a * b + c`, fused (one rounding) when the CPU has FMA.
#[inline(always)]
pub(crate) fn fmadd<const FMA: bool>(a: f32, b: f32, c: f32) -> f32 {
    if FMA {
        a.mul_add(b, c)
    } else {
        a * b + c
    }
}

/// `x` limited to [lo, hi] by two compare-and-selects (one `vmaxps`/`vminps` each), NaN passed through unchanged:
/// each comparison is false for NaN, and false keeps `x`.
#[inline(always)]
pub(crate) fn clamp(x: f32, lo: f32, hi: f32) -> f32 {
    let x = if x < lo { lo } else { x };
    if x > hi {
        hi
    } else {
        x
    }
}

/// `dst[i] = f(src[i])`, a [`BLOCK`] of independent values per step, then the tail; writes all of `dst`.
#[inline(always)]
pub(crate) fn map_into(src: &[f32], dst: &mut [MaybeUninit<f32>], f: impl Fn(f32) -> f32) {
    let mut dst_blocks = dst.chunks_exact_mut(BLOCK);
    let mut src_blocks = src.chunks_exact(BLOCK);
    for (d, s) in (&mut dst_blocks).zip(&mut src_blocks) {
        for (d, &s) in d.iter_mut().zip(s) {
            d.write(f(s));
        }
    }
    for (d, &s) in dst_blocks.into_remainder().iter_mut().zip(src_blocks.remainder()) {
        d.write(f(s));
    }
}

/// `values[i] = f(values[i])`, a [`BLOCK`] per step like [`map_into`].
#[inline(always)]
pub(crate) fn map_in_place(values: &mut [f32], f: impl Fn(f32) -> f32) {
    let mut blocks = values.chunks_exact_mut(BLOCK);
    for block in &mut blocks {
        for v in block.iter_mut() {
            *v = f(*v);
        }
    }
    for v in blocks.into_remainder() {
        *v = f(*v);
    }
}

/// Sum of `values`, with [`BLOCK`] independent accumulators so the loop vectorises and several additions are in
/// flight at once (a single running sum is a serial chain that LLVM may not reorder for floats).
#[inline(always)]
pub(crate) fn sum(values: &[f32]) -> f32 {
    let mut acc = [0f32; BLOCK];
    let mut blocks = values.chunks_exact(BLOCK);
    for block in &mut blocks {
        for (a, v) in acc.iter_mut().zip(block) {
            *a += v;
        }
    }
    let tail: f32 = blocks.remainder().iter().sum();
    horizontal_sum(acc) + tail
}

/// Maximum of `values` (−∞ for an empty slice), vectorised like [`sum`] but on [`order_key`]s: integer maxima
/// vectorise and reduce across lanes cleanly, where LLVM leaves float maxima (with their NaN rules) partly scalar
/// and in memory — 4× slower on a 128-value softmax row. A NaN in `values` may or may not be the result.
#[inline(always)]
pub(crate) fn max(values: &[f32]) -> f32 {
    let mut acc = [NEG_INFINITY_KEY; BLOCK];
    let mut blocks = values.chunks_exact(BLOCK);
    for block in &mut blocks {
        for (a, &v) in acc.iter_mut().zip(block) {
            *a = (*a).max(order_key(v));
        }
    }
    let tail = blocks
        .remainder()
        .iter()
        .fold(NEG_INFINITY_KEY, |m, &v| m.max(order_key(v)));
    from_order_key(horizontal_max_key(acc).max(tail))
}

/// An i32 whose signed order is the order of the floats: −∞ < … < −0 < +0 < … < +∞ (a NaN sorts above +∞ or
/// below −∞, by its sign bit). Negative floats have their magnitude bits flipped so that larger magnitudes compare
/// smaller; the map is its own inverse.
#[inline(always)]
pub(crate) const fn order_key(value: f32) -> i32 {
    let bits = value.to_bits() as i32;
    bits ^ (((bits >> 31) as u32) >> 1) as i32
}

/// The key of −∞: where a running maximum starts, so that an empty slice gives −∞.
pub(crate) const NEG_INFINITY_KEY: i32 = order_key(f32::NEG_INFINITY);

/// The float whose [`order_key`] is `key`.
#[inline(always)]
pub(crate) fn from_order_key(key: i32) -> f32 {
    f32::from_bits(order_key(f32::from_bits(key as u32)) as u32)
}

/// Largest of the accumulated keys (integer max is associative, so LLVM reduces it as a vector tree by itself).
#[inline(always)]
pub(crate) fn horizontal_max_key(acc: [i32; BLOCK]) -> i32 {
    acc.into_iter().fold(NEG_INFINITY_KEY, i32::max)
}

/// Sum of the accumulator lanes as a tree of halvings (lane i plus lane i + width, for width = 16, 8, 4, 2, 1):
/// log₂(BLOCK) vector steps instead of BLOCK scalar ones.
#[inline(always)]
pub(crate) fn horizontal_sum(mut acc: [f32; BLOCK]) -> f32 {
    let mut width = BLOCK / 2;
    while width > 0 {
        for i in 0..width {
            acc[i] += acc[i + width];
        }
        width /= 2;
    }
    acc[0]
}

/// `e^x` in single precision, about 1 ulp, branch-free so that a loop of it vectorises.
///
/// Cephes' `expf`: x = n·ln 2 + r with |r| ≤ ln 2 / 2, e^r from a degree-6 polynomial, 2^n built directly in the
/// exponent bits. Inputs are clamped to [−87.3, 88.3], so e^x underflows to about 1e−38 (not 0) and never
/// overflows; NaN stays NaN (it passes the clamp, and the polynomial keeps it).
#[inline(always)]
pub(crate) fn exp<const FMA: bool>(x: f32) -> f32 {
    const LOG2_E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split in two so that n·LN2_HI is exact for the n that occur.
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding 1.5·2²³ rounds to an integer (the float then has no fraction bits); the extra 127 is the exponent
    // bias, so the low mantissa bits of `shifted` are n + 127, ready to be moved into the exponent field.
    const ROUND_AND_BIAS: f32 = 12_582_912.0 + 127.0;
    let clamped = clamp(x, -87.3, 88.3);
    let shifted = fmadd::<FMA>(clamped, LOG2_E, ROUND_AND_BIAS);
    let n = shifted - ROUND_AND_BIAS;
    let r = fmadd::<FMA>(n, -LN2_HI, clamped);
    let r = fmadd::<FMA>(n, -LN2_LO, r);
    let mut p = 1.987_569_1e-4;
    p = fmadd::<FMA>(p, r, 1.398_199_9e-3);
    p = fmadd::<FMA>(p, r, 8.333_452e-3);
    p = fmadd::<FMA>(p, r, 4.166_579_6e-2);
    p = fmadd::<FMA>(p, r, 1.666_666_5e-1);
    p = fmadd::<FMA>(p, r, 0.5);
    let e_r = fmadd::<FMA>(p, r * r, r) + 1.0;
    let two_to_n = f32::from_bits(shifted.to_bits() << 23);
    e_r * two_to_n
}

/// The error function in single precision: at most 4.5e−7 absolute error (a few ulp), branch-free.
///
/// A rational minimax approximation erf(x) ≈ x·P(x²)/Q(x²) on [−4, 4], with P of degree 6 and Q of degree 4 —
/// the one Eigen and XLA use for `erf` on float. From |x| = 3.93 on, erf(x) rounds to ±1 in f32, and it returns
/// exactly ±1 there: GELU relies on 1 + erf(x) being exactly 0 far out on the negative side (the approximation is
/// one ulp short of 1, which GELU would multiply by a large |x|). NaN stays NaN.
/// (Abramowitz–Stegun 7.1.26, which PyTorch's vectorised erf uses, is only good to about 1.5e−7 absolute before
/// rounding and has poor relative accuracy near 0.)
#[inline(always)]
pub(crate) fn erf<const FMA: bool>(x: f32) -> f32 {
    let clamped = clamp(x, -4.0, 4.0);
    let x2 = clamped * clamped;
    let mut p = -2.726_142_3e-10;
    p = fmadd::<FMA>(p, x2, 2.770_681_4e-8);
    p = fmadd::<FMA>(p, x2, -2.101_024e-6);
    p = fmadd::<FMA>(p, x2, -5.692_506_4e-5);
    p = fmadd::<FMA>(p, x2, -7.349_906_3e-4);
    p = fmadd::<FMA>(p, x2, -2.954_6e-3);
    p = fmadd::<FMA>(p, x2, -1.609_603_3e-2);
    let mut q = -1.456_607_2e-5;
    q = fmadd::<FMA>(q, x2, -2.133_740_6e-4);
    q = fmadd::<FMA>(q, x2, -1.682_827e-3);
    q = fmadd::<FMA>(q, x2, -7.373_329e-3);
    q = fmadd::<FMA>(q, x2, -1.426_473_9e-2);
    let approx = clamped * p / q;
    if x.abs() >= 3.93 {
        1f32.copysign(x)
    } else {
        approx
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct ExpAll<'a>(&'a [f32]);
    impl Kernel for ExpAll<'_> {
        type Output = Vec<f32>;
        #[inline(always)]
        fn run<const FMA: bool>(self) -> Vec<f32> {
            self.0.iter().map(|&x| exp::<FMA>(x)).collect()
        }
    }

    struct ErfAll<'a>(&'a [f32]);
    impl Kernel for ErfAll<'_> {
        type Output = Vec<f32>;
        #[inline(always)]
        fn run<const FMA: bool>(self) -> Vec<f32> {
            self.0.iter().map(|&x| erf::<FMA>(x)).collect()
        }
    }

    fn grid(lo: f32, hi: f32, steps: usize) -> Vec<f32> {
        (0..=steps).map(|i| lo + (hi - lo) * i as f32 / steps as f32).collect()
    }

    #[test]
    fn exp_is_within_two_ulp_of_f64_exp_on_every_isa() {
        let xs = grid(-87.0, 88.0, 200_001);
        for &isa in Isa::supported() {
            let ys = dispatch_on(isa, ExpAll(&xs));
            for (&x, &y) in xs.iter().zip(&ys) {
                let exact = (x as f64).exp();
                let ulp = (exact as f32).abs() * f32::EPSILON;
                assert!(
                    ((y as f64) - exact).abs() <= 2.0 * ulp as f64,
                    "{isa:?}: exp({x}) = {y}, exact {exact}"
                );
            }
        }
    }

    #[test]
    fn exp_saturates_instead_of_overflowing_and_keeps_nan() {
        for &isa in Isa::supported() {
            let ys = dispatch_on(isa, ExpAll(&[-1e30, f32::NEG_INFINITY, f32::MIN, 1e30, f32::NAN]));
            assert!(ys[0] >= 0.0 && ys[0] < 1e-37, "{isa:?}: {ys:?}");
            assert!(ys[1] >= 0.0 && ys[1] < 1e-37, "{isa:?}: {ys:?}");
            assert!(ys[2] >= 0.0 && ys[2] < 1e-37, "{isa:?}: {ys:?}");
            assert!(ys[3].is_finite() && ys[3] > 1e38, "{isa:?}: {ys:?}");
            assert!(ys[4].is_nan(), "{isa:?}: {ys:?}");
        }
    }

    #[test]
    fn erf_is_within_5e7_relative_of_f64_erf_on_every_isa() {
        let xs = grid(-6.0, 6.0, 600_001);
        for &isa in Isa::supported() {
            let ys = dispatch_on(isa, ErfAll(&xs));
            let mut worst = 0f64;
            for (&x, &y) in xs.iter().zip(&ys) {
                let exact = candle_core::cpu::erf::erf_f64(x as f64);
                let err = ((y as f64) - exact).abs();
                worst = worst.max(err / exact.abs().max(1e-30));
            }
            assert!(worst < 5e-7, "{isa:?}: worst relative error {worst:e}");
        }
    }

    #[test]
    fn order_keys_sort_like_the_floats_and_map_back() {
        let ascending = [
            f32::NEG_INFINITY,
            -3e38,
            -1.5,
            -1e-40,
            -0.0,
            0.0,
            1e-40,
            2.0,
            3e38,
            f32::INFINITY,
        ];
        for pair in ascending.windows(2) {
            assert!(order_key(pair[0]) < order_key(pair[1]), "{} vs {}", pair[0], pair[1]);
        }
        for v in ascending {
            assert_eq!(from_order_key(order_key(v)).to_bits(), v.to_bits());
        }
    }

    #[test]
    fn sum_and_max_cover_the_tail_past_the_last_full_block() {
        for len in [0, 1, 15, 16, 17, 33, 384, 385] {
            let values: Vec<f32> = (0..len).map(|i| (i as f32 * 0.37).sin()).collect();
            let expected_sum: f32 = values.iter().sum();
            assert!((sum(&values) - expected_sum).abs() < 1e-4, "len {len}");
            let expected_max = values.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            assert_eq!(max(&values), expected_max, "len {len}");
        }
    }
}
