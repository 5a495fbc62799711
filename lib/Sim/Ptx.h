//===- Ptx.h - PTX programs as the simulator executes them ----------------===//
//
// A PTX module parsed once into flat instruction arrays (one per kernel),
// with registers numbered, labels and variables resolved, and each
// instruction's opcode and modifiers decoded, so execution is a switch.
// Semantics are NVIDIA's PTX ISA (version 8.x); the sections are cited
// where each instruction is executed (PtxMachine.cpp).
//
//===----------------------------------------------------------------------===//
#ifndef ATTN_SIM_PTX_H
#define ATTN_SIM_PTX_H

#include <cstdint>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace attn::sim::ptx {

/// A malformed program or an instruction the simulator does not model.
struct ParseError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

/// Fundamental types (ISA 5.2.1) plus the packed and narrow float formats.
enum class Type : uint8_t {
  None, Pred,
  B8, B16, B32, B64, B128,
  U8, U16, U32, U64,
  S8, S16, S32, S64,
  F16, F16x2, BF16, BF16x2, TF32, F32, F64,
  E4M3, E5M2, E4M3x2, E5M2x2, S4, U4,
};
/// Width in bits (1 for predicates, 0 for None).
inline int typeBits(Type t) {
  static constexpr uint8_t bits[] = {0,  1,  8,  16, 32, 64, 128, 8,  16, 32,
                                     64, 8,  16, 32, 64, 16, 32,  16, 32, 32,
                                     32, 64, 8,  8,  16, 16, 4,   4};
  return bits[static_cast<int>(t)];
}
bool isFloat(Type t);
bool isSigned(Type t);
const char *typeName(Type t);

/// State spaces (ISA 5.1).
enum class Space : uint8_t { Generic, Global, Shared, SharedCluster, Local,
                             Param, Const };

/// Generic addresses of the shared and local windows: above any x86-64
/// user-space pointer, so global (host) addresses pass through unchanged.
constexpr uint64_t kSharedWindow = 1ull << 48;
constexpr uint64_t kLocalWindow = 2ull << 48;
/// Kernel parameters in the generic space (cvta.param, sm_70+), e.g. a
/// __grid_constant__ tensor map passed by value.
constexpr uint64_t kParamWindow = 3ull << 48;
constexpr uint64_t kWindowSize = 1ull << 32;
/// Shared::cluster addresses (ISA 5.1.4: the CTA's .shared::cta window lies
/// inside the cluster's .shared::cluster window): the low 24 bits are the
/// offset in a CTA's shared memory, the bits above name the CTA as its
/// %cluster_ctarank + 1, and 0 there is the executing CTA itself, so every
/// shared::cta address is also the shared::cluster address of the same byte.
/// mapa makes the other CTAs' addresses; a generic address adds
/// kSharedWindow to either.
constexpr uint32_t kClusterRankShift = 24;
constexpr uint32_t kCtaOffsetMask = (1u << kClusterRankShift) - 1;

enum class Special : uint8_t {
  TidX, TidY, TidZ, NtidX, NtidY, NtidZ, CtaidX, CtaidY, CtaidZ,
  NctaidX, NctaidY, NctaidZ, LaneId, WarpId, NWarpId, SmId, NSmId,
  Clock, Clock64, GlobalTimer, LanemaskEq, LanemaskLt, LanemaskLe,
  LanemaskGt, LanemaskGe, DynamicSmemSize, TotalSmemSize,
  ClusterCtaRank, ClusterNCtaRank, ClusterIdX, ClusterIdY, ClusterIdZ,
  NClusterIdX, NClusterIdY, NClusterIdZ, ClusterCtaIdX, ClusterCtaIdY,
  ClusterCtaIdZ, ClusterNCtaIdX, ClusterNCtaIdY, ClusterNCtaIdZ,
  IsExplicitCluster, GridId,
};

struct Operand {
  enum Kind : uint8_t { None, Reg, Imm, Spec, Vec, Addr, Label, Sink };
  Kind kind = None;
  bool negate = false;     // !%p
  Special special{};
  uint32_t reg = 0;        // Reg; Addr base (kNoReg: absolute)
  uint32_t vecBegin = 0;   // Vec: operands pool[vecBegin, +vecCount)
  uint32_t vecCount = 0;
  uint64_t imm = 0;        // Imm bits (floats as their bits); Addr offset;
                           // Label: instruction index
  /// Addr of a variable: the space its symbol lives in (Shared, Param,
  /// Global, Local), else Generic for a register base.
  Space symbolSpace = Space::Generic;
};
constexpr uint32_t kNoReg = ~0u;

enum class Op : uint16_t {
  // Integer and float arithmetic
  Add, Sub, Mul, Mad, Fma, Div, Rem, Abs, Neg, Min, Max, Sad, Mul24, Mad24,
  Popc, Clz, Bfind, Brev, Bfe, Bfi, Prmt, Shf, Lop3, Dp4a, Dp2a,
  Rcp, Sqrt, Rsqrt, Sin, Cos, Lg2, Ex2, Tanh, Copysign, Testp,
  And, Or, Xor, Not, Cnot, Shl, Shr, Setp, Set, Selp, Slct, Mov, Cvt, Cvta,
  // Memory
  Ld, St, LdU, Prefetch, Atom, Red, CpAsync, CpAsyncCommit, CpAsyncWait,
  CpAsyncWaitAll, CpAsyncMbarrierArrive, CpBulkTensor, CpBulk,
  CpBulkCommit, CpBulkWait, Isspacep, Mapa, Getctarank,
  // Control
  Bra, Ret, Exit, Trap, Call, BarSync, BarArrive, BarRed, BarWarpSync,
  BarClusterArrive, BarClusterWait, Membar, Fence, Nop, Brkpt, Pmevent, Nanosleep, Griddep, Setmaxnreg,
  // Warp collectives
  Shfl, Vote, Match, Redux, Elect, Activemask, Ldmatrix, Stmatrix, Mma,
  // mbarrier (ISA 9.7.13.15)
  MbarInit, MbarInval, MbarArrive, MbarArriveDrop, MbarExpectTx,
  MbarCompleteTx, MbarTestWait, MbarTryWait, MbarPendingCount,
  // wgmma (ISA 9.7.15)
  WgFence, WgMma, WgCommit, WgWait,
};

