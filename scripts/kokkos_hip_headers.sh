#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# Kokkos 4.6.01 headers configured for HIP (AMD MI200, gfx90a), for the HIP compile check
# (ctest device.compile_hip):
#
#   scripts/kokkos_hip_headers.sh [DEST]      (default: ~/.cache/shardopt/kokkos-hip)
#
# Configures (does not build) the Kokkos release source (KOKKOS_SOURCE, or by default
# ../shared/third_party/kokkos-4.6.01.tar.gz, checked against its .sha256) with Debian 12's hipcc
# 5.2.3 for Serial + HIP, gfx90a, and gathers its headers and the generated configuration headers
# into DEST/include, as `cmake --install` lays them out. hipcc can then compile code against
# Kokkos::HIP and Kokkos::HIPSpace; nothing links or runs.
#
# Why libc++: Debian 12's hipcc is clang 15, which crashes (a segmentation fault in
# Sema::checkTypeSupport) on any CUDA or HIP compile in C++20 mode of a std::map of std::map from
# libstdc++ 12 (three lines reproduce it; C++17 and plain C++ compiles are fine). shardopt is C++20
# and has such a map, and so has Kokkos' core. With LLVM's libc++ 15 (-stdlib=libc++, Debian's
# libc++-15-dev) the same compiles succeed, so Kokkos is configured and the check compiles with it.
#
# Needs hipcc, libamdhip64-dev, rocm-device-libs, libc++-15-dev and libc++abi-15-dev (Debian 12
# packages; scripts/setup.sh installs them). Idempotent: does nothing when DEST holds headers made
# from the same source and options. Exit status 1 with a message on failure; 2 when hipcc or the
# Kokkos source is missing (nothing to do).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="${1:-${XDG_CACHE_HOME:-$HOME/.cache}/shardopt/kokkos-hip}"
arch="${SHARDOPT_HIP_ARCH:-AMD_GFX90A}"
say() { echo "kokkos_hip_headers.sh: $*" >&2; }
# shellcheck source=kokkos-build.sh
source "$root/scripts/kokkos-build.sh"

hipcc="${HIPCC:-$(command -v hipcc || true)}"
if [[ -z "$hipcc" ]]; then
  say "no hipcc (Debian 12: apt-get install hipcc libamdhip64-dev rocm-device-libs libc++-15-dev libc++abi-15-dev)"
  exit 2
fi
if ! kokkos_find_source; then
  say "$kokkos_missing (set KOKKOS_SOURCE to a Kokkos 4.x source tree or release tarball)"
  exit 2
fi

options=(-DCMAKE_CXX_COMPILER="$hipcc" -DCMAKE_CXX_FLAGS=-stdlib=libc++ -DCMAKE_CXX_STANDARD=20
         -DCMAKE_BUILD_TYPE=Release -DKokkos_ENABLE_SERIAL=ON -DKokkos_ENABLE_HIP=ON
         "-DKokkos_ARCH_$arch=ON" -DKokkos_ENABLE_ROCTHRUST=OFF)
stamp_text="source: $kokkos_source_id
hipcc: $("$hipcc" --version 2>/dev/null | grep -m1 -i 'clang version' || echo "$hipcc")
options: ${options[*]}"
if [[ -f "$dest/VERSION" && -f "$dest/include/Kokkos_Core.hpp" && "$(cat "$dest/VERSION")" == "$stamp_text" ]]; then
  exit 0
fi

mkdir -p "$(dirname "$dest")"
work="$(mktemp -d "$(dirname "$dest")/.kokkos-hip.XXXXXX")"
trap 'rm -rf "$work"' EXIT
if [[ -f "$kokkos_src" ]]; then
  mkdir "$work/src"
  tar xzf "$kokkos_src" -C "$work/src" --strip-components=1
  src="$work/src"
else
  src="$kokkos_src"
fi
if ! cmake -S "$src" -B "$work/build" "${options[@]}" >"$work/configure.log" 2>&1; then
  tail -n 30 "$work/configure.log" >&2
  say "ERROR: configuring Kokkos for HIP failed"
  exit 1
fi

inc="$work/include"
mkdir "$inc"
copy_headers() {  # FROM: every header under FROM into $inc, keeping its path below FROM
  (cd "$1" && find . \( -name '*.hpp' -o -name '*.h' \) -print0 | xargs -0 cp --parents -t "$inc")
}
# The header trees an install merges into one include directory, then the generated ones: the
# configuration headers at the top of the build tree and desul's under core/src.
for dir in core/src containers/src algorithms/src simd/src tpls/desul/include tpls/mdspan/include; do
  [[ -d "$src/$dir" ]] || { say "ERROR: $src has no $dir: not the Kokkos 4 source layout"; exit 1; }
  copy_headers "$src/$dir"
done
cp "$work/build"/KokkosCore_config.h "$work/build"/KokkosCore_Config_*.hpp "$inc/"
copy_headers "$work/build/core/src"
grep -q '^#define KOKKOS_ENABLE_HIP$' "$inc/KokkosCore_config.h" || {
  say "ERROR: the configured KokkosCore_config.h does not enable HIP"; exit 1; }

rm -rf "$dest"
mv "$inc" "$work/dest-include"
mkdir -p "$dest"
mv "$work/dest-include" "$dest/include"
printf '%s' "$stamp_text" >"$dest/VERSION"
say "$kokkos_name headers configured for Serial + HIP ($arch) in $dest"
