#!/usr/bin/env python3
"""The Python server a user would otherwise run in place of `knowhow serve`: the load benchmark's peer.

FastAPI + uvicorn (uvloop, httptools) over sentence-transformers (dense, exact numpy inner product over
normalised vectors), bm25s (PyStemmer English stemmer, Lucene's English stop words, like knowhow's analyzer) and
Reciprocal Rank Fusion (k = 60, the top 100 of each list: knowhow's hybrid defaults). It serves the three
operations of `bench/serve_load.py` with the JSON shapes of `knowhow serve`:

    POST /v1/collections/{c}/search  {"query", "mode": "hybrid"|"dense"|"lexical", "k": 10}
                                     -> {"object": "list", "mode", "data": [{"document_id", "chunk", "score", ...}]}
    POST /v1/embeddings              {"model", "input": str | [str], "encoding_format": "float"|"base64"}
                                     -> OpenAI's {"object": "list", "data": [{"embedding", "index"}], "usage"}
    POST /v1/collections/{c}/ask     {"question", "mode": "hybrid", "k": 8}
                                     -> {"text", "abstained", "sources": [...], "retrieved": [...]}
    GET  /v1/models, GET /health, GET /ready

It indexes exactly knowhow's chunks (same text, same document ids and ordinals, so answers can be compared hit
for hit), read either from a JSONL file (`--chunks`, one chunk per line: document_id, chunk, title, source,
char_start, char_end, text; `serve_load.py` writes it from knowhow's documents API) or from a knowhow home with
`knowhow --json docs list` and `knowhow --json docs show ID --chunks` (`--knowhow BIN --home DIR`).

The extractive answer mirrors knowhow's (crates/rag/src/answer): hybrid top 8 chunks, overlapping or adjacent
chunks of one document merged into one numbered source, abstention when no source holds 35% of the question's
terms, then the sentences of the sources scored by BM25 against the question's terms (IDF over those sentences,
each rank down the sources costing 10%), the best sentence plus up to two more scoring 75% of it, in source
order, each followed by its [n] marker. Sentences are split by a regular expression, not Unicode rules.

Serving: `uvicorn.run(app)` as a user would start it by default: one worker process (uvicorn's default; more
workers would each load the model and the index, multiplying memory, and on a 2-core machine they would compete
for the same cores as torch's own threads), uvloop + httptools (uvicorn[standard]), no access log. Endpoints
are plain `def` functions, so FastAPI runs them on its thread pool (40 threads; torch releases the GIL while it
computes): the usual way to serve blocking model code. Requests are not batched together (sentence-transformers
encodes each request's texts as they come, which is what a FastAPI wrapper around `model.encode` does); torch
uses --threads intra-op threads per call (default: every core, torch's own default).

Known differences from knowhow, none of which changes the amount of work much: bm25s's tokenizer keeps tokens of
two or more word characters (tantivy's keeps single characters too) and does not quantise document lengths;
snippets are the first 300 characters of the chunk (knowhow picks a highlighted window); the peer keeps no audit
log and no request log (knowhow appends a line to logs/requests.jsonl per request and, for ask, a record to the
answers log).

Run (on its own; serve_load.py starts it for the benchmark):
    bench/.venv/bin/python bench/serve_peer.py --model DIR --chunks CHUNKS.jsonl [--port 8081]
    bench/.venv/bin/python bench/serve_peer.py --model DIR --knowhow target/release/knowhow --home HOME -c bench
It prints {"listening": URL} on stdout once the index is built and the socket is bound.
"""
import argparse
import base64
import json
import os
import re
import socket
import subprocess
import sys
import time

import bm25s
import numpy as np
import Stemmer
import torch
import uvicorn
from bm25s.stopwords import STOPWORDS_EN
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from sentence_transformers import SentenceTransformer

