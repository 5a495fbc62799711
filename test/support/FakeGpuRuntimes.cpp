//===- FakeGpuRuntimes.cpp - stand-in CUDA and HIP runtimes for tests -----===//
//
// libattn_fake_gpu.so exports the CUDA driver and HIP runtime entry points
// attnrt opens, so the runtime's GPU plumbing (attn::useGpuSimulator,
// cubin-to-PTX fallback, Kernel::launchHost's device copies) is tested
// without a GPU or the real simulator. As CUDA it reports compute
// capability 9.0 and one multiprocessor and takes PTX text only (a cubin
// gives 209, as the simulator); as HIP it takes any code object. Device
// memory is its own heap blocks. Its "kernel" checks that q, k, v and o
// point into those blocks, then copies q into o element by element (the
// tests use D == Dv and one dtype), so a launch shows that data went in
// and came back.
//
//===----------------------------------------------------------------------===//
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>

namespace {

struct State {
  std::map<uintptr_t, size_t> blocks; // device memory: start -> size
  int cubinTries = 0, ptxLoads = 0, allocations = 0, frees = 0, launches = 0;
  int failCode = 0; // returned by the next launch, when nonzero
  std::string error;
};

State &state() {
  static State s;
  return s;
}

bool isDevice(uintptr_t p, size_t bytes) {
  auto it = state().blocks.upper_bound(p);
  if (it == state().blocks.begin())
    return false;
  --it;
  return p >= it->first && p + bytes <= it->first + it->second;
}

int allocate(unsigned long long *pointer, size_t bytes) {
  void *p = std::calloc(1, bytes ? bytes : 1);
  state().blocks[reinterpret_cast<uintptr_t>(p)] = bytes;
  ++state().allocations;
  *pointer = reinterpret_cast<uintptr_t>(p);
  return 0;
}

int release(unsigned long long pointer) {
  if (!state().blocks.erase(pointer))
    return 1; // CUDA_ERROR_INVALID_VALUE
  std::free(reinterpret_cast<void *>(pointer));
  ++state().frees;
  return 0;
}

/// A rank-4 memref descriptor among the kernel parameters: allocated and
/// aligned pointers, offset, sizes, strides (11 slots of 8 bytes).
struct View {
  uintptr_t data;
  int64_t size[4], stride[4];
};
View view(void **params, int first) {
  auto slot = [&](int i) { return *static_cast<uint64_t *>(params[first + i]); };
  View v{slot(1), {}, {}};
  for (int i = 0; i < 4; ++i) {
    v.size[i] = static_cast<int64_t>(slot(3 + i));
    v.stride[i] = static_cast<int64_t>(slot(7 + i));
  }
  return v;
}

size_t spanBytes(const View &v) {
  int64_t last = 0;
  for (int i = 0; i < 4; ++i)
    last += (v.size[i] - 1) * v.stride[i];
  return static_cast<size_t>(last + 1) * 2; // f16 / bf16
}

} // namespace

