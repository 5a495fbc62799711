// RUN: attn-opt %s -split-input-file --pass-pipeline='builtin.module(func.func(attn-tile))' | FileCheck %s

// Paged, fp8e4m3 K/V: each key row's page comes from the table (clamped to
// the pool), its slot is the position modulo the page size; codes decode
// to f32 in the tile copy (exponent/mantissa moved into an f32, times
// 2^120), K's per-channel scale of the row's group is applied there, and
// V's per-token scale is kept per row and multiplied into P.

// CHECK-LABEL: func.func @paged_fp8(
// CHECK-SAME: %[[K:[a-z0-9]+]]: memref<?x?x?x64xi8>, %[[V:[a-z0-9]+]]: memref<?x?x?x64xi8>, %{{.+}}: memref<?x?x?x64xf32>, %[[KS:[a-z0-9]+]]: memref<?x?x?x64xf32>, %[[VS:[a-z0-9]+]]: memref<?x?x?xf32>, %[[PT:[a-z0-9]+]]: memref<?x?xi32>, %[[SL:[a-z0-9]+]]: memref<?xi32>
//      Capacity: max_pages * 16; each batch's length from seq_lens.
// CHECK: %[[MAXP:.+]] = memref.dim %[[PT]], %c1
// CHECK: %[[CAP:.+]] = arith.muli %[[MAXP]], %c16
// CHECK: scf.parallel
// CHECK: %[[LEN:.+]] = memref.load %[[SL]][
// CHECK: %[[LENI:.+]] = arith.index_cast %{{.+}} : i32 to index
// CHECK: %[[SKV:.+]] = arith.minui %[[LENI]], %[[CAP]]
// CHECK: scf.if
// CHECK: %[[PAGE:.+]] = memref.load %[[PT]][%{{.+}}, %{{.+}}] : memref<?x?xi32>
// CHECK: arith.maxsi %[[PAGE]]
// CHECK: %[[SLOT:.+]] = arith.remui %{{.+}}, %c16
//      The same row of the key tile after next is prefetched into L2
//      (pages are in any order, which the hardware prefetcher cannot
//      follow).
// CHECK: arith.addi %{{.+}}, %c{{(64|128)}}
// CHECK: scf.if
// CHECK: memref.prefetch %[[K]][%{{.+}}], read, locality<2>, data
// CHECK: memref.prefetch %[[V]][%{{.+}}], read, locality<2>, data
// CHECK: %[[GROUP:.+]] = arith.divui %{{.+}}, %c32
// CHECK: %[[CODE:.+]] = memref.load %[[K]][%{{.+}}, %{{.+}}, %[[SLOT]], %{{.+}}]
// CHECK: arith.extui %[[CODE]] : i8 to i32
// CHECK: arith.shli %{{.+}}, %c20_i32
// CHECK: arith.bitcast %{{.+}} : i32 to f32
// CHECK: arith.mulf %{{.+}}, %cst{{.*}} : f32
// CHECK: memref.load %[[KS]][%{{.+}}, %{{.+}}, %[[GROUP]], %{{.+}}]
// CHECK: memref.load %[[V]]
// CHECK: memref.load %[[VS]]
// CHECK: memref.store %{{.+}}, %[[VSB:[a-z0-9_]+]][%{{.+}}] : memref<64xf32>
// CHECK: } else {
//      P carries V's scale: p * v_scale[row] is what P . V reads.
// CHECK: math.exp2
// CHECK: %[[VSJ:.+]] = memref.load %[[VSB]]
// CHECK: arith.mulf %{{.+}}, %[[VSJ]] : f32
func.func @paged_fp8(%q: memref<?x?x?x64xf32>, %k: memref<?x?x?x64xi8>,
                     %v: memref<?x?x?x64xi8>, %o: memref<?x?x?x64xf32>,
                     %ks: memref<?x?x?x64xf32>, %vs: memref<?x?x?xf32>,
                     %pt: memref<?x?xi32>, %sl: memref<?xi32>) {
  attn.attention ins(%q, %k, %v : memref<?x?x?x64xf32>, memref<?x?x?x64xi8>, memref<?x?x?x64xi8>)
      outs(%o : memref<?x?x?x64xf32>)
      kv_scales(%ks, %vs : memref<?x?x?x64xf32>, memref<?x?x?xf32>)
      pages(%pt, %sl : memref<?x?xi32>, memref<?xi32>)
      normalize = softmax kv_quant fp8e4m3 group 32 page_size 16
  return
}

