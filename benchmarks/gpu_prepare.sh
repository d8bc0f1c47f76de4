#!/usr/bin/env bash
# Fill .gpu/ (ignored by git) with what benchmarks/gpu.sh needs on a device machine, whose image
# has torch, numpy, pandas and typer but not optuna: wheels of optuna and its needs for that
# machine's Python 3.12, and FER2013 packed to fit the device tool's 64 MiB.
#
#   benchmarks/gpu_prepare.sh [FER2013 file]     default: ../shared/fer2013/fer2013.csv.gz
set -euo pipefail
python=${PYTHON:-.venv/bin/python}
mkdir -p .gpu
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d .gpu optuna==5.0.0 sqlalchemy==2.1.9 alembic==1.20.1 mako==1.4.3 colorlog==6.12.0
data=${1:-../shared/fer2013/fer2013.csv.gz}
if [ -f "$data" ] && [ ! -f .gpu/fer2013.xz ]; then
  "$python" -m benchmarks.fer_pack pack "$data" .gpu/fer2013.xz   # about 2 minutes
fi
du -sh .gpu
