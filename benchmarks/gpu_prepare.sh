#!/usr/bin/env bash
# Fill .gpu/ (ignored by git) with what benchmarks/gpu.sh needs on a CUDA machine that has torch,
# numpy, pandas and typer but not optuna and cannot reach a package index: wheels of optuna and its
# needs for Python 3.12, and FER2013 packed as xz'd uint8 (about 55 MB instead of 300).
#
#   benchmarks/gpu_prepare.sh FER2013_FILE        (PY_VERSION=3.11 for another Python)
#
# What `sweep run`, `studies`, `export` and `bench` import when they start: optuna (which needs
# sqlalchemy, alembic and mako, colorlog, tqdm, PyYAML and packaging), numpy, pandas, torch and
# typer. plotly is needed only by `sweep report`, optuna-dashboard only by `sweep dashboard`,
# psycopg and grpcio only for PostgreSQL and `sweep proxy`: none is carried. sqlalchemy 2.1 no
# longer needs greenlet. typer is not carried: the machine's own works for every command
# gpu.sh engines runs, which passes no --device to the sweep command on CUDA (typer 0.27 reads a
# metavar spelled as the option's name in capitals, DEVICE, as that option's name: `--DEVICE`).
# typer 0.29 would bring pydantic and its compiled core with it.
set -euo pipefail
python=${PYTHON:-.venv/bin/python}
mkdir -p .gpu
python3 -m pip download -q --no-deps --only-binary=:all: --python-version "${PY_VERSION:-3.12}" --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d .gpu optuna==5.0.0 sqlalchemy==2.1.9 alembic==1.20.1 mako==1.4.3 colorlog==6.12.0 \
  tqdm==4.70.1 pyyaml==6.0.4 packaging==26.4
data=${1:?usage: benchmarks/gpu_prepare.sh FER2013_FILE}
if [ -f "$data" ] && [ ! -f .gpu/fer2013.xz ]; then
  "$python" -m benchmarks.fer_pack pack "$data" .gpu/fer2013.xz   # about 2 minutes
fi
du -sh .gpu
