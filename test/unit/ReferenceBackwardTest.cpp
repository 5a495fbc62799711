//===- ReferenceBackwardTest.cpp - the float64 reference backward ---------===//
//
// referenceBackward against central finite differences of
// referenceAttention (every element of q, k, v, every f32 param and every
// element of every f32 captured tensor), plus the documented choices at
// non-differentiable points (exact ties), which finite differences cannot
// check.
//
//===----------------------------------------------------------------------===//
#include "test/reference/ReferenceBackward.h"

#include "lib/Frontend/Eval.h"
#include "lib/Frontend/Parser.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <functional>
#include <random>
#include <stdexcept>
#include <string>

using namespace attn;
using namespace attn::ref;

namespace {

/// A parsed, checked program holding one variant.
struct Parsed {
  fe::Program program;
  const fe::Variant &v() const { return program.variants.at(0); }
};

Parsed parse(const std::string &text) {
  fe::SourceFile file{"t.attn", text};
  fe::Diagnostics diags(file);
  Parsed p{fe::parseAndCheck(file, diags)};
  if (diags.hasErrors() || p.program.variants.empty())
    throw std::runtime_error("does not check:\n" + diags.renderAll());
  return p;
}

/// Sizes and params for tensor dimensions.
class DimEnv : public fe::EvalEnv {
public:
  DimEnv(const fe::Variant &v, const RefProblem &p) : v(v), p(p) {}
  fe::Scalar index(fe::IndexVar) override { throw std::logic_error("index"); }
  fe::Scalar size(fe::SizeVar sv) override {
    int64_t values[] = {p.B, p.Hq, p.Hkv, p.Sq, p.Skv, p.D, p.Dv};
    return fe::Scalar::ofInt(int32_t(values[int(sv)]));
  }
  fe::Scalar param(int i) override {
    return v.params[i].type == fe::Type::I32
               ? fe::Scalar::ofInt(int32_t(p.params[i]))
               : fe::Scalar::ofFloat(p.params[i]);
  }
  fe::Scalar tensorElement(int, const std::vector<int32_t> &) override {
    throw std::logic_error("tensor");
  }
  fe::Scalar let(int) override { throw std::logic_error("let"); }

private:
  const fe::Variant &v;
  const RefProblem &p;
};

struct Shape {
  int64_t B = 2, Hq = 4, Hkv = 2, Sq = 5, Skv = 7, D = 8, Dv = 6;
};

/// Uniform inputs in (-1, 1); params at their defaults; f32/f16/bf16
/// tensors uniform in (-1, 1), i32 tensors in [0, 3].
RefProblem makeProblem(const fe::Variant &v, Shape s = {},
                       uint32_t seed = 1) {
  RefProblem p;
  p.B = s.B, p.Hq = s.Hq, p.Hkv = s.Hkv, p.Sq = s.Sq, p.Skv = s.Skv;
  p.D = s.D, p.Dv = s.Dv;
  std::mt19937 rng(seed);
  std::uniform_real_distribution<double> uni(-1.0, 1.0);
  auto fill = [&](std::vector<double> &x, int64_t n) {
    x.resize(n);
    for (double &e : x)
      e = uni(rng);
  };
  fill(p.q, p.B * p.Hq * p.Sq * p.D);
  fill(p.k, p.B * p.Hkv * p.Skv * p.D);
  fill(p.v, p.B * p.Hkv * p.Skv * p.Dv);
  for (const fe::ParamDecl &d : v.params)
    p.params.push_back(d.defaultValue ? *d.defaultValue : 0.0);
  DimEnv env(v, p);
  std::uniform_int_distribution<int> ints(0, 3);
  for (const fe::TensorDecl &t : v.tensors) {
    RefTensor c;
    int64_t n = 1;
    for (const fe::ExprPtr &d : t.dims) {
      c.shape.push_back(fe::evaluate(*d, v, env).i);
      n *= c.shape.back();
    }
    for (int64_t i = 0; i < n; ++i)
      c.values.push_back(t.dtype == fe::DType::I32 ? double(ints(rng))
                                                   : uni(rng));
    p.captures.push_back(std::move(c));
  }
  return p;
}

std::vector<double> makeDout(const RefProblem &p, uint32_t seed = 7) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<double> uni(-1.0, 1.0);
  std::vector<double> d(p.B * p.Hq * p.Sq * p.Dv);
  for (double &e : d)
    e = uni(rng);
  return d;
}

