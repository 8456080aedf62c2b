#!/usr/bin/env bash
# The CUDA backend checked on a GPU machine that has no Rust toolchain.
#
#   scripts/gpu-check.sh build   # here: build the GPU binaries into gpu-bin/
#   scripts/gpu-check.sh run     # there, from the repository root, no cargo
#
# `build` compiles, in release for this machine's architecture (x86-64), the
# CUDA test binary (tests/cuda.rs), the runtime's and the kernels' unit tests,
# the CUDA bench (benches/cuda.rs) and the training example, all with the
# `cuda` feature, and copies them into gpu-bin/ (git-ignored; carry it to the
# GPU machine with the working tree). It fails if they add up to 60 MiB or more.
#
# `run` finds the machine's CUDA libraries (libnvrtc and libcublasLt of its
# toolkit, else of PyTorch's pip wheels) and headers (CUDA_HOME), then runs,
# each under its own timeout and all within 8 minutes, most important first:
#   1. the kernels' unit tests (the NVRTC driver);
#   2. the CUDA tests, every op, model, optimizer and scaler against the CPU,
#      with AMP_REQUIRE_CUDA=1 (a missing GPU fails them instead of skipping);
#   3. the CUDA bench: GEMM F32/F16/BF16 TFLOP/s at 4096³ and 8192³, fused
#      unscale GB/s against a device-to-device copy, a training step in F32,
#      F16, BF16 and O1;
#   4. scripts/torch_matmul.py: torch.matmul on the same shapes;
#   5. the training example, --device cuda, every precision, 200 steps;
#   6. the kernel compile check (kernels/tests/nvrtc.rs) with this machine's
#      NVRTC and headers, AMP_REQUIRE_NVRTC=1;
#   7. the runtime's CUDA unit tests (those whose name contains `cuda`).
# Full logs go to $OUT (or gpu-logs/); a compact table is printed last. A
# failing or timed-out part is recorded as FAIL and the rest still run.
# Exit status: 0 all passed, 1 something failed, 2 no GPU.
#
# Environment: OUT (log folder), AMP_TEST_SEED (reproduce a test failure),
# GPU_CHECK_TEST_THREADS (the CUDA tests' --test-threads; default: one per core);
# for checking this script itself on a machine without a GPU:
# GPU_CHECK_FORCE=1 (run every part even when no GPU is found) and
# GPU_CHECK_BIN (another folder of binaries than gpu-bin/).

set -u
set -o pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT" || exit 1
BIN=${GPU_CHECK_BIN:-gpu-bin}
# The whole run, parts and table included, stays under 8 minutes.
BUDGET_S=450
MAX_BIN_MIB=60

# ---- build ---------------------------------------------------------------------------------

# The executable of target `$2` (kind `$3`) among cargo's JSON messages in `$1`.
executable_of() {
    local json=$1 name=$2 kind=$3
    grep '"reason":"compiler-artifact"' "$json" \
        | grep "\"kind\":\[\"$kind\"\]" \
        | grep "\"name\":\"$name\"" \
        | grep -o '"executable":"[^"]*"' \
        | sed 's/"executable":"\(.*\)"/\1/' \
        | tail -n 1
}

# Build with cargo `$3...` and copy the executable of target `$1` (kind `$2`)
# to gpu-bin/`$4`.
build_one() {
    local name=$1 kind=$2 dest=$3
    shift 3
    local json
    json=$(mktemp)
    echo "== cargo $* --message-format=json-render-diagnostics"
    if ! cargo "$@" --message-format=json-render-diagnostics >"$json"; then
        echo "build failed: cargo $*" >&2
        rm -f "$json"
        return 1
    fi
    local exe
    exe=$(executable_of "$json" "$name" "$kind")
    rm -f "$json"
    if [[ -z $exe || ! -x $exe ]]; then
        echo "no executable for $kind target \`$name\` in cargo's output" >&2
        return 1
    fi
    cp "$exe" "$BIN/$dest"
    # Debug info would triple the size; the symbol table stays, so a panic's
    # backtrace still names functions.
    if command -v strip >/dev/null; then
        strip --strip-debug "$BIN/$dest"
    fi
    echo "   -> $BIN/$dest ($(du -h "$BIN/$dest" | cut -f1))"
}

