# SPDX-License-Identifier: BSD-3-Clause
# shardoptDeviceCompile.cmake -- ctest driver of device.compile (CUDA) and device.compile_hip (HIP).
#
#   cmake -DBACKEND=cuda|hip -DCOMPILER=<nvcc|hipcc> -DHOST_CXX=<c++> -DKOKKOS_INCLUDE=<dir>
#         -DSOURCE=<file> -DOUTPUT=<file.o> -DINCLUDES=<dir|dir|...> -DDEFINES=<D|D|...>
#         [-DBUNDLER=<clang-offload-bundler> -DOBJCOPY=<llvm-objcopy> -DREADELF=<llvm-readelf>]
#         -P shardoptDeviceCompile.cmake
#
# cuda: compiles SOURCE with nvcc for sm_90 against Kokkos headers configured for CUDA
#       (scripts/kokkos_cuda_headers.sh), warnings as errors, so that a host-only call in a kernel
#       fails.
# hip:  compiles SOURCE with hipcc for gfx90a against Kokkos headers configured for HIP
#       (scripts/kokkos_hip_headers.sh), with libc++ (see that script for why), warnings as errors;
#       then, where BUNDLER, OBJCOPY and READELF are given, checks that the object's offload bundle
#       holds a gfx90a code object with the step's kernels (fused_update) in it.
# Prints "device.compile: SKIPPED (<why>)", which ctest reports as skipped, when the compiler or
# the headers are missing.
foreach(var BACKEND COMPILER HOST_CXX KOKKOS_INCLUDE SOURCE OUTPUT)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "shardoptDeviceCompile.cmake: -D${var}=... is required")
  endif()
endforeach()
if(BACKEND STREQUAL "cuda")
  set(tool nvcc)
  set(target sm_90)
  set(how "install the CUDA toolkit")
  set(headers "scripts/kokkos_cuda_headers.sh, or set SHARDOPT_KOKKOS_CUDA_INCLUDE")
elseif(BACKEND STREQUAL "hip")
  set(tool hipcc)
  set(target gfx90a)
  set(how "Debian 12: apt-get install hipcc libamdhip64-dev rocm-device-libs libc++-15-dev libc++abi-15-dev")
  set(headers "scripts/kokkos_hip_headers.sh, or set SHARDOPT_KOKKOS_HIP_INCLUDE")
else()
  message(FATAL_ERROR "shardoptDeviceCompile.cmake: BACKEND is cuda or hip, not '${BACKEND}'")
endif()
if(NOT COMPILER OR NOT EXISTS "${COMPILER}")
  message("device.compile: SKIPPED (no ${tool}: ${how})")
  return()
endif()
if(NOT EXISTS "${KOKKOS_INCLUDE}/Kokkos_Core.hpp")
  message("device.compile: SKIPPED (no Kokkos headers configured for ${BACKEND} in ${KOKKOS_INCLUDE}: run ${headers})")
  return()
endif()
if(BACKEND STREQUAL "cuda")
  set(args -std=c++20 -x cu --extended-lambda -arch=sm_90 "-Werror=all-warnings" -ccbin "${HOST_CXX}")
else()
  # OMPI_SKIP_MPICXX: OpenMPI's C++ bindings, compiled against libstdc++, are not wanted here.
  set(args -std=c++20 -x hip --offload-arch=gfx90a -stdlib=libc++ -Wall -Werror -DOMPI_SKIP_MPICXX=1)
endif()
list(APPEND args -isystem "${KOKKOS_INCLUDE}")
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
  file(STRINGS "${KOKKOS_INCLUDE}/../VERSION" version LIMIT_COUNT 1)
  message("device.compile: Kokkos from ${version}")
endif()
execute_process(COMMAND "${COMPILER}" ${args} -c "${SOURCE}" -o "${OUTPUT}"
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE out)
if(NOT rc EQUAL 0)
  string(JOIN " " shown ${args})
  message(FATAL_ERROR "device.compile: ${tool} failed (${rc}):\n${COMPILER} ${shown} -c ${SOURCE}\n${out}")
endif()

if(BACKEND STREQUAL "hip" AND BUNDLER AND OBJCOPY AND READELF)
  # The device code travels in the object's .hip_fatbin section, an offload bundle of one code
  # object per GPU target; each kernel has a kernel descriptor, a dynamic symbol <kernel>.kd.
  set(fatbin "${OUTPUT}.hip_fatbin")
  set(code "${OUTPUT}.gfx90a.co")
  set(bundle_target hipv4-amdgcn-amd-amdhsa--gfx90a)
  execute_process(COMMAND "${OBJCOPY}" "--dump-section=.hip_fatbin=${fatbin}" "${OUTPUT}"
                  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE out)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "device.compile: ${OUTPUT} has no .hip_fatbin section (no device code):\n${out}")
  endif()
  execute_process(COMMAND "${BUNDLER}" --unbundle --type=o "--input=${fatbin}" "--targets=${bundle_target}"
                          "--output=${code}"
                  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE out)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "device.compile: the offload bundle of ${OUTPUT} holds no ${bundle_target} code:\n${out}")
  endif()
  execute_process(COMMAND "${READELF}" --dyn-symbols "${code}"
                  RESULT_VARIABLE rc OUTPUT_VARIABLE symbols ERROR_VARIABLE err)
  string(REGEX MATCHALL "[^ \n]+\\.kd\n" kernels "${symbols}")
  string(REGEX MATCHALL "[^ \n]*fused_update[^ \n]*\\.kd\n" step_kernels "${symbols}")
  list(LENGTH kernels n_kernels)
  list(LENGTH step_kernels n_step)
  if(NOT rc EQUAL 0 OR n_step EQUAL 0)
    message(FATAL_ERROR "device.compile: the gfx90a code object of ${OUTPUT} has ${n_kernels} kernels, "
                        "none of them the fused step (fused_update)\n${err}")
  endif()
  message("device.compile: gfx90a code object with ${n_kernels} kernels, ${n_step} of them the fused step")
endif()
message("device.compile: ${SOURCE} compiled for ${target}")
