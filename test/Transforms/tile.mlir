// RUN: attn-opt %s -split-input-file --pass-pipeline='builtin.module(func.func(attn-tile))' | FileCheck %s
// RUN: attn-opt %s -split-input-file --pass-pipeline='builtin.module(func.func(attn-tile{block-q=16 block-kv=32}))' | FileCheck %s --check-prefix=TILES

// Softmax with a mask and no score region: log2(e) is folded into the scale
// applied to q, the score tile is kept transposed (S^T = K Q^T, one query
// per column), the mask region is inlined into the (key, query) loop, and
// the recurrence keeps a running max (m) and sum (l) per query.

// CHECK-LABEL: func.func @causal(
// CHECK-SAME: %[[Q:[a-z0-9]+]]: memref<?x?x?x64xf32>, %[[K:[a-z0-9]+]]: memref<?x?x?x64xf32>, %[[V:[a-z0-9]+]]: memref<?x?x?x32xf32>, %[[O:[a-z0-9]+]]: memref<?x?x?x32xf32>, %[[LSE:[a-z0-9]+]]: memref<?x?x?xf32>
// CHECK-NOT: attn.attention
// CHECK-DAG: %[[B:.+]] = memref.dim %[[Q]], %c0
// CHECK-DAG: %[[SQ:.+]] = memref.dim %[[Q]], %c2
// CHECK-DAG: %[[HKV:.+]] = memref.dim %[[K]], %c1
// CHECK-DAG: %[[SKV:.+]] = memref.dim %[[K]], %c2
//      Rows pack the query heads of each kv head: G * Sq rows per (b, hkv).
// CHECK: %[[ROWS:.+]] = arith.muli %{{.+}}, %[[SQ]] : index
// CHECK: %[[NQT:.+]] = arith.ceildivui %[[ROWS]], %c64
// CHECK: %[[QSCALE:.+]] = arith.mulf %{{.+}}, %{{.+}} : f32
// CHECK: scf.parallel (%[[BI:.+]], %[[HI:.+]], %[[QT:.+]]) = ({{.*}}) to (%[[B]], %[[HKV]], %[[NQT]])
// CHECK: memref.alloca_scope
// CHECK: %[[NKT:.+]] = arith.ceildivui %[[SKV]], %c64
//      Each row's query head and position.
// CHECK: memref.alloca() : memref<64xindex>
// CHECK: arith.divui %{{.+}}, %[[SQ]]
// CHECK: arith.remui %{{.+}}, %[[SQ]]
// CHECK: %[[QTB:.+]] = memref.alloca() {alignment = 64 : i64} : memref<64x64xf32>
// CHECK: %[[KB:.+]] = memref.alloca() {alignment = 64 : i64} : memref<64x64xf32>
// CHECK: %[[VB:.+]] = memref.alloca() {alignment = 64 : i64} : memref<64x32xf32>
// CHECK: %[[ST:.+]] = memref.alloca() {alignment = 64 : i64} : memref<64x64xf32>
//      (Decode's raw copy of a partial tile's K and V rows.)
// CHECK: memref.alloca() {alignment = 64 : i64} : memref<64x64xf32>
// CHECK: memref.alloca() {alignment = 64 : i64} : memref<64x32xf32>
// CHECK: %[[ACC:.+]] = memref.alloca() {alignment = 64 : i64} : memref<64x32xf32>
//      Query tile, transposed and scaled:
// CHECK: memref.load %[[Q]]
// CHECK: arith.mulf %{{.+}}, %[[QSCALE]] : f32
// CHECK: memref.store %{{.+}}, %[[QTB]][%{{.+}}, %{{.+}}]
//      Key tiles:
//      Key tiles, by index (a split-KV part walks a sub-range of them):
// CHECK: scf.for %[[T:.+]] = %c0{{.*}} to %[[NKT]] step %c1
// CHECK: arith.muli %[[T]], %c64
//      Decode (at most 16 rows) reads whole tiles in place and the last,
//      partial one from a raw copy of its rows, by the same code.
// CHECK: scf.if %{{.+}} -> (memref<64x64xf32, strided<[64, 1], offset: ?>>, memref<64x32xf32, strided<[32, 1], offset: ?>>)
// CHECK: memref.cast %{{.+}} : memref<64x64xf32, strided<[64, 1]>> to memref<64x64xf32, strided<[64, 1], offset: ?>>
//      Whole key tiles are read where they are (views of K and V), the last,
//      partial one from its staged copy (zero rows past the end), through
//      one type of view, so the tile's compute is emitted once.
// CHECK: %[[KV:.+]]:2 = scf.if %{{.+}} -> (memref<64x64xf32, strided<[64, 1], offset: ?>>, memref<64x32xf32, strided<[32, 1], offset: ?>>)
// CHECK-NEXT: scf.yield %[[KROWS:subview[_0-9]*]], %[[VROWS:subview[_0-9]*]] :
// CHECK: } else {
// CHECK: memref.load %[[K]]
// CHECK: memref.load %[[V]]
// CHECK: %[[KC:.+]] = memref.cast %[[KB]] : memref<64x64xf32> to memref<64x64xf32, strided<[64, 1], offset: ?>>
// CHECK: %[[VC:.+]] = memref.cast %[[VB]] : memref<64x32xf32> to memref<64x32xf32, strided<[32, 1], offset: ?>>
// CHECK: scf.yield %[[KC]], %[[VC]]
// CHECK: linalg.fill ins(%{{.+}} : f32) outs(%[[ST]] : memref<64x64xf32>)
// CHECK: linalg.matmul ins(%[[KV]]#0, %[[QTB]] : memref<64x64xf32, strided<[64, 1], offset: ?>>, memref<64x64xf32>) outs(%[[ST]] : memref<64x64xf32>)
//      Inlined mask (kv <= q), running max, exp2, rescale, then P V.
// CHECK: arith.cmpi sle
// CHECK: arith.maximumf
// CHECK: math.exp2
// CHECK: math.exp2
// CHECK: arith.addf {{.*}} fastmath<reassoc,contract>
// CHECK: linalg.matmul indexing_maps = [#{{.+}}, #{{.+}}, #{{.+}}] ins(%[[ST]], %[[KV]]#1 : memref<64x64xf32>, memref<64x32xf32, strided<[32, 1], offset: ?>>) outs(%[[ACC]] : memref<64x32xf32>)
//      Epilogue: o = acc / l (0 when l == 0), lse = (m + log2 l) * ln 2.
// CHECK: arith.cmpf oeq
// CHECK: memref.store %{{.+}}, %[[O]]
// CHECK: math.log2
// CHECK: arith.constant 0.693147182 : f32
// CHECK: memref.store %{{.+}}, %[[LSE]]
// CHECK: } {attn.work_loop}

