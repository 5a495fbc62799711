//===- CudaDriver.cpp - the CUDA driver API over the PTX simulator --------===//
//
// The entry points attnrt (and any driver-API program) calls, with the
// driver's names and C signatures: a device of compute capability 9.0 with
// 132 multiprocessors whose memory is host memory the simulator tracks.
// Modules are PTX text; launches run to completion before returning, so
// streams and their ordering hold trivially.
//
//===----------------------------------------------------------------------===//
#include "lib/Sim/CudaDriver.h"
#include "lib/Sim/Machine.h"
#include "lib/Sim/Ptx.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>

using namespace attn::sim;

namespace {

// CUresult values (cuda.h).
constexpr CUresult kSuccess = 0;
constexpr CUresult kInvalidValue = 1;
constexpr CUresult kOutOfMemory = 2;
constexpr CUresult kNotInitialized = 3;
constexpr CUresult kNoBinaryForGpu = 209;
constexpr CUresult kInvalidPtx = 218;
constexpr CUresult kNotFound = 500;
constexpr CUresult kInvalidHandle = 400;

struct LoadedModule {
  std::unique_ptr<ptx::Module> module;
};
struct LoadedFunction {
  const LoadedModule *owner;
  const ptx::Function *kernel;
  int maxDynamicShared = 48 * 1024;
};

struct State {
  std::mutex mutex;
  Memory memory;
  bool initialized = false;
  std::string lastReport;
  uint64_t instructions = 0;
  double launchSeconds = 0;
  uint64_t launches = 0;
  int context = 1; // the one context's handle is its address
};

State &state() {
  static State *s = new State; // never destroyed: kernels may run at exit
  return *s;
}

CUresult report(CUresult code, const std::string &text) {
  state().lastReport = text;
  return code;
}

/// One JSON object per launch (ATTNSIM_PROFILE=FILE): the counters the
/// performance model reads (bench/gpu/model.py). cta_shared_bytes is the
/// CTA's allocation; shared_bytes the bytes its loads and stores moved.
void appendProfile(const char *path, const ptx::Function &k,
                   const LaunchConfig &c, const LaunchStats &s) {
  FILE *out = fopen(path, "a");
  if (!out)
    return;
  uint32_t cluster[3];
  for (int i = 0; i < 3; ++i)
    cluster[i] = c.cluster[0] ? c.cluster[i]
                 : k.reqCluster[0] ? k.reqCluster[i] : 1;
  fprintf(out,
          "{\"kernel\": \"%s\", \"grid\": [%u, %u, %u], \"block\": [%u, "
          "%u, %u], \"cluster\": [%u, %u, %u], \"cta_shared_bytes\": %u, "
          "\"ctas\": %llu, \"thread_instructions\": %llu, \"by_class\": {",
          k.name.c_str(), c.grid[0], c.grid[1], c.grid[2], c.block[0],
          c.block[1], c.block[2], cluster[0], cluster[1], cluster[2],
          k.dynamicSharedOffset + c.dynamicShared,
          static_cast<unsigned long long>(s.ctas),
          static_cast<unsigned long long>(s.instructions));
  for (int i = 0; i < ptx::kInstrClasses; ++i)
    fprintf(out, "%s\"%s\": %llu", i ? ", " : "",
            ptx::className(static_cast<ptx::InstrClass>(i)),
            static_cast<unsigned long long>(s.byClass[i]));
  fprintf(out, "}, \"warp_instructions\": {");
  for (int i = 0; i < ptx::kInstrClasses; ++i)
    fprintf(out, "%s\"%s\": %llu", i ? ", " : "",
            ptx::className(static_cast<ptx::InstrClass>(i)),
            static_cast<unsigned long long>(s.warpByClass[i]));
  fprintf(out,
          "}, \"tensor_flops\": %llu, \"wgmma_flops\": %llu, "
          "\"tensor_shared_bytes\": %llu, "
          "\"shared_bytes\": %llu, \"global_read_bytes\": %llu, "
          "\"global_write_bytes\": %llu, \"tma_requests\": %llu, "
          "\"tma_bytes\": %llu, \"tma_shared_bytes\": %llu, "
          "\"cp_async_requests\": %llu, "
          "\"cp_async_bytes\": %llu, \"shared_wavefronts\": %llu, "
          "\"shared_ideal_wavefronts\": %llu, "
          "\"shared_wavefront_bytes\": %llu}\n",
          static_cast<unsigned long long>(s.tensorFlops),
          static_cast<unsigned long long>(s.wgmmaFlops),
          static_cast<unsigned long long>(s.tensorSharedBytes),
          static_cast<unsigned long long>(s.sharedBytes),
          static_cast<unsigned long long>(s.globalReadBytes),
          static_cast<unsigned long long>(s.globalWriteBytes),
          static_cast<unsigned long long>(s.tmaRequests),
          static_cast<unsigned long long>(s.tmaBytes),
          static_cast<unsigned long long>(s.tmaSharedBytes),
          static_cast<unsigned long long>(s.cpAsyncRequests),
          static_cast<unsigned long long>(s.cpAsyncBytes),
          static_cast<unsigned long long>(s.sharedWavefronts),
          static_cast<unsigned long long>(s.sharedIdealWavefronts),
          static_cast<unsigned long long>(s.sharedWavefrontBytes));
  fclose(out);
}

} // namespace

