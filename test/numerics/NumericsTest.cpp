//===- NumericsTest.cpp - language features against the reference ---------===//
#include "test/numerics/Bounds.h"
#include "test/numerics/Catalog.h"
#include "test/support/Harness.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <random>

using namespace attn;
using namespace attn::testing;

namespace {

constexpr double kTol = 2e-4;

Problem make(const std::string &source, int64_t D = 64) {
  Problem p;
  p.source = source;
  p.options.headDim = D;
  return p;
}

void expectClose(const Problem &p, double tol = kTol) {
  Outcome out = runAgainstReference(p);
  EXPECT_FALSE(out.hasNaN);
  EXPECT_LE(out.maxErrO, tol);
  if (p.options.lse) {
    EXPECT_FALSE(out.lseInfMismatch);
    EXPECT_LE(out.maxErrLse, tol);
  }
}

/// The --cpu levels this host runs: native, x86-64-v4 (AVX-512 BW),
/// x86-64-v3 (AVX2) and alderlake (AVX2 + AVX-VNNI: vpdpbusd on ymm), each
/// where the CPU has it.
std::vector<std::string> hostCpuLevels() {
  __builtin_cpu_init();
  std::vector<std::string> levels = {"native"};
  if (__builtin_cpu_supports("avx512bw"))
    levels.push_back("x86-64-v4");
  if (__builtin_cpu_supports("avx2"))
    levels.push_back("x86-64-v3");
  if (__builtin_cpu_supports("avxvnni"))
    levels.push_back("alderlake");
  return levels;
}

TEST(Numerics, PlainSoftmax) {
  Problem p = make("variant plain {}");
  p.options.lse = true;
  expectClose(p);
}

TEST(Numerics, TileMultiplesAndRaggedTails) {
  for (auto [sq, skv] : {std::pair{64, 64}, {1, 1}, {33, 65}, {31, 63},
                         {100, 7}, {7, 300}}) {
    Problem p = make("variant plain { mask(b, h, q, kv) = kv <= q + 3; }");
    p.Sq = sq, p.Skv = skv;
    p.options.lse = true;
    SCOPED_TRACE(std::to_string(sq) + "x" + std::to_string(skv));
    expectClose(p);
  }
}

TEST(Numerics, OddTileSizes) {
  Problem p = make("variant causal { mask(b, h, q, kv) = kv <= q; }");
  p.options.blockQ = 5;
  p.options.blockKV = 13;
  p.options.lse = true;
  expectClose(p);
}

TEST(Numerics, FullyMaskedRowsGiveZeroAndMinusInf) {
  // Queries 0..9 see nothing; the rest see a window.
  Problem p = make("variant gap { mask(b, h, q, kv) = q >= 10 && kv <= q "
                   "&& kv > q - 5; }");
  p.options.lse = true;
  expectClose(p); // the reference has o = 0, lse = -inf for those rows
  Problem all = make("variant none { mask(b, h, q, kv) = false; }");
  all.options.lse = true;
  Outcome out = runAgainstReference(all);
  EXPECT_FALSE(out.hasNaN);
  EXPECT_EQ(out.maxErrO, 0.0);
  EXPECT_FALSE(out.lseInfMismatch);
}

TEST(Numerics, MinusInfScoreActsAsMask) {
  Problem p = make("variant drop { score(s, b, h, q, kv) = where(kv % 3 == 0,"
                   " -inf, s); mask(b, h, q, kv) = kv <= q; }");
  p.options.lse = true;
  expectClose(p);
  Problem empty = make("variant drop_all { score(s, b, h, q, kv) = -inf; }");
  empty.options.lse = true;
  Outcome out = runAgainstReference(empty);
  EXPECT_FALSE(out.hasNaN);
  EXPECT_EQ(out.maxErrO, 0.0);
  EXPECT_FALSE(out.lseInfMismatch);
}

TEST(Numerics, LogitsInTheHundreds) {
  Problem p = make("variant causal { mask(b, h, q, kv) = kv <= q; }");
  p.qScale = 40.0; // |s| ~ 40 * 8 = hundreds
  p.options.lse = true;
  expectClose(p, 5e-4);
}

TEST(Numerics, Normalizers) {
  for (const char *norm : {"sigmoid", "relu", "relu2", "softplus", "laplace"}) {
    Problem p = make(std::string("variant n { normalize = ") + norm +
                     "; mask(b, h, q, kv) = kv <= q; }");
    p.options.lse = std::string(norm) == "softplus";
    SCOPED_TRACE(norm);
    expectClose(p);
  }
}

TEST(Numerics, SinkLogit) {
  Problem p = make("variant s { param sl: f32 = 1.5; sink(h) = sl * "
                   "float(h); mask(b, h, q, kv) = kv <= q; }");
  p.Hq = p.Hkv = 3;
  p.options.lse = true;
  expectClose(p);
  // A sink with every key masked: o = 0 and lse = the sink.
  Problem masked = make("variant s { sink(h) = 2.0; mask(b, h, q, kv) = "
                        "false; }");
  masked.options.lse = true;
  expectClose(masked);
}

TEST(Numerics, GroupedAndMultiQuery) {
  for (auto [hq, hkv] : {std::pair{8, 2}, {6, 1}, {4, 4}}) {
    Problem p = make("variant g { score(s, b, h, q, kv) = s + 0.1 * "
                     "float(hkv); mask(b, h, q, kv) = kv <= q; }");
    p.Hq = hq, p.Hkv = hkv, p.B = 2;
    p.options.lse = true;
    SCOPED_TRACE(std::to_string(hq) + "/" + std::to_string(hkv));
    expectClose(p);
  }
}

TEST(Numerics, ValueHeadDimDiffers) {
  Problem p = make("variant mla { mask(b, h, q, kv) = kv <= q; }", 96);
  p.options.valueHeadDim = 40;
  p.options.lse = true;
  expectClose(p);
}

TEST(Numerics, HeadDims) {
  for (int64_t d : {16, 32, 80, 128, 256, 512}) { // 512: auto tiles shrink
    Problem p = make("variant c { mask(b, h, q, kv) = kv <= q; }", d);
    p.options.lse = true;
    SCOPED_TRACE(d);
    expectClose(p);
  }
}

TEST(Numerics, ReducedPrecisionInputs) {
  for (const char *dtype : {"f16", "bf16"}) {
    Problem p = make("variant c { mask(b, h, q, kv) = kv <= q; }");
    p.options.dtype = dtype;
    p.options.lse = true;
    Outcome out = runAgainstReference(p);
    SCOPED_TRACE(dtype);
    // o is rounded to the input dtype: one ulp relative to |o|.
    double ulp = std::string(dtype) == "f16" ? std::ldexp(1.0, -10)
                                             : std::ldexp(1.0, -7);
    EXPECT_LE(out.maxErrO, 2e-4 + ulp * out.refMaxAbsO);
    EXPECT_LE(out.maxErrLse, 2e-4); // lse is always f32
  }
}

// f16/bf16 inputs on every ISA level this host runs, through the split-KV
// merge and the block map (both compiled at their first call in the JIT):
// on x86-64-v3 the code generator carried bf16 values across blocks in f32
// registers and rounded them back by calling __truncsfbf2, which the JIT
// could not resolve ("compiling the block-map entry failed").
TEST(Numerics, ReducedPrecisionOnEveryIsaLevel) {
  std::vector<std::string> levels = hostCpuLevels();
  levels.push_back("x86-64-v2"); // no F16C: f16 converts in integer code
  // Decode's class without and with the merge, prefill's with it.
  const std::pair<const char *, int64_t> shapes[] = {
      {"1", 1}, {"3", 1}, {"3", 301}};
  for (const std::string &level : levels)
    for (const char *dtype : {"f16", "bf16"})
      for (auto [parts, sq] : shapes)
        for (bool lse : {false, true}) {
          Problem p = make("variant c { mask(b, h, q, kv) = kv <= q + (Skv - "
                           "Sq); }");
          p.Hq = 8, p.Hkv = sq == 1 ? 2 : 8, p.Sq = sq, p.Skv = 301;
          p.options.dtype = dtype;
          p.options.cpu = level;
          p.options.splitKv = parts;
          p.options.lse = lse;
          SCOPED_TRACE(level + " " + dtype + " parts=" +
                       parts + " sq=" + std::to_string(sq) +
                       " lse=" + std::to_string(lse));
          Outcome out = runAgainstReference(p);
          double ulp = std::string(dtype) == "f16" ? std::ldexp(1.0, -10)
                                                   : std::ldexp(1.0, -7);
          EXPECT_FALSE(out.hasNaN);
          EXPECT_LE(out.maxErrO, 2e-4 + ulp * out.refMaxAbsO);
          if (lse)
            EXPECT_LE(out.maxErrLse, 2e-4);
        }
}

TEST(Numerics, OutDTypeOverride) {
  Problem p = make("variant c { out_dtype = f32; mask(b, h, q, kv) = kv <= "
                   "q; }");
  p.options.dtype = "bf16";
  Outcome out = runAgainstReference(p);
  EXPECT_EQ(out.info.outDType, DType::f32);
  EXPECT_LE(out.maxErrO, kTol); // f32 output: no rounding of o
}

TEST(Numerics, ParamsChangeWithoutRecompiling) {
  Jit jit;
  const char *src = "variant w { param window: i32 = 8; mask(b, h, q, kv) "
                    "= kv <= q && q - kv < window; }";
  for (int window : {1, 5, 40, 1000}) {
    Problem p = make(src);
    p.params = {{"window", double(window)}};
    p.options.lse = true;
    Outcome out = runAgainstReference(p, &jit);
    SCOPED_TRACE(window);
    EXPECT_LE(out.maxErrO, kTol);
    EXPECT_LE(out.maxErrLse, kTol);
  }
  // One compiled kernel served all four launches.
  Kernel a = jit.compile(src, make(src).options);
  Kernel b = jit.compile(src, make(src).options);
  EXPECT_EQ(&a.info(), &b.info());
}

TEST(Numerics, FloatParamAndScaleExpression) {
  Problem p = make("variant t { param temp: f32 = 0.5; scale = temp / "
                   "sqrt(float(D)) * log(float(Skv)); }");
  p.params = {{"temp", 0.75}};
  p.options.lse = true;
  expectClose(p);
}

TEST(Numerics, IntegerFloorDivisionAndModulo) {
  // Negative operands follow Python: -1 / 64 == -1, -1 % 64 == 63; a zero
  // divisor gives 0 and the dividend.
  Problem p = make(R"(variant m {
    param z: i32 = 0;
    let d = (q - kv) / 7;
    let r = (q - kv) % -5;
    score(s, b, h, q, kv) = s + 0.01 * float(d) + 0.02 * float(r)
                              + 0.03 * float(q / z) + 0.001 * float(kv % z);
    mask(b, h, q, kv) = (kv - q) % 3 != 1;
  })");
  p.options.lse = true;
  expectClose(p);
}

