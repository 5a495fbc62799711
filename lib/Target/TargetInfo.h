//===- TargetInfo.h - what the Driver asks of each target -----------------===//
//
// One implementation per target directory (CPU/CPUTarget, NVPTX/NVPTXTarget,
// AMDGPU/AMDGPUTarget). The Driver looks a target up once by its --target
// name and asks it, instead of branching on the name: which options apply,
// the tiles and threads of a kernel, the stages it emits, the dialects it
// needs, the passes that build its kernels, and, for GPUs, how kernels are
// turned into binaries and which plan to try when one does not fit.
// Option errors are thrown as attn::Error naming the option, as attnc
// reports them.
//
//===----------------------------------------------------------------------===//
#ifndef ATTN_TARGET_TARGETINFO_H
#define ATTN_TARGET_TARGETINFO_H

#include "attn/jit.h"
#include "attn/runtime.h"
#include "lib/Target/GPU/GpuKernel.h"

#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/DialectRegistry.h"

#include "llvm/ADT/ArrayRef.h"
#include "llvm/ADT/StringRef.h"

#include <optional>
#include <string>

namespace llvm {
class TargetMachine;
} // namespace llvm

namespace mlir::attn {

/// The IR `attnc emit --stage` prints.
enum class Stage { Attn, Tiled, LLVM, PTX, AMDGCN };

/// A plan's target choices: tiles, threads and how tiles are loaded.
struct TilePlan {
  int64_t blockQ = 0, blockKV = 0;
  std::string cpu = "native"; // code generation target (--cpu)
  bool tma = false;           // sm_90a K/V by TMA (--gpu-loads)
  bool autoBlockKV = false;   // GPU: halve the key tile while ptxas spills
  bool autoBlockQ = false;    // sm_90a: 128 query rows, 64 if ptxas spills
  /// sm_90a TMA, 128 query rows: setmaxnreg between the warpgroups (only
  /// where ptxas confirms the launch registers it needs).
  bool shareRegisters = true;
  /// NVIDIA backward kernels of scalar FMAs instead of tensor cores: where
  /// the tensor-core ones spill (compileGpuObject).
  bool scalarBackward = false;
  /// CPU: the query-tile widths to build (attn-tile's rows option): all,
  /// many (any launch) or few (launches with at most 16 rows per kv head).
  std::string rows = "all";
  /// CPU: the key tile of the rows=many code when it differs from blockKV
  /// (0: blockKV). blockKV (and info.blockKV) stay decode's, which the
  /// rows=few and rows=all code use; launches only read info.blockKV to
  /// size split-KV parts, whose tile ranges the kernel computes itself.
  int64_t manyRowsBlockKV = 0;
  /// CPU backward: dQ summed in key-tile order (attn-tile-backward's
  /// ordered-dq; the kernel's KernelInfo::backwardOrderedDq).
  bool orderedDq = false;
};

/// What a target's tile choice reads of the variant and its shape.
struct TileRequest {
  int64_t headDim = 0, valueHeadDim = 0;
  bool quantizedKV = false;
  bool kvIndex = false;
  bool hasBlockMap = false;
  bool backward = false;
  int64_t selectBlock = 0; // 0 without select
  /// The score or scale reads f32 captured tensors, whose gradients the
  /// backward accumulates per entry (fe::scoreOrScaleReadsF32Tensors).
  bool scoreReadsF32Tensors = false;
};

/// Bytes of a CPU kernel's tile buffers (Q, K, V, S and O tiles and row
/// state) for `blockQ` x `blockKV` tiles, which live on the stack of the
/// calling and worker threads.
inline int64_t tileBufferBytes(const TileRequest &r, int64_t blockQ,
                               int64_t blockKV) {
  int64_t D = r.headDim, Dv = r.valueHeadDim;
  return 4 * (D * blockQ + blockKV * D + blockKV * Dv + blockKV * blockQ +
              blockQ * Dv + 4 * blockQ);
}
/// Auto tiles shrink to this; explicit ones may use up to the limit.
inline constexpr int64_t kTileBufferBudget = 512 * 1024;
inline constexpr int64_t kTileBufferLimit = 2 * 1024 * 1024;

/// Keeps tile buffers well inside a typical 8 MB thread stack (and small
/// enough to stay cache-resident): halves the auto tiles of `plan` until
/// they fit kTileBufferBudget, and throws when explicit ones pass
/// kTileBufferLimit. Every target runs it first, so that too large tile
/// options read the same everywhere.
inline void fitTileBuffers(TilePlan &plan, const ::attn::Options &options,
                           const TileRequest &request) {
  while (tileBufferBytes(request, plan.blockQ, plan.blockKV) >
         kTileBufferBudget) {
    bool shrinkQ = !options.blockQ && plan.blockQ > 8 &&
                   (plan.blockQ >= plan.blockKV || options.blockKV ||
                    plan.blockKV <= 8);
    bool shrinkKV = !options.blockKV && plan.blockKV > 8 && !shrinkQ;
    if (shrinkQ)
      plan.blockQ /= 2;
    else if (shrinkKV)
      plan.blockKV /= 2;
    else
      break;
  }
  int64_t bytes = tileBufferBytes(request, plan.blockQ, plan.blockKV);
  if (bytes > kTileBufferLimit)
    throw ::attn::Error(
        options.blockQ ? "--block-q" : "--block-kv",
        "tiles of " + std::to_string(plan.blockQ) + " x " +
            std::to_string(plan.blockKV) + " need " +
            std::to_string(bytes / 1024) +
            " KiB of buffers per thread (limit " +
            std::to_string(kTileBufferLimit / 1024) +
            " KiB); choose smaller tiles");
}

/// A lowered GPU module: the binary the runtime loads and what the
/// assembler reported.
struct GpuBinary {
  std::string binary;
  std::string ptx; // NVIDIA: the PTX the cubin was assembled from
  std::string report;
  int64_t registers = 0, spillStoreBytes = 0, spillLoadBytes = 0;
  /// Spilled bytes (stores + loads) of the backward kernels alone.
  int64_t backwardSpillBytes = 0;
};

/// What one compile of a GPU plan reported, from which the target decides
/// whether the plan fits (TargetInfo::nextPlan).
struct GpuFit {
  int64_t registers = 0, spillStoreBytes = 0, spillLoadBytes = 0;
  /// The registers setmaxnreg's budget needs a thread to have at launch (0
  /// without setmaxnreg).
  int64_t launchRegisters = 0;
  int64_t backwardSpillBytes = 0;
};

class TargetInfo {
public:
  virtual ~TargetInfo() = default;

