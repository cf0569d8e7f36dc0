#!/usr/bin/env bash
# Proves the aarch64 build works, under qemu user emulation (~16x slower
# than native, so the inputs are small):
#  1. `classify` on real photos gives the same top-1 as the x86_64 build;
#  2. the agent decodes a short clip and classifies the car in it, publishing
#     to a real Mosquitto on a free loopback port.
# Needs `make build` and `make cross-aarch64` first (`make test-cross` does both).
set -euo pipefail
cd "$(dirname "$0")/.."
. cross/env.sh
native=target/release/cctv-agent
arm=target/aarch64-unknown-linux-gnu/release/cctv-agent
run_arm() { "$CROSS_QEMU" -L "$CROSS_SYSROOT" "$arm" "$@"; }
work=$(mktemp -d)
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
passed=0 failed=0
check() { # name, condition (0 = pass)
  if [ "$2" -eq 0 ]; then passed=$((passed + 1)); echo "ok: $1"; else failed=$((failed + 1)); echo "FAILED: $1"; fi
}

file "$arm" | grep -q "ARM aarch64" ; check "the binary is aarch64" $?

# 1. Same top-1 on real photos.
photos=(media/sources/crop_dog_truck.png media/sources/crop_scenetext01_car.png media/sources/motorcycle_left.png media/sources/horses.jpg)
top1() { python3 -c 'import sys,json; [print(json.loads(l)["top_k"][0]["index"], json.loads(l)["class"]) for l in sys.stdin]'; }
"$native" classify "${photos[@]}" 2>/dev/null | top1 > "$work/native.txt"
run_arm classify "${photos[@]}" 2>"$work/arm-classify.err" | top1 > "$work/arm.txt" || true
echo "x86_64 top-1: $(paste -sd' ' "$work/native.txt")"
echo "aarch64 top-1: $(paste -sd' ' "$work/arm.txt")"
[ -s "$work/arm.txt" ] && cmp -s "$work/native.txt" "$work/arm.txt"; check "classify gives the same top-1 and class on ${#photos[@]} photos" $?
[ -s "$work/arm.txt" ] || sed 's/^/  /' "$work/arm-classify.err" | tail -n 5

# 2. A short clip through the whole agent, both builds: 4 frames (44-47 of
# media/road.mp4) in which a car crosses a fixed lane region. Inference under
# qemu takes seconds per frame, so the clip is tiny.
ffmpeg -loglevel error -y -i media/road.mp4 -vf "select='between(n,44,47)'" -vsync 0 -frames:v 4 \
  -c:v libx264 -pix_fmt yuv420p "$work/short.mp4"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
printf 'listener %s 127.0.0.1\nallow_anonymous true\n' "$port" > "$work/mosquitto.conf"
mosquitto -c "$work/mosquitto.conf" >/dev/null 2>&1 &
pids+=($!)
for _ in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/"$port") 2>/dev/null && break; sleep 0.1; done
run_clip() { # device id, command...: runs the agent until its 4 predictions arrive; prints its exit status
  local device=$1; shift
  cat > "$work/$device.toml" <<TOML
device_id = "$device"
state_dir = "$work/state-$device"
[mqtt]
url = "mqtt://127.0.0.1:$port"
[model]
path = "$(pwd)/models/efficientnet_lite0.onnx"
[[cameras]]
id = "road"
url = "$work/short.mp4"
regions = [[0, 55, 270, 125]]
replay = "asap"
TOML
  mosquitto_sub -p "$port" -t "cctv/$device/predictions/road" -C 4 -W 300 > "$work/$device.jsonl" 2>/dev/null &
  local sub=$!
  sleep 0.5
  "$@" run --config "$work/$device.toml" 2> "$work/$device.log" &
  local agent=$!
  pids+=($agent)
  wait "$sub" || true
  kill -TERM "$agent" 2>/dev/null || true
  local status=0
  wait "$agent" || status=$?
  echo "$status"
}
summary() { python3 -c 'import sys,json; [print(d["frame_index"], d["regions"][0]["class"], d["regions"][0]["top_k"][0]["index"]) for d in map(json.loads, sys.stdin)]' < "$1"; }
native_status=$(run_clip native "$native")
arm_status=$(run_clip arm "$CROSS_QEMU" -L "$CROSS_SYSROOT" "$arm")
summary "$work/native.jsonl" > "$work/native-clip.txt"
summary "$work/arm.jsonl" > "$work/arm-clip.txt" || true
echo "x86_64 clip (frame class top-1): $(paste -sd' ' "$work/native-clip.txt")"
echo "aarch64 clip (frame class top-1): $(paste -sd' ' "$work/arm-clip.txt")"
[ "$(wc -l < "$work/arm-clip.txt")" -eq 4 ] && [ "$(grep -c ' car ' "$work/arm-clip.txt")" -eq 4 ]
check "the aarch64 agent decodes all 4 frames of the clip and classifies the car in each" $?
cmp -s "$work/native-clip.txt" "$work/arm-clip.txt"; check "the aarch64 agent's predictions match the x86_64 agent's" $?
[ "$arm_status" -eq 0 ] && [ "$native_status" -eq 0 ]; check "both agents exit 0 on SIGTERM" $?
# 3. The arm64 Debian package: architecture, dependencies, contents.
deb=$(scripts/build-deb.sh arm64)
info=$(dpkg-deb -f "$deb" Architecture Depends)
echo "$info" | grep -qx "Architecture: arm64" && echo "$info" | grep -q "libopencv-videoio406"
check "the arm64 package is for arm64 and depends on Debian's OpenCV" $?
contents=$(dpkg-deb -c "$deb" | awk '{print $6}')
all_there=0
for f in ./usr/bin/cctv-agent ./usr/lib/cctv-agent/libonnxruntime.so ./usr/share/cctv-agent/models/efficientnet_lite0.onnx \
         ./etc/cctv-agent/agent.toml ./lib/systemd/system/cctv-agent.service; do
  echo "$contents" | grep -qx "$f" || { echo "  missing $f"; all_there=1; }
done
check "the arm64 package holds the binary, ONNX Runtime, the model, the config and the unit" $all_there
mkdir -p "$work/deb" && dpkg-deb -x "$deb" "$work/deb"
file "$work/deb/usr/bin/cctv-agent" | grep -q "ARM aarch64" && file -L "$work/deb/usr/lib/cctv-agent/libonnxruntime.so" | grep -q "ARM aarch64"
check "the arm64 package's binary and ONNX Runtime are aarch64" $?

[ "$failed" -eq 0 ] || tail -n 20 "$work/arm.log"
echo "cross: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