/// What an instruction occupies, for the performance counters.
enum class InstrClass : uint8_t {
  IntAlu, FpAlu, HalfAlu, Sfu, Convert, Move, Compare, Control,
  GlobalMemory, SharedMemory, OtherMemory, Atomic, AsyncCopy, Mbarrier,
  Barrier, WarpShuffle, Ldmatrix, TensorCore, Other,
};
constexpr int kInstrClasses = static_cast<int>(InstrClass::Other) + 1;
const char *className(InstrClass c);
InstrClass classify(const struct Instr &in);

/// Decoded modifiers; which apply depends on the opcode.
struct Instr {
  Op op{};
  InstrClass cls = InstrClass::Other;
  Type type = Type::None;  // the instruction type (dst for cvt)
  Type type2 = Type::None; // cvt source, mma/wgmma A/B type
  Type type3 = Type::None; // mma C type, wgmma D type
  Type typeB = Type::None; // mma/wgmma B type
  Space space = Space::Generic;
  uint8_t vec = 1;         // .v2 / .v4 / .x1/.x2/.x4 count
  uint8_t cmp = 0;         // setp/set comparison (Cmp)
  uint8_t boolOp = 0;      // setp .and/.or/.xor (0: none)
  uint8_t round = 0;       // Round
  uint8_t mode = 0;        // opcode-specific sub-mode (shfl mode, atom op,
                           // vote mode, mul lo/hi/wide, ...)
  bool ftz = false, sat = false, approx = false, nanMode = false,
       trans = false, relu = false, uni = false, satfinite = false,
       xorsign = false, abs = false;
  uint16_t m = 0, n = 0, k = 0;            // mma / wgmma shape
  uint8_t layoutA = 0, layoutB = 0;        // mma .row(0)/.col(1)
  uint8_t dims = 0;                        // cp.async.bulk.tensor rank
  uint8_t bulkToGlobal = 0;                // tensor copy direction
  bool multicast = false;                  // .multicast::cluster (ctaMask)
  uint32_t guard = kNoReg;                 // @%p / @!%p
  bool guardNegate = false;
  uint8_t nops = 0;
  Operand ops[8];
  uint32_t line = 0;                       // source line (1-based)
};

enum Cmp : uint8_t { CmpEq, CmpNe, CmpLt, CmpLe, CmpGt, CmpGe, CmpLo, CmpLs,
                     CmpHi, CmpHs, CmpEqu, CmpNeu, CmpLtu, CmpLeu, CmpGtu,
                     CmpGeu, CmpNum, CmpNan };
enum Round : uint8_t { RoundNone, RoundRn, RoundRz, RoundRm, RoundRp,
                       RoundRna, RoundRni, RoundRzi, RoundRmi, RoundRpi,
                       RoundRs };

struct Param {
  std::string name;
  uint32_t offset = 0, size = 0;
};

struct Function {
  std::string name;
  bool isKernel = false;
  std::vector<Param> params;
  uint32_t paramBytes = 0;
  std::vector<Instr> code;
  std::vector<Operand> pool;        // vector operands' elements
  std::vector<std::string> lines;   // source text by Instr::line - firstLine
  uint32_t firstLine = 0;
  uint32_t numRegs = 0;
  std::vector<uint8_t> regBits;     // declared width of each register
  std::vector<std::string> regNames;
  uint32_t staticShared = 0;        // bytes of .shared variables
  uint32_t dynamicSharedOffset = 0; // where extern .shared begins
  uint32_t localBytes = 0;
  uint32_t maxThreads[3] = {0, 0, 0};
  // Cluster directives (ISA 11.4): .reqnctapercluster (0: none),
  // .explicitcluster, .maxclusterrank (0: none).
  uint32_t reqCluster[3] = {0, 0, 0};
  bool explicitCluster = false;
  uint32_t maxClusterRank = 0;
  const std::string &sourceLine(const Instr &in) const;
};

/// A module-scope .global/.const variable: host memory the driver registers
/// as an allocation.
struct GlobalVar {
  std::string name;
  Space space = Space::Global;
  uint32_t align = 1;
  std::vector<uint8_t> init;
};

struct Module {
  std::string target; // "sm_80", "sm_90a"
  int version = 0;    // 80 for .version 8.0
  std::vector<std::unique_ptr<Function>> functions;
  std::vector<GlobalVar> globals;
  std::vector<std::unique_ptr<uint8_t[]>> globalStorage;
  std::map<std::string, uint64_t> globalAddress;
  const Function *find(const std::string &name) const;
};

/// Parses PTX text; throws ParseError naming the line for anything it does
/// not understand or model.
std::unique_ptr<Module> parse(const std::string &text);

} // namespace attn::sim::ptx

#endif // ATTN_SIM_PTX_H
