//===- GpuTargetInfo.h - what the GPU targets answer alike ----------------===//
//
// The part of TargetInfo that NVPTX and AMDGPU share: bf16 by default,
// tiles of 16-key multiples, and the --gpu-loads spellings.
//
//===----------------------------------------------------------------------===//
#ifndef ATTN_TARGET_GPU_GPUTARGETINFO_H
#define ATTN_TARGET_GPU_GPUTARGETINFO_H

#include "lib/Target/TargetInfo.h"

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
};

} // namespace mlir::attn::gpukernel

#endif // ATTN_TARGET_GPU_GPUTARGETINFO_H