TEST(Numerics, BuiltinsAndPromotion) {
  Problem p = make(R"(variant f {
    const c = 2;
    let t = abs(s) + sign(s) * 0.5 + floor(s) * 0.1 + ceil(s) * 0.1;
    let u = clamp(q - kv, -3, 3) + min(q, kv) % 4 + max(1, 2) * c;
    let w = sqrt(float(q + 1)) + rsqrt(float(kv + 1)) + exp2(-float(kv) / 64.0);
    score(s, b, h, q, kv) = 0.5 * tanh(t) + sigmoid(s) + softplus(s - 1.0)
      + log2(1.0 + exp(-abs(s))) + 0.01 * float(u) + 0.1 * w
      + float(int(s * 3.0)) * 0.01 + (q > kv ? 0.25 : -0.25) + sign(-2) * 0.1
      + float(abs(-3));
    mask(b, h, q, kv) = !(q == kv + 1) && (kv <= q || kv % 2 == 0);
  })");
  p.options.lse = true;
  expectClose(p);
}

TEST(Numerics, CapturedTensorsOfEveryDType) {
  Problem p = make(R"(variant c {
    tensor bias: f32[Hq, Skv];
    tensor hb: f16[Hq];
    tensor gb: bf16[Hq];
    tensor ids: i32[B, Skv];
    score(s, b, h, q, kv) = s + bias[h, kv] + hb[h] + gb[h];
    mask(b, h, q, kv) = ids[b, kv] != 1;
  })");
  p.options.lse = true;
  expectClose(p);
}

