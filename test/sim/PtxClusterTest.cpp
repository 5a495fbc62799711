//===- PtxClusterTest.cpp - thread-block clusters on the PTX simulator ----===//
//
// Hand-written kernels that use clusters as the PTX ISA defines them:
// distributed shared memory (mapa, ld/st.shared::cluster, getctarank,
// isspacep), barrier.cluster, mbarrier arrivals on a peer CTA's mbarrier,
// and TMA / bulk copies multicast to several CTAs by ctaMask, with their
// counters; and the errors a bad cluster launch or access gives. Everything
// goes through the CUDA driver API of libattnsim_cuda.so.
//
//===----------------------------------------------------------------------===//
#include "lib/Sim/CudaDriver.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include <unistd.h>

namespace {

std::string errorText(CUresult r) {
  const char *text = nullptr;
  cuGetErrorString(r, &text);
  return text ? text : "";
}

struct Launch {
  unsigned grid[3] = {2, 1, 1};
  unsigned block = 32;
  /// Through cuLaunchKernelEx's cluster attribute when set.
  unsigned cluster[3] = {0, 0, 0};
};

/// Runs `k(.param .u64 out, .param .u64 arg)` of `ptx` with `out` a device
/// buffer of `words` 32-bit words (zeroed) and `arg` as given; `out` gets
/// the words back.
CUresult runKernel(const std::string &ptx, const Launch &l,
                   std::vector<uint32_t> &out, size_t words,
                   CUdeviceptr arg = 0) {
  CUmodule module = nullptr;
  if (CUresult r = cuModuleLoadData(&module, ptx.c_str()))
    return r;
  CUfunction fn = nullptr;
  if (CUresult r = cuModuleGetFunction(&fn, module, "k"))
    return r;
  CUdeviceptr buffer = 0;
  cuMemAlloc_v2(&buffer, words * 4);
  out.assign(words, 0);
  cuMemcpyHtoD_v2(buffer, out.data(), words * 4);
  void *params[] = {&buffer, &arg};
  CUresult r;
  if (l.cluster[0]) {
    CUlaunchAttribute attr{};
    attr.id = CU_LAUNCH_ATTRIBUTE_CLUSTER_DIMENSION;
    attr.value.clusterDim.x = l.cluster[0];
    attr.value.clusterDim.y = l.cluster[1];
    attr.value.clusterDim.z = l.cluster[2];
    CUlaunchConfig config{};
    config.gridDimX = l.grid[0];
    config.gridDimY = l.grid[1];
    config.gridDimZ = l.grid[2];
    config.blockDimX = l.block;
    config.blockDimY = config.blockDimZ = 1;
    config.attrs = &attr;
    config.numAttrs = 1;
    r = cuLaunchKernelEx(&config, fn, params, nullptr);
  } else {
    r = cuLaunchKernel(fn, l.grid[0], l.grid[1], l.grid[2], l.block, 1, 1, 0,
                       nullptr, params, nullptr);
  }
  cuMemcpyDtoH_v2(out.data(), buffer, words * 4);
  cuMemFree_v2(buffer);
  cuModuleUnload(module);
  return r;
}

/// A kernel `k(out, arg)` with `directives` between its parameters and body.
std::string kernel(const std::string &directives, const std::string &body) {
  return ".version 8.0\n.target sm_90a\n.address_size 64\n"
         ".visible .entry k(.param .u64 out, .param .u64 arg)\n" +
         directives + "\n{\n" + R"(
  .reg .b32 %r<64>;
  .reg .b64 %rd<32>;
  .reg .pred %p<16>;
  .reg .b16 %rs<4>;
  ld.param.u64 %rd1, [out];
  cvta.to.global.u64 %rd1, %rd1;
  ld.param.u64 %rd20, [arg];
  mov.u32 %r1, %tid.x;
  mov.u32 %r2, %cluster_ctarank;
  mov.u32 %r3, %ctaid.x;
)" + body + "\n}\n";
}

/// Appends the launches' profile lines (ATTNSIM_PROFILE) while alive.
struct Profile {
  std::string path;
  Profile() {
    path = ::testing::TempDir() + "attnsim_cluster_" +
           ::testing::UnitTest::GetInstance()->current_test_info()->name() +
           "_" + std::to_string(getpid()) + ".jsonl";
    std::remove(path.c_str());
    setenv("ATTNSIM_PROFILE", path.c_str(), 1);
  }
  ~Profile() {
    unsetenv("ATTNSIM_PROFILE");
    std::remove(path.c_str());
  }
  /// Field `name` of the last launch.
  unsigned long long field(const std::string &name) const {
    std::ifstream in(path);
    std::string line, last;
    while (std::getline(in, line))
      last = line;
    size_t at = last.find("\"" + name + "\": ");
    if (at == std::string::npos)
      return ~0ull;
    return std::stoull(last.substr(at + name.size() + 4));
  }
};

