#!/usr/bin/env python3
"""ONNX Runtime's quantized MatMul on the shapes of amp's `qgemm` bench, run by hand.

    python3 -m venv /tmp/ortvenv && /tmp/ortvenv/bin/pip install onnxruntime numpy onnx
    /tmp/ortvenv/bin/python benches/ort_qgemm.py

For n = 256, 512, 1024, 2048 it times, on ORT's CPU provider with as many threads as
rayon uses by default (all cores), the best of several runs of:

* `MatMul` in f32 (B a graph input);
* `MatMulInteger` u8 x i8 -> i32 with A's zero point 128, B a graph input, so ORT packs
  it every call as amp's bench does;
* the same with B a constant initializer, which ORT prepacks once (what a quantized
  linear layer gets);
* `QLinearMatMul` u8 x i8 -> u8 with constant B (what `quantize_static` models fuse to).

It prints one line per size with the times in ms and ORT's own f32/INT8 ratio, plus a
check that `MatMulInteger` equals an exact int64 product (on CPUs without VNNI ORT's
u8 x i8 kernels may saturate in `vpmaddubsw`; the line says whether they did here).
"""
import os
import time

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

SIZES = [256, 512, 1024, 2048]
THREADS = os.cpu_count()


def session(nodes, inputs, outputs, inits):
    g = helper.make_graph(nodes, "g", inputs, outputs, inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    so = ort.SessionOptions()
    so.intra_op_num_threads = THREADS
    so.inter_op_num_threads = 1
    return ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])


def best(run, reps):
    run()  # warm-up: allocations, prepacking
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        run()
        times.append(time.perf_counter() - t)
    return min(times)


def main():
    rng = np.random.default_rng(0)
    print(f"onnxruntime {ort.__version__}, {THREADS} threads, CPU provider")
    print(f"{'n':>6} {'f32 MatMul ms':>14} {'MMInteger ms':>13} {'MMInteger const-B ms':>21} "
          f"{'QLinearMatMul ms':>17} {'f32/INT8':>9} {'f32/INT8 const-B':>17} {'exact':>6}")
    for n in SIZES:
        reps = max(5, int(2e9 / (2 * n**3)))
        a32 = rng.standard_normal((n, n), dtype=np.float32)
        b32 = rng.standard_normal((n, n), dtype=np.float32)
        a8 = rng.integers(0, 256, (n, n), dtype=np.uint8)
        b8 = rng.integers(-128, 128, (n, n), dtype=np.int8)
        zp = numpy_helper.from_array(np.array(128, dtype=np.uint8), "za")

        f32 = session([helper.make_node("MatMul", ["A", "B"], ["Y"])],
                      [helper.make_tensor_value_info("A", TensorProto.FLOAT, [n, n]),
                       helper.make_tensor_value_info("B", TensorProto.FLOAT, [n, n])],
                      [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [n, n])], [])
        mmi = session([helper.make_node("MatMulInteger", ["A", "B", "za"], ["Y"])],
                      [helper.make_tensor_value_info("A", TensorProto.UINT8, [n, n]),
                       helper.make_tensor_value_info("B", TensorProto.INT8, [n, n])],
                      [helper.make_tensor_value_info("Y", TensorProto.INT32, [n, n])], [zp])
        mmi_c = session([helper.make_node("MatMulInteger", ["A", "B", "za"], ["Y"])],
                        [helper.make_tensor_value_info("A", TensorProto.UINT8, [n, n])],
                        [helper.make_tensor_value_info("Y", TensorProto.INT32, [n, n])],
                        [zp, numpy_helper.from_array(b8, "B")])
        qlin = session([helper.make_node("QLinearMatMul", ["A", "sa", "za", "B", "sb", "zb", "sy", "zy"], ["Y"])],
                       [helper.make_tensor_value_info("A", TensorProto.UINT8, [n, n])],
                       [helper.make_tensor_value_info("Y", TensorProto.UINT8, [n, n])],
                       [zp, numpy_helper.from_array(b8, "B"),
                        numpy_helper.from_array(np.array(0.02, dtype=np.float32), "sa"),
                        numpy_helper.from_array(np.array(0.01, dtype=np.float32), "sb"),
                        numpy_helper.from_array(np.array(0, dtype=np.int8), "zb"),
                        numpy_helper.from_array(np.array(5.0, dtype=np.float32), "sy"),
                        numpy_helper.from_array(np.array(128, dtype=np.uint8), "zy")])

        t_f32 = best(lambda: f32.run(None, {"A": a32, "B": b32}), reps)
        t_mmi = best(lambda: mmi.run(None, {"A": a8, "B": b8}), reps)
        t_mmi_c = best(lambda: mmi_c.run(None, {"A": a8}), reps)
        t_qlin = best(lambda: qlin.run(None, {"A": a8}), reps)

        y = mmi.run(None, {"A": a8, "B": b8})[0].astype(np.int64)
        exact = (a8.astype(np.int64) - 128) @ b8.astype(np.int64)
        ok = "yes" if np.array_equal(y, exact) else f"no ({int((y != exact).sum())} wrong)"
        print(f"{n:>6} {t_f32 * 1e3:>14.3f} {t_mmi * 1e3:>13.3f} {t_mmi_c * 1e3:>21.3f} "
              f"{t_qlin * 1e3:>17.3f} {t_f32 / t_mmi:>8.2f}x {t_f32 / t_mmi_c:>16.2f}x {ok:>6}")


if __name__ == "__main__":
    main()
