//===- SanitizerDefaults.cpp - ASan/UBSan/LSan settings of sanitized builds ===//
//
// Linked into every executable of a -DATTNC_SANITIZE=ON build (see
// cmake/SanitizerDefaults.cmake), so tests, attnc and the fuzzers run with
// the same settings without environment variables. The sanitizer runtimes
// call these hooks at start-up; ASAN_OPTIONS etc. still override them.
// There are no leak suppressions: the one deliberate exit-time "leak" (JITs
// kept alive at exit, lib/Driver/Compiler.cpp destroyJit) stays reachable.
//
//===----------------------------------------------------------------------===//

extern "C" {

const char *__asan_default_options() {
  return "detect_stack_use_after_return=1:check_initialization_order=1:"
         "strict_init_order=1:detect_leaks=1";
}

const char *__ubsan_default_options() { return "print_stacktrace=1"; }

} // extern "C"
