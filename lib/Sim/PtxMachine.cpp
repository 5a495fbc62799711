//===- PtxMachine.cpp - executes PTX kernels, one cluster at a time -------===//
//
// Every thread has its own program counter and registers and runs until it
// blocks (sm_70+ independent thread scheduling, ISA 3.3 / 9.7.13): at a
// warp collective (mma.sync, ldmatrix, shfl.sync, vote, ...), which executes
// once every participating lane has arrived at it; at a CTA barrier; at a
// warpgroup collective (wgmma); or waiting on an mbarrier phase. When no
// thread can run, pending bulk tensor copies complete (as late as the
// program allows, so a missing wait shows up as stale data); when nothing
// is pending either, it is a deadlock and every waiting thread is reported.
//
// Asynchronous operations complete as late as their ISA contract allows:
// cp.async writes shared memory at the cp.async.wait_group that retires its
// group, wgmma.mma_async computes at the wgmma.wait_group that retires it,
// TMA writes when nothing else can run. Global and shared accesses are
// checked against the allocations and the CTA's shared memory size.
//
// Thread-block clusters (ISA 2.2.2): the CTAs of a cluster run together in
// one host thread, a scheduling pass visiting each CTA's threads in turn, so
// they can wait on each other (barrier.cluster, mbarrier arrivals from a
// peer, multicast copies); clusters are independent and spread over the
// host's cores as CTAs are. A launch without clusters is a grid of 1x1x1
// clusters and runs exactly as one CTA at a time.
//
//===----------------------------------------------------------------------===//
#include "lib/Sim/Fragments.h"
#include "lib/Sim/Machine.h"
#include "lib/Sim/Numbers.h"
#include "lib/Sim/SharedRaces.h"

#include <algorithm>
#include <atomic>
#include <cfenv>
#include <cmath>
#include <cstring>
#include <deque>
#include <optional>
#include <sstream>
#include <thread>
#include <unordered_map>
#include <vector>

namespace attn::sim {

using namespace ptx;

//===----------------------------------------------------------------------===//
// Memory
//===----------------------------------------------------------------------===//

void *Memory::allocate(size_t bytes) {
  // 256-byte aligned like cudaMalloc; one extra byte keeps zero-size
  // allocations distinct.
  void *p = ::operator new(bytes + 1, std::align_val_t(256));
  std::memset(p, 0xCD, bytes + 1); // uninitialized device memory
  std::lock_guard<std::mutex> lock(mutex);
  ranges[reinterpret_cast<uint64_t>(p)] = {bytes, "", true};
  return p;
}

bool Memory::release(void *p) {
  std::lock_guard<std::mutex> lock(mutex);
  auto it = ranges.find(reinterpret_cast<uint64_t>(p));
  if (it == ranges.end() || !it->second.owned)
    return false;
  ranges.erase(it);
  ::operator delete(p, std::align_val_t(256));
  return true;
}

void Memory::add(const void *p, size_t bytes, const std::string &what) {
  std::lock_guard<std::mutex> lock(mutex);
  ranges[reinterpret_cast<uint64_t>(p)] = {bytes, what, false};
}

void Memory::remove(const void *p) {
  std::lock_guard<std::mutex> lock(mutex);
  ranges.erase(reinterpret_cast<uint64_t>(p));
}

bool Memory::contains(uint64_t address, uint64_t bytes) const {
  std::lock_guard<std::mutex> lock(mutex);
  auto it = ranges.upper_bound(address);
  if (it == ranges.begin())
    return false;
  --it;
  return address + bytes <= it->first + it->second.bytes &&
         address >= it->first;
}

std::string Memory::describe(uint64_t address) const {
  std::lock_guard<std::mutex> lock(mutex);
  std::ostringstream os;
  os << std::hex << "0x" << address << std::dec;
  auto it = ranges.upper_bound(address);
  if (it == ranges.begin()) {
    os << " (below every allocation)";
    return os.str();
  }
  --it;
  uint64_t end = it->first + it->second.bytes;
  if (address < end)
    os << " (offset " << address - it->first << " of the " << it->second.bytes
       << "-byte allocation at 0x" << std::hex << it->first << std::dec << ")";
  else
    os << " (" << address - end << " bytes past the end of the "
       << it->second.bytes << "-byte allocation at 0x" << std::hex
       << it->first << std::dec << ")";
  return os.str();
}

namespace {

//===----------------------------------------------------------------------===//
// Values
//===----------------------------------------------------------------------===//

inline uint64_t maskBits(int bits) {
  return bits >= 64 ? ~0ull : (1ull << bits) - 1;
}
inline int64_t signExtend(uint64_t v, int bits) {
  if (bits >= 64)
    return static_cast<int64_t>(v);
  uint64_t m = 1ull << (bits - 1);
  v &= maskBits(bits);
  return static_cast<int64_t>((v ^ m) - m);
}
inline float f32(uint64_t v) { return bitsToFloat(static_cast<uint32_t>(v)); }
inline uint64_t fromF32(float f) { return floatToBits(f); }
inline float flushF32(float f) {
  return std::fpclassify(f) == FP_SUBNORMAL ? std::copysign(0.0f, f) : f;
}

/// One packed-half lane of a 16-bit float value.
inline float halfToFloat(uint16_t h, Type t) {
  return t == Type::BF16 || t == Type::BF16x2 ? bf16ToFloat(h) : f16ToFloat(h);
}
inline uint16_t floatToHalf(float f, Type t) {
  return t == Type::BF16 || t == Type::BF16x2 ? floatToBf16(f) : floatToF16(f);
}
inline uint16_t doubleToHalf(double d, Type t) {
  // Exact results rounded once: doubles hold f16/bf16 sums and products.
  if (t == Type::BF16 || t == Type::BF16x2) {
    float f = static_cast<float>(d);
    // Double rounding through f32 can only matter on exact ties, which
    // need more than 24 significant bits: bf16 inputs never produce them
    // in one add or multiply.
    return floatToBf16(f);
  }
  return doubleToF16(d);
}

/// The value of element `index` (elemBits wide) of a register list.
double elementValue(uint64_t reg, int sub, int elemBits, Type t) {
  uint64_t bits = (reg >> (sub * elemBits)) & maskBits(elemBits);
  switch (t) {
  case Type::F16: case Type::F16x2: return f16ToFloat(uint16_t(bits));
  case Type::BF16: case Type::BF16x2: return bf16ToFloat(uint16_t(bits));
  case Type::TF32: return f32(bits & 0xFFFFE000u);
  case Type::F32: return f32(bits);
  case Type::F64: return bitsToDouble(bits);
  case Type::E4M3: return e4m3ToFloat(uint8_t(bits));
  case Type::E5M2: return e5m2ToFloat(uint8_t(bits));
  case Type::S8: case Type::S4: case Type::S32:
    return static_cast<double>(signExtend(bits, elemBits));
  default: return static_cast<double>(bits);
  }
}

struct AsyncCopy {
  uint32_t dst;
  uint8_t bytes;
  uint8_t data[16];
};

struct MBarrier {
  uint32_t expected = 0, pending = 0;
  int64_t tx = 0;
  uint64_t phase = 0; // completed phases
  bool valid = false;
  // Race detection: what the current phase's arrivals release, and what
  // the last completed phase gives a waiter.
  SharedRaces::Clock release, completed;
};

struct BulkCopy {
  SharedRaces::Clock issued; // the issuing thread's clock (race checks)
  uint32_t line = 0;
  uint32_t mbarrier;         // CTA-relative offsets in each destination
  uint32_t dst;
  uint16_t ctaMask = 0;      // destination CTAs by %cluster_ctarank
  std::vector<uint8_t> data; // bytes in shared-memory order
  std::vector<uint32_t> addresses; // per 16-byte chunk (swizzled), or empty
  uint32_t thread;
};

struct WgmmaOp {
  const Instr *instr;
  uint64_t descA, descB;
  bool scaleD;
  int scaleA, scaleB;
  bool transA, transB;
  bool aInRegisters;
};

struct Warpgroup {
  std::vector<WgmmaOp> open;
  std::deque<std::vector<WgmmaOp>> committed;
};

enum class Wait : uint8_t { Ready, Exited, Barrier, Warp, Warpgroup, Mbar,
                            ClusterBarrier };

struct ThreadState {
  uint32_t pc = 0;
  Wait wait = Wait::Ready;
  uint32_t waitArg = 0;    // barrier id, mbarrier address
  uint64_t waitPhase = 0;  // mbarrier: the phase awaited
  std::vector<AsyncCopy> cpOpen;
  std::deque<std::vector<AsyncCopy>> cpGroups;
  // Instructions executed, by class (performance counters).
  uint64_t byClass[ptx::kInstrClasses] = {};
  // How often this thread reached each shared-memory access instruction
  // (by pc), run or predicated off: its k-th visit joins the warp's k-th
  // request of that instruction (see SharedRequest).
  std::unordered_map<uint32_t, uint32_t> sharedVisits;
  // The last failed mbarrier.test_wait (see MbarTestWait).
  bool polling = false;
  uint32_t pollAddr = 0;
  uint64_t pollPhase = 0;
  // barrier.cluster: arrived in phase clusterPhase and not yet waited.
  bool clusterArrived = false;
  uint64_t clusterPhase = 0;
};

/// One warp-wide shared-memory request, gathered lane by lane: threads run
/// one at a time here, so a lane's k-th execution of an instruction is
/// matched with the other lanes' k-th.
struct SharedRequest {
  uint32_t lanes = 0;   // the lanes that issued it
  uint8_t bytes = 0;    // per lane
  uint32_t address[32]; // shared offset per lane
};

struct BarrierState {
  uint32_t arrived = 0;
  uint32_t expected = 0; // 0: every live thread
  bool used = false;
  SharedRaces::Clock release; // joined clocks of the arrivals
};

/// A CTA's view of its cluster's race detector (SharedRaces.h): the CTA's
/// own agent numbers (threads 0..n-1, n the copy engine) and shared offsets,
/// shifted to the cluster's.
class CtaRaces {
public:
  CtaRaces(SharedRaces &all, uint32_t rank, uint32_t threads, uint32_t bytes)
      : all(all), rank(rank), threads(threads), bytes(bytes) {}
  SharedRaces::Clock &clock(uint32_t agent) { return all.clock(cluster(agent)); }
  void tick(uint32_t agent) { all.tick(cluster(agent)); }
  uint32_t engine() const { return threads; }
  /// An access by `agent` of byte `address` of CTA `owner`'s shared memory.
  std::string access(uint32_t agent, const SharedRaces::Clock &c,
                     uint32_t address, uint32_t size, bool write,
                     uint32_t line, uint32_t owner) {
    return all.access(cluster(agent), c, owner * bytes + address, size, write,
                      line);
  }

private:
  SharedRaces &all;
  uint32_t rank, threads, bytes;
  uint32_t cluster(uint32_t agent) const {
    return agent == threads ? all.engine() : rank * threads + agent;
  }
};

class Cta;

/// The CTAs of one cluster, run together; barrier.cluster's state.
class Cluster {
public:
  Cluster(const Module &module, const Function &f, const LaunchConfig &config,
          Memory &memory, const uint32_t shape[3], const uint32_t id[3],
          bool isExplicit);
  ~Cluster();
  uint64_t run();
  Cta &cta(uint32_t rank) { return *ctas[rank]; }
  uint32_t size() const { return static_cast<uint32_t>(ctas.size()); }
  uint32_t liveThreads() const;
  /// barrier.cluster completes once every live thread has arrived (ISA
  /// barrier.cluster: "all non-exited threads of the cluster").
  void completeBarrierIfDone();

  const Function &f;
  const LaunchConfig &cfg;
  uint32_t shape[3], id[3];
  bool isExplicit;
  std::vector<std::unique_ptr<Cta>> ctas;
  std::unique_ptr<SharedRaces> races;
  uint64_t barrierPhase = 0;   // completed barrier.cluster phases
  uint32_t barrierArrived = 0; // live threads arrived in the current one
  SharedRaces::Clock barrierRelease, barrierCompleted;

private:
  [[noreturn]] void deadlock();
};

class Cta {
public:
  Cta(const Module &module, const Function &f, const LaunchConfig &config,
      Memory &memory, uint32_t x, uint32_t y, uint32_t z, Cluster &cluster,
      uint32_t rank, const uint32_t clusterCtaid[3]);
  /// One scheduling pass over the CTA's threads: true when any ran.
  bool pass();
  /// Barriers released or collectives completed after exits.
  bool unblock() { return releaseBarriers() || recheckCollectives(); }
  /// Lands cp.async copies never waited for; the instructions executed.
  uint64_t finish();
  uint32_t liveThreads() const { return live; }
  /// "  threads a-b: what they wait on" lines.
  std::string waiting() const;
  [[noreturn]] void deadlock();
  bool completeBulk(size_t most = ~size_t(0));
  const LaunchStats &counters() {
    for (uint32_t w = 0; w < pendingShared.size(); ++w)
      for (auto &[key, request] : pendingShared[w])
        countWavefronts(request);
    pendingShared.clear();
    stats.instructions = executed;
    // A warp issues an instruction once for all the lanes that run it
    // together: per warp, the busiest lane's count of each class.
    for (uint32_t w = 0; w * 32 < nthreads; ++w)
      for (int c = 0; c < ptx::kInstrClasses; ++c) {
        uint64_t most = 0;
        for (uint32_t t = w * 32; t < std::min(nthreads, w * 32 + 32); ++t) {
          most = std::max(most, threads[t].byClass[c]);
          stats.byClass[c] += threads[t].byClass[c];
        }
        stats.warpByClass[c] += most;
      }
    return stats;
  }

private:
  friend class Cluster;
  const Function &f;
  const LaunchConfig &cfg;
  Memory &memory;
  uint32_t ctaid[3];
  Cluster &cluster;
  uint32_t rank, clusterCtaid[3];
  std::vector<uint32_t> order; // scheduling order of the threads
  uint64_t rng = 0;            // schedule-seed random numbers
  uint64_t nextRandom() {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
  }
  uint32_t nthreads, nregs;
  std::vector<uint64_t> regs;
  std::vector<ThreadState> threads;
  std::vector<uint8_t> shared;
  std::vector<uint8_t> local;
  std::map<uint32_t, MBarrier> mbarriers;
  std::deque<BulkCopy> bulkQueue;
  std::vector<Warpgroup> warpgroups;
  std::vector<uint8_t> warpWaiting; // lanes of each warp at a collective
  // Shared-memory requests of each warp still waiting for lanes, by
  // (pc << 32 | visit).
  std::vector<std::unordered_map<uint64_t, SharedRequest>> pendingShared;
  BarrierState barriers[16];
  uint32_t live;
  uint64_t executed = 0;
  LaunchStats stats;
  std::unique_ptr<CtaRaces> races; // when the launch asks for checks
  std::vector<uint64_t> regMask;

  // Per-thread execution context.
  uint32_t tid = 0;
  uint64_t *R = nullptr;

  void runThread(uint32_t t, uint32_t quantum);
  bool step(const Instr &in, uint32_t &pc);

  [[noreturn]] void fault(int code, const std::string &what,
                          const Instr *in = nullptr, uint32_t thread = ~0u);
  std::string where(uint32_t thread) const;

  // Operands.
  uint64_t val(const Operand &o) const;
  uint64_t special(Special s) const;
  void set(const Operand &o, uint64_t v) {
    if (o.kind == Operand::Reg)
      R[o.reg] = v & regMask[o.reg];
    else if (o.kind != Operand::Sink)
      fault(kLaunchFailed, "destination is not a register");
  }
  uint64_t addressOf(const Operand &o) const {
    return (o.reg == kNoReg ? 0 : R[o.reg]) + o.imm;
  }

  // Memory.
  uint8_t *resolve(Space space, uint64_t address, uint32_t bytes,
                   const Instr &in, bool write);
  uint8_t *sharedAt(uint32_t address, uint32_t bytes, const Instr &in,
                    const char *what);
  Space spaceOf(Space space, uint64_t address) const;

  // Shared-memory bank conflicts (the wavefront counters).
  void noteSharedAccess(const Instr &in, uint32_t address, uint32_t bytes);
  void skipSharedAccess(const Instr &in);
  void countWavefronts(const SharedRequest &request);
  void countPhase(const uint32_t *address, uint32_t lanes, uint32_t bytes);
  void countMatrixRows(const uint64_t *rowAddr, int matrices) {
    for (int i = 0; i < matrices; ++i) {
      uint32_t rows[8];
      for (int r = 0; r < 8; ++r) {
        uint64_t a = rowAddr[8 * i + r];
        rows[r] = uint32_t(a >= kSharedWindow ? a - kSharedWindow : a);
      }
      countPhase(rows, 0xFF, 16);
    }
  }

  /// Race detection on an access of shared [address, +bytes).
  void raceCheck(uint32_t agent, uint32_t address, uint32_t bytes, bool write,
                 const Instr *in, const SharedRaces::Clock *c = nullptr,
                 const Cta *owner = nullptr) {
    if (!races)
      return;
    std::string race = races->access(agent, c ? *c : races->clock(agent),
                                     address, bytes, write, in ? in->line : 0,
                                     owner ? owner->rank : rank);
    if (!race.empty())
      fault(kLaunchFailed, race, in, agent < nthreads ? agent : ~0u);
  }
  /// The lanes of a collective synchronize: each knows what all knew.
  void syncAgents(const std::vector<uint32_t> &agents) {
    if (!races)
      return;
    SharedRaces::Clock j;
    for (uint32_t a : agents)
      SharedRaces::join(j, races->clock(a));
    for (uint32_t a : agents)
      races->clock(a) = j;
  }
  void tickAgents(const std::vector<uint32_t> &agents) {
    if (races)
      for (uint32_t a : agents)
        races->tick(a);
  }

  /// Data written over a live mbarrier object is undefined (ISA
  /// 9.7.13.15.1: only mbarrier instructions may access it until inval).
  void checkNotMbarrier(uint32_t address, uint32_t bytes, const Instr *in,
                        const char *what, const Cta *owner = nullptr) {
    const std::map<uint32_t, MBarrier> &mbarriers =
        owner ? owner->mbarriers : this->mbarriers;
    if (mbarriers.empty())
      return;
    auto it = mbarriers.lower_bound(address >= 7 ? address - 7 : 0);
    if (it != mbarriers.end() && it->first < address + bytes &&
        it->second.valid) {
      std::ostringstream os;
      os << what << " of " << bytes << " bytes at shared 0x" << std::hex
         << address << " overwrites the live mbarrier at 0x" << it->first;
      fault(kIllegalAddress, os.str(), in);
    }
  }

  // Collectives.
  bool arriveWarp(const Instr &in, uint32_t pc, bool recheck = false);
  bool arriveWarpgroup(const Instr &in, uint32_t pc);
  void warpCollective(const Instr &in, uint32_t warp, uint32_t lanes);
  void warpgroupCollective(const Instr &in, uint32_t group);
  bool arriveBarrier(uint32_t id, uint32_t count, bool wait);
  bool releaseBarriers();
  bool recheckCollectives();

