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