build() {
    command -v cargo >/dev/null || { echo "build needs cargo" >&2; exit 1; }
    if [[ $(uname -m) != x86_64 ]]; then
        echo "build on x86-64: the GPU machine is x86-64 (this is $(uname -m))" >&2
        exit 1
    fi
    rm -rf "$BIN"
    mkdir -p "$BIN"
    build_one cuda test cuda-tests test --release --features cuda --test cuda --no-run || exit 1
    build_one amp_runtime lib runtime-unit-tests \
        test --release -p amp-runtime --features cuda --lib --no-run || exit 1
    build_one amp_kernels lib kernels-unit-tests \
        test --release -p amp-kernels --features nvrtc --lib --no-run || exit 1
    build_one nvrtc test kernels-nvrtc-tests \
        test --release -p amp-kernels --features nvrtc --test nvrtc --no-run || exit 1
    build_one cuda bench cuda-bench bench -p amp-benches --features cuda --bench cuda --no-run || exit 1
    build_one train example train build --release --features cuda --example train || exit 1
    {
        echo "commit: $(git rev-parse HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ' (with uncommitted changes)')"
        echo "built: $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(uname -m)"
        echo "rustc: $(rustc --version 2>/dev/null)"
    } >"$BIN/BUILD_INFO"
    local kib
    kib=$(du -sk "$BIN" | cut -f1)
    echo "gpu-bin/: $((kib / 1024)) MiB"
    ls -l "$BIN"
    if ((kib >= MAX_BIN_MIB * 1024)); then
        echo "gpu-bin/ is $((kib / 1024)) MiB; it must stay under $MAX_BIN_MIB MiB to travel to the GPU machine" >&2
        exit 1
    fi
    echo "ok: carry gpu-bin/ to the GPU machine and run scripts/gpu-check.sh run there"
}

# ---- run: the machine ------------------------------------------------------------------------

# The first folder holding `$1`, among the arguments after it.
first_with() {
    local file=$1 dir
    shift
    for dir in "$@"; do
        if [[ -n $dir && -e $dir/$file ]]; then
            echo "$dir"
            return 0
        fi
    done
    return 1
}

# CUDA toolkit roots, preferred first: CUDA_HOME, CUDA_PATH, /usr/local/cuda,
# then the versioned 13.x, then others (newest first).
toolkit_roots() {
    local r
    for r in "${CUDA_HOME:-}" "${CUDA_PATH:-}" /usr/local/cuda; do
        [[ -n $r && -d $r ]] && echo "$r"
    done
    ls -d /usr/local/cuda-13* /usr/local/cuda-1[0-9]* 2>/dev/null | sort -Vr | uniq
}

# The lib folders of pip's nvidia-* wheels (PyTorch's CUDA libraries).
pip_nvidia_dirs() {
    command -v python3 >/dev/null || return 0
    python3 - <<'EOF' 2>/dev/null
import glob, os
try:
    import nvidia
except ImportError:
    raise SystemExit
for root in list(nvidia.__path__):
    for d in sorted(glob.glob(os.path.join(root, "*", "lib"))) + sorted(glob.glob(os.path.join(root, "*", "include"))):
        print(d)
EOF
}