// -----

// int4: one byte gives two sign-extended nibbles, low first. (Decode's
// partial last key tile first copies its K and V rows packed as they are.)

// CHECK-LABEL: func.func @int4(
// CHECK: memref.load %{{.+}} : memref<?x?x?x32xi8>
// CHECK-NEXT: memref.store %{{.+}} : memref<64x32xi8>
// CHECK: memref.load %{{.+}} : memref<?x?x?x32xi8>
// CHECK-NEXT: memref.store %{{.+}} : memref<64x32xi8>
// CHECK: %[[BYTE:.+]] = memref.load %{{.+}} : memref<?x?x?x32xi8>
// CHECK: %[[SHL:.+]] = arith.shli %[[BYTE]], %c4_i8
// CHECK: %[[LO:.+]] = arith.shrsi %[[SHL]], %c4_i8
// CHECK: %[[HI:.+]] = arith.shrsi %[[BYTE]], %c4_i8
// CHECK: arith.sitofp %[[LO]] : i8 to f32
// CHECK: arith.sitofp %[[HI]] : i8 to f32
func.func @int4(%q: memref<?x?x?x64xf32>, %k: memref<?x?x?x32xi8>,
                %v: memref<?x?x?x32xi8>, %o: memref<?x?x?x64xf32>,
                %ks: memref<?x?x?x64xf32>, %vs: memref<?x?x?xf32>) {
  attn.attention ins(%q, %k, %v : memref<?x?x?x64xf32>, memref<?x?x?x32xi8>, memref<?x?x?x32xi8>)
      outs(%o : memref<?x?x?x64xf32>)
      kv_scales(%ks, %vs : memref<?x?x?x64xf32>, memref<?x?x?xf32>)
      normalize = softmax kv_quant int4 group 64
  return
}

// -----

// int8 with K groups covering whole tiles: for decode-shaped work (at most
// 4 query rows) a whole key tile is read in place: 2-D views of the codes,
// V scales per row; when the tile starts a new K group, the 4 query rows
// times that group's K scales, rounded to int8 against each row's absolute
// max (found as an unsigned max of the magnitude bits); then int8 x int8
// dot products on the K view, each key's 4 scores times the rows' scales,
// the softmax on 4 keys x 4 rows at a time (the tile's scores are a compact
// [64, 4] buffer), and P . V as unsigned P codes times the V view's codes.
// The partial last tile's rows are copied as they are (codes) into a
// zero-padded buffer that the same code reads (its keys past the end
// masked); with more rows, tiles stage decoded rows as before. (The CPU
// target prefetches the next tile at each load of these views; only paged
// caches, whose next page is anywhere, are prefetched here.)
// (Unquantized caches are read in place the same way, without scales or
// rounding.)

