//===- Simulator.cpp - choosing functional GPU simulators -----------------===//
//
// GPU launches open the vendor's runtime (libcuda.so.1, libamdhip64) unless
// this process asked for a simulator: attn::useGpuSimulator, or, when that
// was never called, ATTN_GPU_SIMULATOR / ATTN_GPU_SIMULATOR_HIP read at
// the first GPU launch. Nothing else ever picks one.
//
//===----------------------------------------------------------------------===//
#include "GpuFunction.h"

#include <cstdlib>
#include <mutex>

namespace attn {
namespace {

struct Selection {
  std::mutex mutex;
  bool chosen = false; // by useGpuSimulator or the environment
  std::string cuda, hip;
};

Selection &selection() {
  static Selection s;
  return s;
}

} // namespace

void useGpuSimulator(const std::string &cudaLibrary,
                     const std::string &hipLibrary) {
  Selection &s = selection();
  std::lock_guard<std::mutex> lock(s.mutex);
  s.chosen = true;
  s.cuda = cudaLibrary;
  s.hip = hipLibrary;
}

namespace detail {

std::string gpuSimulatorLibrary(GpuVendor vendor) {
  Selection &s = selection();
  std::lock_guard<std::mutex> lock(s.mutex);
  if (!s.chosen) {
    s.chosen = true;
    if (const char *env = std::getenv("ATTN_GPU_SIMULATOR"))
      s.cuda = env;
    if (const char *env = std::getenv("ATTN_GPU_SIMULATOR_HIP"))
      s.hip = env;
  }
  return vendor == GpuVendor::Cuda ? s.cuda : s.hip;
}

} // namespace detail
} // namespace attn
