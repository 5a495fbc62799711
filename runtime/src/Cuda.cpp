//===- Cuda.cpp - kernels on NVIDIA GPUs through the CUDA driver API -----===//
#include "GpuFunction.h"

#include <dlfcn.h>

#include <algorithm>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <vector>

namespace attn::detail {
namespace {

// The few driver API types and entry points used, declared here so attnrt
// builds without the CUDA headers.
using CUresult = int;
using CUdevice = int;
using CUcontext = void *;
using CUmodule = void *;
using CUfunction = void *;
using CUstream = void *;
constexpr int kAttrComputeMajor = 75; // CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR
constexpr int kAttrComputeMinor = 76;
constexpr int kAttrMultiprocessors = 16; // CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT
// CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES
constexpr int kFuncAttrMaxDynamicShared = 8;
// Launches get this much dynamic shared memory without opting in.
constexpr int64_t kDefaultDynamicShared = 48 * 1024;
// cuModuleLoadData's answers to an image the GPU cannot run.
constexpr CUresult kInvalidImage = 200;    // CUDA_ERROR_INVALID_IMAGE
constexpr CUresult kNoBinaryForGpu = 209;  // CUDA_ERROR_NO_BINARY_FOR_GPU

using CUdeviceptr = unsigned long long;
/// CUtensorMap: 128 opaque bytes.
struct alignas(128) TensorMap {
  uint64_t opaque[16];
};
// CUtensorMapDataType: TMA copies bits, so 16-bit elements are UINT16.
constexpr int kTensorMapUint16 = 1;
constexpr int kTensorMapL2Promotion128B = 2;
// CUtensorMapSwizzle.
constexpr int kTensorMapSwizzle32B = 1, kTensorMapSwizzle64B = 2,
              kTensorMapSwizzle128B = 3;

struct Driver {
  CUresult (*cuInit)(unsigned);
  CUresult (*cuDeviceGet)(CUdevice *, int);
  CUresult (*cuDeviceGetAttribute)(int *, int, CUdevice);
  CUresult (*cuDevicePrimaryCtxRetain)(CUcontext *, CUdevice);
  CUresult (*cuCtxGetCurrent)(CUcontext *);
  CUresult (*cuCtxSetCurrent)(CUcontext);
  CUresult (*cuCtxGetDevice)(CUdevice *);
  CUresult (*cuCtxSynchronize)();
  CUresult (*cuModuleLoadData)(CUmodule *, const void *);
  CUresult (*cuModuleGetFunction)(CUfunction *, CUmodule, const char *);
  CUresult (*cuLaunchKernel)(CUfunction, unsigned, unsigned, unsigned,
                             unsigned, unsigned, unsigned, unsigned, CUstream,
                             void **, void **);
  CUresult (*cuFuncSetAttribute)(CUfunction, int, int);
  CUresult (*cuTensorMapEncodeTiled)(TensorMap *, int, uint32_t, void *,
                                     const uint64_t *, const uint64_t *,
                                     const uint32_t *, const uint32_t *, int,
                                     int, int, int);
  CUresult (*cuMemAllocAsync)(CUdeviceptr *, size_t, CUstream);
  CUresult (*cuMemcpyHtoDAsync)(CUdeviceptr, const void *, size_t, CUstream);
  CUresult (*cuMemFreeAsync)(CUdeviceptr, CUstream);
  CUresult (*cuMemAlloc)(CUdeviceptr *, size_t);
  CUresult (*cuMemFree)(CUdeviceptr);
  CUresult (*cuMemcpyHtoD)(CUdeviceptr, const void *, size_t);
  CUresult (*cuMemcpyDtoH)(void *, CUdeviceptr, size_t);
  CUresult (*cuGetErrorString)(CUresult, const char **);
  std::string error; // why the driver is unusable, if it is
};

/// Opens the CUDA driver, or the simulator at `simulator` exporting its
/// API, and initializes it.
std::unique_ptr<Driver> openDriver(const std::string &simulator) {
  auto d = std::make_unique<Driver>();
  const char *name = simulator.empty() ? "libcuda.so.1" : simulator.c_str();
  void *lib = dlopen(name, RTLD_NOW | RTLD_LOCAL);
  if (!lib) {
    const char *why = dlerror();
    d->error = simulator.empty()
                   ? std::string("no CUDA driver (libcuda.so.1: ") +
                         (why ? why : "not found") +
                         "); GPU kernels need an NVIDIA GPU and its driver"
                   : "cannot open the GPU simulator '" + simulator +
                         "' (attn::useGpuSimulator or ATTN_GPU_SIMULATOR): " +
                         (why ? why : "not found");
    return d;
  }
  std::string what = simulator.empty() ? std::string("the CUDA driver")
                                       : "the GPU simulator '" + simulator +
                                             "'";
  bool missing = false;
  auto sym = [&](auto &fn, const char *symbol) {
    fn = reinterpret_cast<std::remove_reference_t<decltype(fn)>>(
        dlsym(lib, symbol));
    if (!fn && d->error.empty())
      d->error = what + " lacks " + symbol;
    missing |= !fn;
  };
  sym(d->cuInit, "cuInit");
  sym(d->cuDeviceGet, "cuDeviceGet");
  sym(d->cuDeviceGetAttribute, "cuDeviceGetAttribute");
  sym(d->cuDevicePrimaryCtxRetain, "cuDevicePrimaryCtxRetain");
  sym(d->cuCtxGetCurrent, "cuCtxGetCurrent");
  sym(d->cuCtxSetCurrent, "cuCtxSetCurrent");
  sym(d->cuCtxGetDevice, "cuCtxGetDevice");
  sym(d->cuCtxSynchronize, "cuCtxSynchronize");
  sym(d->cuModuleLoadData, "cuModuleLoadData");
  sym(d->cuModuleGetFunction, "cuModuleGetFunction");
  sym(d->cuLaunchKernel, "cuLaunchKernel");
  sym(d->cuFuncSetAttribute, "cuFuncSetAttribute");
  sym(d->cuTensorMapEncodeTiled, "cuTensorMapEncodeTiled");
  sym(d->cuMemAllocAsync, "cuMemAllocAsync");
  sym(d->cuMemcpyHtoDAsync, "cuMemcpyHtoDAsync_v2");
  sym(d->cuMemFreeAsync, "cuMemFreeAsync");
  sym(d->cuMemAlloc, "cuMemAlloc_v2");
  sym(d->cuMemFree, "cuMemFree_v2");
  sym(d->cuMemcpyHtoD, "cuMemcpyHtoD_v2");
  sym(d->cuMemcpyDtoH, "cuMemcpyDtoH_v2");
  sym(d->cuGetErrorString, "cuGetErrorString");
  if (missing)
    return d;
  if (CUresult r = d->cuInit(0); r != 0)
    d->error = "cuInit of " + what + " failed (CUDA error " +
               std::to_string(r) + "): no usable GPU";
  return d;
}

/// The driver launches use now: libcuda.so.1, or the simulator this
/// process chose. Each is opened once and stays loaded.
const Driver &driver() {
  static std::mutex mutex;
  static std::map<std::string, std::unique_ptr<Driver>> opened;
  std::string simulator = gpuSimulatorLibrary(GpuVendor::Cuda);
  std::lock_guard<std::mutex> lock(mutex);
  std::unique_ptr<Driver> &d = opened[simulator];
  if (!d)
    d = openDriver(simulator);
  return *d;
}

std::string message(const Driver &d, CUresult r) {
  const char *text = nullptr;
  if (d.cuGetErrorString)
    d.cuGetErrorString(r, &text);
  return "CUDA error " + std::to_string(r) + (text ? std::string(": ") + text
                                                   : std::string());
}

void check(const Driver &d, CUresult r, const std::string &what) {
  if (r != 0)
    throw Error("", what + " failed: " + message(d, r));
}

} // namespace

namespace {

/// The tensor map of a [B, H, S, D] tensor read in boxes of `rows` rows
/// (times `heads`) x W bytes, swizzled W bytes wide as the kernel's shared
/// tiles are (W = detail::tmaSwizzleBytes of a row), zero fill past the
/// edges.
TensorMap encodeTensorMap(const Driver &d, const char *name,
                          const TensorRef &t, int64_t rows,
                          int64_t heads = 1) {
  TensorMap map{};
  // Innermost first; empty dims never get read but must be encodable.
  uint64_t dims[4], strides[3];
  for (int i = 0; i < 4; ++i)
    dims[i] = static_cast<uint64_t>(std::max<int64_t>(t.shape[3 - i], 1));
  int64_t size = dtypeSize(t.dtype);
  std::vector<int64_t> elementStride = t.effectiveStrides();
  uint64_t contiguous = dims[0] * size;
  for (int i = 0; i < 3; ++i) {
    // A dimension of extent 1 is never stepped: give it a valid stride.
    strides[i] = t.shape[2 - i] > 1
                     ? static_cast<uint64_t>(elementStride[2 - i] * size)
                     : contiguous;
    contiguous = strides[i] * dims[i + 1];
  }
  int64_t swizzleBytes = detail::tmaSwizzleBytes(t.shape[3] * size);
  uint32_t box[4] = {static_cast<uint32_t>(swizzleBytes / size),
                     static_cast<uint32_t>(rows),
                     static_cast<uint32_t>(heads), 1};
  int swizzle = swizzleBytes == 128  ? kTensorMapSwizzle128B
                : swizzleBytes == 64 ? kTensorMapSwizzle64B
                                     : kTensorMapSwizzle32B;
  uint32_t elementStrides[4] = {1, 1, 1, 1};
  if (CUresult r = d.cuTensorMapEncodeTiled(
          &map, kTensorMapUint16, 4, const_cast<void *>(t.data), dims,
          strides, box, elementStrides, /*interleave=*/0, swizzle,
          kTensorMapL2Promotion128B, /*oobFill=*/0);
      r != 0)
    throw Error(name, "cannot describe it to TMA (strides must be "
                      "multiples of 16 bytes): " + message(d, r));
  return map;
}


/// Loaded into the current CUDA context on first use, once per driver
/// (the GPU's, or a simulator's).
class CudaFunction final : public GpuFunction {
public:
  explicit CudaFunction(GpuCode code) : GpuFunction(std::move(code)) {}
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
  /// The kernels of one driver's module.
  struct Loaded {
    CUfunction function = nullptr, merge = nullptr;
    CUfunction selectPool = nullptr, selectKernel = nullptr;
    CUfunction backwardKv = nullptr, backwardQ = nullptr;
    int64_t smCount = 0;
    std::string error;
  };
  const Loaded &ensureLoaded(const Driver &d) const;
  void load(const Driver &d, Loaded &l) const;
  mutable std::mutex loadMutex;
  mutable std::map<const Driver *, Loaded> loads;
};

const CudaFunction::Loaded &
CudaFunction::ensureLoaded(const Driver &d) const {
  if (!d.error.empty())
    throw Error("target", "cannot run " + code.chip + " kernel '" +
                              code.entry + "': " + d.error);
  // Kernels run in the caller's current context, else device 0's primary
  // context (what the CUDA runtime and PyTorch use).
  CUcontext ctx = nullptr;
  check(d, d.cuCtxGetCurrent(&ctx), "cuCtxGetCurrent");
  if (!ctx) {
    CUdevice dev = 0;
    check(d, d.cuDeviceGet(&dev, 0), "cuDeviceGet");
    check(d, d.cuDevicePrimaryCtxRetain(&ctx, dev), "cuDevicePrimaryCtxRetain");
    check(d, d.cuCtxSetCurrent(ctx), "cuCtxSetCurrent");
  }
  std::lock_guard<std::mutex> lock(loadMutex);
  auto [it, first] = loads.try_emplace(&d);
  if (first)
    load(d, it->second);
  if (!it->second.error.empty())
    throw Error("target", it->second.error);
  return it->second;
}

void CudaFunction::load(const Driver &d, Loaded &l) const {
  CUdevice dev = 0;
  int major = 0, minor = 0, sms = 0;
  if (d.cuCtxGetDevice(&dev) != 0 ||
      d.cuDeviceGetAttribute(&major, kAttrComputeMajor, dev) != 0 ||
      d.cuDeviceGetAttribute(&minor, kAttrComputeMinor, dev) != 0 ||
      d.cuDeviceGetAttribute(&sms, kAttrMultiprocessors, dev) != 0) {
    l.error = "cannot query the GPU";
    return;
  }
  l.smCount = sms;
  // A cubin runs on its own architecture family only ("sm_80" on 8.x,
  // "sm_90a" on 9.0); elsewhere the driver compiles the PTX. A driver that
  // takes no cubin for this GPU after all (no binary for it, or an image
  // it cannot read, as the simulator, which reads PTX only) gets the PTX.
  int cubinMajor = code.chip.size() > 3 ? code.chip[3] - '0' : -1;
  bool exact = code.chip.back() == 'a'
                   ? std::to_string(major) + std::to_string(minor) ==
                         code.chip.substr(3, 2)
                   : major == cubinMajor;
  std::string gpu = "sm_" + std::to_string(major) + std::to_string(minor);
  CUmodule module = nullptr;
  CUresult loaded = kNoBinaryForGpu;
  if (exact && !code.binary.empty())
    loaded = d.cuModuleLoadData(&module, code.binary.c_str());
  if ((loaded == kNoBinaryForGpu || loaded == kInvalidImage) &&
      !code.ptx.empty())
    loaded = d.cuModuleLoadData(&module, code.ptx.c_str());
  if (loaded != 0) {
    l.error = "loading " + code.entry + " for " + gpu +
              " failed: " + message(d, loaded);
    return;
  }
  for (auto [fn, name] : {std::pair{&l.function, &code.entry},
                          std::pair{&l.merge, &code.mergeEntry},
                          std::pair{&l.selectPool, &code.selectPoolEntry},
                          std::pair{&l.selectKernel, &code.selectEntry},
                          std::pair{&l.backwardKv, &code.backwardKvEntry},
                          std::pair{&l.backwardQ, &code.backwardQEntry}})
    if (CUresult r = name->empty()
                         ? 0
                         : d.cuModuleGetFunction(fn, module, name->c_str());
        r != 0) {
      l.error = "kernel " + *name + " not found: " + message(d, r);
      return;
    }
  // Tiles live in dynamic shared memory; past 48 KiB the kernel must
  // opt in (sm_80: up to 163 KiB, sm_90: 227 KiB).
  if (code.sharedBytes > kDefaultDynamicShared)
    if (CUresult r = d.cuFuncSetAttribute(l.function, kFuncAttrMaxDynamicShared,
                                          static_cast<int>(code.sharedBytes));
        r != 0)
      l.error = code.entry + " needs " + std::to_string(code.sharedBytes) +
                " bytes of shared memory: " + message(d, r);
}

int64_t CudaFunction::multiprocessors() const {
  return ensureLoaded(driver()).smCount;
}

void *CudaFunction::allocate(size_t bytes, void *stream) const {
  const Driver &d = driver();
  ensureLoaded(d);
  CUdeviceptr memory = 0;
  check(d, d.cuMemAllocAsync(&memory, bytes, stream),
        "allocating " + std::to_string(bytes) + " bytes of split-KV scratch");
  return reinterpret_cast<void *>(memory);
}

void CudaFunction::release(void *memory, void *stream) const {
  driver().cuMemFreeAsync(reinterpret_cast<CUdeviceptr>(memory), stream);
}

void *CudaFunction::allocateDevice(size_t bytes) const {
  const Driver &d = driver();
  ensureLoaded(d);
  CUdeviceptr memory = 0;
  check(d, d.cuMemAlloc(&memory, bytes),
        "allocating " + std::to_string(bytes) + " bytes of device memory");
  return reinterpret_cast<void *>(memory);
}

void CudaFunction::freeDevice(void *memory) const {
  driver().cuMemFree(reinterpret_cast<CUdeviceptr>(memory));
}

void CudaFunction::copyToDevice(void *device, const void *host,
                                size_t bytes) const {
  const Driver &d = driver();
  check(d, d.cuMemcpyHtoD(reinterpret_cast<CUdeviceptr>(device), host, bytes),
        "copying " + std::to_string(bytes) + " bytes to the device");
}

void CudaFunction::copyToHost(void *host, const void *device,
                              size_t bytes) const {
  const Driver &d = driver();
  check(d,
        d.cuMemcpyDtoH(host, reinterpret_cast<CUdeviceptr>(device), bytes),
        "copying " + std::to_string(bytes) + " bytes from the device");
}

void CudaFunction::synchronize() const {
  const Driver &d = driver();
  check(d, d.cuCtxSynchronize(), "running " + code.entry);
}

void CudaFunction::launchSplit(int64_t batch, int64_t heads, int64_t seqQ,
                               int64_t valueHeadDim, int64_t parts,
                               int64_t pack,
                               std::vector<void *> params,
                               std::vector<void *> mergeParams,
                               std::array<const TensorRef *, 3> qkv,
                               void *stream) const {
  const Driver &d = driver();
  const Loaded &l = ensureLoaded(d);
  if (batch == 0 || heads == 0 || seqQ == 0)
    return;
  int64_t rowsPerHead = code.rowsPerBlock / pack;
  int64_t qTiles = (seqQ + rowsPerHead - 1) / rowsPerHead;
  // A cluster's CTAs take adjacent query tiles of one split part
  // (GpuKernel.cpp's setUp): whole clusters, the last one's extra tiles
  // past Sq computing nothing they store.
  int64_t cluster = std::max<int64_t>(code.clusterCtas, 1);
  qTiles = (qTiles + cluster - 1) / cluster * cluster;
  // TMA kernels take q, k and v's tensor maps by value, as grid-constant
  // parameters: cuLaunchKernel copies their 128 bytes with the others, so a
  // launch needs no device allocation or copy (and stays capturable).
  TensorMap maps[3];
  if (code.tensorMaps) {
    maps[0] = encodeTensorMap(d, "q", *qkv[0], rowsPerHead, pack);
    maps[1] = encodeTensorMap(d, "k", *qkv[1], code.blockKV);
    maps[2] = encodeTensorMap(d, "v", *qkv[2], code.blockKV);
    for (TensorMap &map : maps)
      params.push_back(&map);
  }
  check(d,
        d.cuLaunchKernel(l.function, static_cast<unsigned>(qTiles * parts),
                         static_cast<unsigned>(heads / pack),
                         static_cast<unsigned>(batch),
                         static_cast<unsigned>(code.blockThreads), 1, 1,
                         static_cast<unsigned>(code.sharedBytes), stream,
                         params.data(), nullptr),
        "launching " + code.entry);
  if (parts <= 1)
    return;
  int64_t mergeBlocks =
      (seqQ * valueHeadDim + kMergeThreads - 1) / kMergeThreads;
  check(d,
        d.cuLaunchKernel(l.merge, static_cast<unsigned>(mergeBlocks),
                         static_cast<unsigned>(heads),
                         static_cast<unsigned>(batch), kMergeThreads, 1, 1, 0,
                         stream, mergeParams.data(), nullptr),
        "launching " + code.mergeEntry);
}

void CudaFunction::launchPrePass(int which, std::array<int64_t, 3> grid,
                              void **params, void *stream) const {
  const Driver &d = driver();
  const Loaded &l = ensureLoaded(d);
  void *fn = which ? l.selectKernel : l.selectPool;
  const std::string &name = which ? code.selectEntry : code.selectPoolEntry;
  if (!fn)
    throw Error("target", code.entry + " has no select pre-pass");
  check(d,
        d.cuLaunchKernel(fn, static_cast<unsigned>(grid[0]),
                  static_cast<unsigned>(grid[1]),
                  static_cast<unsigned>(grid[2]), kSelectThreads, 1, 1, 0,
                  stream, params, nullptr),
        "launching " + name);
}

void CudaFunction::launchBackward(int phase, std::array<int64_t, 3> grid,
                                  void **params, void *stream) const {
  const Driver &d = driver();
  const Loaded &l = ensureLoaded(d);
  void *fn = phase ? l.backwardQ : l.backwardKv;
  const std::string &name = phase ? code.backwardQEntry : code.backwardKvEntry;
  if (!fn)
    throw Error("target", code.entry + " was compiled without its backward");
  if (grid[0] * grid[1] * grid[2] == 0)
    return;
  int64_t threads = phase ? code.backwardQThreads : code.backwardKvThreads;
  check(d,
        d.cuLaunchKernel(fn, static_cast<unsigned>(grid[0]),
                         static_cast<unsigned>(grid[1]),
                         static_cast<unsigned>(grid[2]),
                         static_cast<unsigned>(threads), 1, 1, 0, stream,
                         params, nullptr),
        "launching " + name);
}

} // namespace

std::shared_ptr<GpuFunction> makeCudaFunction(GpuCode code) {
  return std::make_shared<CudaFunction>(std::move(code));
}

} // namespace attn::detail
