//===- Reference.cpp - float64 reference attention ------------------------===//
#include "test/reference/Reference.h"

#include "lib/Frontend/Eval.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <optional>

namespace attn::ref {
namespace {

using fe::IndexVar;
using fe::Scalar;
using fe::SizeVar;

/// Names at one (b, h, q, kv) point; lets are evaluated once per point.
class PointEnv : public fe::EvalEnv {
public:
  PointEnv(const fe::Variant &v, const RefProblem &p) : v(v), p(p) {
    lets.resize(v.lets.size());
  }
  void at(int64_t b, int64_t h, int64_t q, int64_t kv, double s) {
    idx[0] = s;
    idx[1] = double(b);
    idx[2] = double(h);
    idx[3] = double(q);
    idx[4] = double(kv);
    idx[5] = double(h / (p.Hq / p.Hkv));
    std::fill(lets.begin(), lets.end(), std::nullopt);
  }
  Scalar index(IndexVar iv) override {
    if (iv == IndexVar::S)
      return Scalar::ofFloat(idx[0]);
    return Scalar::ofInt(static_cast<int32_t>(idx[static_cast<int>(iv)]));
  }
  Scalar size(SizeVar sv) override {
    int64_t values[] = {p.B, p.Hq, p.Hkv, p.Sq, p.Skv, p.D, p.Dv};
    return Scalar::ofInt(static_cast<int32_t>(values[static_cast<int>(sv)]));
  }
  Scalar param(int i) override {
    return v.params[i].type == fe::Type::I32
               ? Scalar::ofInt(static_cast<int32_t>(p.params[i]))
               : Scalar::ofFloat(p.params[i]);
  }
  Scalar tensorElement(int t, const std::vector<int32_t> &indices) override {
    const RefTensor &c = p.captures[t];
    int64_t flat = 0;
    for (size_t d = 0; d < indices.size(); ++d) {
      // Same convention as the kernels: indices clamp into range.
      int64_t i = std::clamp<int64_t>(indices[d], 0, c.shape[d] - 1);
      flat = flat * c.shape[d] + i;
    }
    double x = c.values[flat];
    return v.tensors[t].valueType() == fe::Type::I32
               ? Scalar::ofInt(static_cast<int32_t>(x))
               : Scalar::ofFloat(x);
  }
  Scalar let(int i) override {
    if (!lets[i])
      lets[i] = fe::evaluate(*v.lets[i].expr, v, *this);
    return *lets[i];
  }

private:
  const fe::Variant &v;
  const RefProblem &p;
  double idx[6] = {};
  std::vector<std::optional<Scalar>> lets;
};

double asDouble(Scalar s, fe::Type t) { return fe::promote(s, t).asDouble(); }

double softplus(double x) {
  return std::max(x, 0.0) + std::log1p(std::exp(-std::fabs(x)));
}

} // namespace

RefResult referenceAttention(const fe::Variant &v, const RefProblem &p) {
  const double inf = std::numeric_limits<double>::infinity();
  RefResult r;
  r.o.assign(p.B * p.Hq * p.Sq * p.Dv, 0.0);
  r.lse.assign(p.B * p.Hq * p.Sq, -inf);
  PointEnv env(v, p);

  double scale = 1.0 / std::sqrt(double(p.D));
  if (v.scale) {
    env.at(0, 0, 0, 0, 0);
    scale = asDouble(fe::evaluate(*v.scale, v, env), fe::Type::F32);
  }
  int64_t group = p.Hq / p.Hkv;
  std::vector<double> t(p.Skv);
  std::vector<char> keep(p.Skv);
  for (int64_t b = 0; b < p.B; ++b)
    for (int64_t h = 0; h < p.Hq; ++h) {
      int64_t hk = h / group;
      double sink = -inf;
      if (v.sink) {
        env.at(b, h, 0, 0, 0);
        sink = asDouble(fe::evaluate(*v.sink->body, v, env), fe::Type::F32);
      }
      for (int64_t qi = 0; qi < p.Sq; ++qi) {
        const double *qrow = &p.q[((b * p.Hq + h) * p.Sq + qi) * p.D];
        for (int64_t kv = 0; kv < p.Skv; ++kv) {
          const double *krow = &p.k[((b * p.Hkv + hk) * p.Skv + kv) * p.D];
          double s = 0;
          for (int64_t d = 0; d < p.D; ++d)
            s += qrow[d] * krow[d];
          s *= scale;
          env.at(b, h, qi, kv, s);
          if (v.score)
            s = asDouble(fe::evaluate(*v.score->body, v, env), fe::Type::F32);
          bool k = true;
          if (v.mask)
            k = fe::evaluate(*v.mask->body, v, env).b;
          // A -inf score is a masked entry (DSL.md).
          if (s == -inf)
            k = false;
          keep[kv] = k;
          t[kv] = s;
        }
        // Probabilities per the normalizer.
        std::vector<double> pr(p.Skv, 0.0);
        double denom = 1.0;
        double lse = -inf;
        switch (v.normalize) {
        case fe::NormalizeKind::Softmax: {
          double mx = sink;
          for (int64_t kv = 0; kv < p.Skv; ++kv)
            if (keep[kv])
              mx = std::max(mx, t[kv]);
          if (mx == -inf) {
            denom = 0;
            break;
          }
          double sum = v.sink ? std::exp(sink - mx) : 0.0;
          for (int64_t kv = 0; kv < p.Skv; ++kv)
            if (keep[kv]) {
              pr[kv] = std::exp(t[kv] - mx);
              sum += pr[kv];
            }
          denom = sum;
          lse = sum > 0 ? mx + std::log(sum) : -inf;
          break;
        }
        case fe::NormalizeKind::Softplus: {
          double sum = 0;
          for (int64_t kv = 0; kv < p.Skv; ++kv)
            if (keep[kv]) {
              pr[kv] = softplus(t[kv]);
              sum += pr[kv];
            }
          denom = sum;
          lse = sum > 0 ? std::log(sum) : -inf;
          break;
        }
        case fe::NormalizeKind::Sigmoid:
          for (int64_t kv = 0; kv < p.Skv; ++kv)
            if (keep[kv])
              pr[kv] = 1.0 / (1.0 + std::exp(-t[kv]));
          break;
        case fe::NormalizeKind::Relu:
          for (int64_t kv = 0; kv < p.Skv; ++kv)
            if (keep[kv])
              pr[kv] = std::max(t[kv], 0.0);
          break;
        case fe::NormalizeKind::Relu2:
          for (int64_t kv = 0; kv < p.Skv; ++kv)
            if (keep[kv])
              pr[kv] = std::max(t[kv], 0.0) * std::max(t[kv], 0.0);
          break;
        }
        double *orow = &r.o[((b * p.Hq + h) * p.Sq + qi) * p.Dv];
        r.lse[(b * p.Hq + h) * p.Sq + qi] = lse;
        if (denom == 0)
          continue; // every key masked: o = 0, lse = -inf
        for (int64_t kv = 0; kv < p.Skv; ++kv) {
          if (pr[kv] == 0)
            continue;
          const double *vrow = &p.v[((b * p.Hkv + hk) * p.Skv + kv) * p.Dv];
          double w = pr[kv] / denom;
          for (int64_t d = 0; d < p.Dv; ++d)
            orow[d] += w * vrow[d];
        }
      }
    }
  return r;
}

std::vector<uint8_t> referenceMask(const fe::Variant &v, const RefProblem &p) {
  std::vector<uint8_t> keep(p.B * p.Hq * p.Sq * p.Skv, 1);
  if (!v.mask)
    return keep;
  PointEnv env(v, p);
  size_t i = 0;
  for (int64_t b = 0; b < p.B; ++b)
    for (int64_t h = 0; h < p.Hq; ++h)
      for (int64_t q = 0; q < p.Sq; ++q)
        for (int64_t kv = 0; kv < p.Skv; ++kv, ++i) {
          env.at(b, h, q, kv, 0.0);
          keep[i] = fe::evaluate(*v.mask->body, v, env).b;
        }
  return keep;
}

} // namespace attn::ref
