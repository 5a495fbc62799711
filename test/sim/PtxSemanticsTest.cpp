//===- PtxSemanticsTest.cpp - the PTX simulator on hand-written programs --===//
//
// Small kernels whose results follow from the PTX ISA's definitions (the
// expected values are worked out from the ISA text cited next to each),
// and kernels with the bugs the simulator exists to catch: out-of-bounds
// global and shared accesses, misaligned accesses, deadlocks, divergent
// collectives, reads of asynchronous copies before their wait, and
// instructions it does not model. Everything goes through the CUDA driver
// API of libattnsim_cuda.so, as attnrt's launcher uses it.
//
//===----------------------------------------------------------------------===//
#include "lib/Sim/CudaDriver.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include <unistd.h>

namespace {

std::string errorText(CUresult r) {
  const char *text = nullptr;
  cuGetErrorString(r, &text);
  return text ? text : "";
}

/// Loads `body` as the kernel `k(.param .u64 out)`, runs it with `threads`
/// threads over `words` 32-bit output words (initialized to `fill`), and
/// returns the launch's result; `out` gets the words.
CUresult run(const std::string &body, unsigned threads,
             std::vector<uint32_t> &out, size_t words, uint32_t fill = 0,
             const std::string &target = "sm_90a") {
  std::string ptx = ".version 8.0\n.target " + target +
                    "\n.address_size 64\n"
                    ".visible .entry k(.param .u64 out)\n{\n" +
                    body + "\n}\n";
  CUmodule module = nullptr;
  if (CUresult r = cuModuleLoadData(&module, ptx.c_str()))
    return r;
  CUfunction fn = nullptr;
  if (CUresult r = cuModuleGetFunction(&fn, module, "k"))
    return r;
  CUdeviceptr buffer = 0;
  cuMemAlloc_v2(&buffer, words * 4);
  out.assign(words, fill);
  cuMemcpyHtoD_v2(buffer, out.data(), words * 4);
  void *params[] = {&buffer};
  CUresult r = cuLaunchKernel(fn, 1, 1, 1, threads, 1, 1, 0, nullptr, params,
                              nullptr);
  cuMemcpyDtoH_v2(out.data(), buffer, words * 4);
  cuMemFree_v2(buffer);
  cuModuleUnload(module);
  return r;
}

const char *kPrologue = R"(
  .reg .b32 %r<64>;
  .reg .b64 %rd<16>;
  .reg .f32 %f<32>;
  .reg .pred %p<16>;
  .reg .b16 %rs<4>;
  ld.param.u64 %rd1, [out];
  cvta.to.global.u64 %rd1, %rd1;
)";

float asFloat(uint32_t b) {
  float f;
  memcpy(&f, &b, 4);
  return f;
}

TEST(PtxSemantics, IntegerAndBitInstructions) {
  std::vector<uint32_t> out;
  CUresult r = run(std::string(kPrologue) + R"(
  // prmt default mode (ISA 9.7.8.7): selector nibbles pick bytes of {b, a}.
  mov.b32 %r1, 0x03020100;
  mov.b32 %r2, 0x07060504;
  prmt.b32 %r3, %r1, %r2, 0x5410;
  st.global.b32 [%rd1+0], %r3;
  // Selector bit 3 replicates the byte's sign bit.
  mov.b32 %r4, 0x00000080;
  prmt.b32 %r5, %r4, %r2, 0x8888;
  st.global.b32 [%rd1+4], %r5;
  // bfe (ISA 9.7.1.15): unsigned extract, then sign-extending extract.
  mov.b32 %r6, 0xF0F0F0F0;
  bfe.u32 %r7, %r6, 4, 8;
  st.global.b32 [%rd1+8], %r7;
  bfe.s32 %r8, %r4, 0, 8;
  st.global.b32 [%rd1+12], %r8;
  // Shifts past the width (ISA 9.7.8.8-9): zero, or the sign.
  mov.b32 %r9, 33;
  shl.b32 %r10, %r6, %r9;
  st.global.b32 [%rd1+16], %r10;
  mov.b32 %r11, -8;
  mov.b32 %r12, 40;
  shr.s32 %r13, %r11, %r12;
  st.global.b32 [%rd1+20], %r13;
  // mul.hi / mul.wide (ISA 9.7.1.3).
  mov.b32 %r14, 0xFFFFFFFF;
  mov.b32 %r15, 2;
  mul.hi.u32 %r16, %r14, %r15;
  st.global.b32 [%rd1+24], %r16;
  mul.wide.s32 %rd2, %r14, %r15;
  st.global.b64 [%rd1+32], %rd2;
  // lop3 with the LUT of a ^ b ^ c (0x96).
  mov.b32 %r17, 0x0000FFFF;
  mov.b32 %r18, 0x00FF00FF;
  mov.b32 %r19, 0x0F0F0F0F;
  lop3.b32 %r20, %r17, %r18, %r19, 0x96;
  st.global.b32 [%rd1+40], %r20;
  // Funnel shift left, clamp (ISA 9.7.8.6).
  shf.l.clamp.b32 %r21, %r18, %r17, 8;
  st.global.b32 [%rd1+44], %r21;
  // min/max of signed and unsigned views of the same bits.
  min.s32 %r22, %r14, %r15;
  min.u32 %r23, %r14, %r15;
  st.global.b32 [%rd1+48], %r22;
  st.global.b32 [%rd1+52], %r23;
  ret;
)",
                   1, out, 14);
  ASSERT_EQ(r, 0) << errorText(r);
  EXPECT_EQ(out[0], 0x05040100u);
  EXPECT_EQ(out[1], 0xFFFFFFFFu);
  EXPECT_EQ(out[2], 0x0Fu);
  EXPECT_EQ(out[3], 0xFFFFFF80u);
  EXPECT_EQ(out[4], 0u);
  EXPECT_EQ(out[5], 0xFFFFFFFFu);
  EXPECT_EQ(out[6], 1u);
  EXPECT_EQ(out[8], 0xFFFFFFFEu); // -2 as 64 bits: low word
  EXPECT_EQ(out[9], 0xFFFFFFFFu);
  EXPECT_EQ(out[10], 0x0000FFFFu ^ 0x00FF00FFu ^ 0x0F0F0F0Fu);
  // shf.l: the upper 32 bits of ({b, a} << 8), a = 0x00FF00FF, b = 0xFFFF.
  EXPECT_EQ(out[11], 0x00FFFF00u);
  EXPECT_EQ(out[12], 0xFFFFFFFFu); // -1 < 2
  EXPECT_EQ(out[13], 2u);
}

