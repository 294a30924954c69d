#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# Build the `train` example and run it on 4 MPI ranks:
#
#   scripts/demo.sh [train arguments, e.g. --steps 200]
#
# Environment: SHARDOPT_BUILD_DIR (default <repo>/build), SHARDOPT_JOBS (default 2).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${SHARDOPT_BUILD_DIR:-$root/build}"
jobs="${SHARDOPT_JOBS:-2}"

bash "$root/scripts/setup.sh"

# Same configuration as scripts/test.sh so both share the build directory.
log="$(mktemp "${TMPDIR:-/tmp}/shardopt-demo.XXXXXX.log")"
if ! { cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release &&
       cmake --build "$build" --target train -j "$jobs"; } >"$log" 2>&1; then
  cat "$log" >&2
  echo "demo.sh: build failed (log above)" >&2
  exit 1
fi
rm -f "$log"

export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_btl_vader_single_copy_mechanism=none
exec mpiexec --oversubscribe -n 4 "$build/examples/train" "$@"
