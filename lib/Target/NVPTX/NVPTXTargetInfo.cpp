//===- NVPTXTargetInfo.cpp - TargetInfo for NVIDIA GPUs -------------------===//
#include "lib/Target/NVPTX/NVPTXTargetInfo.h"

#include "lib/Target/NVPTX/Passes.h"

#include "mlir/Dialect/LLVMIR/NVVMDialect.h"
#include "mlir/Target/LLVM/NVVM/Target.h"
#include "mlir/Target/LLVMIR/Dialect/NVVM/NVVMToLLVMIRTranslation.h"

#include <regex>

using namespace mlir;
using namespace mlir::attn;

namespace mlir::attn::nvptx {
namespace {

const llvm::StringRef kChips[] = {"sm_80", "sm_90a"};

/// sm_80 (mma.sync, cp.async) and sm_90a (wgmma, TMA).
class NVPTXTargetInfo : public gpukernel::GpuTargetInfo {
public:
  NVPTXTargetInfo()
      : GpuTargetInfo({kChips, "NVIDIA", Stage::PTX, "ptx",
                       "amdgcn is AMDGPU assembly; NVIDIA targets emit ptx",
                       "cubin"}) {}
  void planTiles(TilePlan &plan, const ::attn::Options &options,
                 const TileRequest &request) const override;
  void registerDialects(DialectRegistry &registry) const override {
    gpukernel::registerGpuDialects(registry);
    registry.insert<NVVM::NVVMDialect>();
    NVVM::registerNVVMTargetInterfaceExternalModels(registry);
    registerNVVMDialectTranslation(registry);
  }
  void registerPasses() const override { registerAttnNVPTXPasses(); }
  std::string kernelPipeline(const TilePlan &plan, const std::string &chip,
                             llvm::StringRef variant,
                             llvm::StringRef entry) const override;
  std::string backwardPipeline(const TilePlan &plan, const std::string &chip,
                               llvm::StringRef variant) const override;
  bool assemblesHere() const override { return havePtxas(); }
  FailureOr<GpuBinary> lowerToBinary(ModuleOp host, const TilePlan &plan,
                                     const std::string &chip, bool assemble,
                                     std::string &error) const override;

protected:
  FailureOr<std::string> lowerToAssembly(ModuleOp host, const TilePlan &,
                                         const std::string &chip,
                                         std::string &error) const override {
    KernelConfig cfg;
    cfg.chip = chip;
    return lowerToPtx(host, cfg, error);
  }
};

} // namespace

const TargetInfo &nvptxTargetInfo() {
  static const NVPTXTargetInfo target;
  return target;
}

} // namespace mlir::attn::nvptx

namespace {

/// The spilled bytes ptxas -v reports for the backward kernels
/// (`<entry>_bwd_kv`, `<entry>_bwd_q`).
int64_t backwardSpills(const std::string &report) {
  static const std::regex props(
      "Function properties for (\\S+)\\s*\\n\\s*\\d+ bytes stack frame, "
      "(\\d+) bytes spill stores, (\\d+) bytes spill loads");
  int64_t bytes = 0;
  for (std::sregex_iterator it(report.begin(), report.end(), props), end;
       it != end; ++it) {
    std::string name = (*it)[1];
    if (name.find("_bwd_") != std::string::npos)
      bytes += std::stoll((*it)[2]) + std::stoll((*it)[3]);
  }
  return bytes;
}

} // namespace

void nvptx::NVPTXTargetInfo::planTiles(TilePlan &plan,
                                       const ::attn::Options &options,
                                       const TileRequest &request) const {
  fitTileBuffers(plan, options, request);
  // Tensor-core tiles: warps of 16 query rows, 4 of them (64 rows) on
  // sm_80, two warpgroups of 4 sharing the K/V tiles (128 rows) on sm_90a,
  // or one (64) when asked or when 128 rows spill.
  int64_t widest = std::max(request.headDim, request.valueHeadDim);
  bool hopper = usesWgmma(options.target);
  if (options.blockQ && options.blockQ != 64 &&
      !(hopper && options.blockQ == 128))
    throw ::attn::Error("--block-q",
                        hopper ? "sm_90a kernels use query tiles of 128 rows "
                                 "(two consumer warpgroups) or 64 (one)"
                               : "GPU kernels use query tiles of 64 rows");
  checkKeyTileOption(options);
  plan.blockQ = options.blockQ ? options.blockQ : hopper ? 128 : 64;
  plan.autoBlockQ = hopper && !options.blockQ;
  checkGpuLoadsSpelling(options);
  if (options.gpuLoads == "tma" && !hopper)
    throw ::attn::Error("--gpu-loads", "TMA needs --target sm_90a");
  if (options.gpuLoads == "tma" &&
      (request.quantizedKV || options.paged || request.kvIndex))
    throw ::attn::Error("--gpu-loads",
                        "TMA loads take contiguous unquantized K/V; quantized "
                        "codes, pages and kv_index rows stream with cp.async");
  plan.tma = hopper && options.gpuLoads != "cp.async";
  // wgmma (sm_90a) reads Q and K from shared memory, which leaves the
  // registers for 64-key tiles at D = 128; mma.sync would spill.
  bool wideTiles = widest <= 64 || hopper;
  plan.blockKV = options.blockKV ? options.blockKV : wideTiles ? 64 : 32;
  plan.autoBlockKV = !options.blockKV;
}

std::string nvptx::NVPTXTargetInfo::kernelPipeline(const TilePlan &plan,
                                                   const std::string &chip,
                                                   StringRef variant,
                                                   StringRef entry) const {
  auto flag = [](bool on) { return on ? "true" : "false"; };
  return "attn-build-nvptx-kernel{chip=" + chip +
         " block-q=" + std::to_string(plan.blockQ) +
         " block-kv=" + std::to_string(plan.blockKV) +
         " tma=" + flag(plan.tma) +
         " share-registers=" + flag(plan.shareRegisters) +
         " func=" + variant.str() + " kernel=" + entry.str() + "}";
}

std::string nvptx::NVPTXTargetInfo::backwardPipeline(
    const TilePlan &plan, const std::string &chip, StringRef variant) const {
  return "attn-build-nvptx-backward{chip=" + chip +
         " scalar=" + (plan.scalarBackward ? "true" : "false") +
         " func=" + variant.str() + "}";
}

FailureOr<GpuBinary> nvptx::NVPTXTargetInfo::lowerToBinary(
    ModuleOp host, const TilePlan &, const std::string &chip, bool assemble,
    std::string &error) const {
  KernelConfig cfg;
  cfg.chip = chip;
  FailureOr<std::string> ptx = lowerToPtx(host, cfg, error);
  if (failed(ptx))
    return failure();
  GpuBinary out;
  out.ptx = std::move(*ptx);
  if (!assemble)
    return out;
  auto cubin = runPtxas(out.ptx, cfg.chip, error);
  if (failed(cubin))
    return failure();
  out.binary = std::move(cubin->cubin);
  out.report = std::move(cubin->report);
  out.registers = cubin->registers;
  out.spillStoreBytes = cubin->spillStoreBytes;
  out.spillLoadBytes = cubin->spillLoadBytes;
  out.backwardSpillBytes = backwardSpills(out.report);
  return out;
}