// Each thread writes rank * 100 + tid into the peer CTA's buf[tid] through
// mapa and st.shared::cluster; after barrier.cluster it reads its own buf.
// Thread 0 also stores the cluster special registers and uses the generic
// forms (mapa.u64, getctarank, isspacep, a generic ld of the peer).
const char *kExchange = R"(
  .shared .align 16 .b32 buf[32];
  xor.b32 %r4, %r2, 1;
  mov.u32 %r5, buf;
  shl.b32 %r6, %r1, 2;
  add.u32 %r7, %r5, %r6;
  mapa.shared::cluster.u32 %r8, %r7, %r4;
  mad.lo.u32 %r9, %r2, 100, %r1;
  st.shared::cluster.u32 [%r8], %r9;
  barrier.cluster.arrive.release.aligned;
  barrier.cluster.wait.acquire.aligned;
  ld.shared.u32 %r10, [%r7];
  mad.lo.u32 %r11, %r3, 32, %r1;
  mul.wide.u32 %rd2, %r11, 4;
  add.s64 %rd3, %rd1, %rd2;
  st.global.u32 [%rd3], %r10;
  setp.ne.u32 %p1, %r1, 0;
  @%p1 bra DONE;
  mul.lo.u32 %r12, %r3, 64;
  add.u32 %r12, %r12, 512;
  cvt.u64.u32 %rd4, %r12;
  add.s64 %rd5, %rd1, %rd4;
  st.global.u32 [%rd5+0], %r2;
  mov.u32 %r13, %cluster_nctarank;
  st.global.u32 [%rd5+4], %r13;
  mov.u32 %r13, %clusterid.x;
  st.global.u32 [%rd5+8], %r13;
  mov.u32 %r13, %nclusterid.x;
  st.global.u32 [%rd5+12], %r13;
  mov.u32 %r13, %cluster_ctaid.x;
  st.global.u32 [%rd5+16], %r13;
  mov.u32 %r13, %cluster_nctaid.x;
  st.global.u32 [%rd5+20], %r13;
  mov.pred %p2, %is_explicit_cluster;
  selp.u32 %r13, 1, 0, %p2;
  st.global.u32 [%rd5+24], %r13;
  cvta.shared.u64 %rd6, buf;
  mapa.u64 %rd7, %rd6, %r4;
  getctarank.u64 %r13, %rd7;
  st.global.u32 [%rd5+28], %r13;
  isspacep.shared::cluster %p3, %rd7;
  selp.u32 %r13, 1, 0, %p3;
  st.global.u32 [%rd5+32], %r13;
  isspacep.shared::cta %p4, %rd7;
  selp.u32 %r13, 1, 0, %p4;
  st.global.u32 [%rd5+36], %r13;
  ld.u32 %r13, [%rd7+4];
  st.global.u32 [%rd5+40], %r13;
  isspacep.shared::cta %p5, %rd6;
  selp.u32 %r13, 1, 0, %p5;
  st.global.u32 [%rd5+44], %r13;
  mapa.u64 %rd8, %rd6, %r2;
  sub.s64 %rd9, %rd8, %rd6;
  cvt.u32.u64 %r13, %rd9;
  st.global.u32 [%rd5+48], %r13;
DONE:
  // The peer reads this CTA's shared memory until here.
  barrier.cluster.arrive.aligned;
  barrier.cluster.wait.aligned;
  ret;
)";

void checkExchange(const std::vector<uint32_t> &out, unsigned ctas) {
  for (unsigned c = 0; c < ctas; ++c) {
    unsigned rank = c % 2, peer = rank ^ 1;
    for (unsigned t = 0; t < 32; ++t)
      EXPECT_EQ(out[c * 32 + t], peer * 100 + t) << "CTA " << c << " t" << t;
    const uint32_t *w = &out[128 + c * 16];
    EXPECT_EQ(w[0], rank) << "%cluster_ctarank of CTA " << c;
    EXPECT_EQ(w[1], 2u) << "%cluster_nctarank";
    EXPECT_EQ(w[2], c / 2) << "%clusterid.x of CTA " << c;
    EXPECT_EQ(w[3], ctas / 2) << "%nclusterid.x";
    EXPECT_EQ(w[4], rank) << "%cluster_ctaid.x";
    EXPECT_EQ(w[5], 2u) << "%cluster_nctaid.x";
    EXPECT_EQ(w[6], 1u) << "%is_explicit_cluster";
    EXPECT_EQ(w[7], peer) << "getctarank of a mapa'd generic address";
    EXPECT_EQ(w[8], 1u) << "isspacep.shared::cluster of the peer's address";
    EXPECT_EQ(w[9], 0u) << "isspacep.shared::cta of the peer's address";
    EXPECT_EQ(w[10], rank * 100 + 1) << "generic ld of the peer's buf[1]";
    EXPECT_EQ(w[11], 1u) << "isspacep.shared::cta of its own address";
    EXPECT_EQ(w[12], 0u) << "mapa to its own rank is the address itself";
  }
}

