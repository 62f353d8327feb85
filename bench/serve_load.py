#!/usr/bin/env python3
"""Load benchmark of `knowhow serve` against what a user would otherwise run, in one run, on loopback.

What it measures: for each operation
  - search      POST /v1/collections/bench/search {"query", "mode": "hybrid", "k": 10}
  - embeddings  POST /v1/embeddings {"model", "input": ONE SENTENCE, "encoding_format": "float"}
  - ask         POST /v1/collections/bench/ask {"question", "mode": "hybrid"} (extractive answer, k = 8)
and each number of concurrent clients (1, 8, 32), requests/s, latency p50/p95/p99 (ms, nearest rank) and errors
(a non-200 answer or a failed request is an error; there must be none: the exit status is 1 otherwise), for every
server:
  - knowhow:  `knowhow serve` (all three operations; its defaults: one model worker, queue 64)
  - fastapi:  bench/serve_peer.py, FastAPI + uvicorn (one worker process, uvicorn's default) over
              sentence-transformers + bm25s + RRF (k 60, top 100 of each list, knowhow's constants), all three
              operations; its docstring says what it does and how it differs from knowhow
  - infinity: `infinity_emb v2` (PyPI infinity-emb 0.0.78, torch engine on the CPU, its defaults: dynamic
              batching up to 32, model warm-up at start; embeddings only)
then the ratios knowhow / peer of requests/s (above 1: knowhow serves more) and of p95 (below 1: knowhow answers
faster). On stdout: the machine (CPU model, cores, memory, load average), the date, the command line, the
versions of knowhow and of every peer's packages, the agreement check, the generator ceiling and the table;
everything as JSON with --json FILE (NaN and infinities as null). Progress goes to stderr.

How: the first --docs SciFact documents (title + abstract) are written as .txt files and ingested with
`knowhow ingest --embed-model MODEL` (into WORK/home-DOCS; incremental, so a kept --work skips it the next time).
The peer indexes exactly knowhow's chunks, read from knowhow's documents API (GET .../documents, then
GET .../documents/{id}, which includes the chunks), so both search the same passages and answers can be compared
hit for hit. Queries are SciFact's claims (queries.jsonl), shuffled with a fixed seed, the same sequence for every
server. Each cell is one server, one operation, one concurrency: C client threads, each with its own keep-alive
http.client connection (opened and warmed by one uncounted request), send requests back to back until
--requests have been sent or --seconds have passed (whichever first; a request in flight at the deadline is
finished and counted); requests/s = answers with status 200 / wall time. Cells are interleaved (for each
operation, for each concurrency, every server in turn), so a drift of the machine hits every server alike; every
server stays up for the whole run (idle while the others are measured). Before the cells: --warmup sequential
requests per server and operation, and --check queries through every server, printing how often the top hit
agrees, the top-10 overlap, equal extractive answers and the smallest cosine between the embeddings.

The generator is measured too: its ceiling (GET /health on each server at 8 and 32 clients for
--ceiling-seconds: an upper bound on what the generator plus the HTTP stack can carry, to set against the rates
measured) and, per cell, the CPU it used (% of one core) and the CPU each server used per request (utime + stime
from /proc, 10 ms ticks: coarse on short cells), since on a small machine the generator shares the cores with the
server under test.

Time: about 21 cells of at most --seconds (12) each, plus knowhow's ingest and the peer's indexing (each about
one to two minutes for 1000 documents, about 1900 chunks, on 2 cores), infinity's start (~15 s), the agreement
check and the ceiling (~20 s): under 10 minutes on 2 cores with the defaults.

Setup: bench/setup.sh (sentence-transformers, bm25s, fastapi, uvicorn[standard] into bench/.venv), then
bench/setup_infinity.sh (infinity-emb into its own venv, bench/.venv/infinity: its pins conflict with
bench/.venv's transformers and sentence-transformers). Without bench/.venv/infinity, or when infinity does not
start, the run goes on without it and says why (stdout, and "skipped" in the JSON). The model: `knowhow model pull
all-MiniLM-L6-v2` puts it in $KNOWHOW_HOME/models/sentence-transformers--all-MiniLM-L6-v2 (the default --model,
else target/ci-home/models/sentence-transformers--all-MiniLM-L6-v2). Every server runs offline (HF_HUB_OFFLINE=1,
KNOWHOW_OFFLINE=1) from that folder.

The real run (release build):
    cargo build --release -p knowhow
    bench/.venv/bin/python bench/serve_load.py --knowhow target/release/knowhow \\
        --model target/ci-home/models/sentence-transformers--all-MiniLM-L6-v2 --docs 1000 --json serve_load.json
A tiny run that only proves the plumbing (numbers meaningless with a debug build):
    bench/.venv/bin/python bench/serve_load.py --knowhow target/debug/knowhow --docs 50 --requests 40 \\
        --seconds 5 --check 10 --ceiling-seconds 2
"""
import argparse
import contextlib
import http.client
import json
import math
import os
import queue
import random
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
COLLECTION = "bench"
OPERATIONS = ("search", "embeddings", "ask")
TICKS = os.sysconf("SC_CLK_TCK")
MODEL_FOLDER = "sentence-transformers--all-MiniLM-L6-v2"


