//===- Harness.h - run a variant through attnc and the reference ----------===//
#ifndef ATTN_TEST_HARNESS_H
#define ATTN_TEST_HARNESS_H

#include "attn/jit.h"
#include "test/reference/Reference.h"

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

namespace attn::testing {

struct Problem {
  std::string source;
  std::string filename = "<test>";
  Options options;                 // headDim etc.; variant picks one
  int64_t B = 1, Hq = 2, Hkv = 2, Sq = 77, Skv = 131;
  std::vector<std::pair<std::string, double>> params;
  /// Captured tensors given explicitly; any other capture is generated
  /// (i32: integers in [0, intRange), floating: unit normal).
  std::map<std::string, ref::RefTensor> captures;
  int32_t intRange = 3;
  double qScale = 1.0;  // > 1 makes logits large
  uint32_t seed = 1;
  int timingReps = 0;   // > 0: also time the kernel (median ms)
};

/// How the kernel's block map compares with the exact mask.
struct BlockMapCheck {
  int64_t blocks = 0;
  int64_t wronglyEmpty = 0; // EMPTY but some entry is kept: a wrong answer
  int64_t wronglyFull = 0;  // FULL but some entry is masked: a wrong answer
  int64_t emptyOrFull = 0;  // blocks the kernel proved EMPTY or FULL
  int64_t uniform = 0;      // blocks that are in fact all kept / all masked
};

struct Outcome {
  double maxErrO = 0;     // max |o - ref|
  double relL1O = 0;      // sum |o - ref| / sum |ref| (quantized K/V)
  double maxErrLse = 0;   // max |lse - ref| over finite values
  bool lseInfMismatch = false; // -inf in one, finite in the other
  bool hasNaN = false;
  double ms = 0;          // median kernel time when timed
  double refMaxAbsO = 0;  // scale of the answer, for context
  KernelInfo info;
  BlockMapCheck blockMap;
};

/// Rounds a double through a storage dtype (what the kernel will read).
double roundTo(double x, DType t);

/// Compiles `p` with a fresh Jit (or `jit` when given), runs it on random
/// inputs, and compares with the float64 reference. A GPU target
/// (p.options.target sm_80, sm_90a) runs on the functional GPU simulator
/// (see useTestGpuSimulator) through attnrt's own launcher
/// (Kernel::launchHost); its block map is not checked (GPU kernels classify
/// their tiles on the device).
Outcome runAgainstReference(const Problem &p, Jit *jit = nullptr);

/// Points attnrt's GPU launches at the simulator, once per process: the
/// library named by ATTN_GPU_SIMULATOR when set, else the one this build
/// made (lib/libattnsim_cuda.so, ATTN_SIM_CUDA_LIBRARY). Called by
/// runAgainstReference for GPU targets; an attn::Error naming "target"
/// when the build has no simulator.
void useTestGpuSimulator();

/// Reads a file into a string (for examples/).
std::string readText(const std::string &path);

} // namespace attn::testing

#endif // ATTN_TEST_HARNESS_H
