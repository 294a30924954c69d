# SPDX-License-Identifier: BSD-3-Clause
# interop.cmake -- checkpoints shared with PyTorch, in both directions (include()d from
# tests/CMakeLists.txt; needs shardopt::shardopt and shardopt_target_defaults()).
#
#   shardopt_checkpoint_tool   tests/checkpoint_tool.cpp: steps shardopt, loads and saves checkpoints
#   interop.torch              scripts/torch_interop.py drives it against torch.optim; skipped
#                              (exit code 77) where torch or safetensors cannot be imported

find_package(nlohmann_json 3 REQUIRED)

add_executable(shardopt_checkpoint_tool "${CMAKE_CURRENT_LIST_DIR}/checkpoint_tool.cpp")
target_include_directories(shardopt_checkpoint_tool PRIVATE "${CMAKE_CURRENT_LIST_DIR}")  # support.hpp
target_link_libraries(shardopt_checkpoint_tool PRIVATE shardopt::shardopt nlohmann_json::nlohmann_json)
shardopt_target_defaults(shardopt_checkpoint_tool)

find_package(Python3 COMPONENTS Interpreter)
if(Python3_Interpreter_FOUND)
  # The 2-rank cases need the tool built with MPI and a launcher; without them they are skipped.
  if(SHARDOPT_ENABLE_MPI AND MPIEXEC_EXECUTABLE)
    set(_shardopt_interop_mpi --mpiexec "${MPIEXEC_EXECUTABLE}")
  else()
    set(_shardopt_interop_mpi --no-mpi)
  endif()
  get_filename_component(_shardopt_interop_script "${CMAKE_CURRENT_LIST_DIR}/../scripts/torch_interop.py" ABSOLUTE)
  add_test(NAME interop.torch
           COMMAND "${Python3_EXECUTABLE}" "${_shardopt_interop_script}"
                   --tool "$<TARGET_FILE:shardopt_checkpoint_tool>"
                   --workdir "${CMAKE_CURRENT_BINARY_DIR}/interop"
                   ${_shardopt_interop_mpi})
  set_tests_properties(interop.torch PROPERTIES
    ENVIRONMENT "${SHARDOPT_MPI_TEST_ENV}"
    SKIP_RETURN_CODE 77
    PROCESSORS 2
    TIMEOUT ${SHARDOPT_TEST_TIMEOUT}
    LABELS interop)
  unset(_shardopt_interop_mpi)
  unset(_shardopt_interop_script)
else()
  message(STATUS "Python 3 not found: the interop.torch test is not registered")
endif()