// CHECK-LABEL: func.func @int8_in_place(
// CHECK-SAME: %{{[a-z0-9]+}}: memref<?x?x?x64xf32>, %[[K:[a-z0-9]+]]: memref<?x?x?x64xi8>, %[[V:[a-z0-9]+]]: memref<?x?x?x64xi8>
// CHECK: %[[RAWK:.+]] = memref.alloca() {{.*}} : memref<64x64xi8>
// CHECK: %[[RAWV:.+]] = memref.alloca() {{.*}} : memref<64x64xi8>
// CHECK-NOT: memref.prefetch
// CHECK: %[[WHOLE:.+]] = arith.cmpi eq, %{{.+}}, %c64
// CHECK-NEXT: %[[ROWS:.+]]:2 = scf.if %[[WHOLE]] -> (memref<64x64xi8, strided<[64, 1], offset: ?>>, memref<64x64xi8, strided<[64, 1], offset: ?>>) {
// CHECK: memref.subview %[[K]][%{{.+}}, %{{.+}}, %{{.+}}, 0] [1, 1, 64, 64] [1, 1, 1, 1] : memref<?x?x?x64xi8> to memref<64x64xi8, strided<[64, 1], offset: ?>>
// CHECK: memref.subview %[[V]][%{{.+}}, %{{.+}}, %{{.+}}, 0] [1, 1, 64, 64] [1, 1, 1, 1] : memref<?x?x?x64xi8> to memref<64x64xi8, strided<[64, 1], offset: ?>>
// CHECK: } else {
// CHECK: memref.store %{{.+}}, %[[RAWK]]
// CHECK: memref.store %{{.+}}, %[[RAWV]]
// CHECK: memref.store %c0_i8{{.*}}, %[[RAWK]]
// CHECK: memref.cast %{{.+}} : memref<64x64xi8, strided<[64, 1]>> to memref<64x64xi8, strided<[64, 1], offset: ?>>
// CHECK: scf.yield
// CHECK: }
// CHECK: memref.load %{{.+}}[%{{.+}}, %{{.+}}, %{{.+}}] : memref<?x?x?xf32>
// CHECK: %[[G:.+]] = arith.divui %{{.+}}, %c64
// CHECK: %[[STALE:.+]] = arith.cmpi ne, %{{.+}}, %[[G]] : index
// CHECK-NEXT: scf.if %[[STALE]] {
// CHECK: memref.load %{{.+}}[%{{.+}}, %{{.+}}, %[[G]], %{{.+}}] : memref<?x?x?x64xf32>
// CHECK: arith.mulf
// CHECK: arith.andi %{{.+}}, %c2147483647_i32 : i32
// CHECK: arith.maxui
// CHECK: math.roundeven
// CHECK: arith.trunci %{{.+}} : i32 to i8
// CHECK: memref.store %{{.+}}, %[[QCODES:.+]][%{{.+}}, %{{.+}}] : memref<16x64xi8>
// CHECK: memref.store %[[G]], %{{.+}} : memref<1xindex>
//      The tile's compute runs once per group of 4 rows (up to 16 rows, e.g.
//      GQA groups of 4 at Sq = 4), on views of the per-row buffers at the
//      group's first row, while the tile's rows are in L1.
// CHECK: %[[GROUPS:.+]] = arith.ceildivui %{{.+}}, %c4
// CHECK: scf.for %[[GROUP:.+]] = %{{.+}} to %[[GROUPS]]
// CHECK: %[[R0:.+]] = arith.muli %[[GROUP]], %c4
// CHECK: %[[QGROUP:.+]] = memref.subview %[[QCODES]][%[[R0]], 0] [4, 64] [1, 1] : memref<16x64xi8> to memref<4x64xi8, strided<[64, 1], offset: ?>>
// CHECK: linalg.matmul {{.*}}ins(%[[ROWS]]#0, %[[QGROUP]] : memref<64x64xi8, strided<[64, 1], offset: ?>>, memref<4x64xi8, strided<[64, 1], offset: ?>>)
// CHECK: vector.load %{{.+}} : memref<4xf32, strided<[1], offset: ?>>, vector<4xf32>
// CHECK: memref.collapse_shape %[[ST:.+]] {{\[}}[0, 1]] : memref<64x4xf32> into memref<256xf32>
// CHECK: arith.maximumf %{{.+}} : vector<16xf32>
// CHECK: math.exp2 %{{.+}} : vector<16xf32>
//      P (never negative) rounded to 0..255 per row, 16 at a time, times
//      the V view's codes; the rows' P scales come on when adding to O.
// CHECK: arith.divf %cst{{.*}} : vector<4xf32>
// CHECK: math.roundeven %{{.+}} : vector<16xf32>
// CHECK: arith.trunci %{{.+}} : vector<16xi32> to vector<16xi8>
// CHECK: linalg.matmul {{.*}} {attn.unsigned_lhs} ins(%{{.+}}, %[[ROWS]]#1 : memref<64x4xi8>, memref<64x64xi8, strided<[64, 1], offset: ?>>) outs(%[[PV:.+]] : memref<4x64xf32>)
//      The accumulator takes its rescale (alpha, per row) in the same pass
//      that adds the tile's P . V times the rows' P scales.
// CHECK: %[[PSCALE:.+]] = memref.load %{{.+}}[%[[ROW:.+]]] : memref<4xf32>
// CHECK: %[[ALPHA:.+]] = memref.load %{{.+}}[%[[ROW]]] : memref<4xf32, strided<[1], offset: ?>>
// CHECK: %[[X:.+]] = memref.load %[[PV]]
// CHECK: %[[A:.+]] = memref.load %[[ACC:.+]][%[[ROW]], %{{.+}}] : memref<4x64xf32, strided<[64, 1], offset: ?>>
// CHECK: %[[RESCALED:.+]] = arith.mulf %[[A]], %[[ALPHA]]
// CHECK: %[[SCALED:.+]] = arith.mulf %[[X]], %[[PSCALE]]
// CHECK: %[[SUM:.+]] = arith.addf %[[RESCALED]], %[[SCALED]]
// CHECK: memref.store %[[SUM]], %[[ACC]]
// CHECK: } else {
// CHECK: arith.sitofp %{{.+}} : i8 to f32
func.func @int8_in_place(%q: memref<?x?x?x64xf32>, %k: memref<?x?x?x64xi8>,
                         %v: memref<?x?x?x64xi8>, %o: memref<?x?x?x64xf32>,
                         %ks: memref<?x?x?x64xf32>, %vs: memref<?x?x?xf32>) {
  attn.attention ins(%q, %k, %v : memref<?x?x?x64xf32>, memref<?x?x?x64xi8>, memref<?x?x?x64xi8>)
      outs(%o : memref<?x?x?x64xf32>)
      kv_scales(%ks, %vs : memref<?x?x?x64xf32>, memref<?x?x?xf32>)
      normalize = softmax kv_quant int8 group 64
  return
}

