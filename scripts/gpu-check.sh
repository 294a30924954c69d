#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# One command for a machine with an NVIDIA GPU: build (or reuse) Kokkos 4.6.01 for CUDA, build
# shardopt's GPU suite against it, run it, and print one summary. No network is used.
#
#   scripts/gpu-check.sh            on the GPU machine (16 cores: about 5 minutes)
#   scripts/gpu-check.sh --bundle   on a machine with apt and the Kokkos tarball, before sending
#                                   the working tree: fills <repo>/.gpu-bundle (see docs/gpu.md)
#
# What it runs, each with a time limit, in this order:
#   nccl.check            comm::Nccl's collectives on device and host buffers, an optimizer with
#                         comm::Nccl, a checkpoint round trip (world size 1)
#   device_tests.np1-4    every layout on Kokkos::Device<Cuda, CudaUVMSpace> at 1-4 ranks on one
#                         GPU, and on Kokkos::Cuda (device memory) with comm::Nccl where there is a
#                         GPU per rank: the bits of one process on the host (tests/device/device_tests.cpp)
#   example.train.np3     examples/train (host) built by nvcc_wrapper
#   bench_step            the single-GPU benchmark: large (one tensor of 32M elements) and many (10k
#                         tensors of 1k), shardopt's step against the bandwidth ceiling on the GPU
# The full logs go to <build>/gpu-check/ (SHARDOPT_GPU_CHECK_OUT); the summary is also written
# there as summary.txt. Exit status: 0 when everything ran and passed, 1 otherwise.
#
# What the machine must have: a GPU and its driver, nvcc (CUDA 12 or 13), cmake, g++, python3.
# MPI, Boost.Test, nlohmann_json and NCCL are taken from the system where it has them, else from
# .gpu-bundle (Debian packages unpacked into a private prefix); NCCL also from a pip
# nvidia-nccl-cu12/cu13 package of python3. The Kokkos source is ../shared/third_party or
# .gpu-bundle/kokkos-4.6.01.tar.gz (KOKKOS_SOURCE).
set -uo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bundle="${SHARDOPT_GPU_BUNDLE:-$root/.gpu-bundle}"
say() { echo "gpu-check.sh: $*" >&2; }

# The Debian packages that the suite needs beyond a CUDA image (and their libraries).
# (Debian 12's; 18 MB. Unpacked here, with OPAL_PREFIX, their mpiexec ran 3 ranks.)
bundle_packages=(libopenmpi-dev openmpi-bin openmpi-common libopenmpi3 libhwloc15 libevent-core-2.1-7
                 libevent-pthreads-2.1-7 libpmix2 libfabric1 libucx0 libibverbs1 librdmacm1 libnl-3-200
                 libnl-route-3-200 libpsm2-2 libpsm-infinipath1 libnuma1 libltdl7 libmunge2
                 libboost1.74-dev libboost-test1.74-dev libboost-test1.74.0 nlohmann-json3-dev)

if [[ "${1:-}" == --bundle ]]; then
  set -e
  mkdir -p "$bundle/deb"
  src="${KOKKOS_SOURCE:-$root/../shared/third_party/kokkos-4.6.01.tar.gz}"
  [[ -f "$src" ]] || { say "ERROR: no Kokkos tarball at $src (set KOKKOS_SOURCE)"; exit 1; }
  cp "$src" "$bundle/"
  [[ -f "$src.sha256" ]] && cp "$src.sha256" "$bundle/"
  (cd "$bundle/deb" && apt-get download "${bundle_packages[@]}")   # apt's own sources: no registry named here
  say "$(du -sh "$bundle" | cut -f1) in $bundle: send it with the working tree (the device tool: carry .gpu-bundle)"
  exit 0
fi

start_all=$SECONDS
build="${SHARDOPT_CUDA_BUILD_DIR:-$root/build-cuda}"
out="${SHARDOPT_GPU_CHECK_OUT:-$build/gpu-check}"
mkdir -p "$out"
summary=()
failed=0
note() { summary+=("$(printf '%-22s %-8s %s' "$1" "$2" "$3")"); [[ "$2" == PASS || "$2" == SKIP ]] || failed=1; }
finish() {
  {
    echo "==== shardopt gpu-check: $(date -u +%FT%TZ), $((SECONDS - start_all)) s"
    printf '%s\n' "${summary[@]}"
    ((failed)) && echo "==== FAILED (logs in $out)" || echo "==== all passed"
  } | tee "$out/summary.txt"
  exit "$failed"
}

# ------------------------------------------------------------------ the GPU
if ! gpus="$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1)"; then
  note gpu FAIL "nvidia-smi: $gpus"
  finish
fi
note gpu PASS "$(echo "$gpus" | head -n 1) ($(echo "$gpus" | wc -l) GPU(s))"