TEST(PtxCluster, DistributedSharedMemoryAndClusterRegisters) {
  // Two clusters of two CTAs from the kernel's .reqnctapercluster.
  std::vector<uint32_t> out;
  Launch l;
  l.grid[0] = 4;
  CUresult r = runKernel(kernel(".reqnctapercluster 2, 1, 1", kExchange), l,
                         out, 256);
  ASSERT_EQ(r, 0) << errorText(r);
  checkExchange(out, 4);
}

TEST(PtxCluster, ClusterShapeFromCuLaunchKernelEx) {
  std::vector<uint32_t> out;
  Launch l;
  l.grid[0] = 4;
  l.cluster[0] = 2;
  l.cluster[1] = l.cluster[2] = 1;
  CUresult r = runKernel(kernel(".explicitcluster", kExchange), l, out, 256);
  ASSERT_EQ(r, 0) << errorText(r);
  checkExchange(out, 4);
}

TEST(PtxCluster, LaunchesWithoutClustersAreOneCtaClusters) {
  std::vector<uint32_t> out;
  Launch l;
  l.grid[0] = 3;
  CUresult r = runKernel(kernel("", R"(
  mul.lo.u32 %r4, %r3, 16;
  mul.wide.u32 %rd2, %r4, 4;
  add.s64 %rd3, %rd1, %rd2;
  st.global.u32 [%rd3+0], %r2;
  mov.u32 %r5, %cluster_nctarank;
  st.global.u32 [%rd3+4], %r5;
  mov.u32 %r5, %clusterid.x;
  st.global.u32 [%rd3+8], %r5;
  mov.u32 %r5, %nclusterid.x;
  st.global.u32 [%rd3+12], %r5;
  mov.pred %p1, %is_explicit_cluster;
  selp.u32 %r5, 1, 0, %p1;
  st.global.u32 [%rd3+16], %r5;
  // barrier.cluster of a one-CTA cluster synchronizes the CTA.
  barrier.cluster.arrive;
  barrier.cluster.wait;
  ret;
)"),
                         l, out, 48);
  ASSERT_EQ(r, 0) << errorText(r);
  for (unsigned c = 0; c < 3; ++c) {
    EXPECT_EQ(out[c * 16 + 0], 0u);
    EXPECT_EQ(out[c * 16 + 1], 1u);
    EXPECT_EQ(out[c * 16 + 2], c);
    EXPECT_EQ(out[c * 16 + 3], 3u);
    EXPECT_EQ(out[c * 16 + 4], 0u);
  }
}

// CTA 1 writes into CTA 0's shared memory and arrives on CTA 0's mbarrier
// (mapa'd address, shared::cluster, no state); CTA 0's try_wait completes
// and it reads the data. CTA 1 exits without the last barrier.cluster,
// which then waits for CTA 0's threads only (exited threads are not
// waited for).
const char *kRemoteArrive = R"(
  .shared .align 8 .b64 bar;
  .shared .align 16 .b32 data[4];
  mov.u32 %r4, bar;
  mov.u32 %r5, data;
  setp.ne.u32 %p1, %r2, 0;
  @%p1 bra SYNC;
  mov.b32 %r6, 1;
  mbarrier.init.shared::cta.b64 [bar], %r6;
  fence.mbarrier_init.release.cluster;
SYNC:
  barrier.cluster.arrive.relaxed.aligned;
  barrier.cluster.wait.aligned;
  @!%p1 bra WAIT;
  mapa.shared::cluster.u32 %r7, %r5, 0;
  mov.b32 %r8, 4242;
  st.shared::cluster.u32 [%r7+8], %r8;
  mapa.shared::cluster.u32 %r9, %r4, 0;
  ARRIVE_INSTRUCTION
  ret;
