// Re-creates the kernel of llvm-project
//   mlir/test/Integration/GPU/CUDA/TensorCore/sm80/transform-mma-sync-matmul-f16-f16-accum.mlir
// (there a transform rewrites linalg.matmul into nvgpu.mma.sync; here the
// warp's fragments are spelled out by hand).
//
// Covers: mma.sync.aligned.m16n8k16.row.col.f16.f16.f16.f16 (half-precision
// accumulation, whose rounding the upstream outputs pin down), fragments
// packed two halves to a register, read from and written to global memory.
//
// Host side (UpstreamTest.cpp): a[16][16] = (16r + c) / 64, b[16][8] and
// c[16][8] = (8r + c) / 64, all f16; one CTA of 32 threads;
// c <- c + a * b, compared with the 16 rows the upstream test printed.
module attributes {gpu.container_module} {
  gpu.module @upstream {
    gpu.func @mma_f16_16x8x16(%lhs: memref<16x16xf16>, %rhs: memref<16x8xf16>,
                              %acc: memref<16x8xf16>) kernel {
      %c1 = arith.constant 1 : index
      %c2 = arith.constant 2 : index
      %c4 = arith.constant 4 : index
      %c8 = arith.constant 8 : index
      %lane = gpu.thread_id x
      %row = arith.divui %lane, %c4 : index
      %quad = arith.remui %lane, %c4 : index
      %rowHi = arith.addi %row, %c8 : index
      // Each lane holds two adjacent columns (of A and C) or rows (of B).
      %k0 = arith.muli %quad, %c2 : index
      %k1 = arith.addi %k0, %c1 : index
      %k8 = arith.addi %k0, %c8 : index
      %k9 = arith.addi %k1, %c8 : index

      // A: {rows 0-7, k 0-7}, {rows 8-15, k 0-7}, {rows 0-7, k 8-15},
      // {rows 8-15, k 8-15}.
      %a0 = memref.load %lhs[%row, %k0] : memref<16x16xf16>
      %a1 = memref.load %lhs[%row, %k1] : memref<16x16xf16>
      %a2 = memref.load %lhs[%rowHi, %k0] : memref<16x16xf16>
      %a3 = memref.load %lhs[%rowHi, %k1] : memref<16x16xf16>
      %a4 = memref.load %lhs[%row, %k8] : memref<16x16xf16>
      %a5 = memref.load %lhs[%row, %k9] : memref<16x16xf16>
      %a6 = memref.load %lhs[%rowHi, %k8] : memref<16x16xf16>
      %a7 = memref.load %lhs[%rowHi, %k9] : memref<16x16xf16>
      %fragA = vector.from_elements %a0, %a1, %a2, %a3, %a4, %a5, %a6, %a7
          : vector<4x2xf16>
      // B: column `row` of k 0-7, then of k 8-15.
      %b0 = memref.load %rhs[%k0, %row] : memref<16x8xf16>
      %b1 = memref.load %rhs[%k1, %row] : memref<16x8xf16>
      %b2 = memref.load %rhs[%k8, %row] : memref<16x8xf16>
      %b3 = memref.load %rhs[%k9, %row] : memref<16x8xf16>
      %fragB = vector.from_elements %b0, %b1, %b2, %b3 : vector<2x2xf16>
      // C and D: rows `row` and `row + 8`, columns k0 and k1.
      %c00 = memref.load %acc[%row, %k0] : memref<16x8xf16>
      %c01 = memref.load %acc[%row, %k1] : memref<16x8xf16>
      %c10 = memref.load %acc[%rowHi, %k0] : memref<16x8xf16>
      %c11 = memref.load %acc[%rowHi, %k1] : memref<16x8xf16>
      %fragC = vector.from_elements %c00, %c01, %c10, %c11 : vector<2x2xf16>

      %fragD = nvgpu.mma.sync(%fragA, %fragB, %fragC) {mmaShape = [16, 8, 16]}
          : (vector<4x2xf16>, vector<2x2xf16>, vector<2x2xf16>) -> vector<2x2xf16>

      %d00 = vector.extract %fragD[0, 0] : f16 from vector<2x2xf16>
      %d01 = vector.extract %fragD[0, 1] : f16 from vector<2x2xf16>
      %d10 = vector.extract %fragD[1, 0] : f16 from vector<2x2xf16>
      %d11 = vector.extract %fragD[1, 1] : f16 from vector<2x2xf16>
      memref.store %d00, %acc[%row, %k0] : memref<16x8xf16>
      memref.store %d01, %acc[%row, %k1] : memref<16x8xf16>
      memref.store %d10, %acc[%rowHi, %k0] : memref<16x8xf16>
      memref.store %d11, %acc[%rowHi, %k1] : memref<16x8xf16>
      gpu.return
    }
  }
}
