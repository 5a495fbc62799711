//===- UpstreamTest.cpp - the simulator against MLIR's GPU integration tests ===//
//
// Each test runs one program of test/sim/upstream/ (lowered to PTX by this
// directory's CMakeLists.txt) through libattnsim_cuda.so's CUDA driver API,
// doing on the host what the upstream test's host code and MLIR's CUDA
// runtime wrappers do: the same inputs, tensor maps encoded as
// mgpuTensorMapEncodeTiledMemref encodes them (and, like it, copied to device
// memory and passed by address), the same grid, block and dynamic shared
// memory. The expected values are the ones the upstream tests' authors saw
// on NVIDIA GPUs (their CHECK lines); where upstream printed a whole matrix
// the test compares every element of it.
//
//===----------------------------------------------------------------------===//
#include "lib/Sim/CudaDriver.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <deque>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace {

// The CUDA driver API's values for the enums and attributes used here.
constexpr int kTensorMapFloat16 = 6;                // CU_TENSOR_MAP_DATA_TYPE_FLOAT16
constexpr int kTensorMapFloat32 = 7;                // CU_TENSOR_MAP_DATA_TYPE_FLOAT32
constexpr int kSwizzleNone = 0;                     // CU_TENSOR_MAP_SWIZZLE_NONE
constexpr int kSwizzle128B = 3;                     // CU_TENSOR_MAP_SWIZZLE_128B
constexpr int kMaxDynamicSharedBytes = 8; // CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES

std::string report(CUresult result) {
  const char *text = nullptr;
  if (cuGetErrorString(result, &text) != 0 || !text)
    return "error " + std::to_string(result);
  return "error " + std::to_string(result) + ": " + text;
}

#define CU_ASSERT(call)                                                        \
  do {                                                                         \
    CUresult result_ = (call);                                                 \
    ASSERT_EQ(result_, 0) << #call << " -> " << report(result_);               \
  } while (0)

