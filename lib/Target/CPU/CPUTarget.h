//===- CPUTarget.h - tiled attn IR to native code -------------------------===//
//
// One code path for every CPU consumer: the MLIR lowering, a packed entry
// point, LLVM -O3 and an ELF object. The JIT loads that object with ORC,
// the disk cache stores it, and AOT bundles link it into a shared object.
//
//===----------------------------------------------------------------------===//
#ifndef ATTN_TARGET_CPU_CPUTARGET_H
#define ATTN_TARGET_CPU_CPUTARGET_H

#include "mlir/IR/BuiltinOps.h"
#include "mlir/Pass/PassManager.h"

#include "llvm/ExecutionEngine/Orc/LLJIT.h"
#include "llvm/IR/Module.h"
#include "llvm/Target/TargetMachine.h"

#include <memory>
#include <string>

namespace attn::cpu {

/// The host's vector register file, which sizes the matmul micro-kernels.
struct VectorShape {
  int64_t bits = 128;
  int64_t registers = 16;
  /// int8 dot products for int8 x int8 matmuls: "vnni" (vpdpbusd, AVX-512
  /// VNNI or AVX-VNNI), "maddubs" (AVX2 / AVX-512 BW), or "none".
  std::string byteDots = "none";
  /// AVX-512 BF16: bf16 pair dot products (vdpbf16ps) for fp8 codes.
  bool bf16Dots = false;
};

/// What code is generated for: a triple, a CPU and its features.
struct CodegenTarget {
  std::string triple;
  std::string cpu;
  std::string features; // "+avx2,+fma,..."; empty: the CPU's own
  /// This machine.
  static CodegenTarget host();
  /// A named CPU ("x86-64-v3", "znver4", "native" = host).
  static CodegenTarget named(const std::string &cpu);
};

/// A target machine for `target` (PIC, -O3). Empty on error.
std::unique_ptr<llvm::TargetMachine>
createTargetMachine(const CodegenTarget &target, std::string &error);

/// Of the CPU features attnrt can check at load time
/// (attn::detail::hostCpuFeatures), those code for `tm` may use.
std::vector<std::string> requiredCpuFeatures(const llvm::TargetMachine &tm);

/// AVX-512: 512 x 32 (with VNNI's int8 dot products where present); AVX2:
/// 256 x 16; otherwise SSE's 128 x 16.
VectorShape vectorShape(const llvm::TargetMachine &tm);
VectorShape hostVectorShape();

/// Tiled IR (scf/memref/linalg/arith/math) -> LLVM dialect for a CPU with
/// `shape` registers. `attn-opt --attn-cpu-lower-to-llvm` runs it for the
/// host.
std::string loweringPipeline(VectorShape shape);
mlir::LogicalResult addLoweringPasses(mlir::OpPassManager &pm,
                                      VectorShape shape, std::string &error);

/// Registers `attn-cpu-lower-to-llvm` as a named pipeline.
void registerCPUPipelines();

/// Registers the translations the CPU path needs on `registry`.
void registerTranslations(mlir::DialectRegistry &registry);

/// Adds `void <entry>(void **args)`, which loads each argument of `kernel`
/// from args[i] and calls it, and makes `kernel` internal: the one stable
/// ABI between generated code and attnrt.
mlir::LogicalResult addPackedEntry(mlir::ModuleOp module,
                                   llvm::StringRef kernel,
                                   llvm::StringRef entry);

/// LLVM-dialect module -> LLVM IR optimized at -O3 for `tm`
/// (translateToLLVMIR, then optimize).
std::unique_ptr<llvm::Module> translateAndOptimize(mlir::ModuleOp module,
                                                   llvm::LLVMContext &ctx,
                                                   llvm::TargetMachine &tm,
                                                   std::string &error);

/// LLVM-dialect module -> LLVM IR for `tm`, not optimized yet.
std::unique_ptr<llvm::Module> translateToLLVMIR(mlir::ModuleOp module,
                                                llvm::LLVMContext &ctx,
                                                llvm::TargetMachine &tm,
                                                std::string &error);

/// Runs LLVM's -O3 pipeline (without loop unrolling) on `module`.
void optimize(llvm::Module &module, llvm::TargetMachine &tm);

/// The host function a deferred entry's stub calls: (args, its slot).
inline constexpr const char *kDeferredCall = "attn_cpu_deferred_call";
/// The global of the stub of `entry` that holds the pointer it passes.
std::string deferredSlot(llvm::StringRef entry);

/// Moves the packed entries `entries` of `module` (not optimized yet), and
/// the functions only they use, into a module of their own, returned as
/// bitcode; each entry left in `module` is a stub that calls
/// kDeferredCall(args, <its deferredSlot>). The JIT compiles the moved
/// code when a stub is first called: launches that never need an entry
/// (most never merge split-KV parts or ask for a block map) do not pay
/// for compiling it.
std::string deferEntries(llvm::Module &module,
                         llvm::ArrayRef<std::string> entries);

/// Bitcode from deferEntries -> a module in `ctx`; null on error.
std::unique_ptr<llvm::Module> parseDeferred(const std::string &bitcode,
                                            llvm::LLVMContext &ctx,
                                            std::string &error);

/// bf16 values that cross blocks (phis, uses in other blocks) carried as
/// i16 bits instead: on x86 without AVX512-BF16 the code generator holds a
/// bf16 in an f32 register across blocks and rounds it back by calling
/// __truncsfbf2, which neither the JIT's process nor attnrt provides (and a
/// call per value). The kernels' bf16 values are bit patterns already
/// (arith-expand made every conversion integer work). emitObject runs it.
void carryBf16AsBits(llvm::Module &module);

/// LLVM IR -> an ELF relocatable object for `tm`.
mlir::FailureOr<std::string> emitObject(llvm::Module &module,
                                        llvm::TargetMachine &tm,
                                        std::string &error);

/// An object loaded into this process by ORC, and its packed entry.
struct LoadedObject {
  std::unique_ptr<llvm::orc::LLJIT> jit;
  void (*entry)(void **) = nullptr;
};
/// `hostSymbols`: functions of this process the object may call by name.
mlir::FailureOr<LoadedObject>
loadObject(llvm::StringRef object, llvm::StringRef entry, std::string &error,
           llvm::ArrayRef<std::pair<std::string, void *>> hostSymbols = {});

/// ld.lld: $ATTNC_LLD, the one found at configure time, else on PATH;
/// empty when there is none.
std::string findLld();

/// Links objects into a shared library with ld.lld.
mlir::LogicalResult linkSharedObject(llvm::ArrayRef<std::string> objects,
                                     const std::string &output,
                                     std::string &error);

} // namespace attn::cpu

#endif // ATTN_TARGET_CPU_CPUTARGET_H
