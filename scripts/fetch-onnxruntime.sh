#!/usr/bin/env bash
# Puts ONNX Runtime's shared library at $1 (default .cache/onnxruntime/<arch>/libonnxruntime.so),
# taken from the PyPI `onnxruntime` wheel. Idempotent; needs only pip and python3.
set -euo pipefail
version=1.32.0
arch=${ORT_ARCH:-$(uname -m)}
dest=${1:-.cache/onnxruntime/$arch/libonnxruntime.so}
[ -s "$dest" ] && exit 0
case "$arch" in
  x86_64) platform=manylinux_2_28_x86_64 ;;
  aarch64) platform=manylinux_2_28_aarch64 ;;
  *) echo "no onnxruntime wheel for $arch on PyPI" >&2; exit 1 ;;
esac
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "fetching onnxruntime $version ($platform) from PyPI" >&2
python3 -m pip download --quiet --no-deps --only-binary=:all: --platform "$platform" \
  --python-version 3.11 --dest "$tmp" "onnxruntime==$version"
wheel=$(ls "$tmp"/onnxruntime-*.whl)
mkdir -p "$(dirname "$dest")"
python3 - "$wheel" "$dest" <<'PY'
import sys, zipfile, shutil
wheel, dest = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z:
    names = [n for n in z.namelist() if n.startswith("onnxruntime/capi/libonnxruntime.so.")]
    if not names:
        sys.exit(f"{wheel} holds no libonnxruntime.so")
    with z.open(names[0]) as src, open(dest + ".part", "wb") as out:
        shutil.copyfileobj(src, out)
PY
mv "$dest.part" "$dest"
echo "ONNX Runtime $version -> $dest" >&2
