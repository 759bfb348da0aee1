# Warnings, sanitizers and SIMD flags shared by every target.

set(SPECD_WARNINGS
  -Wall -Wextra -Wpedantic -Wshadow -Wstrict-prototypes -Wmissing-prototypes
  -Wformat=2 -Wundef -Wcast-qual -Wwrite-strings -Wvla -Wimplicit-fallthrough)
if(SPECD_WERROR)
  list(APPEND SPECD_WARNINGS -Werror)
endif()

if(SPECD_NATIVE)
  add_compile_options($<$<COMPILE_LANGUAGE:C>:-march=native>)
endif()

if(SPECD_SANITIZE)
  string(REPLACE "," ";" _san "${SPECD_SANITIZE}")
  foreach(s IN LISTS _san)
    add_compile_options($<$<COMPILE_LANGUAGE:C>:-fsanitize=${s}>)
    add_link_options(-fsanitize=${s})
  endforeach()
  add_compile_options($<$<COMPILE_LANGUAGE:C>:-fno-omit-frame-pointer>
                      $<$<COMPILE_LANGUAGE:C>:-fno-sanitize-recover=all>)
endif()

# specd_target(NAME): the project's compile settings for one target.
function(specd_target name)
  target_compile_options(${name} PRIVATE $<$<COMPILE_LANGUAGE:C>:${SPECD_WARNINGS}>)
  target_compile_definitions(${name} PRIVATE _POSIX_C_SOURCE=200809L _DEFAULT_SOURCE)
endfunction()

# specd_simd_source(FILE FLAGS...): compile one file for a wider ISA. The code in it
# is only called after the run-time CPU check (kernels/cpu/cpu_features.h) says the
# ISA is there, so the rest of the binary stays portable (x86-64 baseline).
function(specd_simd_source file)
  if(CMAKE_SYSTEM_PROCESSOR MATCHES "x86_64|AMD64")
    set(opts ${ARGN})
    # clang's UBSan at -O2 takes over four minutes a file on these unrolled loops, which
    # the fuzz targets (parsers) never reach: the fuzz build leaves it out here.
    if(SPECD_FUZZ)
      list(APPEND opts -fno-sanitize=undefined)
    endif()
    set_source_files_properties(${file} PROPERTIES COMPILE_OPTIONS "${opts}")
  endif()
endfunction()

# specd_module(NAME LIB SOURCES... [DEPS libs...]): the library of one top-level
# folder. Its headers are reachable as "NAME/header.h" only by targets that link it
# (directly or through a PUBLIC dependency), so an include against the module order
# of DESIGN.md §4 fails to compile, not just to link.
function(specd_module name lib)
  cmake_parse_arguments(M "" "" "SOURCES;DEPS" ${ARGN})
  set(inc ${PROJECT_BINARY_DIR}/modinc/${name})
  if(NOT EXISTS ${inc}/${name})
    file(MAKE_DIRECTORY ${inc})
    file(CREATE_LINK ${CMAKE_CURRENT_SOURCE_DIR} ${inc}/${name} SYMBOLIC)
  endif()
  if(M_SOURCES)
    add_library(${lib} STATIC ${M_SOURCES})
    specd_target(${lib})
    set(scope PUBLIC)
  else() # headers only, so far
    add_library(${lib} INTERFACE)
    set(scope INTERFACE)
  endif()
  target_include_directories(${lib} ${scope} ${inc})
  if(M_DEPS)
    target_link_libraries(${lib} ${scope} ${M_DEPS})
  endif()
endfunction()
