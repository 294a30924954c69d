# SPDX-License-Identifier: BSD-3-Clause
# shardoptKokkos.cmake -- provide a usable Kokkos target named `shardopt::kokkos`.
#
# Include this file after `find_package(Kokkos)`.  It is used both by the
# shardopt build and by the installed `shardoptConfig.cmake`, so consumers get
# exactly the same Kokkos resolution as the library's own tests.
#
# Why: the Kokkos shipped by Debian/Ubuntu inside Trilinos (Kokkos 3.4) exports
# a `Kokkos::kokkos` target whose INTERFACE_INCLUDE_DIRECTORIES points at
# `<prefix>/include`, while the headers really live in `<prefix>/include/trilinos`.
# Its package variables (Kokkos_INCLUDE_DIRS, Kokkos_LIBRARY_DIRS,
# Kokkos_LIBRARIES) are correct, though.  Upstream Kokkos 4.x/5.x exports a
# correct `Kokkos::kokkos`.
#
# Result:
#   shardopt::kokkos        INTERFACE IMPORTED target to link against.  It wraps
#                           `Kokkos::kokkos` when that target is usable, and
#                           `shardopt::kokkos_fixed` otherwise.
#   shardopt::kokkos_fixed  (only when needed) INTERFACE IMPORTED target built
#                           from the Kokkos_* variables; SYSTEM include dirs,
#                           links the Kokkos libraries and the dl library.
#   SHARDOPT_KOKKOS_FIXED   TRUE when the fix-up target is used.
#
# Imported targets are directory scoped; the guard below makes it safe to
# include this file once per directory that calls find_package(shardopt).

if(TARGET shardopt::kokkos)
  return()
endif()

# Collect the include directories reachable from a target through
# ALIASED_TARGET and INTERFACE_LINK_LIBRARIES.  Sets <out_dirs> to the plain
# directories and <out_genex> to TRUE when some entry is a generator expression
# (those cannot be evaluated at configure time).
function(_shardopt_kokkos_collect_includes target out_dirs out_genex)
  set(queue "${target}")
  set(seen "")
  set(dirs "")
  set(genex FALSE)
  while(queue)
    list(POP_FRONT queue t)
    if(NOT TARGET "${t}" OR "${t}" IN_LIST seen)
      continue()
    endif()
    list(APPEND seen "${t}")
    get_target_property(aliased "${t}" ALIASED_TARGET)
    if(aliased)
      list(APPEND queue "${aliased}")
      continue()
    endif()
    get_target_property(incs "${t}" INTERFACE_INCLUDE_DIRECTORIES)
    if(incs)
      foreach(d IN LISTS incs)
        if(d MATCHES "\\$<")
          set(genex TRUE)
        else()
          list(APPEND dirs "${d}")
        endif()
      endforeach()
    endif()
    get_target_property(libs "${t}" INTERFACE_LINK_LIBRARIES)
    if(libs)
      foreach(l IN LISTS libs)
        # unwrap $<LINK_ONLY:x> which exported targets use for private deps
        if(l MATCHES "^\\$<LINK_ONLY:([^>]+)>$")
          set(l "${CMAKE_MATCH_1}")
        endif()
        if(TARGET "${l}")
          list(APPEND queue "${l}")
        endif()
      endforeach()
    endif()
  endwhile()
  set(${out_dirs} "${dirs}" PARENT_SCOPE)
  set(${out_genex} "${genex}" PARENT_SCOPE)
endfunction()

set(_shardopt_kokkos_ok FALSE)
if(TARGET Kokkos::kokkos)
  get_target_property(_shardopt_kokkos_imported Kokkos::kokkos IMPORTED)
  get_target_property(_shardopt_kokkos_alias Kokkos::kokkos ALIASED_TARGET)
  if(_shardopt_kokkos_alias OR NOT _shardopt_kokkos_imported)
    # Kokkos is part of this build (add_subdirectory / FetchContent): trust it.
    set(_shardopt_kokkos_ok TRUE)
  else()
    _shardopt_kokkos_collect_includes(Kokkos::kokkos _shardopt_kokkos_dirs _shardopt_kokkos_genex)
    if(_shardopt_kokkos_genex)
      set(_shardopt_kokkos_ok TRUE)
    endif()
    foreach(_shardopt_d IN LISTS _shardopt_kokkos_dirs)
      if(EXISTS "${_shardopt_d}/Kokkos_Core.hpp")
        set(_shardopt_kokkos_ok TRUE)
      endif()
    endforeach()
  endif()
