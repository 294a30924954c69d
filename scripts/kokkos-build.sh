# SPDX-License-Identifier: BSD-3-Clause
# Functions, sourced by scripts/test-kokkos.sh and scripts/kokkos-cuda.sh, that build a Kokkos
# release once into a cache:
#
#   kokkos_find_source   sets kokkos_src, kokkos_source_id and kokkos_name (e.g. kokkos-4.6.01) from
#                        KOKKOS_SOURCE (a source tree or a release tarball) or, by default,
#                        ../shared/third_party/kokkos-4.6.01.tar.gz beside the repository, whose
#                        SHA-256 is checked against the .sha256 file beside it. Returns 1, with
#                        the reason in kokkos_missing, when there is no source; exits on a wrong
#                        checksum.
#   kokkos_install PREFIX PATCH -- CMAKE-OPTIONS...
#                        builds kokkos_src with the options and installs it in PREFIX, unless a
#                        complete install made from the same source and options is already there
#                        (a stamp file, written last). PATCH is a function called with the
#                        unpacked source tree before it is configured ("" for none); its text is
#                        part of the stamp. @KOKKOS_SOURCE_DIR@ in an option stands for the
#                        unpacked source tree (e.g. its bin/nvcc_wrapper as the compiler).
#                        One build at a time (flock on PREFIX.lock).
#
# The caller defines say() (messages), root (the repository), jobs and nice_cmd (an array).

kokkos_find_source() {
  local src="${KOKKOS_SOURCE:-$root/../shared/third_party/kokkos-4.6.01.tar.gz}"
  kokkos_missing=""
  if [[ ! -e "$src" ]]; then
    if [[ -n "${KOKKOS_SOURCE:-}" ]]; then kokkos_missing="KOKKOS_SOURCE=$src does not exist"
    else kokkos_missing="no Kokkos: $src is missing"; fi
    return 1
  fi
  src="$(cd "$(dirname "$src")" && pwd)/$(basename "$src")"
  local name
  name="$(basename "$src")"
  name="${name%.tar.gz}"; name="${name%.tgz}"
  [[ "$name" == kokkos* ]] || name="kokkos-$name"
  if [[ -f "$src" ]]; then
    local sum want
    sum="$(sha256sum "$src" | cut -d' ' -f1)"
    if [[ -f "$src.sha256" ]]; then
      want="$(cut -d' ' -f1 <"$src.sha256")"
      if [[ "$sum" != "$want" ]]; then
        say "ERROR: SHA-256 of $src is $sum, $src.sha256 says $want"
        exit 1
      fi
    elif [[ -z "${KOKKOS_SOURCE:-}" ]]; then
      say "ERROR: $src.sha256 is missing"
      exit 1
    fi
    kokkos_source_id="tarball $sum"
  elif [[ -f "$src/CMakeLists.txt" ]]; then
    kokkos_source_id="tree $src"
  else
    kokkos_missing="KOKKOS_SOURCE=$src is neither a tarball nor a Kokkos source tree"
    return 1
  fi
  kokkos_src="$src"
  kokkos_name="$name"
}

kokkos_install() {
  local prefix="$1" patch="$2"
  shift 3   # PREFIX PATCH --
  local cache stamp stamp_text
  cache="$(dirname "$prefix")"
  stamp="$prefix/.shardopt-kokkos-complete"
  stamp_text="source: $kokkos_source_id
options: $*"
  if [[ -n "$patch" ]]; then stamp_text+="
patch: $(declare -f "$patch")"; fi
  mkdir -p "$cache"
  exec 9>"$prefix.lock"
  flock 9   # one build at a time; a second run waits, then finds the install complete
  if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$stamp_text" ]]; then
    say "building Kokkos from $kokkos_src into $prefix (once)"
    local start=$SECONDS work ksrc log
    rm -rf "$prefix"
    work="$(mktemp -d "$cache/.kokkos-build.XXXXXX")"
    # shellcheck disable=SC2064
    trap "rm -rf '$work'" EXIT
    if [[ -f "$kokkos_src" ]]; then
      mkdir "$work/src"
      "${nice_cmd[@]}" tar xzf "$kokkos_src" -C "$work/src" --strip-components=1
      ksrc="$work/src"
    elif [[ -n "$patch" ]]; then   # never edit the caller's tree: patch a copy
      cp -r "$kokkos_src" "$work/src"
      ksrc="$work/src"
    else
      ksrc="$kokkos_src"
    fi
    log="$work/kokkos-build.log"
    local options=("${@//@KOKKOS_SOURCE_DIR@/$ksrc}")
    if ! { { [[ -z "$patch" ]] || "$patch" "$ksrc"; } &&
           "${nice_cmd[@]}" cmake -S "$ksrc" -B "$work/build" -DCMAKE_INSTALL_PREFIX="$prefix" "${options[@]}" &&
           "${nice_cmd[@]}" cmake --build "$work/build" -j "$jobs" &&
           "${nice_cmd[@]}" cmake --install "$work/build"; } >"$log" 2>&1; then
      tail -n 40 "$log" >&2
      cp "$log" "$cache/kokkos-build-failed.log"
      say "ERROR: the Kokkos build failed (log: $cache/kokkos-build-failed.log)"
      exit 1
    fi
    printf '%s' "$stamp_text" >"$stamp"   # written last: marks the install complete
    rm -rf "$work"
    trap - EXIT
    say "Kokkos built and installed in $((SECONDS - start)) s"
  fi
  exec 9>&-
}