RRF_K = 60.0
CANDIDATES = 100  # chunks each retriever gives the fusion (knowhow: Options::candidates)
MAX_K = 100
ASK_K = 8  # chunks an answer reads (knowhow's ask default)
MIN_TERM_COVERAGE = 0.35
MAX_SENTENCES = 3
KEEP_RATIO = 0.75
RANK_DECAY = 0.1
BM25_K1, BM25_B = 1.2, 0.75
NOT_FOUND = "Not found in the documents."
# knowhow's QUESTION_WORDS (crates/rag/src/answer/evidence.rs): question words that say nothing of the subject.
QUESTION_WORDS = {
    "what", "which", "who", "whom", "whose", "when", "where", "why", "how", "do", "does", "did", "has", "have",
    "had", "were", "been", "can", "could", "would", "should", "many", "much",
}
TOKEN = re.compile(r"(?u)\b\w\w+\b")  # bm25s's default token pattern
SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def chunks_from_file(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def chunks_from_knowhow(binary, home, collection, namespace="default"):
    """knowhow's chunks, read with its CLI (one `docs show` per document)."""
    base = [binary, "--home", home, "-n", namespace, "-c", collection, "--json", "docs"]
    listing = json.loads(subprocess.run(base + ["list"], check=True, capture_output=True, text=True).stdout)
    chunks = []
    for doc in listing["documents"]:
        out = subprocess.run(base + ["show", doc["id"], "--chunks"], check=True, capture_output=True, text=True)
        shown = json.loads(out.stdout)
        for c in shown["chunks"]:
            chunks.append({"document_id": shown["id"], "chunk": c["ordinal"], "title": shown["title"],
                           "source": shown["source"], "char_start": c["char_start"], "char_end": c["char_end"],
                           "text": c["text"]})
    return chunks


class Pipeline:
    """The index (dense vectors + BM25 over the same chunks) and the three operations."""

    def __init__(self, model_dir, chunks, batch_size=32):
        self.chunks = chunks
        self.stemmer = Stemmer.Stemmer("english")
        self.model = SentenceTransformer(model_dir, device="cpu")
        self.model_id = os.path.basename(os.path.normpath(model_dir)).split("--")[-1]
        texts = [c["text"] for c in chunks]
        self.vectors = self.model.encode(texts, batch_size=batch_size, convert_to_numpy=True,
                                         normalize_embeddings=True).astype(np.float32)
        # knowhow's lexical index is tantivy's BM25 (k1 1.2, b 0.75, Lucene's IDF); bm25s's default method is
        # Lucene's too but with k1 1.5. Lucene's formula drops tantivy's (k1 + 1) factor: same ranking,
        # scores multiplied back by (k1 + 1) in `lexical` so that both servers print comparable numbers.
        self.bm25 = bm25s.BM25(k1=BM25_K1, b=BM25_B)
        self.bm25.index(bm25s.tokenize(texts, stopwords="en", stemmer=self.stemmer, show_progress=False),
                        show_progress=False)

    # Text analysis: bm25s's tokenizer (lowercase, \w\w+, Lucene's English stop words, Snowball English).
    def analyze(self, text):
        words = [w for w in TOKEN.findall(text.lower()) if w not in STOPWORDS_EN]
        return self.stemmer.stemWords(words)

    def question_terms(self, question):
        words = [w for w in re.split(r"[^\w']+", question) if w and w.lower() not in QUESTION_WORDS]
        return sorted(set(self.analyze(" ".join(words))))

    def embed(self, texts):
        return self.model.encode(texts, convert_to_numpy=True, normalize_embeddings=True)

    def lexical(self, query, limit):
        limit = min(limit, len(self.chunks))
        docs, scores = self.bm25.retrieve([self.analyze(query)], k=limit, show_progress=False, n_threads=1)
        return [(int(i), float(s) * (BM25_K1 + 1.0)) for i, s in zip(docs[0], scores[0]) if s > 0]

    def dense(self, query, limit):
        scores = self.vectors @ self.embed([query])[0]
        limit = min(limit, len(scores))
        top = np.argpartition(-scores, limit - 1)[:limit]
        top = top[np.argsort(-scores[top], kind="stable")]
        return [(int(i), float(scores[i])) for i in top]

    def retrieve(self, query, k, mode="hybrid"):
        """[(chunk index, score, lexical (rank, score) | None, dense (rank, score) | None)], best first."""
        if mode == "lexical":
            return [(i, s, (r, s), None) for r, (i, s) in enumerate(self.lexical(query, k), 1)]
        if mode == "dense":
            return [(i, s, None, (r, s)) for r, (i, s) in enumerate(self.dense(query, k), 1)]
        limit = max(CANDIDATES, k)
        lists = (self.lexical(query, limit), self.dense(query, limit))
        fused, ranks = {}, {}
        for which, ranked in enumerate(lists):
            for rank, (i, score) in enumerate(ranked, 1):
                fused[i] = fused.get(i, 0.0) + 1.0 / (RRF_K + rank)
                ranks.setdefault(i, [None, None])[which] = (rank, score)
        # Higher fused score first; ties to the better best rank (knowhow's order).
        order = sorted(fused, key=lambda i: (-fused[i], min(r[0] for r in ranks[i] if r)))
        return [(i, fused[i], ranks[i][0], ranks[i][1]) for i in order[:k]]

    def search(self, query, k, mode):
        data = []
        for i, score, lexical, dense in self.retrieve(query, k, mode):
            c = self.chunks[i]
            data.append({
                "document_id": c["document_id"], "chunk": c["chunk"], "title": c["title"], "source": c["source"],
                "snippet": c["text"][:300], "score": score,
                "scores": {"lexical": lexical and lexical[1], "dense": dense and dense[1],
                           "fused": score if mode == "hybrid" else None},
                "ranks": {"lexical": lexical and lexical[0], "dense": dense and dense[0]},
            })
        return data

    def sources(self, retrieved):
        """Chunks of one document that overlap or follow each other become one source, numbered by best rank."""
        by_doc = {}
        for rank, (i, score, _, _) in enumerate(retrieved):
            by_doc.setdefault(self.chunks[i]["document_id"], []).append((rank, i, score))
        merged = []
        for items in by_doc.values():
            items.sort(key=lambda t: (self.chunks[t[1]]["char_start"], self.chunks[t[1]]["chunk"]))
            current = None
            for rank, i, score in items:
                c = self.chunks[i]
                if current and (c["char_start"] <= current["char_end"] or c["chunk"] == current["ordinals"][-1] + 1):
                    if c["char_end"] > current["char_end"]:
                        if c["char_start"] < current["char_end"]:
                            current["text"] += c["text"][current["char_end"] - c["char_start"]:]
                        else:
                            current["text"] += ("\n\n" if c["char_start"] - current["char_end"] > 1 else " ") + c["text"]
                        current["char_end"] = c["char_end"]
                    current["ordinals"].append(c["chunk"])
                    current["score"] = max(current["score"], score)
                    current["rank"] = min(current["rank"], rank)
                else:
                    if current:
                        merged.append(current)
                    current = {"rank": rank, "document_id": c["document_id"], "title": c["title"],
                               "source": c["source"], "char_start": c["char_start"], "char_end": c["char_end"],
                               "ordinals": [c["chunk"]], "score": score, "text": c["text"]}
            merged.append(current)
        merged.sort(key=lambda s: s["rank"])
        for number, source in enumerate(merged, 1):
            source["number"] = number
            del source["rank"]
        return merged

    def extract(self, terms, sources):
        sentences = []  # (source number, rank, position, text, term counts, length)
        for rank, source in enumerate(sources):
            paragraphs = re.split(r"\n\s*\n", source["text"])
            position = 0
            for paragraph in paragraphs:
                lines = [l.strip() for l in paragraph.splitlines() if l.strip() and not l.strip().startswith("#")]
                for text in SENTENCE_END.split(" ".join(lines)):
                    text = text.strip()
                    if not text:
                        continue
                    analyzed = self.analyze(text)
                    counts = {}
                    for t in analyzed:
                        counts[t] = counts.get(t, 0) + 1
                    sentences.append((source["number"], rank, position, text, counts, len(analyzed)))
                    position += 1
        if not sentences or not terms:
            return None
        n = len(sentences)
        average = max(1.0, sum(s[5] for s in sentences) / n)
        idf = [np.log(1.0 + (n - df + 0.5) / (df + 0.5))
               for df in (sum(1 for s in sentences if t in s[4]) for t in terms)]
        scored = []
        for index, (_, rank, _, _, counts, length) in enumerate(sentences):
            norm = BM25_K1 * (1.0 - BM25_B + BM25_B * length / average)
            bm25 = sum(w * counts.get(t, 0) * (BM25_K1 + 1.0) / (counts.get(t, 0) + norm) for t, w in zip(terms, idf))
            scored.append((bm25 / (1.0 + RANK_DECAY * rank), index))
        scored.sort(key=lambda s: (-s[0], s[1]))
        best = scored[0][0]
        if best <= 0:
            return None
        chosen = [s for s in scored[:MAX_SENTENCES] if s[0] > 0 and s[0] >= best * KEEP_RATIO]
        chosen.sort(key=lambda s: (sentences[s[1]][1], sentences[s[1]][2]))
        quoted = [{"source": sentences[i][0], "text": sentences[i][3], "score": float(score)} for score, i in chosen]
        return " ".join(f"{q['text']} [{q['source']}]" for q in quoted), quoted

    def ask(self, question, k, mode):
        started = time.perf_counter()
        retrieved = self.retrieve(question, k, mode)
        sources = self.sources(retrieved)
        terms = self.question_terms(question)
        coverage = max((len(set(terms) & set(self.analyze(s["text"]))) / len(terms) for s in sources),
                       default=0.0) if terms else 1.0
        answer = {"question": question, "mode": mode, "model": "extractive", "extractive": True,
                  "abstained": False, "abstention": None, "sentences": [], "sources": sources, "closest": [],
                  "retrieved": [{"document_id": self.chunks[i]["document_id"], "ordinal": self.chunks[i]["chunk"],
                                 "score": score} for i, score, _, _ in retrieved]}
        extract = self.extract(terms, sources) if sources and coverage >= MIN_TERM_COVERAGE else None
        if extract is None:
            answer.update(text=NOT_FOUND, abstained=True, closest=sources[:3],
                          abstention={"reason": "no_sources" if not sources else
                                      "weak_evidence" if coverage < MIN_TERM_COVERAGE else "no_sentence"})
        else:
            answer["text"], answer["sentences"] = extract
        answer["latency_ms"] = int((time.perf_counter() - started) * 1000)
        return answer


def error(status, message, param=None, code="invalid_request"):
    return JSONResponse(status_code=status, content={"error": {"message": message, "type": code,
                                                               "param": param, "code": code}})


def make_app(pipeline, collection):
    app = FastAPI(title="knowhow load-benchmark peer")

    def check_collection(name):
        if name != collection:
            raise HTTPException(404, f"no collection {name!r}")

    @app.get("/health")
    def health():
        return {"status": "ok"}

    @app.get("/ready")
    def ready():
        return {"status": "ready"}

    @app.get("/v1/models")
    def models():
        return {"object": "list", "data": [{"id": pipeline.model_id, "object": "model", "owned_by": "serve_peer"}]}

    @app.post("/v1/collections/{name}/search")
    def search(name: str, body: dict):
        check_collection(name)
        query, mode, k = body.get("query"), body.get("mode") or "hybrid", int(body.get("k") or 10)
        if not isinstance(query, str) or not query.strip():
            return error(400, "query must be a non-empty string", "query")
        if mode not in ("hybrid", "dense", "lexical") or not 1 <= k <= MAX_K:
            return error(400, "mode is hybrid, dense or lexical; k is 1 to 100", "mode")
        data = pipeline.search(query, k, mode)
        return {"object": "list", "collection": name, "mode": mode, "fallback": None, "data": data}

    @app.post("/v1/collections/{name}/ask")
    def ask(name: str, body: dict):
        check_collection(name)
        question, mode = body.get("question") or body.get("query"), body.get("mode") or "hybrid"
        k = int(body.get("k") or ASK_K)
        if not isinstance(question, str) or not question.strip():
            return error(400, "question must be a non-empty string", "question")
        if mode not in ("hybrid", "dense", "lexical") or not 1 <= k <= MAX_K:
            return error(400, "mode is hybrid, dense or lexical; k is 1 to 100", "mode")
        return pipeline.ask(question, k, mode)

    @app.post("/v1/embeddings")
    def embeddings(body: dict):
        texts = body.get("input")
        texts = [texts] if isinstance(texts, str) else texts
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) and t for t in texts):
            return error(400, "input must be a string or a list of non-empty strings", "input")
        encoding = body.get("encoding_format") or "float"
        if encoding not in ("float", "base64"):
            return error(400, "encoding_format is float or base64", "encoding_format")
        vectors = pipeline.embed(texts).astype(np.float32)
        # Counted like knowhow (and OpenAI): the input's tokens, without [CLS] and [SEP].
        tokens = sum(len(ids) for ids in pipeline.model.tokenizer(texts, add_special_tokens=False)["input_ids"])
        data = [{"object": "embedding", "index": i,
                 "embedding": v.tolist() if encoding == "float" else base64.b64encode(v.tobytes()).decode()}
                for i, v in enumerate(vectors)]
        return {"object": "list", "data": data, "model": pipeline.model_id,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}

    @app.exception_handler(HTTPException)
    def http_error(_request: Request, exc: HTTPException):
        return error(exc.status_code, str(exc.detail), code="not_found" if exc.status_code == 404 else "error")

    return app


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="all-MiniLM-L6-v2 folder (Hugging Face layout)")
    parser.add_argument("--chunks", help="JSONL of knowhow's chunks (written by serve_load.py)")
    parser.add_argument("--knowhow", help="knowhow binary: read the chunks from --home with `docs list/show`")
    parser.add_argument("--home", help="knowhow home holding the collection (with --knowhow)")
    parser.add_argument("-c", "--collection", default="bench", help="collection name served (and read)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads")
    args = parser.parse_args()
    if not args.chunks and not (args.knowhow and args.home):
        parser.error("give --chunks FILE, or --knowhow BIN and --home DIR")
    if args.host not in ("127.0.0.1", "::1", "localhost"):
        parser.error("the benchmark peer listens on loopback only")

    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    chunks = chunks_from_file(args.chunks) if args.chunks else chunks_from_knowhow(args.knowhow, args.home,
                                                                                   args.collection)
    pipeline = Pipeline(args.model, chunks)
    index_seconds = time.perf_counter() - started

    sock = socket.socket(socket.AF_INET6 if ":" in args.host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))
    port = sock.getsockname()[1]
    config = uvicorn.Config(make_app(pipeline, args.collection), log_level="warning", access_log=False,
                            loop="auto", http="auto")
    print(json.dumps({"listening": f"http://{args.host}:{port}", "chunks": len(chunks),
                      "index_seconds": round(index_seconds, 2)}), flush=True)
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    sys.exit(main())