TEST(Numerics, HalfPrecisionCapturesInMasks) {
  // The tile classifier widens f16/bf16 capture reads' bounds to f32; it
  // then widened them again at the read's own extf (f32 -> f32, an internal
  // compiler error). Found by test/random.
  Problem p = make(R"(variant c {
    tensor hb: f16[Hq];
    tensor kb: bf16[Skv];
    mask(b, h, q, kv) = kv <= q && hb[h] + kb[kv] < 0.5;
  })");
  p.Hq = p.Hkv = 3;
  p.options.lse = true;
  expectClose(p);
}

TEST(Numerics, NonContiguousViews) {
  // q, k, v and o as slices of larger buffers (unit inner stride only).
  Jit jit;
  const char *src = "variant c { mask(b, h, q, kv) = kv <= q; }";
  Options o;
  o.headDim = 16;
  Kernel k = jit.compile(src, o);
  int64_t B = 1, H = 2, S = 20, D = 16, pad = 5;
  std::vector<float> qbuf(B * H * S * (D + pad)), kbuf(qbuf.size()),
      vbuf(qbuf.size()), obuf(qbuf.size(), 0.0f), dense(B * H * S * D);
  for (size_t i = 0; i < qbuf.size(); ++i) {
    qbuf[i] = std::sin(0.1 * i);
    kbuf[i] = std::cos(0.07 * i);
    vbuf[i] = std::sin(0.05 * i + 1);
  }
  std::vector<int64_t> shape{B, H, S, D},
      strides{H * S * (D + pad), S * (D + pad), D + pad, 1};
  Tensors t{TensorRef(qbuf.data(), DType::f32, shape, strides),
            TensorRef(kbuf.data(), DType::f32, shape, strides),
            TensorRef(vbuf.data(), DType::f32, shape, strides),
            TensorRef(obuf.data(), DType::f32, shape, strides),
            std::nullopt};
  k.launch(t);
  // The same data made contiguous must give the same answer.
  auto pack = [&](const std::vector<float> &src) {
    std::vector<float> out(B * H * S * D);
    for (int64_t r = 0; r < B * H * S; ++r)
      for (int64_t d = 0; d < D; ++d)
        out[r * D + d] = src[r * (D + pad) + d];
    return out;
  };
  std::vector<float> q2 = pack(qbuf), k2 = pack(kbuf), v2 = pack(vbuf);
  Tensors t2{TensorRef(q2.data(), DType::f32, shape),
             TensorRef(k2.data(), DType::f32, shape),
             TensorRef(v2.data(), DType::f32, shape),
             TensorRef(dense.data(), DType::f32, shape), std::nullopt};
  k.launch(t2);
  std::vector<float> o2 = pack(obuf);
  for (size_t i = 0; i < dense.size(); ++i)
    ASSERT_FLOAT_EQ(o2[i], dense[i]) << i;
  // Padding between rows was never written.
  for (int64_t r = 0; r < B * H * S; ++r)
    for (int64_t d = D; d < D + pad; ++d)
      ASSERT_EQ(obuf[r * (D + pad) + d], 0.0f);
}

TEST(Numerics, EmptyLaunches) {
  for (auto [sq, skv] : {std::pair{0, 10}, {10, 0}, {0, 0}}) {
    Problem p = make("variant c { sink(h) = 0.5; }");
    p.Sq = sq, p.Skv = skv;
    p.options.lse = true;
    SCOPED_TRACE(std::to_string(sq) + "x" + std::to_string(skv));
    expectClose(p);
  }
}

} // namespace

namespace {

TEST(Numerics, DecodeWithKeyTilesOfAnySize) {
  // Decode tiles (at most 16 valid rows) read whole key tiles in place and
  // take their scores a quad of 4 keys x 4 rows at a time: an explicit
  // --block-kv that is not a multiple of 4 read and wrote past the compact
  // score buffer (wrong o and lse, or a crash). Found by test/random.
  Jit jit;
  for (int64_t blockKV : {1, 2, 3, 7, 13}) {
    struct Shape {
      int64_t hq, sq;
    };
    for (Shape sh : {Shape{1, 1}, Shape{4, 1}, Shape{1, 2}, Shape{2, 8}}) {
      Problem p = make("variant d { mask(b, h, q, kv) = kv <= q + (Skv - "
                       "Sq); }",
                       40);
      p.Hq = sh.hq, p.Hkv = 1, p.Sq = sh.sq, p.Skv = 132;
      p.options.blockKV = blockKV;
      p.options.lse = true;
      SCOPED_TRACE("block-kv " + std::to_string(blockKV) + ", " +
                   std::to_string(sh.hq) + " heads x " +
                   std::to_string(sh.sq) + " rows");
      Outcome out = runAgainstReference(p, &jit);
      EXPECT_FALSE(out.hasNaN);
      EXPECT_LE(out.maxErrO, kTol);
      EXPECT_FALSE(out.lseInfMismatch);
      EXPECT_LE(out.maxErrLse, kTol);
    }
  }
}

TEST(Numerics, DecodeShapes) {
  // Few rows per tile (G * Sq <= 16 run narrow), GQA/MQA groups, ragged and
  // long key ranges, bottom-right causal alignment.
  struct Shape {
    int64_t hq, hkv, sq, skv;
  };
  for (Shape sh : {Shape{8, 2, 1, 300}, Shape{8, 2, 4, 333}, Shape{6, 1, 2, 70},
                   Shape{4, 4, 1, 129}, Shape{16, 1, 1, 64}, Shape{8, 1, 3, 90},
                   Shape{2, 2, 17, 40}}) {
    Problem p = make("variant d { mask(b, h, q, kv) = kv <= q + (Skv - Sq); "
                     "score(s, b, h, q, kv) = s + 0.1 * float(h); }");
    p.Hq = sh.hq, p.Hkv = sh.hkv, p.Sq = sh.sq, p.Skv = sh.skv, p.B = 2;
    p.options.lse = true;
    SCOPED_TRACE(std::to_string(sh.hq) + "/" + std::to_string(sh.hkv) + " " +
                 std::to_string(sh.sq) + "x" + std::to_string(sh.skv));
    expectClose(p);
  }
}

TEST(Numerics, DecodePartialLastKeyTileOnEveryIsaLevel) {
  // Decode reads whole key tiles in place and copies the last, partial one
  // as it is in the cache (its dtype, zero rows past the last key) for the
  // same code. Its keys past the end get probability 0 without a mask too
  // (where the tile's max reads the scores as they are), rows whose keys
  // are all masked (odd heads) give o = 0 and lse = -inf; every K/V kind,
  // pages smaller than a tile, one and three groups of 4 rows, a key range
  // shorter than one tile, on every ISA level this host runs.
  struct Kind {
    const char *dtype, *kv;
    int64_t paged;
  };
  const Kind kinds[] = {{"f32", "same", 0},    {"f16", "same", 0},
                        {"bf16", "same", 0},   {"f32", "same", 16},
                        {"f32", "int8", 0},    {"f32", "int8", 16},
                        {"f32", "int4", 0},    {"f32", "fp8e4m3", 0},
                        {"f32", "fp8e5m2", 16}};
  const char *variants[] = {
      "variant plain {}",
      "variant even { score(s, b, h, q, kv) = s + 0.1 * float(h); "
      "mask(b, h, q, kv) = h % 2 == 0 && kv <= q + (Skv - Sq); }"};
  Jit jit;
  for (const std::string &level : hostCpuLevels())
    for (Kind kind : kinds)
      for (const char *src : variants)
        for (int64_t sq : {1, 3})
          for (int64_t skv : {45, 301}) {
            Problem p = make(src);
            p.Hq = 8, p.Hkv = 2, p.Sq = sq, p.Skv = skv, p.B = 2;
            p.options.cpu = level;
            p.options.dtype = kind.dtype;
            p.options.kvDtype = kind.kv;
            p.options.paged = kind.paged;
            p.options.lse = true;
            SCOPED_TRACE(level + " " + kind.dtype + " " + kind.kv +
                         " paged " + std::to_string(kind.paged) + " " + src +
                         " Sq " + std::to_string(sq) + " Skv " +
                         std::to_string(skv));
            Outcome out = runAgainstReference(p, &jit);
            EXPECT_FALSE(out.hasNaN);
            EXPECT_FALSE(out.lseInfMismatch);
            if (std::string(kind.kv) != "same") {
              EXPECT_LE(out.relL1O, quantBound(kind.kv));
              continue;
            }
            double ulp = std::string(kind.dtype) == "f16" ? std::ldexp(1.0, -10)
                         : std::string(kind.dtype) == "bf16"
                             ? std::ldexp(1.0, -7)
                             : 0.0;
            EXPECT_LE(out.maxErrO, kTol + ulp * out.refMaxAbsO);
            EXPECT_LE(out.maxErrLse, kTol + ulp);
          }
}

} // namespace