// -----

// int4 in place: the K and V views stay packed (32 bytes for 64 codes per
// row) and the tile's products are linalg.generics marked attn.int4_pairs:
// packed K against the query codes' even and odd columns (stride-2 views),
// and P codes against packed V into the P.V buffer's even and odd columns;
// each body splits a byte into its sign-extended nibbles, low first.

// CHECK-LABEL: func.func @int4_in_place(
// CHECK-SAME: %{{[a-z0-9]+}}: memref<?x?x?x64xf32>, %[[K:[a-z0-9]+]]: memref<?x?x?x32xi8>, %[[V:[a-z0-9]+]]: memref<?x?x?x32xi8>
// CHECK: scf.if %{{.+}} {
// CHECK: %[[ROWS:.+]]:2 = scf.if %{{.+}} -> (memref<64x32xi8, strided<[32, 1], offset: ?>>, memref<64x32xi8, strided<[32, 1], offset: ?>>) {
// CHECK: memref.subview %[[K]][%{{.+}}, %{{.+}}, %{{.+}}, 0] [1, 1, 64, 32] [1, 1, 1, 1] : memref<?x?x?x32xi8> to memref<64x32xi8, strided<[32, 1], offset: ?>>
// CHECK: memref.subview %[[V]][%{{.+}}, %{{.+}}, %{{.+}}, 0] [1, 1, 64, 32] [1, 1, 1, 1] : memref<?x?x?x32xi8> to memref<64x32xi8, strided<[32, 1], offset: ?>>
// CHECK: memref.store %{{.+}}, %[[QCODES:.+]][%{{.+}}, %{{.+}}] : memref<16x64xi8>
// CHECK-NOT: linalg.matmul
// CHECK: %[[QGROUP:.+]] = memref.subview %[[QCODES]][%{{.+}}, 0] [4, 64] [1, 1] : memref<16x64xi8> to memref<4x64xi8, strided<[64, 1], offset: ?>>
// CHECK: %[[QE:.+]] = memref.subview %[[QGROUP]][0, 0] [4, 32] [1, 2] : memref<4x64xi8, strided<[64, 1], offset: ?>> to memref<4x32xi8, strided<[64, 2], offset: ?>>
// CHECK: %[[QO:.+]] = memref.subview %[[QGROUP]][0, 1] [4, 32] [1, 2] : memref<4x64xi8, strided<[64, 1], offset: ?>> to memref<4x32xi8, strided<[64, 2], offset: ?>>
// CHECK: linalg.generic {{.*}} ins(%[[ROWS]]#0, %[[QE]], %[[QO]] : {{.*}}) outs(%{{.+}} : memref<64x4xf32>) attrs = {attn.int4_pairs} {
// CHECK: ^bb0(%[[KB:.+]]: i8, %[[QEB:.+]]: i8, %[[QOB:.+]]: i8, %{{.+}}: f32):
// CHECK: %[[SHL:.+]] = arith.shli %[[KB]], %c4_i8
// CHECK: %[[LO:.+]] = arith.shrsi %[[SHL]], %c4_i8
// CHECK: %[[HI:.+]] = arith.shrsi %[[KB]], %c4_i8
// CHECK: arith.sitofp %[[LO]]
// CHECK: arith.sitofp %[[QEB]]
// CHECK: arith.sitofp %[[HI]]
// CHECK: arith.sitofp %[[QOB]]
// CHECK: math.exp2 %{{.+}} : vector<16xf32>
// CHECK: %[[PVE:.+]] = memref.subview %[[PV:.+]][0, 0] [4, 32] [1, 2] : memref<4x64xf32> to memref<4x32xf32, strided<[64, 2]>>
// CHECK: %[[PVO:.+]] = memref.subview %[[PV]][0, 1] [4, 32] [1, 2] : memref<4x64xf32> to memref<4x32xf32, strided<[64, 2], offset: 1>>
// CHECK: linalg.generic {{.*}} ins(%{{.+}}, %[[ROWS]]#1 : memref<64x4xi8>, {{.*}}) outs(%[[PVE]], %[[PVO]] : {{.*}}) attrs = {attn.int4_pairs} {
// CHECK: arith.uitofp
// CHECK: linalg.yield %{{.+}}, %{{.+}} : f32, f32
// CHECK: } else {
func.func @int4_in_place(%q: memref<?x?x?x64xf32>, %k: memref<?x?x?x32xi8>,
                         %v: memref<?x?x?x32xi8>, %o: memref<?x?x?x64xf32>,
                         %ks: memref<?x?x?x64xf32>, %vs: memref<?x?x?xf32>) {
  attn.attention ins(%q, %k, %v : memref<?x?x?x64xf32>, memref<?x?x?x32xi8>, memref<?x?x?x32xi8>)
      outs(%o : memref<?x?x?x64xf32>)
      kv_scales(%ks, %vs : memref<?x?x?x64xf32>, memref<?x?x?xf32>)
      normalize = softmax kv_quant int4 group 64
  return
}

