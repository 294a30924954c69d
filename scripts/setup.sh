#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# Install the system packages needed to build and test shardopt (Debian 12 /
# apt-based systems).  Idempotent and quiet: does nothing when everything is
# installed, runs `apt-get update` only when something is missing.
#
# Set SHARDOPT_SKIP_SETUP=1 to skip (e.g. when dependencies come from elsewhere).
set -euo pipefail

PACKAGES=(
  g++ make cmake
  libtrilinos-kokkos-dev          # Kokkos 3.4 (Serial)
  libopenmpi-dev openmpi-bin      # MPI
  libboost-test-dev               # Boost.Test
  nlohmann-json3-dev              # golden files
  doxygen                         # documentation test
  liblinear-tools                 # heart_scale dataset for examples/train
)

if [[ "${SHARDOPT_SKIP_SETUP:-0}" == 1 ]]; then
  exit 0
fi

# Python packages for the PyTorch interop test and the benchmarks' PyTorch side (pip, PyPI).
# A failure is reported but not fatal: the interop test then reports itself skipped.
python_packages() {
  local py
  py="$(command -v python3 || true)"
  if [[ -z "$py" ]]; then
    echo "setup.sh: no python3; the PyTorch interop test will be skipped" >&2
    return 0
  fi
  if "$py" -c "import torch, safetensors, numpy" >/dev/null 2>&1; then
    return 0
  fi
  echo "setup.sh: installing torch safetensors numpy with pip"
  local log
  log="$(mktemp "${TMPDIR:-/tmp}/shardopt-pip.XXXXXX.log")"
  if "$py" -m pip install --quiet torch safetensors numpy >"$log" 2>&1 ||
     "$py" -m pip install --quiet --break-system-packages torch safetensors numpy >>"$log" 2>&1; then
    rm -f "$log"
  else
    tail -n 20 "$log" >&2
    echo "setup.sh: pip failed (log in $log); the PyTorch interop test will be skipped" >&2
  fi
}

# Kokkos 4.x/5.x headers configured for CUDA, from Debian's newer libkokkos-dev (ctest device.compile).
# A failure is reported but not fatal: that test then reports itself skipped.
kokkos_cuda_headers() {
  bash "$(dirname "${BASH_SOURCE[0]}")/kokkos_cuda_headers.sh" ||
    echo "setup.sh: no Kokkos headers for CUDA; the device compile check will be skipped" >&2
}

# Debian 12's hipcc with LLVM's libc++ and Kokkos 4.6.01 headers configured for HIP (ctest
# device.compile_hip; scripts/kokkos_hip_headers.sh says why libc++). Optional: a failure is
# reported but not fatal, and that test then reports itself skipped.
HIP_PACKAGES=(hipcc libamdhip64-dev rocm-device-libs libc++-15-dev libc++abi-15-dev)
hip_compile_check() {
  local missing_hip=() pkg status
  for pkg in "${HIP_PACKAGES[@]}"; do
    status="$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)"
    [[ "$status" == "install ok installed" ]] || missing_hip+=("$pkg")
  done
  if ((${#missing_hip[@]} > 0)); then
    echo "setup.sh: installing ${missing_hip[*]} (the HIP compile check)"
    local log
    log="$(mktemp "${TMPDIR:-/tmp}/shardopt-setup-hip.XXXXXX.log")"
    if ! { "${apt[@]}" update && "${apt[@]}" install --no-install-recommends "${missing_hip[@]}"; } >"$log" 2>&1; then
      tail -n 20 "$log" >&2
      echo "setup.sh: could not install the HIP packages (log in $log); the HIP compile check will be skipped" >&2
      return 0
    fi
    rm -f "$log"
  fi
  local rc=0
  bash "$(dirname "${BASH_SOURCE[0]}")/kokkos_hip_headers.sh" || rc=$?
  if ((rc != 0)); then
    echo "setup.sh: no Kokkos headers for HIP; the HIP compile check will be skipped" >&2
  fi
}

if ! command -v dpkg-query >/dev/null 2>&1; then
  echo "setup.sh: not a dpkg-based system; install these (or equivalents) yourself:" >&2
  echo "  ${PACKAGES[*]}" >&2
  exit 0
fi

missing=()
for pkg in "${PACKAGES[@]}"; do
  status="$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)"
  if [[ "$status" != "install ok installed" ]]; then
    missing+=("$pkg")
  fi
done

sudo=()
if [[ "$(id -u)" != 0 ]] && command -v sudo >/dev/null 2>&1; then
  sudo=(sudo)
fi
apt=("${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -q -y -o Dpkg::Use-Pty=0)

if ((${#missing[@]} == 0)); then
  python_packages
  kokkos_cuda_headers
  hip_compile_check
  exit 0
fi

if [[ "$(id -u)" != 0 && ${#sudo[@]} == 0 ]]; then
  echo "setup.sh: missing packages (${missing[*]}) and not root / no sudo" >&2
  exit 1
fi

echo "setup.sh: installing ${missing[*]}"
log="$(mktemp "${TMPDIR:-/tmp}/shardopt-setup.XXXXXX.log")"
if ! { "${apt[@]}" update && "${apt[@]}" install --no-install-recommends "${missing[@]}"; } >"$log" 2>&1; then
  cat "$log" >&2
  echo "setup.sh: apt-get failed (log above, also in $log)" >&2
  exit 1
fi
rm -f "$log"
echo "setup.sh: done"
python_packages
kokkos_cuda_headers
hip_compile_check
