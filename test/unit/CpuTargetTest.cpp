//===- CpuTargetTest.cpp - the CPU target's LLVM IR translation -----------===//
#include "lib/Target/CPU/CPUTarget.h"

#include "dialect/AttnDialect.h"

#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/IR/Diagnostics.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/Parser/Parser.h"

#include "llvm/IR/LLVMContext.h"
#include "llvm/IR/Module.h"

#include <gtest/gtest.h>

namespace {

// The importer names kernel arguments (attn.name). The translation to LLVM
// IR used to warn about each such attribute and drop it; building those
// warnings was about 5% of a cold JIT compile. Translating now emits no
// diagnostics, keeps LLVM's own argument attributes and drops ours.
TEST(CpuTarget, TranslationDropsOurArgumentAttributesQuietly) {
  mlir::DialectRegistry registry;
  // The attn dialect loaded, as in a compile: the translation then asks it
  // to translate its attributes.
  registry.insert<mlir::attn::AttnDialect, mlir::LLVM::LLVMDialect>();
  attn::cpu::registerTranslations(registry);
  mlir::MLIRContext ctx(registry);
  ctx.loadAllAvailableDialects();
  int diagnostics = 0;
  mlir::ScopedDiagnosticHandler handler(&ctx, [&](mlir::Diagnostic &) {
    ++diagnostics;
    return mlir::success();
  });
  mlir::OwningOpRef<mlir::ModuleOp> module =
      mlir::parseSourceString<mlir::ModuleOp>(
          R"mlir(
  llvm.func @kernel(%q: !llvm.ptr {attn.name = "q", llvm.noalias},
                    %n: i64 {attn.name = "n"}) {
    llvm.return
  }
)mlir",
          &ctx);
  ASSERT_TRUE(module);
  std::string error;
  auto tm = attn::cpu::createTargetMachine(attn::cpu::CodegenTarget::host(),
                                           error);
  ASSERT_TRUE(tm) << error;
  llvm::LLVMContext llvmCtx;
  std::unique_ptr<llvm::Module> translated =
      attn::cpu::translateToLLVMIR(*module, llvmCtx, *tm, error);
  ASSERT_TRUE(translated) << error;
  EXPECT_EQ(diagnostics, 0);
  llvm::Function *kernel = translated->getFunction("kernel");
  ASSERT_NE(kernel, nullptr);
  EXPECT_TRUE(kernel->hasParamAttribute(0, llvm::Attribute::NoAlias));
}

} // namespace
