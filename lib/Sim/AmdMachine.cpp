//===- AmdMachine.cpp - the CDNA wave64 machine ----------------------------===//
//
// Semantics follow AMD's "AMD Instinct MI300 (CDNA3) Instruction Set
// Architecture" reference guide (cited as "CDNA3 ISA" with its section),
// which gfx90a's CDNA2 guide shares for every instruction modelled here;
// the initial register state of a dispatch follows LLVM's AMDGPUUsage
// ("Initial Kernel Execution State", "Kernel Descriptor").
//
//===----------------------------------------------------------------------===//
#include "lib/Sim/AmdMachine.h"
#include "lib/Sim/AmdMfma.h"
#include "lib/Sim/Numbers.h"

#include "llvm/Support/AMDHSAKernelDescriptor.h"

#include <algorithm>
#include <atomic>
#include <bit>
#include <cfenv>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <sstream>
#include <thread>
#include <unordered_map>
#include <vector>

namespace attn::sim::amd {

namespace {

constexpr unsigned kLanes = 64;
constexpr uint32_t kPoison = 0x7fbadbad;

/// One wave's architectural state.
struct Wave {
  uint32_t s[kScalarRegs] = {};
  bool scc = false;
  bool ended = false, atBarrier = false;
  unsigned id = 0;
  uint64_t pc = 0;
  uint64_t lanes = 0; // lanes that hold a work-item
  uint64_t executed = 0; // instructions since the dispatch began
  std::unique_ptr<uint32_t[]> v{new uint32_t[size_t(kVectorRows) * kLanes]};

  // Outstanding loads (s_waitcnt): registers written by loads not yet
  // retired by a wait, counted per register.
  struct Pending {
    const Inst *inst;
    uint16_t first = 0, count = 0; // registers (vector file or scalar)
    bool scalar = false;
    bool smem = false; // scalar memory: returns out of order
  };
  std::deque<Pending> vm, lgkm;
  std::vector<uint8_t> pendV = std::vector<uint8_t>(kVectorRegs);
  uint8_t pendS[kScalarRegs] = {};
  unsigned pending = 0; // entries in vm + lgkm with registers

  uint64_t exec() const { return s[kExec] | uint64_t(s[kExec + 1]) << 32; }
  void setExec(uint64_t e) {
    s[kExec] = uint32_t(e);
    s[kExec + 1] = uint32_t(e >> 32);
  }
  uint64_t vcc() const { return s[kVcc] | uint64_t(s[kVcc + 1]) << 32; }
  void setVcc(uint64_t e) {
    s[kVcc] = uint32_t(e);
    s[kVcc + 1] = uint32_t(e >> 32);
  }
  uint32_t *vreg(unsigned r) { return v.get() + size_t(r) * kLanes; }
};

} // namespace

/// What a handler sees: the wave, its workgroup and the dispatch.
struct Exec {
  const CodeObject *code = nullptr;
  const Kernel *kernel = nullptr;
  const DispatchConfig *config = nullptr;
  Memory *memory = nullptr;
  Wave *w = nullptr;
  uint32_t group[3] = {0, 0, 0};
  uint8_t *lds = nullptr;
  uint32_t ldsBytes = 0;
  uint64_t nextPc = 0;
  bool ocp = false;       // gfx950: OCP fp8 formats
  bool flushF32 = false;  // FLOAT_DENORM_MODE_32 == 0
  bool flushF16 = false;  // FLOAT_DENORM_MODE_16_64 == 0
  bool gfx90a = false;
  bool trace = false, traceValues = false;
  DispatchStats stats;
  uint32_t cst[4][2] = {}; // constant sources as registers
  /// LDS race check (ATTNSIM_RACECHECK=1): per byte, the barrier epoch and
  /// wave of the last write and the waves that read it in the current
  /// epoch; s_barrier is the only ordering between waves.
  struct LdsShadow {
    std::vector<uint32_t> writeEpoch, readEpoch;
    std::vector<uint8_t> writer;
    std::vector<uint16_t> readers;
    std::vector<const Inst *> writeInst, readInst;
    uint32_t epoch = 1;
  };
  LdsShadow *races = nullptr;
  // Scratch for DPP / SDWA sources.
  uint32_t tmp[4][kLanes] = {};

