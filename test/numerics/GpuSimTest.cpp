//===- GpuSimTest.cpp - GPU kernels on the simulator against the reference ===//
//
// Every catalog variant and the features one by one, compiled for sm_80
// (mma.sync) and sm_90a (wgmma, K/V through TMA or cp.async) exactly as for
// a GPU, launched through attnrt's launcher (Kernel::launchHost) on the
// functional PTX simulator (libattnsim_cuda.so), and compared with the
// float64 reference under docs/numerics.md's bounds.
//
// The default set (label gpu-sim) runs each catalog variant once per
// target, the dtype, head dim and lse taking turns across variants and
// targets, and each feature once per target. The full matrix (GpuSimFull:
// every variant x target x D in {64, 128, 256} x {bf16, f16}) is not run
// by default:
//
//     cd build && ctest -C gpu-sim-full -L gpu-sim-full -j2
//
// Kernels the simulator cannot run fail with its report (kernel, thread,
// PTX line); tell a kernel bug from a simulator bug with docs/simulator.md's
// "Debugging a variant's GPU kernel". ATTN_GPU_SIMULATOR picks another
// simulator build.
//
// The feature tests' bodies are shared with amd_sim_tests
// (SimFeatureCases.h); the TEST_Ps here pick the NVIDIA targets' cases.
//===----------------------------------------------------------------------===//
#include "test/numerics/SimFeatureCases.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <random>
#include <string>
#include <tuple>

using namespace attn;
using namespace attn::testing;
using namespace attn::testing::sim;

