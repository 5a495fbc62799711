//===- VariantGenerator.h - random valid .attn variants and cases ---------===//
//
// Random differential testing (docs/numerics.md "Random differential
// testing"): a seeded generator of valid `.attn` variants over the whole
// language (indices, sizes, params, consts, captured tensors, lets, every
// builtin and operator, masks, every normalizer, sinks, scale, select,
// kv_index, out_dtype) together with a launch (shape, head dims, dtype,
// options, param values, captured tensor contents). A case is a pure
// function of (seed, index, target).
//
// Values are kept numerically sane by construction: every expression is
// built together with an interval of its values and a bound on how far a
// kernel's f32 evaluation may drift from the float64 reference's. Builtins
// get arguments inside their domains (log of values >= 0.05, exp of values
// <= 3, divisors away from 0), discontinuous operations (comparisons,
// floor, ceil, sign, int, float %) only see values that f32 and f64 compute
// identically, and the final score stays in a range where each normalizer's
// bound of docs/numerics.md is meaningful. `validate` re-checks the same
// invariants on any case, which is how the shrinker keeps them.
//
//===----------------------------------------------------------------------===//
#ifndef ATTN_TEST_RANDOM_VARIANTGENERATOR_H
#define ATTN_TEST_RANDOM_VARIANTGENERATOR_H