  [[noreturn]] void fault(int code, const std::string &why, const Inst &in,
                          int lane = -1) const;
  std::string where(int lane) const;
};

namespace {

//===----------------------------------------------------------------------===//
// Faults
//===----------------------------------------------------------------------===//

std::string hex(uint64_t v) {
  char b[32];
  snprintf(b, sizeof b, "0x%llx", static_cast<unsigned long long>(v));
  return b;
}

std::string describeInst(const Inst &in) {
  return "at " + hex(in.address) + ": " + in.text;
}

} // namespace

std::string Exec::where(int lane) const {
  std::ostringstream os;
  os << "kernel " << kernel->name << ", workgroup (" << group[0] << ","
     << group[1] << "," << group[2] << "), wave " << w->id;
  if (lane >= 0) {
    uint32_t t = w->id * kLanes + uint32_t(lane);
    uint32_t bx = config->block[0], by = config->block[1];
    os << " lane " << lane << " (work-item (" << t % bx << "," << t / bx % by
       << "," << t / (bx * by) << "))";
  }
  return os.str();
}

void Exec::fault(int code, const std::string &why, const Inst &in,
                 int lane) const {
  throw Fault(code, where(lane) + ": " + why + "\n  " + describeInst(in));
}

namespace {

//===----------------------------------------------------------------------===//
// Operands
//===----------------------------------------------------------------------===//

/// A 32-bit source seen per lane: a VGPR (step 1) or a uniform value.
struct Src {
  const uint32_t *p;
  uint32_t step;
  uint32_t operator[](unsigned lane) const { return p[lane * step]; }
};

/// A 64-bit source seen per lane.
struct Src64 {
  const uint32_t *lo, *hi;
  uint32_t step;
  uint64_t operator[](unsigned lane) const {
    return lo[lane * step] | uint64_t(hi[lane * step]) << 32;
  }
};

uint64_t constant64(const Exec &x, const Operand &o) {
  switch (o.kind) {
  case Operand::Imm: return o.imm;
  case Operand::Scc: return x.w->scc;
  case Operand::Execz: return x.w->exec() == 0;
  case Operand::Vccz: return x.w->vcc() == 0;
  case Operand::Aperture: return o.dwords == 1 ? o.imm >> 32 : o.imm;
  default: return 0;
  }
}

inline Src src(Exec &x, const Inst &in, int i) {
  const Operand &o = in.src[i];
  if (o.kind == Operand::Vgpr)
    return {x.w->vreg(o.index), 1};
  if (o.kind == Operand::Sgpr)
    return {&x.w->s[o.index], 0};
  x.cst[i][0] = uint32_t(constant64(x, o));
  return {&x.cst[i][0], 0};
}

inline Src64 src64(Exec &x, const Inst &in, int i) {
  const Operand &o = in.src[i];
  if (o.kind == Operand::Vgpr)
    return {x.w->vreg(o.index), x.w->vreg(o.index + 1u), 1};
  if (o.kind == Operand::Sgpr)
    return {&x.w->s[o.index], &x.w->s[o.index + 1], 0};
  uint64_t v = constant64(x, o);
  x.cst[i][0] = uint32_t(v);
  x.cst[i][1] = uint32_t(v >> 32);
  return {&x.cst[i][0], &x.cst[i][1], 0};
}

/// Scalar sources.
inline uint32_t sget(Exec &x, const Operand &o) {
  if (o.kind == Operand::Sgpr)
    return x.w->s[o.index];
  return uint32_t(constant64(x, o));
}
inline uint64_t sget64(Exec &x, const Operand &o) {
  if (o.kind == Operand::Sgpr)
    return x.w->s[o.index] | uint64_t(x.w->s[o.index + 1]) << 32;
  return constant64(x, o);
}
inline void sset(Exec &x, const Operand &o, uint32_t v) {
  x.w->s[o.index] = v;
}
inline void sset64(Exec &x, const Operand &o, uint64_t v) {
  x.w->s[o.index] = uint32_t(v);
  x.w->s[o.index + 1] = uint32_t(v >> 32);
}

/// A lane mask result (VOPC, carry-out): VCC for e32 forms, else the
/// explicit scalar destination.
inline void setMask(Exec &x, const Operand *dst, uint64_t m) {
  if (dst)
    sset64(x, *dst, m);
  else
    x.w->setVcc(m);
}

inline float f32(uint32_t b) { return bitsToFloat(b); }
inline uint32_t b32(float f) { return floatToBits(f); }

/// Source modifiers on f32 bits (CDNA3 ISA 4.4 / 12.13: abs, then neg).
inline uint32_t modF32(uint32_t b, uint8_t mods) {
  if (mods & kModAbs)
    b &= 0x7fffffffu;
  if (mods & kModNeg)
    b ^= 0x80000000u;
  return b;
}

inline float flushDenorm(float f) {
  return std::fpclassify(f) == FP_SUBNORMAL ? std::copysign(0.0f, f) : f;
}

//===----------------------------------------------------------------------===//
// The wait counters (CDNA3 ISA 4.4 "Data dependency resolution", s_waitcnt)
//===----------------------------------------------------------------------===//

void markPending(Wave &w, std::deque<Wave::Pending> &q, const Inst *in,
                 const Operand *dst, bool smem = false) {
  Wave::Pending p;
  p.inst = in;
  p.smem = smem;
  if (dst && (dst->kind == Operand::Vgpr || dst->kind == Operand::Sgpr)) {
    p.first = dst->index;
    p.count = dst->dwords;
    p.scalar = dst->kind == Operand::Sgpr;
    for (unsigned r = p.first; r < p.first + p.count; ++r)
      ++(p.scalar ? w.pendS[r] : w.pendV[r]);
    ++w.pending;
  }
  q.push_back(p);
}

void retire(Wave &w, const Wave::Pending &p) {
  if (!p.count)
    return;
  for (unsigned r = p.first; r < p.first + p.count; ++r)
    --(p.scalar ? w.pendS[r] : w.pendV[r]);
  --w.pending;
}

/// s_waitcnt: vmcnt in bits 3:0 and 15:14, lgkmcnt in 11:8 (gfx9).
void waitcnt(Wave &w, unsigned vmcnt, unsigned lgkmcnt) {
  while (w.vm.size() > vmcnt) {
    retire(w, w.vm.front());
    w.vm.pop_front();
  }
  if (w.lgkm.size() <= lgkmcnt)
    return;
  if (lgkmcnt == 0) {
    for (const auto &p : w.lgkm)
      retire(w, p);
    w.lgkm.clear();
    return;
  }
  // Scalar loads return out of order: with one outstanding, a nonzero
  // count guarantees nothing about which completed.
  for (const auto &p : w.lgkm)
    if (p.smem)
      return;
  while (w.lgkm.size() > lgkmcnt) {
    retire(w, w.lgkm.front());
    w.lgkm.pop_front();
  }
}

/// An operand that overlaps a register with a load in flight. `inOrder`
/// is the queue of the instruction itself when it is a load whose results
/// return in order with that queue's (VMEM with VMEM, LDS with LDS): it
/// may overwrite their registers.
void checkPending(Exec &x, const Inst &in, const std::deque<Wave::Pending> *inOrder) {
  Wave &w = *x.w;
  auto check = [&](const Operand &o, bool write) {
    if (o.kind != Operand::Vgpr && o.kind != Operand::Sgpr)
      return;
    bool scalar = o.kind == Operand::Sgpr;
    for (unsigned r = o.index; r < unsigned(o.index) + o.dwords; ++r) {
      if (!(scalar ? w.pendS[r] : w.pendV[r]))
        continue;
      const Inst *load = nullptr;
      for (const auto *q : {&w.vm, &w.lgkm})
        for (const auto &p : *q)
          if (p.count && p.scalar == scalar && r >= p.first &&
              r < unsigned(p.first) + p.count &&
              !(write && q == inOrder && !p.smem))
            load = p.inst;
      if (!load)
        continue;
      std::string reg = (scalar ? "s" : (r >= kAgpr0 ? "a" : "v")) +
                        std::to_string(scalar || r < kAgpr0 ? r : r - kAgpr0);
      x.fault(kLaunchFailed,
              "register " + reg + (write ? " is written" : " is read") +
                  " before an s_waitcnt retired the load writing it (" +
                  describeInst(*load) + ")",
              in);
    }
  };
  for (int i = 0; i < in.nsrc; ++i) {
    // A d16 load's tied input (the half it keeps) is its own result.
    bool tied = inOrder && in.ndef && in.src[i].kind == in.def[0].kind &&
                in.src[i].index == in.def[0].index;
    check(in.src[i], tied);
  }
  for (int i = 0; i < in.ndef; ++i)
    check(in.def[i], true);
  if (in.dpp)
    check(in.old, false);
  if (in.sdwa)
    for (int i = 0; i < 3; ++i)
      check(in.orig[i], i == 2);
}

//===----------------------------------------------------------------------===//
// Scalar ALU (CDNA3 ISA 12.1-12.4: SOP2, SOPK, SOP1, SOPC)
//===----------------------------------------------------------------------===//

/// SOP2 / SOP1 on 32 bits: d = F(a, b, scc), F may update scc.
template <auto F> void sop32(Exec &x, const Inst &in) {
  uint32_t a = sget(x, in.src[0]);
  uint32_t b = in.nsrc > 1 ? sget(x, in.src[1]) : 0;
  bool scc = x.w->scc;
  uint32_t d = F(a, b, scc);
  if (in.ndef)
    sset(x, in.def[0], d);
  x.w->scc = scc;
}

template <auto F> void sop64(Exec &x, const Inst &in) {
  uint64_t a = sget64(x, in.src[0]);
  uint64_t b = in.nsrc > 1 ? sget64(x, in.src[1]) : 0;
  bool scc = x.w->scc;
  uint64_t d = F(a, b, scc);
  if (in.ndef)
    sset64(x, in.def[0], d);
  x.w->scc = scc;
}

/// 64-bit first source, 32-bit second (shifts, s_bfe_*64).
template <auto F> void sop64s(Exec &x, const Inst &in) {
  uint64_t a = sget64(x, in.src[0]);
  uint32_t b = sget(x, in.src[1]);
  bool scc = x.w->scc;
  uint64_t d = F(a, b, scc);
  sset64(x, in.def[0], d);
  x.w->scc = scc;
}

/// SOPC compares: scc = F(a, b).
template <auto F> void sopc32(Exec &x, const Inst &in) {
  x.w->scc = F(sget(x, in.src[0]), sget(x, in.src[1]));
}
template <auto F> void sopc64(Exec &x, const Inst &in) {
  x.w->scc = F(sget64(x, in.src[0]), sget64(x, in.src[1]));
}
/// s_cmpk_*_i32 / _u32 (SOPK): scc = s0 op simm16, the immediate sign- or
/// zero-extended to 32 bits.
template <auto F, bool Signed> void sopkc(Exec &x, const Inst &in) {
  uint32_t k = Signed ? uint32_t(int32_t(int16_t(in.imm[0])))
                      : uint32_t(uint16_t(in.imm[0]));
  x.w->scc = F(sget(x, in.src[0]), k);
}

/// s_*_saveexec_b64: d = exec; exec = F(s0, exec); scc = exec != 0.
template <auto F> void saveexec(Exec &x, const Inst &in) {
  uint64_t s0 = sget64(x, in.src[0]), e = x.w->exec();
  uint64_t n = F(s0, e);
  sset64(x, in.def[0], e);
  x.w->setExec(n);
  x.w->scc = n != 0;
}

void sMovk(Exec &x, const Inst &in) {
  sset(x, in.def[0], uint32_t(int32_t(int16_t(in.imm[0]))));
}

/// s_addk_i32 / s_mulk_i32 / s_cmpk_*: the destination is also a source.
void sAddk(Exec &x, const Inst &in) {
  int32_t a = int32_t(x.w->s[in.def[0].index]);
  int32_t b = int16_t(in.imm[0]);
  int32_t d = int32_t(uint32_t(a) + uint32_t(b));
  x.w->scc = ((a >= 0) == (b >= 0)) && ((d >= 0) != (a >= 0));
  sset(x, in.def[0], uint32_t(d));
}
void sMulk(Exec &x, const Inst &in) {
  sset(x, in.def[0], x.w->s[in.def[0].index] * uint32_t(int32_t(int16_t(in.imm[0]))));
}

uint32_t bfeU32(uint32_t v, uint32_t off, uint32_t width) {
  off &= 31;
  width &= 127;
  if (width == 0)
    return 0;
  uint64_t r = uint64_t(v) >> off;
  return width >= 32 ? uint32_t(r) : uint32_t(r & ((1ull << width) - 1));
}
int32_t bfeI32(uint32_t v, uint32_t off, uint32_t width) {
  off &= 31;
  width &= 127;
  if (width == 0)
    return 0;
  uint32_t r = bfeU32(v, off, width);
  if (width < 32 && (r >> (width - 1) & 1))
    r |= ~0u << width;
  return int32_t(r);
}
uint64_t bfeU64(uint64_t v, uint32_t off, uint32_t width) {
  off &= 63;
  width &= 127;
  if (width == 0)
    return 0;
  uint64_t r = v >> off;
  return width >= 64 ? r : r & ((1ull << width) - 1);
}
int64_t bfeI64(uint64_t v, uint32_t off, uint32_t width) {
  width &= 127;
  if (width == 0)
    return 0;
  uint64_t r = bfeU64(v, off, width);
  if (width < 64 && (r >> (width - 1) & 1))
    r |= ~0ull << width;
  return int64_t(r);
}

/// s_flbit_i32_b32: leading zeros from the MSB; -1 for 0.
uint32_t flbitB32(uint32_t v) { return v ? uint32_t(std::countl_zero(v)) : ~0u; }
/// s_flbit_i32: the first bit that differs from the sign bit; -1 for 0, -1.
uint32_t flbitI32(uint32_t v) {
  if (v == 0 || v == ~0u)
    return ~0u;
  return uint32_t(std::countl_zero(int32_t(v) < 0 ? ~v : v));
}
uint32_t ff1(uint64_t v) { return v ? uint32_t(std::countr_zero(v)) : ~0u; }

//===----------------------------------------------------------------------===//
// Program control (CDNA3 ISA 12.5: SOPP and the s_*pc instructions)
//===----------------------------------------------------------------------===//

inline uint64_t branchTarget(const Inst &in) {
  return in.address + 4 + int64_t(int16_t(in.imm[0])) * 4;
}

template <int Cond> void sBranch(Exec &x, const Inst &in) {
  Wave &w = *x.w;
  bool take = false;
  switch (Cond) {
  case 0: take = true; break;
  case 1: take = !w.scc; break;
  case 2: take = w.scc; break;
  case 3: take = w.vcc() == 0; break;
  case 4: take = w.vcc() != 0; break;
  case 5: take = w.exec() == 0; break;
  case 6: take = w.exec() != 0; break;
  }
  if (take)
    x.nextPc = branchTarget(in);
}

void sEndpgm(Exec &x, const Inst &) { x.w->ended = true; }
void sNop(Exec &, const Inst &) {}
/// s_barrier. LDS stores still in flight (no s_waitcnt lgkmcnt since) may
/// not be visible to the other waves after it: a fault, since a program
/// could observe the old data.
void sBarrier(Exec &x, const Inst &in) {
  for (const auto &p : x.w->lgkm)
    if (!p.smem && p.count == 0 && p.inst &&
        p.inst->mnemonic.rfind("ds_", 0) == 0)
      x.fault(kLaunchFailed,
              "s_barrier with an LDS store in flight (" +
                  describeInst(*p.inst) +
                  "): other waves may not see it; s_waitcnt lgkmcnt(0) "
                  "is missing",
              in);
  x.w->atBarrier = true;
}

void sWaitcnt(Exec &x, const Inst &in) {
  uint32_t imm = uint32_t(in.imm[0]);
  unsigned vm = (imm & 0xf) | ((imm >> 14) & 3) << 4;
  unsigned lgkm = (imm >> 8) & 0xf;
  waitcnt(*x.w, vm, lgkm);
}

void sGetpc(Exec &x, const Inst &in) {
  sset64(x, in.def[0], x.code->deviceAddress(in.address + in.size));
}
void sSetpc(Exec &x, const Inst &in) {
  uint64_t target = sget64(x, in.src[0]) - x.code->deviceAddress(0);
  x.nextPc = target;
}
void sSwappc(Exec &x, const Inst &in) {
  uint64_t target = sget64(x, in.src[0]) - x.code->deviceAddress(0);
  sset64(x, in.def[0], x.code->deviceAddress(in.address + in.size));
  x.nextPc = target;
}

//===----------------------------------------------------------------------===//
// Memory checks
//===----------------------------------------------------------------------===//

/// Global memory [a, a + bytes) for each lane in `mask`: one registry
/// look-up for the span of all lanes, lane by lane only when that fails.
void checkGlobal(Exec &x, const Inst &in, const uint64_t *addr, uint64_t mask,
                 unsigned bytes) {
  if (!mask)
    return;
  uint64_t lo = ~0ull, hi = 0;
  for (uint64_t m = mask; m; m &= m - 1) {
    unsigned l = unsigned(std::countr_zero(m));
    lo = std::min(lo, addr[l]);
    hi = std::max(hi, addr[l] + bytes);
  }
  if (x.memory->contains(lo, hi - lo))
    return;
  for (uint64_t m = mask; m; m &= m - 1) {
    unsigned l = unsigned(std::countr_zero(m));
    if (!x.memory->contains(addr[l], bytes))
      x.fault(kIllegalAddress,
              std::to_string(bytes) + "-byte access to global memory " +
                  x.memory->describe(addr[l]) +
                  ", outside every allocation",
              in, int(l));
  }
}

/// An LDS access: bounds, and with the race check, an access by another
/// wave to the same bytes since the last s_barrier, one of them a write.
void checkLds(Exec &x, const Inst &in, uint64_t address, unsigned bytes,
              int lane, bool write) {
  if (address + bytes > x.ldsBytes)
    x.fault(kIllegalAddress,
            std::to_string(bytes) + "-byte LDS access at " + hex(address) +
                ", past the workgroup's " + std::to_string(x.ldsBytes) +
                " bytes of LDS",
            in, lane);
  Exec::LdsShadow *r = x.races;
  if (!r)
    return;
  uint8_t w = uint8_t(x.w->id);
  for (uint64_t b = address; b < address + bytes; ++b) {
    const Inst *other = nullptr;
    const char *what = nullptr;
    if (r->writeEpoch[b] == r->epoch && r->writer[b] != w) {
      other = r->writeInst[b];
      what = write ? "written by two waves"
                   : "written by one wave and read by another";
    } else if (write && r->readEpoch[b] == r->epoch &&
               (r->readers[b] & ~(1u << w))) {
      other = r->readInst[b];
      what = "read by one wave and written by another";
    }
    if (what)
      x.fault(kLaunchFailed,
              "LDS race at byte " + hex(b) + ": " + what +
                  " with no s_barrier between (the other access: " +
                  (other ? describeInst(*other) : std::string("?")) + ")",
              in, lane);
    if (write) {
      r->writeEpoch[b] = r->epoch;
      r->writer[b] = w;
      r->writeInst[b] = &in;
    } else {
      if (r->readEpoch[b] != r->epoch) {
        r->readEpoch[b] = r->epoch;
        r->readers[b] = 0;
      }
      r->readers[b] |= uint16_t(1u << w);
      r->readInst[b] = &in;
    }
  }
}

//===----------------------------------------------------------------------===//
// Scalar memory (CDNA3 ISA 12.6: SMEM)
//===----------------------------------------------------------------------===//

/// s_load_dword{,x2,x4,x8,x16}: aux = dwords. Forms: _IMM (offset),
/// _SGPR (soffset), _SGPR_IMM (both).
void sLoad(Exec &x, const Inst &in) {
  uint64_t base = sget64(x, in.src[0]) & ~3ull;
  uint64_t offset = 0;
  unsigned form = (in.aux >> 8) & 3; // 0 imm, 1 sgpr, 2 sgpr+imm
  if (form == 0)
    offset = uint64_t(in.imm[0]);
  else if (form == 1)
    offset = sget(x, in.src[1]);
  else
    offset = sget(x, in.src[1]) + uint64_t(in.imm[0]);
  unsigned dwords = in.aux & 0xff;
  uint64_t a = (base + offset) & ~3ull;
  if (!x.memory->contains(a, dwords * 4ull))
    x.fault(kIllegalAddress,
            "scalar load of " + std::to_string(dwords * 4) + " bytes at " +
                x.memory->describe(a) + ", outside every allocation",
            in);
  std::memcpy(&x.w->s[in.def[0].index], reinterpret_cast<const void *>(a),
              dwords * 4);
  markPending(*x.w, x.w->lgkm, &in, &in.def[0], true);
}

/// s_buffer_load_dword*: the V# in 4 SGPRs, range-checked against
/// num_records (out of range dwords read 0).
void sBufferLoad(Exec &x, const Inst &in) {
  const uint32_t *v = &x.w->s[in.src[0].index];
  uint64_t base = v[0] | uint64_t(v[1] & 0xffff) << 32;
  uint64_t offset = 0;
  unsigned form = (in.aux >> 8) & 3;
  if (form == 0)
    offset = uint64_t(in.imm[0]);
  else if (form == 1)
    offset = sget(x, in.src[1]);
  else
    offset = sget(x, in.src[1]) + uint64_t(in.imm[0]);
  offset &= ~3ull;
  unsigned dwords = in.aux & 0xff;
  uint32_t *d = &x.w->s[in.def[0].index];
  for (unsigned i = 0; i < dwords; ++i) {
    uint64_t o = offset + 4ull * i;
    if (o + 4 > v[2]) {
      d[i] = 0;
      continue;
    }
    if (!x.memory->contains(base + o, 4))
      x.fault(kIllegalAddress,
              "scalar buffer load at " + x.memory->describe(base + o) +
                  ", outside every allocation",
              in);
    std::memcpy(&d[i], reinterpret_cast<const void *>(base + o), 4);
  }
  markPending(*x.w, x.w->lgkm, &in, &in.def[0], true);
}

//===----------------------------------------------------------------------===//
// Vector ALU (CDNA3 ISA 12.7-12.10: VOP2, VOP1, VOPC, VOP3, VOP3P)
//===----------------------------------------------------------------------===//

/// Runs fn(lane) for each lane of mask (a plain loop for a full wave).
template <typename Fn> inline void forLanes(uint64_t mask, Fn &&fn) {
  if (mask == ~0ull) {
    for (unsigned l = 0; l < kLanes; ++l)
      fn(l);
    return;
  }
  for (; mask; mask &= mask - 1)
    fn(unsigned(std::countr_zero(mask)));
}

// aux bits shared by the float handlers: output modifiers of VOP3.
constexpr uint32_t kAuxClamp = 1u << 0;
constexpr uint32_t kAuxOmodShift = 1; // 2 bits: 0, *2, *4, /2
// Upper bits: the instruction's memory class for the wait counters.
constexpr uint32_t kAuxClassShift = 28;
enum MemClass : uint32_t { kNoMem = 0, kVmemLoad = 1, kLdsOp = 2, kSmemOp = 3 };
inline MemClass memClass(const Inst &in) {
  return MemClass(in.aux >> kAuxClassShift);
}

inline uint32_t finishF32(const Exec &x, const Inst &in, float r) {
  uint32_t omod = (in.aux >> kAuxOmodShift) & 3;
  if (omod)
    r *= omod == 1 ? 2.0f : omod == 2 ? 4.0f : 0.5f;
  if (in.aux & kAuxClamp)
    r = std::isnan(r) ? 0.0f : std::min(std::max(r, 0.0f), 1.0f);
  if (x.flushF32)
    r = flushDenorm(r);
  return b32(r);
}

inline float readF32(const Exec &x, uint32_t bits, uint8_t mods) {
  float f = f32(modF32(bits, mods));
  return x.flushF32 ? flushDenorm(f) : f;
}

/// DPP (CDNA3 ISA 12.11 "DPP"): src0 of
/// each lane from another lane of its row. Lanes whose source is out of
/// the row or whose source lane is disabled get 0 with bound_ctrl, or are
/// not written. Lanes of rows / banks masked off are not written.
Src dppSource(Exec &x, const Inst &in, uint64_t &write) {
  Src s = src(x, in, 0);
  uint32_t ctrl = uint32_t(in.imm[0]), rowMask = uint32_t(in.imm[1]),
           bankMask = uint32_t(in.imm[2]);
  bool boundZero = in.imm[3] != 0;
  uint64_t exec = x.w->exec();
  uint32_t *t = x.tmp[0];
  uint64_t keep = 0;
  for (unsigned l = 0; l < kLanes; ++l) {
    unsigned row = l / 16, inRow = l % 16;
    if (!(rowMask >> row & 1) || !(bankMask >> (inRow / 4) & 1))
      continue;
    int from = -1;
    if (ctrl <= 0xff) {
      from = int(l & ~3u) + int((ctrl >> (2 * (l % 4))) & 3);
    } else if (ctrl >= 0x101 && ctrl <= 0x10f) { // row_shl
      int j = int(inRow) + int(ctrl & 0xf);
      from = j < 16 ? int(row * 16) + j : -1;
    } else if (ctrl >= 0x111 && ctrl <= 0x11f) { // row_shr
      int j = int(inRow) - int(ctrl & 0xf);
      from = j >= 0 ? int(row * 16) + j : -1;
    } else if (ctrl >= 0x121 && ctrl <= 0x12f) { // row_ror
      from = int(row * 16) + int((inRow + 16 - (ctrl & 0xf)) % 16);
    } else if (ctrl == 0x130) { // wave_shl1
      from = l + 1 < kLanes ? int(l) + 1 : -1;
    } else if (ctrl == 0x134) { // wave_rol1
      from = int((l + 1) % kLanes);
    } else if (ctrl == 0x138) { // wave_shr1
      from = int(l) - 1;
    } else if (ctrl == 0x13c) { // wave_ror1
      from = int((l + kLanes - 1) % kLanes);
    } else if (ctrl == 0x140) { // row_mirror
      from = int(row * 16 + 15 - inRow);
    } else if (ctrl == 0x141) { // row_half_mirror
      from = int((l & ~7u) + 7 - (l % 8));
    } else if (ctrl == 0x142) { // row_bcast:15: lane 15 of the row before
      from = row > 0 ? int(row * 16 - 1) : -1;
    } else if (ctrl == 0x143) { // row_bcast:31: lane 31 to rows 2 and 3
      from = row >= 2 ? 31 : -1;
    } else {
      x.fault(kIllegalInstruction, "DPP control " + hex(ctrl) + " not modelled",
              in);
    }
    if (from < 0 || !(exec >> from & 1)) {
      if (!boundZero)
        continue;
      t[l] = 0;
    } else {
      t[l] = s[unsigned(from)];
    }
    keep |= 1ull << l;
  }
  write &= keep;
  return {t, 1};
}

/// SDWA source select (VOPC only): byte / word of the source, zero or
/// sign extended (CDNA3 ISA "SDWA").
Src sdwaSource(Exec &x, const Inst &in, int i, uint32_t sel) {
  Src s = src(x, in, i);
  if (sel == 6)
    return s;
  bool sext = in.src[i].mods & kModSext;
  uint32_t *t = x.tmp[i];
  for (unsigned l = 0; l < kLanes; ++l) {
    uint32_t v = s[l];
    uint32_t r;
    if (sel <= 3) {
      r = (v >> (8 * sel)) & 0xff;
      if (sext && (r & 0x80))
        r |= 0xffffff00u;
    } else {
      r = (v >> (16 * (sel - 4))) & 0xffff;
      if (sext && (r & 0x8000))
        r |= 0xffff0000u;
    }
    t[l] = r;
  }
  return {t, 1};
}

inline Src src0Of(Exec &x, const Inst &in, uint64_t &write) {
  if (in.dpp)
    return dppSource(x, in, write);
  return src(x, in, 0);
}

/// Integer VOP1/VOP2/VOP3: d = F(a[, b[, c]]).
template <auto F> void vop1(Exec &x, const Inst &in) {
  uint64_t m = x.w->exec();
  Src a = src0Of(x, in, m);
  uint32_t *d = x.w->vreg(in.def[0].index);
  forLanes(m, [&](unsigned l) { d[l] = F(a[l]); });
}
template <auto F> void vop2(Exec &x, const Inst &in) {
  uint64_t m = x.w->exec();
  Src a = src0Of(x, in, m), b = src(x, in, 1);
  uint32_t *d = x.w->vreg(in.def[0].index);
  forLanes(m, [&](unsigned l) { d[l] = F(a[l], b[l]); });
}
template <auto F> void vop3(Exec &x, const Inst &in) {
  uint64_t m = x.w->exec();
  Src a = src(x, in, 0), b = src(x, in, 1), c = src(x, in, 2);
  uint32_t *d = x.w->vreg(in.def[0].index);
  forLanes(m, [&](unsigned l) { d[l] = F(a[l], b[l], c[l]); });
}

/// Float VOP1/VOP2/VOP3 on f32 with modifiers, flushing and omod/clamp.
template <auto F> void vop1f(Exec &x, const Inst &in) {
  uint64_t m = x.w->exec();
  Src a = src0Of(x, in, m);
  uint8_t ma = in.src[0].mods;
  uint32_t *d = x.w->vreg(in.def[0].index);
  forLanes(m, [&](unsigned l) {
    d[l] = finishF32(x, in, F(readF32(x, a[l], ma)));
  });
}
template <auto F> void vop2f(Exec &x, const Inst &in) {
  uint64_t m = x.w->exec();
  Src a = src0Of(x, in, m), b = src(x, in, 1);
  uint8_t ma = in.src[0].mods, mb = in.src[1].mods;
  uint32_t *d = x.w->vreg(in.def[0].index);
  forLanes(m, [&](unsigned l) {
    d[l] = finishF32(x, in, F(readF32(x, a[l], ma), readF32(x, b[l], mb)));
  });
}
template <auto F> void vop3f(Exec &x, const Inst &in) {
  uint64_t m = x.w->exec();
  Src a = src(x, in, 0), b = src(x, in, 1), c = src(x, in, 2);
  uint8_t ma = in.src[0].mods, mb = in.src[1].mods, mc = in.src[2].mods;
  uint32_t *d = x.w->vreg(in.def[0].index);
  forLanes(m, [&](unsigned l) {
    d[l] = finishF32(x, in,
                     F(readF32(x, a[l], ma), readF32(x, b[l], mb),
                       readF32(x, c[l], mc)));
  });
}

/// v_fmamk_f32 / v_madmk_f32 (d = a * K + b) and v_fmaak / v_madak
/// (d = a * b + K): K is the literal immediate.
template <bool Mk, bool Fused> void vMadK(Exec &x, const Inst &in) {
  uint64_t m = x.w->exec();
  Src a = src(x, in, 0), b = src(x, in, 1);
  float k = f32(uint32_t(in.imm[0]));
  uint32_t *d = x.w->vreg(in.def[0].index);
  forLanes(m, [&](unsigned l) {
    float fa = readF32(x, a[l], 0), fb = readF32(x, b[l], 0);
    float r;
    if (Fused)
      r = Mk ? std::fma(fa, k, fb) : std::fma(fa, fb, k);
    else
      r = Mk ? flushDenorm(flushDenorm(fa * k) + fb)
             : flushDenorm(flushDenorm(fa * fb) + k);
    d[l] = finishF32(x, in, r);
  });
}

/// 64-bit results from a 32-bit and a 64-bit source (v_lshlrev_b64 ...).
template <auto F> void vop2w(Exec &x, const Inst &in) {
  uint64_t m = x.w->exec();
  Src a = src(x, in, 0);
  Src64 b = src64(x, in, 1);
  uint32_t *lo = x.w->vreg(in.def[0].index), *hi = x.w->vreg(in.def[0].index + 1u);
  forLanes(m, [&](unsigned l) {
    uint64_t r = F(a[l], b[l]);
    lo[l] = uint32_t(r);
    hi[l] = uint32_t(r >> 32);
  });
}

void vMovB64(Exec &x, const Inst &in) {
  uint64_t m = x.w->exec();
  Src64 a = src64(x, in, 0);
  uint32_t *lo = x.w->vreg(in.def[0].index), *hi = x.w->vreg(in.def[0].index + 1u);
  forLanes(m, [&](unsigned l) {
    uint64_t r = a[l];
    lo[l] = uint32_t(r);
    hi[l] = uint32_t(r >> 32);
  });
}

/// v_lshl_add_u64: d = (a << (b & 7)) + c (shift amounts 0-4).
void vLshlAddU64(Exec &x, const Inst &in) {
  uint64_t m = x.w->exec();
  Src64 a = src64(x, in, 0), c = src64(x, in, 2);
  Src b = src(x, in, 1);
  uint32_t *lo = x.w->vreg(in.def[0].index), *hi = x.w->vreg(in.def[0].index + 1u);
  forLanes(m, [&](unsigned l) {
    uint64_t r = (a[l] << (b[l] & 7)) + c[l];
    lo[l] = uint32_t(r);
    hi[l] = uint32_t(r >> 32);
  });
}

/// v_mad_u64_u32 / v_mad_i64_i32: {d, carry} = a * b + c (64-bit c).
template <bool Signed> void vMad64(Exec &x, const Inst &in) {
  uint64_t m = x.w->exec();
  Src a = src(x, in, 0), b = src(x, in, 1);
  Src64 c = src64(x, in, 2);
  uint32_t *lo = x.w->vreg(in.def[0].index), *hi = x.w->vreg(in.def[0].index + 1u);
  uint64_t carry = 0;
  forLanes(m, [&](unsigned l) {
    __int128 p = Signed ? __int128(int64_t(int32_t(a[l])) * int32_t(b[l])) +
                              __int128(int64_t(c[l]))
                        : __int128(uint64_t(a[l]) * b[l]) + __int128(c[l]);
    uint64_t r = uint64_t(p);
    lo[l] = uint32_t(r);
    hi[l] = uint32_t(r >> 32);
    bool over = Signed ? p != __int128(int64_t(r)) : (p >> 64) != 0;
    if (over)
      carry |= 1ull << l;
  });
  setMask(x, in.ndef > 1 ? &in.def[1] : nullptr, carry);
}

/// Add / subtract with carry-out (VCC for e32, else sdst) and optional
/// carry-in (VCC for e32, else the third source). Op: 0 add, 1 sub
/// (a - b), 2 subrev (b - a).
template <int Op, bool CarryIn> void vAddCarry(Exec &x, const Inst &in) {
  uint64_t m = x.w->exec();
  Src a = src0Of(x, in, m), b = src(x, in, 1);
  uint64_t cin = 0;
  if (CarryIn)
    cin = in.nsrc > 2 ? sget64(x, in.src[2]) : x.w->vcc();
  uint32_t *d = x.w->vreg(in.def[0].index);
  uint64_t cout = 0;
  forLanes(m, [&](unsigned l) {
    uint64_t ci = CarryIn ? (cin >> l & 1) : 0;
    uint64_t r;
    bool c;
    if (Op == 0) {
      r = uint64_t(a[l]) + b[l] + ci;
      c = r >> 32;
    } else {
      uint32_t p = Op == 1 ? a[l] : b[l], q = Op == 1 ? b[l] : a[l];
      r = uint64_t(p) - q - ci;
      c = uint64_t(q) + ci > p;
    }
    d[l] = uint32_t(r);
    if (c)
      cout |= 1ull << l;
  });
  setMask(x, in.ndef > 1 ? &in.def[1] : nullptr, cout);
}

/// v_cndmask_b32: d = mask ? b : a (mask VCC for e32, else src2).
void vCndmask(Exec &x, const Inst &in) {
  uint64_t m = x.w->exec();
  Src a = src0Of(x, in, m), b = src(x, in, 1);
  uint64_t sel = in.nsrc > 2 ? sget64(x, in.src[2]) : x.w->vcc();
  uint8_t ma = in.src[0].mods, mb = in.src[1].mods;
  uint32_t *d = x.w->vreg(in.def[0].index);
  forLanes(m, [&](unsigned l) {
    d[l] = (sel >> l & 1) ? modF32(b[l], mb) : modF32(a[l], ma);
  });
}

/// Byte / word `sel` (0-3 bytes, 4-5 words, 6 dword) of v, zero or sign
/// extended.
inline uint32_t sdwaSelect(uint32_t v, unsigned sel, bool sext) {
  if (sel >= 6)
    return v;
  unsigned bits = sel <= 3 ? 8 : 16, shift = sel <= 3 ? 8 * sel : 16 * (sel - 4);
  uint32_t r = (v >> shift) & ((1u << bits) - 1);
  if (sext && (r >> (bits - 1) & 1))
    r |= ~0u << bits;
  return r;
}

/// The handlers SDWA forms wrap, by index (built once with the table).
std::vector<Handler> &sdwaBases();

/// SDWA forms of VOP1 / VOP2 (CDNA3 ISA "SDWA"): the sources' selected
/// bytes or words (sign extended with sext()) are staged in scratch rows,
/// the operation runs on them, and its result is written into dst_sel's
/// part of the destination; dst_unused pads the rest with zeros
/// (UNUSED_PAD), the result's sign (UNUSED_SEXT) or keeps it
/// (UNUSED_PRESERVE). aux: bits 8-10 dst_sel, 11-12 dst_unused, 13-15 /
/// 16-18 src0 / src1 sel, bit 19 integer operation, 20-27 the handler.
void sdwaRun(Exec &x, const Inst &in) {
  Wave &w = *x.w;
  uint32_t aux = in.aux;
  unsigned dstSel = aux >> 8 & 7, unused = aux >> 11 & 3;
  bool intOp = aux >> 19 & 1;
  for (int i = 0; i < in.nsrc && i < 2; ++i) {
    const Operand &o = in.orig[i];
    unsigned sel = i == 0 ? (aux >> 13 & 7) : (aux >> 16 & 7);
    bool sext = intOp && (o.mods & kModSext);
    uint32_t *t = w.vreg(kSdwaRow + unsigned(i));
    if (o.kind == Operand::Vgpr) {
      const uint32_t *s = w.vreg(o.index);
      for (unsigned l = 0; l < kLanes; ++l)
        t[l] = sdwaSelect(s[l], sel, sext);
    } else {
      uint32_t v = sdwaSelect(o.kind == Operand::Sgpr ? w.s[o.index]
                                                      : uint32_t(constant64(x, o)),
                              sel, sext);
      std::fill(t, t + kLanes, v);
    }
  }
  sdwaBases()[aux >> 20 & 0xff](x, in);
  const uint32_t *r = w.vreg(kSdwaRow + 2);
  uint32_t *d = w.vreg(in.orig[2].index);
  unsigned bits = dstSel >= 6 ? 32 : dstSel <= 3 ? 8 : 16;
  unsigned shift = dstSel >= 6 ? 0 : dstSel <= 3 ? 8 * dstSel : 16 * (dstSel - 4);
  uint32_t field = bits == 32 ? ~0u : ((1u << bits) - 1) << shift;
  forLanes(w.exec(), [&](unsigned l) {
    uint32_t v = bits == 32 ? r[l] : (r[l] << shift) & field;
    if (bits < 32) {
      if (unused == 2) {
        v |= d[l] & ~field;
      } else if (unused == 1) {
        bool neg = r[l] >> (bits - 1) & 1;
        if (neg)
          v |= ~0u << (shift + bits);
      }
    }
    d[l] = v;
  });
}

//===----------------------------------------------------------------------===//
// Compares (VOPC, CDNA3 ISA 12.9)
//===----------------------------------------------------------------------===//

enum CmpType : uint32_t { kCmpF32, kCmpI32, kCmpU32, kCmpI16, kCmpU16,
                          kCmpI64, kCmpU64, kCmpF16, kCmpF64 };
// Float predicates by their VOPC opcode order (f lt eq le gt lg ge o u
// nge nlg ngt nle neq nlt tru); integer ones (f lt eq le gt ne ge t).
bool floatPredicate(uint32_t op, double a, double b) {
  bool un = std::isnan(a) || std::isnan(b);
  switch (op) {
  case 0: return false;
  case 1: return a < b;
  case 2: return a == b;
  case 3: return a <= b;
  case 4: return a > b;
  case 5: return !un && a != b; // lg
  case 6: return a >= b;
  case 7: return !un;
  case 8: return un;
  case 9: return !(a >= b);
  case 10: return !(!un && a != b); // nlg
  case 11: return !(a > b);
  case 12: return !(a <= b);
  case 13: return !(a == b); // neq
  case 14: return !(a < b);
  default: return true;
  }
}
template <typename T> bool intPredicate(uint32_t op, T a, T b) {
  switch (op) {
  case 0: return false;
  case 1: return a < b;
  case 2: return a == b;
  case 3: return a <= b;
  case 4: return a > b;
  case 5: return a != b;
  case 6: return a >= b;
  default: return true;
  }
}

/// v_cmp_class_f32: bit i of the class mask (0 sNaN, 1 qNaN, 2 -inf,
/// 3 -normal, 4 -denormal, 5 -0, 6 +0, 7 +denormal, 8 +normal, 9 +inf).
bool classF32(uint32_t bits, uint32_t mask) {
  float f = f32(bits);
  bool neg = bits >> 31;
  int c;
  switch (std::fpclassify(f)) {
  case FP_NAN: c = (bits & 0x400000) ? 1 : 0; break;
  case FP_INFINITE: c = neg ? 2 : 9; break;
  case FP_NORMAL: c = neg ? 3 : 8; break;
  case FP_SUBNORMAL: c = neg ? 4 : 7; break;
  default: c = neg ? 5 : 6; break;
  }
  return mask >> c & 1;
}

/// aux: bits 0-3 predicate, 4-7 type, 8 cmpx, 9 class, bits 10-12 SDWA
/// src0 sel, 13-15 src1 sel (6 = dword).
void vCmp(Exec &x, const Inst &in) {
  uint64_t m = x.w->exec();
  uint32_t op = in.aux & 15, type = (in.aux >> 4) & 15;
  bool cmpx = in.aux >> 8 & 1, cls = in.aux >> 9 & 1;
  Src a = in.sdwa ? sdwaSource(x, in, 0, (in.aux >> 10) & 7) : src(x, in, 0);
  Src b = in.sdwa ? sdwaSource(x, in, 1, (in.aux >> 13) & 7) : src(x, in, 1);
  uint8_t ma = in.src[0].mods, mb = in.src[1].mods;
  uint64_t r = 0;
  if (type == kCmpI64 || type == kCmpU64 || type == kCmpF64) {
    Src64 a64 = src64(x, in, 0), b64 = src64(x, in, 1);
    forLanes(m, [&](unsigned l) {
      bool t;
      if (type == kCmpI64)
        t = intPredicate<int64_t>(op, int64_t(a64[l]), int64_t(b64[l]));
      else if (type == kCmpU64)
        t = intPredicate<uint64_t>(op, a64[l], b64[l]);
      else {
        uint64_t ba = a64[l], bb = b64[l];
        if (ma & kModAbs) ba &= ~(1ull << 63);
        if (ma & kModNeg) ba ^= 1ull << 63;
        if (mb & kModAbs) bb &= ~(1ull << 63);
        if (mb & kModNeg) bb ^= 1ull << 63;
        t = floatPredicate(op, bitsToDouble(ba), bitsToDouble(bb));
      }
      if (t)
        r |= 1ull << l;
    });
  } else {
    forLanes(m, [&](unsigned l) {
      bool t;
      switch (type) {
      case kCmpF32:
        t = cls ? classF32(modF32(a[l], ma), b[l])
                : floatPredicate(op, readF32(x, a[l], ma), readF32(x, b[l], mb));
        break;
      case kCmpI32: t = intPredicate<int32_t>(op, int32_t(a[l]), int32_t(b[l])); break;
      case kCmpU32: t = intPredicate<uint32_t>(op, a[l], b[l]); break;
      case kCmpI16: t = intPredicate<int16_t>(op, int16_t(a[l]), int16_t(b[l])); break;
      case kCmpU16: t = intPredicate<uint16_t>(op, uint16_t(a[l]), uint16_t(b[l])); break;
      default: {
        uint16_t ha = uint16_t(a[l]), hb = uint16_t(b[l]);
        if (ma & kModAbs) ha &= 0x7fff;
        if (ma & kModNeg) ha ^= 0x8000;
        if (mb & kModAbs) hb &= 0x7fff;
        if (mb & kModNeg) hb ^= 0x8000;
        t = cls ? false : floatPredicate(op, f16ToFloat(ha), f16ToFloat(hb));
        break;
      }
      }
      if (t)
        r |= 1ull << l;
    });
  }
  // Inactive lanes write 0 (CDNA3 ISA 12.9); v_cmpx also writes EXEC.
  setMask(x, in.ndef ? &in.def[0] : nullptr, r);
  if (cmpx)
    x.w->setExec(r);
}

//===----------------------------------------------------------------------===//
// Lane access (CDNA3 ISA 12.8: v_readlane, v_writelane, v_readfirstlane)
//===----------------------------------------------------------------------===//

void vReadfirstlane(Exec &x, const Inst &in) {
  uint64_t e = x.w->exec();
  unsigned l = e ? unsigned(std::countr_zero(e)) : 0;
  Src a = src(x, in, 0);
  sset(x, in.def[0], a[l]);
}
void vReadlane(Exec &x, const Inst &in) {
  Src a = src(x, in, 0);
  sset(x, in.def[0], a[sget(x, in.src[1]) & 63]);
}
void vWritelane(Exec &x, const Inst &in) {
  uint32_t v = sget(x, in.src[0]);
  unsigned l = sget(x, in.src[1]) & 63;
  x.w->vreg(in.def[0].index)[l] = v;
}

/// v_accvgpr_read / write / mov: moves between the VGPR and AGPR files.
void vAccMov(Exec &x, const Inst &in) {
  uint64_t m = x.w->exec();
  Src a = src(x, in, 0);
  uint32_t *d = x.w->vreg(in.def[0].index);
  forLanes(m, [&](unsigned l) { d[l] = a[l]; });
}

//===----------------------------------------------------------------------===//
// Packed math (VOP3P, CDNA3 ISA 12.10)
//===----------------------------------------------------------------------===//

/// The dword of a 64-bit packed source for result half `h` (0 lo, 1 hi):
/// OP_SEL (lo) / OP_SEL_HI (hi) pick the source's high dword; NEG / NEG_HI
/// negate (f32).
inline uint32_t packedHalf(const Src64 &s, unsigned lane, uint8_t mods,
                           unsigned h, bool negate) {
  bool hiDword = h == 0 ? (mods & kModOpSel0) : (mods & kModOpSel1);
  uint64_t v = s[lane];
  uint32_t r = hiDword ? uint32_t(v >> 32) : uint32_t(v);
  bool neg = h == 0 ? (mods & kModNeg) : (mods & kModAbs);
  if (negate && neg)
    r ^= 0x80000000u;
  return r;
}

/// A constant source of a packed f32 op is one 32-bit value in both halves.
inline Src64 packedSource(Exec &x, const Inst &in, int i) {
  const Operand &o = in.src[i];
  if (o.kind == Operand::Vgpr || o.kind == Operand::Sgpr)
    return src64(x, in, i);
  uint32_t v = uint32_t(constant64(x, o));
  x.cst[i][0] = x.cst[i][1] = v;
  return {&x.cst[i][0], &x.cst[i][1], 0};
}

template <int Arity, auto F> void vPkF32(Exec &x, const Inst &in) {
  uint64_t m = x.w->exec();
  Src64 a = packedSource(x, in, 0), b = packedSource(x, in, 1);
  Src64 c = Arity > 2 ? packedSource(x, in, 2) : a;
  uint8_t ma = in.src[0].mods, mb = in.src[1].mods,
          mc = Arity > 2 ? in.src[2].mods : 0;
  uint32_t *lo = x.w->vreg(in.def[0].index), *hi = x.w->vreg(in.def[0].index + 1u);
  forLanes(m, [&](unsigned l) {
    // Both halves read before either is written (the result may overlap
    // a source).
    uint32_t r[2];
    for (unsigned h = 0; h < 2; ++h) {
      float fa = readF32(x, packedHalf(a, l, ma, h, true), 0);
      float fb = readF32(x, packedHalf(b, l, mb, h, true), 0);
      float fc = Arity > 2 ? readF32(x, packedHalf(c, l, mc, h, true), 0) : 0.0f;
      r[h] = finishF32(x, in, F(fa, fb, fc));
    }
    lo[l] = r[0];
    hi[l] = r[1];
  });
}

/// v_pk_mov_b32: d.lo = src0's dword op_sel[0], d.hi = src1's op_sel[1].
void vPkMovB32(Exec &x, const Inst &in) {
  uint64_t m = x.w->exec();
  Src64 a = packedSource(x, in, 0), b = packedSource(x, in, 1);
  bool sa = in.src[0].mods & kModOpSel0, sb = in.src[1].mods & kModOpSel0;
  uint32_t *lo = x.w->vreg(in.def[0].index), *hi = x.w->vreg(in.def[0].index + 1u);
  forLanes(m, [&](unsigned l) {
    uint64_t va = a[l], vb = b[l];
    uint32_t rl = sa ? uint32_t(va >> 32) : uint32_t(va);
    uint32_t rh = sb ? uint32_t(vb >> 32) : uint32_t(vb);
    lo[l] = rl;
    hi[l] = rh;
  });
}

/// Packed 16-bit integer / float ops on the halves of 32-bit sources.
template <int Arity, auto F> void vPk16(Exec &x, const Inst &in) {
  uint64_t m = x.w->exec();
  Src a = src(x, in, 0), b = src(x, in, 1), c = Arity > 2 ? src(x, in, 2) : a;
  uint8_t ma = in.src[0].mods, mb = in.src[1].mods,
          mc = Arity > 2 ? in.src[2].mods : 0;
  uint32_t *d = x.w->vreg(in.def[0].index);
  auto half = [](uint32_t v, uint8_t mods, unsigned h) {
    bool hiHalf = h == 0 ? (mods & kModOpSel0) : (mods & kModOpSel1);
    return uint16_t(hiHalf ? v >> 16 : v);
  };
  forLanes(m, [&](unsigned l) {
    uint32_t r = 0;
    for (unsigned h = 0; h < 2; ++h)
      r |= uint32_t(F(half(a[l], ma, h), half(b[l], mb, h),
                      half(c[l], mc, h), ((h == 0 ? ma : ma >> 1) & 1),
                      ((h == 0 ? mb : mb >> 1) & 1),
                      ((h == 0 ? mc : mc >> 1) & 1)))
           << (16 * h);
    d[l] = r;
  });
}

//===----------------------------------------------------------------------===//
// Conversions and other special VALU operations
//===----------------------------------------------------------------------===//

/// Float to integer: truncates, saturates, NaN gives 0.
uint32_t cvtI32(float f) {
  if (std::isnan(f))
    return 0;
  double t = std::trunc(double(f));
  if (t >= 2147483647.0)
    return 0x7fffffffu;
  if (t <= -2147483648.0)
    return 0x80000000u;
  return uint32_t(int32_t(t));
}
uint32_t cvtU32(float f) {
  if (std::isnan(f) || f <= 0)
    return 0;
  double t = std::trunc(double(f));
  return t >= 4294967295.0 ? 0xffffffffu : uint32_t(t);
}

/// v_cvt_f16_f32 / v_cvt_f32_f16 (16-bit results zero the high half on
/// gfx9).
void vCvtF16F32(Exec &x, const Inst &in) {
  uint64_t m = x.w->exec();
  Src a = src0Of(x, in, m);
  uint8_t ma = in.src[0].mods;
  uint32_t *d = x.w->vreg(in.def[0].index);
  forLanes(m, [&](unsigned l) {
    uint16_t h = floatToF16(readF32(x, a[l], ma));
    if (x.flushF16 && (h & 0x7c00) == 0)
      h &= 0x8000;
    d[l] = h;
  });
}
void vCvtF32F16(Exec &x, const Inst &in) {
  uint64_t m = x.w->exec();
  Src a = src0Of(x, in, m);
  uint8_t ma = in.src[0].mods;
  uint32_t *d = x.w->vreg(in.def[0].index);
  forLanes(m, [&](unsigned l) {
    uint16_t h = uint16_t(a[l]);
    if (ma & kModAbs) h &= 0x7fff;
    if (ma & kModNeg) h ^= 0x8000;
    d[l] = finishF32(x, in, f16ToFloat(h));
  });
}

/// v_pack_b32_f16: d = {b.f16, a.f16} with op_sel choosing each half.
void vPackB32F16(Exec &x, const Inst &in) {
  uint64_t m = x.w->exec();
  Src a = src(x, in, 0), b = src(x, in, 1);
  uint8_t ma = in.src[0].mods, mb = in.src[1].mods;
  uint32_t *d = x.w->vreg(in.def[0].index);
  auto half = [](uint32_t v, uint8_t mods) {
    uint16_t h = uint16_t((mods & kModOpSel0) ? v >> 16 : v);
    if (mods & kModAbs) h &= 0x7fff;
    if (mods & kModNeg) h ^= 0x8000;
    return uint32_t(h);
  };
  forLanes(m, [&](unsigned l) { d[l] = half(a[l], ma) | half(b[l], mb) << 16; });
}

/// v_fma_mix_f32 / v_fma_mixlo_f16 / v_fma_mixhi_f16 (and v_mad_mix*):
/// a fused multiply-add whose sources are f32, or f16 halves where
/// op_sel_hi is set (op_sel picks the half), with neg and abs; the result
/// is f32, or f16 into the low / high half (the other half kept). Mode: 0
/// f32, 1 lo, 2 hi.
template <int Mode> void vFmaMix(Exec &x, const Inst &in) {
  uint64_t m = x.w->exec();
  Src s[3] = {src(x, in, 0), src(x, in, 1), src(x, in, 2)};
  uint32_t *d = x.w->vreg(in.def[0].index);
  bool clamp = in.aux & kAuxClamp;
  forLanes(m, [&](unsigned l) {
    double v[3];
    for (int i = 0; i < 3; ++i) {
      uint8_t mods = in.src[i].mods;
      uint32_t bits = s[i][l];
      double f;
      if (mods & kModOpSel1) {
        uint16_t h = uint16_t((mods & kModOpSel0) ? bits >> 16 : bits);
        f = f16ToFloat(h);
        if (x.flushF16 && std::fpclassify(f) == FP_SUBNORMAL)
          f = std::copysign(0.0, f);
      } else {
        f = readF32(x, bits, 0);
      }
      if (mods & kModAbs)
        f = std::fabs(f);
      if (mods & kModNeg)
        f = -f;
      v[i] = f;
    }
    // The product of two f32 (or f16) values is exact in double.
    double r = v[0] * v[1] + v[2];
    if (Mode == 0) {
      float f = float(std::fma(float(v[0]), float(v[1]), float(v[2])));
      if (clamp)
        f = std::isnan(f) ? 0.0f : std::clamp(f, 0.0f, 1.0f);
      d[l] = b32(x.flushF32 ? flushDenorm(f) : f);
      return;
    }
    if (clamp)
      r = std::isnan(r) ? 0.0 : std::clamp(r, 0.0, 1.0);
    uint32_t h = doubleToF16(r);
    if (x.flushF16 && (h & 0x7c00) == 0)
      h &= 0x8000;
    d[l] = Mode == 1 ? (d[l] & 0xffff0000u) | h : (d[l] & 0xffffu) | h << 16;
  });
}

/// v_bitop3_b32 / v_bitop3_b16 (gfx950): each result bit is bit
/// (a << 2 | b << 1 | c) of the 8-bit truth table (the immediate), a, b,
/// c the sources' bits at that position. The 16-bit form zeroes the high
/// half.
template <bool B16> void vBitop3(Exec &x, const Inst &in) {
  uint64_t m = x.w->exec();
  Src a = src(x, in, 0), b = src(x, in, 1), c = src(x, in, 2);
  uint32_t table = uint32_t(in.imm[0]) & 0xff;
  uint32_t *d = x.w->vreg(in.def[0].index);
  forLanes(m, [&](unsigned l) {
    uint32_t r = 0;
    for (int t = 0; t < 8; ++t) {
      if (!(table >> t & 1))
        continue;
      uint32_t sa = (t & 4) ? a[l] : ~a[l], sb = (t & 2) ? b[l] : ~b[l],
               sc = (t & 1) ? c[l] : ~c[l];
      r |= sa & sb & sc;
    }
    d[l] = B16 ? r & 0xffff : r;
  });
}

/// v_cvt_pk_bf16_f32 / v_cvt_pk_f16_f32 (gfx950): d = {cvt(b), cvt(a)},
/// rounded to nearest even (NaN stays NaN).
template <bool Bf16> void vCvtPk16(Exec &x, const Inst &in) {
  uint64_t m = x.w->exec();
  Src a = src(x, in, 0), b = src(x, in, 1);
  uint8_t ma = in.src[0].mods, mb = in.src[1].mods;
  uint32_t *d = x.w->vreg(in.def[0].index);
  auto cvt = [&](uint32_t bits, uint8_t mods) -> uint32_t {
    float f = f32(finishF32(x, in, readF32(x, bits, mods)));
    return Bf16 ? floatToBf16(f) : floatToF16(f);
  };
  forLanes(m, [&](unsigned l) { d[l] = cvt(a[l], ma) | cvt(b[l], mb) << 16; });
}

/// IEEE 754-2019 maximum / minimum (v_maximum3_f32, v_minimum3_f32): NaN
/// if any input is, -0 below +0.
inline float ieeeMax(float a, float b) {
  if (std::isnan(a) || std::isnan(b))
    return std::numeric_limits<float>::quiet_NaN();
  if (a == b)
    return std::signbit(a) ? b : a;
  return a > b ? a : b;
}
inline float ieeeMin(float a, float b) {
  if (std::isnan(a) || std::isnan(b))
    return std::numeric_limits<float>::quiet_NaN();
  if (a == b)
    return std::signbit(a) ? a : b;
  return a < b ? a : b;
}

/// v_permlane16_swap_b32 / v_permlane32_swap_b32 (gfx950): the odd 16-lane
/// rows of the first operand trade places with the even rows of the
/// second (16), or rows 2-3 of the first with rows 0-1 of the second (32);
/// both registers are results.
template <unsigned Span> void vPermlaneSwap(Exec &x, const Inst &in) {
  uint64_t m = x.w->exec();
  uint32_t *v = x.w->vreg(in.def[0].index), *s = x.w->vreg(in.def[1].index);
  for (unsigned l = 0; l < kLanes; ++l) {
    bool upper = Span == 16 ? (l / 16) % 2 == 1 : l >= 32;
    if (!upper)
      continue;
    unsigned o = l - Span;
    if (!(m >> l & 1) && !(m >> o & 1))
      continue;
    std::swap(v[l], s[o]);
  }
}

/// v_cvt_pk_fp8_f32 / v_cvt_pk_bf8_f32 (gfx940+): two f32 to two 8-bit
/// floats in bytes [1:0] (op_sel[3] = 0) or [3:2] of the result, the other
/// half kept; round to nearest even, clamp saturates. gfx942 uses the FNUZ
/// formats (bias 8 / 16, 0x80 NaN), gfx950 the OCP ones.
template <bool Bf8> void vCvtPkF8(Exec &x, const Inst &in) {
  uint64_t m = x.w->exec();
  Src a = src(x, in, 0), b = src(x, in, 1);
  uint8_t ma = in.src[0].mods, mb = in.src[1].mods;
  bool hiWord = ma & kModOpSel1; // DST_OP_SEL
  bool sat = in.aux & kAuxClamp;
  uint32_t *d = x.w->vreg(in.def[0].index);
  auto cvt = [&](float f) -> uint32_t {
    if (x.ocp)
      return Bf8 ? floatToE5m2(f, sat) : floatToE4m3(f, sat);
    return Bf8 ? floatToFnuz(f, 5, 2, sat) : floatToFnuz(f, 4, 3, sat);
  };
  forLanes(m, [&](unsigned l) {
    uint32_t pair = cvt(readF32(x, a[l], ma & (kModNeg | kModAbs))) |
                    cvt(readF32(x, b[l], mb & (kModNeg | kModAbs))) << 8;
    d[l] = hiWord ? (d[l] & 0xffffu) | pair << 16 : (d[l] & 0xffff0000u) | pair;
  });
}

/// v_cvt_f32_fp8 / v_cvt_f32_bf8: byte op_sel (or SDWA src0_sel) of src0.
template <bool Bf8> void vCvtF32F8(Exec &x, const Inst &in) {
  uint64_t m = x.w->exec();
  Src a = src(x, in, 0);
  unsigned byte = in.aux >> 16 & 3;
  uint32_t *d = x.w->vreg(in.def[0].index);
  forLanes(m, [&](unsigned l) {
    uint8_t v = uint8_t(a[l] >> (8 * byte));
    float f = x.ocp ? (Bf8 ? e5m2ToFloat(v) : e4m3ToFloat(v))
                    : (Bf8 ? fnuzToFloat(v, 5, 2) : fnuzToFloat(v, 4, 3));
    d[l] = finishF32(x, in, f);
  });
}

/// v_perm_b32: each result byte selected from {a, b} (b in bytes 0-3)
/// by the byte of c; 8-11 replicate sign bits, 12 gives 0, 13+ 0xff.
uint32_t permB32(uint32_t a, uint32_t b, uint32_t c) {
  uint64_t in = uint64_t(a) << 32 | b;
  uint32_t r = 0;
  for (int i = 0; i < 4; ++i) {
    uint32_t sel = (c >> (8 * i)) & 0xff;
    uint32_t byte;
    if (sel >= 13)
      byte = 0xff;
    else if (sel == 12)
      byte = 0;
    else if (sel >= 8)
      byte = ((in >> (16 * (sel - 8) + 15)) & 1) ? 0xff : 0;
    else
      byte = (in >> (8 * sel)) & 0xff;
    r |= byte << (8 * i);
  }
  return r;
}

/// V_DIV_SCALE_F32 (CDNA3 ISA pseudocode): scales the numerator or the
/// denominator of a division by 2^64 so the Newton-Raphson steps avoid
/// subnormals; VCC tells v_div_fmas_f32 to undo it.
void vDivScaleF32(Exec &x, const Inst &in) {
  uint64_t m = x.w->exec();
  Src a = src(x, in, 0), b = src(x, in, 1), c = src(x, in, 2);
  uint8_t ma = in.src[0].mods, mb = in.src[1].mods, mc = in.src[2].mods;
  uint32_t *d = x.w->vreg(in.def[0].index);
  uint64_t vcc = 0;
  forLanes(m, [&](unsigned l) {
    float s0 = f32(modF32(a[l], ma)), s1 = f32(modF32(b[l], mb)),
          s2 = f32(modF32(c[l], mc));
    float r = s0;
    int e1 = 0, e2 = 0;
    std::frexp(s1, &e1);
    std::frexp(s2, &e2);
    auto denorm = [](float f) { return std::fpclassify(f) == FP_SUBNORMAL; };
    if (s2 == 0 || s1 == 0) {
      r = std::numeric_limits<float>::quiet_NaN();
    } else if (e2 - e1 >= 96) {
      vcc |= 1ull << l;
      if (s0 == s1)
        r = std::ldexp(s0, 64);
    } else if (denorm(s1)) {
      r = std::ldexp(s0, 64);
    } else if (denorm(1.0f / s1) && denorm(s2 / s1)) {
      vcc |= 1ull << l;
      if (s0 == s1)
        r = std::ldexp(s0, 64);
    } else if (denorm(1.0f / s1)) {
      r = std::ldexp(s0, -64);
    } else if (denorm(s2 / s1)) {
      vcc |= 1ull << l;
      if (s0 == s2)
        r = std::ldexp(s0, 64);
    } else if (e2 + 126 <= 23) {
      // The numerator is tiny (biased exponent <= 23).
      r = std::ldexp(s0, 64);
    }
    d[l] = b32(r);
  });
  setMask(x, in.ndef > 1 ? &in.def[1] : nullptr, vcc);
}

/// V_DIV_FMAS_F32: fma(a, b, c), scaled by 2^64 (quotient exponent >= 0)
/// or 2^-64 where VCC is set (undoing v_div_scale_f32's scaling).
void vDivFmasF32(Exec &x, const Inst &in) {
  uint64_t m = x.w->exec();
  Src a = src(x, in, 0), b = src(x, in, 1), c = src(x, in, 2);
  uint8_t ma = in.src[0].mods, mb = in.src[1].mods, mc = in.src[2].mods;
  uint64_t vcc = x.w->vcc();
  uint32_t *d = x.w->vreg(in.def[0].index);
  forLanes(m, [&](unsigned l) {
    float s2 = f32(modF32(c[l], mc));
    float r = std::fma(f32(modF32(a[l], ma)), f32(modF32(b[l], mb)), s2);
    if (vcc >> l & 1)
      r = std::ldexp(r, std::fabs(s2) >= 1.0f ? 64 : -64);
    d[l] = finishF32(x, in, r);
  });
}

/// V_DIV_FIXUP_F32: the special cases of a division given the quotient q
/// (a = q, b = denominator, c = numerator). The finite case returns the
/// correctly rounded c / b, which is what the v_div_scale / v_rcp /
/// v_fma / v_div_fmas sequence before it computes on hardware (LLVM's
/// IEEE f32 division); the model does not depend on the scaling steps'
/// behaviour at the exponent extremes.
void vDivFixupF32(Exec &x, const Inst &in) {
  uint64_t m = x.w->exec();
  Src a = src(x, in, 0), b = src(x, in, 1), c = src(x, in, 2);
  uint8_t ma = in.src[0].mods, mb = in.src[1].mods, mc = in.src[2].mods;
  uint32_t *d = x.w->vreg(in.def[0].index);
  forLanes(m, [&](unsigned l) {
    float q = f32(modF32(a[l], ma)), den = f32(modF32(b[l], mb)),
          num = f32(modF32(c[l], mc));
    bool neg = std::signbit(den) != std::signbit(num);
    float r;
    const float inf = std::numeric_limits<float>::infinity();
    if (std::isnan(num))
      r = std::numeric_limits<float>::quiet_NaN();
    else if (std::isnan(den))
      r = std::numeric_limits<float>::quiet_NaN();
    else if (den == 0 && num == 0)
      r = std::numeric_limits<float>::quiet_NaN();
    else if (std::isinf(den) && std::isinf(num))
      r = std::numeric_limits<float>::quiet_NaN();
    else if (den == 0 || std::isinf(num))
      r = neg ? -inf : inf;
    else if (std::isinf(den) || num == 0)
      r = neg ? -0.0f : 0.0f;
    else
      r = num / den;
    (void)q;
    d[l] = finishF32(x, in, r);
  });
}

inline float fmed3(float a, float b, float c) {
  if (std::isnan(a) || std::isnan(b) || std::isnan(c))
    return std::fmin(std::fmin(a, b), c);
  return std::max(std::min(a, b), std::min(std::max(a, b), c));
}

/// The approximate functions computed exactly (hardware: within 1 ulp).
inline float exp2F(float a) { return float(std::exp2(double(a))); }
inline float log2F(float a) {
  if (a < 0)
    return std::numeric_limits<float>::quiet_NaN();
  return float(std::log2(double(a)));
}
inline float rcpF(float a) { return float(1.0 / double(a)); }
inline float rsqF(float a) { return float(1.0 / std::sqrt(double(a))); }
inline float sqrtF(float a) { return std::sqrt(a); }
inline float fractF(float a) {
  if (std::isinf(a))
    return std::numeric_limits<float>::quiet_NaN();
  return std::min(a - std::floor(a), 0x1.fffffep-1f);
}

/// v_ldexp_f32 d = a * 2^b (b a signed integer).
void vLdexpF32(Exec &x, const Inst &in) {
  uint64_t m = x.w->exec();
  Src a = src(x, in, 0), b = src(x, in, 1);
  uint8_t ma = in.src[0].mods;
  uint32_t *d = x.w->vreg(in.def[0].index);
  forLanes(m, [&](unsigned l) {
    int e = std::clamp(int32_t(b[l]), -1000, 1000);
    d[l] = finishF32(x, in, std::ldexp(readF32(x, a[l], ma), e));
  });
}

/// v_frexp_mant_f32 / v_frexp_exp_i32_f32.
float frexpMant(float a) {
  if (std::isnan(a) || std::isinf(a))
    return a;
  int e;
  return std::frexp(a, &e);
}
uint32_t frexpExp(uint32_t bits) {
  float a = f32(bits);
  if (std::isnan(a) || std::isinf(a))
    return 0;
  int e;
  std::frexp(a, &e);
  return uint32_t(e);
}

//===----------------------------------------------------------------------===//
// LDS (CDNA3 ISA 12.14: DS)
//===----------------------------------------------------------------------===//

// aux for loads / stores: bits 0-4 bytes, 5 signed, 6 d16 (16-bit result
// into half of the register, the other half kept), 7 high half (d16_hi).
constexpr uint32_t kMemSigned = 1u << 5, kMemD16 = 1u << 6, kMemHi = 1u << 7;

/// Writes `bytes` loaded bytes into lane l's destination registers.
inline void loadInto(Wave &w, unsigned reg, unsigned l, const uint8_t *p,
                     uint32_t aux) {
  unsigned bytes = aux & 31;
  if (bytes >= 4) {
    for (unsigned i = 0; i < bytes / 4; ++i)
      std::memcpy(&w.vreg(reg + i)[l], p + 4 * i, 4);
    return;
  }
  uint32_t v = 0;
  std::memcpy(&v, p, bytes);
  if ((aux & kMemSigned) && (v >> (8 * bytes - 1) & 1))
    v |= ~0u << (8 * bytes);
  uint32_t &d = w.vreg(reg)[l];
  if (aux & kMemD16) {
    v &= 0xffff;
    d = (aux & kMemHi) ? (d & 0xffffu) | v << 16 : (d & 0xffff0000u) | v;
  } else {
    d = v;
  }
}

/// The bytes a store writes from lane l's data registers.
inline void storeFrom(Wave &w, unsigned reg, unsigned l, uint8_t *p,
                      uint32_t aux) {
  unsigned bytes = aux & 31;
  if (bytes >= 4) {
    for (unsigned i = 0; i < bytes / 4; ++i)
      std::memcpy(p + 4 * i, &w.vreg(reg + i)[l], 4);
    return;
  }
  uint32_t v = w.vreg(reg)[l];
  if (aux & kMemHi)
    v >>= 16;
  std::memcpy(p, &v, bytes);
}

void dsRead(Exec &x, const Inst &in) {
  Wave &w = *x.w;
  uint64_t m = w.exec();
  Src addr = src(x, in, 0);
  uint32_t offset = uint32_t(in.imm[0]) & 0xffff;
  unsigned bytes = in.aux & 31;
  forLanes(m, [&](unsigned l) {
    uint64_t a = uint64_t(addr[l]) + offset;
    checkLds(x, in, a, bytes, int(l), false);
    loadInto(w, in.def[0].index, l, x.lds + a, in.aux);
  });
  markPending(w, w.lgkm, &in, &in.def[0]);
}

void dsWrite(Exec &x, const Inst &in) {
  Wave &w = *x.w;
  uint64_t m = w.exec();
  Src addr = src(x, in, 0);
  uint32_t offset = uint32_t(in.imm[0]) & 0xffff;
  unsigned bytes = in.aux & 31;
  forLanes(m, [&](unsigned l) {
    uint64_t a = uint64_t(addr[l]) + offset;
    checkLds(x, in, a, bytes, int(l), true);
    storeFrom(w, in.src[1].index, l, x.lds + a, in.aux);
  });
  markPending(w, w.lgkm, &in, nullptr);
}

/// ds_read2 / ds_read2st64: two elements of aux bytes at offset0 and
/// offset1 (in elements, times 64 for st64) into consecutive registers.
void dsRead2(Exec &x, const Inst &in) {
  Wave &w = *x.w;
  uint64_t m = w.exec();
  Src addr = src(x, in, 0);
  unsigned bytes = in.aux & 31;
  uint32_t scale = bytes * ((in.aux & (1u << 8)) ? 64 : 1);
  uint32_t o0 = (uint32_t(in.imm[0]) & 0xff) * scale,
           o1 = (uint32_t(in.imm[1]) & 0xff) * scale;
  unsigned regs = bytes / 4;
  forLanes(m, [&](unsigned l) {
    uint64_t a0 = uint64_t(addr[l]) + o0, a1 = uint64_t(addr[l]) + o1;
    checkLds(x, in, a0, bytes, int(l), false);
    checkLds(x, in, a1, bytes, int(l), false);
    loadInto(w, in.def[0].index, l, x.lds + a0, bytes);
    loadInto(w, in.def[0].index + regs, l, x.lds + a1, bytes);
  });
  markPending(w, w.lgkm, &in, &in.def[0]);
}

void dsWrite2(Exec &x, const Inst &in) {
  Wave &w = *x.w;
  uint64_t m = w.exec();
  Src addr = src(x, in, 0);
  unsigned bytes = in.aux & 31;
  uint32_t scale = bytes * ((in.aux & (1u << 8)) ? 64 : 1);
  uint32_t o0 = (uint32_t(in.imm[0]) & 0xff) * scale,
           o1 = (uint32_t(in.imm[1]) & 0xff) * scale;
  forLanes(m, [&](unsigned l) {
    uint64_t a0 = uint64_t(addr[l]) + o0, a1 = uint64_t(addr[l]) + o1;
    checkLds(x, in, a0, bytes, int(l), true);
    checkLds(x, in, a1, bytes, int(l), true);
    storeFrom(w, in.src[1].index, l, x.lds + a0, bytes);
    storeFrom(w, in.src[2].index, l, x.lds + a1, bytes);
  });
  markPending(w, w.lgkm, &in, nullptr);
}

/// ds_swizzle_b32 (CDNA3 ISA, DS_SWIZZLE_B32): offset[15] set: quad
/// permute, lane i of each quad reads lane offset[2i+1:2i]; else bitmask
/// mode within 32-lane halves: j = ((i & and) | or) ^ xor on the low five
/// bits, and_mask offset[4:0], or_mask [9:5], xor_mask [14:10]. A source
/// lane that EXEC disables reads 0.
void dsSwizzle(Exec &x, const Inst &in) {
  Wave &w = *x.w;
  uint64_t m = w.exec();
  Src a = src(x, in, 0);
  uint32_t off = uint32_t(in.imm[0]) & 0xffff;
  uint32_t *t = x.tmp[0];
  for (unsigned l = 0; l < kLanes; ++l) {
    unsigned j;
    if (off & 0x8000) {
      j = (l & ~3u) | ((off >> (2 * (l & 3))) & 3);
    } else {
      unsigned andM = off & 31, orM = (off >> 5) & 31, xorM = (off >> 10) & 31;
      j = (l & ~31u) | ((((l & 31) & andM) | orM) ^ xorM);
    }
    t[l] = (m >> j & 1) ? a[j] : 0;
  }
  uint32_t *d = w.vreg(in.def[0].index);
  forLanes(m, [&](unsigned l) { d[l] = t[l]; });
  markPending(w, w.lgkm, &in, &in.def[0]);
}

/// ds_bpermute_b32 (backward: lane i reads lane (addr_i + offset) / 4 of
/// data) and ds_permute_b32 (forward: lane i writes lane (addr_i +
/// offset) / 4), modulo 64. Disabled source lanes read 0.
template <bool Backward> void dsPermute(Exec &x, const Inst &in) {
  Wave &w = *x.w;
  uint64_t m = w.exec();
  Src addr = src(x, in, 0), data = src(x, in, 1);
  uint32_t off = uint32_t(in.imm[0]) & 0xffff;
  uint32_t *t = x.tmp[0];
  if (Backward) {
    for (unsigned l = 0; l < kLanes; ++l) {
      unsigned j = ((addr[l] + off) >> 2) & 63;
      t[l] = (m >> j & 1) ? data[j] : 0;
    }
  } else {
    std::fill(t, t + kLanes, 0u);
    forLanes(m, [&](unsigned l) { t[((addr[l] + off) >> 2) & 63] = data[l]; });
  }
  uint32_t *d = w.vreg(in.def[0].index);
  forLanes(m, [&](unsigned l) { d[l] = t[l]; });
  markPending(w, w.lgkm, &in, &in.def[0]);
}

/// ds_add_u32 / ds_add_rtn_u32 and friends: aux bits 0-7 operation
/// (0 add, 1 sub, 2 min_i, 3 max_i, 4 min_u, 5 max_u, 6 and, 7 or,
/// 8 xor, 9 swap, 10 add_f32, 11 max_f32, 12 min_f32), bit 12 returns.
void dsAtomic(Exec &x, const Inst &in) {
  Wave &w = *x.w;
  uint64_t m = w.exec();
  Src addr = src(x, in, 0), data = src(x, in, 1);
  uint32_t offset = uint32_t(in.imm[0]) & 0xffff;
  uint32_t op = in.aux & 0xff;
  bool rtn = in.aux >> 12 & 1;
  uint32_t *d = rtn ? w.vreg(in.def[0].index) : nullptr;
  forLanes(m, [&](unsigned l) {
    uint64_t a = uint64_t(addr[l]) + offset;
    checkLds(x, in, a, 4, int(l), true);
    uint32_t old;
    std::memcpy(&old, x.lds + a, 4);
    uint32_t v = data[l], r = old;
    switch (op) {
    case 0: r = old + v; break;
    case 1: r = old - v; break;
    case 2: r = uint32_t(std::min(int32_t(old), int32_t(v))); break;
    case 3: r = uint32_t(std::max(int32_t(old), int32_t(v))); break;
    case 4: r = std::min(old, v); break;
    case 5: r = std::max(old, v); break;
    case 6: r = old & v; break;
    case 7: r = old | v; break;
    case 8: r = old ^ v; break;
    case 9: r = v; break;
    case 10: r = b32(f32(old) + f32(v)); break;
    case 11: r = b32(std::fmax(f32(old), f32(v))); break;
    case 12: r = b32(std::fmin(f32(old), f32(v))); break;
    }
    std::memcpy(x.lds + a, &r, 4);
    if (d)
      d[l] = old;
  });
  markPending(w, w.lgkm, &in, rtn ? &in.def[0] : nullptr);
}

//===----------------------------------------------------------------------===//
// Global, flat and buffer memory (CDNA3 ISA 12.16-12.18: FLAT, GLOBAL,
// MUBUF)
//===----------------------------------------------------------------------===//

// aux bit 8: a store; bit 9: the SADDR form; bit 10: flat (aperture
// checks); bit 12-15: atomic op + 1 (0 none), bit 16: returns.
constexpr uint32_t kMemStore = 1u << 8, kMemSaddr = 1u << 9,
                   kMemFlat = 1u << 10;

/// Per-lane addresses of a FLAT / GLOBAL instruction and its data
/// operand's source index. The MC operand order differs by form (SADDR
/// loads: saddr, vaddr; SADDR stores and atomics: vaddr, vdata, saddr), so
/// operands are found by kind: the scalar base, then the address and data
/// VGPRs in order.
void flatAddresses(Exec &x, const Inst &in, uint64_t *addr, int &data) {
  bool saddr = in.aux & kMemSaddr;
  int sIdx = -1, vIdx = -1;
  data = -1;
  for (int i = 0; i < in.nsrc; ++i) {
    if (saddr && sIdx < 0 && in.src[i].kind != Operand::Vgpr)
      sIdx = i;
    else if (vIdx < 0)
      vIdx = i;
    else if (data < 0)
      data = i;
  }
  // GLOBAL (and SCRATCH) offsets are 13-bit signed on these chips; the MC
  // operand holds the raw field (llvm-objdump prints it sign-extended).
  int64_t offset = in.imm[0];
  if (!(in.aux & kMemFlat))
    offset = int64_t(int32_t(uint32_t(offset) << 19) >> 19);
  uint64_t m = x.w->exec();
  if (saddr) {
    Src v = src(x, in, vIdx);
    uint64_t base = sget64(x, in.src[sIdx]);
    forLanes(m, [&](unsigned l) { addr[l] = base + v[l] + offset; });
  } else {
    Src64 v = src64(x, in, vIdx);
    forLanes(m, [&](unsigned l) { addr[l] = v[l] + offset; });
  }
}

void vmemLoadStore(Exec &x, const Inst &in) {
  Wave &w = *x.w;
  uint64_t m = w.exec();
  uint64_t addr[kLanes];
  int data;
  flatAddresses(x, in, addr, data);
  unsigned bytes = in.aux & 31;
  bool store = in.aux & kMemStore;
  uint64_t global = m;
  if (in.aux & kMemFlat) {
    // Flat: the shared aperture reaches LDS, the private one scratch.
    for (uint64_t mm = m; mm; mm &= mm - 1) {
      unsigned l = unsigned(std::countr_zero(mm));
      uint32_t hi = uint32_t(addr[l] >> 32);
      if (hi == kSharedApertureHi) {
        global &= ~(1ull << l);
        uint64_t a = uint32_t(addr[l]);
        checkLds(x, in, a, bytes, int(l), store);
        if (store)
          storeFrom(w, in.src[data].index, l, x.lds + a, in.aux);
        else
          loadInto(w, in.def[0].index, l, x.lds + a, in.aux);
      } else if (hi == kPrivateApertureHi) {
        x.fault(kIllegalAddress,
                "flat access to scratch (private) memory, which the kernel "
                "does not have",
                in, int(l));
      }
    }
  }
  checkGlobal(x, in, addr, global, bytes);
  forLanes(global, [&](unsigned l) {
    auto *p = reinterpret_cast<uint8_t *>(addr[l]);
    if (store)
      storeFrom(w, in.src[data].index, l, p, in.aux);
    else
      loadInto(w, in.def[0].index, l, p, in.aux);
  });
  const Operand *dst = store ? nullptr : &in.def[0];
  markPending(w, w.vm, &in, dst);
  if (in.aux & kMemFlat)
    markPending(w, w.lgkm, &in, nullptr);
}

/// Global atomics (aux bits 12-15: operation + 1 as for dsAtomic, 32-bit
/// only; bit 16 returns the old value).
void globalAtomic(Exec &x, const Inst &in) {
  Wave &w = *x.w;
  uint64_t m = w.exec();
  uint64_t addr[kLanes];
  int data;
  flatAddresses(x, in, addr, data);
  checkGlobal(x, in, addr, m, 4);
  Src val = src(x, in, data);
  uint32_t op = (in.aux >> 12 & 15) - 1;
  bool rtn = in.aux >> 16 & 1;
  uint32_t *d = rtn ? w.vreg(in.def[0].index) : nullptr;
  static std::mutex atomicMutex; // workgroups run on several host threads
  std::lock_guard<std::mutex> lock(atomicMutex);
  forLanes(m, [&](unsigned l) {
    auto *p = reinterpret_cast<uint8_t *>(addr[l]);
    uint32_t old;
    std::memcpy(&old, p, 4);
    uint32_t v = val[l], r = old;
    switch (op) {
    case 0: r = old + v; break;
    case 1: r = old - v; break;
    case 2: r = uint32_t(std::min(int32_t(old), int32_t(v))); break;
    case 3: r = uint32_t(std::max(int32_t(old), int32_t(v))); break;
    case 4: r = std::min(old, v); break;
    case 5: r = std::max(old, v); break;
    case 6: r = old & v; break;
    case 7: r = old | v; break;
    case 8: r = old ^ v; break;
    case 9: r = v; break;
    case 10: r = b32(f32(old) + f32(v)); break;
    case 11: r = b32(std::fmax(f32(old), f32(v))); break;
    case 12: r = b32(std::fmin(f32(old), f32(v))); break;
    }
    std::memcpy(p, &r, 4);
    if (d)
      d[l] = old;
  });
  markPending(w, w.vm, &in, rtn ? &in.def[0] : nullptr);
}

/// MUBUF loads / stores (CDNA3 ISA "Buffer Instructions"): the V# in four
/// SGPRs (base [47:0], stride [61:48], num_records dword 2); address =
/// base + soffset + inst_offset + voffset (offen) + stride * vindex
/// (idxen). Range checking: with stride 0 an access whose offset + size
/// exceeds num_records, with a stride an index >= num_records, loads 0
/// and stores nothing. aux bits 17-18: 1 offen, 2 idxen, 3 both.
void bufferLoadStore(Exec &x, const Inst &in) {
  Wave &w = *x.w;
  uint64_t m = w.exec();
  unsigned mode = in.aux >> 17 & 3;
  bool store = in.aux & kMemStore;
  unsigned bytes = in.aux & 31;
  // Sources: [vdata (stores)], [vaddr], srsrc, soffset.
  int i = store ? 1 : 0;
  int vaddr = mode ? i++ : -1;
  int rsrc = i++, soff = i++;
  const uint32_t *v = &w.s[in.src[rsrc].index];
  uint64_t base = v[0] | uint64_t(v[1] & 0xffff) << 32;
  uint32_t stride = (v[1] >> 16) & 0x3fff, records = v[2];
  uint64_t soffset = sget(x, in.src[soff]);
  uint64_t inst = uint64_t(in.imm[0]) & 0xfff;
  uint64_t addr[kLanes];
  uint64_t inRange = 0;
  const uint32_t *va = vaddr >= 0 ? w.vreg(in.src[vaddr].index) : nullptr;
  const uint32_t *vb = vaddr >= 0 && mode == 3 ? w.vreg(in.src[vaddr].index + 1u)
                                               : nullptr;
  forLanes(m, [&](unsigned l) {
    uint64_t index = 0, voff = 0;
    if (mode == 1)
      voff = va[l];
    else if (mode == 2)
      index = va[l];
    else if (mode == 3)
      index = va[l], voff = vb[l];
    uint64_t offset = inst + voff + soffset;
    bool ok = stride == 0 ? offset + bytes <= records : index < records;
    addr[l] = base + offset + uint64_t(stride) * index;
    if (ok)
      inRange |= 1ull << l;
  });
  checkGlobal(x, in, addr, inRange, bytes);
  forLanes(m, [&](unsigned l) {
    bool ok = inRange >> l & 1;
    if (store) {
      if (ok)
        storeFrom(w, in.src[0].index, l, reinterpret_cast<uint8_t *>(addr[l]),
                  in.aux);
    } else if (ok) {
      loadInto(w, in.def[0].index, l, reinterpret_cast<uint8_t *>(addr[l]),
               in.aux);
    } else {
      uint8_t zero[16] = {};
      loadInto(w, in.def[0].index, l, zero, in.aux);
    }
  });
  markPending(w, w.vm, &in, store ? nullptr : &in.def[0]);
}

//===----------------------------------------------------------------------===//
// Matrix cores (CDNA3 ISA chapter 7, "Matrix Arithmetic Instructions";
// layouts in AmdMfma.h)
//===----------------------------------------------------------------------===//

/// An MFMA shape packed into Inst::aux (bits 0-22): m and n as log2 (2
/// bits each), k (8 bits), log2 blocks (3 bits), the input types (3 bits
/// each), f64 and integer results.
uint32_t packShape(const MfmaShape &s) {
  auto lg = [](int v) { return uint32_t(std::countr_zero(unsigned(v))); };
  return (lg(s.m) - 2) | (lg(s.n) - 2) << 2 | uint32_t(s.k) << 4 |
         lg(s.blocks) << 12 | uint32_t(s.a) << 15 | uint32_t(s.b) << 18 |
         uint32_t(s.f64) << 21 | uint32_t(s.intOut) << 22;
}
MfmaShape unpackShape(uint32_t v) {
  MfmaShape s;
  s.m = 4 << (v & 3);
  s.n = 4 << (v >> 2 & 3);
  s.k = int(v >> 4 & 0xff);
  s.blocks = 1 << (v >> 12 & 7);
  s.a = Elem(v >> 15 & 7);
  s.b = Elem(v >> 18 & 7);
  s.f64 = v >> 21 & 1;
  s.intOut = v >> 22 & 1;
  return s;
}

void vMfma(Exec &x, const Inst &in) {
  Wave &w = *x.w;
  if (w.exec() != ~0ull)
    x.fault(kIllegalInstruction,
            "MFMA with a partial EXEC mask (" + hex(w.exec()) +
                "): not modelled",
            in);
  MfmaShape s = unpackShape(in.aux & 0x7fffff);
  s.ocp = x.ocp;
  const uint32_t *a = w.vreg(in.src[0].index), *b = w.vreg(in.src[1].index);
  const uint32_t *c;
  thread_local std::vector<uint32_t> constantC;
  int outDwords = mfmaOutputDwords(s);
  if (in.src[2].kind == Operand::Vgpr) {
    c = w.vreg(in.src[2].index);
  } else {
    uint64_t v = constant64(x, in.src[2]);
    constantC.assign(size_t(outDwords) * kLanes, uint32_t(v));
    if (s.f64)
      for (int r = 0; r < outDwords; r += 2)
        std::fill_n(constantC.begin() + size_t(r + 1) * kLanes, kLanes,
                    uint32_t(v >> 32));
    c = constantC.data();
  }
  mfmaExecute(s, a, b, c, w.vreg(in.def[0].index));
  x.stats.mfmaFlops += 2ull * s.m * s.n * s.k * s.blocks;
}

//===----------------------------------------------------------------------===//
// Binding: mnemonic -> handler
//===----------------------------------------------------------------------===//

enum BindFlags : uint8_t {
  kFloat = 1,  // clamp / omod of VOP3 forms from imm[0] / imm[1]
  kIntOps = 2, // imms (clamp, op_sel) must be 0
  kDpp = 4,    // DPP form supported
  kSdwa = 8,   // SDWA form supported
  kRaw = 16,   // the handler reads its immediates itself
  kF16Src = 32, // float operation on f16 sources (SDWA may select words)
};

struct Binding {
  Handler run;
  uint32_t aux = 0;
  uint8_t flags = 0;
  uint32_t sdwaIndex = 0; // in sdwaBases(), for kDpp (VOP1 / VOP2) ones
};

std::vector<Handler> &sdwaBases() {
  static std::vector<Handler> bases;
  return bases;
}

using U = uint32_t;
using I = int32_t;

std::unordered_map<std::string, Binding> makeTable() {
  std::unordered_map<std::string, Binding> t;
  auto add = [&](const char *name, Handler h, uint8_t flags = kRaw,
                 uint32_t aux = 0) {
    uint32_t index = 0;
    if (flags & kDpp) {
      index = uint32_t(sdwaBases().size());
      sdwaBases().push_back(h);
    }
    t[name] = {h, aux, flags, index};
  };

  // --- SOP2 / SOP1 / SOPK / SOPC ---
  add("s_add_u32", sop32<[](U a, U b, bool &c) { uint64_t r = uint64_t(a) + b; c = r >> 32; return U(r); }>);
  add("s_addc_u32", sop32<[](U a, U b, bool &c) { uint64_t r = uint64_t(a) + b + c; c = r >> 32; return U(r); }>);
  add("s_sub_u32", sop32<[](U a, U b, bool &c) { c = b > a; return a - b; }>);
  add("s_subb_u32", sop32<[](U a, U b, bool &c) { uint64_t q = uint64_t(b) + c; c = q > a; return U(a - q); }>);
  add("s_add_i32", sop32<[](U a, U b, bool &c) { U r = a + b; c = ((a ^ r) & (b ^ r)) >> 31; return r; }>);
  add("s_sub_i32", sop32<[](U a, U b, bool &c) { U r = a - b; c = ((a ^ b) & (a ^ r)) >> 31; return r; }>);
  add("s_mul_i32", sop32<[](U a, U b, bool &) { return a * b; }>);
  add("s_mul_hi_u32", sop32<[](U a, U b, bool &) { return U((uint64_t(a) * b) >> 32); }>);
  add("s_mul_hi_i32", sop32<[](U a, U b, bool &) { return U(uint64_t(int64_t(I(a)) * I(b)) >> 32); }>);
  add("s_min_i32", sop32<[](U a, U b, bool &c) { c = I(a) < I(b); return c ? a : b; }>);
  add("s_min_u32", sop32<[](U a, U b, bool &c) { c = a < b; return c ? a : b; }>);
  add("s_max_i32", sop32<[](U a, U b, bool &c) { c = I(a) > I(b); return c ? a : b; }>);
  add("s_max_u32", sop32<[](U a, U b, bool &c) { c = a > b; return c ? a : b; }>);
  add("s_cselect_b32", sop32<[](U a, U b, bool &c) { return c ? a : b; }>);
  add("s_cselect_b64", sop64<[](uint64_t a, uint64_t b, bool &c) { return c ? a : b; }>);
  add("s_and_b32", sop32<[](U a, U b, bool &c) { U r = a & b; c = r; return r; }>);
  add("s_or_b32", sop32<[](U a, U b, bool &c) { U r = a | b; c = r; return r; }>);
  add("s_xor_b32", sop32<[](U a, U b, bool &c) { U r = a ^ b; c = r; return r; }>);
  add("s_andn2_b32", sop32<[](U a, U b, bool &c) { U r = a & ~b; c = r; return r; }>);
  add("s_orn2_b32", sop32<[](U a, U b, bool &c) { U r = a | ~b; c = r; return r; }>);
  add("s_nand_b32", sop32<[](U a, U b, bool &c) { U r = ~(a & b); c = r; return r; }>);
  add("s_nor_b32", sop32<[](U a, U b, bool &c) { U r = ~(a | b); c = r; return r; }>);
  add("s_xnor_b32", sop32<[](U a, U b, bool &c) { U r = ~(a ^ b); c = r; return r; }>);
  add("s_and_b64", sop64<[](uint64_t a, uint64_t b, bool &c) { uint64_t r = a & b; c = r; return r; }>);
  add("s_or_b64", sop64<[](uint64_t a, uint64_t b, bool &c) { uint64_t r = a | b; c = r; return r; }>);
  add("s_xor_b64", sop64<[](uint64_t a, uint64_t b, bool &c) { uint64_t r = a ^ b; c = r; return r; }>);
  add("s_andn2_b64", sop64<[](uint64_t a, uint64_t b, bool &c) { uint64_t r = a & ~b; c = r; return r; }>);
  add("s_orn2_b64", sop64<[](uint64_t a, uint64_t b, bool &c) { uint64_t r = a | ~b; c = r; return r; }>);
  add("s_nand_b64", sop64<[](uint64_t a, uint64_t b, bool &c) { uint64_t r = ~(a & b); c = r; return r; }>);
  add("s_nor_b64", sop64<[](uint64_t a, uint64_t b, bool &c) { uint64_t r = ~(a | b); c = r; return r; }>);
  add("s_xnor_b64", sop64<[](uint64_t a, uint64_t b, bool &c) { uint64_t r = ~(a ^ b); c = r; return r; }>);
  add("s_lshl_b32", sop32<[](U a, U b, bool &c) { U r = a << (b & 31); c = r; return r; }>);
  add("s_lshr_b32", sop32<[](U a, U b, bool &c) { U r = a >> (b & 31); c = r; return r; }>);
  add("s_ashr_i32", sop32<[](U a, U b, bool &c) { U r = U(I(a) >> (b & 31)); c = r; return r; }>);
  add("s_lshl_b64", sop64s<[](uint64_t a, U b, bool &c) { uint64_t r = a << (b & 63); c = r; return r; }>);
  add("s_lshr_b64", sop64s<[](uint64_t a, U b, bool &c) { uint64_t r = a >> (b & 63); c = r; return r; }>);
  add("s_ashr_i64", sop64s<[](uint64_t a, U b, bool &c) { uint64_t r = uint64_t(int64_t(a) >> (b & 63)); c = r; return r; }>);
  add("s_lshl1_add_u32", sop32<[](U a, U b, bool &c) { uint64_t r = (uint64_t(a) << 1) + b; c = r >> 32; return U(r); }>);
  add("s_lshl2_add_u32", sop32<[](U a, U b, bool &c) { uint64_t r = (uint64_t(a) << 2) + b; c = r >> 32; return U(r); }>);
  add("s_lshl3_add_u32", sop32<[](U a, U b, bool &c) { uint64_t r = (uint64_t(a) << 3) + b; c = r >> 32; return U(r); }>);
  add("s_lshl4_add_u32", sop32<[](U a, U b, bool &c) { uint64_t r = (uint64_t(a) << 4) + b; c = r >> 32; return U(r); }>);
  add("s_bfe_u32", sop32<[](U a, U b, bool &c) { U r = bfeU32(a, b & 31, b >> 16); c = r; return r; }>);
  add("s_bfe_i32", sop32<[](U a, U b, bool &c) { U r = U(bfeI32(a, b & 31, b >> 16)); c = r; return r; }>);
  add("s_bfe_u64", sop64s<[](uint64_t a, U b, bool &c) { uint64_t r = bfeU64(a, b & 63, b >> 16); c = r; return r; }>);
  add("s_bfe_i64", sop64s<[](uint64_t a, U b, bool &c) { uint64_t r = uint64_t(bfeI64(a, b & 63, b >> 16)); c = r; return r; }>);
  add("s_bfm_b32", sop32<[](U a, U b, bool &) { return U(((1ull << (a & 31)) - 1) << (b & 31)); }>);
  add("s_absdiff_i32", sop32<[](U a, U b, bool &c) { int64_t d = int64_t(I(a)) - I(b); U r = U(d < 0 ? -d : d); c = r; return r; }>);
  add("s_pack_ll_b32_b16", sop32<[](U a, U b, bool &) { return (a & 0xffff) | b << 16; }>);
  add("s_pack_lh_b32_b16", sop32<[](U a, U b, bool &) { return (a & 0xffff) | (b & 0xffff0000u); }>);
  add("s_pack_hh_b32_b16", sop32<[](U a, U b, bool &) { return a >> 16 | (b & 0xffff0000u); }>);
  add("s_mov_b32", sop32<[](U a, U, bool &) { return a; }>);
  add("s_mov_b64", sop64<[](uint64_t a, uint64_t, bool &) { return a; }>);
  add("s_cmov_b32", sop32<[](U a, U, bool &) { return a; }>); // fixed below
  add("s_not_b32", sop32<[](U a, U, bool &c) { U r = ~a; c = r; return r; }>);
  add("s_not_b64", sop64<[](uint64_t a, uint64_t, bool &c) { uint64_t r = ~a; c = r; return r; }>);
  add("s_brev_b32", sop32<[](U a, U, bool &) {
        U r = 0;
        for (int i = 0; i < 32; ++i) r |= ((a >> i) & 1) << (31 - i);
        return r; }>);
  add("s_bcnt1_i32_b32", sop32<[](U a, U, bool &c) { U r = U(std::popcount(a)); c = r; return r; }>);
  add("s_bcnt1_i32_b64", sop64<[](uint64_t a, uint64_t, bool &c) { uint64_t r = U(std::popcount(a)); c = r; return r; }>);
  add("s_ff1_i32_b32", sop32<[](U a, U, bool &) { return ff1(a); }>);
  add("s_ff1_i32_b64", sop64<[](uint64_t a, uint64_t, bool &) { return uint64_t(ff1(a)); }>);
  add("s_flbit_i32_b32", sop32<[](U a, U, bool &) { return flbitB32(a); }>);
  add("s_flbit_i32", sop32<[](U a, U, bool &) { return flbitI32(a); }>);
  add("s_sext_i32_i8", sop32<[](U a, U, bool &) { return U(I(int8_t(a))); }>);
  add("s_sext_i32_i16", sop32<[](U a, U, bool &) { return U(I(int16_t(a))); }>);
  add("s_abs_i32", sop32<[](U a, U, bool &c) { U r = I(a) < 0 ? 0u - a : a; c = r; return r; }>);
  add("s_and_saveexec_b64", saveexec<[](uint64_t s, uint64_t e) { return s & e; }>);
  add("s_or_saveexec_b64", saveexec<[](uint64_t s, uint64_t e) { return s | e; }>);
  add("s_xor_saveexec_b64", saveexec<[](uint64_t s, uint64_t e) { return s ^ e; }>);
  add("s_andn2_saveexec_b64", saveexec<[](uint64_t s, uint64_t e) { return s & ~e; }>);
  add("s_orn2_saveexec_b64", saveexec<[](uint64_t s, uint64_t e) { return s | ~e; }>);
  add("s_andn1_saveexec_b64", saveexec<[](uint64_t s, uint64_t e) { return ~s & e; }>);
  add("s_movk_i32", sMovk);
  add("s_addk_i32", sAddk);
  add("s_mulk_i32", sMulk);
  add("s_cmp_eq_u32", sopc32<[](U a, U b) { return a == b; }>);
  add("s_cmp_lg_u32", sopc32<[](U a, U b) { return a != b; }>);
  add("s_cmp_eq_i32", sopc32<[](U a, U b) { return a == b; }>);
  add("s_cmp_lg_i32", sopc32<[](U a, U b) { return a != b; }>);
  add("s_cmp_gt_i32", sopc32<[](U a, U b) { return I(a) > I(b); }>);
  add("s_cmp_ge_i32", sopc32<[](U a, U b) { return I(a) >= I(b); }>);
  add("s_cmp_lt_i32", sopc32<[](U a, U b) { return I(a) < I(b); }>);
  add("s_cmp_le_i32", sopc32<[](U a, U b) { return I(a) <= I(b); }>);
  add("s_cmp_gt_u32", sopc32<[](U a, U b) { return a > b; }>);
  add("s_cmp_ge_u32", sopc32<[](U a, U b) { return a >= b; }>);
  add("s_cmp_lt_u32", sopc32<[](U a, U b) { return a < b; }>);
  add("s_cmp_le_u32", sopc32<[](U a, U b) { return a <= b; }>);
  add("s_cmpk_eq_i32", sopkc<[](U a, U b) { return a == b; }, true>);
  add("s_cmpk_lg_i32", sopkc<[](U a, U b) { return a != b; }, true>);
  add("s_cmpk_gt_i32", sopkc<[](U a, U b) { return I(a) > I(b); }, true>);
  add("s_cmpk_ge_i32", sopkc<[](U a, U b) { return I(a) >= I(b); }, true>);
  add("s_cmpk_lt_i32", sopkc<[](U a, U b) { return I(a) < I(b); }, true>);
  add("s_cmpk_le_i32", sopkc<[](U a, U b) { return I(a) <= I(b); }, true>);
  add("s_cmpk_eq_u32", sopkc<[](U a, U b) { return a == b; }, false>);
  add("s_cmpk_lg_u32", sopkc<[](U a, U b) { return a != b; }, false>);
  add("s_cmpk_gt_u32", sopkc<[](U a, U b) { return a > b; }, false>);
  add("s_cmpk_ge_u32", sopkc<[](U a, U b) { return a >= b; }, false>);
  add("s_cmpk_lt_u32", sopkc<[](U a, U b) { return a < b; }, false>);
  add("s_cmpk_le_u32", sopkc<[](U a, U b) { return a <= b; }, false>);
  add("s_cmp_eq_u64", sopc64<[](uint64_t a, uint64_t b) { return a == b; }>);
  add("s_cmp_lg_u64", sopc64<[](uint64_t a, uint64_t b) { return a != b; }>);
  add("s_bitcmp0_b32", sopc32<[](U a, U b) { return !((a >> (b & 31)) & 1); }>);
  add("s_bitcmp1_b32", sopc32<[](U a, U b) { return bool((a >> (b & 31)) & 1); }>);
  add("s_bitcmp0_b64", sopc64<[](uint64_t a, uint64_t b) { return !((a >> (b & 63)) & 1); }>);
  add("s_bitcmp1_b64", sopc64<[](uint64_t a, uint64_t b) { return bool((a >> (b & 63)) & 1); }>);

  // --- SOPP and program control ---
  add("s_branch", sBranch<0>);
  add("s_cbranch_scc0", sBranch<1>);
  add("s_cbranch_scc1", sBranch<2>);
  add("s_cbranch_vccz", sBranch<3>);
  add("s_cbranch_vccnz", sBranch<4>);
  add("s_cbranch_execz", sBranch<5>);
  add("s_cbranch_execnz", sBranch<6>);
  add("s_endpgm", sEndpgm);
  add("s_barrier", sBarrier);
  add("s_waitcnt", sWaitcnt);
  // Hints and scheduling controls without an architectural effect here.
  for (const char *n : {"s_nop", "s_setprio", "s_sleep", "s_sched_barrier",
                        "s_code_end", "s_dcache_wb", "s_icache_inv",
                        "s_dcache_inv", "buffer_wbl2", "buffer_inv",
                        "s_waitcnt_depctr", "s_set_gpr_idx_off"})
    add(n, sNop);
  add("s_getpc_b64", sGetpc);
  add("s_setpc_b64", sSetpc);
  add("s_swappc_b64", sSwappc);

  // --- SMEM ---
  for (auto [n, d] : std::initializer_list<std::pair<const char *, U>>{
           {"s_load_dword", 1}, {"s_load_dwordx2", 2}, {"s_load_dwordx4", 4},
           {"s_load_dwordx8", 8}, {"s_load_dwordx16", 16}}) {
    add(n, sLoad, kRaw, d);
    add(("s_buffer_" + std::string(n + 2)).c_str(), sBufferLoad, kRaw, d);
  }

  // --- VOP1 / VOP2 / VOP3 integer ---
  add("v_mov_b32", vop1<[](U a) { return a; }>, kIntOps | kDpp);
  add("v_mov_b64", vMovB64, kIntOps);
  add("v_not_b32", vop1<[](U a) { return ~a; }>, kIntOps | kDpp);
  add("v_bfrev_b32", vop1<[](U a) {
        U r = 0;
        for (int i = 0; i < 32; ++i) r |= ((a >> i) & 1) << (31 - i);
        return r; }>, kIntOps | kDpp);
  add("v_ffbh_u32", vop1<[](U a) { return flbitB32(a); }>, kIntOps | kDpp);
  add("v_ffbl_b32", vop1<[](U a) { return ff1(a); }>, kIntOps | kDpp);
  add("v_ffbh_i32", vop1<[](U a) { return flbitI32(a); }>, kIntOps | kDpp);
  add("v_bcnt_u32_b32", vop2<[](U a, U b) { return U(std::popcount(a)) + b; }>, kIntOps);
  add("v_add_u32", vop2<[](U a, U b) { return a + b; }>, kIntOps | kDpp);
  add("v_sub_u32", vop2<[](U a, U b) { return a - b; }>, kIntOps | kDpp);
  add("v_subrev_u32", vop2<[](U a, U b) { return b - a; }>, kIntOps | kDpp);
  add("v_add_u16", vop2<[](U a, U b) { return (a + b) & 0xffff; }>, kIntOps | kDpp);
  add("v_sub_u16", vop2<[](U a, U b) { return (a - b) & 0xffff; }>, kIntOps | kDpp);
  add("v_subrev_u16", vop2<[](U a, U b) { return (b - a) & 0xffff; }>, kIntOps | kDpp);
  add("v_mul_lo_u16", vop2<[](U a, U b) { return (a * b) & 0xffff; }>, kIntOps | kDpp);
  add("v_lshlrev_b16", vop2<[](U a, U b) { return (b << (a & 15)) & 0xffff; }>, kIntOps | kDpp);
  add("v_lshrrev_b16", vop2<[](U a, U b) { return (b & 0xffff) >> (a & 15); }>, kIntOps | kDpp);
  add("v_ashrrev_i16", vop2<[](U a, U b) { return U(int16_t(b) >> (a & 15)) & 0xffff; }>, kIntOps | kDpp);
  add("v_max_u16", vop2<[](U a, U b) { return U(std::max(uint16_t(a), uint16_t(b))); }>, kIntOps | kDpp);
  add("v_min_u16", vop2<[](U a, U b) { return U(std::min(uint16_t(a), uint16_t(b))); }>, kIntOps | kDpp);
  add("v_max_i16", vop2<[](U a, U b) { return U(uint16_t(std::max(int16_t(a), int16_t(b)))); }>, kIntOps | kDpp);
  add("v_min_i16", vop2<[](U a, U b) { return U(uint16_t(std::min(int16_t(a), int16_t(b)))); }>, kIntOps | kDpp);
  add("v_and_b32", vop2<[](U a, U b) { return a & b; }>, kIntOps | kDpp);
  add("v_or_b32", vop2<[](U a, U b) { return a | b; }>, kIntOps | kDpp);
  add("v_xor_b32", vop2<[](U a, U b) { return a ^ b; }>, kIntOps | kDpp);
  add("v_xnor_b32", vop2<[](U a, U b) { return ~(a ^ b); }>, kIntOps | kDpp);
  add("v_lshlrev_b32", vop2<[](U a, U b) { return b << (a & 31); }>, kIntOps | kDpp);
  add("v_lshrrev_b32", vop2<[](U a, U b) { return b >> (a & 31); }>, kIntOps | kDpp);
  add("v_ashrrev_i32", vop2<[](U a, U b) { return U(I(b) >> (a & 31)); }>, kIntOps | kDpp);
  add("v_max_i32", vop2<[](U a, U b) { return U(std::max(I(a), I(b))); }>, kIntOps | kDpp);
  add("v_min_i32", vop2<[](U a, U b) { return U(std::min(I(a), I(b))); }>, kIntOps | kDpp);
  add("v_max_u32", vop2<[](U a, U b) { return std::max(a, b); }>, kIntOps | kDpp);
  add("v_min_u32", vop2<[](U a, U b) { return std::min(a, b); }>, kIntOps | kDpp);
  add("v_mul_u32_u24", vop2<[](U a, U b) { return (a & 0xffffff) * (b & 0xffffff); }>, kIntOps | kDpp);
  add("v_mul_hi_u32_u24", vop2<[](U a, U b) { return U((uint64_t(a & 0xffffff) * (b & 0xffffff)) >> 32); }>, kIntOps | kDpp);
  add("v_mul_i32_i24", vop2<[](U a, U b) {
        int32_t x = I(a << 8) >> 8, y = I(b << 8) >> 8;
        return U(int64_t(x) * y); }>, kIntOps | kDpp);
  add("v_mul_hi_i32_i24", vop2<[](U a, U b) {
        int64_t x = I(a << 8) >> 8, y = I(b << 8) >> 8;
        return U(uint64_t(x * y) >> 32); }>, kIntOps | kDpp);
  add("v_mul_lo_u32", vop2<[](U a, U b) { return a * b; }>, kIntOps);
  add("v_mul_hi_u32", vop2<[](U a, U b) { return U((uint64_t(a) * b) >> 32); }>, kIntOps);
  add("v_mul_hi_i32", vop2<[](U a, U b) { return U(uint64_t(int64_t(I(a)) * I(b)) >> 32); }>, kIntOps);
  add("v_bfm_b32", vop2<[](U a, U b) { return U(((1ull << (a & 31)) - 1) << (b & 31)); }>, kIntOps);
  add("v_lshlrev_b64", vop2w<[](U a, uint64_t b) { return b << (a & 63); }>, kIntOps);
  add("v_lshrrev_b64", vop2w<[](U a, uint64_t b) { return b >> (a & 63); }>, kIntOps);
  add("v_ashrrev_i64", vop2w<[](U a, uint64_t b) { return uint64_t(int64_t(b) >> (a & 63)); }>, kIntOps);
  add("v_lshl_add_u64", vLshlAddU64, kIntOps);
  add("v_add3_u32", vop3<[](U a, U b, U c) { return a + b + c; }>, kIntOps);
  add("v_lshl_add_u32", vop3<[](U a, U b, U c) { return (a << (b & 31)) + c; }>, kIntOps);
  add("v_add_lshl_u32", vop3<[](U a, U b, U c) { return (a + b) << (c & 31); }>, kIntOps);
  add("v_lshl_or_b32", vop3<[](U a, U b, U c) { return (a << (b & 31)) | c; }>, kIntOps);
  add("v_and_or_b32", vop3<[](U a, U b, U c) { return (a & b) | c; }>, kIntOps);
  add("v_or3_b32", vop3<[](U a, U b, U c) { return a | b | c; }>, kIntOps);
  add("v_xad_u32", vop3<[](U a, U b, U c) { return (a ^ b) + c; }>, kIntOps);
  add("v_bfe_u32", vop3<[](U a, U b, U c) { return bfeU32(a, b & 31, c & 31); }>, kIntOps);
  add("v_bfe_i32", vop3<[](U a, U b, U c) { return U(bfeI32(a, b & 31, c & 31)); }>, kIntOps);
  add("v_bfi_b32", vop3<[](U a, U b, U c) { return (a & b) | (~a & c); }>, kIntOps);
  add("v_alignbit_b32", vop3<[](U a, U b, U c) { return U(((uint64_t(a) << 32) | b) >> (c & 31)); }>, kIntOps);
  add("v_alignbyte_b32", vop3<[](U a, U b, U c) { return U(((uint64_t(a) << 32) | b) >> (8 * (c & 3))); }>, kIntOps);
  add("v_perm_b32", vop3<permB32>, kIntOps);
  add("v_mad_u32_u24", vop3<[](U a, U b, U c) { return (a & 0xffffff) * (b & 0xffffff) + c; }>, kIntOps);
  add("v_mad_i32_i24", vop3<[](U a, U b, U c) { return U(int64_t(I(a << 8) >> 8) * (I(b << 8) >> 8)) + c; }>, kIntOps);
  add("v_min3_i32", vop3<[](U a, U b, U c) { return U(std::min({I(a), I(b), I(c)})); }>, kIntOps);
  add("v_max3_i32", vop3<[](U a, U b, U c) { return U(std::max({I(a), I(b), I(c)})); }>, kIntOps);
  add("v_min3_u32", vop3<[](U a, U b, U c) { return std::min({a, b, c}); }>, kIntOps);
  add("v_max3_u32", vop3<[](U a, U b, U c) { return std::max({a, b, c}); }>, kIntOps);
  add("v_med3_i32", vop3<[](U a, U b, U c) {
        I x = I(a), y = I(b), z = I(c);
        return U(std::max(std::min(x, y), std::min(std::max(x, y), z))); }>, kIntOps);
  add("v_med3_u32", vop3<[](U a, U b, U c) {
        return std::max(std::min(a, b), std::min(std::max(a, b), c)); }>, kIntOps);
  add("v_mad_u64_u32", vMad64<false>, kIntOps);
  add("v_mad_i64_i32", vMad64<true>, kIntOps);
  add("v_add_co_u32", vAddCarry<0, false>, kIntOps | kDpp);
  add("v_sub_co_u32", vAddCarry<1, false>, kIntOps | kDpp);
  add("v_subrev_co_u32", vAddCarry<2, false>, kIntOps | kDpp);
  add("v_addc_co_u32", vAddCarry<0, true>, kIntOps | kDpp);
  add("v_subb_co_u32", vAddCarry<1, true>, kIntOps | kDpp);
  add("v_subbrev_co_u32", vAddCarry<2, true>, kIntOps | kDpp);
  add("v_cndmask_b32", vCndmask, kIntOps | kDpp);
  add("v_readfirstlane_b32", vReadfirstlane, kIntOps);
  add("v_readlane_b32", vReadlane, kIntOps);
  add("v_writelane_b32", vWritelane, kIntOps);
  add("v_accvgpr_read_b32", vAccMov, kIntOps);
  add("v_accvgpr_write_b32", vAccMov, kIntOps);
  add("v_accvgpr_mov_b32", vAccMov, kIntOps);
  add("v_cvt_f32_i32", vop1<[](U a) { return b32(float(I(a))); }>, kIntOps | kDpp);
  add("v_cvt_f32_u32", vop1<[](U a) { return b32(float(a)); }>, kIntOps | kDpp);
  add("v_cvt_f32_ubyte0", vop1<[](U a) { return b32(float(a & 0xff)); }>, kIntOps | kDpp);
  add("v_cvt_f32_ubyte1", vop1<[](U a) { return b32(float((a >> 8) & 0xff)); }>, kIntOps | kDpp);
  add("v_cvt_f32_ubyte2", vop1<[](U a) { return b32(float((a >> 16) & 0xff)); }>, kIntOps | kDpp);
  add("v_cvt_f32_ubyte3", vop1<[](U a) { return b32(float(a >> 24)); }>, kIntOps | kDpp);
  add("v_frexp_exp_i32_f32", vop1<frexpExp>, kIntOps);

  // --- f32 arithmetic ---
  add("v_add_f32", vop2f<[](float a, float b) { return a + b; }>, kFloat | kDpp);
  add("v_sub_f32", vop2f<[](float a, float b) { return a - b; }>, kFloat | kDpp);
  add("v_subrev_f32", vop2f<[](float a, float b) { return b - a; }>, kFloat | kDpp);
  add("v_mul_f32", vop2f<[](float a, float b) { return a * b; }>, kFloat | kDpp);
  add("v_mul_legacy_f32", vop2f<[](float a, float b) { return (a == 0 || b == 0) ? 0.0f : a * b; }>, kFloat | kDpp);
  add("v_max_f32", vop2f<[](float a, float b) { return std::fmax(a, b); }>, kFloat | kDpp);
  add("v_min_f32", vop2f<[](float a, float b) { return std::fmin(a, b); }>, kFloat | kDpp);
  add("v_fma_f32", vop3f<[](float a, float b, float c) { return std::fma(a, b, c); }>, kFloat);
  add("v_fmac_f32", vop3f<[](float a, float b, float c) { return std::fma(a, b, c); }>, kFloat | kDpp);
  add("v_mad_f32", vop3f<[](float a, float b, float c) { return flushDenorm(flushDenorm(a * b) + c); }>, kFloat);
  add("v_mac_f32", vop3f<[](float a, float b, float c) { return flushDenorm(flushDenorm(a * b) + c); }>, kFloat);
  add("v_min3_f32", vop3f<[](float a, float b, float c) { return std::fmin(std::fmin(a, b), c); }>, kFloat);
  add("v_max3_f32", vop3f<[](float a, float b, float c) { return std::fmax(std::fmax(a, b), c); }>, kFloat);
  add("v_med3_f32", vop3f<fmed3>, kFloat);
  add("v_fmamk_f32", vMadK<true, true>, kRaw);
  add("v_fmaak_f32", vMadK<false, true>, kRaw);
  add("v_madmk_f32", vMadK<true, false>, kRaw);
  add("v_madak_f32", vMadK<false, false>, kRaw);
  add("v_exp_f32", vop1f<exp2F>, kFloat | kDpp);
  add("v_log_f32", vop1f<log2F>, kFloat | kDpp);
  add("v_rcp_f32", vop1f<rcpF>, kFloat | kDpp);
  add("v_rcp_iflag_f32", vop1f<rcpF>, kFloat | kDpp);
  add("v_rsq_f32", vop1f<rsqF>, kFloat | kDpp);
  add("v_sqrt_f32", vop1f<sqrtF>, kFloat | kDpp);
  add("v_sin_f32", vop1f<[](float a) { return float(std::sin(2 * M_PI * double(a))); }>, kFloat);
  add("v_cos_f32", vop1f<[](float a) { return float(std::cos(2 * M_PI * double(a))); }>, kFloat);
  add("v_floor_f32", vop1f<[](float a) { return std::floor(a); }>, kFloat | kDpp);
  add("v_ceil_f32", vop1f<[](float a) { return std::ceil(a); }>, kFloat | kDpp);
  add("v_trunc_f32", vop1f<[](float a) { return std::trunc(a); }>, kFloat | kDpp);
  add("v_rndne_f32", vop1f<[](float a) { return std::nearbyint(a); }>, kFloat | kDpp);
  add("v_fract_f32", vop1f<fractF>, kFloat | kDpp);
  add("v_frexp_mant_f32", vop1f<frexpMant>, kFloat);
  add("v_ldexp_f32", vLdexpF32, kFloat);
  add("v_cvt_i32_f32", vop1<[](U a) { return cvtI32(f32(a)); }>, kIntOps | kDpp);
  add("v_cvt_u32_f32", vop1<[](U a) { return cvtU32(f32(a)); }>, kIntOps | kDpp);
  add("v_cvt_rpi_i32_f32", vop1<[](U a) { return cvtI32(std::floor(f32(a) + 0.5f)); }>, kIntOps);
  add("v_cvt_flr_i32_f32", vop1<[](U a) { return cvtI32(std::floor(f32(a))); }>, kIntOps);
  add("v_cvt_f16_f32", vCvtF16F32, kFloat | kDpp);
  add("v_cvt_f32_f16", vCvtF32F16, kFloat | kDpp | kF16Src);
  add("v_pack_b32_f16", vPackB32F16, kIntOps);
  add("v_cvt_pk_fp8_f32", vCvtPkF8<false>, kFloat);
  add("v_cvt_pk_bf8_f32", vCvtPkF8<true>, kFloat);
  add("v_fma_mix_f32", vFmaMix<0>, kFloat);
  add("v_fma_mixlo_f16", vFmaMix<1>, kFloat);
  add("v_fma_mixhi_f16", vFmaMix<2>, kFloat);
  add("v_bitop3_b32", vBitop3<false>, kRaw);
  add("v_bitop3_b16", vBitop3<true>, kRaw);
  add("v_cvt_pk_bf16_f32", vCvtPk16<true>, kFloat);
  add("v_cvt_pk_f16_f32", vCvtPk16<false>, kFloat);
  add("v_maximum3_f32", vop3f<[](float a, float b, float c) { return ieeeMax(ieeeMax(a, b), c); }>, kFloat);
  add("v_minimum3_f32", vop3f<[](float a, float b, float c) { return ieeeMin(ieeeMin(a, b), c); }>, kFloat);
  add("v_permlane16_swap_b32", vPermlaneSwap<16>, kRaw);
  add("v_permlane32_swap_b32", vPermlaneSwap<32>, kRaw);
  add("v_div_scale_f32", vDivScaleF32, kFloat);
  add("v_div_fmas_f32", vDivFmasF32, kFloat);
  add("v_div_fixup_f32", vDivFixupF32, kFloat);

  // --- packed (VOP3P) ---
  add("v_pk_mul_f32", vPkF32<2, [](float a, float b, float) { return a * b; }>, kFloat);
  add("v_pk_add_f32", vPkF32<2, [](float a, float b, float) { return a + b; }>, kFloat);
  add("v_pk_fma_f32", vPkF32<3, [](float a, float b, float c) { return std::fma(a, b, c); }>, kFloat);
  add("v_pk_mov_b32", vPkMovB32, kIntOps);
  add("v_pk_add_u16", vPk16<2, [](uint16_t a, uint16_t b, uint16_t, bool, bool, bool) { return uint16_t(a + b); }>, kIntOps);
  add("v_pk_sub_u16", vPk16<2, [](uint16_t a, uint16_t b, uint16_t, bool, bool, bool) { return uint16_t(a - b); }>, kIntOps);
  add("v_pk_mul_lo_u16", vPk16<2, [](uint16_t a, uint16_t b, uint16_t, bool, bool, bool) { return uint16_t(a * b); }>, kIntOps);
  add("v_pk_lshlrev_b16", vPk16<2, [](uint16_t a, uint16_t b, uint16_t, bool, bool, bool) { return uint16_t(b << (a & 15)); }>, kIntOps);
  add("v_pk_lshrrev_b16", vPk16<2, [](uint16_t a, uint16_t b, uint16_t, bool, bool, bool) { return uint16_t(b >> (a & 15)); }>, kIntOps);
  add("v_pk_ashrrev_i16", vPk16<2, [](uint16_t a, uint16_t b, uint16_t, bool, bool, bool) { return uint16_t(int16_t(b) >> (a & 15)); }>, kIntOps);
  return t;
}

/// VOPC mnemonics: v_cmp[x]_<op>_<type> and v_cmp[x]_class_<type>.
bool bindCompare(Inst &in) {
  static const char *floatOps[] = {"f", "lt", "eq", "le", "gt", "lg", "ge", "o",
                                   "u", "nge", "nlg", "ngt", "nle", "neq",
                                   "nlt", "tru"};
  static const char *intOps[] = {"f", "lt", "eq", "le", "gt", "ne", "ge", "t"};
  static const std::pair<const char *, CmpType> types[] = {
      {"f32", kCmpF32}, {"i32", kCmpI32}, {"u32", kCmpU32}, {"i16", kCmpI16},
      {"u16", kCmpU16}, {"i64", kCmpI64}, {"u64", kCmpU64}, {"f16", kCmpF16},
      {"f64", kCmpF64}};
  std::string m = in.mnemonic;
  bool cmpx = false;
  if (m.rfind("v_cmpx_", 0) == 0)
    cmpx = true, m = m.substr(7);
  else if (m.rfind("v_cmp_", 0) == 0)
    m = m.substr(6);
  else
    return false;
  size_t us = m.rfind('_');
  if (us == std::string::npos)
    return false;
  std::string op = m.substr(0, us), type = m.substr(us + 1);
  int t = -1;
  for (auto [n, ct] : types)
    if (type == n)
      t = ct;
  if (t < 0)
    return false;
  bool isFloat = t == kCmpF32 || t == kCmpF16 || t == kCmpF64;
  int code = -1;
  bool cls = op == "class";
  if (cls) {
    if (t != kCmpF32)
      return false;
    code = 0;
  } else if (isFloat) {
    for (int i = 0; i < 16; ++i)
      if (op == floatOps[i])
        code = i;
  } else {
    for (int i = 0; i < 8; ++i)
      if (op == intOps[i])
        code = i;
  }
  if (code < 0)
    return false;
  uint32_t aux = uint32_t(code) | uint32_t(t) << 4 | uint32_t(cmpx) << 8 |
                 uint32_t(cls) << 9 | 6u << 10 | 6u << 13;
  if (in.sdwa) {
    // v_cmp*_sdwa operands' immediates: clamp, src0_sel, src1_sel.
    if (in.nimm != 3 || in.imm[0] != 0 || in.imm[1] > 6 || in.imm[2] > 6 ||
        t == kCmpI64 || t == kCmpU64 || t == kCmpF64 || isFloat)
      return false;
    aux = (aux & ~(63u << 10)) | uint32_t(in.imm[1]) << 10 |
          uint32_t(in.imm[2]) << 13;
  } else if (in.dpp) {
    return false;
  } else {
    for (int i = 0; i < in.nimm; ++i)
      if (in.imm[i] != 0)
        return false; // clamp on a compare
  }
  in.aux = aux;
  return true;
}

/// Memory mnemonics: global_/flat_/buffer_ loads, stores and atomics, ds_*.
Handler bindMemory(Inst &in) {
  const std::string &m = in.mnemonic;
  static const std::map<std::string, uint32_t> loads = {
      {"ubyte", 1}, {"sbyte", 1 | kMemSigned}, {"ushort", 2},
      {"sshort", 2 | kMemSigned}, {"dword", 4}, {"dwordx2", 8},
      {"dwordx3", 12}, {"dwordx4", 16},
      {"ubyte_d16", 1 | kMemD16}, {"ubyte_d16_hi", 1 | kMemD16 | kMemHi},
      {"sbyte_d16", 1 | kMemD16 | kMemSigned},
      {"sbyte_d16_hi", 1 | kMemD16 | kMemHi | kMemSigned},
      {"short_d16", 2 | kMemD16}, {"short_d16_hi", 2 | kMemD16 | kMemHi}};
  static const std::map<std::string, uint32_t> stores = {
      {"byte", 1}, {"byte_d16_hi", 1 | kMemHi}, {"short", 2},
      {"short_d16_hi", 2 | kMemHi}, {"dword", 4}, {"dwordx2", 8},
      {"dwordx3", 12}, {"dwordx4", 16}};
  static const std::map<std::string, uint32_t> atomics = {
      {"add", 0}, {"sub", 1}, {"smin", 2}, {"smax", 3}, {"umin", 4},
      {"umax", 5}, {"and", 6}, {"or", 7}, {"xor", 8}, {"swap", 9},
      {"add_f32", 10}};
  auto after = [&](const char *prefix) -> std::optional<std::string> {
    size_t n = strlen(prefix);
    if (m.compare(0, n, prefix) == 0)
      return m.substr(n);
    return std::nullopt;
  };
  bool saddr = in.mcName.find("_SADDR") != std::string::npos;
  uint32_t cls = uint32_t(kVmemLoad) << kAuxClassShift;
  for (const char *space : {"global_", "flat_"}) {
    bool flat = space[0] == 'f';
    std::string p = space;
    if (auto r = after((p + "load_").c_str())) {
      auto it = loads.find(*r);
      if (it == loads.end() || in.ndef != 1 || in.def[0].kind != Operand::Vgpr)
        return nullptr;
      in.aux = it->second | (saddr ? kMemSaddr : 0) | (flat ? kMemFlat : 0) | cls;
      return vmemLoadStore;
    }
    if (auto r = after((p + "store_").c_str())) {
      auto it = stores.find(*r);
      if (it == stores.end())
        return nullptr;
      in.aux = it->second | kMemStore | (saddr ? kMemSaddr : 0) |
               (flat ? kMemFlat : 0) | cls;
      return vmemLoadStore;
    }
    if (auto r = after((p + "atomic_").c_str())) {
      auto it = atomics.find(*r);
      if (flat || it == atomics.end())
        return nullptr;
      bool rtn = in.mcName.find("_RTN") != std::string::npos;
      in.aux = (it->second + 1) << 12 | uint32_t(rtn) << 16 |
               (saddr ? kMemSaddr : 0) | cls;
      return globalAtomic;
    }
  }
  if (auto r = after("buffer_")) {
    const std::string &mc = in.mcName;
    uint32_t mode = mc.find("_BOTHEN") != std::string::npos  ? 3
                    : mc.find("_IDXEN") != std::string::npos ? 2
                    : mc.find("_OFFEN") != std::string::npos ? 1
                                                             : 0;
    if (mc.find("_OFFSET") == std::string::npos && mode == 0)
      return nullptr; // addr64 and LDS-DMA forms: not modelled
    if (mc.find("_LDS") != std::string::npos)
      return nullptr;
    if (r->rfind("load_", 0) == 0) {
      auto it = loads.find(r->substr(5));
      if (it == loads.end())
        return nullptr;
      in.aux = it->second | mode << 17 | cls;
      return bufferLoadStore;
    }
    if (r->rfind("store_", 0) == 0) {
      auto it = stores.find(r->substr(6));
      if (it == stores.end())
        return nullptr;
      in.aux = it->second | kMemStore | mode << 17 | cls;
      return bufferLoadStore;
    }
    return nullptr;
  }
  if (m.rfind("ds_", 0) != 0)
    return nullptr;
  uint32_t lds = uint32_t(kLdsOp) << kAuxClassShift;
  static const std::map<std::string, uint32_t> dsLoads = {
      {"ds_read_b32", 4}, {"ds_read_b64", 8}, {"ds_read_b96", 12},
      {"ds_read_b128", 16}, {"ds_read_u8", 1}, {"ds_read_i8", 1 | kMemSigned},
      {"ds_read_u16", 2}, {"ds_read_i16", 2 | kMemSigned},
      {"ds_read_u8_d16", 1 | kMemD16}, {"ds_read_u8_d16_hi", 1 | kMemD16 | kMemHi},
      {"ds_read_i8_d16", 1 | kMemD16 | kMemSigned},
      {"ds_read_i8_d16_hi", 1 | kMemD16 | kMemHi | kMemSigned},
      {"ds_read_u16_d16", 2 | kMemD16}, {"ds_read_u16_d16_hi", 2 | kMemD16 | kMemHi}};
  static const std::map<std::string, uint32_t> dsStores = {
      {"ds_write_b8", 1}, {"ds_write_b16", 2}, {"ds_write_b32", 4},
      {"ds_write_b64", 8}, {"ds_write_b96", 12}, {"ds_write_b128", 16},
      {"ds_write_b8_d16_hi", 1 | kMemHi}, {"ds_write_b16_d16_hi", 2 | kMemHi}};
  static const std::map<std::string, uint32_t> dsAtomics = {
      {"add_u32", 0}, {"sub_u32", 1}, {"min_i32", 2}, {"max_i32", 3},
      {"min_u32", 4}, {"max_u32", 5}, {"and_b32", 6}, {"or_b32", 7},
      {"xor_b32", 8}, {"wrxchg_rtn_b32", 9 | 1u << 12}, {"add_f32", 10},
      {"max_f32", 11}, {"min_f32", 12}};
  // gds and other trailing immediates must be 0.
  auto noGds = [&](int from) {
    for (int i = from; i < in.nimm; ++i)
      if (in.imm[i])
        return false;
    return true;
  };
  if (auto it = dsLoads.find(m); it != dsLoads.end()) {
    if (!noGds(1))
      return nullptr;
    in.aux = it->second | lds;
    return dsRead;
  }
  if (auto it = dsStores.find(m); it != dsStores.end()) {
    if (!noGds(1))
      return nullptr;
    in.aux = it->second | lds;
    return dsWrite;
  }
  for (auto [name, bytes, st64, read] :
       std::initializer_list<std::tuple<const char *, uint32_t, bool, bool>>{
           {"ds_read2_b32", 4, false, true}, {"ds_read2_b64", 8, false, true},
           {"ds_read2st64_b32", 4, true, true},
           {"ds_read2st64_b64", 8, true, true},
           {"ds_write2_b32", 4, false, false},
           {"ds_write2_b64", 8, false, false},
           {"ds_write2st64_b32", 4, true, false},
           {"ds_write2st64_b64", 8, true, false}})
    if (m == name) {
      if (!noGds(2))
        return nullptr;
      in.aux = bytes | uint32_t(st64) << 8 | lds;
      return read ? dsRead2 : dsWrite2;
    }
  if (m == "ds_swizzle_b32" && noGds(1)) {
    in.aux = lds;
    return dsSwizzle;
  }
  if (m == "ds_bpermute_b32" && noGds(1)) {
    in.aux = lds;
    return dsPermute<true>;
  }
  if (m == "ds_permute_b32" && noGds(1)) {
    in.aux = lds;
    return dsPermute<false>;
  }
  std::string op = m.substr(3);
  bool rtn = false;
  if (size_t at = op.find("rtn_"); at != std::string::npos && op != "wrxchg_rtn_b32") {
    op.erase(at, 4);
    rtn = true;
  }
  if (auto it = dsAtomics.find(op); it != dsAtomics.end() && noGds(1)) {
    in.aux = it->second | uint32_t(rtn) << 12 | lds;
    return dsAtomic;
  }
  return nullptr;
}

/// MFMA mnemonics (v_mfma_*): the shape from AmdMfma; cbsz / abid / blgp
/// broadcasts are not modelled.
Handler bindMfma(Inst &in) {
  if (in.mnemonic.rfind("v_mfma_", 0) != 0)
    return nullptr;
  if (in.nsrc != 3 || in.ndef != 1 || in.src[0].kind != Operand::Vgpr ||
      in.src[1].kind != Operand::Vgpr || in.def[0].kind != Operand::Vgpr)
    return nullptr;
  for (int i = 0; i < in.nimm; ++i)
    if (in.imm[i] != 0)
      return nullptr; // cbsz, abid, blgp
  MfmaShape s;
  if (!mfmaShape(in.mnemonic, in.src[0].dwords, false, s))
    return nullptr;
  if (in.def[0].dwords != mfmaOutputDwords(s) ||
      in.src[1].dwords != in.src[0].dwords ||
      (in.src[2].kind == Operand::Vgpr &&
       in.src[2].dwords != mfmaOutputDwords(s)))
    return nullptr;
  in.aux = packShape(s);
  return vMfma;
}

/// SDWA forms of the VOP1 / VOP2 handlers: immediates clamp, [omod,]
/// dst_sel, dst_unused, src0_sel[, src1_sel]; operands moved to the
/// scratch rows sdwaRun stages them in.
Handler bindSdwa(Inst &in, const Binding &b) {
  // One VGPR result, or with a carry-out (VCC) for v_add_co_u32 & co.
  if (!(b.flags & kDpp) || in.sdwa == false || in.ndef < 1 || in.ndef > 2 ||
      in.def[0].kind != Operand::Vgpr || in.nsrc < 1 || in.nsrc > 2 ||
      (in.ndef == 2 && in.def[1].kind != Operand::Sgpr))
    return nullptr;
  bool vop2 = in.nsrc == 2;
  bool isFloat = b.flags & kFloat;
  int n = in.nimm, i = 0;
  if (n != (vop2 ? 5 : 4) && n != (vop2 ? 6 : 5))
    return nullptr;
  int64_t clamp = in.imm[i++];
  int64_t omod = n == (vop2 ? 6 : 5) ? in.imm[i++] : 0;
  int64_t dstSel = in.imm[i++], unused = in.imm[i++], s0 = in.imm[i++];
  int64_t s1 = vop2 ? in.imm[i++] : 6;
  if (dstSel > 6 || unused > 2 || s0 > 6 || s1 > 6)
    return nullptr;
  if (!isFloat && (clamp || omod))
    return nullptr;
  if (isFloat && !(b.flags & kF16Src) && (s0 != 6 || s1 != 6))
    return nullptr; // f32 operations on parts of registers: not modelled
  uint32_t aux = 0;
  if (isFloat) {
    if (clamp)
      aux |= kAuxClamp;
    aux |= uint32_t(omod & 3) << kAuxOmodShift;
  }
  for (int k = 0; k < in.nsrc; ++k) {
    uint8_t mods = in.src[k].mods;
    if (!isFloat && (mods & ~kModSext))
      return nullptr;
    if (isFloat && (mods & ~(kModNeg | kModAbs)))
      return nullptr;
    in.orig[k] = in.src[k];
    in.src[k] = Operand();
    in.src[k].kind = Operand::Vgpr;
    in.src[k].index = uint16_t(kSdwaRow + k);
    in.src[k].mods = isFloat ? mods : 0;
  }
  in.orig[2] = in.def[0];
  in.def[0].index = uint16_t(kSdwaRow + 2);
  in.aux = aux | uint32_t(dstSel) << 8 | uint32_t(unused) << 11 |
           uint32_t(s0) << 13 | uint32_t(s1) << 16 | uint32_t(!isFloat) << 19 |
           b.sdwaIndex << 20;
  return sdwaRun;
}

bool sourcesModelled(const Inst &in) {
  for (int i = 0; i < in.nsrc; ++i)
    if (in.src[i].kind == Operand::None)
      return false;
  for (int i = 0; i < in.ndef; ++i)
    if (in.def[i].kind != Operand::Vgpr && in.def[i].kind != Operand::Sgpr)
      return false;
  return true;
}

} // namespace

Handler bindInstruction(Inst &in) {
  static const std::unordered_map<std::string, Binding> table = makeTable();
  if (!sourcesModelled(in))
    return nullptr;
  const std::string &m = in.mnemonic;
  if (m.rfind("v_cmp", 0) == 0)
    return bindCompare(in) ? vCmp : nullptr;
  if (Handler h = bindMemory(in))
    return h;
  if (m.rfind("v_mfma_", 0) == 0)
    return bindMfma(in);
  if (m.rfind("s_load_", 0) == 0 || m.rfind("s_buffer_load_", 0) == 0) {
    auto it = table.find(m);
    if (it == table.end())
      return nullptr;
    const std::string &mc = in.mcName;
    uint32_t form = mc.find("_SGPR_IMM") != std::string::npos ? 2
                    : mc.find("_SGPR") != std::string::npos   ? 1
                    : mc.find("_IMM") != std::string::npos    ? 0
                                                              : 3;
    if (form == 3)
      return nullptr;
    in.aux = it->second.aux | form << 8 | uint32_t(kSmemOp) << kAuxClassShift;
    return it->second.run;
  }
  auto it = table.find(m);
  if (it == table.end())
    return nullptr;
  const Binding &b = it->second;
  if (in.sdwa)
    return bindSdwa(in, b);
  if (in.dpp && !(b.flags & kDpp))
    return nullptr;
  if (m.rfind("v_", 0) == 0 && m != "v_readfirstlane_b32" &&
      m != "v_readlane_b32" &&
      (in.ndef < 1 || in.def[0].kind != Operand::Vgpr))
    return nullptr;
  if ((m == "v_permlane16_swap_b32" || m == "v_permlane32_swap_b32") &&
      (in.ndef != 2 || in.def[1].kind != Operand::Vgpr || in.vop3))
    return nullptr; // the e64 form's fi / bound_ctrl: not modelled
  if (m.rfind("v_bitop3_", 0) == 0 && (in.nimm != 1 || in.nsrc != 3))
    return nullptr;
  in.aux = b.aux;
  if (b.flags & kFloat) {
    if (in.dpp) {
      if (in.nimm != 4)
        return nullptr;
    } else {
      if (in.nimm >= 1 && in.imm[0])
        in.aux |= kAuxClamp;
      if (in.nimm >= 2)
        in.aux |= uint32_t(in.imm[1] & 3) << kAuxOmodShift;
      if (in.nimm > 2)
        return nullptr;
    }
  } else if (b.flags & kIntOps) {
    if (in.dpp) {
      if (in.nimm != 4)
        return nullptr;
    } else {
      for (int i = 0; i < in.nimm; ++i)
        if (in.imm[i])
          return nullptr; // clamp / op_sel on integer ops: not modelled
    }
  }
  // Source modifiers only where the handler applies them.
  if (!(b.flags & kFloat) && m != "v_cndmask_b32" && m != "v_pk_mov_b32" &&
      m.rfind("v_pk_", 0) != 0 && m != "v_pack_b32_f16")
    for (int i = 0; i < in.nsrc; ++i)
      if (in.src[i].mods)
        return nullptr;
  return b.run;
}

std::set<std::string> unmodelledInstructions(const CodeObject &code) {
  std::set<std::string> seen, out;
  for (const Inst &in : code.insts)
    if (!in.run && seen.insert(in.mnemonic).second)
      out.insert(in.mnemonic + " at " + hex(in.address) + ": " + in.text);
  return out;
}

//===----------------------------------------------------------------------===//
// Dispatch
//===----------------------------------------------------------------------===//

namespace {

using namespace llvm::amdhsa;

template <typename T> uint32_t field(uint32_t word, T mask, T shift) {
  return (word & uint32_t(mask)) >> uint32_t(shift);
}

/// One workgroup: its waves and LDS, run to completion.
class Workgroup {
public:
  Workgroup(const CodeObject &code, const Kernel &kernel,
            const DispatchConfig &config, Memory &memory,
            std::vector<std::unique_ptr<Wave>> &waves)
      : waves(waves) {
    x.code = &code;
    x.kernel = &kernel;
    x.config = &config;
    x.memory = &memory;
    x.ocp = code.chip == "gfx950";
    x.gfx90a = code.chip == "gfx90a";
    x.flushF32 = field(kernel.rsrc1, COMPUTE_PGM_RSRC1_FLOAT_DENORM_MODE_32,
                       COMPUTE_PGM_RSRC1_FLOAT_DENORM_MODE_32_SHIFT) == 0;
    x.flushF16 = field(kernel.rsrc1, COMPUTE_PGM_RSRC1_FLOAT_DENORM_MODE_16_64,
                       COMPUTE_PGM_RSRC1_FLOAT_DENORM_MODE_16_64_SHIFT) == 0;
    static const char *trace = getenv("ATTNSIM_TRACE");
    x.trace = trace != nullptr;
    x.traceValues = trace && atoi(trace) >= 2;
    ldsBytes = kernel.groupSegmentBytes + config.dynamicLds;
    if (const char *schedule = getenv("ATTNSIM_SCHEDULE"))
      if (strncmp(schedule, "random", 6) == 0)
        scheduleSeed = schedule[6] == ':'
                           ? std::max(1ull, strtoull(schedule + 7, nullptr, 10))
                           : 1;
    const char *max = getenv("ATTNSIM_MAX_WAVE_INSTRUCTIONS");
    maxInstructions = max ? strtoull(max, nullptr, 10) : 200000000ull;
    const char *race = getenv("ATTNSIM_RACECHECK");
    if (race && *race && *race != '0')
      x.races = &shadow;
  }