WAIT:
  mbarrier.try_wait.parity.acquire.cluster.shared::cta.b64 %p2, [bar], 0;
  @!%p2 bra WAIT;
  ld.shared.u32 %r10, [data+8];
  st.global.u32 [%rd1], %r10;
  barrier.cluster.arrive.aligned;
  barrier.cluster.wait.aligned;
  ret;
)";

std::string remoteArrive(const std::string &arrive) {
  std::string body = kRemoteArrive;
  body.replace(body.find("ARRIVE_INSTRUCTION"), 18, arrive);
  return kernel(".reqnctapercluster 2", body);
}

TEST(PtxCluster, RemoteMbarrierArriveUnblocksThePeer) {
  std::vector<uint32_t> out;
  Launch l;
  l.block = 1;
  CUresult r = runKernel(
      remoteArrive("mbarrier.arrive.release.cluster.shared::cluster.b64 _, "
                   "[%r9];"),
      l, out, 1);
  ASSERT_EQ(r, 0) << errorText(r);
  EXPECT_EQ(out[0], 4242u);
  // With a count, and as expect_tx of zero bytes.
  r = runKernel(remoteArrive("mbarrier.arrive.shared::cluster.b64 _, [%r9], "
                             "1;"),
                l, out, 1);
  ASSERT_EQ(r, 0) << errorText(r);
  EXPECT_EQ(out[0], 4242u);
  r = runKernel(
      remoteArrive("mbarrier.arrive.expect_tx.release.cluster.shared::cluster"
                   ".b64 _, [%r9], 0;"),
      l, out, 1);
  ASSERT_EQ(r, 0) << errorText(r);
  EXPECT_EQ(out[0], 4242u);
}

TEST(PtxClusterFaults, RemoteArriveCannotReturnAState) {
  std::vector<uint32_t> out;
  Launch l;
  l.block = 1;
  CUresult r = runKernel(
      remoteArrive("mbarrier.arrive.shared::cluster.b64 %rd10, [%r9];"), l,
      out, 1);
  EXPECT_EQ(r, 719);
  EXPECT_NE(errorText(r).find("returns no state: its destination must be "
                              "'_'"),
            std::string::npos) << errorText(r);
}

// Each CTA of a 2-CTA cluster loads half of a 16x8 u32 tile (rows 4r..4r+3)
// with TMA multicast to both CTAs (ctaMask 0b11), at the same CTA-relative
// offset; each CTA's mbarrier expects the whole 512-byte tile.
const char *kMulticast = R"(
  .shared .align 128 .b8 tile[512];
  .shared .align 8 .b64 bar;
  mov.u32 %r4, tile;
  mov.u32 %r5, bar;
  setp.ne.u32 %p1, %r1, 0;
  @%p1 bra SYNC;
  mov.b32 %r6, 1;
  mbarrier.init.shared::cta.b64 [bar], %r6;
  fence.mbarrier_init.release.cluster;
SYNC:
  barrier.cluster.arrive.relaxed.aligned;
  barrier.cluster.wait.aligned;
  @%p1 bra WAIT;
  mbarrier.arrive.expect_tx.release.cta.shared::cta.b64 _, [bar], 512;
  mad.lo.u32 %r7, %r2, 256, %r4;
  shl.b32 %r8, %r2, 2;
  mov.b32 %r9, 0;
  mov.b16 %rs1, 3;
  cp.async.bulk.tensor.2d.shared::cluster.global.tile.mbarrier::complete_tx::bytes.multicast::cluster [%r7], [%rd20, {%r9, %r8}], [%r5], %rs1;
WAIT:
  mbarrier.try_wait.parity.shared::cta.b64 %p2, [bar], 0;
  @!%p2 bra WAIT;
  // Thread t copies words 4t..4t+3 of the tile to out[ctaid * 128 + ..].
  shl.b32 %r10, %r1, 4;
  add.u32 %r11, %r4, %r10;
  ld.shared.v4.u32 {%r12, %r13, %r14, %r15}, [%r11];
  mad.lo.u32 %r16, %r3, 512, %r10;
  cvt.u64.u32 %rd2, %r16;
  add.s64 %rd3, %rd1, %rd2;
  st.global.v4.u32 [%rd3], {%r12, %r13, %r14, %r15};
  ret;
)";

