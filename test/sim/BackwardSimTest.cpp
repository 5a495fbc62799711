//===- BackwardSimTest.cpp - NVIDIA backward kernels on the PTX simulator -===//
//
// Variants compiled with backward for sm_80 and sm_90a (bf16 inputs), the
// forward and then Kernel::backward launched on host tensors through
// attnrt's CUDA launcher on the functional simulator (libattnsim_cuda.so),
// and dq, dk, dv and every f32 param's and captured tensor's gradient
// compared with the float64 referenceBackward under BackwardTest's bf16
// bounds: |g - r| <= tol max(1, max |r|) per tensor, tol = 3e-2 for dq, dk,
// dv and 1e-1 for param and capture gradients.
// Shapes are small and ragged (Sq = 70, Skv = 100 in the causal case: tails
// in both directions, several CTAs and key tiles). Also: two runs give the
// same bits (param and capture gradients included), and ptxas -v reports
// no spills for the backward kernels.
//
//===----------------------------------------------------------------------===//
#include "attn/jit.h"
#include "attn/runtime.h"
#include "lib/Driver/Compiler.h"
#include "lib/Frontend/Eval.h"
#include "lib/Target/NVPTX/NVPTXTarget.h"
#include "test/numerics/Catalog.h"
#include "test/reference/ReferenceBackward.h"
#include "test/support/BackwardSim.h"
#include "test/unit/GpuCases.h"
#include "test/support/Harness.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <regex>
#include <string>
#include <vector>

using namespace attn;
using namespace attn::testing;

