//===- HipRuntime.cpp - the HIP runtime API over the CDNA simulator -------===//
//
// The entry points attnrt (and any HIP module-API program) calls, with the
// runtime's names and C signatures: one device whose memory is host memory
// the simulator tracks, running code objects for gfx90a, gfx942 and gfx950.
// Launches run to completion before returning, so streams and their
// ordering hold trivially.
//
//===----------------------------------------------------------------------===//
#include "lib/Sim/HipRuntime.h"
#include "lib/Sim/AmdMachine.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

using namespace attn::sim;

namespace {

// hipError_t values (hip_runtime_api.h).
constexpr hipError_t kSuccess = 0;
constexpr hipError_t kInvalidValue = 1;
constexpr hipError_t kOutOfMemory = 2;
constexpr hipError_t kInvalidDevice = 101;
constexpr hipError_t kInvalidImage = 200;
constexpr hipError_t kInvalidHandle = 400;
constexpr hipError_t kNotFound = 500;
constexpr hipError_t kLaunchFailure = 719;

/// hipDeviceAttribute_t values attnrt asks for (runtime/src/Hip.cpp).
constexpr int kAttrMultiprocessorCount = 63;

struct LoadedModule {
  std::unique_ptr<amd::CodeObject> code;
};
struct LoadedFunction {
  const LoadedModule *owner;
  const amd::Kernel *kernel;
};

struct State {
  std::mutex mutex;
  Memory memory;
  std::string lastReport;
  hipError_t lastError = kSuccess;
  uint64_t instructions = 0, laneInstructions = 0;
  uint64_t byClass[amd::kInstClasses] = {};
  double launchSeconds = 0;
  uint64_t launches = 0;
  int streams = 0;
};

State &state() {
  static State *s = new State; // never destroyed: kernels may run at exit
  return *s;
}

hipError_t report(hipError_t code, const std::string &text) {
  state().lastReport = text;
  state().lastError = code;
  return code;
}

/// Runtime codes for the machine's faults (HIP has no 715 / 716).
hipError_t hipCode(int faultCode) {
  switch (faultCode) {
  case kIllegalAddress:
  case kLaunchTimeout:
    return faultCode;
  default:
    return kLaunchFailure;
  }
}

/// The kernarg segment: explicit arguments from kernelParams (or the
/// packed buffer of `extra`) at their metadata offsets, then the hidden
/// arguments the runtime provides (AMDGPUUsage "Code Object V5 Metadata").
hipError_t buildKernarg(const amd::Kernel &k, void **params, void **extra,
                        const amd::DispatchConfig &c,
                        std::vector<uint8_t> &out) {
  uint32_t bytes = k.kernargBytes;
  for (const amd::KernelArg &a : k.args)
    bytes = std::max(bytes, a.offset + a.size);
  out.assign(bytes + 16, 0);
  if (extra) {
    const void *buffer = nullptr;
    size_t size = 0;
    for (size_t i = 0; extra[i] != reinterpret_cast<void *>(3); i += 2) {
      if (extra[i] == reinterpret_cast<void *>(1))
        buffer = extra[i + 1];
      else if (extra[i] == reinterpret_cast<void *>(2))
        size = *static_cast<size_t *>(extra[i + 1]);
      else
        return report(kInvalidValue, "unknown hipModuleLaunchKernel extra "
                                     "option");
    }
    if (!buffer || size > out.size())
      return report(kInvalidValue, "bad HIP_LAUNCH_PARAM_BUFFER");
    std::memcpy(out.data(), buffer, size);
  }
  size_t explicitIndex = 0;
  auto put = [&](const amd::KernelArg &a, uint64_t v) {
    std::memcpy(out.data() + a.offset, &v, std::min<uint32_t>(a.size, 8));
  };
  for (const amd::KernelArg &a : k.args) {
    const std::string &kind = a.kind;
    if (kind.rfind("hidden_", 0) != 0) {
      if (extra)
        continue;
      if (!params || !params[explicitIndex])
        return report(kInvalidValue, "kernel " + k.name +
                                         ": missing kernel parameter " +
                                         std::to_string(explicitIndex));
      std::memcpy(out.data() + a.offset, params[explicitIndex], a.size);
      static const bool traceArgs = getenv("ATTNSIM_HIP_ARGS") != nullptr;
      if (traceArgs) { // each explicit argument as it is laid out
        uint64_t v = 0;
        std::memcpy(&v, params[explicitIndex], std::min<uint32_t>(a.size, 8));
        fprintf(stderr, "%s arg %zu @%u size %u %s = 0x%llx\n", k.name.c_str(),
                explicitIndex, a.offset, a.size, a.kind.c_str(),
                (unsigned long long)v);
      }
      ++explicitIndex;
      continue;
    }
    int d = kind.back() == 'x' ? 0 : kind.back() == 'y' ? 1 : 2;
    if (kind.rfind("hidden_block_count_", 0) == 0)
      put(a, c.grid[d]);
    else if (kind.rfind("hidden_group_size_", 0) == 0)
      put(a, c.block[d]);
    else if (kind.rfind("hidden_remainder_", 0) == 0)
      put(a, 0); // grids are whole workgroups
    else if (kind == "hidden_grid_dims")
      put(a, c.grid[2] > 1 ? 3 : c.grid[1] > 1 ? 2 : 1);
    else if (kind == "hidden_dynamic_lds_size")
      put(a, c.dynamicLds);
    // Offsets, queue / completion / printf pointers and the rest: zero.
  }
  return kSuccess;
}

void printStats() {
  State &s = state();
  fprintf(stderr,
          "attnsim-hip: %llu launches, %llu wave instructions (%llu lane "
          "instructions) in %.3f s (%.2f M wave instructions/s)\n",
          static_cast<unsigned long long>(s.launches),
          static_cast<unsigned long long>(s.instructions),
          static_cast<unsigned long long>(s.laneInstructions),
          s.launchSeconds,
          double(s.instructions) / std::max(s.launchSeconds, 1e-9) / 1e6);
  fprintf(stderr, "attnsim-hip: wave instructions by class:");
  for (int c = 0; c < amd::kInstClasses; ++c)
    fprintf(stderr, " %s %llu", amd::instClassName(amd::InstClass(c)),
            static_cast<unsigned long long>(s.byClass[c]));
  fprintf(stderr, "\n");
}

/// One JSON object per launch (ATTNSIM_PROFILE=FILE), as the CUDA
/// simulator writes: wave instructions by class, MFMA FLOPs.
void appendProfile(const char *path, const amd::Kernel &k,
                   const amd::DispatchConfig &c, uint64_t lds,
                   const amd::DispatchStats &s) {
  FILE *out = fopen(path, "a");
  if (!out)
    return;
  fprintf(out,
          "{\"kernel\": \"%s\", \"grid\": [%u, %u, %u], \"block\": [%u, "
          "%u, %u], \"lds_bytes\": %llu, \"workgroups\": %llu, "
          "\"wave_instructions\": %llu, \"lane_instructions\": %llu, "
          "\"by_class\": {",
          k.name.c_str(), c.grid[0], c.grid[1], c.grid[2], c.block[0],
          c.block[1], c.block[2], static_cast<unsigned long long>(lds),
          static_cast<unsigned long long>(s.workgroups),
          static_cast<unsigned long long>(s.waveInstructions),
          static_cast<unsigned long long>(s.laneInstructions));
  for (int i = 0; i < amd::kInstClasses; ++i)
    fprintf(out, "%s\"%s\": %llu", i ? ", " : "",
            amd::instClassName(amd::InstClass(i)),
            static_cast<unsigned long long>(s.byClass[i]));
  fprintf(out, "}, \"mfma_flops\": %llu}\n",
          static_cast<unsigned long long>(s.mfmaFlops));
  fclose(out);
}

hipError_t checkDevice(const void *p, size_t bytes, const char *what) {
  if (bytes && !state().memory.contains(reinterpret_cast<uint64_t>(p), bytes))
    return report(kInvalidValue,
                  std::string(what) + " of " + std::to_string(bytes) +
                      " bytes outside device memory at " +
                      state().memory.describe(reinterpret_cast<uint64_t>(p)));
  return kSuccess;
}

} // namespace

