//===- CudaDriver.h - the simulated GPU's CUDA driver API -----------------===//
//
// libattnsim_cuda.so exports these entry points with the CUDA driver API's
// own names and C signatures, so a program (attnrt's launcher included)
// reaches the simulator through exactly the calls it makes on a device.
// Tests link the library directly and call them through this header; attnrt
// opens it with dlopen only when asked to (attn::useGpuSimulator).
//
// Launches run to completion inside cuLaunchKernel (streams are accepted
// and ignored). A kernel fault returns an error code (700 illegal address,
// 702 launch timeout for deadlocks, 719 launch failure, 912 a bad cluster
// shape, 209 no binary for GPU for an image that is not PTX) and cuGetErrorString for that code
// returns the simulator's report: kernel, CTA, thread, instruction, why.
//
//===----------------------------------------------------------------------===//
#ifndef ATTN_SIM_CUDADRIVER_H
#define ATTN_SIM_CUDADRIVER_H

#include <cstddef>
#include <cstdint>

extern "C" {
typedef int CUresult;
typedef int CUdevice;
typedef void *CUcontext;
typedef void *CUmodule;
typedef void *CUfunction;
typedef void *CUstream;
typedef unsigned long long CUdeviceptr;

CUresult cuInit(unsigned flags);
CUresult cuDeviceGet(CUdevice *device, int ordinal);
CUresult cuDeviceGetAttribute(int *value, int attribute, CUdevice device);
CUresult cuDevicePrimaryCtxRetain(CUcontext *ctx, CUdevice device);
CUresult cuCtxGetCurrent(CUcontext *ctx);
CUresult cuCtxSetCurrent(CUcontext ctx);
CUresult cuCtxGetDevice(CUdevice *device);
CUresult cuCtxSynchronize(void);
CUresult cuStreamSynchronize(CUstream stream);
/// `image`: NUL-terminated PTX text. Anything else (a cubin) gives 209.
CUresult cuModuleLoadData(CUmodule *module, const void *image);
CUresult cuModuleUnload(CUmodule module);
CUresult cuModuleGetFunction(CUfunction *function, CUmodule module,
                             const char *name);
CUresult cuFuncSetAttribute(CUfunction function, int attribute, int value);
CUresult cuLaunchKernel(CUfunction f, unsigned gridX, unsigned gridY,
                        unsigned gridZ, unsigned blockX, unsigned blockY,
                        unsigned blockZ, unsigned sharedBytes,
                        CUstream stream, void **params, void **extra);
/// cuLaunchKernelEx's configuration (cuda.h, CUDA 12): the grid, block,
/// shared memory and stream of cuLaunchKernel plus launch attributes, of
/// which the simulator reads CU_LAUNCH_ATTRIBUTE_CLUSTER_DIMENSION.
typedef enum CUlaunchAttributeID_enum {
  CU_LAUNCH_ATTRIBUTE_IGNORE = 0,
  CU_LAUNCH_ATTRIBUTE_CLUSTER_DIMENSION = 4,
} CUlaunchAttributeID;
typedef union CUlaunchAttributeValue_union {
  char pad[64];
  struct {
    unsigned x, y, z;
  } clusterDim;
} CUlaunchAttributeValue;
typedef struct CUlaunchAttribute_st {
  CUlaunchAttributeID id;
  char pad[8 - sizeof(CUlaunchAttributeID)];
  CUlaunchAttributeValue value;
} CUlaunchAttribute;
typedef struct CUlaunchConfig_st {
  unsigned gridDimX, gridDimY, gridDimZ;
  unsigned blockDimX, blockDimY, blockDimZ;
  unsigned sharedMemBytes;
  CUstream hStream;
  CUlaunchAttribute *attrs;
  unsigned numAttrs;
} CUlaunchConfig;
/// Clusters: the attribute's shape (it must match the kernel's
/// .reqnctapercluster if it has one), else the kernel's. Errors as
/// cuLaunchKernel's, 912 (CUDA_ERROR_INVALID_CLUSTER_SIZE) for a cluster
/// shape that does not divide the grid or has more than 8 CTAs.
CUresult cuLaunchKernelEx(const CUlaunchConfig *config, CUfunction f,
                          void **params, void **extra);
CUresult cuMemAlloc_v2(CUdeviceptr *pointer, size_t bytes);
CUresult cuMemFree_v2(CUdeviceptr pointer);
CUresult cuMemAllocAsync(CUdeviceptr *pointer, size_t bytes, CUstream s);
CUresult cuMemFreeAsync(CUdeviceptr pointer, CUstream s);
CUresult cuMemcpyHtoD_v2(CUdeviceptr dst, const void *src, size_t bytes);
CUresult cuMemcpyDtoH_v2(void *dst, CUdeviceptr src, size_t bytes);
CUresult cuMemcpyHtoDAsync_v2(CUdeviceptr dst, const void *src, size_t bytes,
                              CUstream s);
CUresult cuMemcpyDtoHAsync_v2(void *dst, CUdeviceptr src, size_t bytes,
                              CUstream s);
CUresult cuMemsetD8_v2(CUdeviceptr dst, unsigned char value, size_t bytes);
/// CUtensorMap is 128 opaque bytes; the simulator stores its own encoding.
CUresult cuTensorMapEncodeTiled(void *tensorMap, int dataType,
                                uint32_t rank, void *globalAddress,
                                const uint64_t *globalDim,
                                const uint64_t *globalStrides,
                                const uint32_t *boxDim,
                                const uint32_t *elementStrides,
                                int interleave, int swizzle,
                                int l2Promotion, int oobFill);
CUresult cuGetErrorString(CUresult error, const char **text);

/// Not in the CUDA API: instructions executed (all threads) since load.
uint64_t attnsimInstructionCount(void);
}

#endif // ATTN_SIM_CUDADRIVER_H
