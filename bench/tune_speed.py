#!/usr/bin/env python3
"""LoRA training speed: `knowhow tune` (candle, CPU) vs PEFT + transformers (PyTorch, CPU), in one run.

Usage: bench/tune_speed.py [--knowhow target/release/knowhow] [--data ../shared/data/scifact]
                           [--rows 50] [--batch-size 4] [--rounds 2]

The setup both tools share, built once per run in a temporary folder:
- a Qwen2-shaped decoder with random weights (transformers' own initialisation, seed 0): hidden 512, 8 layers,
  8 query heads and 2 key/value heads, MLP 1408, tied embeddings, a 32,000-word vocabulary: about 37M parameters;
- a word-level tokenizer over SciFact's vocabulary (one word, one token), so that every training row is exactly
  256 tokens: 200 words of an abstract as the prompt, the next 55 words as the completion, then the EOS token;
- `--rows` training rows (a multiple of the batch size, so that every step is a full batch) and a few validation
  and test rows in files of their own (`--val`, `--test`); Python trains on the same rows.

Both train the same LoRA: rank 8, alpha 16, dropout 0.05 on q,k,v,o,gate,up,down; AdamW at 2e-4 without warm-up
and without weight decay, gradient clipping at 1.0, batches of `--batch-size` rows, f32, 2 threads, loss on the
completion tokens only. A step is forward, backward, clipping and the optimizer step. Throughput is the batch's
tokens (rows x 256) over the mean step time, the first step excluded (it warms caches and allocators for both).
knowhow's step times come from its metrics log (`elapsed_s` of each step); Python's from perf_counter around each
step. Peak memory is each process's max RSS (wait4). Rounds alternate between the tools; the best round of each
is reported with the ratio (knowhow speed-up; >= 1.0 means knowhow is faster). A last knowhow run at rank 64 (8x
the adapter) shows how peak memory follows the adapter's size.
"""
import argparse
import collections
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
THREADS = 2
SEQ = 256
PROMPT_WORDS = 200
COMPLETION_WORDS = SEQ - PROMPT_WORDS - 1
VOCAB = 32000
SPECIALS = ["[UNK]", "<|endoftext|>"]
HELD_OUT = 4
LORA = dict(r=8, alpha=16, dropout=0.05, targets=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
LR = 2e-4


def words_of(data):
    with open(os.path.join(data, "corpus.jsonl")) as f:
        for line in f:
            row = json.loads(line)
            yield (row["title"] + " " + row["text"]).split()


def build(workdir, data, rows):
    """Writes model/ (config, random weights, tokenizer.json), train/val/test.jsonl and the training rows' token ids
    (tokens.json, for Python); returns the model folder."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import Qwen2Config, Qwen2ForCausalLM

    counts = collections.Counter(w for words in words_of(data) for w in words)
    vocab = {token: i for i, token in enumerate(SPECIALS)}
    for word, _ in counts.most_common(VOCAB - len(SPECIALS)):
        vocab[word] = len(vocab)
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer.add_special_tokens(["<|endoftext|>"])
    model_dir = os.path.join(workdir, "model")
    os.makedirs(model_dir)
    tokenizer.save(os.path.join(model_dir, "tokenizer.json"))
    eos = vocab["<|endoftext|>"]

    config = Qwen2Config(
        vocab_size=VOCAB, hidden_size=512, intermediate_size=1408, num_hidden_layers=8, num_attention_heads=8,
        num_key_value_heads=2, max_position_embeddings=SEQ, tie_word_embeddings=True, eos_token_id=eos,
        bos_token_id=eos, pad_token_id=eos, rope_theta=10000.0,
    )
    torch.manual_seed(0)
    Qwen2ForCausalLM(config).save_pretrained(model_dir, safe_serialization=True)

    token_rows, lines = [], []
    for words in words_of(data):
        if len(words) < PROMPT_WORDS + COMPLETION_WORDS:
            continue
        prompt = " ".join(words[:PROMPT_WORDS])
        completion = " " + " ".join(words[PROMPT_WORDS:PROMPT_WORDS + COMPLETION_WORDS])
        ids = tokenizer.encode(prompt + completion + "<|endoftext|>").ids
        assert len(ids) == SEQ and ids[-1] == eos, len(ids)
        lines.append(json.dumps({"prompt": prompt, "completion": completion}) + "\n")
        token_rows.append(ids)
        if len(lines) == rows + 2 * HELD_OUT:
            break
    if len(lines) < rows + 2 * HELD_OUT:
        sys.exit(f"only {len(lines)} SciFact abstracts have {SEQ} words")
    for name, part in (("train", lines[:rows]), ("val", lines[rows:rows + HELD_OUT]), ("test", lines[rows + HELD_OUT:])):
        with open(os.path.join(workdir, f"{name}.jsonl"), "w") as out:
            out.writelines(part)
    with open(os.path.join(workdir, "tokens.json"), "w") as f:
        json.dump(token_rows[:rows], f)
    return model_dir


def python_worker(workdir, batch_size):
    """One PEFT training run in this process; prints its step times as JSON."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import Qwen2ForCausalLM

    torch.set_num_threads(THREADS)
    torch.manual_seed(0)
    model = Qwen2ForCausalLM.from_pretrained(os.path.join(workdir, "model"), torch_dtype=torch.float32)
    model = get_peft_model(model, LoraConfig(
        r=LORA["r"], lora_alpha=LORA["alpha"], lora_dropout=LORA["dropout"], target_modules=LORA["targets"],
        task_type="CAUSAL_LM",
    ))
    model.train()
    with open(os.path.join(workdir, "tokens.json")) as f:
        rows = json.load(f)
    ids = torch.tensor(rows)
    labels = ids.clone()
    labels[:, :PROMPT_WORDS] = -100
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=LR, weight_decay=0.0)
    order = torch.randperm(len(rows))
    times = []
    for start in range(0, len(rows) - batch_size + 1, batch_size):
        batch = order[start:start + batch_size]
        began = time.perf_counter()
        loss = model(input_ids=ids[batch], labels=labels[batch]).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - began)
    print(json.dumps({"step_seconds": times}))


