//===- Eval.cpp -----------------------------------------------------------===//
#include "lib/Frontend/Eval.h"

#include "attn/IntMath.h"

#include <cmath>
#include <limits>

namespace attn::fe {

Scalar promote(Scalar s, Type to) {
  if (s.type == to || to == Type::Invalid)
    return s;
  if (s.type == Type::I32 && to == Type::F32)
    return Scalar::ofFloat(static_cast<double>(s.i));
  return s;
}

int32_t truncToInt(double x) {
  if (std::isnan(x))
    return 0;
  // 2147483520 is the largest f32 below 2^31: kernels saturate there.
  if (x >= 2147483520.0)
    return 2147483520;
  if (x <= -2147483648.0)
    return std::numeric_limits<int32_t>::min();
  return static_cast<int32_t>(x);
}

static int32_t wrap(int64_t v) {
  return static_cast<int32_t>(static_cast<uint32_t>(v));
}

static double floorModF(double a, double b) {
  return a - std::floor(a / b) * b;
}

template <typename T> static bool compare(BinaryOp op, T a, T b) {
  switch (op) {
  case BinaryOp::Lt: return a < b;
  case BinaryOp::Le: return a <= b;
  case BinaryOp::Gt: return a > b;
  case BinaryOp::Ge: return a >= b;
  case BinaryOp::Eq: return a == b;
  default: return a != b;
  }
}

static Scalar evalBinary(const Expr &e, Scalar l, Scalar r) {
  BinaryOp op = e.binaryOp;
  if (op == BinaryOp::And)
    return Scalar::ofBool(l.b && r.b);
  if (op == BinaryOp::Or)
    return Scalar::ofBool(l.b || r.b);
  bool isCompare = op == BinaryOp::Lt || op == BinaryOp::Le ||
                   op == BinaryOp::Gt || op == BinaryOp::Ge ||
                   op == BinaryOp::Eq || op == BinaryOp::Ne;
  if (isCompare) {
    if (l.type == Type::Bool)
      return Scalar::ofBool(op == BinaryOp::Eq ? l.b == r.b : l.b != r.b);
    if (l.type == Type::I32 && r.type == Type::I32)
      return Scalar::ofBool(compare(op, l.i, r.i));
    return Scalar::ofBool(compare(op, l.asDouble(), r.asDouble()));
  }
  if (e.type == Type::I32) {
    int64_t a = l.i, b = r.i;
    switch (op) {
    case BinaryOp::Add: return Scalar::ofInt(wrap(a + b));
    case BinaryOp::Sub: return Scalar::ofInt(wrap(a - b));
    case BinaryOp::Mul: return Scalar::ofInt(wrap(a * b));
    case BinaryOp::Div: return Scalar::ofInt(attn::floorDiv(l.i, r.i));
    default: return Scalar::ofInt(attn::floorMod(l.i, r.i));
    }
  }
  double a = l.asDouble(), b = r.asDouble();
  switch (op) {
  case BinaryOp::Add: return Scalar::ofFloat(a + b);
  case BinaryOp::Sub: return Scalar::ofFloat(a - b);
  case BinaryOp::Mul: return Scalar::ofFloat(a * b);
  case BinaryOp::Div: return Scalar::ofFloat(a / b);
  default: return Scalar::ofFloat(floorModF(a, b));
  }
}

static double softplus(double x) {
  return std::max(x, 0.0) + std::log1p(std::exp(-std::fabs(x)));
}

static Scalar evalCall(const Expr &e, std::vector<Scalar> &a) {
  auto f = [&](unsigned k) { return a[k].asDouble(); };
  bool isInt = e.type == Type::I32;
  switch (e.builtin) {
  case Builtin::Exp: return Scalar::ofFloat(std::exp(f(0)));
  case Builtin::Exp2: return Scalar::ofFloat(std::exp2(f(0)));
  case Builtin::Log: return Scalar::ofFloat(std::log(f(0)));
  case Builtin::Log2: return Scalar::ofFloat(std::log2(f(0)));
  case Builtin::Sqrt: return Scalar::ofFloat(std::sqrt(f(0)));
  case Builtin::Rsqrt: return Scalar::ofFloat(1.0 / std::sqrt(f(0)));
  case Builtin::Tanh: return Scalar::ofFloat(std::tanh(f(0)));
  case Builtin::Sigmoid: return Scalar::ofFloat(1.0 / (1.0 + std::exp(-f(0))));
  case Builtin::Softplus: return Scalar::ofFloat(softplus(f(0)));
  case Builtin::Abs:
    return isInt ? Scalar::ofInt(a[0].i < 0 ? wrap(-(int64_t)a[0].i) : a[0].i)
                 : Scalar::ofFloat(std::fabs(f(0)));
  case Builtin::Min:
    return isInt ? Scalar::ofInt(std::min(a[0].i, a[1].i))
                 : Scalar::ofFloat(std::isnan(f(0)) || std::isnan(f(1))
                                       ? NAN
                                       : std::min(f(0), f(1)));
  case Builtin::Max:
    return isInt ? Scalar::ofInt(std::max(a[0].i, a[1].i))
                 : Scalar::ofFloat(std::isnan(f(0)) || std::isnan(f(1))
                                       ? NAN
                                       : std::max(f(0), f(1)));
  case Builtin::Floor:
    return isInt ? a[0] : Scalar::ofFloat(std::floor(f(0)));
  case Builtin::Ceil:
    return isInt ? a[0] : Scalar::ofFloat(std::ceil(f(0)));
  case Builtin::Sign:
    if (isInt)
      return Scalar::ofInt((a[0].i > 0) - (a[0].i < 0));
    return Scalar::ofFloat(f(0) > 0 ? 1.0 : f(0) < 0 ? -1.0 : f(0));
  case Builtin::Clamp:
    if (isInt)
      return Scalar::ofInt(std::min(std::max(a[0].i, a[1].i), a[2].i));
    return Scalar::ofFloat(std::min(std::max(f(0), f(1)), f(2)));
  case Builtin::Where:
    return a[0].b ? promote(a[1], e.type) : promote(a[2], e.type);
  case Builtin::Float: return Scalar::ofFloat(f(0));
  case Builtin::Int:
    return a[0].type == Type::I32 ? a[0] : Scalar::ofInt(truncToInt(f(0)));
  }
  return {};
}

Scalar evaluate(const Expr &e, const Variant &v, EvalEnv &env) {
  switch (e.kind) {
  case ExprKind::IntLit:
    return Scalar::ofInt(wrap(e.intValue));
  case ExprKind::FloatLit:
    return Scalar::ofFloat(e.floatValue);
  case ExprKind::BoolLit:
    return Scalar::ofBool(e.boolValue);
  case ExprKind::Name:
    switch (e.nameKind) {
    case NameKind::Index: return env.index(static_cast<IndexVar>(e.ref));
    case NameKind::Size: return env.size(static_cast<SizeVar>(e.ref));
    case NameKind::Param: return env.param(e.ref);
    case NameKind::Const: {
      const ConstDecl &c = v.consts[e.ref];
      return c.type == Type::I32 ? Scalar::ofInt(static_cast<int32_t>(c.value))
             : c.type == Type::Bool ? Scalar::ofBool(c.value != 0)
                                    : Scalar::ofFloat(c.value);
    }
    case NameKind::Let: return env.let(e.ref);
    default: return {};
    }
  case ExprKind::Index: {
    std::vector<int32_t> idx;
    for (const ExprPtr &a : e.args)
      idx.push_back(evaluate(*a, v, env).i);
    return env.tensorElement(e.ref, idx);
  }
  case ExprKind::Unary: {
    Scalar x = evaluate(*e.args[0], v, env);
    if (e.unaryOp == UnaryOp::Not)
      return Scalar::ofBool(!x.b);
    return x.type == Type::I32 ? Scalar::ofInt(wrap(-(int64_t)x.i))
                               : Scalar::ofFloat(-x.f);
  }
  case ExprKind::Binary: {
    Scalar l = evaluate(*e.args[0], v, env);
    Scalar r = evaluate(*e.args[1], v, env);
    return evalBinary(e, l, r);
  }
  case ExprKind::Ternary: {
    Scalar c = evaluate(*e.args[0], v, env);
    Scalar a = evaluate(*e.args[1], v, env);
    Scalar b = evaluate(*e.args[2], v, env);
    return promote(c.b ? a : b, e.type);
  }
  case ExprKind::Call: {
    std::vector<Scalar> args;
    for (const ExprPtr &a : e.args)
      args.push_back(evaluate(*a, v, env));
    return evalCall(e, args);
  }
  }
  return {};
}

} // namespace attn::fe
