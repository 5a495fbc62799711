//===- ReferenceBackward.cpp - float64 reference backward -----------------===//
//
// Recomputes what referenceAttention does, entry by entry, recording each f32
// operation of the score, sink and scale expressions on a tape (one tape per
// evaluation point), then runs the chain rule backwards through the
// normalizer, the score tapes, s = scale * q.k, the sink tapes and the scale
// tape. Derivative rules: docs/numerics.md "Reference backward".
//
//===----------------------------------------------------------------------===//
#include "test/reference/ReferenceBackward.h"
#include "test/reference/PointNames.h"

#include "lib/Frontend/Eval.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numbers>
#include <optional>
#include <stdexcept>

namespace attn::ref {
namespace {

using fe::Builtin;
using fe::Expr;
using fe::ExprKind;
using fe::IndexVar;
using fe::Scalar;
using fe::SizeVar;
using fe::Type;

constexpr double kLn2 = 0.69314718055994530942;

/// One recorded step: an operation with up to two differentiable inputs, or
/// a leaf (the score's `s`, an f32 param, an element of an f32 tensor).
struct Node {
  enum Kind { Op, S, Param, Tensor } kind = Op;
  int in[2] = {-1, -1};
  double d[2] = {0, 0}; // partial derivatives with respect to in[]
  int index = 0;        // param / tensor
  int64_t flat = 0;     // tensor element
};

/// A value and the tape node that produced it (-1: a constant, i.e. nothing
/// differentiable flows into it).
struct Val {
  Scalar value;
  int node = -1;
};

double softplus(double x) {
  return std::max(x, 0.0) + std::log1p(std::exp(-std::fabs(x)));
}
double sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }

/// Mega's Laplace attention function (the normal CDF with mean sqrt(1/2),
/// deviation sqrt(1/(4 pi))) and its derivative, the normal density.
const double kLaplaceMu = std::sqrt(0.5),
             kLaplaceSigma = std::sqrt(0.25 / std::numbers::pi);
double laplace(double x) {
  return 0.5 *
         (1.0 + std::erf((x - kLaplaceMu) / (kLaplaceSigma * std::sqrt(2.0))));
}
double laplaceDerivative(double x) {
  double z = (x - kLaplaceMu) / kLaplaceSigma;
  return std::exp(-0.5 * z * z) /
         (kLaplaceSigma * std::sqrt(2.0 * std::numbers::pi));
}

/// Evaluates expressions at one (b, h, q, kv, s) point with the same values
/// as fe::evaluate (and the reference's PointEnv), recording f32 operations.
/// Non-f32 subexpressions (integers, booleans) carry no gradient and are
/// evaluated by fe::evaluate through this environment.
class TapeEval : public PointNames {
public:
  TapeEval(const fe::Variant &v, const RefProblem &p) : PointNames(v, p) {
    lets.resize(v.lets.size());
  }

  void at(int64_t b, int64_t h, int64_t q, int64_t kv, double s) {
    PointNames::at(b, h, q, kv, s);
    std::fill(lets.begin(), lets.end(), std::nullopt);
    tape.clear();
  }

  /// The expression's value as f32 (as the reference promotes it) and its
  /// node.
  Val run(const Expr &e) {
    Val r = eval(e);
    r.value = fe::promote(r.value, Type::F32);
    return r;
  }

  /// Propagates `seed` from `root` back to the leaves: returns d/ds and adds
  /// the params' and tensors' parts to `dparams` and `dcaptures`. Nodes are
  /// recorded after their inputs, so one reverse sweep suffices. A node
  /// whose adjoint is zero passes nothing on (so an infinite partial behind
  /// a zero adjoint gives 0, not NaN).
  double backprop(int root, double seed, std::vector<double> &dparams,
                  std::vector<RefTensor> &dcaptures) {
    if (root < 0 || seed == 0)
      return 0;
    adj.assign(tape.size(), 0.0);
    adj[root] = seed;
    double ds = 0;
    for (int i = root; i >= 0; --i) {
      double a = adj[i];
      if (a == 0)
        continue;
      const Node &n = tape[i];
      switch (n.kind) {
      case Node::S:
        ds += a;
        break;
      case Node::Param:
        dparams[n.index] += a;
        break;
      case Node::Tensor:
        dcaptures[n.index].values[n.flat] += a;
        break;
      case Node::Op:
        for (int k = 0; k < 2; ++k)
          if (n.in[k] >= 0)
            adj[n.in[k]] += a * n.d[k];
        break;
      }
    }
    return ds;
  }

