//===- AmdSimTest.cpp - AMD kernels on the CDNA simulator vs the reference ===//
//
// Every catalog variant and the features one by one, compiled for gfx942
// exactly as for an MI300 (linked code objects), launched through attnrt's
// HIP launcher (Kernel::launchHost) on the functional CDNA simulator
// (libattnsim_hip.so), and compared with the float64 reference under
// docs/numerics.md's bounds. gfx90a and gfx950 run a representative
// subset: one test per feature and a handful of catalog variants.
//
// Catalog variants alternate dtype, head dim and lse across variants; the
// feature tests use small ragged shapes (the simulator executes every
// wave's every instruction on the host).
//
//===----------------------------------------------------------------------===//
#include "test/numerics/Bounds.h"
#include "test/numerics/Catalog.h"

#include <gtest/gtest.h>

#include <mutex>
#include <string>
#include <tuple>

using namespace attn;
using namespace attn::testing;

namespace {

std::string sourceRoot() { return ATTN_SOURCE_ROOT; }

/// The HIP simulator for gfx* kernels (after the harness's own opt-in,
/// which names only the CUDA one).
void useAmdSimulator() {
  static std::once_flag once;
  std::call_once(once, [] {
    useTestGpuSimulator();
    useGpuSimulator(ATTN_SIM_CUDA_LIBRARY, ATTN_SIM_HIP_LIBRARY);
  });
}

Jit &jit() {
  static Jit j;
  return j;
}

std::string describe(const Problem &p) {
  return p.options.target + " " + p.options.dtype + " D " +
         std::to_string(p.options.headDim) + " Dv " +
         std::to_string(p.options.valueHeadDim) + " B " + std::to_string(p.B) +
         " Hq " + std::to_string(p.Hq) + " Hkv " + std::to_string(p.Hkv) +
         " Sq " + std::to_string(p.Sq) + " Skv " + std::to_string(p.Skv) +
         (p.options.kvDtype != "same" ? " kv " + p.options.kvDtype : "") +
         (p.options.paged ? " paged " + std::to_string(p.options.paged) : "") +
         (p.options.splitKv != "auto" ? " split " + p.options.splitKv : "");
}

Outcome expectMatches(const Problem &p, double absolute = 2e-4) {
  SCOPED_TRACE(describe(p));
  useAmdSimulator();
  Outcome out = runAgainstReference(p, &jit());
  EXPECT_FALSE(out.hasNaN);
  if (p.options.kvDtype != "same") {
    EXPECT_LE(out.relL1O, quantBound(p.options.kvDtype));
  } else {
    EXPECT_LE(out.maxErrO, gpuOutputBound(out.info, out.refMaxAbsO, absolute))
        << "reference max |o| = " << out.refMaxAbsO;
  }
  if (p.options.lse) {
    EXPECT_FALSE(out.lseInfMismatch);
    if (p.options.kvDtype == "same")
      EXPECT_LE(out.maxErrLse, absolute);
  }
  return out;
}

//===----------------------------------------------------------------------===//
// The catalog
//===----------------------------------------------------------------------===//

struct Flavor {
  const char *dtype;
  int64_t headDim;
  bool lse;
};

Flavor flavor(size_t index) {
  static const Flavor kFlavors[] = {{"bf16", 64, true},
                                    {"f16", 128, true},
                                    {"f16", 64, false},
                                    {"bf16", 128, false}};
  return kFlavors[index % 4];
}

void expectCatalogMatches(size_t index, const char *chip) {
  Flavor f = flavor(index);
  Problem p = catalogProblem(catalogCases()[index], sourceRoot(), f.headDim);
  p.options.target = chip;
  p.options.dtype = f.dtype;
  p.options.lse = f.lse && hasRowSum(p);
  expectMatches(p);
}

std::string catalogName(size_t index, const char *chip) {
  Flavor f = flavor(index);
  return catalogCases()[index].name + "_" + chip + "_" + f.dtype + "_D" +
         std::to_string(f.headDim) + (f.lse ? "" : "_nolse");
}

class AmdSimCatalog : public ::testing::TestWithParam<size_t> {};

TEST_P(AmdSimCatalog, MatchesReference) {
  expectCatalogMatches(GetParam(), "gfx942");
}

INSTANTIATE_TEST_SUITE_P(
    Examples, AmdSimCatalog,
    ::testing::Range<size_t>(0, catalogCases().size()),
    [](const auto &info) { return catalogName(info.param, "gfx942"); });

/// gfx90a and gfx950: every fifth variant (their MFMAs are other
/// encodings, gfx950 adds conversions and lane swaps; the kernels are
/// otherwise the same lowering).
using SubsetParam = std::tuple<size_t, const char *>;
class AmdSimCatalogSubset : public ::testing::TestWithParam<SubsetParam> {};

TEST_P(AmdSimCatalogSubset, MatchesReference) {
  expectCatalogMatches(std::get<0>(GetParam()), std::get<1>(GetParam()));
}

std::vector<size_t> every5th() {
  std::vector<size_t> v;
  for (size_t i = 0; i < catalogCases().size(); i += 5)
    v.push_back(i);
  return v;
}

INSTANTIATE_TEST_SUITE_P(
    Examples, AmdSimCatalogSubset,
    ::testing::Combine(::testing::ValuesIn(every5th()),
                       ::testing::Values("gfx90a", "gfx950")),
    [](const auto &info) {
      return catalogName(std::get<0>(info.param), std::get<1>(info.param));
    });

/// The full matrix, not run by default (ctest -C amd-sim-full -L
/// amd-sim-full): every variant x chip x D in {64, 128, 256} x {bf16, f16};
/// lse where the normalizer has one except at D = 128. D = 256 is skipped
/// where the compiler refuses it.
using FullParam = std::tuple<size_t, const char *, int64_t, const char *>;
class AmdSimFull : public ::testing::TestWithParam<FullParam> {};

TEST_P(AmdSimFull, MatchesReference) {
  auto [index, chip, headDim, dtype] = GetParam();
  Problem p = catalogProblem(catalogCases()[index], sourceRoot(), headDim);
  p.options.target = chip;
  p.options.dtype = dtype;
  p.options.lse = headDim != 128 && hasRowSum(p);
  try {
    jit().compile(p.source, p.options, p.filename);
  } catch (const Error &e) {
    if (headDim <= 128 || e.argument() != "--head-dim")
      throw;
    GTEST_SKIP() << e.what();
  }
  expectMatches(p);
}

std::string fullName(const ::testing::TestParamInfo<FullParam> &info) {
  const auto &[index, chip, headDim, dtype] = info.param;
  return catalogCases()[index].name + "_" + chip + "_" + dtype + "_D" +
         std::to_string(headDim);
}

INSTANTIATE_TEST_SUITE_P(
    Examples, AmdSimFull,
    ::testing::Combine(::testing::Range<size_t>(0, catalogCases().size()),
                       ::testing::Values("gfx942", "gfx90a", "gfx950"),
                       ::testing::Values<int64_t>(64, 128, 256),
                       ::testing::Values("bf16", "f16")),
    fullName);

//===----------------------------------------------------------------------===//
// Features one by one
//===----------------------------------------------------------------------===//

struct Shape {
  int64_t B, Hq, Hkv, Sq, Skv;
};
Problem withShape(Problem p, Shape s) {
  p.B = s.B, p.Hq = s.Hq, p.Hkv = s.Hkv, p.Sq = s.Sq, p.Skv = s.Skv;
  return p;
}

const char *const kCausal =
    "variant c { mask(b, h, q, kv) = kv <= q + (Skv - Sq); }";

class AmdSim : public ::testing::TestWithParam<const char *> {
protected:
  Problem make(const std::string &source, int64_t D = 64,
               const std::string &dtype = "bf16") const {
    Problem p;
    p.source = source;
    p.options.headDim = D;
    p.options.lse = true;
    p.options.target = GetParam();
    p.options.dtype = dtype;
    return p;
  }
  bool full() const { return std::string(GetParam()) == "gfx942"; }
};

// Query tiles of 64 rows, key tiles of 64: exact multiples, ragged tails
// on either side, single rows and keys, Sq != Skv both ways.
TEST_P(AmdSim, RaggedShapes) {
  for (const char *dtype : {"bf16", "f16"})
    for (Shape s : {Shape{1, 2, 2, 64, 64}, Shape{1, 1, 1, 1, 1},
                    Shape{2, 2, 2, 33, 65}, Shape{1, 2, 2, 130, 257},
                    Shape{1, 1, 1, 100, 7}, Shape{1, 1, 1, 7, 300}}) {
      if (!full() && std::string(dtype) == "f16" && s.Sq != 33)
        continue;
      expectMatches(withShape(
          make("variant w { mask(b, h, q, kv) = kv <= q + 3; }", 64, dtype),
          s));
    }
}

// Explicit key tiles of 16, 32 and 48 keys over ragged key ranges.
TEST_P(AmdSim, KeyTiles) {
  for (int64_t blockKV : {16, 32, 48}) {
    Problem p = make(kCausal, 64, blockKV == 32 ? "f16" : "bf16");
    p.options.blockKV = blockKV;
    expectMatches(withShape(p, Shape{1, 2, 2, 77, 131}));
  }
}

// GQA and MQA, prefill and decode rows (GQA heads packed into one
// workgroup's rows when Sq is short).
TEST_P(AmdSim, GroupedAndMultiQueryHeads) {
  for (Shape s : {Shape{2, 8, 2, 77, 131}, Shape{1, 6, 1, 40, 100},
                  Shape{2, 8, 2, 1, 300}, Shape{1, 16, 1, 1, 64},
                  Shape{2, 6, 2, 5, 203}})
    expectMatches(withShape(make("variant g { score(s, b, h, q, kv) = s + "
                                 "0.1 * float(hkv); mask(b, h, q, kv) = kv "
                                 "<= q + (Skv - Sq); }",
                                 128, "f16"),
                            s));
}

// Dv != D both ways, and head dims from 16 to 256.
TEST_P(AmdSim, HeadDims) {
  for (auto [D, Dv] : {std::pair<int64_t, int64_t>{128, 64}, {64, 128},
                       {96, 32}, {16, 16}, {80, 80}, {256, 256}}) {
    Problem p = make(kCausal, D, D == 80 ? "f16" : "bf16");
    p.options.valueHeadDim = Dv;
    p.Hq = 4, p.Hkv = 2;
    expectMatches(p);
  }
}

// Rows with nothing kept give o = 0 and lse = -inf; large logits.
TEST_P(AmdSim, MaskedRowsAndLargeLogits) {
  expectMatches(make("variant gap { mask(b, h, q, kv) = q >= 10 && kv <= q "
                     "&& kv > q - 5; }"));
  expectMatches(make("variant drop { score(s, b, h, q, kv) = where(kv % 3 == "
                     "0, -inf, s); mask(b, h, q, kv) = kv <= q; }",
                     64, "f16"));
  for (const char *src : {"variant none { mask(b, h, q, kv) = false; }",
                          "variant all { score(s, b, h, q, kv) = -inf; }"}) {
    Outcome out = expectMatches(make(src));
    EXPECT_EQ(out.maxErrO, 0.0);
  }
  for (const char *dtype : {"bf16", "f16"}) {
    Problem p = make(kCausal, 64, dtype);
    p.qScale = 40.0;
    expectMatches(p, kLargeLogitBound);
  }
}

// Sinks, every normalizer, f32 output, captured tensors of each dtype.
TEST_P(AmdSim, SinksNormalizersOutputsCaptures) {
  Problem s = make("variant s { param sl: f32 = 1.5; sink(h) = sl * "
                   "float(h); mask(b, h, q, kv) = kv <= q; }");
  s.Hq = s.Hkv = 3;
  expectMatches(s);
  expectMatches(make("variant s { sink(h) = 2.0; mask(b, h, q, kv) = "
                     "false; }",
                     64, "f16"));
  for (const char *norm : {"sigmoid", "relu", "relu2", "softplus"}) {
    Problem p = make(std::string("variant n { normalize = ") + norm +
                     "; mask(b, h, q, kv) = kv <= q; }");
    p.options.lse = std::string(norm) == "softplus";
    expectMatches(p);
  }
  Problem o = make("variant c { out_dtype = f32; mask(b, h, q, kv) = kv "
                   "<= q; }",
                   64, "f16");
  EXPECT_EQ(expectMatches(o).info.outDType, DType::f32);
  expectMatches(make(R"(variant c {
    tensor bias: f32[Hq, Skv];
    tensor hb: f16[Hq];
    tensor gb: bf16[Hq];
    tensor ids: i32[B, Skv];
    score(s, b, h, q, kv) = s + bias[h, kv] + hb[h] + gb[h];
    mask(b, h, q, kv) = ids[b, kv] != 1;
  })"));
}

// Split-KV with forced part counts (the merge kernel runs too), sinks in
// the first part only, windows that empty parts, sigmoid.
TEST_P(AmdSim, SplitKv) {
  const char *variants[] = {
      "variant plain {}",
      "variant s { sink(h) = 0.5 * float(h); mask(b, h, q, kv) = kv <= q + "
      "(Skv - Sq); }",
      "variant w { mask(b, h, q, kv) = kv <= q + (Skv - Sq) && kv > q + "
      "(Skv - Sq) - 40; }",
      "variant n { normalize = sigmoid; mask(b, h, q, kv) = kv <= q + (Skv - "
      "Sq); }",
  };
  for (const char *src : variants)
    for (const char *parts : {"2", "7"}) {
      if (!full() && std::string(parts) == "7")
        continue;
      Problem p = make(src);
      p.options.splitKv = parts;
      p.options.lse = std::string(src).find("sigmoid") == std::string::npos;
      for (Shape s : {Shape{2, 8, 2, 1, 301}, Shape{1, 2, 2, 37, 301}})
        expectMatches(withShape(p, s));
    }
}

// Paged K/V: pages smaller than, equal to and larger than key tiles, odd
// sizes, with tensors read through the page table's positions.
TEST_P(AmdSim, PagedKV) {
  const char *variants[] = {
      kCausal,
      "variant doc { tensor d: i32[B, Skv]; mask(b, h, q, kv) = d[b, kv] == "
      "d[b, min(q + (Skv - Sq), Skv - 1)]; }",
  };
  for (const char *src : variants)
    for (int64_t page : {16, 64, 7, 100}) {
      if (!full() && page != 16)
        continue;
      Problem p = make(src, 64, page % 2 ? "f16" : "bf16");
      p.options.paged = page;
      p.options.splitKv = page == 16 ? "4" : "auto";
      p.Hq = 4, p.Hkv = 2, p.Sq = 5, p.Skv = 333, p.B = 3;
      expectMatches(p);
    }
}

// Quantized K/V (int8, fp8 e4m3 / e5m2, int4) as relative L1 error: K
// groups that are whole key tiles (Q.K on the integer / fp8 matrix cores)
// or not (dequantized tiles), prefill and GQA decode rows, split and paged.
TEST_P(AmdSim, QuantizedKV) {
  for (QuantBound qb : kQuantBounds) {
    if (!full() && std::string(qb.kind) != "int8" &&
        std::string(qb.kind) != "fp8e4m3")
      continue;
    for (auto [src, group] :
         {std::pair{"variant capped { score(s, b, h, q, kv) = 20.0 * "
                    "tanh(s / 20.0); mask(b, h, q, kv) = kv <= q + (Skv - "
                    "Sq); }",
                    64},
          {"variant capped { mask(b, h, q, kv) = kv <= q + (Skv - Sq); }",
           32}}) {
      Problem p = make(src);
      p.options.kvDtype = qb.kind;
      p.options.kvGroup = group;
      p.options.lse = false;
      p.Hq = 4, p.Hkv = 2, p.Sq = 37, p.Skv = 301, p.B = 2;
      Outcome out = expectMatches(p);
      EXPECT_GT(out.relL1O, 1e-5); // quantized, not the bf16 values
    }
    Problem d = make(kCausal, 128, "f16");
    d.options.kvDtype = qb.kind;
    d.options.valueHeadDim = 64;
    d.options.splitKv = "3";
    d.Hq = 8, d.Hkv = 2, d.Sq = 3, d.Skv = 700, d.B = 2;
    expectMatches(d);
    d.options.paged = 16;
    expectMatches(d);
  }
}

// select (topk, mass, above) over contiguous and paged K/V: the pre-pass
// kernels run on the simulator too.
TEST_P(AmdSim, Select) {
  for (const char *rule : {"topk(k)", "mass(0.8)", "above(0.02)"})
    for (int64_t page : {0, 16}) {
      if (!full() && page)
        continue;
      Problem p = make("");
      p.source = std::string("variant s { param k: i32 = 2; select(size = "
                             "32) = ") +
                 rule + "; mask(b, h, q, kv) = kv <= q + (Skv - Sq); }";
      p.Hq = 4, p.Hkv = 2, p.Sq = 70, p.Skv = 300, p.B = 2;
      p.qScale = 3.0;
      p.options.paged = page;
      p.options.splitKv = page ? "3" : "auto";
      expectMatches(p);
    }
}

// kv_index: each (b, kv head) attends to its listed positions only.
TEST_P(AmdSim, SparseKVIndex) {
  for (auto [paged, kv] : {std::pair<int64_t, const char *>{0, "same"},
                           {16, "same"}, {0, "int8"}}) {
    if (!full() && paged)
      continue;
    Problem p = make(
        "variant snap { param budget: i32 = 45; tensor keep: i32[B, Hkv, "
        "budget]; kv_index = keep; sink(h) = 0.25; mask(b, h, q, kv) = kv <= "
        "q + (Skv - Sq); }");
    p.B = 2, p.Hq = 8, p.Hkv = 2, p.Sq = 2, p.Skv = 300;
    p.options.paged = paged;
    p.options.kvDtype = kv;
    p.options.splitKv = paged ? "3" : "auto";
    ref::RefTensor keep;
    keep.shape = {p.B, p.Hkv, 45};
    for (int64_t i = 0; i < p.B * p.Hkv * 45; ++i)
      keep.values.push_back(double((i * 37) % 306) - 3);
    p.captures["keep"] = keep;
    expectMatches(p);
  }
}

INSTANTIATE_TEST_SUITE_P(Chips, AmdSim,
                         ::testing::Values("gfx942", "gfx90a", "gfx950"),
                         [](const auto &info) {
                           return std::string(info.param);
                         });

} // namespace
