//===- ExpandFloorDiv.cpp - attn.floordiv/floormod to arith ---------------===//
#include "lib/Transforms/Passes.h"
#include "lib/Transforms/Transforms.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Transforms/GreedyPatternRewriteDriver.h"

namespace mlir::attn {
#define GEN_PASS_DEF_ATTNEXPANDFLOORDIVPASS
#include "lib/Transforms/Passes.h.inc"
} // namespace mlir::attn

using namespace mlir;
using namespace mlir::attn;

namespace {

/// Divisors 0 and -1 are the two that trap a hardware divide (by zero and
/// INT_MIN / -1); both are replaced by 1 and their results selected after.
struct SafeDivisor {
  Value isZero, isMinusOne, divisor;
};

SafeDivisor makeSafeDivisor(OpBuilder &b, Location loc, Value rhs) {
  Type t = rhs.getType();
  Value zero = arith::ConstantOp::create(b, loc, b.getIntegerAttr(t, 0));
  Value one = arith::ConstantOp::create(b, loc, b.getIntegerAttr(t, 1));
  Value minusOne = arith::ConstantOp::create(b, loc, b.getIntegerAttr(t, -1));
  Value isZero =
      arith::CmpIOp::create(b, loc, arith::CmpIPredicate::eq, rhs, zero);
  Value isMinusOne =
      arith::CmpIOp::create(b, loc, arith::CmpIPredicate::eq, rhs, minusOne);
  Value trap = arith::OrIOp::create(b, loc, isZero, isMinusOne);
  Value divisor = arith::SelectOp::create(b, loc, trap, one, rhs);
  return {isZero, isMinusOne, divisor};
}

struct ExpandFloorDiv final : OpRewritePattern<FloorDivOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(FloorDivOp op,
                                PatternRewriter &rewriter) const override {
    Location loc = op.getLoc();
    Value lhs = op.getLhs();
    SafeDivisor d = makeSafeDivisor(rewriter, loc, op.getRhs());
    Value zero =
        arith::ConstantOp::create(rewriter, loc, rewriter.getI32IntegerAttr(0));
    Value q = arith::FloorDivSIOp::create(rewriter, loc, lhs, d.divisor);
    Value negated = arith::SubIOp::create(rewriter, loc, zero, lhs);
    q = arith::SelectOp::create(rewriter, loc, d.isMinusOne, negated, q);
    q = arith::SelectOp::create(rewriter, loc, d.isZero, zero, q);
    rewriter.replaceOp(op, q);
    return success();
  }
};

struct ExpandFloorMod final : OpRewritePattern<FloorModOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(FloorModOp op,
                                PatternRewriter &rewriter) const override {
    Location loc = op.getLoc();
    Value lhs = op.getLhs(), rhs = op.getRhs();
    SafeDivisor d = makeSafeDivisor(rewriter, loc, rhs);
    Value zero =
        arith::ConstantOp::create(rewriter, loc, rewriter.getI32IntegerAttr(0));
    // C remainder takes the dividend's sign; floor modulo the divisor's.
    Value r = arith::RemSIOp::create(rewriter, loc, lhs, d.divisor);
    Value nonZero =
        arith::CmpIOp::create(rewriter, loc, arith::CmpIPredicate::ne, r, zero);
    Value rNeg =
        arith::CmpIOp::create(rewriter, loc, arith::CmpIPredicate::slt, r, zero);
    Value bNeg = arith::CmpIOp::create(rewriter, loc, arith::CmpIPredicate::slt,
                                       rhs, zero);
    Value signsDiffer = arith::XOrIOp::create(rewriter, loc, rNeg, bNeg);
    Value adjust = arith::AndIOp::create(rewriter, loc, nonZero, signsDiffer);
    Value adjusted = arith::AddIOp::create(rewriter, loc, r, rhs);
    r = arith::SelectOp::create(rewriter, loc, adjust, adjusted, r);
    r = arith::SelectOp::create(rewriter, loc, d.isMinusOne, zero, r);
    r = arith::SelectOp::create(rewriter, loc, d.isZero, lhs, r);
    rewriter.replaceOp(op, r);
    return success();
  }
};

struct AttnExpandFloorDivPass final
    : mlir::attn::impl::AttnExpandFloorDivPassBase<AttnExpandFloorDivPass> {
  void runOnOperation() override {
    RewritePatternSet patterns(&getContext());
    populateExpandFloorDivPatterns(patterns);
    if (failed(applyPatternsGreedily(getOperation(), std::move(patterns))))
      signalPassFailure();
  }
};

} // namespace

void mlir::attn::populateExpandFloorDivPatterns(RewritePatternSet &patterns) {
  patterns.add<ExpandFloorDiv, ExpandFloorMod>(patterns.getContext());
}