  void run(uint32_t gx, uint32_t gy, uint32_t gz);
  DispatchStats stats() const { return x.stats; }

private:
  void init(Wave &w, unsigned id, uint32_t threads);
  /// Runs `w` until it ends, reaches s_barrier or has executed `quantum`
  /// instructions.
  void runWave(Wave &w, uint64_t quantum = ~0ull);
  std::vector<std::unique_ptr<Wave>> &waves;
  std::vector<uint8_t> lds;
  uint32_t ldsBytes = 0;
  uint64_t scheduleSeed = 0; // ATTNSIM_SCHEDULE=random:SEED
  uint64_t maxInstructions = 0; // per wave: more is a hang
  Exec::LdsShadow shadow;
  Exec x;
};

void Workgroup::init(Wave &w, unsigned id, uint32_t threads) {
  const Kernel &k = *x.kernel;
  const DispatchConfig &c = *x.config;
  // Registers the dispatch does not initialize hold a poison pattern (a
  // NaN as f32, a wild address as an integer), so a kernel that reads one
  // shows it instead of silently reusing the previous workgroup's values.
  std::fill(w.s, w.s + kScalarRegs, kPoison);
  std::fill(w.v.get(), w.v.get() + size_t(kVectorRows) * kLanes, kPoison);
  w.s[kM0] = 0;
  w.setVcc(0);
  w.scc = false;
  w.ended = w.atBarrier = false;
  w.executed = 0;
  w.id = id;
  w.pc = k.entry;
  w.vm.clear();
  w.lgkm.clear();
  std::fill(w.pendV.begin(), w.pendV.end(), 0);
  std::memset(w.pendS, 0, sizeof w.pendS);
  w.pending = 0;
  uint32_t first = id * kLanes;
  uint32_t n = std::min<uint32_t>(kLanes, threads - first);
  w.lanes = n == kLanes ? ~0ull : (1ull << n) - 1;
  w.setExec(w.lanes);
  // User SGPRs (AMDGPUUsage, "Initial Kernel Execution State").
  unsigned s = 0;
  uint16_t props = k.codeProperties;
  auto has = [&](uint16_t bit) { return (props & bit) != 0; };
  auto put64 = [&](uint64_t v) {
    w.s[s++] = uint32_t(v);
    w.s[s++] = uint32_t(v >> 32);
  };
  if (has(KERNEL_CODE_PROPERTY_ENABLE_SGPR_PRIVATE_SEGMENT_BUFFER))
    s += 4; // a null V#: the kernels have no scratch
  if (has(KERNEL_CODE_PROPERTY_ENABLE_SGPR_DISPATCH_PTR))
    put64(c.dispatchPacket);
  if (has(KERNEL_CODE_PROPERTY_ENABLE_SGPR_QUEUE_PTR))
    put64(0);
  if (has(KERNEL_CODE_PROPERTY_ENABLE_SGPR_KERNARG_SEGMENT_PTR))
    put64(c.kernarg);
  if (has(KERNEL_CODE_PROPERTY_ENABLE_SGPR_DISPATCH_ID))
    put64(0);
  if (has(KERNEL_CODE_PROPERTY_ENABLE_SGPR_FLAT_SCRATCH_INIT))
    put64(0);
  if (has(KERNEL_CODE_PROPERTY_ENABLE_SGPR_PRIVATE_SEGMENT_SIZE))
    w.s[s++] = 0;
  // Preloaded kernel arguments (gfx940+) follow the other user SGPRs.
  uint32_t preload = field(uint32_t(k.kernargPreload),
                           KERNARG_PRELOAD_SPEC_LENGTH,
                           KERNARG_PRELOAD_SPEC_LENGTH_SHIFT);
  uint32_t preloadOffset = field(uint32_t(k.kernargPreload),
                                 KERNARG_PRELOAD_SPEC_OFFSET,
                                 KERNARG_PRELOAD_SPEC_OFFSET_SHIFT);
  if (preload) {
    std::memcpy(&w.s[s],
                reinterpret_cast<const void *>(c.kernarg + preloadOffset * 4),
                preload * 4);
    s += preload;
  }
  s = field(k.rsrc2, COMPUTE_PGM_RSRC2_GFX6_GFX120_USER_SGPR_COUNT,
            COMPUTE_PGM_RSRC2_GFX6_GFX120_USER_SGPR_COUNT_SHIFT);
  // System SGPRs.
  if (k.rsrc2 & COMPUTE_PGM_RSRC2_ENABLE_SGPR_WORKGROUP_ID_X)
    w.s[s++] = x.group[0];
  if (k.rsrc2 & COMPUTE_PGM_RSRC2_ENABLE_SGPR_WORKGROUP_ID_Y)
    w.s[s++] = x.group[1];
  if (k.rsrc2 & COMPUTE_PGM_RSRC2_ENABLE_SGPR_WORKGROUP_ID_Z)
    w.s[s++] = x.group[2];
  if (k.rsrc2 & COMPUTE_PGM_RSRC2_ENABLE_SGPR_WORKGROUP_INFO)
    w.s[s++] = uint32_t((threads + kLanes - 1) / kLanes);
  if (k.rsrc2 & COMPUTE_PGM_RSRC2_ENABLE_PRIVATE_SEGMENT)
    w.s[s++] = 0;
  // Work-item IDs: packed into v0 (X | Y << 10 | Z << 20) on gfx90a and
  // gfx940+, else v0, v1, v2.
  uint32_t *v0 = w.vreg(0), *v1 = w.vreg(1), *v2 = w.vreg(2);
  uint32_t ids = field(k.rsrc2, COMPUTE_PGM_RSRC2_ENABLE_VGPR_WORKITEM_ID,
                       COMPUTE_PGM_RSRC2_ENABLE_VGPR_WORKITEM_ID_SHIFT);
  for (unsigned l = 0; l < kLanes; ++l) {
    uint32_t t = first + l;
    uint32_t tx = t % c.block[0], ty = t / c.block[0] % c.block[1],
             tz = t / (c.block[0] * c.block[1]);
    if (t >= threads)
      tx = ty = tz = 0;
    v0[l] = tx | (ids >= 1 ? ty << 10 : 0) | (ids >= 2 ? tz << 20 : 0);
    (void)v1;
    (void)v2;
  }
}

/// ATTNSIM_TRACE=2: each result after the instruction (scalars, and lane
/// 0 of vector registers), and SCC.
void traceResults(Exec &x, const Inst &in) {
  std::string line;
  char b[64];
  for (int i = 0; i < in.ndef; ++i) {
    const Operand &o = in.def[i];
    for (unsigned r = 0; r < o.dwords; ++r) {
      uint32_t v = o.kind == Operand::Sgpr ? x.w->s[o.index + r]
                                           : x.w->vreg(o.index + r)[0];
      snprintf(b, sizeof b, " %s%u=0x%x", o.kind == Operand::Sgpr ? "s" : "v[0]",
               o.index + r, v);
      line += b;
    }
  }
  fprintf(stderr, "attnsim:   ->%s scc=%d\n", line.c_str(), int(x.w->scc));
}

void Workgroup::runWave(Wave &w, uint64_t quantum) {
  uint64_t limit = maxInstructions;
  x.w = &w;
  const CodeObject &code = *x.code;
  uint64_t executed = 0;
  while (!w.ended && !w.atBarrier && quantum-- > 0) {
    const Inst *in = code.at(w.pc);
    if (!in) {
      Inst where;
      where.address = w.pc;
      where.text = "(no instruction)";
      x.fault(kIllegalAddress, "the program counter left the kernel's code",
              where);
    }
    if (++w.executed > limit)
      x.fault(kLaunchTimeout,
              "more than " + std::to_string(limit) +
                  " instructions in one wave (a hang?); "
                  "ATTNSIM_MAX_WAVE_INSTRUCTIONS raises the limit",
              *in);
    if (!in->run)
      x.fault(kIllegalInstruction,
              "instruction '" + in->mnemonic + "' is not modelled (" +
                  in->mcName + ")",
              *in);
    if (w.pending) {
      MemClass c = memClass(*in);
      checkPending(x, *in,
                   c == kVmemLoad ? &w.vm : c == kLdsOp ? &w.lgkm : nullptr);
    }
    if (x.trace)
      fprintf(stderr, "attnsim: wg (%u,%u,%u) wave %u exec %016llx %s\n",
              x.group[0], x.group[1], x.group[2], w.id,
              static_cast<unsigned long long>(w.exec()),
              describeInst(*in).c_str());
    x.nextPc = w.pc + in->size;
    in->run(x, *in);
    w.pc = x.nextPc;
    if (x.trace && x.traceValues)
      traceResults(x, *in);
    if (in->mnemonic[0] == 'v' && in->mnemonic[1] == '_')
      x.stats.laneInstructions += unsigned(std::popcount(w.exec()));
    ++x.stats.byClass[in->klass];
    ++executed;
  }
  x.stats.waveInstructions += executed;
}

void Workgroup::run(uint32_t gx, uint32_t gy, uint32_t gz) {
  const DispatchConfig &c = *x.config;
  x.group[0] = gx;
  x.group[1] = gy;
  x.group[2] = gz;
  uint32_t threads = c.block[0] * c.block[1] * c.block[2];
  unsigned nwaves = (threads + kLanes - 1) / kLanes;
  while (waves.size() < nwaves)
    waves.push_back(std::make_unique<Wave>());
  // LDS starts undefined; a fixed pattern keeps runs reproducible.
  lds.assign(ldsBytes + 16, 0xCD);
  x.lds = lds.data();
  x.ldsBytes = ldsBytes;
  for (unsigned i = 0; i < nwaves; ++i)
    init(*waves[i], i, threads);
  if (x.races) {
    shadow.writeEpoch.assign(ldsBytes + 16, 0);
    shadow.readEpoch.assign(ldsBytes + 16, 0);
    shadow.writer.assign(ldsBytes + 16, 0);
    shadow.readers.assign(ldsBytes + 16, 0);
    shadow.writeInst.assign(ldsBytes + 16, nullptr);
    shadow.readInst.assign(ldsBytes + 16, nullptr);
    shadow.epoch = 1;
  }
  // Random interleavings: each workgroup its own stream from the seed.
  std::mt19937_64 rng(scheduleSeed * 0x9e3779b97f4a7c15ull ^
                      (uint64_t(gx) << 40 | uint64_t(gy) << 20 | gz));
  std::vector<unsigned> runnable;
  while (true) {
    if (scheduleSeed) {
      // One wave at a time for a random number of instructions.
      runnable.clear();
      for (unsigned i = 0; i < nwaves; ++i)
        if (!waves[i]->ended && !waves[i]->atBarrier)
          runnable.push_back(i);
      if (!runnable.empty()) {
        runWave(*waves[runnable[rng() % runnable.size()]], 1 + rng() % 48);
        continue;
      }
    } else {
      for (unsigned i = 0; i < nwaves; ++i)
        if (!waves[i]->ended && !waves[i]->atBarrier)
          runWave(*waves[i]);
    }
    // s_barrier: every wave that has not ended is waiting.
    bool live = false;
    for (unsigned i = 0; i < nwaves; ++i)
      live |= !waves[i]->ended;
    if (!live)
      break;
    for (unsigned i = 0; i < nwaves; ++i)
      waves[i]->atBarrier = false;
    ++shadow.epoch;
  }
  ++x.stats.workgroups;
}

} // namespace

uint32_t ldsLimit(const std::string &chip) {
  return chip == "gfx950" ? 160 * 1024 : 64 * 1024;
}

DispatchStats dispatch(const CodeObject &code, const Kernel &kernel,
                       const DispatchConfig &config, Memory &memory) {
  uint32_t threads = config.block[0] * config.block[1] * config.block[2];
  if (threads == 0 || threads > kernel.maxFlatWorkgroupSize)
    throw Fault(kLaunchFailed,
                "kernel " + kernel.name + ": workgroup of " +
                    std::to_string(threads) + " work-items (its maximum is " +
                    std::to_string(kernel.maxFlatWorkgroupSize) + ")");
  for (int i = 0; i < 3; ++i)
    if (kernel.reqdWorkgroupSize[i] &&
        config.block[i] != kernel.reqdWorkgroupSize[i])
      throw Fault(kLaunchFailed,
                  "kernel " + kernel.name + ": workgroup size differs from "
                                            "its reqd_workgroup_size");
  uint64_t lds = uint64_t(kernel.groupSegmentBytes) + config.dynamicLds;
  if (lds > ldsLimit(code.chip))
    throw Fault(kLaunchFailed, "kernel " + kernel.name + " needs " +
                                   std::to_string(lds) + " bytes of LDS (" +
                                   code.chip + " has " +
                                   std::to_string(ldsLimit(code.chip)) + ")");
  if (kernel.privateSegmentBytes)
    throw Fault(kLaunchFailed, "kernel " + kernel.name +
                                   " uses scratch memory, which the "
                                   "simulator does not model");
  if (kernel.wavefrontSize && kernel.wavefrontSize != 64)
    throw Fault(kLaunchFailed, "kernel " + kernel.name + " is not wave64");
  if (field(kernel.rsrc1, COMPUTE_PGM_RSRC1_FLOAT_ROUND_MODE_32,
            COMPUTE_PGM_RSRC1_FLOAT_ROUND_MODE_32_SHIFT) != 0)
    throw Fault(kLaunchFailed, "kernel " + kernel.name +
                                   ": f32 rounding modes other than round to "
                                   "nearest even are not modelled");
  uint64_t groups = uint64_t(config.grid[0]) * config.grid[1] * config.grid[2];
  unsigned workers = std::max(
      1u, std::min<unsigned>(std::thread::hardware_concurrency(),
                             unsigned(std::min<uint64_t>(groups, 64))));
  if (const char *env = getenv("ATTNSIM_THREADS"))
    workers = std::max(1, atoi(env));
  std::atomic<uint64_t> next{0};
  std::mutex mutex;
  std::optional<Fault> firstFault;
  DispatchStats total;
  auto work = [&] {
    std::vector<std::unique_ptr<Wave>> waves;
    Workgroup wg(code, kernel, config, memory, waves);
    while (true) {
      uint64_t i = next.fetch_add(1);
      if (i >= groups)
        break;
      {
        std::lock_guard<std::mutex> lock(mutex);
        if (firstFault)
          break;
      }
      uint32_t gx = uint32_t(i % config.grid[0]);
      uint32_t gy = uint32_t(i / config.grid[0] % config.grid[1]);
      uint32_t gz = uint32_t(i / (uint64_t(config.grid[0]) * config.grid[1]));
      try {
        wg.run(gx, gy, gz);
      } catch (const Fault &f) {
        std::lock_guard<std::mutex> lock(mutex);
        if (!firstFault)
          firstFault = f;
        break;
      }
    }
    DispatchStats s = wg.stats();
    std::lock_guard<std::mutex> lock(mutex);
    total.waveInstructions += s.waveInstructions;
    total.laneInstructions += s.laneInstructions;
    total.mfmaFlops += s.mfmaFlops;
    total.workgroups += s.workgroups;
    for (int c = 0; c < kInstClasses; ++c)
      total.byClass[c] += s.byClass[c];
  };
  if (workers <= 1) {
    work();
  } else {
    std::vector<std::thread> pool;
    for (unsigned i = 0; i < workers; ++i)
      pool.emplace_back(work);
    for (std::thread &t : pool)
      t.join();
  }
  if (firstFault)
    throw *firstFault;
  return total;
}

} // namespace attn::sim::amd
