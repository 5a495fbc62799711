//===- ApproximateMath.cpp - vectorizable math for the CPU ----------------===//
#include "lib/Target/CPU/Passes.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/Math/Transforms/Passes.h"
#include "mlir/Dialect/Vector/IR/VectorOps.h"
#include "mlir/Transforms/GreedyPatternRewriteDriver.h"

namespace mlir::attn::cpu {
#define GEN_PASS_DEF_ATTNCPUAPPROXIMATEMATHPASS
#include "lib/Target/CPU/Passes.h.inc"
} // namespace mlir::attn::cpu

using namespace mlir;

namespace {

/// f32 exp2(x) as 2^n * p(f), n = round(x), f = x - n in [-1/2, 1/2]: p is
/// a degree-6 minimax polynomial of 2^f (relative error below 8e-8, p(0) = 1
/// exactly, so exp2(0) = 1 and an unchanged running max rescales by exactly
/// 1) and 2^n is built in the exponent bits. About 14 vector instructions
/// where exp(x ln 2)'s range reduction and polynomial take 22: the softmax's
/// exp is most of a prefill tile's non-matmul work. x is clamped to [-127,
/// 128] first, so -inf (masked scores) gives exactly 0 and inputs past
/// 127.5 give inf; NaN stays NaN.
struct ApproximateExp2 final : OpRewritePattern<math::Exp2Op> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(math::Exp2Op op,
                                PatternRewriter &rewriter) const override {
    Type type = op.getType();
    if (!getElementTypeOrSelf(type).isF32())
      return rewriter.notifyMatchFailure(op, "expected f32");
    Location loc = op.getLoc();
    auto vectorType = dyn_cast<VectorType>(type);
    Type intType = vectorType ? Type(vectorType.clone(rewriter.getI32Type()))
                              : Type(rewriter.getI32Type());
    auto splat = [&](Type t, TypedAttr scalar) -> Value {
      if (auto v = dyn_cast<VectorType>(t))
        return arith::ConstantOp::create(rewriter, loc, t,
                                         DenseElementsAttr::get(v, scalar));
      return arith::ConstantOp::create(rewriter, loc, t, scalar);
    };
    auto f = [&](double v) { return splat(type, rewriter.getF32FloatAttr(v)); };
    auto i = [&](int32_t v) {
      return splat(intType, rewriter.getI32IntegerAttr(v));
    };
    // Clamps written as x86's max/min read them (the second operand
    // wins when unordered), so each is one instruction and NaN passes.
    auto bound = [&](arith::CmpFPredicate pred, Value limit, Value x) {
      Value past = arith::CmpFOp::create(rewriter, loc, pred, limit, x);
      return arith::SelectOp::create(rewriter, loc, past, limit, x);
    };
    Value x = bound(arith::CmpFPredicate::OGT, f(-127.0), op.getOperand());
    x = bound(arith::CmpFPredicate::OLT, f(128.0), x);
    // Adding 1.5 * 2^23 rounds x to an integer n (to nearest even) and
    // leaves n in the low mantissa bits.
    Value magic = f(12582912.0);
    Value shifted = arith::AddFOp::create(rewriter, loc, x, magic);
    Value n = arith::SubFOp::create(rewriter, loc, shifted, magic);
    Value frac = arith::SubFOp::create(rewriter, loc, x, n);
    // Remez coefficients of 2^f on [-1/2, 1/2], c0 first.
    static constexpr float coefficients[] = {
        1.0f,         0.693147182f,  0.240226462f,    0.0555032864f,
        0.00961848907f, 0.00133999309f, 0.000153458124f};
    Value p = f(coefficients[6]);
    for (int k = 5; k >= 0; --k)
      p = math::FmaOp::create(rewriter, loc, p, frac, f(coefficients[k]));
    // The low 9 bits of n, shifted into the exponent field, plus the bias:
    // n + 127 is in [0, 255] after the clamp.
    Value bits = arith::BitcastOp::create(rewriter, loc, intType, shifted);
    Value exponent = arith::AddIOp::create(
        rewriter, loc, arith::ShLIOp::create(rewriter, loc, bits, i(23)),
        i(127 << 23));
    Value scale = arith::BitcastOp::create(rewriter, loc, type, exponent);
    rewriter.replaceOpWithNewOp<arith::MulFOp>(op, p, scale);
    return success();
  }
};

struct AttnCPUApproximateMathPass final
    : mlir::attn::cpu::impl::AttnCPUApproximateMathPassBase<
          AttnCPUApproximateMathPass> {
  void runOnOperation() override {
    MLIRContext *ctx = &getContext();
    // First rewrite exp2 (and friends) into ops that have approximations.
    {
      RewritePatternSet patterns(ctx);
      // f32 exp2 directly; other types through exp below.
      patterns.add<ApproximateExp2>(ctx, /*benefit=*/2);
      math::populateExpansionPatterns(patterns, {"exp2", "tan", "sinh",
                                                 "cosh", "asinh", "acosh",
                                                 "atanh", "powf", "fpowi"});
      if (failed(applyPatternsGreedily(getOperation(), std::move(patterns))))
        return signalPassFailure();
    }
    RewritePatternSet patterns(ctx);
    populateMathPolynomialApproximationPatterns(
        patterns, [](StringRef name) {
          // Op names as upstream spells them ("math.exp").
          return llvm::is_contained(
              {math::ExpOp::getOperationName(), math::ExpM1Op::getOperationName(),
               math::LogOp::getOperationName(), math::Log2Op::getOperationName(),
               math::Log1pOp::getOperationName(), math::TanhOp::getOperationName(),
               math::ErfOp::getOperationName(), math::AtanOp::getOperationName(),
               math::Atan2Op::getOperationName()},
              name);
        });
    if (failed(applyPatternsGreedily(getOperation(), std::move(patterns))))
      signalPassFailure();
  }
};
} // namespace
