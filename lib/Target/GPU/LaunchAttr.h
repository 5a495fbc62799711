//===- LaunchAttr.h - the kernel builders' passes and their geometry ------===//
//
// What the attn-build-<target>-kernel/-backward passes share: finding the
// attn.attention a kernel is built from, and the `attn.launch` dictionary on
// the gpu.module that carries the launch geometry (gpukernel::KernelInfo)
// from the passes to attnc.
//
//===----------------------------------------------------------------------===//
#ifndef ATTN_TARGET_GPU_LAUNCHATTR_H
#define ATTN_TARGET_GPU_LAUNCHATTR_H

#include "dialect/AttnOps.h"
#include "lib/Target/GPU/GpuBackward.h"
#include "lib/Target/GPU/GpuKernel.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/BuiltinOps.h"

#include <algorithm>

namespace mlir::attn::gpukernel {

inline constexpr const char kLaunchAttr[] = "attn.launch";
/// The gpu.module the kernel builders fill.
inline constexpr const char kKernelModule[] = "attn_gpu";

/// The forward (or backward) attn.attention of func.func @`func` in
/// `module`, or with `func` empty of the only function holding one; emits
/// an error on `module` and fails otherwise.
inline FailureOr<AttentionOp> findKernelSource(ModuleOp module, StringRef func,
                                               bool backward) {
  SmallVector<AttentionOp> found;
  module.walk([&](func::FuncOp f) {
    if (!func.empty() && f.getSymName() != func)
      return;
    f.walk([&](AttentionOp op) {
      if (op.isBackward() == backward)
        found.push_back(op);
    });
  });
  const char *kind = backward ? "backward " : "";
  if (found.size() == 1)
    return found.front();
  if (found.empty())
    return module.emitError() << "no " << kind << "attn.attention in "
                              << (func.empty() ? "the module"
                                               : "func @" + func.str());
  return module.emitError() << found.size() << " functions hold "
                            << (backward ? "a backward" : "an")
                            << " attn.attention; choose one with func=";
}

/// The gpu.module a forward kernel pass made in `module`, or null.
inline gpu::GPUModuleOp findKernelModule(ModuleOp module) {
  gpu::GPUModuleOp found;
  for (auto m : module.getOps<gpu::GPUModuleOp>())
    if (m.getName() == kKernelModule)
      found = m;
  return found;
}

/// Records `info` as `gpuModule`'s attn.launch dictionary.
inline void recordLaunch(gpu::GPUModuleOp gpuModule, const KernelInfo &info) {
  Builder b(gpuModule.getContext());
  SmallVector<NamedAttribute> entries;
  auto text = [&](StringRef key, const std::string &value) {
    if (!value.empty())
      entries.push_back(b.getNamedAttr(key, b.getStringAttr(value)));
  };
  auto number = [&](StringRef key, int64_t value) {
    entries.push_back(b.getNamedAttr(key, b.getI64IntegerAttr(value)));
  };
  text("entry", info.name);
  text("merge", info.mergeName);
  number("block_threads", info.blockThreads);
  number("rows_per_block", info.rowsPerBlock);
  number("shared_bytes", info.sharedBytes);
  number("block_kv", info.blockKV);
  entries.push_back(
      b.getNamedAttr("tensor_maps", b.getBoolAttr(info.tensorMaps)));
  number("launch_registers", info.launchRegisters);
  if (info.clusterCtas > 1)
    number("cluster_ctas", info.clusterCtas);
  text("select_pool", info.selectPoolName);
  text("select", info.selectName);
  if (!info.backwardKvName.empty()) {
    text("backward_kv", info.backwardKvName);
    number("backward_kv_threads", info.backwardKvThreads);
    number("backward_kv_rows", info.backwardKvRows);
    text("backward_q", info.backwardQName);
    number("backward_q_threads", info.backwardQThreads);
    number("backward_q_rows", info.backwardQRows);
    entries.push_back(b.getNamedAttr("backward_gradients",
                                     b.getBoolAttr(info.backwardGradients)));
  }
  gpuModule->setAttr(kLaunchAttr, b.getDictionaryAttr(entries));
}

/// The KernelInfo recordLaunch wrote on `gpuModule`; fails without one.
inline FailureOr<KernelInfo> readLaunch(gpu::GPUModuleOp gpuModule) {
  auto dict = gpuModule->getAttrOfType<DictionaryAttr>(kLaunchAttr);
  if (!dict)
    return failure();
  KernelInfo info;
  auto text = [&](StringRef key) {
    auto s = dict.getAs<StringAttr>(key);
    return s ? s.str() : std::string();
  };
  auto number = [&](StringRef key) {
    auto n = dict.getAs<IntegerAttr>(key);
    return n ? n.getInt() : int64_t(0);
  };
  auto flag = [&](StringRef key) {
    auto f = dict.getAs<BoolAttr>(key);
    return f && f.getValue();
  };
  info.name = text("entry");
  info.mergeName = text("merge");
  info.blockThreads = number("block_threads");
  info.rowsPerBlock = number("rows_per_block");
  info.sharedBytes = number("shared_bytes");
  info.blockKV = number("block_kv");
  info.tensorMaps = flag("tensor_maps");
  info.launchRegisters = number("launch_registers");
  info.clusterCtas = std::max<int64_t>(number("cluster_ctas"), 1);
  info.selectPoolName = text("select_pool");
  info.selectName = text("select");
  info.backwardKvName = text("backward_kv");
  info.backwardKvThreads = number("backward_kv_threads");
  info.backwardKvRows = number("backward_kv_rows");
  info.backwardQName = text("backward_q");
  info.backwardQThreads = number("backward_q_threads");
  info.backwardQRows = number("backward_q_rows");
  info.backwardGradients = flag("backward_gradients");
  return info;
}

/// The name a kernel build pass gives the main kernel: its `kernel` option,
/// or the name of the func holding `op`.
inline std::string kernelNameFor(AttentionOp op, StringRef option) {
  if (!option.empty())
    return option.str();
  return op->getParentOfType<func::FuncOp>().getSymName().str();
}

/// Where a backward build pass starts: the gpu.module the forward build
/// pass `forwardPass` made and its launch record; an error on `module`
/// saying to run that pass first when there is none.
inline FailureOr<std::pair<gpu::GPUModuleOp, KernelInfo>>
builtForwardLaunch(ModuleOp module, StringRef forwardPass) {
  gpu::GPUModuleOp gpuModule = findKernelModule(module);
  FailureOr<KernelInfo> info = failure();
  if (gpuModule)
    info = readLaunch(gpuModule);
  if (failed(info)) {
    module.emitError("no gpu.module with attn.launch; run ") << forwardPass
                                                             << " first";
    return failure();
  }
  return std::make_pair(gpuModule, *info);
}

/// Adds the backward kernels to the forward's launch record on `gpuModule`.
inline void recordBackwardLaunch(gpu::GPUModuleOp gpuModule, KernelInfo info,
                                 const BackwardKernels &kernels) {
  info.backwardKvName = kernels.keys.name;
  info.backwardKvThreads = kernels.keys.threads;
  info.backwardKvRows = kernels.keys.rows;
  info.backwardQName = kernels.queries.name;
  info.backwardQThreads = kernels.queries.threads;
  info.backwardQRows = kernels.queries.rows;
  info.backwardGradients = kernels.gradientBuffers;
  recordLaunch(gpuModule, info);
}

} // namespace mlir::attn::gpukernel

#endif // ATTN_TARGET_GPU_LAUNCHATTR_H
