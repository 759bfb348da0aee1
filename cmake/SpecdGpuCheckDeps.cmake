# SPECD_GPU_CHECK_ONLY: jansson and PCRE2 without requiring pkg-config (the GPU
# machine may lack it), as the imported targets the modules link (PkgConfig::JANSSON,
# PkgConfig::PCRE2). Static libraries are preferred, so a prefix unpacked from
# packages (bench/gpu-deps.sh) needs nothing at run time.
find_package(PkgConfig QUIET)
if(PkgConfig_FOUND AND NOT SPECD_DEPS_PREFIX)
  pkg_check_modules(JANSSON QUIET IMPORTED_TARGET jansson)
  pkg_check_modules(PCRE2 QUIET IMPORTED_TARGET libpcre2-8)
endif()

# specd_dep(TARGET HEADER LIBNAME): an imported target from SPECD_DEPS_PREFIX or the system.
function(specd_dep target header libname)
  if(TARGET ${target})
    return()
  endif()
  set(hints)
  if(SPECD_DEPS_PREFIX)
    list(APPEND hints ${SPECD_DEPS_PREFIX}/usr ${SPECD_DEPS_PREFIX})
  endif()
  find_path(${libname}_INC ${header} HINTS ${hints} PATH_SUFFIXES include
            include/${CMAKE_LIBRARY_ARCHITECTURE})
  find_library(${libname}_LIB NAMES lib${libname}.a ${libname} HINTS ${hints}
               PATH_SUFFIXES lib lib/${CMAKE_LIBRARY_ARCHITECTURE} lib/x86_64-linux-gnu)
  if(NOT ${libname}_INC OR NOT ${libname}_LIB)
    message(FATAL_ERROR "SPECD_GPU_CHECK_ONLY: ${header} / lib${libname} not found; run "
                        "bench/gpu-deps.sh and pass -DSPECD_DEPS_PREFIX=<its folder>")
  endif()
  add_library(${target} INTERFACE IMPORTED GLOBAL)
  target_include_directories(${target} INTERFACE ${${libname}_INC})
  target_link_libraries(${target} INTERFACE ${${libname}_LIB})
  message(STATUS "specd: ${target}: ${${libname}_LIB}")
endfunction()

specd_dep(PkgConfig::JANSSON jansson.h jansson)
specd_dep(PkgConfig::PCRE2 pcre2.h pcre2-8)
