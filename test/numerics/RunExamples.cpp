//===- RunExamples.cpp - the demo: every example vs the reference ---------===//
//
// Compiles each catalog variant of examples/ for the CPU, runs it on random
// inputs, and prints its max error against the float64 reference and its
// median time.
//
//===----------------------------------------------------------------------===//
#include "test/numerics/Catalog.h"

#include "attn/jit.h"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <string>

using namespace attn;
using namespace attn::testing;

int main(int argc, char **argv) {
  std::string root = argc > 1 ? argv[1] : ".";
  std::printf("%-16s %-22s %8s %11s %11s %9s %10s %13s\n", "variant",
              "file", "S", "max|o-ref|", "max|lse-ref|", "ms", "compile ms",
              "proved/exact");
  int failures = 0;
  for (const CatalogCase &c : catalogCases()) {
    Problem p = catalogProblem(c, root);
    p.timingReps = 9;
    // Small tiles so the block classification has work to do.
    p.options.blockQ = 16;
    p.options.blockKV = 16;
    p.options.lse = true; // dropped below for normalizers without lse
    Outcome out;
    double compileMs = 0;
    try {
      // Time a cold compile separately from the run.
      Jit jit;
      try {
        jit.compile(p.source, p.options, p.filename);
      } catch (const CompileError &) {
        p.options.lse = false; // sigmoid / relu: no lse
      }
      Jit fresh;
      Options o = p.options;
      auto t0 = std::chrono::steady_clock::now();
      fresh.compile(p.source, o, p.filename);
      compileMs = std::chrono::duration<double, std::milli>(
                      std::chrono::steady_clock::now() - t0)
                      .count();
      out = runAgainstReference(p, &fresh);
    } catch (const std::exception &e) {
      std::printf("%-16s FAILED: %s\n", c.name.c_str(), e.what());
      ++failures;
      continue;
    }
    bool ok = !out.hasNaN && out.maxErrO <= 2e-4 &&
              (!out.info.lse || (out.maxErrLse <= 2e-4 && !out.lseInfMismatch));
    failures += !ok;
    char lse[32] = "-";
    if (out.info.lse)
      std::snprintf(lse, sizeof lse, "%.2e", out.maxErrLse);
    // Blocks the classifier proved EMPTY or FULL, of those that are.
    char proved[32];
    std::snprintf(proved, sizeof proved, "%lld/%lld",
                  (long long)out.blockMap.emptyOrFull,
                  (long long)out.blockMap.uniform);
    ok = ok && out.blockMap.wronglyEmpty == 0 && out.blockMap.wronglyFull == 0;
    std::printf("%-16s %-22s %4lldx%-4lld %11.2e %11s %9.3f %10.1f %13s%s\n",
                c.name.c_str(), c.file.c_str(), (long long)p.Sq,
                (long long)p.Skv, out.maxErrO, lse, out.ms, compileMs, proved,
                ok ? "" : "  <-- FAIL");
  }
  std::printf("%d passed, %d failed\n",
              (int)catalogCases().size() - failures, failures);
  return failures ? 1 : 0;
}
