//===- FragmentsTest.cpp - tensor-core operand layouts against the ISA ----===//
//
// lib/Sim/Fragments against facts read off NVIDIA's PTX ISA: the row/col
// formulas and figures of 9.7.14.5 (mma.sync) and 9.7.15.5.1.1 (wgmma
// register fragments), the worked examples of 9.7.15.5.1.2.1.3 (canonical
// shared-memory layouts with their LBO/SBO), the descriptor bits of
// 9.7.15.5.1.2.2 and the TMA swizzle tables of 5.5.7. Then round trips: a
// tile written the way TMA writes it (or in the interleaved core-matrix
// layout) and read back element by element through the descriptor a
// CUTLASS / flash-attention style kernel builds, and every fragment covering
// its matrix exactly once.
//
//===----------------------------------------------------------------------===//
#include "lib/Sim/Fragments.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <initializer_list>
#include <string>
#include <utility>
#include <vector>

using namespace attn::sim::ptx;

namespace {

MatrixCoord rc(int row, int col) { return {row, col}; }

void expectCoord(MatrixCoord got, MatrixCoord want, const std::string &what) {
  EXPECT_EQ(got.row, want.row) << what;
  EXPECT_EQ(got.col, want.col) << what;
}

//===----------------------------------------------------------------------===//
// mma.sync fragments: values from the ISA's formulas / figures
//===----------------------------------------------------------------------===//

TEST(MmaFragment, M16N8K16HalfLane5) {
  // 9.7.14.5.8: lane 5 is groupID 1, threadID_in_group 1.
  const MatrixCoord a[8] = {rc(1, 2), rc(1, 3),  rc(9, 2),  rc(9, 3),
                            rc(1, 10), rc(1, 11), rc(9, 10), rc(9, 11)};
  for (int i = 0; i < 8; ++i)
    expectCoord(mmaFragment(16, 8, 16, 'a', 16, 5, i), a[i],
                "a" + std::to_string(i));
  const MatrixCoord b[4] = {rc(2, 1), rc(3, 1), rc(10, 1), rc(11, 1)};
  for (int i = 0; i < 4; ++i)
    expectCoord(mmaFragment(16, 8, 16, 'b', 16, 5, i), b[i],
                "b" + std::to_string(i));
  const MatrixCoord c[4] = {rc(1, 2), rc(1, 3), rc(9, 2), rc(9, 3)};
  for (int i = 0; i < 4; ++i) {
    expectCoord(mmaFragment(16, 8, 16, 'c', 32, 5, i), c[i], "c f32");
    expectCoord(mmaFragment(16, 8, 16, 'd', 16, 5, i), c[i], "d f16");
  }
  EXPECT_EQ(mmaFragmentCount(16, 8, 16, 'a', 16), 8);
  EXPECT_EQ(mmaFragmentCount(16, 8, 16, 'b', 16), 4);
  EXPECT_EQ(mmaFragmentCount(16, 8, 16, 'c', 32), 4);
  EXPECT_EQ(mmaFragmentCount(16, 8, 16, 'c', 16), 4);
}

TEST(MmaFragment, M16N8K8) {
  // 9.7.14.5.7, .f16/.bf16, lane 30: groupID 7, threadID_in_group 2.
  expectCoord(mmaFragment(16, 8, 8, 'a', 16, 30, 1), rc(7, 5), "a1");
  expectCoord(mmaFragment(16, 8, 8, 'a', 16, 30, 2), rc(15, 4), "a2");
  expectCoord(mmaFragment(16, 8, 8, 'b', 16, 30, 1), rc(5, 7), "b1");
  // .tf32, lane 6: groupID 1, threadID_in_group 2: a0/a2 rows g, a1/a3 g+8;
  // a0/a1 cols t, a2/a3 t+4; b0 row t, b1 row t+4.
  expectCoord(mmaFragment(16, 8, 8, 'a', 32, 6, 0), rc(1, 2), "tf32 a0");
  expectCoord(mmaFragment(16, 8, 8, 'a', 32, 6, 1), rc(9, 2), "tf32 a1");
  expectCoord(mmaFragment(16, 8, 8, 'a', 32, 6, 2), rc(1, 6), "tf32 a2");
  expectCoord(mmaFragment(16, 8, 8, 'a', 32, 6, 3), rc(9, 6), "tf32 a3");
  expectCoord(mmaFragment(16, 8, 8, 'b', 32, 6, 0), rc(2, 1), "tf32 b0");
  expectCoord(mmaFragment(16, 8, 8, 'b', 32, 6, 1), rc(6, 1), "tf32 b1");
}

TEST(MmaFragment, M16N8K4Tf32) {
  // 9.7.14.5.6, lane 31: groupID 7, threadID_in_group 3.
  expectCoord(mmaFragment(16, 8, 4, 'a', 32, 31, 0), rc(7, 3), "a0");
  expectCoord(mmaFragment(16, 8, 4, 'a', 32, 31, 1), rc(15, 3), "a1");
  expectCoord(mmaFragment(16, 8, 4, 'b', 32, 31, 0), rc(3, 7), "b0");
  expectCoord(mmaFragment(16, 8, 4, 'c', 32, 31, 3), rc(15, 7), "c3");
  EXPECT_EQ(mmaFragmentCount(16, 8, 4, 'a', 32), 2);
  EXPECT_EQ(mmaFragmentCount(16, 8, 4, 'b', 32), 1);
}

TEST(MmaFragment, M16N8K32Int8AndFp8) {
  // 9.7.14.5.10, lane 13: groupID 3, threadID_in_group 1. Rows g for
  // i in [0,4) u [8,12); cols 4t + (i & 3), +16 from i = 8.
  expectCoord(mmaFragment(16, 8, 32, 'a', 8, 13, 5), rc(11, 5), "a5");
  expectCoord(mmaFragment(16, 8, 32, 'a', 8, 13, 9), rc(3, 21), "a9");
  expectCoord(mmaFragment(16, 8, 32, 'a', 8, 13, 14), rc(11, 22), "a14");
  expectCoord(mmaFragment(16, 8, 32, 'b', 8, 13, 6), rc(22, 3), "b6");
  EXPECT_EQ(mmaFragmentCount(16, 8, 32, 'a', 8), 16);
  EXPECT_EQ(mmaFragmentCount(16, 8, 32, 'b', 8), 8);
  // 9.7.14.5.9, m16n8k16 .s8: rows g (i < 4) and g+8, cols 4t + (i & 3).
  expectCoord(mmaFragment(16, 8, 16, 'a', 8, 13, 6), rc(11, 6), "k16 a6");
  expectCoord(mmaFragment(16, 8, 16, 'b', 8, 13, 3), rc(7, 3), "k16 b3");
}

TEST(MmaFragment, M16N8K64Int4) {
  // 9.7.14.5.11, lane 2: groupID 0, threadID_in_group 2.
  expectCoord(mmaFragment(16, 8, 64, 'a', 4, 2, 17), rc(0, 49), "a17");
  expectCoord(mmaFragment(16, 8, 64, 'a', 4, 2, 10), rc(8, 18), "a10");
  expectCoord(mmaFragment(16, 8, 64, 'b', 4, 2, 9), rc(49, 0), "b9");
  EXPECT_EQ(mmaFragmentCount(16, 8, 64, 'a', 4), 32);
  EXPECT_EQ(mmaFragmentCount(16, 8, 64, 'b', 4), 16);
  // 9.7.14.5.10, m16n8k32 .s4: rows g (i < 8), g+8; cols 8t + (i & 7).
  expectCoord(mmaFragment(16, 8, 32, 'a', 4, 2, 9), rc(8, 17), "k32 a9");
}

TEST(MmaFragment, M8N8K4AndM16N8KxF64) {
  // 9.7.14.5.2, lane 9: row = lane >> 2 = 2, col = lane % 4 = 1.
  expectCoord(mmaFragment(8, 8, 4, 'a', 64, 9, 0), rc(2, 1), "a0");
  expectCoord(mmaFragment(8, 8, 4, 'b', 64, 9, 0), rc(1, 2), "b0");
  expectCoord(mmaFragment(8, 8, 4, 'c', 64, 9, 1), rc(2, 3), "c1");
  EXPECT_EQ(mmaFragmentCount(8, 8, 4, 'c', 64), 2);
  // 9.7.14.5.8 .f64 A: odd i row g+8, col (i*2) - 2 + t.
  expectCoord(mmaFragment(16, 8, 16, 'a', 64, 1, 5), rc(8, 9), "k16 a5");
  // .f64 B: row t + 4i.
  expectCoord(mmaFragment(16, 8, 16, 'b', 64, 1, 3), rc(13, 0), "k16 b3");
}

TEST(MmaFragment, UndefinedShapes) {
  const MatrixCoord none{-1, -1};
  EXPECT_EQ(mmaFragment(16, 8, 16, 'a', 32, 0, 0), none); // tf32 has no k16
  EXPECT_EQ(mmaFragment(8, 8, 4, 'a', 16, 0, 0), none);   // quad pairs
  EXPECT_EQ(mmaFragment(32, 8, 16, 'a', 16, 0, 0), none);
  EXPECT_EQ(mmaFragment(16, 8, 16, 'a', 16, 0, 8), none); // index past end
  EXPECT_EQ(mmaFragment(16, 8, 16, 'a', 16, 32, 0), none);
  EXPECT_EQ(mmaFragment(16, 8, 16, 'x', 16, 0, 0), none);
  EXPECT_EQ(mmaFragmentCount(16, 8, 16, 'c', 8), 0);
  EXPECT_EQ(mmaFragmentCount(16, 8, 64, 'a', 8), 0);
}

struct Shape {
  int m, n, k, bits;
};

// Every (row, col) of each operand held by exactly one (lane, index).
TEST(MmaFragment, CoverEachElementOnce) {
  const Shape shapes[] = {
      {16, 8, 16, 16}, {16, 8, 8, 16}, {16, 8, 8, 32},  {16, 8, 4, 32},
      {16, 8, 32, 8},  {16, 8, 16, 8}, {16, 8, 64, 4},  {16, 8, 32, 4},
      {16, 8, 256, 1}, {16, 8, 128, 1}, {8, 8, 4, 64},  {16, 8, 4, 64},
      {16, 8, 8, 64},  {16, 8, 16, 64}, {8, 8, 16, 8},  {8, 8, 32, 4},
      {8, 8, 128, 1}};
  for (const Shape &s : shapes) {
    struct Op {
      char name;
      int rows, cols, bits;
    };
    int cBits = s.bits == 64 ? 64 : 32;
    const Op ops[] = {{'a', s.m, s.k, s.bits},
                      {'b', s.k, s.n, s.bits},
                      {'c', s.m, s.n, cBits}};
    for (const Op &op : ops) {
      std::string what = "m" + std::to_string(s.m) + "n" +
                         std::to_string(s.n) + "k" + std::to_string(s.k) +
                         " bits " + std::to_string(s.bits) + " " + op.name;
      int count = mmaFragmentCount(s.m, s.n, s.k, op.name, op.bits);
      ASSERT_EQ(count * 32, op.rows * op.cols) << what;
      std::vector<int> seen(op.rows * op.cols, 0);
      for (int lane = 0; lane < 32; ++lane)
        for (int i = 0; i < count; ++i) {
          MatrixCoord c = mmaFragment(s.m, s.n, s.k, op.name, op.bits, lane, i);
          ASSERT_TRUE(c.row >= 0 && c.row < op.rows && c.col >= 0 &&
                      c.col < op.cols)
              << what << " lane " << lane << " index " << i;
          ++seen[c.row * op.cols + c.col];
        }
      for (int e = 0; e < op.rows * op.cols; ++e)
        ASSERT_EQ(seen[e], 1) << what << " element " << e;
    }
  }
}

//===----------------------------------------------------------------------===//
// wgmma register fragments
//===----------------------------------------------------------------------===//

TEST(WgmmaFragment, AccumulatorFacts) {
  // 9.7.15.5.1.1.1, Figure 149: thread 37 is warp 1, lane 5 (groupID 1,
  // threadID_in_group 1); d3 is row 16 + 1 + 8, col 2*1 + 1.
  expectCoord(wgmmaFragment('d', 64, 32, 37, 3), rc(25, 3), "t37 d3");
  expectCoord(wgmmaFragment('d', 64, 32, 37, 0), rc(17, 2), "t37 d0");
  expectCoord(wgmmaFragment('d', 64, 32, 37, 6), rc(25, 10), "t37 d6");
  expectCoord(wgmmaFragment('d', 64, 16, 37, 6), rc(25, 10), "f16 d6");
  // Last element of the last thread of m64n256: row 63, col 255.
  expectCoord(wgmmaFragment('d', 256, 32, 127, 127), rc(63, 255), "t127");
  EXPECT_EQ(wgmmaFragmentCount('d', 256, 32), 128);
  EXPECT_EQ(wgmmaFragmentCount('d', 8, 16), 4);
  EXPECT_EQ(wgmmaFragment('d', 64, 32, 0, 32), (MatrixCoord{-1, -1}));
  EXPECT_EQ(wgmmaFragmentCount('d', 12, 32), 0);
}

TEST(WgmmaFragment, RegisterAFacts) {
  // 9.7.15.5.1.1.1, Figure 148 (bf16 k16): thread 70 is warp 2, lane 6
  // (groupID 1, threadID_in_group 2); a7 is row 32 + 1 + 8, col 2*2 + 1 + 8.
  expectCoord(wgmmaFragment('a', 0, 16, 70, 7), rc(41, 13), "bf16 a7");
  // 9.7.15.5.1.1.3 (8-bit k32): a9 of thread 70: row 32 + 1, col 8+1+16.
  expectCoord(wgmmaFragment('a', 0, 8, 70, 9), rc(33, 25), "e4m3 a9");
  // 9.7.15.5.1.1.2 (tf32 k8): a2 of thread 70: row 33, col 2 + 4.
  expectCoord(wgmmaFragment('a', 0, 32, 70, 2), rc(33, 6), "tf32 a2");
  EXPECT_EQ(wgmmaFragmentCount('a', 0, 16), 8);
  EXPECT_EQ(wgmmaFragmentCount('a', 0, 8), 16);
  EXPECT_EQ(wgmmaFragmentCount('a', 0, 32), 4);
}

TEST(WgmmaFragment, CoverEachElementOnce) {
  auto cover = [](char op, int n, int bits, int rows, int cols) {
    int count = wgmmaFragmentCount(op, n, bits);
    ASSERT_EQ(count * 128, rows * cols) << op << n << " " << bits;
    std::vector<int> seen(rows * cols, 0);
    for (int t = 0; t < 128; ++t)
      for (int i = 0; i < count; ++i) {
        MatrixCoord c = wgmmaFragment(op, n, bits, t, i);
        ASSERT_TRUE(c.row >= 0 && c.row < rows && c.col >= 0 && c.col < cols)
            << op << " n" << n << " thread " << t << " index " << i;
        ++seen[c.row * cols + c.col];
      }
    for (int e = 0; e < rows * cols; ++e)
      ASSERT_EQ(seen[e], 1) << op << " n" << n << " element " << e;
  };
  for (int n = 8; n <= 256; n += 8) {
    cover('d', n, 32, 64, n);
    cover('d', n, 16, 64, n);
  }
  for (int bits : {16, 8, 32, 1})
    cover('a', 0, bits, 64, 256 / bits);
}

//===----------------------------------------------------------------------===//
// Descriptors and swizzles
//===----------------------------------------------------------------------===//

TEST(Descriptor, DecodeBits) {
  // 9.7.15.5.1.2.2: start 0x400 (encoded 0x40), LBO 16 (1), SBO 1024 (64),
  // base offset 0, mode 1 = 128-byte swizzle.
  uint64_t desc = 0x40ull | 1ull << 16 | 64ull << 32 | 1ull << 62;
  MatrixDescriptor d = decodeDescriptor(desc);
  EXPECT_EQ(d.start, 0x400u);
  EXPECT_EQ(d.leadingByteOffset, 16u);
  EXPECT_EQ(d.strideByteOffset, 1024u);
  EXPECT_EQ(d.baseOffset, 0u);
  EXPECT_EQ(d.swizzleBytes, 128);
  EXPECT_EQ(encodeDescriptor(d), desc);
  EXPECT_EQ(decodeDescriptor(2ull << 62).swizzleBytes, 64);
  EXPECT_EQ(decodeDescriptor(3ull << 62).swizzleBytes, 32);
  EXPECT_EQ(decodeDescriptor(0).swizzleBytes, 0);
  EXPECT_EQ(decodeDescriptor(5ull << 49).baseOffset, 5u);
  // The 14-bit fields hold address bits 17..4; bits 14-15 are not start's.
  EXPECT_EQ(decodeDescriptor(0xFFFFull).start, 0x3FFF0u);
  MatrixDescriptor all{0x3FFF0, 0x3FFF0, 0x3FFF0, 7, 32};
  EXPECT_EQ(decodeDescriptor(encodeDescriptor(all)).start, 0x3FFF0u);
  EXPECT_EQ(decodeDescriptor(encodeDescriptor(all)).baseOffset, 7u);
}

TEST(Swizzle, TmaTables) {
  // 5.5.7: 16-byte chunk c of 128-byte line i lands at c ^ (i mod W/16).
  EXPECT_EQ(swizzleAddress(3 * 128 + 1 * 16, 128), 3u * 128 + 2 * 16);
  EXPECT_EQ(swizzleAddress(7 * 128 + 0 * 16 + 5, 128), 7u * 128 + 7 * 16 + 5);
  EXPECT_EQ(swizzleAddress(8 * 128 + 3 * 16, 128), 8u * 128 + 3 * 16);
  EXPECT_EQ(swizzleAddress(2 * 128 + 1 * 16, 64), 2u * 128 + 3 * 16);
  EXPECT_EQ(swizzleAddress(4 * 128 + 1 * 16, 64), 4u * 128 + 1 * 16);
  EXPECT_EQ(swizzleAddress(1 * 128 + 0 * 16, 32), 1u * 128 + 1 * 16);
  EXPECT_EQ(swizzleAddress(1 * 128 + 6 * 16, 32), 1u * 128 + 7 * 16);
  EXPECT_EQ(swizzleAddress(2 * 128 + 1 * 16, 32), 2u * 128 + 1 * 16);
  EXPECT_EQ(swizzleAddress(3 * 128 + 1 * 16, 0), 3u * 128 + 1 * 16);
  // The phase is the absolute address's: the pattern repeats every
  // 8 * swizzleBytes bytes wherever a copy starts.
  EXPECT_EQ(swizzleAddress(0x2000 + 3 * 128 + 1 * 16, 128),
            0x2000u + 3 * 128 + 2 * 16);
  EXPECT_EQ(swizzleAddress(0x2200 + 1 * 128 + 1 * 16, 64),
            0x2200u + 1 * 128 + 0 * 16);
}

/// A CuTe layout ((s0,s1,s2),(t0,t1)):((d0,d1,d2),(e0,e1)) in elements, as
/// the ISA's worked examples write them.
struct CuteLayout {
  int mnShape[3], mnStride[3], kShape[2], kStride[2];
  int operator()(int mn, int k) const {
    int off = 0;
    for (int i = 0; i < 3; ++i) {
      off += (mn % mnShape[i]) * mnStride[i];
      mn /= mnShape[i];
    }
    for (int i = 0; i < 2; ++i) {
      off += (k % kShape[i]) * kStride[i];
      k /= kShape[i];
    }
    return off;
  }
};

void expectIsaExample(const char *name, bool mnMajor, int bits, int swizzle,
                      uint32_t lbo, uint32_t sbo, CuteLayout layout, int mnN,
                      int kN) {
  MatrixDescriptor d{0, lbo, sbo, 0, swizzle};
  for (int mn = 0; mn < mnN; ++mn)
    for (int k = 0; k < kN; ++k) {
      uint32_t linear = uint32_t(layout(mn, k) * bits / 8);
      EXPECT_EQ(wgmmaElementAddress(d, mnMajor, bits, mn, k),
                swizzleAddress(linear, swizzle))
          << name << " mn " << mn << " k " << k;
    }
}

TEST(WgmmaAddress, IsaCanonicalLayoutExamples) {
  // 9.7.15.5.1.2.1.3, the examples' exact layouts, LBO and SBO in bytes.
  expectIsaExample("K no-swizzle tf32", false, 32, 0, 64 * 4, 32 * 4,
                   {{8, 2, 1}, {4, 32, 0}, {4, 4}, {1, 64}}, 16, 16);
  // The K-major 32B tf32 example is 8 tf32 (32 bytes) wide per row, as much
  // as one wgmma k8 reads.
  expectIsaExample("K 32B tf32", false, 32, 32, 16, 64 * 4,
                   {{8, 2, 1}, {8, 64, 0}, {4, 4}, {1, 4}}, 16, 8);
  expectIsaExample("MN no-swizzle bf16", true, 16, 0, 128 * 2, 64 * 2,
                   {{8, 1, 2}, {1, 8, 64}, {8, 2}, {8, 128}}, 16, 16);
  expectIsaExample("MN 32B bf16", true, 16, 32, 128 * 2, 256 * 2,
                   {{8, 2, 2}, {1, 8, 128}, {8, 2}, {16, 256}}, 32, 16);
  expectIsaExample("MN 64B bf16", true, 16, 64, 256 * 2, 512 * 2,
                   {{8, 4, 2}, {1, 8, 256}, {8, 2}, {32, 512}}, 64, 16);
}

constexpr uint32_t kSmemBytes = 1 << 17;
uint16_t valueOf(int row, int col) { return uint16_t(row * 256 + col + 1); }

/// Reads a wgmma operand (mn x 16 bf16 per k block) through `desc` for each
/// k block and checks it against valueOf(mn, k) (or valueOf(k, mn) for an
/// MN-major operand stored k-row by k-row).
template <class DescFor>
int countMismatches(const std::vector<uint16_t> &smem, bool mnMajor, int mnN,
                    int kN, DescFor descFor) {
  int bad = 0;
  for (int kb = 0; kb < kN / 16; ++kb) {
    MatrixDescriptor d = decodeDescriptor(encodeDescriptor(descFor(kb)));
    for (int mn = 0; mn < mnN; ++mn)
      for (int k = 0; k < 16; ++k) {
        uint32_t addr = wgmmaElementAddress(d, mnMajor, 16, mn, k);
        uint16_t want = mnMajor ? valueOf(kb * 16 + k, mn)
                                : valueOf(mn, kb * 16 + k);
        if (addr >= kSmemBytes || addr % 2 || smem[addr / 2] != want)
          ++bad;
      }
  }
  return bad;
}

// K-major bf16 tile (64 rows of M or N, 64 of K) loaded by TMA in boxes
// swizzleBytes wide (a 128B box is the whole 64-element row), boxes one after
// another; each wgmma k16 block starts 32 bytes further into the box (or
// at the next box), SBO = 8 rows of the box.
TEST(WgmmaAddress, KMajorSwizzledFromTma) {
  const uint32_t base = 0x2000;
  for (int w : {128, 64, 32}) {
    const int rows = 64, cols = 64, boxCols = w / 2;
    const uint32_t boxBytes = uint32_t(rows * w);
    std::vector<uint16_t> smem(kSmemBytes / 2, 0);
    for (int r = 0; r < rows; ++r)
      for (int c = 0; c < cols; ++c) {
        uint32_t linear = base + uint32_t(c / boxCols) * boxBytes +
                          uint32_t(r * w + (c % boxCols) * 2);
        smem[swizzleAddress(linear, w) / 2] = valueOf(r, c);
      }
    auto descFor = [&](int kb) {
      uint32_t byte = uint32_t(kb * 32);
      uint32_t start = base + (byte / w) * boxBytes + byte % w;
      return MatrixDescriptor{start, 16, uint32_t(8 * w), 0, w};
    };
    EXPECT_EQ(countMismatches(smem, false, rows, cols, descFor), 0)
        << "swizzle " << w;
    // Not vacuous: the same bytes read without the swizzle disagree.
    auto unswizzled = [&](int kb) {
      MatrixDescriptor d = descFor(kb);
      d.swizzleBytes = 0;
      d.leadingByteOffset = 16;
      d.strideByteOffset = uint32_t(8 * w);
      return d;
    };
    if (w != 32) // 32B rows of 16 B x 2 with LBO 16 read the same chunks
      EXPECT_GT(countMismatches(smem, false, rows, cols, unswizzled), 0);
  }
}

// MN-major (imm-trans 1) bf16 operand, e.g. V (keys x head dim) as P @ V's B:
// stored k-row by k-row, 128 columns of N, loaded by TMA in boxes
// swizzleBytes wide along N. LBO = one box (the next swizzleBytes of N),
// SBO = 8 k rows; each k16 block starts 16 rows further.
TEST(WgmmaAddress, MnMajorSwizzledFromTma) {
  const uint32_t base = 0x4000;
  for (int w : {128, 64, 32}) {
    const int kRows = 64, nCols = 128, boxCols = w / 2;
    const uint32_t boxBytes = uint32_t(kRows * w);
    std::vector<uint16_t> smem(kSmemBytes / 2, 0);
    for (int k = 0; k < kRows; ++k)
      for (int n = 0; n < nCols; ++n) {
        uint32_t linear = base + uint32_t(n / boxCols) * boxBytes +
                          uint32_t(k * w + (n % boxCols) * 2);
        smem[swizzleAddress(linear, w) / 2] = valueOf(k, n);
      }
    auto descFor = [&](int kb) {
      return MatrixDescriptor{base + uint32_t(kb * 16 * w), boxBytes,
                              uint32_t(8 * w), 0, w};
    };
    EXPECT_EQ(countMismatches(smem, true, nCols, kRows, descFor), 0)
        << "swizzle " << w;
    // LBO and SBO are not interchangeable.
    auto swapped = [&](int kb) {
      MatrixDescriptor d = descFor(kb);
      std::swap(d.leadingByteOffset, d.strideByteOffset);
      return d;
    };
    EXPECT_GT(countMismatches(smem, true, nCols, kRows, swapped), 0);
  }
}

// The interleaved (no-swizzle) layout of 8 x 16-byte core matrices, in both
// arrangements: K-adjacent core matrices adjacent (LBO 128, SBO = one row of
// core matrices) or MN-adjacent ones adjacent (SBO 128, LBO = one column).
TEST(WgmmaAddress, InterleavedCoreMatrices) {
  const uint32_t base = 0x1000;
  const int mnN = 64, kN = 64;
  for (bool kAdjacent : {true, false}) {
    // K-major: element (mn, k) in core matrix (mn/8, k/8), row mn%8.
    uint32_t lbo = kAdjacent ? 128 : (mnN / 8) * 128;
    uint32_t sbo = kAdjacent ? (kN / 8) * 128 : 128;
    std::vector<uint16_t> smem(kSmemBytes / 2, 0);
    for (int mn = 0; mn < mnN; ++mn)
      for (int k = 0; k < kN; ++k)
        smem[(base + (mn / 8) * sbo + (k / 8) * lbo + (mn % 8) * 16 +
              (k % 8) * 2) /
             2] = valueOf(mn, k);
    auto kDesc = [&](int kb) {
      return MatrixDescriptor{base + uint32_t(kb * 2) * lbo, lbo, sbo, 0, 0};
    };
    EXPECT_EQ(countMismatches(smem, false, mnN, kN, kDesc), 0)
        << "K-major, k-adjacent " << kAdjacent;

    // MN-major: element (k, mn) in core matrix (k/8, mn/8), row k%8
    // (16 bytes of mn); SBO steps 8 mn, LBO steps 8 k.
    uint32_t mnSbo = kAdjacent ? (kN / 8) * 128 : 128;
    uint32_t mnLbo = kAdjacent ? 128 : (mnN / 8) * 128;
    std::fill(smem.begin(), smem.end(), 0);
    for (int k = 0; k < kN; ++k)
      for (int mn = 0; mn < mnN; ++mn)
        smem[(base + (mn / 8) * mnSbo + (k / 8) * mnLbo + (k % 8) * 16 +
              (mn % 8) * 2) /
             2] = valueOf(k, mn);
    auto mnDesc = [&](int kb) {
      return MatrixDescriptor{base + uint32_t(kb * 2) * mnLbo, mnLbo, mnSbo,
                              0, 0};
    };
    EXPECT_EQ(countMismatches(smem, true, mnN, kN, mnDesc), 0)
        << "MN-major, k-adjacent " << kAdjacent;
  }
}

// A 128B-swizzled tile TMA wrote 2 lines past a 1024-byte boundary (its
// swizzle keeps the absolute address's phase): read through descriptors
// with the ISA's base offset, (start >> 7) & 7 = 2 (9.7.15.5.1.2.2, and
// 5.5.7's swizzle base offset of the TMA destination), it reads back as
// written; claiming an aligned pattern (base offset 0) does not.
TEST(WgmmaAddress, BaseOffset) {
  const uint32_t base = 0x2000 + 2 * 128;
  const int rows = 64, cols = 64;
  std::vector<uint16_t> smem(kSmemBytes / 2, 0);
  for (int r = 0; r < rows; ++r)
    for (int c = 0; c < cols; ++c)
      smem[swizzleAddress(base + uint32_t(r * 128 + c * 2), 128) / 2] =
          valueOf(r, c);
  for (uint32_t bo : {2u, 0u}) {
    auto descFor = [&](int kb) {
      return MatrixDescriptor{base + uint32_t(kb * 32), 16, 1024, bo, 128};
    };
    int bad = countMismatches(smem, false, rows, cols, descFor);
    if (bo == 2)
      EXPECT_EQ(bad, 0);
    else
      EXPECT_GT(bad, 0);
  }
  // A descriptor whose start is aligned needs no base offset, with the start
  // advanced within the line for each k block.
  MatrixDescriptor d{0x2000 + 64, 16, 1024, 0, 128};
  EXPECT_EQ(wgmmaElementAddress(d, false, 16, 3, 1),
            swizzleAddress(0x2000 + 64 + 3 * 128 + 2, 128));
}

} // namespace