double loss(const fe::Variant &v, const RefProblem &p,
            const std::vector<double> &dout) {
  RefResult r = referenceAttention(v, p);
  double l = 0;
  for (size_t i = 0; i < r.o.size(); ++i)
    l += r.o[i] * dout[i];
  return l;
}

double maxAbs(const std::vector<double> &x) {
  double m = 0;
  for (double e : x)
    m = std::max(m, std::fabs(e));
  return m;
}

constexpr double kRelTol = 1e-6;

/// Every gradient element against central differences of the forward:
/// |grad - fd| <= kRelTol * max(1, max |grad| of that input). Returns the
/// worst error relative to that scale over all inputs. `nonzero` lists
/// the names (q, k, v, param or tensor names) whose gradient must not be
/// identically zero (so the check exercises them).
double expectMatchesFiniteDifferences(const fe::Variant &v, RefProblem p,
                                      const std::vector<double> &dout,
                                      const RefGradients &g,
                                      std::vector<std::string> nonzero = {}) {
  double worst = 0;
  // Elements [from, to) of x against grad.
  auto check = [&](const std::string &name, std::vector<double> &x,
                   const std::vector<double> &grad, size_t from, size_t to) {
    ASSERT_EQ(x.size(), grad.size()) << name;
    double scale = 0;
    for (size_t i = from; i < to; ++i)
      scale = std::max(scale, std::fabs(grad[i]));
    double gmax = scale;
    scale = std::max(1.0, scale);
    double err = 0;
    for (size_t i = from; i < to; ++i) {
      double x0 = x[i];
      double h = 1e-6 * std::max(1.0, std::fabs(x0));
      x[i] = x0 + h;
      double up = x[i];
      double lp = loss(v, p, dout);
      x[i] = x0 - h;
      double down = x[i];
      double lm = loss(v, p, dout);
      x[i] = x0;
      double fd = (lp - lm) / (up - down);
      EXPECT_NEAR(grad[i], fd, kRelTol * scale) << name << "[" << i << "]";
      err = std::max(err, std::fabs(grad[i] - fd));
    }
    std::printf("  d%-10s max|grad| %.3e  max|grad-fd| %.3e\n", name.c_str(),
                gmax, err);
    worst = std::max(worst, err / scale);
    if (std::find(nonzero.begin(), nonzero.end(), name) != nonzero.end())
      EXPECT_GT(gmax, 1e-6) << name << "'s gradient is all zeros";
  };
  check("q", p.q, g.dq, 0, p.q.size());
  check("k", p.k, g.dk, 0, p.k.size());
  check("v", p.v, g.dv, 0, p.v.size());
  EXPECT_EQ(g.dparams.size(), v.params.size());
  EXPECT_EQ(g.dcaptures.size(), v.tensors.size());
  for (size_t i = 0; i < v.params.size(); ++i) {
    if (v.params[i].type != fe::Type::F32)
      EXPECT_EQ(g.dparams[i], 0.0) << v.params[i].name;
    else
      check(v.params[i].name, p.params, g.dparams, i, i + 1);
  }
  for (size_t t = 0; t < v.tensors.size(); ++t) {
    EXPECT_EQ(g.dcaptures[t].shape, p.captures[t].shape) << v.tensors[t].name;
    if (v.tensors[t].dtype != fe::DType::F32) {
      EXPECT_EQ(maxAbs(g.dcaptures[t].values), 0.0) << v.tensors[t].name;
      continue;
    }
    check(v.tensors[t].name, p.captures[t].values, g.dcaptures[t].values, 0,
          p.captures[t].values.size());
  }
  std::printf("  worst |grad-fd| / max(1, max|grad|): %.3e\n", worst);
  return worst;
}

/// Parse, build the default problem (optionally adjusted), differentiate,
/// and compare with finite differences.
double checkVariant(const std::string &src,
                    const std::function<void(RefProblem &)> &adjust = {},
                    Shape shape = {}, std::vector<std::string> nonzero = {}) {
  Parsed parsed = parse(src);
  const fe::Variant &v = parsed.v();
  RefProblem p = makeProblem(v, shape);
  if (adjust)
    adjust(p);
  std::vector<double> dout = makeDout(p);
  RefGradients g = referenceBackward(v, p, dout);
  return expectMatchesFiniteDifferences(v, p, dout, g, std::move(nonzero));
}

