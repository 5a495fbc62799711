//===- NumericsTest.cpp - language features against the reference ---------===//
#include "test/support/Harness.h"

#include <gtest/gtest.h>

#include <cmath>

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
  for (const char *norm : {"sigmoid", "relu", "relu2", "softplus"}) {
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
  };
  for (const char *src : variants)
    for (const char *parts : {"1", "2", "3", "7", "64"})
      for (auto [hq, sq] : {std::pair{8, 1}, {2, 37}}) {
        Problem p = make(src);
        p.Hq = hq, p.Hkv = 2, p.Sq = sq, p.Skv = 301, p.B = 2;
        p.options.blockKV = 32;
        p.options.splitKv = parts;
        p.options.lse = std::string(src).find("sigmoid") == std::string::npos;
        SCOPED_TRACE(std::string(src) + " parts=" + parts + " hq=" +
                     std::to_string(hq));
        expectClose(p);
      }
}

} // namespace