TEST(PtxSemantics, FloatingPointInstructions) {
  std::vector<uint32_t> out;
  CUresult r = run(std::string(kPrologue) + R"(
  mov.f32 %f1, 0f7FFFFFFF;      // NaN
  mov.f32 %f2, 0f3F800000;      // 1.0
  // max ignores a NaN input unless .NaN (ISA 9.7.3.11).
  max.f32 %f3, %f1, %f2;
  max.NaN.f32 %f4, %f1, %f2;
  st.global.f32 [%rd1+0], %f3;
  st.global.f32 [%rd1+4], %f4;
  // cvt.rn.bf16x2.f32 d, a, b puts a in the upper half (ISA 9.7.9.21).
  mov.f32 %f5, 0f40000000;      // 2.0
  cvt.rn.bf16x2.f32 %r1, %f2, %f5;
  st.global.b32 [%rd1+8], %r1;
  // Float to integer: each rounding mode, saturation, NaN to 0.
  mov.f32 %f6, 0fC02CCCCD;      // -2.7
  cvt.rzi.s32.f32 %r2, %f6;
  cvt.rmi.s32.f32 %r3, %f6;
  mov.f32 %f7, 0f40200000;      // 2.5
  cvt.rni.s32.f32 %r4, %f7;
  mov.f32 %f8, 0f501502F9;      // 1e10
  cvt.rzi.s32.f32 %r5, %f8;
  cvt.rzi.s32.f32 %r6, %f1;
  st.global.b32 [%rd1+12], %r2;
  st.global.b32 [%rd1+16], %r3;
  st.global.b32 [%rd1+20], %r4;
  st.global.b32 [%rd1+24], %r5;
  st.global.b32 [%rd1+28], %r6;
  // Ordered and unordered comparisons with NaN (ISA 9.7.6.1).
  setp.ne.f32 %p1, %f1, %f2;
  setp.neu.f32 %p2, %f1, %f2;
  selp.b32 %r7, 1, 0, %p1;
  selp.b32 %r8, 1, 0, %p2;
  st.global.b32 [%rd1+32], %r7;
  st.global.b32 [%rd1+36], %r8;
  // fp8 with satfinite: 1000 clamps to E4M3's 448 (0x7E); 0.5 is 0x30.
  mov.f32 %f9, 0f447A0000;      // 1000
  mov.f32 %f10, 0f3F000000;     // 0.5
  cvt.rn.satfinite.e4m3x2.f32 %r9, %f9, %f10;
  st.global.b32 [%rd1+40], %r9;
  // And back: cvt.rn.f16x2.e4m3x2 (low byte to the low half).
  cvt.rn.f16x2.e4m3x2 %r10, %r9;
  st.global.b32 [%rd1+44], %r10;
  // ex2.approx(-inf) = +0; f32 to f16 rounds to nearest even.
  mov.f32 %f11, 0fFF800000;
  ex2.approx.ftz.f32 %f12, %f11;
  st.global.f32 [%rd1+48], %f12;
  mov.f32 %f13, 0f3F801000;     // 1 + 2^-11: halfway between two f16
  cvt.rn.f16.f32 %rs1, %f13;
  cvt.u32.u16 %r11, %rs1;
  st.global.b32 [%rd1+52], %r11;
  ret;
)",
                   1, out, 14);
  ASSERT_EQ(r, 0) << errorText(r);
  EXPECT_EQ(asFloat(out[0]), 1.0f);
  EXPECT_TRUE(std::isnan(asFloat(out[1])));
  EXPECT_EQ(out[2], 0x3F804000u);
  EXPECT_EQ(int32_t(out[3]), -2);
  EXPECT_EQ(int32_t(out[4]), -3);
  EXPECT_EQ(int32_t(out[5]), 2);
  EXPECT_EQ(out[6], 0x7FFFFFFFu);
  EXPECT_EQ(out[7], 0u);
  EXPECT_EQ(out[8], 0u);
  EXPECT_EQ(out[9], 1u);
  EXPECT_EQ(out[10], 0x7E30u);
  EXPECT_EQ(out[11], (0x5F00u << 16) | 0x3800u); // f16 448, f16 0.5
  EXPECT_EQ(asFloat(out[12]), 0.0f);
  EXPECT_EQ(out[13], 0x3C00u); // ties to even: 1.0
}

