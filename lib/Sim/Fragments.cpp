//===- Fragments.cpp - tensor-core operand layouts of the PTX ISA ---------===//
//
// Every mma.sync shape with a regular fragment layout follows one scheme,
// which the per-shape formulas of ISA 9.7.14.5 spell out case by case:
// groupID = lane / 4 picks the row (A, C/D) or column (B) and
// threadID_in_group = lane % 4 picks which register-wide slice of the other
// dimension a lane holds. A 32-bit register holds 32/elemBits consecutive
// elements along k (a "slice"); four lanes' slices make one 4-slice-wide
// "k block". A's registers alternate rows g and g+8 and then step one k
// block; B's registers step one k block each. f64 holds one element per
// (64-bit) register, which fits the same scheme with a one-element slice.
//
//===----------------------------------------------------------------------===//
#include "lib/Sim/Fragments.h"

#include <initializer_list>

namespace attn::sim::ptx {

namespace {

constexpr MatrixCoord kNone{-1, -1};

/// Elements per register slice: 32/elemBits, or 1 for f64.
int sliceElems(int elemBits) { return elemBits >= 32 ? 1 : 32 / elemBits; }

bool isMultiplicandBits(int bits) {
  return bits == 1 || bits == 4 || bits == 8 || bits == 16 || bits == 32 ||
         bits == 64;
}

/// Whether mma.sync defines shape m,n,k for multiplicands of elemBits bits
/// (ISA 9.7.14.5.14 "Matrix multiply-accumulate operation using mma
/// instruction", its shape/type table). m8n8k4 .f16 is left out (its
/// quad-pair fragments are a different scheme, not modelled).
bool validMultiplicandShape(int m, int n, int k, int bits) {
  if (!isMultiplicandBits(bits))
    return false;
  if (m == 8 && n == 8) {
    if (bits == 64)
      return k == 4;
    // m8n8k16 s8/u8, m8n8k32 s4/u4, m8n8k128 b1.
    return (bits == 8 || bits == 4 || bits == 1) && k * bits == 128;
  }
  if (m == 16 && n == 8) {
    if (bits == 64)
      return k == 4 || k == 8 || k == 16;
    // k*bits = 128: m16n8k8 f16, m16n8k4 tf32, m16n8k16 s8/e4m3,
    // m16n8k32 s4, m16n8k128 b1. k*bits = 256: m16n8k16 f16, m16n8k8 tf32,
    // m16n8k32 s8/e4m3, m16n8k64 s4/e2m1, m16n8k256 b1.
    return k * bits == 128 || k * bits == 256;
  }
  return false;
}

/// Whether some multiplicand type makes m,n,k a valid shape (for C/D, whose
/// elemBits is the accumulator's).
bool validShape(int m, int n, int k) {
  for (int bits : {1, 4, 8, 16, 32, 64})
    if (validMultiplicandShape(m, n, k, bits))
      return true;
  return false;
}

/// A's scheme, rows 0..15 (or 0..7 when m = 8) of one warp.
MatrixCoord fragmentA(int m, int elemBits, int lane, int index) {
  int slice = sliceElems(elemBits);
  int g = lane >> 2, t = lane & 3;
  int reg = index / slice, j = index % slice;
  if (m == 8) // one row per group; registers step k blocks.
    return {g, reg * 4 * slice + t * slice + j};
  return {g + 8 * (reg & 1), (reg >> 1) * 4 * slice + t * slice + j};
}

/// B's scheme: column g; registers step k blocks.
MatrixCoord fragmentB(int elemBits, int lane, int index) {
  int slice = sliceElems(elemBits);
  int g = lane >> 2, t = lane & 3;
  int reg = index / slice, j = index % slice;
  return {reg * 4 * slice + t * slice + j, g};
}

/// The m16n8 / m8n8 accumulator: two consecutive columns per lane, the
/// second pair (m16 only) 8 rows down.
MatrixCoord fragmentC(int lane, int index) {
  int g = lane >> 2, t = lane & 3;
  return {g + 8 * (index >> 1), 2 * t + (index & 1)};
}

} // namespace

/// ISA 9.7.14.5.2 (m8n8k4 .f64), 9.7.14.5.3-5 (m8n8k16/k32/k128),
/// 9.7.14.5.6 (m16n8k4), 9.7.14.5.7 (m16n8k8), 9.7.14.5.8-9 (m16n8k16 float
/// and integer), 9.7.14.5.10 (m16n8k32), 9.7.14.5.11 (m16n8k64),
/// 9.7.14.5.12-13 (m16n8k128/k256 .b1): "Matrix Fragments for mma.mMnNkK".
/// (9.7.14.5.13's A formula reads col = threadID_in_group*32 + i for i < 64,
/// which would give two lanes the same element; the figure and every other
/// shape take i & 0x1F there, as here.)
MatrixCoord mmaFragment(int m, int n, int k, char operand, int elemBits,
                        int lane, int index) {
  if (lane < 0 || lane >= 32 || index < 0 ||
      index >= mmaFragmentCount(m, n, k, operand, elemBits))
    return kNone;
  switch (operand) {
  case 'a':
    return fragmentA(m, elemBits, lane, index);
  case 'b':
    return fragmentB(elemBits, lane, index);
  default:
    return fragmentC(lane, index);
  }
}

int mmaFragmentCount(int m, int n, int k, char operand, int elemBits) {
  switch (operand) {
  case 'a':
    return validMultiplicandShape(m, n, k, elemBits) ? m * k / 32 : 0;
  case 'b':
    return validMultiplicandShape(m, n, k, elemBits) ? k * n / 32 : 0;
  case 'c':
  case 'd':
    if (elemBits != 16 && elemBits != 32 && elemBits != 64)
      return 0;
    // f64 accumulates only f64 products; m8n8 accumulators are f64 or s32.
    if (elemBits == 64 && !validMultiplicandShape(m, n, k, 64))
      return 0;
    if (m == 8 && elemBits == 16)
      return 0;
    return validShape(m, n, k) ? m * n / 32 : 0;
  default:
    return 0;
  }
}

/// ISA 9.7.15.5.1.1.1-4 "Matrix Fragments for wgmma.mma_async.m64nNk16 /
/// k8 / k32 / k256": warp w = thread / 32 of the warpgroup holds rows
/// 16w..16w+15, laid out within them as mma.sync's m16n8kK A fragment
/// (four registers) and, for D, as N/8 side-by-side m16n8 accumulators:
/// d[i] is at row 16w + groupID + 8*((i >> 1) & 1), column
/// 8*(i >> 2) + 2*threadID_in_group + (i & 1).
MatrixCoord wgmmaFragment(char operand, int n, int elemBits, int thread,
                          int index) {
  if (thread < 0 || thread >= 128 || index < 0 ||
      index >= wgmmaFragmentCount(operand, n, elemBits))
    return kNone;
  int warp = thread >> 5, lane = thread & 31;
  if (operand == 'a') {
    MatrixCoord c = fragmentA(16, elemBits, lane, index);
    return {16 * warp + c.row, c.col};
  }
  MatrixCoord c = fragmentC(lane, index & 3);
  return {16 * warp + c.row, 8 * (index >> 2) + c.col};
}

int wgmmaFragmentCount(char operand, int n, int elemBits) {
  if (operand == 'a')
    return (elemBits == 1 || elemBits == 8 || elemBits == 16 || elemBits == 32)
               ? 4 * (32 / elemBits)
               : 0;
  if (operand == 'd') {
    if (elemBits != 16 && elemBits != 32)
      return 0;
    return (n >= 8 && n <= 256 && n % 8 == 0) ? n / 2 : 0;
  }
  return 0;
}

/// ISA 9.7.15.5.1.2.2 "Matrix Descriptor Format": bits 13-0 start address,
/// 29-16 LBO, 45-32 SBO (each matrix-descriptor-encode(x) = (x & 0x3FFFF) >>
/// 4, i.e. in 16-byte units), 51-49 base offset, 63-62 swizzle mode (0 none,
/// 1 128B, 2 64B, 3 32B).
MatrixDescriptor decodeDescriptor(uint64_t desc) {
  static constexpr int kSwizzle[4] = {0, 128, 64, 32};
  MatrixDescriptor d;
  d.start = uint32_t(desc & 0x3FFF) << 4;
  d.leadingByteOffset = uint32_t((desc >> 16) & 0x3FFF) << 4;
  d.strideByteOffset = uint32_t((desc >> 32) & 0x3FFF) << 4;
  d.baseOffset = uint32_t((desc >> 49) & 0x7);
  d.swizzleBytes = kSwizzle[(desc >> 62) & 0x3];
  return d;
}

uint64_t encodeDescriptor(const MatrixDescriptor &d) {
  auto encode = [](uint32_t x) { return uint64_t((x & 0x3FFFF) >> 4); };
  uint64_t mode = d.swizzleBytes == 128  ? 1
                  : d.swizzleBytes == 64 ? 2
                  : d.swizzleBytes == 32 ? 3
                                         : 0;
  return encode(d.start) | encode(d.leadingByteOffset) << 16 |
         encode(d.strideByteOffset) << 32 | uint64_t(d.baseOffset & 7) << 49 |
         mode << 62;
}

namespace {

/// XORs the 16-byte chunk index of `address` with `line` modulo
/// swizzleBytes/16: ISA 5.5.7's tables (line i of the repeating pattern holds
/// chunk c at position c ^ i: 32B swaps pairs on odd lines, 64B cycles four
/// lines, 128B eight) and CuTe's Swizzle<1,4,3>, <2,4,3>, <3,4,3> in ISA
/// 9.7.15.5.1.2.1.3.
uint32_t swizzleChunk(uint32_t address, int swizzleBytes, uint32_t line) {
  if (swizzleBytes != 32 && swizzleBytes != 64 && swizzleBytes != 128)
    return address;
  uint32_t mask = uint32_t(swizzleBytes / 16 - 1);
  return address ^ ((line & mask) << 4);
}

} // namespace

/// ISA 5.5.7 "Swizzling Modes". The tables give the pattern from an
/// 8*swizzleBytes-aligned destination; for other destinations the ISA gives
/// the pattern a non-zero "swizzle base offset", (dstMem / 128) % 8, which we
/// read as: TMA keeps the phase of the absolute address rather than
/// restarting the pattern at dstMem. (Kernel authors report the same of
/// hardware: misaligned swizzled TMA destinations come out in the absolute
/// address's phase.)
uint32_t swizzleAddress(uint32_t address, int swizzleBytes) {
  return swizzleChunk(address, swizzleBytes, address >> 7);
}

/// ISA 9.7.15.5.1.2.1 "Major-ness supported by Strides" and
/// 9.7.15.5.1.2.1.3 "Canonical Layouts" (T = 128/elemBits elements make one
/// 16-byte chunk; W = swizzle width in bytes):
///   K-major, no swizzle:  ((8,m),(T,2k)):((1T,SBO),(1,LBO))
///     rows of a core matrix 16 B apart, 8-row groups SBO apart, 16-byte
///     k chunks LBO apart (LBO: "first column to second column of the 8x2
///     tile").
///   K-major, W swizzle:   ((8,m),(T,2k)):((W/16 T,SBO),(1,T))
///     rows W bytes apart, k contiguous within the row, 8-row groups SBO
///     apart; LBO unused ("assumed to be 1").
///   MN-major, no swizzle: ((T,1,m),(8,k)):((1,T,SBO),(1T,LBO))
///     16-byte mn chunks SBO apart, k rows 16 B apart, 8-k groups LBO apart.
///   MN-major, W swizzle:  ((T,W/16,m),(8,k)):((1,T,LBO),(W/16 T,SBO))
///     W contiguous bytes along mn, repeated LBO apart; k rows W bytes
///     apart, 8-k groups SBO apart.
/// Swizzle (ISA 9.7.15.5.1.2.2): the descriptor carries the start address
/// and, separately, the base offset, which is 0 when "the repeating pattern"
/// starts on an 8*W-byte boundary and otherwise "(pattern start addr >> 0x7)
/// & 0x7" -- the same value ISA 5.5.7 gives as the swizzle base offset of a
/// TMA destination. The field only has a purpose if the hardware counts the
/// XOR's line phase from the start address and takes the start's own phase
/// from the base offset: phase = (address >> 7) - (start >> 7) + baseOffset.
/// With the base offset set as the ISA says (0 for aligned tiles), the phase
/// is the absolute address's, which is how TMA wrote the tile. (Advancing the
/// start within a 128-byte line, as kernels do for K-major k blocks, leaves
/// the phase alone.)
uint32_t wgmmaElementAddress(const MatrixDescriptor &d, bool mnMajor,
                             int elemBits, int mn, int k) {
  const uint32_t chunkElems = uint32_t(128 / elemBits);
  const uint32_t w = uint32_t(d.swizzleBytes);
  auto bytesOf = [&](uint32_t elems) { return elems * uint32_t(elemBits) / 8; };
  uint32_t offset;
  if (!mnMajor) {
    uint32_t row = uint32_t(mn) % 8, group = uint32_t(mn) / 8;
    uint32_t chunk = uint32_t(k) / chunkElems;
    uint32_t inChunk = bytesOf(uint32_t(k) % chunkElems);
    if (w == 0)
      offset = group * d.strideByteOffset + row * 16 +
               chunk * d.leadingByteOffset + inChunk;
    else
      offset = group * d.strideByteOffset + row * w + chunk * 16 + inChunk;
  } else {
    uint32_t chunk = uint32_t(mn) / chunkElems;
    uint32_t inChunk = bytesOf(uint32_t(mn) % chunkElems);
    uint32_t kRow = uint32_t(k) % 8, kGroup = uint32_t(k) / 8;
    if (w == 0) {
      offset = chunk * d.strideByteOffset + kRow * 16 +
               kGroup * d.leadingByteOffset + inChunk;
    } else {
      uint32_t chunksPerRow = w / 16;
      offset = (chunk / chunksPerRow) * d.leadingByteOffset +
               (chunk % chunksPerRow) * 16 + kRow * w +
               kGroup * d.strideByteOffset + inChunk;
    }
  }
  uint32_t address = d.start + offset;
  return swizzleChunk(address, d.swizzleBytes,
                      (address >> 7) - (d.start >> 7) + d.baseOffset);
}

} // namespace attn::sim::ptx
