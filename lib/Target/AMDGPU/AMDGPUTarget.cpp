//===- AMDGPUTarget.cpp - gpu.module to an AMDGPU code object -------------===//
#include "lib/Target/AMDGPU/AMDGPUTarget.h"

#include "lib/Transforms/Transforms.h"

#include "mlir/Conversion/GPUToROCDL/GPUToROCDLPass.h"
#include "mlir/Conversion/ReconcileUnrealizedCasts/ReconcileUnrealizedCasts.h"
#include "mlir/Conversion/SCFToControlFlow/SCFToControlFlow.h"
#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/Dialect/GPU/Transforms/Passes.h"
#include "mlir/Pass/PassManager.h"
#include "mlir/Transforms/GreedyPatternRewriteDriver.h"

#include "llvm/BinaryFormat/ELF.h"
#include "llvm/BinaryFormat/MsgPackDocument.h"
#include "llvm/Object/ELF.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/TargetSelect.h"

#include <cstdlib>
#include <mutex>

using namespace mlir;
using namespace mlir::attn;

namespace {

/// MLIR's ROCDL serializer links with `<toolkit>/llvm/bin/ld.lld`: a
/// per-process directory with that one link stands in for a ROCm install
/// (nothing else of ROCm is used: the kernels call no device library).
FailureOr<std::string> toolkitFor(const std::string &lld, std::string &error) {
  static std::mutex mutex;
  static std::string dir, linkedTo;
  std::lock_guard<std::mutex> lock(mutex);
  if (!dir.empty() && linkedTo == lld)
    return dir;
  if (lld.empty()) {
    error = "ld.lld not found (install lld-22 or set ATTNC_LLD); AMDGPU code "
            "objects are linked with it";
    return failure();
  }
  llvm::SmallString<128> base;
  if (llvm::sys::fs::createUniqueDirectory("attnc-rocm", base)) {
    error = "cannot create a temporary directory for linking";
    return failure();
  }
  llvm::SmallString<128> bin(base);
  llvm::sys::path::append(bin, "llvm", "bin");
  llvm::SmallString<128> link(bin);
  llvm::sys::path::append(link, "ld.lld");
  if (llvm::sys::fs::create_directories(bin) ||
      llvm::sys::fs::create_link(lld, link)) {
    error = "cannot link " + lld + " into " + std::string(bin);
    return failure();
  }
  // Removed at exit; the directory is only read while compiling.
  static struct Cleanup {
    std::string path;
    ~Cleanup() {
      if (!path.empty())
        llvm::sys::fs::remove_directories(path);
    }
  } cleanup;
  cleanup.path = std::string(base);
  dir = std::string(base);
  linkedTo = lld;
  return dir;
}

FailureOr<std::string> lower(ModuleOp host, const rocm::KernelConfig &cfg,
                             StringRef format, std::string &error) {
  static std::once_flag initOnce;
  std::call_once(initOnce, [] {
    LLVMInitializeAMDGPUTargetInfo();
    LLVMInitializeAMDGPUTarget();
    LLVMInitializeAMDGPUTargetMC();
    LLVMInitializeAMDGPUAsmPrinter();
    LLVMInitializeAMDGPUAsmParser();
  });
  gpukernel::foldKnownBlockDims(host);
  RewritePatternSet floorDiv(host.getContext());
  populateExpandFloorDivPatterns(floorDiv);
  // exp, tanh and sigmoid as v_exp_f32 and v_rcp_f32 (1 ulp each), then
  // exp2/log2/rsqrt straight to the hardware's transcendental unit (no
  // denormal-range fixups: softmax's arguments never need them; a masked
  // -inf still gives v_exp_f32 0).
  gpukernel::lowerExpTanhSigmoid(host, "llvm.amdgcn.rcp");
  if (failed(applyPatternsGreedily(host, std::move(floorDiv))) ||
      failed(gpukernel::prepareMath(
          host, {"llvm.amdgcn.exp2", "llvm.amdgcn.log", "llvm.amdgcn.rsq"}))) {
    error = "preparing the kernel's arithmetic failed";
    return failure();
  }
  std::string toolkit;
  if (format == "bin") {
    auto dir = toolkitFor(cfg.lld, error);
    if (failed(dir))
      return failure();
    toolkit = *dir;
  }
  PassManager pm(host.getContext());
  GpuROCDLAttachTargetOptions target;
  target.chip = cfg.chip;
  // Code object v5: what ROCm 6 emits by default (v6 needs newer runtimes).
  target.abiVersion = "500";
  target.optLevel = 3;
  pm.addPass(createGpuROCDLAttachTarget(target));
  pm.addNestedPass<gpu::GPUModuleOp>(createSCFToControlFlowPass());
  ConvertGpuOpsToROCDLOpsOptions toRocdl;
  toRocdl.chipset = cfg.chip;
  toRocdl.runtime = gpu::amd::Runtime::HIP;
  pm.addNestedPass<gpu::GPUModuleOp>(createConvertGpuOpsToROCDLOps(toRocdl));
  pm.addNestedPass<gpu::GPUModuleOp>(createReconcileUnrealizedCastsPass());
  GpuModuleToBinaryPassOptions toBinary;
  toBinary.compilationTarget = format.str();
  toBinary.toolkitPath = toolkit;
  pm.addPass(createGpuModuleToBinaryPass(toBinary));
  return gpukernel::runToBinary(pm, host, "AMDGPU", error);
}

int64_t integer(llvm::msgpack::DocNode &map, StringRef key) {
  auto &m = map.getMap();
  auto it = m.find(map.getDocument()->getNode(key));
  if (it == m.end())
    return 0;
  llvm::msgpack::DocNode &n = it->second;
  if (n.getKind() == llvm::msgpack::Type::Int)
    return n.getInt();
  if (n.getKind() == llvm::msgpack::Type::UInt)
    return static_cast<int64_t>(n.getUInt());
  return 0;
}

} // namespace

