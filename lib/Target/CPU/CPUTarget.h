//===- CPUTarget.h - tiled attn IR to native code on the host -------------===//
#ifndef ATTN_TARGET_CPU_CPUTARGET_H
#define ATTN_TARGET_CPU_CPUTARGET_H

#include "mlir/ExecutionEngine/ExecutionEngine.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/Pass/PassManager.h"

#include <memory>
#include <string>

namespace attn::cpu {

/// Tiled IR (scf/memref/arith/math) -> LLVM dialect for the host. The
/// textual form is what `attn-opt --attn-cpu-lower-to-llvm` runs.
const char *loweringPipeline();
mlir::LogicalResult addLoweringPasses(mlir::OpPassManager &pm,
                                      std::string &error);

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