const std::vector<std::string> kQKV = {"q", "k", "v"};

std::vector<std::string> plus(std::vector<std::string> a,
                              std::vector<std::string> b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

} // namespace

TEST(ReferenceBackward, PlainSoftmaxGqaAndValueHeadDim) {
  // Hq = 4 over Hkv = 2 (GQA), D = 8, Dv = 6.
  checkVariant("variant plain {}", {}, {}, kQKV);
  // MQA: every query head reads the one kv head.
  Shape mqa;
  mqa.Hkv = 1;
  checkVariant("variant plain {}", {}, mqa, kQKV);
}

TEST(ReferenceBackward, EveryNormalizer) {
  // (A per-row constant such as bias[h] alone would have no gradient under
  // softmax: it is shift-invariant.)
  // A score that spreads t over both signs (relu/relu2 see both sides of
  // their kink, never within a step of it for these inputs).
  for (const char *norm :
       {"softmax", "sigmoid", "relu", "relu2", "softplus", "laplace"}) {
    SCOPED_TRACE(norm);
    std::printf(" normalize = %s\n", norm);
    checkVariant(std::string("variant n {\n"
                             "  tensor bias: f32[Hq];\n"
                             "  score(s, b, h, q, kv) = 3.0 * s + 0.5 * bias[h] * float(kv - q);\n"
                             "  mask(b, h, q, kv) = kv <= q + 2;\n"
                             "  normalize = ") +
                     norm + ";\n}",
                 {}, {}, plus(kQKV, {"bias"}));
  }
}

TEST(ReferenceBackward, SinkReadingAParamAndATensor) {
  // Row q = 3 keeps nothing: o = 0 there (the sink alone in the
  // denominator), and no gradient comes from it.
  const char *src = "variant sinks {\n"
                    "  param sb: f32 = 0.3;\n"
                    "  tensor sink_logit: f32[Hq];\n"
                    "  sink(h) = 2.0 * sink_logit[h] + sb;\n"
                    "  mask(b, h, q, kv) = kv <= q + 1 && q != 3;\n"
                    "}";
  checkVariant(src, {}, {}, plus(kQKV, {"sb", "sink_logit"}));
  Parsed parsed = parse(src);
  RefProblem p = makeProblem(parsed.v());
  RefGradients g = referenceBackward(parsed.v(), p, makeDout(p));
  for (int64_t b = 0; b < p.B; ++b)
    for (int64_t h = 0; h < p.Hq; ++h)
      for (int64_t d = 0; d < p.D; ++d)
        EXPECT_EQ(g.dq[((b * p.Hq + h) * p.Sq + 3) * p.D + d], 0.0);
}

TEST(ReferenceBackward, CausalMaskAndFullyMaskedRow) {
  // q = 1 keeps nothing; keys past the diagonal get no dv.
  for (const char *norm : {"softmax", "softplus", "sigmoid"}) {
    SCOPED_TRACE(norm);
    std::printf(" normalize = %s\n", norm);
    std::string src = std::string("variant causal {\n"
                                  "  mask(b, h, q, kv) = kv <= q && q != 1;\n"
                                  "  normalize = ") +
                      norm + ";\n}";
    checkVariant(src, {}, {}, kQKV);
    Parsed parsed = parse(src);
    RefProblem p = makeProblem(parsed.v());
    RefGradients g = referenceBackward(parsed.v(), p, makeDout(p));
    for (int64_t b = 0; b < p.B; ++b) {
      for (int64_t h = 0; h < p.Hq; ++h)
        for (int64_t d = 0; d < p.D; ++d)
          EXPECT_EQ(g.dq[((b * p.Hq + h) * p.Sq + 1) * p.D + d], 0.0);
      // Keys 5 and 6 lie past every query (Sq = 5).
      for (int64_t hk = 0; hk < p.Hkv; ++hk)
        for (int64_t kv = p.Sq; kv < p.Skv; ++kv) {
          for (int64_t d = 0; d < p.Dv; ++d)
            EXPECT_EQ(g.dv[((b * p.Hkv + hk) * p.Skv + kv) * p.Dv + d], 0.0);
          for (int64_t d = 0; d < p.D; ++d)
            EXPECT_EQ(g.dk[((b * p.Hkv + hk) * p.Skv + kv) * p.D + d], 0.0);
        }
    }
  }
}

