//===- AmdUpstreamTest.cpp - the AMD simulator on programs run on GPUs ----===//
//
// The kernels of MLIR's upstream ROCm integration tests
// (llvm-project mlir/test/Integration/GPU/ROCM: vecadd,
// gpu-lower-to-rocdl-pipeline, gpu-to-hsaco, two-modules,
// vector-transferops), re-created in upstream_rocm/*.mlir, lowered to code
// objects by sim-lower-to-hsaco the way attnc lowers its kernels, and run
// through libattnsim_hip.so's HIP API with the upstream tests' inputs;
// their outputs must be the ones the upstream tests check (observed on AMD
// GPUs). printf.mlir and assert.mlir need the host-call buffer and traps,
// which the simulator does not model; the WMMA tests are for RDNA3.
//
// Then MFMA programs (upstream_rocm/mfma_*.mlir) whose lanes place A, B and
// D elements where AMD's Matrix Instruction Calculator says: the result
// must be the exact matrix product; and cross-lane operations
// (upstream_rocm/lanes.mlir: DPP, ds_swizzle, ds_bpermute, v_readlane)
// against their definitions.
//
//===----------------------------------------------------------------------===//
#include "lib/Sim/HipRuntime.h"

#include <gtest/gtest.h>

#include <cstring>
#include <deque>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace {

#define HIP_ASSERT(expr)                                                       \
  do {                                                                         \
    hipError_t e_ = (expr);                                                    \
    ASSERT_EQ(e_, 0) << #expr << ": " << hipGetErrorString(e_);                \
  } while (0)

