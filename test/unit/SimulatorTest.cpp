//===- SimulatorTest.cpp - GPU launches on a chosen simulator library -----===//
//
// attn::useGpuSimulator and Kernel::launchHost against stand-in CUDA and
// HIP runtimes (test/support/FakeGpuRuntimes.cpp): which library is opened, the
// cubin-to-PTX fallback, device copies in and out, validation before any
// allocation, and driver errors as attn::Error. The kernels' results on
// the real simulator are checked by test/Tools/simulate.test.
//
//===----------------------------------------------------------------------===//
#include "attn/jit.h"
#include "attn/runtime.h"

#include <gtest/gtest.h>

#include <dlfcn.h>

#include <cstdlib>
#include <filesystem>

using namespace attn;

namespace {

bool havePtxas() {
  if (std::getenv("ATTNC_PTXAS"))
    return true;
  for (const char *var : {"CUDA_HOME", "CUDA_PATH"})
    if (const char *root = std::getenv(var))
      if (std::filesystem::exists(std::string(root) + "/bin/ptxas"))
        return true;
  return std::filesystem::exists("/usr/local/cuda/bin/ptxas");
}

/// The fake driver's counters (fakeCudaCounts).
struct Counts {
  int cubinTries, ptxLoads, allocations, frees, launches, live;
};
Counts fakeCounts() {
  void *lib = dlopen(ATTN_FAKE_GPU, RTLD_NOW | RTLD_LOCAL);
  auto fn = reinterpret_cast<void (*)(int *)>(dlsym(lib, "fakeCudaCounts"));
  Counts c{};
  fn(&c.cubinTries);
  return c;
}
void fakeFailNextLaunch(int code) {
  void *lib = dlopen(ATTN_FAKE_GPU, RTLD_NOW | RTLD_LOCAL);
  reinterpret_cast<void (*)(int)>(dlsym(lib, "fakeCudaFailNextLaunch"))(code);
}

/// Host buffers for a bf16 launch of [1, 2, 40, 64] queries over 64 keys;
/// o rows are 72 elements apart, and the gaps must survive a launch.
struct HostLaunch {
  static constexpr int64_t B = 1, H = 2, Sq = 40, Skv = 64, D = 64,
                           ORow = 72;
  std::vector<uint16_t> q, kv, o;
  HostLaunch() : q(B * H * Sq * D), kv(B * H * Skv * D), o(B * H * Sq * ORow) {
    for (size_t i = 0; i < q.size(); ++i)
      q[i] = static_cast<uint16_t>(i * 7 + 1);
    for (size_t i = 0; i < kv.size(); ++i)
      kv[i] = static_cast<uint16_t>(i);
    std::fill(o.begin(), o.end(), 0xdead);
  }
  Tensors tensors() {
    Tensors t;
    t.q = TensorRef(q.data(), DType::bf16, {B, H, Sq, D});
    t.k = TensorRef(kv.data(), DType::bf16, {B, H, Skv, D});
    t.v = TensorRef(kv.data(), DType::bf16, {B, H, Skv, D});
    t.o = TensorRef(o.data(), DType::bf16, {B, H, Sq, D},
                    {H * Sq * ORow, Sq * ORow, ORow, 1});
    return t;
  }
  bool untouched() const {
    return std::all_of(o.begin(), o.end(),
                       [](uint16_t x) { return x == 0xdead; });
  }
  /// o holds q (what the fake kernel writes), and the gaps are untouched.
  bool holdsQ() const {
    for (int64_t r = 0; r < B * H * Sq; ++r)
      for (int64_t d = 0; d < ORow; ++d)
        if (o[r * ORow + d] != (d < D ? q[r * D + d] : 0xdead))
          return false;
    return true;
  }
};

Kernel compileCausal(const std::string &target, const std::string &loads) {
  static Jit jit("");
  Options o;
  o.target = target;
  o.gpuLoads = loads;
  o.headDim = HostLaunch::D;
  return jit.compile("variant c { mask(b, h, q, kv) = kv <= q; }", o);
}

/// Restores the real drivers after each test.
class Simulator : public ::testing::Test {
protected:
  void SetUp() override {
    if (!havePtxas())
      GTEST_SKIP() << "no ptxas (CUDA toolkit) on this machine";
  }
  void TearDown() override { useGpuSimulator("", ""); }
};

TEST_F(Simulator, MissingLibraryIsAnErrorNamingItsPath) {
  Kernel k = compileCausal("sm_80", "auto");
  const std::string path = "/nonexistent/attnc/lib/libattnsim_cuda.so";
  useGpuSimulator(path);
  HostLaunch l;
  try {
    k.launchHost(l.tensors());
    ADD_FAILURE() << "expected an error naming " << path;
  } catch (const Error &e) {
    EXPECT_EQ(e.argument(), "target") << e.what();
    EXPECT_NE(std::string(e.what()).find("cannot open the GPU simulator '" +
                                         path + "'"),
              std::string::npos)
        << e.what();
  }
  EXPECT_TRUE(l.untouched());
}

TEST_F(Simulator, LaunchHostValidatesBeforeAllocating) {
  Kernel k = compileCausal("sm_80", "auto");
  useGpuSimulator(ATTN_FAKE_GPU);
  Counts before = fakeCounts();
  auto expectError = [&](const Tensors &t, const std::string &arg,
                         const std::string &text, const Params &p = {}) {
    try {
      k.launchHost(t, p);
      ADD_FAILURE() << "expected an error naming " << arg;
    } catch (const Error &e) {
      EXPECT_EQ(e.argument(), arg) << e.what();
      EXPECT_NE(std::string(e.what()).find(text), std::string::npos)
          << e.what();
    }
  };
  HostLaunch l;
  Tensors wrong = l.tensors();
  wrong.k.shape[3] = 32;
  expectError(wrong, "k", "dimension 3 (D) is 32");
  Tensors f32 = l.tensors();
  f32.v.dtype = DType::f32;
  expectError(f32, "v", "expected dtype bf16, got f32");
  Tensors rows = l.tensors();
  rows.q.strides = {HostLaunch::H * HostLaunch::Sq * 68,
                    HostLaunch::Sq * 68, 68, 1};
  expectError(rows, "q", "row strides that are multiples of 8");
  expectError(l.tensors(), "window", "has no param", {{"window", 3}});
  EXPECT_EQ(fakeCounts().allocations, before.allocations);
  EXPECT_TRUE(l.untouched());
  // Host pointers need no GPU alignment: they are copied.
  std::vector<uint16_t> shifted(l.q.size() + 1);
  std::copy(l.q.begin(), l.q.end(), shifted.begin() + 1);
  Tensors unaligned = l.tensors();
  unaligned.q.data = shifted.data() + 1;
  EXPECT_NO_THROW(k.launchHost(unaligned));
  EXPECT_EQ(fakeCounts().launches, before.launches + 1);
  EXPECT_TRUE(l.holdsQ());
}

TEST_F(Simulator, LaunchHostCopiesInAndOut) {
  Kernel k = compileCausal("sm_80", "auto");
  useGpuSimulator(ATTN_FAKE_GPU);
  Counts before = fakeCounts();
  HostLaunch l;
  k.launchHost(l.tensors());
  EXPECT_TRUE(l.holdsQ());
  Counts after = fakeCounts();
  // sm_80 code on a 9.0 device: the PTX, no cubin attempt.
  EXPECT_EQ(after.cubinTries, before.cubinTries);
  EXPECT_EQ(after.launches, before.launches + 1);
  EXPECT_EQ(after.allocations - before.allocations, 4); // q, k, v, o
  EXPECT_EQ(after.live, 0) << "device copies must be freed";
  // In place: o is exactly q's view.
  HostLaunch inPlace;
  std::vector<uint16_t> original = inPlace.q;
  Tensors t = inPlace.tensors();
  t.o = t.q;
  k.launchHost(t);
  EXPECT_EQ(inPlace.q, original);
}

TEST_F(Simulator, Sm90aCubinFallsBackToPtx) {
  for (const char *loads : {"tma", "cp.async"}) {
    Kernel k = compileCausal("sm_90a", loads);
    useGpuSimulator(ATTN_FAKE_GPU);
    Counts before = fakeCounts();
    HostLaunch l;
    k.launchHost(l.tensors());
    EXPECT_TRUE(l.holdsQ()) << loads;
    Counts after = fakeCounts();
    EXPECT_EQ(after.cubinTries, before.cubinTries + 1) << loads;
    EXPECT_EQ(after.ptxLoads, before.ptxLoads + 1) << loads;
    EXPECT_EQ(after.live, 0) << loads;
  }
}

TEST_F(Simulator, DriverErrorsAreErrorsAndWriteNothing) {
  Kernel k = compileCausal("sm_80", "auto");
  useGpuSimulator(ATTN_FAKE_GPU);
  fakeFailNextLaunch(700);
  HostLaunch l;
  try {
    k.launchHost(l.tensors());
    ADD_FAILURE() << "expected the fake fault";
  } catch (const Error &e) {
    EXPECT_NE(std::string(e.what()).find("CUDA error 700: fake fault in "
                                         "kernel, CTA (0,0,0) thread 5"),
              std::string::npos)
        << e.what();
  }
  EXPECT_TRUE(l.untouched());
  EXPECT_EQ(fakeCounts().live, 0);
}

TEST_F(Simulator, SwitchingBackNeedsTheRealDriver) {
  Kernel k = compileCausal("sm_80", "auto");
  useGpuSimulator(ATTN_FAKE_GPU);
  HostLaunch l;
  k.launchHost(l.tensors());
  useGpuSimulator("", "");
  if (std::filesystem::exists("/dev/nvidia0"))
    return;
  try {
    k.launchHost(l.tensors());
    ADD_FAILURE() << "expected no CUDA driver here";
  } catch (const Error &e) {
    EXPECT_EQ(e.argument(), "target");
    EXPECT_NE(std::string(e.what()).find("libcuda.so.1"), std::string::npos)
        << e.what();
  }
}

// gfx* kernels open the HIP library; an empty CUDA path keeps libcuda.
TEST_F(Simulator, AmdKernelsOpenTheHipLibrary) {
  Kernel k = compileCausal("gfx942", "auto");
  HostLaunch l;
  useGpuSimulator("", "/nonexistent/libattnsim_hip.so");
  try {
    k.launchHost(l.tensors());
    ADD_FAILURE() << "expected an error naming the HIP library";
  } catch (const Error &e) {
    EXPECT_EQ(e.argument(), "target") << e.what();
    EXPECT_NE(std::string(e.what()).find("/nonexistent/libattnsim_hip.so"),
              std::string::npos)
        << e.what();
  }
  useGpuSimulator("", ATTN_FAKE_GPU);
  Counts before = fakeCounts();
  k.launchHost(l.tensors());
  EXPECT_TRUE(l.holdsQ());
  Counts after = fakeCounts();
  EXPECT_EQ(after.launches, before.launches + 1);
  EXPECT_EQ(after.allocations - before.allocations, 4);
  EXPECT_EQ(after.live, 0);
}

// Without a call, ATTN_GPU_SIMULATOR picks the library at the first GPU
// launch (in a fresh process: the choice is made once).
TEST_F(Simulator, EnvironmentVariableChoosesTheLibrary) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(
      {
        setenv("ATTN_GPU_SIMULATOR", ATTN_FAKE_GPU, 1);
        Kernel k = compileCausal("sm_80", "auto");
        HostLaunch l;
        k.launchHost(l.tensors());
        std::exit(l.holdsQ() ? 0 : 1);
      },
      ::testing::ExitedWithCode(0), "");
}

TEST(SimulatorCpu, LaunchHostOfACpuKernelIsLaunch) {
  Jit jit("");
  Options o;
  o.headDim = 16;
  Kernel k = jit.compile("variant c { }", o);
  std::vector<float> q(2 * 3 * 16, 0.5f), kv(2 * 5 * 16, 1.0f),
      out(2 * 3 * 16, -7.0f);
  Tensors t;
  t.q = TensorRef(q.data(), DType::f32, {1, 2, 3, 16});
  t.k = TensorRef(kv.data(), DType::f32, {1, 2, 5, 16});
  t.v = TensorRef(kv.data(), DType::f32, {1, 2, 5, 16});
  t.o = TensorRef(out.data(), DType::f32, {1, 2, 3, 16});
  k.launchHost(t);
  for (float x : out)
    EXPECT_FLOAT_EQ(x, 1.0f);
}

} // namespace