# Export LD_LIBRARY_PATH (libnvrtc, libcublasLt) and CUDA_HOME (NVRTC's
# headers); describe what was found in $ENV_NOTE.
setup_cuda_env() {
    local -a roots libdirs pipdirs incdirs
    mapfile -t roots < <(toolkit_roots)
    mapfile -t pipdirs < <(pip_nvidia_dirs)
    local r d
    for r in "${roots[@]}"; do
        libdirs+=("$r/lib64" "$r/lib" "$r/targets/x86_64-linux/lib")
        incdirs+=("$r/include" "$r/targets/x86_64-linux/include")
    done
    for d in "${pipdirs[@]}"; do
        case $d in
            */lib) libdirs+=("$d") ;;
            */include) incdirs+=("$d") ;;
        esac
    done
    libdirs+=(/usr/lib/x86_64-linux-gnu /usr/lib64)
    local nvrtc_dir blas_dir
    nvrtc_dir=$(first_with libnvrtc.so.13 "${libdirs[@]}") \
        || nvrtc_dir=$(first_with libnvrtc.so "${libdirs[@]}") || nvrtc_dir=""
    blas_dir=$(first_with libcublasLt.so.13 "${libdirs[@]}") \
        || blas_dir=$(first_with libcublasLt.so "${libdirs[@]}") || blas_dir=""
    local add=""
    [[ -n $nvrtc_dir ]] && add="$nvrtc_dir"
    [[ -n $blas_dir && $blas_dir != "$nvrtc_dir" ]] && add="${add:+$add:}$blas_dir"
    export LD_LIBRARY_PATH="${add}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    # NVRTC before 13.4 has no bundled headers: the runtime passes
    # -I $CUDA_HOME/include (or $CUDA_INCLUDE_DIR) for cuda_fp16.h & co.
    local inc
    if inc=$(first_with cuda_fp16.h "${incdirs[@]}"); then
        case $inc in
            */targets/x86_64-linux/include) export CUDA_HOME=${inc%/targets/x86_64-linux/include} ;;
            */include) export CUDA_HOME=${inc%/include} ;;
        esac
        # A pip wheel's include folder is not a toolkit root: name it directly.
        [[ -e ${CUDA_HOME:-/nonexistent}/include/cuda_fp16.h ]] || export CUDA_INCLUDE_DIR=$inc
    fi
    local nvrtc_file="not found" blas_file="not found"
    [[ -n $nvrtc_dir ]] && nvrtc_file=$(readlink -f "$nvrtc_dir"/libnvrtc.so.13 2>/dev/null || readlink -f "$nvrtc_dir"/libnvrtc.so)
    [[ -n $blas_dir ]] && blas_file=$(readlink -f "$blas_dir"/libcublasLt.so.13 2>/dev/null || readlink -f "$blas_dir"/libcublasLt.so)
    NVRTC_FILE=$nvrtc_file
    ENV_NOTE="libnvrtc: $nvrtc_file
libcublasLt: $blas_file
CUDA_HOME: ${CUDA_HOME:-unset}  CUDA_INCLUDE_DIR: ${CUDA_INCLUDE_DIR:-unset}
LD_LIBRARY_PATH: $LD_LIBRARY_PATH
glibc: $(ldd --version 2>/dev/null | head -n 1) (gpu-bin/ needs 2.34 or newer when built on Debian 12)
toolkits: ${roots[*]:-none}
pip nvidia folders: ${pipdirs[*]:-none}"
}

# ---- run: the parts --------------------------------------------------------------------------

declare -A STATUS=()   # part -> ok | FAIL (...) | TIMEOUT | no GPU | SKIP (...)
declare -A R=()        # RESULT key -> value
declare -A SECS=()     # part -> seconds taken
PARTS=(kernels-unit cuda-tests cuda-bench torch-matmul train-example kernels-nvrtc runtime-unit)
START=$SECONDS

