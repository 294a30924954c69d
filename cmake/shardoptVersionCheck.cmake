# SPDX-License-Identifier: BSD-3-Clause
# shardoptVersionCheck.cmake -- the version of project(shardopt VERSION ...) is stated in two more files:
#
#   include/shardopt/version.hpp   SHARDOPT_VERSION_MAJOR/MINOR/PATCH and SHARDOPT_VERSION_STRING
#   Doxyfile                       PROJECT_NUMBER
#
# The header is a plain file, not generated into the build tree, so that code using the headers with
# `-I include -I policies` alone (no CMake) has it too, and the installed copy is the same file.
# shardopt_check_version(<version>) fails the configuration, naming what to change, when they disagree.
include_guard(GLOBAL)

function(shardopt_check_version version)
  if(NOT version MATCHES "^([0-9]+)\\.([0-9]+)\\.([0-9]+)$")
    message(FATAL_ERROR "shardopt: project(VERSION ${version}) must be major.minor.patch")
  endif()
  set(minor "${CMAKE_MATCH_2}")
  set(patch "${CMAKE_MATCH_3}")
  if(minor GREATER 99 OR patch GREATER 99)
    message(FATAL_ERROR "shardopt ${version}: SHARDOPT_VERSION (major * 10000 + minor * 100 + patch) "
                        "needs minor and patch versions below 100")
  endif()

  set(header "${PROJECT_SOURCE_DIR}/include/shardopt/version.hpp")
  set(doxyfile "${PROJECT_SOURCE_DIR}/Doxyfile")
  set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS "${header}")  # checked again after an edit
  file(STRINGS "${header}" lines REGEX "^#define SHARDOPT_VERSION_(MAJOR|MINOR|PATCH|STRING) ")
  set(numbers "")
  foreach(part IN ITEMS MAJOR MINOR PATCH)
    set(value "?")
    foreach(line IN LISTS lines)
      if(line MATCHES "^#define SHARDOPT_VERSION_${part} +([0-9]+) *$")
        set(value "${CMAKE_MATCH_1}")
      endif()
    endforeach()
    list(APPEND numbers "${value}")
  endforeach()
  list(JOIN numbers "." numbers)
  set(literal "?")
  foreach(line IN LISTS lines)
    if(line MATCHES "^#define SHARDOPT_VERSION_STRING +\"([^\"]*)\" *$")
      set(literal "${CMAKE_MATCH_1}")
    endif()
  endforeach()
  if(NOT numbers STREQUAL version OR NOT literal STREQUAL version)
    message(FATAL_ERROR
      "shardopt: project(shardopt VERSION ${version}) in CMakeLists.txt, but include/shardopt/version.hpp "
      "says ${numbers} (SHARDOPT_VERSION_MAJOR/MINOR/PATCH) and \"${literal}\" (SHARDOPT_VERSION_STRING): "
      "make them agree.")
  endif()

  if(EXISTS "${doxyfile}")
    set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS "${doxyfile}")
    file(STRINGS "${doxyfile}" number REGEX "^PROJECT_NUMBER[ \t]*=")
    string(REGEX REPLACE "^PROJECT_NUMBER[ \t]*=[ \t]*" "" number "${number}")
    string(STRIP "${number}" number)
    if(NOT number STREQUAL version)
      message(FATAL_ERROR "shardopt: project(shardopt VERSION ${version}) in CMakeLists.txt, but the Doxyfile "
                          "says PROJECT_NUMBER = ${number}: make them agree.")
    endif()
  endif()
endfunction()
