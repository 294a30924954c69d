# SPDX-License-Identifier: BSD-3-Clause
# shardoptNccl.cmake -- finds the CUDA runtime and NCCL (used by the build and by shardoptConfig.cmake).
#
#   shardopt_find_nccl(<found-var> <mode>)   mode: ON (required), OFF, AUTO
#
# Defines CUDA::cudart (FindCUDAToolkit) and shardopt::nccl_library (NCCL's library and headers,
# searched in the CUDA toolkit first, then NCCL_ROOT / the system).
include_guard(GLOBAL)

function(shardopt_find_nccl found mode)
  set(${found} OFF PARENT_SCOPE)
  if(mode STREQUAL "OFF" OR mode STREQUAL "FALSE" OR mode STREQUAL "0")
    return()
  endif()
  set(_required "")
  if(NOT mode STREQUAL "AUTO")
    set(_required REQUIRED)
  endif()
  find_package(CUDAToolkit QUIET ${_required})
  if(NOT CUDAToolkit_FOUND)
    return()
  endif()
  find_path(SHARDOPT_NCCL_INCLUDE_DIR nccl.h HINTS ${CUDAToolkit_INCLUDE_DIRS} ENV NCCL_ROOT PATH_SUFFIXES include)
  find_library(SHARDOPT_NCCL_LIBRARY nccl HINTS ${CUDAToolkit_LIBRARY_DIR} ENV NCCL_ROOT PATH_SUFFIXES lib lib64)
  if(NOT SHARDOPT_NCCL_INCLUDE_DIR OR NOT SHARDOPT_NCCL_LIBRARY)
    if(_required)
      message(FATAL_ERROR "SHARDOPT_ENABLE_NCCL=${mode}: nccl.h or libnccl not found (CUDA toolkit at ${CUDAToolkit_LIBRARY_ROOT}; set NCCL_ROOT)")
    endif()
    return()
  endif()
  if(NOT TARGET shardopt::nccl_library)
    add_library(shardopt::nccl_library UNKNOWN IMPORTED GLOBAL)
    set_target_properties(shardopt::nccl_library PROPERTIES
      IMPORTED_LOCATION "${SHARDOPT_NCCL_LIBRARY}"
      INTERFACE_INCLUDE_DIRECTORIES "${SHARDOPT_NCCL_INCLUDE_DIR}")
  endif()
  if(NOT shardopt_FIND_QUIETLY)   # set by find_package(shardopt ... QUIET) around shardoptConfig.cmake
    message(STATUS "shardopt: comm::Nccl with ${SHARDOPT_NCCL_LIBRARY}")
  endif()
  set(${found} ON PARENT_SCOPE)
endfunction()
