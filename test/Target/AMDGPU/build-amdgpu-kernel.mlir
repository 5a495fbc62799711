// RUN: attn-opt %s --pass-pipeline='builtin.module(func.func(attn-classify-mask),attn-build-amdgpu-kernel{chip=gfx942 block-kv=32 kernel=attn_entry_causal})' | FileCheck %s

// A causal softmax at D = 64 (bf16) on CDNA: attn-build-amdgpu-kernel adds
// gpu.module @attn_gpu with the MFMA attention kernel and the split-KV
// merge kernel, and records the launch geometry as attn.launch.

!t = memref<?x?x?x64xbf16, strided<[?, ?, ?, 1], offset: ?>>
func.func @causal(%q: !t, %k: !t, %v: !t, %o: !t, %classes: memref<?x?x?x?xi8>, %splits: i32, %o_part: memref<?x?x?x?x?xf32>, %lse_part: memref<?x?x?x?xf32>) {
  attn.attention ins(%q, %k, %v : !t, !t, !t) outs(%o : !t) tile_classes(%classes : memref<?x?x?x?xi8>) splits(%splits) partials(%o_part, %lse_part : memref<?x?x?x?x?xf32>, memref<?x?x?x?xf32>) normalize = softmax scale = 1.250000e-01 mask {
  ^bb0(%b: i32, %h: i32, %qi: i32, %kv: i32):
    %0 = arith.cmpi sle, %kv, %qi : i32
    attn.yield %0 : i1
  }
  return
}

// 4 waves of 64 lanes (256 threads), 64 query rows; the LDS tiles are
// static workgroup buffers (no dynamic shared memory): K [32 keys, 64 + 4
// padding] and V^T [64, 32 + 4].
// CHECK: module attributes {gpu.container_module}
// CHECK-LABEL: gpu.module @attn_gpu attributes {attn.launch = {block_kv = 32 : i64, block_threads = 256 : i64, entry = "attn_entry_causal", launch_registers = 0 : i64, merge = "attn_entry_causal_merge", rows_per_block = 64 : i64, shared_bytes = 0 : i64, tensor_maps = false}}
// CHECK: gpu.func @attn_entry_causal(
// CHECK-SAME: workgroup(%[[KT:.+]] : memref<32x68xbf16, #gpu.address_space<workgroup>>, %[[VT:.+]] : memref<64x36xbf16, #gpu.address_space<workgroup>>)
// CHECK-SAME: kernel attributes {known_block_size = array<i32: 256, 1, 1>}
//      K and V^T tiles through registers into LDS, between barriers, one
//      tile ahead (walkKeyTilesLookingAhead): the first tile's class and,
//      if visited, its rows in registers; the loop carries the tile's class
//      and those registers. Each iteration: if visited, the registers into
//      LDS between barriers; the next tile's class (EMPTY past the last)
//      and rows; the tile's first key; then the tile under its class.
// CHECK: %[[FIRST:[^ ]+]] = scf.if %{{.+}} -> (i32) {
// CHECK: %[[ROWS:[^ ]+]]:5 = scf.if %{{.+}} -> (vector<8xbf16>,
// CHECK: scf.for %[[T:[^ ]+]] = {{.+}} iter_args(%[[CLS:[^ ]+]] = %[[FIRST]], %[[KREG:[^ ]+]] = %[[ROWS]]#0, {{.+}}) -> (i32, vector<8xbf16>,
// CHECK: %[[ARRIVE:[^ ]+]] = arith.cmpi ne, %[[CLS]], %c0_i32
// CHECK-NEXT: scf.if %[[ARRIVE]] {
// CHECK-NEXT: gpu.barrier
// CHECK: vector.store %[[KREG]], %[[KT]]
// CHECK: vector.store %{{.+}}, %[[VT]]
// CHECK: gpu.barrier
// CHECK: %[[NEXT:[^ ]+]] = arith.addi %[[T]], %c1{{[_0-9]*}} : index
// CHECK-NEXT: arith.cmpi ult, %[[NEXT]]
// CHECK: %[[NCLS:[^ ]+]] = scf.if %{{.+}} -> (i32) {
// CHECK: %[[NROWS:[^ ]+]]:5 = scf.if %{{.+}} -> (vector<8xbf16>,
// CHECK: arith.muli %[[T]], %c32
// CHECK: scf.if %{{.+}} -> (f32, f32, vector<4xf32>
//      S^T = K Q^T on the matrix cores, 16 x 16 x 16 bf16.
// CHECK: %[[KROW:.+]] = vector.load %[[KT]]
// CHECK: amdgpu.mfma 16x16x16 %[[KROW]] * %{{.+}} + %{{.+}} blgp =  none : vector<4xbf16>, vector<4xbf16>, vector<4xf32>
//      The tile's row max across the query's 4 lane groups, then exp2.
// CHECK: gpu.shuffle  xor %{{.+}}, %c16_i32
// CHECK: gpu.shuffle  xor %{{.+}}, %c32_i32
// CHECK: math.exp2
//      O^T += V^T P^T.
// CHECK: vector.load %[[VT]]
// CHECK: amdgpu.mfma 16x16x16
// CHECK: scf.yield %[[NCLS]], %[[NROWS]]#0,
//      The row sum, once, at the end.
// CHECK: gpu.shuffle  xor
// CHECK: gpu.return
// CHECK: gpu.func @attn_entry_causal_merge(
// CHECK-SAME: known_block_size = array<i32: 128, 1, 1>
// CHECK: math.exp
