//! Micro-benchmark: the ops of a BERT encoder layer at BERT shapes — stock candle, knowhow-kernels, PyTorch.
//!
//! ```text
//! CARGO_TARGET_DIR=target/release-bench KNOWHOW_TORCH_PYTHON=/work/pyref/venv/bin/python \
//!     cargo run --release -p knowhow-kernels --example kernel_bench -- --threads 2
//! ```
//!
//! Options: `--threads N` (default 2), `--reps N` (20), `--rounds N` (1), `--batch N` (32), `--seq N` (128); the
//! model dimensions are all-MiniLM-L6-v2's. For profiling one kernel under `perf record`: `--only OP` runs just
//! that op and `--side ours` (or `candle`) times just one side. The bench first calls
//! `keep_freed_memory_for_reuse`, as a binary using these kernels should (glibc malloc settings; both candle columns
//! benefit); `--default-malloc` skips that. PyTorch runs `benches/torch_ops.py` with the same threads and shapes
//! when `KNOWHOW_TORCH_PYTHON` names a Python with torch installed; otherwise its column is left empty.
//!
//! Each figure is the best wall-clock time of `--reps` runs after warm-up, in milliseconds — the best, not the
//! median, because other processes on a shared machine only ever make a run slower. Before each measurement both
//! sides wait (up to a minute) for the other processes to leave the CPUs idle. `--rounds N` repeats the whole
//! measurement (PyTorch's included) N times and keeps each op's best, which helps on a busy machine. "×candle" is how
//! many times faster than stock candle our kernel is; "×torch" likewise against PyTorch, so ≥ 1.0 means at least as
//! fast.
//!
//! With default features, knowhow-kernels turns on gemm's AVX-512 kernels, and features unify, so the "candle"
//! column then already has them for matmul. For candle exactly as published, add `--no-default-features`.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Instant;

use candle_core::{Device, Module, Tensor, D};
use knowhow_kernels::{self as kernels, PackedLinear};

type BenchResult<T> = Result<T, Box<dyn std::error::Error>>;

struct Options {
    threads: usize,
    reps: usize,
    rounds: usize,
    batch: usize,
    seq: usize,
    /// Run only this op (for profiling one kernel with `perf record`).
    only: Option<String>,
    /// Time only stock candle ("candle") or only our kernels ("ours"), for profiling.
    side: Option<String>,
    /// Leave glibc's malloc thresholds at their defaults.
    default_malloc: bool,
}

const HIDDEN: usize = 384;
const HEADS: usize = 12;
const INTERMEDIATE: usize = 1536;
const EPS: f32 = 1e-12;

fn main() -> BenchResult<()> {
    let options = parse_options()?;
    // What a binary using these kernels should do at startup (see the function's docs).
    let malloc = if options.default_malloc {
        "glibc defaults"
    } else if kernels::keep_freed_memory_for_reuse() {
        "freed memory kept for reuse"
    } else {
        "platform default"
    };
    // candle sizes its matmul parallelism from RAYON_NUM_THREADS; set it before any pool exists.
    std::env::set_var("RAYON_NUM_THREADS", options.threads.to_string());
    rayon::ThreadPoolBuilder::new()
        .num_threads(options.threads)
        .build_global()?;

    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "threads {}, batch {} × seq {}, best of {} runs; CPU kernels: {:?}; gemm AVX-512: {}; malloc: {malloc}; \
         load average: {}",
        options.threads,
        options.batch,
        options.seq,
        options.reps,
        kernels::Isa::detect(),
        if cfg!(feature = "avx512-gemm") {
            "on"
        } else {
            "off (stock candle)"
        },
        load.split_whitespace().take(3).collect::<Vec<_>>().join(" "),
    );
    let mut torch: HashMap<(String, String), f64> = HashMap::new();
    let mut rows: Vec<Row> = Vec::new();
    for round in 1..=options.rounds {
        if options.rounds > 1 {
            println!("round {round} of {}", options.rounds);
        }
        for (key, ms) in torch_timings(&options) {
            let best = torch.entry(key).or_insert(f64::INFINITY);
            *best = best.min(ms);
        }
        let round_rows = rust_timings(&options)?;
        if rows.is_empty() {
            rows = round_rows;
        } else {
            for (row, new) in rows.iter_mut().zip(round_rows) {
                row.candle_ms = row.candle_ms.min(new.candle_ms);
                row.ours_ms = row.ours_ms.min(new.ours_ms);
            }
        }
    }

    println!(
        "\n{:<16} {:<20} {:>10} {:>10} {:>10} {:>9} {:>9}",
        "op", "shape", "candle ms", "ours ms", "torch ms", "×candle", "×torch"
    );
    for row in &rows {
        let torch_ms = torch.get(&(row.op.to_string(), row.shape.clone())).copied();
        println!(
            "{:<16} {:<20} {:>10.2} {:>10.2} {:>10} {:>9.2} {:>9}",
            row.op,
            row.shape,
            row.candle_ms,
            row.ours_ms,
            torch_ms.map_or("—".to_string(), |t| format!("{t:.2}")),
            row.candle_ms / row.ours_ms,
            torch_ms.map_or("—".to_string(), |t| format!("{:.2}", t / row.ours_ms)),
        );
    }
    Ok(())
}

