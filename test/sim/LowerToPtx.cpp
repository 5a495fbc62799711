//===- LowerToPtx.cpp - a test program's gpu.module to checked PTX --------===//
//
// sim-lower-to-ptx <in.mlir> <sm_80|sm_90a> <out.ptx>
//
// Lowers the gpu.module of a test/sim program through attnc's own NVPTX
// path (nvptx::lowerToPtx: MLIR's gpu-lower-to-nvvm-pipeline with
// cubin-format=isa, dynamic shared memory declared `.extern` and 1024-byte
// aligned), so the simulator runs PTX made the way attnc makes its kernels'.
//
//===----------------------------------------------------------------------===//
#include "lib/Target/NVPTX/NVPTXTarget.h"

#include "mlir/IR/MLIRContext.h"
#include "mlir/InitAllDialects.h"
#include "mlir/InitAllExtensions.h"
#include "mlir/Parser/Parser.h"
#include "mlir/Target/LLVM/NVVM/Target.h"
#include "mlir/Target/LLVMIR/Dialect/Builtin/BuiltinToLLVMIRTranslation.h"
#include "mlir/Target/LLVMIR/Dialect/GPU/GPUToLLVMIRTranslation.h"
#include "mlir/Target/LLVMIR/Dialect/LLVMIR/LLVMToLLVMIRTranslation.h"
#include "mlir/Target/LLVMIR/Dialect/NVVM/NVVMToLLVMIRTranslation.h"

#include "llvm/Support/FileSystem.h"
#include "llvm/Support/raw_ostream.h"

using namespace mlir;

int main(int argc, char **argv) {
  if (argc != 4) {
    llvm::errs() << "usage: sim-lower-to-ptx <in.mlir> <sm_80|sm_90a> "
                    "<out.ptx>\n";
    return 2;
  }
  DialectRegistry registry;
  registerAllDialects(registry);
  registerAllExtensions(registry);
  NVVM::registerNVVMTargetInterfaceExternalModels(registry);
  registerBuiltinDialectTranslation(registry);
  registerLLVMDialectTranslation(registry);
  registerGPUDialectTranslation(registry);
  registerNVVMDialectTranslation(registry);
  MLIRContext context(registry);
  context.loadAllAvailableDialects();

  OwningOpRef<ModuleOp> module = parseSourceFile<ModuleOp>(argv[1], &context);
  if (!module) {
    llvm::errs() << argv[1] << ": cannot parse\n";
    return 1;
  }
  attn::nvptx::KernelConfig config;
  config.chip = argv[2];
  std::string error;
  FailureOr<std::string> ptx = attn::nvptx::lowerToPtx(*module, config, error);
  if (failed(ptx)) {
    llvm::errs() << argv[1] << ": " << error << "\n";
    return 1;
  }
  std::error_code ec;
  llvm::raw_fd_ostream out(argv[3], ec, llvm::sys::fs::OF_Text);
  if (ec) {
    llvm::errs() << argv[3] << ": " << ec.message() << "\n";
    return 1;
  }
  out << *ptx;
  return 0;
}
