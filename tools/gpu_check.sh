#!/usr/bin/env bash
# The GPU measurement in one go, for a lent GPU machine (Python 3.12, torch, no network):
# dependencies from wheelhouse/ (tools/build_wheelhouse.sh, carried with the tree), a
# check that torch sees the GPU and detectron2 imports, then seconds per iteration and
# peak memory of source-only, SADA, MIC and MIC in bf16 on the reference setting
# (configs/bench/speed_reference.yaml: R50-FPN, 1600x800, 1 + 1 images), to one JSON.
# About 4 minutes on one H100 (budget 8).
#
#   bash tools/gpu_check.sh                 # on the GPU machine; OUT=<dir> for the results
#   bash tools/gpu_check.sh --tiny          # the same steps at a toy size (CPU, tests)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-output/gpu_check}"
mkdir -p "$OUT"
PY="${PY:-}"
if [ -z "$PY" ]; then
  if [ -x /opt/torch/.venv/bin/python ]; then PY=/opt/torch/.venv/bin/python; else PY=python3; fi
fi
iters=50
warmup=5
size=()
if [ "${1:-}" = "--tiny" ]; then
  iters=2
  warmup=1
  size=(MODEL.RESNETS.DEPTH 18 MODEL.RESNETS.RES2_OUT_CHANNELS 64 MODEL.FPN.OUT_CHANNELS 32
        MODEL.ROI_BOX_HEAD.FC_DIM 64 MODEL.SADA.IMG_HIDDEN_DIM 16 MODEL.SADA.INS_HIDDEN_DIM 32
        INPUT.MIN_SIZE_TRAIN "(64,)" INPUT.MAX_SIZE_TRAIN 128 DATALOADER.NUM_WORKERS 0)
fi

echo "== 1. dependencies ($PY)"
site="$PWD/.gpu_site"
needed="import detectron2, fvcore, iopath, pycocotools, yacs, omegaconf, termcolor, cloudpickle, tabulate"
if ! PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}" "$PY" -c "$needed" 2>/dev/null; then
  [ -d wheelhouse ] || { echo "error: detectron2 is missing and there is no wheelhouse/ (bash tools/build_wheelhouse.sh, then carry it)" >&2; exit 2; }
  "$PY" -m pip install -q --no-index --no-deps --target "$site" wheelhouse/*.whl
  rm -f "$site"/detectron2/_C*.so  # built for another torch; Faster R-CNN never needs it
fi
export PYTHONPATH="$site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
"$PY" - <<'PYEOF' | tee "$OUT/environment.txt"
import numpy, torch, detectron2, mic_det  # noqa: F401
print("python", __import__("sys").version.split()[0], "| torch", torch.__version__, "| numpy", numpy.__version__,
      "| detectron2", detectron2.__version__)
print("device:", torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU: timing the CPU")
PYEOF

echo "== 2. data: the synthetic shift (a few seconds)"
export DETECTRON2_DATASETS="${DETECTRON2_DATASETS:-$OUT/datasets}"
"$PY" -m mic_det.datagen.synthetic_shift --root "$DETECTRON2_DATASETS" > /dev/null

echo "== 3. speed and memory, fp32 and bf16, $iters iterations after $warmup"
"$PY" tools/benchmark.py speed --config configs/bench/speed_reference.yaml --modes source_only,sada,mic,mic_amp \
  --iters "$iters" --warmup "$warmup" --out "$OUT/speed_reference.json" OUTPUT_DIR "$OUT/train" "${size[@]}" \
  | tail -n +1 > "$OUT/speed_reference.log"
"$PY" - "$OUT/speed_reference.json" <<'PYEOF'
import json, sys
r = json.load(open(sys.argv[1]))
print(r["device"])
for name, m in r["modes"].items():
    mem = m.get("peak_cuda_allocated_mb", m["peak_host_rss_mb"])
    ratio = m.get("ratio_to_sada")
    print(f"{name:12s} {m['sec_per_iter_median']:.3f} s/iter  {mem:8.0f} MB peak"
          + (f"  {ratio:.2f}x SADA" if ratio else "") + f"  pseudo-boxes/image {m.get('pseudo_boxes_per_image', '-')}")
PYEOF
echo "results: $OUT/speed_reference.json"