extern "C" {

CUresult cuInit(unsigned) {
  state().initialized = true;
  return kSuccess;
}

CUresult cuDeviceGet(CUdevice *device, int ordinal) {
  if (!device || ordinal != 0)
    return kInvalidValue;
  *device = 0;
  return kSuccess;
}

CUresult cuDeviceGetAttribute(int *value, int attribute, CUdevice) {
  if (!value)
    return kInvalidValue;
  switch (attribute) {
  case 75: *value = 9; break;   // compute capability major
  case 76: *value = 0; break;   // minor
  case 16: *value = 132; break; // multiprocessors (an H100 SXM)
  case 1: *value = 1024; break; // max threads per block
  case 8: *value = 48 * 1024; break;   // shared memory per block
  case 97: *value = 227 * 1024; break; // opt-in shared memory per block
  case 10: *value = 32; break;  // warp size
  default: *value = 0; break;
  }
  return kSuccess;
}

CUresult cuDevicePrimaryCtxRetain(CUcontext *ctx, CUdevice) {
  if (!ctx)
    return kInvalidValue;
  *ctx = &state().context;
  return kSuccess;
}

CUresult cuCtxGetCurrent(CUcontext *ctx) {
  if (!ctx)
    return kInvalidValue;
  *ctx = &state().context;
  return kSuccess;
}

CUresult cuCtxSetCurrent(CUcontext) { return kSuccess; }

CUresult cuCtxGetDevice(CUdevice *device) {
  if (!device)
    return kInvalidValue;
  *device = 0;
  return kSuccess;
}

CUresult cuCtxSynchronize(void) { return kSuccess; }
CUresult cuStreamSynchronize(CUstream) { return kSuccess; }

CUresult cuModuleLoadData(CUmodule *module, const void *image) {
  if (!module || !image)
    return kInvalidValue;
  const char *text = static_cast<const char *>(image);
  // A cubin (ELF) or fatbinary: the simulator runs PTX only.
  if (memcmp(text, "\x7f" "ELF", 4) == 0 ||
      *static_cast<const uint32_t *>(image) == 0xBA55ED50u)
    return report(kNoBinaryForGpu,
                  "the simulator runs PTX, not a cubin: load the PTX");
  try {
    auto loaded = std::make_unique<LoadedModule>();
    loaded->module = ptx::parse(text);
    const std::string &target = loaded->module->target;
    if (target.rfind("sm_", 0) == 0 && std::atoi(target.c_str() + 3) > 90)
      return report(kNoBinaryForGpu, "PTX for " + target +
                                         " does not run on the simulated "
                                         "sm_90a");
    std::lock_guard<std::mutex> lock(state().mutex);
    for (const ptx::GlobalVar &g : loaded->module->globals)
      state().memory.add(reinterpret_cast<void *>(
                             loaded->module->globalAddress.at(g.name)),
                         g.init.size(), g.name);
    *module = loaded.release();
    return kSuccess;
  } catch (const ptx::ParseError &e) {
    return report(kInvalidPtx, std::string("PTX not modelled: ") + e.what());
  }
}

CUresult cuModuleUnload(CUmodule module) {
  auto *m = static_cast<LoadedModule *>(module);
  if (!m)
    return kInvalidHandle;
  for (const ptx::GlobalVar &g : m->module->globals)
    state().memory.remove(
        reinterpret_cast<void *>(m->module->globalAddress.at(g.name)));
  delete m;
  return kSuccess;
}

CUresult cuModuleGetFunction(CUfunction *function, CUmodule module,
                             const char *name) {
  auto *m = static_cast<LoadedModule *>(module);
  if (!function || !m || !name)
    return kInvalidValue;
  const ptx::Function *f = m->module->find(name);
  if (!f || !f->isKernel)
    return report(kNotFound, std::string("no kernel named ") + name);
  *function = new LoadedFunction{m, f};
  return kSuccess;
}

CUresult cuFuncSetAttribute(CUfunction function, int attribute, int value) {
  auto *f = static_cast<LoadedFunction *>(function);
  if (!f)
    return kInvalidHandle;
  if (attribute == 8) { // CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES
    if (value < 0 ||
        uint64_t(value) + f->kernel->dynamicSharedOffset > 227 * 1024)
      return report(kInvalidValue, "more shared memory than sm_90 has");
    f->maxDynamicShared = value;
  }
  return kSuccess;
}

namespace {

/// cuLaunchKernel and cuLaunchKernelEx; cluster {0, 0, 0}: the kernel's
/// .reqnctapercluster, else none.
CUresult launchKernel(CUfunction function, unsigned gridX, unsigned gridY,
                      unsigned gridZ, unsigned blockX, unsigned blockY,
                      unsigned blockZ, unsigned sharedBytes, void **params,
                      void **extra, const unsigned cluster[3]) {
  auto *f = static_cast<LoadedFunction *>(function);
  if (!f)
    return kInvalidHandle;
  if (extra)
    return report(kInvalidValue, "the simulator takes kernel parameters "
                                 "through kernelParams, not extra");
  if (!gridX || !gridY || !gridZ || !blockX || !blockY || !blockZ)
    return report(kInvalidValue, "empty grid or block");
  if (int(sharedBytes) > f->maxDynamicShared)
    return report(kInvalidValue,
                  std::to_string(sharedBytes) +
                      " bytes of dynamic shared memory without "
                      "cuFuncSetAttribute (the default limit is 48 KiB)");
  const ptx::Function &k = *f->kernel;
  std::vector<uint8_t> paramSpace(k.paramBytes + 16, 0);
  for (size_t i = 0; i < k.params.size(); ++i) {
    if (!params || !params[i])
      return report(kInvalidValue, "missing kernel parameter " +
                                       std::to_string(i));
    memcpy(paramSpace.data() + k.params[i].offset, params[i],
           k.params[i].size);
  }
  LaunchConfig config;
  config.grid[0] = gridX;
  config.grid[1] = gridY;
  config.grid[2] = gridZ;
  config.block[0] = blockX;
  config.block[1] = blockY;
  config.block[2] = blockZ;
  config.dynamicShared = sharedBytes;
  for (int i = 0; i < 3; ++i)
    config.cluster[i] = cluster[i];
  config.params = paramSpace.data();
  const char *raceCheck = getenv("ATTNSIM_RACECHECK");
  config.raceCheck = raceCheck && *raceCheck && *raceCheck != '0';
  // ATTNSIM_SCHEDULE=random[:SEED]: random interleavings (Machine.h).
  if (const char *schedule = getenv("ATTNSIM_SCHEDULE"))
    if (strncmp(schedule, "random", 6) == 0)
      config.scheduleSeed =
          schedule[6] == ':' ? std::max(1ull, strtoull(schedule + 7, nullptr, 10))
                             : 1;
  try {
    auto start = std::chrono::steady_clock::now();
    LaunchStats stats =
        launch(*f->owner->module, k, config, state().memory);
    state().instructions += stats.instructions;
    if (const char *profile = getenv("ATTNSIM_PROFILE"))
      appendProfile(profile, k, config, stats);
    state().launchSeconds += std::chrono::duration<double>(
                                 std::chrono::steady_clock::now() - start)
                                 .count();
    if (state().launches++ == 0 && getenv("ATTNSIM_STATS"))
      atexit([] {
        fprintf(stderr,
                "attnsim: %llu launches, %llu thread-instructions in %.3f s "
                "(%.1f M/s)\n",
                static_cast<unsigned long long>(state().launches),
                static_cast<unsigned long long>(state().instructions),
                state().launchSeconds,
                state().instructions / std::max(state().launchSeconds, 1e-9) /
                    1e6);
      });
  } catch (const Fault &fault) {
    return report(fault.code, fault.what());
  }
  return kSuccess;
}

} // namespace

CUresult cuLaunchKernel(CUfunction function, unsigned gridX, unsigned gridY,
                        unsigned gridZ, unsigned blockX, unsigned blockY,
                        unsigned blockZ, unsigned sharedBytes, CUstream,
                        void **params, void **extra) {
  // The kernel's .reqnctapercluster, if any, shapes its clusters.
  const unsigned none[3] = {0, 0, 0};
  return launchKernel(function, gridX, gridY, gridZ, blockX, blockY, blockZ,
                      sharedBytes, params, extra, none);
}

CUresult cuLaunchKernelEx(const CUlaunchConfig *config, CUfunction function,
                          void **params, void **extra) {
  if (!config || (config->numAttrs && !config->attrs))
    return kInvalidValue;
  unsigned cluster[3] = {0, 0, 0};
  for (unsigned i = 0; i < config->numAttrs; ++i) {
    const CUlaunchAttribute &a = config->attrs[i];
    if (a.id == CU_LAUNCH_ATTRIBUTE_CLUSTER_DIMENSION) {
      cluster[0] = a.value.clusterDim.x;
      cluster[1] = a.value.clusterDim.y;
      cluster[2] = a.value.clusterDim.z;
      if (!cluster[0] || !cluster[1] || !cluster[2])
        return report(kInvalidClusterSize, "cluster dimension attribute "
                                           "with an empty dimension");
    }
    // Other attributes are scheduling hints (priorities, programmatic
    // dependent launch, ...): no result of a launch that runs to
    // completion depends on them.
  }
  return launchKernel(function, config->gridDimX, config->gridDimY,
                      config->gridDimZ, config->blockDimX, config->blockDimY,
                      config->blockDimZ, config->sharedMemBytes, params, extra,
                      cluster);
}

CUresult cuMemAlloc_v2(CUdeviceptr *pointer, size_t bytes) {
  if (!pointer)
    return kInvalidValue;
  try {
    *pointer = reinterpret_cast<CUdeviceptr>(state().memory.allocate(bytes));
  } catch (const std::bad_alloc &) {
    return kOutOfMemory;
  }
  return kSuccess;
}

CUresult cuMemFree_v2(CUdeviceptr pointer) {
  if (!pointer)
    return kSuccess;
  return state().memory.release(reinterpret_cast<void *>(pointer))
             ? kSuccess
             : report(kInvalidValue, "freeing memory the device did not "
                                     "allocate");
}

CUresult cuMemAllocAsync(CUdeviceptr *pointer, size_t bytes, CUstream) {
  return cuMemAlloc_v2(pointer, bytes);
}

CUresult cuMemFreeAsync(CUdeviceptr pointer, CUstream) {
  return cuMemFree_v2(pointer);
}

static CUresult checkDevice(CUdeviceptr p, size_t bytes, const char *what) {
  if (bytes && !state().memory.contains(p, bytes))
    return report(kInvalidValue, std::string(what) + " of " +
                                     std::to_string(bytes) +
                                     " bytes outside device memory at " +
                                     state().memory.describe(p));
  return kSuccess;
}

CUresult cuMemcpyHtoD_v2(CUdeviceptr dst, const void *src, size_t bytes) {
  if (CUresult r = checkDevice(dst, bytes, "cuMemcpyHtoD"))
    return r;
  if (bytes)
    memcpy(reinterpret_cast<void *>(dst), src, bytes);
  return kSuccess;
}

CUresult cuMemcpyDtoH_v2(void *dst, CUdeviceptr src, size_t bytes) {
  if (CUresult r = checkDevice(src, bytes, "cuMemcpyDtoH"))
    return r;
  if (bytes)
    memcpy(dst, reinterpret_cast<const void *>(src), bytes);
  return kSuccess;
}

CUresult cuMemcpyHtoDAsync_v2(CUdeviceptr dst, const void *src, size_t bytes,
                              CUstream) {
  return cuMemcpyHtoD_v2(dst, src, bytes);
}

CUresult cuMemcpyDtoHAsync_v2(void *dst, CUdeviceptr src, size_t bytes,
                              CUstream) {
  return cuMemcpyDtoH_v2(dst, src, bytes);
}

CUresult cuMemsetD8_v2(CUdeviceptr dst, unsigned char value, size_t bytes) {
  if (CUresult r = checkDevice(dst, bytes, "cuMemsetD8"))
    return r;
  memset(reinterpret_cast<void *>(dst), value, bytes);
  return kSuccess;
}

/// cuTensorMapEncodeTiled with the driver's checks (CUDA driver API
/// reference, "Tensor Map Object Management"): address 16-byte aligned,
/// strides multiples of 16 bytes, box sizes 1..256 with the inner box a
/// multiple of 16 bytes, swizzled inner boxes no wider than the swizzle.
CUresult cuTensorMapEncodeTiled(void *tensorMap, int dataType, uint32_t rank,
                                void *globalAddress,
                                const uint64_t *globalDim,
                                const uint64_t *globalStrides,
                                const uint32_t *boxDim,
                                const uint32_t *elementStrides,
                                int interleave, int swizzle, int,
                                int oobFill) {
  // CUtensorMapDataType: UINT8, UINT16, UINT32, INT32, UINT64, INT64,
  // FLOAT16, FLOAT32, FLOAT64, BFLOAT16, FLOAT32_FTZ, TFLOAT32,
  // TFLOAT32_FTZ.
  static const uint8_t sizes[] = {1, 2, 4, 4, 8, 8, 2, 4, 8, 2, 4, 4, 4};
  if (!tensorMap || rank < 1 || rank > 5 || dataType < 0 || dataType > 12)
    return report(kInvalidValue, "tensor map: bad rank or data type");
  auto address = reinterpret_cast<uint64_t>(globalAddress);
  if (address % 16)
    return report(kInvalidValue, "tensor map: global address not 16-byte "
                                 "aligned");
  if (interleave != 0)
    return report(kInvalidValue, "tensor map: interleaved layouts are not "
                                 "modelled");
  if (swizzle < 0 || swizzle > 3)
    return report(kInvalidValue, "tensor map: bad swizzle");
  TensorMap map{};
  map.magic = kTensorMapMagic;
  map.dataType = static_cast<uint8_t>(dataType);
  map.rank = static_cast<uint8_t>(rank);
  map.elementBytes = sizes[dataType];
  map.swizzle = static_cast<uint8_t>(swizzle == 0 ? 0 : 16 << swizzle);
  map.oobFillNan = oobFill != 0;
  map.address = address;
  for (uint32_t i = 0; i < rank; ++i) {
    if (globalDim[i] == 0 || globalDim[i] > (1ull << 32))
      return report(kInvalidValue, "tensor map: dimension " +
                                       std::to_string(i) + " out of range");
    map.dims[i] = static_cast<uint32_t>(globalDim[i]);
    if (boxDim[i] == 0 || boxDim[i] > 256)
      return report(kInvalidValue, "tensor map: box dimension " +
                                       std::to_string(i) + " not in 1..256");
    map.boxMinus1[i] = static_cast<uint8_t>(boxDim[i] - 1);
    uint32_t es = elementStrides ? elementStrides[i] : 1;
    if (es == 0 || es > 8)
      return report(kInvalidValue, "tensor map: element stride not in 1..8");
    map.elementStrides[i] = static_cast<uint8_t>(es);
  }
  for (uint32_t i = 0; i + 1 < rank; ++i) {
    if (globalStrides[i] % 16 || globalStrides[i] >= (1ull << 40))
      return report(kInvalidValue, "tensor map: stride " + std::to_string(i) +
                                       " not a multiple of 16 bytes below "
                                       "2^40");
    map.strides[i] = globalStrides[i];
  }
  uint32_t innerBytes = boxDim[0] * map.elementBytes;
  if (innerBytes % 16)
    return report(kInvalidValue, "tensor map: inner box dimension is not a "
                                 "multiple of 16 bytes");
  if (map.swizzle && innerBytes > map.swizzle)
    return report(kInvalidValue, "tensor map: inner box dimension wider than "
                                 "the swizzle");
  memset(tensorMap, 0, 128);
  memcpy(tensorMap, &map, sizeof(map));
  return kSuccess;
}

CUresult cuGetErrorString(CUresult error, const char **text) {
  if (!text)
    return kInvalidValue;
  static thread_local std::string message;
  switch (error) {
  case kSuccess: *text = "no error"; return kSuccess;
  case kNotInitialized: *text = "initialization error"; return kSuccess;
  default: break;
  }
  message = state().lastReport.empty() ? "simulated GPU error"
                                       : state().lastReport;
  *text = message.c_str();
  return kSuccess;
}

uint64_t attnsimInstructionCount(void) { return state().instructions; }

} // extern "C"
