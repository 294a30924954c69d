# SPDX-License-Identifier: BSD-3-Clause
# shardoptMpi.cmake -- provide the MPI target shardopt links, `shardopt::mpi`.
#
# Include this file after `find_package(MPI COMPONENTS CXX)`. It is used both by the shardopt build
# and by the installed `shardoptConfig.cmake`, so consumers link what the library's own tests link.
#
# Why: shardopt calls MPI's C API only, and both find MPI with MPI_CXX_SKIP_MPICXX=ON unless the
# project set it (FindMPI then compiles without the deprecated MPI-2 C++ bindings). FindMPI still puts
# the bindings' library on MPI::MPI_CXX's link line when the compiler wrapper reports it (Open MPI 4:
# `mpicxx -showme:link` is `-lmpi_cxx -lmpi`), so every executable linked libmpi_cxx.so.
#
# Result:
#   shardopt::mpi   INTERFACE IMPORTED target: MPI::MPI_CXX's usage requirements, without the C++
#                   bindings' library (libmpi_cxx, libmpicxx, libmpichcxx) when MPI::MPI_CXX compiles
#                   without the bindings (its compile definitions skip them); MPI::MPI_CXX as it is
#                   otherwise (a project that keeps the bindings, MPI_CXX_SKIP_MPICXX=OFF, keeps them).
#
# Imported targets are directory scoped; the guard below makes it safe to include this file once per
# directory that calls find_package(shardopt).

if(TARGET shardopt::mpi)
  return()
endif()
if(NOT TARGET MPI::MPI_CXX)
  message(FATAL_ERROR "shardoptMpi.cmake: MPI::MPI_CXX is not defined (find_package(MPI COMPONENTS CXX) first)")
endif()

add_library(shardopt::mpi INTERFACE IMPORTED)
get_target_property(_shardopt_mpi_defs MPI::MPI_CXX INTERFACE_COMPILE_DEFINITIONS)
if(_shardopt_mpi_defs MATCHES "SKIP_MPICXX")
  foreach(_shardopt_mpi_prop IN ITEMS INTERFACE_COMPILE_DEFINITIONS INTERFACE_COMPILE_OPTIONS
                                      INTERFACE_INCLUDE_DIRECTORIES INTERFACE_SYSTEM_INCLUDE_DIRECTORIES
                                      INTERFACE_LINK_DIRECTORIES INTERFACE_LINK_OPTIONS INTERFACE_LINK_LIBRARIES)
    get_target_property(_shardopt_mpi_value MPI::MPI_CXX ${_shardopt_mpi_prop})
    if(NOT _shardopt_mpi_value)
      continue()
    endif()
    if(_shardopt_mpi_prop STREQUAL "INTERFACE_LINK_LIBRARIES")
      set(_shardopt_mpi_kept "")
      foreach(_shardopt_mpi_lib IN LISTS _shardopt_mpi_value)
        get_filename_component(_shardopt_mpi_name "${_shardopt_mpi_lib}" NAME)
        if(NOT _shardopt_mpi_name MATCHES "^(-l|lib)?(mpi_cxx|mpicxx|mpichcxx)(\\.|$)")
          list(APPEND _shardopt_mpi_kept "${_shardopt_mpi_lib}")
        endif()
      endforeach()
      set(_shardopt_mpi_value "${_shardopt_mpi_kept}")
    endif()
    set_property(TARGET shardopt::mpi PROPERTY ${_shardopt_mpi_prop} "${_shardopt_mpi_value}")
  endforeach()
else()
  set_property(TARGET shardopt::mpi PROPERTY INTERFACE_LINK_LIBRARIES MPI::MPI_CXX)
endif()

unset(_shardopt_mpi_defs)
unset(_shardopt_mpi_prop)
unset(_shardopt_mpi_value)
unset(_shardopt_mpi_kept)
unset(_shardopt_mpi_lib)
unset(_shardopt_mpi_name)