// TILES-LABEL: func.func @causal(
// TILES: arith.ceildivui %{{.+}}, %c16
// TILES: memref.alloca() {alignment = 64 : i64} : memref<64x16xf32>
// TILES: memref.alloca() {alignment = 64 : i64} : memref<32x64xf32>
// TILES: arith.muli %{{.+}}, %c32
func.func @causal(%q: memref<?x?x?x64xf32>, %k: memref<?x?x?x64xf32>,
                  %v: memref<?x?x?x32xf32>, %o: memref<?x?x?x32xf32>,
                  %lse: memref<?x?x?xf32>) {
  attn.attention ins(%q, %k, %v : memref<?x?x?x64xf32>, memref<?x?x?x64xf32>, memref<?x?x?x32xf32>)
      outs(%o : memref<?x?x?x32xf32>) lse(%lse : memref<?x?x?xf32>)
      normalize = softmax scale = 0.125
  mask {
  ^bb0(%b: i32, %h: i32, %qi: i32, %kv: i32):
    %c = arith.cmpi sle, %kv, %qi : i32
    attn.yield %c : i1
  }
  return
}

// -----

// A score region keeps the natural-log scale on q and multiplies by log2(e)
// after the score; the sink initializes m with the sink logit and l with 1;
// captured-tensor reads clamp their indices into range.

// CHECK-LABEL: func.func @score_sink(
// CHECK-SAME: %[[BIAS:[a-z0-9]+]]: memref<?xf32>
// CHECK: %[[NH:.+]] = memref.dim %[[BIAS]], %c0
// CHECK: scf.parallel
// CHECK: %[[SINK:.+]] = arith.constant 5.000000e-01 : f32
// CHECK: %[[M0:.+]] = arith.mulf %[[SINK]], %{{.+}} : f32
// CHECK: memref.store %[[M0]]
// CHECK: arith.maxsi
// CHECK: arith.minsi
// CHECK: memref.load %[[BIAS]]
// CHECK: arith.addf
// CHECK: arith.mulf %{{.+}}, %{{.+}} : f32
// CHECK: arith.maximumf
func.func @score_sink(%q: memref<?x?x?x64xf32>, %o: memref<?x?x?x64xf32>,
                      %bias: memref<?xf32>) {
  attn.attention ins(%q, %q, %q : memref<?x?x?x64xf32>, memref<?x?x?x64xf32>, memref<?x?x?x64xf32>)
      outs(%o : memref<?x?x?x64xf32>) captures(%bias : memref<?xf32>)
      normalize = softmax scale = 0.125
  score {
  ^bb0(%s: f32, %b: i32, %h: i32, %qi: i32, %kv: i32):
    %x = attn.load %bias[%h] : memref<?xf32>
    %y = arith.addf %s, %x : f32
    attn.yield %y : f32
  } sink {
  ^bb0(%h: i32):
    %c = arith.constant 0.5 : f32
    attn.yield %c : f32
  }
  return
}

