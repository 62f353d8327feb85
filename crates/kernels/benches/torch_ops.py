"""PyTorch side of the kernel micro-benchmark: the ops a BERT forward runs, at BERT shapes.

`cargo run --release -p knowhow-kernels --example kernel_bench` runs this script (when KNOWHOW_TORCH_PYTHON names a
Python with torch) and prints its times next to stock candle and knowhow-kernels. It can also run alone:

    /work/pyref/venv/bin/python crates/kernels/benches/torch_ops.py --threads 2 --batch 32 --seq 128

Shapes follow all-MiniLM-L6-v2 (hidden 384, 12 heads, intermediate 1536) unless overridden. Each op is written the
way Hugging Face's BertLayer runs it (SDPA attention, F.linear, F.gelu, F.layer_norm). Each measurement first waits
for the machine to be idle, as the Rust side does. Output: one JSON object per op and line, {"op", "shape",
"best_ms", "median_ms"}, over `--reps` runs after warm-up. Op names and shape strings must match the ones in
examples/kernel_bench.rs.
"""

import argparse
import json
import math
import statistics
import time

import torch
import torch.nn.functional as F


def cpu_jiffies():
    """(busy, total) jiffies over all CPUs since boot, from /proc/stat."""
    with open("/proc/stat") as stat:
        fields = [int(f) for f in stat.readline().split()[1:9]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


def wait_for_quiet():
    """Waits (at most a minute) until other processes leave the CPUs nearly idle for half a second."""
    deadline = time.monotonic() + 60
    quiet_samples = 0
    while quiet_samples < 2 and time.monotonic() < deadline:
        busy_before, total_before = cpu_jiffies()
        time.sleep(0.25)
        busy_after, total_after = cpu_jiffies()
        busy = (busy_after - busy_before) / max(total_after - total_before, 1)
        quiet_samples = quiet_samples + 1 if busy < 0.1 else 0


def timings_ms(fn, reps, warmup=3):
    """Best and median wall time in ms."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return min(times), statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--hidden", type=int, default=384)
    parser.add_argument("--heads", type=int, default=12)
    parser.add_argument("--intermediate", type=int, default=1536)
    parser.add_argument("--reps", type=int, default=20)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    b, s, hidden, heads, inter = args.batch, args.seq, args.hidden, args.heads, args.intermediate
    tokens, head_dim = b * s, hidden // heads
    eps = 1e-12

    def record(op, shape, fn):
        wait_for_quiet()
        with torch.inference_mode():
            best, median = timings_ms(fn, args.reps)
        row = {"op": op, "shape": shape, "best_ms": best, "median_ms": median}
        print(json.dumps(row), flush=True)

    def linear_params(n_out, n_in):
        return torch.randn(n_out, n_in) / math.sqrt(n_in), torch.randn(n_out)

    x_inter = torch.randn(tokens, inter)
    bias_inter = torch.randn(inter)
    record("gelu_erf", f"{tokens}x{inter}", lambda: F.gelu(x_inter))
    record("bias_gelu", f"{tokens}x{inter}", lambda: F.gelu(x_inter + bias_inter))

    x_hidden = torch.randn(tokens, hidden)
    residual = torch.randn(tokens, hidden)
    gamma, beta = torch.randn(hidden), torch.randn(hidden)
    record("layer_norm", f"{tokens}x{hidden}", lambda: F.layer_norm(x_hidden, (hidden,), gamma, beta, eps))
    record(
        "add_layer_norm",
        f"{tokens}x{hidden}",
        lambda: F.layer_norm(x_hidden + residual, (hidden,), gamma, beta, eps),
    )

    scores = torch.randn(b, heads, s, s)
    # BERT's extended attention mask: 0 for tokens, the most negative float for padding (last quarter here).
    mask = torch.zeros(b, 1, 1, s)
    mask[:, :, :, s * 3 // 4 :] = torch.finfo(torch.float32).min
    scale = 1.0 / math.sqrt(head_dim)
    record("softmax_last_dim", f"{b}x{heads}x{s}x{s}", lambda: torch.softmax(scores, dim=-1))
    record("masked_softmax", f"{b}x{heads}x{s}x{s}", lambda: torch.softmax(scores * scale + mask, dim=-1))

    for n, k in [(hidden, hidden), (inter, hidden), (hidden, inter)]:
        x = torch.randn(b, s, k)
        w, bias = linear_params(n, k)
        record("linear", f"{tokens}x{k}@{k}x{n}", lambda x=x, w=w, bias=bias: F.linear(x, w, bias))
    x = torch.randn(b, s, hidden)
    w_inter, b_inter = linear_params(inter, hidden)
    record("linear_gelu", f"{tokens}x{hidden}@{hidden}x{inter}", lambda: F.gelu(F.linear(x, w_inter, b_inter)))

    x = torch.randn(b, s, inter)
    residual3 = torch.randn(b, s, hidden)
    w_down, b_down = linear_params(hidden, inter)
    record(
        "linear_add_norm",
        f"{tokens}x{inter}@{inter}x{hidden}",
        lambda: F.layer_norm(F.linear(x, w_down, b_down) + residual3, (hidden,), gamma, beta, eps),
    )

    def split_heads(t):
        return t.view(b, s, heads, head_dim).transpose(1, 2)

    q, k, v = (torch.randn(b, s, hidden) for _ in range(3))

    def attention(q, k, v):
        context = F.scaled_dot_product_attention(split_heads(q), split_heads(k), split_heads(v), attn_mask=mask)
        return context.transpose(1, 2).reshape(b, s, hidden)

    record("attention", f"{b}x{s}x{hidden}/{heads}", lambda: attention(q, k, v))

    params = {
        name: linear_params(*dims)
        for name, dims in {
            "q": (hidden, hidden),
            "k": (hidden, hidden),
            "v": (hidden, hidden),
            "o": (hidden, hidden),
            "up": (inter, hidden),
            "down": (hidden, inter),
        }.items()
    }
    ln1 = (torch.randn(hidden), torch.randn(hidden))
    ln2 = (torch.randn(hidden), torch.randn(hidden))

    def encoder_layer(h):
        # Hugging Face BertLayer (eval, SDPA): self-attention, add & norm, intermediate GELU, output, add & norm.
        context = attention(*(F.linear(h, *params[name]) for name in "qkv"))
        h1 = F.layer_norm(F.linear(context, *params["o"]) + h, (hidden,), *ln1, eps)
        up = F.gelu(F.linear(h1, *params["up"]))
        return F.layer_norm(F.linear(up, *params["down"]) + h1, (hidden,), *ln2, eps)

    hidden_states = torch.randn(b, s, hidden)
    record("encoder_layer", f"{b}x{s}x{hidden}", lambda: encoder_layer(hidden_states))


if __name__ == "__main__":
    main()
