//===- Hip.cpp - kernels on AMD GPUs through the HIP runtime --------------===//
#include "GpuFunction.h"

#include <dlfcn.h>

#include <cstdint>
#include <mutex>
#include <vector>

namespace attn::detail {
namespace {

// The few HIP runtime types and entry points used, declared here so attnrt
// builds without the HIP headers (values from hip_runtime_api.h, checked
// against it by the runtime tests where the header is installed).
using hipError_t = int;
using hipModule_t = void *;
using hipFunction_t = void *;
using hipStream_t = void *;
constexpr int kHipAttrMultiprocessorCount = 63; // hipDeviceAttributeMultiprocessorCount

struct Runtime {
  hipError_t (*hipInit)(unsigned);
  hipError_t (*hipGetDevice)(int *);
  hipError_t (*hipDeviceGetAttribute)(int *, int, int);
  hipError_t (*hipModuleLoadData)(hipModule_t *, const void *);
  hipError_t (*hipModuleGetFunction)(hipFunction_t *, hipModule_t,
                                     const char *);
  hipError_t (*hipModuleLaunchKernel)(hipFunction_t, unsigned, unsigned,
                                      unsigned, unsigned, unsigned, unsigned,
                                      unsigned, hipStream_t, void **, void **);
  hipError_t (*hipMallocAsync)(void **, size_t, hipStream_t);
  hipError_t (*hipFreeAsync)(void *, hipStream_t);
  const char *(*hipGetErrorString)(hipError_t);
  std::string error; // why the runtime is unusable, if it is
};

const Runtime &runtime() {
  static const Runtime r = [] {
    Runtime r{};
    void *lib = nullptr;
    std::string tried;
    for (const char *name :
         {"libamdhip64.so.6", "libamdhip64.so.5", "libamdhip64.so"}) {
      lib = dlopen(name, RTLD_NOW | RTLD_LOCAL);
      if (lib)
        break;
      tried += std::string(tried.empty() ? "" : ", ") + name;
    }
    if (!lib) {
      r.error = "no HIP runtime (" + tried +
                " not found); AMD GPU kernels need ROCm's libamdhip64 and "
                "an AMD GPU";
      return r;
    }
    bool missing = false;
    auto sym = [&](auto &fn, const char *name) {
      fn = reinterpret_cast<std::remove_reference_t<decltype(fn)>>(
          dlsym(lib, name));
      if (!fn && r.error.empty())
        r.error = std::string("the HIP runtime lacks ") + name;
      missing |= !fn;
    };
    sym(r.hipInit, "hipInit");
    sym(r.hipGetDevice, "hipGetDevice");
    sym(r.hipDeviceGetAttribute, "hipDeviceGetAttribute");
    sym(r.hipModuleLoadData, "hipModuleLoadData");
    sym(r.hipModuleGetFunction, "hipModuleGetFunction");
    sym(r.hipModuleLaunchKernel, "hipModuleLaunchKernel");
    sym(r.hipMallocAsync, "hipMallocAsync");
    sym(r.hipFreeAsync, "hipFreeAsync");
    sym(r.hipGetErrorString, "hipGetErrorString");
    if (missing)
      return r;
    if (hipError_t e = r.hipInit(0); e != 0)
      r.error = "hipInit failed (HIP error " + std::to_string(e) +
                "): no usable GPU";
    return r;
  }();
  return r;
}

std::string message(const Runtime &r, hipError_t e) {
  const char *text = r.hipGetErrorString ? r.hipGetErrorString(e) : nullptr;
  return "HIP error " + std::to_string(e) +
         (text ? std::string(": ") + text : std::string());
}

void check(const Runtime &r, hipError_t e, const std::string &what) {
  if (e != 0)
    throw Error("", what + " failed: " + message(r, e));
}

/// Loaded on the caller's current device on first use.
class HipFunction final : public GpuFunction {
public:
  explicit HipFunction(GpuCode code) : GpuFunction(std::move(code)) {}
  void launchSplit(int64_t batch, int64_t heads, int64_t seqQ,
                   int64_t valueHeadDim, int64_t parts, int64_t pack,
                   std::vector<void *> params, std::vector<void *> mergeParams,
                   std::array<const TensorRef *, 3> qkv,
                   void *stream) const override;
  void launchPrePass(int which, std::array<int64_t, 3> grid, void **params,
                     void *stream) const override;
  int64_t multiprocessors() const override;
  void *allocate(size_t bytes, void *stream) const override;
  void release(void *memory, void *stream) const override;

private:
  mutable std::once_flag loadOnce;
  void ensureLoaded() const;
  mutable hipFunction_t function = nullptr;
  mutable hipFunction_t merge = nullptr;
  mutable hipFunction_t selectPool = nullptr, selectKernel = nullptr;
  mutable int64_t cuCount = 0;
  mutable std::string loadError;
};

void HipFunction::ensureLoaded() const {
  const Runtime &r = runtime();
  if (!r.error.empty())
    throw Error("target", "cannot run " + code.chip + " kernel '" +
                              code.entry + "': " + r.error);
  std::call_once(loadOnce, [&] {
    int device = 0, cus = 0;
    if (r.hipGetDevice(&device) != 0) {
      loadError = "cannot query the GPU";
      return;
    }
    // Only split-KV's automatic part count depends on it.
    if (r.hipDeviceGetAttribute(&cus, kHipAttrMultiprocessorCount, device) !=
            0 ||
        cus <= 0 || cus > 4096)
      cus = 64;
    cuCount = cus;
    // A code object runs on its own chip only; the runtime says so here.
    hipModule_t module = nullptr;
    if (hipError_t e = r.hipModuleLoadData(&module, code.binary.data());
        e != 0) {
      loadError = "loading " + code.entry + " (built for " + code.chip +
                  ") on device " + std::to_string(device) +
                  " failed: " + message(r, e);
      return;
    }
    for (auto [fn, name] : {std::pair{&function, &code.entry},
                            std::pair{&merge, &code.mergeEntry},
                            std::pair{&selectPool, &code.selectPoolEntry},
                            std::pair{&selectKernel, &code.selectEntry}})
      if (hipError_t e = name->empty() ? 0
                                       : r.hipModuleGetFunction(
                                             fn, module, name->c_str());
          e != 0) {
        loadError = "kernel " + *name + " not found: " + message(r, e);
        return;
      }
  });
  if (!loadError.empty())
    throw Error("target", loadError);
}

int64_t HipFunction::multiprocessors() const {
  ensureLoaded();
  return cuCount;
}

void *HipFunction::allocate(size_t bytes, void *stream) const {
  ensureLoaded();
  const Runtime &r = runtime();
  void *memory = nullptr;
  check(r, r.hipMallocAsync(&memory, bytes, stream),
        "allocating " + std::to_string(bytes) + " bytes of split-KV scratch");
  return memory;
}

void HipFunction::release(void *memory, void *stream) const {
  runtime().hipFreeAsync(memory, stream);
}

void HipFunction::launchSplit(int64_t batch, int64_t heads, int64_t seqQ,
                              int64_t valueHeadDim, int64_t parts,
                              int64_t pack, std::vector<void *> params,
                              std::vector<void *> mergeParams,
                              std::array<const TensorRef *, 3>,
                              void *stream) const {
  ensureLoaded();
  const Runtime &r = runtime();
  if (batch == 0 || heads == 0 || seqQ == 0)
    return;
  int64_t rowsPerHead = code.rowsPerBlock / pack;
  int64_t qTiles = (seqQ + rowsPerHead - 1) / rowsPerHead;
  // LDS is static in the code object: no dynamic shared memory.
  check(r,
        r.hipModuleLaunchKernel(
            function, static_cast<unsigned>(qTiles * parts),
            static_cast<unsigned>(heads / pack), static_cast<unsigned>(batch),
            static_cast<unsigned>(code.blockThreads), 1, 1,
            static_cast<unsigned>(code.sharedBytes), stream, params.data(),
            nullptr),
        "launching " + code.entry);
  if (parts <= 1)
    return;
  int64_t mergeBlocks =
      (seqQ * valueHeadDim + kMergeThreads - 1) / kMergeThreads;
  check(r,
        r.hipModuleLaunchKernel(merge, static_cast<unsigned>(mergeBlocks),
                                static_cast<unsigned>(heads),
                                static_cast<unsigned>(batch), kMergeThreads,
                                1, 1, 0, stream, mergeParams.data(), nullptr),
        "launching " + code.mergeEntry);
}

void HipFunction::launchPrePass(int which, std::array<int64_t, 3> grid,
                              void **params, void *stream) const {
  ensureLoaded();
  const Runtime &r = runtime();
  hipFunction_t fn = which ? selectKernel : selectPool;
  const std::string &name = which ? code.selectEntry : code.selectPoolEntry;
  if (!fn)
    throw Error("target", code.entry + " has no select pre-pass");
  check(r,
        r.hipModuleLaunchKernel(fn, static_cast<unsigned>(grid[0]),
                  static_cast<unsigned>(grid[1]),
                  static_cast<unsigned>(grid[2]), kSelectThreads, 1, 1, 0,
                  stream, params, nullptr),
        "launching " + name);
}

} // namespace

std::shared_ptr<GpuFunction> makeHipFunction(GpuCode code) {
  return std::make_shared<HipFunction>(std::move(code));
}

} // namespace attn::detail
