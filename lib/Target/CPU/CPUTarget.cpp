//===- CPUTarget.cpp - tiled attn IR to native code on the host -----------===//
#include "lib/Target/CPU/CPUTarget.h"

#include "mlir/ExecutionEngine/OptUtils.h"
#include "mlir/Pass/PassRegistry.h"
#include "mlir/Target/LLVMIR/Dialect/Builtin/BuiltinToLLVMIRTranslation.h"
#include "mlir/Target/LLVMIR/Dialect/LLVMIR/LLVMToLLVMIRTranslation.h"
#include "mlir/Target/LLVMIR/Export.h"

#include "llvm/ExecutionEngine/Orc/JITTargetMachineBuilder.h"
#include "llvm/IR/Module.h"
#include "llvm/Support/TargetSelect.h"
#include "llvm/TargetParser/Host.h"
#include "llvm/Support/raw_ostream.h"
#include "llvm/Target/TargetMachine.h"

#include <mutex>

using namespace mlir;

namespace attn::cpu {

VectorShape hostVectorShape() {
  llvm::StringMap<bool> features = llvm::sys::getHostCPUFeatures();
  if (features.lookup("avx512f"))
    return {512, 32};
  if (features.lookup("avx2"))
    return {256, 16};
  return {128, 16};
}

std::string loweringPipeline(VectorShape shape) {
  return "func.func(attn-cpu-vectorize-matmul{vector-bits=" +
         std::to_string(shape.bits) +
         " registers=" + std::to_string(shape.registers) +
         "},convert-linalg-to-loops,attn-cpu-work-range,canonicalize,cse,"
         "loop-invariant-code-motion,attn-expand-floordiv,canonicalize,cse),"
         "attn-cpu-approximate-math,"
         "convert-scf-to-cf,"
         "convert-vector-to-llvm,"
         "arith-expand{include-bf16=true},"
         "expand-strided-metadata,"
         "finalize-memref-to-llvm,"
         "convert-math-to-llvm,"
         "convert-math-to-libm,"
         "convert-arith-to-llvm,"
         "convert-index-to-llvm,"
         "convert-cf-to-llvm,"
         "convert-func-to-llvm,"
         "reconcile-unrealized-casts";
}

LogicalResult addLoweringPasses(OpPassManager &pm, VectorShape shape,
                                std::string &error) {
  llvm::raw_string_ostream os(error);
  return parsePassPipeline(loweringPipeline(shape), pm, os);
}

void registerCPUPipelines() {
  static PassPipelineRegistration<> pipeline(
      "attn-cpu-lower-to-llvm",
      "Lower tiled attn IR to the LLVM dialect for the host CPU",
      [](OpPassManager &pm) {
        std::string error;
        if (failed(addLoweringPasses(pm, hostVectorShape(), error)))
          llvm::report_fatal_error(llvm::Twine(error));
      });
}

void registerTranslations(DialectRegistry &registry) {
  registerBuiltinDialectTranslation(registry);
  registerLLVMDialectTranslation(registry);
}

static void initNativeTarget() {
  static std::once_flag once;
  std::call_once(once, [] {
    llvm::InitializeNativeTarget();
    llvm::InitializeNativeTargetAsmPrinter();
  });
}

/// A target machine for this host: its CPU and features (AVX2/AVX-512).
static std::unique_ptr<llvm::TargetMachine> hostTargetMachine(
    std::string &error) {
  initNativeTarget();
  auto builder = llvm::orc::JITTargetMachineBuilder::detectHost();
  if (!builder) {
    error = llvm::toString(builder.takeError());
    return nullptr;
  }
  builder->setCodeGenOptLevel(llvm::CodeGenOptLevel::Aggressive);
  auto tm = builder->createTargetMachine();
  if (!tm) {
    error = llvm::toString(tm.takeError());
    return nullptr;
  }
  return std::move(*tm);
}

FailureOr<JitModule> jitCompile(ModuleOp module, llvm::StringRef funcName,
                                std::string &error) {
  std::unique_ptr<llvm::TargetMachine> tm = hostTargetMachine(error);
  if (!tm)
    return failure();
  auto transformer = makeOptimizingTransformer(3, 0, tm.get());
  ExecutionEngineOptions options;
  options.transformer = transformer;
  options.jitCodeGenOptLevel = llvm::CodeGenOptLevel::Aggressive;
  options.enableGDBNotificationListener = false;
  options.enablePerfNotificationListener = false;
  auto engine = ExecutionEngine::create(module, options);
  if (!engine) {
    error = llvm::toString(engine.takeError());
    return failure();
  }
  auto entry = (*engine)->lookupPacked(funcName);
  if (!entry) {
    error = llvm::toString(entry.takeError());
    return failure();
  }
  JitModule jit;
  jit.entry = *entry;
  jit.engine = std::move(*engine);
  return jit;
}

FailureOr<std::string> optimizedLLVMIR(ModuleOp module, std::string &error) {
  std::unique_ptr<llvm::TargetMachine> tm = hostTargetMachine(error);
  if (!tm)
    return failure();
  llvm::LLVMContext llvmCtx;
  std::unique_ptr<llvm::Module> llvmModule =
      translateModuleToLLVMIR(module, llvmCtx);
  if (!llvmModule) {
    error = "translation to LLVM IR failed";
    return failure();
  }
  llvmModule->setDataLayout(tm->createDataLayout());
  llvmModule->setTargetTriple(tm->getTargetTriple());
  auto transformer = makeOptimizingTransformer(3, 0, tm.get());
  if (llvm::Error err = transformer(llvmModule.get())) {
    error = llvm::toString(std::move(err));
    return failure();
  }
  std::string text;
  llvm::raw_string_ostream os(text);
  llvmModule->print(os, nullptr);
  return text;
}

} // namespace attn::cpu
