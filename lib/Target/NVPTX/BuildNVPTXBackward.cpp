//===- BuildNVPTXBackward.cpp - backward attn.attention to NVIDIA kernels -===//
#include "lib/Target/GPU/LaunchAttr.h"
#include "lib/Target/NVPTX/NVPTXTarget.h"
#include "lib/Target/NVPTX/Passes.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/Dialect/LLVMIR/NVVMDialect.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/NVGPU/IR/NVGPUDialect.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Dialect/Vector/IR/VectorOps.h"

namespace mlir::attn::nvptx {
#define GEN_PASS_DEF_ATTNBUILDNVPTXBACKWARDPASS
#include "lib/Target/NVPTX/Passes.h.inc"
} // namespace mlir::attn::nvptx

using namespace mlir;
using namespace mlir::attn;

namespace {

struct AttnBuildNVPTXBackwardPass
    : nvptx::impl::AttnBuildNVPTXBackwardPassBase<AttnBuildNVPTXBackwardPass> {
  using Base::Base;

  void runOnOperation() override {
    ModuleOp module = getOperation();
    auto forward = gpukernel::builtForwardLaunch(module, "attn-build-nvptx-kernel");
    if (failed(forward))
      return signalPassFailure();
    FailureOr<AttentionOp> op =
        gpukernel::findKernelSource(module, func, /*backward=*/true);
    if (failed(op))
      return signalPassFailure();
    nvptx::KernelConfig cfg;
    cfg.chip = chip;
    cfg.scalarBackward = scalar;
    std::string error;
    auto kernels = nvptx::buildGpuBackwardKernels(module, *op,
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
