//===- Passes.td - CPU target passes -----------------------*- tablegen -*-===//
#ifndef ATTN_TARGET_CPU_PASSES_TD
#define ATTN_TARGET_CPU_PASSES_TD

include "mlir/Pass/PassBase.td"

def AttnCPUWorkRangePass : Pass<"attn-cpu-work-range", "::mlir::func::FuncOp"> {
  let summary = "Turn the tiled work loop into a range of work items per call";
  let description = [{
    The CPU runtime splits the (b, h, query tile) items of a launch over its
    thread pool. This pass appends `work_begin, work_end: index` to the
    function, replaces the `attn.work_loop` `scf.parallel` with an `scf.for`
    over that range (delinearized into b, h and the query tile), and hoists
    the per-item stack buffers to the entry block, since one call now runs
    its items sequentially.
  }];
  let dependentDialects = ["::mlir::scf::SCFDialect",
                           "::mlir::arith::ArithDialect"];
}

def AttnCPUApproximateMathPass : Pass<"attn-cpu-approximate-math"> {
  let summary = "Polynomial approximations of exp/log/tanh for vector code";
  let description = [{
    Replaces `math.exp2`, `math.exp`, `math.log`, `math.tanh` and friends
    with MLIR's f32 polynomial approximations, so that LLVM can vectorize
    loops that use them instead of calling libm once per element.
  }];
  let dependentDialects = ["::mlir::arith::ArithDialect",
                           "::mlir::math::MathDialect",
                           "::mlir::vector::VectorDialect"];
}

#endif // ATTN_TARGET_CPU_PASSES_TD