# Run part `$1` with cap `$2` seconds: `$3...` under `timeout`, output in
# $LOGS/$1.log. The cap shrinks to what is left of the budget.
part() {
    local name=$1 cap=$2
    shift 2
    local left=$((BUDGET_S - (SECONDS - START)))
    local limit=$((cap < left ? cap : left))
    if ((limit < 5)); then
        STATUS[$name]="SKIP (out of time)"
        echo "== $name: skipped, the ${BUDGET_S}s budget is spent"
        return
    fi
    local log="$LOGS/$name.log" t0=$SECONDS rc
    echo "== $name (timeout ${limit}s): $*"
    {
        echo "\$ $*"
        echo "(timeout ${limit}s, started $(date -u +%H:%M:%S))"
    } >"$log"
    timeout --signal=TERM --kill-after=10 "$limit" "$@" >>"$log" 2>&1
    rc=$?
    SECS[$name]=$((SECONDS - t0))
    echo "(exit status $rc after ${SECS[$name]}s)" >>"$log"
    # Figures the part printed, for the table.
    local line
    while IFS= read -r line; do
        line=${line#RESULT }
        R[${line%%=*}]=${line#*=}
    done < <(grep -a '^RESULT [A-Za-z0-9_]*=' "$log")
    if ((rc == 124 || rc == 137)); then
        STATUS[$name]="TIMEOUT (${limit}s)"
    elif ((rc == 0)); then
        STATUS[$name]=ok
    else
        STATUS[$name]="FAIL (exit $rc)"
    fi
    echo "   ${STATUS[$name]} in ${SECS[$name]}s; log: $log"
}

# "N passed, M failed" from a libtest log, or "".
test_counts() {
    local log=$1
    grep -aE '^test result: ' "$log" 2>/dev/null | awk '
        { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } n++ }
        END { if (n) printf "%d passed, %d failed", p, f }'
}

# The names of failed tests in a libtest log, comma-separated (at most 6).
failed_tests() {
    awk '/^failures:$/ { on = 1; next } on && /^    [a-z_0-9:]+$/ { print $1 } on && /^test result/ { on = 0 }' "$1" 2>/dev/null \
        | sort -u | head -n 6 | paste -sd, -
}

# A value from R, or a placeholder.
val() {
    local v=${R[$1]:-}
    echo "${v:--}"
}

# a / b with 2 decimals, or "-".
ratio() {
    awk -v a="$1" -v b="$2" 'BEGIN { if (a + 0 > 0 && b + 0 > 0) printf "%.2fx", a / b; else printf "-" }'
}

# ---- run: the table --------------------------------------------------------------------------

# The status of a test part, with its counts.
test_row() {
    local name=$1 what=$2 st=${STATUS[$1]:-not run}
    local counts=""
    [[ -f $LOGS/$name.log ]] && counts=$(test_counts "$LOGS/$name.log")
    local failed=""
    [[ $st != ok && -f $LOGS/$name.log ]] && failed=$(failed_tests "$LOGS/$name.log")
    printf '%-34s %-18s %s%s\n' "$what" "$st" "${counts:-}" "${failed:+  failed: $failed}"
}

# The train example's Markdown table row of `$1` (F32/F16/BF16): loss,
# held-out accuracy, ms/step, skipped steps.
train_row() {
    local p=$1 log=$LOGS/train-example.log
    awk -F'|' -v p="$p" '$2 ~ "^ *"p" *$" {
        for (i = 3; i <= 9; i++) gsub(/^ +| +$/, "", $i)
        printf "loss %s, held-out %s, %s ms/step, %s skipped", $3, $4, $5, $9; exit }' "$log" 2>/dev/null
}

