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
  std::string kvDtype = "same";
  int64_t blockQ = 0;       // 0 = auto
  int64_t blockKV = 0;      // 0 = auto
  bool lse = false;
  std::string variant;      // "" = the file's only variant
  int64_t paged = 0;        // 0 = contiguous K/V
  std::string splitKv = "auto";
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

/// Compiles variants at run time. Results are cached in memory by source
/// and options, so compiling the same text twice is a lookup.
class Jit {
public:
  Jit();
  ~Jit();
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