# ---------------------------------------------------------------- servers

class Server:
    """A server under test: a child process on loopback, and what each operation sends it."""

    def __init__(self, name, process, url, embed_model, operations, logs):
        self.name, self.process, self.embed_model, self.operations, self.logs = name, process, embed_model, operations, logs
        parsed = urllib.parse.urlparse(url)
        self.host, self.port, self.url = parsed.hostname, parsed.port, url

    def path(self, operation):
        return "/v1/embeddings" if operation == "embeddings" else f"/v1/collections/{COLLECTION}/{operation}"

    def body(self, operation, text):
        if operation == "search":
            return {"query": text, "mode": "hybrid", "k": 10}
        if operation == "ask":
            return {"question": text, "mode": "hybrid"}
        return {"model": self.embed_model, "input": text, "encoding_format": "float"}

    def cpu_seconds(self):
        with open(f"/proc/{self.process.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime (the process's threads)

    def stop(self):
        if self.process.poll() is None:
            # knowhow drains on Ctrl-C; the Python servers stop on SIGINT too.
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        for log in self.logs:
            log.close()


def first_line(process, timeout):
    """The first stdout line of `process`, within `timeout` seconds; the rest of stdout is drained."""
    lines = queue.Queue()

    def pump():
        for line in process.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    try:
        line = lines.get(timeout=timeout)
    except queue.Empty:
        line = None
    if not line:
        raise RuntimeError(f"{process.args[0]} printed nothing in {timeout} s (exit status {process.poll()})")
    return line


def request(host, port, method, path, body=None, timeout=60):
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        payload = json.dumps(body).encode() if body is not None else None
        conn.request(method, path, payload, {"content-type": "application/json"} if payload else {})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def wait_ready(server, path, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"{server.name} exited with status {server.process.returncode}; see {server.logs[-1].name}")
        try:
            if request(server.host, server.port, "GET", path, timeout=5)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{server.name} not ready after {timeout} s")


def served_model(server):
    """The id the server lists first on GET /v1/models: what an OpenAI client would send as `model`."""
    status, body = request(server.host, server.port, "GET", "/v1/models")
    if status != 200:
        raise RuntimeError(f"{server.name}: GET /v1/models answered {status}: {body[:200]!r}")
    return json.loads(body)["data"][0]["id"]


@contextlib.contextmanager
def stopped_on_failure(server):
    """Stops `server` (and closes its log) when its start fails, so that no child outlives the run."""
    try:
        yield
    except BaseException:
        server.stop()
        raise


def listening(process, logs, timeout):
    """The URL of the {"listening": URL} line a server prints first; stops the process when there is none."""
    try:
        return json.loads(first_line(process, timeout))["listening"]
    except (RuntimeError, ValueError, KeyError) as e:
        if process.poll() is None:
            process.kill()
            process.wait()
        for log in logs:
            log.close()
        raise RuntimeError(f"{process.args[0]}: no listening line ({e}); see {logs[-1].name}") from e


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn(name, cmd, env, work):
    """Starts a server with its stderr in WORK/NAME.log and its stdout piped (read by the caller)."""
    err = open(os.path.join(work, f"{name}.log"), "w")
    process = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=err, text=True, start_new_session=True)
    return process, [err]


