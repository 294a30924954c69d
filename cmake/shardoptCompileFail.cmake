# SPDX-License-Identifier: BSD-3-Clause
# shardoptCompileFail.cmake -- ctest driver of the compile-fail tests.
#
#   cmake -DBUILD_DIR=<dir> -DTARGET=<target> -DEXPECT_FILE=<file> [-DCONFIG=<cfg>]
#         -P shardoptCompileFail.cmake
#
# Builds <target> in <dir>.  Passes only if the build FAILS and its combined
# output matches the CMake regular expression stored in <file> (the text after
# "// EXPECT:" on the first line of the test source).  A file that holds
# "ERROR: ..." instead makes the test fail with that message.

foreach(var BUILD_DIR TARGET EXPECT_FILE)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "shardoptCompileFail.cmake: -D${var}=... is required")
  endif()
endforeach()

file(READ "${EXPECT_FILE}" expect)
string(REGEX REPLACE "[\r\n]+$" "" expect "${expect}")
if(expect MATCHES "^ERROR: ")
  message(FATAL_ERROR "${expect}")
endif()

set(config_args "")
if(CONFIG)
  set(config_args --config "${CONFIG}")
endif()

execute_process(
  COMMAND "${CMAKE_COMMAND}" --build "${BUILD_DIR}" --target "${TARGET}" ${config_args}
  RESULT_VARIABLE rc
  OUTPUT_VARIABLE out
  ERROR_VARIABLE out)

# Colour escapes (CMAKE_COLOR_DIAGNOSTICS=ON) would get in the regex's way.
string(ASCII 27 esc)
string(REGEX REPLACE "${esc}\\[[0-9;]*[mK]" "" out "${out}")

if(rc EQUAL 0)
  message("${out}")
  message(FATAL_ERROR "compile-fail test '${TARGET}': the build SUCCEEDED but was expected to fail "
                      "with output matching: ${expect}")
endif()

if(NOT out MATCHES "${expect}")
  message("${out}")
  message(FATAL_ERROR "compile-fail test '${TARGET}': the build failed (as expected) but its "
                      "output does not match the regex: ${expect}")
endif()

message(STATUS "compile-fail test '${TARGET}': build failed as expected; matched: ${expect}")
