// RUN: attn-opt %s --split-input-file --pass-pipeline='builtin.module(func.func(attn-classify-mask),attn-build-nvptx-kernel{chip=sm_80})' | FileCheck %s --check-prefix=SM80
// RUN: attn-opt %s --split-input-file --pass-pipeline='builtin.module(func.func(attn-classify-mask),attn-build-nvptx-kernel{chip=sm_90a block-q=128})' | FileCheck %s --check-prefix=SM90
// RUN: attn-opt %s --split-input-file --pass-pipeline='builtin.module(func.func(attn-classify-mask),attn-build-nvptx-kernel{chip=sm_90a block-q=64 tma=false kernel=attn_entry_causal})' | FileCheck %s --check-prefix=CPASYNC

// A causal softmax at D = 64 (bf16): attn-build-nvptx-kernel adds
// gpu.module @attn_gpu beside the function, with the attention kernel and
// the split-KV merge kernel, and records the launch geometry attnc puts in
// the bundle as the module's attn.launch.

!t = memref<?x?x?x64xbf16, strided<[?, ?, ?, 1], offset: ?>>
func.func @causal(%q: !t, %k: !t, %v: !t, %o: !t, %classes: memref<?x?x?x?xi8>, %splits: i32, %o_part: memref<?x?x?x?x?xf32>, %lse_part: memref<?x?x?x?xf32>) {
  attn.attention ins(%q, %k, %v : !t, !t, !t) outs(%o : !t) tile_classes(%classes : memref<?x?x?x?xi8>) splits(%splits) partials(%o_part, %lse_part : memref<?x?x?x?x?xf32>, memref<?x?x?x?xf32>) normalize = softmax scale = 1.250000e-01 mask {
  ^bb0(%b: i32, %h: i32, %qi: i32, %kv: i32):
    %0 = arith.cmpi sle, %kv, %qi : i32
    attn.yield %0 : i1
  }
  return
}

// sm_80: 4 warps of 16 query rows; K/V tiles of 64 keys by cp.async into
// two shared buffers each (46080 bytes with Q, rows padded to 72), read
// by ldmatrix into mma.sync.m16n8k16; the softmax in exp2.
// SM80: module attributes {gpu.container_module}
// SM80: func.func @causal(
// SM80: attn.attention
// SM80-LABEL: gpu.module @attn_gpu attributes {attn.launch = {block_kv = 64 : i64, block_threads = 128 : i64, entry = "causal", launch_registers = 0 : i64, merge = "causal_merge", rows_per_block = 64 : i64, shared_bytes = 46080 : i64, tensor_maps = false}}
// SM80: gpu.func @causal(
// SM80-SAME: kernel
// SM80-SAME: known_block_size = array<i32: 128, 1, 1>
// SM80-SAME: nvvm.maxntid = array<i32: 128, 1, 1>
// SM80: gpu.dynamic_shared_memory
// SM80: nvgpu.device_async_copy
//      The key loop walks one tile ahead (walkKeyTilesLookingAhead): the
//      first tile's class, its cp.async into buffer 0 and a commit group;
//      the loop carries the tile's class and buffer. Each iteration: a
//      barrier, the next tile's class (EMPTY past the last), its cp.async
//      into the other buffer and one commit group, the tile's first key,
//      then the tile under its class.
// SM80: %[[FIRST:[^ ]+]] = scf.if %{{.+}} -> (i32) {
// SM80: nvvm.cp.async.commit.group
// SM80: scf.for %[[T:[^ ]+]] = {{.+}} iter_args(%[[CLS:[^ ]+]] = %[[FIRST]], %[[BUF:[^ ]+]] = %c0{{[_0-9]*}}, {{.+}}) -> (i32, index, f32,
// SM80-NEXT: gpu.barrier
// SM80: %[[NEXT:[^ ]+]] = arith.addi %[[T]], %c1{{[_0-9]*}} : index
// SM80-NEXT: arith.cmpi ult, %[[NEXT]]
// SM80: %[[NCLS:[^ ]+]] = scf.if %{{.+}} -> (i32) {
// SM80: %[[OTHER:[^ ]+]] = arith.subi %c1{{[_0-9]*}}, %[[BUF]] : index
// SM80: nvgpu.device_async_copy {{.+}}[%[[OTHER]],
// SM80: nvvm.cp.async.commit.group
// SM80: arith.muli %[[T]], %c64
// SM80: %[[VISIT:[^ ]+]] = arith.cmpi ne, %[[CLS]], %c0_i32
// SM80-NEXT: scf.if %[[VISIT]] -> (f32,
// SM80-NEXT: nvvm.cp.async.wait.group 1
// SM80-NEXT: gpu.barrier
// SM80: nvgpu.ldmatrix
// SM80: nvvm.mma.sync {{.+}} {layoutA = #nvvm.mma_layout<row>, layoutB = #nvvm.mma_layout<col>, multiplicandAPtxType = #nvvm.mma_type<bf16>, multiplicandBPtxType = #nvvm.mma_type<bf16>, shape = #nvvm.shape<m = 16, n = 8, k = 16>}
// SM80: math.exp2
// SM80: nvvm.mma.sync
// SM80: scf.yield %[[NCLS]], %[[OTHER]], %{{[^ ]+}}#0,
// SM80: gpu.return
//      The merge kernel: 128 threads, one per (query, column) of o,
//      weighing each part's o_part row by exp(lse_part - lse).
// SM80: gpu.func @causal_merge(%{{.+}}: memref<?x?x?x?x64xf32>, %{{.+}}: memref<?x?x?x?xf32>, %{{.+}}: memref<?x?x?x64xbf16
// SM80-SAME: nvvm.maxntid = array<i32: 128, 1, 1>
// SM80: math.exp
// SM80: gpu.return

