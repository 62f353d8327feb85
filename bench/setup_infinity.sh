#!/usr/bin/env bash
# Creates bench/.venv/infinity: infinity-emb (the embedding server bench/serve_load.py compares
# `knowhow serve` against), in a venv of its own because its pins (numpy<2,
# sentence-transformers<4, transformers<=5.0, click<8.2, typer 0.12, uvicorn 0.32) conflict with
# bench/.venv's.
#
# Tested: infinity-emb 0.0.78, torch engine, CPU, offline (HF_HUB_OFFLINE=1) with a local model
# folder, Python 3.11. torch 2.6.0 is the newest torch these transformers/sentence-transformers
# pins were released against. PyPI's torch wheel brings the CUDA libraries (~3 GB); on a CPU-only
# machine they are simply not used.
#
# The venv is recreated from scratch every time, so nothing leaks in from an earlier attempt (a
# .pth file pointing at another venv, packages of another version).
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}
rm -rf .venv/infinity
mkdir -p .venv
"$PYTHON" -m venv .venv/infinity
PIP=(.venv/infinity/bin/pip install --quiet --no-cache-dir --disable-pip-version-check)
"${PIP[@]}" \
  'infinity-emb[torch,server]==0.0.78' \
  torch==2.6.0 \
  transformers==4.48.3 \
  sentence-transformers==3.4.1 \
  tokenizers==0.21.4 \
  huggingface_hub==0.36.2 \
  numpy==1.26.4 \
  fastapi==0.165.0 \
  starlette==1.10.0 \
  pydantic==2.14.4 \
  uvicorn==0.32.1 \
  click==8.1.8 \
  typer==0.12.5 \
  rich==13.9.4 \
  orjson==3.13.0 \
  prometheus-fastapi-instrumentator==8.1.0
.venv/infinity/bin/pip check
.venv/infinity/bin/python -c 'import infinity_emb, torch, transformers, sentence_transformers; print("infinity-emb", infinity_emb.__version__, "torch", torch.__version__, "transformers", transformers.__version__, "sentence-transformers", sentence_transformers.__version__)'