/// A device tensor of 16 x 8 u32 (value = 1000 + index) and a tensor map
/// over it with a 16 x 4 box, in device memory.
struct TileSource {
  CUdeviceptr tensor = 0, map = 0;
  TileSource() {
    std::vector<uint32_t> v(128);
    for (uint32_t i = 0; i < 128; ++i)
      v[i] = 1000 + i;
    cuMemAlloc_v2(&tensor, 512);
    cuMemcpyHtoD_v2(tensor, v.data(), 512);
    cuMemAlloc_v2(&map, 128);
    uint64_t dims[2] = {16, 8}, strides[1] = {64};
    uint32_t box[2] = {16, 4}, es[2] = {1, 1};
    EXPECT_EQ(cuTensorMapEncodeTiled(reinterpret_cast<void *>(map),
                                     /*UINT32*/ 2, 2,
                                     reinterpret_cast<void *>(tensor), dims,
                                     strides, box, es, 0, 0, 0, 0),
              0);
  }
  ~TileSource() {
    cuMemFree_v2(map);
    cuMemFree_v2(tensor);
  }
};

TEST(PtxCluster, TmaMulticastLandsInEveryCtaOfTheMask) {
  TileSource source;
  Profile profile;
  std::vector<uint32_t> out;
  Launch l;
  CUresult r = runKernel(kernel(".reqnctapercluster 2, 1, 1", kMulticast), l,
                         out, 256, source.map);
  ASSERT_EQ(r, 0) << errorText(r);
  for (unsigned c = 0; c < 2; ++c)
    for (unsigned i = 0; i < 128; ++i)
      ASSERT_EQ(out[c * 128 + i], 1000 + i) << "CTA " << c << " word " << i;
  // Each of the two copies read its 256 bytes of the tensor once, however
  // many CTAs it landed in (plus the 128-byte tensor map per copy).
  EXPECT_EQ(profile.field("tma_requests"), 2u);
  EXPECT_EQ(profile.field("tma_bytes"), 512u);
  // ... and filled the shared memory of both CTAs.
  EXPECT_EQ(profile.field("tma_shared_bytes"), 2u * 512);
  EXPECT_EQ(profile.field("global_read_bytes"), 512u + 2 * 128);
  EXPECT_EQ(profile.field("ctas"), 2u);
}

TEST(PtxCluster, TmaMulticastUnderRandomSchedulesAndRaceChecks) {
  TileSource source;
  for (const char *seed : {"random:1", "random:2", "random:3", "random:4"}) {
    setenv("ATTNSIM_SCHEDULE", seed, 1);
    setenv("ATTNSIM_RACECHECK", "1", 1);
    std::vector<uint32_t> out;
    Launch l;
    l.grid[0] = 4;
    CUresult r = runKernel(kernel(".reqnctapercluster 2, 1, 1", kMulticast),
                           l, out, 512, source.map);
    unsetenv("ATTNSIM_SCHEDULE");
    unsetenv("ATTNSIM_RACECHECK");
    ASSERT_EQ(r, 0) << seed << ": " << errorText(r);
    for (unsigned c = 0; c < 4; ++c)
      for (unsigned i = 0; i < 128; ++i)
        ASSERT_EQ(out[c * 128 + i], 1000 + i) << seed << " CTA " << c;
  }
}

TEST(PtxCluster, ExchangeHasNoRacesAcrossCtas) {
  setenv("ATTNSIM_RACECHECK", "1", 1);
  setenv("ATTNSIM_SCHEDULE", "random:5", 1);
  std::vector<uint32_t> out;
  Launch l;
  l.grid[0] = 4;
  CUresult r = runKernel(kernel(".reqnctapercluster 2, 1, 1", kExchange), l,
                         out, 256);
  unsetenv("ATTNSIM_RACECHECK");
  unsetenv("ATTNSIM_SCHEDULE");
  ASSERT_EQ(r, 0) << errorText(r);
  checkExchange(out, 4);
}

TEST(PtxClusterRaces, UnorderedAccessesToAPeersSharedMemory) {
  // CTA 1 stores into CTA 0's word while CTA 0 reads it, with nothing
  // ordering the two before the barrier.cluster.
  setenv("ATTNSIM_RACECHECK", "1", 1);
  std::vector<uint32_t> out;
  Launch l;
  l.block = 1;
  CUresult r = runKernel(kernel(".reqnctapercluster 2", R"(
  .shared .align 4 .b32 word;
  mov.u32 %r4, word;
  setp.eq.u32 %p1, %r2, 0;
  @%p1 ld.shared.u32 %r5, [word];
  mapa.shared::cluster.u32 %r6, %r4, 0;
  @!%p1 st.shared::cluster.u32 [%r6], %r2;
  barrier.cluster.arrive;
  barrier.cluster.wait;
  ret;
)"),
                         l, out, 1);
  unsetenv("ATTNSIM_RACECHECK");
  EXPECT_EQ(r, 719);
  EXPECT_NE(errorText(r).find("shared-memory race at 0x0 of CTA rank 0: "
                              "thread 0 of CTA rank 1 writes it, unordered "
                              "with the read by thread 0 of CTA rank 0"),
            std::string::npos) << errorText(r);
}