  // Distributed shared memory (Ptx.h: kClusterRankShift).
  /// The CTA a shared::cluster address lies in; `offset` gets its offset
  /// there. `ctaOnly`: the instruction's space is .shared::cta, where
  /// another CTA's address is a fault.
  Cta &sharedOwner(uint64_t address, const Instr &in, uint32_t &offset,
                   bool ctaOnly, const char *what);
  /// An address in this CTA's own shared memory (mbarrier.init, waits,
  /// cp.async destinations, bulk store sources).
  uint32_t localShared(uint64_t address, const Instr &in, const char *what) {
    uint32_t offset;
    sharedOwner(address, in, offset, true, what);
    return offset;
  }
  /// The destination CTAs of a bulk copy into shared::cluster memory: the
  /// ctaMask of .multicast::cluster, else the CTA of `dst` (whose mbarrier
  /// must be in that CTA too).
  uint16_t bulkDestinations(const Instr &in, uint64_t dst, uint64_t mbar,
                            const Operand *mask, uint32_t &dstOffset,
                            uint32_t &mbarOffset);

  // Asynchronous units.
  void cpAsyncWait(ThreadState &t, size_t keep, uint32_t line = 0);
  MBarrier &mbarrierAt(uint32_t address, const Instr &in,
                       Cta *owner = nullptr);
  void mbarrierArrive(uint32_t address, uint32_t count, const Instr &in,
                      Cta *owner = nullptr);
  void mbarrierCompleteTx(uint32_t address, int64_t bytes);
  void phaseCompleted(uint32_t address);
  void tensorCopy(const Instr &in);
  void retireWgmma(uint32_t group, size_t keep);
  void executeWgmma(uint32_t group, const WgmmaOp &op);

