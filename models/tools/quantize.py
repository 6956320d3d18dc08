#!/usr/bin/env python3
"""Produce the int8 variants of the face detector and embedder, once, offline.

Run from the repository root:
    pip install onnxruntime==1.31.1 onnx==1.23.2 numpy pillow
    python3 models/tools/quantize.py ../shared

Static post-training quantization with onnxruntime, convolutions only, QDQ format
(QuantizeLinear / DequantizeLinear around float ops, which tract 0.23 runs; its QOperator
form needs QLinearAdd, an onnxruntime contrib op tract lacks, and ran 3x slower in tract than
QDQ when restricted to QLinearConv). Per-channel int8 weights, uint8 activations. Calibration never uses the evaluation set (ORL faces): the
detector is calibrated on the shared photos and video frames, the embedder on faces
aligned from those same photos and frames.
"""
import glob
import os
import sys

import numpy as np
import onnx
from onnx import version_converter
from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat,
                                      QuantType, quantize_static)
from onnxruntime.quantization.shape_inference import quant_pre_process
import onnxruntime as ort
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
MODELS = os.path.dirname(HERE)
# ArcFace 112x112 template (insightface), the same constants as daemon/src/pipeline/align.rs
TEMPLATE = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                     [41.5493, 92.3655], [70.7299, 92.2041]])
DET_SIDE = 640


def calibration_images(shared):
    files = sorted(glob.glob(f"{shared}/data/photos/*.jpg") + glob.glob(f"{shared}/data/photos/*.png"))
    for clip in sorted(glob.glob(f"{shared}/data/video/*")):
        files += sorted(glob.glob(f"{clip}/*.jpg"))[::6]
    return [Image.open(f).convert("RGB") for f in files]


def detector_blob(img):
    w, h = img.size
    s = min(1.0, DET_SIDE / max(w, h))
    rw, rh = round(w * s), round(h * s)
    arr = np.zeros((DET_SIDE, DET_SIDE, 3), np.float32)
    arr[:rh, :rw] = np.asarray(img.resize((rw, rh), Image.BILINEAR), np.float32)
    return arr.transpose(2, 0, 1)[None].copy(), s


def clean_centerface(src, dst):
    m = onnx.load(src)
    inits = {i.name for i in m.graph.initializer}
    keep = [i for i in m.graph.input if i.name not in inits]
    del m.graph.input[:]
    m.graph.input.extend(keep)
    # The declared 10x3x32x32 input is a placeholder: make batch 1 and H, W symbolic.
    for value in list(m.graph.input) + list(m.graph.output):
        dims = value.type.tensor_type.shape.dim
        dims[0].Clear()
        dims[0].dim_value = 1
        for axis, name in ((2, "H"), (3, "W")):
            dims[axis].Clear()
            dims[axis].dim_param = name if value.name == "input.1" else name.lower()
    m = version_converter.convert_version(m, 13)
    onnx.save(m, dst)


def centerface_faces(sess, img, thr=0.5):
    blob, s = detector_blob(img)
    hm, scale, off, lm = sess.run(None, {"input.1": blob})
    out = []
    for y, x in zip(*np.where(hm[0, 0] > thr)):
        s0, s1 = np.exp(scale[0, 0, y, x]) * 4, np.exp(scale[0, 1, y, x]) * 4
        x1 = (x + off[0, 1, y, x] + 0.5) * 4 - s1 / 2
        y1 = (y + off[0, 0, y, x] + 0.5) * 4 - s0 / 2
        pts = [[(lm[0, 2 * j + 1, y, x] * s1 + x1) / s, (lm[0, 2 * j, y, x] * s0 + y1) / s] for j in range(5)]
        out.append((hm[0, 0, y, x], np.array(pts)))
    out.sort(key=lambda t: -t[0])
    kept = []
    for sc, pts in out:  # crude de-duplication, enough for calibration
        if all(np.linalg.norm(pts.mean(0) - k.mean(0)) > 10 for k in kept):
            kept.append(pts)
    return kept


def similarity(src, dst):
    a_rows, b = [], []
    for (x, y), (u, v) in zip(src, dst):
        a_rows += [[x, -y, 1, 0], [y, x, 0, 1]]
        b += [u, v]
    a, bb, tx, ty = np.linalg.lstsq(np.array(a_rows), np.array(b), rcond=None)[0]
    return (a, -bb, tx, bb, a, ty)


def aligned_crop(img, pts):
    m = similarity(pts, TEMPLATE)
    # PIL wants the inverse map (output -> input)
    a, b, c, d, e, f = m
    inv = np.linalg.inv(np.array([[a, b, c], [d, e, f], [0, 0, 1]]))
    crop = img.transform((112, 112), Image.AFFINE, tuple(inv[:2].ravel()), Image.BILINEAR)
    return (np.asarray(crop, np.float32) - 127.5) / 128.0


class Reader(CalibrationDataReader):
    def __init__(self, name, items):
        self.name, self.items = name, iter(items)

    def get_next(self):
        x = next(self.items, None)
        return None if x is None else {self.name: x}


def main():
    shared = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else "../shared")
    src = f"{shared}/models"
    images = calibration_images(shared)
    tmp = "/tmp/facegate-quant"
    os.makedirs(tmp, exist_ok=True)
    os.chdir(tmp)  # onnxruntime's quantizer leaves scratch files in the working directory

    # Detector
    clean_centerface(f"{src}/centerface.onnx", f"{tmp}/cf13.onnx")
    quant_pre_process(f"{tmp}/cf13.onnx", f"{tmp}/cf13_pre.onnx", skip_symbolic_shape=True)
    quantize_static(f"{tmp}/cf13_pre.onnx", f"{MODELS}/centerface_int8.onnx",
                    Reader("input.1", [detector_blob(i)[0] for i in images]),
                    # tract has no QLinearAdd (an onnxruntime contrib op): convolutions only.
                    op_types_to_quantize=["Conv"],
                    quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    calibrate_method=CalibrationMethod.MinMax)

    # Embedder, calibrated on faces the fp32 detector finds in the calibration images
    det = ort.InferenceSession(f"{tmp}/cf13.onnx", providers=["CPUExecutionProvider"])
    crops = [aligned_crop(i, p)[None] for i in images for p in centerface_faces(det, i)]
    print(f"embedder calibration: {len(crops)} aligned faces from {len(images)} images")
    m = onnx.load(f"{src}/expo_MobileFaceNet_dynbatch.onnx")
    for value in list(m.graph.input) + list(m.graph.output):
        dims = value.type.tensor_type.shape.dim
        dims[0].Clear()
        dims[0].dim_value = 1
    onnx.save(m, f"{tmp}/mfn1.onnx")
    quant_pre_process(f"{tmp}/mfn1.onnx", f"{tmp}/mfn1_pre.onnx", skip_symbolic_shape=True)
    # MobileFaceNet spells PReLU as Relu/Abs/Sub/Mul/Add; quantizing those element-wise ops
    # as well measured EER 23.6% on ORL (vs 0.24% fp32). Quantizing only the convolutions, with
    # 99.999-percentile activation ranges, measured EER 0.35%, rank-1 100% (onnxruntime).
    quantize_static(f"{tmp}/mfn1_pre.onnx", f"{MODELS}/mobilefacenet_int8.onnx",
                    Reader("input", crops), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    op_types_to_quantize=["Conv"],
                    calibrate_method=CalibrationMethod.Percentile)


if __name__ == "__main__":
    main()