fn parse_options() -> BenchResult<Options> {
    let mut options = Options {
        threads: 2,
        reps: 20,
        rounds: 1,
        batch: 32,
        seq: 128,
        only: None,
        side: None,
        default_malloc: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        if flag == "--default-malloc" {
            options.default_malloc = true;
            continue;
        }
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--threads" => options.threads = value.parse()?,
            "--reps" => options.reps = value.parse()?,
            "--rounds" => options.rounds = value.parse()?,
            "--batch" => options.batch = value.parse()?,
            "--seq" => options.seq = value.parse()?,
            "--only" => options.only = Some(value),
            "--side" => options.side = Some(value),
            other => return Err(format!("unknown option {other}; see the doc comment of kernel_bench.rs").into()),
        }
    }
    Ok(options)
}

/// Runs the PyTorch script, if a Python is configured: (op, shape) → best ms.
fn torch_timings(options: &Options) -> HashMap<(String, String), f64> {
    let Ok(python) = std::env::var("KNOWHOW_TORCH_PYTHON") else {
        println!("torch: skipped, set KNOWHOW_TORCH_PYTHON=/path/to/python (with torch) to compare");
        return HashMap::new();
    };
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/torch_ops.py");
    let child = Command::new(&python)
        .arg(script)
        .args([
            "--threads",
            &options.threads.to_string(),
            "--reps",
            &options.reps.to_string(),
        ])
        .args(["--batch", &options.batch.to_string(), "--seq", &options.seq.to_string()])
        .stdout(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(e) => {
            println!("torch: could not run {python}: {e}");
            return HashMap::new();
        }
    };
    let mut timings = HashMap::new();
    if let Some(stdout) = child.stdout.take() {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let Ok(row) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            let (Some(op), Some(shape)) = (row["op"].as_str(), row["shape"].as_str()) else {
                continue;
            };
            if let Some(ms) = row["best_ms"].as_f64() {
                timings.insert((op.to_string(), shape.to_string()), ms);
            }
        }
    }
    match child.wait() {
        Ok(status) if status.success() => {}
        Ok(status) => println!("torch: {script} exited with {status}"),
        Err(e) => println!("torch: {e}"),
    }
    timings
}

struct Row {
    op: &'static str,
    shape: String,
    candle_ms: f64,
    ours_ms: f64,
}

/// Best wall time of `reps` runs of `f`, after two warm-up runs, in ms.
fn best_ms<T>(reps: usize, mut f: impl FnMut() -> candle_core::Result<T>) -> BenchResult<f64> {
    for _ in 0..2 {
        f()?;
    }
    let mut best = f64::INFINITY;
    for _ in 0..reps {
        let start = Instant::now();
        std::hint::black_box(f()?);
        best = best.min(start.elapsed().as_secs_f64() * 1e3);
    }
    Ok(best)
}

