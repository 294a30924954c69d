#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# Kokkos 4.x/5.x headers configured for CUDA, for the device compile check (ctest device.compile):
#
#   scripts/kokkos_cuda_headers.sh [DEST]      (default: ~/.cache/shardopt/kokkos-cuda)
#
# Debian 12 has only Kokkos 3.4 (Serial). Debian's newer libkokkos-dev package (testing or
# unstable) installs the headers of every backend, CUDA's included, configured for OpenMP. This
# script downloads that package from the Debian archive this machine's apt is configured with (or
# SHARDOPT_DEBIAN_MIRROR), checks its SHA-256 against the suite's Packages index, unpacks the headers into DEST/include and rewrites the generated configuration
# headers for a Serial + CUDA build for Hopper (sm_90). nvcc can then compile code against
# Kokkos::Cuda and Kokkos::CudaSpace; nothing links or runs (Kokkos' CUDA library is not there).
#
# Idempotent: does nothing when DEST/VERSION exists. Exit status 1 with a message on failure.
set -euo pipefail

dest="${1:-${XDG_CACHE_HOME:-$HOME/.cache}/shardopt/kokkos-cuda}"
# The archive of this machine's Debian sources ("<uri> <suite>/main amd64 Packages" in apt-cache
# policy): the registry is apt's own configuration, not a host named here.
mirror="${SHARDOPT_DEBIAN_MIRROR:-}"
if [[ -z "$mirror" ]] && command -v apt-cache >/dev/null 2>&1; then
  mirror="$(apt-cache policy 2>/dev/null | awk '$3 ~ /^[a-z]+\/main$/ && $4 == "amd64" && $2 ~ /^https?:/ { print $2; exit }')"
fi

if [[ -f "$dest/VERSION" && -f "$dest/include/Kokkos_Core.hpp" ]]; then
  exit 0
fi
if [[ -z "$mirror" ]]; then
  echo "kokkos_cuda_headers.sh: no Debian archive in apt's configuration; set SHARDOPT_DEBIAN_MIRROR to one" >&2
  exit 1
fi
for tool in curl xz dpkg-deb sha256sum sed; do
  command -v "$tool" >/dev/null 2>&1 || { echo "kokkos_cuda_headers.sh: needs $tool" >&2; exit 1; }
done

work="$(mktemp -d "${TMPDIR:-/tmp}/shardopt-kokkos.XXXXXX")"
trap 'rm -rf "$work"' EXIT

# The libkokkos-dev entry of the first suite that has one: "Filename SHA256 Version".
entry=""
for suite in testing unstable; do
  if curl -fsS --max-time 120 -o "$work/Packages.xz" "$mirror/dists/$suite/main/binary-amd64/Packages.xz"; then
    entry="$(xz -dc "$work/Packages.xz" | awk '
      /^Package: /     { pkg = $2; file = ""; sha = ""; ver = "" }
      /^Version: /     { ver = $2 }
      /^Filename: /    { file = $2 }
      /^SHA256: /      { sha = $2 }
      /^$/             { if (pkg == "libkokkos-dev" && file != "" && !found) { print file, sha, ver; found = 1 } }')"
    [[ -n "$entry" ]] && break
  fi
done
if [[ -z "$entry" ]]; then
  echo "kokkos_cuda_headers.sh: no libkokkos-dev in Debian testing or unstable at $mirror" >&2
  exit 1
fi
read -r file sha version <<<"$entry"
case "$version" in
  [45].*|[6-9].*) ;;
  *) echo "kokkos_cuda_headers.sh: libkokkos-dev $version is not Kokkos 4 or later" >&2; exit 1 ;;
esac

curl -fsS --max-time 300 -o "$work/kokkos.deb" "$mirror/$file"
echo "$sha  $work/kokkos.deb" | sha256sum -c --quiet -
dpkg-deb -x "$work/kokkos.deb" "$work/root"
src="$work/root/usr/include/kokkos"
[[ -f "$src/Kokkos_Core.hpp" && -d "$src/Cuda" ]] || {
  echo "kokkos_cuda_headers.sh: libkokkos-dev $version has no CUDA backend headers" >&2; exit 1; }

inc="$work/include"
cp -r "$src" "$inc"

# The generated configuration: Serial and CUDA enabled, host-parallel backends off, Hopper.
config="$inc/KokkosCore_config.h"
for macro in KOKKOS_ENABLE_SERIAL KOKKOS_ENABLE_CUDA KOKKOS_ARCH_HOPPER KOKKOS_ARCH_HOPPER90; do
  grep -q "^/\* #undef $macro \*/\$\|^#define $macro\$" "$config" || {
    echo "kokkos_cuda_headers.sh: $config has no line for $macro: the configuration format changed" >&2; exit 1; }
  sed -i "s|^/\* #undef $macro \*/\$|#define $macro|" "$config"
done
for macro in KOKKOS_ENABLE_OPENMP KOKKOS_ENABLE_THREADS KOKKOS_ENABLE_HPX; do
  sed -i "s|^#define $macro\$|/* #undef $macro */|" "$config"
done
backends() {  # guard, directory, file suffix, backends...
  local guard="$1" dir="$2" suffix="$3"
  shift 3
  printf '#ifndef %s\n#define %s\n' "$guard" "$guard"
  for b in "$@"; do printf '#include <%s/Kokkos_%s_%s.hpp>\n' "$dir" "$suffix" "$b"; done
  printf '#endif\n'
}
backends KOKKOS_DECLARE_HPP_ decl Declare SERIAL CUDA >"$inc/KokkosCore_Config_DeclareBackend.hpp"
backends KOKKOS_FWD_HPP_ fwd Fwd SERIAL CUDA >"$inc/KokkosCore_Config_FwdBackend.hpp"
printf '#ifndef KOKKOS_SETUP_HPP_\n#define KOKKOS_SETUP_HPP_\n#include <setup/Kokkos_Setup_Cuda.hpp>\n#endif\n' \
  >"$inc/KokkosCore_Config_SetupBackend.hpp"
desul="$inc/desul/atomics/Config.hpp"
if [[ -f "$desul" ]]; then
  sed -i -e 's|^/\* #undef DESUL_ATOMICS_ENABLE_CUDA \*/$|#define DESUL_ATOMICS_ENABLE_CUDA|' \
         -e 's|^#define DESUL_ATOMICS_ENABLE_OPENMP$|/* #undef DESUL_ATOMICS_ENABLE_OPENMP */|' "$desul"
fi

mkdir -p "$(dirname "$dest")"
rm -rf "$dest"
mkdir -p "$dest"
mv "$inc" "$dest/include"
echo "libkokkos-dev $version ($file), configured for Serial + CUDA (sm_90)" >"$dest/VERSION"
echo "kokkos_cuda_headers.sh: $(cat "$dest/VERSION") in $dest"