namespace {

TEST(Numerics, SplitKvMatchesTheReference) {
  // Forced part counts: one part, a few, more parts than key tiles (empty
  // parts), with sinks (first part only), GQA decode rows, every
  // normalizer, masks that empty whole parts, and lse through the merge.
  const char *variants[] = {
      "variant plain {}",
      "variant s { sink(h) = 0.5 * float(h); mask(b, h, q, kv) = kv <= q + "
      "(Skv - Sq); }",
      "variant w { mask(b, h, q, kv) = kv <= q + (Skv - Sq) && kv > q + "
      "(Skv - Sq) - 40; }",
      "variant n { normalize = sigmoid; mask(b, h, q, kv) = kv <= q + (Skv - "
      "Sq); }",
      "variant p { normalize = softplus; }",
      "variant l { normalize = laplace; }",
  };
  for (const char *src : variants)
    for (const char *parts : {"1", "2", "3", "7", "64"})
      for (auto [hq, sq] : {std::pair{8, 1}, {2, 37}}) {
        Problem p = make(src);
        p.Hq = hq, p.Hkv = 2, p.Sq = sq, p.Skv = 301, p.B = 2;
        p.options.blockKV = 32;
        p.options.splitKv = parts;
        p.options.lse = hasRowSum(p); // not for sigmoid and laplace
        SCOPED_TRACE(std::string(src) + " parts=" + parts + " hq=" +
                     std::to_string(hq));
        expectClose(p);
      }
}

TEST(Numerics, SplitKvRowsNoPartKeeps) {
  // The merge (lib/Transforms/MergeSplits.h) of rows whose parts all kept
  // nothing (every lse_i = -inf) gives o = 0 and lse = -inf, next to rows
  // whose keys lie in some parts only; softmax and softplus (weighted by
  // exp(lse_i)), relu (summed).
  for (const char *norm : {"softmax", "softplus", "relu"})
    for (const char *parts : {"3", "64"}) {
      Problem p = make(std::string("variant gap { normalize = ") + norm +
                       "; mask(b, h, q, kv) = q >= 10 && kv <= q && kv > q "
                       "- 40; }");
      p.Sq = 37, p.Skv = 301;
      p.options.blockKV = 32;
      p.options.splitKv = parts;
      p.options.lse = std::string(norm) != "relu";
      SCOPED_TRACE(std::string(norm) + " parts=" + parts);
      expectClose(p);
    }
}

} // namespace

