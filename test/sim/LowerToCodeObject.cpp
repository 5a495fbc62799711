//===- LowerToCodeObject.cpp - a test program's gpu.module to a code object ===//
//
// sim-lower-to-hsaco <in.mlir> <gfx90a|gfx942|gfx950> <out.hsaco>
//
// Lowers the gpu.module of a test/sim AMD program through attnc's own AMDGPU
// path (rocm::lowerToCodeObject: MLIR's ROCDL conversion, LLVM's AMDGPU
// backend, ld.lld), so the simulator runs code objects made the way attnc
// makes its kernels'. amdgpu dialect ops (buffer loads, MFMA) are lowered
// first with convert-amdgpu-to-rocdl for the chip, as MLIR's
// gpu-lower-to-rocdl-pipeline does.
//
//===----------------------------------------------------------------------===//
#include "lib/Target/AMDGPU/AMDGPUTarget.h"
#include "lib/Target/CPU/CPUTarget.h"

#include "mlir/Conversion/Passes.h"
#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/Pass/PassManager.h"
#include "mlir/InitAllDialects.h"
#include "mlir/InitAllExtensions.h"
#include "mlir/Parser/Parser.h"
#include "mlir/Target/LLVM/ROCDL/Target.h"
#include "mlir/Target/LLVMIR/Dialect/Builtin/BuiltinToLLVMIRTranslation.h"
#include "mlir/Target/LLVMIR/Dialect/GPU/GPUToLLVMIRTranslation.h"
#include "mlir/Target/LLVMIR/Dialect/LLVMIR/LLVMToLLVMIRTranslation.h"
#include "mlir/Target/LLVMIR/Dialect/ROCDL/ROCDLToLLVMIRTranslation.h"

#include "llvm/Support/FileSystem.h"
#include "llvm/Support/raw_ostream.h"

using namespace mlir;

int main(int argc, char **argv) {
  if (argc != 4) {
    llvm::errs() << "usage: sim-lower-to-hsaco <in.mlir> <gfx90a|gfx942|"
                    "gfx950> <out.hsaco>\n";
    return 2;
  }
  DialectRegistry registry;
  registerAllDialects(registry);
  registerAllExtensions(registry);
  ROCDL::registerROCDLTargetInterfaceExternalModels(registry);
  registerBuiltinDialectTranslation(registry);
  registerLLVMDialectTranslation(registry);
  registerGPUDialectTranslation(registry);
  registerROCDLDialectTranslation(registry);
  MLIRContext context(registry);
  context.loadAllAvailableDialects();

  OwningOpRef<ModuleOp> module = parseSourceFile<ModuleOp>(argv[1], &context);
  if (!module) {
    llvm::errs() << argv[1] << ": cannot parse\n";
    return 1;
  }
  PassManager pm(&context);
  ConvertAMDGPUToROCDLPassOptions amdgpu;
  amdgpu.chipset = argv[2];
  pm.addNestedPass<gpu::GPUModuleOp>(createConvertAMDGPUToROCDLPass(amdgpu));
  if (failed(pm.run(*module))) {
    llvm::errs() << argv[1] << ": convert-amdgpu-to-rocdl failed\n";
    return 1;
  }
  mlir::attn::rocm::KernelConfig config;
  config.chip = argv[2];
  config.lld = ::attn::cpu::findLld();
  std::string error;
  FailureOr<mlir::attn::rocm::CodeObject> code =
      mlir::attn::rocm::lowerToCodeObject(*module, config, error);
  if (failed(code)) {
    llvm::errs() << argv[1] << ": " << error << "\n";
    return 1;
  }
  std::error_code ec;
  llvm::raw_fd_ostream out(argv[3], ec, llvm::sys::fs::OF_None);
  if (ec) {
    llvm::errs() << argv[3] << ": " << ec.message() << "\n";
    return 1;
  }
  out << code->object;
  return 0;
}