std::string readFile(const std::string &path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

/// Kernel arguments, each in its own 8-byte slot (memrefs as MLIR's
/// descriptors: allocated and aligned pointers, offset, sizes, strides).
class Args {
public:
  void pointer(const void *p) { push(reinterpret_cast<uint64_t>(p)); }
  void i64(int64_t v) { push(uint64_t(v)); }
  void f32(float v) {
    uint32_t b;
    std::memcpy(&b, &v, 4);
    push(b);
  }
  void memref(const void *p, std::vector<int64_t> sizes) {
    pointer(p);
    pointer(p);
    i64(0);
    for (int64_t s : sizes)
      i64(s);
    int64_t stride = 1;
    std::vector<int64_t> strides(sizes.size());
    for (size_t i = sizes.size(); i-- > 0;) {
      strides[i] = stride;
      stride *= sizes[i];
    }
    for (int64_t s : strides)
      i64(s);
  }
  void **data() { return addresses.data(); }

private:
  void push(uint64_t v) {
    values.push_back(v);
    addresses.push_back(&values.back());
  }
  std::deque<uint64_t> values; // stable addresses
  std::vector<void *> addresses;
};

class AmdUpstream : public ::testing::TestWithParam<const char *> {
public:
  void SetUp() override { HIP_ASSERT(hipInit(0)); }
  void TearDown() override {
    for (void *p : allocations)
      hipFree(p);
    for (hipModule_t m : modules)
      hipModuleUnload(m);
  }
  const char *chip() const { return GetParam(); }

  /// upstream_rocm/<program>.mlir's code object for this chip, `kernel` in it.
  hipFunction_t load(const std::string &program, const char *kernel,
                     const char *chipName = nullptr) {
    std::string path = std::string(ATTN_SIM_HSACO_DIR) + "/" + program + "." +
                       (chipName ? chipName : chip()) + ".hsaco";
    images.push_back(readFile(path));
    EXPECT_GT(images.back().size(), 4u) << "no code object " << path;
    hipModule_t m = nullptr;
    hipFunction_t f = nullptr;
    EXPECT_EQ(hipModuleLoadData(&m, images.back().data()), 0)
        << hipGetErrorString(1);
    modules.push_back(m);
    EXPECT_EQ(hipModuleGetFunction(&f, m, kernel), 0) << kernel;
    return f;
  }

  template <typename T> T *upload(const std::vector<T> &host) {
    void *p = nullptr;
    EXPECT_EQ(hipMalloc(&p, host.size() * sizeof(T)), 0);
    allocations.push_back(p);
    EXPECT_EQ(hipMemcpy(p, host.data(), host.size() * sizeof(T), 1), 0);
    return static_cast<T *>(p);
  }
  template <typename T> std::vector<T> download(const T *p, size_t n) {
    std::vector<T> host(n);
    EXPECT_EQ(hipMemcpy(host.data(), p, n * sizeof(T), 2), 0);
    return host;
  }
  void launch(hipFunction_t f, unsigned threads, Args &args) {
    hipError_t e = hipModuleLaunchKernel(f, 1, 1, 1, threads, 1, 1, 0,
                                         nullptr, args.data(), nullptr);
    EXPECT_EQ(e, 0) << hipGetErrorString(e);
  }

  std::deque<std::string> images;
  std::vector<void *> allocations;
  std::vector<hipModule_t> modules;
};

// vecadd.mlir / gpu-lower-to-rocdl-pipeline.mlir: CHECK: [2.46, 2.46, 2.46,
// 2.46, 2.46].
TEST_P(AmdUpstream, VecAdd) {
  hipFunction_t f = load("vecadd", "vecadd");
  std::vector<float> in(5, 1.23f);
  float *a = upload(in), *b = upload(in), *c = upload(std::vector<float>(5));
  Args args;
  args.memref(a, {5});
  args.memref(b, {5});
  args.memref(c, {5});
  launch(f, 5, args);
  for (float v : download(c, 5))
    EXPECT_EQ(v, 1.23f + 1.23f); // prints as 2.46
}

// gpu-to-hsaco.mlir: CHECK: [1, 1, 1, 1, 1].
TEST_P(AmdUpstream, StoreScalarArgument) {
  hipFunction_t f = load("store_param", "other_func");
  float *out = upload(std::vector<float>(5, 0.0f));
  Args args;
  args.f32(1.0f);
  args.memref(out, {5});
  launch(f, 5, args);
  EXPECT_EQ(download(out, 5), std::vector<float>(5, 1.0f));
}

// two-modules.mlir: two modules' kernels in turn; CHECK: [0, 1, ..., 12].
TEST_P(AmdUpstream, TwoModules) {
  hipFunction_t first = load("two_modules_first", "store_tid_first");
  hipFunction_t second = load("two_modules_second", "store_tid_second");
  int32_t *dst = upload(std::vector<int32_t>(13, -1));
  for (hipFunction_t f : {first, second}) {
    Args args;
    args.memref(dst, {13});
    launch(f, 13, args);
  }
  std::vector<int32_t> expected(13);
  for (int i = 0; i < 13; ++i)
    expected[i] = i;
  EXPECT_EQ(download(dst, 13), expected);
}

// vector-transferops.mlir: buffer loads and stores through a V#.
// CHECK: [1.23, 2.46, 2.46, 1.23], then CHECK: [2.46, 2.46, 2.46, 2.46].
TEST_P(AmdUpstream, BufferTransfers) {
  hipFunction_t x2 = load("buffer_transfer", "vectransferx2");
  hipFunction_t x4 = load("buffer_transfer", "vectransferx4");
  std::vector<float> init(4, 1.23f);
  float *a0 = upload(init), *a1 = upload(init);
  Args args2;
  args2.memref(a0, {4});
  args2.memref(a1, {4});
  launch(x2, 1, args2);
  float d = 1.23f + 1.23f;
  EXPECT_EQ(download(a1, 4), (std::vector<float>{1.23f, d, d, 1.23f}));
  Args args4;
  args4.memref(a0, {4});
  args4.memref(a1, {4});
  launch(x4, 1, args4);
  EXPECT_EQ(download(a1, 4), std::vector<float>(4, d));
}

//===----------------------------------------------------------------------===//
// MFMA programs
//===----------------------------------------------------------------------===//

uint16_t toF16(double v) {
  _Float16 h = static_cast<_Float16>(v);
  uint16_t b;
  std::memcpy(&b, &h, 2);
  return b;
}
uint16_t toBf16(double v) { // exact for the values used
  float f = static_cast<float>(v);
  uint32_t b;
  std::memcpy(&b, &f, 4);
  return static_cast<uint16_t>(b >> 16);
}
// Small values exact in f16 / bf16 products and f32 sums.
double aValue(int i, int k) { return (((i * 7 + k * 3) % 9) - 4) * 0.5; }
double bValue(int k, int j) { return (((k * 5 + j * 11) % 7) - 3) * 0.25; }

/// D = A x B (row-major M x K and K x N) in double.
std::vector<double> product(const std::vector<double> &a,
                            const std::vector<double> &b, int M, int N, int K) {
  std::vector<double> d(size_t(M) * N, 0.0);
  for (int i = 0; i < M; ++i)
    for (int j = 0; j < N; ++j)
      for (int k = 0; k < K; ++k)
        d[i * N + j] += a[i * K + k] * b[k * N + j];
  return d;
}

void fill(std::vector<double> &a, std::vector<double> &b, int M, int N, int K,
          int blocks = 1) {
  a.resize(size_t(blocks) * M * K);
  b.resize(size_t(blocks) * K * N);
  for (int blk = 0; blk < blocks; ++blk) {
    for (int i = 0; i < M; ++i)
      for (int k = 0; k < K; ++k)
        a[(blk * M + i) * K + k] = aValue(i + blk, k);
    for (int k = 0; k < K; ++k)
      for (int j = 0; j < N; ++j)
        b[(blk * K + k) * N + j] = bValue(k, j + 3 * blk);
  }
}

template <typename In>
void runFloatMfma(AmdUpstream &t, hipFunction_t f, int M, int N, int K,
                  int blocks, In (*convert)(double)) {
  std::vector<double> a, b;
  fill(a, b, M, N, K, blocks);
  std::vector<In> ha, hb;
  for (double v : a)
    ha.push_back(convert(v));
  for (double v : b)
    hb.push_back(convert(v));
  std::vector<int64_t> aShape = {M, K}, bShape = {K, N}, dShape = {M, N};
  if (blocks > 1) {
    aShape.insert(aShape.begin(), blocks);
    bShape.insert(bShape.begin(), blocks);
    dShape.insert(dShape.begin(), blocks);
  }
  In *da = t.upload(ha), *db = t.upload(hb);
  float *dd = t.upload(std::vector<float>(size_t(blocks) * M * N, -7.0f));
  Args args;
  args.memref(da, aShape);
  args.memref(db, bShape);
  args.memref(dd, dShape);
  t.launch(f, 64, args);
  std::vector<float> got = t.download(dd, size_t(blocks) * M * N);
  for (int blk = 0; blk < blocks; ++blk) {
    std::vector<double> pa(a.begin() + blk * M * K,
                           a.begin() + (blk + 1) * M * K);
    std::vector<double> pb(b.begin() + blk * K * N,
                           b.begin() + (blk + 1) * K * N);
    std::vector<double> want = product(pa, pb, M, N, K);
    for (int i = 0; i < M * N; ++i)
      ASSERT_EQ(got[blk * M * N + i], float(want[i]))
          << "block " << blk << " D[" << i / N << "][" << i % N << "]";
  }
}

TEST_P(AmdUpstream, MfmaF16AndBf16) {
  runFloatMfma<uint16_t>(*this, load("mfma_common", "mfma_16x16x16_f16"), 16,
                         16, 16, 1, toF16);
  runFloatMfma<uint16_t>(*this, load("mfma_common", "mfma_16x16x16_bf16"), 16,
                         16, 16, 1, toBf16);
  runFloatMfma<uint16_t>(*this, load("mfma_common", "mfma_32x32x8_f16"), 32,
                         32, 8, 1, toF16);
  runFloatMfma<uint16_t>(*this, load("mfma_common", "mfma_4x4x4_16b_f16"), 4,
                         4, 4, 16, toF16);
}

TEST_P(AmdUpstream, MfmaInt8) {
  bool cdna3 = std::string(chip()) == "gfx942";
  int K = cdna3 ? 32 : 16;
  hipFunction_t f =
      cdna3 ? load("mfma_i8_gfx942", "mfma_16x16x32_i8")
            : load("mfma_i8_gfx90a", "mfma_16x16x16_i8");
  std::vector<int8_t> a(16 * K), b(K * 16);
  for (int i = 0; i < 16; ++i)
    for (int k = 0; k < K; ++k)
      a[i * K + k] = int8_t((i * 37 + k * 11) % 255 - 127);
  for (int k = 0; k < K; ++k)
    for (int j = 0; j < 16; ++j)
      b[k * 16 + j] = int8_t((k * 13 + j * 29) % 251 - 125);
  int8_t *da = upload(a), *db = upload(b);
  int32_t *dd = upload(std::vector<int32_t>(256, 0));
  Args args;
  args.memref(da, {16, K});
  args.memref(db, {K, 16});
  args.memref(dd, {16, 16});
  launch(f, 64, args);
  std::vector<int32_t> got = download(dd, 256);
  for (int i = 0; i < 16; ++i)
    for (int j = 0; j < 16; ++j) {
      int32_t want = 0;
      for (int k = 0; k < K; ++k)
        want += int32_t(a[i * K + k]) * b[k * 16 + j];
      ASSERT_EQ(got[i * 16 + j], want) << "D[" << i << "][" << j << "]";
    }
}

// FNUZ fp8 codes (bias 8 for E4M3, 16 for E5M2; 0x80 is NaN) of exact
// values: {value, E4M3FNUZ, E5M2FNUZ}.
struct Fp8Code {
  double value;
  uint8_t e4m3, e5m2;
};
const Fp8Code kFp8Codes[] = {{0.0, 0x00, 0x00},   {0.5, 0x38, 0x3C},
                             {1.0, 0x40, 0x40},   {1.5, 0x44, 0x42},
                             {2.0, 0x48, 0x44},   {-0.5, 0xB8, 0xBC},
                             {-1.0, 0xC0, 0xC0},  {-2.0, 0xC8, 0xC4},
                             {0.25, 0x30, 0x38}};

TEST_P(AmdUpstream, MfmaFp8) {
  if (std::string(chip()) != "gfx942")
    GTEST_SKIP() << "gfx90a has no fp8 matrix instructions";
  for (bool bf8 : {false, true}) {
    hipFunction_t f = load("mfma_fp8_gfx942", bf8 ? "mfma_16x16x32_bf8_fp8"
                                                  : "mfma_16x16x32_fp8_fp8");
    const int K = 32;
    std::vector<uint8_t> a(16 * K), b(K * 16);
    std::vector<double> av(16 * K), bv(K * 16);
    for (int i = 0; i < 16 * K; ++i) {
      const Fp8Code &c = kFp8Codes[(i * 7 + i / K) % 9];
      a[i] = bf8 ? c.e5m2 : c.e4m3;
      av[i] = c.value;
    }
    for (int i = 0; i < K * 16; ++i) {
      const Fp8Code &c = kFp8Codes[(i * 5 + 3) % 9];
      b[i] = c.e4m3;
      bv[i] = c.value;
    }
    uint8_t *da = upload(a), *db = upload(b);
    float *dd = upload(std::vector<float>(256, -7.0f));
    Args args;
    args.memref(da, {16, K});
    args.memref(db, {K, 16});
    args.memref(dd, {16, 16});
    launch(f, 64, args);
    std::vector<float> got = download(dd, 256);
    std::vector<double> want = product(av, bv, 16, 16, K);
    for (int i = 0; i < 256; ++i)
      ASSERT_EQ(got[i], float(want[i])) << (bf8 ? "bf8" : "fp8") << " D["
                                        << i / 16 << "][" << i % 16 << "]";
  }
}

//===----------------------------------------------------------------------===//
// Cross-lane operations
//===----------------------------------------------------------------------===//

TEST_P(AmdUpstream, CrossLaneOperations) {
  std::vector<int32_t> in(64);
  for (int l = 0; l < 64; ++l)
    in[l] = 3 * l + 7;
  auto expect = [&](const char *kernel, auto want) {
    SCOPED_TRACE(kernel);
    hipFunction_t f = load("lanes", kernel);
    int32_t *din = upload(in), *dout = upload(std::vector<int32_t>(64, -5));
    Args args;
    args.memref(din, {64});
    args.memref(dout, {64});
    launch(f, 64, args);
    std::vector<int32_t> got = download(dout, 64);
    for (int l = 0; l < 64; ++l)
      EXPECT_EQ(got[l], want(l)) << "lane " << l;
  };
  expect("shuffle_xor", [&](int l) { return in[l ^ 5]; });
  expect("shuffle_idx", [&](int l) { return in[63 - l]; });
  expect("dpp_quad_perm", [&](int l) { return in[(l & ~3) | (3 - l % 4)]; });
  // Lane 0 of each row has no source: bound_ctrl writes 0.
  expect("dpp_row_shr", [&](int l) { return l % 16 ? in[l - 1] : 0; });
  // Rows 1 and 3 (row_mask 0xa) get lane 15 of the row before; rows 0 and
  // 2 keep the old value (in + 1000).
  expect("dpp_row_bcast15", [&](int l) {
    int row = l / 16;
    return row % 2 ? in[row * 16 - 1] : in[l] + 1000;
  });
  // Lane 0 has no source and no bound_ctrl: not written.
  expect("dpp_wave_shr", [&](int l) { return l ? in[l - 1] : in[0] + 1000; });
  // Bitmask mode, and_mask 31, or_mask 0, xor_mask 16, within 32 lanes.
  expect("swizzle", [&](int l) { return in[(l & 32) | ((l & 31) ^ 16)]; });
  expect("readlane", [&](int) { return in[5]; });
}

// Flat loads and stores reaching LDS through the shared aperture.
TEST_P(AmdUpstream, FlatAddressingOfLds) {
  hipFunction_t f = load("flat_lds", "flat_lds");
  for (int useLds : {1, 0}) {
    int32_t *out = upload(std::vector<int32_t>(64, -1));
    int32_t *other = upload(std::vector<int32_t>(64, -1));
    Args args;
    args.memref(out, {64});
    args.memref(other, {64});
    args.i64(useLds);
    launch(f, 64, args);
    std::vector<int32_t> got = download(out, 64);
    for (int l = 0; l < 64; ++l)
      EXPECT_EQ(got[l], 3 * ((l + 1) % 64) + 1) << "lane " << l;
    // The global buffer is untouched when the LDS one is chosen.
    EXPECT_EQ(download(other, 64)[0], useLds ? -1 : 1);
  }
}

// What the runtime refuses, with HIP's codes.
TEST_P(AmdUpstream, RuntimeErrors) {
  hipModule_t m = nullptr;
  const char notElf[] = "not a code object";
  EXPECT_EQ(hipModuleLoadData(&m, notElf), 200);
  hipFunction_t f = load("vecadd", "vecadd");
  hipFunction_t missing = nullptr;
  EXPECT_EQ(hipModuleGetFunction(&missing, modules.back(), "no_such_kernel"),
            500);
  EXPECT_NE(std::string(hipGetErrorString(500)).find("no_such_kernel"),
            std::string::npos);
  Args args;
  // More work-items than the kernel's max_flat_workgroup_size / 1024, and
  // more LDS than a workgroup has.
  EXPECT_EQ(hipModuleLaunchKernel(f, 1, 1, 1, 2048, 1, 1, 0, nullptr,
                                  args.data(), nullptr),
            1);
  EXPECT_EQ(hipModuleLaunchKernel(f, 1, 1, 1, 64, 1, 1, 200 * 1024, nullptr,
                                  args.data(), nullptr),
            1);
  EXPECT_NE(std::string(hipGetErrorString(1)).find("LDS"), std::string::npos);
  // Copies outside device memory.
  std::vector<char> host(16);
  EXPECT_EQ(hipMemcpy(host.data(), host.data() + 8, 8, 2), 1);
  int count = 0, cus = 0, device = -1;
  EXPECT_EQ(hipGetDeviceCount(&count), 0);
  EXPECT_EQ(count, 1);
  EXPECT_EQ(hipGetDevice(&device), 0);
  EXPECT_EQ(hipDeviceGetAttribute(&cus, 63, device), 0);
  EXPECT_GT(cus, 0);
}

//===----------------------------------------------------------------------===//
// Faults (gfx942)
//===----------------------------------------------------------------------===//

class AmdFaults : public AmdUpstream {};

/// Launches `kernel` of faults.mlir on `threads` work-items over a 64-int
/// buffer; returns the error and its report.
std::pair<hipError_t, std::string> runFault(AmdUpstream &t,
                                            const char *kernel,
                                            unsigned threads, Args &args) {
  hipFunction_t f = t.load("faults", kernel, "gfx942");
  hipError_t e = hipModuleLaunchKernel(f, 1, 1, 1, threads, 1, 1, 0, nullptr,
                                       args.data(), nullptr);
  return {e, e ? hipGetErrorString(e) : ""};
}

void expectReport(const std::pair<hipError_t, std::string> &r, int code,
                  std::vector<std::string> words) {
  EXPECT_EQ(r.first, code) << r.second;
  for (const std::string &w : words)
    EXPECT_NE(r.second.find(w), std::string::npos)
        << "'" << w << "' missing from:\n" << r.second;
}

TEST_P(AmdFaults, Reports) {
  if (std::string(chip()) != "gfx942")
    GTEST_SKIP() << "faults.mlir is built for gfx942";
  std::vector<int32_t> zeros(64, 0);
  {
    float *out = upload(std::vector<float>(5, 0.0f));
    Args args;
    args.memref(out, {5});
    expectReport(runFault(*this, "oob_store", 5, args), 700,
                 {"kernel oob_store", "workgroup (0,0,0), wave 0 lane 0 "
                  "(work-item (0,0,0))", "bytes past the end of the 20-byte "
                  "allocation", "global_store_dword"});
  }
  {
    // Two waves exchange halves of LDS: with a barrier the race check is
    // quiet and every lane gets the other half's value; without one it
    // reports the unordered write and read.
    setenv("ATTNSIM_RACECHECK", "1", 1);
    for (int sync : {1, 0}) {
      float *out = upload(std::vector<float>(128, -1.0f));
      Args args;
      args.memref(out, {128});
      args.i64(sync);
      auto r = runFault(*this, "lds_exchange", 128, args);
      if (sync) {
        EXPECT_EQ(r.first, 0) << r.second;
        std::vector<float> got = download(out, 128);
        for (int l = 0; l < 128; ++l)
          EXPECT_EQ(got[l], float((l + 64) % 128));
      } else {
        expectReport(r, 719, {"kernel lds_exchange", "LDS race at byte",
                              "no s_barrier between", "ds_read_b32",
                              "ds_write_b32"});
      }
    }
    unsetenv("ATTNSIM_RACECHECK");
  }
  {
    int32_t *buf = upload(zeros);
    Args args;
    args.memref(buf, {64});
    expectReport(runFault(*this, "unwaited_load", 64, args), 719,
                 {"kernel unwaited_load", "is read before an s_waitcnt "
                  "retired the load writing it", "v_add_u32",
                  "global_load_dword"});
  }
  {
    int32_t *buf = upload(zeros);
    Args args;
    args.memref(buf, {64});
    expectReport(runFault(*this, "unmodelled", 64, args), 719,
                 {"kernel unmodelled", "instruction 'v_cvt_pkrtz_f16_f32' is "
                  "not modelled"});
  }
  {
    setenv("ATTNSIM_MAX_WAVE_INSTRUCTIONS", "20000", 1);
    int32_t *flag = upload(zeros);
    Args args;
    args.memref(flag, {64});
    expectReport(runFault(*this, "spin", 64, args), 702,
                 {"kernel spin", "more than 20000 instructions in one wave"});
    unsetenv("ATTNSIM_MAX_WAVE_INSTRUCTIONS");
  }
  {
    int32_t *buf = upload(zeros);
    Args args;
    args.memref(buf, {64});
    expectReport(runFault(*this, "barrier_inflight", 64, args), 719,
                 {"kernel barrier_inflight", "s_barrier with an LDS store in "
                  "flight", "ds_write_b32"});
  }
  {
    int32_t *buf = upload(zeros);
    Args args;
    args.memref(buf, {64});
    expectReport(runFault(*this, "lds_out_of_range", 64, args), 700,
                 {"kernel lds_out_of_range", "LDS access at 0x40",
                  "past the workgroup's 0 bytes of LDS", "ds_read_b32"});
  }
}

INSTANTIATE_TEST_SUITE_P(Chips, AmdFaults, ::testing::Values("gfx942"),
                         [](const auto &info) {
                           return std::string(info.param);
                         });

INSTANTIATE_TEST_SUITE_P(Chips, AmdUpstream,
                         ::testing::Values("gfx942", "gfx90a"),
                         [](const auto &info) {
                           return std::string(info.param);
                         });

} // namespace