namespace {

// Quantized K/V against the float64 reference on the unquantized inputs
// (unit-normal data), as relative L1 error: kQuantBounds (Bounds.h).

TEST(Numerics, QuantizedKV) {
  const char *variants[] = {
      "variant plain {}",
      "variant capped { score(s, b, h, q, kv) = 20.0 * tanh(s / 20.0); "
      "mask(b, h, q, kv) = kv <= q + (Skv - Sq); }",
      "variant sig { normalize = sigmoid; mask(b, h, q, kv) = kv <= q + (Skv "
      "- Sq); }",
  };
  for (QuantBound qb : kQuantBounds)
    for (const char *src : variants)
      for (int64_t group : {64, 32, 100}) {
        Problem p = make(src);
        p.Hq = 4, p.Hkv = 2, p.Sq = 37, p.Skv = 301, p.B = 2;
        p.options.kvDtype = qb.kind;
        p.options.kvGroup = group;
        SCOPED_TRACE(std::string(qb.kind) + " " + src + " group " +
                     std::to_string(group));
        Outcome out = runAgainstReference(p);
        if (std::getenv("ATTN_TEST_VERBOSE"))
          std::printf("%-8s group %3lld rel-L1 %.3e  %s\n", qb.kind,
                      (long long)group, out.relL1O, src);
        EXPECT_FALSE(out.hasNaN);
        EXPECT_LE(out.relL1O, qb.bound);
        // Quantization error, not a broken kernel: well above f32 noise
        // only for the coarse codes, and never wildly off.
        EXPECT_GT(out.relL1O, 1e-5);
      }
}

TEST(Numerics, QuantizedKVDecodeShapesAndDtypes) {
  // GQA decode rows, D = 128, Dv != D, bf16 queries, lse, split parts;
  // softmax (its running max rescales O as each tile's P . V is added) and
  // sigmoid (no running max) over tiles read in place: one group of 4 rows
  // (Sq = 1), three (multi-token decode, Sq = 3: 12 rows, causal across
  // the 3 positions) and a partial second group (6 rows).
  struct Shape {
    int64_t hq, hkv, sq;
  };
  for (QuantBound qb : kQuantBounds)
  for (Shape sh : {Shape{8, 2, 1}, Shape{8, 2, 3}, Shape{6, 2, 2}})
  for (const char *src :
       {"variant d { mask(b, h, q, kv) = kv <= q + (Skv - Sq); }",
        "variant s { normalize = sigmoid; mask(b, h, q, kv) = kv <= q + "
        "(Skv - Sq); }"}) {
    Problem p = make(src, 128);
    p.options.valueHeadDim = 64;
    p.options.dtype = "bf16";
    p.options.lse = std::string(src).find("sigmoid") == std::string::npos;
    p.options.kvDtype = qb.kind;
    p.options.splitKv = "3";
    p.Hq = sh.hq, p.Hkv = sh.hkv, p.Sq = sh.sq, p.Skv = 700, p.B = 2;
    SCOPED_TRACE(std::string(qb.kind) + " " + src + " Hq " +
                 std::to_string(sh.hq) + " Sq " + std::to_string(sh.sq));
    Outcome out = runAgainstReference(p);
    if (std::getenv("ATTN_TEST_VERBOSE"))
      std::printf("decode %-8s Hq %lld Sq %lld rel-L1 %.3e  %s\n", qb.kind,
                  (long long)sh.hq, (long long)sh.sq, out.relL1O, src);
    EXPECT_FALSE(out.hasNaN);
    EXPECT_LE(out.relL1O, qb.bound);
  }
}

/// select rules for the serving-layout tests, and a causal variant using one
/// over 32-token blocks.
const char *const kSelectRules[] = {"topk(k)", "mass(0.8)", "above(0.02)"};
std::string selectSource(const char *rule) {
  return std::string("variant s { param k: i32 = 2; select(size = 32) = ") +
         rule + "; mask(b, h, q, kv) = kv <= q + (Skv - Sq); }";
}

TEST(Numerics, PagedKVEqualsContiguous) {
  // Pages smaller, equal to and larger than key tiles, odd sizes; with
  // masks that read Skv, tensors, split parts and quantized codes.
  const char *variants[] = {
      "variant causal { mask(b, h, q, kv) = kv <= q + (Skv - Sq); }",
      "variant doc { tensor d: i32[B, Skv]; mask(b, h, q, kv) = d[b, kv] == "
      "d[b, min(q + (Skv - Sq), Skv - 1)]; }",
      "variant sinkw { sink(h) = 1.0; mask(b, h, q, kv) = kv > q + (Skv - Sq) "
      "- 50 && kv <= q + (Skv - Sq); }",
  };
  for (const char *src : variants)
    for (int64_t page : {16, 64, 7, 100})
      for (const char *parts : {"1", "auto", "4"}) {
        Problem p = make(src);
        p.Hq = 4, p.Hkv = 2, p.Sq = 5, p.Skv = 333, p.B = 3;
        p.options.paged = page;
        p.options.splitKv = parts;
        p.options.lse = true;
        SCOPED_TRACE(std::string(src) + " page " + std::to_string(page) +
                     " parts " + parts);
        expectClose(p);
      }
  Problem q = make("variant causal { mask(b, h, q, kv) = kv <= q + (Skv - "
                   "Sq); }");
  q.options.paged = 16;
  q.options.kvDtype = "int8";
  q.Hq = 4, q.Hkv = 1, q.Sq = 2, q.Skv = 200;
  Outcome out = runAgainstReference(q);
  EXPECT_LE(out.relL1O, 1.5e-2);
}

// select over paged caches: the pre-pass pools the keys through the page
// table, so a paged pool selects what the contiguous cache does.
TEST(Numerics, SelectOverPagedKV) {
  for (const char *rule : kSelectRules)
    for (int64_t page : {16, 32, 7}) {
      Problem p = make(selectSource(rule).c_str());
      p.Hq = 4, p.Hkv = 2, p.Sq = 70, p.Skv = 300, p.B = 2;
      p.qScale = 3.0;
      p.options.paged = page;
      p.options.splitKv = "3";
      SCOPED_TRACE(std::string(rule) + " page " + std::to_string(page));
      expectClose(p);
    }
}

TEST(Numerics, SelectRuleOverPagedKVSeesTheSequenceLength) {
  // Paged kernels see each batch's seq_lens as Skv; the CPU's select
  // pre-pass evaluated its rule's argument with the table's capacity
  // instead (190 keys in pages of 7: topk(Skv / 64) kept 196 / 64 = 3
  // blocks, not 2). Found by test/random.
  for (int64_t page : {7, 5}) {
    Problem p = make("variant s { select(size = 48) = topk(Skv / 64); }", 16);
    p.Sq = 1, p.Skv = 190;
    p.options.paged = page;
    SCOPED_TRACE("page " + std::to_string(page));
    expectClose(p);
  }
}

} // namespace

namespace {

/// Unit-normal decode data (f32 Q [B, Hq, Sq, D], K and V [B, Hkv, S, D])
/// and a launch of `kernel` on it through a KVCache in the kernel's K/V
/// layout, writing o and lse.
struct DecodeData {
  int64_t B, Hq, Hkv, Sq, S, D;
  std::vector<float> q, k, v;

  DecodeData(int64_t B, int64_t Hq, int64_t Hkv, int64_t Sq, int64_t S,
             int64_t D, unsigned seed)
      : B(B), Hq(Hq), Hkv(Hkv), Sq(Sq), S(S), D(D), q(B * Hq * Sq * D),
        k(B * Hkv * S * D), v(k.size()) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> normal;
    for (float &x : q)
      x = normal(rng);
    for (size_t i = 0; i < k.size(); ++i)
      k[i] = normal(rng), v[i] = normal(rng);
  }

