#!/usr/bin/env bash
# The kernel check (no GPU needed): compile every CUDA kernel module for sm_80
# and sm_90 with NVRTC, fail on register spills in hot modules, print each
# kernel's registers and spills, and check the machine code with nvdisasm
# (every kernel of kernels/README.md present, HMMA in the Tensor Core modules).
#
# NVRTC and nvdisasm come from NVIDIA's PyPI wheels (no CUDA toolkit), installed
# once into $AMP_NVRTC_DIR (default ~/.cache/amp-nvrtc). Run from anywhere:
#   bash scripts/kernel-check.sh
set -euo pipefail

start=$(date +%s)
cd "$(dirname "${BASH_SOURCE[0]}")/.."

VERSION=13.5.37
DIR=${AMP_NVRTC_DIR:-$HOME/.cache/amp-nvrtc}
LIB=$DIR/nvidia/cu13/lib
NVDISASM=$DIR/nvidia/cu13/bin/nvdisasm

installed() {
    [[ -d $DIR/nvidia_cuda_nvrtc-$VERSION.dist-info && -d $DIR/nvidia_cuda_nvdisasm-$VERSION.dist-info \
        && -e $LIB/libnvrtc.so.13 && -x $NVDISASM ]]
}

if installed; then
    echo "kernel-check: NVRTC $VERSION and nvdisasm already in $DIR"
else
    echo "kernel-check: installing NVRTC $VERSION and nvdisasm into $DIR"
    mkdir -p "$DIR"
    pip_args=(install --quiet --upgrade --target "$DIR"
        "nvidia-cuda-nvrtc==$VERSION" "nvidia-cuda-nvdisasm==$VERSION")
    # An externally managed Python (Debian's) may refuse even a --target
    # install; only then, and only where pip knows the flag, say it is meant.
    if ! log=$(python3 -m pip "${pip_args[@]}" 2>&1); then
        if grep -q externally-managed-environment <<<"$log" \
            && python3 -m pip install --help | grep -q -- --break-system-packages; then
            python3 -m pip "${pip_args[@]}" --break-system-packages
        else
            echo "$log" >&2
            echo "kernel-check: pip could not install the NVRTC wheels (above)" >&2
            exit 1
        fi
    fi
    installed || { echo "kernel-check: the wheels did not install $LIB/libnvrtc.so.13 and $NVDISASM" >&2; exit 1; }
    echo "kernel-check: installed in $(( $(date +%s) - start ))s"
fi

export LD_LIBRARY_PATH=$LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export AMP_NVDISASM=$NVDISASM
export AMP_REQUIRE_NVRTC=1

# The test profile, so the build is shared with the workspace's other tests.
cargo test -p amp-kernels --features nvrtc --lib --test nvrtc -- --nocapture --test-threads=1

echo "kernel-check: passed in $(( $(date +%s) - start ))s"
