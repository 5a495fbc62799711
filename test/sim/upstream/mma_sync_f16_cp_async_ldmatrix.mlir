// Re-creates the computation of llvm-project
//   mlir/test/Integration/GPU/CUDA/TensorCore/sm80/transform-mma-sync-matmul-f16-f16-accum.mlir
// with its operands staged through shared memory: upstream has no
// integration test of cp.async or ldmatrix whose outputs were observed on a
// GPU, and this one must reproduce the outputs of the f16 mma.sync test
// exactly, since only the way the fragments reach the registers differs.
//
// Covers: cp.async.cg.shared.global 16 B (A), cp.async.ca.shared.global
// 16 B (B) and 8 B (C), cp.async.commit_group, cp.async.wait_group 1 and 0,
// bar.sync, ldmatrix.sync.aligned.m8n8.x4.shared.b16 (A),
// .x2.trans (B, K-major in memory, read column-wise), .x2 (C), then
// mma.sync.aligned.m16n8k16.row.col.f16.f16.f16.f16.
//
// Host side: the same inputs, launch (one CTA of 32 threads) and expected
// rows as mma_sync_f16_16x8x16.mlir.
module attributes {gpu.container_module} {
  gpu.module @upstream {
    memref.global "private" @stageA : memref<16x16xf16, 3> {alignment = 128 : i64}
    memref.global "private" @stageB : memref<16x8xf16, 3> {alignment = 128 : i64}
    memref.global "private" @stageC : memref<16x8xf16, 3> {alignment = 128 : i64}

    gpu.func @mma_f16_staged(%lhs: memref<16x16xf16>, %rhs: memref<16x8xf16>,
                             %acc: memref<16x8xf16>) kernel {
      %c0 = arith.constant 0 : index
      %c1 = arith.constant 1 : index
      %c2 = arith.constant 2 : index
      %c4 = arith.constant 4 : index
      %c8 = arith.constant 8 : index
      %c16 = arith.constant 16 : index
      %sA = memref.get_global @stageA : memref<16x16xf16, 3>
      %sB = memref.get_global @stageB : memref<16x8xf16, 3>
      %sC = memref.get_global @stageC : memref<16x8xf16, 3>
      %lane = gpu.thread_id x

      // Group 1: A, 16 bytes a lane (row lane / 2, half lane % 2), L1
      // bypassed.
      %aRow = arith.divui %lane, %c2 : index
      %aHalf = arith.remui %lane, %c2 : index
      %aCol = arith.muli %aHalf, %c8 : index
      %copyA = nvgpu.device_async_copy %lhs[%aRow, %aCol], %sA[%aRow, %aCol], 8
          {bypassL1} : memref<16x16xf16> to memref<16x16xf16, 3>
      %groupA = nvgpu.device_async_create_group %copyA

      // Group 2: lanes 0-15 copy row `lane` of B in one 16-byte piece,
      // lanes 16-31 row `lane - 16` of C in two 8-byte pieces.
      %row16 = arith.remui %lane, %c16 : index
      %isB = arith.cmpi ult, %lane, %c16 : index
      %groupBC = scf.if %isB -> !nvgpu.device.async.token {
        %copyB = nvgpu.device_async_copy %rhs[%row16, %c0], %sB[%row16, %c0], 8
            : memref<16x8xf16> to memref<16x8xf16, 3>
        %g = nvgpu.device_async_create_group %copyB
        scf.yield %g : !nvgpu.device.async.token
      } else {
        %lo = nvgpu.device_async_copy %acc[%row16, %c0], %sC[%row16, %c0], 4
            : memref<16x8xf16> to memref<16x8xf16, 3>
        %hi = nvgpu.device_async_copy %acc[%row16, %c4], %sC[%row16, %c4], 4
            : memref<16x8xf16> to memref<16x8xf16, 3>
        %g = nvgpu.device_async_create_group %lo, %hi
        scf.yield %g : !nvgpu.device.async.token
      }
      // At most one group (B/C) outstanding, then none; then every lane's
      // copies are visible to the others.
      nvgpu.device_async_wait %groupA {numGroups = 1 : i32}
      nvgpu.device_async_wait %groupBC {numGroups = 0 : i32}
      gpu.barrier

      // ldmatrix: lanes 8i..8i+7 give the row addresses of 8x8 matrix i.
      // A: matrices {rows 0-7, k 0-7}, {8-15, 0-7}, {0-7, 8-15}, {8-15, 8-15}.
      %hi16 = arith.divui %lane, %c16 : index
      %kA = arith.muli %hi16, %c8 : index
      %fragA = nvgpu.ldmatrix %sA[%row16, %kA] {numTiles = 4 : i32, transpose = false}
          : memref<16x16xf16, 3> -> vector<4x2xf16>
      // B: k 0-7 and k 8-15, transposed so a lane holds two k of one column.
      %fragB = nvgpu.ldmatrix %sB[%row16, %c0] {numTiles = 2 : i32, transpose = true}
          : memref<16x8xf16, 3> -> vector<2x2xf16>
      // C: rows 0-7 and 8-15, as the accumulator fragment.
      %fragC = nvgpu.ldmatrix %sC[%row16, %c0] {numTiles = 2 : i32, transpose = false}
          : memref<16x8xf16, 3> -> vector<2x2xf16>

      %fragD = nvgpu.mma.sync(%fragA, %fragB, %fragC) {mmaShape = [16, 8, 16]}
          : (vector<4x2xf16>, vector<2x2xf16>, vector<2x2xf16>) -> vector<2x2xf16>

      %row = arith.divui %lane, %c4 : index
      %quad = arith.remui %lane, %c4 : index
      %rowHi = arith.addi %row, %c8 : index
      %n0 = arith.muli %quad, %c2 : index
      %n1 = arith.addi %n0, %c1 : index
      %d00 = vector.extract %fragD[0, 0] : f16 from vector<2x2xf16>
      %d01 = vector.extract %fragD[0, 1] : f16 from vector<2x2xf16>
      %d10 = vector.extract %fragD[1, 0] : f16 from vector<2x2xf16>
      %d11 = vector.extract %fragD[1, 1] : f16 from vector<2x2xf16>
      memref.store %d00, %acc[%row, %n0] : memref<16x8xf16>
      memref.store %d01, %acc[%row, %n1] : memref<16x8xf16>
      memref.store %d10, %acc[%rowHi, %n0] : memref<16x8xf16>
      memref.store %d11, %acc[%rowHi, %n1] : memref<16x8xf16>
      gpu.return
    }
  }
}