def start_knowhow(args, home, work):
    env = dict(os.environ, KNOWHOW_OFFLINE="1")
    process, logs = spawn("knowhow", [args.knowhow, "--home", home, "--json", "serve", "--listen", "127.0.0.1:0",
                                      "--embed-model", args.model], env, work)
    url = listening(process, logs, 60)
    server = Server("knowhow", process, url, "default", OPERATIONS, logs)
    with stopped_on_failure(server):
        wait_ready(server, "/ready", args.start_timeout)
        server.embed_model = served_model(server)
    return server


def start_fastapi(args, chunks_file, work):
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    process, logs = spawn("fastapi", [args.python, os.path.join(HERE, "serve_peer.py"), "--model", args.model,
                                      "--chunks", chunks_file, "-c", COLLECTION, "--port", "0"], env, work)
    url = listening(process, logs, args.start_timeout)
    server = Server("fastapi", process, url, "all-MiniLM-L6-v2", OPERATIONS, logs)
    with stopped_on_failure(server):
        wait_ready(server, "/ready", args.start_timeout)
        server.embed_model = served_model(server)
    return server


def start_infinity(args, work):
    port = free_port()
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", INFINITY_ANONYMOUS_USAGE_STATS="0",
               DO_NOT_TRACK="1")
    # --no-bettertransformer: BetterTransformer needs optimum, which infinity-emb's extras do not bring.
    process, logs = spawn("infinity", [args.infinity, "v2", "--model-id", args.model,
                                       "--served-model-name", "all-MiniLM-L6-v2", "--engine", "torch",
                                       "--device", "cpu", "--no-bettertransformer", "--host", "127.0.0.1",
                                       "--port", str(port), "--url-prefix", "/v1", "--log-level", "warning"],
                          env, work)
    threading.Thread(target=lambda: [None for _ in process.stdout], daemon=True).start()
    server = Server("infinity", process, f"http://127.0.0.1:{port}", "all-MiniLM-L6-v2", ("embeddings",), logs)
    with stopped_on_failure(server):
        wait_ready(server, "/health", args.start_timeout)  # infinity's /health is outside --url-prefix
        server.embed_model = served_model(server)
    return server


# ---------------------------------------------------------------- data

def write_corpus(data, folder, count):
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(data, "corpus.jsonl")) as f:
        for _, line in zip(range(count), f):
            row = json.loads(line)
            path = os.path.join(folder, f"{row['_id']}.txt")
            text = f"{row['title']}\n\n{row['text']}\n"
            if not os.path.exists(path) or open(path).read() != text:
                with open(path, "w") as out:
                    out.write(text)


def load_queries(data, seed):
    with open(os.path.join(data, "queries.jsonl")) as f:
        queries = [json.loads(line)["text"].strip() for line in f]
    queries = [q for q in queries if q]
    random.Random(seed).shuffle(queries)
    return queries


def ingest(args, home, corpus):
    cmd = [args.knowhow, "--home", home, "-c", COLLECTION, "--json", "ingest", corpus, "--embed-model", args.model]
    started = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, KNOWHOW_OFFLINE="1"))
    if proc.returncode != 0:
        sys.exit(f"knowhow ingest failed ({proc.returncode}): {proc.stderr[-2000:]}")
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    return summary, time.perf_counter() - started


def export_chunks(knowhow, path):
    """knowhow's chunks, from its documents API (the JSON of `knowhow docs show ID --chunks`), as JSONL."""
    status, body = request(knowhow.host, knowhow.port, "GET", f"/v1/collections/{COLLECTION}/documents")
    if status != 200:
        sys.exit(f"listing knowhow's documents failed: {status} {body[:300]!r}")
    count = 0
    with open(path, "w") as out:
        for doc in json.loads(body)["data"]:
            status, shown = request(knowhow.host, knowhow.port, "GET",
                                    f"/v1/collections/{COLLECTION}/documents/{urllib.parse.quote(doc['id'])}")
            if status != 200:
                sys.exit(f"reading document {doc['id']} failed: {status}")
            shown = json.loads(shown)
            for c in shown["chunks"]:
                out.write(json.dumps({"document_id": shown["id"], "chunk": c["ordinal"], "title": shown["title"],
                                      "source": shown["source"], "char_start": c["char_start"],
                                      "char_end": c["char_end"], "text": c["text"]}) + "\n")
                count += 1
    return count


