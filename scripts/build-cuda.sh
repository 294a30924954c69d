#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# Build Kokkos 4.6.01 for CUDA and shardopt's GPU suite against it (no GPU needed to build):
#
#   scripts/build-cuda.sh [cmake --build arguments, e.g. --target shardopt_device_tests]
#
# 1. Kokkos, from KOKKOS_SOURCE or ../shared/third_party/kokkos-4.6.01.tar.gz (as
#    scripts/test-kokkos.sh), is built once with CUDA and Serial for SHARDOPT_KOKKOS_ARCH (default
#    HOPPER90: H100, H200) into ${XDG_CACHE_HOME:-$HOME/.cache}/shardopt/<kokkos>-cuda-<arch>
#    (SHARDOPT_KOKKOS_PREFIX), or taken from Kokkos_ROOT (an install with CUDA) as it is.
#    Kokkos 4.6.01 predates CUDA 13; with nvcc 13 the build edits a copy of its source (see
#    cuda13_compat below: three CUDA runtime calls whose signatures CUDA 13 changed, and
#    nvcc_wrapper's default architecture sm_70, which CUDA 13 dropped). Later Kokkos releases carry
#    the same changes; a source that has them is left alone.
# 2. shardopt is configured in SHARDOPT_CUDA_BUILD_DIR (default <repo>/build-cuda) with Kokkos'
#    nvcc_wrapper as the C++ compiler: a GPU Kokkos, so tests/CMakeLists.txt registers the GPU suite
#    (device_tests.np1-4, nccl.check); examples/train and bench/bench_step are built too.
#
# Without nvcc or a Kokkos source it says so and reports itself skipped (exit 0;
# SHARDOPT_CUDA_REQUIRE=1 makes that an error, as scripts/gpu-check.sh does).
#
# Environment: CUDA_HOME (default: the directory above nvcc on PATH, else /usr/local/cuda),
# SHARDOPT_JOBS (default: the number of cores), NVCC_WRAPPER_DEFAULT_COMPILER (host compiler,
# default g++). Heavy steps run under `nice -n ${SHARDOPT_NICE:-19}`.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
jobs="${SHARDOPT_JOBS:-$(nproc)}"
nice_cmd=(nice -n "${SHARDOPT_NICE:-19}")
arch="${SHARDOPT_KOKKOS_ARCH:-HOPPER90}"
build="${SHARDOPT_CUDA_BUILD_DIR:-$root/build-cuda}"
say() { echo "build-cuda.sh: $*" >&2; }
skip() {
  say "SKIPPED: $*"
  [[ "${SHARDOPT_CUDA_REQUIRE:-0}" == 1 ]] && exit 1
  exit 0
}
# shellcheck source=kokkos-build.sh
source "$root/scripts/kokkos-build.sh"

# ------------------------------------------------------------------ CUDA
if [[ -z "${CUDA_HOME:-}" ]]; then
  if command -v nvcc >/dev/null 2>&1; then CUDA_HOME="$(cd "$(dirname "$(command -v nvcc)")/.." && pwd)"
  else CUDA_HOME=/usr/local/cuda; fi
fi
nvcc="$CUDA_HOME/bin/nvcc"
[[ -x "$nvcc" ]] || skip "no nvcc in $CUDA_HOME/bin (set CUDA_HOME)"
export PATH="$CUDA_HOME/bin:$PATH" CUDA_ROOT="$CUDA_HOME"
cuda_version="$("$nvcc" --version | sed -n 's/.*release \([0-9]*\.[0-9]*\).*/\1/p')"
say "nvcc $cuda_version ($nvcc), Kokkos architecture $arch"
case "$arch" in   # nvcc's name of the architecture, for nvcc_wrapper's default
  HOPPER90) sm=sm_90 ;; ADA89) sm=sm_89 ;; AMPERE80) sm=sm_80 ;; AMPERE86) sm=sm_86 ;;
  BLACKWELL100) sm=sm_100 ;; BLACKWELL120) sm=sm_120 ;;
  *) say "ERROR: SHARDOPT_KOKKOS_ARCH=$arch is not one this script knows (HOPPER90, ADA89, AMPERE80, AMPERE86, BLACKWELL100, BLACKWELL120)"; exit 1 ;;
esac

