#!/usr/bin/env python3
"""BM25 on BEIR SciFact: knowhow vs bm25s, side by side, in one run.

Usage: bench/bm25_scifact.py [--data ../shared/data/scifact] [--knowhow target/release/knowhow]

Both tools index the same corpus (title + text per document) and run the same
300 test queries (top 100 documents each), single-threaded. Reported per tool:
index time, queries per second, nDCG@10 (trec_eval formula) and peak resident
memory of the process (from wait4). knowhow's index time is that of
`knowhow eval beir` on a fresh home: it loads, chunks, commits durably to
redb and builds the tantivy index; bm25s indexes in memory (its saving to
disk is timed separately and not included).
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


def run_measured(cmd, env=None):
    """Runs a command; returns (stdout, peak RSS in MiB) using wait4."""
    with tempfile.TemporaryFile() as out:
        proc = subprocess.Popen(cmd, stdout=out, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        text = out.read().decode()
    if proc.returncode != 0:
        sys.exit(f"{cmd[0]} failed ({proc.returncode}): {text}")
    return text, usage.ru_maxrss / 1024


def bm25s_child(data):
    """Runs inside a child process: index and query with bm25s."""
    import bm25s
    import Stemmer

    def ndcg10(ranked, judged):
        import math
        dcg = sum(judged.get(d, 0) / math.log2(i + 2) for i, d in enumerate(ranked[:10]))
        ideal = sorted((r for r in judged.values() if r > 0), reverse=True)[:10]
        idcg = sum(r / math.log2(i + 2) for i, r in enumerate(ideal))
        return dcg / idcg if idcg else 0.0

    started = time.perf_counter()
    ids, texts = [], []
    with open(os.path.join(data, "corpus.jsonl")) as f:
        for line in f:
            row = json.loads(line)
            ids.append(row["_id"])
            texts.append(row["title"] + "\n\n" + row["text"])
    stemmer = Stemmer.Stemmer("english")
    corpus_tokens = bm25s.tokenize(texts, stopwords="en", stemmer=stemmer, show_progress=False)
    retriever = bm25s.BM25()
    retriever.index(corpus_tokens, show_progress=False)
    index_seconds = time.perf_counter() - started
    with tempfile.TemporaryDirectory() as tmp:
        saved = time.perf_counter()
        retriever.save(tmp)
        save_seconds = time.perf_counter() - saved

    qrels = {}
    with open(os.path.join(data, "qrels", "test.tsv")) as f:
        next(f)
        for line in f:
            q, d, s = line.rstrip("\n").split("\t")
            qrels.setdefault(q, {})[d] = int(s)
    queries = {}
    with open(os.path.join(data, "queries.jsonl")) as f:
        for line in f:
            row = json.loads(line)
            if row["_id"] in qrels:
                queries[row["_id"]] = row["text"]
    qids = sorted(queries)
    started = time.perf_counter()
    query_tokens = bm25s.tokenize([queries[q] for q in qids], stopwords="en", stemmer=stemmer, show_progress=False)
    results, scores = retriever.retrieve(query_tokens, k=100, show_progress=False, n_threads=1)
    query_seconds = time.perf_counter() - started
    total = 0.0
    for row, q in enumerate(qids):
        # trec_eval order: score descending, then document id descending.
        ranked = sorted(((float(scores[row][i]), ids[results[row][i]]) for i in range(len(results[row]))), reverse=True)
        total += ndcg10([d for _, d in ranked], qrels[q])
    print(json.dumps({
        "index_seconds": index_seconds,
        "save_seconds": save_seconds,
        "query_seconds": query_seconds,
        "ndcg@10": total / len(qrels),
        "queries": len(qids),
    }))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=os.path.join(ROOT, "..", "shared", "data", "scifact"))
    parser.add_argument("--knowhow", default=os.path.join(ROOT, "target", "release", "knowhow"))
    parser.add_argument("--bm25s-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    data = os.path.abspath(args.data)
    if args.bm25s_child:
        bm25s_child(data)
        return

    with tempfile.TemporaryDirectory() as home:
        env = dict(os.environ, KNOWHOW_HOME=home)
        out, kh_rss = run_measured([args.knowhow, "--json", "eval", "beir", data, "--timings"], env=env)
    kh = json.loads(out)
    out, py_rss = run_measured([sys.executable, __file__, "--data", data, "--bm25s-child"])
    py = json.loads(out)

    kh_qps = kh["queries"] / kh["timings"]["query_seconds"]
    py_qps = py["queries"] / py["query_seconds"]
    rows = [
        ("index time (s)", kh["timings"]["ingest_seconds"], py["index_seconds"], py["index_seconds"] / kh["timings"]["ingest_seconds"]),
        ("queries per second", kh_qps, py_qps, kh_qps / py_qps),
        ("nDCG@10", kh["ndcg@10"], py["ndcg@10"], kh["ndcg@10"] / py["ndcg@10"]),
        ("peak memory (MiB)", kh_rss, py_rss, kh_rss / py_rss),
    ]
    print(f"SciFact test, {kh['queries']} queries, top-100, 1 query thread each")
    print(f"{'':22}{'knowhow':>12}{'bm25s':>12}{'ratio':>10}")
    for name, a, b, ratio in rows:
        print(f"{name:22}{a:12.4f}{b:12.4f}{ratio:10.2f}")
    print("(ratio: knowhow speed-up for times and qps; knowhow/bm25s for nDCG and memory)")
    print(f"bm25s save-to-disk, not included above: {py['save_seconds']:.3f}s")
    print(json.dumps({"knowhow": kh, "bm25s": py, "knowhow_peak_mib": kh_rss, "bm25s_peak_mib": py_rss}))


if __name__ == "__main__":
    main()
