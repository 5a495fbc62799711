//===- LoopBuilder.h - constants, casts and loops for the CPU tilers ------===//
//
// What attn-tile and attn-tile-backward build at every turn: index and f32
// constants, index <-> i32 and narrow float -> f32 casts, the fast-math
// flags of their reductions and scf.for loops with a body callback, all at
// the op's location.
//
//===----------------------------------------------------------------------===//
#ifndef ATTN_TRANSFORMS_LOOPBUILDER_H
#define ATTN_TRANSFORMS_LOOPBUILDER_H

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/IR/Builders.h"

namespace mlir::attn {

class LoopBuilder {
public:
  explicit LoopBuilder(Location loc)
      : loc(loc), f32(Float32Type::get(loc.getContext())),
        i32(IntegerType::get(loc.getContext(), 32)) {}

protected:
  using BodyFn = function_ref<void(OpBuilder &, Value)>;

  Value cIdx(OpBuilder &b, int64_t v) {
    return arith::ConstantIndexOp::create(b, loc, v);
  }
  Value cF32(OpBuilder &b, double v) {
    return arith::ConstantFloatOp::create(b, loc, f32,
                                          APFloat(static_cast<float>(v)));
  }
  Value toI32(OpBuilder &b, Value index) {
    return arith::IndexCastOp::create(b, loc, i32, index);
  }
  Value toF32(OpBuilder &b, Value x) {
    if (x.getType() == f32)
      return x;
    return arith::ExtFOp::create(b, loc, f32, x);
  }
  Value minIdx(OpBuilder &b, Value x, Value y) {
    return arith::MinUIOp::create(b, loc, x, y);
  }
  arith::FastMathFlagsAttr fastMath(OpBuilder &b) {
    // Reassociation lets LLVM vectorize the dot products and row sums;
    // results stay within f32 rounding of the sequential order.
    return arith::FastMathFlagsAttr::get(
        b.getContext(),
        arith::FastMathFlags::reassoc | arith::FastMathFlags::contract);
  }
  /// for (iv = lb; iv < ub; iv += step) body(iv).
  void forLoop(OpBuilder &b, Value lb, Value ub, int64_t step, BodyFn body) {
    scf::ForOp::create(b, loc, lb, ub, cIdx(b, step), ValueRange{},
                       [&](OpBuilder &nb, Location, Value iv, ValueRange) {
                         body(nb, iv);
                         scf::YieldOp::create(nb, loc);
                       });
  }
  void forLoop(OpBuilder &b, int64_t ub, BodyFn body) {
    forLoop(b, cIdx(b, 0), cIdx(b, ub), 1, body);
  }

  Location loc;
  FloatType f32;
  IntegerType i32;
};

} // namespace mlir::attn

#endif // ATTN_TRANSFORMS_LOOPBUILDER_H