  // fe::EvalEnv (the other names come from PointNames), for the non-f32
  // subexpressions.
  Scalar let(int i) override { return letVal(i).value; }

private:

  Val letVal(int i) {
    if (!lets[i])
      lets[i] = eval(*v.lets[i].expr);
    return *lets[i];
  }

  int leaf(Node::Kind kind, int index = 0, int64_t flat = 0) {
    Node n;
    n.kind = kind;
    n.index = index;
    n.flat = flat;
    tape.push_back(n);
    return int(tape.size()) - 1;
  }

  /// An operation node; inputs that are constants are dropped, and an
  /// operation on constants only is a constant.
  int op(int a, double da, int b = -1, double db = 0) {
    if (a < 0 && b < 0)
      return -1;
    Node n;
    if (a >= 0)
      n.in[0] = a, n.d[0] = da;
    if (b >= 0)
      n.in[1] = b, n.d[1] = db;
    tape.push_back(n);
    return int(tape.size()) - 1;
  }

  static Val num(double x, int node) { return {Scalar::ofFloat(x), node}; }

  /// min (isMax false) or max of two floats: the whole gradient to the
  /// smaller (larger) argument, half to each on a tie; a NaN operand gives
  /// NaN and no gradient.
  Val minMax(bool isMax, double a, int na, double b, int nb) {
    if (std::isnan(a) || std::isnan(b))
      return num(NAN, -1);
    double da, db;
    if (a == b)
      da = db = 0.5;
    else if ((a > b) == isMax)
      da = 1, db = 0;
    else
      da = 0, db = 1;
    return num(isMax ? std::max(a, b) : std::min(a, b), op(na, da, nb, db));
  }

  Val eval(const Expr &e) {
    if (e.type != Type::F32)
      return {fe::evaluate(e, v, *this), -1};
    switch (e.kind) {
    case ExprKind::IntLit:
    case ExprKind::BoolLit:
      break; // not f32
    case ExprKind::FloatLit:
      return num(e.floatValue, -1);
    case ExprKind::Name:
      switch (e.nameKind) {
      case fe::NameKind::Index: // only `s` is f32
        return num(idx[0], leaf(Node::S));
      case fe::NameKind::Param:
        return num(p.params[e.ref], v.params[e.ref].type == Type::F32
                                        ? leaf(Node::Param, e.ref)
                                        : -1);
      case fe::NameKind::Const:
        return num(v.consts[e.ref].value, -1);
      case fe::NameKind::Let:
        return letVal(e.ref);
      default:
        break;
      }
      break;
    case ExprKind::Index: {
      std::vector<int32_t> indices;
      for (const fe::ExprPtr &a : e.args)
        indices.push_back(fe::evaluate(*a, v, *this).i);
      int64_t flat = flatIndex(e.ref, indices);
      double x = p.captures[e.ref].values[flat];
      // Only f32 tensors get gradients (f16/bf16 read as f32 constants).
      bool grad = v.tensors[e.ref].dtype == fe::DType::F32;
      return num(x, grad ? leaf(Node::Tensor, e.ref, flat) : -1);
    }
    case ExprKind::Unary: {
      // Negation (`!` is boolean, handled by fe::evaluate).
      Val x = eval(*e.args[0]);
      return num(-x.value.asDouble(), op(x.node, -1.0));
    }
    case ExprKind::Binary: {
      // Comparisons and && || are booleans: only arithmetic is f32 here.
      Val l = eval(*e.args[0]), r = eval(*e.args[1]);
      double a = l.value.asDouble(), b = r.value.asDouble();
      switch (e.binaryOp) {
      case fe::BinaryOp::Add:
        return num(a + b, op(l.node, 1.0, r.node, 1.0));
      case fe::BinaryOp::Sub:
        return num(a - b, op(l.node, 1.0, r.node, -1.0));
      case fe::BinaryOp::Mul:
        return num(a * b, op(l.node, b, r.node, a));
      case fe::BinaryOp::Div:
        return num(a / b, op(l.node, 1.0 / b, r.node, -a / (b * b)));
      case fe::BinaryOp::Mod: {
        // Python semantics: a - floor(a / b) * b.
        double fl = std::floor(a / b);
        return num(a - fl * b, op(l.node, 1.0, r.node, -fl));
      }
      default:
        break;
      }
      break;
    }
    case ExprKind::Ternary: {
      Scalar c = fe::evaluate(*e.args[0], v, *this);
      Val a = eval(*e.args[1]), b = eval(*e.args[2]);
      const Val &chosen = c.b ? a : b; // the gradient goes there only
      return num(chosen.value.asDouble(), op(chosen.node, 1.0));
    }
    case ExprKind::Call:
      return evalCall(e);
    }
    throw std::logic_error("referenceBackward: unexpected f32 expression");
  }