# ---------------------------------------------------------------- load

def percentile(values, fraction):
    ordered = sorted(values)
    return ordered[max(1, math.ceil(fraction * len(ordered))) - 1] if ordered else float("nan")


def run_cell(host, port, method, path, bodies, concurrency, max_requests, max_seconds, on_start=None, timeout=60):
    """`concurrency` keep-alive clients send `bodies` (cycled) back to back until `max_requests` were sent or
    `max_seconds` passed; `on_start` is called once the clients are connected and warm, as they start. Returns
    latencies (s) of the 200 answers, the error count, a few error samples, the wall time and the generator's
    CPU seconds."""
    lock = threading.Lock()
    state = {"next": 0, "deadline": None}
    latencies, errors, samples = [], [0], []
    ready = threading.Barrier(concurrency + 1)
    headers = {"content-type": "application/json"} if method == "POST" else {}

    def connect():
        return http.client.HTTPConnection(host, port, timeout=timeout)

    def send(conn, body):
        conn.request(method, path, body, headers)
        response = conn.getresponse()
        data = response.read()
        return response.status, data

    def client():
        mine, mine_errors = [], 0
        conn = connect()
        try:  # warm-up: opens the keep-alive connection; not counted
            send(conn, bodies[0])
        except (OSError, http.client.HTTPException):
            conn.close()
            conn = connect()
        ready.wait()
        while True:
            with lock:
                i = state["next"]
                if i >= max_requests or time.perf_counter() >= state["deadline"]:
                    break
                state["next"] = i + 1
            body = bodies[i % len(bodies)]
            started = time.perf_counter()
            try:
                status, data = send(conn, body)
            except (OSError, http.client.HTTPException) as e:
                status, data = None, repr(e).encode()
                conn.close()
                conn = connect()
            elapsed = time.perf_counter() - started
            if status == 200:
                mine.append(elapsed)
            else:
                mine_errors += 1
                if len(samples) < 3:
                    samples.append(f"{status}: {data[:200]!r}")
        conn.close()
        with lock:
            latencies.extend(mine)
            errors[0] += mine_errors

    threads = [threading.Thread(target=client, daemon=True) for _ in range(concurrency)]
    for t in threads:
        t.start()
    time.sleep(0.05)
    while ready.n_waiting < concurrency:  # every client connected and warm
        time.sleep(0.01)
    if on_start:
        on_start()
    cpu_before = os.times()
    started = time.perf_counter()
    state["deadline"] = started + max_seconds
    ready.wait()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    cpu_after = os.times()
    generator_cpu = (cpu_after.user - cpu_before.user) + (cpu_after.system - cpu_before.system)
    return {"latencies": latencies, "errors": errors[0], "error_samples": samples, "wall": wall,
            "generator_cpu_s": generator_cpu}


def summarize(raw, server_cpu_s):
    lat = [x * 1000 for x in raw["latencies"]]
    done = len(lat) + raw["errors"]
    return {"requests": done, "errors": raw["errors"], "error_samples": raw["error_samples"],
            "seconds": round(raw["wall"], 3), "rps": len(lat) / raw["wall"] if raw["wall"] > 0 else 0.0,
            "p50_ms": percentile(lat, 0.50), "p95_ms": percentile(lat, 0.95), "p99_ms": percentile(lat, 0.99),
            "mean_ms": sum(lat) / len(lat) if lat else float("nan"),
            "generator_cpu_pct": 100 * raw["generator_cpu_s"] / raw["wall"] if raw["wall"] > 0 else 0.0,
            "server_cpu_ms_per_request": 1000 * server_cpu_s / done if done else float("nan")}


def measure(server, operation, queries, concurrency, args):
    bodies = [json.dumps(server.body(operation, q)).encode() for q in queries]
    before = []
    raw = run_cell(server.host, server.port, "POST", server.path(operation), bodies, concurrency, args.requests,
                   args.seconds, on_start=lambda: before.append(server.cpu_seconds()))
    return summarize(raw, server.cpu_seconds() - before[0])


