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
// in both directions, several CTAs and key tiles). Every catalog variant
// (examples/*.attn) runs too, with BackwardTest's catalog data. Also: two runs give the
// same bits (param and capture gradients included), Kernel::backward on
// the simulator's device memory gives backwardHost's bits, and ptxas -v
// reports no spills for the backward kernels.
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

#include <dlfcn.h>
#include <link.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <optional>
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
                             "sinks", "softplus", "laplace",
                             "fully_masked_rows",
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

/// Every catalog variant (examples/*.attn) with BackwardTest's catalog
/// data (shapes, params, captures of any dtype, q scale; D = 32) on sm_80,
/// and every third on sm_90a, whose backward is sm_80's builder after its
/// own forward. Forward-only variants are skipped by the planner's error.
class BackwardSimCatalogGradients
    : public ::testing::TestWithParam<attn::testing::CatalogCase> {};

void runCatalogOnSimulator(const attn::testing::CatalogCase &cc,
                           const std::string &target) {
  Case c = catalogSimCase(cc, ATTN_SOURCE_ROOT);
  if (std::optional<std::string> why = forwardOnlyReason(c, target))
    GTEST_SKIP() << "forward-only: " << *why;
  runOnSimulator(c, target);
}

TEST_P(BackwardSimCatalogGradients, Sm80MatchesReference) {
  runCatalogOnSimulator(GetParam(), "sm_80");
}

TEST_P(BackwardSimCatalogGradients, Sm90aMatchesReference) {
  if (catalogIndex(GetParam()) % 3 != 0)
    GTEST_SKIP() << "every third variant runs on sm_90a; this one on sm_80";
  runCatalogOnSimulator(GetParam(), "sm_90a");
}