// -----

// Pages that hold whole tiles (64 here) are read in place too: the tile's
// page from the table (clamped into the pool), its slot k0 mod 64; the next
// tile's rows are prefetched (pages sit anywhere in the pool).

// CHECK-LABEL: func.func @paged_in_place(
// CHECK-SAME: %[[K:[a-z0-9]+]]: memref<?x?x?x64xi8>, %[[V:[a-z0-9]+]]: memref<?x?x?x64xi8>, %{{.+}}: memref<?x?x?x64xf32>, %{{.+}}: memref<?x?x?x64xf32>, %{{.+}}: memref<?x?x?xf32>, %[[PT:[a-z0-9]+]]: memref<?x?xi32>
// CHECK: scf.if %{{.+}} {
//      (The next tile's rows are prefetched first.)
// CHECK: memref.prefetch %[[V]]
// CHECK: %[[PAGE:.+]] = memref.load %[[PT]][%{{.+}}, %{{.+}}] : memref<?x?xi32>
// CHECK: arith.maxsi %[[PAGE]]
// CHECK: %[[SLOT:.+]] = arith.remui %{{.+}}, %c64
// CHECK: memref.subview %[[K]][%{{.+}}, %{{.+}}, %[[SLOT]], 0] [1, 1, 64, 64] [1, 1, 1, 1]
func.func @paged_in_place(%q: memref<?x?x?x64xf32>, %k: memref<?x?x?x64xi8>,
                          %v: memref<?x?x?x64xi8>, %o: memref<?x?x?x64xf32>,
                          %ks: memref<?x?x?x64xf32>, %vs: memref<?x?x?xf32>,
                          %pt: memref<?x?xi32>, %sl: memref<?xi32>) {
  attn.attention ins(%q, %k, %v : memref<?x?x?x64xf32>, memref<?x?x?x64xi8>, memref<?x?x?x64xi8>)
      outs(%o : memref<?x?x?x64xf32>)
      kv_scales(%ks, %vs : memref<?x?x?x64xf32>, memref<?x?x?xf32>)
      pages(%pt, %sl : memref<?x?xi32>, memref<?xi32>)
      normalize = softmax kv_quant int8 group 64 page_size 64
  return
}