# Kokkos 4.6.01 against CUDA 13's runtime API: cudaGraphAddDependencies takes edge data,
# cudaMemAdvise and cudaMemPrefetchAsync take a cudaMemLocation (and the latter flags). Each edit is
# guarded by CUDART_VERSION, so the source still builds with CUDA 11 and 12.
cuda13_compat() {
  local src="$1"
  sed -i "s/^default_arch=\"sm_70\"/default_arch=\"$sm\"/" "$src/bin/nvcc_wrapper"
  python3 - "$src/core/src/Cuda/Kokkos_Cuda_Instance.hpp" <<'EOF'
import sys
path = sys.argv[1]
s = open(path).read()
if "CUDART_VERSION >= 13000" in s:
    sys.exit(0)  # a Kokkos that knows CUDA 13
def edit(old, new13):
    global s
    if s.count(old) != 1:
        sys.exit(f"build-cuda.sh: {path} is not the Kokkos 4.6 this edit knows (looked for {old!r})")
    s = s.replace(old, "#if CUDART_VERSION >= 13000\n" + new13 + "#else\n" + old + "#endif\n")
def location(var):
    return ("    cudaMemLocation location;\n"
            f"    location.type = {var} == cudaCpuDeviceId ? cudaMemLocationTypeHost : cudaMemLocationTypeDevice;\n"
            f"    location.id   = {var};\n")
edit("    return cudaGraphAddDependencies(graph, from, to, numDependencies);\n",
     "    return cudaGraphAddDependencies(graph, from, to, nullptr, numDependencies);\n")
edit("    return cudaMemAdvise(devPtr, count, advice, device);\n",
     location("device") + "    return cudaMemAdvise(devPtr, count, advice, location);\n")
edit("    return cudaMemPrefetchAsync(devPtr, count, dstDevice,\n                                get_input_stream(stream));\n",
     location("dstDevice") + "    return cudaMemPrefetchAsync(devPtr, count, location, 0, get_input_stream(stream));\n")
open(path, "w").write(s)
EOF
}

# ------------------------------------------------------------------ Kokkos
if [[ -n "${Kokkos_ROOT:-}" ]]; then
  prefix="$(cd "$Kokkos_ROOT" && pwd)"
  say "using the Kokkos installed in $prefix (Kokkos_ROOT)"
else
  kokkos_find_source || skip "$kokkos_missing (set KOKKOS_SOURCE or Kokkos_ROOT)"
  prefix="${SHARDOPT_KOKKOS_PREFIX:-${XDG_CACHE_HOME:-$HOME/.cache}/shardopt/$kokkos_name-cuda-${sm}}"
  patch=""
  [[ "${cuda_version%%.*}" -ge 13 ]] && patch=cuda13_compat
  kokkos_install "$prefix" "$patch" -- -DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_STANDARD=20 -DCMAKE_CXX_EXTENSIONS=OFF \
    -DKokkos_ENABLE_CUDA=ON -DKokkos_ENABLE_SERIAL=ON -DKokkos_ARCH_"$arch"=ON \
    -DKokkos_ENABLE_TESTS=OFF -DKokkos_ENABLE_EXAMPLES=OFF -DCMAKE_INSTALL_LIBDIR=lib \
    -DCMAKE_CXX_COMPILER=@KOKKOS_SOURCE_DIR@/bin/nvcc_wrapper -DCUDAToolkit_ROOT="$CUDA_HOME"
fi
wrapper="$prefix/bin/nvcc_wrapper"
[[ -x "$wrapper" ]] || { say "ERROR: no $wrapper: not a Kokkos installed with CUDA"; exit 1; }

# ------------------------------------------------------------------ shardopt
config="$(find "$prefix" -maxdepth 5 -name KokkosConfig.cmake -print -quit)"
[[ -n "$config" ]] || { say "ERROR: no KokkosConfig.cmake under $prefix"; exit 1; }
"${nice_cmd[@]}" cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_COMPILER="$wrapper" \
  -DKokkos_DIR="$(dirname "$config")" -DCUDAToolkit_ROOT="$CUDA_HOME" -DSHARDOPT_INSTALL=OFF \
  ${SHARDOPT_CMAKE_ARGS:-}
grep -q 'device_tests.np1' "$build/tests/CTestTestfile.cmake" ||
  { say "ERROR: shardopt did not configure its GPU suite against $prefix"; exit 1; }
"${nice_cmd[@]}" cmake --build "$build" -j "$jobs" "$@"
say "built in $build against $prefix"