namespace {

std::string sourceRoot() { return ATTN_SOURCE_ROOT; }

struct GpuTarget {
  const char *name;   // in test names
  const char *target; // Options::target
  const char *loads;  // Options::gpuLoads
};
void PrintTo(const GpuTarget &t, std::ostream *os) { *os << t.name; }

const GpuTarget kTargets[] = {{"sm80", "sm_80", "auto"},
                              {"sm90aTma", "sm_90a", "tma"},
                              {"sm90aCpAsync", "sm_90a", "cp.async"}};

/// One Jit per process: a kernel compiled once serves every shape of a test
/// (GPU compiles take 0.3 to 15 s here).
Jit &jit() {
  static Jit j;
  return j;
}

Problem onTarget(Problem p, const GpuTarget &t, const std::string &dtype) {
  p.options.target = t.target;
  p.options.gpuLoads = t.loads;
  p.options.dtype = dtype;
  return p;
}

Outcome expectMatches(const Problem &p, Jit &jit, double absolute = 2e-4) {
  return expectSimMatches(p, jit, absolute);
}
Outcome expectMatches(const Problem &p, double absolute = 2e-4) {
  return expectSimMatches(p, jit(), absolute);
}

std::string refusedHeadDim(const Problem &p) {
  return sim::refusedHeadDim(p, jit());
}

//===----------------------------------------------------------------------===//
// The catalog
//===----------------------------------------------------------------------===//

/// The default set's dtype, head dim and lse for catalog case `index` on
/// target `target`: consecutive variants and the three targets take turns.
Flavor defaultFlavor(size_t index, size_t target) {
  return catalogFlavor(index + target);
}

std::string flavorName(size_t index, size_t target, const std::string &dtype,
                       int64_t headDim, bool lse) {
  const CatalogCase &c = catalogCases()[index];
  return c.name + "_" + kTargets[target].name + "_" + dtype + "_D" +
         std::to_string(headDim) + (lse ? "" : "_nolse");
}

void expectCatalogMatches(size_t index, size_t target,
                          const std::string &dtype, int64_t headDim,
                          bool lse) {
  Problem p = onTarget(
      catalogProblem(catalogCases()[index], sourceRoot(), headDim),
      kTargets[target], dtype);
  p.options.lse = lse && hasRowSum(p);
  if (std::string why = refusedHeadDim(p); !why.empty())
    GTEST_SKIP() << why;
  expectMatches(p);
}

using CatalogParam = std::tuple<size_t, size_t>; // case, target

class GpuSimCatalog : public ::testing::TestWithParam<CatalogParam> {};

TEST_P(GpuSimCatalog, MatchesReference) {
  auto [index, target] = GetParam();
  Flavor f = defaultFlavor(index, target);
  expectCatalogMatches(index, target, f.dtype, f.headDim, f.lse);
}

std::string catalogName(const ::testing::TestParamInfo<CatalogParam> &info) {
  auto [index, target] = info.param;
  Flavor f = defaultFlavor(index, target);
  return flavorName(index, target, f.dtype, f.headDim, f.lse);
}

INSTANTIATE_TEST_SUITE_P(
    Examples, GpuSimCatalog,
    ::testing::Combine(::testing::Range<size_t>(0, catalogCases().size()),
                       ::testing::Range<size_t>(0, std::size(kTargets))),
    catalogName);

/// The full matrix: not run by default (ctest -C gpu-sim-full -L
/// gpu-sim-full). Parameters: case, target, head dim, dtype; lse (where
/// the normalizer has one) at D = 64 and 256, none at D = 128, so every
/// variant, target and dtype runs kernels with and without it. D = 256 is
/// skipped where the compiler refuses it (registers).
using FullParam = std::tuple<size_t, size_t, int64_t, std::string>;

class GpuSimFull : public ::testing::TestWithParam<FullParam> {};

TEST_P(GpuSimFull, MatchesReference) {
  auto [index, target, headDim, dtype] = GetParam();
  expectCatalogMatches(index, target, dtype, headDim, headDim != 128);
}

std::string fullName(const ::testing::TestParamInfo<FullParam> &info) {
  auto [index, target, headDim, dtype] = info.param;
  return flavorName(index, target, dtype, headDim, headDim != 128);
}

INSTANTIATE_TEST_SUITE_P(
    Examples, GpuSimFull,
    ::testing::Combine(::testing::Range<size_t>(0, catalogCases().size()),
                       ::testing::Range<size_t>(0, std::size(kTargets)),
                       ::testing::Values<int64_t>(64, 128, 256),
                       ::testing::Values<std::string>("bf16", "f16")),
    fullName);


//===----------------------------------------------------------------------===//
// Features one by one, on each target
//===----------------------------------------------------------------------===//

class GpuSim : public ::testing::TestWithParam<GpuTarget> {
protected:
  /// `source` on this target: bf16, D = 64, lse, unless changed.
  Problem make(const std::string &source, int64_t D = 64,
               const std::string &dtype = "bf16") const {
    return sim().make(source, D, dtype);
  }
  /// This target for SimFeatureCases.h's feature tests.
  SimTarget sim() const {
    GpuTarget t = GetParam();
    return {[t](Problem p, const std::string &dtype) {
              return onTarget(p, t, dtype);
            },
            [](const Problem &p, double a) { return expectMatches(p, a); }};
  }
};

/// Quantized, paged and kv_index K/V stream with cp.async on sm_90a (TMA
/// loads take contiguous unquantized K/V only; `auto` picks cp.async for
/// them): these run on sm_80 and sm_90a.
class GpuSimStreamed : public GpuSim {};

// Query tiles of 64 rows (several CTAs per head past 64), key tiles of 32
// or 64: exact multiples, ragged tails on either side, single rows and
// keys, Sq != Skv both ways; one kernel per dtype serves every shape.
TEST_P(GpuSim, RaggedShapes) {
  raggedShapes(sim(), {Shape{1, 2, 2, 64, 64}, Shape{1, 1, 1, 1, 1},
                       Shape{2, 2, 2, 33, 65}, Shape{1, 2, 2, 130, 257},
                       Shape{1, 1, 1, 100, 7}, Shape{1, 1, 1, 7, 300},
                       Shape{2, 3, 3, 191, 129}});
}

// Longer sequences: many query tiles and key tiles per head, a sliding
// window that leaves some tiles empty and others partial.
TEST_P(GpuSim, LongerSequences) {
  Problem p = make("variant w { mask(b, h, q, kv) = kv <= q && q - kv < "
                   "200; }",
                   128, "f16");
  p.Hq = 4, p.Hkv = 2, p.Sq = p.Skv = 523;
  expectMatches(p);
}

// Explicit key tiles of 16, 32 and 48 keys (the GPU takes multiples of 16
// up to 64) over ragged key ranges.
TEST_P(GpuSim, KeyTiles) {
  keyTiles(sim(), {Shape{1, 2, 2, 77, 131}, Shape{1, 2, 2, 3, 100}});
}

// GQA (groups of 4 and 3) and MQA, prefill and decode rows (GQA heads
// packed into one CTA's rows when Sq is short).
TEST_P(GpuSim, GroupedAndMultiQueryHeads) {
  groupedAndMultiQueryHeads(
      sim(), {Shape{2, 8, 2, 77, 131}, Shape{1, 6, 1, 40, 100},
              Shape{2, 8, 2, 1, 300}, Shape{1, 8, 1, 3, 90},
              Shape{1, 16, 1, 1, 64}, Shape{2, 6, 2, 5, 203}});
}

// Dv != D (MLA-like), both ways, also through split-KV's merge.
TEST_P(GpuSim, ValueHeadDimDiffers) {
  headDimPairs(sim(), {{128, 64}, {64, 128}, {96, 32}});
  Problem d = make(kCausal, 128, "f16");
  d.options.valueHeadDim = 48;
  d.options.splitKv = "3";
  d.Hq = 4, d.Hkv = 2, d.Sq = 2, d.Skv = 300;
  expectMatches(d);
}

// Head dims past 128 up to the GPU's 256, and small ones.
TEST_P(GpuSim, HeadDims) {
  for (int64_t D : {32, 80, 256})
    expectMatches(make(kCausal, D, D == 80 ? "f16" : "bf16"));
}

// Rows with nothing kept give o = 0 and lse = -inf, by mask or by -inf
// scores, also when the whole launch is masked.
TEST_P(GpuSim, FullyMaskedRows) { fullyMaskedRows(sim()); }

// Logits in the hundreds: the running max keeps exp2 in range.
TEST_P(GpuSim, LargeLogits) { largeLogits(sim()); }

// Learned sink logits (per head, from a param), and a sink with every key
// masked (o = 0, lse = the sink).
TEST_P(GpuSim, Sinks) { sinks(sim()); }

// Every normalizer without and with a row sum (lse for softplus).
TEST_P(GpuSim, Normalizers) { normalizers(sim()); }

// f16/bf16 inputs with an f32 output: o is not rounded, but P·V took P in
// the input dtype (gpuOutputBound).
TEST_P(GpuSim, OutDTypeF32) { outDTypeF32(sim(), {"bf16", "f16"}); }

// Captured tensors of each dtype, read by the score and the mask.
TEST_P(GpuSim, CapturedTensorsOfEveryDType) {
  capturedTensorsOfEveryDType(sim());
}

// Params of both types in any number (one i32 here: the kernel's later
// 8-byte arguments follow an odd number of 4-byte ones), with split-KV
// reading its partial buffers through them.
TEST_P(GpuSim, OddParamCountWithSplitKv) {
  for (const char *parts : {"1", "3"}) {
    Problem p = make("variant w { param window: i32 = 40; mask(b, h, q, kv) "
                     "= kv <= q + (Skv - Sq) && kv > q + (Skv - Sq) - "
                     "window; }");
    p.options.lse = false;
    p.options.splitKv = parts;
    p.Sq = 5, p.Skv = 301;
    p.params = {{"window", 100}};
    expectMatches(p);
  }
}

// Split-KV: forced part counts (one, a few, more parts than key tiles),
// with sinks (first part only), windows that empty whole parts, sigmoid
// (no lse) and softplus, for GQA decode rows and a prefill shape; lse
// through the merge.
TEST_P(GpuSim, SplitKv) {
  std::vector<std::string> variants = splitKvVariants();
  variants.push_back("variant p { normalize = softplus; }");
  splitKv(sim(), variants, {"2", "7", "64"});
}

// Without a mask or select, sm_90a TMA kernels run in clusters sharing
// K/V tiles by multicast (issue 19); sm_80 and cp.async run them plainly.
TEST_P(GpuSim, MaskFreeVariants) { maskFreeVariants(sim()); }

// Paged K/V: pages smaller than, equal to and larger than key tiles, and
// odd sizes, with masks that read Skv and tensors, and split parts.
TEST_P(GpuSimStreamed, PagedKV) {
  std::vector<std::string> variants = pagedVariants();
  variants.push_back("variant sinkw { sink(h) = 1.0; mask(b, h, q, kv) = kv "
                     "> q + (Skv - Sq) - 50 && kv <= q + (Skv - Sq); }");
  pagedKV(sim(), variants, {16, 64, 7, 100});
}

// Quantized K/V (int8, fp8 e4m3 and e5m2, int4) against the unquantized
// reference as relative L1 error: softmax with a capped score and sigmoid,
// K groups that are whole key tiles (Q.K on the codes where the target
// can) or not (32, 100: dequantized tiles), prefill and GQA decode rows,
// D = 128 with Dv = 64, split and paged.
TEST_P(GpuSimStreamed, QuantizedKV) {
  quantizedKV(sim(), {{kCappedCausal, 64},
                      {kCapped, 32},
                      {kCausalNamedCapped, 100},
                      {kSigmoidCausal, 64}});
}

// select (topk, mass, above) over contiguous and paged K/V, with split
// parts: the pre-pass kernels run on the simulator too.
TEST_P(GpuSim, Select) { selectKV(sim(), {0, 16}); }

// kv_index: each (b, kv head) attends to its listed positions only
// (entries outside [0, Skv) skipped, repeats counted per listing).
TEST_P(GpuSimStreamed, SparseKVIndex) { sparseKVIndex(sim()); }

/// bf16 bit patterns of `x` (round to nearest even) and back.
std::vector<uint16_t> toBf16(const std::vector<float> &x) {
  std::vector<uint16_t> out(x.size());
  for (size_t i = 0; i < x.size(); ++i) {
    float r = static_cast<float>(roundTo(x[i], DType::bf16));
    uint32_t bits;
    std::memcpy(&bits, &r, 4);
    out[i] = static_cast<uint16_t>(bits >> 16);
  }
  return out;
}
double fromBf16(uint16_t b) {
  uint32_t bits = uint32_t(b) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

// Paged K/V with each batch's own length (seq_lens), one of them empty:
// every batch equals a contiguous launch on its prefix of K/V, with Skv its
// length (the bottom-right causal alignment moves with it).
TEST_P(GpuSimStreamed, PagedKVWithPerBatchLengths) {
  const char *src = "variant c { score(s, b, h, q, kv) = s - 0.01 * "
                    "float(Skv - kv); mask(b, h, q, kv) = kv <= q + (Skv - "
                    "Sq); }";
  useTestGpuSimulator(); // launched here, not through the harness
  Problem base = make(src);
  Options paged = base.options;
  paged.paged = 16;
  Options contiguous = base.options;
  Kernel kp = jit().compile(src, paged), kc = jit().compile(src, contiguous);
  int64_t B = 4, H = 2, Sq = 3, S = 150, D = 64;
  std::vector<int32_t> lens = {150, 1, 0, 77};
  std::mt19937 rng(7);
  std::normal_distribution<float> normal;
  std::vector<float> qf(B * H * Sq * D), kf(B * H * S * D), vf(kf.size());
  for (std::vector<float> *x : {&qf, &kf, &vf})
    for (float &e : *x)
      e = normal(rng);
  std::vector<uint16_t> q = toBf16(qf), k = toBf16(kf), v = toBf16(vf);
  std::vector<uint16_t> o(q.size(), 0);
  std::vector<float> lse(B * H * Sq, 7.0f);
  Tensors t;
  t.q = TensorRef(q.data(), DType::bf16, {B, H, Sq, D});
  t.o = TensorRef(o.data(), DType::bf16, {B, H, Sq, D});
  t.lse = TensorRef(lse.data(), DType::f32, {B, H, Sq});
  KVCache cache = KVCache::build(
      kp.info(), TensorRef(k.data(), DType::bf16, {B, H, S, D}),
      TensorRef(v.data(), DType::bf16, {B, H, S, D}), 3, lens);
  cache.bind(t);
  kp.launchHost(t);
  for (int64_t b = 0; b < B; ++b) {
    SCOPED_TRACE("batch " + std::to_string(b));
    int64_t L = lens[b];
    std::vector<uint16_t> kb(H * L * D), vb(H * L * D);
    for (int64_t h = 0; h < H; ++h)
      for (int64_t s = 0; s < L; ++s)
        for (int64_t d = 0; d < D; ++d) {
          kb[(h * L + s) * D + d] = k[((b * H + h) * S + s) * D + d];
          vb[(h * L + s) * D + d] = v[((b * H + h) * S + s) * D + d];
        }
    std::vector<uint16_t> ob(H * Sq * D);
    std::vector<float> lb(H * Sq);
    Tensors tc;
    tc.q = TensorRef(&q[b * H * Sq * D], DType::bf16, {1, H, Sq, D});
    tc.k = TensorRef(kb.data(), DType::bf16, {1, H, L, D});
    tc.v = TensorRef(vb.data(), DType::bf16, {1, H, L, D});
    tc.o = TensorRef(ob.data(), DType::bf16, {1, H, Sq, D});
    tc.lse = TensorRef(lb.data(), DType::f32, {1, H, Sq});
    kc.launchHost(tc);
    double scale = 0;
    for (uint16_t x : ob)
      scale = std::max(scale, std::fabs(fromBf16(x)));
    for (int64_t i = 0; i < H * Sq * D; ++i)
      ASSERT_NEAR(fromBf16(o[b * H * Sq * D + i]), fromBf16(ob[i]),
                  outputBound(DType::bf16, scale))
          << i;
    for (int64_t i = 0; i < H * Sq; ++i) {
      float got = lse[b * H * Sq + i];
      if (L == 0)
        ASSERT_TRUE(std::isinf(got) && got < 0) << i;
      if (std::isinf(lb[i]))
        ASSERT_EQ(got, lb[i]) << i;
      else
        ASSERT_NEAR(got, lb[i], kLseBound) << i;
    }
  }
}

/// A [B, H, S, D] tensor of bf16 values stored in another layout: `order`
/// "bhsd" with `pad` extra elements after each row, or "bshd" (heads
/// interleaved per position, as PyTorch's [B, S, H, D] transposed).
struct Strided {
  std::vector<uint16_t> data;
  TensorRef ref;
  Strided(const std::vector<uint16_t> &dense, int64_t B, int64_t H,
          int64_t S, int64_t D, const std::string &order, int64_t pad = 0) {
    std::vector<int64_t> strides =
        order == "bshd"
            ? std::vector<int64_t>{S * H * D, D, H * D, 1}
            : std::vector<int64_t>{H * S * (D + pad), S * (D + pad), D + pad,
                                   1};
    data.assign(std::max<int64_t>(strides[0] * B, 1), 0x7fc0); // NaN gaps
    for (int64_t b = 0; b < B; ++b)
      for (int64_t h = 0; h < H; ++h)
        for (int64_t s = 0; s < S; ++s)
          for (int64_t d = 0; d < D; ++d)
            data[b * strides[0] + h * strides[1] + s * strides[2] + d] =
                dense[((b * H + h) * S + s) * D + d];
    ref = TensorRef(data.data(), DType::bf16, {B, H, S, D}, strides);
  }
  /// The values back in dense [B, H, S, D] order.
  std::vector<uint16_t> dense() const {
    std::vector<uint16_t> out;
    const std::vector<int64_t> &n = ref.shape, &st = ref.strides;
    for (int64_t b = 0; b < n[0]; ++b)
      for (int64_t h = 0; h < n[1]; ++h)
        for (int64_t s = 0; s < n[2]; ++s)
          for (int64_t d = 0; d < n[3]; ++d)
            out.push_back(
                data[b * st[0] + h * st[1] + s * st[2] + d * st[3]]);
    return out;
  }
};

// q, k, v and o as views in other layouts ([B, S, H, D] transposed, rows
// padded): the launcher stages them as they are (strides and all) and
// the kernel (and on sm_90a its TMA tensor maps) reads them by their
// strides, giving the contiguous launch's answer bit for bit; the gaps
// between rows are never written.
TEST_P(GpuSim, NonContiguousViews) {
  useTestGpuSimulator(); // launched here, not through the harness
  Problem p = make(kCausal);
  Kernel kernel = jit().compile(p.source, p.options);
  std::mt19937 rng(3);
  std::normal_distribution<float> normal;
  for (Shape sh : {Shape{2, 4, 2, 77, 131}, Shape{1, 8, 2, 1, 200}}) {
    auto [B, Hq, Hkv, Sq, Skv] = std::tuple{sh.B, sh.Hq, sh.Hkv, sh.Sq, sh.Skv};
    int64_t D = 64;
    auto random = [&](int64_t n) {
      std::vector<float> x(n);
      for (float &e : x)
        e = normal(rng);
      return toBf16(x);
    };
    std::vector<uint16_t> q = random(B * Hq * Sq * D),
                          k = random(B * Hkv * Skv * D),
                          v = random(B * Hkv * Skv * D),
                          o(B * Hq * Sq * D, 0);
    std::vector<float> lse(B * Hq * Sq), lse2(lse.size());
    Tensors dense{TensorRef(q.data(), DType::bf16, {B, Hq, Sq, D}),
                  TensorRef(k.data(), DType::bf16, {B, Hkv, Skv, D}),
                  TensorRef(v.data(), DType::bf16, {B, Hkv, Skv, D}),
                  TensorRef(o.data(), DType::bf16, {B, Hq, Sq, D}),
                  TensorRef(lse.data(), DType::f32, {B, Hq, Sq})};
    kernel.launchHost(dense);
    ASSERT_LT(std::count(o.begin(), o.end(), uint16_t(0)), int64_t(o.size()));
    for (auto [order, pad] : {std::pair<const char *, int64_t>{"bshd", 0},
                              {"bhsd", 8}}) {
      SCOPED_TRACE(std::string(order) + " pad " + std::to_string(pad) +
                   " Hq " + std::to_string(Hq) + " Sq " + std::to_string(Sq));
      Strided qs(q, B, Hq, Sq, D, order, pad), ks(k, B, Hkv, Skv, D, order, pad),
          vs(v, B, Hkv, Skv, D, order, pad),
          os(std::vector<uint16_t>(o.size(), 0), B, Hq, Sq, D, order, pad);
      std::vector<uint16_t> before = os.data;
      Tensors views{qs.ref, ks.ref, vs.ref, os.ref,
                    TensorRef(lse2.data(), DType::f32, {B, Hq, Sq})};
      kernel.launchHost(views);
      std::vector<uint16_t> got = os.dense();
      for (size_t i = 0; i < o.size(); ++i)
        ASSERT_EQ(got[i], o[i]) << i;
      for (size_t i = 0; i < lse.size(); ++i)
        ASSERT_EQ(lse2[i], lse[i]) << i;
      int64_t gaps = 0;
      for (size_t i = 0; i < before.size(); ++i)
        gaps += before[i] == 0x7fc0 && os.data[i] != 0x7fc0;
      EXPECT_EQ(gaps, 0) << "gaps between rows were written";
    }
  }
}

// A kernel loaded from the Jit's disk cache (record, cubin, PTX, launch
// geometry, tensor maps on TMA) gives the answer of the one compiled.
TEST_P(GpuSim, DiskCachedKernel) {
  std::string dir = ::testing::TempDir() + "gpu-sim-cache-" +
                    GetParam().name;
  std::filesystem::remove_all(dir);
  Problem p = make(kCausal);
  p.options.splitKv = "2";
  Jit compiling(dir), loading(dir);
  Outcome a = expectMatches(p, compiling), b = expectMatches(p, loading);
  EXPECT_EQ(compiling.stats().compiles, 1u);
  EXPECT_EQ(loading.stats().diskHits, 1u);
  EXPECT_EQ(a.maxErrO, b.maxErrO);
  EXPECT_EQ(a.maxErrLse, b.maxErrLse);
  std::filesystem::remove_all(dir);
}

// Launches with nothing to do.
TEST_P(GpuSim, EmptyLaunches) {
  for (auto [sq, skv] : {std::pair{0, 10}, {10, 0}, {0, 0}}) {
    Problem p = make("variant c { sink(h) = 0.5; }");
    p.Sq = sq, p.Skv = skv;
    expectMatches(p);
  }
}

std::string targetName(const ::testing::TestParamInfo<GpuTarget> &info) {
  return info.param.name;
}

INSTANTIATE_TEST_SUITE_P(Targets, GpuSim, ::testing::ValuesIn(kTargets),
                         targetName);

const GpuTarget kStreamTargets[] = {{"sm80", "sm_80", "auto"},
                                    {"sm90a", "sm_90a", "auto"}};
INSTANTIATE_TEST_SUITE_P(Targets, GpuSimStreamed,
                         ::testing::ValuesIn(kStreamTargets), targetName);

} // namespace
