#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# Build and run shardopt's test suite against Kokkos 4.6.01 with the OpenMP backend (the default
# execution space) and Serial, at OMP_NUM_THREADS=2:
#
#   scripts/test-kokkos.sh [extra ctest arguments, e.g. -R "unit|mpi_tests"]
#
# Kokkos comes, in this order of preference, from
#   Kokkos_ROOT      an installed Kokkos (used as it is, nothing is built);
#   KOKKOS_SOURCE    a Kokkos source tree or release tarball (kokkos-X.Y.ZZ.tar.gz);
#   ../shared/third_party/kokkos-4.6.01.tar.gz beside the repository (SHA-256 checked against the
#                    .sha256 file beside it).
# A source is built once (OpenMP + Serial, C++20, Release) and installed into
# ${XDG_CACHE_HOME:-$HOME/.cache}/shardopt/kokkos-<version>-openmp[-tsan] (SHARDOPT_KOKKOS_PREFIX);
# later runs reuse a complete install. Without any of them the script says so and reports itself
# skipped (exit 0; SHARDOPT_KOKKOS_REQUIRE=1 makes that an error).
#
# Environment:
#   SHARDOPT_KOKKOS_BUILD_DIR  shardopt's build tree (default <repo>/build-kokkos46[-tsan])
#   SHARDOPT_JOBS              build and ctest parallelism (default 2)
#   SHARDOPT_BUILD_TARGETS     build only these targets (space-separated; default all)
#   SHARDOPT_CMAKE_ARGS        more arguments for configuring shardopt (e.g. -DSHARDOPT_TEST_KIT=OFF)
#   SHARDOPT_KOKKOS_TSAN=1     ThreadSanitizer: Kokkos and the suite built by clang++ with
#                              -fsanitize=thread and LLVM's OpenMP runtime (libomp), with its
#                              Archer tool loaded so that TSan sees OpenMP's synchronization
#   OMP_NUM_THREADS            default 2;  OMP_PROC_BIND default false (no binding: unit testing);
#                              OMP_WAIT_POLICY default passive (ranks x threads > cores)
# Heavy steps run under `nice -n ${SHARDOPT_NICE:-19}`.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
jobs="${SHARDOPT_JOBS:-2}"
tsan="${SHARDOPT_KOKKOS_TSAN:-0}"
nice_cmd=(nice -n "${SHARDOPT_NICE:-19}")
say() { echo "test-kokkos.sh: $*" >&2; }
# shellcheck source=kokkos-build.sh
source "$root/scripts/kokkos-build.sh"

skip_because() {
  say "SKIPPED: $*"
  if [[ "${SHARDOPT_KOKKOS_REQUIRE:-0}" == 1 ]]; then exit 1; fi
  exit 0
}
skip() {
  say "SKIPPED: $*"
  say "point it at a Kokkos: KOKKOS_SOURCE=<kokkos source tree or kokkos-X.Y.ZZ.tar.gz> $0,"
  say "  or Kokkos_ROOT=<prefix of a Kokkos installed with OpenMP (and Serial)> $0"
  if [[ "${SHARDOPT_KOKKOS_REQUIRE:-0}" == 1 ]]; then exit 1; fi
  exit 0
}

cxx=()
cxx_flags=""
omp_runtime_env=()
suffix=""
if [[ "$tsan" == 1 ]]; then
  suffix="-tsan"
  clangxx="$(command -v clang++ || true)"
  [[ -n "$clangxx" ]] || skip_because "SHARDOPT_KOKKOS_TSAN=1 needs clang++ (Debian: clang, libomp-dev)"
  llvm_lib="$("$clangxx" -print-resource-dir)/../.."   # /usr/lib/llvm-N/lib/clang/V -> /usr/lib/llvm-N/lib
  llvm_lib="$(cd "$llvm_lib" && pwd)"
  archer="$llvm_lib/libarcher.so"
  [[ -e "$archer" && -e "$llvm_lib/libomp.so" ]] ||
    skip_because "SHARDOPT_KOKKOS_TSAN=1 needs LLVM's OpenMP runtime and Archer ($llvm_lib/libomp.so, $archer: Debian libomp-dev)"
  cxx=(-DCMAKE_CXX_COMPILER="$clangxx")
  cxx_flags="-fsanitize=thread -fno-omit-frame-pointer -g"
  # Archer (an OMPT tool) tells TSan about libomp's barriers, locks and tasks.
  omp_runtime_env=(OMP_TOOL_LIBRARIES="$archer"
                   TSAN_OPTIONS="${TSAN_OPTIONS:-ignore_noninstrumented_modules=1 halt_on_error=0 second_deadlock_stack=1 history_size=4}"
                   ARCHER_OPTIONS="${ARCHER_OPTIONS:-verbose=0}")
fi

cache="${XDG_CACHE_HOME:-$HOME/.cache}/shardopt"
build="${SHARDOPT_KOKKOS_BUILD_DIR:-$root/build-kokkos46$suffix}"

bash "$root/scripts/setup.sh"   # the suite's other dependencies (SHARDOPT_SKIP_SETUP=1 skips)