TEST(PtxSemantics, RoundingModes) {
  // 1 + 2^-24 is halfway between 1 and the next f32: .rn goes to even
  // (1), .rz and .rm down, .rp up (ISA 9.7.3.1); int-to-float likewise.
  std::vector<uint32_t> out;
  CUresult r = run(std::string(kPrologue) + R"(
  mov.f32 %f1, 0f3F800000;
  mov.f32 %f2, 0f33800000;      // 2^-24
  add.rn.f32 %f3, %f1, %f2;
  add.rz.f32 %f4, %f1, %f2;
  add.rm.f32 %f5, %f1, %f2;
  add.rp.f32 %f6, %f1, %f2;
  st.global.f32 [%rd1+0], %f3;
  st.global.f32 [%rd1+4], %f4;
  st.global.f32 [%rd1+8], %f5;
  st.global.f32 [%rd1+12], %f6;
  mov.b32 %r1, 16777217;        // 2^24 + 1
  cvt.rp.f32.u32 %f7, %r1;
  cvt.rz.f32.u32 %f8, %r1;
  st.global.f32 [%rd1+16], %f7;
  st.global.f32 [%rd1+20], %f8;
  ret;
)",
                   1, out, 6);
  ASSERT_EQ(r, 0) << errorText(r);
  EXPECT_EQ(out[0], 0x3F800000u);
  EXPECT_EQ(out[1], 0x3F800000u);
  EXPECT_EQ(out[2], 0x3F800000u);
  EXPECT_EQ(out[3], 0x3F800001u);
  EXPECT_EQ(asFloat(out[4]), 16777218.0f);
  EXPECT_EQ(asFloat(out[5]), 16777216.0f);
}

TEST(PtxSemantics, ShuffleModes) {
  // shfl.sync (ISA 9.7.9.6) with each mode, c = 0x1f (clamp 31, no
  // segments) for down/bfly/idx and c = 0 for up, over lane ids.
  std::vector<uint32_t> out;
  CUresult r = run(std::string(kPrologue) + R"(
  mov.u32 %r1, %laneid;
  mul.wide.u32 %rd2, %r1, 16;
  add.s64 %rd3, %rd1, %rd2;
  shfl.sync.up.b32 %r2|%p1, %r1, 3, 0, 0xffffffff;
  shfl.sync.down.b32 %r3|%p2, %r1, 5, 0x1f, 0xffffffff;
  shfl.sync.bfly.b32 %r4, %r1, 6, 0x1f, 0xffffffff;
  shfl.sync.idx.b32 %r5, %r1, 9, 0x1f, 0xffffffff;
  selp.b32 %r6, 0x100, 0, %p1;
  selp.b32 %r7, 0x100, 0, %p2;
  or.b32 %r2, %r2, %r6;
  or.b32 %r3, %r3, %r7;
  st.global.v4.b32 [%rd3], {%r2, %r3, %r4, %r5};
  ret;
)",
                   32, out, 128);
  ASSERT_EQ(r, 0) << errorText(r);
  for (uint32_t lane = 0; lane < 32; ++lane) {
    uint32_t up = lane >= 3 ? (lane - 3) | 0x100 : lane;
    uint32_t down = lane + 5 <= 31 ? (lane + 5) | 0x100 : lane;
    EXPECT_EQ(out[4 * lane + 0], up) << lane;
    EXPECT_EQ(out[4 * lane + 1], down) << lane;
    EXPECT_EQ(out[4 * lane + 2], lane ^ 6) << lane;
    EXPECT_EQ(out[4 * lane + 3], 9u) << lane;
  }
}

TEST(PtxSemantics, CpAsyncLandsAtItsWait) {
  // A read of the destination before cp.async.wait_group sees the old
  // contents: the copy completes as late as the ISA allows (9.7.9.25.3),
  // so a kernel missing its wait reads stale data here.
  std::vector<uint32_t> out;
  CUresult r = run(std::string(kPrologue) + R"(
  .shared .align 16 .b8 buf[16];
  mov.b32 %r1, 7;
  st.shared.b32 [buf], %r1;
  mov.b32 %r2, 42;
  st.global.b32 [%rd1+16], %r2;
  add.s64 %rd2, %rd1, 16;
  cp.async.cg.shared.global [buf], [%rd2], 16;
  cp.async.commit_group;
  ld.shared.b32 %r3, [buf];
  st.global.b32 [%rd1+0], %r3;
  cp.async.wait_group 0;
  ld.shared.b32 %r4, [buf];
  st.global.b32 [%rd1+4], %r4;
  ret;
)",
                   1, out, 8);
  ASSERT_EQ(r, 0) << errorText(r);
  EXPECT_EQ(out[0], 7u);
  EXPECT_EQ(out[1], 42u);
}

