#!/usr/bin/env python3
"""Retrieval pipeline on BEIR SciFact: knowhow vs the same pipeline in Python, in one run.

Usage: bench/retrieval_scifact.py --model DIR [--knowhow target/release/knowhow]
                                  [--data ../shared/data/scifact] [--skip-ingest HOME]

The Python pipeline is what a user would otherwise assemble: sentence-transformers
(all-MiniLM-L6-v2, 2 threads, batch 32) for dense vectors with an exact numpy
inner-product search, bm25s (PyStemmer English stemmer, English stop words) for
BM25, and Reciprocal Rank Fusion (k = 60) of the two top-150 lists. knowhow is run
with `knowhow eval beir --mode M --timings --json` on a fresh home (it ingests
once, with embeddings, then runs each mode against that collection; lexical mode
uses its own BM25-only collection).

Reported per tool: ingest time with embeddings (knowhow: load + chunk + embed +
durable commit + both indexes; Python: embedding + bm25s indexing, in memory), and
per mode nDCG@10 and query latency p50/p95 in ms (one query at a time, query
embedding included).
"""
import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
THREADS = 2
DEPTH = 150  # chunks/documents each retriever returns (knowhow's eval fetches 150 for top-100 documents)


def percentile(values, fraction):
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


def ndcg10(run, qrels):
    total = 0.0
    for qid, judged in qrels.items():
        ranked = run.get(qid, [])
        dcg = sum(judged.get(d, 0) / math.log2(i + 2) for i, d in enumerate(ranked[:10]))
        ideal = sorted((r for r in judged.values() if r > 0), reverse=True)[:10]
        idcg = sum(r / math.log2(i + 2) for i, r in enumerate(ideal))
        total += dcg / idcg if idcg else 0.0
    return total / len(qrels)


def load(data):
    ids, texts = [], []
    with open(os.path.join(data, "corpus.jsonl")) as f:
        for line in f:
            row = json.loads(line)
            ids.append(row["_id"])
            texts.append(row["title"] + "\n\n" + row["text"])
    queries = {}
    with open(os.path.join(data, "queries.jsonl")) as f:
        for line in f:
            row = json.loads(line)
            queries[row["_id"]] = row["text"]
    qrels = {}
    with open(os.path.join(data, "qrels", "test.tsv")) as f:
        next(f)
        for line in f:
            qid, did, score = line.split("\t")
            qrels.setdefault(qid, {})[did] = int(score)
    return ids, texts, {q: queries[q] for q in qrels}, qrels


def python_pipeline(model_dir, data):
    import bm25s
    import numpy as np
    import Stemmer
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(THREADS)
    ids, texts, queries, qrels = load(data)
    started = time.perf_counter()
    model = SentenceTransformer(model_dir, device="cpu")
    vectors = model.encode(texts, batch_size=32, convert_to_numpy=True, normalize_embeddings=True)
    stemmer = Stemmer.Stemmer("english")
    retriever = bm25s.BM25()
    retriever.index(bm25s.tokenize(texts, stopwords="en", stemmer=stemmer, show_progress=False), show_progress=False)
    ingest_seconds = time.perf_counter() - started

    def lexical(text):
        tokens = bm25s.tokenize([text], stopwords="en", stemmer=stemmer, show_progress=False)
        docs, _ = retriever.retrieve(tokens, k=DEPTH, show_progress=False, n_threads=1)
        return [ids[i] for i in docs[0]]

    def dense(text):
        query = model.encode([text], convert_to_numpy=True, normalize_embeddings=True)[0]
        scores = vectors @ query
        top = np.argpartition(-scores, DEPTH)[:DEPTH]
        return [ids[i] for i in top[np.argsort(-scores[top])]]

    def hybrid(text):
        fused = {}
        for ranked in (lexical(text), dense(text)):
            for rank, doc in enumerate(ranked, start=1):
                fused[doc] = fused.get(doc, 0.0) + 1.0 / (60 + rank)
        return sorted(fused, key=fused.get, reverse=True)

    modes = {}
    for name, search in (("lexical", lexical), ("dense", dense), ("hybrid", hybrid)):
        run, latencies = {}, []
        for qid, text in queries.items():
            t = time.perf_counter()
            run[qid] = search(text)[:100]
            latencies.append((time.perf_counter() - t) * 1000)
        modes[name] = {"ndcg@10": ndcg10(run, qrels), "p50": percentile(latencies, 0.5), "p95": percentile(latencies, 0.95)}
    return {"ingest_seconds": ingest_seconds, "modes": modes}


def knowhow_pipeline(binary, model_dir, data, home):
    env = dict(os.environ, RAYON_NUM_THREADS=str(THREADS), KNOWHOW_OFFLINE="1")
    modes, ingest_seconds = {}, None
    for mode in ("dense", "hybrid", "lexical"):
        cmd = [binary, "--home", home, "--json", "eval", "beir", data, "--mode", mode, "--timings",
               "--embed-model", model_dir]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            sys.exit(f"knowhow eval failed ({proc.returncode}): {proc.stderr}")
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        timings = result["timings"]
        if mode == "dense":
            ingest_seconds = timings["ingest_seconds"]
        modes[mode] = {"ndcg@10": result["ndcg@10"], "p50": timings["latency_ms_p50"], "p95": timings["latency_ms_p95"]}
    return {"ingest_seconds": ingest_seconds, "modes": modes}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="all-MiniLM-L6-v2 folder")
    parser.add_argument("--knowhow", default=os.path.join(ROOT, "target", "release", "knowhow"))
    parser.add_argument("--data", default=os.path.join(ROOT, "..", "shared", "data", "scifact"))
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as home:
        kh = knowhow_pipeline(args.knowhow, args.model, args.data, home)
    py = python_pipeline(args.model, args.data)

    print(f"ingest with embeddings (s)  knowhow {kh['ingest_seconds']:.1f}  python {py['ingest_seconds']:.1f}  "
          f"ratio {py['ingest_seconds'] / kh['ingest_seconds']:.2f}")
    print(f"{'mode':10}{'nDCG@10 kh':>12}{'py':>8}{'p50 ms kh':>11}{'py':>8}{'p95 ms kh':>11}{'py':>8}")
    for mode in ("lexical", "dense", "hybrid"):
        k, p = kh["modes"][mode], py["modes"][mode]
        print(f"{mode:10}{k['ndcg@10']:12.4f}{p['ndcg@10']:8.4f}{k['p50']:11.2f}{p['p50']:8.2f}{k['p95']:11.2f}{p['p95']:8.2f}")
    print(json.dumps({"knowhow": kh, "python": py}))


if __name__ == "__main__":
    main()
