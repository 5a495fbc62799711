//===- Machine.h - the simulated GPU: memory, launches, faults ------------===//
#ifndef ATTN_SIM_MACHINE_H
#define ATTN_SIM_MACHINE_H

#include "lib/Sim/Ptx.h"

#include <cstdint>
#include <map>
#include <mutex>
#include <stdexcept>
#include <string>

namespace attn::sim {

/// A kernel fault, with the CUDA error code a device would give.
struct Fault : std::runtime_error {
  int code;
  Fault(int code, const std::string &what)
      : std::runtime_error(what), code(code) {}
};
constexpr int kIllegalAddress = 700;     // CUDA_ERROR_ILLEGAL_ADDRESS
constexpr int kLaunchTimeout = 702;      // deadlock
constexpr int kIllegalInstruction = 715; // unmodelled instruction
constexpr int kMisalignedAddress = 716;
constexpr int kLaunchFailed = 719;
constexpr int kInvalidClusterSize = 912; // CUDA_ERROR_INVALID_CLUSTER_SIZE

/// Device memory: every allocation the driver stand-in made, so each
/// global access can be checked against one.
class Memory {
public:
  void *allocate(size_t bytes);
  bool release(void *p);
  /// Module variables and other memory the device may address.
  void add(const void *p, size_t bytes, const std::string &what);
  void remove(const void *p);
  /// Whether [address, address + bytes) lies inside one allocation.
  bool contains(uint64_t address, uint64_t bytes) const;
  /// "inside allocation 0x.. of N bytes at offset k" / "N bytes past ..."
  std::string describe(uint64_t address) const;

private:
  struct Range {
    uint64_t bytes;
    std::string what;
    bool owned;
  };
  mutable std::mutex mutex;
  std::map<uint64_t, Range> ranges;
};

/// The simulator's CUtensorMap contents (fits the 128 opaque bytes).
struct TensorMap {
  uint32_t magic;
  uint8_t dataType, rank, swizzle /* 0, 32, 64, 128 bytes */, interleave;
  uint8_t oobFillNan, elementBytes, pad[2];
  uint64_t address;
  uint32_t dims[5];
  uint64_t strides[4]; // bytes, of dimensions 1..rank-1
  uint8_t boxMinus1[5];
  uint8_t elementStrides[5];
};
static_assert(sizeof(TensorMap) <= 128, "tensor maps are 128 bytes");
constexpr uint32_t kTensorMapMagic = 0x41544d31; // "ATM1"

struct LaunchConfig {
  uint32_t grid[3] = {1, 1, 1};
  uint32_t block[3] = {1, 1, 1};
  /// CTAs per cluster; {0, 0, 0}: the kernel's .reqnctapercluster, else one
  /// CTA (a launch without clusters is a grid of implicit 1x1x1 clusters).
  /// The CTAs of a cluster run together, their threads interleaved.
  uint32_t cluster[3] = {0, 0, 0};
  uint32_t dynamicShared = 0;
  /// The kernel's parameter space, laid out as its .param declarations.
  const uint8_t *params = nullptr;
  /// Report shared-memory races (slower; SharedRaces.h).
  bool raceCheck = false;
  /// 0: threads run in order until they block; else a seed for random
  /// thread orders, preemption points and copy landings.
  uint64_t scheduleSeed = 0;
};

/// What a launch did, for the performance model (bench/gpu/model.py).
/// Instructions are counted per thread; a warp issues one per 32 when its
/// lanes run together, which attnc's kernels do.
struct LaunchStats {
  uint64_t instructions = 0; // executed, summed over threads
  uint64_t byClass[ptx::kInstrClasses] = {};     // thread-instructions
  uint64_t warpByClass[ptx::kInstrClasses] = {}; // warp issues (the busiest
                                                 // lane of each warp)
  uint64_t tensorFlops = 0;       // 2 m n k per mma.sync / wgmma
  uint64_t wgmmaFlops = 0;        // the part done by wgmma
  uint64_t tensorSharedBytes = 0; // shared memory read by wgmma, ldmatrix
  uint64_t sharedBytes = 0;       // other shared-memory loads and stores
  uint64_t globalReadBytes = 0, globalWriteBytes = 0;
  uint64_t tmaRequests = 0, tmaBytes = 0;       // bulk (tensor) copies
  // Bytes bulk copies wrote into shared memory, once per destination CTA
  // (a multicast reads global memory once but fills every CTA's tile:
  // each SM's shared-memory bandwidth pays for its own copy).
  uint64_t tmaSharedBytes = 0;
  uint64_t cpAsyncRequests = 0, cpAsyncBytes = 0;
  // Bank conflicts of ld/st.shared, ldmatrix/stmatrix and cp.async writes
  // (PtxMachine.cpp states the rule): the wavefronts they took, the fewest
  // they could have taken, and the bytes they moved.
  uint64_t sharedWavefronts = 0, sharedIdealWavefronts = 0;
  uint64_t sharedWavefrontBytes = 0;
  uint64_t ctas = 0;
  void add(const LaunchStats &o);
};

/// Runs every CTA of the grid to completion; throws Fault.
LaunchStats launch(const ptx::Module &module, const ptx::Function &kernel,
                   const LaunchConfig &config, Memory &memory);

} // namespace attn::sim

#endif // ATTN_SIM_MACHINE_H