  /// The --target names this target compiles for.
  virtual llvm::ArrayRef<llvm::StringRef> names() const = 0;
  virtual bool isGpu() const = 0;
  /// q/k/v's dtype when --dtype is not given.
  virtual ::attn::DType defaultDType() const = 0;

  /// Throws for a chip that is named but not built (checked before any
  /// other option).
  virtual void checkChip(const std::string &name) const {}
  /// Throws for options that do not apply to this target (checked with the
  /// options' own ranges, before the variant is looked at).
  virtual void checkOptions(const ::attn::Options &options) const {}
  /// Chooses plan's tiles (blockQ and blockKV start as the options' or 64)
  /// and throws for tile options the target cannot take.
  virtual void planTiles(TilePlan &plan, const ::attn::Options &options,
                         const TileRequest &request) const = 0;
  /// Whether its kernels classify tiles themselves and run one query head
  /// per block (no block map, no packed heads, dq summed without order).
  virtual bool classifiesTilesInKernel() const { return isGpu(); }
  /// Throws attn::Error("--stage") for a stage this target does not emit.
  virtual void checkStage(Stage stage) const = 0;
  virtual void registerDialects(DialectRegistry &registry) const = 0;
  /// Registers the target's passes (for pipelines parsed from text).
  virtual void registerPasses() const {}

  /// The passes (attn-opt pipeline syntax, run on the module) that build
  /// the kernel of func.func @`variant`, its attention classified, for
  /// `chip`. GPUs: its kernels, in gpu.module @attn_gpu, with the main
  /// kernel named `entry` and the launch geometry in its attn.launch
  /// dictionary (lib/Target/GPU/LaunchAttr.h). The CPU: every attention of
  /// the module (the backward's too) tiled in place, the tiled stage.
  /// Empty: no kernels.
  virtual std::string kernelPipeline(const TilePlan &plan,
                                     const std::string &chip,
                                     llvm::StringRef variant,
                                     llvm::StringRef entry) const {
    return "";
  }
  /// The passes that lower kernelPipeline's result to the LLVM dialect for
  /// code `machine` generates (the CPU; GPUs lower in lowerToBinary).
  virtual std::string loweringPipeline(const llvm::TargetMachine &machine)
      const {
    return "";
  }

  // GPU targets.

  /// The passes that add the backward kernels of func.func @`variant` to
  /// that gpu.module.
  virtual std::string backwardPipeline(const TilePlan &plan,
                                       const std::string &chip,
                                       llvm::StringRef variant) const {
    return "";
  }
  /// Whether binaries can be made on this machine (ptxas found, say).
  virtual bool assemblesHere() const { return true; }
  /// The bundle's kind for the binary lowerToBinary makes.
  virtual const char *binaryKind() const { return ""; }
  /// Lowers `host`'s gpu.module to a binary (or to PTX only when not
  /// `assemble`, on NVIDIA).
  virtual FailureOr<GpuBinary> lowerToBinary(ModuleOp host,
                                             const TilePlan &plan,
                                             const std::string &chip,
                                             bool assemble,
                                             std::string &error) const {
    error = names().front().str() + " makes no GPU binaries";
    return failure();
  }
  /// The text of `stage` past the gpu.module (PTX, AMDGPU assembly).
  virtual FailureOr<std::string> lowerToText(ModuleOp host, Stage stage,
                                             const TilePlan &plan,
                                             const std::string &chip,
                                             std::string &error) const {
    error = names().front().str() + " has no GPU assembly";
    return failure();
  }
  /// After compiling `tried` (which started as `first`, the plan asked
  /// for) reported `fit`: the plan to compile instead (smaller tiles, say),
  /// or none to keep `tried`'s kernel. Throws attn::Error for a kernel that
  /// cannot fit; `info` (head dims, target) words the error.
  virtual std::optional<TilePlan> nextPlan(const TilePlan &first,
                                           const TilePlan &tried,
                                           const GpuFit &fit,
                                           const ::attn::KernelInfo &info)
      const {
    return std::nullopt;
  }
};

/// The target owning --target `name`, or null.
const TargetInfo *lookupTarget(llvm::StringRef name);
/// Every target name, in the order attnc lists them.
std::vector<std::string> allTargetNames();
/// The dialects and translations of every target, so that one context
/// holds host and device code.
void registerTargetDialects(DialectRegistry &registry);
/// Every target's passes.
void registerTargetPasses();

} // namespace mlir::attn

#endif // ATTN_TARGET_TARGETINFO_H
