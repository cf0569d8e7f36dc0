#!/usr/bin/env bash
# Builds target/debian/cctv-agent_<version>_<arch>.deb from an already built
# binary: the binary, ONNX Runtime, the bundled model, the systemd unit and a
# default config. Runtime dependencies are the packages that own the shared
# libraries the binary needs (found with dpkg -S on this build machine, whose
# package names are the same for every architecture).
#
# usage: scripts/build-deb.sh [amd64|arm64]
set -euo pipefail
cd "$(dirname "$0")/.."
arch=${1:-amd64}
case "$arch" in
  amd64) binary=target/release/cctv-agent; ort=.cache/onnxruntime/x86_64/libonnxruntime.so; strip=strip ;;
  arm64) binary=target/aarch64-unknown-linux-gnu/release/cctv-agent; ort=.cache/onnxruntime/aarch64/libonnxruntime.so; strip=aarch64-linux-gnu-strip ;;
  *) echo "unknown architecture $arch (amd64 or arm64)" >&2; exit 2 ;;
esac
for f in "$binary" "$ort"; do
  [ -f "$f" ] || { echo "$f is missing: build it first (make build, or make cross-aarch64)" >&2; exit 1; }
done
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT

install -D -m 0755 "$binary" "$stage/usr/bin/cctv-agent"
"$strip" --strip-debug "$stage/usr/bin/cctv-agent"   # line tables are for local profiling only
install -D -m 0644 "$ort" "$stage/usr/lib/cctv-agent/libonnxruntime.so"
for f in efficientnet_lite0.onnx efficientnet_lite0.toml imagenet_labels.txt road_taxonomy.toml yolov3_tiny.onnx yolov3_tiny.toml coco_labels.txt; do
  install -D -m 0644 "models/$f" "$stage/usr/share/cctv-agent/models/$f"
done
install -D -m 0644 config/device.toml "$stage/etc/cctv-agent/agent.toml"
install -D -m 0644 systemd/cctv-agent.service "$stage/lib/systemd/system/cctv-agent.service"
doc="$stage/usr/share/doc/cctv-agent"
install -D -m 0644 README.md "$doc/README.md"
install -D -m 0644 config/example.toml "$doc/example.toml"
install -D -m 0644 models/PROVENANCE.md "$doc/models-PROVENANCE.md"
install -D -m 0644 docs/mqtt.md "$doc/mqtt.md"
cat > "$doc/copyright" <<TXT
cctv-agent: Apache-2.0.
ONNX Runtime (usr/lib/cctv-agent/libonnxruntime.so): MIT, from the PyPI onnxruntime wheel.
EfficientNet-Lite0 model and labels (usr/share/cctv-agent/models): Apache-2.0; see models-PROVENANCE.md.
YOLOv3-tiny detector (usr/share/cctv-agent/models/yolov3_tiny.onnx): Darknet weights, public domain (Darknet's YOLO LICENSE v2); COCO labels; see models-PROVENANCE.md.
TXT

# Runtime dependencies: the packages owning each NEEDED library.
depends=$(objdump -p "$binary" | awk '/NEEDED/ {print $2}' | while read -r lib; do
  path=$(ldconfig -p | awk -v l="$lib" '$1 == l {print $NF; exit}')
  [ -n "$path" ] || continue
  # dpkg knows a library under one of its names (merged /usr: /lib or /usr/lib).
  { dpkg -S "$path" 2>/dev/null || dpkg -S "$(readlink -f "$path")" 2>/dev/null || true; } | head -n1 | cut -d: -f1
done | sort -u | paste -sd, | sed 's/,/, /g')
[ -n "$depends" ] || { echo "could not work out the runtime dependencies" >&2; exit 1; }

mkdir -p "$stage/DEBIAN"
cat > "$stage/DEBIAN/control" <<TXT
Package: cctv-agent
Version: $version
Architecture: $arch
Maintainer: cctv-agent developers <cctv-agent@example.invalid>
Section: video
Priority: optional
Depends: $depends
Installed-Size: $(du -sk "$stage" | cut -f1)
Description: edge inference agent for roadside CCTV
 Decodes camera streams with OpenCV, classifies vehicles with an ONNX model
 through ONNX Runtime, and publishes predictions and telemetry over MQTT.
TXT
echo /etc/cctv-agent/agent.toml > "$stage/DEBIAN/conffiles"
cat > "$stage/DEBIAN/postinst" <<'TXT'
#!/bin/sh
set -e
# Not started here: edit /etc/cctv-agent/agent.toml first, then
# `systemctl enable --now cctv-agent`.
if [ -d /run/systemd/system ]; then systemctl daemon-reload || true; fi
TXT
cat > "$stage/DEBIAN/postrm" <<'TXT'
#!/bin/sh
set -e
if [ -d /run/systemd/system ]; then systemctl daemon-reload || true; fi
TXT
cat > "$stage/DEBIAN/prerm" <<'TXT'
#!/bin/sh
set -e
if [ -d /run/systemd/system ] && [ "$1" = remove ]; then
  systemctl stop cctv-agent.service || true
  systemctl disable cctv-agent.service || true
fi
TXT
chmod 0755 "$stage/DEBIAN/postinst" "$stage/DEBIAN/postrm" "$stage/DEBIAN/prerm"
mkdir -p target/debian
out="target/debian/cctv-agent_${version}_${arch}.deb"
dpkg-deb --root-owner-group -Zgzip --build "$stage" "$out" >/dev/null
echo "$out"
