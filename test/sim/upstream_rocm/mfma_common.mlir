// MFMA programs for the AMD simulator: one wave computes D = A x B with
// a single amdgpu.mfma (C = 0), lowered with the same LLVM as attnc's
// kernels. Every lane loads its A and B elements and stores its D elements
// at the registers and lanes AMD's Matrix Instruction Calculator
// (github.com/ROCm/amd_matrix_instruction_calculator, --get-register) gives
// for the instruction LLVM selects, so the result is the plain matrix
// product exactly when the simulator's operand layouts and arithmetic
// agree with AMD's published ones; AmdUpstreamTest.cpp compares it with
// the product computed on the host.
//
// Both chips: v_mfma_f32_16x16x16_f16 / _bf16 (gfx90a: 16x16x16f16,
// 16x16x16bf16_1k), v_mfma_f32_32x32x8_f16 and the 16-block
// v_mfma_f32_4x4x4_16b_f16.
module attributes {gpu.container_module} {
  gpu.module @mfma {
    gpu.func @mfma_16x16x16_f16(%A: memref<16x16xf16>, %B: memref<16x16xf16>, %D: memref<16x16xf32>) kernel {
      %lane = gpu.thread_id x
      %c0 = arith.constant 0 : index
      %c1 = arith.constant 1 : index
      %c2 = arith.constant 2 : index
      %c3 = arith.constant 3 : index
      %c4 = arith.constant 4 : index
      %c16 = arith.constant 16 : index
      %row = arith.remui %lane, %c16 : index
      %grp = arith.divui %lane, %c16 : index
      %kb = arith.muli %grp, %c4 : index
      %k0 = arith.addi %kb, %c0 : index
      %k1 = arith.addi %kb, %c1 : index
      %k2 = arith.addi %kb, %c2 : index
      %k3 = arith.addi %kb, %c3 : index
      %ib = arith.muli %grp, %c4 : index
      %i0 = arith.addi %ib, %c0 : index
      %i1 = arith.addi %ib, %c1 : index
      %i2 = arith.addi %ib, %c2 : index
      %i3 = arith.addi %ib, %c3 : index
      %a0 = memref.load %A[%row, %k0] : memref<16x16xf16>
      %a1 = memref.load %A[%row, %k1] : memref<16x16xf16>
      %a2 = memref.load %A[%row, %k2] : memref<16x16xf16>
      %a3 = memref.load %A[%row, %k3] : memref<16x16xf16>
      %av = vector.from_elements %a0, %a1, %a2, %a3 : vector<4xf16>
      %b0 = memref.load %B[%k0, %row] : memref<16x16xf16>
      %b1 = memref.load %B[%k1, %row] : memref<16x16xf16>
      %b2 = memref.load %B[%k2, %row] : memref<16x16xf16>
      %b3 = memref.load %B[%k3, %row] : memref<16x16xf16>
      %bv = vector.from_elements %b0, %b1, %b2, %b3 : vector<4xf16>
      %acc = arith.constant dense<0.0> : vector<4xf32>
      %d = amdgpu.mfma 16x16x16 %av * %bv + %acc blgp = none : vector<4xf16>, vector<4xf16>, vector<4xf32>
      %d0 = vector.extract %d[0] : f32 from vector<4xf32>
      memref.store %d0, %D[%i0, %row] : memref<16x16xf32>
      %d1 = vector.extract %d[1] : f32 from vector<4xf32>
      memref.store %d1, %D[%i1, %row] : memref<16x16xf32>
      %d2 = vector.extract %d[2] : f32 from vector<4xf32>
      memref.store %d2, %D[%i2, %row] : memref<16x16xf32>
      %d3 = vector.extract %d[3] : f32 from vector<4xf32>
      memref.store %d3, %D[%i3, %row] : memref<16x16xf32>
      gpu.return
    }
    gpu.func @mfma_16x16x16_bf16(%A: memref<16x16xbf16>, %B: memref<16x16xbf16>, %D: memref<16x16xf32>) kernel {
      %lane = gpu.thread_id x
      %c0 = arith.constant 0 : index
      %c1 = arith.constant 1 : index
      %c2 = arith.constant 2 : index
      %c3 = arith.constant 3 : index
      %c4 = arith.constant 4 : index
      %c16 = arith.constant 16 : index
      %row = arith.remui %lane, %c16 : index
      %grp = arith.divui %lane, %c16 : index
      %kb = arith.muli %grp, %c4 : index
      %k0 = arith.addi %kb, %c0 : index
      %k1 = arith.addi %kb, %c1 : index
      %k2 = arith.addi %kb, %c2 : index
      %k3 = arith.addi %kb, %c3 : index
      %ib = arith.muli %grp, %c4 : index
      %i0 = arith.addi %ib, %c0 : index
      %i1 = arith.addi %ib, %c1 : index
      %i2 = arith.addi %ib, %c2 : index
      %i3 = arith.addi %ib, %c3 : index
      %a0 = memref.load %A[%row, %k0] : memref<16x16xbf16>
      %a1 = memref.load %A[%row, %k1] : memref<16x16xbf16>
      %a2 = memref.load %A[%row, %k2] : memref<16x16xbf16>
      %a3 = memref.load %A[%row, %k3] : memref<16x16xbf16>
      %av = vector.from_elements %a0, %a1, %a2, %a3 : vector<4xbf16>
      %b0 = memref.load %B[%k0, %row] : memref<16x16xbf16>
      %b1 = memref.load %B[%k1, %row] : memref<16x16xbf16>
      %b2 = memref.load %B[%k2, %row] : memref<16x16xbf16>
      %b3 = memref.load %B[%k3, %row] : memref<16x16xbf16>
      %bv = vector.from_elements %b0, %b1, %b2, %b3 : vector<4xbf16>
      %acc = arith.constant dense<0.0> : vector<4xf32>
      %d = amdgpu.mfma 16x16x16 %av * %bv + %acc blgp = none : vector<4xbf16>, vector<4xbf16>, vector<4xf32>
      %d0 = vector.extract %d[0] : f32 from vector<4xf32>
      memref.store %d0, %D[%i0, %row] : memref<16x16xf32>
      %d1 = vector.extract %d[1] : f32 from vector<4xf32>
      memref.store %d1, %D[%i1, %row] : memref<16x16xf32>
      %d2 = vector.extract %d[2] : f32 from vector<4xf32>
      memref.store %d2, %D[%i2, %row] : memref<16x16xf32>
      %d3 = vector.extract %d[3] : f32 from vector<4xf32>
      memref.store %d3, %D[%i3, %row] : memref<16x16xf32>
      gpu.return
    }
    gpu.func @mfma_32x32x8_f16(%A: memref<32x8xf16>, %B: memref<8x32xf16>, %D: memref<32x32xf32>) kernel {
      %lane = gpu.thread_id x
      %c0 = arith.constant 0 : index
      %c1 = arith.constant 1 : index
      %c2 = arith.constant 2 : index
      %c3 = arith.constant 3 : index
      %c4 = arith.constant 4 : index
      %c8 = arith.constant 8 : index
      %c9 = arith.constant 9 : index
      %c10 = arith.constant 10 : index
      %c11 = arith.constant 11 : index
      %c16 = arith.constant 16 : index
      %c17 = arith.constant 17 : index
      %c18 = arith.constant 18 : index
      %c19 = arith.constant 19 : index
      %c24 = arith.constant 24 : index
      %c25 = arith.constant 25 : index
      %c26 = arith.constant 26 : index
      %c27 = arith.constant 27 : index
      %c32 = arith.constant 32 : index
      %row = arith.remui %lane, %c32 : index
      %grp = arith.divui %lane, %c32 : index
      %kb = arith.muli %grp, %c4 : index
      %k0 = arith.addi %kb, %c0 : index
      %k1 = arith.addi %kb, %c1 : index
      %k2 = arith.addi %kb, %c2 : index
      %k3 = arith.addi %kb, %c3 : index
      %ib = arith.muli %grp, %c4 : index
      %i0 = arith.addi %ib, %c0 : index
      %i1 = arith.addi %ib, %c1 : index
      %i2 = arith.addi %ib, %c2 : index
      %i3 = arith.addi %ib, %c3 : index
      %i4 = arith.addi %ib, %c8 : index
      %i5 = arith.addi %ib, %c9 : index
      %i6 = arith.addi %ib, %c10 : index
      %i7 = arith.addi %ib, %c11 : index
      %i8 = arith.addi %ib, %c16 : index
      %i9 = arith.addi %ib, %c17 : index
      %i10 = arith.addi %ib, %c18 : index
      %i11 = arith.addi %ib, %c19 : index
      %i12 = arith.addi %ib, %c24 : index
      %i13 = arith.addi %ib, %c25 : index
      %i14 = arith.addi %ib, %c26 : index
      %i15 = arith.addi %ib, %c27 : index
      %a0 = memref.load %A[%row, %k0] : memref<32x8xf16>
      %a1 = memref.load %A[%row, %k1] : memref<32x8xf16>
      %a2 = memref.load %A[%row, %k2] : memref<32x8xf16>
      %a3 = memref.load %A[%row, %k3] : memref<32x8xf16>
      %av = vector.from_elements %a0, %a1, %a2, %a3 : vector<4xf16>
      %b0 = memref.load %B[%k0, %row] : memref<8x32xf16>
      %b1 = memref.load %B[%k1, %row] : memref<8x32xf16>
      %b2 = memref.load %B[%k2, %row] : memref<8x32xf16>
      %b3 = memref.load %B[%k3, %row] : memref<8x32xf16>
      %bv = vector.from_elements %b0, %b1, %b2, %b3 : vector<4xf16>
      %acc = arith.constant dense<0.0> : vector<16xf32>
      %d = amdgpu.mfma 32x32x8 %av * %bv + %acc blgp = none : vector<4xf16>, vector<4xf16>, vector<16xf32>
      %d0 = vector.extract %d[0] : f32 from vector<16xf32>
      memref.store %d0, %D[%i0, %row] : memref<32x32xf32>
      %d1 = vector.extract %d[1] : f32 from vector<16xf32>
      memref.store %d1, %D[%i1, %row] : memref<32x32xf32>
      %d2 = vector.extract %d[2] : f32 from vector<16xf32>
      memref.store %d2, %D[%i2, %row] : memref<32x32xf32>
      %d3 = vector.extract %d[3] : f32 from vector<16xf32>
      memref.store %d3, %D[%i3, %row] : memref<32x32xf32>
      %d4 = vector.extract %d[4] : f32 from vector<16xf32>
      memref.store %d4, %D[%i4, %row] : memref<32x32xf32>
      %d5 = vector.extract %d[5] : f32 from vector<16xf32>
      memref.store %d5, %D[%i5, %row] : memref<32x32xf32>
      %d6 = vector.extract %d[6] : f32 from vector<16xf32>
      memref.store %d6, %D[%i6, %row] : memref<32x32xf32>
      %d7 = vector.extract %d[7] : f32 from vector<16xf32>
      memref.store %d7, %D[%i7, %row] : memref<32x32xf32>
      %d8 = vector.extract %d[8] : f32 from vector<16xf32>
      memref.store %d8, %D[%i8, %row] : memref<32x32xf32>
      %d9 = vector.extract %d[9] : f32 from vector<16xf32>
      memref.store %d9, %D[%i9, %row] : memref<32x32xf32>
      %d10 = vector.extract %d[10] : f32 from vector<16xf32>
      memref.store %d10, %D[%i10, %row] : memref<32x32xf32>
      %d11 = vector.extract %d[11] : f32 from vector<16xf32>
      memref.store %d11, %D[%i11, %row] : memref<32x32xf32>
      %d12 = vector.extract %d[12] : f32 from vector<16xf32>
      memref.store %d12, %D[%i12, %row] : memref<32x32xf32>
      %d13 = vector.extract %d[13] : f32 from vector<16xf32>
      memref.store %d13, %D[%i13, %row] : memref<32x32xf32>
      %d14 = vector.extract %d[14] : f32 from vector<16xf32>
      memref.store %d14, %D[%i14, %row] : memref<32x32xf32>
      %d15 = vector.extract %d[15] : f32 from vector<16xf32>
      memref.store %d15, %D[%i15, %row] : memref<32x32xf32>
      gpu.return
    }
    gpu.func @mfma_4x4x4_16b_f16(%A: memref<16x4x4xf16>, %B: memref<16x4x4xf16>, %D: memref<16x4x4xf32>) kernel {
      %lane = gpu.thread_id x
      %c0 = arith.constant 0 : index
      %c1 = arith.constant 1 : index
      %c2 = arith.constant 2 : index
      %c3 = arith.constant 3 : index
      %c4 = arith.constant 4 : index
      %row = arith.remui %lane, %c4 : index
      %blk = arith.divui %lane, %c4 : index
      %a0 = memref.load %A[%blk, %row, %c0] : memref<16x4x4xf16>
      %a1 = memref.load %A[%blk, %row, %c1] : memref<16x4x4xf16>
      %a2 = memref.load %A[%blk, %row, %c2] : memref<16x4x4xf16>
      %a3 = memref.load %A[%blk, %row, %c3] : memref<16x4x4xf16>
      %av = vector.from_elements %a0, %a1, %a2, %a3 : vector<4xf16>
      %b0 = memref.load %B[%blk, %c0, %row] : memref<16x4x4xf16>
      %b1 = memref.load %B[%blk, %c1, %row] : memref<16x4x4xf16>
      %b2 = memref.load %B[%blk, %c2, %row] : memref<16x4x4xf16>
      %b3 = memref.load %B[%blk, %c3, %row] : memref<16x4x4xf16>
      %bv = vector.from_elements %b0, %b1, %b2, %b3 : vector<4xf16>
      %acc = arith.constant dense<0.0> : vector<4xf32>
      %d = amdgpu.mfma 4x4x4 %av * %bv + %acc { blocks = 16 : i32 } blgp = none : vector<4xf16>, vector<4xf16>, vector<4xf32>
      %d0 = vector.extract %d[0] : f32 from vector<4xf32>
      memref.store %d0, %D[%blk, %c0, %row] : memref<16x4x4xf32>
      %d1 = vector.extract %d[1] : f32 from vector<4xf32>
      memref.store %d1, %D[%blk, %c1, %row] : memref<16x4x4xf32>
      %d2 = vector.extract %d[2] : f32 from vector<4xf32>
      memref.store %d2, %D[%blk, %c2, %row] : memref<16x4x4xf32>
      %d3 = vector.extract %d[3] : f32 from vector<4xf32>
      memref.store %d3, %D[%blk, %c3, %row] : memref<16x4x4xf32>
      gpu.return
    }
  }
}
