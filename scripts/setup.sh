#!/usr/bin/env bash
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

if ((${#missing[@]} == 0)); then
  exit 0
fi

sudo=()
if [[ "$(id -u)" != 0 ]]; then
  if command -v sudo >/dev/null 2>&1; then
    sudo=(sudo)
  else
    echo "setup.sh: missing packages (${missing[*]}) and not root / no sudo" >&2
    exit 1
  fi
fi

echo "setup.sh: installing ${missing[*]}"
log="$(mktemp "${TMPDIR:-/tmp}/shardopt-setup.XXXXXX.log")"
apt=("${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -q -y -o Dpkg::Use-Pty=0)
if ! { "${apt[@]}" update && "${apt[@]}" install --no-install-recommends "${missing[@]}"; } >"$log" 2>&1; then
  cat "$log" >&2
  echo "setup.sh: apt-get failed (log above, also in $log)" >&2
  exit 1
fi
rm -f "$log"
echo "setup.sh: done"
