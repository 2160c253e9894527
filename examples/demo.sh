#!/usr/bin/env bash
# equiforce demo: train So3krates on shipped rMD17 ethanol, evaluate on the held-out test
# file, run a few ps of NVE MD from a test frame and plot its vibrational spectrum.
# Everything uses the public `equiforce` command; outputs go to $OUT (default demo_out/).
# Budget: DEMO_MINUTES of training (default 4) plus ~1-2 minutes for the rest on 2 CPU cores.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-demo_out}
MINUTES=${DEMO_MINUTES:-4}
DATA=data/rmd17
mkdir -p "$OUT"

echo "== 1/4 train So3krates (default preset) on 950 ethanol frames for ${MINUTES} min"
if [ -f "$OUT/train/last.pt" ] && [ ! -f "$OUT/train/final_metrics.json" ]; then
  equiforce train --resume "$OUT/train"          # an interrupted demo continues
elif [ ! -f "$OUT/train/final_metrics.json" ]; then
  rm -rf "$OUT/train"
  # cosine on the clock: the learning rate reaches its floor when the budget ends
  equiforce train examples/rmd17_ethanol.yaml --run-dir "$OUT/train" \
    --set training.max_minutes="$MINUTES" --set training.schedule=cosine \
    --set training.schedule_clock=time --set training.valid_interval=200 \
    --set training.warmup_steps=50 --set training.lr=2.0e-3
fi

echo "== 2/4 evaluate on the 1,000-frame rMD17 test file"
equiforce eval --model "$OUT/train/best.pt" --data "$DATA/rmd17_ethanol_test_01.npz" \
  --energy-unit kcal/mol --out "$OUT/eval"

echo "== 3/4 NVE molecular dynamics, 300 K initial velocities, 0.5 fs, 4 ps"
equiforce md --model "$OUT/train/best.pt" --structure "$DATA/rmd17_ethanol_test_01.npz" \
  --overwrite --frame 0 --ensemble nve --temperature 300 --timestep 0.5 --steps 8000 \
  --output-interval 4 --format hdf5 --out "$OUT/md"

echo "== 4/4 vibrational spectrum and h(r) from the trajectory"
equiforce analyze spectrum "$OUT/md/trajectory.h5" --out "$OUT/analysis" --max-lag-fs 1000
equiforce analyze rdf "$OUT/md/trajectory.h5" --out "$OUT/analysis"

echo
echo "Done. Results in $OUT/:"
echo "  train/metrics.csv, train/best.pt      training curve and model"
echo "  eval/metrics.json, eval/parity.png    test-set errors and parity plot"
echo "  md/thermo.csv, md/trajectory.h5       MD energies and trajectory (HDF5)"
echo "  analysis/*.png, analysis/*.csv        spectrum (cm^-1) and h(r)"
