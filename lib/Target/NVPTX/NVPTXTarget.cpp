//===- NVPTXTarget.cpp - gpu.module to PTX, PTX to cubin ------------------===//
#include "lib/Target/NVPTX/NVPTXTarget.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/Dialect/GPU/Pipelines/Passes.h"
#include "lib/Transforms/Transforms.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/Math/Transforms/Approximation.h"
#include "mlir/Dialect/Math/Transforms/Passes.h"
#include "mlir/Pass/PassInstrumentation.h"
#include "mlir/Pass/PassManager.h"
#include "mlir/Transforms/GreedyPatternRewriteDriver.h"

#include "llvm/Support/FileSystem.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/Program.h"
#include "llvm/Support/TargetSelect.h"

#include "llvm/ADT/TypeSwitch.h"

#include <cstdlib>
#include <mutex>
#include <regex>

using namespace mlir;
using namespace mlir::attn;

namespace {

/// Math without libdevice, so the PTX is self-contained whether or not a
/// CUDA toolkit is installed where compiling happens: exp2/log2/rsqrt to
/// the SFU's approximate instructions (ex2 flushing subnormals, one SASS
/// instruction fewer per exponential: a result below 2^-126 becomes 0).
LogicalResult prepareMath(ModuleOp host) {
  gpukernel::lowerExpTanhSigmoid(host, "llvm.nvvm.rcp.approx.ftz.f");
  return gpukernel::prepareMath(host, {"llvm.nvvm.ex2.approx.ftz.f32",
                                       "llvm.nvvm.lg2.approx.f",
                                       "llvm.nvvm.rsqrt.approx.f"});
}

} // namespace

namespace {

/// The kernel's last kTensorMapArgsAttr pointers become `byval` 128-byte,
/// 64-byte aligned `nvvm.grid_constant` parameters: the 128 bytes of each
/// CUtensorMap travel in the launch's parameter buffer, and the kernel uses
/// their generic address (cvta.param) as TMA's tensor-map operand, as
/// CUTLASS and FlashAttention-3 do with `const __grid_constant__`.
void passTensorMapsByValue(LLVM::LLVMFuncOp func) {
  auto count = func->getAttrOfType<IntegerAttr>(nvptx::kTensorMapArgsAttr);
  if (!count)
    return;
  MLIRContext *ctx = func.getContext();
  Builder b(ctx);
  auto map = LLVM::LLVMArrayType::get(IntegerType::get(ctx, 8), 128);
  unsigned args = func.getNumArguments();
  for (unsigned i = args - count.getInt(); i < args; ++i) {
    func.setArgAttr(i, LLVM::LLVMDialect::getByValAttrName(),
                    TypeAttr::get(map));
    func.setArgAttr(i, LLVM::LLVMDialect::getAlignAttrName(),
                    b.getI64IntegerAttr(64));
    func.setArgAttr(i, "nvvm.grid_constant", b.getUnitAttr());
  }
  func->removeAttr(nvptx::kTensorMapArgsAttr);
}

/// convert-gpu-to-nvvm declares gpu.dynamic_shared_memory's base as an
/// internal zero-length array, which NVPTX prints as a 1-byte static
/// .shared variable; the dynamic region then merely happens to follow it.
/// Made external before serialization it is the `.extern .shared ... []`
/// declaration CUDA C++ emits for `extern __shared__`, whose alignment
/// places the dynamic region.
struct ExternDynamicShared : public PassInstrumentation {
  void runBeforePass(Pass *pass, Operation *op) override {
    if (pass->getArgument() != "gpu-module-to-binary")
      return;
    op->walk(passTensorMapsByValue);
    op->walk([](LLVM::GlobalOp global) {
      auto array = dyn_cast<LLVM::LLVMArrayType>(global.getGlobalType());
      if (global.getAddrSpace() == 3 && array && array.getNumElements() == 0) {
        global.setLinkage(LLVM::Linkage::External);
        // TMA writes 128-byte aligned boxes; 1024 also suits swizzled ones.
        global.setAlignment(1024);
      }
    });
  }
};

} // namespace

