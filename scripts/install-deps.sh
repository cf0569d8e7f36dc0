#!/usr/bin/env bash
# Installs the Debian packages the build, `make run` and the tests need,
# skipping what is already there. Debian 12; run as root (or with sudo).
# Usage: install-deps.sh [--test]
set -euo pipefail
packages=(
  # build: OpenCV headers, libclang for the opencv crate's binding generator
  libopencv-dev clang libclang-dev pkg-config
  # run: the demo's broker; tests: ffmpeg for clips, mosquitto clients
  mosquitto mosquitto-clients ffmpeg
  # tests: a local OCI registry for model releases (the tests run their own
  # instance on 127.0.0.1; the package's own service is not used)
  docker-registry
  # packaging: dpkg-deb is always there; objdump (binutils) and file for checks
  binutils file
  # tests: a local RTSP camera (GStreamer's RTSP server through Debian's python3)
  python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-base
  gstreamer1.0-plugins-good gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly
)
# With --test: what only the tests need (the installer's page in a real
# headless browser), kept out of `make run`'s install.
if [ "${1:-}" = "--test" ]; then
  packages=(chromium)
fi
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
sudo=""
[ "$(id -u)" -eq 0 ] || sudo=sudo
echo "installing: ${missing[*]}" >&2
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >&2
