# SPDX-License-Identifier: BSD-3-Clause
# expect_failure.cmake -- ctest driver of a test that must FAIL, and fail for the right reason.
#
#   cmake "-DCOMMAND=<program;args...>" "-DEXPECT=<regex;regex...>" [-DEXPECT_ONCE=<regex;...>]
#         [-DREJECT=<regex;...>] [-DUNWRAP=ON] -P expect_failure.cmake
#
# Runs COMMAND. Passes only if it exits with a non-zero status and its output (stdout and stderr
# together, colour escapes removed) matches every regular expression of EXPECT, matches each of
# EXPECT_ONCE exactly once (a message printed once, not once per rank) and none of REJECT. UNWRAP
# joins wrapped lines (a newline and the indentation after it become one space) before matching.
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
if(UNWRAP)
  string(REGEX REPLACE "\n +" " " out "${out}")
endif()
foreach(re IN LISTS EXPECT EXPECT_ONCE)
  if(NOT out MATCHES "${re}")
    message(FATAL_ERROR "the command failed (as expected, status ${rc}) but its output lacks: ${re}")
  endif()
endforeach()
foreach(re IN LISTS EXPECT_ONCE)
  string(REGEX MATCHALL "${re}" all "${out}")
  list(LENGTH all n)
  if(NOT n EQUAL 1)
    message(FATAL_ERROR "the output holds ${n} matches of what must be said once: ${re}")
  endif()
endforeach()
foreach(re IN LISTS REJECT)
  if(out MATCHES "${re}")
    message(FATAL_ERROR "the command failed (as expected, status ${rc}) but its output holds what it must not: ${re} (${CMAKE_MATCH_0})")
  endif()
endforeach()
message(STATUS "failed as expected (status ${rc}), with every expected message")
