//===- BuildNVPTXKernel.cpp - attn.attention to NVIDIA kernels ------------===//
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
#define GEN_PASS_DEF_ATTNBUILDNVPTXKERNELPASS
#include "lib/Target/NVPTX/Passes.h.inc"
} // namespace mlir::attn::nvptx

using namespace mlir;
using namespace mlir::attn;

namespace {

struct AttnBuildNVPTXKernelPass
    : nvptx::impl::AttnBuildNVPTXKernelPassBase<AttnBuildNVPTXKernelPass> {
  using Base::Base;

  void runOnOperation() override {
    ModuleOp module = getOperation();
    FailureOr<AttentionOp> op =
        gpukernel::findKernelSource(module, func, /*backward=*/false);
    if (failed(op))
      return signalPassFailure();
    nvptx::KernelConfig cfg;
    cfg.chip = chip;
    cfg.blockQ = blockQ;
    cfg.blockKV = blockKV;
    cfg.tma = tma;
    cfg.shareRegisters = shareRegisters;
    std::string name = gpukernel::kernelNameFor(*op, kernel);
    std::string error;
    FailureOr<nvptx::KernelInfo> info =
        nvptx::buildGpuKernel(module, *op, name, cfg, error);
    if (failed(info)) {
      op->emitError(error);
      return signalPassFailure();
    }
    gpukernel::recordLaunch(gpukernel::findKernelModule(module), *info);
  }
};

} // namespace