extern "C" {

int cuInit(unsigned) { return 0; }
int cuDeviceGet(int *device, int) {
  *device = 0;
  return 0;
}
int cuDeviceGetAttribute(int *value, int attribute, int) {
  *value = attribute == 75 ? 9 : attribute == 76 ? 0 : 1;
  return 0;
}
int cuDevicePrimaryCtxRetain(void **ctx, int) {
  static int context;
  *ctx = &context;
  return 0;
}
thread_local void *current = nullptr;
int cuCtxGetCurrent(void **ctx) {
  *ctx = current;
  return 0;
}
int cuCtxSetCurrent(void *ctx) {
  current = ctx;
  return 0;
}
int cuCtxGetDevice(int *device) {
  *device = 0;
  return 0;
}
int cuCtxSynchronize(void) { return 0; }
int cuModuleLoadData(void **module, const void *image) {
  if (std::memcmp(image, "\x7f" "ELF", 4) == 0) {
    ++state().cubinTries;
    return 209; // CUDA_ERROR_NO_BINARY_FOR_GPU
  }
  ++state().ptxLoads;
  static int handle;
  *module = &handle;
  return 0;
}
int cuModuleGetFunction(void **function, void *, const char *) {
  static int handle;
  *function = &handle;
  return 0;
}
int cuFuncSetAttribute(void *, int, int) { return 0; }
int cuLaunchKernel(void *, unsigned, unsigned, unsigned, unsigned, unsigned,
                   unsigned, unsigned, void *, void **params, void **) {
  ++state().launches;
  if (int code = state().failCode) {
    state().failCode = 0;
    state().error = "fake fault in kernel, CTA (0,0,0) thread 5: ld.global "
                    "out of bounds";
    return code;
  }
  View q = view(params, 0), o = view(params, 33);
  for (int first : {0, 11, 22, 33}) {
    View v = view(params, first);
    if (!isDevice(v.data, spanBytes(v))) {
      state().error = "kernel argument at slot " + std::to_string(first) +
                      " is not device memory";
      return 700; // CUDA_ERROR_ILLEGAL_ADDRESS
    }
  }
  for (int64_t b = 0; b < o.size[0]; ++b)
    for (int64_t h = 0; h < o.size[1]; ++h)
      for (int64_t s = 0; s < o.size[2]; ++s)
        for (int64_t d = 0; d < o.size[3]; ++d) {
          auto at = [&](const View &v) {
            return v.data + 2 * (b * v.stride[0] + h * v.stride[1] +
                                 s * v.stride[2] + d * v.stride[3]);
          };
          std::memcpy(reinterpret_cast<void *>(at(o)),
                      reinterpret_cast<void *>(at(q)), 2);
        }
  return 0;
}
int cuMemAlloc_v2(unsigned long long *pointer, size_t bytes) {
  return allocate(pointer, bytes);
}
int cuMemFree_v2(unsigned long long pointer) { return release(pointer); }
int cuMemAllocAsync(unsigned long long *pointer, size_t bytes, void *) {
  return allocate(pointer, bytes);
}
int cuMemFreeAsync(unsigned long long pointer, void *) {
  return release(pointer);
}
int cuMemcpyHtoD_v2(unsigned long long dst, const void *src, size_t bytes) {
  if (!isDevice(dst, bytes))
    return 1;
  std::memcpy(reinterpret_cast<void *>(dst), src, bytes);
  return 0;
}
int cuMemcpyDtoH_v2(void *dst, unsigned long long src, size_t bytes) {
  if (!isDevice(src, bytes))
    return 1;
  std::memcpy(dst, reinterpret_cast<void *>(src), bytes);
  return 0;
}
int cuMemcpyHtoDAsync_v2(unsigned long long dst, const void *src,
                         size_t bytes, void *) {
  return cuMemcpyHtoD_v2(dst, src, bytes);
}
int cuTensorMapEncodeTiled(void *map, int, uint32_t, void *,
                           const uint64_t *, const uint64_t *,
                           const uint32_t *, const uint32_t *, int, int, int,
                           int) {
  std::memset(map, 0, 128);
  return 0;
}
int cuGetErrorString(int error, const char **text) {
  *text = error == 209 ? "no kernel image is available for this device"
                       : state().error.c_str();
  return 0;
}

// HIP: the same machine behind the HIP runtime's names.
int hipInit(unsigned) { return 0; }
int hipGetDevice(int *device) {
  *device = 0;
  return 0;
}
int hipDeviceGetAttribute(int *value, int, int) {
  *value = 1;
  return 0;
}
int hipModuleLoadData(void **module, const void *) {
  static int handle;
  *module = &handle;
  return 0;
}
int hipModuleGetFunction(void **function, void *module, const char *name) {
  return cuModuleGetFunction(function, module, name);
}
int hipModuleLaunchKernel(void *f, unsigned gx, unsigned gy, unsigned gz,
                          unsigned bx, unsigned by, unsigned bz,
                          unsigned shared, void *stream, void **params,
                          void **extra) {
  return cuLaunchKernel(f, gx, gy, gz, bx, by, bz, shared, stream, params,
                        extra);
}
int hipMalloc(void **pointer, size_t bytes) {
  return allocate(reinterpret_cast<unsigned long long *>(pointer), bytes);
}
int hipFree(void *pointer) {
  return release(reinterpret_cast<uintptr_t>(pointer));
}
int hipMallocAsync(void **pointer, size_t bytes, void *) {
  return hipMalloc(pointer, bytes);
}
int hipFreeAsync(void *pointer, void *) { return hipFree(pointer); }
int hipMemcpy(void *dst, const void *src, size_t bytes, int kind) {
  if (kind == 1)
    return cuMemcpyHtoD_v2(reinterpret_cast<uintptr_t>(dst), src, bytes);
  if (kind == 2)
    return cuMemcpyDtoH_v2(dst, reinterpret_cast<uintptr_t>(src), bytes);
  return 1;
}
int hipDeviceSynchronize(void) { return 0; }
const char *hipGetErrorString(int error) {
  const char *text = nullptr;
  cuGetErrorString(error, &text);
  return text;
}

/// Test hooks (not CUDA): counters, and an error for the next launch.
void fakeCudaCounts(int *counts) {
  const State &s = state();
  int values[] = {s.cubinTries, s.ptxLoads,  s.allocations,
                  s.frees,      s.launches, static_cast<int>(s.blocks.size())};
  std::memcpy(counts, values, sizeof values);
}
void fakeCudaFailNextLaunch(int code) { state().failCode = code; }
}