  /// `adjustCodes` may rewrite the cache's codes (t.k, t.v) before the
  /// launch.
  void launch(const Kernel &kernel, std::vector<float> &o,
              std::vector<float> &lse,
              const std::function<void(const Tensors &)> &adjustCodes =
                  {}) const {
    o.assign(q.size(), 7.0f);
    lse.assign(B * Hq * Sq, 7.0f);
    Tensors t;
    t.q = TensorRef(const_cast<float *>(q.data()), DType::f32, {B, Hq, Sq, D});
    t.o = TensorRef(o.data(), DType::f32, {B, Hq, Sq, D});
    t.lse = TensorRef(lse.data(), DType::f32, {B, Hq, Sq});
    KVCache cache = KVCache::build(
        kernel.info(),
        TensorRef(const_cast<float *>(k.data()), DType::f32, {B, Hkv, S, D}),
        TensorRef(const_cast<float *>(v.data()), DType::f32, {B, Hkv, S, D}));
    cache.bind(t);
    if (adjustCodes)
      adjustCodes(t);
    kernel.launch(t);
  }
};

// select over quantized (and paged) caches: the blocks are chosen from the
// dequantized keys (codes times K's scales), the same in a paged pool as in
// the contiguous cache. (Against the unquantized reference a block near the
// rule's cut may go the other way, so that comparison is not bounded by
// the quantization error; attnc run's serving test checks one case.)
TEST(Numerics, SelectOverQuantizedPagesEqualsContiguous) {
  Jit jit;
  DecodeData data(/*B=*/2, /*Hq=*/4, /*Hkv=*/2, /*Sq=*/70, /*S=*/300,
                  /*D=*/64, /*seed=*/9);
  for (float &x : data.q)
    x *= 3.0f; // spread the pooled scores apart
  for (const char *rule : kSelectRules)
    for (const char *kv : {"int8", "fp8e4m3", "int4"}) {
      Options contiguous;
      contiguous.headDim = 64;
      contiguous.kvDtype = kv;
      contiguous.lse = true;
      std::vector<float> o[3], lse[3];
      data.launch(jit.compile(selectSource(rule), contiguous), o[0], lse[0]);
      Options paged = contiguous;
      paged.paged = 16;
      data.launch(jit.compile(selectSource(rule), paged), o[1], lse[1]);
      Options split = paged;
      split.splitKv = "3";
      data.launch(jit.compile(selectSource(rule), split), o[2], lse[2]);
      SCOPED_TRACE(std::string(rule) + " " + kv);
      // The last query tile (6 rows) reads whole key tiles in place, where
      // fp8's P is rounded to bf16 (half ulp: 2^-9 relative) against the
      // running max, which split parts keep apart: the split result may
      // differ by up to 2 * 2^-9 * mean|v| = 2^-8 for unit-normal V (2.8e-3
      // seen; paged alone agrees to 5e-7). A block chosen differently moves
      // o by a whole block's share.
      for (int path : {1, 2}) {
        double bound = path == 2 && std::string(kv) == "fp8e4m3"
                           ? std::ldexp(1.0, -8)
                           : 2e-4;
        double worst = 0;
        for (size_t i = 0; i < o[0].size(); ++i) {
          worst = std::max(worst, double(std::fabs(o[0][i] - o[path][i])));
          ASSERT_NEAR(o[0][i], o[path][i], bound) << path << " " << i;
        }
        if (std::getenv("ATTN_TEST_VERBOSE"))
          std::printf("select %s %s: %s vs contiguous %.3e\n", rule, kv,
                      path == 1 ? "paged" : "paged + split", worst);
        for (size_t i = 0; i < lse[0].size(); ++i)
          if (lse[0][i] != lse[path][i]) // (-inf for rows with nothing kept)
            ASSERT_NEAR(lse[0][i], lse[path][i], 2e-4) << path << " " << i;
      }
    }
}

// Integer K/V codes meet the rounded query rows (and P's codes) in byte dot
// products: with VNNI (AVX-512 VNNI at 512 bits, AVX-VNNI at 256) in
// vpdpbusd (K's codes made unsigned, offsets subtracted in i32); without it
// (x86-64-v4: AVX-512 BW; x86-64-v3: AVX2) in vpmaddubsw + vpmaddwd, whose
// 16-bit pair sums saturate, so K's codes go in as |k| with the query's
// sign flipped and P's codes (0..255) as their low 7 bits and top bit.
// int4 codes do so on their packed nibbles (K: low and high nibbles
// against the query's even and odd columns; V: a row's nibbles as its even
// and odd columns, put back in order in the sums). Code for x86-64-v2 (no
// AVX2) converts the codes to f32 instead. All these sums are exact
// integers, so every ISA level this host runs gives the same answer. With
// AVX-512 BF16, fp8 codes become bf16 by bit moves and meet the
// (bf16-rounded) query rows in vdpbf16ps: the same products, summed in
// another order, and fp8 subnormals (under 2^-6 of a scale) read as zero.
// Data: unit-normal K/V (codes spanning -127..127 per group) and a second
// set whose every code is at the extremes (-128 for int8, the largest
// query codes, P codes of 255 from equal scores), where saturating pair
// sums would show.
TEST(Numerics, CodeDotProductsMatchConvertedCodes) {
  const char *src = "variant d { mask(b, h, q, kv) = kv <= q + (Skv - Sq); }";
  const std::vector<std::string> levels = hostCpuLevels();
  for (const char *kv : {"int8", "int4", "fp8e4m3", "fp8e5m2"})
  // D = 64: int4's 64 codes per step fill one vector (nibbles side by
  // side); D = 128: 128 codes per step, the nibbles one vector each.
  for (int64_t D : {64, 128})
  for (bool extremes : {false, true}) {
    bool integer = kv[0] == 'i';
    double bound = integer ? 1e-5 : 1e-4;
    Jit jit;
    Options converted;
    converted.headDim = D;
    converted.kvDtype = kv;
    converted.lse = true;
    converted.cpu = "x86-64-v2";
    DecodeData data(/*B=*/1, /*Hq=*/8, /*Hkv=*/2, /*Sq=*/1, /*S=*/1000, D,
                    /*seed=*/5);
    // Extreme codes: a query of +-1 (codes +-127), every int8 K and V code
    // -128 (equal scores: P's codes all 255), or int4 codes -8.
    if (extremes)
      for (size_t i = 0; i < data.q.size(); ++i)
        data.q[i] = i % 5 == 0 ? -1.0f : 1.0f;
    auto adjust = [&](const Tensors &t) {
      if (!extremes || !integer)
        return;
      for (const TensorRef *codes : {&t.k, &t.v}) {
        // int4: two codes per byte, both -8.
        std::memset(codes->data, kv == std::string("int8") ? 0x80 : 0x88,
                    size_t(codes->numel()));
      }
    };
    if (extremes && !integer)
      continue;
    std::vector<float> expect, expectLse;
    data.launch(jit.compile(src, converted), expect, expectLse, adjust);
    for (const std::string &level : levels) {
      Options dots = converted;
      dots.cpu = level;
      std::vector<float> o, lse;
      data.launch(jit.compile(src, dots), o, lse, adjust);
      SCOPED_TRACE(std::string(kv) + " D = " + std::to_string(D) + " " +
                   level + (extremes ? " extreme codes" : ""));
      for (size_t i = 0; i < o.size(); ++i)
        ASSERT_NEAR(o[i], expect[i], bound) << i;
      for (size_t i = 0; i < lse.size(); ++i)
        ASSERT_NEAR(lse[i], expectLse[i], bound) << i;
    }
  }
}

