# SPDX-License-Identifier: BSD-3-Clause
# expect_failure.cmake -- ctest driver of a test that must FAIL, and fail for the right reason.
#
#   cmake "-DCOMMAND=<program;args...>" "-DEXPECT=<regex;regex...>" -P expect_failure.cmake
#
# Runs COMMAND. Passes only if it exits with a non-zero status and its output (stdout and stderr
# together, colour escapes removed) matches every regular expression of EXPECT.
foreach(var COMMAND EXPECT)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "expect_failure.cmake: -D${var}=... is required")
  endif()
endforeach()
execute_process(COMMAND ${COMMAND} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE out)
string(ASCII 27 esc)
string(REGEX REPLACE "${esc}\\[[0-9;]*[mK]" "" out "${out}")
message("${out}")
if(rc EQUAL 0)
  message(FATAL_ERROR "expected a failure, but the command passed: ${COMMAND}")
endif()
foreach(re IN LISTS EXPECT)
  if(NOT out MATCHES "${re}")
    message(FATAL_ERROR "the command failed (as expected, status ${rc}) but its output lacks: ${re}")
  endif()
endforeach()
message(STATUS "failed as expected (status ${rc}), with every expected message")
