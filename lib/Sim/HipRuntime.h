//===- HipRuntime.h - the simulated CDNA GPU's HIP runtime API ------------===//
//
// libattnsim_hip.so exports these entry points with the HIP runtime's own
// names and C signatures (hip_runtime_api.h), so a program (attnrt's HIP
// launcher included) reaches the AMD simulator through exactly the calls it
// makes on a device. Tests link the library directly and call them through
// this header; attnrt opens it with dlopen only when asked to
// (attn::useGpuSimulator("", path)).
//
// The device runs code objects for gfx90a, gfx942 and gfx950 (each module
// on the chip it was built for). Launches run to completion inside
// hipModuleLaunchKernel (streams are accepted and ignored). A kernel fault
// returns an error code (700 illegal address, 702 launch time-out for a
// hang, 719 launch failure: unmodelled instructions, registers read before
// their loads were waited for, ...; 200 invalid image and 209 no binary for
// the GPU at module load) and hipGetErrorString for that code returns the
// simulator's report: kernel, workgroup, wave, lane, instruction, why.
//
//===----------------------------------------------------------------------===//
#ifndef ATTN_SIM_HIPRUNTIME_H
#define ATTN_SIM_HIPRUNTIME_H

#include <cstddef>
#include <cstdint>

extern "C" {
typedef int hipError_t;
typedef void *hipModule_t;
typedef void *hipFunction_t;
typedef void *hipStream_t;

hipError_t hipInit(unsigned flags);
hipError_t hipGetDeviceCount(int *count);
hipError_t hipGetDevice(int *device);
hipError_t hipSetDevice(int device);
hipError_t hipDeviceGetAttribute(int *value, int attribute, int device);
/// `image`: an AMDGPU code object (ELF); anything else gives 200.
hipError_t hipModuleLoadData(hipModule_t *module, const void *image);
hipError_t hipModuleUnload(hipModule_t module);
hipError_t hipModuleGetFunction(hipFunction_t *function, hipModule_t module,
                                const char *name);
/// kernelParams[i] points at explicit argument i of the kernel's metadata;
/// or extra = {HIP_LAUNCH_PARAM_BUFFER_POINTER (0x1), buffer,
/// HIP_LAUNCH_PARAM_BUFFER_SIZE (0x2), &size, HIP_LAUNCH_PARAM_END (0x3)}.
hipError_t hipModuleLaunchKernel(hipFunction_t f, unsigned gridX,
                                 unsigned gridY, unsigned gridZ,
                                 unsigned blockX, unsigned blockY,
                                 unsigned blockZ, unsigned sharedBytes,
                                 hipStream_t stream, void **kernelParams,
                                 void **extra);
hipError_t hipMalloc(void **pointer, size_t bytes);
hipError_t hipFree(void *pointer);
hipError_t hipMallocAsync(void **pointer, size_t bytes, hipStream_t stream);
hipError_t hipFreeAsync(void *pointer, hipStream_t stream);
/// kind: 0 host to host, 1 host to device, 2 device to host, 3 device to
/// device, 4 default (inferred).
hipError_t hipMemcpy(void *dst, const void *src, size_t bytes, int kind);
hipError_t hipMemcpyAsync(void *dst, const void *src, size_t bytes, int kind,
                          hipStream_t stream);
hipError_t hipMemset(void *dst, int value, size_t bytes);
hipError_t hipStreamCreate(hipStream_t *stream);
hipError_t hipStreamDestroy(hipStream_t stream);
hipError_t hipStreamSynchronize(hipStream_t stream);
hipError_t hipDeviceSynchronize(void);
hipError_t hipGetLastError(void);
const char *hipGetErrorString(hipError_t error);

/// Not in the HIP API: wave instructions executed since the first launch.
uint64_t attnsimHipInstructionCount(void);
}

#endif // ATTN_SIM_HIPRUNTIME_H
