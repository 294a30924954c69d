#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# Configure, build and run every test of shardopt (the project's test command):
#
#   scripts/test.sh [extra ctest arguments, e.g. -R mpi_tests]
#
# Environment: SHARDOPT_BUILD_DIR (default <repo>/build), SHARDOPT_JOBS (default 2).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${SHARDOPT_BUILD_DIR:-$root/build}"
jobs="${SHARDOPT_JOBS:-2}"

bash "$root/scripts/setup.sh"

cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release
cmake --build "$build" -j "$jobs"

# PROCESSORS / RESOURCE_LOCK properties keep -j from oversubscribing the MPI tests.
exec ctest --test-dir "$build" --output-on-failure --no-tests=error -j "$jobs" "$@"