TEST(ReferenceBackward, SoftcapAlibiBiasTableLetsAndPiecewiseBuiltins) {
  // Soft-capping, a per-head ALiBi slope, a learned relative-position
  // table read at computed indices (three reads, two of them the same
  // element), a float param, lets, min/max/clamp/abs/where away from ties.
  const char *src =
      "variant rich {\n"
      "  param cap: f32 = 1.5;\n"
      "  param w: f32 = 0.7;\n"
      "  param lo: f32 = -0.12;\n"
      "  param n: i32 = 3;\n"
      "  const half = 0.5;\n"
      "  tensor slope: f32[Hq];\n"
      "  tensor rel: f32[16, Hq];\n"
      "  let dist = float(q - kv);\n"
      "  let alibi = slope[h] * abs(dist);\n"
      "  let ri = clamp(kv - q + 8, 0, 15);\n"
      "  let relb = rel[ri, h] * rel[ri, h] + half * rel[(q * 3 + kv * n) % 16, h];\n"
      "  score(s, b, h, q, kv) = cap * tanh((s + w * relb - alibi) / cap)\n"
      "      + where(kv % 2 == 0, max(s, lo), min(s, -lo))\n"
      "      + w * clamp(s, lo, 0.15) + abs(s - 0.05)\n"
      "      + (q > kv ? 0.3 * s : -0.2 * s);\n"
      "  mask(b, h, q, kv) = kv <= q + 2;\n"
      "}";
  checkVariant(src, {}, {}, plus(kQKV, {"cap", "w", "lo", "slope", "rel"}));
}

TEST(ReferenceBackward, EveryDifferentiableBuiltin) {
  // Arguments kept in each function's domain; floor/ceil/sign/int and the
  // float % have jumps, none within a step of these inputs.
  const char *src =
      "variant fns {\n"
      "  param pm: f32 = 0.7;\n"
      "  param e: f32 = 1.3;\n"
      "  score(s, b, h, q, kv) = s + 0.1 * exp(s) + 0.1 * exp2(e * s)\n"
      "      + 0.1 * log(1.0 + s * s) + 0.1 * log2(2.0 + e * s * s)\n"
      "      + 0.2 * sqrt(1.0 + s * s) + 0.2 * rsqrt(e + s * s)\n"
      "      + 0.3 * sigmoid(2.0 * s) + 0.3 * softplus(s - 0.2) + 0.2 * tanh(e * s)\n"
      "      - (-s) * 0.1 + 0.05 * floor(4.0 * s) + 0.05 * ceil(3.0 * s)\n"
      "      + 0.05 * sign(s) + 0.05 * float(int(5.0 * s)) + float(s) / e\n"
      "      + 0.2 * ((e * s) % pm) + float(kv) * 0.01;\n"
      "}";
  checkVariant(src, {}, {}, plus(kQKV, {"pm", "e"}));
}

TEST(ReferenceBackward, ScaleExpressionReadingAParam) {
  checkVariant("variant scaled {\n"
               "  param temp: f32 = 0.8;\n"
               "  let inv = rsqrt(float(D));\n"
               "  scale = temp * inv + 0.05 * temp * temp;\n"
               "  score(s, b, h, q, kv) = s * temp;\n"
               "  mask(b, h, q, kv) = kv <= q + 3;\n"
               "}",
               {}, {}, plus(kQKV, {"temp"}));
  // A constant scale: nothing to differentiate but q, k, v.
  checkVariant("variant constant { scale = 0.25; }", {}, {}, kQKV);
}

TEST(ReferenceBackward, KvIndexListingsAreConstants) {
  // Position 2 listed twice weighs twice; -1 lists nothing.
  const char *src = "variant listed {\n"
                    "  tensor keep: i32[B, Hkv, 5];\n"
                    "  kv_index = keep;\n"
                    "  tensor bias: f32[Hq];\n"
                    "  score(s, b, h, q, kv) = s + bias[h] * float(kv);\n"
                    "}";
  auto listing = [](RefProblem &p) {
    std::vector<double> slots = {0, 2, 2, 6, -1, 1, 3, 4, 4, 5};
    for (size_t i = 0; i < p.captures[0].values.size(); ++i)
      p.captures[0].values[i] = slots[i % slots.size()];
  };
  checkVariant(src, listing, {}, plus(kQKV, {"bias"}));
}

