//===- FuzzSupport.h - what the fuzz targets share ------------------------===//
#ifndef ATTN_TEST_FUZZ_SUPPORT_H
#define ATTN_TEST_FUZZ_SUPPORT_H

#include "attn/jit.h"
#include "attn/runtime.h"

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>

#include <sys/mman.h>
#include <unistd.h>

namespace attn::fuzz {

/// Prints what went wrong with the input that caused it and aborts, so
/// libFuzzer saves the input as a crash.
[[noreturn]] inline void finding(const char *target, const std::string &what,
                                 const std::string &input) {
  std::fprintf(stderr, "fuzz_%s: %s\n--- input (%zu bytes) ---\n%.4000s\n",
               target, what.c_str(), input.size(), input.c_str());
  std::abort();
}

/// Runs `body`; attn::Error (which CompileError derives from) is how user
/// input is meant to be refused. InternalError and any other exception are
/// findings.
template <typename Body>
void expectUserErrorsOnly(const char *target, const std::string &input,
                          Body &&body) {
  try {
    body();
  } catch (const InternalError &e) {
    finding(target, std::string("internal error: ") + e.what(), input);
  } catch (const Error &) {
  } catch (const std::exception &e) {
    finding(target, std::string("unexpected exception: ") + e.what(), input);
  } catch (...) {
    finding(target, "unexpected non-standard exception", input);
  }
}

/// A file in memory whose contents each run replaces: the readers under
/// test take paths, and a memfd spares the disk.
class MemoryFile {
public:
  explicit MemoryFile(const char *name) : fd(memfd_create(name, 0)) {
    if (fd < 0) {
      std::perror("memfd_create");
      std::abort();
    }
  }
  ~MemoryFile() { close(fd); }
  MemoryFile(const MemoryFile &) = delete;
  MemoryFile &operator=(const MemoryFile &) = delete;

  /// Replaces the contents and returns a path that opens them.
  std::string write(const void *data, size_t size) {
    if (ftruncate(fd, 0) != 0 ||
        (size && pwrite(fd, data, size, 0) != static_cast<ssize_t>(size))) {
      std::perror("memfd write");
      std::abort();
    }
    return path();
  }
  std::string path() const { return "/proc/self/fd/" + std::to_string(fd); }

private:
  int fd;
};

} // namespace attn::fuzz

#endif // ATTN_TEST_FUZZ_SUPPORT_H
