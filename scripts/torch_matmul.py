#!/usr/bin/env python3
"""torch.matmul TFLOP/s on the GPU, measured as amp's CUDA bench measures
matmul (benches/cuda.rs), for scripts/gpu-check.sh to compute amp/torch.

F32, F16 and BF16 at n = 4096 and 8192, standard normal operands already on
the GPU, F32 accumulation everywhere: TF32 off for F32, and no reduced-
precision reductions for F16/BF16 (amp accumulates in F32 and rounds once).
Each figure is the best of 5 repetitions of enough products to take about
0.15 s, each repetition timed with CUDA events around the products.

Prints `RESULT torch_<dtype>_<n>=<TFLOP/s>` per figure, and
`RESULT torch=ok|FAIL|no_gpu`. Exit status 0, 1 (a failure) or 2 (no GPU or
no PyTorch).
"""

import sys
import time

SIZES = (4096, 8192)


def main() -> int:
    try:
        import torch
    except ImportError as e:
        print(f"no PyTorch: {e}")
        print("RESULT torch=no_gpu")
        return 2
    if not torch.cuda.is_available():
        print(f"PyTorch {torch.__version__}: no CUDA device")
        print("RESULT torch=no_gpu")
        return 2
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    # Like amp: F32 accumulation, no split-k reductions in F16/BF16.
    torch.backends.cuda.matmul.allow_fp16_reduced_precision_reduction = False
    if hasattr(torch.backends.cuda.matmul, "allow_bf16_reduced_precision_reduction"):
        torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction = False
    dev = torch.device("cuda:0")
    print(
        f"PyTorch {torch.__version__}, CUDA {torch.version.cuda}, "
        f"{torch.cuda.get_device_name(dev)}, TF32 off"
    )
    gen = torch.Generator(device=dev).manual_seed(0)
    big = max(SIZES)
    a_all = torch.randn(big, big, device=dev, generator=gen)
    b_all = torch.randn(big, big, device=dev, generator=gen)
    ok = True
    print(f"{'n':>5} {'dtype':>6} {'TFLOP/s':>9}")
    for n in SIZES:
        for name, dtype in (("f32", torch.float32), ("f16", torch.float16), ("bf16", torch.bfloat16)):
            try:
                a = a_all[:n, :n].contiguous().to(dtype)
                b = b_all[:n, :n].contiguous().to(dtype)
                # Warm-up: cuBLAS handle, heuristics, workspace.
                torch.matmul(a, b)
                torch.cuda.synchronize()
                t0 = time.perf_counter()
                c = torch.matmul(a, b)
                torch.cuda.synchronize()
                once = time.perf_counter() - t0
                iters = max(3, min(200, int(0.15 / once)))
                best = float("inf")
                for _ in range(5):
                    start = torch.cuda.Event(enable_timing=True)
                    end = torch.cuda.Event(enable_timing=True)
                    start.record()
                    for _ in range(iters):
                        c = torch.matmul(a, b)
                    end.record()
                    end.synchronize()
                    best = min(best, start.elapsed_time(end) / 1e3 / iters)
                del c
                tflops = 2 * n**3 / best / 1e12
                print(f"{n:>5} {name:>6} {tflops:>9.1f}")
                print(f"RESULT torch_{name}_{n}={tflops:.2f}")
            except Exception as e:  # report, and measure the rest
                ok = False
                print(f"{n:>5} {name:>6} failed: {e}")
                print(f"RESULT torch_{name}_{n}=FAIL")
    print(f"RESULT torch={'ok' if ok else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