TEST(PtxCluster, BulkMulticastToTwoOfFourCtas) {
  // Rank 0 copies 256 bytes with cp.async.bulk multicast to ranks 1 and 3
  // (ctaMask 0b1010, with an L2 cache hint); ranks 1 and 3 wait for them,
  // ranks 0 and 2 keep a zero tile.
  TileSource source;
  Profile profile;
  std::vector<uint32_t> out;
  Launch l;
  l.grid[0] = 4;
  CUresult r = runKernel(kernel(".reqnctapercluster 4, 1, 1", R"(
  .shared .align 128 .b8 tile[256];
  .shared .align 8 .b64 bar;
  mov.u32 %r4, tile;
  mov.u32 %r5, bar;
  shl.b32 %r6, %r1, 3;
  add.u32 %r7, %r4, %r6;
  mov.b64 %rd10, 0;
  st.shared.u64 [%r7], %rd10;
  and.b32 %r8, %r2, 1;
  setp.eq.u32 %p3, %r8, 1;
  setp.eq.u32 %p1, %r1, 0;
  @!%p1 bra SYNC;
  mov.b32 %r9, 1;
  mbarrier.init.shared::cta.b64 [bar], %r9;
  @%p3 mbarrier.expect_tx.relaxed.cta.shared::cta.b64 [bar], 256;
  fence.mbarrier_init.release.cluster;
SYNC:
  barrier.cluster.arrive.aligned;
  barrier.cluster.wait.aligned;
  setp.eq.and.u32 %p4, %r2, 0, %p1;
  @!%p4 bra WAIT;
  mov.b16 %rs1, 0xA;
  mov.b64 %rd11, 0x12F0000000000000;
  cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes.multicast::cluster.L2::cache_hint [%r4], [%rd20], 256, [%r5], %rs1, %rd11;
WAIT:
  @!%p3 bra OUT;
  @%p1 mbarrier.arrive.shared::cta.b64 _, [bar];
POLL:
  mbarrier.try_wait.parity.shared::cta.b64 %p2, [bar], 0;
  @!%p2 bra POLL;
OUT:
  ld.shared.u64 %rd12, [%r7];
  mad.lo.u32 %r10, %r3, 256, %r6;
  cvt.u64.u32 %rd2, %r10;
  add.s64 %rd3, %rd1, %rd2;
  st.global.u64 [%rd3], %rd12;
  ret;
)"),
                         l, out, 256, source.tensor);
  ASSERT_EQ(r, 0) << errorText(r);
  for (unsigned c = 0; c < 4; ++c)
    for (unsigned i = 0; i < 64; ++i)
      ASSERT_EQ(out[c * 64 + i], c % 2 ? 1000 + i : 0u)
          << "CTA " << c << " word " << i;
  EXPECT_EQ(profile.field("tma_requests"), 1u);
  EXPECT_EQ(profile.field("tma_bytes"), 256u);
  EXPECT_EQ(profile.field("tma_shared_bytes"), 2u * 256);
  EXPECT_EQ(profile.field("global_read_bytes"), 256u);
}

TEST(PtxClusterFaults, GridNotAMultipleOfTheCluster) {
  std::vector<uint32_t> out;
  Launch l;
  l.grid[0] = 3;
  CUresult r = runKernel(kernel(".reqnctapercluster 2, 1, 1", "ret;"), l,
                         out, 1);
  EXPECT_EQ(r, 912);
  EXPECT_NE(errorText(r).find("grid (3,1,1) is not a multiple of the "
                              "cluster shape (2,1,1)"),
            std::string::npos) << errorText(r);
}

TEST(PtxClusterFaults, ClustersOfMoreThanEightCtas) {
  std::vector<uint32_t> out;
  Launch l;
  l.grid[0] = 16;
  l.block = 1;
  l.cluster[0] = 16;
  l.cluster[1] = l.cluster[2] = 1;
  CUresult r = runKernel(kernel("", "ret;"), l, out, 1);
  EXPECT_EQ(r, 912);
  EXPECT_NE(errorText(r).find("clusters of 16 CTAs (16,1,1) (at most 8"),
            std::string::npos) << errorText(r);
  // An .explicitcluster kernel needs a cluster shape.
  l.cluster[0] = 0;
  r = runKernel(kernel(".explicitcluster", "ret;"), l, out, 1);
  EXPECT_EQ(r, 912);
  EXPECT_NE(errorText(r).find(".explicitcluster kernel launched without"),
            std::string::npos) << errorText(r);
}

