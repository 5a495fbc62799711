//===- Compiler.h - the pipeline from .attn text to a kernel --------------===//
//
// One place builds every pipeline: `attnc`, `attn::Jit` and the tests all
// come through here.
//
//===----------------------------------------------------------------------===//
#ifndef ATTN_DRIVER_COMPILER_H
#define ATTN_DRIVER_COMPILER_H

#include "attn/jit.h"
#include "attn/runtime.h"
#include "lib/Frontend/AST.h"
#include "lib/Frontend/Import.h"
#include "lib/Target/TargetInfo.h"

#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>

namespace attn::driver {

/// A compiler bug, not a user error (attnc exits 2).
class InternalError : public std::runtime_error {
public:
  using std::runtime_error::runtime_error;
};

using Stage = mlir::attn::Stage;
std::optional<Stage> parseStage(const std::string &name);

/// A parsed and checked source file. Throws CompileError when it has errors.
struct Source {
  Source(std::string text, std::string filename);
  fe::SourceFile file;
  fe::Program program;
  /// Rendered `file:line:col: warning:` diagnostics ("" when none); attnc
  /// prints them.
  std::string warnings;
};

/// One variant with resolved options: what the pipeline compiles. The
/// target's choices (tiles, threads, loads) are the TilePlan's fields.
struct KernelPlan : mlir::attn::TilePlan {
  const fe::Variant *variant = nullptr;
  fe::KernelShape shape;
  KernelInfo info;
};

/// A compiled CPU kernel: an ELF object exporting `entry`, and what a
/// launch needs to know about it.
struct CpuObject {
  std::string object;
  std::string entry;
  std::string blockMapEntry; // empty without a mask
  std::string mergeEntry;    // combines split-KV partial results
  std::string backwardEntry; // empty unless info.backward
  KernelInfo info;
};

/// Picks the variant and checks options; throws attn::Error naming the
/// option, or CompileError for located problems.
KernelPlan planKernel(const Source &source, const Options &options);

/// The IR (or, for Stage::LLVM, optimized LLVM IR) of `plan` at `stage`.
std::string emitStage(const Source &source, const KernelPlan &plan,
                      Stage stage);

/// select's pre-pass of a GPU plan (its pool and select kernels, see
/// lib/Target/GPU/GpuKernel.h) compiled for this CPU instead: each is a
/// packed entry taking the kernel's arguments, then the grid's x, y and z
/// sizes (index), and runs the grid one block at a time with one thread
/// per block, which computes what the device does (the kernels split
/// loops over blockDim.x threads and separate phases by barriers). Lets
/// machines without a GPU check the device's block selection.
struct HostPrePass {
  std::shared_ptr<void> owner; // the loaded code
  void (*pool)(void **) = nullptr;
  void (*select)(void **) = nullptr;
};
HostPrePass compileSelectPrePassForHost(const Source &source,
                                        const KernelPlan &plan);

/// Compiles `plan` to an object for the CPU of `plan.cpu`.
CpuObject compileCpuObject(const Source &source, const KernelPlan &plan);

/// A compiled GPU kernel: PTX, the cubin ptxas made of it (empty when no
/// ptxas is installed; the driver then compiles the PTX at load), ptxas's
/// report, and the launch geometry.
struct GpuObject {
  /// Chip, entry, cubin, PTX and launch geometry: what attnrt launches.
  detail::GpuCode code;
  std::string ptxasReport;
  int64_t registers = 0, spillStoreBytes = 0, spillLoadBytes = 0;
  /// The registers a thread the kernel's setmaxnreg budget needs at
  /// launch (0 without setmaxnreg).
  int64_t launchRegisters = 0;
  /// Spilled bytes (stores + loads) of the backward kernels alone.
  int64_t backwardSpillBytes = 0;
  KernelInfo info;
};

/// Compiles `plan` (a GPU target) to PTX and, when `assemble`, to a cubin
/// with ptxas (AMD: to a code object). While the target's nextPlan asks
/// for another plan from what ptxas (or LLVM's AMDGPU allocator) reported,
/// compiles that instead (gpukernel::nextGpuPlan: on spills an automatic
/// key tile is halved, down to 32 with sm_90a's 128 query rows and 16
/// otherwise, then 128 automatic rows drop to 64, one consumer warpgroup
/// whose threads may use all 255 registers); the object's info has the
/// tiles used.
GpuObject compileGpuObject(const Source &source, const KernelPlan &plan,
                           bool assemble = true);

/// Whether a target name is a GPU's (its TargetInfo's isGpu; false for
/// names no target owns).
bool isGpuTarget(const std::string &target);

/// The target owning `name`; throws attn::Error naming --target for a name
/// no target owns or a chip that is not built.
const mlir::attn::TargetInfo &targetFor(const std::string &name);

/// Throws attn::Error naming --cpu when `plan`'s CPU is not one LLVM
/// generates code for (what compiling would find out, without compiling).
void checkCpu(const KernelPlan &plan);

/// Loads a CPU object into this process (ORC) as a launchable kernel.
Kernel loadCpuKernel(const CpuObject &object);
/// The same, as the entries of one class of launch of a lazy kernel.
detail::CpuCode loadCpuCode(const CpuObject &object);

/// What the JIT compiles for one class of launch (plan.rows) when it is
/// first launched: `now`, an object whose merge and (unless the variant
/// selects blocks, which every launch maps) block-map entries are stubs,
/// and `deferred`, their code as LLVM bitcode, compiled when a stub is
/// first called (see cpu::deferEntries).
struct CpuJitCode {
  CpuObject now;
  std::string deferred;
};
CpuJitCode compileCpuJitCode(const Source &source, const KernelPlan &plan);
/// The object of the deferred entries: from `deferred` (CpuJitCode's),
/// or when that is empty (`now` came from the disk cache) from the source.
CpuObject compileCpuDeferred(const Source &source, const KernelPlan &plan,
                             const std::string &deferred);
/// Loads a CpuJitCode's `now`; its stubs call `deferred` once, at the
/// first call of either, for the object of the deferred entries.
detail::CpuCode loadCpuJitCode(const CpuObject &now,
                               std::function<CpuObject()> deferred);

/// The exported packed entries of a variant's kernel and block map.
std::string entrySymbol(const std::string &variant);
std::string blockMapSymbol(const std::string &variant);
std::string mergeSymbol(const std::string &variant);
std::string backwardSymbol(const std::string &variant);

/// Checks every variant of a source through import and verification.
void checkAll(const Source &source);

/// Compiler version recorded in metadata and cache keys.
const char *compilerVersion();

} // namespace attn::driver

#endif // ATTN_DRIVER_COMPILER_H