# ------------------------------------------------------------------ Kokkos
if [[ -n "${Kokkos_ROOT:-}" ]]; then
  prefix="$(cd "$Kokkos_ROOT" && pwd)"
  say "using the Kokkos installed in $prefix (Kokkos_ROOT)"
else
  kokkos_find_source || skip "$kokkos_missing"
  prefix="${SHARDOPT_KOKKOS_PREFIX:-$cache/$kokkos_name-openmp$suffix}"
  kokkos_options=(-DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_STANDARD=20 -DCMAKE_CXX_EXTENSIONS=OFF
                  -DKokkos_ENABLE_OPENMP=ON -DKokkos_ENABLE_SERIAL=ON
                  -DKokkos_ENABLE_TESTS=OFF -DKokkos_ENABLE_EXAMPLES=OFF
                  -DCMAKE_INSTALL_LIBDIR=lib "${cxx[@]}")
  [[ -n "$cxx_flags" ]] && kokkos_options+=(-DCMAKE_CXX_FLAGS="$cxx_flags")
  kokkos_install "$prefix" "" -- "${kokkos_options[@]}"
fi

# ------------------------------------------------- what the suite runs on
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"
export OMP_PROC_BIND="${OMP_PROC_BIND:-false}"   # unbound: Kokkos' advice for unit tests, and no warning
# MPI tests run up to 4 ranks of OMP_NUM_THREADS threads on few cores: idle threads must sleep, not spin.
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-passive}"
((${#omp_runtime_env[@]})) && export "${omp_runtime_env[@]}"

probe="$build/kokkos-probe"
mkdir -p "$probe"
cat >"$probe/CMakeLists.txt" <<'EOF'
cmake_minimum_required(VERSION 3.20)
project(shardopt_kokkos_probe LANGUAGES CXX)
find_package(Kokkos REQUIRED)
add_executable(kokkos_probe probe.cpp)
target_link_libraries(kokkos_probe PRIVATE Kokkos::kokkos)
EOF
cat >"$probe/probe.cpp" <<'EOF'
#include <Kokkos_Core.hpp>
#include <cstdio>
int main(int argc, char* argv[]) {
  Kokkos::ScopeGuard guard(argc, argv);
  using Exec = Kokkos::DefaultExecutionSpace;
  std::printf("Kokkos %d.%d.%02d, default execution space %s (%d threads)\n", KOKKOS_VERSION / 10000,
              KOKKOS_VERSION / 100 % 100, KOKKOS_VERSION % 100, Exec().name(), int(Exec().concurrency()));
}
EOF
"${nice_cmd[@]}" cmake -S "$probe" -B "$probe/build" -DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_STANDARD=20 \
  -DCMAKE_CXX_EXTENSIONS=OFF -DCMAKE_PREFIX_PATH="$prefix" -DKokkos_ROOT="$prefix" \
  "${cxx[@]}" ${cxx_flags:+-DCMAKE_CXX_FLAGS="$cxx_flags"} >"$probe/configure.log" 2>&1 ||
  { cat "$probe/configure.log" >&2; say "ERROR: the Kokkos in $prefix cannot be used"; exit 1; }
"${nice_cmd[@]}" cmake --build "$probe/build" >"$probe/build.log" 2>&1 ||
  { cat "$probe/build.log" >&2; say "ERROR: a Kokkos program does not build against $prefix"; exit 1; }
line="$("$probe/build/kokkos_probe")"
echo "$line"
[[ "$line" == *"default execution space OpenMP"* ]] ||
  say "WARNING: the default execution space is not OpenMP"

# ------------------------------------------------------------ the suite
config="$(find "$prefix" -maxdepth 5 -name KokkosConfig.cmake -print -quit)"
[[ -n "$config" ]] || { say "ERROR: no KokkosConfig.cmake under $prefix"; exit 1; }
"${nice_cmd[@]}" cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_PREFIX_PATH="$prefix" -DKokkos_ROOT="$prefix" -DKokkos_DIR="$(dirname "$config")" \
  "${cxx[@]}" ${cxx_flags:+-DCMAKE_CXX_FLAGS="$cxx_flags"} ${SHARDOPT_CMAKE_ARGS:-}
found="$(sed -n 's/^Kokkos_DIR:[A-Z]*=//p' "$build/CMakeCache.txt")"
case "$found" in
  "$prefix"/*) ;;
  *) say "ERROR: shardopt found Kokkos in '$found', not in $prefix"; exit 1 ;;
esac
# SHARDOPT_BUILD_TARGETS: only these targets (e.g. for a ThreadSanitizer run of a few tests).
targets=()
for t in ${SHARDOPT_BUILD_TARGETS:-}; do targets+=(--target "$t"); done
"${nice_cmd[@]}" cmake --build "$build" -j "$jobs" "${targets[@]}"

echo "$line"
# PROCESSORS / RESOURCE_LOCK properties keep -j from oversubscribing the MPI tests.
exec "${nice_cmd[@]}" ctest --test-dir "$build" --output-on-failure --no-tests=error -j "$jobs" "$@"