// -----

// Pointwise normalizers need no running max: sigmoid computes
// 1 / (1 + exp(-t)) per entry and the epilogue stores acc unscaled.

// CHECK-LABEL: func.func @sigmoid(
// CHECK-NOT: math.exp2
// CHECK: math.exp
// CHECK: arith.divf
// CHECK-NOT: math.log2
// CHECK: } {attn.work_loop}
func.func @sigmoid(%q: memref<?x?x?x64xf16>, %o: memref<?x?x?x64xf16>) {
  attn.attention ins(%q, %q, %q : memref<?x?x?x64xf16>, memref<?x?x?x64xf16>, memref<?x?x?x64xf16>)
      outs(%o : memref<?x?x?x64xf16>) normalize = sigmoid scale = 0.125
  return
}

// -----

// A dynamic scale is evaluated once, before the work loop; f16 inputs are
// widened on load and the output narrowed on store.

// CHECK-LABEL: func.func @dynamic_scale(
// CHECK: %[[F:.+]] = arith.sitofp %{{.+}} : i32 to f32
// CHECK: math.rsqrt %[[F]]
// CHECK: scf.parallel
// CHECK: arith.extf %{{.+}} : f16 to f32
// CHECK: arith.truncf %{{.+}} : f32 to f16
func.func @dynamic_scale(%q: memref<?x?x?x64xf16>, %o: memref<?x?x?x64xf16>) {
  attn.attention ins(%q, %q, %q : memref<?x?x?x64xf16>, memref<?x?x?x64xf16>, memref<?x?x?x64xf16>)
      outs(%o : memref<?x?x?x64xf16>) normalize = softmax
  scale_expr {
    %n = attn.dim Skv
    %f = arith.sitofp %n : i32 to f32
    %r = math.rsqrt %f : f32
    attn.yield %r : f32
  }
  return
}

// -----

// K/V in bf16 are converted to f32 as a tile is staged, whole tiles too:
// the matmuls read only the staged copies (in place, V's rows would be
// converted once per block of query rows).

// CHECK-LABEL: func.func @bf16_staged(
// CHECK-NOT: scf.if %{{.+}} -> (memref<{{.*}}xf32
// CHECK: arith.extf %{{.+}} : bf16 to f32
// CHECK-NOT: scf.if %{{.+}} -> (memref<{{.*}}xf32
// CHECK: linalg.matmul ins(%{{.+}}, %[[QTB:.+]] : memref<64x64xf32>, memref<64x64xf32>) outs(%[[ST:.+]] : memref<64x64xf32>)
//      No mask or score region: the rows past the tile's keys become -inf
//      (only the last tile has any), then the row max only reads S.
// CHECK: %[[NEGINF:.+]] = arith.constant 0xFF800000 : f32
// CHECK: scf.for %[[J:.+]] = %[[KN:.+]] to %c64
// CHECK-NEXT: arith.constant
// CHECK-NEXT: arith.constant
// CHECK-NEXT: scf.for %[[I:.+]] = %c0
// CHECK-NEXT: memref.store %[[NEGINF]], %[[ST]][%[[J]], %[[I]]]
// CHECK: scf.for %[[J2:.+]] = %c0{{.*}} to %c64
// CHECK-NEXT: arith.constant
// CHECK-NEXT: arith.constant
// CHECK-NEXT: scf.for %[[I2:.+]] = %c0
// CHECK-NEXT: %[[S:.+]] = memref.load %[[ST]][%[[J2]], %[[I2]]]
// CHECK-NEXT: %[[M:.+]] = memref.load %[[MUSE:.+]][%[[I2]]]
// CHECK-NEXT: %[[GT:.+]] = arith.cmpf ogt, %[[M]], %[[S]] : f32
// CHECK-NEXT: %[[MX:.+]] = arith.select %[[GT]], %[[M]], %[[S]] : f32
// CHECK-NEXT: memref.store %[[MX]], %[[MUSE]][%[[I2]]]
// CHECK-NEXT: }
// CHECK-NEXT: }
// CHECK: math.exp2
// CHECK-NOT: scf.if %{{.+}} -> (memref
// CHECK: } {attn.work_loop}
func.func @bf16_staged(%q: memref<?x?x?x64xbf16>, %k: memref<?x?x?x64xbf16>,
                       %v: memref<?x?x?x64xbf16>, %o: memref<?x?x?x64xbf16>) {
  attn.attention ins(%q, %k, %v : memref<?x?x?x64xbf16>, memref<?x?x?x64xbf16>, memref<?x?x?x64xbf16>)
      outs(%o : memref<?x?x?x64xbf16>)
      normalize = softmax scale = 0.125
  return
}