FailureOr<rocm::CodeObject> rocm::inspectCodeObject(std::string object,
                                                    std::string &error) {
  auto elf = llvm::object::ELF64LEFile::create(object);
  if (!elf) {
    error = "not an ELF code object: " + llvm::toString(elf.takeError());
    return failure();
  }
  auto sections = elf->sections();
  if (!sections) {
    error = llvm::toString(sections.takeError());
    return failure();
  }
  CodeObject result;
  bool found = false;
  for (const auto &section : *sections) {
    if (section.sh_type != llvm::ELF::SHT_NOTE)
      continue;
    llvm::Error err = llvm::Error::success();
    for (const auto &note : elf->notes(section, err)) {
      if (note.getName() != "AMDGPU" ||
          note.getType() != llvm::ELF::NT_AMDGPU_METADATA)
        continue;
      llvm::ArrayRef<uint8_t> desc = note.getDesc(section.sh_addralign);
      llvm::msgpack::Document doc;
      if (!doc.readFromBlob(
              StringRef(reinterpret_cast<const char *>(desc.data()),
                        desc.size()),
              false))
        continue;
      auto &root = doc.getRoot().getMap();
      auto kernels = root.find(doc.getNode("amdhsa.kernels"));
      if (kernels == root.end())
        continue;
      for (llvm::msgpack::DocNode &kernel : kernels->second.getArray()) {
        found = true;
        int64_t vgprs = integer(kernel, ".vgpr_count");
        int64_t agprs = integer(kernel, ".agpr_count");
        int64_t sgprs = integer(kernel, ".sgpr_count");
        int64_t vSpill = integer(kernel, ".vgpr_spill_count");
        int64_t sSpill = integer(kernel, ".sgpr_spill_count");
        int64_t scratch = integer(kernel, ".private_segment_fixed_size");
        int64_t lds = integer(kernel, ".group_segment_fixed_size");
        result.vgprs = std::max(result.vgprs, vgprs);
        result.agprs = std::max(result.agprs, agprs);
        result.sgprs = std::max(result.sgprs, sgprs);
        result.ldsBytes = std::max(result.ldsBytes, lds);
        result.vgprSpills += vSpill;
        result.sgprSpills += sSpill;
        result.scratchBytes += scratch;
        auto &km = kernel.getMap();
        auto name = km.find(doc.getNode(".name"));
        std::string kernelName =
            name != km.end() && name->second.getKind() ==
                                    llvm::msgpack::Type::String
                ? name->second.getString().str()
                : "?";
        result.report += kernelName + ": " + std::to_string(vgprs) +
                         " VGPRs, " + std::to_string(agprs) + " AGPRs, " +
                         std::to_string(sgprs) + " SGPRs, " +
                         std::to_string(vSpill) + " VGPR spills, " +
                         std::to_string(sSpill) + " SGPR spills, " +
                         std::to_string(scratch) + " bytes scratch, " +
                         std::to_string(lds) + " bytes LDS\n";
      }
    }
    if (err) {
      error = llvm::toString(std::move(err));
      return failure();
    }
  }
  if (!found) {
    error = "the code object has no AMDGPU kernel metadata";
    return failure();
  }
  result.object = std::move(object);
  return result;
}

FailureOr<rocm::CodeObject>
rocm::lowerToCodeObject(ModuleOp host, const KernelConfig &cfg,
                        std::string &error) {
  auto object = lower(host, cfg, "bin", error);
  if (failed(object))
    return failure();
  return inspectCodeObject(std::move(*object), error);
}

FailureOr<std::string> rocm::lowerToAssembly(ModuleOp host,
                                             const KernelConfig &cfg,
                                             std::string &error) {
  return lower(host, cfg, "isa", error);
}
