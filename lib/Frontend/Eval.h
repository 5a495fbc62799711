//===- Eval.h - evaluate checked expressions in float64 -------------------===//
//
// Used to fold `const` declarations and parameter defaults, to evaluate
// tensor dimensions, and by the float64 reference in test/. Kernels never run
// through this: they are compiled through MLIR.
//
//===----------------------------------------------------------------------===//
#ifndef ATTN_FRONTEND_EVAL_H
#define ATTN_FRONTEND_EVAL_H

#include "lib/Frontend/AST.h"

#include <cstdint>
#include <vector>

namespace attn::fe {

/// A scalar of the expression language: i32 values are exact in `i`, f32
/// values are carried in double precision in `f`.
struct Scalar {
  Type type = Type::Invalid;
  int32_t i = 0;
  double f = 0;
  bool b = false;

  static Scalar ofInt(int32_t v) { return {Type::I32, v, 0, false}; }
  static Scalar ofFloat(double v) { return {Type::F32, 0, v, false}; }
  static Scalar ofBool(bool v) { return {Type::Bool, 0, 0, v}; }
  double asDouble() const { return type == Type::I32 ? i : f; }
};

/// Supplies what names refer to at one evaluation point.
class EvalEnv {
public:
  virtual ~EvalEnv() = default;
  virtual Scalar index(IndexVar v) = 0;
  virtual Scalar size(SizeVar v) = 0;
  virtual Scalar param(int idx) = 0;
  virtual Scalar tensorElement(int idx, const std::vector<int32_t> &indices) = 0;
  /// Lets are evaluated through the environment so it can cache them.
  virtual Scalar let(int idx) = 0;
};

/// Evaluates a checked expression. `consts` come from the variant.
Scalar evaluate(const Expr &e, const Variant &v, EvalEnv &env);

/// Converts to `to` with the language's promotion rules (i32 -> f32).
Scalar promote(Scalar s, Type to);

/// Float-to-int conversion of `int(x)`: truncation, saturating at the i32
/// range, NaN -> 0 (what the kernels do, so results agree).
int32_t truncToInt(double x);

} // namespace attn::fe

#endif // ATTN_FRONTEND_EVAL_H
