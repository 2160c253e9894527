#!/usr/bin/env bash
# Global-attention demo: train a local So3krates and one with Euclidean fast attention
# (EFA) on the C9H4 end-group twist scan (GFN2-xTB, data/global), holding out twist
# angles in (60°, 75°), and plot both against the reference energy vs twist angle.
# Budget: DEMO_GLOBAL_MINUTES of training per model (default 6: the EFA model learns the
# twist after ~2,000 steps, about 3 minutes on a loaded 2-core machine) plus ~1 minute.
# Outputs in $OUT (default demo_out/global): local/, efa/ (run directories),
# cumulene_c9h4_twist_energy.png and cumulene_c9h4_twist_errors.json.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-demo_out/global}
MINUTES=${DEMO_GLOBAL_MINUTES:-6}
mkdir -p "$OUT"

for kind in local efa; do
  config=examples/global_cumulene.yaml
  [ "$kind" = local ] && config=examples/global_cumulene_local.yaml
  echo "== train the $kind So3krates on C9H4 twist angles [0°, 60°] ∪ [75°, 90°] for ${MINUTES} min"
  if [ -f "$OUT/$kind/last.pt" ] && [ ! -f "$OUT/$kind/final_metrics.json" ]; then
    equiforce train --resume "$OUT/$kind"          # an interrupted demo continues
  elif [ ! -f "$OUT/$kind/final_metrics.json" ]; then
    rm -rf "${OUT:?}/$kind"
    equiforce train "$config" --run-dir "$OUT/$kind" --set training.max_minutes="$MINUTES"
  fi
done

echo "== energy vs twist angle: both models against GFN2-xTB"
python examples/global/plot_scan.py --data data/global/cumulene_c9h4_twist.extxyz \
  --model local="$OUT/local/best.pt" --model efa="$OUT/efa/best.pt" --out "$OUT"
