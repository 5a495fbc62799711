//===- RowState.cpp - one query row's online-normalizer math --------------===//
#include "lib/Transforms/RowState.h"

#include "lib/Transforms/Transforms.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/IR/BuiltinAttributes.h"

#include <cmath>

using namespace mlir;
using namespace mlir::attn;

namespace {

constexpr double kLog2E = 1.4426950408889634;
constexpr double kLn2 = 0.6931471805599453;

/// `value` as an f32 constant shaped like `like` (f32, or a splat vector).
Value constantLike(OpBuilder &b, Location loc, Value like, double value) {
  Type type = like.getType();
  FloatAttr scalar = b.getF32FloatAttr(static_cast<float>(value));
  if (auto vector = dyn_cast<VectorType>(type))
    return arith::ConstantOp::create(b, loc, vector,
                                     DenseElementsAttr::get(vector, scalar));
  return arith::ConstantOp::create(b, loc, type, scalar);
}

Value f32Constant(OpBuilder &b, Location loc, double value) {
  return arith::ConstantOp::create(b, loc, b.getF32Type(),
                                   b.getF32FloatAttr(static_cast<float>(value)));
}

} // namespace

Value mlir::attn::toNormalizerDomain(OpBuilder &b, Location loc,
                                     Normalize norm, Value x) {
  if (!runsInLog2Domain(norm))
    return x;
  return arith::MulFOp::create(b, loc, x, constantLike(b, loc, x, kLog2E));
}

Value mlir::attn::initialRowMax(OpBuilder &b, Location loc, Value sinkMax,
                                Value sinkCounts) {
  if (!sinkMax)
    return f32Constant(b, loc, -INFINITY);
  if (!sinkCounts)
    return sinkMax;
  return arith::SelectOp::create(b, loc, sinkCounts, sinkMax,
                                 f32Constant(b, loc, -INFINITY));
}

Value mlir::attn::initialRowSum(OpBuilder &b, Location loc, bool sink,
                                Value sinkCounts) {
  if (!sink)
    return f32Constant(b, loc, 0.0);
  if (!sinkCounts)
    return f32Constant(b, loc, 1.0);
  return arith::SelectOp::create(b, loc, sinkCounts, f32Constant(b, loc, 1.0),
                                 f32Constant(b, loc, 0.0));
}

Value mlir::attn::maskEntry(OpBuilder &b, Location loc, Normalize norm,
                            Value t, Value keep) {
  if (maskedScoreIsMinusInf(norm))
    return keep ? arith::SelectOp::create(b, loc, keep, t,
                                          constantLike(b, loc, t, -INFINITY))
                : t;
  Value p = normalizeScore(b, loc, norm, t);
  return keep ? arith::SelectOp::create(b, loc, keep, p,
                                        constantLike(b, loc, p, 0.0))
              : p;
}

RowRescale mlir::attn::rescaleRow(OpBuilder &b, Location loc, Normalize norm,
                                  Value mOld, Value newMax, Value l,
                                  bool withMinusMUse) {
  if (!hasRunningMax(norm))
    return {mOld, Value(), Value(), Value(), l};
  Value none = arith::CmpFOp::create(b, loc, arith::CmpFPredicate::OEQ, newMax,
                                     constantLike(b, loc, newMax, -INFINITY));
  Value mUse = arith::SelectOp::create(b, loc, none,
                                       constantLike(b, loc, newMax, 0.0),
                                       newMax);
  Value alpha =
      math::Exp2Op::create(b, loc, arith::SubFOp::create(b, loc, mOld, mUse));
  Value rescaled = arith::MulFOp::create(b, loc, l, alpha);
  Value minusMUse =
      withMinusMUse ? arith::NegFOp::create(b, loc, mUse).getResult() : Value();
  return {newMax, mUse, minusMUse, alpha, rescaled};
}

Value mlir::attn::entryProbability(OpBuilder &b, Location loc, Normalize norm,
                                   Value x, Value mUse) {
  if (!hasRunningMax(norm))
    return x;
  return math::Exp2Op::create(b, loc, arith::SubFOp::create(b, loc, x, mUse));
}

Value mlir::attn::entryProbabilityScaled(OpBuilder &b, Location loc,
                                         Normalize norm, Value x, Value scale,
                                         const RowRescale &row) {
  if (!hasRunningMax(norm))
    return x;
  return math::Exp2Op::create(
      b, loc, math::FmaOp::create(b, loc, x, scale, row.minusMUse));
}

Value mlir::attn::addToRowSum(OpBuilder &b, Location loc, Normalize norm,
                              Value l, Value p, arith::FastMathFlags flags) {
  if (!hasRowSum(norm) || !l)
    return l;
  return arith::AddFOp::create(b, loc, l, p, flags);
}

RowNormalization mlir::attn::normalizeRow(OpBuilder &b, Location loc,
                                          Normalize norm, Value l) {
  if (!hasRowSum(norm))
    return {};
  Value empty = arith::CmpFOp::create(b, loc, arith::CmpFPredicate::OEQ, l,
                                      constantLike(b, loc, l, 0.0));
  Value inverse =
      arith::DivFOp::create(b, loc, constantLike(b, loc, l, 1.0), l);
  return {empty, arith::SelectOp::create(b, loc, empty,
                                         constantLike(b, loc, l, 0.0),
                                         inverse)};
}

Value mlir::attn::rowLse(OpBuilder &b, Location loc, Normalize norm, Value m,
                         Value l, Value empty) {
  if (!hasRowSum(norm))
    return Value();
  Value lse;
  if (hasRunningMax(norm))
    lse = arith::MulFOp::create(
        b, loc, arith::AddFOp::create(b, loc, m, math::Log2Op::create(b, loc, l)),
        constantLike(b, loc, l, kLn2));
  else
    lse = math::LogOp::create(b, loc, l);
  return arith::SelectOp::create(b, loc, empty,
                                 constantLike(b, loc, l, -INFINITY), lse);
}
