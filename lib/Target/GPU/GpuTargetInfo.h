//===- GpuTargetInfo.h - what the GPU targets answer alike ----------------===//
//
// The part of TargetInfo that NVPTX and AMDGPU share: bf16 by default,
// tiles of 16-key multiples, the --gpu-loads spellings, and finding the
// attention op a kernel is built from.
//
//===----------------------------------------------------------------------===//
#ifndef ATTN_TARGET_GPU_GPUTARGETINFO_H
#define ATTN_TARGET_GPU_GPUTARGETINFO_H

#include "dialect/AttnOps.h"
#include "lib/Target/TargetInfo.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"

namespace mlir::attn::gpukernel {

class GpuTargetInfo : public TargetInfo {
public:
  bool isGpu() const override { return true; }
  ::attn::DType defaultDType() const override { return ::attn::DType::bf16; }

protected:
  /// Key tiles of 16-key multiples small enough for registers (S and O
  /// fragments) and 48 KiB of shared memory.
  static void checkKeyTileOption(const ::attn::Options &options) {
    if (options.blockKV && (options.blockKV % 16 || options.blockKV > 64))
      throw ::attn::Error("--block-kv", "GPU kernels take key tiles of 16, "
                                        "32, 48 or 64");
  }
  static void checkGpuLoadsSpelling(const ::attn::Options &options) {
    if (options.gpuLoads != "auto" && options.gpuLoads != "tma" &&
        options.gpuLoads != "cp.async")
      throw ::attn::Error("--gpu-loads",
                          "expected auto, tma or cp.async, got '" +
                              options.gpuLoads + "'");
  }
  /// The attention op of func.func @`func` in `module`, or null.
  static AttentionOp findAttention(ModuleOp module, StringRef func) {
    AttentionOp op;
    module.walk([&](func::FuncOp f) {
      if (f.getSymName() == func)
        f.walk([&](AttentionOp a) { op = a; });
    });
    return op;
  }
};

} // namespace mlir::attn::gpukernel

#endif // ATTN_TARGET_GPU_GPUTARGETINFO_H