TEST(PtxSemantics, MbarrierPhasesAndParity) {
  // Two arrivals complete a phase; try_wait.parity asks whether the phase
  // of that parity has completed (ISA 9.7.13.15.16).
  std::vector<uint32_t> out;
  CUresult r;
  r = run(std::string(kPrologue) + R"(
  .shared .align 8 .b64 bar;
  mov.u32 %r1, %tid.x;
  setp.ne.u32 %p1, %r1, 0;
  @%p1 bra WAIT;
  mov.b32 %r2, 2;
  mbarrier.init.shared.b64 [bar], %r2;
WAIT:
  bar.sync 0;
  mbarrier.try_wait.parity.shared.b64 %p2, [bar], 1;
  selp.b32 %r3, 1, 0, %p2;
  mbarrier.test_wait.parity.shared.b64 %p4, [bar], 0;
  selp.b32 %r5, 2, 0, %p4;
  or.b32 %r3, %r3, %r5;
  mbarrier.arrive.shared.b64 %rd2, [bar];
LOOP:
  mbarrier.try_wait.parity.shared.b64 %p3, [bar], 0;
  @!%p3 bra LOOP;
  mul.wide.u32 %rd3, %r1, 4;
  add.s64 %rd4, %rd1, %rd3;
  st.global.b32 [%rd4], %r3;
  ret;
)",
          2, out, 2);
  ASSERT_EQ(r, 0) << errorText(r);
  // Both threads saw parity 1 done; the test_waits of phase 0 returned
  // (neither blocks: both arrivals come after them).
  EXPECT_EQ(out[0] & 1, 1u);
  EXPECT_EQ(out[1] & 1, 1u);
}

TEST(PtxSemantics, DynamicSharedMemoryFollowsTheStaticVariables) {
  // A regression: dynamic shared memory once started at 0, on top of the
  // kernel's static variables.
  std::string ptx = R"(.version 8.0
.target sm_90a
.address_size 64
.extern .shared .align 16 .b8 dyn[];
.visible .entry k(.param .u64 out)
{
  .reg .b32 %r<8>;
  .reg .b64 %rd<4>;
  .shared .align 4 .b32 fixed;
  ld.param.u64 %rd1, [out];
  cvta.to.global.u64 %rd1, %rd1;
  mov.b32 %r1, 11;
  st.shared.b32 [fixed], %r1;
  mov.b32 %r2, 22;
  st.shared.b32 [dyn], %r2;
  ld.shared.b32 %r3, [fixed];
  mov.u32 %r4, dyn;
  mov.u32 %r5, %dynamic_smem_size;
  st.global.b32 [%rd1], %r3;
  st.global.b32 [%rd1+4], %r4;
  st.global.b32 [%rd1+8], %r5;
  ret;
}
)";
  CUmodule module;
  ASSERT_EQ(cuModuleLoadData(&module, ptx.c_str()), 0);
  CUfunction fn;
  ASSERT_EQ(cuModuleGetFunction(&fn, module, "k"), 0);
  CUdeviceptr buffer;
  cuMemAlloc_v2(&buffer, 12);
  void *params[] = {&buffer};
  CUresult r = cuLaunchKernel(fn, 1, 1, 1, 1, 1, 1, 64, nullptr, params,
                              nullptr);
  ASSERT_EQ(r, 0) << errorText(r);
  uint32_t out[3];
  cuMemcpyDtoH_v2(out, buffer, 12);
  EXPECT_EQ(out[0], 11u);
  EXPECT_EQ(out[1], 16u); // after the 4-byte variable, aligned to 16
  EXPECT_EQ(out[2], 64u);
  cuMemFree_v2(buffer);
  cuModuleUnload(module);
}

TEST(PtxSemantics, KernelParametersThroughGenericAddresses) {
  // cvta.param (sm_70+): a parameter read through a generic pointer, as
  // kernels read a __grid_constant__ tensor map passed by value.
  std::vector<uint32_t> out;
  CUresult r = run(std::string(kPrologue) + R"(
  mov.u64 %rd2, out;
  cvta.param.u64 %rd3, %rd2;
  ld.u64 %rd4, [%rd3];
  cvta.to.global.u64 %rd4, %rd4;
  setp.eq.u64 %p1, %rd4, %rd1;
  selp.b32 %r1, 1, 0, %p1;
  st.global.b32 [%rd4], %r1;
  ret;
)",
                   1, out, 1);
  ASSERT_EQ(r, 0) << errorText(r);
  EXPECT_EQ(out[0], 1u);
}

TEST(PtxFaults, StoreOverALiveMbarrier) {
  std::vector<uint32_t> out;
  CUresult r = run(std::string(kPrologue) + R"(
  .shared .align 8 .b64 bar;
  mov.b32 %r1, 1;
  mbarrier.init.shared.b64 [bar], %r1;
  st.shared.b32 [bar+4], %r1;
  ret;
)",
                   1, out, 1);
  EXPECT_EQ(r, 700);
  EXPECT_NE(errorText(r).find("overwrites the live mbarrier"),
            std::string::npos) << errorText(r);
}

