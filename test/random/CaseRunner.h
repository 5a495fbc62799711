//===- CaseRunner.h - run random cases against the reference, shrink them -===//
//
// Runs a generated case (test/random/VariantGenerator.h) through the JIT on
// its target (GPU targets on the functional simulators) and compares every
// launch with the float64 reference under docs/numerics.md's bounds. A
// failing case is shrunk while it keeps failing the same way, and its
// minimal form is written out as a ready-to-run `attnc run` reproducer.
//
//===----------------------------------------------------------------------===//
#ifndef ATTN_TEST_RANDOM_CASERUNNER_H
#define ATTN_TEST_RANDOM_CASERUNNER_H

#include "test/random/VariantGenerator.h"

#include <string>

namespace attn::testing::rdiff {

struct Failure {
  enum Kind {
    None,
    Rejected,  // the compiler refused a source the checker accepts
    Internal,  // an internal compiler error or a crash-free exception
    Launch,    // a launch error on valid arguments
    NaN,       // NaN in o or lse
    Mismatch,  // o or lse outside the bound
    LseInf,    // lse -inf in one of kernel and reference only
    BlockMap,  // a tile classified EMPTY or FULL wrongly (CPU)
    Reference, // the reference itself is not finite: a generator bug
  };
  Kind kind = None;
  std::string message;
  size_t launch = 0;
  double bound = 2e-4; // the bound on |o - ref| that applied
  explicit operator bool() const { return kind != None; }
};
const char *kindName(Failure::Kind k);

struct RunResult {
  Failure failure;
  double worst = 0; // max over launches of error / bound (o and lse)
  /// Why the case could not run where that is a documented limit of the
  /// simulator rather than a failure (a kernel that needs scratch memory).
  std::string unsupported;
};

/// Compiles and runs every launch of `c` and compares with the reference.
RunResult runCase(const Case &c, Jit &jit);

/// Points attnrt's GPU launches at the simulators (once); "" when this
/// build has them, else why not.
std::string useSimulators();

struct Shrunk {
  Case minimal;
  Failure failure;
  int steps = 0; // accepted edits
  int runs = 0;  // candidates run
};
/// The smallest case reached by shrinkCandidates() edits that fail with the
/// same kind of failure, within `maxRuns` runs and `maxSeconds`.
Shrunk shrink(const Case &c, const Failure &f, Jit &jit, int maxRuns,
              double maxSeconds);

/// Writes the case's source and launch `failure.launch`'s inputs under
/// `dir` and returns the report: the source, the options and param values,
/// and the `attnc run` / `attn-npy check` command lines that reproduce it.
std::string writeReproducer(const Case &c, const Failure &failure,
                            const std::string &dir);

} // namespace attn::testing::rdiff

#endif // ATTN_TEST_RANDOM_CASERUNNER_H