/// Waits (at most a minute) until the other processes on the machine have left the CPUs nearly idle for half a
/// second, so that a measurement starts on a quiet machine; benches/torch_ops.py does the same.
fn wait_for_quiet() {
    /// (busy, total) jiffies over all CPUs since boot.
    fn cpu_jiffies() -> Option<(u64, u64)> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let fields: Vec<u64> = stat
            .lines()
            .next()?
            .split_whitespace()
            .skip(1)
            .filter_map(|f| f.parse().ok())
            .collect();
        let total: u64 = fields.iter().take(8).sum();
        let idle = fields.get(3)? + fields.get(4)?;
        Some((total - idle, total))
    }
    let deadline = Instant::now() + std::time::Duration::from_secs(60);
    let mut quiet_samples = 0;
    while quiet_samples < 2 && Instant::now() < deadline {
        let Some((busy_before, total_before)) = cpu_jiffies() else {
            return;
        };
        std::thread::sleep(std::time::Duration::from_millis(250));
        let Some((busy_after, total_after)) = cpu_jiffies() else {
            return;
        };
        let busy = (busy_after - busy_before) as f64 / (total_after - total_before).max(1) as f64;
        quiet_samples = if busy < 0.1 { quiet_samples + 1 } else { 0 };
    }
    if quiet_samples < 2 {
        println!("(the machine stayed busy for a minute; measuring anyway)");
    }
}

/// Roughly normal values (a sum of four uniforms), scaled: far cheaper than `Tensor::randn`, whose generator would
/// dominate a profile of one small op.
fn randn(dims: &[usize], scale: f64) -> BenchResult<Tensor> {
    let mut state = 0x9E37_79B9_7F4A_7C15u64 ^ dims.iter().product::<usize>() as u64;
    let mut uniform = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 40) as f32 / (1u64 << 24) as f32
    };
    let scale = scale as f32 * 1.732;
    let count = dims.iter().product();
    let values: Vec<f32> = (0..count)
        .map(|_| (uniform() + uniform() + uniform() + uniform() - 2.0) * scale)
        .collect();
    Ok(Tensor::from_vec(values, dims, &Device::Cpu)?)
}

/// A layer's weights in both forms: candle_nn's and ours.
struct Dense {
    stock: candle_nn::Linear,
    packed: PackedLinear,
}

fn dense(out_features: usize, in_features: usize) -> BenchResult<Dense> {
    let weight = randn(&[out_features, in_features], 1.0 / (in_features as f64).sqrt())?;
    let bias = randn(&[out_features], 1.0)?;
    let packed = PackedLinear::new(&weight, Some(&bias))?;
    Ok(Dense {
        stock: candle_nn::Linear::new(weight, Some(bias)),
        packed,
    })
}

/// Collects the rows, timing only the ops `--only` selects.
struct Bench<'a> {
    options: &'a Options,
    rows: Vec<Row>,
}

impl Bench<'_> {
    fn run<A, B>(
        &mut self,
        op: &'static str,
        shape: String,
        stock: impl FnMut() -> candle_core::Result<A>,
        mut ours: impl FnMut() -> kernels::Result<B>,
    ) -> BenchResult<()> {
        if self.options.only.as_deref().is_some_and(|only| only != op) {
            return Ok(());
        }
        let side = self.options.side.as_deref();
        // Ours first: a measurement inherits the heap that the previous one left (glibc may hand back memory and
        // page-fault it in again), and stock candle's larger temporaries would otherwise cost our side those faults.
        let ours_ms = if side == Some("candle") {
            f64::NAN
        } else {
            wait_for_quiet();
            best_ms(self.options.reps, || Ok(ours()?))?
        };
        let candle_ms = if side == Some("ours") {
            f64::NAN
        } else {
            wait_for_quiet();
            best_ms(self.options.reps, stock)?
        };
        println!("{op:<16} {shape:<20} candle {candle_ms:8.2} ms   ours {ours_ms:8.2} ms");
        self.rows.push(Row {
            op,
            shape,
            candle_ms,
            ours_ms,
        });
        Ok(())
    }
}

