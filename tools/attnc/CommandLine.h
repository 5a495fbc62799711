//===- CommandLine.h - attnc's subcommands and options ----------*- C++ -*-===//
//
// The attnc command line (DSL.md "attnc subcommands", "Compile options") on
// llvm::cl: one cl::SubCommand per command, each with its own options and
// --help. parseCommandLine turns argv into an Invocation that the commands
// read; they never see llvm::cl.
//
//===----------------------------------------------------------------------===//
#ifndef ATTNC_TOOLS_COMMANDLINE_H
#define ATTNC_TOOLS_COMMANDLINE_H

#include "attn/jit.h"

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace attn::tool {

enum class Command { Check, Emit, Compile, Run, Bench, BlockMap };

/// One parsed and checked attnc command line.
struct Invocation {
  Command command = Command::Check;
  std::string file;    // FILE.attn
  Options options;     // the compile options (every command but check)
  std::string stage;   // emit: attn, tiled, llvm, ptx or amdgcn
  std::string out;     // compile: OUT (OUT.attnpkg, OUT.h); run: o.npy
  std::string q, k, v; // run: the inputs
  std::string lseOut;  // run: lse.npy ("" = none)
  std::vector<std::string> sets; // run, bench, blockmap: --set NAME=VALUE
  std::vector<int64_t> shape;    // bench, blockmap: B, Hq, Hkv, Sq, Skv
  /// run, bench, blockmap: --seed; random inputs take 0 and the page pool's
  /// shuffle 1 when it is not given.
  std::optional<int64_t> seed;
  int64_t reps = 0;      // bench: timed launches (0: until a second)
  int64_t b = 0, h = 0;  // blockmap: batch entry and query head
  bool json = false;     // bench
  bool simulate = false; // run: on the functional GPU simulator
  /// run --backward (options.backward): dO in, the gradients out, and
  /// --grad NAME=FILE as given.
  std::string dO, dq, dk, dv;
  std::vector<std::string> grads;
};

/// Parses argv. `--help` and `--version` print to stdout and exit 0. A
/// command line that does not parse (an unknown command or option, a
/// repeated option, a value out of range) is reported on stderr, each
/// message as `attnc: error: ...`, and gives nullopt: exit 1, before
/// anything is read or written. Throws attn::Error for a missing required
/// option.
std::optional<Invocation> parseCommandLine(int argc, char **argv);

} // namespace attn::tool

#endif // ATTNC_TOOLS_COMMANDLINE_H