// -----

// kv_index: the key loop walks the index's N slots; each slot's position
// (or -1 when outside [0, Skv)) is kept per row and is what the mask sees
// and what K/V rows are read at.

// CHECK-LABEL: func.func @sparse(
// CHECK-SAME: %{{[a-z0-9]+}}: memref<?x?x?x64xf32>, %[[K:[a-z0-9]+]]: memref<?x?x?x64xf32>, %{{[a-z0-9]+}}: memref<?x?x?x64xf32>, %{{[a-z0-9]+}}: memref<?x?x?x64xf32>, %[[IDX:[a-z0-9]+]]: memref<?x?x?xi32>
// CHECK: scf.parallel
// CHECK: %[[N:.+]] = memref.dim %[[IDX]], %c2
// CHECK: arith.ceildivui %[[N]], %c64
// CHECK: %[[POS:.+]] = memref.load %[[IDX]][
// CHECK: %[[INRANGE:.+]] = arith.andi
// CHECK: %[[VALID:.+]] = arith.andi %{{.+}}, %[[INRANGE]]
// CHECK: arith.select %[[VALID]], %[[POS]], %c-1_i32
// CHECK: %[[ROW:.+]] = arith.index_cast %[[POS]] : i32 to index
// CHECK: scf.if %[[VALID]]
// CHECK: memref.load %[[K]][%{{.+}}, %{{.+}}, %[[ROW]], %{{.+}}]
//      The mask reads the slot's position.
// CHECK: arith.cmpi sge, %[[KV:.+]], %c0_i32
// CHECK-NEXT: arith.cmpi sle, %[[KV]]
func.func @sparse(%q: memref<?x?x?x64xf32>, %k: memref<?x?x?x64xf32>,
                  %v: memref<?x?x?x64xf32>, %o: memref<?x?x?x64xf32>,
                  %idx: memref<?x?x?xi32>) {
  attn.attention ins(%q, %k, %v : memref<?x?x?x64xf32>, memref<?x?x?x64xf32>, memref<?x?x?x64xf32>)
      outs(%o : memref<?x?x?x64xf32>) kv_index(%idx : memref<?x?x?xi32>)
      captures(%idx : memref<?x?x?xi32>) normalize = softmax
  mask {
  ^bb0(%b: i32, %h: i32, %qi: i32, %kv: i32):
    %c = arith.cmpi sle, %kv, %qi : i32
    attn.yield %c : i1
  }
  return
}

// -----

