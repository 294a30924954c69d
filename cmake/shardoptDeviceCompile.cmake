# SPDX-License-Identifier: BSD-3-Clause
# shardoptDeviceCompile.cmake -- ctest driver of device.compile.
#
#   cmake -DNVCC=<nvcc> -DHOST_CXX=<c++> -DKOKKOS_INCLUDE=<dir> -DSOURCE=<file> -DOUTPUT=<file.o>
#         -DINCLUDES=<dir|dir|...> -DDEFINES=<D|D|...> -P shardoptDeviceCompile.cmake
#
# Compiles SOURCE with nvcc for sm_90 against Kokkos headers configured for CUDA
# (scripts/kokkos_cuda_headers.sh), warnings as errors, so that a host-only call in a kernel fails.
# Prints "device.compile: SKIPPED (<why>)", which ctest reports as skipped, when nvcc or the headers
# are missing.
foreach(var NVCC HOST_CXX KOKKOS_INCLUDE SOURCE OUTPUT)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "shardoptDeviceCompile.cmake: -D${var}=... is required")
  endif()
endforeach()
if(NOT NVCC OR NOT EXISTS "${NVCC}")
  message("device.compile: SKIPPED (no nvcc: install the CUDA toolkit)")
  return()
endif()
if(NOT EXISTS "${KOKKOS_INCLUDE}/Kokkos_Core.hpp")
  message("device.compile: SKIPPED (no Kokkos headers configured for CUDA in ${KOKKOS_INCLUDE}: "
          "run scripts/kokkos_cuda_headers.sh, or set SHARDOPT_KOKKOS_CUDA_INCLUDE)")
  return()
endif()
set(args -std=c++20 -x cu --extended-lambda -arch=sm_90 "-Werror=all-warnings" -ccbin "${HOST_CXX}"
         -isystem "${KOKKOS_INCLUDE}")
string(REPLACE "|" ";" INCLUDES "${INCLUDES}")
string(REPLACE "|" ";" DEFINES "${DEFINES}")
foreach(dir IN LISTS INCLUDES)
  if(dir)
    list(APPEND args "-I${dir}")
  endif()
endforeach()
foreach(def IN LISTS DEFINES)
  if(def)
    list(APPEND args "-D${def}")
  endif()
endforeach()
if(EXISTS "${KOKKOS_INCLUDE}/../VERSION")
  file(READ "${KOKKOS_INCLUDE}/../VERSION" version)
  message("device.compile: Kokkos from ${version}")
endif()
execute_process(COMMAND "${NVCC}" ${args} -c "${SOURCE}" -o "${OUTPUT}"
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE out)
if(NOT rc EQUAL 0)
  string(JOIN " " shown ${args})
  message(FATAL_ERROR "device.compile: nvcc failed (${rc}):\n${NVCC} ${shown} -c ${SOURCE}\n${out}")
endif()
message("device.compile: ${SOURCE} compiled for sm_90")