def measured(cmd, env=None):
    """Runs cmd in a fresh interpreter that waits for it, so that its RUSAGE_CHILDREN max RSS is cmd's alone.
    Returns (stdout, peak RSS in MiB)."""
    probe = [sys.executable, "-c", "import subprocess,sys,resource,json;"
             "p=subprocess.run(sys.argv[1:],capture_output=True,text=True);"
             "print(json.dumps({'out':p.stdout,'err':p.stderr,'rc':p.returncode,"
             "'rss':resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))"] + cmd
    result = json.loads(subprocess.run(probe, capture_output=True, text=True, check=True, env=env).stdout)
    if result["rc"] != 0:
        sys.exit(f"{' '.join(cmd)} failed ({result['rc']}):\n{result['err']}")
    return result["out"], result["rss"] / 1024


def python_round(workdir, batch_size):
    out, rss = measured([sys.executable, os.path.abspath(__file__), "--python-worker", workdir,
                         "--batch-size", str(batch_size)])
    return json.loads(out)["step_seconds"][1:], rss


def knowhow_round(binary, workdir, batch_size, round_no, rank=LORA["r"]):
    home = os.path.join(workdir, f"home-{round_no}-r{rank}")
    cmd = [binary, "--home", home, "--json", "tune", os.path.join(workdir, "train.jsonl"),
           "--val", os.path.join(workdir, "val.jsonl"), "--test", os.path.join(workdir, "test.jsonl"),
           "--base", os.path.join(workdir, "model"), "--name", "bench",
           "--rank", str(rank), "--alpha", str(LORA["alpha"] * rank // LORA["r"]), "--dropout", str(LORA["dropout"]),
           "--targets", ",".join(LORA["targets"]), "--lr", str(LR), "--warmup", "0", "--epochs", "1",
           "--batch-size", str(batch_size), "--max-length", str(SEQ)]
    out, rss = measured(cmd, env=dict(os.environ, RAYON_NUM_THREADS=str(THREADS)))
    outcome = json.loads(out.strip().splitlines()[-1])
    with open(os.path.join(outcome["run_dir"], "train", "metrics.jsonl")) as f:
        steps = [json.loads(line) for line in f]
    # Every step is a full batch: its completion labels (55 words + EOS per row) say so.
    assert all(step["tokens"] == batch_size * (COMPLETION_WORDS + 1) for step in steps), steps
    elapsed = [step["elapsed_s"] for step in steps]
    return [b - a for a, b in zip(elapsed, elapsed[1:])], rss, outcome


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--knowhow", default=os.path.join(ROOT, "target", "release", "knowhow"))
    parser.add_argument("--data", default=os.path.join(ROOT, "..", "shared", "data", "scifact"))
    parser.add_argument("--rows", type=int, default=40, help="training rows (a multiple of --batch-size)")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--python-worker", metavar="WORKDIR", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rows % args.batch_size:
        parser.error("--rows must be a multiple of --batch-size")
    if args.python_worker:
        python_worker(args.python_worker, args.batch_size)
        return

    import peft
    import torch
    import transformers

    with tempfile.TemporaryDirectory() as workdir:
        model_dir = build(workdir, args.data, args.rows)
        weights_mib = os.path.getsize(os.path.join(model_dir, "model.safetensors")) / 2**20
        tokens_per_step = args.batch_size * SEQ
        best = {}
        for round_no in range(args.rounds):
            steps, rss, outcome = knowhow_round(args.knowhow, workdir, args.batch_size, round_no)
            k = (tokens_per_step * len(steps) / sum(steps), rss)
            steps, rss = python_round(workdir, args.batch_size)
            p = (tokens_per_step * len(steps) / sum(steps), rss)
            print(f"round {round_no + 1}: knowhow {k[0]:.0f} tokens/s ({k[1]:.0f} MiB), "
                  f"PEFT {p[0]:.0f} tokens/s ({p[1]:.0f} MiB), ratio {k[0] / p[0]:.2f}x", flush=True)
            for name, value in (("knowhow", k), ("peft", p)):
                if name not in best or value[0] > best[name][0]:
                    best[name] = value
        # Memory follows the adapter, not the model: 8x the adapter's parameters, and the peak barely moves.
        _, big_rss, big = knowhow_round(args.knowhow, workdir, args.batch_size, 0, rank=8 * LORA["r"])
        print(json.dumps({
            "model_parameters": outcome["total_parameters"],
            "trainable_parameters": outcome["trainable_parameters"],
            "weights_mib": round(weights_mib, 1),
            "rows_per_step": args.batch_size,
            "seq_len": SEQ,
            "threads": THREADS,
            "knowhow_tokens_per_s": round(best["knowhow"][0], 1),
            "peft_tokens_per_s": round(best["peft"][0], 1),
            "ratio": round(best["knowhow"][0] / best["peft"][0], 3),
            "knowhow_peak_rss_mib": round(best["knowhow"][1]),
            "peft_peak_rss_mib": round(best["peft"][1]),
            "knowhow_rank_64": {"trainable_parameters": big["trainable_parameters"], "peak_rss_mib": round(big_rss)},
            "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                         "peft": peft.__version__},
        }, indent=2))


if __name__ == "__main__":
    main()