extern "C" {

hipError_t hipInit(unsigned) { return kSuccess; }

hipError_t hipGetDeviceCount(int *count) {
  if (!count)
    return kInvalidValue;
  *count = 1;
  return kSuccess;
}

hipError_t hipGetDevice(int *device) {
  if (!device)
    return kInvalidValue;
  *device = 0;
  return kSuccess;
}

hipError_t hipSetDevice(int device) {
  return device == 0 ? kSuccess : kInvalidDevice;
}

hipError_t hipDeviceGetAttribute(int *value, int attribute, int device) {
  if (!value)
    return kInvalidValue;
  if (device != 0)
    return kInvalidDevice;
  // An MI300X's compute units; other attributes are not modelled (0).
  *value = attribute == kAttrMultiprocessorCount ? 304 : 0;
  return kSuccess;
}

hipError_t hipModuleLoadData(hipModule_t *module, const void *image) {
  if (!module || !image)
    return kInvalidValue;
  size_t size = amd::elfImageSize(image);
  if (!size)
    return report(kInvalidImage, "the simulator loads AMDGPU code objects "
                                 "(ELF), not this image");
  try {
    auto loaded = std::make_unique<LoadedModule>();
    loaded->code = amd::loadCodeObject(image, size, amd::bindInstruction);
    // Kernels may read their own image (constants addressed by s_getpc).
    state().memory.add(loaded->code->image.get(), loaded->code->imageBytes,
                       "code object");
    *module = loaded.release();
    return kSuccess;
  } catch (const amd::LoadError &e) {
    return report(e.code, "loading the code object: " + e.message);
  }
}

hipError_t hipModuleUnload(hipModule_t module) {
  auto *m = static_cast<LoadedModule *>(module);
  if (!m)
    return kInvalidHandle;
  state().memory.remove(m->code->image.get());
  delete m;
  return kSuccess;
}

hipError_t hipModuleGetFunction(hipFunction_t *function, hipModule_t module,
                                const char *name) {
  auto *m = static_cast<LoadedModule *>(module);
  if (!function || !m || !name)
    return kInvalidValue;
  const amd::Kernel *k = m->code->find(name);
  if (!k)
    return report(kNotFound, std::string("no kernel named ") + name);
  *function = new LoadedFunction{m, k};
  return kSuccess;
}

hipError_t hipModuleLaunchKernel(hipFunction_t function, unsigned gridX,
                                 unsigned gridY, unsigned gridZ,
                                 unsigned blockX, unsigned blockY,
                                 unsigned blockZ, unsigned sharedBytes,
                                 hipStream_t, void **params, void **extra) {
  auto *f = static_cast<LoadedFunction *>(function);
  if (!f)
    return kInvalidHandle;
  if (!gridX || !gridY || !gridZ || !blockX || !blockY || !blockZ)
    return report(kInvalidValue, "empty grid or block");
  const amd::Kernel &k = *f->kernel;
  const amd::CodeObject &code = *f->owner->code;
  uint64_t threads = uint64_t(blockX) * blockY * blockZ;
  if (threads > 1024 || threads > k.maxFlatWorkgroupSize)
    return report(kInvalidValue,
                  "kernel " + k.name + ": a workgroup of " +
                      std::to_string(threads) + " work-items (at most " +
                      std::to_string(std::min<uint32_t>(
                          1024, k.maxFlatWorkgroupSize)) +
                      ")");
  uint64_t lds = uint64_t(k.groupSegmentBytes) + sharedBytes;
  if (lds > amd::ldsLimit(code.chip))
    return report(kInvalidValue,
                  "kernel " + k.name + ": " + std::to_string(k.groupSegmentBytes) +
                      " bytes of static and " + std::to_string(sharedBytes) +
                      " of dynamic LDS exceed the " +
                      std::to_string(amd::ldsLimit(code.chip)) +
                      " bytes of a " + code.chip + " workgroup");
  amd::DispatchConfig config;
  config.grid[0] = gridX;
  config.grid[1] = gridY;
  config.grid[2] = gridZ;
  config.block[0] = blockX;
  config.block[1] = blockY;
  config.block[2] = blockZ;
  config.dynamicLds = sharedBytes;
  std::vector<uint8_t> args;
  if (hipError_t e = buildKernarg(k, params, extra, config, args))
    return e;
  Memory &memory = state().memory;
  // The kernarg segment and the AQL dispatch packet live in device memory.
  auto *kernarg = static_cast<uint8_t *>(memory.allocate(args.size()));
  std::memcpy(kernarg, args.data(), args.size());
  auto *packet = static_cast<uint8_t *>(memory.allocate(64));
  std::memset(packet, 0, 64);
  uint16_t wg[3] = {uint16_t(blockX), uint16_t(blockY), uint16_t(blockZ)};
  uint32_t gridSize[3] = {gridX * blockX, gridY * blockY, gridZ * blockZ};
  uint16_t setup = uint16_t(gridZ * blockZ > 1 ? 3 : gridY * blockY > 1 ? 2 : 1);
  uint32_t groupSegment = uint32_t(lds);
  uint64_t kernargAddress = reinterpret_cast<uint64_t>(kernarg);
  std::memcpy(packet + 2, &setup, 2);
  std::memcpy(packet + 4, wg, 6);
  std::memcpy(packet + 12, gridSize, 12);
  std::memcpy(packet + 28, &groupSegment, 4);
  std::memcpy(packet + 40, &kernargAddress, 8);
  config.kernarg = kernargAddress;
  config.dispatchPacket = reinterpret_cast<uint64_t>(packet);
  hipError_t result = kSuccess;
  try {
    auto start = std::chrono::steady_clock::now();
    amd::DispatchStats stats = amd::dispatch(code, k, config, memory);
    std::lock_guard<std::mutex> lock(state().mutex);
    state().instructions += stats.waveInstructions;
    state().laneInstructions += stats.laneInstructions;
    for (int c = 0; c < amd::kInstClasses; ++c)
      state().byClass[c] += stats.byClass[c];
    if (const char *profile = getenv("ATTNSIM_PROFILE"))
      appendProfile(profile, k, config, lds, stats);
    state().launchSeconds += std::chrono::duration<double>(
                                 std::chrono::steady_clock::now() - start)
                                 .count();
    if (state().launches++ == 0 && getenv("ATTNSIM_STATS"))
      atexit(printStats);
  } catch (const Fault &fault) {
    result = report(hipCode(fault.code), fault.what());
  }
  memory.release(kernarg);
  memory.release(packet);
  return result;
}

hipError_t hipMalloc(void **pointer, size_t bytes) {
  if (!pointer)
    return kInvalidValue;
  try {
    *pointer = state().memory.allocate(bytes);
  } catch (const std::bad_alloc &) {
    return kOutOfMemory;
  }
  return kSuccess;
}

hipError_t hipFree(void *pointer) {
  if (!pointer)
    return kSuccess;
  return state().memory.release(pointer)
             ? kSuccess
             : report(kInvalidValue, "freeing memory the device did not "
                                     "allocate");
}

hipError_t hipMallocAsync(void **pointer, size_t bytes, hipStream_t) {
  return hipMalloc(pointer, bytes);
}

hipError_t hipFreeAsync(void *pointer, hipStream_t) { return hipFree(pointer); }

hipError_t hipMemcpy(void *dst, const void *src, size_t bytes, int kind) {
  if (bytes && (!dst || !src))
    return kInvalidValue;
  Memory &m = state().memory;
  if (kind == 4) // hipMemcpyDefault: device memory is what the device made
    kind = (m.contains(reinterpret_cast<uint64_t>(src), bytes) ? 2 : 0) +
           (m.contains(reinterpret_cast<uint64_t>(dst), bytes) ? 1 : 0);
  if (kind < 0 || kind > 3)
    return report(kInvalidValue, "bad hipMemcpyKind " + std::to_string(kind));
  if (kind == 1 || kind == 3)
    if (hipError_t e = checkDevice(dst, bytes, "hipMemcpy destination"))
      return e;
  if (kind == 2 || kind == 3)
    if (hipError_t e = checkDevice(src, bytes, "hipMemcpy source"))
      return e;
  if (bytes)
    std::memmove(dst, src, bytes);
  return kSuccess;
}

hipError_t hipMemcpyAsync(void *dst, const void *src, size_t bytes, int kind,
                          hipStream_t) {
  return hipMemcpy(dst, src, bytes, kind);
}

hipError_t hipMemset(void *dst, int value, size_t bytes) {
  if (hipError_t e = checkDevice(dst, bytes, "hipMemset"))
    return e;
  if (bytes)
    std::memset(dst, value, bytes);
  return kSuccess;
}

hipError_t hipStreamCreate(hipStream_t *stream) {
  if (!stream)
    return kInvalidValue;
  std::lock_guard<std::mutex> lock(state().mutex);
  // Any non-null handle: work on it completes at once.
  *stream = reinterpret_cast<hipStream_t>(uintptr_t(++state().streams) << 4);
  return kSuccess;
}

hipError_t hipStreamDestroy(hipStream_t) { return kSuccess; }
hipError_t hipStreamSynchronize(hipStream_t) { return kSuccess; }
hipError_t hipDeviceSynchronize(void) { return kSuccess; }

hipError_t hipGetLastError(void) {
  hipError_t e = state().lastError;
  state().lastError = kSuccess;
  return e;
}

const char *hipGetErrorString(hipError_t error) {
  static thread_local std::string message;
  if (error == kSuccess)
    return "no error";
  message = state().lastReport.empty() ? "simulated GPU error"
                                       : state().lastReport;
  return message.c_str();
}

uint64_t attnsimHipInstructionCount(void) { return state().instructions; }

} // extern "C"
