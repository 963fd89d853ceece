#!/usr/bin/env bash
# Install detectron2 into the given Python environment, unless one already imports.
#
# detectron2 has no official PyPI release. Users who built it from source (which also
# gives them the CUDA `_C` ops) keep theirs. Otherwise we take the `sal-detectron2`
# wheel (upstream main of 2024-04-17, pure Python apart from a `_C` binary built for
# another torch), check its sha256, and drop that foreign binary: Faster R-CNN runs on
# torchvision ops and never needs it.
set -euo pipefail
PY="${1:?usage: install_detectron2.sh PYTHON}"
WHEEL_VERSION="0.7.2"
WHEEL_SHA256="491af0c7f79bdb2d178e46f6cb16a97c4ac968d45c41ea3f6b6435d59bbee561"

if "$PY" -c "import detectron2, detectron2.modeling" 2>/dev/null; then
  echo "detectron2 already importable: $("$PY" -c 'import detectron2; print(detectron2.__file__)')"
  exit 0
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.10 \
  -d "$tmp" "sal-detectron2==${WHEEL_VERSION}"
src="$(ls "$tmp"/sal_detectron2-*.whl)"
got="$(sha256sum "$src" | cut -d' ' -f1)"
if [ "$got" != "$WHEEL_SHA256" ]; then
  echo "error: $src has sha256 $got, expected $WHEEL_SHA256; refusing to install it." >&2
  exit 1
fi
# The wheel is tagged cp310 but holds only Python code we can use; install it under a
# pure-Python tag so pip accepts it on any Python 3.
dst="$tmp/sal_detectron2-${WHEEL_VERSION}-py3-none-any.whl"
mv "$src" "$dst"
# fvcore and iopath are imported by detectron2 but not declared by this wheel.
"$PY" -m pip install -q "$dst" fvcore iopath "setuptools<81"
site="$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
rm -f "$site"/detectron2/_C*.so
"$PY" -c "import detectron2; print('installed detectron2', detectron2.__version__, 'from', detectron2.__file__)"
