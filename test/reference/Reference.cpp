//===- Reference.cpp - float64 reference attention ------------------------===//
#include "test/reference/Reference.h"
#include "test/reference/PointNames.h"

#include "lib/Frontend/Eval.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numbers>
#include <optional>

namespace attn::ref {
namespace {

using fe::IndexVar;
using fe::Scalar;
using fe::SizeVar;

/// Names at one (b, h, q, kv) point; lets are evaluated once per point.
class PointEnv : public PointNames {
public:
  PointEnv(const fe::Variant &v, const RefProblem &p) : PointNames(v, p) {
    lets.resize(v.lets.size());
  }
  void at(int64_t b, int64_t h, int64_t q, int64_t kv, double s) {
    PointNames::at(b, h, q, kv, s);
    std::fill(lets.begin(), lets.end(), std::nullopt);
  }
  Scalar let(int i) override {
    if (!lets[i])
      lets[i] = fe::evaluate(*v.lets[i].expr, v, *this);
    return *lets[i];
  }

private:
  std::vector<std::optional<Scalar>> lets;
};

double asDouble(Scalar s, fe::Type t) { return fe::promote(s, t).asDouble(); }

double softplus(double x) {
  return std::max(x, 0.0) + std::log1p(std::exp(-std::fabs(x)));
}

/// Mega's Laplace attention function (Ma et al., ICLR 2023), spelled as the
/// paper does: the normal CDF with mean sqrt(1/2), deviation sqrt(1/(4 pi)).
double laplace(double x) {
  const double mu = std::sqrt(0.5), sigma = std::sqrt(0.25 / std::numbers::pi);
  return 0.5 * (1.0 + std::erf((x - mu) / (sigma * std::sqrt(2.0))));
}

} // namespace

/// DSL.md `select`: which key blocks each query block keeps,
/// [B][Hq][query blocks][key blocks].
std::vector<uint8_t> selectedBlocks(const fe::Variant &v, const RefProblem &p,
                                    PointEnv &env, double scale) {
  const fe::SelectDecl &sel = *v.select;
  int64_t N = sel.size;
  int64_t nqb = (p.Sq + N - 1) / N, nkb = (p.Skv + N - 1) / N;
  std::vector<uint8_t> kept(p.B * p.Hq * nqb * nkb, 0);
  env.at(0, 0, 0, 0, 0);
  double arg = fe::promote(fe::evaluate(*sel.argument, v, env),
                           fe::Type::F32).asDouble();
  int64_t group = p.Hq / p.Hkv;
  for (int64_t b = 0; b < p.B; ++b)
    for (int64_t h = 0; h < p.Hq; ++h)
      for (int64_t qb = 0; qb < nqb; ++qb) {
        int64_t qs = qb * N, qe = std::min(qs + N, p.Sq);
        std::vector<double> pq(p.D, 0.0);
        for (int64_t q = qs; q < qe; ++q)
          for (int64_t d = 0; d < p.D; ++d)
            pq[d] += p.q[((b * p.Hq + h) * p.Sq + q) * p.D + d] / (qe - qs);
        std::vector<double> score(nkb, -INFINITY);
        std::vector<char> eligible(nkb, 0);
        for (int64_t kb = 0; kb < nkb; ++kb) {
          int64_t ks = kb * N, ke = std::min(ks + N, p.Skv);
          bool any = !v.mask;
          for (int64_t q = qs; q < qe && !any; ++q)
            for (int64_t kv = ks; kv < ke && !any; ++kv) {
              env.at(b, h, q, kv, 0.0);
              any = fe::evaluate(*v.mask->body, v, env).b;
            }
          eligible[kb] = any;
          if (!any)
            continue;
          double dot = 0;
          for (int64_t d = 0; d < p.D; ++d) {
            double pk = 0;
            for (int64_t kv = ks; kv < ke; ++kv)
              pk += p.k[((b * p.Hkv + h / group) * p.Skv + kv) * p.D + d];
            dot += pq[d] * pk / (ke - ks);
          }
          score[kb] = dot * scale;
        }
        uint8_t *row = &kept[((b * p.Hq + h) * nqb + qb) * nkb];
        // Best remaining eligible block, lowest index on ties.
        auto best = [&]() -> int64_t {
          int64_t at = -1;
          for (int64_t kb = 0; kb < nkb; ++kb)
            if (eligible[kb] && !row[kb] && (at < 0 || score[kb] > score[at]))
              at = kb;
          return at;
        };
        if (sel.kind == fe::SelectKind::TopK) {
          int64_t k = static_cast<int64_t>(std::clamp(arg, 0.0, 1e9));
          for (int64_t i = 0; i < std::min(k, nkb); ++i)
            if (int64_t at = best(); at >= 0)
              row[at] = 1;
        } else if (sel.kind == fe::SelectKind::Mass) {
          double m = -INFINITY, total = 0;
          for (int64_t kb = 0; kb < nkb; ++kb)
            if (eligible[kb])
              m = std::max(m, score[kb]);
          if (m == -INFINITY)
            m = 0;
          for (int64_t kb = 0; kb < nkb; ++kb)
            if (eligible[kb])
              total += std::exp(score[kb] - m);
          double cum = 0;
          while (cum < arg) {
            int64_t at = best();
            if (at < 0)
              break;
            row[at] = 1;
            cum += std::exp(score[at] - m) / total;
          }
        } else {
          for (int64_t kb = 0; kb < nkb; ++kb)
            row[kb] = eligible[kb] && score[kb] > arg;
        }
        if (nkb > 0)
          row[std::min(std::max<int64_t>(0, qe - 1 + p.Skv - p.Sq) / N,
                       nkb - 1)] = 1;
      }
  return kept;
}

double scaleOf(const fe::Variant &v, const RefProblem &p, PointEnv &env) {
  if (!v.scale)
    return 1.0 / std::sqrt(double(p.D));
  env.at(0, 0, 0, 0, 0);
  return asDouble(fe::evaluate(*v.scale, v, env), fe::Type::F32);
}

RefResult referenceAttention(const fe::Variant &v, const RefProblem &p) {
  const double inf = std::numeric_limits<double>::infinity();
  RefResult r;
  r.o.assign(p.B * p.Hq * p.Sq * p.Dv, 0.0);
  r.lse.assign(p.B * p.Hq * p.Sq, -inf);
  PointEnv env(v, p);
  double scale = scaleOf(v, p, env);
  int64_t group = p.Hq / p.Hkv;
  std::vector<uint8_t> selected;
  int64_t nqb = 0, nkb = 0;
  if (v.select) {
    selected = selectedBlocks(v, p, env, scale);
    nqb = (p.Sq + v.select->size - 1) / v.select->size;
    nkb = (p.Skv + v.select->size - 1) / v.select->size;
  }
  std::vector<double> t(p.Skv);
  std::vector<char> keep(p.Skv);
  // kv_index multiplicities (listedPositions).
  std::vector<double> listed;
  for (int64_t b = 0; b < p.B; ++b)
    for (int64_t h = 0; h < p.Hq; ++h) {
      int64_t hk = h / group;
      listedPositions(v, p, b, hk, listed);
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
          if (v.select)
            k = k && selected[((b * p.Hq + h) * nqb + qi / v.select->size) *
                                  nkb +
                              kv / v.select->size];
          // A -inf score is a masked entry (DSL.md).
          if (s == -inf || listed[kv] == 0)
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
        case fe::NormalizeKind::Laplace:
          for (int64_t kv = 0; kv < p.Skv; ++kv)
            if (keep[kv])
              pr[kv] = laplace(t[kv]);
          break;
        }
        if (v.kvIndexTensor >= 0) {
          // Repeated listings weigh in once each, sums included.
          double scaleSum = 0;
          for (int64_t kv = 0; kv < p.Skv; ++kv) {
            scaleSum += pr[kv] * (listed[kv] - 1.0);
            pr[kv] *= listed[kv];
          }
          if (v.hasRowSum() && denom > 0) {
            denom += scaleSum;
            double mx = lse - std::log(denom - scaleSum);
            lse = mx + std::log(denom);
          }
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
  if (!v.mask && !v.select)
    return keep;
  PointEnv env(v, p);
  std::vector<uint8_t> selected;
  int64_t N = v.select ? v.select->size : 1;
  int64_t nqb = (p.Sq + N - 1) / N, nkb = (p.Skv + N - 1) / N;
  if (v.select)
    selected = selectedBlocks(v, p, env, scaleOf(v, p, env));
  size_t i = 0;
  for (int64_t b = 0; b < p.B; ++b)
    for (int64_t h = 0; h < p.Hq; ++h)
      for (int64_t q = 0; q < p.Sq; ++q)
        for (int64_t kv = 0; kv < p.Skv; ++kv, ++i) {
          env.at(b, h, q, kv, 0.0);
          if (v.mask)
            keep[i] = fe::evaluate(*v.mask->body, v, env).b;
          if (v.select)
            keep[i] = keep[i] &&
                      selected[((b * p.Hq + h) * nqb + q / N) * nkb + kv / N];
        }
  return keep;
}

} // namespace attn::ref
