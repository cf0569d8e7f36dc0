# Environment for building cctv-agent for aarch64 against the sysroot that
# cross/setup.sh made. Source it: `. cross/env.sh` (from the repository root).
# The opencv crate reads OPENCV_*; it ignores BINDGEN_EXTRA_CLANG_ARGS.
_root=$(pwd)
SYSROOT=$_root/.cache/cross/sysroot-arm64
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUSTFLAGS="-C link-arg=--sysroot=$SYSROOT"
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="$_root/.cache/cross/qemu/usr/bin/qemu-aarch64 -L $SYSROOT"
export CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc
export CXX_aarch64_unknown_linux_gnu=aarch64-linux-gnu-g++
export AR_aarch64_unknown_linux_gnu=aarch64-linux-gnu-ar
export OPENCV_INCLUDE_PATHS=$SYSROOT/usr/include/opencv4,$SYSROOT/usr/include/aarch64-linux-gnu/opencv4
export OPENCV_LINK_PATHS=$SYSROOT/usr/lib/aarch64-linux-gnu
export OPENCV_LINK_LIBS=opencv_core,opencv_imgproc,opencv_imgcodecs,opencv_videoio,opencv_video
export CROSS_SYSROOT=$SYSROOT
export CROSS_QEMU=$_root/.cache/cross/qemu/usr/bin/qemu-aarch64
unset _root
