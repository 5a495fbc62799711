//===- AmdMfma.h - CDNA matrix instructions: shapes, layouts, math --------===//
//
// The MFMA (matrix fused multiply-add) instructions of gfx90a (CDNA2),
// gfx942 (CDNA3) and gfx950: D = A x B + C over `blocks` independent
// M x N x K products, with A, B, C and D spread over the 64 lanes of a
// wave's registers.
//
// Register layouts follow AMD's Matrix Instruction Calculator
// (github.com/ROCm/amd_matrix_instruction_calculator, matrix_calculator.py,
// the gfx9 / CDNA class's __get_input_reg_lanes and
// __get_output_reg_lanes), which the CDNA2 and CDNA3 ISA guides' MFMA
// chapters defer to for the lane mappings:
//
//   inputs: with G = 64 / (M * blocks) lane groups, each lane holds
//   E = K / G consecutive k of one row of A (one column of B):
//     A[i][k] of block b is element (k % E) of the register tuple, in lane
//     b * M + (k / E) * M * blocks + i   (B[k][j] likewise with j, N)
//   outputs (32-bit): rows in groups of H = 4 registers, R = 64 / N such
//   groups side by side per register, P = ceil(64 / (N * M / 4)) blocks per
//   register:
//     D[i][j] of block b is register b * (M * N / 64) + (i / (H * R)) * H +
//     i % H, lane (b % P) * N + ((i / H) % R) * P * N + j
//   (64-bit outputs use H = 1).
//
// For v_mfma_f32_16x16x16_bf16 this gives lane l the A elements
// [l % 16][4 (l / 16) + e], e = 0..3 (one 64-bit register pair), the B
// elements [4 (l / 16) + e][l % 16] and the accumulators
// [4 (l / 16) + r][l % 16] in registers r = 0..3.
//
// Products are exact in double precision for every input type here and
// are summed in double with C, then rounded once to f32 (an MFMA's
// internal rounding order is unspecified; this is the most accurate
// reading). Integer MFMAs sum exactly and wrap to 32 bits.
//
//===----------------------------------------------------------------------===//
#ifndef ATTN_SIM_AMDMFMA_H
#define ATTN_SIM_AMDMFMA_H

#include <cstdint>
#include <string>

namespace attn::sim::amd {

enum class Elem : uint8_t { F32, F16, BF16, I8, Fp8, Bf8, F64 };

int elemBits(Elem e);

struct MfmaShape {
  int m = 0, n = 0, k = 0, blocks = 1;
  Elem a = Elem::F32, b = Elem::F32; // input element types
  bool intOut = false, f64 = false;  // i32 or f64 results (else f32)
  /// fp8 / bf8 inputs in the OCP formats (gfx950) rather than the FNUZ
  /// ones of gfx942 (bias 8 / 16, 0x80 is NaN, no infinities).
  bool ocp = false;
};

/// The shape of MFMA `mnemonic` as LLVM prints it (gfx90a spellings such
/// as v_mfma_f32_16x16x16bf16_1k and gfx940 ones such as
/// v_mfma_f32_16x16x16_bf16), with `aDwords` registers per lane in its A
/// operand (which fixes the block count of the older names); false if it
/// is not one of the MFMAs modelled.
bool mfmaShape(const std::string &mnemonic, int aDwords, bool ocp,
               MfmaShape &shape);

/// Where an element lives: register (dword) within its operand, the
/// element within that register (for sub-32-bit types) and the lane.
struct MfmaSlot {
  int reg = 0, sub = 0, lane = 0;
};
/// A[row][k] of `block` (or B[k][row], with row = j, for the B operand).
MfmaSlot mfmaInput(const MfmaShape &s, bool isB, int row, int k, int block);
/// C[i][j] / D[i][j] of `block` (reg counts dwords; a 64-bit result's
/// low dword).
MfmaSlot mfmaOutput(const MfmaShape &s, int i, int j, int block);

/// Registers per lane of each operand.
int mfmaInputDwords(const MfmaShape &s);
int mfmaOutputDwords(const MfmaShape &s);

/// Value of an input element's bits.
double mfmaInputValue(const MfmaShape &s, Elem e, uint32_t bits);

/// Runs the MFMA on register arrays: a/b/c/d[r * 64 + lane] for register
/// r of the operand (d may alias c).
void mfmaExecute(const MfmaShape &s, const uint32_t *a, const uint32_t *b,
                 const uint32_t *c, uint32_t *d);

/// FNUZ fp8 formats (gfx942): `exp` exponent bits with bias 2^(exp-1),
/// 0x80 NaN, no negative zero or infinities.
float fnuzToFloat(uint8_t v, int exp, int man);
/// Round to nearest even; out-of-range values give NaN (0x80) or, with
/// `saturate`, the largest finite value of their sign.
uint8_t floatToFnuz(float f, int exp, int man, bool saturate);

} // namespace attn::sim::amd

#endif // ATTN_SIM_AMDMFMA_H