  Val evalCall(const Expr &e) {
    std::vector<Val> a;
    for (const fe::ExprPtr &arg : e.args)
      a.push_back(eval(*arg));
    auto f = [&](unsigned k) { return a[k].value.asDouble(); };
    auto n = [&](unsigned k) { return a[k].node; };
    switch (e.builtin) {
    case Builtin::Exp: {
      double y = std::exp(f(0));
      return num(y, op(n(0), y));
    }
    case Builtin::Exp2: {
      double y = std::exp2(f(0));
      return num(y, op(n(0), kLn2 * y));
    }
    case Builtin::Log:
      return num(std::log(f(0)), op(n(0), 1.0 / f(0)));
    case Builtin::Log2:
      return num(std::log2(f(0)), op(n(0), 1.0 / (f(0) * kLn2)));
    case Builtin::Sqrt: {
      double y = std::sqrt(f(0));
      return num(y, op(n(0), 0.5 / y));
    }
    case Builtin::Rsqrt:
      return num(1.0 / std::sqrt(f(0)), op(n(0), -0.5 * std::pow(f(0), -1.5)));
    case Builtin::Tanh: {
      double y = std::tanh(f(0));
      return num(y, op(n(0), 1.0 - y * y));
    }
    case Builtin::Sigmoid: {
      double y = 1.0 / (1.0 + std::exp(-f(0)));
      return num(y, op(n(0), y * (1.0 - y)));
    }
    case Builtin::Softplus:
      return num(softplus(f(0)), op(n(0), sigmoid(f(0))));
    case Builtin::Abs: {
      double x = f(0);
      return num(std::fabs(x), op(n(0), x > 0 ? 1.0 : x < 0 ? -1.0 : 0.0));
    }
    case Builtin::Min:
      return minMax(false, f(0), n(0), f(1), n(1));
    case Builtin::Max:
      return minMax(true, f(0), n(0), f(1), n(1));
    case Builtin::Floor:
      return num(std::floor(f(0)), -1);
    case Builtin::Ceil:
      return num(std::ceil(f(0)), -1);
    case Builtin::Sign: {
      double x = f(0);
      return num(x > 0 ? 1.0 : x < 0 ? -1.0 : x, -1);
    }
    case Builtin::Clamp: {
      // max(x, lo), then min(., hi), with min/max's rules; the value is
      // exactly fe::evaluate's.
      double x = f(0), lo = f(1), hi = f(2);
      Val m = minMax(true, x, n(0), lo, n(1));
      Val r = minMax(false, m.value.asDouble(), m.node, hi, n(2));
      return num(std::min(std::max(x, lo), hi), r.node);
    }
    case Builtin::Where: {
      const Val &chosen = a[0].value.b ? a[1] : a[2];
      return num(chosen.value.asDouble(), op(chosen.node, 1.0));
    }
    case Builtin::Float:
      // float(i) of an integer is a constant; of an f32, the identity.
      return num(f(0), op(n(0), 1.0));
    case Builtin::Int:
      break; // i32
    }
    throw std::logic_error("referenceBackward: unexpected f32 builtin");
  }

  std::vector<std::optional<Val>> lets;
  std::vector<Node> tape;
  std::vector<double> adj;
};

} // namespace