TEST(PtxFaults, OutOfBoundsGlobalStore) {
  std::vector<uint32_t> out;
  CUresult r = run(std::string(kPrologue) + R"(
  mov.b32 %r1, 1;
  st.global.b32 [%rd1+64], %r1;
  ret;
)",
                   1, out, 16);
  EXPECT_EQ(r, 700);
  std::string text = errorText(r);
  EXPECT_NE(text.find("out-of-bounds global write of 4 bytes"),
            std::string::npos) << text;
  EXPECT_NE(text.find("0 bytes past the end of the 64-byte allocation"),
            std::string::npos) << text;
  EXPECT_NE(text.find("kernel k, CTA (0,0,0), thread (0,0,0)"),
            std::string::npos) << text;
  EXPECT_NE(text.find("st.global.b32 [%rd1+64], %r1;"), std::string::npos)
      << text;
}

TEST(PtxFaults, ReportsNameTheLineAfterMultiLineInstructions) {
  // A regression: lines were counted twice inside instructions that span
  // several lines, so later reports quoted the wrong source line.
  std::vector<uint32_t> out;
  CUresult r = run(std::string(kPrologue) + R"(
  mov.b32 %r1, 1;
  st.global.v4.b32
      [%rd1],
      {%r1, %r1, %r1, %r1};
  st.global.b32 [%rd1+16], %r1;
  ret;
)",
                   1, out, 4);
  EXPECT_EQ(r, 700);
  EXPECT_NE(errorText(r).find("st.global.b32 [%rd1+16], %r1;"),
            std::string::npos) << errorText(r);
}

TEST(PtxFaults, OutOfBoundsSharedLoad) {
  std::vector<uint32_t> out;
  CUresult r = run(std::string(kPrologue) + R"(
  .shared .align 4 .b8 tile[64];
  mov.u32 %r1, %tid.x;
  mul.lo.u32 %r2, %r1, 4;
  mov.u32 %r3, tile;
  add.u32 %r4, %r3, %r2;
  ld.shared.b32 %r5, [%r4];
  ret;
)",
                   32, out, 1);
  EXPECT_EQ(r, 700);
  std::string text = errorText(r);
  // 16 threads fit; thread 16 reads past the 64 bytes.
  EXPECT_NE(text.find("thread (16,0,0)"), std::string::npos) << text;
  EXPECT_NE(text.find("out-of-bounds shared memory read"), std::string::npos)
      << text;
}

TEST(PtxFaults, MisalignedAccess) {
  std::vector<uint32_t> out;
  CUresult r = run(std::string(kPrologue) + R"(
  ld.global.b32 %r1, [%rd1+2];
  ret;
)",
                   1, out, 4);
  EXPECT_EQ(r, 716);
  EXPECT_NE(errorText(r).find("misaligned 4-byte read"), std::string::npos);
}

TEST(PtxFaults, DeadlockNamesWhatEachThreadWaitsOn) {
  // Expects two arrivals, gets one: the phase never completes.
  std::vector<uint32_t> out;
  CUresult r = run(std::string(kPrologue) + R"(
  .shared .align 8 .b64 bar;
  mov.b32 %r2, 2;
  mbarrier.init.shared.b64 [bar], %r2;
  mbarrier.arrive.shared.b64 %rd2, [bar];
LOOP:
  mbarrier.try_wait.parity.shared.b64 %p1, [bar], 0;
  @!%p1 bra LOOP;
  ret;
)",
                   1, out, 1);
  EXPECT_EQ(r, 702);
  std::string text = errorText(r);
  EXPECT_NE(text.find("deadlock: all 1 live threads wait"), std::string::npos)
      << text;
  EXPECT_NE(text.find("1 arrivals and 0 transaction bytes outstanding"),
            std::string::npos) << text;
}

TEST(PtxFaults, BarrierDeadlockAfterAnEarlyExit) {
  // A named barrier expecting 64 threads, one warp of which exits.
  std::vector<uint32_t> out;
  CUresult r = run(std::string(kPrologue) + R"(
  mov.u32 %r1, %tid.x;
  setp.ge.u32 %p1, %r1, 32;
  @%p1 bra DONE;
  bar.sync 1, 64;
DONE:
  ret;
)",
                   64, out, 1);
  EXPECT_EQ(r, 702);
  std::string text = errorText(r);
  EXPECT_NE(text.find("threads 0-31: at barrier 1 (32 of 64 arrived)"),
            std::string::npos) << text;
}

TEST(PtxFaults, DivergentWarpCollective) {
  std::vector<uint32_t> out;
  CUresult r = run(std::string(kPrologue) + R"(
  mov.u32 %r1, %laneid;
  setp.lt.u32 %p1, %r1, 16;
  @%p1 bra A;
  shfl.sync.bfly.b32 %r2, %r1, 1, 0x1f, 0xffffffff;
  bra.uni DONE;
A:
  vote.sync.ballot.b32 %r3, %p1, 0xffffffff;
DONE:
  ret;
)",
                   32, out, 1);
  EXPECT_EQ(r, 719);
  EXPECT_NE(errorText(r).find("wait at different collectives"),
            std::string::npos) << errorText(r);
}