fn rust_timings(o: &Options) -> BenchResult<Vec<Row>> {
    let (b, s) = (o.batch, o.seq);
    let tokens = b * s;
    let head_dim = HIDDEN / HEADS;
    let scale = 1.0 / (head_dim as f32).sqrt();
    let mut bench = Bench {
        options: o,
        rows: Vec::new(),
    };

    let x = randn(&[tokens, INTERMEDIATE], 1.0)?;
    let bias = randn(&[INTERMEDIATE], 1.0)?;
    let shape = format!("{tokens}x{INTERMEDIATE}");
    bench.run("gelu_erf", shape.clone(), || x.gelu_erf(), || kernels::gelu_erf(&x))?;
    bench.run(
        "bias_gelu",
        shape,
        || x.broadcast_add(&bias)?.gelu_erf(),
        || kernels::bias_gelu(&x, &bias),
    )?;

    let x = randn(&[tokens, HIDDEN], 1.0)?;
    let residual = randn(&[tokens, HIDDEN], 1.0)?;
    let (gamma, beta) = (randn(&[HIDDEN], 1.0)?, randn(&[HIDDEN], 1.0)?);
    let shape = format!("{tokens}x{HIDDEN}");
    bench.run(
        "layer_norm",
        shape.clone(),
        || candle_nn::ops::layer_norm(&x, &gamma, &beta, EPS),
        || kernels::layer_norm(&x, &gamma, &beta, EPS),
    )?;
    bench.run(
        "add_layer_norm",
        shape,
        || candle_nn::ops::layer_norm(&(&x + &residual)?, &gamma, &beta, EPS),
        || kernels::add_layer_norm(&x, &residual, &gamma, &beta, EPS),
    )?;

    let scores = randn(&[b, HEADS, s, s], 1.0)?;
    let mask = padding_mask(b, s)?;
    let mask4 = mask.reshape((b, 1, 1, s))?;
    let shape = format!("{b}x{HEADS}x{s}x{s}");
    bench.run(
        "softmax_last_dim",
        shape.clone(),
        || candle_nn::ops::softmax_last_dim(&scores),
        || kernels::softmax_last_dim(&scores),
    )?;
    bench.run(
        "masked_softmax",
        shape,
        || candle_nn::ops::softmax_last_dim(&(&scores * scale as f64)?.broadcast_add(&mask4)?),
        || kernels::masked_softmax(&scores, scale, Some(&mask)),
    )?;

    for (n, k) in [(HIDDEN, HIDDEN), (INTERMEDIATE, HIDDEN), (HIDDEN, INTERMEDIATE)] {
        let x = randn(&[b, s, k], 1.0)?;
        let layer = dense(n, k)?;
        bench.run(
            "linear",
            format!("{tokens}x{k}@{k}x{n}"),
            || layer.stock.forward(&x),
            || layer.packed.forward(&x),
        )?;
    }
    let x = randn(&[b, s, HIDDEN], 1.0)?;
    let up = dense(INTERMEDIATE, HIDDEN)?;
    bench.run(
        "linear_gelu",
        format!("{tokens}x{HIDDEN}@{HIDDEN}x{INTERMEDIATE}"),
        || up.stock.forward(&x)?.gelu_erf(),
        || up.packed.forward_gelu(&x),
    )?;

    let x = randn(&[b, s, INTERMEDIATE], 1.0)?;
    let residual = randn(&[b, s, HIDDEN], 1.0)?;
    let down = dense(HIDDEN, INTERMEDIATE)?;
    bench.run(
        "linear_add_norm",
        format!("{tokens}x{INTERMEDIATE}@{INTERMEDIATE}x{HIDDEN}"),
        || candle_nn::ops::layer_norm(&(down.stock.forward(&x)? + &residual)?, &gamma, &beta, EPS),
        || down.packed.forward_add_layer_norm(&x, &residual, &gamma, &beta, EPS),
    )?;

    let (q, k, v) = (
        randn(&[b, s, HIDDEN], 1.0)?,
        randn(&[b, s, HIDDEN], 1.0)?,
        randn(&[b, s, HIDDEN], 1.0)?,
    );
    bench.run(
        "attention",
        format!("{b}x{s}x{HIDDEN}/{HEADS}"),
        || stock_attention(&q, &k, &v, &mask4),
        || kernels::attention(&q, &k, &v, HEADS, Some(&mask)),
    )?;

    let layer = EncoderLayer::new()?;
    let h = randn(&[b, s, HIDDEN], 1.0)?;
    let difference = (layer.stock_forward(&h, &mask4)? - layer.forward(&h, &mask)?)?
        .abs()?
        .max_all()?;
    println!(
        "encoder_layer: max abs difference between stock and ours {:e}",
        difference.to_scalar::<f32>()?
    );
    bench.run(
        "encoder_layer",
        format!("{b}x{s}x{HIDDEN}"),
        || layer.stock_forward(&h, &mask4),
        || layer.forward(&h, &mask),
    )?;
    Ok(bench.rows)
}