# ---------------------------------------------- dependencies from .gpu-bundle
if [[ -d "$bundle/deb" ]] && ! { command -v mpiexec >/dev/null && [[ -e /usr/include/boost/test/unit_test.hpp ]]; }; then
  deps="$bundle/root"
  if [[ ! -f "$deps/.unpacked" ]]; then
    rm -rf "$deps"
    for deb in "$bundle"/deb/*.deb; do dpkg-deb -x "$deb" "$deps" || { note bundle FAIL "dpkg-deb -x $deb"; finish; }; done
    # The packages' absolute symbolic links (alternatives, /etc) point into the system: into the prefix instead.
    find "$deps" -type l -lname '/*' | while read -r link; do ln -sfn "$deps$(readlink "$link")" "$link"; done
    touch "$deps/.unpacked"
  fi
  multiarch=x86_64-linux-gnu
  # OpenMPI relocated: OPAL_PREFIX moves its libraries, components, help files and orted under the
  # prefix. The alternatives (mpicxx, mpiexec) that Debian's postinst would make are links here.
  export OPAL_PREFIX="$deps/usr"
  mkdir -p "$deps/bin"
  for tool in mpicxx mpicc mpiexec mpirun; do ln -sfn "$deps/usr/bin/$tool.openmpi" "$deps/bin/$tool"; done
  export PATH="$deps/bin:$deps/usr/bin:$PATH"
  export LD_LIBRARY_PATH="$deps/usr/lib/$multiarch/openmpi/lib:$deps/usr/lib/$multiarch:${LD_LIBRARY_PATH:-}"
  export CMAKE_PREFIX_PATH="$deps/usr:${CMAKE_PREFIX_PATH:-}"
  export SHARDOPT_CMAKE_ARGS="${SHARDOPT_CMAKE_ARGS:-} -DMPI_CXX_COMPILER=$deps/bin/mpicxx -DMPIEXEC_EXECUTABLE=$deps/bin/mpiexec"
  note bundle PASS "Debian packages unpacked in $deps"
fi
[[ -z "${KOKKOS_SOURCE:-}" && ! -e "$root/../shared/third_party/kokkos-4.6.01.tar.gz" && -f "$bundle/kokkos-4.6.01.tar.gz" ]] &&
  export KOKKOS_SOURCE="$bundle/kokkos-4.6.01.tar.gz"

# NCCL: the toolkit's, NCCL_ROOT, or python3's pip package (which has no unversioned libnccl.so).
if [[ -z "${NCCL_ROOT:-}" ]] && ! ls "${CUDA_HOME:-/usr/local/cuda}"/lib64/libnccl.so >/dev/null 2>&1; then
  pip_nccl="$(python3 -c 'import nvidia.nccl, os; print(os.path.dirname(nvidia.nccl.__file__) if nvidia.nccl.__file__ else list(nvidia.nccl.__path__)[0])' 2>/dev/null || true)"
  if [[ -n "$pip_nccl" && -e "$pip_nccl/include/nccl.h" ]]; then
    shim="$out/nccl"
    mkdir -p "$shim/lib"
    ln -sfn "$pip_nccl/include" "$shim/include"
    lib="$(ls "$pip_nccl"/lib/libnccl.so* | head -n 1)"
    ln -sfn "$lib" "$shim/lib/libnccl.so"
    export NCCL_ROOT="$shim" LD_LIBRARY_PATH="$pip_nccl/lib:${LD_LIBRARY_PATH:-}"
    note nccl PASS "pip package in $pip_nccl"
  fi
fi

export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1

# ------------------------------------------------------------------ build
t0=$SECONDS
# Every case of the GPU suite (CI builds one: SHARDOPT_DEVICE_TEST_CASES).
export SHARDOPT_CMAKE_ARGS="${SHARDOPT_CMAKE_ARGS:-} -DSHARDOPT_DEVICE_TEST_CASES=all"
if SHARDOPT_CUDA_REQUIRE=1 SHARDOPT_JOBS="${SHARDOPT_JOBS:-$(nproc)}" SHARDOPT_NICE=0 timeout 420 bash "$root/scripts/build-cuda.sh" >"$out/build.log" 2>&1; then
  note build PASS "$((SECONDS - t0)) s: $(grep -m1 'nvcc [0-9]' "$out/build.log" | sed 's/^build-cuda.sh: //')"
else
  note build FAIL "$((SECONDS - t0)) s, see $out/build.log: $(grep -m1 -E 'error|ERROR' "$out/build.log")"
  finish
fi

# ------------------------------------------------------------------ run
run_test() {  # ctest name, time limit
  local t=$SECONDS log="$out/$1.log"
  if ctest --test-dir "$build" -R "^${1//./\\.}\$" --output-on-failure --timeout "$2" >"$log" 2>&1; then
    if grep -q "Skipped\|Not Run" "$log"; then note "$1" SKIP "$((SECONDS - t)) s: $(grep -m1 -i skip "$log")"
    else note "$1" PASS "$((SECONDS - t)) s"; fi
  else
    note "$1" FAIL "$((SECONDS - t)) s, see $log"
  fi
}
run_test nccl.check 60
for np in 1 2 3 4; do run_test "device_tests.np$np" 120; done
run_test example.train.np3 120

t=$SECONDS
if timeout 180 "$build/bench/bench_step" --sizes large,many >"$out/bench_step.txt" 2>&1; then
  note bench_step PASS "$((SECONDS - t)) s, figures in $out/bench_step.txt"
  while read -r line; do summary+=("    $line"); done < <(grep -E '^(SGD|Adam|AdamW|Adagrad|LAMB) ' "$out/bench_step.txt")
else
  note bench_step FAIL "$((SECONDS - t)) s, see $out/bench_step.txt"
fi
finish
