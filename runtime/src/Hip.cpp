//===- Hip.cpp - kernels on AMD GPUs through the HIP runtime --------------===//
#include "GpuFunction.h"

#include <dlfcn.h>

#include <cstdint>
#include <map>
#include <memory>
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

constexpr int kHipMemcpyHostToDevice = 1; // hipMemcpyKind
constexpr int kHipMemcpyDeviceToHost = 2;

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
  hipError_t (*hipMalloc)(void **, size_t);
  hipError_t (*hipFree)(void *);
  hipError_t (*hipMemcpy)(void *, const void *, size_t, int);
  hipError_t (*hipDeviceSynchronize)();
  const char *(*hipGetErrorString)(hipError_t);
  std::string error; // why the runtime is unusable, if it is
};

/// Opens the HIP runtime, or the simulator at `simulator` exporting its
/// API, and initializes it.
std::unique_ptr<Runtime> openRuntime(const std::string &simulator) {
  auto r = std::make_unique<Runtime>();
  void *lib = nullptr;
  if (!simulator.empty()) {
    lib = dlopen(simulator.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
      const char *why = dlerror();
      r->error = "cannot open the GPU simulator '" + simulator +
                 "' (attn::useGpuSimulator or ATTN_GPU_SIMULATOR_HIP): " +
                 (why ? why : "not found");
      return r;
    }
  } else {
    std::string tried;
    for (const char *name :
         {"libamdhip64.so.6", "libamdhip64.so.5", "libamdhip64.so"}) {
      lib = dlopen(name, RTLD_NOW | RTLD_LOCAL);
      if (lib)
        break;
      tried += std::string(tried.empty() ? "" : ", ") + name;
    }
    if (!lib) {
      r->error = "no HIP runtime (" + tried +
                 " not found); AMD GPU kernels need ROCm's libamdhip64 and "
                 "an AMD GPU";
      return r;
    }
  }
  std::string what = simulator.empty() ? std::string("the HIP runtime")
                                       : "the GPU simulator '" + simulator +
                                             "'";
  bool missing = false;
  auto sym = [&](auto &fn, const char *name) {
    fn = reinterpret_cast<std::remove_reference_t<decltype(fn)>>(
        dlsym(lib, name));
    if (!fn && r->error.empty())
      r->error = what + " lacks " + name;
    missing |= !fn;
  };
  sym(r->hipInit, "hipInit");
  sym(r->hipGetDevice, "hipGetDevice");
  sym(r->hipDeviceGetAttribute, "hipDeviceGetAttribute");
  sym(r->hipModuleLoadData, "hipModuleLoadData");
  sym(r->hipModuleGetFunction, "hipModuleGetFunction");
  sym(r->hipModuleLaunchKernel, "hipModuleLaunchKernel");
  sym(r->hipMallocAsync, "hipMallocAsync");
  sym(r->hipFreeAsync, "hipFreeAsync");
  sym(r->hipMalloc, "hipMalloc");
  sym(r->hipFree, "hipFree");
  sym(r->hipMemcpy, "hipMemcpy");
  sym(r->hipDeviceSynchronize, "hipDeviceSynchronize");
  sym(r->hipGetErrorString, "hipGetErrorString");
  if (missing)
    return r;
  if (hipError_t e = r->hipInit(0); e != 0)
    r->error = "hipInit of " + what + " failed (HIP error " +
               std::to_string(e) + "): no usable GPU";
  return r;
}

/// The runtime launches use now: libamdhip64, or the simulator this
/// process chose. Each is opened once and stays loaded.
const Runtime &runtime() {
  static std::mutex mutex;
  static std::map<std::string, std::unique_ptr<Runtime>> opened;
  std::string simulator = gpuSimulatorLibrary(GpuVendor::Hip);
  std::lock_guard<std::mutex> lock(mutex);
  std::unique_ptr<Runtime> &r = opened[simulator];
  if (!r)
    r = openRuntime(simulator);
  return *r;
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

/// Loaded on the caller's current device on first use, once per runtime
/// (the GPU's, or a simulator's).
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
  void launchBackward(int phase, std::array<int64_t, 3> grid, void **params,
                      void *stream) const override;
  int64_t multiprocessors() const override;
  void *allocate(size_t bytes, void *stream) const override;
  void release(void *memory, void *stream) const override;
  void *allocateDevice(size_t bytes) const override;
  void freeDevice(void *memory) const override;
  void copyToDevice(void *device, const void *host,
                    size_t bytes) const override;
  void copyToHost(void *host, const void *device,
                  size_t bytes) const override;
  void synchronize() const override;

private:
  /// The kernels of one runtime's module.
  struct Loaded {
    hipFunction_t function = nullptr, merge = nullptr;
    hipFunction_t selectPool = nullptr, selectKernel = nullptr;
    hipFunction_t backwardKv = nullptr, backwardQ = nullptr;
    int64_t cuCount = 0;
    std::string error;
  };
  const Loaded &ensureLoaded(const Runtime &r) const;
  void load(const Runtime &r, Loaded &l) const;
  mutable std::mutex loadMutex;
  mutable std::map<const Runtime *, Loaded> loads;
};

const HipFunction::Loaded &HipFunction::ensureLoaded(const Runtime &r) const {
  if (!r.error.empty())
    throw Error("target", "cannot run " + code.chip + " kernel '" +
                              code.entry + "': " + r.error);
  std::lock_guard<std::mutex> lock(loadMutex);
  auto [it, first] = loads.try_emplace(&r);
  if (first)
    load(r, it->second);
  if (!it->second.error.empty())
    throw Error("target", it->second.error);
  return it->second;
}

