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
// gfx90a: v_mfma_i32_16x16x16i8 (four int8 per lane).
module attributes {gpu.container_module} {
  gpu.module @mfma {
    gpu.func @mfma_16x16x16_i8(%A: memref<16x16xi8>, %B: memref<16x16xi8>, %D: memref<16x16xi32>) kernel {
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
      %a0 = memref.load %A[%row, %k0] : memref<16x16xi8>
      %a1 = memref.load %A[%row, %k1] : memref<16x16xi8>
      %a2 = memref.load %A[%row, %k2] : memref<16x16xi8>
      %a3 = memref.load %A[%row, %k3] : memref<16x16xi8>
      %av = vector.from_elements %a0, %a1, %a2, %a3 : vector<4xi8>
      %b0 = memref.load %B[%k0, %row] : memref<16x16xi8>
      %b1 = memref.load %B[%k1, %row] : memref<16x16xi8>
      %b2 = memref.load %B[%k2, %row] : memref<16x16xi8>
      %b3 = memref.load %B[%k3, %row] : memref<16x16xi8>
      %bv = vector.from_elements %b0, %b1, %b2, %b3 : vector<4xi8>
      %acc = arith.constant dense<0> : vector<4xi32>
      %d = amdgpu.mfma 16x16x16 %av * %bv + %acc blgp = none : vector<4xi8>, vector<4xi8>, vector<4xi32>
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
