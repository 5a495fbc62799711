//===- CPUTarget.cpp - tiled attn IR to native code -----------------------===//
#include "lib/Target/CPU/CPUTarget.h"

#include "attn/runtime.h"

#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/Interfaces/FunctionInterfaces.h"
#include "mlir/Pass/PassRegistry.h"
#include "mlir/Target/LLVMIR/Dialect/Builtin/BuiltinToLLVMIRTranslation.h"
#include "mlir/Target/LLVMIR/Dialect/LLVMIR/LLVMToLLVMIRTranslation.h"
#include "mlir/Target/LLVMIR/Export.h"

#include "llvm/Bitcode/BitcodeReader.h"
#include "llvm/Bitcode/BitcodeWriter.h"
#include "llvm/ExecutionEngine/Orc/AbsoluteSymbols.h"
#include "llvm/ExecutionEngine/Orc/ExecutionUtils.h"
#include "llvm/IR/IRBuilder.h"
#include "llvm/IR/InstIterator.h"
#include "llvm/Transforms/Utils/Cloning.h"
#include "llvm/IR/LegacyPassManager.h"
#include "llvm/IR/PassTimingInfo.h"
#include "llvm/Pass.h"
#include "llvm/Passes/PassBuilder.h"
#include "llvm/MC/MCSubtargetInfo.h"
#include "llvm/MC/TargetRegistry.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/Program.h"
#include "llvm/Support/TargetSelect.h"
#include "llvm/Support/raw_ostream.h"
#include "llvm/TargetParser/Host.h"

#include <cstdlib>
#include <mutex>
#include <optional>

using namespace mlir;