// sm_90a: two consumer warpgroups of 64 rows and a producer warpgroup
// (384 threads); Q, K and V by TMA (the three tensor maps are the
// kernel's last arguments) behind mbarriers; setmaxnreg hands the
// producer's registers to the consumers; wgmma reads Q and K from shared
// memory. The kernel is named after the function without kernel=. A
// causal mask grows with the query, so two CTAs form a cluster sharing
// the K/V tiles (cluster.test has the multicast).
// SM90-LABEL: gpu.module @attn_gpu attributes {attn.launch = {block_kv = 64 : i64, block_threads = 384 : i64, cluster_ctas = 2 : i64, entry = "causal", launch_registers = 168 : i64, merge = "causal_merge", rows_per_block = 128 : i64, shared_bytes = 49152 : i64, tensor_maps = true}}
// SM90: gpu.func @causal({{.+}}, %{{.+}}: !llvm.ptr, %{{.+}}: !llvm.ptr, %{{.+}}: !llvm.ptr) kernel attributes {attn.tensor_map_args = 3 : i32
// SM90-SAME: nvvm.cluster_dim = array<i32: 2, 1, 1>, nvvm.maxntid = array<i32: 384, 1, 1>
// SM90: nvgpu.mbarrier.init
//      The consumers: take registers, wait for a tile, S = Q K^T, the
//      softmax, O += P V.
// SM90: nvvm.setmaxregister increase
// SM90: nvgpu.mbarrier.try_wait.parity
// SM90: wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16
// SM90: math.exp2
// SM90: wgmma.commit_group.sync.aligned
//      The producer: gives registers up, loads the tiles.
// SM90: nvvm.setmaxregister decrease
// SM90: nvgpu.tma.async.load
// SM90: gpu.func @causal_merge(

// sm_90a with cp.async (tma=false) and one warpgroup: no tensor maps, no
// producer, still wgmma; kernel= names the kernel (attnc's entry symbol).
// CPASYNC-LABEL: gpu.module @attn_gpu attributes {attn.launch = {block_kv = 64 : i64, block_threads = 128 : i64, entry = "attn_entry_causal", launch_registers = 0 : i64, merge = "attn_entry_causal_merge", rows_per_block = 64 : i64, shared_bytes = {{[0-9]+}} : i64, tensor_maps = false}}
// CPASYNC-NOT: nvgpu.tma.async.load
// CPASYNC: nvgpu.device_async_copy
// CPASYNC: wgmma.mma_async
// CPASYNC-NOT: nvgpu.tma.async.load

// -----

// select (MoBA's top-k of 64-token blocks): the pre-pass kernels that pool
// the key blocks and write the kept map come with the attention kernel,
// whose classifier reads the map.

!t = memref<?x?x?x64xbf16, strided<[?, ?, ?, 1], offset: ?>>
func.func @moba(%q: !t, %k: !t, %v: !t, %o: !t, %topk: i32, %classes: memref<?x?x?x?xi8>, %splits: i32, %o_part: memref<?x?x?x?x?xf32>, %lse_part: memref<?x?x?x?xf32>) {
  attn.attention ins(%q, %k, %v : !t, !t, !t) outs(%o : !t) tile_classes(%classes : memref<?x?x?x?xi8>) splits(%splits) partials(%o_part, %lse_part : memref<?x?x?x?x?xf32>, memref<?x?x?x?xf32>) params(%topk : i32) normalize = softmax scale = 1.250000e-01 select topk block 64 mask {
  ^bb0(%b: i32, %h: i32, %qi: i32, %kv: i32):
    %0 = arith.cmpi sle, %kv, %qi : i32
    attn.yield %0 : i1
  } select_arg {
    %0 = arith.sitofp %topk : i32 to f32
    attn.yield %0 : f32
  }
  return
}

// SM80: gpu.module @attn_gpu attributes {attn.launch = {block_kv = 64 : i64, block_threads = 128 : i64, entry = "moba", {{.+}}, select = "[[SELECT:[a-z_]+]]", select_pool = "[[POOL:[a-z_]+]]", shared_bytes
// SM80-DAG: gpu.func @moba(
// SM80-DAG: gpu.func @moba_merge(
// SM80-DAG: gpu.func @[[POOL]](
// SM80-DAG: gpu.func @[[SELECT]](