#include "attn/jit.h"
#include "runtime/support/Normalizers.h"

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace attn::testing::rdiff {

/// splitmix64: small, fast and the same on every platform (std::
/// distributions are not), so a case is the same everywhere.
class Rng {
public:
  explicit Rng(uint64_t seed) : state(seed) {}
  uint64_t next();
  /// Uniform integer in [lo, hi] (inclusive).
  int64_t uniform(int64_t lo, int64_t hi);
  /// Uniform double in [0, 1).
  double unit();
  bool chance(double p) { return unit() < p; }
  template <typename T> const T &pick(const std::vector<T> &v) {
    return v[static_cast<size_t>(uniform(0, int64_t(v.size()) - 1))];
  }

private:
  uint64_t state;
};

/// Value types of the expression language.
enum class VT { I, F, B };

/// An expression node. Immutable: edits (the shrinker's) rebuild the path
/// to the changed node and share the rest.
struct GExpr;
using GExprP = std::shared_ptr<const GExpr>;
struct GExpr {
  enum class K {
    Int,     // integer literal `i` (printed negated when negative)
    Float,   // float literal `f`, spelled `op`
    Bool,    // true / false (`i` != 0)
    Inf,     // inf
    Index,   // loop index `i`: 0 s, 1 b, 2 h, 3 q, 4 kv, 5 hkv
    Size,    // size `i`: B Hq Hkv Sq Skv D Dv
    Param,   // param `i`
    Const,   // const `i`
    Let,     // let `i`
    Unary,   // `op` is "-" or "!"
    Binary,  // `op` is + - * / % < <= > >= == != && ||
    Ternary, // c ? a : b
    Call,    // builtin `op`
    Read,    // captured tensor `i` indexed by args
  };
  K kind = K::Int;
  int64_t i = 0;
  double f = 0;
  std::string op;
  std::vector<GExprP> args;
};

GExprP mkInt(int64_t v);
GExprP mkFloat(double v, std::string spelling = "");
GExprP mkBool(bool v);
GExprP mkInf();
GExprP mkRef(GExpr::K kind, int64_t id);
GExprP mkUnary(const std::string &op, GExprP x);
GExprP mkBinary(const std::string &op, GExprP a, GExprP b);
GExprP mkTernary(GExprP c, GExprP a, GExprP b);
GExprP mkCall(const std::string &fn, std::vector<GExprP> args);
GExprP mkRead(int64_t tensor, std::vector<GExprP> indices);

/// How a captured tensor's contents are made (any shape).
enum class Fill {
  Ints,      // i32 uniform in [lo, hi]
  Sorted,    // i32 non-decreasing along the last dim from 0 (document ids)
  Positions, // i32 kv_index lists: ascending key positions, -1 padding
  Dyadic,    // multiples of 1/8 in [lo/8, hi/8] (exact in bf16 and f16)
  Normal,    // unit normal (rounded to the tensor's dtype)
};

struct ParamSpec {
  std::string name;
  VT type = VT::I;        // I or F
  GExprP def;             // default, or null
};
struct ConstSpec {
  std::string name;
  GExprP expr;
};
struct TensorSpec {
  std::string name;
  std::string dtype;      // i32 f32 f16 bf16
  std::vector<GExprP> dims;
  Fill fill = Fill::Ints;
  int lo = 0, hi = 3;     // Ints, Dyadic (eighths)
  uint32_t seed = 1;
  bool duplicates = false; // Positions: some keys listed twice
};
struct LetSpec {
  std::string name;
  GExprP expr;
};
struct FuncSpec {
  std::vector<std::string> names; // positional parameter names
  GExprP body;
};
struct SelectSpec {
  GExprP size;      // constant multiple of 16
  std::string rule; // topk mass above
  GExprP arg;
};

struct VariantSpec {
  std::string name = "v";
  std::vector<ParamSpec> params;
  std::vector<ConstSpec> consts;
  std::vector<TensorSpec> tensors;
  std::vector<LetSpec> lets;
  GExprP scale;
  std::optional<FuncSpec> score, mask, sink;
  std::string normalize; // "" = not written (softmax)
  std::optional<SelectSpec> select;
  std::string outDtype;  // "" = not written
  int kvIndex = -1;      // tensor
  /// Print order: 'p' param, 'c' const, 't' tensor, 'l' let, and the
  /// singletons 'S' scale, 's' score, 'm' mask, 'k' sink, 'n' normalize,
  /// 'e' select, 'o' out_dtype, 'x' kv_index (consts and lets keep their
  /// relative order; everything else may come anywhere).
  std::vector<std::pair<char, int>> order;

  std::string normalizer() const {
    return normalize.empty() ? "softmax" : normalize;
  }
  bool hasRowSum() const {
    const NormalizerTraits *traits = findNormalizer(normalizer());
    return traits && traits->rowSum;
  }
};

/// One test case: a variant and everything its launches need.
struct Case {
  uint64_t seed = 0, index = 0;
  std::string target = "cpu";
  VariantSpec spec;
  // Compile options.
  std::string dtype = "f32";
  int64_t D = 64, Dv = 64;
  int64_t blockQ = 0, blockKV = 0;
  bool lse = false;
  std::string splitKv = "auto";
  int64_t paged = 0;
  std::string gpuLoads = "auto"; // sm_90a: auto (TMA) or cp.async
  // Shape.
  int64_t B = 1, Hq = 1, Hkv = 1, Sq = 1, Skv = 1;
  /// Per launch, per param: the value passed (nullopt: not passed, the
  /// default applies). Params without a default are always passed.
  std::vector<std::vector<std::optional<double>>> launches;
  uint32_t dataSeed = 1;
};

/// A generated case: (seed, index) fully determine it for a target.
Case generateCase(uint64_t seed, uint64_t index, const std::string &target);

/// The variant's `.attn` text.
std::string toSource(const VariantSpec &spec);

/// attn::Options of a case.
Options caseOptions(const Case &c);

/// "" when the case keeps the generator's invariants (valid names and
/// contexts, values in range, no discontinuity on inexact values, sane
/// scores, positive tensor dims), else why not.
std::string validate(const Case &c);

/// The value param `p` has in launch `l` (passed or default).
double paramValue(const Case &c, size_t launch, size_t p);

/// A captured tensor's contents for a launch.
struct TensorData {
  std::string name;
  DType dtype = DType::f32;
  std::vector<int64_t> shape;
  std::vector<double> values; // before rounding to dtype
};
std::vector<TensorData> captureData(const Case &c, size_t launch);

/// Smaller or simpler cases, most aggressive first (options, whole
/// declarations, shapes, then subexpressions); callers keep those that
/// validate() and still fail.
std::vector<Case> shrinkCandidates(const Case &c);

/// A one-line description: target, dtype, head dims, shape, options.
std::string describe(const Case &c);

} // namespace attn::testing::rdiff

#endif // ATTN_TEST_RANDOM_VARIANTGENERATOR_H
