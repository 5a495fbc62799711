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
struct AttnCPUApproximateMathPass final
    : mlir::attn::cpu::impl::AttnCPUApproximateMathPassBase<
          AttnCPUApproximateMathPass> {
  void runOnOperation() override {
    MLIRContext *ctx = &getContext();
    // First rewrite exp2 (and friends) into ops that have approximations.
    {
      RewritePatternSet patterns(ctx);
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
