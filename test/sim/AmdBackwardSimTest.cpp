//===- AmdBackwardSimTest.cpp - AMD backward kernels on the CDNA simulator ===//
//
// Variants compiled with backward for gfx942 (every variant) and gfx90a /
// gfx950 (a few; bf16 inputs), the forward and then Kernel::backward
// launched on host tensors through attnrt's HIP launcher on the functional
// simulator (libattnsim_hip.so), and dq, dk, dv and every f32 param's and
// captured tensor's gradient compared with the float64 referenceBackward
// under BackwardTest's bf16 bounds: |g - r| <= 3e-2 max(1, max |r|) per
// tensor for dq, dk, dv and 1e-1 for param and capture gradients. Shapes
// are small and ragged (Sq = 70, Skv = 100 in the causal case: tails in
// both directions, several workgroups and key tiles). Every catalog
// variant (examples/*.attn) runs too, with BackwardTest's catalog data.
// Also: two runs give the same bits (param and capture gradients
// included), and the code object's metadata reports no spills and no
// scratch for the backward kernels.
//
//===----------------------------------------------------------------------===//
#include "attn/jit.h"
#include "attn/runtime.h"
#include "lib/Driver/Compiler.h"
#include "lib/Frontend/Eval.h"
#include "lib/Target/AMDGPU/AMDGPUTarget.h"
#include "test/numerics/Catalog.h"
#include "test/reference/ReferenceBackward.h"
#include "test/support/BackwardSim.h"
#include "test/support/Harness.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <optional>
#include <random>
#include <regex>
#include <string>
#include <vector>

using namespace attn;
using namespace attn::testing;

