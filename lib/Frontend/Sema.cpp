//===- Sema.cpp - name resolution and type checking -----------------------===//
#include "lib/Frontend/Sema.h"

#include "lib/Frontend/Eval.h"

#include <cmath>
#include <limits>
#include <optional>
#include <set>

namespace attn::fe {
namespace {

/// Where an expression sits: decides which index variables it may read.
struct Context {
  explicit Context(const char *what) : what(what) {}
  const char *what;          // for messages: "mask(b, h, q, kv)"
  unsigned available = 0;    // bits of IndexVar
  const FuncDef *func = nullptr; // positional parameter names
  bool inLet = false;        // lets see every index; uses are checked later
  bool constOnly = false;    // const and param defaults: literals and consts
  bool dimOnly = false;      // tensor dims: sizes, params, consts, literals
  int letLimit = -1;         // a let may read only earlier lets
  // Collected while checking a let.
  unsigned used = 0;
  std::set<int> letDeps;
};

class Sema {
public:
  Sema(Variant &v, Diagnostics &diags) : v(v), diags(diags) {}
  void run();

private:
  void checkNames();
  void checkConsts();
  void checkParams();
  void checkTensors();
  void checkLets();
  void checkSelect(SelectDecl &sel);
  void checkKvIndex();
  void checkFunc(std::optional<FuncDef> &f, const char *what,
                 const std::vector<IndexVar> &positional, unsigned extra,
                 Type want);

  Type check(Expr &e, Context &ctx);
  Type checkName(Expr &e, Context &ctx);
  Type checkIndex(Expr &e, Context &ctx);
  Type checkCall(Expr &e, Context &ctx);
  Type checkBinary(Expr &e, Context &ctx);
  std::vector<std::string> visibleNames(const Context &ctx) const;
  bool foldConst(const Expr &e, double &value, Type &type);
  void checkFolding();
  std::optional<Scalar> checkFolded(const Expr &e);

