//===- CPUTargetInfo.cpp - TargetInfo for CPUs ----------------------------===//
#include "lib/Target/CPU/CPUTargetInfo.h"

#include "lib/Target/CPU/CPUTarget.h"
#include "lib/Target/CPU/Passes.h"

#include <tuple>

namespace attn::cpu {
namespace {

/// This machine's CPU or one named by --cpu: tiles sized for stack
/// buffers, the tiled IR and LLVM IR stages.
class CPUTargetInfo : public mlir::attn::TargetInfo {
public:
  llvm::ArrayRef<llvm::StringRef> names() const override;
  bool isGpu() const override { return false; }
  DType defaultDType() const override { return DType::f32; }
  void checkOptions(const Options &options) const override;
  void planTiles(mlir::attn::TilePlan &plan, const Options &options,
                 const mlir::attn::TileRequest &request) const override;
  void checkStage(mlir::attn::Stage stage) const override;
  void registerDialects(mlir::DialectRegistry &registry) const override;
  void registerPasses() const override;
  std::string kernelPipeline(const mlir::attn::TilePlan &plan,
                             const std::string &chip, llvm::StringRef variant,
                             llvm::StringRef entry) const override;
  std::string
  loweringPipeline(const llvm::TargetMachine &machine) const override;
};

} // namespace

const mlir::attn::TargetInfo &cpuTargetInfo() {
  static const CPUTargetInfo target;
  return target;
}

} // namespace attn::cpu

namespace attn::cpu {

llvm::ArrayRef<llvm::StringRef> CPUTargetInfo::names() const {
  static const llvm::StringRef names[] = {"cpu"};
  return names;
}

void CPUTargetInfo::checkOptions(const Options &options) const {
  if (options.gpuLoads != "auto")
    throw Error("--gpu-loads", "applies to GPU targets only");
}

void CPUTargetInfo::planTiles(mlir::attn::TilePlan &plan,
                              const Options &options,
                              const mlir::attn::TileRequest &request) const {
  if (!options.blockKV && request.headDim > 64) {
    // Past D = 64, 32-key tiles: decode (which reads whole tiles in place,
    // see attn-tile) ran 1.3-1.6x faster than with 64 at D = 128 (bf16 and
    // int8 caches). Prefill prefers 64 (manyRowsBlockKV below).
    plan.blockKV = 32;
  }
  if (int64_t n = request.selectBlock) {
    // Tiles divide the select blocks, so a tile is kept or dropped whole
    // (GPU kernels read a map of select blocks instead).
    int64_t fit = 64;
    while (n % fit != 0)
      fit /= 2;
    for (auto [name, given, tile] :
         {std::tuple{"--block-q", options.blockQ, &plan.blockQ},
          std::tuple{"--block-kv", options.blockKV, &plan.blockKV}}) {
      if (!given)
        *tile = fit;
      else if (n % given != 0)
        throw Error(name, "tiles of " + std::to_string(given) +
                              " do not divide the select block size " +
                              std::to_string(n));
    }
  }
  mlir::attn::fitTileBuffers(plan, options, request);
  if (!options.blockKV && !request.selectBlock && request.headDim > 64 &&
      request.headDim <= 128 && plan.blockQ > detail::kFewRows &&
      !request.hasBlockMap && !request.backward &&
      mlir::attn::tileBufferBytes(request, plan.blockQ, 64) <=
          mlir::attn::kTileBufferBudget) {
    // Prefill at D = 128 with 64-key tiles: the P.V reduction twice as
    // long per C block load and store. One thread, CPU time of 11 dense
    // launches (B 1, H 4, S 2048), 6 alternating rounds: AVX-512 778 ->
    // 734 ms, AVX2 1234 -> 1232 ms (no loss). D = 256 was not measured.
    // The JIT builds launches of many rows apart from decode's few
    // (Jit.cpp), so only that class widens; code holding both classes
    // (rows=all: AOT bundles) keeps 32 for decode. Block maps and the
    // backward are laid out in KernelInfo::blockKV's tiles, so kernels
    // with either keep one tile size.
    plan.manyRowsBlockKV = 64;
  }
  // dQ summed in a fixed order unless the backward also accumulates the
  // gradients of f32 tensors the score reads, which ordered-dq's first
  // phase has no per-group copies for.
  plan.orderedDq = request.backward && !request.scoreReadsF32Tensors;
}

void CPUTargetInfo::checkStage(mlir::attn::Stage stage) const {
  if (stage == mlir::attn::Stage::PTX)
    throw Error("--stage", "ptx needs a GPU target (--target sm_80 or "
                           "sm_90a)");
  if (stage == mlir::attn::Stage::AMDGCN)
    throw Error("--stage", "amdgcn needs an AMD target (--target gfx90a, "
                           "gfx942 or gfx950)");
}

void CPUTargetInfo::registerDialects(mlir::DialectRegistry &registry) const {
  registerTranslations(registry);
}

void CPUTargetInfo::registerPasses() const {
  mlir::attn::cpu::registerAttnCPUPasses();
  registerCPUPipelines();
}

std::string CPUTargetInfo::kernelPipeline(const mlir::attn::TilePlan &plan,
                                          const std::string &,
                                          llvm::StringRef,
                                          llvm::StringRef) const {
  int64_t blockKV = plan.rows == "many" && plan.manyRowsBlockKV
                        ? plan.manyRowsBlockKV
                        : plan.blockKV;
  std::string tiles = "block-q=" + std::to_string(plan.blockQ) +
                      " block-kv=" + std::to_string(blockKV);
  return "attn-tile-backward{" + tiles +
         (plan.orderedDq ? " ordered-dq=1" : "") + "},func.func(attn-tile{" +
         tiles + " rows=" + plan.rows + "},canonicalize,cse)";
}

std::string
CPUTargetInfo::loweringPipeline(const llvm::TargetMachine &machine) const {
  return cpu::loweringPipeline(vectorShape(machine));
}

} // namespace attn::cpu
