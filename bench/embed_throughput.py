#!/usr/bin/env python3
"""Sentence-embedding throughput: knowhow (candle) vs sentence-transformers (PyTorch), in one run.

Usage: bench/embed_throughput.py --model DIR [--knowhow target/release/knowhow]
                                 [--data ../shared/data/scifact] [--passages 2000] [--rounds 3]

Both embed the same passages (the first N SciFact documents, title + text, newlines
folded to spaces so that each is one line of `knowhow embed` input) with the same
model folder, batch size 32 and 2 threads, and both are timed around the encoding
call only: sentence-transformers' `model.encode`, and knowhow's own timer, which
`knowhow embed --stats` prints on stderr (model loading and JSON output excluded
for both). Rounds alternate between the two tools; the best round of each is
reported, with the ratio (knowhow speed-up; >= 1.0 means knowhow is faster) and
the lowest cosine between the two tools' vectors as a sanity check.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
THREADS = 2
BATCH = 32


def passages(data, count):
    texts = []
    with open(os.path.join(data, "corpus.jsonl")) as f:
        for line in f:
            row = json.loads(line)
            texts.append(" ".join((row["title"] + "\n\n" + row["text"]).split()))
            if len(texts) == count:
                break
    return texts


def knowhow_round(binary, model, path):
    env = dict(os.environ, RAYON_NUM_THREADS=str(THREADS))
    cmd = [binary, "embed", "--model", model, "--batch-size", str(BATCH), "--stats", path]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        sys.exit(f"knowhow embed failed ({proc.returncode}): {proc.stderr}")
    stats = json.loads(proc.stderr.strip().splitlines()[-1])
    vectors = [json.loads(line) for line in proc.stdout.splitlines()]
    return stats["embed_seconds"], vectors


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="model folder (config.json, model.safetensors, ...)")
    parser.add_argument("--knowhow", default=os.path.join(ROOT, "target", "release", "knowhow"))
    parser.add_argument("--data", default=os.path.join(ROOT, "..", "shared", "data", "scifact"))
    parser.add_argument("--passages", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    import numpy as np
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(THREADS)
    texts = passages(args.data, args.passages)
    st = SentenceTransformer(args.model, device="cpu")
    st.encode(texts[:BATCH], batch_size=BATCH)  # warm-up: first-call allocations

    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
        f.write("\n".join(texts) + "\n")
        path = f.name
    try:
        st_times, kh_times = [], []
        for _ in range(args.rounds):
            started = time.perf_counter()
            reference = st.encode(texts, batch_size=BATCH, convert_to_numpy=True)
            st_times.append(time.perf_counter() - started)
            seconds, vectors = knowhow_round(args.knowhow, args.model, path)
            kh_times.append(seconds)
    finally:
        os.unlink(path)

    ours = np.asarray(vectors, dtype=np.float32)
    cosine = (ours * reference).sum(1) / (np.linalg.norm(ours, axis=1) * np.linalg.norm(reference, axis=1))
    kh, st_best = min(kh_times), min(st_times)
    print(f"passages: {len(texts)}, batch {BATCH}, {THREADS} threads, best of {args.rounds} rounds")
    print(f"{'':28}{'knowhow':>12}{'sentence-tf':>14}{'ratio':>8}")
    print(f"{'seconds':28}{kh:12.3f}{st_best:14.3f}{st_best / kh:8.2f}")
    print(f"{'passages/s':28}{len(texts) / kh:12.1f}{len(texts) / st_best:14.1f}{st_best / kh:8.2f}")
    print(f"lowest cosine between the two tools' vectors: {cosine.min():.6f}")
    print(json.dumps({
        "passages": len(texts),
        "knowhow_seconds": kh_times,
        "sentence_transformers_seconds": st_times,
        "ratio": st_best / kh,
        "min_cosine": float(cosine.min()),
    }))


if __name__ == "__main__":
    main()
