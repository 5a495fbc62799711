//===- attn/jit.h - compiling .attn source from host code (attnjit) -------===//
#ifndef ATTN_JIT_H
#define ATTN_JIT_H

#include "attn/runtime.h"

#include <memory>
#include <string>

namespace attn {

/// Compile options (DSL.md "Compile options"); zero/empty means the default.
struct Options {
  std::string target = "cpu";
  int64_t headDim = 0;      // D; required
  int64_t valueHeadDim = 0; // Dv; 0 means D
  std::string dtype;        // q/k/v: f32, f16, bf16; "" = f32 on cpu
  std::string kvDtype = "same"; // same, int8, fp8e4m3, fp8e5m2, int4
  int64_t kvGroup = 64;         // tokens per K scale group (quantized K/V)
  int64_t blockQ = 0;       // 0 = auto
  int64_t blockKV = 0;      // 0 = auto
  bool lse = false;
  std::string variant;      // "" = the file's only variant
  int64_t paged = 0;        // 0 = contiguous K/V
  std::string splitKv = "auto";
  std::string gpuLoads = "auto"; // sm_90a K/V loads: auto (tma), tma, cp.async
  std::string cpu = "native"; // CPU to generate code for (attnc --cpu)
  /// Also build the backward (Kernel::backward; attnc compile --backward).
  /// CPU targets only so far.
  bool backward = false;
};

/// A source that does not compile: `what()` holds the rendered
/// `file:line:col: error:` diagnostics.
class CompileError : public Error {
public:
  explicit CompileError(const std::string &diagnostics)
      : Error("", diagnostics) {}
};

/// A compiler bug rather than a problem with the input.
class InternalError : public Error {
public:
  explicit InternalError(const std::string &message)
      : Error("", "internal compiler error: " + message) {}
};

/// Compiles variants at run time. Kernels are cached in memory (the same
/// source and options twice is a lookup; concurrent requests compile once)
/// and on disk, so a new process skips the compiler: `ATTNC_CACHE_DIR`
/// (default `$XDG_CACHE_HOME/attnc` or `~/.cache/attnc`; `off` disables).
/// Entries are keyed by compiler version, CPU, options and source; stale or
/// corrupt ones are rebuilt. Safe to use from several threads.
class Jit {
public:
  Jit();
  /// A Jit with its own disk cache directory ("" disables the disk cache).
  explicit Jit(const std::string &cacheDir);
  ~Jit();
  const std::string &cacheDir() const;

  /// Where compiled kernels came from so far.
  struct Stats {
    uint64_t memoryHits = 0; // same source and options seen by this Jit
    uint64_t diskHits = 0;   // loaded from the disk cache
    uint64_t compiles = 0;   // ran the compiler
  };
  Stats stats() const;
  Jit(const Jit &) = delete;
  Jit &operator=(const Jit &) = delete;

  Kernel compile(const std::string &source, const Options &options,
                 const std::string &filename = "<source>");
  Kernel compileFile(const std::string &path, const Options &options);

private:
  struct Impl;
  std::unique_ptr<Impl> impl;
};

} // namespace attn

#endif // ATTN_JIT_H
