// Re-creates the kernel of llvm-project
//   mlir/test/Integration/GPU/CUDA/TensorCore/sm80/transform-mma-sync-matmul-f32.mlir
// (there a transform rewrites linalg.matmul into nvgpu.mma.sync; here the
// warp's fragments are spelled out by hand).
//
// Covers: mma.sync.aligned.m16n8k4.row.col.f32.tf32.tf32.f32, one warp,
// every operand fragment read straight from global memory with ld.global.
//
// Host side (UpstreamTest.cpp): a[16][4] = 4r + c, b[4][8] = 8r + c,
// c[16][8] = 8r + c, one CTA of 32 threads; c <- c + a * b, compared with
// the 16 rows the upstream test printed.
module attributes {gpu.container_module} {
  gpu.module @upstream {
    gpu.func @mma_tf32_16x8x4(%lhs: memref<16x4xf32>, %rhs: memref<4x8xf32>,
                              %acc: memref<16x8xf32>) kernel {
      %c1 = arith.constant 1 : index
      %c2 = arith.constant 2 : index
      %c4 = arith.constant 4 : index
      %c8 = arith.constant 8 : index
      %lane = gpu.thread_id x
      // PTX's fragment coordinates: the lane's group (lane / 4) picks rows,
      // its place in the group (lane % 4) picks columns.
      %row = arith.divui %lane, %c4 : index
      %quad = arith.remui %lane, %c4 : index
      %rowHi = arith.addi %row, %c8 : index
      %col = arith.muli %quad, %c2 : index
      %colHi = arith.addi %col, %c1 : index

      %a0 = memref.load %lhs[%row, %quad] : memref<16x4xf32>
      %a1 = memref.load %lhs[%rowHi, %quad] : memref<16x4xf32>
      %fragA = vector.from_elements %a0, %a1 : vector<2x1xf32>
      %b0 = memref.load %rhs[%quad, %row] : memref<4x8xf32>
      %fragB = vector.from_elements %b0 : vector<1x1xf32>
      %c00 = memref.load %acc[%row, %col] : memref<16x8xf32>
      %c01 = memref.load %acc[%row, %colHi] : memref<16x8xf32>
      %c10 = memref.load %acc[%rowHi, %col] : memref<16x8xf32>
      %c11 = memref.load %acc[%rowHi, %colHi] : memref<16x8xf32>
      %fragC = vector.from_elements %c00, %c01, %c10, %c11 : vector<2x2xf32>

      %fragD = nvgpu.mma.sync(%fragA, %fragB, %fragC)
          {mmaShape = [16, 8, 4], tf32Enabled}
          : (vector<2x1xf32>, vector<1x1xf32>, vector<2x2xf32>) -> vector<2x2xf32>

      %d00 = vector.extract %fragD[0, 0] : f32 from vector<2x2xf32>
      %d01 = vector.extract %fragD[0, 1] : f32 from vector<2x2xf32>
      %d10 = vector.extract %fragD[1, 0] : f32 from vector<2x2xf32>
      %d11 = vector.extract %fragD[1, 1] : f32 from vector<2x2xf32>
      memref.store %d00, %acc[%row, %col] : memref<16x8xf32>
      memref.store %d01, %acc[%row, %colHi] : memref<16x8xf32>
      memref.store %d10, %acc[%rowHi, %col] : memref<16x8xf32>
      memref.store %d11, %acc[%rowHi, %colHi] : memref<16x8xf32>
      gpu.return
    }
  }
}
