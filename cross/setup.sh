#!/usr/bin/env bash
# Prepares everything `make cross-aarch64` needs on an x86_64 Debian 12 host,
# without Docker. Idempotent; outputs go to .cache/cross/ (gitignored):
#   .cache/cross/sysroot-arm64/   Debian 12 arm64 headers and libraries (OpenCV, glibc)
#   .cache/cross/qemu/            qemu-aarch64 10.x from Debian 13 (Debian 12's
#                                 qemu 7.2 crashes inside ONNX Runtime 1.32)
#   .cache/onnxruntime/aarch64/   libonnxruntime.so from the PyPI aarch64 wheel
set -euo pipefail
cd "$(dirname "$0")/.."
cache=.cache/cross
sysroot=$cache/sysroot-arm64
qemu_dir=$cache/qemu
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

sudo=""
[ "$(id -u)" -eq 0 ] || sudo=sudo
missing=()
for p in crossbuild-essential-arm64 mmdebstrap clang libclang-dev file; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >&2
fi
rustup target list --installed | grep -qx aarch64-unknown-linux-gnu || rustup target add aarch64-unknown-linux-gnu >&2

if [ ! -f "$sysroot/.complete" ]; then
  echo "building the arm64 sysroot (Debian 12, ~600 MB)" >&2
  rm -rf "$sysroot"
  mkdir -p "$cache"
  mmdebstrap --quiet --arch=arm64 --variant=extract \
    --include=libc6-dev,libstdc++-12-dev,libopencv-core-dev,libopencv-imgproc-dev,libopencv-imgcodecs-dev,libopencv-videoio-dev,libopencv-video-dev \
    bookworm "$sysroot" "$mirror" >&2
  # Package scripts do not run in an extract-only sysroot: make absolute
  # symlinks relative (the linker would follow them into the host), and
  # provide the BLAS/LAPACK names the alternatives system would have made.
  find "$sysroot" -type l | while read -r link; do
    target=$(readlink "$link")
    case "$target" in
      /*) ln -sfn "$(realpath -m --relative-to="$(dirname "$link")" "$sysroot$target")" "$link" ;;
    esac
  done
  libdir=$sysroot/usr/lib/aarch64-linux-gnu
  for lib in blas lapack; do
    real=$(find "$libdir" -path "*/lib$lib.so.3" -o -path "*/$lib/lib$lib.so.3" | head -n1)
    [ -e "$libdir/lib$lib.so.3" ] || { [ -n "$real" ] && ln -sfn "$(realpath --relative-to="$libdir" "$real")" "$libdir/lib$lib.so.3"; }
  done
  touch "$sysroot/.complete"
fi

if [ ! -x "$qemu_dir/usr/bin/qemu-aarch64" ]; then
  echo "unpacking qemu-user from Debian 13" >&2
  rm -rf "$qemu_dir"
  mmdebstrap --quiet --variant=extract --include=qemu-user-static trixie "$qemu_dir" "$mirror" >&2
  # Keep the one emulator we use (the package carries every architecture's).
  find "$qemu_dir/usr/bin" \( -type f -o -type l \) ! -name 'qemu-aarch64' ! -name 'qemu-aarch64-static' -delete
  if [ ! -x "$qemu_dir/usr/bin/qemu-aarch64" ] && [ -x "$qemu_dir/usr/bin/qemu-aarch64-static" ]; then
    ln -sfn qemu-aarch64-static "$qemu_dir/usr/bin/qemu-aarch64"
  fi
fi

ORT_ARCH=aarch64 scripts/fetch-onnxruntime.sh .cache/onnxruntime/aarch64/libonnxruntime.so
echo "cross toolchain ready: $sysroot, $qemu_dir/usr/bin/qemu-aarch64" >&2