FailureOr<std::string> nvptx::lowerToPtx(ModuleOp host, const KernelConfig &cfg,
                                         std::string &error) {
  static std::once_flag initOnce;
  std::call_once(initOnce, [] {
    LLVMInitializeNVPTXTargetInfo();
    LLVMInitializeNVPTXTarget();
    LLVMInitializeNVPTXTargetMC();
    LLVMInitializeNVPTXAsmPrinter();
  });
  // The regions' integer floor division and modulo become arith first.
  gpukernel::foldKnownBlockDims(host);
  RewritePatternSet floorDiv(host.getContext());
  populateExpandFloorDivPatterns(floorDiv);
  if (failed(applyPatternsGreedily(host, std::move(floorDiv))) ||
      failed(prepareMath(host))) {
    error = "preparing the kernel's arithmetic failed";
    return failure();
  }
  PassManager pm(host.getContext());
  gpu::GPUToNVVMPipelineOptions options;
  options.cubinChip = cfg.chip;
  // PTX ISA 8.0 (CUDA 12.0+) for sm_80; sm_90a's wgmma and TMA need 8.0
  // and the tensor-map proxy fence 8.3 (CUDA 12.3+).
  options.cubinFeatures = cfg.chip == "sm_90a" ? "+ptx83" : "+ptx80";
  options.cubinFormat = "isa";
  options.optLevel = 3;
  gpu::buildLowerToNVVMPassPipeline(pm, options);
  pm.addInstrumentation(std::make_unique<ExternDynamicShared>());
  return gpukernel::runToBinary(pm, host, "PTX", error);
}

namespace {

std::string findPtxas() {
  if (const char *env = std::getenv("ATTNC_PTXAS"))
    return env;
  for (const char *var : {"CUDA_HOME", "CUDA_PATH"})
    if (const char *root = std::getenv(var)) {
      std::string path = std::string(root) + "/bin/ptxas";
      if (llvm::sys::fs::can_execute(path))
        return path;
    }
  if (llvm::sys::fs::can_execute("/usr/local/cuda/bin/ptxas"))
    return "/usr/local/cuda/bin/ptxas";
  if (auto found = llvm::sys::findProgramByName("ptxas"))
    return *found;
  return "";
}

std::string readFile(const std::string &path) {
  auto buffer = llvm::MemoryBuffer::getFile(path);
  return buffer ? (*buffer)->getBuffer().str() : std::string();
}

} // namespace

bool nvptx::havePtxas() { return !findPtxas().empty(); }

FailureOr<nvptx::PtxasResult> nvptx::runPtxas(const std::string &ptx,
                                              const std::string &chip,
                                              std::string &error) {
  std::string ptxas = findPtxas();
  if (ptxas.empty()) {
    error = "ptxas not found (install the CUDA toolkit or set ATTNC_PTXAS)";
    return failure();
  }
  llvm::SmallString<128> input, output, report;
  int fd;
  if (llvm::sys::fs::createTemporaryFile("attnc", "ptx", fd, input) ||
      llvm::sys::fs::createTemporaryFile("attnc", "cubin", output) ||
      llvm::sys::fs::createTemporaryFile("attnc", "log", report)) {
    error = "cannot create temporary files for ptxas";
    return failure();
  }
  {
    llvm::raw_fd_ostream os(fd, /*shouldClose=*/true);
    os << ptx;
  }
  std::string arch = "-arch=" + chip;
  SmallVector<llvm::StringRef> args = {ptxas, arch, "-v", "-O3", input,
                                       "-o", output};
  std::optional<llvm::StringRef> redirects[] = {std::nullopt,
                                                llvm::StringRef(report),
                                                llvm::StringRef(report)};
  std::string message;
  int rc = llvm::sys::ExecuteAndWait(ptxas, args, std::nullopt, redirects, 0,
                                     0, &message);
  PtxasResult result;
  result.report = readFile(report.str().str());
  result.cubin = readFile(output.str().str());
  for (const auto &path : {input, output, report})
    llvm::sys::fs::remove(path);
  if (rc != 0) {
    error = "ptxas rejected the kernel (" + std::to_string(rc) + "): " +
            message + result.report;
    return failure();
  }
  // One block per kernel in the module (the attention kernel and its
  // merge): spills add up, registers are the largest use.
  static const std::regex spills(
      R"((\d+) bytes spill stores, (\d+) bytes spill loads)");
  static const std::regex regs(R"(Used (\d+) registers)");
  const std::string &text = result.report;
  for (std::sregex_iterator it(text.begin(), text.end(), spills), end;
       it != end; ++it) {
    result.spillStoreBytes += std::stoll((*it)[1]);
    result.spillLoadBytes += std::stoll((*it)[2]);
  }
  for (std::sregex_iterator it(text.begin(), text.end(), regs), end;
       it != end; ++it)
    result.registers = std::max<int64_t>(result.registers, std::stoll((*it)[1]));
  return result;
}
