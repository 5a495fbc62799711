//===- AST.cpp - names of AST enums ---------------------------------------===//
#include "lib/Frontend/AST.h"

namespace attn::fe {

const char *typeName(Type t) {
  switch (t) {
  case Type::I32: return "i32";
  case Type::F32: return "f32";
  case Type::Bool: return "bool";
  case Type::Invalid: break;
  }
  return "<invalid>";
}

const char *dtypeName(DType t) {
  switch (t) {
  case DType::F32: return "f32";
  case DType::F16: return "f16";
  case DType::BF16: return "bf16";
  case DType::I32: return "i32";
  }
  return "?";
}

std::optional<DType> parseDType(const std::string &name) {
  if (name == "f32") return DType::F32;
  if (name == "f16") return DType::F16;
  if (name == "bf16") return DType::BF16;
  if (name == "i32") return DType::I32;
  return std::nullopt;
}

const char *binaryOpSpelling(BinaryOp op) {
  switch (op) {
  case BinaryOp::Add: return "+";
  case BinaryOp::Sub: return "-";
  case BinaryOp::Mul: return "*";
  case BinaryOp::Div: return "/";
  case BinaryOp::Mod: return "%";
  case BinaryOp::Lt: return "<";
  case BinaryOp::Le: return "<=";
  case BinaryOp::Gt: return ">";
  case BinaryOp::Ge: return ">=";
  case BinaryOp::Eq: return "==";
  case BinaryOp::Ne: return "!=";
  case BinaryOp::And: return "&&";
  case BinaryOp::Or: return "||";
  }
  return "?";
}

namespace {
struct BuiltinInfo {
  const char *name;
  Builtin id;
  unsigned arity;
};
constexpr BuiltinInfo kBuiltins[] = {
    {"exp", Builtin::Exp, 1},         {"exp2", Builtin::Exp2, 1},
    {"log", Builtin::Log, 1},         {"log2", Builtin::Log2, 1},
    {"sqrt", Builtin::Sqrt, 1},       {"rsqrt", Builtin::Rsqrt, 1},
    {"tanh", Builtin::Tanh, 1},       {"sigmoid", Builtin::Sigmoid, 1},
    {"softplus", Builtin::Softplus, 1}, {"abs", Builtin::Abs, 1},
    {"min", Builtin::Min, 2},         {"max", Builtin::Max, 2},
    {"floor", Builtin::Floor, 1},     {"ceil", Builtin::Ceil, 1},
    {"sign", Builtin::Sign, 1},       {"clamp", Builtin::Clamp, 3},
    {"where", Builtin::Where, 3},     {"float", Builtin::Float, 1},
    {"int", Builtin::Int, 1},
};
} // namespace

std::optional<Builtin> lookupBuiltin(const std::string &name) {
  for (const BuiltinInfo &b : kBuiltins)
    if (name == b.name)
      return b.id;
  return std::nullopt;
}

const char *builtinName(Builtin id) {
  for (const BuiltinInfo &b : kBuiltins)
    if (b.id == id)
      return b.name;
  return "?";
}

unsigned builtinArity(Builtin id) {
  for (const BuiltinInfo &b : kBuiltins)
    if (b.id == id)
      return b.arity;
  return 0;
}

const char *indexVarName(IndexVar v) {
  static const char *names[] = {"s", "b", "h", "q", "kv", "hkv"};
  return names[static_cast<unsigned>(v)];
}

const char *sizeVarName(SizeVar v) {
  static const char *names[] = {"B", "Hq", "Hkv", "Sq", "Skv", "D", "Dv"};
  return names[static_cast<unsigned>(v)];
}

std::optional<SizeVar> lookupSizeVar(const std::string &name) {
  for (unsigned i = 0; i < kNumSizeVars; ++i)
    if (name == sizeVarName(static_cast<SizeVar>(i)))
      return static_cast<SizeVar>(i);
  return std::nullopt;
}

namespace {
bool readsF32Tensors(const Variant &v, const Expr &e, unsigned depth = 0) {
  // Lets form a DAG checked by Sema; the bound guards a malformed one.
  if (depth > 64)
    return true;
  if (e.kind == ExprKind::Index && e.nameKind == NameKind::Tensor &&
      e.ref >= 0 && v.tensors[size_t(e.ref)].dtype == DType::F32)
    return true;
  if (e.kind == ExprKind::Name && e.nameKind == NameKind::Let && e.ref >= 0 &&
      v.lets[size_t(e.ref)].expr &&
      readsF32Tensors(v, *v.lets[size_t(e.ref)].expr, depth + 1))
    return true;
  for (const ExprPtr &a : e.args)
    if (a && readsF32Tensors(v, *a, depth))
      return true;
  return false;
}
} // namespace

bool scoreOrScaleReadsF32Tensors(const Variant &v) {
  return (v.score && v.score->body && readsF32Tensors(v, *v.score->body)) ||
         (v.scale && readsF32Tensors(v, *v.scale));
}

int Variant::findParam(const std::string &n) const {
  for (size_t i = 0; i < params.size(); ++i)
    if (params[i].name == n)
      return static_cast<int>(i);
  return -1;
}

int Variant::findTensor(const std::string &n) const {
  for (size_t i = 0; i < tensors.size(); ++i)
    if (tensors[i].name == n)
      return static_cast<int>(i);
  return -1;
}

const Variant *Program::find(const std::string &name) const {
  for (const Variant &v : variants)
    if (v.name == name)
      return &v;
  return nullptr;
}

} // namespace attn::fe

namespace attn::fe {

std::string printExpr(const Expr &e, const Variant &v) {
  switch (e.kind) {
  case ExprKind::IntLit:
    return std::to_string(e.intValue);
  case ExprKind::FloatLit: {
    char buf[32];
    snprintf(buf, sizeof buf, "%g", e.floatValue);
    return buf;
  }
  case ExprKind::BoolLit:
    return e.boolValue ? "true" : "false";
  case ExprKind::Name:
    return e.name;
  case ExprKind::Unary:
    return std::string(e.unaryOp == UnaryOp::Neg ? "-" : "!") +
           printExpr(*e.args[0], v);
  case ExprKind::Binary:
    return "(" + printExpr(*e.args[0], v) + " " +
           binaryOpSpelling(e.binaryOp) + " " + printExpr(*e.args[1], v) + ")";
  case ExprKind::Ternary:
    return "(" + printExpr(*e.args[0], v) + " ? " + printExpr(*e.args[1], v) +
           " : " + printExpr(*e.args[2], v) + ")";
  case ExprKind::Call:
  case ExprKind::Index: {
    std::string s = e.name + (e.kind == ExprKind::Call ? "(" : "[");
    for (size_t i = 0; i < e.args.size(); ++i)
      s += (i ? ", " : "") + printExpr(*e.args[i], v);
    return s + (e.kind == ExprKind::Call ? ")" : "]");
  }
  }
  return "?";
}

std::string dimToRpn(const Expr &e, const Variant &v) {
  switch (e.kind) {
  case ExprKind::IntLit:
    return std::to_string(e.intValue);
  case ExprKind::Name:
    if (e.nameKind == NameKind::Const)
      return std::to_string(static_cast<int64_t>(v.consts[e.ref].value));
    return e.name;
  case ExprKind::Unary:
    return dimToRpn(*e.args[0], v) + " neg";
  case ExprKind::Binary:
    return dimToRpn(*e.args[0], v) + " " + dimToRpn(*e.args[1], v) + " " +
           binaryOpSpelling(e.binaryOp);
  default:
    return "?";
  }
}

} // namespace attn::fe