// Decode reads whole key tiles in place (int8/fp8 codes: K's group scales
// folded into the query rows, fp8 decoded in vector registers), from
// paged pools too when pages hold whole tiles or divide them; other page
// sizes stage the rows. The same data through both paths agrees to f32
// rounding; the in-place kernels' last, partial tile (700 = 10 x 64 + 60
// or 21 x 32 + 28) is copied raw and read by the same in-place code.
TEST(Numerics, DecodeInPlaceMatchesStagedRows) {
  Jit jit;
  const char *src = "variant d { sink(h) = 0.25; mask(b, h, q, kv) = kv <= "
                    "q + (Skv - Sq); }";
  for (const char *kv : {"int8", "int4", "fp8e4m3", "fp8e5m2", "same"})
  for (int64_t D : {64, 128}) {
    Options inPlace;
    inPlace.headDim = D;
    inPlace.kvDtype = kv;
    inPlace.lse = true;
    inPlace.splitKv = "1";
    // Pages of 24 neither hold whole tiles nor divide them: staged rows.
    // Pages of 64 hold whole tiles, pages of 16 split them: read in place
    // from the pool (page by page for 16).
    Options staged = inPlace;
    staged.paged = 24;
    Options pagedInPlace = inPlace;
    pagedInPlace.paged = 64;
    Options smallPages = inPlace;
    smallPages.paged = 16;
    Kernel kd = jit.compile(src, inPlace), ks = jit.compile(src, staged),
           kpaged = jit.compile(src, pagedInPlace),
           ksmall = jit.compile(src, smallPages);
    DecodeData data(/*B=*/2, /*Hq=*/8, /*Hkv=*/2, /*Sq=*/1, /*S=*/700, D,
                    /*seed=*/11);
    std::vector<float> o[4], lse[4];
    for (int path = 0; path < 4; ++path)
      data.launch(path == 0   ? kd
                  : path == 1 ? ks
                  : path == 2 ? kpaged
                              : ksmall,
                  o[path], lse[path]);
    SCOPED_TRACE(std::string(kv) + " D = " + std::to_string(D));
    // Quantized codes in place also round the query rows: int8 and int4
    // to int8 per row and K group for integer dot
    // products, fp8 to bf16 for bf16 ones. That rounding is all that
    // separates them from the staged rows; the paged in-place paths agree.
    bool roundsQuery = std::string(kv) != "same";
    for (int path : {1, 2, 3}) {
      if (roundsQuery && path == 1) {
        double diff = 0, norm = 0, lseDiff = 0;
        for (size_t i = 0; i < o[0].size(); ++i)
          diff += std::abs(o[0][i] - o[1][i]), norm += std::abs(o[1][i]);
        for (size_t i = 0; i < lse[0].size(); ++i)
          lseDiff = std::max<double>(lseDiff, std::abs(lse[0][i] - lse[1][i]));
        std::printf("%s D=%lld in place vs staged: rel-L1 %.3e, lse %.3e\n",
                    kv, (long long)D, diff / norm, lseDiff);
        EXPECT_LE(diff / norm, 1e-2);
        EXPECT_GT(diff / norm, 0.0);
        EXPECT_LE(lseDiff, 2e-2);
        continue;
      }
      for (size_t i = 0; i < o[0].size(); ++i)
        ASSERT_NEAR(o[0][i], o[path][i], 2e-4) << path << " " << i;
      for (size_t i = 0; i < lse[0].size(); ++i)
        ASSERT_NEAR(lse[0][i], lse[path][i], 2e-4) << path << " " << i;
    }
    if (std::string(kv) != "same")
      continue;
    // Views with padded rows read in place: the same answer.
    const auto &[B, Hq, Hkv, Sq, S] =
        std::tuple{data.B, data.Hq, data.Hkv, data.Sq, data.S};
    int64_t stride = D + 8;
    std::vector<float> kp(B * Hkv * S * stride), vp(kp.size());
    for (int64_t r = 0; r < B * Hkv * S; ++r)
      for (int64_t d = 0; d < D; ++d) {
        kp[r * stride + d] = data.k[r * D + d];
        vp[r * stride + d] = data.v[r * D + d];
      }
    std::vector<float> q = data.q;
    std::vector<float> os(q.size(), 7.0f), ls(B * Hq * Sq, 7.0f);
    Tensors t;
    t.q = TensorRef(q.data(), DType::f32, {B, Hq, Sq, D});
    t.o = TensorRef(os.data(), DType::f32, {B, Hq, Sq, D});
    t.lse = TensorRef(ls.data(), DType::f32, {B, Hq, Sq});
    std::vector<int64_t> strides = {Hkv * S * stride, S * stride, stride, 1};
    t.k = TensorRef(kp.data(), DType::f32, {B, Hkv, S, D}, strides);
    t.v = TensorRef(vp.data(), DType::f32, {B, Hkv, S, D}, strides);
    kd.launch(t);
    for (size_t i = 0; i < os.size(); ++i)
      ASSERT_NEAR(os[i], o[0][i], 1e-6) << i;
  }
}