TEST(PtxFaults, UnmodelledInstructionIsRefusedAtLoad) {
  std::vector<uint32_t> out;
  CUresult r = run(std::string(kPrologue) + R"(
  tex.1d.v4.f32.s32 {%f1, %f2, %f3, %f4}, [%rd1, {%r1}];
  ret;
)",
                   1, out, 1);
  EXPECT_EQ(r, 218);
  EXPECT_NE(errorText(r).find("instruction 'tex.1d.v4.f32.s32' is not modelled"),
            std::string::npos) << errorText(r);
}

/// With ATTNSIM_RACECHECK set for the launch.
CUresult runCheckingRaces(const std::string &body, unsigned threads,
                          std::vector<uint32_t> &out) {
  setenv("ATTNSIM_RACECHECK", "1", 1);
  CUresult r = run(body, threads, out, 64);
  unsetenv("ATTNSIM_RACECHECK");
  return r;
}

// Thread 0 writes a shared word that warp 1 reads; `sync` goes between.
std::string producerConsumer(const std::string &sync) {
  return std::string(kPrologue) + R"(
  .shared .align 4 .b32 word;
  mov.u32 %r1, %tid.x;
  setp.ne.u32 %p1, %r1, 0;
  @%p1 bra SYNC;
  mov.b32 %r2, 5;
  st.shared.b32 [word], %r2;
SYNC:
)" + sync + R"(
  setp.lt.u32 %p2, %r1, 32;
  @%p2 bra DONE;
  ld.shared.b32 %r3, [word];
  st.global.b32 [%rd1], %r3;
DONE:
  ret;
)";
}

TEST(PtxRaces, UnorderedSharedAccessesAreReported) {
  std::vector<uint32_t> out;
  CUresult r = runCheckingRaces(producerConsumer(""), 64, out);
  EXPECT_EQ(r, 719);
  std::string text = errorText(r);
  EXPECT_NE(text.find("shared-memory race"), std::string::npos) << text;
  EXPECT_NE(text.find("thread 32 reads it, unordered with the write by "
                      "thread 0"),
            std::string::npos) << text;
}

TEST(PtxRaces, BarriersOrderThem) {
  std::vector<uint32_t> out;
  CUresult r = runCheckingRaces(producerConsumer("  bar.sync 0;"), 64, out);
  ASSERT_EQ(r, 0) << errorText(r);
  EXPECT_EQ(out[0], 5u);
}

TEST(PtxRaces, MbarrierPhasesOrderThem) {
  // Thread 0 arrives after its write; warp 1 waits for the phase. Both
  // warps arrive (count 2 = thread 0 and thread 32).
  std::vector<uint32_t> out;
  CUresult r = runCheckingRaces(std::string(kPrologue) + R"(
  .shared .align 8 .b64 bar;
  .shared .align 4 .b32 word;
  mov.u32 %r1, %tid.x;
  setp.ne.u32 %p1, %r1, 0;
  @%p1 bra INIT_DONE;
  mov.b32 %r9, 1;
  mbarrier.init.shared.b64 [bar], %r9;
INIT_DONE:
  bar.sync 0;
  @%p1 bra CONSUMER;
  mov.b32 %r2, 9;
  st.shared.b32 [word], %r2;
  mbarrier.arrive.shared.b64 %rd5, [bar];
  bra.uni DONE;
CONSUMER:
  setp.ne.u32 %p3, %r1, 32;
  @%p3 bra DONE;
WAIT:
  mbarrier.try_wait.parity.shared.b64 %p2, [bar], 0;
  @!%p2 bra WAIT;
  ld.shared.b32 %r3, [word];
  st.global.b32 [%rd1], %r3;
DONE:
  ret;
)",
                                64, out);
  ASSERT_EQ(r, 0) << errorText(r);
  EXPECT_EQ(out[0], 9u);
}

TEST(PtxRaces, MbarrierUsedUnorderedWithItsInit) {
  // Thread 0 initializes; warp 1 waits on it with no barrier between.
  std::vector<uint32_t> out;
  CUresult r = runCheckingRaces(std::string(kPrologue) + R"(
  .shared .align 8 .b64 bar;
  mov.u32 %r1, %tid.x;
  setp.ne.u32 %p1, %r1, 0;
  @%p1 bra USE;
  mov.b32 %r9, 1;
  mbarrier.init.shared.b64 [bar], %r9;
  mbarrier.arrive.shared.b64 %rd5, [bar];
  bra.uni DONE;
USE:
  setp.ne.u32 %p3, %r1, 32;
  @%p3 bra DONE;
  mbarrier.try_wait.parity.shared.b64 %p2, [bar], 0;
DONE:
  ret;
)",
                                64, out);
  EXPECT_EQ(r, 719);
  EXPECT_NE(errorText(r).find("thread 32 reads it, unordered with the write "
                              "by thread 0"),
            std::string::npos) << errorText(r);
}