def warm_up(server, operation, queries, count):
    """Sequential requests before any cell (first-touch of caches, lazy initialisation)."""
    for q in queries[:count]:
        status, body = request(server.host, server.port, "POST", server.path(operation), server.body(operation, q))
        if status != 200:
            sys.exit(f"{server.name} {operation} answered {status}: {body[:300]!r}")


def generator_ceiling(servers, seconds):
    """GET /health (no model work) at 8 and 32 clients: what the generator and each HTTP stack can carry."""
    result = {}
    for server in servers:
        path = "/health"
        for concurrency in (8, 32):
            raw = run_cell(server.host, server.port, "GET", path, [None], concurrency, 10**9, seconds)
            cell = summarize(raw, 0.0)
            result[f"{server.name}@{concurrency}"] = {k: cell[k] for k in ("rps", "p50_ms", "p95_ms", "errors",
                                                                           "generator_cpu_pct")}
    return result


# ---------------------------------------------------------------- agreement

def agreement(servers, queries):
    """Top hit, top-10 overlap and extractive answer of knowhow vs the FastAPI peer; embedding cosines."""
    by = {s.name: s for s in servers}
    out = {}
    if "knowhow" in by and "fastapi" in by:
        kh, py = by["knowhow"], by["fastapi"]
        top1 = overlap = same_answer = same_first_source = 0
        for q in queries:
            hits = []
            for server in (kh, py):
                status, body = request(server.host, server.port, "POST", server.path("search"),
                                       server.body("search", q))
                assert status == 200, (server.name, status, body[:200])
                hits.append([(h["document_id"], h["chunk"]) for h in json.loads(body)["data"]])
            top1 += bool(hits[0] and hits[1] and hits[0][0] == hits[1][0])
            overlap += len(set(hits[0]) & set(hits[1])) / max(1, len(hits[0]))
            answers = []
            for server in (kh, py):
                status, body = request(server.host, server.port, "POST", server.path("ask"), server.body("ask", q))
                assert status == 200, (server.name, status, body[:200])
                answers.append(json.loads(body))
            same_answer += answers[0]["text"] == answers[1]["text"]
            firsts = [a["sources"][0]["document_id"] if a["sources"] else None for a in answers]
            same_first_source += firsts[0] == firsts[1]
        n = len(queries)
        out["search_top1_agree"] = top1 / n
        out["search_top10_overlap"] = overlap / n
        out["ask_same_text"] = same_answer / n
        out["ask_same_first_source"] = same_first_source / n
    vectors = {}
    for server in servers:
        if "embeddings" in server.operations:
            vecs = []
            for q in queries:
                status, body = request(server.host, server.port, "POST", server.path("embeddings"),
                                       server.body("embeddings", q))
                assert status == 200, (server.name, status, body[:200])
                vecs.append(json.loads(body)["data"][0]["embedding"])
            vectors[server.name] = vecs
    if "knowhow" in vectors:
        for name, vecs in vectors.items():
            if name == "knowhow":
                continue
            cosines = []
            for a, b in zip(vectors["knowhow"], vecs):
                dot = sum(x * y for x, y in zip(a, b))
                cosines.append(dot / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b)))
            out[f"embedding_min_cosine_knowhow_{name}"] = min(cosines)
    out["queries"] = len(queries)
    return out


# ---------------------------------------------------------------- report

PEER_PACKAGES = ("fastapi", "starlette", "uvicorn", "uvloop", "httptools", "pydantic", "sentence-transformers",
                 "transformers", "tokenizers", "torch", "numpy", "bm25s", "PyStemmer")
INFINITY_PACKAGES = ("infinity-emb", "fastapi", "starlette", "uvicorn", "sentence-transformers", "transformers",
                     "tokenizers", "torch", "numpy")


