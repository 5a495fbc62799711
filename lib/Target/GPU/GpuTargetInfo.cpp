//===- GpuTargetInfo.cpp - what the GPU targets answer alike --------------===//
#include "lib/Target/GPU/GpuTargetInfo.h"

#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/Target/LLVMIR/Dialect/GPU/GPUToLLVMIRTranslation.h"

namespace mlir::attn::gpukernel {

void registerGpuDialects(DialectRegistry &registry) {
  registry.insert<gpu::GPUDialect>();
  registerGPUDialectTranslation(registry);
}

std::optional<TilePlan> nextGpuPlan(const TilePlan &first,
                                    const TilePlan &tried, const GpuFit &fit,
                                    const ::attn::KernelInfo &info) {
  bool spills = fit.spillStoreBytes > 0 || fit.spillLoadBytes > 0;
  // `tried` is the unshared retry of a plan that shared registers (below):
  // kept if it does not spill, else the tiles shrink, with sharing again.
  bool unsharedRetry = first.shareRegisters && !tried.shareRegisters;
  if (unsharedRetry && !spills)
    return std::nullopt;
  if (!unsharedRetry && fit.backwardSpillBytes > 0 && !tried.scalarBackward) {
    // The tensor-core backward keeps dK and dV (or dQ) fragments and a
    // tile's S, dP, P and dS in registers; a heavy score region can push
    // that past 255: the scalar backward then, the forward's tiles as
    // they are.
    TilePlan next = tried;
    next.scalarBackward = true;
    return next;
  }
  if (tried.shareRegisters && fit.launchRegisters &&
      (spills || fit.registers < fit.launchRegisters)) {
    // setmaxnreg budgets the CTA's pool as launched with the launch
    // bound's maximum. A kernel that fits in fewer registers is launched
    // with fewer, and .inc would wait forever: it needs no sharing. One
    // that spills may spill in the producer's share (which evaluates the
    // classifier): the same tiles without sharing give every thread the
    // launch bound's registers. Either way a kernel without setmaxnreg
    // is taken if it does not spill; else the tiles shrink, with
    // sharing again.
    TilePlan next = tried;
    next.shareRegisters = false;
    return next;
  }
  TilePlan next = tried;
  next.shareRegisters = first.shareRegisters;
  // Two consumer warpgroups (sm_90a, 128 query rows) keep key tiles of
  // at least 32; past that, one warpgroup (64 rows: up to 255 registers
  // a thread instead of 240) starts again from the first key tile.
  bool wideQ = tried.blockQ > 64;
  if (spills && tried.autoBlockKV && tried.blockKV > (wideQ ? 32 : 16)) {
    next.blockKV /= 2;
    return next;
  }
  if (spills && tried.autoBlockQ && wideQ) {
    next.blockQ = 64;
    next.blockKV = first.blockKV;
    return next;
  }
  // Head dims past 128 are offered only where they fit in registers.
  int64_t widest = std::max(info.headDim, info.valueHeadDim);
  if (spills && widest > 128)
    throw ::attn::Error(
        "--head-dim", "D = " + std::to_string(info.headDim) +
                          ", Dv = " + std::to_string(info.valueHeadDim) +
                          " does not fit in registers for this variant "
                          "on " +
                          info.target + " (spills " +
                          std::to_string(fit.spillStoreBytes) +
                          " bytes even with " + std::to_string(tried.blockKV) +
                          "-key tiles); head dims up to 128 always fit");
  return std::nullopt;
}

} // namespace mlir::attn::gpukernel
