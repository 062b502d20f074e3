#!/usr/bin/env bash
# The GPU check (bench/gpu_check.py): one GPU, under 8 minutes, one JSON summary on stdout.
# Run from anywhere; uses .venv when there is one. Extra arguments go to gpu_check.py.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1  # everything is local: no network needed
exec "$PY" bench/gpu_check.py "$@"
