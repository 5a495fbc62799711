//===- Compiler.cpp - the pipeline from .attn text to a kernel ------------===//
#include "lib/Driver/Compiler.h"

#include <regex>

#include "dialect/AttnDialect.h"
#include "lib/Frontend/Diagnostics.h"
#include "lib/Frontend/Parser.h"
#include "lib/Target/CPU/CPUTarget.h"
#include "lib/Target/CPU/Passes.h"
#include "lib/Target/GPU/LaunchAttr.h"
#include "lib/Target/TargetInfo.h"
#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "lib/Transforms/Passes.h"
#include "lib/Transforms/Transforms.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/ControlFlow/IR/ControlFlow.h"
#include "mlir/Dialect/Func/Extensions/InlinerExtension.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Dialect/Vector/IR/VectorOps.h"
#include "mlir/IR/Diagnostics.h"
#include "mlir/IR/SymbolTable.h"
#include "mlir/InitAllExtensions.h"
#include "mlir/IR/Verifier.h"
#include "mlir/Pass/PassManager.h"
#include "mlir/Pass/PassRegistry.h"
#include "mlir/Conversion/Passes.h"
#include "mlir/Dialect/Arith/Transforms/Passes.h"
#include "mlir/Dialect/MemRef/Transforms/Passes.h"
#include "mlir/Dialect/Linalg/Passes.h"
#include "mlir/Dialect/Linalg/IR/Linalg.h"
#include "mlir/Transforms/Passes.h"

#include "llvm/Object/ELFObjectFile.h"
#include "llvm/Support/raw_ostream.h"

#include <atomic>
#include <tuple>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <mutex>

using namespace mlir;

