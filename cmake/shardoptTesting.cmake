# SPDX-License-Identifier: BSD-3-Clause
# shardoptTesting.cmake -- helpers shared by tests/ and examples/ (build tree only,
# not installed).

include_guard(GLOBAL)

set(SHARDOPT_TEST_TIMEOUT 300 CACHE STRING "Timeout in seconds of each ctest test")

# Flags for the project's own executables (never put on the interface target).
function(shardopt_target_defaults target)
  target_compile_options(${target} PRIVATE
    $<$<CXX_COMPILER_ID:GNU,Clang,AppleClang,IntelLLVM>:-Wall -Wextra -fno-math-errno -ffp-contract=off>)
  # GCC 12/13 at -O3 report bogus -Wrestrict for `"literal" + std::string`
  # inside libstdc++ (GCC bug 105329).
  target_compile_options(${target} PRIVATE
    $<$<AND:$<CXX_COMPILER_ID:GNU>,$<VERSION_GREATER_EQUAL:$<CXX_COMPILER_VERSION>,12>,$<VERSION_LESS:$<CXX_COMPILER_VERSION>,14>>:-Wno-restrict>)
endfunction()

# Environment for every test that runs an MPI program.  The OMPI_* variables
# are ignored by other MPI implementations.
set(SHARDOPT_MPI_TEST_ENV
  "OMPI_ALLOW_RUN_AS_ROOT=1"
  "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1"
  # containers often forbid the ptrace-based single-copy path of the vader BTL
  "OMPI_MCA_btl_vader_single_copy_mechanism=none")

# Is the launcher Open MPI's?  Then pass --oversubscribe so that more ranks than
# cores may be started (the CI machine has 2 cores, tests use up to 4 ranks).
if(SHARDOPT_ENABLE_MPI AND MPIEXEC_EXECUTABLE AND NOT DEFINED SHARDOPT_MPIEXEC_IS_OPENMPI)
  execute_process(COMMAND "${MPIEXEC_EXECUTABLE}" --version
                  OUTPUT_VARIABLE _shardopt_mpiexec_version
                  ERROR_VARIABLE _shardopt_mpiexec_version
                  RESULT_VARIABLE _shardopt_mpiexec_rc
                  TIMEOUT 30)
  if(_shardopt_mpiexec_version MATCHES "Open MPI|OpenRTE|Open RTE")
    set(_shardopt_is_ompi TRUE)
  else()
    set(_shardopt_is_ompi FALSE)
  endif()
  set(SHARDOPT_MPIEXEC_IS_OPENMPI ${_shardopt_is_ompi} CACHE BOOL
      "mpiexec is Open MPI's (adds --oversubscribe to MPI tests)")
endif()
set(SHARDOPT_MPIEXEC_EXTRA_FLAGS "")
if(SHARDOPT_MPIEXEC_IS_OPENMPI)
  set(SHARDOPT_MPIEXEC_EXTRA_FLAGS --oversubscribe)
endif()

# shardopt_add_mpi_test(NAME <test> NP <n> COMMAND <exe-or-target> [args...]
#                       [PROPERTIES <prop> <value> ...])
#
# Registers <test> which runs the command under mpiexec with <n> ranks.  When
# MPI is disabled a test with NP 1 runs the command directly and other NP are
# skipped.  <exe-or-target> may be a target name (its file is used).
function(shardopt_add_mpi_test)
  cmake_parse_arguments(PARSE_ARGV 0 arg "" "NAME;NP" "COMMAND;PROPERTIES")
  if(NOT arg_NAME OR NOT arg_NP OR NOT arg_COMMAND)
    message(FATAL_ERROR "shardopt_add_mpi_test: NAME, NP and COMMAND are required")
  endif()
  list(POP_FRONT arg_COMMAND exe)
  if(TARGET "${exe}")
    set(exe "$<TARGET_FILE:${exe}>")
  endif()
  if(SHARDOPT_ENABLE_MPI)
    add_test(NAME ${arg_NAME}
             COMMAND "${MPIEXEC_EXECUTABLE}" ${MPIEXEC_NUMPROC_FLAG} ${arg_NP}
                     ${SHARDOPT_MPIEXEC_EXTRA_FLAGS} ${MPIEXEC_PREFLAGS}
                     "${exe}" ${MPIEXEC_POSTFLAGS} ${arg_COMMAND})
  elseif(arg_NP EQUAL 1)
    add_test(NAME ${arg_NAME} COMMAND "${exe}" ${arg_COMMAND})
  else()
    return()
  endif()
  set_tests_properties(${arg_NAME} PROPERTIES
    ENVIRONMENT "${SHARDOPT_MPI_TEST_ENV}"
    PROCESSORS ${arg_NP}
    TIMEOUT ${SHARDOPT_TEST_TIMEOUT})
  if(arg_PROPERTIES)
    set_tests_properties(${arg_NAME} PROPERTIES ${arg_PROPERTIES})
  endif()
endfunction()
