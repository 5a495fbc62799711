//===- ConvertToLLVM.cpp - one conversion to the LLVM dialect -------------===//
#include "lib/Target/CPU/Passes.h"

#include "mlir/Conversion/ArithToLLVM/ArithToLLVM.h"
#include "mlir/Conversion/ControlFlowToLLVM/ControlFlowToLLVM.h"
#include "mlir/Conversion/ConvertToLLVM/ToLLVMPass.h"
#include "mlir/Conversion/FuncToLLVM/ConvertFuncToLLVM.h"
#include "mlir/Conversion/IndexToLLVM/IndexToLLVM.h"
#include "mlir/Conversion/MathToLLVM/MathToLLVM.h"
#include "mlir/Conversion/MemRefToLLVM/MemRefToLLVM.h"
#include "mlir/Conversion/Passes.h"
#include "mlir/Conversion/UBToLLVM/UBToLLVM.h"
#include "mlir/Conversion/VectorToLLVM/ConvertVectorToLLVM.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Pass/PassManager.h"

namespace mlir::attn::cpu {
#define GEN_PASS_DEF_ATTNCPUCONVERTTOLLVMPASS
#include "lib/Target/CPU/Passes.h.inc"

namespace {
struct ConvertToLLVMPass
    : impl::AttnCPUConvertToLLVMPassBase<ConvertToLLVMPass> {
  void getDependentDialects(DialectRegistry &registry) const override {
    Base::getDependentDialects(registry);
    // convert-to-llvm only sees dialects whose interface is registered;
    // without these it would silently convert nothing.
    arith::registerConvertArithToLLVMInterface(registry);
    cf::registerConvertControlFlowToLLVMInterface(registry);
    registerConvertFuncToLLVMInterface(registry);
    index::registerConvertIndexToLLVMInterface(registry);
    registerConvertMathToLLVMInterface(registry);
    registerConvertMemRefToLLVMInterface(registry);
    ub::registerConvertUBToLLVMInterface(registry);
    vector::registerConvertVectorToLLVMInterface(registry);
  }

  void runOnOperation() override {
    OpPassManager convert(ModuleOp::getOperationName());
    convert.addPass(createConvertToLLVMPass());
    if (failed(runPipeline(convert, getOperation())))
      return signalPassFailure();
    // Math ops without an LLVM intrinsic become libm calls. Kernels rarely
    // have any, and each of these passes is a conversion over the whole
    // module, so they only run when needed.
    OpPassManager finish(ModuleOp::getOperationName());
    WalkResult math = getOperation()->walk([](Operation *op) {
      return isa_and_nonnull<math::MathDialect>(op->getDialect())
                 ? WalkResult::interrupt()
                 : WalkResult::advance();
    });
    if (math.wasInterrupted()) {
      finish.addPass(createConvertMathToLibmPass());
      finish.addPass(createConvertFuncToLLVMPass());
    }
    finish.addPass(createReconcileUnrealizedCastsPass());
    if (failed(runPipeline(finish, getOperation())))
      return signalPassFailure();
    WalkResult left =
        getOperation()->walk<WalkOrder::PreOrder>([](Operation *op) {
          // An unregistered op has no dialect: it is a leftover too.
          if (isa<ModuleOp>(op) ||
              isa_and_nonnull<LLVM::LLVMDialect>(op->getDialect()))
            return WalkResult::advance();
          op->emitOpError("was not lowered to the LLVM dialect");
          return WalkResult::interrupt();
        });
    if (left.wasInterrupted())
      signalPassFailure();
  }
};
} // namespace
} // namespace mlir::attn::cpu
