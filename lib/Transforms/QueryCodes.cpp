//===- QueryCodes.cpp - a query row rounded to int8 / e4m3 codes ----------===//
#include "lib/Transforms/QueryCodes.h"
#include "lib/Transforms/Transforms.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/Vector/IR/VectorOps.h"

using namespace mlir;
using namespace mlir::attn;

namespace {
Value cF32(OpBuilder &b, Location loc, double v) {
  return arith::ConstantFloatOp::create(b, loc, b.getF32Type(),
                                        APFloat(static_cast<float>(v)));
}
/// `scalar`'s type with x's shape (a scalar type for scalar x).
Type like(Value x, Type scalar) {
  if (auto v = dyn_cast<VectorType>(x.getType()))
    return v.clone(scalar);
  return scalar;
}
} // namespace

double mlir::attn::queryCodeLimit(KVQuant kind, bool fnuz) {
  if (!isFp8(kind))
    return 127.0;
  return fnuz ? 240.0 : 448.0;
}

QueryRowScale mlir::attn::queryRowScale(OpBuilder &b, Location loc, Value amax,
                                        double limit) {
  Value fzero = cF32(b, loc, 0.0);
  Value nonzero =
      arith::CmpFOp::create(b, loc, arith::CmpFPredicate::OGT, amax, fzero);
  QueryRowScale s;
  s.inverse = arith::SelectOp::create(
      b, loc, nonzero, arith::DivFOp::create(b, loc, cF32(b, loc, limit), amax),
      fzero);
  s.scale = arith::MulFOp::create(b, loc, amax, cF32(b, loc, 1.0 / limit));
  return s;
}

Value mlir::attn::scaleIntoCodeRange(OpBuilder &b, Location loc, Value x,
                                     Value inverse) {
  if (auto v = dyn_cast<VectorType>(x.getType()))
    inverse = vector::BroadcastOp::create(b, loc, v, inverse);
  return arith::MulFOp::create(b, loc, x, inverse);
}

Value mlir::attn::int8QueryCodes(OpBuilder &b, Location loc, Value x,
                                 Value inverse) {
  Value rounded =
      math::RoundEvenOp::create(b, loc, scaleIntoCodeRange(b, loc, x, inverse));
  Value code =
      arith::FPToSIOp::create(b, loc, like(x, b.getI32Type()), rounded);
  return arith::TruncIOp::create(b, loc, like(x, b.getI8Type()), code);
}
