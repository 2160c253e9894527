#!/usr/bin/env bash
# Every GPU check and timing in one command, for a lent GPU machine whose python3
# already has torch (CUDA) but not this project's other dependencies.
#
# Here (once, from the repo root; .whl/ is git-ignored), fetch wheels for the
# machine's Python (3.12 on the lent H100/H200 image):
#   python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
#     --implementation cp --platform manylinux2014_x86_64 -d .whl \
#     ase==3.29.0 vesin==0.6.2 pydantic==2.14.4 pydantic_core==2.50.5 \
#     annotated-types==0.8.0 typing-inspection==0.4.5 typing_extensions==4.16.0 \
#     torch-pme==0.5.0
# There (carry .whl, and the trained models named below if they exist here):
#   MD_MODELS=ethanol=benchmarks/results/rmd17_ethanol/so3krates/best.pt,aspirin=benchmarks/results/s5_rmd17_aspirin/so3krates/best.pt \
#     bash benchmarks/gpu_session.sh "$OUT"
# Without MD_MODELS the MD timing uses an untrained model, under which the molecules
# fly apart (md_speed.py warns; its rates then time neighbour-list rebuilds).
# MD_MOLECULES picks the molecules (default ethanol,aspirin), GPU_DTYPES the dtypes
# of the latency table (default float32).
# Writes pytest_gpu.txt, gpu_speed.json, md_speed_gpu.json, train_speed_gpu.json
# into the given folder.
set -u
out=${1:-gpu_out}
mkdir -p "$out"
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
    --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD/src
else
  export PYTHONPATH=$PWD/src
fi
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python3 -c "import torch; print('torch', torch.__version__)"
# each step has its own time limit and writes its file as it goes, so that the
# whole call ends within one device command (10 minutes) even if a step hangs
timeout 150 python3 -m pytest -q tests/gpu -p no:cacheprovider -W ignore \
  >"$out/pytest_gpu.txt" 2>&1
tail -5 "$out/pytest_gpu.txt"
timeout 170 python3 benchmarks/gpu_speed.py --dtypes "${GPU_DTYPES:-float32}" \
  --systems ethanol,benzene,water96,water384,box1029,box3000,box10k \
  --out "$out/gpu_speed.json" 2>&1 | grep "^{" | cut -c1-300
model_args=()
if [ -n "${MD_MODELS:-}" ]; then model_args=(--model "$MD_MODELS"); fi
timeout 100 python3 benchmarks/md_speed.py --device cuda \
  --molecules "${MD_MOLECULES:-ethanol,aspirin}" "${model_args[@]}" \
  --steps 500 --warmup 50 --replicas 64,512 --json "$out/md_speed_gpu.json" 2>&1 |
  grep -v -E "Warning|warnings.warn" | tail -8
timeout 110 python3 benchmarks/train_speed.py --device cuda --molecule aspirin \
  --batch-size 5 --rounds 3 --steps 30 --json "$out/train_speed_gpu.json" 2>&1 |
  grep -v -E "Warning|warnings.warn" | tail -6
