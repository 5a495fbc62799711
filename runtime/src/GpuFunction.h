//===- GpuFunction.h - a GPU kernel behind a vendor runtime ---------------===//
//
// Launch.cpp validates and packs arguments the same way for every GPU; a
// GpuFunction puts them on the device through the CUDA driver (sm_*) or
// the HIP runtime (gfx*), each opened with dlopen at the first launch so
// attnrt loads and validates everywhere, and a machine without the GPU
// gets an attn::Error saying so. attn::useGpuSimulator swaps either for a
// functional simulator exporting the same API.
//
//===----------------------------------------------------------------------===//
#ifndef ATTN_RUNTIME_GPUFUNCTION_H
#define ATTN_RUNTIME_GPUFUNCTION_H

#include "attn/runtime.h"

#include <array>
#include <memory>
#include <string>
#include <tuple>
#include <vector>

namespace attn::detail {

class GpuFunction {
public:
  virtual ~GpuFunction() = default;
  const GpuCode &gpuCode() const { return code; }
  /// Launches (ceil(Sq / (rowsPerBlock / pack)) x parts, Hq / pack, B)
  /// blocks with `params` (pointers to each argument) on `stream` (a
  /// CUstream / hipStream_t, or null for the default stream); with parts
  /// > 1, then the merge kernel over `mergeParams` (grid (ceil(Sq Dv /
  /// 128), Hq, B)). Kernels with tensor maps get those of `qkv` appended.
  /// Throws attn::Error with the runtime's message.
  virtual void launchSplit(int64_t batch, int64_t heads, int64_t seqQ,
                           int64_t valueHeadDim, int64_t parts, int64_t pack,
                           std::vector<void *> params,
                           std::vector<void *> mergeParams,
                           std::array<const TensorRef *, 3> qkv,
                           void *stream) const = 0;
  /// select's pre-pass (GpuCode::selectPoolEntry, then selectEntry) over
  /// grids of (blocks, heads, batch), kSelectThreads threads each.
  void launchSelect(std::array<int64_t, 3> poolGrid,
                    std::array<int64_t, 3> selectGrid,
                    std::vector<void *> poolParams,
                    std::vector<void *> selectParams, void *stream) const {
    for (auto [which, grid, params] :
         {std::tuple{0, poolGrid, &poolParams},
          std::tuple{1, selectGrid, &selectParams}})
      if (grid[0] * grid[1] * grid[2] > 0)
        launchPrePass(which, grid, params->data(), stream);
  }
  /// Kernels compiled with backward: phase 0 (GpuCode::backwardKvEntry)
  /// or 1 (backwardQEntry) over `grid` with `params` on `stream`.
  virtual void launchBackward(int phase, std::array<int64_t, 3> grid,
                              void **params, void *stream) const {
    (void)phase, (void)grid, (void)params, (void)stream;
    throw Error("target", "backward kernels on " + code.chip +
                              " have no launcher in this build");
  }
  /// The device's multiprocessor (compute unit) count; loads the kernel.
  virtual int64_t multiprocessors() const = 0;
  /// Stream-ordered device memory for the split-KV partial results.
  virtual void *allocate(size_t bytes, void *stream) const = 0;
  virtual void release(void *memory, void *stream) const = 0;
  /// Host staging (Kernel::launchHost): device memory, synchronous copies
  /// to and from it, and waiting for the device's work to finish.
  virtual void *allocateDevice(size_t bytes) const = 0;
  virtual void freeDevice(void *memory) const = 0;
  virtual void copyToDevice(void *device, const void *host,
                            size_t bytes) const = 0;
  virtual void copyToHost(void *host, const void *device,
                          size_t bytes) const = 0;
  virtual void synchronize() const = 0;

protected:
  explicit GpuFunction(GpuCode code) : code(std::move(code)) {}
  /// Pre-pass kernel `which` (0: selectPoolEntry, 1: selectEntry) over
  /// `grid`.
  virtual void launchPrePass(int which, std::array<int64_t, 3> grid,
                             void **params, void *stream) const = 0;
  GpuCode code;
};

/// Through the CUDA driver (libcuda.so.1).
std::shared_ptr<GpuFunction> makeCudaFunction(GpuCode code);
/// Through the HIP runtime (libamdhip64.so).
std::shared_ptr<GpuFunction> makeHipFunction(GpuCode code);

/// The simulator a vendor's launches open instead of its runtime
/// (attn::useGpuSimulator, else ATTN_GPU_SIMULATOR or
/// ATTN_GPU_SIMULATOR_HIP read at the first call), or "" for the runtime.
enum class GpuVendor { Cuda, Hip };
std::string gpuSimulatorLibrary(GpuVendor vendor);

/// Blocks of the split-KV merge kernel.
constexpr int64_t kMergeThreads = 128;
/// Blocks of the select pre-pass kernels.
constexpr int64_t kSelectThreads = 128;

} // namespace attn::detail

#endif // ATTN_RUNTIME_GPUFUNCTION_H
