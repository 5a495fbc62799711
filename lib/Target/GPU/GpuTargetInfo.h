//===- GpuTargetInfo.h - what the GPU targets answer alike ----------------===//
//
// The part of TargetInfo that NVPTX and AMDGPU share: bf16 by default,
// tiles of 16-key multiples, the --gpu-loads spellings, the stages (attn,
// tiled and the target's own assembly), the dialects every GPU kernel
// uses, and which plan to try when a kernel does not fit in registers.
// Each target keeps what differs: its tiles, passes and binaries.
//
// Header-only, with its virtuals inline: the targets' classes stay private
// to their .cpp (see NVPTXTargetInfo.h), and a base with out-of-line
// virtuals would give libattnjit.so and the programs that also link the
// compiler statically each a strong typeinfo (an ASan ODR violation).
// Shared logic too long for a header is in free functions
// (GpuTargetInfo.cpp).
//
//===----------------------------------------------------------------------===//
#ifndef ATTN_TARGET_GPU_GPUTARGETINFO_H
#define ATTN_TARGET_GPU_GPUTARGETINFO_H

#include "lib/Target/TargetInfo.h"

namespace mlir::attn::gpukernel {

/// The GPU dialect and its translation (the chip's own dialects are the
/// target's).
void registerGpuDialects(DialectRegistry &registry);

/// Which plan to compile after `tried` (started as `first`) reported `fit`:
/// the scalar backward where the tensor-core backward spills; the same
/// tiles without setmaxnreg where sharing registers cannot be confirmed or
/// spills; then smaller automatic tiles while the kernel spills. None: keep
/// `tried`'s kernel. Throws attn::Error naming --head-dim for head dims
/// past 128 that spill even with the smallest tiles.
std::optional<TilePlan> nextGpuPlan(const TilePlan &first,
                                    const TilePlan &tried, const GpuFit &fit,
                                    const ::attn::KernelInfo &info);

/// What tells the GPU targets apart in the answers they share.
struct GpuTargetTraits {
  llvm::ArrayRef<llvm::StringRef> names;
  const char *vendor;       // "NVIDIA": how lowerToText's error names them
  Stage assembly;           // the text past the gpu.module (PTX or AMDGCN)
  const char *assemblyName; // its --stage spelling
  /// checkStage's error for the other vendor's assembly.
  const char *otherAssemblyError;
  const char *binaryKind;
};

class GpuTargetInfo : public TargetInfo {
public:
  explicit GpuTargetInfo(const GpuTargetTraits &traits) : traits(traits) {}

  llvm::ArrayRef<llvm::StringRef> names() const override {
    return traits.names;
  }
  bool isGpu() const override { return true; }
  ::attn::DType defaultDType() const override { return ::attn::DType::bf16; }
  void checkStage(Stage stage) const override {
    Stage other = traits.assembly == Stage::PTX ? Stage::AMDGCN : Stage::PTX;
    if (stage == other)
      throw ::attn::Error("--stage", traits.otherAssemblyError);
    if (stage == Stage::LLVM)
      throw ::attn::Error("--stage", "GPU targets emit attn, tiled (the "
                                     "gpu.module), ptx (NVIDIA) or amdgcn "
                                     "(AMD)");
  }
  const char *binaryKind() const override { return traits.binaryKind; }
  FailureOr<std::string> lowerToText(ModuleOp host, Stage stage,
                                     const TilePlan &plan,
                                     const std::string &chip,
                                     std::string &error) const override {
    if (stage != traits.assembly) {
      error = std::string(traits.vendor) + " targets print " +
              traits.assemblyName + " past the gpu.module";
      return failure();
    }
    return lowerToAssembly(host, plan, chip, error);
  }
  std::optional<TilePlan>
  nextPlan(const TilePlan &first, const TilePlan &tried, const GpuFit &fit,
           const ::attn::KernelInfo &info) const override {
    return nextGpuPlan(first, tried, fit, info);
  }

protected:
  /// The target's assembly text of `host`'s gpu.module.
  virtual FailureOr<std::string> lowerToAssembly(ModuleOp host,
                                                 const TilePlan &plan,
                                                 const std::string &chip,
                                                 std::string &error) const = 0;

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

private:
  GpuTargetTraits traits;
};

} // namespace mlir::attn::gpukernel

#endif // ATTN_TARGET_GPU_GPUTARGETINFO_H
