#!/usr/bin/env bash
# The CUDA kernels' maths on the CPU, in CI, every time (no GPU needed).
#
# Every kernel module is compiled unchanged by the machine's C++ compiler into
# amp's CUDA emulator (kernels/emulate/: one coroutine per CUDA thread, real
# barriers and warp collectives, guard-paged device memory), and the whole
# CUDA backend runs on it as `Device::Cuda(0)` (feature `cuda-emulator`):
#   1. the runtime's CUDA unit tests (every test whose path contains `cuda`,
#      among them the optimizer and scaler steps bit for bit against the host
#      and the WMMA GEMM fallback);
#   2. tests/cuda/ with AMP_REQUIRE_CUDA=1: every op family, gradients of
#      whole models, optimizers, the GradScaler, checkpoints, and every kernel
#      on special values (tests/cuda/edges.rs), against the CPU backend.
# Then it checks that
#   - every test that exists only with the `cuda` feature was selected by the
#     `cuda` filter of step 1 (a GPU test nobody runs is no test), and ran;
#   - every kernel of every module was launched at least once, and the
#     emulator holds exactly the kernels of the NVRTC cubins (when
#     scripts/kernel-check.sh ran first and left its list);
# and prints the figures: kernels launched, comparisons per precision, the
# worst relative error of each.
#
# Run from anywhere: bash scripts/emulate.sh. Environment: AMP_EMU_SM_COUNT
# (the emulated GPU's multiprocessors, default 4), AMP_TEST_SEED.
set -euo pipefail

start=$(date +%s)
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if ! command -v c++ >/dev/null 2>&1; then
    echo "emulate: no C++ compiler (c++) on PATH; install g++ (Debian: apt-get install g++)" >&2
    exit 1
fi

OUT=$PWD/target/emulate
mkdir -p "$OUT"
rm -f "$OUT/launched.txt" "$OUT/checks.txt" "$OUT/kernels.txt"
export AMP_EMU_COVERAGE=$OUT/launched.txt
export AMP_EMU_KERNELS=$OUT/kernels.txt
export AMP_EMU_REPORT=$OUT/checks.txt
export AMP_REQUIRE_CUDA=1

# Both steps build amp-runtime with the same features: one build.
echo "emulate: 1. the runtime's CUDA unit tests"
cargo test -p amp-runtime --features cuda-emulator --lib -- cuda 2>&1 | tee "$OUT/unit.log"
echo "emulate: 2. tests/cuda on the emulated GPU"
cargo test --features cuda-emulator --test cuda 2>&1 | tee "$OUT/cuda.log"

# Every test compiled only with the feature must have `cuda` in its path.
cargo test -p amp-runtime --lib -- --list 2>/dev/null | grep ': test$' | sort >"$OUT/cpu-tests.txt"
cargo test -p amp-runtime --features cuda-emulator --lib -- --list 2>/dev/null | grep ': test$' | sort >"$OUT/all-tests.txt"
comm -13 "$OUT/cpu-tests.txt" "$OUT/all-tests.txt" | sed 's/: test$//' >"$OUT/feature-tests.txt"
missed=$(grep -v cuda "$OUT/feature-tests.txt" || true)
if [[ -n $missed ]]; then
    echo "emulate: tests that exist only with the cuda feature but the \`cuda\` filter does not select:" >&2
    echo "$missed" >&2
    exit 1
fi
want=$(wc -l <"$OUT/feature-tests.txt")
ran=$(grep -c '^test .* ok$' "$OUT/unit.log" || true)
if ((ran < want)); then
    echo "emulate: $ran unit tests passed, but $want exist only with the cuda feature" >&2
    exit 1
fi
cuda_tests=$(grep -c '^test .* ok$' "$OUT/cuda.log" || true)
declared=$(cat tests/cuda/*.rs | grep -c '^#\[test\]' || true)
if ((cuda_tests != declared)); then
    echo "emulate: $cuda_tests of the $declared tests in tests/cuda/ passed" >&2
    exit 1
fi
echo "emulate: $ran runtime CUDA unit tests ($want of them exist only with the feature), $cuda_tests tests of tests/cuda"

# Coverage: the emulator's kernels (written by the test processes) against
# those launched, and against the NVRTC cubins' list when there is one.
sort -u "$OUT/kernels.txt" >"$OUT/held.txt"
sort -u "$OUT/launched.txt" >"$OUT/ran.txt"
problems=0
never=$(comm -23 "$OUT/held.txt" "$OUT/ran.txt")
if [[ -n $never ]]; then
    echo "emulate: kernels no test launched (module kernel):" >&2
    echo "$never" | sed 's/^/  /' >&2
    problems=1
fi
cubins=target/tmp/kernel-cubins/kernels.txt
if [[ -f $cubins ]]; then
    diff_cubins=$(diff <(sort -u "$cubins") "$OUT/held.txt" || true)
    if [[ -n $diff_cubins ]]; then
        echo "emulate: the emulator's kernels (>) differ from the sm_90 cubins' (<):" >&2
        echo "$diff_cubins" >&2
        problems=1
    else
        echo "emulate: the emulator holds exactly the $(wc -l <"$cubins") kernels of the cubins"
    fi
else
    echo "emulate: no $cubins (run scripts/kernel-check.sh first to compare with the cubins)"
fi
echo "emulate: $(wc -l <"$OUT/ran.txt") of $(wc -l <"$OUT/held.txt") kernels in $(cut -d' ' -f1 "$OUT/held.txt" | sort -u | wc -l) modules launched"
awk '{ n[$1]++; e[$1] += $2; if ($3 + 0 > w[$1]) w[$1] = $3 + 0; t++ }
     END { printf "emulate: %d comparisons of the emulated GPU with the CPU\n", t;
           for (p in n) printf "  %-4s %6d comparisons, %10d elements, worst relative L2 error %.2e\n", p, n[p], e[p], w[p] }' \
    "$OUT/checks.txt"
((problems == 0)) || exit 1
echo "emulate: passed in $(($(date +%s) - start))s"