std::string readPtx(const std::string &name) {
  std::ifstream in(std::string(ATTN_SIM_PTX_DIR) + "/" + name + ".ptx");
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

/// Kernel parameters as MLIR lowers a gpu.func's signature: a memref becomes
/// (allocated, aligned, offset, sizes..., strides...), all 64-bit; a
/// tensor map (an !llvm.ptr) its device address.
class Params {
public:
  void pointer(CUdeviceptr p) { push(p); }
  void memref(CUdeviceptr p, const std::vector<int64_t> &sizes) {
    push(p);
    push(p);
    push(0);
    for (int64_t s : sizes)
      push(static_cast<uint64_t>(s));
    std::vector<int64_t> strides(sizes.size(), 1);
    for (size_t i = sizes.size() - 1; i > 0; --i)
      strides[i - 1] = strides[i] * sizes[i];
    for (int64_t s : strides)
      push(static_cast<uint64_t>(s));
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

struct Launch {
  unsigned grid[3] = {1, 1, 1};
  unsigned block[3] = {1, 1, 1};
  unsigned sharedBytes = 0;
};

class UpstreamTest : public ::testing::Test {
protected:
  void SetUp() override {
    CU_ASSERT(cuInit(0));
    CUdevice device;
    CU_ASSERT(cuDeviceGet(&device, 0));
    CUcontext context;
    CU_ASSERT(cuDevicePrimaryCtxRetain(&context, device));
    CU_ASSERT(cuCtxSetCurrent(context));
  }

  void TearDown() override {
    for (CUdeviceptr p : allocations)
      cuMemFree_v2(p);
    if (module)
      cuModuleUnload(module);
  }

  /// Loads test/sim/upstream/<program>.mlir's PTX and finds `kernel`.
  void load(const std::string &program, const char *kernel) {
    std::string ptx = readPtx(program);
    ASSERT_FALSE(ptx.empty()) << "no PTX for " << program << " in "
                              << ATTN_SIM_PTX_DIR;
    CU_ASSERT(cuModuleLoadData(&module, ptx.c_str()));
    CU_ASSERT(cuModuleGetFunction(&function, module, kernel));
  }

  CUdeviceptr alloc(size_t bytes) {
    CUdeviceptr p = 0;
    CUresult result = cuMemAlloc_v2(&p, bytes);
    EXPECT_EQ(result, 0) << report(result);
    allocations.push_back(p);
    return p;
  }

  template <typename T> CUdeviceptr upload(const std::vector<T> &host) {
    CUdeviceptr p = alloc(host.size() * sizeof(T));
    CUresult result = cuMemcpyHtoD_v2(p, host.data(), host.size() * sizeof(T));
    EXPECT_EQ(result, 0) << report(result);
    return p;
  }

  template <typename T> std::vector<T> download(CUdeviceptr p, size_t count) {
    std::vector<T> host(count);
    CUresult result = cuMemcpyDtoH_v2(host.data(), p, count * sizeof(T));
    EXPECT_EQ(result, 0) << report(result);
    return host;
  }

  /// mgpuTensorMapEncodeTiledMemref for a row-major memref of `sizes` at
  /// `base`: dimensions, byte strides and box reversed (innermost first),
  /// element strides 1, no interleave, no L2 promotion, zero OOB fill; the
  /// 128-byte map copied to device memory, whose address the kernel gets.
  CUdeviceptr tensorMap(CUdeviceptr base, int dataType, size_t elementBytes,
                        const std::vector<uint64_t> &sizes,
                        const std::vector<uint32_t> &box, int swizzle) {
    uint32_t rank = static_cast<uint32_t>(sizes.size());
    uint64_t globalDim[5] = {1, 1, 1, 1, 1}, globalStrides[5] = {0};
    uint32_t boxDim[5] = {1, 1, 1, 1, 1}, elementStrides[5] = {1, 1, 1, 1, 1};
    for (uint32_t i = 0; i < rank; ++i) {
      globalDim[i] = sizes[rank - 1 - i];
      boxDim[i] = box[rank - 1 - i];
    }
    uint64_t stride = elementBytes;
    for (uint32_t i = 0; i + 1 < rank; ++i) {
      stride *= globalDim[i];
      globalStrides[i] = stride;
    }
    alignas(64) unsigned char map[128];
    std::memset(map, 0, sizeof(map));
    CUresult result = cuTensorMapEncodeTiled(
        map, dataType, rank, reinterpret_cast<void *>(base), globalDim,
        globalStrides, boxDim, elementStrides, /*interleave=*/0, swizzle,
        /*l2Promotion=*/0, /*oobFill=*/0);
    EXPECT_EQ(result, 0) << report(result);
    CUdeviceptr device = alloc(sizeof(map));
    result = cuMemcpyHtoD_v2(device, map, sizeof(map));
    EXPECT_EQ(result, 0) << report(result);
    return device;
  }

  void run(const Launch &launch, Params &params) {
    if (launch.sharedBytes > 48 * 1024)
      CU_ASSERT(cuFuncSetAttribute(function, kMaxDynamicSharedBytes,
                                   static_cast<int>(launch.sharedBytes)));
    CU_ASSERT(cuLaunchKernel(function, launch.grid[0], launch.grid[1],
                             launch.grid[2], launch.block[0], launch.block[1],
                             launch.block[2], launch.sharedBytes, nullptr,
                             params.data(), nullptr));
    CU_ASSERT(cuCtxSynchronize());
  }

  CUmodule module = nullptr;
  CUfunction function = nullptr;
  std::vector<CUdeviceptr> allocations;
};

uint16_t halfBits(float value) {
  _Float16 h = static_cast<_Float16>(value);
  uint16_t bits;
  std::memcpy(&bits, &h, sizeof(bits));
  return bits;
}

float halfValue(uint16_t bits) {
  _Float16 h;
  std::memcpy(&h, &bits, sizeof(h));
  return static_cast<float>(h);
}

/// What mlir_runner_utils' printMemrefF32 prints for `v` (std::ostream's
/// default: %g with 6 significant digits), the text the CHECK lines match.
std::string printed(float v) {
  char text[32];
  std::snprintf(text, sizeof(text), "%g", static_cast<double>(v));
  return text;
}

//===----------------------------------------------------------------------===//
// TensorCore/sm80/transform-mma-sync-matmul-f32.mlir
//===----------------------------------------------------------------------===//

TEST_F(UpstreamTest, MmaSyncTf32_16x8x4) {
  ASSERT_NO_FATAL_FAILURE(load("mma_sync_tf32_16x8x4", "mma_tf32_16x8x4"));
  std::vector<float> lhs(16 * 4), rhs(4 * 8), acc(16 * 8);
  for (int r = 0; r < 16; ++r)
    for (int c = 0; c < 4; ++c)
      lhs[r * 4 + c] = float(r * 4 + c);
  for (int r = 0; r < 4; ++r)
    for (int c = 0; c < 8; ++c)
      rhs[r * 8 + c] = float(r * 8 + c);
  for (int r = 0; r < 16; ++r)
    for (int c = 0; c < 8; ++c)
      acc[r * 8 + c] = float(r * 8 + c);
  CUdeviceptr dLhs = upload(lhs), dRhs = upload(rhs), dAcc = upload(acc);
  Params params;
  params.memref(dLhs, {16, 4});
  params.memref(dRhs, {4, 8});
  params.memref(dAcc, {16, 8});
  Launch launch;
  launch.block[0] = 32;
  ASSERT_NO_FATAL_FAILURE(run(launch, params));
  std::vector<float> got = download<float>(dAcc, 16 * 8);

  // The result memref as upstream printed it after the kernel.
  static const int expected[16][8] = {
      {112, 119, 126, 133, 140, 147, 154, 161},
      {312, 335, 358, 381, 404, 427, 450, 473},
      {512, 551, 590, 629, 668, 707, 746, 785},
      {712, 767, 822, 877, 932, 987, 1042, 1097},
      {912, 983, 1054, 1125, 1196, 1267, 1338, 1409},
      {1112, 1199, 1286, 1373, 1460, 1547, 1634, 1721},
      {1312, 1415, 1518, 1621, 1724, 1827, 1930, 2033},
      {1512, 1631, 1750, 1869, 1988, 2107, 2226, 2345},
      {1712, 1847, 1982, 2117, 2252, 2387, 2522, 2657},
      {1912, 2063, 2214, 2365, 2516, 2667, 2818, 2969},
      {2112, 2279, 2446, 2613, 2780, 2947, 3114, 3281},
      {2312, 2495, 2678, 2861, 3044, 3227, 3410, 3593},
      {2512, 2711, 2910, 3109, 3308, 3507, 3706, 3905},
      {2712, 2927, 3142, 3357, 3572, 3787, 4002, 4217},
      {2912, 3143, 3374, 3605, 3836, 4067, 4298, 4529},
      {3112, 3359, 3606, 3853, 4100, 4347, 4594, 4841}};
  for (int r = 0; r < 16; ++r)
    for (int c = 0; c < 8; ++c)
      EXPECT_EQ(printed(got[r * 8 + c]), printed(float(expected[r][c])))
          << "res[" << r << "][" << c << "]";
}

//===----------------------------------------------------------------------===//
// TensorCore/sm80/transform-mma-sync-matmul-f16-f16-accum.mlir
//===----------------------------------------------------------------------===//

// The result memref as upstream printed it after the kernel.
const float kF16AccumExpected[16][8] = {
    {2.42188f, 2.4668f, 2.51172f, 2.55664f, 2.60156f, 2.64648f, 2.69141f, 2.73633f},
    {6.29688f, 6.40625f, 6.51172f, 6.61719f, 6.72656f, 6.83594f, 6.94141f, 7.04688f},
    {10.1719f, 10.3438f, 10.5156f, 10.6797f, 10.8516f, 11.0234f, 11.1875f, 11.3594f},
    {14.0469f, 14.2812f, 14.5156f, 14.7422f, 14.9766f, 15.2109f, 15.4375f, 15.6719f},
    {17.9219f, 18.2188f, 18.5156f, 18.8125f, 19.0938f, 19.3906f, 19.6875f, 19.9844f},
    {21.7969f, 22.1562f, 22.5156f, 22.875f, 23.2188f, 23.5781f, 23.9375f, 24.2969f},
    {25.6719f, 26.0938f, 26.5156f, 26.9375f, 27.3438f, 27.7656f, 28.1875f, 28.6094f},
    {29.5469f, 30.0312f, 30.5156f, 31.0f, 31.4688f, 31.9531f, 32.4375f, 32.9375f},
    {33.4375f, 33.9688f, 34.5f, 35.0625f, 35.5938f, 36.1562f, 36.6875f, 37.25f},
    {37.3125f, 37.9062f, 38.5f, 39.125f, 39.7188f, 40.3438f, 40.9375f, 41.5625f},
    {41.1875f, 41.8438f, 42.5f, 43.1875f, 43.8438f, 44.5312f, 45.1875f, 45.875f},
    {45.0625f, 45.7812f, 46.5f, 47.25f, 47.9688f, 48.7188f, 49.4375f, 50.1875f},
    {48.9375f, 49.7188f, 50.5f, 51.3125f, 52.0938f, 52.9062f, 53.6875f, 54.5f},
    {52.8125f, 53.6562f, 54.5f, 55.375f, 56.2188f, 57.0938f, 57.9375f, 58.8125f},
    {56.6875f, 57.5938f, 58.5f, 59.4375f, 60.3438f, 61.2812f, 62.1875f, 63.125f},
    {60.5625f, 61.5312f, 62.5f, 63.5f, 64.5f, 65.4375f, 66.4375f, 67.4375f}};

class UpstreamF16Test : public UpstreamTest {
protected:
  /// Runs `kernel` of `program` on the f16 test's inputs (linspace / 64)
  /// and compares the 16x8 result with the upstream printout.
  void runF16Accum(const std::string &program, const char *kernel) {
    ASSERT_NO_FATAL_FAILURE(load(program, kernel));
    std::vector<uint16_t> lhs(16 * 16), rhs(16 * 8), acc(16 * 8);
    // compute_linspace_val: (r * stride + c) as f16, divided by 64 in f16.
    auto linspace = [](int r, int c, int stride) {
      _Float16 v = static_cast<_Float16>(r * stride + c);
      _Float16 q = v / static_cast<_Float16>(64.0f);
      return halfBits(static_cast<float>(q));
    };
    for (int r = 0; r < 16; ++r)
      for (int c = 0; c < 16; ++c)
        lhs[r * 16 + c] = linspace(r, c, 16);
    for (int r = 0; r < 16; ++r)
      for (int c = 0; c < 8; ++c) {
        rhs[r * 8 + c] = linspace(r, c, 8);
        acc[r * 8 + c] = linspace(r, c, 8);
      }
    CUdeviceptr dLhs = upload(lhs), dRhs = upload(rhs), dAcc = upload(acc);
    Params params;
    params.memref(dLhs, {16, 16});
    params.memref(dRhs, {16, 8});
    params.memref(dAcc, {16, 8});
    Launch launch;
    launch.block[0] = 32;
    ASSERT_NO_FATAL_FAILURE(run(launch, params));
    std::vector<uint16_t> got = download<uint16_t>(dAcc, 16 * 8);
    for (int r = 0; r < 16; ++r)
      for (int c = 0; c < 8; ++c)
        EXPECT_EQ(printed(halfValue(got[r * 8 + c])),
                  printed(kF16AccumExpected[r][c]))
            << "res[" << r << "][" << c << "]";
  }
};

TEST_F(UpstreamF16Test, MmaSyncF16Accum_16x8x16) {
  runF16Accum("mma_sync_f16_16x8x16", "mma_f16_16x8x16");
}

// The same product with the operands brought in by cp.async and ldmatrix.
TEST_F(UpstreamF16Test, CpAsyncLdmatrixMmaSyncF16Accum) {
  runF16Accum("mma_sync_f16_cp_async_ldmatrix", "mma_f16_staged");
}

//===----------------------------------------------------------------------===//
// sm90/tma_load_64x8_8x128_noswizzle.mlir
//===----------------------------------------------------------------------===//

class TmaNoSwizzleTest : public UpstreamTest {
protected:
  void SetUp() override {
    UpstreamTest::SetUp();
    if (HasFatalFailure())
      return;
    ASSERT_NO_FATAL_FAILURE(
        load("tma_load_noswizzle_64x8_8x128", "tma_noswizzle"));
    std::vector<float> lhs(64 * 8), rhs(8 * 128, 3.0f);
    for (int r = 0; r < 64; ++r)
      for (int c = 0; c < 8; ++c)
        lhs[r * 8 + c] = float(c);
    CUdeviceptr dLhs = upload(lhs), dRhs = upload(rhs);
    CUdeviceptr lhsMap =
        tensorMap(dLhs, kTensorMapFloat32, 4, {64, 8}, {64, 8}, kSwizzleNone);
    CUdeviceptr rhsMap =
        tensorMap(dRhs, kTensorMapFloat32, 4, {8, 128}, {8, 128}, kSwizzleNone);
    CUdeviceptr dLhsOut = alloc(64 * 8 * 4), dRhsOut = alloc(8 * 128 * 4);
    CUdeviceptr dBefore = alloc(2 * 4);
    Params params;
    params.pointer(lhsMap);
    params.pointer(rhsMap);
    params.memref(dLhsOut, {64, 8});
    params.memref(dRhsOut, {8, 128});
    params.memref(dBefore, {2});
    Launch launch;
    launch.block[0] = 128;
    ASSERT_NO_FATAL_FAILURE(run(launch, params));
    lhsTile = download<float>(dLhsOut, 64 * 8);
    rhsTile = download<float>(dRhsOut, 8 * 128);
    before = download<float>(dBefore, 2);
  }

  std::vector<float> lhsTile, rhsTile, before;
};

TEST_F(TmaNoSwizzleTest, LoadedTiles) {
  // Upstream printed lhs[45][7] = 7 and rhs[7][0] = 3 ...
  ASSERT_EQ(lhsTile.size(), 64u * 8);
  EXPECT_EQ(printed(lhsTile[45 * 8 + 7]), "7");
  EXPECT_EQ(printed(rhsTile[7 * 128 + 0]), "3");
  // ... of tiles an unswizzled TMA copies verbatim.
  for (int r = 0; r < 64; ++r)
    for (int c = 0; c < 8; ++c)
      EXPECT_EQ(lhsTile[r * 8 + c], float(c)) << "lhs[" << r << "][" << c << "]";
  for (int i = 0; i < 8 * 128; ++i)
    EXPECT_EQ(rhsTile[i], 3.0f) << "rhs[" << i / 128 << "][" << i % 128 << "]";
}

// Upstream also printed shared memory before the copies, and saw zeros:
// what that GPU's shared memory held at launch, which PTX leaves undefined.
// A separate test, so that a simulator poisoning fresh shared memory fails
// only this.
TEST_F(TmaNoSwizzleTest, SharedMemoryBeforeTheCopiesAsObserved) {
  ASSERT_EQ(before.size(), 2u);
  EXPECT_EQ(printed(before[0]), "0");
  EXPECT_EQ(printed(before[1]), "0");
}

//===----------------------------------------------------------------------===//
// sm90/tma_load_128x64_swizzle128b.mlir, sm90/tma_load_64x64_swizzle128b.mlir
//===----------------------------------------------------------------------===//

TEST_F(UpstreamTest, TmaSwizzle128B) {
  ASSERT_NO_FATAL_FAILURE(load("tma_load_swizzle128b", "tma_swizzle128b"));
  std::vector<uint16_t> lhs(128 * 64), rhs(64 * 128);
  for (int r = 0; r < 128; ++r)
    for (int c = 0; c < 64; ++c)
      lhs[r * 64 + c] = halfBits(float((r * 64 + c) / 8));
  for (int r = 0; r < 64; ++r)
    for (int c = 0; c < 128; ++c)
      rhs[r * 128 + c] = halfBits(float((r * 128 + c) / 8));
  CUdeviceptr dLhs = upload(lhs), dRhs = upload(rhs);
  CUdeviceptr lhsMap =
      tensorMap(dLhs, kTensorMapFloat16, 2, {128, 64}, {128, 64}, kSwizzle128B);
  CUdeviceptr rhsMap =
      tensorMap(dRhs, kTensorMapFloat16, 2, {64, 128}, {64, 64}, kSwizzle128B);
  CUdeviceptr dLhsOut = alloc(8192 * 2), dRhsOut = alloc(8192 * 2);
  Params params;
  params.pointer(lhsMap);
  params.pointer(rhsMap);
  params.memref(dLhsOut, {8192});
  params.memref(dRhsOut, {8192});
  Launch launch;
  launch.block[0] = 128;
  ASSERT_NO_FATAL_FAILURE(run(launch, params));
  std::vector<uint16_t> lhsTile = download<uint16_t>(dLhsOut, 8192);
  std::vector<uint16_t> rhsTile = download<uint16_t>(dRhsOut, 8192);

  // The printouts, in closed form: 16-byte chunk p of 128-byte row r holds
  // the source's chunk p ^ (r % 8); every source chunk is 8 equal values.
  // The 128x64 test printed the 128x64 buffer as 128 rows: row r, chunk p
  // shows 8 r + (p ^ (r % 8)).
  for (int r = 0; r < 128; ++r)
    for (int c = 0; c < 64; ++c) {
      int p = c / 8;
      EXPECT_EQ(printed(halfValue(lhsTile[r * 64 + c])),
                std::to_string(8 * r + (p ^ (r % 8))))
          << "128x64 test, row " << r << ", column " << c;
    }
  // The 64x64 test printed its 64x128 buffer (box 0, the source's columns
  // 0-63, then box 1, columns 64-127, each 64 rows of 128 bytes) as 64 rows
  // of 128: row i is rows 2i and 2i + 1 of the 128-byte layout. Row q of box
  // b, chunk p shows 16 q + 8 b + (p ^ (q % 8)).
  for (int i = 0; i < 64; ++i)
    for (int j = 0; j < 128; ++j) {
      int flat = i * 128 + j;
      int box = flat / 4096, q = (flat % 4096) / 64, p = (flat % 64) / 8;
      EXPECT_EQ(printed(halfValue(rhsTile[flat])),
                std::to_string(16 * q + 8 * box + (p ^ (q % 8))))
          << "64x64 test, row " << i << ", column " << j;
    }
}

//===----------------------------------------------------------------------===//
// sm90/tma_load_128x128_stride_noswizzle.mlir
//===----------------------------------------------------------------------===//

TEST_F(UpstreamTest, TmaLoad4dStridedNoSwizzle) {
  ASSERT_NO_FATAL_FAILURE(
      load("tma_load_4d_strided_noswizzle", "tma_4d_strided"));
  // Upstream's f16 arithmetic, rounded after every operation.
  auto f16 = [](float v) { return static_cast<float>(static_cast<_Float16>(v)); };
  std::vector<uint16_t> src(128 * 128), dst(128 * 128, 0);
  for (int r = 0; r < 128; ++r)
    for (int c = 0; c < 128; ++c) {
      float x = f16(f16(float(r)) + f16(1.123f));
      float scaled = f16(x * f16(3.12f));
      float sum = f16(scaled + x);
      src[r * 128 + c] = halfBits(f16(f16(0.178f) / sum));
    }
  CUdeviceptr dSrc = upload(src), dDst = upload(dst);
  // The memref<2x2x64x64xf16, strided<[8192, 64, 128, 1]>> view of src:
  // innermost first, dimensions 64, 64, 2, 2 with byte strides 256, 128,
  // 16384, box [2, 2, 64, 64].
  uint64_t globalDim[4] = {64, 64, 2, 2};
  uint64_t globalStrides[3] = {128 * 2, 64 * 2, 8192 * 2};
  uint32_t boxDim[4] = {64, 64, 2, 2}, elementStrides[4] = {1, 1, 1, 1};
  alignas(64) unsigned char map[128] = {};
  CU_ASSERT(cuTensorMapEncodeTiled(map, kTensorMapFloat16, 4,
                                   reinterpret_cast<void *>(dSrc), globalDim,
                                   globalStrides, boxDim, elementStrides, 0,
                                   kSwizzleNone, 0, 0));
  CUdeviceptr dMap = alloc(sizeof(map));
  CU_ASSERT(cuMemcpyHtoD_v2(dMap, map, sizeof(map)));
  Params params;
  params.pointer(dMap);
  params.memref(dDst, {128, 128});
  Launch launch;
  launch.block[0] = 128;
  launch.sharedBytes = 32768;
  ASSERT_NO_FATAL_FAILURE(run(launch, params));
  std::vector<uint16_t> got = download<uint16_t>(dDst, 128 * 128);

  // Upstream: dst == src over columns 0-63, 8192 correct, 0 incorrect.
  int correct = 0;
  for (int r = 0; r < 128; ++r)
    for (int c = 0; c < 64; ++c)
      correct += halfValue(got[r * 128 + c]) == halfValue(src[r * 128 + c]);
  EXPECT_EQ(correct, 8192);
  for (int i = 0; i < 128 * 128; ++i)
    EXPECT_EQ(got[i], src[i]) << "dst[" << i / 128 << "][" << i % 128 << "]";
}

//===----------------------------------------------------------------------===//
// sm90/gemm_f32_f16_f16_128x128x128.mlir
//===----------------------------------------------------------------------===//

TEST_F(UpstreamTest, WgmmaTmaGemm_128x128x128) {
  ASSERT_NO_FATAL_FAILURE(load("wgmma_tma_gemm_128x128x128", "wgmma_gemm"));
  const int n = 128;
  std::vector<uint16_t> a(n * n), b(n * n);
  std::vector<float> aValue(n * n), bValue(n * n);
  for (int r = 0; r < n; ++r)
    for (int c = 0; c < n; ++c) {
      aValue[r * n + c] = float(((r * 64 + c) / 8) % 16);
      bValue[r * n + c] = float(((r * 128 + c) / 8) % 16);
      a[r * n + c] = halfBits(aValue[r * n + c]);
      b[r * n + c] = halfBits(bValue[r * n + c]);
    }
  CUdeviceptr dA = upload(a), dB = upload(b), dD = alloc(n * n * 4);
  CUdeviceptr mapA =
      tensorMap(dA, kTensorMapFloat16, 2, {128, 128}, {128, 64}, kSwizzle128B);
  CUdeviceptr mapB =
      tensorMap(dB, kTensorMapFloat16, 2, {128, 128}, {64, 64}, kSwizzle128B);
  Params params;
  params.pointer(mapA);
  params.pointer(mapB);
  params.memref(dD, {n, n});
  Launch launch;
  launch.block[0] = 128;
  launch.sharedBytes = 65536;
  ASSERT_NO_FATAL_FAILURE(run(launch, params));
  std::vector<float> d = download<float>(dD, n * n);

  // Upstream: the host's linalg.matmul (f32 accumulation), and an element
  // is correct when it differs from it by at most 1e-8. 16384 correct.
  int correct = 0;
  for (int i = 0; i < n; ++i)
    for (int j = 0; j < n; ++j) {
      float ref = 0;
      for (int k = 0; k < n; ++k)
        ref += aValue[i * n + k] * bValue[k * n + j];
      bool ok = !(1e-8f < std::fabs(ref - d[i * n + j]));
      correct += ok;
      EXPECT_TRUE(ok) << "D[" << i << "][" << j << "] = " << d[i * n + j]
                      << ", expected " << ref;
    }
  EXPECT_EQ(correct, 16384);
}

//===----------------------------------------------------------------------===//
// sm90/python/matmul.py: warp specialization, 512x128x512, 3 stages
//===----------------------------------------------------------------------===//

/// Standard normal values (Box-Muller over splitmix64), fixed seed.
class Normal {
public:
  double next() {
    if (spare) {
      spare = false;
      return second;
    }
    double u1 = (double(bits() >> 11) + 1.0) * 0x1.0p-53;
    double u2 = double(bits() >> 11) * 0x1.0p-53;
    double radius = std::sqrt(-2.0 * std::log(u1));
    second = radius * std::sin(2.0 * M_PI * u2);
    spare = true;
    return radius * std::cos(2.0 * M_PI * u2);
  }

private:
  uint64_t bits() {
    uint64_t z = (state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  uint64_t state = 2024;
  bool spare = false;
  double second = 0;
};

TEST_F(UpstreamTest, WgmmaWarpSpecializedGemm_512x128x512) {
  ASSERT_NO_FATAL_FAILURE(load("wgmma_warp_specialized_gemm", "ws_gemm"));
  const int m = 512, n = 128, k = 512;
  Normal normal;
  std::vector<uint16_t> a(m * k), b(k * n);
  std::vector<double> aValue(m * k), bValue(k * n);
  for (int i = 0; i < m * k; ++i) {
    a[i] = halfBits(float(normal.next()));
    aValue[i] = halfValue(a[i]);
  }
  for (int i = 0; i < k * n; ++i) {
    b[i] = halfBits(float(normal.next()));
    bValue[i] = halfValue(b[i]);
  }
  CUdeviceptr dA = upload(a), dB = upload(b), dD = alloc(m * n * 4);
  ASSERT_EQ(cuMemsetD8_v2(dD, 0, m * n * 4), 0);
  CUdeviceptr mapA =
      tensorMap(dA, kTensorMapFloat16, 2, {512, 512}, {128, 64}, kSwizzle128B);
  CUdeviceptr mapB =
      tensorMap(dB, kTensorMapFloat16, 2, {512, 128}, {64, 64}, kSwizzle128B);
  Params params;
  params.pointer(mapA);
  params.pointer(mapB);
  params.memref(dD, {m, n});
  Launch launch;
  launch.grid[0] = m / 128;
  launch.grid[1] = n / 128;
  launch.block[0] = 256;
  launch.sharedBytes = 98304; // three stages of A and B
  ASSERT_NO_FATAL_FAILURE(run(launch, params));
  std::vector<float> d = download<float>(dD, m * n);

  // np.testing.assert_allclose(c, a @ b, rtol=5e-03, atol=1e-01).
  int mismatches = 0;
  for (int i = 0; i < m; ++i)
    for (int j = 0; j < n; ++j) {
      double ref = 0;
      for (int l = 0; l < k; ++l)
        ref += aValue[i * k + l] * bValue[l * n + j];
      double got = d[i * n + j];
      if (!(std::fabs(got - ref) <= 1e-1 + 5e-3 * std::fabs(ref))) {
        if (++mismatches <= 10)
          ADD_FAILURE() << "D[" << i << "][" << j << "] = " << got
                        << ", expected " << ref;
      }
    }
  EXPECT_EQ(mismatches, 0);
}

} // namespace
