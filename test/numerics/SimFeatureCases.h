//===- SimFeatureCases.h - feature tests shared by the simulator suites ---===//
//
// What gpu_sim_tests (GpuSimTest.cpp: sm_80, sm_90a on the PTX simulator)
// and amd_sim_tests (AmdSimTest.cpp: gfx942, gfx90a, gfx950 on the CDNA
// simulator) check the same way: the check against the float64 reference
// under docs/numerics.md's bounds, the catalog's dtype / head dim / lse
// turns, and the feature tests' bodies. Each feature function takes a
// SimTarget (how to make a Problem on the target and how to check one) and
// the target's share of the cases (shapes, part counts, page sizes, K/V
// dtypes): the suites differ in what they run, not in how.
//
//===----------------------------------------------------------------------===//
#ifndef ATTN_TEST_SIMFEATURECASES_H
#define ATTN_TEST_SIMFEATURECASES_H

#include "test/numerics/Bounds.h"
#include "test/numerics/Catalog.h"

#include <gtest/gtest.h>

#include <functional>
#include <string>
#include <utility>
#include <vector>

namespace attn::testing::sim {

//===----------------------------------------------------------------------===//
// Checking a problem
//===----------------------------------------------------------------------===//

inline std::string describe(const Problem &p) {
  bool nvidia = p.options.target.rfind("sm_", 0) == 0;
  return p.options.target +
         (nvidia ? " " + p.options.gpuLoads : std::string()) + " " +
         p.options.dtype + " D " + std::to_string(p.options.headDim) +
         " Dv " + std::to_string(p.options.valueHeadDim) + " B " +
         std::to_string(p.B) + " Hq " + std::to_string(p.Hq) + " Hkv " +
         std::to_string(p.Hkv) + " Sq " + std::to_string(p.Sq) + " Skv " +
         std::to_string(p.Skv) +
         (p.options.kvDtype != "same" ? " kv " + p.options.kvDtype : "") +
         (p.options.paged ? " paged " + std::to_string(p.options.paged) : "") +
         (p.options.splitKv != "auto" ? " split " + p.options.splitKv : "");
}

/// Runs `p` on the simulator through `jit` and checks it: docs/numerics.md's
/// bounds on o (relative L1 for quantized K/V) and on lse when the kernel
/// writes it; `absolute` is the absolute part of both (2e-4, 5e-4 for large
/// logits).
inline Outcome expectSimMatches(const Problem &p, Jit &jit,
                                double absolute = 2e-4) {
  SCOPED_TRACE(describe(p));
  Outcome out = runAgainstReference(p, &jit);
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

/// Compiles `p` ahead of its run: why it is skipped when its head dim is
/// past 128 and the compiler refuses it for this variant and target (a
/// documented limit: D = 256 may not fit in registers), else "".
inline std::string refusedHeadDim(const Problem &p, Jit &jit) {
  try {
    jit.compile(p.source, p.options, p.filename);
    return "";
  } catch (const Error &e) {
    if (p.options.headDim <= 128 || e.argument() != "--head-dim")
      throw;
    return e.what();
  }
}

//===----------------------------------------------------------------------===//
// The catalog's default set
//===----------------------------------------------------------------------===//

struct Flavor {
  const char *dtype;
  int64_t headDim;
  bool lse; // where the normalizer has one
};

/// The dtype, head dim and lse of turn `turn`: consecutive catalog variants
/// (and on NVIDIA the targets) take turns, so each target sees both dtypes,
/// both head dims and kernels with and without lse.
inline Flavor catalogFlavor(size_t turn) {
  static const Flavor kFlavors[] = {{"bf16", 64, true},
                                    {"f16", 128, true},
                                    {"f16", 64, false},
                                    {"bf16", 128, false}};
  return kFlavors[turn % 4];
}

//===----------------------------------------------------------------------===//
// Features one by one
//===----------------------------------------------------------------------===//

struct Shape {
  int64_t B, Hq, Hkv, Sq, Skv;
};
inline Problem withShape(Problem p, Shape s) {
  p.B = s.B, p.Hq = s.Hq, p.Hkv = s.Hkv, p.Sq = s.Sq, p.Skv = s.Skv;
  return p;
}

inline const char *const kCausal =
    "variant c { mask(b, h, q, kv) = kv <= q + (Skv - Sq); }";

/// What a feature test needs from its target.
struct SimTarget {
  /// `p` on the target, in `dtype` (target options: chip, loads).
  std::function<Problem(Problem p, const std::string &dtype)> onTarget;
  /// Runs a problem and checks it (expectSimMatches through the target's
  /// Jit and simulator).
  std::function<Outcome(const Problem &p, double absolute)> check;

  /// `source` on the target: bf16, D = 64, lse, unless changed.
  Problem make(const std::string &source, int64_t D = 64,
               const std::string &dtype = "bf16") const {
    Problem p;
    p.source = source;
    p.options.headDim = D;
    p.options.lse = true;
    return onTarget(p, dtype);
  }
  Outcome expectMatches(const Problem &p, double absolute = 2e-4) const {
    return check(p, absolute);
  }
};

/// Ragged shapes against query tiles of 64 rows and key tiles of 32 or 64,
/// in bf16 then f16, each shape `keep` accepts (every one by default).
inline void raggedShapes(
    const SimTarget &t, const std::vector<Shape> &shapes,
    const std::function<bool(const std::string &dtype, Shape s)> &keep = {}) {
  for (const char *dtype : {"bf16", "f16"})
    for (Shape s : shapes) {
      if (keep && !keep(dtype, s))
        continue;
      t.expectMatches(withShape(
          t.make("variant w { mask(b, h, q, kv) = kv <= q + 3; }", 64, dtype),
          s));
    }
}

/// Explicit key tiles of 16, 32 and 48 keys over `shapes`.
inline void keyTiles(const SimTarget &t, const std::vector<Shape> &shapes) {
  for (int64_t blockKV : {16, 32, 48}) {
    Problem p = t.make(kCausal, 64, blockKV == 32 ? "f16" : "bf16");
    p.options.blockKV = blockKV;
    for (Shape s : shapes)
      t.expectMatches(withShape(p, s));
  }
}

/// GQA and MQA with a score reading the kv head, over `shapes`.
inline void groupedAndMultiQueryHeads(const SimTarget &t,
                                      const std::vector<Shape> &shapes) {
  for (Shape s : shapes)
    t.expectMatches(withShape(t.make("variant g { score(s, b, h, q, kv) = s "
                                     "+ 0.1 * float(hkv); mask(b, h, q, kv) "
                                     "= kv <= q + (Skv - Sq); }",
                                     128, "f16"),
                              s));
}

/// Causal kernels with head dim D and value head dim Dv for each pair, GQA
/// (Hq 4, Hkv 2); f16 at D = 80, else bf16.
inline void headDimPairs(const SimTarget &t,
                         const std::vector<std::pair<int64_t, int64_t>> &dims) {
  for (auto [D, Dv] : dims) {
    Problem p = t.make(kCausal, D, D == 80 ? "f16" : "bf16");
    p.options.valueHeadDim = Dv;
    p.Hq = 4, p.Hkv = 2;
    t.expectMatches(p);
  }
}

/// Rows with nothing kept give o = 0 and lse = -inf, by mask or by -inf
/// scores, also when the whole launch is masked.
inline void fullyMaskedRows(const SimTarget &t) {
  t.expectMatches(t.make("variant gap { mask(b, h, q, kv) = q >= 10 && kv "
                         "<= q && kv > q - 5; }"));
  t.expectMatches(t.make("variant drop { score(s, b, h, q, kv) = where(kv % "
                         "3 == 0, -inf, s); mask(b, h, q, kv) = kv <= q; }",
                         64, "f16"));
  for (const char *src : {"variant none { mask(b, h, q, kv) = false; }",
                          "variant all { score(s, b, h, q, kv) = -inf; }"}) {
    Outcome out = t.expectMatches(t.make(src));
    EXPECT_EQ(out.maxErrO, 0.0);
  }
}

/// Logits in the hundreds: the running max keeps exp2 in range.
inline void largeLogits(const SimTarget &t) {
  for (const char *dtype : {"bf16", "f16"}) {
    Problem p = t.make(kCausal, 64, dtype);
    p.qScale = 40.0; // |s| ~ 40 * 8
    t.expectMatches(p, kLargeLogitBound);
  }
}

/// Learned sink logits (per head, from a param), and a sink with every key
/// masked (o = 0, lse = the sink).
inline void sinks(const SimTarget &t) {
  Problem p = t.make("variant s { param sl: f32 = 1.5; sink(h) = sl * "
                     "float(h); mask(b, h, q, kv) = kv <= q; }");
  p.Hq = p.Hkv = 3;
  t.expectMatches(p);
  t.expectMatches(t.make("variant s { sink(h) = 2.0; mask(b, h, q, kv) = "
                         "false; }",
                         64, "f16"));
}

/// Every normalizer without and with a row sum (lse for softplus).
inline void normalizers(const SimTarget &t) {
  for (const char *norm :
       {"sigmoid", "relu", "relu2", "softplus", "laplace"}) {
    Problem p = t.make(std::string("variant n { normalize = ") + norm +
                       "; mask(b, h, q, kv) = kv <= q; }");
    p.options.lse = std::string(norm) == "softplus";
    t.expectMatches(p);
  }
}

/// f16/bf16 inputs (each of `dtypes`) with an f32 output: o is not rounded,
/// but P·V took P in the input dtype (gpuOutputBound).
inline void outDTypeF32(const SimTarget &t,
                        const std::vector<std::string> &dtypes) {
  for (const std::string &dtype : dtypes) {
    Problem p = t.make("variant c { out_dtype = f32; mask(b, h, q, kv) = kv "
                       "<= q; }",
                       64, dtype);
    Outcome out = t.expectMatches(p);
    EXPECT_EQ(out.info.outDType, DType::f32);
  }
}

/// Captured tensors of each dtype, read by the score and the mask.
inline void capturedTensorsOfEveryDType(const SimTarget &t) {
  t.expectMatches(t.make(R"(variant c {
    tensor bias: f32[Hq, Skv];
    tensor hb: f16[Hq];
    tensor gb: bf16[Hq];
    tensor ids: i32[B, Skv];
    score(s, b, h, q, kv) = s + bias[h, kv] + hb[h] + gb[h];
    mask(b, h, q, kv) = ids[b, kv] != 1;
  })"));
}

/// Split-KV's variants: no mask, sinks (first part only), a window that
/// empties whole parts, sigmoid (no lse).
inline std::vector<std::string> splitKvVariants() {
  return {
      "variant plain {}",
      "variant s { sink(h) = 0.5 * float(h); mask(b, h, q, kv) = kv <= q + "
      "(Skv - Sq); }",
      "variant w { mask(b, h, q, kv) = kv <= q + (Skv - Sq) && kv > q + "
      "(Skv - Sq) - 40; }",
      "variant n { normalize = sigmoid; mask(b, h, q, kv) = kv <= q + (Skv - "
      "Sq); }",
  };
}

/// Variants whose key tiles do not depend on the query rows (no mask, no
/// select), which sm_90a's TMA kernels run in clusters of two CTAs sharing
/// every K/V tile (TMA multicast; elsewhere they run as any kernel): odd
/// query-tile counts (the last cluster's second CTA past Sq), GQA-packed
/// decode rows, split-KV parts, head dims of one and two TMA boxes per
/// tile, Dv != D, sinks and a score reading q.
inline void maskFreeVariants(const SimTarget &t) {
  const std::string bias =
      "variant a { score(s, b, h, q, kv) = s - 0.03 * float(h + 1) * "
      "float(q - kv); }";
  const std::string sink = "variant s { sink(h) = 0.5 * float(h); }";
  for (Shape s : {Shape{1, 2, 2, 300, 257}, Shape{2, 3, 3, 129, 200},
                  Shape{2, 8, 2, 1, 300}})
    t.expectMatches(withShape(t.make(bias, 128, "bf16"), s));
  t.expectMatches(withShape(t.make(sink, 64, "f16"), Shape{1, 2, 1, 100, 7}));
  t.expectMatches(withShape(t.make(bias, 32, "f16"), Shape{1, 2, 1, 65, 70}));
  Problem narrowV = t.make(sink, 128, "bf16");
  narrowV.options.valueHeadDim = 64;
  t.expectMatches(withShape(narrowV, Shape{1, 2, 2, 191, 129}));
  Problem split = t.make(bias, 64, "bf16");
  split.options.splitKv = "3";
  for (Shape s : {Shape{1, 2, 2, 300, 301}, Shape{2, 8, 2, 1, 301}})
    t.expectMatches(withShape(split, s));
}

/// Split-KV with forced part counts (`parts`) for each of `variants`, for
/// GQA decode rows and a prefill shape; lse through the merge kernel.
inline void splitKv(const SimTarget &t,
                    const std::vector<std::string> &variants,
                    const std::vector<std::string> &parts) {
  for (const std::string &src : variants)
    for (const std::string &n : parts) {
      Problem p = t.make(src);
      p.options.splitKv = n;
      p.options.lse = src.find("sigmoid") == std::string::npos;
      for (Shape s : {Shape{2, 8, 2, 1, 301}, Shape{1, 2, 2, 37, 301}})
        t.expectMatches(withShape(p, s));
    }
}

/// Paged K/V's variants: causal, and a mask reading a tensor at positions
/// from the page table.
inline std::vector<std::string> pagedVariants() {
  return {
      kCausal,
      "variant doc { tensor d: i32[B, Skv]; mask(b, h, q, kv) = d[b, kv] == "
      "d[b, min(q + (Skv - Sq), Skv - 1)]; }",
  };
}

/// Paged K/V with each page size of `pages` (16 also split in 4 parts) for
/// each of `variants`.
inline void pagedKV(const SimTarget &t,
                    const std::vector<std::string> &variants,
                    const std::vector<int64_t> &pages) {
  for (const std::string &src : variants)
    for (int64_t page : pages) {
      Problem p = t.make(src, 64, page % 2 ? "f16" : "bf16");
      p.options.paged = page;
      p.options.splitKv = page == 16 ? "4" : "auto";
      p.Hq = 4, p.Hkv = 2, p.Sq = 5, p.Skv = 333, p.B = 3;
      t.expectMatches(p);
    }
}

/// Quantized K/V's variants: a capped score (causal or not), causal alone,
/// and sigmoid.
inline const char *const kCappedCausal =
    "variant capped { score(s, b, h, q, kv) = 20.0 * tanh(s / 20.0); "
    "mask(b, h, q, kv) = kv <= q + (Skv - Sq); }";
inline const char *const kCapped =
    "variant capped { score(s, b, h, q, kv) = 20.0 * tanh(s / 20.0); }";
inline const char *const kCausalNamedCapped =
    "variant capped { mask(b, h, q, kv) = kv <= q + (Skv - Sq); }";
inline const char *const kSigmoidCausal =
    "variant sig { normalize = sigmoid; mask(b, h, q, kv) = kv <= q + (Skv "
    "- Sq); }";

/// Quantized K/V of each kind of kQuantBounds that `keepKind` accepts (all
/// by default), as relative L1 error against the unquantized reference:
/// each (variant, K group) of `groups` on prefill rows (groups that are
/// whole key tiles or not), then GQA decode rows at D = 128, Dv = 64, split
/// in 3 and paged.
inline void quantizedKV(
    const SimTarget &t,
    const std::vector<std::pair<const char *, int64_t>> &groups,
    const std::function<bool(const std::string &kind)> &keepKind = {}) {
  for (QuantBound qb : kQuantBounds) {
    if (keepKind && !keepKind(qb.kind))
      continue;
    for (auto [src, group] : groups) {
      Problem p = t.make(src);
      p.options.kvDtype = qb.kind;
      p.options.kvGroup = group;
      p.options.lse = false;
      p.Hq = 4, p.Hkv = 2, p.Sq = 37, p.Skv = 301, p.B = 2;
      Outcome out = t.expectMatches(p);
      EXPECT_GT(out.relL1O, 1e-5); // quantized, not the bf16 values
    }
    Problem d = t.make(kCausal, 128, "f16");
    d.options.kvDtype = qb.kind;
    d.options.valueHeadDim = 64;
    d.options.splitKv = "3";
    d.Hq = 8, d.Hkv = 2, d.Sq = 3, d.Skv = 700, d.B = 2;
    t.expectMatches(d);
    d.options.paged = 16;
    t.expectMatches(d);
  }
}

/// select (topk, mass, above) over contiguous K/V and, for each nonzero of
/// `pages`, paged K/V split in 3 parts: the pre-pass kernels run on the
/// simulator too.
inline void selectKV(const SimTarget &t, const std::vector<int64_t> &pages) {
  for (const char *rule : {"topk(k)", "mass(0.8)", "above(0.02)"})
    for (int64_t page : pages) {
      Problem p = t.make("");
      p.source = std::string("variant s { param k: i32 = 2; select(size = "
                             "32) = ") +
                 rule + "; mask(b, h, q, kv) = kv <= q + (Skv - Sq); }";
      p.Hq = 4, p.Hkv = 2, p.Sq = 70, p.Skv = 300, p.B = 2;
      p.qScale = 3.0; // spread the pooled scores apart
      p.options.paged = page;
      if (page && p.options.gpuLoads == "tma")
        p.options.gpuLoads = "auto"; // pages stream with cp.async
      p.options.splitKv = page ? "3" : "auto";
      t.expectMatches(p);
    }
}

/// kv_index: each (b, kv head) attends to its listed positions only
/// (entries outside [0, Skv) skipped, repeats counted per listing):
/// contiguous, int8 and, with `paged`, paged K/V split in 3.
inline void sparseKVIndex(const SimTarget &t, bool paged = true) {
  for (auto [page, kv] : {std::pair<int64_t, const char *>{0, "same"},
                          {16, "same"}, {0, "int8"}}) {
    if (!paged && page)
      continue;
    Problem p = t.make(
        "variant snap { param budget: i32 = 45; tensor keep: i32[B, Hkv, "
        "budget]; kv_index = keep; sink(h) = 0.25; mask(b, h, q, kv) = kv <= "
        "q + (Skv - Sq); }");
    p.B = 2, p.Hq = 8, p.Hkv = 2, p.Sq = 2, p.Skv = 300;
    p.options.paged = page;
    p.options.kvDtype = kv;
    p.options.splitKv = page ? "3" : "auto";
    ref::RefTensor keep;
    keep.shape = {p.B, p.Hkv, 45};
    for (int64_t i = 0; i < p.B * p.Hkv * 45; ++i)
      keep.values.push_back(double((i * 37) % 306) - 3);
    p.captures["keep"] = keep;
    t.expectMatches(p);
  }
}

} // namespace attn::testing::sim

#endif // ATTN_TEST_SIMFEATURECASES_H
