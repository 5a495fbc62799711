//===- AMDGPUTargetInfo.cpp - TargetInfo for AMD CDNA GPUs ----------------===//
#include "lib/Target/AMDGPU/AMDGPUTargetInfo.h"

#include "lib/Target/AMDGPU/Passes.h"

#include "lib/Target/CPU/CPUTarget.h"

#include "mlir/Dialect/AMDGPU/IR/AMDGPUDialect.h"
#include "mlir/Dialect/LLVMIR/ROCDLDialect.h"
#include "mlir/Target/LLVM/ROCDL/Target.h"
#include "mlir/Target/LLVMIR/Dialect/ROCDL/ROCDLToLLVMIRTranslation.h"

using namespace mlir;
using namespace mlir::attn;

namespace mlir::attn::rocm {
namespace {

const llvm::StringRef kChips[] = {"gfx90a", "gfx942", "gfx950", "gfx1100"};

/// The CDNA chips gfx90a, gfx942 and gfx950 (MFMA); gfx1100 (RDNA) is
/// named but refused.
class AMDGPUTargetInfo : public gpukernel::GpuTargetInfo {
public:
  AMDGPUTargetInfo()
      : GpuTargetInfo({kChips, "AMD", Stage::AMDGCN, "amdgcn",
                       "ptx is for NVIDIA targets; AMD targets emit amdgcn "
                       "(AMDGPU assembly)",
                       "amdgpu_code_object"}) {}
  void checkChip(const std::string &name) const override;
  void planTiles(TilePlan &plan, const ::attn::Options &options,
                 const TileRequest &request) const override;
  void registerDialects(DialectRegistry &registry) const override {
    gpukernel::registerGpuDialects(registry);
    registry.insert<amdgpu::AMDGPUDialect, ROCDL::ROCDLDialect>();
    ROCDL::registerROCDLTargetInterfaceExternalModels(registry);
    registerROCDLDialectTranslation(registry);
  }
  void registerPasses() const override { registerAttnAMDGPUPasses(); }
  std::string kernelPipeline(const TilePlan &plan, const std::string &chip,
                             llvm::StringRef variant,
                             llvm::StringRef entry) const override;
  std::string backwardPipeline(const TilePlan &plan, const std::string &chip,
                               llvm::StringRef variant) const override;
  FailureOr<GpuBinary> lowerToBinary(ModuleOp host, const TilePlan &plan,
                                     const std::string &chip, bool assemble,
                                     std::string &error) const override;

protected:
  FailureOr<std::string> lowerToAssembly(ModuleOp host, const TilePlan &plan,
                                         const std::string &chip,
                                         std::string &error) const override;
};

} // namespace

const TargetInfo &amdgpuTargetInfo() {
  static const AMDGPUTargetInfo target;
  return target;
}

} // namespace mlir::attn::rocm

namespace {

rocm::KernelConfig configFor(const TilePlan &plan, const std::string &chip) {
  rocm::KernelConfig cfg;
  cfg.chip = chip;
  cfg.blockKV = plan.blockKV;
  cfg.lld = ::attn::cpu::findLld();
  return cfg;
}

} // namespace

void rocm::AMDGPUTargetInfo::checkChip(const std::string &name) const {
  if (!isSupportedChip(name))
    throw ::attn::Error("--target",
                        "target '" + name +
                            "' (RDNA: wave32 WMMA) is not implemented yet; "
                            "AMD kernels are built for the CDNA chips "
                            "gfx90a, gfx942 and gfx950");
}

void rocm::AMDGPUTargetInfo::planTiles(TilePlan &plan,
                                       const ::attn::Options &options,
                                       const TileRequest &request) const {
  fitTileBuffers(plan, options, request);
  // MFMA tiles: waves of 16 query rows, 4 of them (64 rows).
  if (options.blockQ && options.blockQ != 64)
    throw ::attn::Error("--block-q", "GPU kernels use query tiles of 64 rows");
  checkKeyTileOption(options);
  plan.blockQ = options.blockQ ? options.blockQ : 64;
  checkGpuLoadsSpelling(options);
  if (options.gpuLoads == "tma")
    throw ::attn::Error("--gpu-loads", "TMA needs --target sm_90a");
  if (options.gpuLoads == "cp.async")
    throw ::attn::Error("--gpu-loads", "cp.async is NVIDIA's; AMD kernels "
                                       "load tiles through registers");
  int64_t widest = std::max(request.headDim, request.valueHeadDim);
  plan.blockKV = options.blockKV ? options.blockKV : widest <= 64 ? 64 : 32;
  plan.autoBlockKV = !options.blockKV;
  // LDS holds one K and one V^T tile. The widest tile within 32 KiB
  // leaves room for two workgroups (8 waves) per CU's 64 KiB.
  auto lds = [&](int64_t blockKV) {
    return ldsBytes(request.headDim, request.valueHeadDim, blockKV);
  };
  if (options.blockKV && lds(options.blockKV) > 64 * 1024)
    throw ::attn::Error("--block-kv",
                        std::to_string(options.blockKV) + "-key tiles need " +
                            std::to_string(lds(options.blockKV)) +
                            " bytes of LDS; a workgroup has 65536");
  if (!options.blockKV) {
    plan.blockKV = 64;
    while (plan.blockKV > 16 && lds(plan.blockKV) > 32 * 1024)
      plan.blockKV /= 2;
  }
}

std::string rocm::AMDGPUTargetInfo::kernelPipeline(const TilePlan &plan,
                                                   const std::string &chip,
                                                   StringRef variant,
                                                   StringRef entry) const {
  return "attn-build-amdgpu-kernel{chip=" + chip +
         " block-kv=" + std::to_string(plan.blockKV) +
         " func=" + variant.str() + " kernel=" + entry.str() + "}";
}

std::string rocm::AMDGPUTargetInfo::backwardPipeline(
    const TilePlan &, const std::string &chip, StringRef variant) const {
  return "attn-build-amdgpu-backward{chip=" + chip + " func=" +
         variant.str() + "}";
}

FailureOr<GpuBinary> rocm::AMDGPUTargetInfo::lowerToBinary(
    ModuleOp host, const TilePlan &plan, const std::string &chip, bool,
    std::string &error) const {
  // Code objects are linked here whether or not asked: ld.lld is part of
  // the compiler, unlike ptxas.
  auto object = lowerToCodeObject(host, configFor(plan, chip), error);
  if (failed(object))
    return failure();
  GpuBinary out;
  out.binary = std::move(object->object);
  out.report = std::move(object->report);
  out.registers = object->vgprs;
  // Spilled registers live in scratch (private segment) memory; SGPRs
  // spilled into VGPR lanes cost no memory traffic.
  out.spillStoreBytes = out.spillLoadBytes = object->scratchBytes;
  return out;
}

FailureOr<std::string> rocm::AMDGPUTargetInfo::lowerToAssembly(
    ModuleOp host, const TilePlan &plan, const std::string &chip,
    std::string &error) const {
  return rocm::lowerToAssembly(host, configFor(plan, chip), error);
}