def package_versions(python, packages):
    """Versions of `packages` as `python` sees them ({} when that Python cannot be run)."""
    script = ("import importlib.metadata as m, json, sys\n"
              "out = {'python': sys.version.split()[0]}\n"
              f"for name in {list(packages)!r}:\n"
              "    try: out[name] = m.version(name)\n"
              "    except m.PackageNotFoundError: out[name] = None\n"
              "print(json.dumps(out))")
    try:
        proc = subprocess.run([python, "-c", script], capture_output=True, text=True, timeout=120)
        return json.loads(proc.stdout) if proc.returncode == 0 else {"error": proc.stderr[-300:]}
    except (OSError, subprocess.TimeoutExpired, ValueError) as e:
        return {"error": repr(e)}


def machine_info(args, wanted):
    cpu = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                cpu.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    cpu_model = cpu.get("model name")
    flags = set(cpu.get("flags", "").split())
    memory_gib = None
    try:
        with open("/proc/meminfo") as f:
            kib = next(int(line.split()[1]) for line in f if line.startswith("MemTotal:"))
            memory_gib = round(kib / 2**20, 1)
    except (OSError, StopIteration):
        pass
    try:
        version = subprocess.run([args.knowhow, "--version"], capture_output=True, text=True,
                                 timeout=30).stdout.strip()
    except OSError:
        version = None
    info = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": " ".join(shlex.quote(a) for a in [sys.executable] + sys.argv),
        "cpu_model": cpu_model, "cpu_family_model_stepping": "/".join(cpu.get(k, "?") for k in
                                                                    ("cpu family", "model", "stepping")),
        "cpu_simd": [f for f in ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile") if f in flags],
        "virtualized": "hypervisor" in flags, "cpus": os.cpu_count(), "cpus_usable": len(os.sched_getaffinity(0)),
        "memory_gib": memory_gib, "kernel": os.uname().release, "knowhow": version,
        "knowhow_binary": os.path.abspath(args.knowhow), "generator_python": sys.version.split()[0],
        "load_average_at_start": os.getloadavg(),
    }
    if "fastapi" in wanted:
        info["fastapi_peer_packages"] = package_versions(args.python, PEER_PACKAGES)
    if "infinity" in wanted:
        info["infinity_packages"] = package_versions(os.path.join(os.path.dirname(args.infinity), "python"),
                                                     INFINITY_PACKAGES)
    return info


def describe(info):
    lines = [f"date {info['date']}; {info['cpu_model']} (family/model/stepping "
             f"{info['cpu_family_model_stepping']}; {' '.join(info['cpu_simd'])}"
             f"{'; virtual machine' if info['virtualized'] else ''}), {info['cpus']} CPUs ({info['cpus_usable']} usable), "
             f"{info['memory_gib']} GiB; Linux {info['kernel']}; load average at start "
             + " ".join(f"{x:.2f}" for x in info["load_average_at_start"]),
             f"knowhow: {info['knowhow']} ({info['knowhow_binary']})"]
    for key, label in (("fastapi_peer_packages", "fastapi peer"), ("infinity_packages", "infinity")):
        if key in info:
            lines.append(f"{label}: " + ", ".join(f"{k} {v}" for k, v in info[key].items()))
    lines.append(f"command: {info['command']}")
    return "\n".join(lines)