  void execMma(const Instr &in, uint32_t warp);
  void execLdmatrix(const Instr &in, uint32_t warp);
  void execStmatrix(const Instr &in, uint32_t warp);
};

Cta::Cta(const Module &module, const Function &f, const LaunchConfig &config,
         Memory &memory, uint32_t x, uint32_t y, uint32_t z, Cluster &cluster,
         uint32_t rank, const uint32_t clusterCtaid[3])
    : f(f), cfg(config), memory(memory), cluster(cluster), rank(rank) {
  ctaid[0] = x;
  ctaid[1] = y;
  ctaid[2] = z;
  for (int i = 0; i < 3; ++i)
    this->clusterCtaid[i] = clusterCtaid[i];
  nthreads = cfg.block[0] * cfg.block[1] * cfg.block[2];
  nregs = std::max<uint32_t>(f.numRegs, 1);
  regs.assign(size_t(nthreads) * nregs, 0);
  threads.resize(nthreads);
  shared.assign(f.dynamicSharedOffset + cfg.dynamicShared, 0);
  local.assign(size_t(nthreads) * f.localBytes, 0);
  warpgroups.resize((nthreads + 127) / 128);
  warpWaiting.assign((nthreads + 31) / 32, 0);
  pendingShared.resize((nthreads + 31) / 32);
  live = nthreads;
  if (cluster.races)
    races = std::make_unique<CtaRaces>(*cluster.races, rank, nthreads,
                                       static_cast<uint32_t>(shared.size()));
  order.resize(nthreads);
  for (uint32_t t = 0; t < nthreads; ++t)
    order[t] = t;
  rng = cfg.scheduleSeed * 0x9E3779B97F4A7C15ull +
        (uint64_t(ctaid[0]) << 32 | ctaid[1] << 16 | ctaid[2]) + 1;
  regMask.resize(nregs);
  for (uint32_t r = 0; r < f.numRegs; ++r)
    regMask[r] = f.regBits[r] == 1 ? 1 : maskBits(f.regBits[r]);
}

std::string Cta::where(uint32_t thread) const {
  std::ostringstream os;
  os << "kernel " << f.name << ", CTA (" << ctaid[0] << "," << ctaid[1] << ","
     << ctaid[2] << ")";
  if (cluster.size() > 1)
    os << " [rank " << rank << " of cluster (" << cluster.id[0] << ","
       << cluster.id[1] << "," << cluster.id[2] << ")]";
  if (thread != ~0u) {
    uint32_t tx = thread % cfg.block[0];
    uint32_t ty = thread / cfg.block[0] % cfg.block[1];
    uint32_t tz = thread / (cfg.block[0] * cfg.block[1]);
    os << ", thread (" << tx << "," << ty << "," << tz << ") [warp "
       << thread / 32 << " lane " << thread % 32 << "]";
  }
  return os.str();
}

void Cta::fault(int code, const std::string &what, const Instr *in,
                uint32_t thread) {
  if (thread == ~0u)
    thread = tid;
  std::ostringstream os;
  os << where(thread) << ": " << what;
  if (in)
    os << "\n  at PTX line " << in->line << ": " << f.sourceLine(*in);
  throw Fault(code, os.str());
}

uint64_t Cta::special(Special s) const {
  uint32_t tx = tid % cfg.block[0];
  uint32_t ty = tid / cfg.block[0] % cfg.block[1];
  uint32_t tz = tid / (cfg.block[0] * cfg.block[1]);
  uint32_t lane = tid % 32;
  switch (s) {
  case Special::TidX: return tx;
  case Special::TidY: return ty;
  case Special::TidZ: return tz;
  case Special::NtidX: return cfg.block[0];
  case Special::NtidY: return cfg.block[1];
  case Special::NtidZ: return cfg.block[2];
  case Special::CtaidX: return ctaid[0];
  case Special::CtaidY: return ctaid[1];
  case Special::CtaidZ: return ctaid[2];
  case Special::NctaidX: return cfg.grid[0];
  case Special::NctaidY: return cfg.grid[1];
  case Special::NctaidZ: return cfg.grid[2];
  case Special::LaneId: return lane;
  case Special::WarpId: return tid / 32;
  case Special::NWarpId: return (nthreads + 31) / 32;
  case Special::SmId: return 0;
  case Special::NSmId: return 132;
  case Special::Clock: case Special::Clock64: case Special::GlobalTimer:
    return executed;
  case Special::LanemaskEq: return 1u << lane;
  case Special::LanemaskLt: return (1u << lane) - 1;
  case Special::LanemaskLe: return (2ull << lane) - 1;
  case Special::LanemaskGt: return ~((2ull << lane) - 1) & 0xFFFFFFFFu;
  case Special::LanemaskGe: return ~((1ull << lane) - 1) & 0xFFFFFFFFu;
  case Special::DynamicSmemSize: return cfg.dynamicShared;
  case Special::TotalSmemSize: return shared.size();
  // ISA 10 (special registers): the CTA's rank in its cluster (x fastest,
  // as its %cluster_ctaid), the cluster's position in the grid; a launch
  // without clusters is a grid of implicit 1x1x1 clusters.
  case Special::ClusterCtaRank: return rank;
  case Special::ClusterNCtaRank: return cluster.size();
  case Special::ClusterIdX: return cluster.id[0];
  case Special::ClusterIdY: return cluster.id[1];
  case Special::ClusterIdZ: return cluster.id[2];
  case Special::NClusterIdX: return cfg.grid[0] / cluster.shape[0];
  case Special::NClusterIdY: return cfg.grid[1] / cluster.shape[1];
  case Special::NClusterIdZ: return cfg.grid[2] / cluster.shape[2];
  case Special::ClusterCtaIdX: return clusterCtaid[0];
  case Special::ClusterCtaIdY: return clusterCtaid[1];
  case Special::ClusterCtaIdZ: return clusterCtaid[2];
  case Special::ClusterNCtaIdX: return cluster.shape[0];
  case Special::ClusterNCtaIdY: return cluster.shape[1];
  case Special::ClusterNCtaIdZ: return cluster.shape[2];
  case Special::IsExplicitCluster: return cluster.isExplicit;
  case Special::GridId: return 1;
  }
  return 0;
}

uint64_t Cta::val(const Operand &o) const {
  switch (o.kind) {
  case Operand::Reg: return o.negate ? (R[o.reg] & 1) ^ 1 : R[o.reg];
  case Operand::Imm: return o.imm;
  case Operand::Spec: return special(o.special);
  case Operand::Addr: return addressOf(o);
  default: return 0;
  }
}

Space Cta::spaceOf(Space space, uint64_t address) const {
  if (space != Space::Generic)
    return space;
  if (address >= kSharedWindow && address < kSharedWindow + kWindowSize)
    return Space::Shared;
  if (address >= kLocalWindow && address < kLocalWindow + kWindowSize)
    return Space::Local;
  if (address >= kParamWindow && address < kParamWindow + kWindowSize)
    return Space::Param;
  return Space::Global;
}

uint8_t *Cta::sharedAt(uint32_t address, uint32_t bytes, const Instr &in,
                       const char *what) {
  if (uint64_t(address) + bytes > shared.size()) {
    std::ostringstream os;
    os << "out-of-bounds shared memory " << what << " of " << bytes
       << " bytes at 0x" << std::hex << address << std::dec << " (the CTA has "
       << shared.size() << " bytes: " << f.dynamicSharedOffset
       << " static + " << cfg.dynamicShared << " dynamic)";
    fault(kIllegalAddress, os.str(), &in);
  }
  return shared.data() + address;
}

Cta &Cta::sharedOwner(uint64_t address, const Instr &in, uint32_t &offset,
                      bool ctaOnly, const char *what) {
  uint32_t a = static_cast<uint32_t>(
      address >= kSharedWindow && address < kSharedWindow + kWindowSize
          ? address - kSharedWindow : address);
  offset = a & kCtaOffsetMask;
  uint32_t field = a >> kClusterRankShift;
  if (field == 0 || field == rank + 1)
    return *this;
  std::ostringstream os;
  os << std::hex << "shared " << what << " at 0x" << a << std::dec;
  if (field > cluster.size()) {
    os << " names CTA rank " << field - 1 << ", but the cluster has "
       << cluster.size() << " CTA" << (cluster.size() > 1 ? "s" : "");
    fault(kIllegalAddress, os.str(), &in);
  }
  if (ctaOnly) {
    os << ": a .shared::cta access to the shared memory of CTA rank "
       << field - 1 << " (this is rank " << rank
       << "; another CTA's memory needs .shared::cluster or a generic "
          "address)";
    fault(kIllegalAddress, os.str(), &in);
  }
  Cta &owner = cluster.cta(field - 1);
  if (owner.live == 0) {
    // ISA 2.2.2: a CTA's shared memory is accessible to its cluster only
    // while the CTA has not exited.
    os << ": CTA rank " << field - 1 << " has exited, and its shared memory "
          "with it (a barrier.cluster before exit keeps it alive)";
    fault(kIllegalAddress, os.str(), &in);
  }
  return owner;
}

uint16_t Cta::bulkDestinations(const Instr &in, uint64_t dst, uint64_t mbar,
                               const Operand *mask, uint32_t &dstOffset,
                               uint32_t &mbarOffset) {
  bool ctaOnly = in.space == Space::Shared;
  if (mask) {
    // ISA cp.async.bulk{.tensor}: bit r of the 16-bit ctaMask is the CTA of
    // %cluster_ctarank r; the data and the complete-tx land at the same
    // CTA-relative offsets of dstMem and mbar in each.
    uint32_t bits = static_cast<uint32_t>(val(*mask)) & 0xFFFF;
    dstOffset = static_cast<uint32_t>(dst) & kCtaOffsetMask;
    mbarOffset = static_cast<uint32_t>(mbar) & kCtaOffsetMask;
    if (bits == 0)
      fault(kLaunchFailed, "multicast copy with an empty ctaMask", &in);
    if (bits >> cluster.size()) {
      std::ostringstream os;
      os << "multicast ctaMask 0x" << std::hex << bits << std::dec
         << " names CTA ranks past the cluster's " << cluster.size();
      fault(kIllegalAddress, os.str(), &in);
    }
    for (uint32_t r = 0; r < cluster.size(); ++r)
      if ((bits >> r & 1) && cluster.cta(r).live == 0)
        fault(kIllegalAddress, "multicast copy into CTA rank " +
                                   std::to_string(r) + ", which has exited",
              &in);
    return static_cast<uint16_t>(bits);
  }
  Cta &owner = sharedOwner(dst, in, dstOffset, ctaOnly, "bulk copy destination");
  Cta &barOwner = sharedOwner(mbar, in, mbarOffset, ctaOnly, "mbarrier");
  if (&owner != &barOwner)
    fault(kLaunchFailed, "the mbarrier of a bulk copy must be in the "
                         "destination's CTA (rank " +
                             std::to_string(owner.rank) + ", not " +
                             std::to_string(barOwner.rank) + ")",
          &in);
  return static_cast<uint16_t>(1u << owner.rank);
}

uint8_t *Cta::resolve(Space space, uint64_t address, uint32_t bytes,
                      const Instr &in, bool write) {
  const char *what = write ? "write" : "read";
  if (bytes > 1 && (address % std::min<uint32_t>(bytes, 16)) != 0) {
    std::ostringstream os;
    os << "misaligned " << bytes << "-byte " << what << " at 0x" << std::hex
       << address;
    fault(kMisalignedAddress, os.str(), &in);
  }
  switch (spaceOf(space, address)) {
  case Space::Shared:
  case Space::SharedCluster: {
    // Generic addresses cover the shared::cluster window (ISA 5.1.4).
    uint32_t off;
    Cta &owner = sharedOwner(address, in, off, space == Space::Shared, what);
    // Every CTA of the launch has the same shared size.
    uint8_t *p = sharedAt(off, bytes, in, what) - shared.data() +
                 owner.shared.data();
    raceCheck(tid, off, bytes, write, &in, nullptr, &owner);
    (in.op == Op::Ldmatrix || in.op == Op::Stmatrix ? stats.tensorSharedBytes
                                                     : stats.sharedBytes) +=
        bytes;
    // ldmatrix/stmatrix are counted per matrix in their collectives.
    if (in.op != Op::Ldmatrix && in.op != Op::Stmatrix)
      noteSharedAccess(in, off, bytes);
    if (write)
      checkNotMbarrier(off, bytes, &in, "a store", &owner);
    return p;
  }
  case Space::Local: {
    uint64_t off = address >= kLocalWindow ? address - kLocalWindow : address;
    if (off + bytes > f.localBytes)
      fault(kIllegalAddress, "out-of-bounds local memory access", &in);
    return local.data() + size_t(tid) * f.localBytes + off;
  }
  case Space::Param:
    if (address >= kParamWindow)
      address -= kParamWindow;
    if (write)
      fault(kIllegalAddress, "write to kernel parameter space", &in);
    if (address + bytes > f.paramBytes)
      fault(kIllegalAddress, "out-of-bounds kernel parameter read", &in);
    return const_cast<uint8_t *>(cfg.params) + address;
  case Space::Global:
  case Space::Const:
  case Space::Generic:
    if (!memory.contains(address, bytes)) {
      std::ostringstream os;
      os << "out-of-bounds global " << what << " of " << bytes
         << " bytes at " << memory.describe(address);
      fault(kIllegalAddress, os.str(), &in);
    }
    (write ? stats.globalWriteBytes : stats.globalReadBytes) += bytes;
    return reinterpret_cast<uint8_t *>(address);
  }
  return nullptr;
}

//===----------------------------------------------------------------------===//
// Shared-memory bank conflicts
//===----------------------------------------------------------------------===//
//
// Shared memory has 32 banks of 4-byte words, successive words in successive
// banks (CUDA C++ Programming Guide, compute capabilities 5.x and later,
// "Shared Memory"). A warp's request is served in wavefronts of one word
// per bank: a phase of lanes takes as many wavefronts as the most distinct
// words it touches in one bank, and lanes reading the same word share it
// (broadcast). Requests of 8 bytes per lane go in two phases of 16 lanes,
// of 16 bytes in four phases of 8 lanes, so that a phase asks for at most
// 128 bytes: the guide states banks for 32-bit accesses only, and this
// split of wider ones is the commonly used rule, an assumption here (real
// hardware may merge phases that touch the same words). ldmatrix and
// stmatrix take one phase per 8x8 matrix, its 8 row addresses of 16 bytes
// (conflict-free when the rows cover all 32 banks). cp.async writes count
// as st.shared of their size. The ideal is one wavefront per 128 bytes a
// phase moves, at least one.

/// The current lane's access to shared [address, +bytes), joined to its
/// warp's request; the request is counted once every live lane has come.
void Cta::noteSharedAccess(const Instr &in, uint32_t address,
                           uint32_t bytes) {
  if (&in < f.code.data() || &in >= f.code.data() + f.code.size())
    return;
  uint32_t warp = tid / 32, lane = tid % 32;
  uint32_t pc = static_cast<uint32_t>(&in - f.code.data());
  uint32_t visit = threads[tid].sharedVisits[pc]++;
  auto &pending = pendingShared[warp];
  auto it = pending.try_emplace(uint64_t(pc) << 32 | visit).first;
  SharedRequest &request = it->second;
  request.lanes |= 1u << lane;
  request.bytes = static_cast<uint8_t>(std::min<uint32_t>(bytes, 255));
  request.address[lane] = address;
  uint32_t live = 0;
  for (uint32_t l = 0; l < 32 && warp * 32 + l < nthreads; ++l)
    if (threads[warp * 32 + l].wait != Wait::Exited)
      live |= 1u << l;
  if ((request.lanes & live) == live) {
    countWavefronts(request);
    pending.erase(it);
  }
}

/// A predicated-off access still counts as the lane's visit, so that its
/// next one pairs with the other lanes' next.
void Cta::skipSharedAccess(const Instr &in) {
  bool mayBeShared = in.space == Space::Shared ||
                     in.space == Space::SharedCluster ||
                     in.space == Space::Generic;
  switch (in.op) {
  case Op::CpAsync:
    break;
  case Op::Ld: case Op::LdU: case Op::St: case Op::Atom: case Op::Red:
    if (mayBeShared)
      break;
    return;
  default:
    return;
  }
  ++threads[tid].sharedVisits[static_cast<uint32_t>(&in - f.code.data())];
}

void Cta::countWavefronts(const SharedRequest &request) {
  uint32_t perPhase = request.bytes <= 4 ? 32 : request.bytes <= 8 ? 16 : 8;
  for (uint32_t first = 0; first < 32; first += perPhase) {
    uint32_t lanes = request.lanes >> first;
    if (perPhase < 32)
      lanes &= (1u << perPhase) - 1;
    if (lanes)
      countPhase(request.address + first, lanes, request.bytes);
  }
}

/// One phase: `lanes` (a mask over address[0..31]) each touch `bytes`.
void Cta::countPhase(const uint32_t *address, uint32_t lanes,
                     uint32_t bytes) {
  // At most 32 lanes x 2 words, 16 x 3 or 8 x 5 (accesses are aligned).
  uint32_t words[256];
  uint32_t count = 0, active = 0;
  for (uint32_t l = 0; l < 32; ++l)
    if (lanes >> l & 1) {
      ++active;
      for (uint32_t w = address[l] / 4;
           w <= (address[l] + bytes - 1) / 4 && count < 256; ++w)
        words[count++] = w;
    }
  std::sort(words, words + count);
  count = static_cast<uint32_t>(std::unique(words, words + count) - words);
  uint32_t perBank[32] = {};
  uint32_t most = 0;
  for (uint32_t i = 0; i < count; ++i)
    most = std::max(most, ++perBank[words[i] % 32]);
  stats.sharedWavefronts += most;
  stats.sharedIdealWavefronts += std::max<uint64_t>(
      1, (uint64_t(active) * bytes + 127) / 128);
  stats.sharedWavefrontBytes += uint64_t(active) * bytes;
}

//===----------------------------------------------------------------------===//
// Scheduling
//===----------------------------------------------------------------------===//

bool Cta::pass() {
  // In order by default; with a schedule seed, each pass visits threads in
  // a random order, preempts them after a random number of instructions
  // and lands bulk copies at random points, to shake out ordering bugs.
  bool ran = false;
  if (cfg.scheduleSeed) {
    for (uint32_t i = nthreads; i > 1; --i)
      std::swap(order[i - 1], order[nextRandom() % i]);
    if (!bulkQueue.empty() && nextRandom() % 4 == 0)
      completeBulk(1);
  }
  for (uint32_t t : order)
    if (threads[t].wait == Wait::Ready) {
      runThread(t, cfg.scheduleSeed ? 1 + nextRandom() % 256 : 1u << 20);
      ran = true;
    }
  return ran;
}

uint64_t Cta::finish() {
  for (ThreadState &t : threads)
    if (!t.cpOpen.empty() || !t.cpGroups.empty())
      cpAsyncWait(t, 0); // copies land even if never waited for
  return executed;
}

std::string Cta::waiting() const {
  std::ostringstream os;
  // Group consecutive threads waiting on the same thing.
  auto describe = [&](const ThreadState &t) {
    std::ostringstream d;
    const Instr &in = f.code[t.pc];
    switch (t.wait) {
    case Wait::Barrier: {
      const BarrierState &b = barriers[t.waitArg];
      d << "at barrier " << t.waitArg << " (" << b.arrived << " of "
        << (b.expected ? b.expected : live) << " arrived)";
      break;
    }
    case Wait::Warp: d << "at a warp collective"; break;
    case Wait::Warpgroup: d << "at a warpgroup collective"; break;
    case Wait::Mbar: {
      d << "on mbarrier 0x" << std::hex << t.waitArg << std::dec;
      if (t.waitPhase >> 63)
        d << " phase parity " << (t.waitPhase & 1);
      else
        d << " phase " << t.waitPhase;
      auto it = mbarriers.find(t.waitArg);
      if (it != mbarriers.end())
        d << " (current phase " << it->second.phase << ": "
          << it->second.pending << " arrivals and " << it->second.tx
          << " transaction bytes outstanding)";
      break;
    }
    case Wait::ClusterBarrier:
      d << "at barrier.cluster.wait (" << cluster.barrierArrived << " of "
        << cluster.liveThreads() << " live threads of the cluster arrived)";
      break;
    default: d << "?"; break;
    }
    d << ", PTX line " << in.line << ": " << f.sourceLine(in);
    return d.str();
  };
  uint32_t begin = 0;
  std::string prev;
  for (uint32_t t = 0; t <= nthreads; ++t) {
    std::string cur = t < nthreads && threads[t].wait != Wait::Exited
                          ? describe(threads[t]) : "";
    if (t == nthreads || cur != prev) {
      if (!prev.empty())
        os << "\n  threads " << begin << "-" << t - 1 << ": " << prev;
      begin = t;
      prev = cur;
    }
  }
  return os.str();
}

void Cta::deadlock() {
  throw Fault(kLaunchTimeout, where(~0u) + ": deadlock: all " +
                                  std::to_string(live) +
                                  " live threads wait" + waiting());
}

//===----------------------------------------------------------------------===//
// Clusters
//===----------------------------------------------------------------------===//

Cluster::Cluster(const Module &module, const Function &f,
                 const LaunchConfig &config, Memory &memory,
                 const uint32_t shape[3], const uint32_t id[3],
                 bool isExplicit)
    : f(f), cfg(config), isExplicit(isExplicit) {
  uint32_t n = shape[0] * shape[1] * shape[2];
  uint32_t threads = cfg.block[0] * cfg.block[1] * cfg.block[2];
  uint32_t sharedBytes = f.dynamicSharedOffset + cfg.dynamicShared;
  if (cfg.raceCheck) {
    races = std::make_unique<SharedRaces>(n * threads, n * sharedBytes);
    if (n > 1)
      races->nameCtas(threads, sharedBytes);
  }
  for (int i = 0; i < 3; ++i) {
    this->shape[i] = shape[i];
    this->id[i] = id[i];
  }
  // %cluster_ctarank runs x fastest over %cluster_ctaid.
  for (uint32_t r = 0; r < n; ++r) {
    uint32_t c[3] = {r % shape[0], r / shape[0] % shape[1],
                     r / (shape[0] * shape[1])};
    ctas.push_back(std::make_unique<Cta>(
        module, f, cfg, memory, id[0] * shape[0] + c[0],
        id[1] * shape[1] + c[1], id[2] * shape[2] + c[2], *this, r, c));
  }
}

Cluster::~Cluster() = default;

uint32_t Cluster::liveThreads() const {
  uint32_t n = 0;
  for (const auto &c : ctas)
    n += c->live;
  return n;
}

void Cluster::completeBarrierIfDone() {
  if (barrierArrived == 0 || barrierArrived < liveThreads())
    return;
  // Complete, and reinitialized for the next phase (ISA barrier.cluster).
  ++barrierPhase;
  barrierArrived = 0;
  barrierCompleted = std::move(barrierRelease);
  barrierRelease.clear();
  for (auto &c : ctas)
    for (ThreadState &t : c->threads)
      if (t.wait == Wait::ClusterBarrier)
        t.wait = Wait::Ready; // re-executes its wait, which now succeeds
}

uint64_t Cluster::run() {
  // One CTA: exactly the single-CTA schedule. Several: each pass gives
  // every CTA a pass (in a random order under a schedule seed); only when
  // no thread of any CTA can run do barriers, collectives and bulk copies
  // move, and only when none can is it a deadlock.
  std::vector<uint32_t> ctaOrder(ctas.size());
  for (uint32_t r = 0; r < ctaOrder.size(); ++r)
    ctaOrder[r] = r;
  uint64_t rng = cfg.scheduleSeed * 0xD1B54A32D192ED03ull +
                 (uint64_t(id[0]) << 32 | id[1] << 16 | id[2]) + 1;
  while (true) {
    if (cfg.scheduleSeed && ctas.size() > 1) {
      for (size_t i = ctaOrder.size(); i > 1; --i) {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        std::swap(ctaOrder[i - 1], ctaOrder[rng % i]);
      }
    }
    bool ran = false;
    for (uint32_t r : ctaOrder)
      ran |= ctas[r]->pass();
    if (ran)
      continue;
    if (liveThreads() == 0)
      break;
    bool moved = false;
    for (uint32_t r : ctaOrder)
      if ((moved = ctas[r]->unblock()))
        break;
    if (moved)
      continue;
    for (uint32_t r : ctaOrder)
      if ((moved = ctas[r]->completeBulk()))
        break;
    if (moved)
      continue;
    deadlock();
  }
  uint64_t executed = 0;
  for (auto &c : ctas)
    executed += c->finish();
  return executed;
}

void Cluster::deadlock() {
  if (ctas.size() == 1)
    ctas[0]->deadlock();
  std::ostringstream os;
  os << "kernel " << f.name << ", cluster (" << id[0] << "," << id[1] << ","
     << id[2] << ") of " << ctas.size() << " CTAs: deadlock: all "
     << liveThreads() << " live threads of the cluster wait";
  for (auto &c : ctas) {
    if (c->live == 0) {
      os << "\n  CTA (" << c->ctaid[0] << "," << c->ctaid[1] << ","
         << c->ctaid[2] << ") rank " << c->rank << ": exited";
      continue;
    }
    os << "\n  CTA (" << c->ctaid[0] << "," << c->ctaid[1] << ","
       << c->ctaid[2] << ") rank " << c->rank << ":";
    std::string lines = c->waiting();
    for (size_t at = 0; (at = lines.find("\n  ", at)) != std::string::npos;
         at += 3)
      lines.insert(at + 1, "  ");
    os << lines;
  }
  throw Fault(kLaunchTimeout, os.str());
}

bool Cta::releaseBarriers() {
  bool any = false;
  for (uint32_t id = 0; id < 16; ++id) {
    BarrierState &b = barriers[id];
    if (!b.used || b.arrived == 0)
      continue;
    uint32_t need = b.expected ? b.expected : live;
    if (b.arrived < need)
      continue;
    for (uint32_t i = 0; i < nthreads; ++i) {
      ThreadState &t = threads[i];
      if (t.wait == Wait::Barrier && t.waitArg == id) {
        t.wait = Wait::Ready;
        ++t.pc;
        if (races)
          SharedRaces::join(races->clock(i), b.release);
      }
    }
    b = BarrierState{};
    any = true;
  }
  return any;
}

bool Cta::arriveBarrier(uint32_t id, uint32_t count, bool wait) {
  BarrierState &b = barriers[id];
  if (b.used && b.expected != count && b.arrived)
    fault(kLaunchFailed, "barrier " + std::to_string(id) +
                             " used with different thread counts");
  b.used = true;
  b.expected = count;
  ++b.arrived;
  if (races) {
    SharedRaces::join(b.release, races->clock(tid));
    races->tick(tid);
  }
  uint32_t need = count ? count : live;
  if (b.arrived < need) {
    if (wait) {
      threads[tid].wait = Wait::Barrier;
      threads[tid].waitArg = id;
    }
    return false;
  }
  // The last arrival: everyone waiting goes on.
  for (uint32_t i = 0; i < nthreads; ++i) {
    ThreadState &t = threads[i];
    if (t.wait == Wait::Barrier && t.waitArg == id) {
      t.wait = Wait::Ready;
      ++t.pc;
      if (races)
        SharedRaces::join(races->clock(i), b.release);
    }
  }
  if (races && wait)
    SharedRaces::join(races->clock(tid), b.release);
  b = BarrierState{};
  return true;
}

/// After threads exit, collectives waiting on them may be complete (or
/// never can be).
bool Cta::recheckCollectives() {
  for (uint32_t w = 0; w * 32 < nthreads; ++w) {
    uint32_t lane0 = w * 32;
    for (uint32_t l = 0; l < 32 && lane0 + l < nthreads; ++l) {
      ThreadState &t = threads[lane0 + l];
      if (t.wait == Wait::Warp) {
        uint32_t save = tid;
        tid = lane0 + l;
        R = &regs[size_t(tid) * nregs];
        bool done = arriveWarp(f.code[t.pc], t.pc, true);
        tid = save;
        if (done)
          return true;
        break;
      }
    }
  }
  return false;
}

void Cta::runThread(uint32_t t, uint32_t quantum) {
  tid = t;
  R = &regs[size_t(t) * nregs];
  ThreadState &ts = threads[t];
  uint32_t pc = ts.pc;
  const Instr *code = f.code.data();
  uint32_t size = static_cast<uint32_t>(f.code.size());
  // A quantum keeps one spinning thread from starving the others.
  for (uint32_t n = 0; n < quantum; ++n) {
    if (pc >= size)
      fault(kLaunchFailed, "ran past the end of the kernel");
    const Instr &in = code[pc];
    ++executed;
    ++ts.byClass[static_cast<int>(in.cls)];
    if (in.guard != kNoReg && ((R[in.guard] & 1) != 0) == in.guardNegate) {
      skipSharedAccess(in);
      ++pc;
      continue;
    }
    ts.pc = pc;
    if (!step(in, pc)) {
      return; // blocked or exited (ts.pc is where it waits)
    }
  }
  ts.pc = pc;
}

//===----------------------------------------------------------------------===//
// Arithmetic helpers
//===----------------------------------------------------------------------===//

/// A result computed under the instruction's rounding mode (ISA 9.7.3);
/// this file is compiled with -frounding-math, so `fn` runs in that mode.
template <typename T, typename Fn> T withRounding(uint8_t round, Fn fn) {
  int mode = round == RoundRz ? FE_TOWARDZERO
             : round == RoundRm ? FE_DOWNWARD
             : round == RoundRp ? FE_UPWARD : FE_TONEAREST;
  if (mode == FE_TONEAREST)
    return fn();
  int old = std::fegetround();
  std::fesetround(mode);
  volatile T r = fn();
  std::fesetround(old);
  return r;
}

/// min/max of floats (ISA 9.7.3.10-11): NaN inputs are ignored unless .NaN;
/// -0 is less than +0.
float floatMinMax(float a, float b, bool isMax, bool nanMode) {
  if (std::isnan(a) || std::isnan(b)) {
    if (nanMode || (std::isnan(a) && std::isnan(b)))
      return bitsToFloat(0x7FFFFFFF);
    return std::isnan(a) ? b : a;
  }
  if (a == b && a == 0.0f) {
    bool aNeg = std::signbit(a);
    if (isMax) return aNeg ? b : a;
    return aNeg ? a : b;
  }
  return isMax ? (a > b ? a : b) : (a < b ? a : b);
}

bool compare(uint8_t cmp, double a, double b) {
  bool unordered = std::isnan(a) || std::isnan(b);
  switch (cmp) {
  case CmpEq: return !unordered && a == b;
  case CmpNe: return !unordered && a != b;
  case CmpLt: return !unordered && a < b;
  case CmpLe: return !unordered && a <= b;
  case CmpGt: return !unordered && a > b;
  case CmpGe: return !unordered && a >= b;
  case CmpEqu: return unordered || a == b;
  case CmpNeu: return unordered || a != b;
  case CmpLtu: return unordered || a < b;
  case CmpLeu: return unordered || a <= b;
  case CmpGtu: return unordered || a > b;
  case CmpGeu: return unordered || a >= b;
  case CmpNum: return !unordered;
  case CmpNan: return unordered;
  }
  return false;
}

template <typename T> bool compareInt(uint8_t cmp, T a, T b) {
  switch (cmp) {
  case CmpEq: return a == b;
  case CmpNe: return a != b;
  case CmpLt: case CmpLo: return a < b;
  case CmpLe: case CmpLs: return a <= b;
  case CmpGt: case CmpHi: return a > b;
  case CmpGe: case CmpHs: return a >= b;
  }
  return false;
}

/// Float-to-integer conversion: rounded, clamped to the destination range,
/// NaN to 0 (ISA 9.7.9.21, "Floating Point Notes").
uint64_t floatToInt(double x, uint8_t round, Type dst) {
  if (std::isnan(x))
    return 0;
  double r;
  switch (round) {
  case RoundRzi: case RoundRz: r = std::trunc(x); break;
  case RoundRmi: case RoundRm: r = std::floor(x); break;
  case RoundRpi: case RoundRp: r = std::ceil(x); break;
  default: r = std::nearbyint(x); break;
  }
  int bits = typeBits(dst);
  if (isSigned(dst)) {
    double lo = -std::ldexp(1.0, bits - 1), hi = std::ldexp(1.0, bits - 1) - 1;
    if (r <= lo) return static_cast<uint64_t>(static_cast<int64_t>(lo)) & maskBits(bits);
    if (r >= hi) return maskBits(bits - 1);
    return static_cast<uint64_t>(static_cast<int64_t>(r)) & maskBits(bits);
  }
  double hi = std::ldexp(1.0, bits) - 1;
  if (r <= 0) return 0;
  if (r >= hi) return maskBits(bits);
  return static_cast<uint64_t>(r);
}

double roundToInteger(double x, uint8_t round) {
  switch (round) {
  case RoundRzi: return std::trunc(x);
  case RoundRmi: return std::floor(x);
  case RoundRpi: return std::ceil(x);
  case RoundRni: return std::nearbyint(x);
  default: return x;
  }
}

/// A value of type t read as a double (integers by their signedness).
double asDouble(uint64_t v, Type t) {
  switch (t) {
  case Type::F32: return f32(v);
  case Type::F64: return bitsToDouble(v);
  case Type::F16: return f16ToFloat(uint16_t(v));
  case Type::BF16: return bf16ToFloat(uint16_t(v));
  case Type::E4M3: return e4m3ToFloat(uint8_t(v));
  case Type::E5M2: return e5m2ToFloat(uint8_t(v));
  default:
    if (isSigned(t))
      return static_cast<double>(signExtend(v, typeBits(t)));
    return static_cast<double>(v & maskBits(typeBits(t)));
  }
}

/// cvt (ISA 9.7.9.21) for scalar types.
uint64_t convert(uint64_t v, Type dst, Type src, uint8_t round, bool sat,
                 bool ftz, bool satfinite, bool relu) {
  bool dstF = isFloat(dst), srcF = isFloat(src);
  int db = typeBits(dst), sb = typeBits(src);
  if (!dstF && !srcF) {
    int64_t sv = isSigned(src) ? signExtend(v, sb)
                               : static_cast<int64_t>(v & maskBits(sb));
    if (sat) {
      // Clamp to the destination's range.
      if (isSigned(dst)) {
        int64_t lo = db >= 64 ? INT64_MIN : -(int64_t(1) << (db - 1));
        int64_t hi = db >= 64 ? INT64_MAX : (int64_t(1) << (db - 1)) - 1;
        if (!isSigned(src) && (v & maskBits(sb)) > uint64_t(hi)) sv = hi;
        sv = std::clamp(sv, lo, hi);
      } else {
        uint64_t hi = maskBits(db);
        if (isSigned(src) && sv < 0) sv = 0;
        else if (uint64_t(sv) > hi) sv = static_cast<int64_t>(hi);
      }
    }
    uint64_t r = static_cast<uint64_t>(sv) & maskBits(db);
    return isSigned(dst) ? static_cast<uint64_t>(signExtend(r, db)) : r;
  }
  if (!dstF && srcF) {
    double x = asDouble(v, src);
    if (ftz && src == Type::F32) x = flushF32(static_cast<float>(x));
    uint64_t r = floatToInt(x, round, dst);
    return isSigned(dst) ? static_cast<uint64_t>(signExtend(r, db)) : r;
  }
  if (dstF && !srcF) {
    double x = asDouble(v, src);
    if (dst == Type::F64)
      return doubleToBits(x);
    if (dst == Type::F32) {
      float r;
      if (isSigned(src)) {
        int64_t i = signExtend(v, sb);
        r = withRounding<float>(round, [&] { return static_cast<float>(i); });
      } else {
        uint64_t u = v & maskBits(sb);
        r = withRounding<float>(round, [&] { return static_cast<float>(u); });
      }
      return fromF32(r);
    }
    if (dst == Type::F16) return floatToF16(static_cast<float>(x));
    if (dst == Type::BF16) return floatToBf16(static_cast<float>(x));
    return 0;
  }
  // Float to float.
  double x = asDouble(v, src);
  if (ftz && src == Type::F32) x = flushF32(static_cast<float>(x));
  if (round >= RoundRni && round <= RoundRpi)
    x = roundToInteger(x, round);
  switch (dst) {
  case Type::F64: return doubleToBits(x);
  case Type::F32: {
    float r = src == Type::F64
                  ? withRounding<float>(round, [&] { return static_cast<float>(x); })
                  : static_cast<float>(x);
    if (sat) r = std::isnan(r) ? 0.0f : std::clamp(r, 0.0f, 1.0f);
    if (ftz) r = flushF32(r);
    return fromF32(r);
  }
  case Type::F16: {
    float fx = static_cast<float>(x);
    if (relu && (fx < 0 || std::isnan(fx))) fx = std::isnan(fx) ? fx : 0.0f;
    if (satfinite && std::isfinite(x) && std::fabs(x) > 65504.0)
      fx = std::copysign(65504.0f, fx);
    return src == Type::F64 ? doubleToF16(x) : floatToF16(fx);
  }
  case Type::BF16: {
    float fx = static_cast<float>(x);
    if (relu && fx < 0) fx = 0.0f;
    return round == RoundRz ? floatToBf16Rz(fx) : floatToBf16(fx);
  }
  case Type::TF32: {
    // cvt.rna.tf32.f32: round to 10 mantissa bits, ties away.
    uint32_t b = floatToBits(static_cast<float>(x));
    if (!std::isnan(static_cast<float>(x)))
      b = (b + 0x1000u) & 0xFFFFE000u;
    return b;
  }
  case Type::E4M3: return floatToE4m3(static_cast<float>(x), satfinite);
  case Type::E5M2: return floatToE5m2(static_cast<float>(x), satfinite);
  default: return 0;
  }
}

/// prmt (ISA 9.7.8.7).
uint32_t permute(uint32_t a, uint32_t b, uint32_t c, uint8_t mode) {
  uint64_t bytes = (uint64_t(b) << 32) | a;
  auto byte = [&](unsigned i) { return uint32_t((bytes >> (8 * i)) & 0xFF); };
  uint32_t d = 0;
  if (mode == 0) {
    for (int i = 0; i < 4; ++i) {
      uint32_t sel = (c >> (4 * i)) & 0xF;
      uint32_t v = byte(sel & 7);
      if (sel & 8) v = (v & 0x80) ? 0xFF : 0;
      d |= v << (8 * i);
    }
    return d;
  }
  unsigned s = c & 3;
  static const uint8_t tables[6][4][4] = {
      // f4e: forward 4 extract
      {{0, 1, 2, 3}, {1, 2, 3, 4}, {2, 3, 4, 5}, {3, 4, 5, 6}},
      // b4e: backward 4 extract
      {{0, 7, 6, 5}, {1, 0, 7, 6}, {2, 1, 0, 7}, {3, 2, 1, 0}},
      // rc8: replicate 8
      {{0, 0, 0, 0}, {1, 1, 1, 1}, {2, 2, 2, 2}, {3, 3, 3, 3}},
      // ecl: edge clamp left
      {{0, 1, 2, 3}, {1, 1, 2, 3}, {2, 2, 2, 3}, {3, 3, 3, 3}},
      // ecr: edge clamp right
      {{0, 0, 0, 0}, {0, 1, 1, 1}, {0, 1, 2, 2}, {0, 1, 2, 3}},
      // rc16: replicate 16
      {{0, 1, 0, 1}, {2, 3, 2, 3}, {0, 1, 0, 1}, {2, 3, 2, 3}}};
  for (int i = 0; i < 4; ++i)
    d |= byte(tables[mode - 1][s][i]) << (8 * i);
  return d;
}

//===----------------------------------------------------------------------===//
// One instruction
//===----------------------------------------------------------------------===//

/// Executes `in` for the current thread; false when the thread blocks or
/// exits (its pc then stays at the instruction it waits in).
bool Cta::step(const Instr &in, uint32_t &pc) {
  static const bool trace = getenv("ATTNSIM_TRACE") != nullptr;
  if (trace && (in.op >= Op::CpAsync || in.op == Op::Ret || in.op == Op::Exit))
    fprintf(stderr, "[cta %u,%u,%u t%u] %u: %s\n", ctaid[0], ctaid[1],
            ctaid[2], tid, in.line, f.sourceLine(in).c_str());
  const Operand *o = in.ops;
  Type t = in.type;
  int bits = typeBits(t);
  switch (in.op) {
  // --- Integer and floating-point arithmetic (ISA 9.7.1-9.7.4) ---
  case Op::Add: case Op::Sub: case Op::Mul: case Op::Min: case Op::Max:
  case Op::Div: case Op::Rem: case Op::Mad: case Op::Fma: {
    uint64_t a = val(o[1]), b = in.nops > 2 ? val(o[2]) : 0;
    uint64_t c3 = in.nops > 3 ? val(o[3]) : 0;
    if (t == Type::F32) {
      float x = f32(a), y = f32(b), z = f32(c3);
      if (in.ftz) { x = flushF32(x); y = flushF32(y); z = flushF32(z); }
      float r = 0;
      switch (in.op) {
      case Op::Add: r = withRounding<float>(in.round, [&] { return x + y; }); break;
      case Op::Sub: r = withRounding<float>(in.round, [&] { return x - y; }); break;
      case Op::Mul: r = withRounding<float>(in.round, [&] { return x * y; }); break;
      case Op::Fma: case Op::Mad:
        r = withRounding<float>(in.round, [&] { return std::fma(x, y, z); });
        break;
      case Op::Div:
        // div.approx / div.full are within 2 ulp of the quotient; the
        // simulator gives the correctly rounded one.
        r = withRounding<float>(in.round, [&] { return x / y; });
        break;
      case Op::Min: r = floatMinMax(x, y, false, in.nanMode); break;
      case Op::Max: r = floatMinMax(x, y, true, in.nanMode); break;
      default: fault(kIllegalInstruction, "rem on f32", &in);
      }
      if (in.sat) r = std::isnan(r) ? 0.0f : std::clamp(r, 0.0f, 1.0f);
      if (in.ftz) r = flushF32(r);
      set(o[0], fromF32(r));
      break;
    }
    if (t == Type::F64) {
      double x = bitsToDouble(a), y = bitsToDouble(b), z = bitsToDouble(c3);
      double r = 0;
      switch (in.op) {
      case Op::Add: r = withRounding<double>(in.round, [&] { return x + y; }); break;
      case Op::Sub: r = withRounding<double>(in.round, [&] { return x - y; }); break;
      case Op::Mul: r = withRounding<double>(in.round, [&] { return x * y; }); break;
      case Op::Fma: case Op::Mad:
        r = withRounding<double>(in.round, [&] { return std::fma(x, y, z); });
        break;
      case Op::Div: r = withRounding<double>(in.round, [&] { return x / y; }); break;
      case Op::Min: r = std::isnan(x) ? y : std::isnan(y) ? x : std::fmin(x, y); break;
      case Op::Max: r = std::isnan(x) ? y : std::isnan(y) ? x : std::fmax(x, y); break;
      default: fault(kIllegalInstruction, "rem on f64", &in);
      }
      set(o[0], doubleToBits(r));
      break;
    }
    if (t == Type::F16 || t == Type::BF16 || t == Type::F16x2 ||
        t == Type::BF16x2) {
      int lanes = (t == Type::F16x2 || t == Type::BF16x2) ? 2 : 1;
      uint64_t r = 0;
      for (int l = 0; l < lanes; ++l) {
        double x = halfToFloat(uint16_t(a >> (16 * l)), t);
        double y = halfToFloat(uint16_t(b >> (16 * l)), t);
        double z = halfToFloat(uint16_t(c3 >> (16 * l)), t);
        double v = 0;
        switch (in.op) {
        case Op::Add: v = x + y; break;
        case Op::Sub: v = x - y; break;
        case Op::Mul: v = x * y; break;
        case Op::Fma: case Op::Mad: v = std::fma(x, y, z); break;
        case Op::Min: v = floatMinMax(float(x), float(y), false, in.nanMode); break;
        case Op::Max: v = floatMinMax(float(x), float(y), true, in.nanMode); break;
        default: fault(kIllegalInstruction, "unmodelled half-precision op", &in);
        }
        if (in.relu && (v < 0 || std::isnan(v))) v = std::isnan(v) ? v : 0.0;
        if (in.sat) v = std::isnan(v) ? 0.0 : std::clamp(v, 0.0, 1.0);
        r |= uint64_t(doubleToHalf(v, t)) << (16 * l);
      }
      set(o[0], r);
      break;
    }
    // Integers.
    bool sgn = isSigned(t);
    if (in.op == Op::Mul || in.op == Op::Mad) {
      uint64_t r;
      if (in.mode == 2) { // .wide: 2x-wide product
        if (sgn) r = static_cast<uint64_t>(signExtend(a, bits) * signExtend(b, bits));
        else r = (a & maskBits(bits)) * (b & maskBits(bits));
        if (in.op == Op::Mad) r += c3;
        set(o[0], r);
        break;
      }
      if (in.mode == 1) { // .hi
        if (bits == 64) {
          if (sgn) r = static_cast<uint64_t>((__int128(int64_t(a)) * int64_t(b)) >> 64);
          else r = static_cast<uint64_t>((unsigned __int128)(a) * b >> 64);
        } else if (sgn) {
          r = static_cast<uint64_t>((signExtend(a, bits) * signExtend(b, bits)) >> bits);
        } else {
          r = ((a & maskBits(bits)) * (b & maskBits(bits))) >> bits;
        }
      } else {
        r = a * b;
      }
      if (in.op == Op::Mad) r += c3;
      set(o[0], r & maskBits(bits));
      break;
    }
    uint64_t r = 0;
    switch (in.op) {
    case Op::Add:
      if (in.sat && t == Type::S32) {
        int64_t s = signExtend(a, 32) + signExtend(b, 32);
        r = static_cast<uint64_t>(std::clamp<int64_t>(s, INT32_MIN, INT32_MAX));
      } else r = a + b;
      break;
    case Op::Sub:
      if (in.sat && t == Type::S32) {
        int64_t s = signExtend(a, 32) - signExtend(b, 32);
        r = static_cast<uint64_t>(std::clamp<int64_t>(s, INT32_MIN, INT32_MAX));
      } else r = a - b;
      break;
    case Op::Min: case Op::Max: {
      bool mx = in.op == Op::Max;
      if (sgn) {
        int64_t x = signExtend(a, bits), y = signExtend(b, bits);
        r = static_cast<uint64_t>(mx ? std::max(x, y) : std::min(x, y));
      } else {
        uint64_t x = a & maskBits(bits), y = b & maskBits(bits);
        r = mx ? std::max(x, y) : std::min(x, y);
      }
      break;
    }
    case Op::Div: case Op::Rem: {
      // Division by zero gives an unspecified value on hardware; all ones
      // here, never a host trap.
      if (sgn) {
        int64_t x = signExtend(a, bits), y = signExtend(b, bits);
        if (y == 0) r = ~0ull;
        else if (y == -1) r = in.op == Op::Div ? static_cast<uint64_t>(-x) : 0;
        else r = static_cast<uint64_t>(in.op == Op::Div ? x / y : x % y);
      } else {
        uint64_t x = a & maskBits(bits), y = b & maskBits(bits);
        r = y == 0 ? ~0ull : in.op == Op::Div ? x / y : x % y;
      }
      break;
    }
    default: break;
    }
    set(o[0], r & maskBits(bits));
    break;
  }
  case Op::Mul24: case Op::Mad24: {
    uint64_t a = val(o[1]), b = val(o[2]);
    int64_t x = isSigned(t) ? signExtend(a, 24) : int64_t(a & 0xFFFFFF);
    int64_t y = isSigned(t) ? signExtend(b, 24) : int64_t(b & 0xFFFFFF);
    int64_t p = x * y;
    uint64_t r = in.mode == 1 ? uint64_t(p >> 16) : uint64_t(p);
    if (in.op == Op::Mad24) r += val(o[3]);
    set(o[0], r & 0xFFFFFFFF);
    break;
  }
  case Op::Sad: {
    uint64_t a = val(o[1]), b = val(o[2]), c = val(o[3]);
    uint64_t d = isSigned(t)
                     ? uint64_t(std::llabs(signExtend(a, bits) - signExtend(b, bits)))
                     : ((a & maskBits(bits)) > (b & maskBits(bits))
                            ? (a - b) : (b - a)) & maskBits(bits);
    set(o[0], (c + d) & maskBits(bits));
    break;
  }
  case Op::Abs: case Op::Neg: {
    uint64_t a = val(o[1]);
    bool neg = in.op == Op::Neg;
    if (t == Type::F32) {
      float x = f32(a);
      if (in.ftz) x = flushF32(x);
      set(o[0], fromF32(neg ? -x : std::fabs(x)));
    } else if (t == Type::F64) {
      double x = bitsToDouble(a);
      set(o[0], doubleToBits(neg ? -x : std::fabs(x)));
    } else if (t == Type::F16 || t == Type::BF16 || t == Type::F16x2 ||
               t == Type::BF16x2) {
      // Sign-bit operations on each 16-bit lane.
      uint64_t m = (t == Type::F16x2 || t == Type::BF16x2) ? 0x80008000u : 0x8000u;
      set(o[0], neg ? a ^ m : a & ~m);
    } else {
      int64_t x = signExtend(a, bits);
      set(o[0], static_cast<uint64_t>(neg ? -x : (x < 0 ? -x : x)) &
                    maskBits(bits));
    }
    break;
  }
  case Op::Copysign: {
    if (t == Type::F32)
      set(o[0], fromF32(std::copysign(f32(val(o[2])), f32(val(o[1])))));
    else
      set(o[0], doubleToBits(std::copysign(bitsToDouble(val(o[2])),
                                           bitsToDouble(val(o[1])))));
    break;
  }
  case Op::Testp: {
    double x = t == Type::F32 ? f32(val(o[1])) : bitsToDouble(val(o[1]));
    bool r = false;
    switch (in.mode) {
    case 0: r = std::isfinite(x); break;
    case 1: r = std::isinf(x); break;
    case 2: r = !std::isnan(x); break;
    case 3: r = std::isnan(x); break;
    case 4: r = t == Type::F32 ? std::isnormal(float(x)) : std::isnormal(x); break;
    case 5: r = t == Type::F32 ? std::fpclassify(float(x)) == FP_SUBNORMAL
                               : std::fpclassify(x) == FP_SUBNORMAL; break;
    }
    set(o[0], r);
    break;
  }
  case Op::Rcp: case Op::Sqrt: case Op::Rsqrt: case Op::Sin: case Op::Cos:
  case Op::Lg2: case Op::Ex2: case Op::Tanh: {
    uint64_t a = val(o[1]);
    if (t == Type::F64) {
      double x = bitsToDouble(a), r = 0;
      switch (in.op) {
      case Op::Rcp: r = withRounding<double>(in.round, [&] { return 1.0 / x; }); break;
      case Op::Sqrt: r = withRounding<double>(in.round, [&] { return std::sqrt(x); }); break;
      case Op::Rsqrt: r = 1.0 / std::sqrt(x); break;
      default: fault(kIllegalInstruction, "unmodelled f64 function", &in);
      }
      set(o[0], doubleToBits(r));
      break;
    }
    if (t == Type::F16 || t == Type::BF16 || t == Type::F16x2 ||
        t == Type::BF16x2) {
      int lanes = (t == Type::F16x2 || t == Type::BF16x2) ? 2 : 1;
      uint64_t r = 0;
      for (int l = 0; l < lanes; ++l) {
        float x = halfToFloat(uint16_t(a >> (16 * l)), t), v = 0;
        switch (in.op) {
        case Op::Ex2: v = std::exp2(x); break;
        case Op::Tanh: v = std::tanh(x); break;
        case Op::Rcp: v = 1.0f / x; break;
        case Op::Sqrt: v = std::sqrt(x); break;
        case Op::Rsqrt: v = 1.0f / std::sqrt(x); break;
        case Op::Lg2: v = std::log2(x); break;
        case Op::Sin: v = std::sin(x); break;
        case Op::Cos: v = std::cos(x); break;
        default: break;
        }
        r |= uint64_t(floatToHalf(v, t)) << (16 * l);
      }
      set(o[0], r);
      break;
    }
    float x = f32(a), r = 0;
    if (in.ftz) x = flushF32(x);
    // The .approx forms are modelled by the correctly rounded function
    // (hardware differs by at most the ISA's stated ulps).
    switch (in.op) {
    case Op::Rcp: r = withRounding<float>(in.round, [&] { return 1.0f / x; }); break;
    case Op::Sqrt: r = withRounding<float>(in.round, [&] { return std::sqrt(x); }); break;
    case Op::Rsqrt: r = static_cast<float>(1.0 / std::sqrt(double(x))); break;
    case Op::Sin: r = std::sin(x); break;
    case Op::Cos: r = std::cos(x); break;
    case Op::Lg2: r = std::log2(x); break;
    case Op::Ex2: r = std::exp2(x); break;
    case Op::Tanh: r = std::tanh(x); break;
    default: break;
    }
    if (in.ftz) r = flushF32(r);
    set(o[0], fromF32(r));
    break;
  }
  case Op::Popc: {
    set(o[0], __builtin_popcountll(val(o[1]) & maskBits(bits)));
    break;
  }
  case Op::Clz: {
    uint64_t a = val(o[1]) & maskBits(bits);
    set(o[0], a ? __builtin_clzll(a) - (64 - bits) : bits);
    break;
  }
  case Op::Brev: {
    uint64_t a = val(o[1]), r = 0;
    for (int i = 0; i < bits; ++i)
      if (a >> i & 1) r |= 1ull << (bits - 1 - i);
    set(o[0], r);
    break;
  }
  case Op::Bfind: {
    uint64_t a = val(o[1]) & maskBits(bits);
    if (isSigned(t) && (a >> (bits - 1) & 1))
      a = ~a & maskBits(bits);
    uint64_t r = a ? 63 - __builtin_clzll(a) : 0xFFFFFFFF;
    if (in.mode == 1 && a) r = bits - 1 - r;
    set(o[0], r);
    break;
  }
  case Op::Bfe: {
    // ISA 9.7.1.15: position and length from the low 8 bits of b and c.
    uint64_t a = val(o[1]);
    uint32_t pos = val(o[2]) & 0xFF, len = val(o[3]) & 0xFF;
    uint64_t r = 0;
    bool sbit = false;
    if (isSigned(t))
      sbit = len == 0 ? false
             : (a >> std::min<uint32_t>(pos + len - 1, bits - 1)) & 1;
    for (uint32_t i = 0; i < uint32_t(bits); ++i) {
      bool b = i < len && pos + i <= uint32_t(bits - 1) ? (a >> (pos + i)) & 1
                                                        : sbit;
      r |= uint64_t(b) << i;
    }
    set(o[0], r);
    break;
  }
  case Op::Bfi: {
    uint64_t a = val(o[1]), b = val(o[2]);
    uint32_t pos = val(o[3]) & 0xFF, len = val(o[4]) & 0xFF;
    uint64_t r = b;
    for (uint32_t i = 0; i < len && pos + i < uint32_t(bits); ++i)
      r = (r & ~(1ull << (pos + i))) | (((a >> i) & 1) << (pos + i));
    set(o[0], r);
    break;
  }
  case Op::Prmt:
    set(o[0], permute(uint32_t(val(o[1])), uint32_t(val(o[2])),
                      uint32_t(val(o[3])), in.mode));
    break;
  case Op::Shf: {
    uint32_t a = uint32_t(val(o[1])), b = uint32_t(val(o[2]));
    uint32_t n = uint32_t(val(o[3]));
    n = (in.mode & 2) ? std::min<uint32_t>(n, 32) : (n & 31);
    uint64_t pair = (uint64_t(b) << 32) | a;
    uint32_t r = (in.mode & 1) ? uint32_t((pair << n) >> 32)
                               : uint32_t(pair >> n);
    set(o[0], r);
    break;
  }
  case Op::Lop3: {
    uint32_t a = uint32_t(val(o[1])), b = uint32_t(val(o[2])),
             c = uint32_t(val(o[3]));
    uint8_t lut = uint8_t(val(o[4]));
    uint32_t r = 0;
    for (int i = 0; i < 32; ++i) {
      int idx = ((a >> i & 1) << 2) | ((b >> i & 1) << 1) | (c >> i & 1);
      r |= uint32_t(lut >> idx & 1) << i;
    }
    set(o[0], r);
    break;
  }
  case Op::Dp4a: case Op::Dp2a: {
    uint32_t a = uint32_t(val(o[1])), b = uint32_t(val(o[2]));
    int64_t acc = signExtend(val(o[3]), 32);
    bool as = isSigned(in.type), bs = isSigned(in.type2);
    if (in.op == Op::Dp4a) {
      for (int i = 0; i < 4; ++i) {
        int64_t x = as ? signExtend(a >> (8 * i), 8) : (a >> (8 * i)) & 0xFF;
        int64_t y = bs ? signExtend(b >> (8 * i), 8) : (b >> (8 * i)) & 0xFF;
        acc += x * y;
      }
    } else {
      fault(kIllegalInstruction, "dp2a is not modelled", &in);
    }
    set(o[0], uint64_t(acc) & 0xFFFFFFFF);
    break;
  }
  // --- Logic and shifts (ISA 9.7.8) ---
  case Op::And: case Op::Or: case Op::Xor: {
    uint64_t a = val(o[1]), b = val(o[2]);
    uint64_t r = in.op == Op::And ? a & b : in.op == Op::Or ? a | b : a ^ b;
    set(o[0], t == Type::Pred ? r & 1 : r);
    break;
  }
  case Op::Not:
    set(o[0], t == Type::Pred ? (val(o[1]) & 1) ^ 1 : ~val(o[1]));
    break;
  case Op::Cnot:
    set(o[0], (val(o[1]) & maskBits(bits)) == 0);
    break;
  case Op::Shl: case Op::Shr: {
    uint64_t a = val(o[1]) & maskBits(bits);
    uint32_t n = uint32_t(val(o[2]));
    uint64_t r;
    if (in.op == Op::Shl) r = n >= uint32_t(bits) ? 0 : a << n;
    else if (isSigned(t)) {
      int64_t s = signExtend(a, bits);
      r = static_cast<uint64_t>(n >= uint32_t(bits) ? (s < 0 ? -1 : 0) : s >> n);
    } else r = n >= uint32_t(bits) ? 0 : a >> n;
    set(o[0], r & maskBits(bits));
    break;
  }
  // --- Comparison and selection (ISA 9.7.6, 9.7.7) ---
  case Op::Setp: case Op::Set: {
    uint64_t a = val(o[(in.mode & 0x80) ? 2 : 1]);
    uint64_t b = val(o[(in.mode & 0x80) ? 3 : 2]);
    bool r;
    if (isFloat(t)) {
      if (t == Type::F16x2 || t == Type::BF16x2)
        fault(kIllegalInstruction, "packed setp is not modelled", &in);
      double x = asDouble(a, t), y = asDouble(b, t);
      if (in.ftz && t == Type::F32) { x = flushF32(float(x)); y = flushF32(float(y)); }
      r = compare(in.cmp, x, y);
    } else if (isSigned(t)) {
      r = compareInt(in.cmp, signExtend(a, bits), signExtend(b, bits));
    } else {
      // b16/b32/b64 compare as unsigned (only eq/ne are defined on them).
      r = compareInt(in.cmp, a & maskBits(bits), b & maskBits(bits));
    }
    int next = (in.mode & 0x80) ? 4 : 3;
    bool hasC = in.boolOp != 0;
    bool c = hasC ? val(o[next]) & 1 : false;
    auto combine = [&](bool x) {
      switch (in.boolOp) {
      case 1: return x && c;
      case 2: return x || c;
      case 3: return x != c;
      default: return x;
      }
    };
    if (in.op == Op::Set) {
      bool v = combine(r);
      uint64_t out = in.type2 == Type::F32 ? (v ? fromF32(1.0f) : 0)
                                           : (v ? ~0ull : 0);
      set(o[0], out);
      break;
    }
    set(o[0], combine(r));
    if (in.mode & 0x80)
      set(o[1], combine(!r));
    break;
  }
  case Op::Selp:
    set(o[0], (val(o[3]) & 1) ? val(o[1]) : val(o[2]));
    break;
  case Op::Slct: {
    uint64_t c = val(o[3]);
    bool ge = in.type2 == Type::F32 ? f32(c) >= 0.0f : signExtend(c, 32) >= 0;
    set(o[0], ge ? val(o[1]) : val(o[2]));
    break;
  }
  // --- Data movement (ISA 9.7.9) ---
  case Op::Mov: {
    if (o[0].kind == Operand::Vec || o[1].kind == Operand::Vec) {
      // Pack / unpack: mov.b64 d, {a, b} and mov.b64 {a, b}, d.
      if (o[1].kind == Operand::Vec) {
        uint32_t n = o[1].vecCount, w = bits / n;
        uint64_t r = 0;
        for (uint32_t i = 0; i < n; ++i)
          r |= (val(f.pool[o[1].vecBegin + i]) & maskBits(w)) << (i * w);
        set(o[0], r);
      } else {
        uint32_t n = o[0].vecCount, w = bits / n;
        uint64_t v = val(o[1]);
        for (uint32_t i = 0; i < n; ++i)
          set(f.pool[o[0].vecBegin + i], (v >> (i * w)) & maskBits(w));
      }
      break;
    }
    uint64_t v = val(o[1]);
    // A variable's address: its state-space address (ISA 9.7.9.1).
    set(o[0], t == Type::Pred ? v & 1 : v);
    break;
  }
  case Op::Cvt: {
    uint64_t a = val(o[1]);
    Type dst = in.type, src = in.type2;
    if (dst == Type::BF16x2 || dst == Type::F16x2) {
      // cvt.rn{.relu}{.satfinite}.{bf16,f16}x2.f32 d, a, b: a in the upper
      // half (ISA 9.7.9.21).
      Type half = dst == Type::BF16x2 ? Type::BF16 : Type::F16;
      if (src == Type::F32) {
        uint64_t hi = convert(a, half, Type::F32, in.round, false, false,
                              in.satfinite, in.relu);
        uint64_t lo = convert(val(o[2]), half, Type::F32, in.round, false,
                              false, in.satfinite, in.relu);
        set(o[0], (hi << 16) | lo);
      } else if (src == Type::E4M3x2 || src == Type::E5M2x2) {
        uint64_t r = 0;
        for (int l = 0; l < 2; ++l) {
          uint8_t code = uint8_t(a >> (8 * l));
          float x = src == Type::E4M3x2 ? e4m3ToFloat(code) : e5m2ToFloat(code);
          if (in.relu && x < 0) x = 0;
          r |= uint64_t(floatToF16(x)) << (16 * l);
        }
        set(o[0], r);
      } else {
        fault(kIllegalInstruction, "unmodelled packed conversion", &in);
      }
      break;
    }
    if (dst == Type::E4M3x2 || dst == Type::E5M2x2) {
      bool e4 = dst == Type::E4M3x2;
      auto narrow = [&](float x) -> uint64_t {
        if (in.relu && x < 0) x = 0;
        return e4 ? floatToE4m3(x, in.satfinite) : floatToE5m2(x, in.satfinite);
      };
      if (src == Type::F32) {
        set(o[0], (narrow(f32(a)) << 8) | narrow(f32(val(o[2]))));
      } else if (src == Type::F16x2) {
        set(o[0], narrow(f16ToFloat(uint16_t(a))) |
                      (narrow(f16ToFloat(uint16_t(a >> 16))) << 8));
      } else {
        fault(kIllegalInstruction, "unmodelled fp8 conversion", &in);
      }
      break;
    }
    if (src == Type::E4M3x2 || src == Type::E5M2x2 || src == Type::F16x2 ||
        src == Type::BF16x2)
      fault(kIllegalInstruction, "unmodelled packed conversion", &in);
    set(o[0], convert(a, dst, src, in.round, in.sat, in.ftz, in.satfinite,
                      in.relu));
    break;
  }
  case Op::Cvta: {
    // cvta.space: space address to generic; cvta.to.space: the reverse.
    uint64_t a = val(o[1]);
    uint64_t base = in.space == Space::Shared || in.space == Space::SharedCluster
                        ? kSharedWindow
                    : in.space == Space::Local ? kLocalWindow
                    : in.space == Space::Param ? kParamWindow : 0;
    uint64_t r;
    if (in.mode == 1)
      r = base && a >= base && a < base + kWindowSize ? a - base
          : base ? a : a;
    else
      r = a + base;
    if (bits == 32) r &= 0xFFFFFFFF;
    set(o[0], r);
    break;
  }
  case Op::Isspacep: {
    // isspacep.shared::cta: this CTA's window; .shared::cluster: any CTA's
    // of the cluster (ISA 5.1.4: the former inside the latter).
    uint64_t a = val(o[1]);
    Space s = spaceOf(Space::Generic, a);
    bool r = s == in.space;
    if (s == Space::Shared) {
      uint32_t field = static_cast<uint32_t>(a - kSharedWindow) >>
                       kClusterRankShift;
      r = in.space == Space::SharedCluster
              ? field <= cluster.size()
              : in.space == Space::Shared &&
                    (field == 0 || field == rank + 1);
    }
    set(o[0], r);
    break;
  }
  case Op::Mapa: {
    // mapa{.shared::cluster}.type d, a, b (ISA mapa): the address in CTA
    // rank b corresponding to a; generic in, generic out without a space.
    uint64_t a = val(o[1]);
    uint32_t target = static_cast<uint32_t>(val(o[2]));
    bool generic = in.space != Space::SharedCluster;
    if (target >= cluster.size())
      fault(kIllegalAddress, "mapa to CTA rank " + std::to_string(target) +
                                 ", but the cluster has " +
                                 std::to_string(cluster.size()) + " CTA" +
                                 (cluster.size() > 1 ? "s" : ""),
            &in);
    if (generic && spaceOf(Space::Generic, a) != Space::Shared)
      fault(kIllegalAddress, "mapa of a generic address outside shared "
                             "memory", &in);
    uint32_t off;
    sharedOwner(a, in, off, false, "mapa source");
    uint32_t mapped =
        target == rank ? off : (target + 1) << kClusterRankShift | off;
    set(o[0], generic ? kSharedWindow + mapped : mapped);
    break;
  }
  case Op::Getctarank: {
    uint64_t a = val(o[1]);
    if (in.space != Space::SharedCluster &&
        spaceOf(Space::Generic, a) != Space::Shared)
      fault(kIllegalAddress, "getctarank of a generic address outside "
                             "shared memory", &in);
    uint32_t off;
    set(o[0], sharedOwner(a, in, off, false, "getctarank source").rank);
    break;
  }
  case Op::Ld: case Op::LdU: {
    uint64_t addr = addressOf(o[1]);
    int eb = std::max(bits / 8, 1);
    if (o[0].kind == Operand::Vec) {
      uint32_t n = o[0].vecCount;
      uint8_t *p = resolve(in.space, addr, eb * n, in, false);
      for (uint32_t i = 0; i < n; ++i) {
        uint64_t v = 0;
        memcpy(&v, p + i * eb, eb);
        if (isSigned(t)) v = static_cast<uint64_t>(signExtend(v, bits));
        set(f.pool[o[0].vecBegin + i], v);
      }
      break;
    }
    uint8_t *p = resolve(in.space, addr, eb, in, false);
    uint64_t v = 0;
    memcpy(&v, p, eb);
    if (isSigned(t)) v = static_cast<uint64_t>(signExtend(v, bits));
    set(o[0], v);
    break;
  }
  case Op::St: {
    uint64_t addr = addressOf(o[0]);
    int eb = std::max(bits / 8, 1);
    if (o[1].kind == Operand::Vec) {
      uint32_t n = o[1].vecCount;
      uint8_t *p = resolve(in.space, addr, eb * n, in, true);
      for (uint32_t i = 0; i < n; ++i) {
        uint64_t v = val(f.pool[o[1].vecBegin + i]);
        memcpy(p + i * eb, &v, eb);
      }
      break;
    }
    uint8_t *p = resolve(in.space, addr, eb, in, true);
    uint64_t v = val(o[1]);
    memcpy(p, &v, eb);
    break;
  }
  case Op::Prefetch:
    break;
  case Op::Atom: case Op::Red: {
    // ISA 9.7.13.5: read-modify-write, atomic with respect to every other
    // access (threads run one at a time here).
    bool isAtom = in.op == Op::Atom;
    const Operand &addrOp = o[isAtom ? 1 : 0];
    uint64_t addr = addressOf(addrOp);
    int eb = std::max(bits / 8, 1);
    uint8_t *p = resolve(in.space, addr, eb, in, true);
    uint64_t old = 0;
    memcpy(&old, p, eb);
    uint64_t b = val(o[isAtom ? 2 : 1]);
    uint64_t r = old;
    switch (in.mode) {
    case 0: // add
      if (t == Type::F32) r = fromF32(f32(old) + f32(b));
      else if (t == Type::F64) r = doubleToBits(bitsToDouble(old) + bitsToDouble(b));
      else if (t == Type::F16 || t == Type::BF16)
        r = floatToHalf(halfToFloat(uint16_t(old), t) + halfToFloat(uint16_t(b), t), t);
      else r = old + b;
      break;
    case 1: r = (old & maskBits(bits)) >= (b & maskBits(bits)) ? 0 : old + 1; break;
    case 2: r = ((old & maskBits(bits)) == 0 || (old & maskBits(bits)) > (b & maskBits(bits))) ? b : old - 1; break;
    case 3: case 4: {
      bool mx = in.mode == 4;
      if (t == Type::F32) {
        r = fromF32(floatMinMax(f32(old), f32(b), mx, false));
      } else if (isSigned(t)) {
        int64_t x = signExtend(old, bits), y = signExtend(b, bits);
        r = uint64_t(mx ? std::max(x, y) : std::min(x, y));
      } else {
        uint64_t x = old & maskBits(bits), y = b & maskBits(bits);
        r = mx ? std::max(x, y) : std::min(x, y);
      }
      break;
    }
    case 5: r = old & b; break;
    case 6: r = old | b; break;
    case 7: r = old ^ b; break;
    case 8: r = b; break;
    case 9: r = (old & maskBits(bits)) == (b & maskBits(bits)) ? val(o[3]) : old; break;
    default: fault(kIllegalInstruction, "unmodelled atomic operation", &in);
    }
    memcpy(p, &r, eb);
    if (isAtom) set(o[0], isSigned(t) ? uint64_t(signExtend(old, bits)) : old & maskBits(bits));
    break;
  }
  // --- Asynchronous copies (ISA 9.7.9.25) ---
  case Op::CpAsync: {
    // cp.async.{ca,cg}.shared.global [dst], [src], cp-size{, src-size}:
    // bytes past src-size are zero (ISA 9.7.9.25.3.1).
    uint32_t dst = localShared(addressOf(o[0]), in, "cp.async destination");
    uint64_t src = addressOf(o[1]);
    uint32_t size = uint32_t(val(o[2]));
    uint32_t srcSize = in.nops > 3 && o[3].kind != Operand::Sink
                           ? uint32_t(val(o[3])) : size;
    if (o[3].kind == Operand::Reg && regMask[o[3].reg] == 1) {
      // The ignore-src predicate form.
      srcSize = (val(o[3]) & 1) ? 0 : size;
    }
    if (size != 4 && size != 8 && size != 16)
      fault(kIllegalInstruction, "cp.async size must be 4, 8 or 16", &in);
    if (srcSize > size)
      fault(kIllegalInstruction, "cp.async src-size larger than cp-size", &in);
    AsyncCopy c{};
    c.dst = dst;
    c.bytes = static_cast<uint8_t>(size);
    sharedAt(dst, size, in, "cp.async destination");
    if (dst % size)
      fault(kMisalignedAddress, "misaligned cp.async destination", &in);
    if (srcSize) {
      uint8_t *p = resolve(Space::Global, src, srcSize, in, false);
      memcpy(c.data, p, srcSize);
    }
    threads[tid].cpOpen.push_back(c);
    // The copy's write into shared memory is a request like st.shared's.
    noteSharedAccess(in, dst, size);
    ++stats.cpAsyncRequests;
    stats.cpAsyncBytes += size;
    break;
  }
  case Op::CpAsyncCommit: {
    ThreadState &ts = threads[tid];
    ts.cpGroups.push_back(std::move(ts.cpOpen));
    ts.cpOpen.clear();
    break;
  }
  case Op::CpAsyncWait: {
    ThreadState &ts = threads[tid];
    cpAsyncWait(ts, static_cast<size_t>(val(o[0])), in.line);
    break;
  }
  case Op::CpAsyncWaitAll: {
    ThreadState &ts = threads[tid];
    ts.cpGroups.push_back(std::move(ts.cpOpen));
    ts.cpOpen.clear();
    cpAsyncWait(ts, 0);
    break;
  }
  case Op::CpAsyncMbarrierArrive: {
    // The arrive triggers once the thread's prior cp.async complete; .noinc
    // does not add to the pending count first (ISA 9.7.13.15.8).
    ThreadState &ts = threads[tid];
    ts.cpGroups.push_back(std::move(ts.cpOpen));
    ts.cpOpen.clear();
    cpAsyncWait(ts, 0);
    uint32_t addr = localShared(addressOf(o[0]), in, "mbarrier");
    MBarrier &mb = mbarrierAt(addr, in);
    if (!(in.mode & 1))
      ++mb.pending;
    mbarrierArrive(addr, 1, in);
    break;
  }
  case Op::CpBulkTensor:
    tensorCopy(in);
    break;
  case Op::CpBulk: {
    // cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes
    // [dst], [src], size, [mbar]
    if (in.bulkToGlobal == 1) {
      uint64_t dst = addressOf(o[0]);
      uint32_t src = localShared(addressOf(o[1]), in, "bulk copy source");
      uint32_t size = uint32_t(val(o[2]));
      uint8_t *d = resolve(Space::Global, dst, size, in, true);
      memcpy(d, sharedAt(src, size, in, "bulk copy source"), size);
      break;
    }
    // [dstMem], [srcMem], size, [mbar]{, ctaMask}: into shared::cluster
    // memory, of several CTAs with .multicast::cluster.
    uint32_t dst, mbar;
    uint16_t mask = bulkDestinations(in, addressOf(o[0]), addressOf(o[3]),
                                     in.multicast ? &o[4] : nullptr, dst,
                                     mbar);
    uint64_t src = addressOf(o[1]);
    uint32_t size = uint32_t(val(o[2]));
    if (size % 16 || dst % 16 || src % 16)
      fault(kMisalignedAddress, "bulk copies move multiples of 16 bytes "
                                "between 16-byte aligned addresses", &in);
    sharedAt(dst, size, in, "bulk copy destination");
    BulkCopy b;
    if (races) {
      b.issued = races->clock(tid);
      races->tick(tid);
    }
    b.line = in.line;
    b.mbarrier = mbar;
    b.dst = dst;
    b.ctaMask = mask;
    b.thread = tid;
    // Read once, however many CTAs it lands in (the counters below too).
    uint8_t *p = resolve(Space::Global, src, size, in, false);
    b.data.assign(p, p + size);
    for (uint32_t r = 0; r < cluster.size(); ++r)
      if (mask >> r & 1)
        mbarrierAt(mbar, in, &cluster.cta(r));
    ++stats.tmaRequests;
    stats.tmaBytes += size;
    stats.tmaSharedBytes += uint64_t(size) * __builtin_popcount(mask);
    bulkQueue.push_back(std::move(b));
    break;
  }
  case Op::CpBulkCommit: case Op::CpBulkWait:
    // Bulk stores to global complete at issue.
    break;
  // --- mbarrier (ISA 9.7.13.15) ---
  case Op::MbarInit: {
    uint32_t addr = localShared(addressOf(o[0]), in, "mbarrier.init");
    if (addr % 8)
      fault(kMisalignedAddress, "mbarrier objects are 8-byte aligned", &in);
    sharedAt(addr, 8, in, "mbarrier.init");
    // Initialization is a write every later use must be ordered after.
    raceCheck(tid, addr, 8, true, &in);
    uint32_t count = uint32_t(val(o[1]));
    if (count == 0 || count > (1u << 20) - 1)
      fault(kLaunchFailed, "mbarrier.init count out of range", &in);
    MBarrier &mb = mbarriers[addr];
    mb = MBarrier{};
    mb.expected = mb.pending = count;
    mb.valid = true;
    break;
  }
  case Op::MbarInval: {
    uint32_t addr = localShared(addressOf(o[0]), in, "mbarrier.inval");
    mbarriers.erase(addr);
    break;
  }
  // expect_tx, complete_tx, arrive and arrive_drop take shared::cluster
  // addresses: another CTA's mbarrier through mapa (ISA mbarrier).
  case Op::MbarExpectTx: {
    uint32_t addr;
    Cta &owner = sharedOwner(addressOf(o[0]), in, addr,
                             in.space == Space::Shared, "mbarrier");
    mbarrierAt(addr, in, &owner).tx += int64_t(val(o[1]));
    break;
  }
  case Op::MbarCompleteTx: {
    uint32_t addr;
    Cta &owner = sharedOwner(addressOf(o[0]), in, addr,
                             in.space == Space::Shared, "mbarrier");
    mbarrierAt(addr, in, &owner);
    owner.mbarrierCompleteTx(addr, int64_t(val(o[1])));
    break;
  }
  case Op::MbarArrive: case Op::MbarArriveDrop: {
    // mbarrier.arrive{.expect_tx}{.noComplete} state, [addr]{, count|tx}
    bool hasState = o[0].kind != Operand::Addr;
    const Operand &addrOp = o[hasState ? 1 : 0];
    uint32_t addr;
    Cta &owner = sharedOwner(addressOf(addrOp), in, addr,
                             in.space == Space::Shared, "mbarrier");
    // "An mbarrier.arrive on an mbarrier object located in .shared::cluster
    // but not in .shared::cta cannot return a value": the sink '_' is
    // mandatory (ISA mbarrier.arrive).
    if (&owner != this && hasState && o[0].kind != Operand::Sink)
      fault(kLaunchFailed, "mbarrier.arrive on CTA rank " +
                               std::to_string(owner.rank) +
                               "'s mbarrier returns no state: its "
                               "destination must be '_'", &in);
    MBarrier &mb = mbarrierAt(addr, in, &owner);
    uint64_t state = mb.phase;
    bool expectTx = false;
    for (size_t i = 1; i < 2; ++i) {} // (modifier checked below)
    {
      const std::string &src = f.sourceLine(in);
      expectTx = src.find("expect_tx") != std::string::npos;
    }
    uint32_t count = 1;
    int next = hasState ? 2 : 1;
    if (in.nops > next) {
      if (expectTx) mb.tx += int64_t(val(o[next]));
      else count = uint32_t(val(o[next]));
    }
    if (in.op == Op::MbarArriveDrop) {
      if (mb.expected == 0)
        fault(kLaunchFailed, "mbarrier.arrive_drop below zero expected", &in);
      --mb.expected;
    }
    if ((in.mode & 2) && count >= mb.pending)
      fault(kLaunchFailed, "mbarrier.arrive.noComplete would complete the "
                           "phase", &in);
    if (count > mb.pending)
      fault(kLaunchFailed, "mbarrier arrivals exceed the pending count", &in);
    if (hasState)
      set(o[0], state);
    mbarrierArrive(addr, count, in, &owner);
    break;
  }
  case Op::MbarTestWait: case Op::MbarTryWait: {
    // {test,try}_wait{.parity} waitComplete, [addr], state|parity{, hint}
    // (.shared::cta only: a thread waits on its own CTA's mbarriers).
    uint32_t addr = localShared(addressOf(o[1]), in, "mbarrier wait");
    MBarrier &mb = mbarrierAt(addr, in);
    uint64_t arg = val(o[2]);
    bool complete;
    uint64_t awaited;
    if (in.mode & 1) {
      // Parity: complete when the current phase's parity differs from the
      // one asked about (that phase has completed).
      complete = (mb.phase & 1) != (arg & 1);
      awaited = (arg & 1);
    } else {
      complete = mb.phase > arg;
      awaited = arg;
    }
    ThreadState &ts = threads[tid];
    if (complete) {
      ts.polling = false;
      if (races)
        SharedRaces::join(races->clock(tid), mb.completed);
      set(o[0], 1);
      break;
    }
    // test_wait never blocks: the first failed test returns false, so a
    // thread can do other work (even the arrival itself). A second failed
    // test of the same phase in a row is a polling loop: the thread then
    // waits until the phase completes, which is what spinning amounts to.
    if (in.op == Op::MbarTestWait &&
        !(ts.polling && ts.pollAddr == addr && ts.pollPhase == mb.phase)) {
      ts.polling = true;
      ts.pollAddr = addr;
      ts.pollPhase = mb.phase;
      set(o[0], 0);
      break;
    }
    // try_wait: the thread waits here until the phase completes (a legal
    // outcome of its time limit).
    ts.wait = Wait::Mbar;
    ts.waitArg = addr;
    ts.waitPhase = awaited | ((in.mode & 1) ? 1ull << 63 : 0);
    return false;
  }
  case Op::MbarPendingCount:
    set(o[0], mbarrierAt(static_cast<uint32_t>(addressOf(o[1])) &
                             kCtaOffsetMask, in).pending);
    break;
  // --- Control (ISA 9.7.12) ---
  case Op::Bra:
    pc = static_cast<uint32_t>(o[0].imm);
    return true;
  case Op::Ret: case Op::Exit: {
    ThreadState &ts = threads[tid];
    if (!ts.cpOpen.empty() || !ts.cpGroups.empty())
      cpAsyncWait(ts, 0);
    ts.wait = Wait::Exited;
    --live;
    // Barriers and collectives may now be complete; barrier.cluster waits
    // for the non-exited threads only (ISA exit, barrier.cluster).
    releaseBarriers();
    if (ts.clusterArrived && ts.clusterPhase == cluster.barrierPhase)
      --cluster.barrierArrived;
    ts.clusterArrived = false;
    cluster.completeBarrierIfDone();
    return false;
  }
  case Op::Trap:
    fault(kLaunchFailed, "trap executed", &in);
  case Op::Brkpt: case Op::Pmevent: case Op::Nanosleep: case Op::Nop:
  case Op::Membar: case Op::Fence: case Op::Griddep: case Op::Setmaxnreg:
  case Op::WgFence:
    break;
  case Op::Call:
    fault(kIllegalInstruction, "call is not modelled", &in);
  case Op::BarSync: case Op::BarArrive: {
    uint32_t id = in.nops > 0 ? uint32_t(val(o[0])) : 0;
    uint32_t count = in.nops > 1 ? uint32_t(val(o[1])) : 0;
    if (id >= 16)
      fault(kLaunchFailed, "barrier id " + std::to_string(id) + " > 15", &in);
    if (count && (count % 32 || count > nthreads))
      fault(kLaunchFailed, "barrier thread count " + std::to_string(count) +
                               " is not a multiple of 32 up to the CTA size",
            &in);
    bool wait = in.op == Op::BarSync;
    if (arriveBarrier(id, count, wait)) {
      ++pc;
      return true;
    }
    if (!wait) {
      ++pc;
      return true;
    }
    return false;
  }
  case Op::BarRed:
    fault(kIllegalInstruction, "bar.red is not modelled", &in);
  case Op::BarClusterArrive: {
    // ISA barrier.cluster: each thread arrives once per phase; the phase
    // completes when every non-exited thread of the cluster has arrived,
    // and the barrier starts the next. .relaxed arrivals are treated as
    // .release (race checks: this can hide races, not invent them).
    ThreadState &ts = threads[tid];
    if (ts.clusterArrived && ts.clusterPhase == cluster.barrierPhase)
      fault(kLaunchFailed, "barrier.cluster.arrive again before the barrier "
                           "completed (each thread arrives once per phase)",
            &in);
    ts.clusterArrived = true;
    ts.clusterPhase = cluster.barrierPhase;
    ++cluster.barrierArrived;
    if (races) {
      SharedRaces::join(cluster.barrierRelease, races->clock(tid));
      races->tick(tid);
    }
    cluster.completeBarrierIfDone();
    break;
  }
  case Op::BarClusterWait: {
    // Waits for the phase of this thread's last arrival.
    ThreadState &ts = threads[tid];
    if (!ts.clusterArrived)
      fault(kLaunchFailed, "barrier.cluster.wait without a "
                           "barrier.cluster.arrive before it", &in);
    if (cluster.barrierPhase <= ts.clusterPhase) {
      ts.wait = Wait::ClusterBarrier;
      return false;
    }
    ts.clusterArrived = false;
    if (races)
      SharedRaces::join(races->clock(tid), cluster.barrierCompleted);
    break;
  }
  // --- Warp and warpgroup collectives ---
  case Op::BarWarpSync: case Op::Shfl: case Op::Vote: case Op::Match:
  case Op::Redux: case Op::Elect: case Op::Ldmatrix: case Op::Stmatrix:
  case Op::Mma: {
    ThreadState &ts = threads[tid];
    ts.wait = Wait::Warp;
    ++warpWaiting[tid / 32];
    if (arriveWarp(in, pc)) {
      // This thread completed the collective: go on.
      ts.wait = Wait::Ready;
      ++pc;
      return true;
    }
    return false;
  }
  case Op::Activemask: {
    // Lanes of the warp that have not exited.
    uint32_t w = tid / 32, m = 0;
    for (uint32_t l = 0; l < 32 && w * 32 + l < nthreads; ++l)
      if (threads[w * 32 + l].wait != Wait::Exited) m |= 1u << l;
    set(o[0], m);
    break;
  }
  case Op::WgMma: case Op::WgCommit: case Op::WgWait: {
    ThreadState &ts = threads[tid];
    ts.wait = Wait::Warpgroup;
    if (arriveWarpgroup(in, pc)) {
      ts.wait = Wait::Ready;
      ++pc;
      return true;
    }
    return false;
  }
  }
  ++pc;
  return true;
}

//===----------------------------------------------------------------------===//
// Collectives
//===----------------------------------------------------------------------===//

/// Marks the current thread as arrived; runs the collective when every lane
/// it needs has arrived at the same instruction. True when it ran.
bool Cta::arriveWarp(const Instr &in, uint32_t pc, bool recheck) {
  uint32_t warp = tid / 32, lane0 = warp * 32;
  uint32_t mask = 0xFFFFFFFF;
  uint32_t lanesInWarp = std::min<uint32_t>(32, nthreads - lane0);
  // The member mask operand, where the instruction has one.
  switch (in.op) {
  case Op::Shfl: mask = uint32_t(val(in.ops[in.nops - 1])); break;
  case Op::Vote: case Op::Match: case Op::Redux: case Op::Elect:
  case Op::BarWarpSync:
    mask = uint32_t(val(in.ops[in.nops - 1]));
    break;
  default: break;
  }
  if (lane0 + 32 > nthreads)
    mask &= (1u << (nthreads - lane0)) - 1;
  // Fewer lanes wait than the collective needs: nothing to check yet
  // (after exits, `recheck` looks at the lanes themselves).
  if (!recheck && warpWaiting[warp] < uint32_t(__builtin_popcount(mask)) &&
      warpWaiting[warp] < lanesInWarp)
    return false;
  uint32_t arrived = 0;
  for (uint32_t l = 0; l < 32 && lane0 + l < nthreads; ++l) {
    const ThreadState &t = threads[lane0 + l];
    if (!(mask >> l & 1))
      continue;
    if (t.wait == Wait::Exited)
      fault(kLaunchFailed, "warp collective needs lane " + std::to_string(l) +
                               ", which has exited", &in);
    if (t.wait == Wait::Warp && t.pc == pc)
      arrived |= 1u << l;
    else if (t.wait == Wait::Warp && f.code[t.pc].op != in.op)
      fault(kLaunchFailed, "lanes of a warp wait at different collectives "
                           "(lane " + std::to_string(l) + " at PTX line " +
                               std::to_string(f.code[t.pc].line) + ")", &in);
  }
  if (arrived != mask)
    return false;
  if (!(mask >> (tid % 32) & 1))
    fault(kLaunchFailed, "a lane outside the member mask executed a "
                         "warp collective", &in);
  std::vector<uint32_t> lanes;
  if (races)
    for (uint32_t l = 0; l < 32; ++l)
      if (mask >> l & 1)
        lanes.push_back(lane0 + l);
  syncAgents(lanes);
  warpCollective(in, warp, mask);
  tickAgents(lanes);
  for (uint32_t l = 0; l < 32; ++l)
    if ((mask >> l & 1) && lane0 + l != tid) {
      ThreadState &t = threads[lane0 + l];
      t.wait = Wait::Ready;
      ++t.pc;
    }
  warpWaiting[warp] -= static_cast<uint8_t>(__builtin_popcount(mask));
  return true;
}

bool Cta::arriveWarpgroup(const Instr &in, uint32_t pc) {
  uint32_t group = tid / 128, first = group * 128;
  if (first + 128 > nthreads)
    fault(kLaunchFailed, "wgmma needs a whole warpgroup of 128 threads", &in);
  for (uint32_t i = 0; i < 128; ++i) {
    const ThreadState &t = threads[first + i];
    if (t.wait == Wait::Exited)
      fault(kLaunchFailed, "a thread of the warpgroup has exited", &in);
    if (t.wait != Wait::Warpgroup || t.pc != pc)
      return false;
  }
  std::vector<uint32_t> members;
  if (races)
    for (uint32_t i = 0; i < 128; ++i)
      members.push_back(first + i);
  syncAgents(members);
  warpgroupCollective(in, group);
  tickAgents(members);
  for (uint32_t i = 0; i < 128; ++i)
    if (first + i != tid) {
      ThreadState &t = threads[first + i];
      t.wait = Wait::Ready;
      ++t.pc;
    }
  return true;
}

void Cta::warpCollective(const Instr &in, uint32_t warp, uint32_t mask) {
  uint32_t lane0 = warp * 32;
  uint32_t self = tid;
  auto regsOf = [&](uint32_t lane) { return &regs[size_t(lane0 + lane) * nregs]; };
  auto valOf = [&](uint32_t lane, const Operand &o) {
    uint64_t *save = R;
    uint32_t saveTid = tid;
    R = regsOf(lane);
    tid = lane0 + lane;
    uint64_t v = val(o);
    R = save;
    tid = saveTid;
    return v;
  };
  auto setOf = [&](uint32_t lane, const Operand &o, uint64_t v) {
    if (o.kind == Operand::Reg)
      regsOf(lane)[o.reg] = v & regMask[o.reg];
  };
  const Operand *o = in.ops;
  switch (in.op) {
  case Op::BarWarpSync:
    break;
  case Op::Shfl: {
    // ISA 9.7.9.6: shfl.sync.mode.b32 d[|p], a, b, c, membermask.
    bool pair = in.mode & 0x80;
    int mode = in.mode & 3;
    const Operand &d = o[0];
    const Operand *pOut = pair ? &o[1] : nullptr;
    const Operand &a = o[pair ? 2 : 1], &b = o[pair ? 3 : 2],
                  &c = o[pair ? 4 : 3];
    uint64_t src[32];
    for (uint32_t l = 0; l < 32; ++l)
      src[l] = (mask >> l & 1) ? valOf(l, a) : 0;
    for (uint32_t l = 0; l < 32; ++l) {
      if (!(mask >> l & 1)) continue;
      uint32_t bval = valOf(l, b) & 31, cv = uint32_t(valOf(l, c));
      uint32_t clamp = cv & 31, seg = (cv >> 8) & 31;
      uint32_t maxLane = (l & seg) | (clamp & ~seg), minLane = l & seg;
      int32_t j;
      bool pval;
      switch (mode) {
      case 0: j = int32_t(l) - int32_t(bval); pval = j >= int32_t(maxLane); break;
      case 1: j = int32_t(l + bval); pval = j <= int32_t(maxLane); break;
      case 2: j = int32_t(l ^ bval); pval = j <= int32_t(maxLane); break;
      default: j = int32_t(minLane | (bval & ~seg)); pval = j <= int32_t(maxLane); break;
      }
      if (!pval) j = int32_t(l);
      if (!(mask >> j & 1)) {
        tid = lane0 + l;
        fault(kLaunchFailed, "shfl.sync reads lane " + std::to_string(j) +
                                 ", outside the member mask", &in);
      }
      setOf(l, d, src[j]);
      if (pOut) setOf(l, *pOut, pval);
    }
    break;
  }
  case Op::Vote: {
    // ISA 9.7.13.12: vote.sync.{all,any,uni}.pred / .ballot.b32.
    uint32_t ballot = 0;
    for (uint32_t l = 0; l < 32; ++l)
      if ((mask >> l & 1) && (valOf(l, o[1]) & 1)) ballot |= 1u << l;
    for (uint32_t l = 0; l < 32; ++l) {
      if (!(mask >> l & 1)) continue;
      uint64_t r;
      switch (in.mode) {
      case 0: r = ballot == mask; break;
      case 1: r = ballot != 0; break;
      case 2: r = ballot == mask || ballot == 0; break;
      default: r = ballot; break;
      }
      setOf(l, o[0], r);
    }
    break;
  }
  case Op::Match: {
    uint64_t v[32];
    for (uint32_t l = 0; l < 32; ++l)
      v[l] = (mask >> l & 1) ? valOf(l, o[1]) & maskBits(typeBits(in.type)) : 0;
    bool all = true;
    for (uint32_t l = 0; l < 32; ++l)
      if ((mask >> l & 1) && v[l] != v[__builtin_ctz(mask)]) all = false;
    for (uint32_t l = 0; l < 32; ++l) {
      if (!(mask >> l & 1)) continue;
      uint32_t same = 0;
      for (uint32_t j = 0; j < 32; ++j)
        if ((mask >> j & 1) && v[j] == v[l]) same |= 1u << j;
      if (in.mode == 1) {
        setOf(l, o[0], all ? mask : 0);
        if (in.nops > 3 && (in.ops[1].kind == Operand::Reg)) {}
      } else {
        setOf(l, o[0], same);
      }
    }
    break;
  }
  case Op::Redux: {
    uint64_t acc = 0;
    bool first = true;
    for (uint32_t l = 0; l < 32; ++l) {
      if (!(mask >> l & 1)) continue;
      uint64_t x = valOf(l, o[1]) & 0xFFFFFFFF;
      if (first) { acc = x; first = false; continue; }
      switch (in.mode) {
      case 0: acc = (acc + x) & 0xFFFFFFFF; break;
      case 3: acc = isSigned(in.type) ? uint64_t(std::min(signExtend(acc, 32), signExtend(x, 32))) & 0xFFFFFFFF : std::min(acc, x); break;
      case 4: acc = isSigned(in.type) ? uint64_t(std::max(signExtend(acc, 32), signExtend(x, 32))) & 0xFFFFFFFF : std::max(acc, x); break;
      case 5: acc &= x; break;
      case 6: acc |= x; break;
      case 7: acc ^= x; break;
      default: fault(kIllegalInstruction, "unmodelled redux operation", &in);
      }
    }
    for (uint32_t l = 0; l < 32; ++l)
      if (mask >> l & 1) setOf(l, o[0], acc);
    break;
  }
  case Op::Elect: {
    // elect.sync d|p, membermask: the lowest lane of the mask is elected.
    uint32_t leader = __builtin_ctz(mask);
    bool pair = in.mode & 0x80;
    for (uint32_t l = 0; l < 32; ++l) {
      if (!(mask >> l & 1)) continue;
      if (pair) {
        setOf(l, o[0], leader);
        setOf(l, o[1], l == leader);
      } else {
        setOf(l, o[0], l == leader);
      }
    }
    break;
  }
  case Op::Ldmatrix: execLdmatrix(in, warp); break;
  case Op::Stmatrix: execStmatrix(in, warp); break;
  case Op::Mma: execMma(in, warp); break;
  default: break;
  }
  tid = self;
  R = &regs[size_t(tid) * nregs];
}

/// ldmatrix.sync.aligned.m8n8.{x1,x2,x4}{.trans}.shared.b16 (ISA 9.7.14.5.15):
/// lanes 8i..8i+7 give the row addresses of matrix i; each lane receives,
/// per matrix, the two 16-bit elements (row lane/4, columns 2(lane%4)+{0,1})
/// or with .trans (rows 2(lane%4)+{0,1}, column lane/4).
void Cta::execLdmatrix(const Instr &in, uint32_t warp) {
  if (in.m != 8 || in.n != 8 || typeBits(in.type) != 16)
    fault(kIllegalInstruction, "only ldmatrix .m8n8 .b16 is modelled", &in);
  uint32_t lane0 = warp * 32;
  int count = in.vec;
  uint64_t rowAddr[32];
  for (uint32_t l = 0; l < uint32_t(8 * count); ++l) {
    tid = lane0 + l;
    R = &regs[size_t(tid) * nregs];
    rowAddr[l] = addressOf(in.ops[1]);
    if (rowAddr[l] % 16)
      fault(kMisalignedAddress, "ldmatrix row addresses are 16-byte aligned",
            &in);
  }
  countMatrixRows(rowAddr, count);
  for (uint32_t l = 0; l < 32; ++l) {
    tid = lane0 + l;
    R = &regs[size_t(tid) * nregs];
    for (int i = 0; i < count; ++i) {
      uint32_t word = 0;
      for (int j = 0; j < 2; ++j) {
        uint32_t row = in.trans ? 2 * (l % 4) + j : l / 4;
        uint32_t col = in.trans ? l / 4 : 2 * (l % 4) + j;
        uint16_t h;
        uint8_t *p = resolve(in.space, rowAddr[8 * i + row] + 2 * col, 2, in,
                             false);
        memcpy(&h, p, 2);
        word |= uint32_t(h) << (16 * j);
      }
      const Operand &d = in.ops[0].kind == Operand::Vec
                             ? f.pool[in.ops[0].vecBegin + i] : in.ops[0];
      set(d, word);
    }
  }
}

/// stmatrix (ISA 9.7.14.5.16): the inverse of ldmatrix.
void Cta::execStmatrix(const Instr &in, uint32_t warp) {
  if (in.m != 8 || in.n != 8)
    fault(kIllegalInstruction, "only stmatrix .m8n8 is modelled", &in);
  uint32_t lane0 = warp * 32;
  int count = in.vec;
  uint64_t rowAddr[32];
  for (uint32_t l = 0; l < uint32_t(8 * count); ++l) {
    tid = lane0 + l;
    R = &regs[size_t(tid) * nregs];
    rowAddr[l] = addressOf(in.ops[0]);
  }
  countMatrixRows(rowAddr, count);
  for (uint32_t l = 0; l < 32; ++l) {
    tid = lane0 + l;
    R = &regs[size_t(tid) * nregs];
    for (int i = 0; i < count; ++i) {
      const Operand &s = in.ops[1].kind == Operand::Vec
                             ? f.pool[in.ops[1].vecBegin + i] : in.ops[1];
      uint32_t word = uint32_t(val(s));
      for (int j = 0; j < 2; ++j) {
        uint32_t row = in.trans ? 2 * (l % 4) + j : l / 4;
        uint32_t col = in.trans ? l / 4 : 2 * (l % 4) + j;
        uint16_t h = uint16_t(word >> (16 * j));
        memcpy(resolve(in.space, rowAddr[8 * i + row] + 2 * col, 2, in, true),
               &h, 2);
      }
    }
  }
}

/// The registers of a fragment operand, in order.
std::vector<const Operand *> fragmentRegs(const Function &f, const Operand &o) {
  std::vector<const Operand *> r;
  if (o.kind == Operand::Vec)
    for (uint32_t i = 0; i < o.vecCount; ++i)
      r.push_back(&f.pool[o.vecBegin + i]);
  else
    r.push_back(&o);
  return r;
}

/// mma.sync.aligned (ISA 9.7.14.5.14): D = A x B + C over the warp, with
/// the fragment layouts of ISA 9.7.14.5.x (Fragments.cpp). Products are
/// exact and summed in double, rounded once to the accumulator type.
void Cta::execMma(const Instr &in, uint32_t warp) {
  int m = in.m, n = in.n, k = in.k;
  Type ta = in.type2, tb = in.typeB, tc = in.type3, td = in.type;
  int abits = typeBits(ta), bbits = typeBits(tb);
  int cbits = typeBits(tc), dbits = typeBits(td);
  if (ta == Type::TF32) abits = 32;
  if (tb == Type::TF32) bbits = 32;
  auto ra = fragmentRegs(f, in.ops[1]), rb = fragmentRegs(f, in.ops[2]),
       rc = fragmentRegs(f, in.ops[3]), rd = fragmentRegs(f, in.ops[0]);
  int na = ptx::mmaFragmentCount(m, n, k, 'a', abits);
  int nb = ptx::mmaFragmentCount(m, n, k, 'b', bbits);
  int nc = ptx::mmaFragmentCount(m, n, k, 'c', cbits);
  if (!na || !nb || !nc)
    fault(kIllegalInstruction, "mma shape/type not modelled", &in);
  std::vector<double> A(m * k), B(k * n), C(m * n);
  uint32_t lane0 = warp * 32;
  auto perReg = [](int bits) { return bits >= 32 ? 1 : 32 / bits; };
  for (uint32_t l = 0; l < 32; ++l) {
    uint64_t *regsL = &regs[size_t(lane0 + l) * nregs];
    auto get = [&](const Operand *op) {
      return op->kind == Operand::Reg ? regsL[op->reg] : op->imm;
    };
    for (int i = 0; i < na; ++i) {
      auto [r, c] = ptx::mmaFragment(m, n, k, 'a', abits, int(l), i);
      int per = perReg(abits);
      A[r * k + c] = elementValue(get(ra[i / per]), i % per, abits == 32 ? 32 : abits, ta);
    }
    for (int i = 0; i < nb; ++i) {
      auto [r, c] = ptx::mmaFragment(m, n, k, 'b', bbits, int(l), i);
      int per = perReg(bbits);
      B[r * n + c] = elementValue(get(rb[i / per]), i % per, bbits == 32 ? 32 : bbits, tb);
    }
    for (int i = 0; i < nc; ++i) {
      auto [r, c] = ptx::mmaFragment(m, n, k, 'c', cbits, int(l), i);
      int per = perReg(cbits);
      C[r * n + c] = elementValue(get(rc[i / per]), i % per, cbits, tc);
    }
  }
  std::vector<double> D(m * n);
  bool integer = !isFloat(td);
  stats.tensorFlops += 2ull * m * n * k;
  for (int r = 0; r < m; ++r)
    for (int c = 0; c < n; ++c) {
      double s = C[r * n + c];
      if (integer) {
        int64_t acc = static_cast<int64_t>(s);
        for (int x = 0; x < k; ++x)
          acc += static_cast<int64_t>(A[r * k + x]) *
                 static_cast<int64_t>(B[x * n + c]);
        if (in.satfinite)
          acc = std::clamp<int64_t>(acc, INT32_MIN, INT32_MAX);
        D[r * n + c] = static_cast<double>(static_cast<int32_t>(acc));
      } else {
        for (int x = 0; x < k; ++x)
          s += A[r * k + x] * B[x * n + c];
        D[r * n + c] = s;
      }
    }
  int nd = ptx::mmaFragmentCount(m, n, k, 'd', dbits);
  for (uint32_t l = 0; l < 32; ++l) {
    uint64_t *regsL = &regs[size_t(lane0 + l) * nregs];
    int per = perReg(dbits);
    std::vector<uint64_t> out(rd.size(), 0);
    for (int i = 0; i < nd; ++i) {
      auto [r, c] = ptx::mmaFragment(m, n, k, 'd', dbits, int(l), i);
      double v = D[r * n + c];
      uint64_t bitsOut;
      switch (td) {
      case Type::F32: bitsOut = fromF32(static_cast<float>(v)); break;
      case Type::F64: bitsOut = doubleToBits(v); break;
      case Type::F16: bitsOut = doubleToF16(v); break;
      case Type::S32: bitsOut = uint64_t(int64_t(v)) & 0xFFFFFFFF; break;
      default: bitsOut = 0; break;
      }
      out[i / per] |= (bitsOut & maskBits(dbits)) << ((i % per) * dbits);
    }
    for (size_t j = 0; j < rd.size(); ++j)
      if (rd[j]->kind == Operand::Reg)
        regsL[rd[j]->reg] = out[j] & regMask[rd[j]->reg];
  }
}

//===----------------------------------------------------------------------===//
// wgmma (ISA 9.7.15)
//===----------------------------------------------------------------------===//

void Cta::warpgroupCollective(const Instr &in, uint32_t group) {
  Warpgroup &wg = warpgroups[group];
  uint32_t first = group * 128;
  switch (in.op) {
  case Op::WgCommit:
    wg.committed.push_back(std::move(wg.open));
    wg.open.clear();
    break;
  case Op::WgWait: {
    uint32_t save = tid;
    tid = first;
    R = &regs[size_t(tid) * nregs];
    size_t keep = static_cast<size_t>(val(in.ops[0]));
    tid = save;
    R = &regs[size_t(tid) * nregs];
    retireWgmma(group, keep);
    break;
  }
  case Op::WgMma: {
    // Operands: {d}, a-desc | {a}, b-desc, scale-d[, imm-scale-a,
    // imm-scale-b[, imm-trans-a], imm-trans-b] (ISA 9.7.15.5.2).
    WgmmaOp op{};
    op.instr = &in;
    op.aInRegisters = in.ops[1].kind == Operand::Vec;
    uint32_t save = tid;
    // Descriptors and scales must agree across the warpgroup.
    for (uint32_t i = 0; i < 128; ++i) {
      tid = first + i;
      R = &regs[size_t(tid) * nregs];
      uint64_t da = op.aInRegisters ? 0 : val(in.ops[1]);
      uint64_t db = val(in.ops[2]);
      bool sd = val(in.ops[3]) & 1;
      if (i == 0) {
        op.descA = da;
        op.descB = db;
        op.scaleD = sd;
      } else if (da != op.descA || db != op.descB || sd != op.scaleD) {
        fault(kLaunchFailed, "wgmma descriptors or scale-d differ across "
                             "the warpgroup", &in);
      }
    }
    tid = save;
    R = &regs[size_t(tid) * nregs];
    int rest = in.nops - 4;
    op.scaleA = op.scaleB = 1;
    bool sixteenBit = typeBits(in.type2) == 16;
    if (rest >= 2) {
      op.scaleA = int64_t(in.ops[4].imm) == -1 ? -1 : 1;
      op.scaleB = int64_t(in.ops[5].imm) == -1 ? -1 : 1;
    }
    if (sixteenBit) {
      if (op.aInRegisters) {
        if (rest >= 3) op.transB = in.ops[6].imm & 1;
      } else if (rest >= 4) {
        op.transA = in.ops[6].imm & 1;
        op.transB = in.ops[7].imm & 1;
      }
    }
    if (getenv("ATTNSIM_WGMMA_EAGER"))
      executeWgmma(group, op);
    else
      wg.open.push_back(op);
    break;
  }
  default: break;
  }
}

void Cta::retireWgmma(uint32_t group, size_t keep) {
  Warpgroup &wg = warpgroups[group];
  while (wg.committed.size() > keep) {
    for (const WgmmaOp &op : wg.committed.front())
      executeWgmma(group, op);
    wg.committed.pop_front();
  }
}

double readElement(const uint8_t *p, int bits, Type t, int sub) {
  uint64_t v = 0;
  memcpy(&v, p, std::max(bits / 8, 1));
  return elementValue(v, sub, bits, t);
}

void Cta::executeWgmma(uint32_t group, const WgmmaOp &op) {
  const Instr &in = *op.instr;
  int M = 64, N = in.n, K = in.k;
  Type ta = in.type2, tb = in.typeB, td = in.type;
  int abits = ta == Type::TF32 ? 32 : typeBits(ta);
  int bbits = tb == Type::TF32 ? 32 : typeBits(tb);
  int dbits = typeBits(td);
  uint32_t first = group * 128;
  std::vector<double> A(M * K), B(K * N), D(M * N);
  auto dRegs = fragmentRegs(f, in.ops[0]);
  int nd = ptx::wgmmaFragmentCount('d', N, dbits);
  if (!nd)
    fault(kIllegalInstruction, "wgmma shape not modelled", &in, first);
  int dPer = dbits >= 32 ? 1 : 32 / dbits;
  // Operand A.
  if (op.aInRegisters) {
    auto aRegs = fragmentRegs(f, in.ops[1]);
    int na = ptx::wgmmaFragmentCount('a', N, abits);
    int aPer = abits >= 32 ? 1 : 32 / abits;
    for (uint32_t t = 0; t < 128; ++t) {
      uint64_t *rr = &regs[size_t(first + t) * nregs];
      for (int i = 0; i < na; ++i) {
        auto [r, c] = ptx::wgmmaFragment('a', N, abits, int(t), i);
        const Operand *x = aRegs[i / aPer];
        A[r * K + c] = elementValue(x->kind == Operand::Reg ? rr[x->reg] : 0,
                                    i % aPer, abits, ta);
      }
    }
  } else {
    ptx::MatrixDescriptor d = ptx::decodeDescriptor(op.descA);
    for (int r = 0; r < M; ++r)
      for (int c = 0; c < K; ++c) {
        uint32_t a = ptx::wgmmaElementAddress(d, op.transA, abits, r, c);
        raceCheck(first, a, std::max(abits / 8, 1), false, &in);
        int sub = abits < 8 ? (c % (8 / abits)) : 0;
        A[r * K + c] = readElement(
            sharedAt(a, std::max(abits / 8, 1), in, "wgmma A read"), abits,
            ta, sub);
      }
  }
  {
    ptx::MatrixDescriptor d = ptx::decodeDescriptor(op.descB);
    for (int c = 0; c < N; ++c)
      for (int r = 0; r < K; ++r) {
        uint32_t a = ptx::wgmmaElementAddress(d, op.transB, bbits, c, r);
        raceCheck(first, a, std::max(bbits / 8, 1), false, &in);
        int sub = bbits < 8 ? (r % (8 / bbits)) : 0;
        B[r * N + c] = readElement(
            sharedAt(a, std::max(bbits / 8, 1), in, "wgmma B read"), bbits,
            tb, sub);
      }
  }
  // Accumulators.
  for (uint32_t t = 0; t < 128; ++t) {
    uint64_t *rr = &regs[size_t(first + t) * nregs];
    for (int i = 0; i < nd; ++i) {
      auto [r, c] = ptx::wgmmaFragment('d', N, dbits, int(t), i);
      const Operand *x = dRegs[i / dPer];
      D[r * N + c] = op.scaleD ? elementValue(rr[x->reg], i % dPer, dbits, td)
                               : 0.0;
    }
  }
  bool integer = !isFloat(td);
  stats.tensorFlops += 2ull * M * N * K;
  stats.wgmmaFlops += 2ull * M * N * K;
  stats.tensorSharedBytes +=
      uint64_t(op.aInRegisters ? 0 : M * K * abits / 8) + K * N * bbits / 8;
  for (int r = 0; r < M; ++r)
    for (int c = 0; c < N; ++c) {
      double s = 0;
      for (int x = 0; x < K; ++x)
        s += A[r * K + x] * B[x * N + c];
      s *= op.scaleA * op.scaleB;
      D[r * N + c] += s;
      if (integer)
        D[r * N + c] = static_cast<double>(static_cast<int32_t>(
            std::clamp<double>(D[r * N + c], INT32_MIN, INT32_MAX)));
    }
  for (uint32_t t = 0; t < 128; ++t) {
    uint64_t *rr = &regs[size_t(first + t) * nregs];
    std::vector<uint64_t> out(dRegs.size(), 0);
    for (int i = 0; i < nd; ++i) {
      auto [r, c] = ptx::wgmmaFragment('d', N, dbits, int(t), i);
      double v = D[r * N + c];
      uint64_t b = td == Type::F32 ? fromF32(static_cast<float>(v))
                   : td == Type::F16 ? doubleToF16(v)
                                     : uint64_t(int64_t(v)) & 0xFFFFFFFF;
      out[i / dPer] |= (b & maskBits(dbits)) << ((i % dPer) * dbits);
    }
    for (size_t j = 0; j < dRegs.size(); ++j)
      if (dRegs[j]->kind == Operand::Reg)
        rr[dRegs[j]->reg] = out[j] & regMask[dRegs[j]->reg];
  }
}

//===----------------------------------------------------------------------===//
// Asynchronous copies and mbarriers
//===----------------------------------------------------------------------===//

void Cta::cpAsyncWait(ThreadState &t, size_t keep, uint32_t line) {
  uint32_t self = static_cast<uint32_t>(&t - threads.data());
  while (t.cpGroups.size() > keep) {
    for (const AsyncCopy &c : t.cpGroups.front()) {
      if (races) {
        std::string race = races->access(self, races->clock(self), c.dst,
                                         c.bytes, true, line, rank);
        if (!race.empty())
          fault(kLaunchFailed, race + " (a cp.async landing at its wait)",
                nullptr, self);
      }
      checkNotMbarrier(c.dst, c.bytes, nullptr, "a cp.async landing");
      memcpy(shared.data() + c.dst, c.data, c.bytes);
    }
    t.cpGroups.pop_front();
  }
}

MBarrier &Cta::mbarrierAt(uint32_t address, const Instr &in, Cta *owner) {
  if (!owner)
    owner = this;
  auto it = owner->mbarriers.find(address);
  if (it == owner->mbarriers.end() || !it->second.valid) {
    std::ostringstream os;
    os << "mbarrier at shared address 0x" << std::hex << address;
    if (owner != this)
      os << std::dec << " of CTA rank " << owner->rank;
    os << " is used before mbarrier.init";
    fault(kLaunchFailed, os.str(), &in);
  }
  // Uses read the object mbarrier.init wrote (tid: the thread using it).
  raceCheck(tid, address, 8, false, &in, nullptr, owner);
  return it->second;
}

void Cta::phaseCompleted(uint32_t address) {
  MBarrier &mb = mbarriers[address];
  ++mb.phase;
  mb.pending = mb.expected;
  mb.tx = 0;
  mb.completed = std::move(mb.release);
  mb.release.clear();
  for (ThreadState &t : threads)
    if (t.wait == Wait::Mbar && t.waitArg == address)
      t.wait = Wait::Ready; // re-executes its wait, which now succeeds
}

void Cta::mbarrierArrive(uint32_t address, uint32_t count, const Instr &in,
                         Cta *owner) {
  if (!owner)
    owner = this;
  MBarrier &mb = mbarrierAt(address, in, owner);
  if (races) {
    SharedRaces::join(mb.release, races->clock(tid));
    races->tick(tid);
  }
  mb.pending -= count;
  if (mb.pending == 0 && mb.tx == 0)
    owner->phaseCompleted(address);
}

void Cta::mbarrierCompleteTx(uint32_t address, int64_t bytes) {
  MBarrier &mb = mbarriers[address];
  mb.tx -= bytes;
  if (mb.pending == 0 && mb.tx == 0)
    phaseCompleted(address);
}

bool Cta::completeBulk(size_t most) {
  if (bulkQueue.empty())
    return false;
  // Everything issued lands now (nothing else can make progress), or the
  // oldest `most` copies.
  for (size_t n = 0; n < most && !bulkQueue.empty(); ++n) {
    BulkCopy b = std::move(bulkQueue.front());
    bulkQueue.pop_front();
    tid = b.thread;
    uint32_t bytes = static_cast<uint32_t>(b.data.size());
    // One engine for the cluster: its writes come after what the issuer
    // knew, and each destination's complete-tx releases them.
    uint32_t e = races ? races->engine() : 0;
    if (races) {
      SharedRaces::join(races->clock(e), b.issued);
      races->tick(e);
    }
    for (uint32_t r = 0; r < cluster.size(); ++r) {
      if (!(b.ctaMask >> r & 1))
        continue;
      Cta &to = cluster.cta(r);
      if (&to != this && to.live == 0)
        throw Fault(kIllegalAddress,
                    where(b.thread) + ": a bulk copy issued at PTX line " +
                        std::to_string(b.line) + " lands in CTA rank " +
                        std::to_string(r) + ", which has exited");
      if (races) {
        auto check = [&](uint32_t addr, uint32_t size) {
          std::string race = races->access(e, races->clock(e), addr, size,
                                           true, b.line, r);
          if (!race.empty())
            throw Fault(kLaunchFailed,
                        where(b.thread) + ": " + race +
                            " (a bulk copy issued at PTX line " +
                            std::to_string(b.line) + " landing)");
        };
        if (b.addresses.empty())
          check(b.dst, bytes);
        else
          for (uint32_t a : b.addresses)
            check(a, 16);
        SharedRaces::join(to.mbarriers[b.mbarrier].release, races->clock(e));
      }
      checkNotMbarrier(b.dst, bytes, nullptr, "a bulk copy landing", &to);
      if (b.addresses.empty()) {
        memcpy(to.shared.data() + b.dst, b.data.data(), bytes);
      } else {
        for (size_t i = 0; i < b.addresses.size(); ++i)
          memcpy(to.shared.data() + b.addresses[i], b.data.data() + 16 * i,
                 16);
      }
      if (getenv("ATTNSIM_TRACE"))
        fprintf(stderr, "[bulk] %u bytes -> rank %u 0x%x, mbarrier 0x%x\n",
                bytes, r, b.dst, b.mbarrier);
      to.mbarrierCompleteTx(b.mbarrier, int64_t(bytes));
    }
  }
  return true;
}

/// cp.async.bulk.tensor (ISA 9.7.9.25.5.1) in tile mode through a tensor
/// map: a box of the tensor starting at the (signed) coordinates, elements
/// outside the tensor filled with zeros (or NaN), written to shared memory
/// row by row, 16-byte chunks swizzled as the map says (ISA 5.5.7).
void Cta::tensorCopy(const Instr &in) {
  int dims = in.dims;
  bool toGlobal = in.bulkToGlobal == 1;
  // Operands: [dst], [map], {c0, ..}, [mbar]   (load)
  //           [map], {c0, ..}, [src]            (store)
  int mapIndex = toGlobal ? 0 : 1;
  uint64_t mapAddr = addressOf(in.ops[mapIndex]);
  const uint8_t *mp = resolve(Space::Generic, mapAddr, 128, in, false);
  TensorMap map;
  memcpy(&map, mp, sizeof(map));
  if (map.magic != kTensorMapMagic)
    fault(kLaunchFailed, "the tensor map operand does not point at a tensor "
                         "map made by cuTensorMapEncodeTiled", &in);
  if (map.rank != dims)
    fault(kLaunchFailed, "tensor map of rank " + std::to_string(map.rank) +
                             " used by a " + std::to_string(dims) +
                             "d copy", &in);
  const Operand &coords = in.ops[mapIndex + 1];
  if (coords.kind != Operand::Vec || int(coords.vecCount) != dims)
    fault(kLaunchFailed, "tensor copy coordinates do not match its rank", &in);
  int64_t coord[5] = {0, 0, 0, 0, 0};
  for (int i = 0; i < dims; ++i)
    coord[i] = signExtend(val(f.pool[coords.vecBegin + i]), 32);
  uint32_t box[5] = {1, 1, 1, 1, 1}, es[5] = {1, 1, 1, 1, 1};
  for (int i = 0; i < dims; ++i) {
    box[i] = map.boxMinus1[i] + 1u;
    es[i] = map.elementStrides[i];
  }
  uint32_t eb = map.elementBytes;
  // Elements traversed per dimension: box / elementStride, rounded up.
  uint32_t cnt[5];
  for (int i = 0; i < 5; ++i) cnt[i] = (box[i] + es[i] - 1) / es[i];
  uint32_t rowBytes = cnt[0] * eb;
  uint32_t total = rowBytes * cnt[1] * cnt[2] * cnt[3] * cnt[4];
  const Operand &smemOp = in.ops[toGlobal ? mapIndex + 2 : 0];
  // Loads: [dstMem], [map, coords], [mbar]{, ctaMask} into shared::cluster
  // memory, of several CTAs with .multicast::cluster; stores read this
  // CTA's.
  uint32_t smem, mbar = 0;
  uint16_t mask = 0;
  if (toGlobal)
    smem = localShared(addressOf(smemOp), in, "TMA source");
  else
    mask = bulkDestinations(in, addressOf(smemOp),
                            addressOf(in.ops[mapIndex + 2]),
                            in.multicast ? &in.ops[mapIndex + 3] : nullptr,
                            smem, mbar);
  if (smem % 128)
    fault(kMisalignedAddress, "TMA shared memory address must be 128-byte "
                              "aligned", &in);
  sharedAt(smem, total, in, toGlobal ? "TMA source" : "TMA destination");
  uint32_t span = map.swizzle;
  if (span && rowBytes > span)
    fault(kLaunchFailed, "TMA box inner dimension of " +
                             std::to_string(rowBytes) + " bytes exceeds the " +
                             std::to_string(span) + "-byte swizzle", &in);
  std::vector<uint8_t> data(total, 0);
  std::vector<uint32_t> chunkAddr;
  auto globalAt = [&](const int64_t *c, bool &inside) -> uint64_t {
    inside = true;
    uint64_t a = map.address;
    for (int i = 0; i < dims; ++i) {
      if (c[i] < 0 || c[i] >= int64_t(map.dims[i])) inside = false;
      a += (i == 0 ? uint64_t(c[i]) * eb : uint64_t(c[i]) * map.strides[i - 1]);
    }
    return a;
  };
  uint32_t offset = 0;
  for (uint32_t i4 = 0; i4 < cnt[4]; ++i4)
    for (uint32_t i3 = 0; i3 < cnt[3]; ++i3)
      for (uint32_t i2 = 0; i2 < cnt[2]; ++i2)
        for (uint32_t i1 = 0; i1 < cnt[1]; ++i1)
          for (uint32_t i0 = 0; i0 < cnt[0]; ++i0, offset += eb) {
            int64_t c[5] = {coord[0] + int64_t(i0 * es[0]),
                            coord[1] + int64_t(i1 * es[1]),
                            coord[2] + int64_t(i2 * es[2]),
                            coord[3] + int64_t(i3 * es[3]),
                            coord[4] + int64_t(i4 * es[4])};
            bool inside;
            uint64_t g = globalAt(c, inside);
            if (toGlobal) {
              if (!inside) continue; // out-of-bound elements are not written
              uint32_t s = ptx::swizzleAddress(smem + offset, span);
              memcpy(resolve(Space::Global, g, eb, in, true),
                     sharedAt(s, eb, in, "TMA source"), eb);
              continue;
            }
            if (inside)
              memcpy(&data[offset], resolve(Space::Global, g, eb, in, false),
                     eb);
            else if (map.oobFillNan && eb == 4) {
              uint32_t nan = 0x7FFFFFFF;
              memcpy(&data[offset], &nan, 4);
            }
          }
  ++stats.tmaRequests;
  stats.tmaBytes += total;
  stats.tmaSharedBytes += uint64_t(total) * (toGlobal ? 1 : __builtin_popcount(mask));
  if (toGlobal)
    return;
  for (uint32_t r = 0; r < cluster.size(); ++r)
    if (mask >> r & 1)
      mbarrierAt(mbar, in, &cluster.cta(r));
  BulkCopy b;
  if (races) {
    b.issued = races->clock(tid);
    races->tick(tid);
  }
  b.line = in.line;
  b.mbarrier = mbar;
  b.dst = smem;
  b.ctaMask = mask;
  b.thread = tid;
  b.data = std::move(data);
  if (span) {
    for (uint32_t o = 0; o < total; o += 16)
      b.addresses.push_back(ptx::swizzleAddress(smem + o, span));
    if (total % 16)
      fault(kLaunchFailed, "swizzled TMA boxes are multiples of 16 bytes", &in);
  }
  bulkQueue.push_back(std::move(b));
}

} // namespace

LaunchStats launch(const ptx::Module &module, const ptx::Function &kernel,
                   const LaunchConfig &config, Memory &memory) {
  LaunchStats stats;
  uint64_t ctas = uint64_t(config.grid[0]) * config.grid[1] * config.grid[2];
  uint32_t threads = config.block[0] * config.block[1] * config.block[2];
  if (threads == 0 || threads > 1024)
    throw Fault(kLaunchFailed, "kernel " + kernel.name + ": block of " +
                                   std::to_string(threads) +
                                   " threads (1 to 1024 allowed)");
  for (int i = 0; i < 3; ++i)
    if (kernel.maxThreads[i] && config.block[i] > kernel.maxThreads[i])
      throw Fault(kLaunchFailed, "kernel " + kernel.name +
                                     ": block exceeds its .maxntid");
  uint64_t sharedBytes = uint64_t(kernel.dynamicSharedOffset) +
                         config.dynamicShared;
  if (sharedBytes > 227 * 1024)
    throw Fault(kLaunchFailed, "kernel " + kernel.name + " needs " +
                                   std::to_string(sharedBytes) +
                                   " bytes of shared memory (227 KiB max)");
  // The cluster shape (ISA 11.4 directives; CUDA programming guide, thread
  // block clusters): the launch's, else the kernel's .reqnctapercluster,
  // else 1x1x1; at most 8 CTAs (the portable size; the non-portable 16 is
  // an opt-in the driver stand-in does not offer), dividing the grid.
  uint32_t shape[3];
  bool launchShape = config.cluster[0] || config.cluster[1] ||
                     config.cluster[2];
  bool kernelShape = kernel.reqCluster[0] != 0;
  auto dims = [](const uint32_t *d) {
    return "(" + std::to_string(d[0]) + "," + std::to_string(d[1]) + "," +
           std::to_string(d[2]) + ")";
  };
  for (int i = 0; i < 3; ++i)
    shape[i] = launchShape ? config.cluster[i]
               : kernelShape ? kernel.reqCluster[i] : 1;
  std::string who = "kernel " + kernel.name + ": ";
  if (shape[0] == 0 || shape[1] == 0 || shape[2] == 0)
    throw Fault(kInvalidClusterSize, who + "cluster shape " + dims(shape) +
                                         " has an empty dimension");
  if (launchShape && kernelShape &&
      !std::equal(shape, shape + 3, kernel.reqCluster))
    throw Fault(kInvalidClusterSize,
                who + "launched with clusters of " + dims(shape) +
                    " CTAs, but its .reqnctapercluster is " +
                    dims(kernel.reqCluster));
  if (kernel.explicitCluster && !launchShape && !kernelShape)
    throw Fault(kInvalidClusterSize, who + ".explicitcluster kernel launched "
                                           "without a cluster shape");
  uint64_t clusterSize = uint64_t(shape[0]) * shape[1] * shape[2];
  if (clusterSize > 8)
    throw Fault(kInvalidClusterSize,
                who + "clusters of " + std::to_string(clusterSize) +
                    " CTAs " + dims(shape) +
                    " (at most 8, the portable cluster size)");
  if (kernel.maxClusterRank && clusterSize > kernel.maxClusterRank)
    throw Fault(kInvalidClusterSize,
                who + "clusters of " + std::to_string(clusterSize) +
                    " CTAs exceed its .maxclusterrank " +
                    std::to_string(kernel.maxClusterRank));
  for (int i = 0; i < 3; ++i)
    if (config.grid[i] % shape[i])
      throw Fault(kInvalidClusterSize,
                  who + "grid " + dims(config.grid) +
                      " is not a multiple of the cluster shape " +
                      dims(shape));
  bool isExplicit = launchShape || kernelShape || kernel.explicitCluster;
  uint32_t nclusters[3] = {config.grid[0] / shape[0],
                           config.grid[1] / shape[1],
                           config.grid[2] / shape[2]};
  uint64_t clusters = ctas / clusterSize;
  // Clusters are independent: spread them over the host's cores.
  unsigned workers = std::max(1u, std::min<unsigned>(
                                      std::thread::hardware_concurrency(),
                                      static_cast<unsigned>(std::min<uint64_t>(clusters, 64))));
  if (const char *env = getenv("ATTNSIM_THREADS"))
    workers = std::max(1, atoi(env));
  std::atomic<uint64_t> next{0}, executed{0};
  std::mutex faultMutex;
  std::optional<Fault> firstFault;
  auto work = [&] {
    while (true) {
      uint64_t i = next.fetch_add(1);
      if (i >= clusters)
        return;
      {
        std::lock_guard<std::mutex> lock(faultMutex);
        if (firstFault)
          return;
      }
      uint32_t id[3] = {
          uint32_t(i % nclusters[0]), uint32_t(i / nclusters[0] % nclusters[1]),
          uint32_t(i / (uint64_t(nclusters[0]) * nclusters[1]))};
      try {
        Cluster cluster(module, kernel, config, memory, shape, id,
                        isExplicit);
        executed += cluster.run();
        std::lock_guard<std::mutex> lock(faultMutex);
        for (uint32_t r = 0; r < cluster.size(); ++r) {
          stats.add(cluster.cta(r).counters());
          ++stats.ctas;
        }
      } catch (const Fault &f) {
        std::lock_guard<std::mutex> lock(faultMutex);
        if (!firstFault)
          firstFault = f;
        return;
      }
    }
  };
  if (workers <= 1) {
    work();
  } else {
    std::vector<std::thread> pool;
    for (unsigned w = 0; w < workers; ++w)
      pool.emplace_back(work);
    for (std::thread &t : pool)
      t.join();
  }
  if (firstFault)
    throw *firstFault;
  stats.instructions = executed;
  return stats;
}

void LaunchStats::add(const LaunchStats &o) {
  instructions += o.instructions;
  for (int i = 0; i < ptx::kInstrClasses; ++i) {
    byClass[i] += o.byClass[i];
    warpByClass[i] += o.warpByClass[i];
  }
  tensorFlops += o.tensorFlops;
  wgmmaFlops += o.wgmmaFlops;
  tensorSharedBytes += o.tensorSharedBytes;
  sharedBytes += o.sharedBytes;
  globalReadBytes += o.globalReadBytes;
  globalWriteBytes += o.globalWriteBytes;
  tmaRequests += o.tmaRequests;
  tmaBytes += o.tmaBytes;
  tmaSharedBytes += o.tmaSharedBytes;
  cpAsyncRequests += o.cpAsyncRequests;
  cpAsyncBytes += o.cpAsyncBytes;
  sharedWavefronts += o.sharedWavefronts;
  sharedIdealWavefronts += o.sharedIdealWavefronts;
  sharedWavefrontBytes += o.sharedWavefrontBytes;
  ctas += o.ctas;
}

} // namespace attn::sim
