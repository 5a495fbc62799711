//===- attn-opt.cpp - mlir-opt with the attn dialect and passes ----------===//
#include "dialect/AttnDialect.h"
#include "lib/Target/TargetInfo.h"
#include "lib/Transforms/Passes.h"
#include "mlir/InitAllDialects.h"
#include "mlir/InitAllPasses.h"
#include "mlir/Tools/mlir-opt/MlirOptMain.h"

int main(int argc, char **argv) {
  mlir::DialectRegistry registry;
  mlir::registerAllDialects(registry);
  mlir::registerAllPasses();
  registry.insert<mlir::attn::AttnDialect>();
  mlir::attn::registerAttnPasses();
  // The targets' passes: the CPU's, and the GPU kernel builders
  // (attn-build-nvptx-kernel, attn-build-amdgpu-kernel, ...).
  mlir::attn::registerTargetPasses();
  return mlir::asMainReturnCode(
      mlir::MlirOptMain(argc, argv, "attn optimizer driver\n", registry));
}