def finite(value):
    """`value` with NaN and infinities as null, so that the JSON file is standard JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


def table(cells, ratios):
    lines = [f"{'operation':11}{'clients':>8} {'server':9}{'requests':>9}{'errors':>7}{'req/s':>9}{'p50 ms':>9}"
             f"{'p95 ms':>9}{'p99 ms':>9}{'srv cpu ms/req':>15}{'gen cpu %':>10}"]
    for c in cells:
        lines.append(f"{c['operation']:11}{c['concurrency']:>8} {c['server']:9}{c['requests']:>9}{c['errors']:>7}"
                     f"{c['rps']:>9.1f}{c['p50_ms']:>9.2f}{c['p95_ms']:>9.2f}{c['p99_ms']:>9.2f}"
                     f"{c['server_cpu_ms_per_request']:>15.2f}{c['generator_cpu_pct']:>10.1f}")
    lines.append("")
    lines.append(f"{'operation':11}{'clients':>8} {'peer':9}{'req/s knowhow/peer':>20}{'p95 knowhow/peer':>18}")
    for r in ratios:
        lines.append(f"{r['operation']:11}{r['concurrency']:>8} {r['peer']:9}{r['rps_ratio']:>19.2f}x"
                     f"{r['p95_ratio']:>17.2f}x")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--knowhow", default=os.path.join(ROOT, "target", "release", "knowhow"))
    model = next((m for m in (os.path.join(os.environ.get("KNOWHOW_HOME", "/nonexistent"), "models", MODEL_FOLDER),
                              os.path.join(ROOT, "target", "ci-home", "models", MODEL_FOLDER)) if os.path.isdir(m)),
                 None)
    parser.add_argument("--model", default=model, required=model is None,
                        help=f"all-MiniLM-L6-v2 folder (Hugging Face layout) [default: {model}]")
    parser.add_argument("--data", default=os.path.join(ROOT, "..", "shared", "data", "scifact"))
    parser.add_argument("--docs", type=int, default=1000, help="SciFact documents in the corpus")
    parser.add_argument("--work", help="folder for the corpus, the knowhow home and logs (kept; reused: ingest "
                                       "is incremental); default a temporary folder, removed at the end")
    parser.add_argument("--concurrency", default="1,8,32", help="comma-separated client counts")
    parser.add_argument("--operations", default=",".join(OPERATIONS))
    parser.add_argument("--servers", default="knowhow,fastapi,infinity")
    parser.add_argument("--requests", type=int, default=2000, help="at most this many requests per cell")
    parser.add_argument("--seconds", type=float, default=12.0, help="at most this long per cell")
    parser.add_argument("--warmup", type=int, default=10, help="sequential requests per server and operation first")
    parser.add_argument("--check", type=int, default=50, help="queries of the agreement check")
    parser.add_argument("--ceiling-seconds", type=float, default=3.0, help="length of each generator-ceiling cell")
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--python", default=sys.executable, help="Python of bench/.venv, for serve_peer.py")
    parser.add_argument("--infinity", default=os.path.join(HERE, ".venv", "infinity", "bin", "infinity_emb"))
    parser.add_argument("--start-timeout", type=float, default=900.0, help="seconds a server may take to be ready")
    parser.add_argument("--json", dest="json_out", help="write every figure to this file")
    args = parser.parse_args()
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    operations = [o for o in args.operations.split(",") if o]
    wanted = [s for s in args.servers.split(",") if s]
    if "knowhow" not in wanted:
        parser.error("--servers must include knowhow (the peer indexes its chunks)")
    skipped = {}
    if "infinity" in wanted and not os.path.exists(args.infinity):
        skipped["infinity"] = f"infinity_emb not found at {args.infinity} (run bench/setup_infinity.sh)"
        print(f"leaving infinity out: {skipped['infinity']}", file=sys.stderr)
        wanted.remove("infinity")
    if "infinity" in wanted and "embeddings" not in operations:
        wanted.remove("infinity")
    info = machine_info(args, wanted)
    print(describe(info), file=sys.stderr)

    work = args.work or tempfile.mkdtemp(prefix="knowhow-serve-load-")
    os.makedirs(work, exist_ok=True)
    home, corpus = os.path.join(work, f"home-{args.docs}"), os.path.join(work, f"corpus-{args.docs}")
    servers, ready_seconds, t0 = [], {}, time.perf_counter()
    try:
        write_corpus(args.data, corpus, args.docs)
        queries = load_queries(args.data, args.seed)
        summary, ingest_seconds = ingest(args, home, corpus)
        print(f"corpus: {args.docs} SciFact documents, {summary.get('chunks_written', 0)} chunks written now; "
              f"knowhow ingest {ingest_seconds:.1f} s", file=sys.stderr)
        started = time.perf_counter()
        servers.append(start_knowhow(args, home, work))
        ready_seconds["knowhow"] = time.perf_counter() - started
        print(f"knowhow serve ready in {ready_seconds['knowhow']:.1f} s at {servers[0].url}", file=sys.stderr)
        chunks_file = os.path.join(work, "chunks.jsonl")
        chunk_count = export_chunks(servers[0], chunks_file)
        if "fastapi" in wanted:
            started = time.perf_counter()
            servers.append(start_fastapi(args, chunks_file, work))
            ready_seconds["fastapi"] = time.perf_counter() - started
            print(f"fastapi peer ready in {ready_seconds['fastapi']:.1f} s ({chunk_count} chunks embedded)",
                  file=sys.stderr)
        if "infinity" in wanted:
            started = time.perf_counter()
            try:
                servers.append(start_infinity(args, work))
                ready_seconds["infinity"] = time.perf_counter() - started
                print(f"infinity ready in {ready_seconds['infinity']:.1f} s", file=sys.stderr)
            except RuntimeError as e:
                log = os.path.join(work, "infinity.log")
                tail = open(log).read()[-1500:] if os.path.exists(log) else ""
                skipped["infinity"] = f"did not start: {e}"
                print(f"leaving infinity out, it did not start: {e}\n{tail}", file=sys.stderr)

        agree = agreement(servers, queries[:args.check]) if args.check else {}
        print("agreement: " + json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in agree.items()}),
              file=sys.stderr)
        ceiling = generator_ceiling(servers, args.ceiling_seconds)
        ceiling_line = "generator ceiling, GET /health: " + ", ".join(f"{k} {v['rps']:.0f} req/s"
                                                                     for k, v in ceiling.items())
        print(ceiling_line, file=sys.stderr)

        cells = []
        for operation in operations:
            for server in servers:
                if operation in server.operations:
                    warm_up(server, operation, queries, args.warmup)
            for concurrency in concurrencies:
                for server in servers:
                    if operation not in server.operations:
                        continue
                    cell = measure(server, operation, queries, concurrency, args)
                    cell.update(server=server.name, operation=operation, concurrency=concurrency)
                    cells.append(cell)
                    print(f"  {operation:10} c={concurrency:<3} {server.name:9} {cell['rps']:8.1f} req/s  "
                          f"p95 {cell['p95_ms']:8.2f} ms  errors {cell['errors']}", file=sys.stderr)
        ratios = []
        for c in cells:
            if c["server"] == "knowhow":
                continue
            kh = next(k for k in cells if k["server"] == "knowhow" and k["operation"] == c["operation"]
                      and k["concurrency"] == c["concurrency"])
            ratios.append({"operation": c["operation"], "concurrency": c["concurrency"], "peer": c["server"],
                           "rps_ratio": kh["rps"] / c["rps"] if c["rps"] else float("inf"),
                           "p95_ratio": kh["p95_ms"] / c["p95_ms"] if c["p95_ms"] else float("nan")})
        print(describe(info))
        for name, reason in skipped.items():
            print(f"skipped {name}: {reason}")
        print(f"corpus: {args.docs} SciFact documents, {chunk_count} chunks; per cell at most {args.requests} "
              f"requests or {args.seconds:g} s; agreement over {agree.get('queries', 0)} queries: "
              + ", ".join(f"{k} {v:.3f}" for k, v in agree.items() if isinstance(v, float)))
        print(ceiling_line)
        print(table(cells, ratios))
        errors = sum(c["errors"] for c in cells)
        busiest = max((c["rps"] for c in cells), default=0.0)
        lowest_ceiling = min((v["rps"] for v in ceiling.values()), default=0.0)
        print(f"errors: {errors} in all; highest measured rate {busiest:.0f} req/s vs the lowest generator ceiling "
              f"{lowest_ceiling:.0f} req/s ({lowest_ceiling / busiest if busiest else float('inf'):.1f}x headroom); "
              f"generator CPU at most {max((c['generator_cpu_pct'] for c in cells), default=0):.0f}% of one core")
        if args.json_out:
            with open(args.json_out, "w") as f:
                json.dump(finite({"machine": info, "settings": dict(vars(args)), "skipped": skipped,
                                  "docs": args.docs, "chunks": chunk_count, "ingest_seconds": ingest_seconds,
                                  "ready_seconds": ready_seconds, "agreement": agree, "generator_ceiling": ceiling,
                                  "cells": cells, "ratios": ratios, "total_seconds": time.perf_counter() - t0}),
                          f, indent=1, allow_nan=False)
        return 1 if errors else 0
    finally:
        for server in reversed(servers):
            server.stop()
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