print_table() {
    local gpu_line=$1 no_gpu=$2
    echo
    echo "================================ gpu-check summary ================================"
    echo "$gpu_line"
    echo "NVRTC: ${NVRTC_FILE:-?}   logs: $LOGS/"
    echo
    if ((no_gpu)); then
        local row
        for row in "kernel unit tests (NVRTC driver)" "kernel compile check (NVRTC)" \
            "CUDA tests (tests/cuda.rs)" "runtime CUDA unit tests" \
            "GEMM F32/F16/BF16 4096, 8192" "torch.matmul, amp/torch" "unscale vs d2d copy" \
            "train step F32/F16/BF16/O1" "train example --device cuda"; do
            printf '%-34s %s\n' "$row" "no GPU"
        done
        echo "==================================================================================="
        return
    fi
    test_row kernels-unit "kernel unit tests (NVRTC driver)"
    test_row kernels-nvrtc "kernel compile check (NVRTC)"
    test_row cuda-tests "CUDA tests (tests/cuda.rs)"
    test_row runtime-unit "runtime CUDA unit tests"
    echo
    printf 'GEMM TFLOP/s   bench: %-16s torch: %s\n' "${STATUS[cuda-bench]:-not run}" "${STATUS[torch-matmul]:-not run}"
    printf '%-6s | %8s %8s %9s %8s | %8s %8s %9s %8s\n' dtype "amp 4096" "torch" "amp/torch" "error" "amp 8192" "torch" "amp/torch" "error"
    local d n
    for d in f32 f16 bf16; do
        local cells=()
        for n in 4096 8192; do
            cells+=("$(val "gemm_${d}_${n}")" "$(val "torch_${d}_${n}")" \
                "$(ratio "${R[gemm_${d}_${n}]:-}" "${R[torch_${d}_${n}]:-}")" "$(val "gemm_${d}_${n}_err")")
        done
        printf '%-6s | %8s %8s %9s %8s | %8s %8s %9s %8s\n' "${d^^}" "${cells[@]}"
    done
    echo
    printf '%-22s %14s %14s %10s\n' "unscale (256 MiB)" "unscale GB/s" "d2d copy GB/s" "ratio"
    for d in f32 f16 bf16; do
        printf '%-22s %14s %14s %10s\n' "${d^^} gradients" "$(val "unscale_${d}_gbs")" "$(val "copy_${d}_gbs")" \
            "$(ratio "${R[unscale_${d}_gbs]:-}" "${R[copy_${d}_gbs]:-}")"
    done
    echo "(d2d copy = amp's copy kernel on the same bytes; ratio > 1: the unscale is faster)"
    echo
    printf '%-22s %10s %10s %10s %10s   %s\n' "train step, median ms" F32 F16 BF16 O1 "F16/F32 BF16/F32 O1/F32"
    local s
    for s in small large; do
        local f32=${R[train_${s}_f32_ms]:-}
        printf '%-22s %10s %10s %10s %10s   %s %s %s\n' "bench, $s model" "$(val "train_${s}_f32_ms")" \
            "$(val "train_${s}_f16_ms")" "$(val "train_${s}_bf16_ms")" "$(val "train_${s}_o1_ms")" \
            "$(ratio "${R[train_${s}_f16_ms]:-}" "$f32")" "$(ratio "${R[train_${s}_bf16_ms]:-}" "$f32")" \
            "$(ratio "${R[train_${s}_o1_ms]:-}" "$f32")"
    done
    echo
    printf '%-34s %s\n' "train example (cuda, 200 steps)" "${STATUS[train-example]:-not run}"
    local p
    for p in F32 F16 BF16; do
        local row
        row=$(train_row "$p")
        printf '  %-6s %s\n' "$p" "${row:--}"
    done
    echo "==================================================================================="
}