RefGradients referenceBackward(const fe::Variant &v, const RefProblem &p,
                               const std::vector<double> &dout) {
  const double inf = std::numeric_limits<double>::infinity();
  if (int64_t(dout.size()) != p.B * p.Hq * p.Sq * p.Dv)
    throw std::invalid_argument("referenceBackward: dout is not [B, Hq, Sq, Dv]");
  RefGradients g;
  g.dq.assign(p.q.size(), 0.0);
  g.dk.assign(p.k.size(), 0.0);
  g.dv.assign(p.v.size(), 0.0);
  g.dparams.assign(v.params.size(), 0.0);
  for (const RefTensor &c : p.captures)
    g.dcaptures.push_back({c.shape, std::vector<double>(c.values.size(), 0.0)});

  // scale: one evaluation at (0, 0, 0, 0, s = 0), as the forward does; its
  // adjoint is summed over every entry and propagated once at the end.
  TapeEval scaleEnv(v, p);
  double scale = 1.0 / std::sqrt(double(p.D));
  int scaleRoot = -1;
  if (v.scale) {
    scaleEnv.at(0, 0, 0, 0, 0);
    Val r = scaleEnv.run(*v.scale);
    scale = r.value.asDouble();
    scaleRoot = r.node;
  }
  double dscale = 0;

  // Masks and select choices are constants: the forward's own kept set.
  std::vector<uint8_t> mask = referenceMask(v, p);
  int64_t group = p.Hq / p.Hkv;
  std::vector<double> listed; // kv_index multiplicities
  std::vector<double> t(p.Skv), dot(p.Skv), a(p.Skv), dt(p.Skv), gv(p.Skv);
  std::vector<char> keep(p.Skv);
  std::vector<int> roots(p.Skv, -1);
  std::vector<TapeEval> scoreEnv;
  for (int64_t kv = 0; kv < p.Skv; ++kv)
    scoreEnv.emplace_back(v, p);
  TapeEval sinkEnv(v, p);

  for (int64_t b = 0; b < p.B; ++b)
    for (int64_t h = 0; h < p.Hq; ++h) {
      int64_t hk = h / group;
      listedPositions(v, p, b, hk, listed);
      // The sink joins the softmax denominator only.
      bool useSink = v.sink && v.normalize == fe::NormalizeKind::Softmax;
      double sink = -inf, dsink = 0;
      int sinkRoot = -1;
      if (useSink) {
        sinkEnv.at(b, h, 0, 0, 0);
        Val r = sinkEnv.run(*v.sink->body);
        sink = r.value.asDouble();
        sinkRoot = r.node;
      }
      for (int64_t qi = 0; qi < p.Sq; ++qi) {
        int64_t row = (b * p.Hq + h) * p.Sq + qi;
        const double *qrow = &p.q[row * p.D];
        const double *drow = &dout[row * p.Dv];
        bool any = false;
        for (int64_t kv = 0; kv < p.Skv; ++kv) {
          const double *krow = &p.k[((b * p.Hkv + hk) * p.Skv + kv) * p.D];
          double s = 0;
          for (int64_t d = 0; d < p.D; ++d)
            s += qrow[d] * krow[d];
          dot[kv] = s;
          s *= scale;
          roots[kv] = -1;
          if (v.score) {
            scoreEnv[kv].at(b, h, qi, kv, s);
            Val r = scoreEnv[kv].run(*v.score->body);
            s = r.value.asDouble();
            roots[kv] = r.node;
          }
          t[kv] = s;
          keep[kv] = mask[row * p.Skv + kv] && s != -inf && listed[kv] != 0;
          any = any || keep[kv];
        }
        if (!any)
          continue; // o = 0 whatever the inputs: no gradient
        // g_j = dout . v_j over kept entries.
        for (int64_t kv = 0; kv < p.Skv; ++kv) {
          gv[kv] = 0;
          a[kv] = 0;
          dt[kv] = 0;
          if (!keep[kv])
            continue;
          const double *vrow = &p.v[((b * p.Hkv + hk) * p.Skv + kv) * p.Dv];
          for (int64_t d = 0; d < p.Dv; ++d)
            gv[kv] += drow[d] * vrow[d];
        }
        // a_j: o = sum_j a_j v_j; dt_j = dL/dt_j.
        switch (v.normalize) {
        case fe::NormalizeKind::Softmax: {
          double mx = sink;
          for (int64_t kv = 0; kv < p.Skv; ++kv)
            if (keep[kv])
              mx = std::max(mx, t[kv]);
          double sinkTerm = useSink ? std::exp(sink - mx) : 0.0;
          double sum = sinkTerm;
          for (int64_t kv = 0; kv < p.Skv; ++kv)
            if (keep[kv]) {
              a[kv] = listed[kv] * std::exp(t[kv] - mx);
              sum += a[kv];
            }
          double delta = 0;
          for (int64_t kv = 0; kv < p.Skv; ++kv)
            if (keep[kv]) {
              a[kv] /= sum;
              delta += a[kv] * gv[kv];
            }
          for (int64_t kv = 0; kv < p.Skv; ++kv)
            if (keep[kv])
              dt[kv] = a[kv] * (gv[kv] - delta);
          if (useSink)
            dsink -= sinkTerm / sum * delta;
          break;
        }
        case fe::NormalizeKind::Softplus: {
          double sum = 0;
          for (int64_t kv = 0; kv < p.Skv; ++kv)
            if (keep[kv]) {
              a[kv] = listed[kv] * softplus(t[kv]);
              sum += a[kv];
            }
          if (sum == 0)
            continue; // the forward's denom == 0: o = 0
          double delta = 0;
          for (int64_t kv = 0; kv < p.Skv; ++kv)
            if (keep[kv]) {
              a[kv] /= sum;
              delta += a[kv] * gv[kv];
            }
          for (int64_t kv = 0; kv < p.Skv; ++kv)
            if (keep[kv])
              dt[kv] = listed[kv] * sigmoid(t[kv]) / sum * (gv[kv] - delta);
          break;
        }
        case fe::NormalizeKind::Sigmoid:
          for (int64_t kv = 0; kv < p.Skv; ++kv)
            if (keep[kv]) {
              double y = 1.0 / (1.0 + std::exp(-t[kv]));
              a[kv] = listed[kv] * y;
              dt[kv] = listed[kv] * y * (1.0 - y) * gv[kv];
            }
          break;
        case fe::NormalizeKind::Relu:
          // Derivative 0 at 0.
          for (int64_t kv = 0; kv < p.Skv; ++kv)
            if (keep[kv]) {
              a[kv] = listed[kv] * std::max(t[kv], 0.0);
              dt[kv] = t[kv] > 0 ? listed[kv] * gv[kv] : 0.0;
            }
          break;
        case fe::NormalizeKind::Relu2:
          for (int64_t kv = 0; kv < p.Skv; ++kv)
            if (keep[kv]) {
              double r = std::max(t[kv], 0.0);
              a[kv] = listed[kv] * r * r;
              dt[kv] = listed[kv] * 2.0 * r * gv[kv];
            }
          break;
        case fe::NormalizeKind::Laplace:
          for (int64_t kv = 0; kv < p.Skv; ++kv)
            if (keep[kv]) {
              a[kv] = listed[kv] * laplace(t[kv]);
              dt[kv] = listed[kv] * laplaceDerivative(t[kv]) * gv[kv];
            }
          break;
        }
        double *dqrow = &g.dq[row * p.D];
        for (int64_t kv = 0; kv < p.Skv; ++kv) {
          if (!keep[kv])
            continue;
          int64_t kvRow = (b * p.Hkv + hk) * p.Skv + kv;
          double *dvrow = &g.dv[kvRow * p.Dv];
          for (int64_t d = 0; d < p.Dv; ++d)
            dvrow[d] += a[kv] * drow[d];
          if (dt[kv] == 0)
            continue;
          double ds = v.score ? scoreEnv[kv].backprop(roots[kv], dt[kv],
                                                      g.dparams, g.dcaptures)
                              : dt[kv];
          if (ds == 0)
            continue;
          const double *krow = &p.k[kvRow * p.D];
          double *dkrow = &g.dk[kvRow * p.D];
          for (int64_t d = 0; d < p.D; ++d) {
            dqrow[d] += ds * scale * krow[d];
            dkrow[d] += ds * scale * qrow[d];
          }
          dscale += ds * dot[kv];
        }
      }
      if (useSink)
        sinkEnv.backprop(sinkRoot, dsink, g.dparams, g.dcaptures);
    }
  scaleEnv.backprop(scaleRoot, dscale, g.dparams, g.dcaptures);
  return g;
}

} // namespace attn::ref