namespace {

/// The shared run (test/support/BackwardSim.h) on this test's simulator.
SimRun runOnSimulator(const Case &c, const std::string &target,
                      bool compare = true) {
  attn::testing::useTestGpuSimulator();
  return runBackwardOnSimulator(c, target, compare);
}

// (A Case's shape must outlive the call: runOnSimulator reads it.)
std::vector<Case> cases() {
  std::vector<Case> all = backwardSimCases();
  // Past a head dim of 128 the kernels are scalar (no tensor cores).
  Shape wideValues;
  wideValues.Dv = 160;
  wideValues.Sq = 20;
  wideValues.Skv = 40;
  // D = Dv = 256: the scalar kernels with 16 rows (and threads) a CTA.
  Shape widest;
  widest.D = widest.Dv = 256;
  widest.Sq = 20;
  widest.Skv = 40;
  all.push_back({"scalar_head_dim_256",
                 "variant c {\n  mask(b, h, q, kv) = kv <= q;\n}", widest});
  all.push_back({"scalar_wide_values",
                 "variant sc {\n"
                 "  tensor sink_logit: f32[Hq];\n"
                 "  param cap: f32 = 1.5;\n"
                 "  sink(h) = sink_logit[h];\n"
                 "  score(s, b, h, q, kv) = cap * tanh(s / cap);\n"
                 "  mask(b, h, q, kv) = kv <= q;\n}",
                 wideValues});
  return all;
}

class BackwardSim : public ::testing::TestWithParam<Case> {};

TEST_P(BackwardSim, Sm80MatchesReference) {
  runOnSimulator(GetParam(), "sm_80");
}

TEST_P(BackwardSim, Sm90aMatchesReference) {
  // sm_90a runs the same mma.sync backward after its own (wgmma) forward:
  // a subset keeps the suite short.
  std::string name = GetParam().name;
  for (const char *subset : {"dense", "causal_ragged", "gqa", "softcap",
                             "sinks", "softplus", "fully_masked_rows",
                             "head_dim_64", "alibi_capture_and_param",
                             "select_moba_gqa", "select_blocks_of_48"})
    if (name == subset) {
      runOnSimulator(GetParam(), "sm_90a");
      return;
    }
  GTEST_SKIP() << "covered on sm_80";
}

INSTANTIATE_TEST_SUITE_P(Variants, BackwardSim, ::testing::ValuesIn(cases()),
                         [](const auto &info) { return info.param.name; });

TEST(BackwardSimDeterminism, TwoRunsAreBitIdentical) {
  Shape ragged;
  ragged.Sq = 70;
  ragged.Skv = 100;
  Case c = {"alibi_param_ragged", kAlibiParam, ragged};
  SimRun a = runOnSimulator(c, "sm_80", /*compare=*/false);
  SimRun b = runOnSimulator(c, "sm_80", /*compare=*/false);
  EXPECT_EQ(a.dq, b.dq);
  EXPECT_EQ(a.dk, b.dk);
  EXPECT_EQ(a.dv, b.dv);
  ASSERT_EQ(a.named.size(), 2u);
  for (size_t i = 0; i < a.named.size(); ++i)
    EXPECT_EQ(std::memcmp(a.named[i].second.data(), b.named[i].second.data(),
                          4 * a.named[i].second.size()),
              0)
        << a.named[i].first;
}

/// ptxas -v on the emitted module: the backward kernels' registers and
/// spills (D = 256: the scalar kernels, whose bwd_kv once asked for 65 KiB
/// of static shared memory and was refused).
TEST(BackwardSimPtxas, NoSpills) {
  if (!mlir::attn::nvptx::havePtxas())
    GTEST_SKIP() << "no ptxas (CUDA toolkit) on this machine";
  for (const char *chip : {"sm_80", "sm_90a"})
    for (int64_t d : {64, 128, 256}) {
      Options o;
      o.target = chip;
      o.headDim = d;
      o.dtype = "bf16";
      o.lse = true;
      o.backward = true;
      driver::Source parsed(
          "variant c { param cap: f32 = 2.0; score(s, b, h, q, kv) = cap * "
          "tanh(s / cap); mask(b, h, q, kv) = kv <= q; }",
          "c.attn");
      driver::KernelPlan plan = driver::planKernel(parsed, o);
      driver::GpuObject g = driver::compileGpuObject(parsed, plan);
      const std::string &report = g.ptxasReport;
      for (const char *kernel : {"_bwd_kv", "_bwd_q"}) {
        std::regex props(std::string("Function properties for "
                                     "attn_entry_c") +
                         kernel +
                         "\\s*\\n\\s*(\\d+) bytes stack frame, (\\d+) bytes "
                         "spill stores, (\\d+) bytes spill loads[^\\n]*\\n"
                         "[^\\n]*Used (\\d+) registers");
        std::smatch m;
        ASSERT_TRUE(std::regex_search(report, m, props))
            << chip << " D=" << d << kernel << ":\n" << report;
        std::printf("%s D=%lld %s: %s registers, stack %s, spill stores %s, "
                    "spill loads %s\n",
                    chip, (long long)d, kernel, m[4].str().c_str(),
                    m[1].str().c_str(), m[2].str().c_str(),
                    m[3].str().c_str());
        EXPECT_EQ(m[2].str(), "0") << chip << kernel;
        EXPECT_EQ(m[3].str(), "0") << chip << kernel;
      }
    }
}

/// What ptxas -v reports for the backward kernels (`<entry>_bwd_kv`,
/// `<entry>_bwd_q`) of a module.
struct BackwardPtxasUse {
  std::string kernel;
  int64_t registers, spillStores, spillLoads;
};
std::vector<BackwardPtxasUse> backwardPtxasUse(const std::string &report) {
  static const std::regex props(
      "Function properties for (\\S+_bwd_(?:kv|q))\\s*\\n\\s*\\d+ bytes "
      "stack frame, (\\d+) bytes spill stores, (\\d+) bytes spill "
      "loads[^\\n]*\\n[^\\n]*Used (\\d+) registers");
  std::vector<BackwardPtxasUse> out;
  for (std::sregex_iterator it(report.begin(), report.end(), props), end;
       it != end; ++it)
    out.push_back({(*it)[1], std::stoll((*it)[4]), std::stoll((*it)[2]),
                   std::stoll((*it)[3])});
  return out;
}

/// A variant's backward kernels through ptxas for `o.target` at
/// `o.headDim`: both present, no spill stores or loads (the driver's
/// fallback to the scalar kernels included); prints registers and spills.
/// Variants with forward-only features, and head dims the forward does not
/// build for the variant, are skipped.
void expectBackwardWithoutSpills(const std::string &source, Options o,
                                 const std::string &what) {
  o.backward = true;
  o.dtype = "bf16";
  driver::Source parsed(source, "catalog.attn");
  driver::GpuObject g;
  try {
    driver::KernelPlan plan = driver::planKernel(parsed, o);
    g = driver::compileGpuObject(parsed, plan);
  } catch (const CompileError &e) {
    std::printf("%s: no backward (%s)\n", what.c_str(),
                std::string(e.what()).substr(0, 80).c_str());
    return;
  } catch (const Error &e) {
    std::printf("%s: not built (%s)\n", what.c_str(),
                std::string(e.what()).substr(0, 80).c_str());
    return;
  }
  std::vector<BackwardPtxasUse> uses = backwardPtxasUse(g.ptxasReport);
  EXPECT_EQ(uses.size(), 2u) << what << ":\n" << g.ptxasReport;
  for (const BackwardPtxasUse &u : uses) {
    std::printf("%s %s: %lld registers, spill stores %lld, loads %lld (%s)\n",
                what.c_str(), u.kernel.c_str(), (long long)u.registers,
                (long long)u.spillStores, (long long)u.spillLoads,
                g.code.backwardKvThreads == 128 ? "tensor cores" : "scalar");
    EXPECT_EQ(u.spillStores, 0) << what << " " << u.kernel;
    EXPECT_EQ(u.spillLoads, 0) << what << " " << u.kernel;
  }
  EXPECT_EQ(g.backwardSpillBytes, 0) << what;
}

/// Every catalog variant with a backward on both chips: the backward
/// kernels never spill (tensor cores, or the scalar kernels where those
/// would: the driver's fallback). CI runs D = 128 on sm_80, where the
/// tensor-core kernels of most variants use all 255 registers; the rest,
/// D = 64 and 256 and sm_90a (several CPU minutes), with
/// --gtest_also_run_disabled_tests.
class BackwardSimCatalog
    : public ::testing::TestWithParam<attn::testing::CatalogCase> {};

TEST_P(BackwardSimCatalog, NoSpillsAtHeadDim128) {
  if (!mlir::attn::nvptx::havePtxas())
    GTEST_SKIP() << "no ptxas (CUDA toolkit) on this machine";
  attn::testing::forEachGpuTarget(GetParam(), {{"sm_80", 128}},
                                  expectBackwardWithoutSpills);
}

TEST_P(BackwardSimCatalog, DISABLED_NoSpills) {
  if (!mlir::attn::nvptx::havePtxas())
    GTEST_SKIP() << "no ptxas (CUDA toolkit) on this machine";
  attn::testing::forEachGpuTarget(
      GetParam(),
      {{"sm_80", 64}, {"sm_80", 256}, {"sm_90a", 64}, {"sm_90a", 128},
       {"sm_90a", 256}},
      expectBackwardWithoutSpills);
}

/// bench/cpu/variants.attn's variants (the CPU benchmark's), likewise.
TEST(BackwardSimBenchVariants, DISABLED_NoSpills) {
  if (!mlir::attn::nvptx::havePtxas())
    GTEST_SKIP() << "no ptxas (CUDA toolkit) on this machine";
  std::string source = attn::testing::readText(
      std::string(ATTN_SOURCE_ROOT) + "/bench/cpu/variants.attn");
  driver::Source parsed(source, "variants.attn");
  for (const fe::Variant &v : parsed.program.variants)
    for (auto [chip, d] : std::vector<std::pair<const char *, int64_t>>{
             {"sm_80", 64}, {"sm_80", 128}, {"sm_80", 256}, {"sm_90a", 64},
             {"sm_90a", 128}, {"sm_90a", 256}}) {
      Options o;
      o.target = chip;
      o.headDim = d;
      o.variant = v.name;
      o.lse = v.hasRowSum();
      expectBackwardWithoutSpills(source, o,
                                  v.name + " " + chip + " D=" +
                                      std::to_string(d));
    }
}

INSTANTIATE_TEST_SUITE_P(
    Examples, BackwardSimCatalog,
    ::testing::ValuesIn(attn::testing::catalogCases()),
    [](const auto &info) { return info.param.name; });

} // namespace
