//===- Fragments.h - tensor-core operand layouts of the PTX ISA -----------===//
//
// Where the elements of mma.sync and wgmma.mma_async operands live: which
// lane (or warpgroup thread) holds which matrix element in registers, and at
// which shared-memory byte address wgmma reads an operand through its matrix
// descriptor, swizzle included. Also the TMA (cp.async.bulk.tensor) swizzle,
// which writes the layouts wgmma reads. All facts come from NVIDIA's PTX ISA
// (8.x/9.x numbering); each function cites its section.
//
//===----------------------------------------------------------------------===//
#ifndef ATTN_SIM_FRAGMENTS_H
#define ATTN_SIM_FRAGMENTS_H

#include <cstdint>

namespace attn::sim::ptx {

struct MatrixCoord {
  int row, col;
  bool valid() const { return row >= 0 && col >= 0; }
  friend bool operator==(MatrixCoord a, MatrixCoord b) {
    return a.row == b.row && a.col == b.col;
  }
};

/// mma.sync.aligned (ISA 9.7.14.5.2 and 9.7.14.5.4-9.7.14.5.12, "Matrix
/// Fragments for mma.mMnNkK"): the (row, col) of element `index` of `lane`'s
/// fragment of `operand` ('a': m x k, 'b': k x n, 'c'/'d': m x n) for shape
/// m,n,k and element width elemBits (1, 4, 8, 16, 32 (tf32) or 64 (f64) for
/// A/B; 16, 32 or 64 for C/D). Elements are numbered in register order:
/// register r holds elements [r*(32/elemBits), ...), lowest bits first (one
/// element per register for f64). {-1,-1} for a shape/type the ISA does not
/// define (m8n8k4 with .f16, whose quad-pair layout is not modelled, included).
MatrixCoord mmaFragment(int m, int n, int k, char operand, int elemBits,
                        int lane, int index);
/// How many elements of `operand` each lane holds; 0 where undefined.
int mmaFragmentCount(int m, int n, int k, char operand, int elemBits);

/// wgmma.mma_async register fragments (ISA 9.7.15.5.1.1 "Register
/// Fragments"): operand 'd' is the m64nN accumulator (elemBits 32 for
/// f32/s32, 16 for f16 packed two per register; element numbering is the
/// same); operand 'a' is A from registers, m64 x k with k*elemBits = 256
/// (k16 for f16/bf16, k32 for 8-bit, k8 for tf32, k256 for b1); `n` is
/// ignored for 'a'. `thread` is 0..127 within the warpgroup.
MatrixCoord wgmmaFragment(char operand, int n, int elemBits, int thread,
                          int index);
/// Elements per thread: N/2 for 'd', 256/elemBits/2 for 'a'; 0 if undefined.
int wgmmaFragmentCount(char operand, int n, int elemBits);

/// Shared-memory matrix descriptor (64-bit; ISA 9.7.15.5.1.2.2 "Matrix
/// Descriptor Format"), decoded to bytes: start address, leading dimension
/// byte offset (LBO), stride dimension byte offset (SBO), the 3-bit matrix
/// base offset, and the swizzle width in bytes (0 = none, 32, 64, 128).
struct MatrixDescriptor {
  uint32_t start, leadingByteOffset, strideByteOffset, baseOffset;
  int swizzleBytes;
};
MatrixDescriptor decodeDescriptor(uint64_t desc);
/// The inverse of decodeDescriptor (what a kernel builds; for tests).
uint64_t encodeDescriptor(const MatrixDescriptor &d);

/// The shared-memory byte address of element (mn, k) of a wgmma operand read
/// through `d`: mn indexes M (for A) or N (for B), k the reduction
/// dimension, both relative to the descriptor's start address. `mnMajor` is
/// imm-trans = 1 (MN-major), false for K-major. The canonical layouts of ISA
/// 9.7.15.5.1.2.1.3 with LBO/SBO as 9.7.15.5.1.2.1.1-2 define the unswizzled
/// address; the swizzle then XORs its 16-byte chunk index with its 128-byte
/// line's phase, counted from the start address, whose own phase is the
/// base offset (see Fragments.cpp). For a tile whose start address is on an
/// 8 * swizzleBytes boundary (base offset 0) this is swizzleAddress of the
/// unswizzled address, so a tile TMA wrote reads back as written. For
/// elements narrower than a byte, the address of the byte holding it.
uint32_t wgmmaElementAddress(const MatrixDescriptor &d, bool mnMajor,
                             int elemBits, int mn, int k);

/// The swizzle of TMA (cp.async.bulk.tensor with CU_TENSOR_MAP_SWIZZLE_32B /
/// 64B / 128B, 16-byte atomicity; ISA 5.5.7 "Swizzling Modes") on a
/// shared-memory byte address: the 16-byte chunk index within the address's
/// 128-byte line is XORed with the line index modulo swizzleBytes/16, i.e.
/// bits [4, 4+b) ^= bits [7, 7+b), b = log2(swizzleBytes/16); the pattern
/// repeats every 8 * swizzleBytes bytes of the absolute shared-memory address
/// (not of the offset from the copy's destination). swizzleBytes 0 returns
/// the address unchanged.
uint32_t swizzleAddress(uint32_t address, int swizzleBytes);

} // namespace attn::sim::ptx

#endif // ATTN_SIM_FRAGMENTS_H
