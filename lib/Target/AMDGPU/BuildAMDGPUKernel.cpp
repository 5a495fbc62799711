//===- BuildAMDGPUKernel.cpp - attn.attention to AMD CDNA kernels ---------===//
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
#define GEN_PASS_DEF_ATTNBUILDAMDGPUKERNELPASS
#include "lib/Target/AMDGPU/Passes.h.inc"
} // namespace mlir::attn::rocm

using namespace mlir;
using namespace mlir::attn;

namespace {

struct AttnBuildAMDGPUKernelPass
    : rocm::impl::AttnBuildAMDGPUKernelPassBase<AttnBuildAMDGPUKernelPass> {
  using Base::Base;

  void runOnOperation() override {
    ModuleOp module = getOperation();
    FailureOr<AttentionOp> op =
        gpukernel::findKernelSource(module, func, /*backward=*/false);
    if (failed(op))
      return signalPassFailure();
    rocm::KernelConfig cfg;
    cfg.chip = chip;
    cfg.blockKV = blockKV;
    std::string name = gpukernel::kernelNameFor(*op, kernel);
    std::string error;
    FailureOr<gpukernel::KernelInfo> info =
        rocm::buildGpuKernel(module, *op, name, cfg, error);
    if (failed(info)) {
      op->emitError(error);
      return signalPassFailure();
    }
    gpukernel::recordLaunch(gpukernel::findKernelModule(module), *info);
  }
};

} // namespace