TEST(PtxSchedule, RandomSchedulesInterleaveThreads) {
  // Each thread takes a ticket from a shared counter after a barrier. The
  // default schedule always hands them out in the same order;
  // ATTNSIM_SCHEDULE=random:SEED gives another permutation.
  std::string body = std::string(kPrologue) + R"(
  .shared .align 4 .b32 counter;
  mov.u32 %r1, %tid.x;
  setp.ne.u32 %p1, %r1, 0;
  @%p1 bra GO;
  mov.b32 %r2, 0;
  st.shared.b32 [counter], %r2;
GO:
  bar.sync 0;
  mov.u32 %r3, counter;
  atom.shared.add.u32 %r4, [%r3], 1;
  mul.wide.u32 %rd2, %r1, 4;
  add.s64 %rd3, %rd1, %rd2;
  st.global.b32 [%rd3], %r4;
  ret;
)";
  std::vector<uint32_t> inOrder, shuffled;
  ASSERT_EQ(run(body, 64, inOrder, 64), 0);
  setenv("ATTNSIM_SCHEDULE", "random:7", 1);
  CUresult r = run(body, 64, shuffled, 64);
  unsetenv("ATTNSIM_SCHEDULE");
  ASSERT_EQ(r, 0) << errorText(r);
  // Both are permutations: atomics stay atomic.
  for (std::vector<uint32_t> tickets : {inOrder, shuffled}) {
    std::sort(tickets.begin(), tickets.end());
    for (uint32_t t = 0; t < 64; ++t)
      EXPECT_EQ(tickets[t], t);
  }
  EXPECT_NE(shuffled, inOrder);
}

/// The bank-conflict counters of one launch of `body` by one warp.
struct Wavefronts {
  unsigned long long taken = 0, ideal = 0;
};

unsigned long long profileField(const std::string &line,
                                const std::string &name) {
  size_t at = line.find("\"" + name + "\": ");
  if (at == std::string::npos)
    return ~0ull;
  return std::stoull(line.substr(at + name.size() + 4));
}

Wavefronts sharedWavefronts(const std::string &body) {
  // One file per test: ctest runs the tests of this binary as parallel
  // processes, and a shared name let one test remove another's profile.
  std::string path =
      ::testing::TempDir() + "attnsim_wavefronts_" +
      ::testing::UnitTest::GetInstance()->current_test_info()->name() + "_" +
      std::to_string(getpid()) + ".jsonl";
  std::remove(path.c_str());
  setenv("ATTNSIM_PROFILE", path.c_str(), 1);
  std::vector<uint32_t> out;
  CUresult r = run(std::string(kPrologue) + R"(
  .shared .align 128 .b8 buf[4096];
  mov.u32 %r0, %tid.x;
  mov.u32 %r1, buf;
)" + body + "\n  ret;\n",
                   32, out, 1024);
  unsetenv("ATTNSIM_PROFILE");
  EXPECT_EQ(r, 0) << errorText(r);
  std::ifstream in(path);
  std::string line;
  std::getline(in, line);
  std::remove(path.c_str());
  return {profileField(line, "shared_wavefronts"),
          profileField(line, "shared_ideal_wavefronts")};
}

TEST(PtxProfile, EveryFieldIsNamedOnce) {
  // The CTA's allocation once shared its name with the load/store bytes:
  // JSON readers silently kept one of the two.
  std::string path = ::testing::TempDir() + "attnsim_fields_" +
                     std::to_string(getpid()) + ".jsonl";
  std::remove(path.c_str());
  setenv("ATTNSIM_PROFILE", path.c_str(), 1);
  std::vector<uint32_t> out;
  CUresult r = run(std::string(kPrologue) + R"(
  .shared .align 16 .b8 buf[256];
  mov.u32 %r1, buf;
  ld.shared.b32 %r3, [%r1];
  ret;
)",
                   32, out, 1024);
  unsetenv("ATTNSIM_PROFILE");
  ASSERT_EQ(r, 0) << errorText(r);
  std::ifstream in(path);
  std::string line;
  std::getline(in, line);
  std::remove(path.c_str());
  std::map<std::string, int> seen;
  // Keys of the top-level object and of by_class/warp_instructions: count
  // each per object by tracking the nesting depth.
  int depth = 0;
  std::string scope;
  for (size_t i = 0; i < line.size(); ++i) {
    char c = line[i];
    if (c == '{')
      ++depth;
    else if (c == '}')
      --depth;
    else if (c == '"') {
      size_t end = line.find('"', i + 1);
      ASSERT_NE(end, std::string::npos) << line;
      std::string word = line.substr(i + 1, end - i - 1);
      if (line.compare(end + 1, 1, ":") == 0) {
        if (depth == 1)
          scope = word;
        EXPECT_EQ(++seen[std::to_string(depth) + (depth == 1 ? "" : scope) +
                         "/" + word],
                  1)
            << word << " twice in " << line;
      }
      i = end;
    }
  }
  EXPECT_EQ(profileField(line, "cta_shared_bytes"), 256u) << line;
  EXPECT_EQ(profileField(line, "shared_bytes"), 4u * 32) << line;
}