// Pages smaller than the tile (16 rows, 64-key tiles) are read in place
// too, page by page: each of the tile's 4 pages from the table, a view of
// its 16 rows, Q.K and P.V on 16-row parts of the tile's compact scores
// ([64, 4]) and P's codes; the next tile's pages are prefetched (they sit
// anywhere in the pool).

// CHECK-LABEL: func.func @small_pages_in_place(
// CHECK-SAME: %[[K:[a-z0-9]+]]: memref<?x?x?x64xi8>, %[[V:[a-z0-9]+]]: memref<?x?x?x64xi8>
// CHECK: memref.prefetch %[[K]]
// CHECK: memref.prefetch %[[V]]
// CHECK-COUNT-4: memref.subview %[[K]][%{{.+}}, %{{.+}}, %{{.+}}, 0] [1, 1, 16, 64] [1, 1, 1, 1] : memref<?x?x?x64xi8> to memref<16x64xi8, strided<[64, 1], offset: ?>>
// CHECK-COUNT-4: linalg.matmul {{.*}}ins(%{{.+}}, %{{.+}} : memref<16x64xi8, strided<[64, 1], offset: ?>>, memref<4x64xi8, strided<[64, 1], offset: ?>>) outs(%{{.+}} : memref<16x4xf32, strided<[4, 1]{{.*}}>>)
// CHECK-COUNT-4: linalg.matmul {{.*}} {attn.unsigned_lhs} ins(%{{.+}}, %{{.+}} : memref<16x4xi8, strided<[4, 1]{{.*}}>>, memref<16x64xi8, strided<[64, 1], offset: ?>>) outs(%{{.+}} : memref<4x64xf32>)
func.func @small_pages_in_place(%q: memref<?x?x?x64xf32>, %k: memref<?x?x?x64xi8>,
                                %v: memref<?x?x?x64xi8>, %o: memref<?x?x?x64xf32>,
                                %ks: memref<?x?x?x64xf32>, %vs: memref<?x?x?xf32>,
                                %pt: memref<?x?xi32>, %sl: memref<?xi32>) {
  attn.attention ins(%q, %k, %v : memref<?x?x?x64xf32>, memref<?x?x?x64xi8>, memref<?x?x?x64xi8>)
      outs(%o : memref<?x?x?x64xf32>)
      kv_scales(%ks, %vs : memref<?x?x?x64xf32>, memref<?x?x?xf32>)
      pages(%pt, %sl : memref<?x?xi32>, memref<?xi32>)
      normalize = softmax kv_quant int8 group 64 page_size 16
  return
}

// -----

// fp8 codes read in place: P (V's scales folded in) is rounded to bf16 on
// its compact [BK, 4] tile, 16 at a time, and P . V multiplies those by
// V's codes in place (the CPU target pairs them up for vdpbf16ps).

// CHECK-LABEL: func.func @fp8_in_place(
// CHECK: %[[PB:.+]] = memref.alloca() {alignment = 64 : i64} : memref<[[BK:[0-9]+]]x4xbf16>
// CHECK: arith.truncf %{{.+}} : vector<16xf32> to vector<16xbf16>
// CHECK: linalg.matmul {{.+}} {attn.kv_codes = "fp8e4m3"} ins(%[[PB]], %{{.+}} : memref<[[BK]]x4xbf16>, memref<[[BK]]x64xi8, strided<[64, 1], offset: ?>>)
func.func @fp8_in_place(%q: memref<?x?x?x64xf32>, %k: memref<?x?x?x64xi8>,
                        %v: memref<?x?x?x64xi8>, %o: memref<?x?x?x64xf32>,
                        %ks: memref<?x?x?x64xf32>, %vs: memref<?x?x?xf32>) {
  attn.attention ins(%q, %k, %v : memref<?x?x?x64xf32>, memref<?x?x?x64xi8>, memref<?x?x?x64xi8>)
      outs(%o : memref<?x?x?x64xf32>)
      kv_scales(%ks, %vs : memref<?x?x?x64xf32>, memref<?x?x?xf32>)
      normalize = softmax kv_quant fp8e4m3 group 64
  return
}
