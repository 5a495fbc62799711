//===- attn-opt.cpp - mlir-opt with the attn dialect and passes ----------===//
#include "dialect/AttnDialect.h"
#include "lib/Target/CPU/CPUTarget.h"
#include "lib/Target/CPU/Passes.h"
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
  mlir::attn::cpu::registerAttnCPUPasses();
  attn::cpu::registerCPUPipelines();
  return mlir::asMainReturnCode(
      mlir::MlirOptMain(argc, argv, "attn optimizer driver\n", registry));
}