TEST(PtxProfile, SharedWavefrontsOfWordAccesses) {
  // 32 banks of 4-byte words (CUDA C++ Programming Guide, "Shared Memory"):
  // consecutive words are conflict-free, a stride of 2 words puts two
  // lanes in each even bank, a stride of 32 words all 32 lanes in bank 0.
  Wavefronts w = sharedWavefronts(R"(
  mad.lo.u32 %r2, %r0, 4, %r1;
  ld.shared.b32 %r3, [%r2];)");
  EXPECT_EQ(w.taken, 1u);
  EXPECT_EQ(w.ideal, 1u);
  w = sharedWavefronts(R"(
  mad.lo.u32 %r2, %r0, 8, %r1;
  st.shared.b32 [%r2], %r0;)");
  EXPECT_EQ(w.taken, 2u);
  EXPECT_EQ(w.ideal, 1u);
  w = sharedWavefronts(R"(
  mad.lo.u32 %r2, %r0, 128, %r1;
  ld.shared.b32 %r3, [%r2];)");
  EXPECT_EQ(w.taken, 32u);
  EXPECT_EQ(w.ideal, 1u);
  // Every lane reads the same word, or two lanes each word: broadcasts.
  w = sharedWavefronts(R"(
  ld.shared.b32 %r3, [%r1+64];)");
  EXPECT_EQ(w.taken, 1u);
  w = sharedWavefronts(R"(
  shr.u32 %r2, %r0, 1;
  mad.lo.u32 %r2, %r2, 4, %r1;
  ld.shared.b32 %r3, [%r2];)");
  EXPECT_EQ(w.taken, 1u);
}

TEST(PtxProfile, SharedWavefrontsOfWideAccessesGoByPhase) {
  // 16 bytes per lane: four phases of 8 lanes, each 128 contiguous bytes.
  Wavefronts w = sharedWavefronts(R"(
  mad.lo.u32 %r2, %r0, 16, %r1;
  ld.shared.v4.b32 {%r3, %r4, %r5, %r6}, [%r2];)");
  EXPECT_EQ(w.taken, 4u);
  EXPECT_EQ(w.ideal, 4u);
  // Rows 128 bytes apart: the 8 lanes of a phase share banks 0-3.
  w = sharedWavefronts(R"(
  mad.lo.u32 %r2, %r0, 128, %r1;
  st.shared.v2.b64 [%r2], {%rd1, %rd1};)");
  EXPECT_EQ(w.taken, 4u * 8u);
  EXPECT_EQ(w.ideal, 4u);
  // cp.async writes count like stores: 16-byte chunks at a 128-byte
  // stride conflict, the same chunks XOR-swizzled by row (chunk ^ row % 8)
  // do not.
  w = sharedWavefronts(R"(
  mad.lo.u32 %r2, %r0, 128, %r1;
  cp.async.cg.shared.global [%r2], [%rd1], 16;
  cp.async.wait_all;)");
  EXPECT_EQ(w.taken, 32u);
  EXPECT_EQ(w.ideal, 4u);
  w = sharedWavefronts(R"(
  and.b32 %r3, %r0, 7;
  shl.b32 %r3, %r3, 4;
  mad.lo.u32 %r2, %r0, 128, %r1;
  add.u32 %r2, %r2, %r3;
  and.b32 %r2, %r2, 4095;
  cp.async.cg.shared.global [%r2], [%rd1], 16;
  cp.async.wait_all;)");
  EXPECT_EQ(w.taken, 4u);
}

TEST(PtxProfile, SharedWavefrontsOfLdmatrix) {
  // ldmatrix .x4: lanes 8i..8i+7 give matrix i's row addresses, one phase
  // per matrix. Rows 16 bytes apart cover the 32 banks; rows 128 bytes
  // apart (a row-major tile of 64 halves) all start in bank 0, 8-way.
  Wavefronts w = sharedWavefronts(R"(
  mad.lo.u32 %r2, %r0, 16, %r1;
  ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%r3, %r4, %r5, %r6}, [%r2];)");
  EXPECT_EQ(w.taken, 4u);
  EXPECT_EQ(w.ideal, 4u);
  w = sharedWavefronts(R"(
  and.b32 %r2, %r0, 7;
  mad.lo.u32 %r2, %r2, 128, %r1;
  ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%r3, %r4, %r5, %r6}, [%r2];)");
  EXPECT_EQ(w.taken, 32u);
  EXPECT_EQ(w.ideal, 4u);
  // The same rows with 16-byte chunk (lane / 8) XORed by row % 8.
  w = sharedWavefronts(R"(
  and.b32 %r2, %r0, 7;
  shr.u32 %r3, %r0, 3;
  xor.b32 %r3, %r3, %r2;
  shl.b32 %r3, %r3, 4;
  mad.lo.u32 %r2, %r2, 128, %r1;
  add.u32 %r2, %r2, %r3;
  ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%r3, %r4, %r5, %r6}, [%r2];)");
  EXPECT_EQ(w.taken, 4u);
}

TEST(PtxFaults, CubinsAreRefusedSoTheLauncherLoadsPtx) {
  CUmodule module = nullptr;
  const char elf[] = "\x7f" "ELF\x02\x01\x01";
  EXPECT_EQ(cuModuleLoadData(&module, elf), 209);
}

} // namespace
