#!/usr/bin/env bash
# Build wheelhouse/: the packages tools/gpu_check.sh installs on a GPU machine that has
# Python 3.12 and torch but no package registry (detectron2 and what it needs beyond
# torch, numpy, OpenCV, matplotlib, psutil, PyYAML, tqdm and portalocker). Run it here,
# where PyPI is reachable, then carry wheelhouse/ with the working tree (about 10 MB).
#
#   bash tools/build_wheelhouse.sh [DIR] [PYTHON]
set -euo pipefail
cd "$(dirname "$0")/.."
dir="${1:-wheelhouse}"
PY="${2:-.venv/bin/python}"
mkdir -p "$dir"
target=(--python-version 3.12 --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform any)
# binary wheels for Python 3.12
"$PY" -m pip download -q --no-deps --only-binary=:all: "${target[@]}" -d "$dir" \
  pycocotools yacs termcolor "omegaconf==2.3.0" "hydra-core==1.3.2" cloudpickle tabulate
# published as source only, pure Python: build py3-none-any wheels
"$PY" -m pip wheel -q --no-deps -w "$dir" fvcore iopath "antlr4-python3-runtime==4.9.3"
# detectron2 itself: the wheel tools/install_detectron2.sh installs, checked and renamed
# the same way (its bundled _C binary is deleted after installation)
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.10 -d "$tmp" "sal-detectron2==0.7.2"
src="$(ls "$tmp"/sal_detectron2-*.whl)"
sha="$(sha256sum "$src" | cut -d' ' -f1)"
expected="$(grep -o 'WHEEL_SHA256="[0-9a-f]*"' tools/install_detectron2.sh | cut -d'"' -f2)"
[ "$sha" = "$expected" ] || { echo "error: $src has sha256 $sha, expected $expected" >&2; exit 1; }
cp "$src" "$dir/sal_detectron2-0.7.2-py3-none-any.whl"
ls -la "$dir"
du -sh "$dir"
