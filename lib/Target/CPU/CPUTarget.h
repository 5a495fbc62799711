//===- CPUTarget.h - tiled attn IR to native code on the host -------------===//
#ifndef ATTN_TARGET_CPU_CPUTARGET_H
#define ATTN_TARGET_CPU_CPUTARGET_H

#include "mlir/ExecutionEngine/ExecutionEngine.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/Pass/PassManager.h"

#include <memory>
#include <string>

namespace attn::cpu {

/// The host's vector register file, which sizes the matmul micro-kernels.
struct VectorShape {
  int64_t bits = 128;
  int64_t registers = 16;
};
/// AVX-512: 512 x 32; AVX2: 256 x 16; otherwise SSE's 128 x 16.
VectorShape hostVectorShape();

/// Tiled IR (scf/memref/linalg/arith/math) -> LLVM dialect for a CPU with
/// `shape` registers. `attn-opt --attn-cpu-lower-to-llvm` runs it for the
/// host.
std::string loweringPipeline(VectorShape shape);
mlir::LogicalResult addLoweringPasses(mlir::OpPassManager &pm,
                                      VectorShape shape, std::string &error);

/// Registers `attn-cpu-lower-to-llvm` as a named pipeline.
void registerCPUPipelines();

/// A JIT-compiled kernel module and its packed entry point
/// `void _mlir_<name>(void **args)`.
struct JitModule {
  std::unique_ptr<mlir::ExecutionEngine> engine;
  void (*entry)(void **) = nullptr;
};

/// LLVM-dialect module -> optimized native code for this machine (-O3,
/// host CPU features).
mlir::FailureOr<JitModule> jitCompile(mlir::ModuleOp module,
                                      llvm::StringRef funcName,
                                      std::string &error);

/// LLVM IR text of an LLVM-dialect module after -O3 for the host, for
/// `attnc emit --stage=llvm`.
mlir::FailureOr<std::string> optimizedLLVMIR(mlir::ModuleOp module,
                                             std::string &error);

/// Registers the translations the CPU path needs on `registry`.
void registerTranslations(mlir::DialectRegistry &registry);

} // namespace attn::cpu

#endif // ATTN_TARGET_CPU_CPUTARGET_H