TEST(Numerics, PagedKVWithPerBatchLengths) {
  // Each batch's own length (seq_lens), one of them empty: every batch
  // equals a contiguous launch on its prefix of K/V, with Skv its length
  // (the bottom-right causal alignment moves with it).
  Jit jit;
  const char *src = "variant c { score(s, b, h, q, kv) = s - 0.01 * "
                    "float(Skv - kv); mask(b, h, q, kv) = kv <= q + (Skv - "
                    "Sq); }";
  for (const char *kvDtype : {"same", "int8"}) {
    Options paged;
    paged.headDim = 32;
    paged.paged = 16;
    paged.lse = true;
    paged.kvDtype = kvDtype;
    Options contiguous = paged;
    contiguous.paged = 0;
    Kernel kp = jit.compile(src, paged), kc = jit.compile(src, contiguous);
    int64_t B = 4, H = 2, Sq = 3, S = 150, D = 32;
    std::vector<int32_t> lens = {150, 1, 0, 77};
    std::mt19937 rng(7);
    std::normal_distribution<float> normal;
    std::vector<float> q(B * H * Sq * D), k(B * H * S * D), v(k.size());
    for (float *x : {q.data(), k.data(), v.data()})
      for (size_t i = 0; i < (x == q.data() ? q.size() : k.size()); ++i)
        x[i] = normal(rng);
    std::vector<float> o(q.size(), 7.0f), lse(B * H * Sq, 7.0f);
    Tensors t;
    t.q = TensorRef(q.data(), DType::f32, {B, H, Sq, D});
    t.o = TensorRef(o.data(), DType::f32, {B, H, Sq, D});
    t.lse = TensorRef(lse.data(), DType::f32, {B, H, Sq});
    KVCache cache = KVCache::build(
        kp.info(), TensorRef(k.data(), DType::f32, {B, H, S, D}),
        TensorRef(v.data(), DType::f32, {B, H, S, D}), 3, lens);
    cache.bind(t);
    kp.launch(t);
    for (int64_t b = 0; b < B; ++b) {
      SCOPED_TRACE(std::string(kvDtype) + " batch " + std::to_string(b));
      int64_t L = lens[b];
      // The prefix, quantized alone: the same codes when groups align
      // (here L is 150, 1, 0 or 77 and K groups restart at 0, so scales
      // over a shorter prefix differ: compare int8 loosely).
      std::vector<float> kb(H * L * D), vb(H * L * D);
      for (int64_t h = 0; h < H; ++h)
        for (int64_t s = 0; s < L; ++s)
          for (int64_t d = 0; d < D; ++d) {
            kb[(h * L + s) * D + d] = k[((b * H + h) * S + s) * D + d];
            vb[(h * L + s) * D + d] = v[((b * H + h) * S + s) * D + d];
          }
      std::vector<float> ob(H * Sq * D), lb(H * Sq);
      Tensors tc;
      tc.q = TensorRef(&q[b * H * Sq * D], DType::f32, {1, H, Sq, D});
      tc.o = TensorRef(ob.data(), DType::f32, {1, H, Sq, D});
      tc.lse = TensorRef(lb.data(), DType::f32, {1, H, Sq});
      KVCache one = KVCache::build(
          kc.info(), TensorRef(kb.data(), DType::f32, {1, H, L, D}),
          TensorRef(vb.data(), DType::f32, {1, H, L, D}));
      one.bind(tc);
      kc.launch(tc);
      double tol = std::string(kvDtype) == "same" ? 2e-4 : 5e-2;
      for (int64_t i = 0; i < H * Sq * D; ++i)
        ASSERT_NEAR(o[b * H * Sq * D + i], ob[i], tol) << i;
      for (int64_t i = 0; i < H * Sq; ++i) {
        if (L == 0)
          ASSERT_TRUE(std::isinf(lse[b * H * Sq + i]));
        if (std::isinf(lb[i])) {
          ASSERT_EQ(lse[b * H * Sq + i], lb[i]) << i;
          continue;
        }
        ASSERT_NEAR(lse[b * H * Sq + i], lb[i], tol) << i;
      }
    }
  }
}

} // namespace

namespace {

TEST(Numerics, SparseKVIndex) {
  // kv_index: each (b, kv head) attends to its listed positions only;
  // entries outside [0, Skv) are skipped and a repeated entry counts once
  // per listing. Masks and scores see the positions.
  const char *variants[] = {
      "variant snap { param budget: i32 = 45; tensor keep: i32[B, Hkv, "
      "budget]; kv_index = keep; mask(b, h, q, kv) = kv <= q + (Skv - Sq); }",
      "variant snap_sink { param budget: i32 = 45; tensor keep: i32[B, Hkv, "
      "budget]; kv_index = keep; sink(h) = 0.25; score(s, b, h, q, kv) = s - "
      "0.001 * float(Skv - kv); }",
      "variant snap_sig { param budget: i32 = 45; tensor keep: i32[B, Hkv, "
      "budget]; kv_index = keep; normalize = sigmoid; }",
  };
  std::mt19937 rng(11);
  for (const char *src : variants)
    for (const char *parts : {"1", "3"})
      for (int64_t paged : {0, 16})
        for (const char *kv : {"same", "int8"}) {
          Problem p = make(src);
          p.B = 2, p.Hq = 8, p.Hkv = 2, p.Sq = 2, p.Skv = 300;
          p.options.splitKv = parts;
          p.options.paged = paged;
          p.options.kvDtype = kv;
          p.options.lse = std::string(src).find("sigmoid") == std::string::npos;
          ref::RefTensor keep;
          keep.shape = {p.B, p.Hkv, 45};
          std::uniform_int_distribution<int> pos(-3, int(p.Skv) + 3);
          for (int64_t i = 0; i < p.B * p.Hkv * 45; ++i)
            keep.values.push_back(i % 9 == 0 ? keep.values.empty()
                                                   ? 0.0
                                                   : keep.values.back()
                                             : double(pos(rng)));
          p.captures["keep"] = keep;
          SCOPED_TRACE(std::string(src) + " parts " + parts + " paged " +
                       std::to_string(paged) + " " + kv);
          if (std::string(kv) == "same") {
            expectClose(p);
          } else {
            Outcome out = runAgainstReference(p);
            EXPECT_FALSE(out.hasNaN);
            EXPECT_LE(out.relL1O, 1.5e-2);
          }
        }
}

} // namespace