run() {
    LOGS=${OUT:-gpu-logs}
    mkdir -p "$LOGS"
    LOGS=$(cd "$LOGS" && pwd)
    setup_cuda_env
    local smi gpu_line no_gpu=0 reason=""
    {
        echo "$ENV_NOTE"
        [[ -f $BIN/BUILD_INFO ]] && cat "$BIN/BUILD_INFO"
    } >"$LOGS/env.log"
    if ! command -v nvidia-smi >/dev/null; then
        no_gpu=1
        reason="nvidia-smi not found (no NVIDIA driver)"
    elif ! smi=$(timeout 20 nvidia-smi -L 2>&1) || ! grep -q '^GPU ' <<<"$smi"; then
        no_gpu=1
        reason="nvidia-smi lists no GPU: $smi"
    fi
    if ((no_gpu)); then
        gpu_line="no GPU: $reason"
    else
        gpu_line=$(timeout 20 nvidia-smi --query-gpu=name,compute_cap,driver_version,memory.total \
            --format=csv,noheader 2>/dev/null | head -n 1)
        gpu_line="GPU: ${gpu_line:-$(head -n 1 <<<"$smi")}"
        {
            echo
            echo "$smi"
            timeout 20 nvidia-smi 2>&1
        } >>"$LOGS/env.log"
    fi
    echo "$gpu_line"
    echo "$ENV_NOTE"
    if ((no_gpu)) && [[ ${GPU_CHECK_FORCE:-0} != 1 ]]; then
        echo "no GPU here: nothing to run (GPU_CHECK_FORCE=1 runs every part anyway)"
        print_table "$gpu_line" 1 | tee "$LOGS/summary.txt"
        return 2
    fi
    if [[ ! -d $BIN ]]; then
        echo "$BIN/ is missing: run \`scripts/gpu-check.sh build\` on the build machine and carry $BIN/ here" >&2
    fi
    # A copy of the tree may not keep the executable bits.
    chmod +x "$BIN"/* 2>/dev/null
    local missing=0 b
    for b in kernels-unit-tests kernels-nvrtc-tests cuda-tests runtime-unit-tests cuda-bench train; do
        [[ -x $BIN/$b ]] || { echo "missing $BIN/$b" >&2; missing=1; }
    done
    export RUST_BACKTRACE=1
    export AMP_REQUIRE_CUDA=1
    # The CUDA tests and the runtime's unit tests run on the GPU;
    # AMP_REQUIRE_CUDA=1 turns a missing device into failures, not skips.
    part kernels-unit 30 "$BIN/kernels-unit-tests"
    local threads=()
    [[ -n ${GPU_CHECK_TEST_THREADS:-} ]] && threads=(--test-threads "$GPU_CHECK_TEST_THREADS")
    part cuda-tests 150 "$BIN/cuda-tests" ${threads[@]+"${threads[@]}"}
    part cuda-bench 180 "$BIN/cuda-bench"
    part torch-matmul 60 python3 -u scripts/torch_matmul.py
    part train-example 90 "$BIN/train" --device cuda --precision all --steps 200 --quiet --out "$LOGS/train"
    # nvdisasm (the Tensor Core check) of the toolkit whose NVRTC is used.
    if [[ -z ${AMP_NVDISASM:-} && -n ${CUDA_HOME:-} && -x $CUDA_HOME/bin/nvdisasm ]]; then
        export AMP_NVDISASM=$CUDA_HOME/bin/nvdisasm
    fi
    AMP_REQUIRE_NVRTC=1 AMP_KERNEL_OUT="${TMPDIR:-/tmp}/amp-gpu-check-cubins" \
        part kernels-nvrtc 60 "$BIN/kernels-nvrtc-tests" --nocapture
    part runtime-unit 45 "$BIN/runtime-unit-tests" cuda
    # Why each failure failed, before the table (the table comes last).
    local name
    for name in "${PARTS[@]}"; do
        if [[ ${STATUS[$name]:-} != ok && -f $LOGS/$name.log ]]; then
            echo
            echo "---- $name: ${STATUS[$name]:-?}, last lines of $LOGS/$name.log ----"
            grep -av '^RESULT ' "$LOGS/$name.log" | tail -n 25
        fi
    done
    echo "total: $((SECONDS - START))s"
    # Forced without a GPU, the parts ran: show what they gave.
    print_table "$gpu_line" 0 | tee "$LOGS/summary.txt"
    local all_ok=1
    for name in "${PARTS[@]}"; do
        [[ ${STATUS[$name]:-} == ok ]] || all_ok=0
    done
    ((missing)) && all_ok=0
    ((no_gpu)) && return 2
    ((all_ok)) && return 0
    return 1
}

case ${1:-} in
    build) build ;;
    run) run; exit $? ;;
    *)
        echo "usage: scripts/gpu-check.sh build|run" >&2
        echo "  build  (here, with cargo) compile the GPU binaries into gpu-bin/" >&2
        echo "  run    (on the GPU machine, from the repository root) run them; logs in \$OUT or gpu-logs/" >&2
        exit 64
        ;;
esac