TEST(ReferenceBackward, SelectChoicesAreConstants) {
  // Blocks of 16: 2 query blocks, 3 key blocks, each query block keeping
  // one besides its diagonal. A step of 1e-6 changes no pooled-score order
  // for these inputs, so finite differences see the same choice.
  Shape s;
  s.B = 1, s.Hq = 2, s.Hkv = 1, s.Sq = 20, s.Skv = 48, s.D = 4, s.Dv = 3;
  const char *src = "variant sel {\n"
                    "  select(size = 16) = topk(1);\n"
                    "  score(s, b, h, q, kv) = 2.0 * s;\n"
                    "}";
  checkVariant(src, {}, s, kQKV);
  // The choice does drop blocks here.
  Parsed parsed = parse(src);
  std::vector<uint8_t> kept = referenceMask(parsed.v(), makeProblem(parsed.v(), s));
  EXPECT_NE(std::count(kept.begin(), kept.end(), 0), 0);
}

TEST(ReferenceBackward, IntegerParamsAndNonF32TensorsGetZeros) {
  // Each read still changes the forward; only f32 reads get gradients.
  const char *src = "variant mixed {\n"
                    "  param n: i32 = 3;\n"
                    "  param f: f32 = 0.4;\n"
                    "  tensor hb: f16[Hq];\n"
                    "  tensor bb: bf16[Hq];\n"
                    "  tensor ib: i32[Hq];\n"
                    "  tensor fb: f32[Hq];\n"
                    "  score(s, b, h, q, kv) = s + hb[h] + bb[h] * s\n"
                    "      + float(ib[h] * n) * 0.1 + fb[h] * f * float(kv);\n"
                    "}";
  checkVariant(src, {}, {}, plus(kQKV, {"f", "fb"}));
  Parsed parsed = parse(src);
  RefProblem p = makeProblem(parsed.v());
  RefGradients g = referenceBackward(parsed.v(), p, makeDout(p));
  ASSERT_EQ(g.dparams.size(), 2u);
  EXPECT_EQ(g.dparams[0], 0.0);
  EXPECT_NE(g.dparams[1], 0.0);
  ASSERT_EQ(g.dcaptures.size(), 4u);
  for (int t = 0; t < 3; ++t) {
    EXPECT_EQ(g.dcaptures[t].shape, p.captures[t].shape);
    EXPECT_EQ(maxAbs(g.dcaptures[t].values), 0.0) << t;
  }
  EXPECT_GT(maxAbs(g.dcaptures[3].values), 0.0);
}

namespace {

/// Backward of `src` with q = 0, so that every s is exactly 0.
RefGradients atZeroScores(const std::string &src, RefProblem *out = nullptr) {
  Parsed parsed = parse(src);
  RefProblem p = makeProblem(parsed.v());
  std::fill(p.q.begin(), p.q.end(), 0.0);
  if (out)
    *out = p;
  return referenceBackward(parsed.v(), p, makeDout(p));
}

/// got == factor * base elementwise (to 4 ulps, or within tol if given).
void expectScaled(const std::vector<double> &got,
                  const std::vector<double> &base, double factor,
                  double tol = 0) {
  ASSERT_EQ(got.size(), base.size());
  EXPECT_GT(maxAbs(base), 1e-3);
  for (size_t i = 0; i < got.size(); ++i) {
    if (tol > 0)
      EXPECT_NEAR(got[i], factor * base[i], tol) << i;
    else
      EXPECT_DOUBLE_EQ(got[i], factor * base[i]) << i;
  }
}

} // namespace