/// BERT's additive mask with the last quarter of every sequence padded, as in torch_ops.py.
fn padding_mask(b: usize, s: usize) -> BenchResult<Tensor> {
    let row: Vec<f32> = (0..s).map(|j| if j < s * 3 / 4 { 0.0 } else { f32::MIN }).collect();
    Ok(Tensor::from_vec(row.repeat(b), (b, s), &Device::Cpu)?)
}

/// Attention as a candle model writes it with stock ops (candle-transformers' BERT does exactly this).
fn stock_attention(q: &Tensor, k: &Tensor, v: &Tensor, mask4: &Tensor) -> candle_core::Result<Tensor> {
    let (b, s, hidden) = q.dims3()?;
    let head_dim = hidden / HEADS;
    let split = |t: &Tensor| t.reshape((b, s, HEADS, head_dim))?.transpose(1, 2)?.contiguous();
    let (q, k, v) = (split(q)?, split(k)?, split(v)?);
    let scores = (q.matmul(&k.t()?)? / (head_dim as f64).sqrt())?.broadcast_add(mask4)?;
    let probs = candle_nn::ops::softmax_last_dim(&scores)?;
    probs.matmul(&v)?.transpose(1, 2)?.flatten_from(D::Minus2)
}

/// One BERT encoder layer with random weights: the reference for what a BERT forward should call.
struct EncoderLayer {
    q: Dense,
    k: Dense,
    v: Dense,
    qkv: PackedLinear,
    output: Dense,
    up: Dense,
    down: Dense,
    norm1: (Tensor, Tensor),
    norm2: (Tensor, Tensor),
}

impl EncoderLayer {
    fn new() -> BenchResult<Self> {
        let (q, k, v) = (dense(HIDDEN, HIDDEN)?, dense(HIDDEN, HIDDEN)?, dense(HIDDEN, HIDDEN)?);
        let qkv = PackedLinear::concat(&[q.packed.clone(), k.packed.clone(), v.packed.clone()])?;
        let norm = || -> BenchResult<(Tensor, Tensor)> { Ok((randn(&[HIDDEN], 1.0)?, randn(&[HIDDEN], 1.0)?)) };
        Ok(EncoderLayer {
            q,
            k,
            v,
            qkv,
            output: dense(HIDDEN, HIDDEN)?,
            up: dense(INTERMEDIATE, HIDDEN)?,
            down: dense(HIDDEN, INTERMEDIATE)?,
            norm1: norm()?,
            norm2: norm()?,
        })
    }

    /// candle_nn modules and ops, as candle-transformers' BertLayer runs them.
    fn stock_forward(&self, h: &Tensor, mask4: &Tensor) -> candle_core::Result<Tensor> {
        let context = stock_attention(
            &self.q.stock.forward(h)?,
            &self.k.stock.forward(h)?,
            &self.v.stock.forward(h)?,
            mask4,
        )?;
        let h1 = (self.output.stock.forward(&context)? + h)?;
        let h1 = candle_nn::ops::layer_norm(&h1, &self.norm1.0, &self.norm1.1, EPS)?;
        let up = self.up.stock.forward(&h1)?.gelu_erf()?;
        let h2 = (self.down.stock.forward(&up)? + &h1)?;
        candle_nn::ops::layer_norm(&h2, &self.norm2.0, &self.norm2.1, EPS)
    }

    /// The same layer on knowhow-kernels: one QKV projection, attention reading heads in place, dense layers
    /// that finish their output in cache (bias + GELU, bias + residual + LayerNorm).
    fn forward(&self, h: &Tensor, mask: &Tensor) -> kernels::Result<Tensor> {
        let qkv = self.qkv.forward(h)?;
        let [q, k, v] = [0, 1, 2].map(|i| qkv.narrow(D::Minus1, i * HIDDEN, HIDDEN));
        let context = kernels::attention(&q?, &k?, &v?, HEADS, Some(mask))?;
        let (gamma, beta) = &self.norm1;
        let h1 = self
            .output
            .packed
            .forward_add_layer_norm(&context, h, gamma, beta, EPS)?;
        let up = self.up.packed.forward_gelu(&h1)?;
        let (gamma, beta) = &self.norm2;
        self.down.packed.forward_add_layer_norm(&up, &h1, gamma, beta, EPS)
    }
}
