#!/usr/bin/env bash
# Creates bench/.venv with the Python tools the benchmarks compare against.
set -euo pipefail
cd "$(dirname "$0")"
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/pip install --quiet --no-cache-dir --disable-pip-version-check -r requirements.txt