TEST(ReferenceBackward, TiesFollowTheDocumentedRules) {
  // With q = 0 every s is 0 and every t equals the identity score's, so
  // dL/dt is the same; dq = (dt/ds) * dL/dt * scale * k shows dt/ds, and
  // `off`'s gradient is the sum of dL/dt * (kv + 1).
  // off and lo enter with weight kv + 1 (a per-row constant would have no
  // gradient under softmax).
  const char *base = "variant id { param off: f32 = 0.0; "
                     "score(s, b, h, q, kv) = s + off * float(kv + 1); }";
  RefGradients id = atZeroScores(base);
  EXPECT_GT(std::fabs(id.dparams[0]), 1e-3);
  struct Case {
    const char *score;
    double ds;  // the derivative the rules give at s = 0
    double dlo; // the share of the second argument (param lo = 0)
  };
  for (Case c : {Case{"max(s, lo)", 0.5, 0.5}, Case{"min(s, lo)", 0.5, 0.5},
                 Case{"max(lo, s)", 0.5, 0.5},
                 // clamp at x == lo: max's tie halves, then min(0, 1) is 0's
                 Case{"clamp(s, lo, 1.0)", 0.5, 0.5},
                 // clamp at x == hi: max(0, -1) is x's, then min's tie halves
                 Case{"clamp(s, -1.0, lo)", 0.5, 0.5},
                 // x == lo == hi: a half of a half to x
                 Case{"clamp(s, lo, lo)", 0.25, 0.75},
                 Case{"abs(s) + lo", 0.0, 1.0},
                 Case{"s * sign(s) + lo", 0.0, 1.0},
                 Case{"where(s >= 0.0, s, lo)", 1.0, 0.0},
                 Case{"s > 0.0 ? lo : s", 1.0, 0.0}}) {
    SCOPED_TRACE(c.score);
    // "lo" stands for l * (kv + 1).
    std::string score = c.score;
    for (size_t at = 0; (at = score.find("lo", at)) != std::string::npos;) {
      std::string weighted = "(l * float(kv + 1))";
      score.replace(at, 2, weighted);
      at += weighted.size();
    }
    std::string src = std::string("variant tie { param l: f32 = 0.0; "
                                  "score(s, b, h, q, kv) = ") +
                      score + "; }";
    RefGradients g = atZeroScores(src);
    expectScaled(g.dq, id.dq, c.ds);
    EXPECT_DOUBLE_EQ(g.dparams[0], c.dlo * id.dparams[0]);
    for (double x : g.dk) // q = 0: dk = dt * scale * q
      EXPECT_EQ(x, 0.0);
    expectScaled(g.dv, id.dv, 1.0); // same probabilities
  }
  // relu and relu2 take the derivative 0 at 0: with every t = 0, p = 0 and
  // nothing flows.
  for (const char *norm : {"relu", "relu2"}) {
    SCOPED_TRACE(norm);
    RefGradients g =
        atZeroScores(std::string("variant r { normalize = ") + norm + "; }");
    EXPECT_EQ(maxAbs(g.dq), 0.0);
    EXPECT_EQ(maxAbs(g.dk), 0.0);
    EXPECT_EQ(maxAbs(g.dv), 0.0);
  }
  // The float %: d/db = -floor(a / b), here at a = -0.3 (floor = -1).
  {
    RefProblem p;
    // a = s - 0.3 * (kv + 1) over b2 = 1.7: floor(a / b2) = -1, every t
    // is a + 1.7, and d/db2 = -floor(a / b2) * (kv + 1) = kv + 1.
    RefGradients g = atZeroScores(
        "variant m { param b2: f32 = 1.7; score(s, b, h, q, kv) = "
        "(s - 0.3 * float(kv + 1)) % (b2 * float(kv + 1)); }",
        &p);
    RefGradients shifted = atZeroScores(
        "variant id2 { param off: f32 = 0.0; score(s, b, h, q, kv) = "
        "s + (1.4 + off) * float(kv + 1); }");
    expectScaled(g.dq, shifted.dq, 1.0, 1e-13);
    EXPECT_NEAR(g.dparams[0], shifted.dparams[0], 1e-13);
  }
}

TEST(ReferenceBackward, DeterministicAndChecksDout) {
  Parsed parsed = parse("variant d { tensor bias: f32[16, Hq];\n"
                        "  score(s, b, h, q, kv) = s + bias[(q + kv) % 16, h]"
                        " * bias[(q + 2 * kv) % 16, h];\n"
                        "  normalize = softplus; }");
  RefProblem p = makeProblem(parsed.v());
  std::vector<double> dout = makeDout(p);
  RefGradients a = referenceBackward(parsed.v(), p, dout);
  RefGradients b = referenceBackward(parsed.v(), p, dout);
  EXPECT_EQ(a.dq, b.dq);
  EXPECT_EQ(a.dk, b.dk);
  EXPECT_EQ(a.dv, b.dv);
  EXPECT_EQ(a.dcaptures[0].values, b.dcaptures[0].values);
  dout.pop_back();
  EXPECT_THROW(referenceBackward(parsed.v(), p, dout), std::invalid_argument);
}