TEST(PtxClusterFaults, MapaToARankPastTheCluster) {
  std::vector<uint32_t> out;
  Launch l;
  CUresult r = runKernel(kernel(".reqnctapercluster 2", R"(
  .shared .align 4 .b32 word;
  mov.u32 %r4, word;
  mapa.shared::cluster.u32 %r5, %r4, 2;
  ret;
)"),
                         l, out, 1);
  EXPECT_EQ(r, 700);
  EXPECT_NE(errorText(r).find("mapa to CTA rank 2, but the cluster has 2 "
                              "CTAs"),
            std::string::npos) << errorText(r);
}

TEST(PtxClusterFaults, SharedCtaAccessToAPeersAddress) {
  std::vector<uint32_t> out;
  Launch l;
  CUresult r = runKernel(kernel(".reqnctapercluster 2", R"(
  .shared .align 4 .b32 word;
  mov.u32 %r4, word;
  xor.b32 %r6, %r2, 1;
  mapa.shared::cluster.u32 %r5, %r4, %r6;
  ld.shared::cta.u32 %r7, [%r5];
  ret;
)"),
                         l, out, 1);
  EXPECT_EQ(r, 700);
  EXPECT_NE(errorText(r).find("a .shared::cta access to the shared memory of "
                              "CTA rank 1 (this is rank 0"),
            std::string::npos) << errorText(r);
}

TEST(PtxClusterFaults, PeerSharedMemoryAfterItExited) {
  // Rank 1 exits at once; rank 0's barrier.cluster then completes without
  // it (exited threads are not waited for), and rank 0 stores into its
  // shared memory.
  std::vector<uint32_t> out;
  Launch l;
  l.block = 1;
  CUresult r = runKernel(kernel(".reqnctapercluster 2", R"(
  .shared .align 4 .b32 word;
  setp.ne.u32 %p1, %r2, 0;
  @%p1 ret;
  barrier.cluster.arrive;
  barrier.cluster.wait;
  mov.u32 %r4, word;
  mapa.shared::cluster.u32 %r5, %r4, 1;
  st.shared::cluster.u32 [%r5], %r2;
  ret;
)"),
                         l, out, 1);
  EXPECT_EQ(r, 700);
  EXPECT_NE(errorText(r).find("CTA rank 1 has exited"), std::string::npos)
      << errorText(r);
}

TEST(PtxClusterFaults, DeadlockAcrossTheClusterNamesEachCta) {
  // Rank 0 waits on its mbarrier, which only rank 1 would arrive at after
  // a barrier.cluster that rank 0 never reaches.
  std::vector<uint32_t> out;
  Launch l;
  l.block = 1;
  CUresult r = runKernel(kernel(".reqnctapercluster 2", R"(
  .shared .align 8 .b64 bar;
  mov.u32 %r4, bar;
  mov.b32 %r6, 1;
  mbarrier.init.shared::cta.b64 [bar], %r6;
  setp.ne.u32 %p1, %r2, 0;
  @%p1 bra PEER;
WAIT:
  mbarrier.try_wait.parity.shared::cta.b64 %p2, [bar], 0;
  @!%p2 bra WAIT;
  ret;
PEER:
  barrier.cluster.arrive;
  barrier.cluster.wait;
  mapa.shared::cluster.u32 %r5, %r4, 0;
  mbarrier.arrive.shared::cluster.b64 _, [%r5];
  ret;
)"),
                         l, out, 1);
  EXPECT_EQ(r, 702);
  std::string text = errorText(r);
  EXPECT_NE(text.find("cluster (0,0,0) of 2 CTAs: deadlock: all 2 live "
                      "threads of the cluster wait"),
            std::string::npos) << text;
  EXPECT_NE(text.find("CTA (0,0,0) rank 0:\n    threads 0-0: on mbarrier"),
            std::string::npos) << text;
  EXPECT_NE(text.find("CTA (1,0,0) rank 1:\n    threads 0-0: at "
                      "barrier.cluster.wait (1 of 2 live threads of the "
                      "cluster arrived)"),
            std::string::npos) << text;
}

