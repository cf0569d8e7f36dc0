#!/usr/bin/env bash
# `make run`: the agent on its built-in demo config (bundled model, bundled
# clip looping in real time, broker on 127.0.0.1:1883), with a watcher that
# prints each vehicle and each counts interval. Starts a private Mosquitto if nothing listens on
# 1883, and stops what it started on exit (Ctrl-C).
set -euo pipefail
set -m  # children get their own process groups: Ctrl-C reaches only this script, which stops them in order
cd "$(dirname "$0")/.."
bin=target/release/cctv-agent
pids=()
agent=""
cleanup() {
  # The agent first, once, so it can publish `offline`; then the watcher and broker.
  if [ -n "$agent" ]; then kill -TERM "$agent" 2>/dev/null && wait "$agent" 2>/dev/null || true; fi
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if ! (exec 3<>/dev/tcp/127.0.0.1/1883) 2>/dev/null; then
  dir=target/demo-broker
  mkdir -p "$dir"
  printf 'listener 1883 127.0.0.1\nallow_anonymous true\npersistence false\n' > "$dir/mosquitto.conf"
  mosquitto -c "$dir/mosquitto.conf" > "$dir/mosquitto.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/1883) 2>/dev/null && break; sleep 0.1; done
  echo "started Mosquitto on 127.0.0.1:1883 (log: $dir/mosquitto.log)" >&2
fi

"$bin" watch --url mqtt://127.0.0.1:1883 --device demo &
pids+=($!)
if [ "${REGIONS:-motion}" = detector ]; then
  echo "running the agent with the detector on media/queue.mp4 (looping; vehicles wait 6 s at a stop line): each vehicle prints once as it leaves, and the counts every 10 s. Ctrl-C to stop." >&2
  "$bin" run --config config/demo-detector.toml &
else
  echo "running the agent on media/road.mp4 (looping): each vehicle prints once as it leaves, and the counts every 10 s. Ctrl-C to stop." >&2
  "$bin" run &
fi
agent=$!
wait "$agent" || true
agent=""