namespace attn::cpu {

static bool timeLLVMPasses() {
  const char *timing = std::getenv("ATTNC_TIMING");
  return timing && std::string(timing) == "llvm";
}

static void initNativeTarget() {
  static std::once_flag once;
  std::call_once(once, [] {
    llvm::InitializeNativeTarget();
    llvm::InitializeNativeTargetAsmPrinter();
  });
}

CodegenTarget CodegenTarget::host() {
  // Asking the OS for CPU features costs tens of microseconds; the answer
  // does not change while the process runs.
  static const CodegenTarget cached = [] {
  CodegenTarget t;
  t.triple = llvm::sys::getProcessTriple();
  t.cpu = llvm::sys::getHostCPUName().str();
  std::string features;
  for (const auto &f : llvm::sys::getHostCPUFeatures())
    features += std::string(features.empty() ? "" : ",") +
                (f.second ? "+" : "-") + f.first().str();
  t.features = features;
  return t;
  }();
  return cached;
}

CodegenTarget CodegenTarget::named(const std::string &cpu) {
  if (cpu.empty() || cpu == "native")
    return host();
  CodegenTarget t;
  t.triple = llvm::sys::getProcessTriple();
  t.cpu = cpu;
  return t;
}

std::unique_ptr<llvm::TargetMachine>
createTargetMachine(const CodegenTarget &target, std::string &error) {
  initNativeTarget();
  llvm::Triple triple(target.triple);
  const llvm::Target *t = llvm::TargetRegistry::lookupTarget(triple, error);
  if (!t)
    return nullptr;
  llvm::TargetOptions options;
  std::unique_ptr<llvm::TargetMachine> tm(t->createTargetMachine(
      triple, target.cpu, target.features, options, llvm::Reloc::PIC_,
      llvm::CodeModel::Small, llvm::CodeGenOptLevel::Aggressive));
  if (!tm) {
    error = "cannot create a target machine for " + target.cpu;
    return nullptr;
  }
  if (!tm->getMCSubtargetInfo()->isCPUStringValid(target.cpu)) {
    error = "unknown CPU '" + target.cpu + "'";
    return nullptr;
  }
  return tm;
}

std::vector<std::string> requiredCpuFeatures(const llvm::TargetMachine &tm) {
  std::vector<std::string> out;
  const llvm::MCSubtargetInfo *sti = tm.getMCSubtargetInfo();
  for (const auto &[name, present] : attn::detail::hostCpuFeatures())
    if (sti->checkFeatures("+" + name))
      out.push_back(name);
  return out;
}

VectorShape vectorShape(const llvm::TargetMachine &tm) {
  const llvm::MCSubtargetInfo *sti = tm.getMCSubtargetInfo();
  if (sti->checkFeatures("+avx512f"))
    return {512, 32,
            sti->checkFeatures("+avx512vnni") ? "vnni"
            : sti->checkFeatures("+avx512bw") ? "maddubs"
                                              : "none",
            sti->checkFeatures("+avx512bf16")};
  if (sti->checkFeatures("+avx2"))
    return {256, 16, sti->checkFeatures("+avxvnni") ? "vnni" : "maddubs"};
  return {128, 16};
}

VectorShape hostVectorShape() {
  std::string error;
  auto tm = createTargetMachine(CodegenTarget::host(), error);
  return tm ? vectorShape(*tm) : VectorShape{};
}

std::string loweringPipeline(VectorShape shape) {
  return "func.func(attn-cpu-vectorize-matmul{vector-bits=" +
         std::to_string(shape.bits) +
         " registers=" + std::to_string(shape.registers) +
         " byte-dots=" + shape.byteDots +
         (shape.bf16Dots ? " bf16-dots=1" : "") +
         "},convert-linalg-to-loops,attn-cpu-work-range,canonicalize,cse,"
         "loop-invariant-code-motion,attn-expand-floordiv,canonicalize,cse),"
         "attn-cpu-approximate-math,"
         "convert-scf-to-cf,"
         "convert-vector-to-llvm,"
         "arith-expand{include-bf16=true},"
         "expand-strided-metadata,"
         "lower-affine,"
         "attn-cpu-convert-to-llvm";
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

LogicalResult addPackedEntry(ModuleOp module, llvm::StringRef kernel,
                             llvm::StringRef entry) {
  auto func = module.lookupSymbol<LLVM::LLVMFuncOp>(kernel);
  if (!func)
    return failure();
  MLIRContext *ctx = module.getContext();
  OpBuilder b(ctx);
  b.setInsertionPointToEnd(module.getBody());
  Location loc = func.getLoc();
  auto ptr = LLVM::LLVMPointerType::get(ctx);
  auto voidTy = LLVM::LLVMVoidType::get(ctx);
  auto wrapper = LLVM::LLVMFuncOp::create(
      b, loc, entry, LLVM::LLVMFunctionType::get(voidTy, {ptr}));
  Block *body = wrapper.addEntryBlock(b);
  b.setInsertionPointToStart(body);
  SmallVector<Value> args;
  for (auto [i, type] : llvm::enumerate(func.getArgumentTypes())) {
    Value slot = LLVM::GEPOp::create(b, loc, ptr, ptr, body->getArgument(0),
                                     ArrayRef<LLVM::GEPArg>{int32_t(i)});
    Value valuePtr = LLVM::LoadOp::create(b, loc, ptr, slot);
    args.push_back(LLVM::LoadOp::create(b, loc, type, valuePtr));
  }
  LLVM::CallOp::create(b, loc, func, args);
  LLVM::ReturnOp::create(b, loc, ValueRange{});
  // Only the entry is exported. The kernel stays a function of its own:
  // inlined, LLVM simplified its body twice (before and after inlining),
  // 8-15% of a compile, for the same vector code (the entry only forwards
  // the loaded arguments; one call per chunk of work items).
  func.setLinkage(LLVM::Linkage::Internal);
  func.setNoInline(true);
  return success();
}

std::unique_ptr<llvm::Module> translateAndOptimize(ModuleOp module,
                                                   llvm::LLVMContext &ctx,
                                                   llvm::TargetMachine &tm,
                                                   std::string &error) {
  std::unique_ptr<llvm::Module> llvmModule =
      translateToLLVMIR(module, ctx, tm, error);
  if (llvmModule)
    optimize(*llvmModule, tm);
  return llvmModule;
}

std::unique_ptr<llvm::Module> translateToLLVMIR(ModuleOp module,
                                                llvm::LLVMContext &ctx,
                                                llvm::TargetMachine &tm,
                                                std::string &error) {
  // Our own argument attributes (the importer's attn.name) have no LLVM IR
  // counterpart: the translation warned about each one and dropped it, and
  // building those warnings was about 5% of a compile.
  module.walk([](LLVM::LLVMFuncOp func) {
    auto fn = cast<FunctionOpInterface>(func.getOperation());
    for (unsigned i = 0, e = fn.getNumArguments(); i < e; ++i) {
      SmallVector<StringAttr> ours;
      for (NamedAttribute a : fn.getArgAttrs(i))
        if (a.getName().strref().starts_with("attn."))
          ours.push_back(a.getName());
      for (StringAttr name : ours)
        fn.removeArgAttr(i, name);
    }
  });
  // The module was verified after the MLIR pipeline; LLVM's verifier on
  // its translation found nothing new.
  std::unique_ptr<llvm::Module> llvmModule = translateModuleToLLVMIR(
      module, ctx, "LLVMDialectModule", /*disableVerification=*/true);
  if (!llvmModule) {
    error = "translation to LLVM IR failed";
    return nullptr;
  }
  llvmModule->setDataLayout(tm.createDataLayout());
  llvmModule->setTargetTriple(tm.getTargetTriple());
  // Every function gets the target's CPU and features, so the optimizer's
  // cost model and the code generator agree on the vector width.
  for (llvm::Function &f : *llvmModule) {
    if (f.isDeclaration())
      continue;
    f.addFnAttr("target-cpu", tm.getTargetCPU());
    if (!tm.getTargetFeatureString().empty())
      f.addFnAttr("target-features", tm.getTargetFeatureString());
    // LLVM's loop vectorizer prefers 256-bit vectors on AVX-512 CPUs
    // (clang's -mprefer-vector-width default), so the loops it vectorizes
    // (the softmax's exp2, the row sums) ran 8 wide next to our 16-wide
    // matmuls, which already use zmm registers.
    if (vectorShape(tm).bits == 512)
      f.addFnAttr("prefer-vector-width", "512");
  }
  return llvmModule;
}

void optimize(llvm::Module &llvmModule, llvm::TargetMachine &tm) {
  // The tile loops are already register-blocked by our own passes; LLVM's
  // unrolling of them doubled compile time and changed nothing measurable
  // at run time (sliding window, 4096^2: 106.6 vs 108.4 ms).
  llvm::PipelineTuningOptions tuning;
  tuning.LoopUnrolling = false;
  // ATTNC_TIMING=llvm prints the time of each LLVM pass to stderr.
  llvm::PassInstrumentationCallbacks instrumentation;
  std::optional<llvm::TimePassesHandler> passTimes;
  if (timeLLVMPasses()) {
    passTimes.emplace(true);
    passTimes->registerCallbacks(instrumentation);
  }
  llvm::PassBuilder builder(&tm, tuning, std::nullopt, &instrumentation);
  llvm::LoopAnalysisManager lam;
  llvm::FunctionAnalysisManager fam;
  llvm::CGSCCAnalysisManager cgam;
  llvm::ModuleAnalysisManager mam;
  builder.registerModuleAnalyses(mam);
  builder.registerCGSCCAnalyses(cgam);
  builder.registerFunctionAnalyses(fam);
  builder.registerLoopAnalyses(lam);
  builder.crossRegisterProxies(lam, fam, cgam, mam);
  llvm::ModulePassManager mpm =
      builder.buildPerModuleDefaultPipeline(llvm::OptimizationLevel::O3);
  mpm.run(llvmModule, mam);
  if (passTimes)
    passTimes->print();
}

std::string deferredSlot(llvm::StringRef entry) {
  return (entry + ".deferred").str();
}

std::string deferEntries(llvm::Module &module,
                         llvm::ArrayRef<std::string> entries) {
  // The entries and every function they reach: the kernels they call are
  // internal and used by nothing else.
  llvm::SmallPtrSet<const llvm::Function *, 8> moved;
  llvm::SmallVector<llvm::Function *> work;
  for (const std::string &name : entries)
    if (llvm::Function *f = module.getFunction(name);
        f && !f->isDeclaration() && moved.insert(f).second)
      work.push_back(f);
  while (!work.empty()) {
    llvm::Function *f = work.pop_back_val();
    for (llvm::Instruction &inst : llvm::instructions(*f))
      if (auto *call = llvm::dyn_cast<llvm::CallBase>(&inst))
        if (llvm::Function *callee = call->getCalledFunction();
            callee && !callee->isDeclaration() && moved.insert(callee).second)
          work.push_back(callee);
  }
  // Global variables (constants) are copied; functions not moved become
  // declarations, which nothing in the copy calls.
  llvm::ValueToValueMapTy map;
  std::unique_ptr<llvm::Module> deferred =
      llvm::CloneModule(module, map, [&](const llvm::GlobalValue *gv) {
        auto *f = llvm::dyn_cast<llvm::Function>(gv);
        return !f || moved.contains(f);
      });
  std::string bitcode;
  llvm::raw_string_ostream os(bitcode);
  llvm::WriteBitcodeToFile(*deferred, os);
  os.flush();

  llvm::LLVMContext &ctx = module.getContext();
  auto *ptr = llvm::PointerType::get(ctx, 0);
  llvm::FunctionCallee call = module.getOrInsertFunction(
      kDeferredCall, llvm::FunctionType::get(llvm::Type::getVoidTy(ctx),
                                             {ptr, ptr}, false));
  for (const std::string &name : entries) {
    llvm::Function *f = module.getFunction(name);
    if (!f || f->isDeclaration())
      continue;
    f->deleteBody();
    auto *slot = new llvm::GlobalVariable(
        module, ptr, /*isConstant=*/false, llvm::GlobalValue::ExternalLinkage,
        llvm::ConstantPointerNull::get(ptr), deferredSlot(name));
    llvm::IRBuilder<> b(llvm::BasicBlock::Create(ctx, "", f));
    b.CreateCall(call, {f->getArg(0), b.CreateLoad(ptr, slot)});
    b.CreateRetVoid();
  }
  // The kernels only the moved entries called.
  bool erased = true;
  while (erased) {
    erased = false;
    for (llvm::Function &f : llvm::make_early_inc_range(module))
      if (moved.contains(&f) && f.hasLocalLinkage() && f.use_empty()) {
        f.eraseFromParent();
        erased = true;
      }
  }
  return bitcode;
}

std::unique_ptr<llvm::Module> parseDeferred(const std::string &bitcode,
                                            llvm::LLVMContext &ctx,
                                            std::string &error) {
  auto parsed = llvm::parseBitcodeFile(
      llvm::MemoryBufferRef(bitcode, "attn-deferred.bc"), ctx);
  if (!parsed) {
    error = llvm::toString(parsed.takeError());
    return nullptr;
  }
  return std::move(*parsed);
}

void carryBf16AsBits(llvm::Module &module) {
  llvm::LLVMContext &ctx = module.getContext();
  auto bitsType = [&](llvm::Type *type) -> llvm::Type * {
    auto *i16 = llvm::Type::getInt16Ty(ctx);
    if (auto *vector = llvm::dyn_cast<llvm::VectorType>(type))
      return llvm::VectorType::get(i16, vector->getElementCount());
    return i16;
  };
  auto isBf16 = [](llvm::Type *type) {
    return type->getScalarType()->isBFloatTy();
  };
  for (llvm::Function &f : module) {
    // bf16 phis become i16 phis of their incoming values' bits.
    SmallVector<llvm::PHINode *> phis;
    for (llvm::BasicBlock &block : f)
      for (llvm::PHINode &phi : block.phis())
        if (isBf16(phi.getType()))
          phis.push_back(&phi);
    for (llvm::PHINode *phi : phis) {
      llvm::Type *bits = bitsType(phi->getType());
      auto *carried = llvm::PHINode::Create(bits, phi->getNumIncomingValues(),
                                            "", phi->getIterator());
      for (unsigned i = 0; i < phi->getNumIncomingValues(); ++i) {
        llvm::BasicBlock *from = phi->getIncomingBlock(i);
        llvm::IRBuilder<> b(from->getTerminator());
        carried->addIncoming(b.CreateBitCast(phi->getIncomingValue(i), bits),
                             from);
      }
      llvm::IRBuilder<> b(&*phi->getParent()->getFirstInsertionPt());
      phi->replaceAllUsesWith(b.CreateBitCast(carried, phi->getType()));
      phi->eraseFromParent();
    }
    // Other bf16 values used in another block (or by a phi) reach it as
    // bits, turned back into bf16 next to the use.
    SmallVector<llvm::Instruction *> values;
    for (llvm::Instruction &inst : llvm::instructions(f))
      if (isBf16(inst.getType()) && !llvm::isa<llvm::PHINode>(inst))
        values.push_back(&inst);
    for (llvm::Instruction *value : values) {
      llvm::Value *bits = nullptr;
      for (llvm::Use &use : llvm::make_early_inc_range(value->uses())) {
        auto *user = llvm::cast<llvm::Instruction>(use.getUser());
        auto *phi = llvm::dyn_cast<llvm::PHINode>(user);
        if (!phi && user->getParent() == value->getParent())
          continue;
        if (!bits) {
          llvm::IRBuilder<> b(value->getParent(),
                              std::next(value->getIterator()));
          bits = b.CreateBitCast(value, bitsType(value->getType()));
        }
        llvm::IRBuilder<> b(phi ? phi->getIncomingBlock(use)->getTerminator()
                                : user);
        use.set(b.CreateBitCast(bits, value->getType()));
      }
    }
  }
}

FailureOr<std::string> emitObject(llvm::Module &module,
                                  llvm::TargetMachine &tm,
                                  std::string &error) {
  carryBf16AsBits(module);
  llvm::SmallVector<char, 0> buffer;
  llvm::raw_svector_ostream os(buffer);
  llvm::legacy::PassManager pm;
  if (tm.addPassesToEmitFile(pm, os, nullptr,
                             llvm::CodeGenFileType::ObjectFile)) {
    error = "the target cannot emit object files";
    return failure();
  }
  bool timed = timeLLVMPasses();
  llvm::TimePassesIsEnabled = timed;
  pm.run(module);
  if (timed) {
    llvm::reportAndResetTimings();
    llvm::TimePassesIsEnabled = false;
  }
  return std::string(buffer.begin(), buffer.end());
}

FailureOr<LoadedObject>
loadObject(llvm::StringRef object, llvm::StringRef entry, std::string &error,
           llvm::ArrayRef<std::pair<std::string, void *>> hostSymbols) {
  initNativeTarget();
  auto jit = llvm::orc::LLJITBuilder().create();
  if (!jit) {
    error = llvm::toString(jit.takeError());
    return failure();
  }
  // libm and libc functions the kernels may call (expf, memset) resolve
  // against this process.
  char prefix = (*jit)->getDataLayout().getGlobalPrefix();
  auto generator =
      llvm::orc::DynamicLibrarySearchGenerator::GetForCurrentProcess(prefix);
  if (!generator) {
    error = llvm::toString(generator.takeError());
    return failure();
  }
  (*jit)->getMainJITDylib().addGenerator(std::move(*generator));
  llvm::orc::SymbolMap host;
  for (const auto &[name, address] : hostSymbols)
    host[(*jit)->mangleAndIntern(name)] = {
        llvm::orc::ExecutorAddr::fromPtr(address),
        llvm::JITSymbolFlags::Exported | llvm::JITSymbolFlags::Callable};
  if (!host.empty())
    if (llvm::Error err = (*jit)->getMainJITDylib().define(
            llvm::orc::absoluteSymbols(std::move(host)))) {
      error = llvm::toString(std::move(err));
      return failure();
    }
  if (llvm::Error err = (*jit)->addObjectFile(
          llvm::MemoryBuffer::getMemBufferCopy(object, "attn-kernel.o"))) {
    error = llvm::toString(std::move(err));
    return failure();
  }
  auto symbol = (*jit)->lookup(entry);
  if (!symbol) {
    error = llvm::toString(symbol.takeError());
    return failure();
  }
  LoadedObject loaded;
  loaded.entry = symbol->toPtr<void (*)(void **)>();
  loaded.jit = std::move(*jit);
  return loaded;
}

std::string findLld() {
  if (const char *env = std::getenv("ATTNC_LLD"))
    return env;
  if (llvm::sys::fs::can_execute(ATTNC_LLD_PATH))
    return ATTNC_LLD_PATH;
  if (auto found = llvm::sys::findProgramByName("ld.lld"))
    return *found;
  return "";
}

LogicalResult linkSharedObject(llvm::ArrayRef<std::string> objects,
                               const std::string &output,
                               std::string &error) {
  std::string lld = findLld();
  if (lld.empty()) {
    error = "ld.lld not found (install lld-22 or set ATTNC_LLD)";
    return failure();
  }
  SmallVector<llvm::StringRef> args = {lld, "-shared", "--as-needed",
                                       "-O1", "-o", output};
  for (const std::string &o : objects)
    args.push_back(o);
  std::string message;
  int rc = llvm::sys::ExecuteAndWait(lld, args, std::nullopt, {}, 0, 0,
                                     &message);
  if (rc != 0) {
    error = "ld.lld failed (" + std::to_string(rc) + ") " + message;
    return failure();
  }
  return success();
}

} // namespace attn::cpu
