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
// gfx942: v_mfma_i32_16x16x32_i8 (eight int8 per lane).
module attributes {gpu.container_module} {
  gpu.module @mfma {
    gpu.func @mfma_16x16x32_i8(%A: memref<16x32xi8>, %B: memref<32x16xi8>, %D: memref<16x16xi32>) kernel {
      %lane = gpu.thread_id x
      %c0 = arith.constant 0 : index
      %c1 = arith.constant 1 : index
      %c2 = arith.constant 2 : index
      %c3 = arith.constant 3 : index
      %c4 = arith.constant 4 : index
      %c5 = arith.constant 5 : index
      %c6 = arith.constant 6 : index
      %c7 = arith.constant 7 : index
      %c8 = arith.constant 8 : index
      %c16 = arith.constant 16 : index
      %row = arith.remui %lane, %c16 : index
      %grp = arith.divui %lane, %c16 : index
      %kb = arith.muli %grp, %c8 : index
      %k0 = arith.addi %kb, %c0 : index
      %k1 = arith.addi %kb, %c1 : index
      %k2 = arith.addi %kb, %c2 : index
      %k3 = arith.addi %kb, %c3 : index
      %k4 = arith.addi %kb, %c4 : index
      %k5 = arith.addi %kb, %c5 : index
      %k6 = arith.addi %kb, %c6 : index
      %k7 = arith.addi %kb, %c7 : index
      %ib = arith.muli %grp, %c4 : index
      %i0 = arith.addi %ib, %c0 : index
      %i1 = arith.addi %ib, %c1 : index
      %i2 = arith.addi %ib, %c2 : index
      %i3 = arith.addi %ib, %c3 : index
      %a0 = memref.load %A[%row, %k0] : memref<16x32xi8>
      %a1 = memref.load %A[%row, %k1] : memref<16x32xi8>
      %a2 = memref.load %A[%row, %k2] : memref<16x32xi8>
      %a3 = memref.load %A[%row, %k3] : memref<16x32xi8>
      %a4 = memref.load %A[%row, %k4] : memref<16x32xi8>
      %a5 = memref.load %A[%row, %k5] : memref<16x32xi8>
      %a6 = memref.load %A[%row, %k6] : memref<16x32xi8>
      %a7 = memref.load %A[%row, %k7] : memref<16x32xi8>
      %av = vector.from_elements %a0, %a1, %a2, %a3, %a4, %a5, %a6, %a7 : vector<8xi8>
      %b0 = memref.load %B[%k0, %row] : memref<32x16xi8>
      %b1 = memref.load %B[%k1, %row] : memref<32x16xi8>
      %b2 = memref.load %B[%k2, %row] : memref<32x16xi8>
      %b3 = memref.load %B[%k3, %row] : memref<32x16xi8>
      %b4 = memref.load %B[%k4, %row] : memref<32x16xi8>
      %b5 = memref.load %B[%k5, %row] : memref<32x16xi8>
      %b6 = memref.load %B[%k6, %row] : memref<32x16xi8>
      %b7 = memref.load %B[%k7, %row] : memref<32x16xi8>
      %bv = vector.from_elements %b0, %b1, %b2, %b3, %b4, %b5, %b6, %b7 : vector<8xi8>
      %acc = arith.constant dense<0> : vector<4xi32>
      %d = amdgpu.mfma 16x16x32 %av * %bv + %acc blgp = none : vector<8xi8>, vector<8xi8>, vector<4xi32>
      %d0 = vector.extract %d[0] : i32 from vector<4xi32>
      memref.store %d0, %D[%i0, %row] : memref<16x16xi32>
      %d1 = vector.extract %d[1] : i32 from vector<4xi32>
      memref.store %d1, %D[%i1, %row] : memref<16x16xi32>
      %d2 = vector.extract %d[2] : i32 from vector<4xi32>
      memref.store %d2, %D[%i2, %row] : memref<16x16xi32>
      %d3 = vector.extract %d[3] : i32 from vector<4xi32>
      memref.store %d3, %D[%i3, %row] : memref<16x16xi32>
      gpu.return
    }
  }
}