INSTANTIATE_TEST_SUITE_P(
    Examples, BackwardSimCatalogGradients,
    ::testing::ValuesIn(attn::testing::catalogCases()),
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

/// The simulator library attnrt opened (libattnsim_cuda.so), for device
/// memory of its own: its allocation and copies, found among the loaded
/// objects once a launch has loaded it.
class SimulatorMemory {
public:
  SimulatorMemory() {
    dl_iterate_phdr(
        [](dl_phdr_info *info, size_t, void *self) {
          if (info->dlpi_name &&
              std::strstr(info->dlpi_name, "libattnsim_cuda"))
            static_cast<SimulatorMemory *>(self)->path = info->dlpi_name;
          return 0;
        },
        this);
    void *lib = path.empty() ? nullptr
                             : dlopen(path.c_str(), RTLD_NOW | RTLD_NOLOAD);
    if (!lib)
      return;
    alloc = reinterpret_cast<Alloc>(dlsym(lib, "cuMemAlloc_v2"));
    free = reinterpret_cast<Free>(dlsym(lib, "cuMemFree_v2"));
    toDevice = reinterpret_cast<ToDevice>(dlsym(lib, "cuMemcpyHtoD_v2"));
    toHost = reinterpret_cast<ToHost>(dlsym(lib, "cuMemcpyDtoH_v2"));
  }
  ~SimulatorMemory() {
    for (uint64_t p : blocks)
      free(p);
  }
  bool loaded() const { return alloc && free && toDevice && toHost; }
  /// A device copy of host bytes.
  void *copyIn(const void *host, size_t bytes) {
    uint64_t p = 0;
    EXPECT_EQ(alloc(&p, bytes), 0);
    blocks.push_back(p);
    EXPECT_EQ(toDevice(p, host, bytes), 0);
    return reinterpret_cast<void *>(p);
  }
  void copyOut(void *host, const void *device, size_t bytes) {
    EXPECT_EQ(toHost(host, reinterpret_cast<uint64_t>(device), bytes), 0);
  }

private:
  using Alloc = int (*)(uint64_t *, size_t);
  using Free = int (*)(uint64_t);
  using ToDevice = int (*)(uint64_t, const void *, size_t);
  using ToHost = int (*)(void *, uint64_t, size_t);
  std::string path;
  Alloc alloc = nullptr;
  Free free = nullptr;
  ToDevice toDevice = nullptr;
  ToHost toHost = nullptr;
  std::vector<uint64_t> blocks;
};

// Kernel::backward on device memory (the simulator's), with select: its
// device pre-pass and the backward kernels queued on the stream, no
// staging; the same bits as backwardHost, which stages and runs the same
// path.
TEST(BackwardSimDevice, SelectOnDeviceMemoryMatchesBackwardHost) {
  Shape shape;
  shape.Hq = 4;
  shape.Sq = shape.Skv = 200;
  Case c = {"select_moba_device",
            "variant moba {\n"
            "  param k: i32 = 2;\n"
            "  select(size = 64) = topk(k);\n"
            "  mask(b, h, q, kv) = kv <= q;\n}",
            shape};
  SimRun host = runOnSimulator(c, "sm_80", /*compare=*/false);
  SimulatorMemory device;
  ASSERT_TRUE(device.loaded()) << "the simulator library is not loaded";

  // The inputs runBackwardOnSimulator made (same seed and order).
  std::mt19937 rng(1234);
  std::vector<double> unused;
  auto q = randomBf16(shape.Hq * shape.Sq * shape.D, rng, unused);
  auto k = randomBf16(shape.Hkv * shape.Skv * shape.D, rng, unused);
  auto v = randomBf16(shape.Hkv * shape.Skv * shape.Dv, rng, unused);
  auto dO = randomBf16(shape.Hq * shape.Sq * shape.Dv, rng, unused);
  Options o;
  o.target = "sm_80";
  o.headDim = shape.D;
  o.valueHeadDim = shape.Dv;
  o.dtype = "bf16";
  o.lse = true;
  o.backward = true;
  Kernel kernel = simJit().compile(c.source, o, "<backward-sim-test>");
  std::vector<uint16_t> out(dO.size());
  std::vector<float> lse(shape.Hq * shape.Sq);
  Tensors t;
  t.q = TensorRef(q.data(), DType::bf16, {1, shape.Hq, shape.Sq, shape.D});
  t.k = TensorRef(k.data(), DType::bf16, {1, shape.Hkv, shape.Skv, shape.D});
  t.v = TensorRef(v.data(), DType::bf16, {1, shape.Hkv, shape.Skv, shape.Dv});
  t.o = TensorRef(out.data(), DType::bf16, {1, shape.Hq, shape.Sq, shape.Dv});
  t.lse = TensorRef(lse.data(), DType::f32, {1, shape.Hq, shape.Sq});
  Params params = {{"k", int64_t(2)}};
  kernel.launchHost(t, params);

  auto onDevice = [&](const TensorRef &h) {
    size_t bytes = dtypeSize(h.dtype);
    for (int64_t n : h.shape)
      bytes *= size_t(n);
    return TensorRef(device.copyIn(h.data, bytes), h.dtype, h.shape);
  };
  Tensors d = t;
  d.q = onDevice(t.q);
  d.k = onDevice(t.k);
  d.v = onDevice(t.v);
  d.o = onDevice(t.o);
  d.lse = onDevice(*t.lse);
  TensorRef dODevice =
      onDevice(TensorRef(dO.data(), DType::bf16, t.o.shape));
  std::vector<uint16_t> dq(q.size(), 0xdead), dk(k.size(), 0xdead),
      dv(v.size(), 0xdead);
  Gradients g;
  g.dq = onDevice(TensorRef(dq.data(), DType::bf16, t.q.shape));
  g.dk = onDevice(TensorRef(dk.data(), DType::bf16, t.k.shape));
  g.dv = onDevice(TensorRef(dv.data(), DType::bf16, t.v.shape));
  kernel.backward(d, dODevice, g, params, /*stream=*/nullptr);
  device.copyOut(dq.data(), g.dq.data, 2 * dq.size());
  device.copyOut(dk.data(), g.dk.data, 2 * dk.size());
  device.copyOut(dv.data(), g.dv.data, 2 * dv.size());
  EXPECT_EQ(dq, host.dq);
  EXPECT_EQ(dk, host.dk);
  EXPECT_EQ(dv, host.dv);
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
