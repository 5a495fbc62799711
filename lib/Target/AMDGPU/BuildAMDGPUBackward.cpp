//===- BuildAMDGPUBackward.cpp - backward attn.attention to AMD kernels ---===//
#include "lib/Target/AMDGPU/AMDGPUTarget.h"
#include "lib/Target/AMDGPU/Passes.h"
#include "lib/Target/GPU/LaunchAttr.h"

#include "mlir/Dialect/AMDGPU/IR/AMDGPUDialect.h"
#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/Dialect/LLVMIR/ROCDLDialect.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Dialect/Vector/IR/VectorOps.h"

namespace mlir::attn::rocm {
#define GEN_PASS_DEF_ATTNBUILDAMDGPUBACKWARDPASS
#include "lib/Target/AMDGPU/Passes.h.inc"
} // namespace mlir::attn::rocm

using namespace mlir;
using namespace mlir::attn;

namespace {

struct AttnBuildAMDGPUBackwardPass
    : rocm::impl::AttnBuildAMDGPUBackwardPassBase<
          AttnBuildAMDGPUBackwardPass> {
  using Base::Base;

  void runOnOperation() override {
    ModuleOp module = getOperation();
    auto forward = gpukernel::builtForwardLaunch(module, "attn-build-amdgpu-kernel");
    if (failed(forward))
      return signalPassFailure();
    FailureOr<AttentionOp> op =
        gpukernel::findKernelSource(module, func, /*backward=*/true);
    if (failed(op))
      return signalPassFailure();
    rocm::KernelConfig cfg;
    cfg.chip = chip;
    std::string error;
    auto kernels = rocm::buildGpuBackwardKernels(module, *op,
                                                 forward->second.name, cfg,
                                                 error);
    if (failed(kernels)) {
      op->emitError(error);
      return signalPassFailure();
    }
    gpukernel::recordBackwardLaunch(forward->first, forward->second,
                                    *kernels);
  }
};

} // namespace