namespace attn::driver {

const char *compilerVersion() { return ATTNC_VERSION "+mlir22"; }

std::optional<Stage> parseStage(const std::string &name) {
  if (name == "attn") return Stage::Attn;
  if (name == "tiled") return Stage::Tiled;
  if (name == "llvm") return Stage::LLVM;
  if (name == "ptx") return Stage::PTX;
  if (name == "amdgcn") return Stage::AMDGCN;
  return std::nullopt;
}

Source::Source(std::string text, std::string filename) {
  file.name = std::move(filename);
  file.text = std::move(text);
  fe::Diagnostics diags(file);
  program = fe::parseAndCheck(file, diags);
  if (!diags.hasErrors() && program.variants.empty())
    diags.error({0, 1}, "no variant in this file; expected 'variant NAME { "
                        "... }'");
  if (diags.hasErrors())
    throw CompileError(diags.renderAll());
  if (diags.hasWarnings())
    warnings = diags.renderAll();
}

namespace {

fe::DType toFe(DType t) {
  switch (t) {
  case DType::f32: return fe::DType::F32;
  case DType::f16: return fe::DType::F16;
  case DType::bf16: return fe::DType::BF16;
  case DType::i32: return fe::DType::I32;
  default: return fe::DType::F32; // codes never reach the frontend
  }
}

DType fromFe(fe::DType t) {
  switch (t) {
  case fe::DType::F32: return DType::f32;
  case fe::DType::F16: return DType::f16;
  case fe::DType::BF16: return DType::bf16;
  case fe::DType::I32: return DType::i32;
  }
  return DType::f32;
}

void registerAll(DialectRegistry &registry) {
  registry.insert<mlir::attn::AttnDialect, arith::ArithDialect,
                  math::MathDialect, memref::MemRefDialect, func::FuncDialect,
                  scf::SCFDialect, cf::ControlFlowDialect,
                  vector::VectorDialect, linalg::LinalgDialect,
                  LLVM::LLVMDialect>();
  registerAllExtensions(registry);
  mlir::attn::registerTargetDialects(registry);
}

void registerPassesOnce() {
  static std::once_flag once;
  std::call_once(once, [] {
    mlir::attn::registerAttnPasses();
    mlir::attn::registerTargetPasses();
    // The upstream passes our textual pipelines name.
    mlir::registerTransformsPasses();
    mlir::registerConversionPasses();
    mlir::arith::registerArithPasses();
    mlir::memref::registerMemRefPasses();
    mlir::registerLinalgPasses();
  });
}

/// Collects MLIR diagnostics so a failing pass reports as InternalError.
class DiagnosticCollector {
public:
  explicit DiagnosticCollector(MLIRContext &ctx)
      : handler(&ctx, [this](Diagnostic &d) {
          llvm::raw_string_ostream os(text);
          os << d.getLocation() << ": " << d << "\n";
          return success();
        }) {}
  std::string text;

private:
  ScopedDiagnosticHandler handler;
};

struct BuiltModule {
  std::unique_ptr<MLIRContext> ctx;
  OwningOpRef<ModuleOp> module;
};

/// The variant imported and, past Stage::Attn, built by the target's kernel
/// passes (the CPU's tiling) and, at Stage::LLVM, lowered for `machine`.
BuiltModule buildModule(const Source &source, const KernelPlan &plan,
                        Stage stage,
                        const llvm::TargetMachine *machine = nullptr) {
  registerPassesOnce();
  DialectRegistry registry;
  registerAll(registry);
  BuiltModule built;
  built.ctx = std::make_unique<MLIRContext>(registry,
                                            MLIRContext::Threading::DISABLED);
  MLIRContext &ctx = *built.ctx;
  fe::registerImportDialects(ctx);
  DiagnosticCollector collect(ctx);
  built.module = ModuleOp::create(UnknownLoc::get(&ctx));
  fe::Diagnostics diags(source.file);
  if (!fe::importVariant(*built.module, *plan.variant, plan.shape,
                         source.file, diags)) {
    if (diags.hasErrors())
      throw CompileError(diags.renderAll());
    throw InternalError("import failed: " + collect.text);
  }
  if (stage == Stage::Attn)
    return built;

  PassManager pm(&ctx);
  // The result is verified once, after the last pass: verifying after
  // each of the ~30 passes took 40% of this pipeline's time (attn-opt
  // verifies after each pass, to find the pass that breaks the IR).
  pm.enableVerifier(false);
  // ATTNC_TIMING=1 prints MLIR pass times to stderr (=llvm: LLVM's too).
  if (std::getenv("ATTNC_TIMING"))
    pm.enableTiming();
  const mlir::attn::TargetInfo &target = targetFor(plan.info.target);
  std::string pipeline =
      "func.func(attn-classify-mask)," +
      target.kernelPipeline(plan, plan.info.target, plan.variant->name,
                            entrySymbol(plan.variant->name));
  std::string error;
  llvm::raw_string_ostream errs(error);
  if (failed(parsePassPipeline(pipeline, pm, errs)))
    throw InternalError("bad tiling pipeline: " + error);
  if (stage == Stage::LLVM &&
      failed(parsePassPipeline(target.loweringPipeline(*machine), pm, errs)))
    throw InternalError("bad CPU pipeline: " + error);
  if (failed(pm.run(*built.module)) || failed(verify(*built.module)))
    throw InternalError("compiling variant '" + plan.variant->name +
                        "' failed:\n" + collect.text);
  return built;
}

/// Set when the process starts exiting. A JIT torn down after that (by a
/// static attn::Jit, say) would run after LLVM's lazily created statics are
/// gone, which crashes in codegen; at exit the OS reclaims the code anyway,
/// so the JIT is left alone then.
std::atomic<bool> processExiting{false};

void watchProcessExit() {
  // Registered at the first load, so it runs before the destructors of the
  // objects (Jits, kernel caches) that existed when loading began.
  static std::once_flag once;
  std::call_once(once, [] { std::atexit([] { processExiting = true; }); });
}

void destroyJit(void *jit) {
  if (!processExiting.load()) {
    delete static_cast<llvm::orc::LLJIT *>(jit);
    return;
  }
  // Kept reachable from a global instead of dropped, so LeakSanitizer sees
  // memory held on purpose rather than a leak. (A suppression cannot match
  // reliably: libLLVM has no frame pointers, so LSan's fast unwinder stops
  // inside it, before any attnc frame.)
  static std::mutex mutex;
  static auto *keptAtExit = new std::vector<void *>();
  std::lock_guard<std::mutex> lock(mutex);
  keptAtExit->push_back(jit);
}

std::unique_ptr<llvm::TargetMachine> targetMachine(const KernelPlan &plan) {
  std::string error;
  auto tm = cpu::createTargetMachine(cpu::CodegenTarget::named(plan.cpu),
                                     error);
  if (!tm)
    throw Error("--cpu", error);
  return tm;
}

} // namespace

const mlir::attn::TargetInfo &targetFor(const std::string &name) {
  const mlir::attn::TargetInfo *target = mlir::attn::lookupTarget(name);
  if (!target) {
    std::vector<std::string> names = mlir::attn::allTargetNames();
    std::string list;
    for (size_t i = 0; i < names.size(); ++i)
      list += (i == 0                    ? ""
               : i + 1 == names.size() ? " or "
                                       : ", ") +
              names[i];
    throw Error("--target",
                "unknown target '" + name + "'; expected " + list);
  }
  target->checkChip(name);
  return *target;
}

KernelPlan planKernel(const Source &source, const Options &options) {
  KernelPlan plan;
  const mlir::attn::TargetInfo &target = targetFor(options.target);
  fe::KVQuant kvQuant = fe::KVQuant::None;
  if (options.kvDtype != "same") {
    static const std::pair<const char *, fe::KVQuant> known[] = {
        {"int8", fe::KVQuant::Int8},
        {"fp8e4m3", fe::KVQuant::Fp8E4M3},
        {"fp8e5m2", fe::KVQuant::Fp8E5M2},
        {"int4", fe::KVQuant::Int4}};
    for (auto [name, kind] : known)
      if (options.kvDtype == name)
        kvQuant = kind;
    if (kvQuant == fe::KVQuant::None)
      throw Error("--kv-dtype", "unknown K/V dtype '" + options.kvDtype +
                                    "'; expected same, int8, fp8e4m3, "
                                    "fp8e5m2 or int4");
  }
  if (options.kvGroup < 1 || options.kvGroup > (1 << 20))
    throw Error("--kv-group", "expected a group of 1..1048576 tokens");
  if (options.paged < 0 || options.paged > (1 << 20))
    throw Error("--paged", "expected a page size of 1..1048576 tokens");
  if (options.splitKv != "auto") {
    char *end = nullptr;
    long n = std::strtol(options.splitKv.c_str(), &end, 10);
    if (options.splitKv.empty() || *end != '\0' || n < 1)
      throw Error("--split-kv", "expected a positive count or 'auto', got '" +
                                    options.splitKv + "'");
  }
  target.checkOptions(options);
  for (auto [name, dim] : {std::pair{"--head-dim", options.headDim},
                           std::pair{"--v-head-dim", options.valueHeadDim}})
    if (dim < 0)
      throw Error(name, "must be positive, got " + std::to_string(dim));
  if (options.headDim == 0)
    throw Error("--head-dim", "required: the head dim D of q and k (e.g. "
                              "--head-dim 64)");
  if (options.headDim > 1024 || options.valueHeadDim > 1024 ||
      options.valueHeadDim < 0)
    throw Error(options.headDim > 1024 ? "--head-dim" : "--v-head-dim",
                "expected a head dim in 1..1024");
  auto checkBlock = [](const char *name, int64_t v) {
    if (v < 0 || v > 1024)
      throw Error(name, "expected a tile size in 1..1024 or auto");
  };
  checkBlock("--block-q", options.blockQ);
  checkBlock("--block-kv", options.blockKV);

  const fe::Program &program = source.program;
  if (options.variant.empty()) {
    if (program.variants.size() > 1) {
      std::string names;
      for (const fe::Variant &v : program.variants)
        names += (names.empty() ? "" : ", ") + v.name;
      throw Error("--variant", "the file holds several variants (" + names +
                                   "); pick one with --variant NAME");
    }
    plan.variant = &program.variants.front();
  } else {
    plan.variant = program.find(options.variant);
    if (!plan.variant) {
      std::vector<std::string> names;
      std::string list;
      for (const fe::Variant &v : program.variants) {
        names.push_back(v.name);
        list += (list.empty() ? "" : ", ") + v.name;
      }
      std::string hint = fe::closestName(options.variant, names);
      throw Error("--variant", "no variant '" + options.variant +
                                   "' in the file (it has " + list + ")" +
                                   (hint.empty() ? ""
                                                 : "; did you mean '" + hint +
                                                       "'?"));
    }
  }
  const fe::Variant &v = *plan.variant;

  // DSL.md: f32 on the CPU, bf16 on GPUs unless given.
  DType dtype = target.defaultDType();
  if (!options.dtype.empty()) {
    auto d = parseDType(options.dtype);
    if (!d || *d == DType::i32)
      throw Error("--dtype", "expected f32, f16 or bf16, got '" +
                                 options.dtype + "'");
    dtype = *d;
  }
  plan.shape.headDim = options.headDim;
  plan.shape.valueHeadDim =
      options.valueHeadDim ? options.valueHeadDim : options.headDim;
  plan.shape.dtype = toFe(dtype);
  plan.shape.lse = options.lse;
  plan.shape.backward = options.backward;
  plan.shape.kvQuant = kvQuant;
  plan.shape.kvGroup = options.kvGroup;
  plan.shape.pageSize = options.paged;
  if (kvQuant == fe::KVQuant::Int4 &&
      (plan.shape.headDim % 2 || plan.shape.valueHeadDim % 2))
    throw Error("--kv-dtype", "int4 K/V packs two codes per byte: expected "
                              "even head dims");
  if (options.lse && !v.hasRowSum()) {
    fe::Diagnostics diags(source.file);
    fe::reportLseUnavailable(v, diags);
    throw CompileError(diags.renderAll());
  }
  if (options.backward) {
    // What the import refuses too, said here so that attn::Jit::compile
    // (whose CPU code is built at the first launch) and attnc run report
    // it before any input is read.
    const char *unsupported = kvQuant != fe::KVQuant::None ? "quantized K/V"
                              : options.paged > 0          ? "paged K/V"
                              : v.kvIndexTensor >= 0       ? "kv_index"
                                                           : nullptr;
    if (unsupported) {
      fe::Diagnostics diags(source.file);
      diags.error(v.loc, std::string("variant '") + v.name +
                             "' has no backward yet: " + unsupported +
                             " is forward-only (docs/backward.md)");
      throw CompileError(diags.renderAll());
    }
  }
  mlir::attn::TileRequest tiles;
  tiles.headDim = plan.shape.headDim;
  tiles.valueHeadDim = plan.shape.valueHeadDim;
  tiles.quantizedKV = kvQuant != fe::KVQuant::None;
  tiles.kvIndex = v.kvIndex.has_value();
  tiles.hasBlockMap = fe::hasBlockMap(v);
  tiles.backward = options.backward;
  tiles.selectBlock = v.select ? v.select->size : 0;
  tiles.scoreReadsF32Tensors =
      options.backward && fe::scoreOrScaleReadsF32Tensors(v);
  plan.blockQ = options.blockQ ? options.blockQ : 64;
  plan.blockKV = options.blockKV ? options.blockKV : 64;
  target.planTiles(plan, options, tiles);
  plan.cpu = options.cpu.empty() ? "native" : options.cpu;
  KernelInfo &info = plan.info;
  info.name = v.name;
  info.target = options.target;
  info.dtype = dtype;
  info.outDType = fromFe(fe::outputDType(v, plan.shape));
  info.headDim = plan.shape.headDim;
  info.valueHeadDim = plan.shape.valueHeadDim;
  info.lse = options.lse;
  info.normalize = fe::normalizeName(v.normalize);
  info.blockQ = plan.blockQ;
  info.blockKV = plan.blockKV;
  info.compilerVersion = compilerVersion();
  info.hasBlockMap = fe::hasBlockMap(v);
  info.selectBlock = v.select ? v.select->size : 0;
  info.selectRowsPerItem =
      v.select ? mlir::attn::selectRowsPerWorkItem(v.select->size) : 0;
  info.packedHeads = !v.select; // see attn-tile
  info.splitKv = options.splitKv == "auto" ? 0 : std::stol(options.splitKv);
  if (target.classifiesTilesInKernel()) {
    // GPU kernels classify their tiles themselves and run one query head
    // per block; split-KV parts are chosen at launch (from the SM count
    // for auto).
    info.hasBlockMap = false;
    info.packedHeads = false;
  }
  info.kvDtype = options.kvDtype;
  info.kvGroup = kvQuant == fe::KVQuant::None ? 0 : options.kvGroup;
  info.pageSize = options.paged;
  info.backward = options.backward;
  info.backwardOrderedDq = plan.orderedDq;

  for (const fe::ParamDecl &p : v.params)
    info.params.push_back({p.name,
                           p.type == fe::Type::I32 ? DType::i32 : DType::f32,
                           p.defaultValue});
  for (const fe::TensorDecl &t : v.tensors) {
    CaptureInfo c;
    c.name = t.name;
    c.dtype = fromFe(t.dtype);
    for (const fe::ExprPtr &d : t.dims) {
      std::string text = fe::printExpr(*d, v);
      if (text.size() > 2 && text.front() == '(' && text.back() == ')')
        text = text.substr(1, text.size() - 2);
      c.dimText.push_back(text);
      c.dimRpn.push_back(fe::dimToRpn(*d, v));
    }
    info.captures.push_back(std::move(c));
  }
  return plan;
}

std::string entrySymbol(const std::string &variant) {
  // A prefix keeps variant names from colliding with C library functions
  // the generated code calls.
  return "attn_entry_" + variant;
}

std::string blockMapSymbol(const std::string &variant) {
  return "attn_blockmap_" + variant;
}

std::string mergeSymbol(const std::string &variant) {
  return "attn_merge_" + variant;
}

std::string backwardSymbol(const std::string &variant) {
  return "attn_backward_" + variant;
}

bool isGpuTarget(const std::string &target) {
  const mlir::attn::TargetInfo *t = mlir::attn::lookupTarget(target);
  return t && t->isGpu();
}

namespace {

/// Runs the target's kernel passes `pipeline` on `module`; what they refuse
/// is reported under `option`.
void runKernelPasses(ModuleOp module, const std::string &pipeline,
                     const char *option) {
  PassManager pm(module.getContext());
  // buildGpuModule verifies the result: a kernel that does not verify is a
  // compiler bug, not an unsupported variant.
  pm.enableVerifier(false);
  std::string error;
  llvm::raw_string_ostream errs(error);
  if (failed(parsePassPipeline(pipeline, pm, errs)))
    throw InternalError("bad kernel pipeline '" + pipeline + "': " + error);
  std::string message;
  ScopedDiagnosticHandler handler(module.getContext(), [&](Diagnostic &d) {
    if (d.getSeverity() == DiagnosticSeverity::Error && message.empty())
      message = d.str();
    return success();
  });
  if (succeeded(pm.run(module)))
    return;
  if (message.empty())
    throw InternalError(pipeline + " failed");
  throw Error(option, message);
}

/// The variant's kernel classified, and its GPU kernels built by the
/// target's passes and moved into `host`; returns the launch geometry.
mlir::attn::gpukernel::KernelInfo
buildGpuModule(BuiltModule &built, const KernelPlan &plan, ModuleOp host) {
  PassManager pm(built.ctx.get());
  std::string error;
  llvm::raw_string_ostream errs(error);
  if (failed(parsePassPipeline("func.func(attn-classify-mask)", pm, errs)) ||
      failed(pm.run(*built.module)))
    throw InternalError("classifying the mask failed: " + error);
  const mlir::attn::TargetInfo &target = targetFor(plan.info.target);
  const std::string &chip = plan.info.target;
  runKernelPasses(*built.module,
                  target.kernelPipeline(plan, chip, plan.variant->name,
                                        entrySymbol(plan.variant->name)),
                  "--target");
  if (plan.info.backward)
    runKernelPasses(
        *built.module,
        target.backwardPipeline(plan, chip,
                                fe::backwardFunctionName(plan.variant->name)),
        "--backward");
  gpu::GPUModuleOp gpuModule =
      mlir::attn::gpukernel::findKernelModule(*built.module);
  FailureOr<mlir::attn::gpukernel::KernelInfo> info = failure();
  if (gpuModule)
    info = mlir::attn::gpukernel::readLaunch(gpuModule);
  if (failed(info))
    throw InternalError("the kernel passes left no gpu.module with " +
                        std::string(mlir::attn::gpukernel::kLaunchAttr));
  // The geometry travels in the bundle's manifest, not in the binary.
  gpuModule->removeAttr(mlir::attn::gpukernel::kLaunchAttr);
  host->setAttr(gpu::GPUDialect::getContainerModuleAttrName(),
                UnitAttr::get(host.getContext()));
  gpuModule->moveBefore(host.getBody(), host.getBody()->end());
  // The NVVM pipeline does not verify its input: catch malformed kernels
  // here rather than as wrong PTX.
  std::string diagnostics;
  {
    mlir::ScopedDiagnosticHandler handler(host.getContext(),
                                          [&](mlir::Diagnostic &d) {
                                            llvm::raw_string_ostream os(
                                                diagnostics);
                                            os << d << "\n";
                                            return mlir::success();
                                          });
    if (mlir::failed(mlir::verify(host)))
      throw InternalError("the GPU kernel does not verify: " + diagnostics);
  }
  return *info;
}

} // namespace

namespace {

GpuObject compileGpuObjectOnce(const Source &source, const KernelPlan &plan,
                               bool assemble) {
  BuiltModule built = buildModule(source, plan, Stage::Attn);
  OwningOpRef<ModuleOp> host = ModuleOp::create(UnknownLoc::get(built.ctx.get()));
  mlir::attn::gpukernel::KernelInfo geometry =
      buildGpuModule(built, plan, *host);
  GpuObject out;
  detail::GpuCode &code = out.code;
  code.chip = plan.info.target;
  code.entry = geometry.name;
  code.blockThreads = geometry.blockThreads;
  code.rowsPerBlock = geometry.rowsPerBlock;
  code.sharedBytes = geometry.sharedBytes;
  code.tensorMaps = geometry.tensorMaps;
  code.clusterCtas = geometry.clusterCtas;
  code.blockKV = geometry.blockKV;
  out.launchRegisters = geometry.launchRegisters;
  code.mergeEntry = geometry.mergeName;
  code.selectPoolEntry = geometry.selectPoolName;
  code.selectEntry = geometry.selectName;
  code.backwardKvEntry = geometry.backwardKvName;
  code.backwardQEntry = geometry.backwardQName;
  code.backwardKvThreads = geometry.backwardKvThreads;
  code.backwardKvRows = geometry.backwardKvRows;
  code.backwardQThreads = geometry.backwardQThreads;
  code.backwardQRows = geometry.backwardQRows;
  code.backwardGradients = geometry.backwardGradients;
  out.info = plan.info;
  std::string error;
  FailureOr<mlir::attn::GpuBinary> binary =
      targetFor(plan.info.target)
          .lowerToBinary(*host, plan, plan.info.target, assemble, error);
  if (failed(binary))
    throw InternalError(error);
  code.binary = std::move(binary->binary);
  code.ptx = std::move(binary->ptx);
  out.ptxasReport = std::move(binary->report);
  out.registers = binary->registers;
  out.spillStoreBytes = binary->spillStoreBytes;
  out.spillLoadBytes = binary->spillLoadBytes;
  if (!code.backwardKvEntry.empty())
    out.backwardSpillBytes = binary->backwardSpillBytes;
  return out;
}

} // namespace

GpuObject compileGpuObject(const Source &source, const KernelPlan &plan,
                           bool assemble) {
  // Register pressure depends on the variant's regions (a 2-D neighborhood
  // mask needs far more than a causal one): the target decides from what
  // ptxas (or LLVM's AMDGPU register allocator) reports which plan to try
  // next.
  const mlir::attn::TargetInfo &target = targetFor(plan.info.target);
  KernelPlan p = plan;
  // Only ptxas can confirm setmaxnreg's budget.
  if (!assemble)
    p.shareRegisters = false;
  const mlir::attn::TilePlan first = p;
  while (true) {
    GpuObject g = compileGpuObjectOnce(source, p, assemble);
    mlir::attn::GpuFit fit;
    fit.registers = g.registers;
    fit.spillStoreBytes = g.spillStoreBytes;
    fit.spillLoadBytes = g.spillLoadBytes;
    fit.launchRegisters = g.launchRegisters;
    fit.backwardSpillBytes = g.backwardSpillBytes;
    std::optional<mlir::attn::TilePlan> next =
        target.nextPlan(first, p, fit, p.info);
    if (!next)
      return g;
    static_cast<mlir::attn::TilePlan &>(p) = *next;
    // The object's info has the tiles used.
    p.info.blockQ = p.blockQ;
    p.info.blockKV = p.blockKV;
  }
}

std::string emitStage(const Source &source, const KernelPlan &plan,
                      Stage stage) {
  const mlir::attn::TargetInfo &target = targetFor(plan.info.target);
  target.checkStage(stage);
  if (target.isGpu()) {
    // The code a bundle would get, tile fallback included, when ptxas is
    // here to decide it (AMD code objects are always linked here).
    bool assemble = target.assemblesHere();
    // PTX is what the bundle holds: the last of compileGpuObject's tries.
    if (stage == Stage::PTX)
      return compileGpuObject(source, plan, assemble).code.ptx;
    KernelPlan fitted = plan;
    fitted.shareRegisters = false; // unless ptxas confirms it
    if (stage != Stage::Attn && assemble &&
        (plan.autoBlockKV || plan.autoBlockQ || plan.tma)) {
      GpuObject used = compileGpuObject(source, plan, true);
      fitted.blockKV = fitted.info.blockKV = used.info.blockKV;
      fitted.blockQ = fitted.info.blockQ = used.info.blockQ;
      fitted.shareRegisters = used.launchRegisters > 0;
    }
    BuiltModule built = buildModule(source, fitted, Stage::Attn);
    std::string text;
    llvm::raw_string_ostream os(text);
    if (stage == Stage::Attn) {
      built.module->print(os);
      return text;
    }
    OwningOpRef<ModuleOp> host =
        ModuleOp::create(UnknownLoc::get(built.ctx.get()));
    buildGpuModule(built, fitted, *host);
    if (stage != Stage::Tiled) {
      std::string error;
      auto assembly = target.lowerToText(*host, stage, fitted,
                                         fitted.info.target, error);
      if (failed(assembly))
        throw InternalError(error);
      return *assembly;
    }
    host->print(os);
    return text;
  }
  if (stage != Stage::LLVM) {
    BuiltModule built = buildModule(source, plan, stage);
    std::string text;
    llvm::raw_string_ostream os(text);
    built.module->print(os);
    return text;
  }
  auto tm = targetMachine(plan);
  BuiltModule built = buildModule(source, plan, Stage::LLVM, tm.get());
  std::string error;
  llvm::LLVMContext llvmCtx;
  auto llvmModule =
      cpu::translateAndOptimize(*built.module, llvmCtx, *tm, error);
  if (!llvmModule)
    throw InternalError(error);
  std::string text;
  llvm::raw_string_ostream os(text);
  llvmModule->print(os, nullptr);
  return text;
}

namespace {

/// Whether the JIT defers `info`'s block-map entry: not when the variant
/// selects blocks, whose every launch runs it.
bool defersBlockMap(const KernelInfo &info) {
  return info.hasBlockMap && !info.selectBlock;
}

/// compileCpuObject; with `deferred`, the merge and block-map entries go
/// there as bitcode (cpu::deferEntries), stubs in the object, and with
/// `deferredOnly` no object is built.
CpuObject compileCpu(const Source &source, const KernelPlan &plan,
                     std::string *deferred, bool deferredOnly);

} // namespace

CpuObject compileCpuObject(const Source &source, const KernelPlan &plan) {
  return compileCpu(source, plan, nullptr, false);
}

namespace {

CpuObject compileCpu(const Source &source, const KernelPlan &plan,
                     std::string *deferred, bool deferredOnly) {
  bool timing = std::getenv("ATTNC_TIMING") != nullptr;
  // Wall and CPU time of this thread: on a busy machine the wall time also
  // counts the time other processes held the core.
  auto cpuNow = [] {
    timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
  };
  auto start = std::chrono::steady_clock::now();
  double cpuStart = cpuNow();
  auto lap = [&](const char *what) {
    if (!timing)
      return;
    auto now = std::chrono::steady_clock::now();
    double cpu = cpuNow();
    std::fprintf(stderr, "attnc timing: %-28s %8.2f ms (cpu %.2f ms)\n",
                 what,
                 std::chrono::duration<double, std::milli>(now - start)
                     .count(),
                 cpu - cpuStart);
    start = now;
    cpuStart = cpu;
  };
  auto tm = targetMachine(plan);
  lap("target machine");
  BuiltModule built = buildModule(source, plan, Stage::LLVM, tm.get());
  lap("import + MLIR pipeline");
  CpuObject out;
  out.entry = entrySymbol(plan.variant->name);
  out.info = plan.info;
  if (failed(cpu::addPackedEntry(*built.module, plan.variant->name,
                                 out.entry)))
    throw InternalError("lowered module lacks the kernel function");
  if (plan.info.hasBlockMap) {
    out.blockMapEntry = blockMapSymbol(plan.variant->name);
    if (failed(cpu::addPackedEntry(
            *built.module, fe::blockMapFunctionName(plan.variant->name),
            out.blockMapEntry)))
      throw InternalError("lowered module lacks the block-map function");
  }
  out.mergeEntry = mergeSymbol(plan.variant->name);
  if (failed(cpu::addPackedEntry(*built.module,
                                 fe::mergeFunctionName(plan.variant->name),
                                 out.mergeEntry)))
    throw InternalError("lowered module lacks the split-KV merge function");
  if (plan.info.backward) {
    out.backwardEntry = backwardSymbol(plan.variant->name);
    if (failed(cpu::addPackedEntry(
            *built.module, fe::backwardFunctionName(plan.variant->name),
            out.backwardEntry)))
      throw InternalError("lowered module lacks the backward function");
  }
  std::string error;
  llvm::LLVMContext llvmCtx;
  auto llvmModule = cpu::translateToLLVMIR(*built.module, llvmCtx, *tm, error);
  if (!llvmModule)
    throw InternalError(error);
  lap("LLVM translate");
  if (deferred) {
    std::vector<std::string> entries = {out.mergeEntry};
    if (defersBlockMap(plan.info))
      entries.push_back(out.blockMapEntry);
    *deferred = cpu::deferEntries(*llvmModule, entries);
    if (deferredOnly)
      return out;
    lap("deferred entries split off");
  }
  cpu::optimize(*llvmModule, *tm);
  lap("LLVM -O3");
  FailureOr<std::string> object = cpu::emitObject(*llvmModule, *tm, error);
  if (failed(object))
    throw InternalError(error);
  lap("LLVM codegen");
  out.object = std::move(*object);
  return out;
}

/// ATTNC_PERF_MAP=1: each loaded CPU object's functions go to
/// /tmp/perf-<pid>.map (perf's map of JIT code: perf report names the
/// kernels) and the object to /tmp/attnc-<pid>-<address>.o, the address
/// its .text was loaded at (objdump -d --adjust-vma=<address> it to see
/// which instructions perf's samples fall on).
/// The kernels are internal symbols ORC does not look up: they are placed
/// by their offset from the entry, as JITLink keeps .text in one block.
void writePerfMap(llvm::StringRef object, llvm::StringRef entry,
                  const void *entryAddress) {
  if (!std::getenv("ATTNC_PERF_MAP"))
    return;
  auto parsed = llvm::object::ObjectFile::createObjectFile(
      llvm::MemoryBufferRef(object, "attn-kernel.o"));
  if (!parsed) {
    llvm::consumeError(parsed.takeError());
    return;
  }
  struct Function {
    std::string name;
    uint64_t offset, size;
  };
  std::vector<Function> functions;
  std::optional<uint64_t> entryOffset;
  for (const llvm::object::SymbolRef &symbol : (*parsed)->symbols()) {
    auto type = symbol.getType();
    auto name = symbol.getName();
    auto value = symbol.getValue();
    if (!type || !name || !value) {
      llvm::consumeError(type.takeError());
      llvm::consumeError(name.takeError());
      llvm::consumeError(value.takeError());
      continue;
    }
    if (*type != llvm::object::SymbolRef::ST_Function)
      continue;
    uint64_t size = llvm::object::ELFSymbolRef(symbol).getSize();
    functions.push_back({name->str(), *value, size});
    if (*name == entry)
      entryOffset = *value;
  }
  if (!entryOffset)
    return;
  auto base = reinterpret_cast<uintptr_t>(entryAddress) - *entryOffset;
  std::string pid = std::to_string(::getpid());
  if (FILE *map = std::fopen(("/tmp/perf-" + pid + ".map").c_str(), "a")) {
    for (const Function &f : functions)
      std::fprintf(map, "%llx %llx %s\n",
                   (unsigned long long)(base + f.offset),
                   (unsigned long long)f.size, f.name.c_str());
    std::fclose(map);
  }
  char at[32];
  std::snprintf(at, sizeof at, "%llx", (unsigned long long)base);
  if (FILE *file = std::fopen(
          ("/tmp/attnc-" + pid + "-" + at + ".o").c_str(), "wb")) {
    std::fwrite(object.data(), 1, object.size(), file);
    std::fclose(file);
  }
}

/// The code of a CpuJitCode's deferred entries, compiled at the first call
/// of a stub, shared by its stubs.
struct DeferredCode {
  std::function<CpuObject()> build;
  std::once_flag once;
  detail::CpuCode code;
  std::string error;
};

/// What a stub passes to deferredCall: its code and which entry it is.
struct DeferredSlot {
  DeferredCode *code = nullptr;
  bool blockMap = false;
};

/// A CpuJitCode loaded: its JIT, and its deferred code once built.
struct JitCodeOwner {
  std::shared_ptr<void> jit;
  DeferredCode deferred;
  DeferredSlot slots[2];
};

/// cpu::kDeferredCall: builds the deferred code at the first call (the
/// other threads of the launch wait for it), then runs the entry.
void deferredCall(void **args, void *slotAddress) {
  auto *slot = static_cast<DeferredSlot *>(slotAddress);
  DeferredCode &deferred = *slot->code;
  std::call_once(deferred.once, [&] {
    try {
      deferred.code = loadCpuCode(deferred.build());
    } catch (const std::exception &e) {
      deferred.error = e.what();
    }
  });
  detail::CpuEntry entry =
      slot->blockMap ? deferred.code.blockMap : deferred.code.merge;
  if (!entry) {
    // Called from generated code, which cannot pass an exception on. The
    // kernel's own entry compiled, so this is a compiler bug.
    std::fprintf(stderr,
                 "attnc: internal error: compiling the %s entry failed: "
                 "%s\n",
                 slot->blockMap ? "block-map" : "split-KV merge",
                 deferred.error.c_str());
    std::abort();
  }
  entry(args);
}

} // namespace

CpuJitCode compileCpuJitCode(const Source &source, const KernelPlan &plan) {
  CpuJitCode code;
  code.now = compileCpu(source, plan, &code.deferred, false);
  return code;
}

CpuObject compileCpuDeferred(const Source &source, const KernelPlan &plan,
                             const std::string &deferred) {
  std::string bitcode = deferred;
  if (bitcode.empty())
    compileCpu(source, plan, &bitcode, true);
  auto tm = targetMachine(plan);
  std::string error;
  llvm::LLVMContext llvmCtx;
  std::unique_ptr<llvm::Module> module =
      cpu::parseDeferred(bitcode, llvmCtx, error);
  if (!module)
    throw InternalError("the deferred entries' bitcode: " + error);
  cpu::optimize(*module, *tm);
  FailureOr<std::string> object = cpu::emitObject(*module, *tm, error);
  if (failed(object))
    throw InternalError(error);
  CpuObject out;
  out.object = std::move(*object);
  out.entry = out.mergeEntry = mergeSymbol(plan.variant->name);
  if (defersBlockMap(plan.info))
    out.blockMapEntry = blockMapSymbol(plan.variant->name);
  out.info = plan.info;
  out.info.backward = false; // the backward entry stays in `now`
  return out;
}

detail::CpuCode loadCpuJitCode(const CpuObject &now,
                               std::function<CpuObject()> deferred) {
  watchProcessExit();
  auto owner = std::make_shared<JitCodeOwner>();
  owner->deferred.build = std::move(deferred);
  std::string error;
  FailureOr<cpu::LoadedObject> loaded = cpu::loadObject(
      now.object, now.entry, error,
      {{cpu::kDeferredCall, reinterpret_cast<void *>(&deferredCall)}});
  if (failed(loaded))
    throw InternalError("loading the compiled kernel failed: " + error);
  writePerfMap(now.object, now.entry, reinterpret_cast<void *>(loaded->entry));
  llvm::orc::LLJIT *jit = loaded->jit.release();
  owner->jit = std::shared_ptr<void>(jit, destroyJit);
  auto lookup = [&](const std::string &name, const char *what) {
    auto symbol = jit->lookup(name);
    if (!symbol)
      throw InternalError(std::string("the ") + what + " is missing: " +
                          llvm::toString(symbol.takeError()));
    return symbol->getValue();
  };
  // A stub's slot gets the address of its DeferredSlot.
  auto stub = [&](const std::string &name, int index, const char *what) {
    DeferredSlot &slot = owner->slots[index];
    slot.code = &owner->deferred;
    slot.blockMap = index == 1;
    *reinterpret_cast<DeferredSlot **>(
        lookup(cpu::deferredSlot(name), what)) = &slot;
    return reinterpret_cast<detail::CpuEntry>(lookup(name, what));
  };
  detail::CpuCode code;
  code.entry = loaded->entry;
  code.merge = stub(now.mergeEntry, 0, "split-KV merge entry");
  if (!now.blockMapEntry.empty())
    code.blockMap = defersBlockMap(now.info)
                        ? stub(now.blockMapEntry, 1, "block-map entry")
                        : reinterpret_cast<detail::CpuEntry>(
                              lookup(now.blockMapEntry, "block-map entry"));
  if (!now.backwardEntry.empty())
    code.backward = reinterpret_cast<detail::CpuEntry>(
        lookup(now.backwardEntry, "backward entry"));
  code.owner = std::move(owner);
  return code;
}

void checkCpu(const KernelPlan &plan) { targetMachine(plan); }

Kernel loadCpuKernel(const CpuObject &object) {
  detail::CpuCode code = loadCpuCode(object);
  return detail::makeCpuKernel(object.info, code.entry, std::move(code.owner),
                               code.blockMap, code.merge, code.backward);
}

detail::CpuCode loadCpuCode(const CpuObject &object) {
  watchProcessExit();
  std::string error;
  FailureOr<cpu::LoadedObject> loaded =
      cpu::loadObject(object.object, object.entry, error);
  if (failed(loaded))
    throw InternalError("loading the compiled kernel failed: " + error);
  writePerfMap(object.object, object.entry,
               reinterpret_cast<void *>(loaded->entry));
  detail::CpuEntry blockMap = nullptr;
  if (!object.blockMapEntry.empty()) {
    auto symbol = loaded->jit->lookup(object.blockMapEntry);
    if (!symbol)
      throw InternalError("the block-map entry is missing: " +
                          llvm::toString(symbol.takeError()));
    blockMap = symbol->toPtr<detail::CpuEntry>();
  }
  auto merge = loaded->jit->lookup(object.mergeEntry);
  if (!merge)
    throw InternalError("the split-KV merge entry is missing: " +
                        llvm::toString(merge.takeError()));
  detail::CpuEntry backward = nullptr;
  if (!object.backwardEntry.empty()) {
    auto symbol = loaded->jit->lookup(object.backwardEntry);
    if (!symbol)
      throw InternalError("the backward entry is missing: " +
                          llvm::toString(symbol.takeError()));
    backward = symbol->toPtr<detail::CpuEntry>();
  }
  llvm::orc::LLJIT *jit = loaded->jit.release();
  return {loaded->entry, blockMap, merge->toPtr<detail::CpuEntry>(),
          std::shared_ptr<void>(jit, destroyJit), backward};
}

namespace {

/// `kernel` as func.func @<name>(<its arguments>, grid x, y, z) running
/// the grid one block at a time with one thread per block: block ids
/// become loop counters, thread ids 0, blockDim.x 1, barriers nothing and
/// workgroup buffers stack buffers. Right for kernels whose threads only
/// split loops over blockDim.x and meet at barriers between phases, as
/// select's pre-pass kernels do.
void emulateOnHost(OpBuilder &b, gpu::GPUFuncOp kernel) {
  Location loc = kernel.getLoc();
  Type index = b.getIndexType();
  unsigned inputs = kernel.getFunctionType().getNumInputs();
  SmallVector<Type> types(kernel.getFunctionType().getInputs());
  types.append(3, index);
  auto f = func::FuncOp::create(b, loc, kernel.getName(),
                                b.getFunctionType(types, {}));
  Block *entry = f.addEntryBlock();
  OpBuilder::InsertionGuard guard(b);
  b.setInsertionPointToStart(entry);
  IRMapping map;
  for (unsigned i = 0; i < inputs; ++i)
    map.map(kernel.getArgument(i), entry->getArgument(i));
  for (BlockArgument buffer : kernel.getWorkgroupAttributions()) {
    auto type = cast<MemRefType>(buffer.getType());
    map.map(buffer, memref::AllocaOp::create(
                        b, loc,
                        MemRefType::get(type.getShape(),
                                        type.getElementType())));
  }
  Value zero = arith::ConstantIndexOp::create(b, loc, 0);
  Value one = arith::ConstantIndexOp::create(b, loc, 1);
  Value ids[3];
  for (int d = 2; d >= 0; --d) {
    auto loop = scf::ForOp::create(b, loc, zero, entry->getArgument(inputs + d),
                                   one);
    ids[d] = loop.getInductionVar();
    b.setInsertionPoint(loop.getBody()->getTerminator());
  }
  for (Operation &op : kernel.getBody().front().without_terminator())
    b.clone(op, map);
  b.setInsertionPointToEnd(entry);
  func::ReturnOp::create(b, loc);
  SmallVector<Operation *> rewritten;
  f.walk([&](Operation *op) {
    if (isa<gpu::BlockIdOp, gpu::ThreadIdOp, gpu::BlockDimOp, gpu::BarrierOp>(
            op))
      rewritten.push_back(op);
  });
  for (Operation *op : rewritten) {
    OpBuilder at(op);
    Value with;
    if (auto id = dyn_cast<gpu::BlockIdOp>(op))
      with = ids[static_cast<int>(id.getDimension())];
    else if (isa<gpu::ThreadIdOp>(op))
      with = arith::ConstantIndexOp::create(at, loc, 0);
    else if (isa<gpu::BlockDimOp>(op))
      with = arith::ConstantIndexOp::create(at, loc, 1);
    if (with)
      op->getResult(0).replaceAllUsesWith(with);
    op->erase();
  }
}

} // namespace

HostPrePass compileSelectPrePassForHost(const Source &source,
                                        const KernelPlan &plan) {
  if (!targetFor(plan.info.target).isGpu() || !plan.variant->select)
    throw Error("--target", "expected a GPU plan of a variant with select");
  BuiltModule built = buildModule(source, plan, Stage::Attn);
  MLIRContext *ctx = built.ctx.get();
  OwningOpRef<ModuleOp> host = ModuleOp::create(UnknownLoc::get(ctx));
  mlir::attn::gpukernel::KernelInfo geometry =
      buildGpuModule(built, plan, *host);
  OwningOpRef<ModuleOp> emulated = ModuleOp::create(UnknownLoc::get(ctx));
  OpBuilder b(ctx);
  b.setInsertionPointToEnd(emulated->getBody());
  std::vector<std::string> names = {geometry.selectPoolName,
                                    geometry.selectName};
  for (const std::string &name : names) {
    gpu::GPUFuncOp kernel;
    host->walk([&](gpu::GPUFuncOp f) {
      if (f.getName() == name)
        kernel = f;
    });
    if (!kernel)
      throw InternalError("the GPU module lacks " + name);
    emulateOnHost(b, kernel);
  }
  DiagnosticCollector collect(*ctx);
  PassManager pm(ctx);
  std::string error;
  if (failed(cpu::addLoweringPasses(pm, cpu::hostVectorShape(), error)) ||
      failed(pm.run(*emulated)))
    throw InternalError("lowering the pre-pass for the host failed: " + error +
                        collect.text);
  for (const std::string &name : names)
    if (failed(cpu::addPackedEntry(*emulated, name, name + "_entry")))
      throw InternalError("the lowered pre-pass lacks " + name);
  auto tm = cpu::createTargetMachine(cpu::CodegenTarget::host(), error);
  if (!tm)
    throw InternalError(error);
  llvm::LLVMContext llvmCtx;
  auto llvmModule = cpu::translateAndOptimize(*emulated, llvmCtx, *tm, error);
  if (!llvmModule)
    throw InternalError(error);
  FailureOr<std::string> object = cpu::emitObject(*llvmModule, *tm, error);
  if (failed(object))
    throw InternalError(error);
  FailureOr<cpu::LoadedObject> loaded =
      cpu::loadObject(*object, names[0] + "_entry", error);
  if (failed(loaded))
    throw InternalError("loading the pre-pass failed: " + error);
  auto select = loaded->jit->lookup(names[1] + "_entry");
  if (!select)
    throw InternalError("the select entry is missing: " +
                        llvm::toString(select.takeError()));
  HostPrePass out;
  out.pool = loaded->entry;
  out.select = select->toPtr<void (*)(void **)>();
  out.owner = std::shared_ptr<void>(loaded->jit.release(), destroyJit);
  return out;
}

void checkAll(const Source &source) {
  for (const fe::Variant &v : source.program.variants) {
    Options options;
    options.variant = v.name;
    options.headDim = 64;
    KernelPlan plan = planKernel(source, options);
    buildModule(source, plan, Stage::Attn);
  }
}

} // namespace attn::driver
