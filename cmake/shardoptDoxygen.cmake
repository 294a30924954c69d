# SPDX-License-Identifier: BSD-3-Clause
# shardoptDoxygen.cmake -- ctest driver of the documentation test.
#
#   cmake -DDOXYGEN=<exe> -DSOURCE_DIR=<repo> -DOUTPUT_DIR=<dir> -P shardoptDoxygen.cmake
#
# Runs doxygen on <repo>/Doxyfile from <repo> (its INPUT paths are relative),
# writing into <dir>.  The checked-in Doxyfile is @INCLUDEd by a generated one
# that overrides OUTPUT_DIRECTORY and drops INPUT entries that do not exist
# (doxygen warns about those).  Fails on a non-zero exit (WARN_AS_ERROR =
# FAIL_ON_WARNINGS) and on any "warning:"/"error:" line in the output.

foreach(var DOXYGEN SOURCE_DIR OUTPUT_DIR)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "shardoptDoxygen.cmake: -D${var}=... is required")
  endif()
endforeach()

set(doxyfile "${SOURCE_DIR}/Doxyfile")
if(NOT EXISTS "${doxyfile}")
  message(FATAL_ERROR "no Doxyfile in ${SOURCE_DIR}")
endif()
file(READ "${doxyfile}" content)

set(inputs "")
if(content MATCHES "(^|\n)[ \t]*INPUT[ \t]*=([^\n]*)")
  string(STRIP "${CMAKE_MATCH_2}" raw)
  separate_arguments(raw UNIX_COMMAND "${raw}")
  foreach(item IN LISTS raw)
    if(EXISTS "${SOURCE_DIR}/${item}")
      string(APPEND inputs " \"${item}\"")
    else()
      message(STATUS "doxygen test: INPUT '${item}' does not exist, skipped")
    endif()
  endforeach()
endif()

set(mainpage "")
if(content MATCHES "(^|\n)[ \t]*USE_MDFILE_AS_MAINPAGE[ \t]*=([^\n]*)")
  string(STRIP "${CMAKE_MATCH_2}" mainpage)
  if(mainpage AND NOT EXISTS "${SOURCE_DIR}/${mainpage}")
    set(mainpage "")
  endif()
endif()

file(MAKE_DIRECTORY "${OUTPUT_DIR}")
set(generated "${OUTPUT_DIR}/Doxyfile.ctest")
file(WRITE "${generated}"
  "@INCLUDE = \"${doxyfile}\"\n"
  "OUTPUT_DIRECTORY = \"${OUTPUT_DIR}\"\n"
  "INPUT =${inputs}\n"
  "USE_MDFILE_AS_MAINPAGE = ${mainpage}\n"
  "WARN_LOGFILE =\n")

execute_process(
  COMMAND "${DOXYGEN}" "${generated}"
  WORKING_DIRECTORY "${SOURCE_DIR}"
  RESULT_VARIABLE rc
  OUTPUT_VARIABLE out
  ERROR_VARIABLE out)

if(out)
  message("${out}")
endif()
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "doxygen failed (exit status ${rc})")
endif()
if(out MATCHES "(warning|error):")
  message(FATAL_ERROR "doxygen reported warnings")
endif()
message(STATUS "doxygen: no warnings; HTML in ${OUTPUT_DIR}/html")