namespace {

/// gfx* kernels on libattnsim_hip.so (the harness's opt-in names only the
/// CUDA simulator).
void useAmdSimulator() {
  static std::once_flag once;
  std::call_once(once, [] {
    attn::testing::useTestGpuSimulator();
    useGpuSimulator(ATTN_SIM_CUDA_LIBRARY, ATTN_SIM_HIP_LIBRARY);
  });
}

/// The shared run (test/support/BackwardSim.h) on this test's simulator.
SimRun runOnSimulator(const Case &c, const std::string &target,
                      bool compare = true) {
  useAmdSimulator();
  return runBackwardOnSimulator(c, target, compare);
}

std::vector<Case> cases() { return backwardSimCases(); }

class AmdBackwardSim : public ::testing::TestWithParam<Case> {};

TEST_P(AmdBackwardSim, Gfx942MatchesReference) {
  runOnSimulator(GetParam(), "gfx942");
}

INSTANTIATE_TEST_SUITE_P(Variants, AmdBackwardSim,
                         ::testing::ValuesIn(cases()),
                         [](const auto &info) { return info.param.name; });

// The other CDNA chips build the same kernels: the ragged causal case and
// one with a score region and Dv != D cover their code objects.
TEST(AmdBackwardSimChips, Gfx90aAndGfx950MatchReference) {
  std::vector<Case> all = cases();
  for (const char *chip : {"gfx90a", "gfx950"})
    for (const Case &c : all)
      if (std::string(c.name) == "causal_ragged" ||
          std::string(c.name) == "softcap" ||
          std::string(c.name) == "value_head_dim" ||
          std::string(c.name) == "select_blocks_of_48")
        runOnSimulator(c, chip);
}

/// Every catalog variant (examples/*.attn) with BackwardTest's catalog
/// data (shapes, params, captures of any dtype, q scale; D = 32) on gfx942,
/// and a rotating few on gfx90a and gfx950, which build the same kernels.
/// Forward-only variants are skipped by the planner's error.
class AmdBackwardSimCatalog
    : public ::testing::TestWithParam<attn::testing::CatalogCase> {};

void runCatalogOnSimulator(const attn::testing::CatalogCase &cc,
                           const std::string &chip) {
  Case c = catalogSimCase(cc, ATTN_SOURCE_ROOT);
  if (std::optional<std::string> why = forwardOnlyReason(c, chip))
    GTEST_SKIP() << "forward-only: " << *why;
  runOnSimulator(c, chip);
}

TEST_P(AmdBackwardSimCatalog, Gfx942MatchesReference) {
  runCatalogOnSimulator(GetParam(), "gfx942");
}

TEST_P(AmdBackwardSimCatalog, OtherChipsMatchReference) {
  switch (catalogIndex(GetParam()) % 8) {
  case 1:
    return runCatalogOnSimulator(GetParam(), "gfx90a");
  case 5:
    return runCatalogOnSimulator(GetParam(), "gfx950");
  default:
    GTEST_SKIP() << "gfx90a and gfx950 each run one variant in eight; "
                    "this one on gfx942";
  }
}

INSTANTIATE_TEST_SUITE_P(
    Examples, AmdBackwardSimCatalog,
    ::testing::ValuesIn(attn::testing::catalogCases()),
    [](const auto &info) { return info.param.name; });

TEST(AmdBackwardSimDeterminism, TwoRunsAreBitIdentical) {
  // Ragged (several workgroups and key tiles), with a capture's and a
  // param's gradient summed over many slabs.
  Shape ragged;
  ragged.Sq = 70;
  ragged.Skv = 100;
  Case c = {"alibi_ragged", kAlibiParam, ragged};
  SimRun a = runOnSimulator(c, "gfx942", /*compare=*/false);
  SimRun b = runOnSimulator(c, "gfx942", /*compare=*/false);
  EXPECT_EQ(a.dq, b.dq);
  EXPECT_EQ(a.dk, b.dk);
  EXPECT_EQ(a.dv, b.dv);
  ASSERT_EQ(a.named.size(), 2u);
  ASSERT_EQ(b.named.size(), 2u);
  for (size_t i = 0; i < a.named.size(); ++i)
    EXPECT_EQ(std::memcmp(a.named[i].second.data(), b.named[i].second.data(),
                          4 * a.named[i].second.size()),
              0)
        << a.named[i].first;
}

// Gradients of f32 params and captured tensors are compared by every case
// that has them (backwardSimCases: softcap's cap, ALiBi's slopes, the sinks'
// capture and param, a capture and a param in one score, a T5 bias table,
// a param in the scale).

/// The code object's metadata note per backward kernel: registers, spills
/// and scratch (spilled VGPRs live in scratch), up to the widest head dim.
TEST(AmdBackwardSimCodeObject, NoSpillsNoScratch) {
  for (const char *chip : {"gfx90a", "gfx942", "gfx950"})
    for (int64_t d : {64, 128, 256}) {
      if (d == 256 && std::string(chip) != "gfx942")
        continue;
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
      std::string error;
      auto object =
          mlir::attn::rocm::inspectCodeObject(g.code.binary, error);
      ASSERT_TRUE(succeeded(object)) << error;
      const std::string &report = object->report;
      for (const char *kernel : {"_bwd_kv", "_bwd_q"}) {
        std::regex line(std::string("attn_entry_c") + kernel +
                        ": (\\d+) VGPRs, (\\d+) AGPRs, (\\d+) SGPRs, "
                        "(\\d+) VGPR spills, (\\d+) SGPR spills, (\\d+) "
                        "bytes scratch, (\\d+) bytes LDS");
        std::smatch m;
        ASSERT_TRUE(std::regex_search(report, m, line))
            << chip << " D=" << d << kernel << ":\n" << report;
        std::printf("%s D=%lld %s: %s VGPRs, %s AGPRs, %s SGPRs, spills %s "
                    "VGPR %s SGPR, scratch %s bytes, LDS %s bytes\n",
                    chip, (long long)d, kernel, m[1].str().c_str(),
                    m[2].str().c_str(), m[3].str().c_str(),
                    m[4].str().c_str(), m[5].str().c_str(),
                    m[6].str().c_str(), m[7].str().c_str());
        EXPECT_EQ(m[4].str(), "0") << chip << " D=" << d << kernel;
        EXPECT_EQ(m[6].str(), "0") << chip << " D=" << d << kernel;
      }
      EXPECT_EQ(g.spillStoreBytes, 0) << chip << " D=" << d;
    }
}

} // namespace