void HipFunction::load(const Runtime &r, Loaded &l) const {
  int device = 0, cus = 0;
  if (r.hipGetDevice(&device) != 0) {
    l.error = "cannot query the GPU";
    return;
  }
  // Only split-KV's automatic part count depends on it.
  if (r.hipDeviceGetAttribute(&cus, kHipAttrMultiprocessorCount, device) !=
          0 ||
      cus <= 0 || cus > 4096)
    cus = 64;
  l.cuCount = cus;
  // A code object runs on its own chip only; the runtime says so here.
  hipModule_t module = nullptr;
  if (hipError_t e = r.hipModuleLoadData(&module, code.binary.data());
      e != 0) {
    l.error = "loading " + code.entry + " (built for " + code.chip +
              ") on device " + std::to_string(device) +
              " failed: " + message(r, e);
    return;
  }
  for (auto [fn, name] : {std::pair{&l.function, &code.entry},
                          std::pair{&l.merge, &code.mergeEntry},
                          std::pair{&l.selectPool, &code.selectPoolEntry},
                          std::pair{&l.selectKernel, &code.selectEntry},
                          std::pair{&l.backwardKv, &code.backwardKvEntry},
                          std::pair{&l.backwardQ, &code.backwardQEntry}})
    if (hipError_t e = name->empty() ? 0
                                     : r.hipModuleGetFunction(
                                           fn, module, name->c_str());
        e != 0) {
      l.error = "kernel " + *name + " not found: " + message(r, e);
      return;
    }
}

int64_t HipFunction::multiprocessors() const {
  return ensureLoaded(runtime()).cuCount;
}

void *HipFunction::allocate(size_t bytes, void *stream) const {
  const Runtime &r = runtime();
  ensureLoaded(r);
  void *memory = nullptr;
  check(r, r.hipMallocAsync(&memory, bytes, stream),
        "allocating " + std::to_string(bytes) + " bytes of split-KV scratch");
  return memory;
}

void HipFunction::release(void *memory, void *stream) const {
  runtime().hipFreeAsync(memory, stream);
}

void *HipFunction::allocateDevice(size_t bytes) const {
  const Runtime &r = runtime();
  ensureLoaded(r);
  void *memory = nullptr;
  check(r, r.hipMalloc(&memory, bytes),
        "allocating " + std::to_string(bytes) + " bytes of device memory");
  return memory;
}

void HipFunction::freeDevice(void *memory) const {
  runtime().hipFree(memory);
}

void HipFunction::copyToDevice(void *device, const void *host,
                               size_t bytes) const {
  const Runtime &r = runtime();
  check(r, r.hipMemcpy(device, host, bytes, kHipMemcpyHostToDevice),
        "copying " + std::to_string(bytes) + " bytes to the device");
}

void HipFunction::copyToHost(void *host, const void *device,
                             size_t bytes) const {
  const Runtime &r = runtime();
  check(r, r.hipMemcpy(host, device, bytes, kHipMemcpyDeviceToHost),
        "copying " + std::to_string(bytes) + " bytes from the device");
}

void HipFunction::synchronize() const {
  const Runtime &r = runtime();
  check(r, r.hipDeviceSynchronize(), "running " + code.entry);
}

void HipFunction::launchSplit(int64_t batch, int64_t heads, int64_t seqQ,
                              int64_t valueHeadDim, int64_t parts,
                              int64_t pack, std::vector<void *> params,
                              std::vector<void *> mergeParams,
                              std::array<const TensorRef *, 3>,
                              void *stream) const {
  const Runtime &r = runtime();
  const Loaded &l = ensureLoaded(r);
  if (batch == 0 || heads == 0 || seqQ == 0)
    return;
  int64_t rowsPerHead = code.rowsPerBlock / pack;
  int64_t qTiles = (seqQ + rowsPerHead - 1) / rowsPerHead;
  // LDS is static in the code object: no dynamic shared memory.
  check(r,
        r.hipModuleLaunchKernel(
            l.function, static_cast<unsigned>(qTiles * parts),
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
        r.hipModuleLaunchKernel(l.merge, static_cast<unsigned>(mergeBlocks),
                                static_cast<unsigned>(heads),
                                static_cast<unsigned>(batch), kMergeThreads,
                                1, 1, 0, stream, mergeParams.data(), nullptr),
        "launching " + code.mergeEntry);
}

void HipFunction::launchPrePass(int which, std::array<int64_t, 3> grid,
                              void **params, void *stream) const {
  const Runtime &r = runtime();
  const Loaded &l = ensureLoaded(r);
  hipFunction_t fn = which ? l.selectKernel : l.selectPool;
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

void HipFunction::launchBackward(int phase, std::array<int64_t, 3> grid,
                                 void **params, void *stream) const {
  const Runtime &r = runtime();
  const Loaded &l = ensureLoaded(r);
  hipFunction_t fn = phase ? l.backwardQ : l.backwardKv;
  const std::string &name = phase ? code.backwardQEntry : code.backwardKvEntry;
  if (!fn)
    throw Error("target", code.entry + " was compiled without its backward");
  if (grid[0] * grid[1] * grid[2] == 0)
    return;
  int64_t threads = phase ? code.backwardQThreads : code.backwardKvThreads;
  // LDS is static in the code object.
  check(r,
        r.hipModuleLaunchKernel(fn, static_cast<unsigned>(grid[0]),
                                static_cast<unsigned>(grid[1]),
                                static_cast<unsigned>(grid[2]),
                                static_cast<unsigned>(threads), 1, 1, 0,
                                stream, params, nullptr),
        "launching " + name);
}

} // namespace

std::shared_ptr<GpuFunction> makeHipFunction(GpuCode code) {
  return std::make_shared<HipFunction>(std::move(code));
}

} // namespace attn::detail
