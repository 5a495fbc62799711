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
#include "mlir/IR/Matchers.h"
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

constexpr double kLog2E = 1.4426950408889634;

Value f32Constant(OpBuilder &b, Location loc, double v) {
  return arith::ConstantFloatOp::create(b, loc, b.getF32Type(),
                                        APFloat(static_cast<float>(v)));
}

/// 1 / x by the SFU (rcp.approx.ftz: within 1 ulp; x here is >= 1 or
/// NaN, so flushing subnormals never applies).
Value approxReciprocal(OpBuilder &b, Location loc, Value x) {
  return LLVM::CallIntrinsicOp::create(b, loc, b.getF32Type(),
                                       b.getStringAttr(
                                           "llvm.nvvm.rcp.approx.ftz.f"),
                                       ValueRange{x})
      .getResult(0);
}

/// Scalar f32 exp, tanh and sigmoid on the SFU instead of MLIR's
/// polynomials (about 20 instructions each, plus an IEEE division for
/// tanh and sigmoid): per score entry these were most of softcap's and
/// sigmoid's instructions (issue 19).
///   exp(x) = 2^(x log2 e), exp(-x) = 2^(x (-log2 e)): ex2.approx.ftz
///     (relative error 2^-22; the product's rounding adds |x| 2^-24);
///   tanh(x) = 1 - 2 / (1 + 2^(2 log2(e) x)), absolute error about 2^-22:
///     inside the 2^-21 the numerics tests allow a transcendental, and
///     times a softcap's cap (30-50) far inside the 2e-4 bounds on o and
///     lse. tanh.approx.f32 would be one instruction, but its 2^-11
///     relative error is up to 0.02 on a logit capped at 50. tanh(a / c)
///     multiplies a by 2 log2(e) / c, divided once where c is defined (a
///     param or a constant: once per CTA), instead of per entry;
///   1 / (1 + 2^y) (sigmoid, as the frontend and the sigmoid normalizer
///     spell it): rcp.approx.ftz instead of an IEEE reciprocal.
void lowerExpTanhSigmoid(ModuleOp host) {
  SmallVector<Operation *> ops;
  host.walk([&](Operation *op) {
    if (isa<math::ExpOp, math::TanhOp>(op) &&
        op->getResult(0).getType().isF32())
      ops.push_back(op);
  });
  for (Operation *op : ops) {
    OpBuilder b(op);
    Location loc = op->getLoc();
    Value x = op->getOperand(0), y;
    if (isa<math::ExpOp>(op)) {
      double factor = kLog2E;
      if (auto neg = x.getDefiningOp<arith::NegFOp>()) {
        x = neg.getOperand();
        factor = -kLog2E;
      }
      y = arith::MulFOp::create(b, loc, x, f32Constant(b, loc, factor));
      op->getResult(0).replaceAllUsesWith(math::Exp2Op::create(b, loc, y));
      op->erase();
      continue;
    }
    if (auto div = x.getDefiningOp<arith::DivFOp>()) {
      // The factor where the divisor is defined, outside the key loop
      // (LLVM's LICM leaves it in sm_90a's loop).
      Value c = div.getRhs();
      OpBuilder at(b.getContext());
      if (Operation *def = c.getDefiningOp())
        at.setInsertionPointAfter(def);
      else
        at.setInsertionPointToStart(cast<BlockArgument>(c).getOwner());
      Value factor = arith::DivFOp::create(
          at, loc, f32Constant(at, loc, 2 * kLog2E), c);
      y = arith::MulFOp::create(b, loc, div.getLhs(), factor);
    } else
      y = arith::MulFOp::create(b, loc, x, f32Constant(b, loc, 2 * kLog2E));
    Value one = f32Constant(b, loc, 1.0);
    Value r = approxReciprocal(
        b, loc,
        arith::AddFOp::create(b, loc, one, math::Exp2Op::create(b, loc, y)));
    op->getResult(0).replaceAllUsesWith(
        math::FmaOp::create(b, loc, r, f32Constant(b, loc, -2.0), one));
    op->erase();
  }
  SmallVector<arith::DivFOp> reciprocals;
  host.walk([&](arith::DivFOp div) {
    auto sum = div.getRhs().getDefiningOp<arith::AddFOp>();
    if (!div.getType().isF32() || !matchPattern(div.getLhs(), m_OneFloat()) ||
        !sum)
      return;
    for (auto [one, e] : {std::pair(sum.getLhs(), sum.getRhs()),
                          std::pair(sum.getRhs(), sum.getLhs())})
      if (matchPattern(one, m_OneFloat()) && e.getDefiningOp<math::Exp2Op>()) {
        reciprocals.push_back(div);
        return;
      }
  });
  for (arith::DivFOp div : reciprocals) {
    OpBuilder b(div);
    div.getResult().replaceAllUsesWith(
        approxReciprocal(b, div.getLoc(), div.getRhs()));
    div.erase();
  }
}

/// Math without libdevice, so the PTX is self-contained whether or not a
/// CUDA toolkit is installed where compiling happens: exp2/log2/rsqrt to
/// the SFU's approximate instructions (ex2 flushing subnormals, one SASS
/// instruction fewer per exponential: a result below 2^-126 becomes 0).
LogicalResult prepareMath(ModuleOp host) {
  lowerExpTanhSigmoid(host);
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
