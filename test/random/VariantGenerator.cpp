//===- VariantGenerator.cpp - random valid .attn variants and cases -------===//
#include "test/random/VariantGenerator.h"

#include "attn/IntMath.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <limits>
#include <map>
#include <set>
#include <sstream>

namespace attn::testing::rdiff {

//===----------------------------------------------------------------------===//
// Rng and nodes
//===----------------------------------------------------------------------===//

uint64_t Rng::next() {
  uint64_t z = (state += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

int64_t Rng::uniform(int64_t lo, int64_t hi) {
  if (hi <= lo)
    return lo;
  uint64_t span = static_cast<uint64_t>(hi - lo) + 1;
  return lo + static_cast<int64_t>(next() % span);
}

double Rng::unit() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }

namespace {
using K = GExpr::K;

GExprP node(GExpr e) { return std::make_shared<const GExpr>(std::move(e)); }
GExpr blank(K kind) {
  GExpr e;
  e.kind = kind;
  return e;
}
} // namespace

GExprP mkInt(int64_t v) {
  GExpr e = blank(K::Int);
  e.i = v;
  return node(std::move(e));
}
GExprP mkFloat(double v, std::string spelling) {
  GExpr e = blank(K::Float);
  e.f = v;
  e.op = std::move(spelling);
  return node(std::move(e));
}
GExprP mkBool(bool v) {
  GExpr e = blank(K::Bool);
  e.i = v;
  return node(std::move(e));
}
GExprP mkInf() { return node(blank(K::Inf)); }
GExprP mkRef(GExpr::K kind, int64_t id) {
  GExpr e = blank(kind);
  e.i = id;
  return node(std::move(e));
}
GExprP mkUnary(const std::string &op, GExprP x) {
  GExpr e = blank(K::Unary);
  e.op = op;
  e.args = {std::move(x)};
  return node(std::move(e));
}
GExprP mkBinary(const std::string &op, GExprP a, GExprP b) {
  GExpr e = blank(K::Binary);
  e.op = op;
  e.args = {std::move(a), std::move(b)};
  return node(std::move(e));
}
GExprP mkTernary(GExprP c, GExprP a, GExprP b) {
  GExpr e = blank(K::Ternary);
  e.args = {std::move(c), std::move(a), std::move(b)};
  return node(std::move(e));
}
GExprP mkCall(const std::string &fn, std::vector<GExprP> args) {
  GExpr e = blank(K::Call);
  e.op = fn;
  e.args = std::move(args);
  return node(std::move(e));
}
GExprP mkRead(int64_t tensor, std::vector<GExprP> indices) {
  GExpr e = blank(K::Read);
  e.i = tensor;
  e.args = std::move(indices);
  return node(std::move(e));
}

namespace {

//===----------------------------------------------------------------------===//
// Printing
//===----------------------------------------------------------------------===//

void removeOrder(VariantSpec &v, char k);

const char *const kIndexNames[] = {"s", "b", "h", "q", "kv", "hkv"};
const char *const kSizeNames[] = {"B", "Hq", "Hkv", "Sq", "Skv", "D", "Dv"};
enum Size { SB, SHq, SHkv, SSq, SSkv, SD, SDv };
enum Index { IS, IB, IH, IQ, IKV, IHKV };
constexpr unsigned bitOf(int i) { return 1u << i; }
constexpr unsigned kAllIndices = 63;

/// Shortest decimal that reads back as `v`, always a float token.
std::string formatFloat(double v) {
  char buf[64];
  for (int p = 1; p <= 17; ++p) {
    std::snprintf(buf, sizeof buf, "%.*g", p, v);
    if (std::strtod(buf, nullptr) == v)
      break;
  }
  std::string s = buf;
  if (s.find_first_of(".eE") == std::string::npos)
    s += ".0";
  return s;
}

int precedence(const GExpr &e) {
  switch (e.kind) {
  case K::Ternary:
    return 0;
  case K::Binary:
    if (e.op == "||")
      return 1;
    if (e.op == "&&")
      return 2;
    if (e.op == "+" || e.op == "-")
      return 4;
    if (e.op == "*" || e.op == "/" || e.op == "%")
      return 5;
    return 3;
  case K::Unary:
    return 6;
  case K::Int:
    return e.i < 0 ? 6 : 7;
  case K::Float:
    return e.f < 0 || std::signbit(e.f) ? 6 : 7;
  default:
    return 7;
  }
}

/// Names of the index variables where an expression is printed: the
/// positional parameters of score/mask/sink, canonical elsewhere.
struct Names {
  std::string index[6] = {"s", "b", "h", "q", "kv", "hkv"};
  const VariantSpec *spec = nullptr;
};

void print(std::string &out, const GExpr &e, int minPrec, const Names &n);

std::string printed(const GExpr &e, int minPrec, const Names &n) {
  std::string s;
  print(s, e, minPrec, n);
  return s;
}

void print(std::string &out, const GExpr &e, int minPrec, const Names &n) {
  bool paren = precedence(e) < minPrec;
  if (paren)
    out += "(";
  const VariantSpec &v = *n.spec;
  switch (e.kind) {
  case K::Int:
    out += std::to_string(e.i);
    break;
  case K::Float:
    out += e.op.empty() ? formatFloat(e.f) : e.op;
    break;
  case K::Bool:
    out += e.i ? "true" : "false";
    break;
  case K::Inf:
    out += "inf";
    break;
  case K::Index:
    // f != 0: the canonical name even inside renamed parameters.
    out += e.f != 0 ? kIndexNames[e.i] : n.index[e.i];
    break;
  case K::Size:
    out += kSizeNames[e.i];
    break;
  case K::Param:
    out += v.params[e.i].name;
    break;
  case K::Const:
    out += v.consts[e.i].name;
    break;
  case K::Let:
    out += v.lets[e.i].name;
    break;
  case K::Unary: {
    std::string x = printed(*e.args[0], 6, n);
    out += e.op;
    if (!x.empty() && (x[0] == '-' || x[0] == '!') && e.op == "-")
      out += " ";
    out += x;
    break;
  }
  case K::Binary: {
    int p = precedence(e);
    print(out, *e.args[0], p, n);
    out += " " + e.op + " ";
    print(out, *e.args[1], p + 1, n);
    break;
  }
  case K::Ternary:
    print(out, *e.args[0], 1, n);
    out += " ? ";
    print(out, *e.args[1], 0, n);
    out += " : ";
    print(out, *e.args[2], 0, n);
    break;
  case K::Call:
  case K::Read: {
    out += e.kind == K::Call ? e.op : v.tensors[e.i].name;
    out += e.kind == K::Call ? "(" : "[";
    for (size_t i = 0; i < e.args.size(); ++i) {
      if (i)
        out += ", ";
      print(out, *e.args[i], 0, n);
    }
    out += e.kind == K::Call ? ")" : "]";
    break;
  }
  }
  if (paren)
    out += ")";
}

//===----------------------------------------------------------------------===//
// Constant evaluation (consts, param defaults, dims, select sizes), with
// the language's semantics (lib/Frontend/Eval.cpp)
//===----------------------------------------------------------------------===//

struct CVal {
  VT type = VT::I;
  int32_t i = 0;
  double f = 0;
  bool b = false;
  double d() const { return type == VT::I ? i : type == VT::F ? f : b; }
};

int32_t wrap32(int64_t v) {
  return static_cast<int32_t>(static_cast<uint32_t>(v));
}

struct NotConstant {};

/// Sizes for dims and sizes in expressions; params by value.
struct ConstEnv {
  const Case *c = nullptr;
  size_t launch = 0;
  bool dims = false; // Skv is the paged capacity in tensor dims
};

CVal evalConst(const GExpr &e, const ConstEnv &env);

int64_t sizeValue(const Case &c, int s, bool dims) {
  switch (s) {
  case SB: return c.B;
  case SHq: return c.Hq;
  case SHkv: return c.Hkv;
  case SSq: return c.Sq;
  case SSkv:
    if (dims && c.paged > 0)
      return std::max<int64_t>(1, (c.Skv + c.paged - 1) / c.paged) * c.paged;
    return c.Skv;
  case SD: return c.D;
  default: return c.Dv;
  }
}

CVal evalConst(const GExpr &e, const ConstEnv &env) {
  const Case &c = *env.c;
  auto promote = [](CVal x) {
    if (x.type == VT::I) {
      x.type = VT::F;
      x.f = x.i;
    }
    return x;
  };
  switch (e.kind) {
  case K::Int:
    return {VT::I, wrap32(e.i)};
  case K::Float:
    return {VT::F, 0, e.f};
  case K::Inf:
    return {VT::F, 0, HUGE_VAL};
  case K::Bool:
    return {VT::B, 0, 0, e.i != 0};
  case K::Size:
    return {VT::I, static_cast<int32_t>(sizeValue(c, static_cast<int>(e.i),
                                                  env.dims))};
  case K::Param: {
    double v = paramValue(c, env.launch, e.i);
    if (c.spec.params[e.i].type == VT::I)
      return {VT::I, static_cast<int32_t>(v)};
    return {VT::F, 0, v};
  }
  case K::Const:
    return evalConst(*c.spec.consts[e.i].expr, env);
  case K::Unary: {
    CVal x = evalConst(*e.args[0], env);
    if (e.op == "!")
      return {VT::B, 0, 0, !x.b};
    if (x.type == VT::I)
      return {VT::I, wrap32(-int64_t(x.i))};
    return {VT::F, 0, -x.f};
  }
  case K::Binary: {
    CVal a = evalConst(*e.args[0], env), b = evalConst(*e.args[1], env);
    const std::string &op = e.op;
    if (op == "&&")
      return {VT::B, 0, 0, a.b && b.b};
    if (op == "||")
      return {VT::B, 0, 0, a.b || b.b};
    bool cmp = op == "<" || op == "<=" || op == ">" || op == ">=" ||
               op == "==" || op == "!=";
    if (cmp) {
      double x = a.d(), y = b.d();
      bool r = op == "<"    ? x < y
               : op == "<=" ? x <= y
               : op == ">"  ? x > y
               : op == ">=" ? x >= y
               : op == "==" ? x == y
                            : x != y;
      return {VT::B, 0, 0, r};
    }
    if (a.type == VT::I && b.type == VT::I) {
      int64_t x = a.i, y = b.i;
      if (op == "+")
        return {VT::I, wrap32(x + y)};
      if (op == "-")
        return {VT::I, wrap32(x - y)};
      if (op == "*")
        return {VT::I, wrap32(x * y)};
      if (op == "/")
        return {VT::I, attn::floorDiv(a.i, b.i)};
      return {VT::I, attn::floorMod(a.i, b.i)};
    }
    double x = promote(a).f, y = promote(b).f;
    if (op == "+")
      return {VT::F, 0, x + y};
    if (op == "-")
      return {VT::F, 0, x - y};
    if (op == "*")
      return {VT::F, 0, x * y};
    if (op == "/")
      return {VT::F, 0, x / y};
    return {VT::F, 0, x - std::floor(x / y) * y};
  }
  case K::Ternary: {
    CVal cond = evalConst(*e.args[0], env);
    CVal a = evalConst(*e.args[1], env), b = evalConst(*e.args[2], env);
    if (a.type == VT::B)
      return cond.b ? a : b;
    if (a.type == VT::F || b.type == VT::F)
      return cond.b ? promote(a) : promote(b);
    return cond.b ? a : b;
  }
  case K::Call: {
    std::vector<CVal> a;
    for (const GExprP &x : e.args)
      a.push_back(evalConst(*x, env));
    const std::string &fn = e.op;
    bool allInt = true;
    for (const CVal &x : a)
      allInt &= x.type == VT::I;
    if (fn == "where") {
      CVal x = a[0].b ? a[1] : a[2];
      if (a[1].type == VT::B)
        return x;
      return a[1].type == VT::F || a[2].type == VT::F ? promote(x) : x;
    }
    if (allInt && (fn == "abs" || fn == "min" || fn == "max" ||
                   fn == "floor" || fn == "ceil" || fn == "sign" ||
                   fn == "clamp" || fn == "int")) {
      if (fn == "abs")
        return {VT::I, a[0].i < 0 ? wrap32(-int64_t(a[0].i)) : a[0].i};
      if (fn == "min")
        return {VT::I, std::min(a[0].i, a[1].i)};
      if (fn == "max")
        return {VT::I, std::max(a[0].i, a[1].i)};
      if (fn == "sign")
        return {VT::I, (a[0].i > 0) - (a[0].i < 0)};
      if (fn == "clamp")
        return {VT::I, std::min(std::max(a[0].i, a[1].i), a[2].i)};
      return a[0];
    }
    double x = a[0].d();
    if (fn == "int") {
      if (std::isnan(x))
        return {VT::I, 0};
      if (x >= 2147483520.0)
        return {VT::I, 2147483520};
      if (x <= -2147483648.0)
        return {VT::I, std::numeric_limits<int32_t>::min()};
      return {VT::I, static_cast<int32_t>(x)};
    }
    double r = 0;
    if (fn == "exp") r = std::exp(x);
    else if (fn == "exp2") r = std::exp2(x);
    else if (fn == "log") r = std::log(x);
    else if (fn == "log2") r = std::log2(x);
    else if (fn == "sqrt") r = std::sqrt(x);
    else if (fn == "rsqrt") r = 1.0 / std::sqrt(x);
    else if (fn == "tanh") r = std::tanh(x);
    else if (fn == "sigmoid") r = 1.0 / (1.0 + std::exp(-x));
    else if (fn == "softplus")
      r = std::max(x, 0.0) + std::log1p(std::exp(-std::fabs(x)));
    else if (fn == "abs") r = std::fabs(x);
    else if (fn == "min") r = std::min(x, a[1].d());
    else if (fn == "max") r = std::max(x, a[1].d());
    else if (fn == "floor") r = std::floor(x);
    else if (fn == "ceil") r = std::ceil(x);
    else if (fn == "sign") r = x > 0 ? 1.0 : x < 0 ? -1.0 : x;
    else if (fn == "clamp") r = std::min(std::max(x, a[1].d()), a[2].d());
    else if (fn == "float") r = x;
    return {VT::F, 0, r};
  }
  default:
    throw NotConstant{};
  }
}

} // namespace

double paramValue(const Case &c, size_t launch, size_t p) {
  if (launch < c.launches.size() && p < c.launches[launch].size() &&
      c.launches[launch][p])
    return *c.launches[launch][p];
  const ParamSpec &ps = c.spec.params[p];
  if (!ps.def)
    return 0;
  ConstEnv env{&c, launch, false};
  try {
    return evalConst(*ps.def, env).d();
  } catch (const NotConstant &) {
    return 0;
  }
}

namespace {

//===----------------------------------------------------------------------===//
// The analysis: intervals, exactness and error bounds
//===----------------------------------------------------------------------===//

constexpr double kMaxF = 1e5;          // |value| of any finite f32 expression
constexpr double kTwo24 = 16777216.0;  // f32 significand
constexpr double kUlp = 0x1p-24;
constexpr double kApprox = 0x1p-21;    // transcendental approximations
constexpr int kUnknownGran = 99;
constexpr double kIntMin = -2147483648.0, kIntMax = 2147483647.0;

/// What an expression may evaluate to.
struct Info {
  VT type = VT::I;
  double lo = 0, hi = 0; // numeric range
  double err = 0;        // F: bound on |kernel f32 - reference f64|
  int gran = 0;          // F, err == 0: value * 2^gran is an integer
  unsigned idx = 0;      // index variables read (through lets too)
  bool negInf = false;   // may be -inf (a masked score)
  int inf = 0;           // the value is +inf (1) or -inf (-1)
  double mag() const { return std::max(std::fabs(lo), std::fabs(hi)); }
};

struct Reject {
  std::string why;
};
[[noreturn]] void reject(const std::string &why) { throw Reject{why}; }

enum class Where {
  Const, ParamDefault, Dim, Let, Scale, Score, Mask, Sink, SelectSize,
  SelectArg
};

struct Ctx {
  Where where = Where::Score;
  unsigned avail = 0; // index variables in scope
  int lets = 0;       // lets visible: [0, lets)
  int consts = 0;     // consts visible: [0, consts)
};

/// Smallest g with v * 2^g an integer (kUnknownGran past 60).
int granOf(double v) {
  if (!std::isfinite(v))
    return kUnknownGran;
  for (int g = 0; g <= 60; ++g) {
    double x = std::ldexp(v, g);
    if (x == std::floor(x))
      return g;
  }
  return kUnknownGran;
}

bool representable(double mag, int gran) {
  return gran < 60 && std::ldexp(mag, gran) < kTwo24;
}

/// f32 is how the kernel holds a double constant.
double f32Error(double v) {
  return std::fabs(v - static_cast<double>(static_cast<float>(v)));
}

Info pointF(double v) {
  Info r;
  r.type = VT::F;
  r.lo = r.hi = v;
  r.err = f32Error(v);
  r.gran = r.err == 0 ? granOf(v) : kUnknownGran;
  return r;
}

Info pointI(double v) {
  Info r;
  r.type = VT::I;
  r.lo = r.hi = v;
  return r;
}

Info asF(Info x) {
  if (x.type == VT::B)
    reject("a boolean where a number is expected");
  if (x.type == VT::I) {
    x.type = VT::F;
    x.gran = 0;
    x.err = x.mag() < kTwo24 ? 0 : x.mag() * kUlp;
  }
  return x;
}

void finite(const Info &x) {
  if (x.inf || x.negInf)
    reject("an infinite operand");
}

void clampInt(Info &r) {
  if (r.lo < kIntMin || r.hi > kIntMax) // wraps: anything
    r.lo = kIntMin, r.hi = kIntMax;
}

/// The result of an f32 operation whose exact value lies in [lo, hi]:
/// exact when the operands are and the result fits the significand.
void rounded(Info &r, bool exactOperands, double extraErr = 0) {
  if (exactOperands && representable(r.mag(), r.gran)) {
    r.err = 0;
    return;
  }
  r.err += r.mag() * kUlp + extraErr;
  r.gran = kUnknownGran;
}

void checkF(const Info &r) {
  if (!(r.mag() <= kMaxF))
    reject("f32 value out of range");
}

Info hull(const Info &a, const Info &b) {
  Info r = a;
  r.lo = std::min(a.lo, b.lo);
  r.hi = std::max(a.hi, b.hi);
  r.err = std::max(a.err, b.err);
  r.gran = std::max(a.gran, b.gran);
  r.idx = a.idx | b.idx;
  r.negInf = a.negInf || b.negInf;
  return r;
}

/// Branches of ?: and where(): booleans, or numbers promoted together; a
/// `-inf` branch makes the result possibly -inf.
Info branches(Info a, Info b, unsigned condIdx) {
  if ((a.type == VT::B) != (b.type == VT::B))
    reject("branches of different kinds");
  if (a.inf == 1 || b.inf == 1)
    reject("+inf branch");
  Info r;
  if (a.inf == -1 && b.inf == -1) {
    r = a;
  } else if (a.inf == -1 || b.inf == -1) {
    r = a.inf == -1 ? asF(b) : asF(a);
    r.negInf = true;
  } else if (a.type == VT::B) {
    r = hull(a, b);
  } else if (a.type == VT::I && b.type == VT::I) {
    r = hull(a, b);
  } else {
    r = hull(asF(a), asF(b));
  }
  r.idx = a.idx | b.idx | condIdx;
  return r;
}

bool isCompare(const std::string &op) {
  return op == "<" || op == "<=" || op == ">" || op == ">=" || op == "==" ||
         op == "!=";
}

int64_t floorDivD(double a, double b) {
  return static_cast<int64_t>(std::floor(a / b));
}

class Analyzer {
public:
  explicit Analyzer(const Case &c) : c(c), v(c.spec) {}

  Info expr(const GExpr &e, const Ctx &ctx) {
    Info r = compute(e, ctx);
    if (r.type == VT::F && !r.inf)
      checkF(r);
    return r;
  }

  Info constInfo(int i) {
    if (auto it = consts.find(i); it != consts.end())
      return it->second;
    Ctx ctx{Where::Const, 0, 0, i};
    Info in = expr(*v.consts[i].expr, ctx);
    if (in.inf || in.negInf)
      reject("an infinite const");
    ConstEnv env{&c, 0, false};
    CVal val = evalConst(*v.consts[i].expr, env);
    Info r;
    if (val.type == VT::B) {
      r.type = VT::B;
    } else if (val.type == VT::I) {
      r = pointI(val.i);
    } else {
      if (!std::isfinite(val.f))
        reject("a non-finite const");
      r = pointF(val.f);
      r.err = std::max(r.err, in.err);
      if (r.err != 0)
        r.gran = kUnknownGran;
    }
    return consts[i] = r;
  }

  Info paramInfo(int p) {
    const ParamSpec &ps = v.params[p];
    Info r;
    r.type = ps.type;
    bool first = true;
    int gran = 0;
    for (size_t l = 0; l < std::max<size_t>(1, c.launches.size()); ++l) {
      double x = paramValue(c, l, p);
      if (!std::isfinite(x))
        reject("a non-finite param value");
      if (ps.type == VT::F && f32Error(x) != 0)
        reject("an f32 param value that f32 does not hold");
      r.lo = first ? x : std::min(r.lo, x);
      r.hi = first ? x : std::max(r.hi, x);
      gran = std::max(gran, granOf(x));
      first = false;
    }
    if (ps.type == VT::F) {
      r.gran = gran;
      r.err = 0; // the reference reads the value the kernel reads
    }
    return r;
  }

  Info tensorInfo(int t) {
    const TensorSpec &ts = v.tensors[t];
    Info r;
    bool isInt = ts.dtype == "i32";
    r.type = isInt ? VT::I : VT::F;
    switch (ts.fill) {
    case Fill::Ints:
      r.lo = ts.lo, r.hi = ts.hi;
      break;
    case Fill::Sorted:
      r.lo = 0, r.hi = 4096;
      break;
    case Fill::Positions:
      r.lo = -1, r.hi = static_cast<double>(c.Skv) + 2;
      break;
    case Fill::Dyadic:
      r.lo = ts.lo / 8.0, r.hi = ts.hi / 8.0;
      r.gran = 3;
      break;
    case Fill::Normal:
      r.lo = -6, r.hi = 6;
      r.gran = kUnknownGran; // any f32 (err 0: both read the same value)
      break;
    }
    if (isInt != (ts.fill == Fill::Ints || ts.fill == Fill::Sorted ||
                  ts.fill == Fill::Positions))
      reject("a fill that does not suit the tensor's dtype");
    return r;
  }

  Info letInfo(int i) {
    if (auto it = lets.find(i); it != lets.end())
      return it->second;
    Ctx ctx{Where::Let, kAllIndices, i, int(v.consts.size())};
    Info r = expr(*v.lets[i].expr, ctx);
    return lets[i] = r;
  }

  /// The scale's value (the default 1/sqrt(D) without one).
  Info scaleInfo() {
    if (scale)
      return *scale;
    Info r;
    if (!v.scale) {
      r = pointF(1.0 / std::sqrt(double(c.D)));
      r.err = r.mag() * kUlp;
    } else {
      Ctx ctx{Where::Scale, 0, int(v.lets.size()), int(v.consts.size())};
      r = asF(expr(*v.scale, ctx));
      finite(r);
    }
    scale = r;
    return r;
  }

  /// s = (q . k) * scale with unit-normal q and k: within six standard
  /// deviations, |scale| sqrt(D).
  Info sInfo() {
    Info sc = scaleInfo();
    double sigma = sc.mag() * std::sqrt(double(c.D));
    Info r;
    r.type = VT::F;
    r.lo = -6 * sigma;
    r.hi = 6 * sigma;
    r.gran = kUnknownGran;
    r.err = sc.mag() * c.D * kUlp * 2 + 6 * std::sqrt(double(c.D)) * sc.err +
            6 * sigma * kUlp;
    r.idx = bitOf(IS);
    return r;
  }

private:
  Info compute(const GExpr &e, const Ctx &ctx);
  Info name(const GExpr &e, const Ctx &ctx);
  Info unary(const GExpr &e, const Ctx &ctx);
  Info binary(const GExpr &e, const Ctx &ctx);
  Info call(const GExpr &e, const Ctx &ctx);

  const Case &c;
  const VariantSpec &v;
  std::map<int, Info> consts, lets;
  std::optional<Info> scale;
};

bool constOnly(Where w) {
  return w == Where::Const || w == Where::ParamDefault ||
         w == Where::SelectSize;
}

Info Analyzer::compute(const GExpr &e, const Ctx &ctx) {
  bool dim = ctx.where == Where::Dim;
  switch (e.kind) {
  case K::Int:
    if (e.i > 2147483647 || e.i < -2147483648LL)
      reject("integer literal out of range");
    return pointI(double(e.i));
  case K::Float: {
    if (dim)
      reject("a float in a dimension");
    if (!std::isfinite(e.f))
      reject("a non-finite literal");
    return pointF(e.f);
  }
  case K::Bool: {
    if (dim)
      reject("a boolean in a dimension");
    Info r;
    r.type = VT::B;
    return r;
  }
  case K::Inf: {
    if (dim)
      reject("inf in a dimension");
    Info r;
    r.type = VT::F;
    r.inf = 1;
    return r;
  }
  case K::Index:
  case K::Size:
  case K::Param:
  case K::Const:
  case K::Let:
    return name(e, ctx);
  case K::Unary:
    return unary(e, ctx);
  case K::Binary:
    return binary(e, ctx);
  case K::Ternary: {
    if (dim)
      reject("?: in a dimension");
    Info cond = expr(*e.args[0], ctx);
    if (cond.type != VT::B)
      reject("a non-boolean condition");
    return branches(expr(*e.args[1], ctx), expr(*e.args[2], ctx), cond.idx);
  }
  case K::Call:
    if (dim)
      reject("a call in a dimension");
    return call(e, ctx);
  case K::Read: {
    if (dim || constOnly(ctx.where))
      reject("a tensor read outside expressions");
    if (e.i < 0 || e.i >= int64_t(v.tensors.size()))
      reject("no such tensor");
    if (e.args.size() != v.tensors[e.i].dims.size())
      reject("wrong number of indices");
    unsigned idx = 0;
    for (const GExprP &a : e.args) {
      Info in = expr(*a, ctx);
      if (in.type != VT::I)
        reject("a non-integer index");
      idx |= in.idx;
    }
    Info r = tensorInfo(int(e.i));
    r.idx = idx;
    return r;
  }
  }
  reject("unknown node");
}

Info Analyzer::name(const GExpr &e, const Ctx &ctx) {
  Where w = ctx.where;
  switch (e.kind) {
  case K::Index: {
    if (constOnly(w) || w == Where::Dim || w == Where::Scale ||
        w == Where::SelectArg)
      reject("an index where none is available");
    if (!(ctx.avail & bitOf(int(e.i))))
      reject(std::string("index '") + kIndexNames[e.i] + "' not available");
    if (e.i == IS)
      return sInfo();
    int64_t n = e.i == IB    ? c.B
                : e.i == IH  ? c.Hq
                : e.i == IQ  ? c.Sq
                : e.i == IKV ? c.Skv
                             : c.Hkv;
    Info r;
    r.type = VT::I;
    r.lo = 0;
    r.hi = double(std::max<int64_t>(n, 1) - 1);
    r.idx = bitOf(int(e.i));
    return r;
  }
  case K::Size:
    if (constOnly(w))
      reject("a size in a constant");
    return pointI(double(sizeValue(c, int(e.i), w == Where::Dim)));
  case K::Param: {
    if (constOnly(w))
      reject("a param in a constant");
    if (e.i < 0 || e.i >= int64_t(v.params.size()))
      reject("no such param");
    if (w == Where::Dim && v.params[e.i].type != VT::I)
      reject("an f32 param in a dimension");
    return paramInfo(int(e.i));
  }
  case K::Const: {
    if (e.i < 0 || e.i >= int64_t(v.consts.size()) ||
        (w == Where::Const && e.i >= ctx.consts))
      reject("const not visible");
    Info r = constInfo(int(e.i));
    if (w == Where::Dim && r.type != VT::I)
      reject("a non-integer const in a dimension");
    return r;
  }
  case K::Let: {
    if (constOnly(w) || w == Where::Dim || w == Where::SelectArg)
      reject("a let where lets are not visible");
    if (e.i < 0 || e.i >= ctx.lets)
      reject("let not visible");
    Info r = letInfo(int(e.i));
    if (r.idx & ~ctx.avail)
      reject("a let reading indices not available here");
    return r;
  }
  default:
    reject("not a name");
  }
}

Info Analyzer::unary(const GExpr &e, const Ctx &ctx) {
  Info x = expr(*e.args[0], ctx);
  if (e.op == "!") {
    if (ctx.where == Where::Dim)
      reject("! in a dimension");
    if (x.type != VT::B)
      reject("! of a number");
    return x;
  }
  if (x.type == VT::B)
    reject("- of a boolean");
  if (x.inf) {
    x.inf = -x.inf;
    return x;
  }
  finite(x);
  Info r = x;
  r.lo = -x.hi;
  r.hi = -x.lo;
  if (x.type == VT::I && x.lo <= kIntMin)
    r.lo = kIntMin, r.hi = kIntMax;
  return r;
}

Info Analyzer::binary(const GExpr &e, const Ctx &ctx) {
  const std::string &op = e.op;
  Info a = expr(*e.args[0], ctx), b = expr(*e.args[1], ctx);
  unsigned idx = a.idx | b.idx;
  if (ctx.where == Where::Dim &&
      !(op == "+" || op == "-" || op == "*" || op == "/" || op == "%"))
    reject("a dimension takes + - * / % only");
  if (op == "&&" || op == "||") {
    if (a.type != VT::B || b.type != VT::B)
      reject("&& || of numbers");
    a.idx = idx;
    return a;
  }
  if (isCompare(op)) {
    Info r;
    r.type = VT::B;
    r.idx = idx;
    if (a.type == VT::B || b.type == VT::B) {
      if (a.type != b.type || (op != "==" && op != "!="))
        reject("comparison of a boolean");
      return r;
    }
    finite(a);
    finite(b);
    if (a.type == VT::I && b.type == VT::I)
      return r;
    Info fa = asF(a), fb = asF(b);
    if (fa.err == 0 && fb.err == 0)
      return r;
    // Inexact values only where the answer cannot flip.
    double margin = 1e-3 + fa.err + fb.err;
    if (fa.lo > fb.hi + margin || fb.lo > fa.hi + margin)
      return r;
    reject("comparison of inexact values");
  }
  if (a.type == VT::B || b.type == VT::B)
    reject("arithmetic on booleans");
  finite(a);
  finite(b);
  Info r;
  r.idx = idx;
  if (a.type == VT::I && b.type == VT::I) {
    r.type = VT::I;
    double c4[4];
    if (op == "+" || op == "-" || op == "*") {
      if (op == "+")
        r.lo = a.lo + b.lo, r.hi = a.hi + b.hi;
      else if (op == "-")
        r.lo = a.lo - b.hi, r.hi = a.hi - b.lo;
      else {
        c4[0] = a.lo * b.lo, c4[1] = a.lo * b.hi, c4[2] = a.hi * b.lo,
        c4[3] = a.hi * b.hi;
        r.lo = *std::min_element(c4, c4 + 4);
        r.hi = *std::max_element(c4, c4 + 4);
      }
      clampInt(r);
      return r;
    }
    // Floor division and modulo; a zero divisor gives 0 (/) or the
    // dividend (%).
    bool first = true;
    auto add = [&](double x) {
      r.lo = first ? x : std::min(r.lo, x);
      r.hi = first ? x : std::max(r.hi, x);
      first = false;
    };
    bool zero = b.lo <= 0 && b.hi >= 0;
    std::vector<std::pair<double, double>> parts;
    if (b.hi >= 1)
      parts.push_back({std::max(1.0, b.lo), b.hi});
    if (b.lo <= -1)
      parts.push_back({b.lo, std::min(-1.0, b.hi)});
    if (op == "/") {
      if (zero)
        add(0);
      for (auto [lo, hi] : parts)
        for (double x : {a.lo, a.hi})
          for (double y : {lo, hi})
            add(double(floorDivD(x, y)));
      if (a.lo <= kIntMin && b.lo <= -1 && b.hi >= -1)
        add(kIntMin), add(kIntMax);
    } else {
      if (zero)
        add(a.lo), add(a.hi);
      for (auto [lo, hi] : parts) {
        if (lo > 0)
          add(0), add(hi - 1);
        else
          add(lo + 1), add(0);
      }
    }
    clampInt(r);
    return r;
  }
  Info fa = asF(a), fb = asF(b);
  bool exact = fa.err == 0 && fb.err == 0;
  r.type = VT::F;
  r.err = 0;
  if (op == "+" || op == "-") {
    r.lo = op == "+" ? fa.lo + fb.lo : fa.lo - fb.hi;
    r.hi = op == "+" ? fa.hi + fb.hi : fa.hi - fb.lo;
    r.gran = std::max(fa.gran, fb.gran);
    r.err = fa.err + fb.err;
    rounded(r, exact);
  } else if (op == "*") {
    double c4[4] = {fa.lo * fb.lo, fa.lo * fb.hi, fa.hi * fb.lo,
                    fa.hi * fb.hi};
    r.lo = *std::min_element(c4, c4 + 4);
    r.hi = *std::max_element(c4, c4 + 4);
    r.gran = std::min(kUnknownGran, fa.gran + fb.gran);
    r.err = fa.err * fb.mag() + fb.err * fa.mag() + fa.err * fb.err;
    rounded(r, exact);
  } else if (op == "/") {
    if (!(fb.lo >= 0.25 || fb.hi <= -0.25))
      reject("a divisor near 0");
    double c4[4] = {fa.lo / fb.lo, fa.lo / fb.hi, fa.hi / fb.lo,
                    fa.hi / fb.hi};
    r.lo = *std::min_element(c4, c4 + 4);
    r.hi = *std::max_element(c4, c4 + 4);
    double bmin = std::min(std::fabs(fb.lo), std::fabs(fb.hi));
    // Division by an exact power of two is exact.
    bool pow2 = fb.lo == fb.hi && fb.err == 0 &&
                std::fabs(fb.lo) == std::exp2(std::round(std::log2(
                                        std::fabs(fb.lo))));
    if (exact && pow2) {
      int k = int(std::round(std::log2(std::fabs(fb.lo))));
      r.gran = std::min(kUnknownGran, std::max(0, fa.gran + k));
      rounded(r, true, 0);
    } else {
      r.gran = kUnknownGran;
      r.err = (fa.err + r.mag() * fb.err) / bmin;
      rounded(r, false, r.mag() * 2 * kUlp);
    }
  } else { // float %: exact operands, a constant divisor
    if (!exact)
      reject("float % of inexact values");
    if (fb.lo != fb.hi || std::fabs(fb.lo) < 0.5 || fb.gran > 3 ||
        fa.gran > 4 || fa.mag() > 512)
      reject("float % outside its exact range");
    r.lo = std::min(0.0, fb.lo);
    r.hi = std::max(0.0, fb.hi);
    r.gran = std::max(fa.gran, fb.gran);
    r.err = 0;
  }
  return r;
}

Info Analyzer::call(const GExpr &e, const Ctx &ctx) {
  const std::string &fn = e.op;
  std::vector<Info> a;
  for (const GExprP &x : e.args)
    a.push_back(expr(*x, ctx));
  auto arity = [&](size_t n) {
    if (a.size() != n)
      reject("wrong arity for " + fn);
  };
  unsigned idx = 0;
  for (const Info &x : a)
    idx |= x.idx;
  if (fn == "where") {
    arity(3);
    if (a[0].type != VT::B)
      reject("where of a non-boolean");
    return branches(a[1], a[2], a[0].idx);
  }
  for (const Info &x : a)
    if (x.type == VT::B)
      reject(fn + " of a boolean");
  // min/max/clamp accept the infinities that leave a value unchanged.
  if (fn == "min" || fn == "max") {
    arity(2);
    int neutral = fn == "min" ? 1 : -1;
    for (int k = 0; k < 2; ++k)
      if (a[k].inf == neutral) {
        Info r = asF(a[1 - k]);
        finite(r);
        r.idx = idx;
        return r;
      }
    finite(a[0]);
    finite(a[1]);
    Info x = a[0], y = a[1];
    if (x.type == VT::F || y.type == VT::F)
      x = asF(x), y = asF(y);
    Info r = x;
    r.lo = fn == "min" ? std::min(x.lo, y.lo) : std::max(x.lo, y.lo);
    r.hi = fn == "min" ? std::min(x.hi, y.hi) : std::max(x.hi, y.hi);
    r.err = std::max(x.err, y.err);
    r.gran = std::max(x.gran, y.gran);
    r.idx = idx;
    return r;
  }
  if (fn == "clamp") {
    arity(3);
    finite(a[0]);
    if (a[1].inf == 1 || a[2].inf == -1 || a[1].negInf || a[2].negInf)
      reject("clamp bound of the wrong infinity");
    bool anyF = false;
    for (const Info &x : a)
      anyF |= x.type == VT::F;
    Info x = anyF ? asF(a[0]) : a[0];
    Info lo = a[1].inf ? x : anyF ? asF(a[1]) : a[1];
    Info hi = a[2].inf ? x : anyF ? asF(a[2]) : a[2];
    Info r = x;
    double l0 = a[1].inf ? -INFINITY : lo.lo, l1 = a[1].inf ? -INFINITY : lo.hi;
    double h0 = a[2].inf ? INFINITY : hi.lo, h1 = a[2].inf ? INFINITY : hi.hi;
    r.lo = std::min(std::max(x.lo, l0), h0);
    r.hi = std::min(std::max(x.hi, l1), h1);
    if (r.lo > r.hi)
      std::swap(r.lo, r.hi);
    r.err = std::max({x.err, a[1].inf ? 0.0 : lo.err, a[2].inf ? 0.0 : hi.err});
    r.gran = std::max({x.gran, a[1].inf ? 0 : lo.gran, a[2].inf ? 0 : hi.gran});
    r.idx = idx;
    return r;
  }
  for (const Info &x : a)
    finite(x);
  if (fn == "float") {
    arity(1);
    Info r = asF(a[0]);
    return r;
  }
  if (fn == "int") {
    arity(1);
    if (a[0].type == VT::I)
      return a[0];
    if (a[0].err != 0)
      reject("int() of an inexact value");
    Info r = a[0];
    r.type = VT::I;
    r.lo = std::trunc(r.lo);
    r.hi = std::trunc(r.hi);
    r.gran = 0;
    clampInt(r);
    return r;
  }
  if (fn == "abs") {
    arity(1);
    Info r = a[0];
    if (r.lo >= 0)
      return r;
    if (r.hi <= 0)
      r.lo = -a[0].hi, r.hi = -a[0].lo;
    else
      r.lo = 0, r.hi = a[0].mag();
    if (r.type == VT::I)
      clampInt(r);
    return r;
  }
  if (fn == "floor" || fn == "ceil" || fn == "sign") {
    arity(1);
    Info r = a[0];
    if (r.type == VT::I) {
      if (fn == "sign")
        r.lo = r.lo > 0 ? 1 : r.lo < 0 ? -1 : 0,
        r.hi = r.hi > 0 ? 1 : r.hi < 0 ? -1 : 0;
      return r;
    }
    if (fn == "sign") {
      // Inexact values only away from 0.
      if (r.err != 0 && !(r.lo > 1e-3 + r.err || r.hi < -1e-3 - r.err))
        reject("sign of an inexact value near 0");
      r.lo = r.lo > 0 ? 1 : r.lo < 0 ? -1 : 0;
      r.hi = r.hi > 0 ? 1 : r.hi < 0 ? -1 : 0;
    } else {
      if (r.err != 0)
        reject(fn + " of an inexact value");
      r.lo = fn == "floor" ? std::floor(r.lo) : std::ceil(r.lo);
      r.hi = fn == "floor" ? std::floor(r.hi) : std::ceil(r.hi);
    }
    r.err = 0;
    r.gran = 0;
    return r;
  }
  // Transcendentals: f32 results within a few ulp of the exact function.
  arity(1);
  Info x = asF(a[0]);
  Info r;
  r.type = VT::F;
  r.idx = idx;
  r.gran = kUnknownGran;
  auto mono = [&](double (*f)(double)) {
    r.lo = f(x.lo);
    r.hi = f(x.hi);
  };
  if (fn == "exp") {
    if (x.hi > 3.5 || x.lo < -20)
      reject("exp argument out of range");
    mono([](double y) { return std::exp(y); });
    r.err = r.hi * x.err + r.hi * kApprox;
  } else if (fn == "exp2") {
    if (x.hi > 5 || x.lo < -28)
      reject("exp2 argument out of range");
    mono([](double y) { return std::exp2(y); });
    r.err = r.hi * 0.7 * x.err + r.hi * kApprox;
  } else if (fn == "log" || fn == "log2") {
    if (x.lo < 0.05 || x.hi > 1e4)
      reject(fn + " argument out of range");
    double k = fn == "log" ? 1.0 : 1.0 / std::log(2.0);
    r.lo = std::log(x.lo) * k;
    r.hi = std::log(x.hi) * k;
    r.err = k * x.err / x.lo + r.mag() * kApprox + kUlp;
  } else if (fn == "sqrt") {
    if (!((x.err == 0 && x.lo >= 0) || x.lo >= 0.01) || x.hi > 1e6)
      reject("sqrt argument out of range");
    mono([](double y) { return std::sqrt(y); });
    r.err = (x.err == 0 ? 0 : 0.5 * x.err / std::sqrt(x.lo)) +
            r.hi * kApprox;
  } else if (fn == "rsqrt") {
    if (x.lo < 0.25 || x.hi > 1e6)
      reject("rsqrt argument out of range");
    r.lo = 1 / std::sqrt(x.hi);
    r.hi = 1 / std::sqrt(x.lo);
    r.err = 0.5 * std::pow(x.lo, -1.5) * x.err + r.hi * kApprox;
  } else if (fn == "tanh") {
    if (x.mag() > 1e3)
      reject("tanh argument out of range");
    mono([](double y) { return std::tanh(y); });
    r.err = x.err + kApprox;
  } else if (fn == "sigmoid") {
    if (x.mag() > 1e3)
      reject("sigmoid argument out of range");
    mono([](double y) { return 1 / (1 + std::exp(-y)); });
    r.err = 0.25 * x.err + kApprox;
  } else if (fn == "softplus") {
    if (x.mag() > 1e3)
      reject("softplus argument out of range");
    mono([](double y) {
      return std::max(y, 0.0) + std::log1p(std::exp(-std::fabs(y)));
    });
    r.err = x.err + r.hi * kApprox + kUlp;
  } else {
    reject("unknown builtin " + fn);
  }
  return r;
}

} // namespace

namespace {

//===----------------------------------------------------------------------===//
// Whole-case checks
//===----------------------------------------------------------------------===//

const std::set<std::string> &reservedNames() {
  static const std::set<std::string> names = {
      "variant", "param", "const", "tensor", "scale", "score", "mask", "sink",
      "normalize", "select", "let", "out_dtype", "kv_index", "true", "false",
      "inf", "s", "b", "h", "q", "kv", "hkv", "i32", "f32", "f16", "bf16",
      "B", "Hq", "Hkv", "Sq", "Skv", "D", "Dv", "exp", "exp2", "log", "log2",
      "sqrt", "rsqrt", "tanh", "sigmoid", "softplus", "abs", "min", "max",
      "floor", "ceil", "sign", "clamp", "where", "float", "int"};
  return names;
}

bool isGpu(const std::string &target) { return target != "cpu"; }

struct NormLimits {
  double lo, hi, gain;
};

/// Where a normalizer's answer stays comparable under docs/numerics.md's
/// bounds: score range, and how much an error in the score moves o
/// (softmax and softplus average; sigmoid, relu and relu2 sum over keys).
NormLimits normLimits(const Case &c) {
  double root = std::sqrt(double(std::max<int64_t>(c.Skv, 1)));
  std::string n = c.spec.normalizer();
  if (n == "softmax")
    return {-60, 60, 4};
  if (n == "softplus")
    return {-20, 60, 4};
  if (n == "sigmoid")
    return {-40, 40, 0.25 * root};
  // relu and relu2 sum p v over the keys without a denominator: where o
  // is f32 (absolute bound 2e-4), keep |o| ~ max p sqrt(Skv) small enough
  // for f32 sums to stay well inside it.
  bool absolute = !isGpu(c.target) &&
                  (c.spec.outDtype == "f32" ||
                   (c.spec.outDtype.empty() && c.dtype == "f32"));
  double pmax = absolute ? 30 / root : 1e9;
  if (n == "relu")
    return {-1e4, std::min(8.0, pmax), root};
  double hi = std::min(6.0, std::sqrt(pmax));
  return {-1e4, hi, 2 * hi * root}; // relu2: slope 2 |score|
}

std::string scoreProblem(const Info &in, const Case &c) {
  if (in.type == VT::B)
    return "a boolean score";
  if (in.inf == 1)
    return "a +inf score";
  if (in.inf == -1)
    return ""; // every entry masked
  NormLimits l = normLimits(c);
  if (in.lo < l.lo || in.hi > l.hi)
    return "score out of the normalizer's range";
  if (in.err * l.gain > 1e-4)
    return "score too inexact";
  return "";
}

std::string sinkProblem(const Info &in) {
  if (in.type == VT::B || in.inf || in.negInf)
    return "a sink that is not a finite number";
  if (in.lo < -10 || in.hi > 12)
    return "sink out of range";
  if (in.err > 2e-5)
    return "sink too inexact";
  return "";
}

Ctx ctxFor(Where w, const VariantSpec &v) {
  Ctx ctx;
  ctx.where = w;
  ctx.lets = int(v.lets.size());
  ctx.consts = int(v.consts.size());
  switch (w) {
  case Where::Score:
    ctx.avail = kAllIndices;
    break;
  case Where::Mask:
    ctx.avail = kAllIndices & ~bitOf(IS);
    break;
  case Where::Sink:
    ctx.avail = bitOf(IH) | bitOf(IHKV);
    break;
  case Where::Let:
    ctx.avail = kAllIndices;
    break;
  case Where::SelectArg:
    ctx.lets = 0;
    break;
  default:
    break;
  }
  return ctx;
}

std::vector<int64_t> tensorShape(const Case &c, const TensorSpec &t,
                                 size_t launch) {
  std::vector<int64_t> shape;
  ConstEnv env{&c, launch, true};
  for (const GExprP &d : t.dims)
    shape.push_back(evalConst(*d, env).i);
  return shape;
}

void checkFuncNames(const Case &c, const FuncSpec &f, size_t arity,
                    const int *positions) {
  if (f.names.size() != arity)
    reject("wrong arity");
  std::set<std::string> seen;
  const VariantSpec &v = c.spec;
  std::set<std::string> taken;
  for (const auto &p : v.params)
    taken.insert(p.name);
  for (const auto &x : v.consts)
    taken.insert(x.name);
  for (const auto &x : v.tensors)
    taken.insert(x.name);
  for (const auto &x : v.lets)
    taken.insert(x.name);
  for (size_t i = 0; i < arity; ++i) {
    const std::string &n = f.names[i];
    if (!seen.insert(n).second || taken.count(n))
      reject("a parameter name used twice");
    for (int k = 0; k < 6; ++k)
      if (n == kIndexNames[k] && k != positions[i])
        reject("a parameter that swaps indices");
    if (n != kIndexNames[positions[i]] && reservedNames().count(n))
      reject("a reserved parameter name");
  }
}

const int kScorePositions[] = {IS, IB, IH, IQ, IKV};
const int kMaskPositions[] = {IB, IH, IQ, IKV};
const int kSinkPositions[] = {IH};

void validateOrThrow(const Case &c) {
  const VariantSpec &v = c.spec;
  bool gpu = isGpu(c.target);
  // Options and shape.
  static const std::set<std::string> targets = {"cpu", "sm_80", "sm_90a",
                                                "gfx942", "gfx90a", "gfx950"};
  if (!targets.count(c.target))
    reject("unknown target");
  if (gpu ? (c.dtype != "f16" && c.dtype != "bf16")
          : (c.dtype != "f32" && c.dtype != "f16" && c.dtype != "bf16"))
    reject("dtype");
  if (c.D < 1 || c.Dv < 1 || c.D > 512 || c.Dv > 512)
    reject("head dims");
  if (gpu && (c.D % 16 || c.Dv % 16 || c.D > 128 || c.Dv > 128))
    reject("GPU head dims");
  if (c.B < 1 || c.Hkv < 1 || c.Hq < c.Hkv || c.Hq % c.Hkv || c.Sq < 1 ||
      c.Skv < 1)
    reject("shape");
  if (c.B * c.Hq * c.Sq * c.Skv > 400000)
    reject("shape too large");
  if (gpu) {
    if (c.blockQ != 0 && !(c.blockQ == 64 && c.target == "sm_90a"))
      reject("GPU block-q");
    if (c.blockKV % 16 || c.blockKV > 64 || c.blockKV < 0)
      reject("GPU block-kv");
  } else if (v.select) {
    ConstEnv env{&c, 0, false};
    int64_t n = evalConst(*v.select->size, env).i;
    if ((c.blockQ && n % c.blockQ) || (c.blockKV && n % c.blockKV))
      reject("tiles that do not divide the select block");
  }
  if (c.blockQ < 0 || c.blockKV < 0 || c.blockQ > 128 || c.blockKV > 128)
    reject("tiles");
  if (c.splitKv != "auto" && std::atoi(c.splitKv.c_str()) < 1)
    reject("split");
  if (c.paged < 0)
    reject("paged");
  if (c.gpuLoads != "auto" && !(c.target == "sm_90a" && c.gpuLoads == "cp.async"))
    reject("gpu loads");
  static const std::set<std::string> norms = {"", "softmax", "sigmoid",
                                              "relu", "relu2", "softplus"};
  if (!norms.count(v.normalize))
    reject("normalizer");
  if (c.lse && !v.hasRowSum())
    reject("lse without a row sum");
  if (!v.outDtype.empty() && v.outDtype != "f32" && v.outDtype != "f16" &&
      v.outDtype != "bf16")
    reject("out_dtype");
  // Declarations: names, print order, launches.
  std::set<std::string> names;
  auto declare = [&](const std::string &n) {
    if (n.empty() || reservedNames().count(n) || !names.insert(n).second)
      reject("a bad or repeated name '" + n + "'");
  };
  for (const auto &p : v.params)
    declare(p.name);
  for (const auto &x : v.consts)
    declare(x.name);
  for (const auto &x : v.tensors)
    declare(x.name);
  for (const auto &x : v.lets)
    declare(x.name);
  std::map<char, std::set<int>> printed;
  for (auto [k, i] : v.order)
    if (!printed[k].insert(i).second)
      reject("a declaration printed twice");
  auto expectPrinted = [&](char k, size_t n) {
    if (printed[k].size() != n ||
        (n && (*printed[k].begin() != 0 || *printed[k].rbegin() != int(n) - 1)))
      reject(std::string("print order misses '") + k + "'");
  };
  expectPrinted('p', v.params.size());
  expectPrinted('c', v.consts.size());
  expectPrinted('t', v.tensors.size());
  expectPrinted('l', v.lets.size());
  expectPrinted('S', v.scale ? 1 : 0);
  expectPrinted('s', v.score ? 1 : 0);
  expectPrinted('m', v.mask ? 1 : 0);
  expectPrinted('k', v.sink ? 1 : 0);
  expectPrinted('n', v.normalize.empty() ? 0 : 1);
  expectPrinted('e', v.select ? 1 : 0);
  expectPrinted('o', v.outDtype.empty() ? 0 : 1);
  expectPrinted('x', v.kvIndex >= 0 ? 1 : 0);
  // Consts and lets print in declaration order.
  int lastC = -1, lastL = -1;
  for (auto [k, i] : v.order) {
    if (k == 'c' && i < lastC)
      reject("consts out of order");
    if (k == 'l' && i < lastL)
      reject("lets out of order");
    if (k == 'c')
      lastC = i;
    if (k == 'l')
      lastL = i;
  }
  if (c.launches.empty())
    reject("no launch");
  for (const auto &l : c.launches) {
    if (l.size() != v.params.size())
      reject("launch values do not match the params");
    for (size_t p = 0; p < l.size(); ++p) {
      if (!l[p] && !v.params[p].def)
        reject("a param without default or value");
      if (l[p] && v.params[p].type == VT::I &&
          (*l[p] != std::floor(*l[p]) || std::fabs(*l[p]) > 2147483647.0))
        reject("a non-integer i32 param value");
    }
  }

  Analyzer an(c);
  for (size_t i = 0; i < v.consts.size(); ++i)
    an.constInfo(int(i));
  for (size_t p = 0; p < v.params.size(); ++p) {
    const ParamSpec &ps = v.params[p];
    if (ps.def) {
      Info d = an.expr(*ps.def, ctxFor(Where::ParamDefault, v));
      if (ps.type == VT::I ? d.type != VT::I : d.type == VT::B)
        reject("a param default of the wrong type");
      if (d.inf || d.negInf)
        reject("an infinite default");
    }
    an.paramInfo(int(p));
  }
  for (size_t t = 0; t < v.tensors.size(); ++t) {
    const TensorSpec &ts = v.tensors[t];
    static const std::set<std::string> dtypes = {"i32", "f32", "f16", "bf16"};
    if (!dtypes.count(ts.dtype) || ts.dims.empty() || ts.dims.size() > 4)
      reject("tensor dtype or rank");
    for (const GExprP &d : ts.dims)
      if (an.expr(*d, ctxFor(Where::Dim, v)).type != VT::I)
        reject("a non-integer dim");
    an.tensorInfo(int(t));
    for (size_t l = 0; l < c.launches.size(); ++l) {
      int64_t n = 1;
      for (int64_t d : tensorShape(c, ts, l)) {
        if (d < 1 || d > 100000)
          reject("a tensor dim out of range");
        n *= d;
      }
      if (n > 200000)
        reject("a tensor too large");
    }
    if (ts.fill == Fill::Positions && int(t) != v.kvIndex)
      reject("positions fill outside kv_index");
  }
  if (v.kvIndex >= 0) {
    if (v.kvIndex >= int(v.tensors.size()))
      reject("kv_index names no tensor");
    const TensorSpec &ts = v.tensors[v.kvIndex];
    auto isSize = [](const GExprP &e, int s) {
      return e->kind == K::Size && e->i == s;
    };
    if (ts.dtype != "i32" || ts.dims.size() != 3 || !isSize(ts.dims[0], SB) ||
        !isSize(ts.dims[1], SHkv) || ts.fill != Fill::Positions)
      reject("kv_index tensor");
    if (v.select)
      reject("kv_index with select");
  }
  for (size_t i = 0; i < v.lets.size(); ++i)
    an.letInfo(int(i));
  Info scale = an.scaleInfo();
  if (scale.mag() * std::sqrt(double(c.D)) > 4)
    reject("scale too large");
  if (v.score) {
    checkFuncNames(c, *v.score, 5, kScorePositions);
    Info s = an.expr(*v.score->body, ctxFor(Where::Score, v));
    if (std::string why = scoreProblem(s, c); !why.empty())
      reject(why);
  } else if (std::string why = scoreProblem(an.sInfo(), c); !why.empty()) {
    reject(why);
  }
  if (v.mask) {
    checkFuncNames(c, *v.mask, 4, kMaskPositions);
    if (an.expr(*v.mask->body, ctxFor(Where::Mask, v)).type != VT::B)
      reject("a mask that is not boolean");
  }
  if (v.sink) {
    if (v.normalizer() != "softmax")
      reject("a sink without softmax");
    checkFuncNames(c, *v.sink, 1, kSinkPositions);
    Info s = an.expr(*v.sink->body, ctxFor(Where::Sink, v));
    if (std::string why = sinkProblem(s); !why.empty())
      reject(why);
  }
  if (v.select) {
    const SelectSpec &sel = *v.select;
    Info size = an.expr(*sel.size, ctxFor(Where::SelectSize, v));
    ConstEnv env{&c, 0, false};
    CVal n = evalConst(*sel.size, env);
    if (size.type != VT::I || n.i < 16 || n.i % 16 || n.i > 256)
      reject("select size");
    Info arg = an.expr(*sel.arg, ctxFor(Where::SelectArg, v));
    if (arg.type == VT::B || arg.inf || arg.negInf)
      reject("select argument");
    for (size_t l = 0; l < c.launches.size(); ++l) {
      ConstEnv le{&c, l, false};
      double x = evalConst(*sel.arg, le).d();
      if (sel.rule == "topk" ? (x < 1 || x != std::floor(x) || x > 64)
          : sel.rule == "mass" ? !(x > 0 && x <= 1)
          : sel.rule == "above" ? !(std::fabs(x) < 10)
                                : true)
        reject("select argument out of range");
    }
  }
}

} // namespace

std::string validate(const Case &c) {
  try {
    validateOrThrow(c);
    return "";
  } catch (const Reject &r) {
    return r.why;
  } catch (const NotConstant &) {
    return "a constant that does not fold";
  }
}

namespace {

//===----------------------------------------------------------------------===//
// The generator
//===----------------------------------------------------------------------===//

struct Node {
  GExprP e;
  Info in;
};

uint64_t mixSeed(uint64_t seed, uint64_t index, const std::string &target) {
  uint64_t h = 1469598103934665603ULL;
  for (char ch : target)
    h = (h ^ uint8_t(ch)) * 1099511628211ULL;
  Rng r(seed * 0x9e3779b97f4a7c15ULL ^ (index + 0x632be59bd9b4e019ULL) ^ h);
  r.next();
  return r.next();
}

/// A dyadic value k / 2^g (exact in f32, f16 and bf16 for small k).
double dyadic(Rng &rng, int lo, int hi, int g = 3) {
  return std::ldexp(double(rng.uniform(lo, hi)), -g);
}

class Generator {
public:
  Generator(uint64_t seed, uint64_t index, const std::string &target,
            uint64_t attempt)
      : rng(mixSeed(seed, index, target) + attempt * 0x51ed2701ULL) {
    c.seed = seed;
    c.index = index;
    c.target = target;
    reset();
  }
  Case generate();

private:
  bool gpu() const { return isGpu(c.target); }
  void reset() { an = std::make_unique<Analyzer>(c); }
  std::optional<Node> make(const GExprP &e, const Ctx &ctx) {
    try {
      return Node{e, an->expr(*e, ctx)};
    } catch (const Reject &) {
      return std::nullopt;
    } catch (const NotConstant &) {
      return std::nullopt;
    }
  }
  std::string fresh(const std::vector<std::string> &prefixes) {
    return rng.pick(prefixes) + std::to_string(counter++);
  }
  Ctx ctx(Where w) const { return ctxFor(w, c.spec); }

  // Shapes and options.
  int64_t length(int64_t max);
  void pickShape();
  void pickOptions();

  // Declarations.
  int addConst();
  int addParam(VT type, int role);
  int addTensor(const std::string &dtype, std::vector<GExprP> dims, Fill fill,
                int lo, int hi);
  int addGenericTensor();
  GExprP dimExpr();
  void addLet(unsigned avail, VT type);
  void genScale();
  void genScore();
  void genMask();
  void genSink();
  void genSelect();
  void genKvIndex();
  void shuffleOrder();
  void absorbUnused();

  // Expressions.
  GExprP index(int i);
  GExprP intLit();
  GExprP nonzeroIntLit();
  GExprP floatLit(double lo, double hi);
  std::vector<GExprP> leaves(VT want, const Ctx &ctx);
  GExprP leaf(VT want, const Ctx &ctx);
  std::optional<GExprP> read(VT want, const Ctx &ctx, int depth);
  GExprP indexFor(int tensor, size_t dim, const Ctx &ctx, int depth);
  Node genI(const Ctx &ctx, int depth);
  Node genF(const Ctx &ctx, int depth);
  Node genExactF(const Ctx &ctx, int depth);
  Node genB(const Ctx &ctx, int depth);
  Node genNum(const Ctx &ctx, int depth) {
    return rng.chance(0.3) ? genI(ctx, depth) : genF(ctx, depth);
  }
  std::optional<Node> call1(const std::string &fn, const Node &x,
                            const Ctx &ctx);
  std::optional<Node> divide(const Node &a, const Node &b, const Ctx &ctx);
  Node tame(const Node &x, double range, const Ctx &ctx);
  Node fallback(VT want, const Ctx &ctx);
  GExprP maskClause(const Ctx &ctx);
  GExprP positiveI(const Ctx &ctx);

  Rng rng;
  Case c;
  std::unique_ptr<Analyzer> an;
  int counter = 0;
  std::vector<int> docTensors; // [B, Sq] and [B, Skv] sorted ids
  int sinkTensor = -1;
};

int64_t Generator::length(int64_t max) {
  double r = rng.unit();
  if (r < 0.18)
    return rng.uniform(1, 8);
  if (r < 0.3) {
    std::vector<int64_t> tiles;
    for (int64_t t : {16, 32, 48, 64, 128})
      if (t <= max)
        tiles.push_back(t);
    return rng.pick(tiles) + rng.uniform(-1, 1);
  }
  return rng.uniform(9, max);
}

void Generator::pickShape() {
  c.B = rng.chance(0.6) ? 1 : 2;
  c.Hkv = gpu() ? rng.pick(std::vector<int64_t>{1, 1, 2})
                : rng.pick(std::vector<int64_t>{1, 1, 2, 2, 3});
  int64_t group = gpu() ? rng.pick(std::vector<int64_t>{1, 2, 4})
                        : rng.pick(std::vector<int64_t>{1, 1, 2, 3, 4});
  c.Hq = c.Hkv * group;
  bool decode = rng.chance(0.15);
  c.Sq = decode ? 1 : length(gpu() ? 90 : 150);
  c.Skv = length(gpu() ? 170 : 230);
  if (!decode && rng.chance(0.5) && c.Sq > c.Skv)
    std::swap(c.Sq, c.Skv);
  if (!gpu() && rng.chance(0.08)) { // long rows: many tiles and work items
    c.B = 1, c.Hq = c.Hkv = 1;
    c.Sq = decode ? 1 : rng.uniform(100, 300);
    c.Skv = rng.uniform(200, 420);
  }
  int64_t budget = gpu() ? 30000 : 120000;
  while (c.B * c.Hq * c.Sq * c.Skv > budget) {
    if (c.Skv >= c.Sq)
      c.Skv = c.Skv * 3 / 4;
    else
      c.Sq = c.Sq * 3 / 4;
  }
  // The PTX simulator runs every thread of a CTA: a few CTA-tiles each
  // (sm_90a CTAs hold 128 query rows and two warpgroups).
  if (c.target == "sm_90a")
    while (c.B * c.Hq * ((c.Sq + 127) / 128) * ((c.Skv + 63) / 64) > 6) {
      if (c.B > 1)
        c.B = 1;
      else if (c.Hq > c.Hkv)
        c.Hq = c.Hkv;
      else if (c.Hkv > 1)
        c.Hq = c.Hkv = 1;
      else
        c.Skv = c.Skv * 3 / 4;
    }
  c.Sq = std::max<int64_t>(c.Sq, 1);
  c.Skv = std::max<int64_t>(c.Skv, 1);
}

void Generator::pickOptions() {
  if (gpu()) {
    c.dtype = rng.chance(0.6) ? "bf16" : "f16";
    std::vector<int64_t> dims = {16, 32, 64, 64, 64, 80, 96, 128};
    c.D = rng.pick(dims);
    c.Dv = rng.chance(0.75) ? c.D : rng.pick(dims);
    if (rng.chance(0.2))
      c.blockKV = rng.pick(std::vector<int64_t>{16, 32, 48, 64});
    if (c.target == "sm_90a" && rng.chance(0.15))
      c.blockQ = 64;
    if (c.target == "sm_90a" && rng.chance(0.3))
      c.gpuLoads = "cp.async";
    if (rng.chance(0.1))
      c.paged = rng.pick(std::vector<int64_t>{16, 32, 64});
  } else {
    double r = rng.unit();
    c.dtype = r < 0.55 ? "f32" : r < 0.75 ? "f16" : "bf16";
    std::vector<int64_t> dims = {16, 32, 64, 64, 64, 128, 8, 24, 40, 80, 96,
                                 7,  1,  33};
    c.D = rng.chance(0.03) ? 256 : rng.pick(dims);
    c.Dv = rng.chance(0.7) ? c.D : rng.pick(dims);
    if (rng.chance(0.25)) {
      c.blockQ = rng.pick(std::vector<int64_t>{0, 0, 1, 2, 3, 4, 5, 8, 13, 16,
                                               24, 32, 64, 128});
      c.blockKV = rng.pick(std::vector<int64_t>{0, 0, 1, 2, 3, 4, 7, 13, 16,
                                                24, 32, 48, 64, 128});
    }
    if (rng.chance(0.1))
      c.paged = rng.pick(std::vector<int64_t>{7, 16, 32, 64});
  }
  if (rng.chance(0.15))
    c.splitKv = std::to_string(rng.pick(std::vector<int>{1, 2, 3, 5}));
}

GExprP Generator::index(int i) {
  GExpr e = blank(K::Index);
  e.i = i;
  e.f = rng.chance(0.15) ? 1 : 0; // canonical name inside renamed parameters
  return std::make_shared<const GExpr>(std::move(e));
}

GExprP Generator::intLit() {
  double r = rng.unit();
  if (r < 0.7)
    return mkInt(rng.uniform(0, 9));
  if (r < 0.9)
    return mkInt(rng.uniform(-9, 40));
  return mkInt(rng.uniform(-300, 300));
}

GExprP Generator::nonzeroIntLit() {
  int64_t v = rng.chance(0.8) ? rng.uniform(2, 9) : rng.uniform(1, 64);
  if (rng.chance(0.2))
    v = -v;
  return mkInt(v);
}

GExprP Generator::floatLit(double lo, double hi) {
  double r = rng.unit();
  double v;
  if (r < 0.6) { // dyadic
    v = std::ldexp(std::round(std::ldexp(lo + (hi - lo) * rng.unit(), 3)), -3);
    v = std::clamp(v, lo, hi);
  } else if (r < 0.9) { // a short decimal
    v = std::round((lo + (hi - lo) * rng.unit()) * 100) / 100;
  } else {
    v = lo + (hi - lo) * rng.unit();
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.3g", v);
    v = std::strtod(buf, nullptr);
  }
  if (!(v >= lo && v <= hi))
    v = lo;
  std::string spelling;
  if (v != 0 && rng.chance(0.1)) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.17e", v);
    // Exponent form, shortest mantissa that reads back.
    for (int p = 0; p <= 17; ++p) {
      std::snprintf(buf, sizeof buf, "%.*e", p, v);
      if (std::strtod(buf, nullptr) == v)
        break;
    }
    spelling = buf;
    if (spelling[0] == '-')
      spelling.clear(); // negative literals print through formatFloat
  }
  return mkFloat(v, spelling);
}

std::vector<GExprP> Generator::leaves(VT want, const Ctx &ctx) {
  std::vector<GExprP> out;
  const VariantSpec &v = c.spec;
  Where w = ctx.where;
  bool names = !constOnly(w);
  if (want == VT::I)
    for (int i = 1; i < 6; ++i)
      if (ctx.avail & bitOf(i))
        out.insert(out.end(), {index(i), index(i)});
  if (want == VT::F && (ctx.avail & bitOf(IS)))
    for (int k = 0; k < 4; ++k)
      out.push_back(index(IS));
  if (want == VT::I && names)
    out.push_back(mkRef(K::Size, rng.uniform(0, 6)));
  if (names)
    for (size_t p = 0; p < v.params.size(); ++p)
      if (v.params[p].type == want)
        out.push_back(mkRef(K::Param, int64_t(p)));
  int nConsts = w == Where::Const ? ctx.consts : int(v.consts.size());
  for (int i = 0; i < nConsts; ++i) {
    try {
      if (an->constInfo(i).type == want)
        out.push_back(mkRef(K::Const, i));
    } catch (const Reject &) {
    }
  }
  bool lets = w == Where::Let || w == Where::Scale || w == Where::Score ||
              w == Where::Mask || w == Where::Sink;
  if (lets)
    for (int i = 0; i < ctx.lets; ++i) {
      try {
        Info in = an->letInfo(i);
        if (in.type == want && !(in.idx & ~ctx.avail) && !in.negInf &&
            !in.inf)
          out.insert(out.end(), {mkRef(K::Let, i), mkRef(K::Let, i)});
      } catch (const Reject &) {
      }
    }
  return out;
}

GExprP Generator::leaf(VT want, const Ctx &ctx) {
  if (want == VT::B) {
    std::vector<GExprP> l = leaves(VT::B, ctx);
    if (!l.empty() && rng.chance(0.7))
      return rng.pick(l);
    return mkBool(rng.chance(0.7));
  }
  bool reads = !constOnly(ctx.where) && ctx.where != Where::Dim;
  if (reads && rng.chance(0.15))
    if (auto r = read(want, ctx, 1))
      return *r;
  std::vector<GExprP> l = leaves(want, ctx);
  if (!l.empty() && rng.chance(0.8))
    return rng.pick(l);
  if (want == VT::I)
    return intLit();
  if (rng.chance(0.15)) {
    std::vector<GExprP> ints = leaves(VT::I, ctx);
    if (!ints.empty())
      return mkCall("float", {rng.pick(ints)});
  }
  return floatLit(-4, 4);
}

std::optional<GExprP> Generator::read(VT want, const Ctx &ctx, int depth) {
  std::vector<int> ts;
  for (size_t t = 0; t < c.spec.tensors.size(); ++t)
    if ((c.spec.tensors[t].dtype == "i32") == (want == VT::I))
      ts.push_back(int(t));
  if (ts.empty())
    return std::nullopt;
  int t = rng.pick(ts);
  std::vector<GExprP> ix;
  for (size_t d = 0; d < c.spec.tensors[t].dims.size(); ++d)
    ix.push_back(indexFor(t, d, ctx, depth));
  return mkRead(t, std::move(ix));
}

GExprP Generator::indexFor(int t, size_t d, const Ctx &ctx, int depth) {
  const GExpr &dim = *c.spec.tensors[t].dims[d];
  auto has = [&](int i) { return (ctx.avail & bitOf(i)) != 0; };
  if (dim.kind == K::Size && rng.chance(0.7)) {
    int natural = dim.i == SB     ? IB
                  : dim.i == SHq  ? IH
                  : dim.i == SHkv ? IHKV
                  : dim.i == SSq  ? IQ
                  : dim.i == SSkv ? IKV
                                  : -1;
    if (natural >= 0 && has(natural)) {
      double r = rng.unit();
      if (r < 0.7)
        return index(natural);
      if (r < 0.8)
        return mkBinary("+", index(natural), mkInt(rng.uniform(-2, 2)));
      if (r < 0.9)
        return mkBinary("-", mkBinary("-", mkRef(K::Size, dim.i),
                                      mkInt(1)),
                        index(natural));
      return mkCall("clamp", {mkBinary("+", index(natural), intLit()),
                              mkInt(0),
                              mkBinary("-", mkRef(K::Size, dim.i), mkInt(1))});
    }
  }
  double r = rng.unit();
  if (r < 0.2 && has(IQ) && has(IKV)) // relative positions
    return mkBinary("+", mkBinary("-", index(IQ), index(IKV)),
                    mkBinary("-", mkRef(K::Size, SSkv), mkInt(1)));
  if (r < 0.35 && depth > 0)
    if (auto nested = read(VT::I, ctx, depth - 1))
      return *nested;
  if (r < 0.55)
    return mkBinary("%", genI(ctx, 1).e, nonzeroIntLit());
  if (r < 0.75)
    return genI(ctx, depth).e;
  return mkInt(rng.uniform(-1, 4));
}

Node Generator::fallback(VT want, const Ctx &ctx) {
  for (int k = 0; k < 8; ++k)
    if (auto n = make(leaf(want, ctx), ctx); n && n->in.type == want)
      return *n;
  GExprP e = want == VT::I   ? mkInt(1)
             : want == VT::F ? mkFloat(0.5)
                             : mkBool(true);
  return *make(e, ctx);
}

Node Generator::genI(const Ctx &ctx, int depth) {
  bool reads = !constOnly(ctx.where) && ctx.where != Where::Dim;
  for (int attempt = 0; attempt < 4; ++attempt) {
    GExprP e;
    double r = rng.unit();
    if (depth <= 0 || r < 0.3) {
      e = leaf(VT::I, ctx);
    } else if (r < 0.5) {
      e = mkBinary(rng.pick(std::vector<std::string>{"+", "-", "*", "+"}),
                   genI(ctx, depth - 1).e,
                   rng.chance(0.5) ? genI(ctx, depth - 1).e : intLit());
    } else if (r < 0.62) {
      GExprP divisor = rng.chance(0.75) ? nonzeroIntLit()
                                        : genI(ctx, depth - 1).e;
      e = mkBinary(rng.chance(0.5) ? "/" : "%", genI(ctx, depth - 1).e,
                   divisor);
    } else if (r < 0.66) {
      e = mkUnary("-", genI(ctx, depth - 1).e);
    } else if (r < 0.76) {
      std::string fn = rng.pick(std::vector<std::string>{
          "abs", "min", "max", "clamp", "sign", "floor", "ceil", "min"});
      std::vector<GExprP> args = {genI(ctx, depth - 1).e};
      if (fn == "min" || fn == "max")
        args.push_back(rng.chance(0.5) ? intLit() : genI(ctx, depth - 1).e);
      if (fn == "clamp") {
        int64_t lo = rng.uniform(-5, 10);
        args.push_back(mkInt(lo));
        args.push_back(mkInt(lo + rng.uniform(0, 40)));
      }
      e = mkCall(fn, args);
    } else if (r < 0.82) {
      e = mkCall("int", {genExactF(ctx, depth - 1).e});
    } else if (r < 0.88) {
      GExprP cond = genB(ctx, depth - 1).e;
      GExprP a = genI(ctx, depth - 1).e, b = genI(ctx, depth - 1).e;
      e = rng.chance(0.5) ? mkTernary(cond, a, b)
                          : mkCall("where", {cond, a, b});
    } else if (r < 0.96 && reads) {
      if (auto rd = read(VT::I, ctx, depth - 1))
        e = *rd;
    } else if (!constOnly(ctx.where)) {
      // i32 arithmetic wraps: only comparisons and % see these.
      e = mkBinary("*", genI(ctx, depth - 1).e,
                   mkInt(rng.pick(std::vector<int64_t>{
                       65537, 1000003, 2147483647, -2147483647 - 1})));
    }
    if (!e)
      continue;
    if (auto n = make(e, ctx); n && n->in.type == VT::I)
      return *n;
  }
  return fallback(VT::I, ctx);
}

Node Generator::genExactF(const Ctx &ctx, int depth) {
  for (int attempt = 0; attempt < 6; ++attempt) {
    GExprP e;
    double r = rng.unit();
    if (depth <= 0 || r < 0.35) {
      double lr = rng.unit();
      if (lr < 0.4)
        e = mkCall("float", {genI(ctx, 0).e});
      else if (lr < 0.6)
        e = mkFloat(dyadic(rng, -32, 32));
      else
        e = leaf(VT::F, ctx);
    } else if (r < 0.65) {
      e = mkBinary(rng.pick(std::vector<std::string>{"+", "-", "*"}),
                   genExactF(ctx, depth - 1).e,
                   rng.chance(0.5) ? genExactF(ctx, depth - 1).e
                                   : mkFloat(dyadic(rng, -16, 16, 2)));
    } else if (r < 0.75) {
      e = mkBinary("/", genExactF(ctx, depth - 1).e,
                   mkFloat(rng.pick(std::vector<double>{2.0, 4.0, 0.5, 8.0})));
    } else if (r < 0.85) {
      e = mkCall(rng.pick(std::vector<std::string>{"floor", "ceil", "abs",
                                                   "sign"}),
                 {genExactF(ctx, depth - 1).e});
    } else if (r < 0.93) {
      e = mkCall(rng.chance(0.5) ? "min" : "max",
                 {genExactF(ctx, depth - 1).e, genExactF(ctx, depth - 1).e});
    } else {
      e = mkBinary("%", genExactF(ctx, depth - 1).e,
                   mkFloat(rng.pick(std::vector<double>{1.5, 2.0, 2.5, 4.0,
                                                        0.5, -3.0})));
    }
    if (auto n = make(e, ctx);
        n && n->in.type == VT::F && n->in.err == 0 && !n->in.inf &&
        !n->in.negInf)
      return *n;
  }
  GExprP e = mkFloat(dyadic(rng, -16, 16));
  return *make(e, ctx);
}

/// `fn(x)` with x brought into fn's domain when it is not.
std::optional<Node> Generator::call1(const std::string &fn, const Node &x,
                                     const Ctx &ctx) {
  if (auto n = make(mkCall(fn, {x.e}), ctx))
    return n;
  std::vector<GExprP> fixes;
  const GExprP &a = x.e;
  double m = std::max(x.in.mag(), 1e-9);
  auto lit = [](double v) { return mkFloat(v); };
  if (fn == "exp" || fn == "exp2") {
    fixes = {mkCall("clamp", {a, lit(-8.0), lit(2.0)}),
             mkUnary("-", mkCall("abs", {a})),
             mkBinary("*", mkCall("tanh", {a}), lit(2.0)),
             mkBinary("*", a, lit(std::ldexp(1.0, -int(std::ceil(
                                                   std::log2(m / 2)))))),
             mkCall("min", {a, lit(1.5)})};
  } else if (fn == "log" || fn == "log2" || fn == "sqrt" || fn == "rsqrt") {
    fixes = {mkBinary("+", mkCall("abs", {a}), lit(1.0)),
             mkBinary("+", mkBinary("*", a, a), lit(0.5)),
             mkBinary("+", mkCall("softplus", {a}), lit(0.25)),
             mkCall("max", {a, lit(0.5)}),
             mkCall("exp", {mkCall("clamp", {a, lit(-2.0), lit(2.0)})})};
  } else {
    fixes = {mkBinary("*", a, lit(std::ldexp(1.0, -int(std::ceil(
                                                  std::log2(m / 4))))))};
  }
  size_t first = rng.uniform(0, int64_t(fixes.size()) - 1);
  for (size_t k = 0; k < fixes.size(); ++k)
    if (auto n = make(mkCall(fn, {fixes[(first + k) % fixes.size()]}), ctx))
      return n;
  return std::nullopt;
}

/// a / b with b kept away from 0.
std::optional<Node> Generator::divide(const Node &a, const Node &b,
                                      const Ctx &ctx) {
  if (auto n = make(mkBinary("/", a.e, b.e), ctx))
    return n;
  std::vector<GExprP> fixes = {
      mkBinary("+", mkCall("abs", {b.e}), mkFloat(0.5)),
      mkBinary("+", mkBinary("*", b.e, b.e), mkFloat(1.0)),
      mkBinary("+", mkFloat(2.0), mkCall("tanh", {b.e})),
      mkBinary("+", mkCall("sigmoid", {b.e}), mkFloat(0.5))};
  size_t first = rng.uniform(0, int64_t(fixes.size()) - 1);
  for (size_t k = 0; k < fixes.size(); ++k)
    if (auto n = make(mkBinary("/", a.e, fixes[(first + k) % fixes.size()]),
                      ctx))
      return n;
  return std::nullopt;
}

/// x brought within [-range, range].
Node Generator::tame(const Node &x, double range, const Ctx &ctx) {
  if (x.in.mag() <= range)
    return x;
  double m = x.in.mag();
  int k = int(std::ceil(std::log2(m / range)));
  std::vector<GExprP> fixes = {
      mkBinary("*", x.e, mkFloat(std::ldexp(1.0, -k))),
      mkBinary("/", x.e, mkFloat(std::ldexp(1.0, k))),
      mkBinary("*", mkFloat(range),
               mkCall("tanh", {mkBinary("/", x.e, mkFloat(range))})),
      mkCall("clamp", {x.e, mkFloat(-range), mkFloat(range)})};
  size_t first = rng.uniform(0, int64_t(fixes.size()) - 1);
  for (size_t i = 0; i < fixes.size(); ++i)
    if (auto n = make(fixes[(first + i) % fixes.size()], ctx);
        n && n->in.mag() <= range * 1.0001)
      return *n;
  return fallback(VT::F, ctx);
}

Node Generator::genF(const Ctx &ctx, int depth) {
  static const std::vector<std::string> unaryFns = {
      "exp",  "exp2",    "log",      "log2", "sqrt",  "rsqrt",
      "tanh", "sigmoid", "softplus", "abs",  "floor", "ceil",
      "sign", "tanh",    "exp",      "log",  "abs"};
  for (int attempt = 0; attempt < 4; ++attempt) {
    std::optional<Node> n;
    double r = rng.unit();
    if (depth <= 0 || r < 0.25) {
      GExprP e = leaf(VT::F, ctx);
      if (rng.chance(0.15)) // an i32 value promoted by the operation above
        e = leaf(VT::I, ctx);
      n = make(e, ctx);
    } else if (r < 0.45) {
      Node a = genNum(ctx, depth - 1);
      Node b = rng.chance(0.4) ? Node{floatLit(-3, 3), {}}
                               : genNum(ctx, depth - 1);
      std::string op = rng.pick(std::vector<std::string>{"+", "-", "*", "+"});
      if (op == "*") {
        a = tame(a, 16, ctx);
        b = tame(b, 8, ctx);
      }
      n = make(mkBinary(op, a.e, b.e), ctx);
    } else if (r < 0.52) {
      Node a = tame(genNum(ctx, depth - 1), 16, ctx);
      Node b = rng.chance(0.5) ? Node{floatLit(0.5, 8), {}}
                               : genNum(ctx, depth - 1);
      if (auto bn = make(b.e, ctx))
        n = divide(a, *bn, ctx);
    } else if (r < 0.54) {
      n = make(mkBinary("%", genExactF(ctx, depth - 1).e,
                        mkFloat(rng.pick(std::vector<double>{1.5, 2.0, 3.0,
                                                             0.5}))),
               ctx);
    } else if (r < 0.56) {
      n = make(mkUnary("-", genF(ctx, depth - 1).e), ctx);
    } else if (r < 0.8) {
      std::string fn = rng.pick(unaryFns);
      Node x = (fn == "floor" || fn == "ceil" || fn == "sign")
                   ? genExactF(ctx, depth - 1)
                   : genNum(ctx, depth - 1);
      n = call1(fn, x, ctx);
    } else if (r < 0.88) {
      std::string fn = rng.pick(std::vector<std::string>{"min", "max",
                                                         "clamp"});
      std::vector<GExprP> args = {genNum(ctx, depth - 1).e};
      if (fn == "clamp") {
        double lo = dyadic(rng, -40, 8);
        args.push_back(rng.chance(0.1) ? mkUnary("-", mkInf())
                                       : mkFloat(lo));
        args.push_back(rng.chance(0.1) ? mkInf()
                                       : mkFloat(lo + dyadic(rng, 1, 48)));
      } else if (rng.chance(0.08)) {
        args.push_back(fn == "min" ? mkInf() : mkUnary("-", mkInf()));
      } else {
        args.push_back(rng.chance(0.5) ? floatLit(-4, 4)
                                       : genNum(ctx, depth - 1).e);
      }
      if (rng.chance(0.3))
        std::swap(args[0], args[1]);
      n = make(mkCall(fn, args), ctx);
    } else if (r < 0.94) {
      GExprP cond = genB(ctx, depth - 1).e;
      GExprP a = genNum(ctx, depth - 1).e, b = genNum(ctx, depth - 1).e;
      n = make(rng.chance(0.5) ? mkTernary(cond, a, b)
                               : mkCall("where", {cond, a, b}),
               ctx);
    } else if (r < 0.97) {
      n = make(mkCall("float", {genI(ctx, depth - 1).e}), ctx);
    } else {
      if (auto rd = read(VT::F, ctx, depth - 1))
        n = make(*rd, ctx);
    }
    if (n && n->in.type != VT::B && !n->in.inf && !n->in.negInf)
      return *n;
  }
  return fallback(VT::F, ctx);
}

Node Generator::genB(const Ctx &ctx, int depth) {
  static const std::vector<std::string> cmps = {"<", "<=", ">", ">=", "==",
                                                "!="};
  for (int attempt = 0; attempt < 4; ++attempt) {
    GExprP e;
    double r = rng.unit();
    if (depth <= 0 || r < 0.4) {
      if (depth <= 0 && rng.chance(0.1)) {
        e = leaf(VT::B, ctx);
      } else {
        GExprP a = genI(ctx, depth - 1).e;
        GExprP b = rng.chance(0.4) ? intLit() : genI(ctx, depth - 1).e;
        e = mkBinary(rng.pick(cmps), a, b);
      }
    } else if (r < 0.5) {
      GExprP a = genExactF(ctx, depth - 1).e;
      GExprP b = rng.chance(0.5) ? genExactF(ctx, depth - 1).e
                                 : genI(ctx, depth - 1).e;
      e = mkBinary(rng.pick(cmps), a, b);
    } else if (r < 0.68) {
      e = mkBinary(rng.chance(0.5) ? "&&" : "||", genB(ctx, depth - 1).e,
                   genB(ctx, depth - 1).e);
    } else if (r < 0.76) {
      e = mkUnary("!", genB(ctx, depth - 1).e);
    } else if (r < 0.82) {
      GExprP cond = genB(ctx, depth - 1).e;
      GExprP a = genB(ctx, depth - 1).e, b = genB(ctx, depth - 1).e;
      e = rng.chance(0.5) ? mkTernary(cond, a, b)
                          : mkCall("where", {cond, a, b});
    } else if (r < 0.86) {
      e = mkBinary(rng.chance(0.5) ? "==" : "!=", genB(ctx, depth - 1).e,
                   genB(ctx, depth - 1).e);
    } else {
      e = leaf(VT::B, ctx);
    }
    if (auto n = make(e, ctx); n && n->in.type == VT::B)
      return *n;
  }
  return fallback(VT::B, ctx);
}

//===----------------------------------------------------------------------===//
// Declarations
//===----------------------------------------------------------------------===//

int Generator::addConst() {
  VariantSpec &v = c.spec;
  int i = int(v.consts.size());
  Ctx cx{Where::Const, 0, 0, i};
  double r = rng.unit();
  GExprP e;
  std::vector<int> ints;
  for (int k = 0; k < i; ++k)
    if (an->constInfo(k).type == VT::I)
      ints.push_back(k);
  if (r < 0.45) {
    e = mkInt(rng.uniform(0, 48));
    if (!ints.empty() && rng.chance(0.4))
      e = mkBinary(rng.pick(std::vector<std::string>{"+", "*", "/", "-"}),
                   mkRef(K::Const, rng.pick(ints)), mkInt(rng.uniform(1, 6)));
  } else if (r < 0.88) {
    e = floatLit(0.25, 40);
    if (rng.chance(0.3)) {
      GExprP base = ints.empty() ? mkFloat(dyadic(rng, 1, 64))
                                 : mkRef(K::Const, rng.pick(ints));
      e = mkBinary(rng.chance(0.5) ? "*" : "/", base,
                   mkFloat(rng.pick(std::vector<double>{0.5, 2.0, 4.0, 0.25})));
    }
  } else {
    e = rng.chance(0.6) ? mkBool(rng.chance(0.5))
                        : mkBinary(">", mkInt(rng.uniform(0, 5)),
                                   mkInt(rng.uniform(0, 5)));
  }
  if (!make(e, cx))
    e = mkInt(3);
  v.consts.push_back({fresh({"c", "cap", "lim", "base", "kc"}), e});
  v.order.push_back({'c', i});
  reset();
  return i;
}

/// role: 0 generic, 1 a positive i32 (dims, windows), 2 topk, 3 mass,
/// 4 above.
int Generator::addParam(VT type, int role) {
  VariantSpec &v = c.spec;
  int p = int(v.params.size());
  ParamSpec ps;
  ps.name = fresh({"w", "n", "win", "alpha", "temp", "off", "gap", "k"});
  ps.type = type;
  int kind = int(rng.uniform(0, 3));
  auto value = [&]() -> double {
    if (role == 1)
      return double(rng.uniform(1, std::min<int64_t>(24, c.Skv + 4)));
    if (role == 2)
      return double(rng.uniform(1, 4));
    if (role == 3)
      return rng.pick(std::vector<double>{0.5, 0.75, 0.875, 0.9375, 1.0});
    if (role == 4)
      return dyadic(rng, -4, 6, 7);
    if (type == VT::I) {
      switch (kind) {
      case 0: return double(rng.uniform(0, 8));
      case 1: return double(rng.uniform(1, 32));
      case 2: return double(rng.uniform(-6, 6));
      default: return double(rng.uniform(0, c.Skv));
      }
    }
    switch (kind) {
    case 0: return dyadic(rng, -16, 16);
    case 1: return dyadic(rng, 1, 32);
    default: return dyadic(rng, -4, 40);
    }
  };
  bool hasDefault = rng.chance(0.6);
  if (hasDefault) {
    double d = value();
    if (type == VT::I) {
      ps.def = mkInt(int64_t(d));
      std::vector<int> ints;
      for (size_t k = 0; k < v.consts.size(); ++k)
        if (an->constInfo(int(k)).type == VT::I)
          ints.push_back(int(k));
      if (!ints.empty() && rng.chance(0.25)) {
        int k = rng.pick(ints);
        double cv = an->constInfo(k).lo;
        ps.def = mkBinary("+", mkRef(K::Const, k), mkInt(int64_t(d - cv)));
      }
    } else {
      ps.def = d == std::floor(d) && rng.chance(0.3) ? mkInt(int64_t(d))
                                                     : mkFloat(d);
    }
  }
  v.params.push_back(ps);
  for (auto &l : c.launches) {
    if (hasDefault && rng.chance(0.4))
      l.push_back(std::nullopt);
    else
      l.push_back(value());
  }
  v.order.push_back({'p', p});
  reset();
  return p;
}

int Generator::addTensor(const std::string &dtype, std::vector<GExprP> dims,
                         Fill fill, int lo, int hi) {
  VariantSpec &v = c.spec;
  int t = int(v.tensors.size());
  TensorSpec ts;
  ts.name = fresh({"bias", "doc", "ids", "tab", "rel", "gate", "slope"});
  ts.dtype = dtype;
  ts.dims = std::move(dims);
  ts.fill = fill;
  ts.lo = lo;
  ts.hi = hi;
  ts.seed = uint32_t(rng.next());
  ts.duplicates = rng.chance(0.15);
  v.tensors.push_back(ts);
  v.order.push_back({'t', t});
  reset();
  return t;
}

GExprP Generator::dimExpr() {
  double r = rng.unit();
  auto size = [&] { return mkRef(K::Size, rng.uniform(0, 6)); };
  if (r < 0.5)
    return size();
  if (r < 0.65)
    return mkInt(rng.uniform(1, 40));
  if (r < 0.75)
    return mkBinary("+", size(), mkInt(rng.uniform(1, 5)));
  if (r < 0.8)
    return mkBinary("*", mkInt(2), size());
  if (r < 0.85)
    return mkBinary("+", mkBinary("/", size(), mkInt(rng.uniform(2, 4))),
                    mkInt(1));
  if (r < 0.9)
    return mkBinary("-", mkBinary("*", mkInt(2), mkRef(K::Size, SSkv)),
                    mkInt(1));
  if (r < 0.95) {
    int p = -1;
    for (size_t k = 0; k < c.spec.params.size(); ++k)
      if (c.spec.params[k].type == VT::I) {
        bool positive = true;
        for (size_t l = 0; l < c.launches.size(); ++l)
          positive &= paramValue(c, l, k) >= 1;
        if (positive)
          p = int(k);
      }
    if (p < 0)
      p = addParam(VT::I, 1);
    return rng.chance(0.5) ? mkRef(K::Param, p)
                           : mkBinary("+", mkRef(K::Param, p), size());
  }
  return mkBinary("+",
                  mkBinary("%", mkBinary("+", size(), mkInt(rng.uniform(0, 9))),
                           mkInt(rng.uniform(2, 7))),
                  mkInt(1));
}

int Generator::addGenericTensor() {
  double r = rng.unit();
  std::string dtype = r < 0.45   ? "i32"
                      : r < 0.75 ? "f32"
                      : r < 0.87 ? "f16"
                                 : "bf16";
  int rank = int(rng.uniform(1, 3));
  for (int attempt = 0; attempt < 6; ++attempt) {
    std::vector<GExprP> dims;
    for (int d = 0; d < rank; ++d)
      dims.push_back(dimExpr());
    // Positive and not too large in every launch.
    TensorSpec probe;
    probe.dims = dims;
    bool ok = true;
    for (size_t l = 0; l < c.launches.size() && ok; ++l) {
      int64_t n = 1;
      for (int64_t d : tensorShape(c, probe, l)) {
        ok &= d >= 1 && d <= 100000;
        n *= std::max<int64_t>(d, 1);
      }
      ok &= n <= 200000;
    }
    if (!ok)
      continue;
    if (dtype == "i32") {
      int pick = int(rng.uniform(0, 3));
      int lo = pick == 0 ? 0 : pick == 1 ? -3 : pick == 2 ? 0 : 0;
      int hi = pick == 0 ? 2 : pick == 1 ? 3 : pick == 2 ? 5 : int(c.Skv);
      return addTensor(dtype, dims, rng.chance(0.25) ? Fill::Sorted
                                                     : Fill::Ints,
                       lo, hi);
    }
    int lo = -int(rng.uniform(0, 24)), hi = int(rng.uniform(1, 24));
    return addTensor(dtype, dims,
                     rng.chance(0.5) ? Fill::Dyadic : Fill::Normal, lo, hi);
  }
  return addTensor(dtype, {mkRef(K::Size, SHq)},
                   dtype == "i32" ? Fill::Ints : Fill::Dyadic, 0, 3);
}

void Generator::addLet(unsigned avail, VT type) {
  VariantSpec &v = c.spec;
  int i = int(v.lets.size());
  Ctx cx{Where::Let, avail, i, int(v.consts.size())};
  Node n = type == VT::B   ? genB(cx, 2)
           : type == VT::I ? genI(cx, 2)
                           : genF(cx, int(rng.uniform(1, 3)));
  GExprP e = n.e;
  // Some lets that read s mask a score with -inf.
  if ((avail & bitOf(IS)) && type == VT::F && rng.chance(0.15)) {
    Ctx mcx = cx;
    mcx.avail &= ~bitOf(IS);
    GExprP cond = rng.chance(0.6) && (mcx.avail & bitOf(IQ)) ? maskClause(mcx)
                                                           : genB(mcx, 1).e;
    GExprP minusInf = mkUnary("-", mkInf());
    GExprP w = rng.chance(0.5) ? mkCall("where", {cond, minusInf, e})
                               : mkTernary(cond, e, minusInf);
    if (make(w, cx))
      e = w;
  }
  v.lets.push_back({fresh({"d", "t", "u", "dist", "same", "x", "rel"}), e});
  v.order.push_back({'l', i});
  reset();
}

void Generator::genScale() {
  VariantSpec &v = c.spec;
  Ctx cx = ctx(Where::Scale);
  double root = std::sqrt(double(c.D));
  double r = rng.unit();
  GExprP e;
  if (r < 0.2) {
    e = floatLit(0.02, 2.5 / root);
  } else if (r < 0.35) {
    e = rng.chance(0.5)
            ? mkBinary("/", mkFloat(1.0), mkCall("sqrt", {mkCall("float", {mkRef(K::Size, SD)})}))
            : mkCall("rsqrt", {mkCall("float", {mkRef(K::Size, SD)})});
  } else if (r < 0.5) {
    int p = -1;
    for (size_t k = 0; k < v.params.size(); ++k)
      if (v.params[k].type == VT::F)
        p = int(k);
    GExprP temp = p >= 0 ? mkRef(K::Param, p) : floatLit(0.25, 2);
    e = mkBinary("*", temp, mkCall("rsqrt", {mkCall("float", {mkRef(K::Size, SD)})}));
  } else if (r < 0.6) {
    // Length-aware temperature (examples/entropy_scale.attn).
    e = mkCall("sqrt", {mkBinary("/", mkBinary("/", mkCall("log", {mkCall("float", {mkBinary("+", mkRef(K::Size, SSkv), mkInt(2))})}),
                                               mkCall("log", {floatLit(64, 8192)})),
                                 mkCall("float", {mkRef(K::Size, SD)}))});
  } else {
    e = genF(cx, 2).e;
  }
  std::optional<Node> n = make(e, cx);
  if (!n || n->in.type == VT::B) {
    n = make(mkFloat(0.125), cx);
  }
  // Keep |scale| sqrt(D) <= 3.
  double limit = 3.0 / root;
  if (n->in.mag() > limit) {
    double m = n->in.mag();
    int k = int(std::ceil(std::log2(m / limit)));
    GExprP fixed = rng.chance(0.5)
                       ? mkBinary("*", n->e, mkFloat(std::ldexp(1.0, -k)))
                       : mkBinary("/", n->e, mkFloat(std::ldexp(1.0, k)));
    n = make(fixed, cx);
    if (!n || n->in.mag() > limit)
      n = make(mkFloat(0.125), cx);
  }
  v.scale = n->e;
  v.order.push_back({'S', 0});
  reset();
}

GExprP Generator::positiveI(const Ctx &ctx) {
  double r = rng.unit();
  std::vector<int> ps;
  for (size_t k = 0; k < c.spec.params.size(); ++k)
    if (c.spec.params[k].type == VT::I)
      ps.push_back(int(k));
  if (r < 0.35 && !ps.empty())
    return mkRef(K::Param, rng.pick(ps));
  if (r < 0.8)
    return mkInt(rng.uniform(1, 40));
  return genI(ctx, 1).e;
}

GExprP Generator::maskClause(const Ctx &cx) {
  GExprP q = index(IQ), kv = index(IKV);
  auto diag = [&] {
    return mkBinary("+", index(IQ),
                    mkBinary("-", mkRef(K::Size, SSkv), mkRef(K::Size, SSq)));
  };
  double r = rng.unit();
  if (r < 0.2) {
    switch (rng.uniform(0, 3)) {
    case 0: return mkBinary("<=", kv, diag());
    case 1: return mkBinary("<=", kv, q);
    case 2: return mkBinary("<", kv, mkBinary("+", q, intLit()));
    default: return mkBinary(">=", diag(), kv);
    }
  }
  if (r < 0.35) {
    GExprP w = positiveI(cx);
    switch (rng.uniform(0, 2)) {
    case 0: return mkBinary("<", mkBinary("-", q, kv), w);
    case 1: return mkBinary(">", kv, mkBinary("-", diag(), w));
    default: return mkBinary("<=", mkCall("abs", {mkBinary("-", q, kv)}), w);
    }
  }
  if (r < 0.42)
    return mkBinary("<", kv, positiveI(cx));
  if (r < 0.5 && docTensors.size() == 2) {
    GExprP a = mkRead(docTensors[0], {index(IB), q});
    GExprP b = mkRead(docTensors[1], {index(IB), kv});
    return mkBinary(rng.chance(0.8) ? "==" : "<=", a, b);
  }
  if (r < 0.62) {
    GExprP k = mkInt(rng.uniform(2, 9));
    switch (rng.uniform(0, 3)) {
    case 0: return mkBinary("==", mkBinary("%", mkBinary("-", q, kv), k), mkInt(0));
    case 1: return mkBinary("!=", mkBinary("%", kv, k), mkInt(rng.uniform(0, 3)));
    case 2: return mkBinary("==", mkBinary("/", q, k), mkBinary("/", kv, k));
    default:
      return mkBinary("<", mkBinary("%", mkBinary("+", q, kv), k), mkInt(rng.uniform(1, 4)));
    }
  }
  if (r < 0.72) { // rows (or heads) with nothing kept
    switch (rng.uniform(0, 4)) {
    case 0: return mkBinary(">=", q, mkInt(rng.uniform(1, 12)));
    case 1: return mkBinary("!=", mkBinary("%", q, mkInt(rng.uniform(2, 6))), mkInt(rng.uniform(0, 2)));
    case 2: return mkBinary("!=", index(IH), mkInt(rng.uniform(0, 2)));
    case 3: return mkBinary("==", index(IB), mkInt(0));
    default: return mkBinary("<", index(IHKV), mkBinary("-", mkRef(K::Size, SHkv), mkInt(1)));
    }
  }
  if (r < 0.8) {
    if (auto rd = read(VT::I, cx, 1))
      return mkBinary(rng.pick(std::vector<std::string>{"!=", "==", "<", ">="}),
                      *rd, mkInt(rng.uniform(0, 3)));
  }
  return genB(cx, 2).e;
}

void Generator::genMask() {
  VariantSpec &v = c.spec;
  Ctx cx = ctx(Where::Mask);
  GExprP e;
  double r = rng.unit();
  if (r < 0.03) {
    e = mkBool(false);
  } else if (r < 0.05) {
    e = mkBool(true);
  } else {
    e = maskClause(cx);
    if (rng.chance(0.55))
      e = mkBinary(rng.chance(0.7) ? "&&" : "||", e, maskClause(cx));
    if (rng.chance(0.2))
      e = mkBinary(rng.chance(0.7) ? "&&" : "||", e, maskClause(cx));
    if (rng.chance(0.08))
      e = mkUnary("!", e);
  }
  if (!make(e, cx) || make(e, cx)->in.type != VT::B)
    e = mkBinary("<=", index(IKV), index(IQ));
  FuncSpec f;
  f.names = {"b", "h", "q", "kv"};
  if (rng.chance(0.15))
    f.names = {fresh({"bb", "batch"}), fresh({"hh", "head"}),
               fresh({"i", "qi", "row"}), fresh({"j", "kj", "col"})};
  f.body = e;
  v.mask = f;
  v.order.push_back({'m', 0});
}

void Generator::genScore() {
  VariantSpec &v = c.spec;
  Ctx cx = ctx(Where::Score);
  Ctx noS = cx;
  noS.avail &= ~bitOf(IS);
  NormLimits lim = normLimits(c);
  double hiLimit = std::min(lim.hi, 40.0);
  auto s = [&] { return index(IS); };
  for (int attempt = 0; attempt < 6; ++attempt) {
    GExprP e;
    double r = rng.unit();
    if (r < 0.1) {
      e = s();
    } else if (r < 0.35) {
      Node bias = tame(genNum(noS, int(rng.uniform(1, 3))), 4, noS);
      e = rng.chance(0.5) ? mkBinary("+", s(), bias.e)
                          : mkBinary("-", s(), bias.e);
    } else if (r < 0.45) {
      GExprP cap = floatLit(5, 30);
      std::vector<int> caps;
      for (size_t k = 0; k < v.consts.size(); ++k)
        if (an->constInfo(int(k)).type == VT::F &&
            an->constInfo(int(k)).lo >= 2)
          caps.push_back(int(k));
      if (!caps.empty() && rng.chance(0.5))
        cap = mkRef(K::Const, rng.pick(caps));
      e = mkBinary("*", cap, mkCall("tanh", {mkBinary("/", s(), cap)}));
    } else if (r < 0.55) {
      Node k = tame(genNum(noS, 1), 2, noS);
      e = mkBinary("+", mkBinary("*", s(), k.e),
                   tame(genNum(noS, 1), 2, noS).e);
    } else if (r < 0.85) {
      e = genF(cx, int(rng.uniform(2, 4))).e;
    } else {
      std::vector<int> sl;
      for (size_t k = 0; k < v.lets.size(); ++k)
        if (an->letInfo(int(k)).idx & bitOf(IS))
          sl.push_back(int(k));
      if (sl.empty())
        e = mkBinary("+", s(), tame(genNum(noS, 2), 3, noS).e);
      else
        e = mkRef(K::Let, rng.pick(sl));
    }
    std::optional<Node> n = make(e, cx);
    if (!n || n->in.type == VT::B)
      continue;
    if (!n->in.inf && !n->in.negInf &&
        (n->in.hi > hiLimit || n->in.lo < std::max(lim.lo, -40.0)))
      n = tame(*n, std::min(hiLimit, -std::max(lim.lo, -40.0)), cx);
    if (rng.chance(0.15) && !n->in.inf) {
      GExprP cond = rng.chance(0.7) ? maskClause(noS) : genB(noS, 2).e;
      GExprP minusInf = mkUnary("-", mkInf());
      GExprP w = rng.chance(0.5) ? mkCall("where", {cond, minusInf, n->e})
                                 : mkTernary(cond, n->e, minusInf);
      if (auto wn = make(w, cx))
        n = wn;
    }
    if (!scoreProblem(n->in, c).empty())
      continue;
    FuncSpec f;
    f.names = {"s", "b", "h", "q", "kv"};
    if (rng.chance(0.15))
      f.names = {fresh({"x", "logit", "sc"}), fresh({"bb", "batch"}),
                 fresh({"hh", "head"}), fresh({"i", "qi", "row"}),
                 fresh({"j", "kj", "col"})};
    f.body = n->e;
    v.score = f;
    v.order.push_back({'s', 0});
    return;
  }
}

void Generator::genSink() {
  VariantSpec &v = c.spec;
  Ctx cx = ctx(Where::Sink);
  GExprP e;
  double r = rng.unit();
  if (r < 0.2) {
    e = floatLit(-2, 4);
  } else if (r < 0.5) {
    if (sinkTensor < 0)
      sinkTensor = addTensor(rng.chance(0.7) ? "f32" : "bf16",
                             {mkRef(K::Size, SHq)},
                             rng.chance(0.5) ? Fill::Dyadic : Fill::Normal,
                             -8, 16);
    e = mkRead(sinkTensor, {index(IH)});
    cx = ctx(Where::Sink);
  } else if (r < 0.65) {
    e = mkBinary("*", floatLit(0.1, 1.5), mkCall("float", {index(IH)}));
  } else {
    e = genF(cx, 2).e;
  }
  std::optional<Node> n = make(e, cx);
  if (!n || n->in.type == VT::B) {
    n = make(mkFloat(0.5), cx);
  }
  if (!sinkProblem(n->in).empty())
    n = tame(*n, 6, cx);
  if (!sinkProblem(n->in).empty())
    n = make(mkFloat(1.0), cx);
  FuncSpec f;
  f.names = {rng.chance(0.15) ? fresh({"head", "hh"}) : std::string("h")};
  f.body = n->e;
  v.sink = f;
  v.order.push_back({'k', 0});
}

void Generator::genSelect() {
  VariantSpec &v = c.spec;
  SelectSpec sel;
  int64_t n = rng.pick(std::vector<int64_t>{16, 16, 32, 48, 64});
  double r = rng.unit();
  if (r < 0.7) {
    sel.size = mkInt(n);
  } else if (r < 0.85) {
    sel.size = mkBinary("*", mkInt(16), mkInt(n / 16));
  } else {
    int k = int(v.consts.size());
    v.consts.push_back({fresh({"blk", "nb"}), mkInt(n)});
    v.order.push_back({'c', k});
    reset();
    sel.size = mkRef(K::Const, k);
  }
  double rule = rng.unit();
  if (rule < 0.45) {
    sel.rule = "topk";
    double a = rng.unit();
    if (a < 0.5)
      sel.arg = mkInt(rng.uniform(1, 4));
    else if (a < 0.8)
      sel.arg = mkRef(K::Param, addParam(VT::I, 2));
    else
      sel.arg = mkBinary("+", mkBinary("/", mkRef(K::Size, SSkv), mkInt(64)),
                         mkInt(1));
  } else if (rule < 0.75) {
    sel.rule = "mass";
    sel.arg = rng.chance(0.6)
                  ? mkFloat(rng.pick(std::vector<double>{0.5, 0.75, 0.9, 1.0}))
                  : mkRef(K::Param, addParam(VT::F, 3));
  } else {
    sel.rule = "above";
    sel.arg = rng.chance(0.5) ? mkFloat(dyadic(rng, -4, 6, 7))
                              : mkRef(K::Param, addParam(VT::F, 4));
  }
  v.select = sel;
  v.order.push_back({'e', 0});
  reset();
  if (!gpu()) { // CPU tiles divide the select block
    if (c.blockQ && n % c.blockQ)
      c.blockQ = 0;
    if (c.blockKV && n % c.blockKV)
      c.blockKV = 0;
  }
}

void Generator::genKvIndex() {
  VariantSpec &v = c.spec;
  GExprP n;
  double r = rng.unit();
  if (r < 0.4)
    n = mkInt(rng.uniform(1, c.Skv + 4));
  else if (r < 0.7)
    n = mkBinary("+", mkBinary("/", mkRef(K::Size, SSkv), mkInt(2)), mkInt(1));
  else if (r < 0.85)
    n = mkRef(K::Size, SSkv);
  else
    n = mkRef(K::Param, addParam(VT::I, 1));
  int t = addTensor("i32", {mkRef(K::Size, SB), mkRef(K::Size, SHkv), n},
                    Fill::Positions, 0, 0);
  v.kvIndex = t;
  v.order.push_back({'x', 0});
}

/// Lets, params and tensors nothing reads yet join the score or the mask
/// (most of the time: an unused declaration is a case too).
void Generator::absorbUnused() {
  VariantSpec &v = c.spec;
  auto used = [&](K kind, int64_t id) {
    bool u = false;
    auto scan = [&](const GExprP &e) {
      std::function<void(const GExpr &)> walk = [&](const GExpr &n) {
        u |= n.kind == kind && n.i == id;
        for (const GExprP &a : n.args)
          walk(*a);
      };
      walk(*e);
    };
    for (const auto &l : v.lets)
      scan(l.expr);
    for (const auto &t : v.tensors)
      for (const auto &d : t.dims)
        scan(d);
    for (const auto &p : v.params)
      if (p.def)
        scan(p.def);
    if (v.scale)
      scan(v.scale);
    for (const auto *f : {&v.score, &v.mask, &v.sink})
      if (*f)
        scan((*f)->body);
    if (v.select)
      scan(v.select->arg), scan(v.select->size);
    return u || (kind == K::Read && v.kvIndex == id);
  };
  Ctx scx = ctx(Where::Score), mcx = ctx(Where::Mask);
  auto tryScore = [&](const GExprP &term) {
    if (!v.score) {
      FuncSpec f;
      f.names = {"s", "b", "h", "q", "kv"};
      f.body = index(IS);
      v.score = f;
      v.order.push_back({'s', 0});
    }
    std::optional<Node> t = make(term, scx);
    if (!t || t->in.type == VT::B)
      return false;
    Node small = tame(*t, 1.0, scx);
    GExprP body = mkBinary(rng.chance(0.5) ? "+" : "-", v.score->body,
                           small.e);
    if (auto n = make(body, scx); n && scoreProblem(n->in, c).empty()) {
      v.score->body = body;
      return true;
    }
    return false;
  };
  auto tryMask = [&](const GExprP &cond) {
    if (!v.mask)
      return false;
    GExprP body = mkBinary(rng.chance(0.6) ? "||" : "&&", v.mask->body, cond);
    if (auto n = make(body, mcx); n && n->in.type == VT::B) {
      v.mask->body = body;
      return true;
    }
    return false;
  };
  for (size_t i = 0; i < v.lets.size(); ++i) {
    if (used(K::Let, int64_t(i)) || rng.chance(0.15))
      continue;
    Info in = an->letInfo(int(i));
    GExprP ref = mkRef(K::Let, int64_t(i));
    bool maskable = !(in.idx & bitOf(IS));
    if (in.type == VT::B) {
      if (!(maskable && tryMask(ref)))
        tryScore(mkTernary(ref, mkFloat(0.5), mkFloat(-0.25)));
    } else if (in.negInf) {
      if (!v.score || rng.chance(0.5)) {
        if (v.score)
          removeOrder(v, 's');
        v.score.reset();
        FuncSpec f;
        f.names = {"s", "b", "h", "q", "kv"};
        f.body = ref;
        if (make(ref, scx) && scoreProblem(make(ref, scx)->in, c).empty()) {
          v.score = f;
          v.order.push_back({'s', 0});
        }
      }
    } else if (!tryScore(ref) && maskable && in.type == VT::I) {
      tryMask(mkBinary(rng.pick(std::vector<std::string>{"<", ">=", "!="}),
                       ref, intLit()));
    }
  }
  for (size_t t = 0; t < v.tensors.size(); ++t) {
    if (used(K::Read, int64_t(t)) || rng.chance(0.15))
      continue;
    bool isInt = v.tensors[t].dtype == "i32";
    std::vector<GExprP> ix;
    for (size_t d = 0; d < v.tensors[t].dims.size(); ++d)
      ix.push_back(indexFor(int(t), d, isInt ? mcx : scx, 1));
    GExprP r = mkRead(int64_t(t), ix);
    if (isInt && tryMask(mkBinary(rng.chance(0.5) ? "!=" : "<", r,
                                  mkInt(rng.uniform(0, 2)))))
      continue;
    tryScore(isInt ? mkCall("float", {r}) : r);
  }
  for (size_t p = 0; p < v.params.size(); ++p) {
    if (used(K::Param, int64_t(p)) || rng.chance(0.2))
      continue;
    GExprP ref = mkRef(K::Param, int64_t(p));
    if (v.params[p].type == VT::I && rng.chance(0.6) &&
        tryMask(mkBinary("<", mkBinary("-", index(IQ), index(IKV)), ref)))
      continue;
    tryScore(mkBinary("*", ref, mkFloat(rng.pick(std::vector<double>{
                                    0.125, 0.25, 0.03}))));
  }
}

void Generator::shuffleOrder() {
  std::vector<std::pair<char, int>> &o = c.spec.order;
  for (size_t i = o.size(); i > 1; --i)
    std::swap(o[i - 1], o[size_t(rng.uniform(0, int64_t(i) - 1))]);
  // Consts and lets keep their relative order.
  for (char kind : {'c', 'l'}) {
    int next = 0;
    for (auto &[k, i] : o)
      if (k == kind)
        i = next++;
  }
}

Case Generator::generate() {
  VariantSpec &v = c.spec;
  v.name = rng.pick(std::vector<std::string>{"v", "rand", "variant_x",
                                             "attn", "r"}) +
           std::to_string(c.index);
  pickShape();
  pickOptions();
  c.dataSeed = uint32_t(rng.next() % 1000000007ULL);
  int launches = rng.chance(0.3) ? 2 : 1;
  c.launches.assign(launches, {});
  double norm = rng.unit();
  v.normalize = norm < 0.55   ? ""
                : norm < 0.65 ? "sigmoid"
                : norm < 0.75 ? "relu"
                : norm < 0.85 ? "relu2"
                              : "softplus";
  if (v.normalize.empty() && rng.chance(0.2))
    v.normalize = "softmax";
  if (!v.normalize.empty())
    v.order.push_back({'n', 0});
  if (rng.chance(0.12)) {
    v.outDtype = rng.pick(std::vector<std::string>{"f32", "f16", "bf16"});
    v.order.push_back({'o', 0});
  }
  reset();
  bool softmax = v.normalizer() == "softmax";

  int nConsts = rng.chance(0.5) ? 0 : int(rng.uniform(1, 2));
  for (int i = 0; i < nConsts; ++i)
    addConst();
  int nParams = int(rng.pick(std::vector<int64_t>{0, 0, 1, 1, 1, 2, 2, 3}));
  for (int i = 0; i < nParams; ++i)
    addParam(rng.chance(0.6) ? VT::I : VT::F, rng.chance(0.2) ? 1 : 0);
  if (rng.chance(0.12)) {
    docTensors = {addTensor("i32", {mkRef(K::Size, SB), mkRef(K::Size, SSq)},
                            Fill::Sorted, 0, 0),
                  addTensor("i32", {mkRef(K::Size, SB), mkRef(K::Size, SSkv)},
                            Fill::Sorted, 0, 0)};
  }
  int nTensors = int(rng.pick(std::vector<int64_t>{0, 0, 0, 1, 1, 1, 2, 3}));
  for (int i = 0; i < nTensors; ++i)
    addGenericTensor();
  bool wantSelect = rng.chance(0.12);
  if (!wantSelect && rng.chance(0.07))
    genKvIndex();

  if (rng.chance(0.2))
    addLet(0, rng.chance(0.7) ? VT::F : VT::I); // index-free
  if (rng.chance(0.3))
    genScale();
  int nLets = int(rng.pick(std::vector<int64_t>{0, 0, 1, 1, 2, 3}));
  for (int i = 0; i < nLets; ++i) {
    double r = rng.unit();
    unsigned maskIdx = kAllIndices & ~bitOf(IS);
    if (r < 0.35)
      addLet(maskIdx, rng.chance(0.5) ? VT::I : VT::B);
    else if (r < 0.5)
      addLet(bitOf(IH) | bitOf(IHKV), rng.chance(0.5) ? VT::F : VT::I);
    else if (r < 0.65)
      addLet(maskIdx, VT::F);
    else
      addLet(kAllIndices, VT::F);
  }
  if (rng.chance(0.7))
    genMask();
  bool unnormalized =
      v.normalizer() == "relu" || v.normalizer() == "relu2";
  if (rng.chance(0.8) || (unnormalized && !scoreProblem(an->sInfo(), c).empty()))
    genScore();
  if (softmax && rng.chance(0.25))
    genSink();
  if (wantSelect)
    genSelect();
  absorbUnused();
  c.lse = v.hasRowSum() && rng.chance(0.65);
  shuffleOrder();
  return c;
}

} // namespace

Case generateCase(uint64_t seed, uint64_t index, const std::string &target) {
  for (uint64_t attempt = 0; attempt < 20; ++attempt) {
    Case c = Generator(seed, index, target, attempt).generate();
    if (validate(c).empty())
      return c;
  }
  // Plain causal attention: always valid.
  Case c;
  c.seed = seed, c.index = index, c.target = target;
  c.dtype = isGpu(target) ? "bf16" : "f32";
  c.Sq = 33, c.Skv = 65, c.Hq = 2, c.Hkv = 1;
  c.launches.assign(1, {});
  FuncSpec mask{{"b", "h", "q", "kv"},
                mkBinary("<=", mkRef(K::Index, IKV), mkRef(K::Index, IQ))};
  c.spec.mask = mask;
  c.spec.order = {{'m', 0}};
  return c;
}

//===----------------------------------------------------------------------===//
// Source text, options, data
//===----------------------------------------------------------------------===//

std::string toSource(const VariantSpec &v) {
  std::string out = "variant " + v.name + " {\n";
  Names canon;
  canon.spec = &v;
  auto expr = [&](const GExprP &e, const Names &n) { return printed(*e, 0, n); };
  auto func = [&](const char *name, const FuncSpec &f, const int *positions) {
    Names n = canon;
    for (size_t i = 0; i < f.names.size(); ++i)
      n.index[positions[i]] = f.names[i];
    std::string s = std::string(name) + "(";
    for (size_t i = 0; i < f.names.size(); ++i)
      s += (i ? ", " : "") + f.names[i];
    return s + ") = " + expr(f.body, n) + ";";
  };
  for (auto [k, i] : v.order) {
    out += "  ";
    switch (k) {
    case 'p': {
      const ParamSpec &p = v.params[i];
      out += "param " + p.name + ": " + (p.type == VT::I ? "i32" : "f32");
      if (p.def)
        out += " = " + expr(p.def, canon);
      out += ";";
      break;
    }
    case 'c':
      out += "const " + v.consts[i].name + " = " +
             expr(v.consts[i].expr, canon) + ";";
      break;
    case 't': {
      const TensorSpec &t = v.tensors[i];
      out += "tensor " + t.name + ": " + t.dtype + "[";
      for (size_t d = 0; d < t.dims.size(); ++d)
        out += (d ? ", " : "") + expr(t.dims[d], canon);
      out += "];";
      break;
    }
    case 'l':
      out += "let " + v.lets[i].name + " = " + expr(v.lets[i].expr, canon) +
             ";";
      break;
    case 'S':
      out += "scale = " + expr(v.scale, canon) + ";";
      break;
    case 's':
      out += func("score", *v.score, kScorePositions);
      break;
    case 'm':
      out += func("mask", *v.mask, kMaskPositions);
      break;
    case 'k':
      out += func("sink", *v.sink, kSinkPositions);
      break;
    case 'n':
      out += "normalize = " + v.normalize + ";";
      break;
    case 'e':
      out += "select(size = " + expr(v.select->size, canon) + ") = " +
             v.select->rule + "(" + expr(v.select->arg, canon) + ");";
      break;
    case 'o':
      out += "out_dtype = " + v.outDtype + ";";
      break;
    case 'x':
      out += "kv_index = " + v.tensors[v.kvIndex].name + ";";
      break;
    }
    out += "\n";
  }
  return out + "}\n";
}

Options caseOptions(const Case &c) {
  Options o;
  o.target = c.target;
  o.headDim = c.D;
  o.valueHeadDim = c.Dv;
  o.dtype = c.dtype;
  o.blockQ = c.blockQ;
  o.blockKV = c.blockKV;
  o.lse = c.lse;
  o.paged = c.paged;
  o.splitKv = c.splitKv;
  o.gpuLoads = c.gpuLoads;
  return o;
}

std::vector<TensorData> captureData(const Case &c, size_t launch) {
  std::vector<TensorData> out;
  for (const TensorSpec &ts : c.spec.tensors) {
    TensorData t;
    t.name = ts.name;
    t.dtype = *parseDType(ts.dtype);
    t.shape = tensorShape(c, ts, launch);
    int64_t n = 1;
    for (int64_t d : t.shape)
      n *= d;
    int64_t last = t.shape.back(), rows = n / last;
    Rng r(ts.seed + 7919 * launch);
    t.values.resize(n);
    switch (ts.fill) {
    case Fill::Ints:
      for (double &x : t.values)
        x = double(r.uniform(ts.lo, ts.hi));
      break;
    case Fill::Sorted:
      for (int64_t row = 0; row < rows; ++row) {
        int64_t id = 0;
        for (int64_t j = 0; j < last; ++j) {
          t.values[row * last + j] = double(id);
          if (r.chance(0.25))
            id += r.chance(0.8) ? 1 : 2; // a document with no tokens here
        }
      }
      break;
    case Fill::Positions:
      for (int64_t row = 0; row < rows; ++row) {
        int64_t pad = r.uniform(0, last / 4);
        int64_t m = std::min<int64_t>(last - pad, c.Skv);
        std::vector<int64_t> all(c.Skv);
        for (int64_t j = 0; j < c.Skv; ++j)
          all[j] = j;
        for (int64_t j = 0; j < m; ++j)
          std::swap(all[j], all[size_t(r.uniform(j, c.Skv - 1))]);
        std::vector<int64_t> keep(all.begin(), all.begin() + m);
        std::sort(keep.begin(), keep.end());
        if (ts.duplicates && m > 1)
          keep[size_t(r.uniform(1, m - 1))] = keep[0];
        for (int64_t j = 0; j < last; ++j) {
          double x = j < m ? double(keep[j]) : -1.0;
          if (r.chance(0.03))
            x = double(c.Skv + r.uniform(0, 2)); // skipped
          t.values[row * last + j] = x;
        }
      }
      break;
    case Fill::Dyadic:
      for (double &x : t.values)
        x = double(r.uniform(ts.lo, ts.hi)) / 8.0;
      break;
    case Fill::Normal:
      for (double &x : t.values) {
        double u1 = std::max(r.unit(), 1e-300), u2 = r.unit();
        x = std::sqrt(-2 * std::log(u1)) * std::cos(2 * M_PI * u2);
        x = std::clamp(x, -5.9, 5.9);
      }
      break;
    }
    out.push_back(std::move(t));
  }
  return out;
}

std::string describe(const Case &c) {
  std::ostringstream os;
  os << c.target << " " << c.dtype << " D " << c.D << " Dv " << c.Dv << " B "
     << c.B << " Hq " << c.Hq << " Hkv " << c.Hkv << " Sq " << c.Sq
     << " Skv " << c.Skv;
  if (c.lse)
    os << " lse";
  if (c.blockQ || c.blockKV)
    os << " tiles " << c.blockQ << "x" << c.blockKV;
  if (c.splitKv != "auto")
    os << " split " << c.splitKv;
  if (c.paged)
    os << " paged " << c.paged;
  if (c.gpuLoads != "auto")
    os << " " << c.gpuLoads;
  if (c.launches.size() > 1)
    os << " launches " << c.launches.size();
  return os.str();
}

//===----------------------------------------------------------------------===//
// Shrinking
//===----------------------------------------------------------------------===//

namespace {

using SlotFn = std::function<void(GExprP &, Ctx)>;

/// Every expression of a case with the context it is checked in.
void forEachSlot(VariantSpec &v, const SlotFn &f) {
  for (auto &p : v.params)
    if (p.def)
      f(p.def, ctxFor(Where::ParamDefault, v));
  for (size_t i = 0; i < v.consts.size(); ++i)
    f(v.consts[i].expr, Ctx{Where::Const, 0, 0, int(i)});
  for (auto &t : v.tensors)
    for (auto &d : t.dims)
      f(d, ctxFor(Where::Dim, v));
  for (size_t i = 0; i < v.lets.size(); ++i)
    f(v.lets[i].expr, Ctx{Where::Let, kAllIndices, int(i), int(v.consts.size())});
  if (v.scale)
    f(v.scale, ctxFor(Where::Scale, v));
  if (v.score)
    f(v.score->body, ctxFor(Where::Score, v));
  if (v.mask)
    f(v.mask->body, ctxFor(Where::Mask, v));
  if (v.sink)
    f(v.sink->body, ctxFor(Where::Sink, v));
  if (v.select) {
    f(v.select->size, ctxFor(Where::SelectSize, v));
    f(v.select->arg, ctxFor(Where::SelectArg, v));
  }
}

/// `e` with each node of `kind` replaced by `f(node)` (null keeps it).
GExprP mapNodes(const GExprP &e, K kind,
                const std::function<GExprP(const GExpr &)> &f) {
  if (e->kind == kind)
    if (GExprP r = f(*e))
      return r;
  bool changed = false;
  std::vector<GExprP> args;
  for (const GExprP &a : e->args) {
    args.push_back(mapNodes(a, kind, f));
    changed |= args.back() != a;
  }
  if (!changed)
    return e;
  GExpr copy = *e;
  copy.args = std::move(args);
  return std::make_shared<const GExpr>(std::move(copy));
}

bool uses(const GExprP &e, K kind, int64_t id) {
  if (e->kind == kind && e->i == id)
    return true;
  for (const GExprP &a : e->args)
    if (uses(a, kind, id))
      return true;
  return false;
}

bool usedAnywhere(VariantSpec &v, K kind, int64_t id) {
  bool used = false;
  forEachSlot(v, [&](GExprP &e, Ctx) { used |= uses(e, kind, id); });
  if (kind == K::Read && v.kvIndex == id)
    used = true;
  return used;
}

char orderKind(K kind) {
  return kind == K::Param ? 'p' : kind == K::Const ? 'c'
         : kind == K::Read ? 't' : 'l';
}

/// Removes an unused declaration and renumbers the others.
void removeDecl(Case &c, K kind, int64_t id) {
  VariantSpec &v = c.spec;
  switch (kind) {
  case K::Param:
    v.params.erase(v.params.begin() + id);
    for (auto &l : c.launches)
      l.erase(l.begin() + id);
    break;
  case K::Const:
    v.consts.erase(v.consts.begin() + id);
    break;
  case K::Read:
    v.tensors.erase(v.tensors.begin() + id);
    if (v.kvIndex > id)
      --v.kvIndex;
    break;
  default:
    v.lets.erase(v.lets.begin() + id);
    break;
  }
  forEachSlot(v, [&](GExprP &e, Ctx) {
    e = mapNodes(e, kind, [&](const GExpr &n) -> GExprP {
      if (n.i <= id)
        return nullptr;
      GExpr copy = n;
      --copy.i;
      return std::make_shared<const GExpr>(std::move(copy));
    });
  });
  char k = orderKind(kind);
  auto &o = v.order;
  o.erase(std::remove(o.begin(), o.end(), std::make_pair(k, int(id))),
          o.end());
  for (auto &[ok, oi] : o)
    if (ok == k && oi > id)
      --oi;
}

void removeOrder(VariantSpec &v, char k) {
  auto &o = v.order;
  o.erase(std::remove_if(o.begin(), o.end(),
                         [&](const auto &e) { return e.first == k; }),
          o.end());
}

/// Drops every declaration nothing reads (repeatedly: lets read lets).
void removeUnused(Case &c) {
  for (bool again = true; again;) {
    again = false;
    for (K kind : {K::Let, K::Param, K::Const, K::Read}) {
      size_t n = kind == K::Let     ? c.spec.lets.size()
                 : kind == K::Param ? c.spec.params.size()
                 : kind == K::Const ? c.spec.consts.size()
                                    : c.spec.tensors.size();
      for (size_t i = n; i-- > 0;)
        if (!usedAnywhere(c.spec, kind, int64_t(i))) {
          removeDecl(c, kind, int64_t(i));
          again = true;
        }
    }
  }
}

GExprP literalOf(const Info &in, bool high = false) {
  if (in.type == VT::B)
    return mkBool(high);
  double x = high ? in.hi : (in.lo <= 0 && in.hi >= 0 ? 0.0 : in.lo);
  if (in.type == VT::I)
    return mkInt(int64_t(x));
  if (!std::isfinite(x))
    x = 0;
  double rounded = std::ldexp(std::round(std::ldexp(x, 4)), -4);
  return mkFloat(rounded >= in.lo && rounded <= in.hi ? rounded : x);
}

struct Located {
  GExprP node;
  std::vector<size_t> path;
};

void collect(const GExprP &e, std::vector<size_t> &path,
             std::vector<Located> &out) {
  out.push_back({e, path});
  for (size_t i = 0; i < e->args.size(); ++i) {
    path.push_back(i);
    collect(e->args[i], path, out);
    path.pop_back();
  }
}

GExprP replaceAt(const GExprP &e, const std::vector<size_t> &path, size_t at,
                 const GExprP &with) {
  if (at == path.size())
    return with;
  GExpr copy = *e;
  copy.args[path[at]] = replaceAt(e->args[path[at]], path, at + 1, with);
  return std::make_shared<const GExpr>(std::move(copy));
}

} // namespace

std::vector<Case> shrinkCandidates(const Case &c) {
  std::vector<Case> out;
  auto push = [&](Case x) {
    removeUnused(x);
    out.push_back(std::move(x));
  };
  auto edit = [&](const std::function<void(Case &)> &f) {
    Case x = c;
    f(x);
    push(std::move(x));
  };
  const VariantSpec &v = c.spec;
  // One launch.
  if (c.launches.size() > 1)
    for (size_t l = 0; l < c.launches.size(); ++l)
      edit([&](Case &x) { x.launches = {c.launches[l]}; });
  // Whole declarations.
  if (v.select)
    edit([](Case &x) { x.spec.select.reset(); removeOrder(x.spec, 'e'); });
  if (v.kvIndex >= 0)
    edit([](Case &x) {
      int t = x.spec.kvIndex;
      x.spec.kvIndex = -1;
      removeOrder(x.spec, 'x');
      x.spec.tensors[t].fill = Fill::Ints;
      x.spec.tensors[t].lo = 0;
      x.spec.tensors[t].hi = 3;
    });
  if (v.sink)
    edit([](Case &x) { x.spec.sink.reset(); removeOrder(x.spec, 'k'); });
  if (v.mask)
    edit([](Case &x) { x.spec.mask.reset(); removeOrder(x.spec, 'm'); });
  if (v.score)
    edit([](Case &x) { x.spec.score.reset(); removeOrder(x.spec, 's'); });
  if (v.scale)
    edit([](Case &x) { x.spec.scale.reset(); removeOrder(x.spec, 'S'); });
  if (!v.normalize.empty())
    edit([](Case &x) {
      x.spec.normalize.clear();
      removeOrder(x.spec, 'n');
    });
  if (!v.outDtype.empty())
    edit([](Case &x) { x.spec.outDtype.clear(); removeOrder(x.spec, 'o'); });
  // Options.
  if (c.lse)
    edit([](Case &x) { x.lse = false; });
  if (c.paged)
    edit([](Case &x) { x.paged = 0; });
  if (c.splitKv != "auto")
    edit([](Case &x) { x.splitKv = "auto"; });
  if (c.gpuLoads != "auto")
    edit([](Case &x) { x.gpuLoads = "auto"; });
  if (c.blockQ || c.blockKV)
    edit([](Case &x) { x.blockQ = x.blockKV = 0; });
  if (!isGpu(c.target) && c.dtype != "f32")
    edit([](Case &x) { x.dtype = "f32"; });
  // Shapes.
  if (c.B > 1)
    edit([](Case &x) { x.B = 1; });
  if (c.Hkv > 1)
    edit([](Case &x) { x.Hq /= x.Hkv; x.Hkv = 1; });
  if (c.Hq > c.Hkv)
    edit([](Case &x) { x.Hq = x.Hkv; });
  for (int64_t sq : {int64_t(1), c.Sq / 2, c.Sq - 1})
    if (sq >= 1 && sq < c.Sq)
      edit([&](Case &x) { x.Sq = sq; });
  for (int64_t skv : {int64_t(1), c.Skv / 2, c.Skv - 1})
    if (skv >= 1 && skv < c.Skv)
      edit([&](Case &x) { x.Skv = skv; });
  if (c.Dv != c.D)
    edit([](Case &x) { x.Dv = x.D; });
  std::vector<int64_t> dims = isGpu(c.target)
                                  ? std::vector<int64_t>{16, 32, 64}
                                  : std::vector<int64_t>{1, 4, c.D / 2};
  for (int64_t d : dims)
    if (d >= 1 && d < c.D)
      edit([&](Case &x) {
        if (x.Dv == x.D)
          x.Dv = d;
        x.D = d;
      });
  // Declarations replaced by what they hold.
  for (size_t i = 0; i < v.lets.size(); ++i)
    edit([&](Case &x) {
      GExprP body = x.spec.lets[i].expr;
      forEachSlot(x.spec, [&](GExprP &e, Ctx) {
        e = mapNodes(e, K::Let, [&](const GExpr &n) {
          return n.i == int64_t(i) ? body : nullptr;
        });
      });
    });
  Analyzer an(c);
  for (size_t p = 0; p < v.params.size(); ++p)
    edit([&](Case &x) {
      double value = paramValue(c, 0, p);
      GExprP lit = v.params[p].type == VT::I ? mkInt(int64_t(value))
                                             : mkFloat(value);
      forEachSlot(x.spec, [&](GExprP &e, Ctx) {
        e = mapNodes(e, K::Param, [&](const GExpr &n) {
          return n.i == int64_t(p) ? lit : nullptr;
        });
      });
    });
  for (size_t p = 0; p < v.params.size(); ++p)
    if (v.params[p].def)
      for (size_t l = 0; l < c.launches.size(); ++l)
        if (c.launches[l][p])
          edit([&](Case &x) { x.launches[l][p].reset(); });
  for (size_t k = 0; k < v.consts.size(); ++k)
    edit([&](Case &x) {
      CVal val = evalConst(*v.consts[k].expr, ConstEnv{&c, 0, false});
      GExprP lit = val.type == VT::B   ? mkBool(val.b)
                   : val.type == VT::I ? mkInt(val.i)
                                       : mkFloat(val.f);
      forEachSlot(x.spec, [&](GExprP &e, Ctx) {
        e = mapNodes(e, K::Const, [&](const GExpr &n) {
          return n.i == int64_t(k) ? lit : nullptr;
        });
      });
    });
  // Subexpressions: a node replaced by one of its operands or a constant
  // within its range, outermost first.
  VariantSpec copy = v;
  std::vector<std::pair<int, Located>> nodes; // slot number, node
  std::vector<Ctx> ctxs;
  int slot = 0;
  forEachSlot(copy, [&](GExprP &e, Ctx cx) {
    std::vector<size_t> path;
    std::vector<Located> all;
    collect(e, path, all);
    for (Located &n : all)
      nodes.push_back({slot, n});
    ctxs.push_back(cx);
    ++slot;
  });
  for (auto &[s, n] : nodes) {
    Info in;
    try {
      in = an.expr(*n.node, ctxs[s]);
    } catch (...) {
      continue;
    }
    std::vector<GExprP> with;
    for (const GExprP &a : n.node->args)
      with.push_back(a);
    if (n.node->kind != K::Int && n.node->kind != K::Float &&
        n.node->kind != K::Bool && !in.inf && !in.negInf) {
      with.push_back(literalOf(in));
      if (in.type == VT::B)
        with.push_back(literalOf(in, true));
    }
    if (n.node->kind == K::Float && n.node->f != std::round(n.node->f))
      with.push_back(mkFloat(std::round(n.node->f)));
    if (n.node->kind == K::Int && n.node->i != 0 && n.node->i != 1)
      with.push_back(mkInt(n.node->i > 0 ? 1 : 0));
    for (const GExprP &w : with) {
      Case x = c;
      int at = 0;
      forEachSlot(x.spec, [&](GExprP &e, Ctx) {
        if (at++ == s)
          e = replaceAt(e, n.path, 0, w);
      });
      push(std::move(x));
    }
  }
  return out;
}

} // namespace attn::testing::rdiff