  Variant &v;
  Diagnostics &diags;
};

bool isNumeric(Type t) { return t == Type::I32 || t == Type::F32; }
Type promoted(Type a, Type b) {
  return a == Type::F32 || b == Type::F32 ? Type::F32 : Type::I32;
}

const std::vector<std::string> &reservedWords() {
  static const std::vector<std::string> words = {
      "variant", "param", "const", "tensor", "scale", "score", "mask",
      "sink", "normalize", "select", "let", "out_dtype", "kv_index", "true", "false",
      "inf", "s", "b", "h", "q", "kv", "hkv", "i32", "f32", "f16", "bf16"};
  return words;
}

void Sema::checkNames() {
  // One namespace for params, consts, tensors and lets.
  std::set<std::string> seen;
  auto declare = [&](const std::string &name, SourceLoc loc) {
    for (const std::string &r : reservedWords())
      if (name == r) {
        diags.error(loc, "'" + name + "' is reserved; choose another name");
        return;
      }
    if (lookupSizeVar(name)) {
      diags.error(loc, "'" + name + "' is the size " + name +
                           "; choose another name");
      return;
    }
    if (lookupBuiltin(name)) {
      diags.error(loc, "'" + name + "' is a builtin function; choose another "
                                    "name");
      return;
    }
    if (!seen.insert(name).second)
      diags.error(loc, "'" + name + "' is declared twice in variant '" +
                           v.name + "'");
  };
  for (ParamDecl &p : v.params)
    declare(p.name, p.loc);
  for (ConstDecl &c : v.consts)
    declare(c.name, c.loc);
  for (TensorDecl &t : v.tensors)
    declare(t.name, t.loc);
  for (LetDecl &l : v.lets)
    declare(l.name, l.loc);
}

struct NoEnv : EvalEnv {
  Scalar index(IndexVar) override { return {}; }
  Scalar size(SizeVar) override { return {}; }
  Scalar param(int) override { return {}; }
  Scalar tensorElement(int, const std::vector<int32_t> &) override {
    return {};
  }
  Scalar let(int) override { return {}; }
};

bool Sema::foldConst(const Expr &e, double &value, Type &type) {
  NoEnv env;
  Scalar s = evaluate(e, v, env);
  type = s.type;
  value = s.type == Type::I32 ? s.i : s.type == Type::Bool ? s.b : s.f;
  return true;
}

void Sema::checkConsts() {
  for (size_t i = 0; i < v.consts.size(); ++i) {
    ConstDecl &c = v.consts[i];
    Context ctx("a const");
    ctx.constOnly = true;
    ctx.letLimit = static_cast<int>(i); // earlier consts only
    Type t = check(*c.expr, ctx);
    if (t == Type::Invalid)
      continue;
    foldConst(*c.expr, c.value, c.type);
  }
}

void Sema::checkParams() {
  for (ParamDecl &p : v.params) {
    if (!p.defaultExpr)
      continue;
    Context ctx("a parameter default");
    ctx.constOnly = true;
    ctx.letLimit = static_cast<int>(v.consts.size());
    Type t = check(*p.defaultExpr, ctx);
    if (t == Type::Invalid)
      continue;
    double value;
    Type vt;
    foldConst(*p.defaultExpr, value, vt);
    if (p.type == Type::I32 && vt != Type::I32) {
      diags.error(p.defaultExpr->loc,
                  "expected an i32 default for parameter '" + p.name +
                      "', got " + typeName(vt));
      continue;
    }
    if (p.type == Type::F32 && !isNumeric(vt)) {
      diags.error(p.defaultExpr->loc,
                  "expected an f32 default for parameter '" + p.name +
                      "', got " + typeName(vt));
      continue;
    }
    p.defaultValue = value;
  }
}

/// The runtime evaluates dimensions itself (no compiler at launch), so they
/// are restricted to integer arithmetic.
static const Expr *nonArithmeticDim(const Expr &e) {
  switch (e.kind) {
  case ExprKind::IntLit:
  case ExprKind::Name:
    return nullptr;
  case ExprKind::Unary:
  case ExprKind::Binary:
    if (e.kind == ExprKind::Unary && e.unaryOp != UnaryOp::Neg)
      return &e;
    if (e.kind == ExprKind::Binary &&
        !(e.binaryOp == BinaryOp::Add || e.binaryOp == BinaryOp::Sub ||
          e.binaryOp == BinaryOp::Mul || e.binaryOp == BinaryOp::Div ||
          e.binaryOp == BinaryOp::Mod))
      return &e;
    for (const ExprPtr &a : e.args)
      if (const Expr *bad = nonArithmeticDim(*a))
        return bad;
    return nullptr;
  default:
    return &e;
  }
}

void Sema::checkTensors() {
  for (TensorDecl &t : v.tensors) {
    for (ExprPtr &d : t.dims) {
      if (const Expr *bad = nonArithmeticDim(*d)) {
        diags.error(bad->loc, "a tensor dimension may use only + - * / % "
                              "over sizes, i32 params, consts and integers");
        continue;
      }
      Context ctx("a tensor dimension");
      ctx.dimOnly = true;
      ctx.letLimit = static_cast<int>(v.consts.size());
      Type ty = check(*d, ctx);
      if (ty != Type::Invalid && ty != Type::I32)
        diags.error(d->loc, std::string("expected an i32 dimension, got ") +
                                typeName(ty));
    }
  }
}

void Sema::checkLets() {
  for (size_t i = 0; i < v.lets.size(); ++i) {
    LetDecl &l = v.lets[i];
    Context ctx("a let");
    ctx.inLet = true;
    ctx.available = (1u << kNumIndexVars) - 1;
    ctx.letLimit = static_cast<int>(i);
    Type t = check(*l.expr, ctx);
    l.usedIndexVars = ctx.used;
    l.letDeps.assign(ctx.letDeps.begin(), ctx.letDeps.end());
    l.checked = t != Type::Invalid;
  }
}

void Sema::checkFunc(std::optional<FuncDef> &f, const char *what,
                     const std::vector<IndexVar> &positional, unsigned extra,
                     Type want) {
  if (!f)
    return;
  Context ctx(what);
  ctx.func = &*f;
  ctx.available = extra;
  for (IndexVar iv : positional)
    ctx.available |= bit(iv);
  ctx.letLimit = static_cast<int>(v.lets.size());
  // A parameter may have any name, but a canonical index name must keep its
  // meaning, or lets (which use canonical names) would silently disagree.
  std::set<std::string> names;
  for (size_t i = 0; i < f->paramNames.size(); ++i) {
    const std::string &n = f->paramNames[i];
    if (!names.insert(n).second) {
      diags.error(f->paramLocs[i], "parameter '" + n + "' appears twice");
      return;
    }
    for (unsigned k = 0; k < kNumIndexVars; ++k) {
      if (n == indexVarName(static_cast<IndexVar>(k)) &&
          static_cast<IndexVar>(k) != positional[i]) {
        diags.error(f->paramLocs[i],
                    "parameter " + std::to_string(i + 1) + " of " + what +
                        " is '" + indexVarName(positional[i]) +
                        "'; naming it '" + n + "' would swap indices");
        return;
      }
    }
    if (lookupSizeVar(n) || v.findParam(n) >= 0 || v.findTensor(n) >= 0) {
      diags.error(f->paramLocs[i], "parameter name '" + n +
                                       "' hides a size, param or tensor");
      return;
    }
  }
  Type t = check(*f->body, ctx);
  if (t == Type::Invalid)
    return;
  if (want == Type::Bool && t != Type::Bool) {
    diags.error(f->body->loc, std::string("expected a boolean mask, got ") +
                                  typeName(t) + "; compare with != 0");
  } else if (want == Type::F32 && !isNumeric(t)) {
    diags.error(f->body->loc, std::string("expected a number from ") + what +
                                  ", got " + typeName(t) +
                                  "; use where(cond, a, b)");
  }
}

std::vector<std::string> Sema::visibleNames(const Context &ctx) const {
  std::vector<std::string> names;
  for (unsigned k = 0; k < kNumIndexVars; ++k)
    if (ctx.available & (1u << k))
      names.push_back(indexVarName(static_cast<IndexVar>(k)));
  if (ctx.func)
    for (const std::string &n : ctx.func->paramNames)
      names.push_back(n);
  for (unsigned k = 0; k < kNumSizeVars; ++k)
    names.push_back(sizeVarName(static_cast<SizeVar>(k)));
  for (const ParamDecl &p : v.params)
    names.push_back(p.name);
  for (const ConstDecl &c : v.consts)
    names.push_back(c.name);
  for (const TensorDecl &t : v.tensors)
    names.push_back(t.name);
  for (const LetDecl &l : v.lets)
    names.push_back(l.name);
  return names;
}

Type Sema::check(Expr &e, Context &ctx) {
  switch (e.kind) {
  case ExprKind::IntLit:
    if (e.intValue > 2147483647) {
      diags.error(e.loc, "integer literal does not fit in i32");
      return Type::Invalid;
    }
    return e.type = Type::I32;
  case ExprKind::FloatLit:
    return e.type = Type::F32;
  case ExprKind::BoolLit:
    return e.type = Type::Bool;
  case ExprKind::Name:
    return e.type = checkName(e, ctx);
  case ExprKind::Index:
    return e.type = checkIndex(e, ctx);
  case ExprKind::Call:
    return e.type = checkCall(e, ctx);
  case ExprKind::Unary: {
    Expr &x = *e.args[0];
    // `-2147483648` is the one literal that only fits negated.
    if (e.unaryOp == UnaryOp::Neg && x.kind == ExprKind::IntLit &&
        x.intValue == 2147483648LL) {
      x.type = Type::I32;
      return e.type = Type::I32;
    }
    Type t = check(x, ctx);
    if (t == Type::Invalid)
      return Type::Invalid;
    if (e.unaryOp == UnaryOp::Neg && !isNumeric(t)) {
      diags.error(e.loc, std::string("operator '-' expects a number, got ") +
                             typeName(t));
      return Type::Invalid;
    }
    if (e.unaryOp == UnaryOp::Not && t != Type::Bool) {
      diags.error(e.loc, std::string("operator '!' expects a boolean, got ") +
                             typeName(t) + "; compare with == 0");
      return Type::Invalid;
    }
    return e.type = t;
  }
  case ExprKind::Binary:
    return e.type = checkBinary(e, ctx);
  case ExprKind::Ternary: {
    Type c = check(*e.args[0], ctx);
    Type a = check(*e.args[1], ctx);
    Type b = check(*e.args[2], ctx);
    if (c == Type::Invalid || a == Type::Invalid || b == Type::Invalid)
      return Type::Invalid;
    if (c != Type::Bool) {
      diags.error(e.args[0]->loc,
                  std::string("expected a boolean condition, got ") +
                      typeName(c));
      return Type::Invalid;
    }
    if (a == Type::Bool && b == Type::Bool)
      return e.type = Type::Bool;
    if (!isNumeric(a) || !isNumeric(b)) {
      diags.error(e.loc, std::string("the branches of '?:' have types ") +
                             typeName(a) + " and " + typeName(b) +
                             "; expected both numbers or both booleans");
      return Type::Invalid;
    }
    return e.type = promoted(a, b);
  }
  }
  return Type::Invalid;
}

Type Sema::checkName(Expr &e, Context &ctx) {
  const std::string &n = e.name;
  // Positional parameters of score/mask/sink.
  if (ctx.func) {
    static const IndexVar scoreOrder[] = {IndexVar::S, IndexVar::B, IndexVar::H,
                                          IndexVar::Q, IndexVar::KV};
    static const IndexVar maskOrder[] = {IndexVar::B, IndexVar::H, IndexVar::Q,
                                         IndexVar::KV};
    const auto &names = ctx.func->paramNames;
    for (size_t i = 0; i < names.size(); ++i) {
      if (names[i] != n)
        continue;
      IndexVar iv = names.size() == 5   ? scoreOrder[i]
                    : names.size() == 4 ? maskOrder[i]
                                        : IndexVar::H;
      e.nameKind = NameKind::Index;
      e.ref = static_cast<int>(iv);
      ctx.used |= bit(iv);
      return iv == IndexVar::S ? Type::F32 : Type::I32;
    }
  }
  for (unsigned k = 0; k < kNumIndexVars; ++k) {
    IndexVar iv = static_cast<IndexVar>(k);
    if (n != indexVarName(iv))
      continue;
    if (ctx.constOnly || ctx.dimOnly) {
      diags.error(e.loc, "'" + n + "' is a loop index; " + ctx.what +
                             " can only use constants" +
                             (ctx.dimOnly ? ", sizes and params" : ""));
      return Type::Invalid;
    }
    if (!(ctx.available & bit(iv))) {
      if (iv == IndexVar::S)
        diags.error(e.loc, std::string("'s' (the score) is not available in ") +
                               ctx.what + (std::string(ctx.what).rfind("mask", 0) == 0
                                               ? "; a mask must not read the score"
                                               : ""));
      else
        diags.error(e.loc, "'" + n + "' is not available in " + ctx.what);
      return Type::Invalid;
    }
    e.nameKind = NameKind::Index;
    e.ref = static_cast<int>(iv);
    ctx.used |= bit(iv);
    return iv == IndexVar::S ? Type::F32 : Type::I32;
  }
  if (auto sv = lookupSizeVar(n)) {
    if (ctx.constOnly && *sv != SizeVar::D && *sv != SizeVar::Dv) {
      diags.error(e.loc, "'" + n + "' is a runtime size; " + ctx.what +
                             " must be a compile-time constant");
      return Type::Invalid;
    }
    if (ctx.constOnly) {
      diags.error(e.loc, "'" + n + "' is not a literal; " + ctx.what +
                             " must be built from literals and consts");
      return Type::Invalid;
    }
    e.nameKind = NameKind::Size;
    e.ref = static_cast<int>(*sv);
    return Type::I32;
  }
  int p = v.findParam(n);
  if (p >= 0) {
    if (ctx.constOnly) {
      diags.error(e.loc, "'" + n + "' is a runtime param; " + ctx.what +
                             " must be a compile-time constant");
      return Type::Invalid;
    }
    if (ctx.dimOnly && v.params[p].type != Type::I32) {
      diags.error(e.loc, "param '" + n + "' is f32; dimensions are i32");
      return Type::Invalid;
    }
    e.nameKind = NameKind::Param;
    e.ref = p;
    return v.params[p].type;
  }
  for (size_t i = 0; i < v.consts.size(); ++i) {
    if (v.consts[i].name != n)
      continue;
    if (ctx.constOnly && static_cast<int>(i) >= ctx.letLimit) {
      diags.error(e.loc, "const '" + n + "' is used before its definition");
      return Type::Invalid;
    }
    if (v.consts[i].type == Type::Invalid)
      return Type::Invalid; // already reported
    e.nameKind = NameKind::Const;
    e.ref = static_cast<int>(i);
    return v.consts[i].type;
  }
  for (size_t i = 0; i < v.lets.size(); ++i) {
    LetDecl &l = v.lets[i];
    if (l.name != n)
      continue;
    if (ctx.constOnly || ctx.dimOnly) {
      diags.error(e.loc, "let '" + n + "' cannot be used in " + ctx.what);
      return Type::Invalid;
    }
    if (static_cast<int>(i) >= ctx.letLimit) {
      diags.error(e.loc, "let '" + n + "' is used before its definition");
      return Type::Invalid;
    }
    if (!l.checked)
      return Type::Invalid; // its own error was reported
    unsigned missing = l.usedIndexVars & ~ctx.available;
    if (missing && !ctx.inLet) {
      for (unsigned k = 0; k < kNumIndexVars; ++k) {
        if (!(missing & (1u << k)))
          continue;
        IndexVar iv = static_cast<IndexVar>(k);
        if (iv == IndexVar::S)
          diags.error(e.loc, "let '" + n + "' reads the score 's', which " +
                                 ctx.what + " does not have" +
                                 (std::string(ctx.what).rfind("mask", 0) == 0
                                      ? "; a mask must not read the score"
                                      : ""));
        else
          diags.error(e.loc, "let '" + n + "' reads '" + indexVarName(iv) +
                                 "', which " + ctx.what + " does not have");
        return Type::Invalid;
      }
    }
    ctx.used |= l.usedIndexVars;
    ctx.letDeps.insert(static_cast<int>(i));
    e.nameKind = NameKind::Let;
    e.ref = static_cast<int>(i);
    return l.expr->type;
  }
  int t = v.findTensor(n);
  if (t >= 0) {
    diags.error(e.loc, "tensor '" + n + "' must be indexed with " +
                           std::to_string(v.tensors[t].dims.size()) +
                           " indices, e.g. " + n + "[...]");
    return Type::Invalid;
  }
  if (lookupBuiltin(n)) {
    diags.error(e.loc, "'" + n + "' is a function; call it as " + n + "(...)");
    return Type::Invalid;
  }
  std::string hint = closestName(n, visibleNames(ctx));
  diags.error(e.loc, "unknown name '" + n + "'" +
                         (hint.empty() ? "" : "; did you mean '" + hint + "'?"));
  return Type::Invalid;
}

Type Sema::checkIndex(Expr &e, Context &ctx) {
  int t = v.findTensor(e.name);
  if (t < 0) {
    std::vector<std::string> tensors;
    for (const TensorDecl &d : v.tensors)
      tensors.push_back(d.name);
    std::string hint = closestName(e.name, tensors);
    diags.error(e.loc, "'" + e.name + "' is not a captured tensor" +
                           (hint.empty() ? std::string("; declare it with "
                                                       "'tensor NAME: "
                                                       "DTYPE[DIMS];'")
                                         : "; did you mean '" + hint + "'?"));
    return Type::Invalid;
  }
  if (ctx.constOnly || ctx.dimOnly) {
    diags.error(e.loc, std::string("a tensor cannot be read in ") + ctx.what);
    return Type::Invalid;
  }
  const TensorDecl &td = v.tensors[t];
  if (e.args.size() != td.dims.size()) {
    diags.error(e.loc, "tensor '" + e.name + "' has " +
                           std::to_string(td.dims.size()) +
                           " dimensions, got " + std::to_string(e.args.size()) +
                           " indices");
    return Type::Invalid;
  }
  bool ok = true;
  for (ExprPtr &a : e.args) {
    Type it = check(*a, ctx);
    if (it == Type::Invalid) {
      ok = false;
    } else if (it != Type::I32) {
      diags.error(a->loc, std::string("expected an i32 index, got ") +
                              typeName(it) +
                              (it == Type::F32 ? "; convert with int(...)" : ""));
      ok = false;
    }
  }
  if (!ok)
    return Type::Invalid;
  e.nameKind = NameKind::Tensor;
  e.ref = t;
  return td.valueType();
}

Type Sema::checkCall(Expr &e, Context &ctx) {
  auto b = lookupBuiltin(e.name);
  if (!b) {
    static const std::vector<std::string> all = {
        "exp", "exp2", "log", "log2", "sqrt", "rsqrt", "tanh", "sigmoid",
        "softplus", "abs", "min", "max", "floor", "ceil", "sign", "clamp",
        "where", "float", "int"};
    std::string hint = closestName(e.name, all);
    if (v.findTensor(e.name) >= 0)
      diags.error(e.loc, "tensor '" + e.name + "' is indexed with [...], not "
                         "called");
    else
      diags.error(e.loc, "unknown function '" + e.name + "'" +
                             (hint.empty() ? "" : "; did you mean '" + hint +
                                                      "'?"));
    return Type::Invalid;
  }
  e.builtin = *b;
  unsigned arity = builtinArity(*b);
  if (e.args.size() != arity) {
    diags.error(e.loc, std::string(builtinName(*b)) + " takes " +
                           std::to_string(arity) + " argument" +
                           (arity == 1 ? "" : "s") + ", got " +
                           std::to_string(e.args.size()));
    return Type::Invalid;
  }
  std::vector<Type> ts;
  for (ExprPtr &a : e.args) {
    Type t = check(*a, ctx);
    if (t == Type::Invalid)
      return Type::Invalid;
    ts.push_back(t);
  }
  auto requireNumeric = [&](size_t from) {
    for (size_t i = from; i < ts.size(); ++i)
      if (!isNumeric(ts[i])) {
        diags.error(e.args[i]->loc, std::string(builtinName(*b)) +
                                        " expects a number, got " +
                                        typeName(ts[i]));
        return false;
      }
    return true;
  };
  switch (*b) {
  case Builtin::Where:
    if (ts[0] != Type::Bool) {
      diags.error(e.args[0]->loc,
                  std::string("where expects a boolean condition, got ") +
                      typeName(ts[0]));
      return Type::Invalid;
    }
    if (ts[1] == Type::Bool && ts[2] == Type::Bool)
      return Type::Bool;
    if (!requireNumeric(1))
      return Type::Invalid;
    return promoted(ts[1], ts[2]);
  case Builtin::Abs:
  case Builtin::Floor:
  case Builtin::Ceil:
  case Builtin::Sign:
    if (!requireNumeric(0))
      return Type::Invalid;
    return ts[0];
  case Builtin::Min:
  case Builtin::Max:
    if (!requireNumeric(0))
      return Type::Invalid;
    return promoted(ts[0], ts[1]);
  case Builtin::Clamp:
    if (!requireNumeric(0))
      return Type::Invalid;
    return promoted(promoted(ts[0], ts[1]), ts[2]);
  case Builtin::Int:
    if (!requireNumeric(0))
      return Type::Invalid;
    return Type::I32;
  default: // float() and the transcendental functions
    if (!requireNumeric(0))
      return Type::Invalid;
    return Type::F32;
  }
}

Type Sema::checkBinary(Expr &e, Context &ctx) {
  Type a = check(*e.args[0], ctx);
  Type b = check(*e.args[1], ctx);
  if (a == Type::Invalid || b == Type::Invalid)
    return Type::Invalid;
  const char *op = binaryOpSpelling(e.binaryOp);
  switch (e.binaryOp) {
  case BinaryOp::And:
  case BinaryOp::Or:
    for (int i = 0; i < 2; ++i) {
      Type t = i == 0 ? a : b;
      if (t != Type::Bool) {
        diags.error(e.args[i]->loc, std::string("operator '") + op +
                                        "' expects booleans, got " +
                                        typeName(t) + "; compare with != 0");
        return Type::Invalid;
      }
    }
    return Type::Bool;
  case BinaryOp::Eq:
  case BinaryOp::Ne:
    if (a == Type::Bool && b == Type::Bool)
      return Type::Bool;
    [[fallthrough]];
  case BinaryOp::Lt:
  case BinaryOp::Le:
  case BinaryOp::Gt:
  case BinaryOp::Ge:
    if (!isNumeric(a) || !isNumeric(b)) {
      diags.error(e.loc, std::string("operator '") + op +
                             "' cannot compare " + typeName(a) + " with " +
                             typeName(b));
      return Type::Invalid;
    }
    return Type::Bool;
  default:
    if (!isNumeric(a) || !isNumeric(b)) {
      diags.error(e.loc, std::string("operator '") + op +
                             "' expects numbers, got " + typeName(a) +
                             " and " + typeName(b));
      return Type::Invalid;
    }
    return promoted(a, b);
  }
}

/// The block size is a compile-time multiple of 16 (kernel tiles divide
/// it); the rule's argument may use params, so it can change per launch.
void Sema::checkSelect(SelectDecl &sel) {
  Context sizeCtx("a select block size");
  sizeCtx.constOnly = true;
  sizeCtx.letLimit = static_cast<int>(v.consts.size());
  Type t = check(*sel.blockSize, sizeCtx);
  if (t != Type::Invalid) {
    double value;
    Type vt;
    foldConst(*sel.blockSize, value, vt);
    if (vt != Type::I32 || value < 16 || int64_t(value) % 16 != 0)
      diags.error(sel.blockSize->loc,
                  "expected a select block size that is a positive multiple "
                  "of 16, got " + printExpr(*sel.blockSize, v));
    else
      sel.size = static_cast<int64_t>(value);
  }
  Context argCtx("a select rule");
  argCtx.letLimit = 0;
  Type at = check(*sel.argument, argCtx);
  if (at != Type::Invalid && !isNumeric(at)) {
    diags.error(sel.argument->loc, std::string("expected a number, got ") +
                                       typeName(at));
    return;
  }
  // Constant arguments are checked here; params at launch are not.
  bool constant = true;
  std::vector<const Expr *> stack{sel.argument.get()};
  while (!stack.empty()) {
    const Expr *e = stack.back();
    stack.pop_back();
    if (e->kind == ExprKind::Name && e->nameKind != NameKind::Const)
      constant = false;
    for (const ExprPtr &a : e->args)
      stack.push_back(a.get());
  }
  if (at == Type::Invalid || !constant)
    return;
  double value;
  Type vt;
  foldConst(*sel.argument, value, vt);
  if (sel.kind == SelectKind::TopK && (value < 1 || value != std::floor(value)))
    diags.error(sel.argument->loc, "expected topk of a positive integer, got " +
                                       printExpr(*sel.argument, v));
  if (sel.kind == SelectKind::Mass && !(value > 0 && value <= 1))
    diags.error(sel.argument->loc, "expected mass in (0, 1], got " +
                                       printExpr(*sel.argument, v));
}

/// f32 values that stay finite in the kernels (constants are folded in
/// double precision here, in f32 there).
static bool finiteF32(const Scalar &s) {
  return s.type != Type::F32 ||
         (std::isfinite(s.f) &&
          std::fabs(s.f) <= double(std::numeric_limits<float>::max()));
}

/// A constant subexpression (literals and consts) whose f32 value becomes
/// infinite or NaN at this node from finite operands: `const c = 1.0 / 0.0;`
/// in a score made every score NaN without a word. NaN is an error (no
/// score can use it); inf a warning, as `inf` may be meant (then write
/// `inf`). Returns the node's value when it is constant.
std::optional<Scalar> Sema::checkFolded(const Expr &e) {
  bool constant = true, operandsFinite = true;
  for (const ExprPtr &a : e.args) {
    std::optional<Scalar> x = checkFolded(*a);
    constant &= x.has_value();
    operandsFinite &= x && finiteF32(*x);
  }
  NoEnv env;
  switch (e.kind) {
  case ExprKind::Name:
    // A const's own definition was checked where it is declared.
    if (e.nameKind != NameKind::Const || e.type == Type::Invalid)
      return std::nullopt;
    return evaluate(e, v, env);
  case ExprKind::Index:
    return std::nullopt;
  default:
    if (!constant || e.type == Type::Invalid)
      return std::nullopt;
    break;
  }
  Scalar s = evaluate(e, v, env);
  if (finiteF32(s) || !operandsFinite)
    return s;
  if (std::isnan(s.f)) {
    diags.error(e.loc, "this constant folds to NaN (as 0/0, inf - inf, "
                       "0 * inf, or a builtin outside its domain do); every "
                       "score it reaches would be NaN");
    return s;
  }
  if (e.kind == ExprKind::FloatLit && std::isinf(s.f))
    return s; // `inf` itself
  bool divByZero = e.kind == ExprKind::Binary &&
                   e.binaryOp == BinaryOp::Div &&
                   evaluate(*e.args[1], v, env).asDouble() == 0;
  std::string sign = s.f < 0 ? "-inf" : "inf";
  diags.warning(e.loc,
                "this constant " +
                    std::string(divByZero ? "divides by zero"
                                          : "overflows f32 (largest "
                                            "3.4e38)") +
                    " and folds to " + sign +
                    "; every score it reaches would be infinite or NaN "
                    "(write '" + sign + "' if that is meant)");
  return s;
}

/// Every expression of the variant through checkFolded, and a constant
/// scale, which multiplies every score, must be finite.
void Sema::checkFolding() {
  for (const ConstDecl &c : v.consts)
    if (c.expr)
      checkFolded(*c.expr);
  for (const ParamDecl &p : v.params)
    if (p.defaultExpr)
      checkFolded(*p.defaultExpr);
  for (const TensorDecl &t : v.tensors)
    for (const ExprPtr &d : t.dims)
      checkFolded(*d);
  for (const LetDecl &l : v.lets)
    if (l.expr)
      checkFolded(*l.expr);
  if (v.scale)
    if (std::optional<Scalar> scale = checkFolded(*v.scale);
        scale && scale->type == Type::F32 && !finiteF32(*scale))
      diags.error(v.scale->loc,
                  "scale folds to " + std::string(std::isnan(scale->f) ? "NaN"
                                                  : scale->f < 0 ? "-inf"
                                                                 : "inf") +
                      "; it multiplies every score, which would all be "
                      "infinite or NaN");
  for (const std::optional<FuncDef> *f : {&v.score, &v.mask, &v.sink})
    if (*f && (*f)->body)
      checkFolded(*(*f)->body);
  if (v.select) {
    if (v.select->blockSize)
      checkFolded(*v.select->blockSize);
    if (v.select->argument)
      checkFolded(*v.select->argument);
  }
}

void Sema::run() {
  size_t before = diags.count();
  checkNames();
  if (diags.count() != before)
    return; // names are ambiguous: everything after would cascade
  checkConsts();
  checkParams();
  checkTensors();
  checkLets();
  if (v.scale) {
    Context ctx("scale");
    ctx.letLimit = static_cast<int>(v.lets.size());
    Type t = check(*v.scale, ctx);
    if (t != Type::Invalid && !isNumeric(t))
      diags.error(v.scale->loc,
                  std::string("expected a number for scale, got ") +
                      typeName(t));
  }
  checkFunc(v.score, "score(s, b, h, q, kv)",
            {IndexVar::S, IndexVar::B, IndexVar::H, IndexVar::Q, IndexVar::KV},
            bit(IndexVar::HKV), Type::F32);
  checkFunc(v.mask, "mask(b, h, q, kv)",
            {IndexVar::B, IndexVar::H, IndexVar::Q, IndexVar::KV},
            bit(IndexVar::HKV), Type::Bool);
  checkFunc(v.sink, "sink(h)", {IndexVar::H}, bit(IndexVar::HKV), Type::F32);
  if (v.sink && !v.allowsSink())
    diags.error(v.sink->loc,
                std::string("a sink joins the softmax denominator; it needs "
                            "normalize = softmax, got ") +
                    normalizeName(v.normalize));
  if (v.select)
    checkSelect(*v.select);
  if (v.kvIndex)
    checkKvIndex();
  if (diags.count() == before)
    checkFolding(); // on fully typed trees only
}

/// kv_index names a captured i32 tensor [B, Hkv, N].
void Sema::checkKvIndex() {
  int t = v.findTensor(*v.kvIndex);
  if (t < 0) {
    std::vector<std::string> names;
    for (const TensorDecl &d : v.tensors)
      names.push_back(d.name);
    std::string hint = closestName(*v.kvIndex, names);
    diags.error(v.kvIndexLoc,
                "kv_index names no captured tensor '" + *v.kvIndex + "'" +
                    (hint.empty() ? "; declare it, e.g. tensor " +
                                        *v.kvIndex + ": i32[B, Hkv, N];"
                                  : "; did you mean '" + hint + "'?"));
    return;
  }
  const TensorDecl &d = v.tensors[t];
  auto isSize = [](const Expr &e, const char *size) {
    return e.kind == ExprKind::Name && e.name == size;
  };
  if (d.dtype != DType::I32 || d.dims.size() != 3 ||
      !isSize(*d.dims[0], "B") || !isSize(*d.dims[1], "Hkv")) {
    diags.error(v.kvIndexLoc,
                "kv_index needs an i32 tensor of shape [B, Hkv, N] (key "
                "positions per batch and kv head); '" + d.name +
                    "' is declared differently");
    return;
  }
  if (v.select)
    diags.error(v.kvIndexLoc, "kv_index and select both choose keys; use "
                              "one of them");
  v.kvIndexTensor = t;
}

void collectLets(const Expr &e, std::vector<bool> &needed) {
  if (e.kind == ExprKind::Name && e.nameKind == NameKind::Let)
    needed[e.ref] = true;
  for (const ExprPtr &a : e.args)
    collectLets(*a, needed);
}

} // namespace

std::vector<int> letsNeededBy(const Variant &variant, const Expr &expr) {
  std::vector<bool> needed(variant.lets.size(), false);
  collectLets(expr, needed);
  // Lets read only earlier lets, so one backward sweep closes the set.
  for (size_t i = variant.lets.size(); i-- > 0;)
    if (needed[i])
      for (int d : variant.lets[i].letDeps)
        needed[d] = true;
  std::vector<int> order;
  for (size_t i = 0; i < needed.size(); ++i)
    if (needed[i])
      order.push_back(static_cast<int>(i));
  return order;
}

void checkProgram(Program &program, Diagnostics &diags) {
  std::set<std::string> names;
  for (Variant &v : program.variants) {
    if (!names.insert(v.name).second)
      diags.error(v.loc, "variant '" + v.name + "' is defined twice");
    Sema(v, diags).run();
  }
}

} // namespace attn::fe
