# Adds test/sanitize/SanitizerDefaults.cpp (the sanitizers' default options
# and leak suppressions) to every executable defined so far. The hooks must
# live in the executable: the sanitizer runtime is linked there and its weak
# defaults would win over a definition in a shared library.
function(attn_add_sanitizer_defaults dir)
  get_property(targets DIRECTORY ${dir} PROPERTY BUILDSYSTEM_TARGETS)
  foreach(target ${targets})
    get_target_property(type ${target} TYPE)
    if(type STREQUAL "EXECUTABLE")
      target_sources(${target} PRIVATE
        ${PROJECT_SOURCE_DIR}/test/sanitize/SanitizerDefaults.cpp)
    endif()
  endforeach()
  get_property(subdirs DIRECTORY ${dir} PROPERTY SUBDIRECTORIES)
  foreach(subdir ${subdirs})
    attn_add_sanitizer_defaults(${subdir})
  endforeach()
endfunction()
attn_add_sanitizer_defaults(${PROJECT_SOURCE_DIR})