TEST(PtxClusterFaults, MulticastMaskPastTheCluster) {
  TileSource source;
  std::vector<uint32_t> out;
  Launch l;
  l.block = 1;
  std::string body = kMulticast;
  body.replace(body.find("mov.b16 %rs1, 3;"), 16, "mov.b16 %rs1, 7;");
  CUresult r = runKernel(kernel(".reqnctapercluster 2", body), l, out, 256,
                         source.map);
  EXPECT_EQ(r, 700);
  EXPECT_NE(errorText(r).find("multicast ctaMask 0x7 names CTA ranks past "
                              "the cluster's 2"),
            std::string::npos) << errorText(r);
}


TEST(PtxClusterFaults, SharedToSharedBulkCopiesAreRefusedAtLoad) {
  std::vector<uint32_t> out;
  Launch l;
  CUresult r = runKernel(kernel(".reqnctapercluster 2", R"(
  .shared .align 16 .b8 buf[16];
  .shared .align 8 .b64 bar;
  cp.async.bulk.shared::cluster.shared::cta.mbarrier::complete_tx::bytes [buf], [buf], 16, [bar];
  ret;
)"),
                         l, out, 1);
  EXPECT_EQ(r, 218);
  EXPECT_NE(errorText(r).find("from shared memory to shared memory is not "
                              "modelled"),
            std::string::npos) << errorText(r);
}


TEST(PtxCluster, TwoDimensionalClustersRankXFastest) {
  // Clusters of 2 x 2 CTAs over a 4 x 2 grid: %cluster_ctarank runs x
  // fastest over %cluster_ctaid, %clusterid is the cluster's position.
  std::vector<uint32_t> out;
  Launch l;
  l.grid[0] = 4;
  l.grid[1] = 2;
  l.block = 1;
  CUresult r = runKernel(kernel(".reqnctapercluster 2, 2, 1", R"(
  mov.u32 %r4, %ctaid.y;
  mad.lo.u32 %r5, %r4, 4, %r3;
  mul.wide.u32 %rd2, %r5, 32;
  add.s64 %rd3, %rd1, %rd2;
  st.global.u32 [%rd3+0], %r2;
  mov.u32 %r6, %cluster_ctaid.x;
  st.global.u32 [%rd3+4], %r6;
  mov.u32 %r6, %cluster_ctaid.y;
  st.global.u32 [%rd3+8], %r6;
  mov.u32 %r6, %clusterid.x;
  st.global.u32 [%rd3+12], %r6;
  mov.u32 %r6, %clusterid.y;
  st.global.u32 [%rd3+16], %r6;
  mov.u32 %r6, %nclusterid.y;
  st.global.u32 [%rd3+20], %r6;
  mov.u32 %r6, %cluster_nctaid.y;
  st.global.u32 [%rd3+24], %r6;
  mov.u32 %r6, %cluster_nctarank;
  st.global.u32 [%rd3+28], %r6;
  ret;
)"),
                         l, out, 64);
  ASSERT_EQ(r, 0) << errorText(r);
  for (unsigned y = 0; y < 2; ++y)
    for (unsigned x = 0; x < 4; ++x) {
      const uint32_t *w = &out[(y * 4 + x) * 8];
      EXPECT_EQ(w[0], x % 2 + 2 * (y % 2)) << x << "," << y;
      EXPECT_EQ(w[1], x % 2);
      EXPECT_EQ(w[2], y % 2);
      EXPECT_EQ(w[3], x / 2);
      EXPECT_EQ(w[4], y / 2);
      EXPECT_EQ(w[5], 1u);
      EXPECT_EQ(w[6], 2u);
      EXPECT_EQ(w[7], 4u);
    }
}


TEST(PtxClusterFaults, ClusterShapeAgainstTheKernelsDirectives) {
  std::vector<uint32_t> out;
  Launch l;
  l.grid[0] = 4;
  l.block = 1;
  l.cluster[0] = 4;
  l.cluster[1] = l.cluster[2] = 1;
  CUresult r = runKernel(kernel(".reqnctapercluster 2", "ret;"), l, out, 1);
  EXPECT_EQ(r, 912);
  EXPECT_NE(errorText(r).find("launched with clusters of (4,1,1) CTAs, but "
                              "its .reqnctapercluster is (2,1,1)"),
            std::string::npos) << errorText(r);
  r = runKernel(kernel(".maxclusterrank 2", "ret;"), l, out, 1);
  EXPECT_EQ(r, 912);
  EXPECT_NE(errorText(r).find("clusters of 4 CTAs exceed its "
                              ".maxclusterrank 2"),
            std::string::npos) << errorText(r);
  l.cluster[0] = 2;
  r = runKernel(kernel(".maxclusterrank 2", "ret;"), l, out, 1);
  EXPECT_EQ(r, 0) << errorText(r);
}

} // namespace