endif()

if(_shardopt_kokkos_ok)
  set(SHARDOPT_KOKKOS_FIXED FALSE)
  add_library(shardopt::kokkos INTERFACE IMPORTED)
  set_target_properties(shardopt::kokkos PROPERTIES INTERFACE_LINK_LIBRARIES Kokkos::kokkos)
else()
  # Build the fix-up target from the package variables.
  set(_shardopt_kokkos_incs "")
  foreach(_shardopt_d IN LISTS Kokkos_INCLUDE_DIRS)
    get_filename_component(_shardopt_d "${_shardopt_d}" ABSOLUTE)
    list(APPEND _shardopt_kokkos_incs "${_shardopt_d}")
  endforeach()
  set(_shardopt_kokkos_header_found FALSE)
  foreach(_shardopt_d IN LISTS _shardopt_kokkos_incs)
    if(EXISTS "${_shardopt_d}/Kokkos_Core.hpp")
      set(_shardopt_kokkos_header_found TRUE)
    endif()
  endforeach()
  if(NOT _shardopt_kokkos_header_found)
    message(FATAL_ERROR
      "shardopt: Kokkos was found (Kokkos_DIR=${Kokkos_DIR}) but Kokkos_Core.hpp is "
      "neither in the include directories of Kokkos::kokkos nor in "
      "Kokkos_INCLUDE_DIRS='${Kokkos_INCLUDE_DIRS}'.")
  endif()

  set(_shardopt_kokkos_libs "")
  foreach(_shardopt_lib IN LISTS Kokkos_LIBRARIES)
    if(TARGET "${_shardopt_lib}")
      list(APPEND _shardopt_kokkos_libs "${_shardopt_lib}")
    elseif(IS_ABSOLUTE "${_shardopt_lib}")
      list(APPEND _shardopt_kokkos_libs "${_shardopt_lib}")
    else()
      string(MAKE_C_IDENTIFIER "${_shardopt_lib}" _shardopt_var)
      find_library(SHARDOPT_KOKKOS_LIB_${_shardopt_var} NAMES "${_shardopt_lib}"
                   HINTS ${Kokkos_LIBRARY_DIRS})
      if(NOT SHARDOPT_KOKKOS_LIB_${_shardopt_var})
        message(FATAL_ERROR "shardopt: Kokkos library '${_shardopt_lib}' not found "
                            "(Kokkos_LIBRARY_DIRS='${Kokkos_LIBRARY_DIRS}').")
      endif()
      list(APPEND _shardopt_kokkos_libs "${SHARDOPT_KOKKOS_LIB_${_shardopt_var}}")
    endif()
  endforeach()
  if(CMAKE_DL_LIBS)
    list(APPEND _shardopt_kokkos_libs ${CMAKE_DL_LIBS})
  endif()

  add_library(shardopt::kokkos_fixed INTERFACE IMPORTED)
  set_target_properties(shardopt::kokkos_fixed PROPERTIES
    INTERFACE_INCLUDE_DIRECTORIES "${_shardopt_kokkos_incs}"
    INTERFACE_SYSTEM_INCLUDE_DIRECTORIES "${_shardopt_kokkos_incs}"
    INTERFACE_LINK_LIBRARIES "${_shardopt_kokkos_libs}")
  add_library(shardopt::kokkos INTERFACE IMPORTED)
  set_target_properties(shardopt::kokkos PROPERTIES INTERFACE_LINK_LIBRARIES shardopt::kokkos_fixed)
  set(SHARDOPT_KOKKOS_FIXED TRUE)
  if(NOT shardopt_FIND_QUIETLY)
    message(STATUS "shardopt: Kokkos::kokkos has no usable include path; "
                   "using shardopt::kokkos_fixed (${_shardopt_kokkos_incs})")
  endif()
endif()

unset(_shardopt_kokkos_ok)
unset(_shardopt_kokkos_imported)
unset(_shardopt_kokkos_alias)
unset(_shardopt_kokkos_dirs)
unset(_shardopt_kokkos_genex)
unset(_shardopt_kokkos_incs)
unset(_shardopt_kokkos_libs)
unset(_shardopt_kokkos_header_found)
unset(_shardopt_d)
unset(_shardopt_lib)
unset(_shardopt_var)
