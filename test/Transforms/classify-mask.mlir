// RUN: attn-opt %s -split-input-file --pass-pipeline='builtin.module(func.func(attn-classify-mask))' | FileCheck %s
// RUN: attn-opt %s -split-input-file --pass-pipeline='builtin.module(func.func(attn-classify-mask,attn-tile))' | FileCheck %s --check-prefix=TILE

// kv <= q in intervals: EMPTY when the block's lowest key is past its
// highest query, FULL when its highest key is at most its lowest query.

// CHECK-LABEL: func.func @causal(
// CHECK: classify {
// CHECK: ^bb0(%[[B:.+]]: i32, %[[H:.+]]: i32, %[[QLO:.+]]: i32, %[[QHI:.+]]: i32, %[[KLO:.+]]: i32, %[[KHI:.+]]: i32):
// CHECK-DAG: %[[QL:.+]] = arith.extsi %[[QLO]] : i32 to i64
// CHECK-DAG: %[[QH:.+]] = arith.extsi %[[QHI]] : i32 to i64
// CHECK-DAG: %[[KL:.+]] = arith.extsi %[[KLO]] : i32 to i64
// CHECK-DAG: %[[KH:.+]] = arith.extsi %[[KHI]] : i32 to i64
// CHECK: %[[MAYT:.+]] = arith.cmpi sle, %[[KL]], %[[QH]] : i64
// CHECK: %[[MAYF:.+]] = arith.cmpi sgt, %[[KH]], %[[QL]] : i64
// CHECK: %[[NOT_T:.+]] = arith.xori %[[MAYT]]
// CHECK: %[[NOT_F:.+]] = arith.xori %[[MAYF]]
// CHECK: %[[FULL_OR_PARTIAL:.+]] = arith.select %[[NOT_F]], %{{.+}}, %{{.+}} : i32
// CHECK: %[[CLS:.+]] = arith.select %[[NOT_T]], %{{.+}}, %[[FULL_OR_PARTIAL]] : i32
// CHECK: attn.yield %[[CLS]] : i32

// The kernel walks ranges of key tiles with a stack, takes each range's
// class from the block map it was given or from the classifier, and runs
// FULL tiles without the mask.
// TILE-LABEL: func.func @causal(
// TILE: memref.alloca() : memref<64xindex>
// TILE: scf.while
// TILE: memref.dim %{{.+}}, %c3
// TILE: scf.if %{{.+}} -> (i32)
// TILE: memref.load %{{.+}} : memref<?x?x?x?xi8>
// TILE: } else {
// TILE: arith.cmpi sle, %{{.+}}, %{{.+}} : i64
// TILE: scf.if
// TILE: linalg.matmul
// TILE: scf.if %{{.+}} {
//        FULL: no mask
// TILE-NOT: arith.cmpi sle, %{{.+}}, %{{.+}} : i32
// TILE: arith.maximumf
// TILE: } else {
// TILE: arith.cmpi sle, %{{.+}}, %{{.+}} : i32
// TILE: arith.maximumf
func.func @causal(%q: memref<?x?x?x64xf32>, %o: memref<?x?x?x64xf32>,
                  %map: memref<?x?x?x?xi8>) {
  attn.attention ins(%q, %q, %q : memref<?x?x?x64xf32>, memref<?x?x?x64xf32>, memref<?x?x?x64xf32>)
      outs(%o : memref<?x?x?x64xf32>) tile_classes(%map : memref<?x?x?x?xi8>)
      normalize = softmax scale = 0.125
  mask {
  ^bb0(%b: i32, %h: i32, %qi: i32, %kv: i32):
    %c = arith.cmpi sle, %kv, %qi : i32
    attn.yield %c : i1
  }
  return
}

// -----

// Integer division and modulo by params: a block within one chunk of q has
// a point q / chunk; % over a range that stays inside one period is exact.

// CHECK-LABEL: func.func @chunked(
// CHECK: classify {
// CHECK: arith.floordivsi %{{.+}}, %{{.+}} : i64
// CHECK: arith.minsi
// CHECK: arith.maxsi
// CHECK: attn.yield %{{.+}} : i32
func.func @chunked(%q: memref<?x?x?x64xf32>, %o: memref<?x?x?x64xf32>, %chunk: i32) {
  attn.attention ins(%q, %q, %q : memref<?x?x?x64xf32>, memref<?x?x?x64xf32>, memref<?x?x?x64xf32>)
      outs(%o : memref<?x?x?x64xf32>) params(%chunk : i32)
      normalize = softmax scale = 0.125
  mask {
  ^bb0(%b: i32, %h: i32, %qi: i32, %kv: i32):
    %a = attn.floordiv %qi, %chunk
    %c = attn.floordiv %kv, %chunk
    %r = attn.floormod %kv, %chunk
    %z = arith.constant 0 : i32
    %e = arith.cmpi eq, %a, %c : i32
    %f = arith.cmpi eq, %r, %z : i32
    %m = arith.ori %e, %f : i1
    attn.yield %m : i1
  }
  return
}

// -----

// A captured tensor read at a varying index is bounded by its min and max
// over the block (a loop); at an exact index (b) it is read once.

// CHECK-LABEL: func.func @docs(
// CHECK-SAME: %[[DOC:[a-z0-9]+]]: memref<?x?xi32>
// CHECK: classify {
// CHECK: %[[RANGE:.+]]:2 = scf.for {{.*}} iter_args({{.*}}) -> (i32, i32) {
// CHECK: memref.load %[[DOC]]
// CHECK: arith.minsi
// CHECK: arith.maxsi
// CHECK: attn.yield %{{.+}} : i32
func.func @docs(%q: memref<?x?x?x64xf32>, %o: memref<?x?x?x64xf32>, %doc: memref<?x?xi32>) {
  attn.attention ins(%q, %q, %q : memref<?x?x?x64xf32>, memref<?x?x?x64xf32>, memref<?x?x?x64xf32>)
      outs(%o : memref<?x?x?x64xf32>) captures(%doc : memref<?x?xi32>)
      normalize = softmax scale = 0.125
  mask {
  ^bb0(%b: i32, %h: i32, %qi: i32, %kv: i32):
    %d0 = attn.load %doc[%b, %qi] : memref<?x?xi32>
    %d1 = attn.load %doc[%b, %kv] : memref<?x?xi32>
    %e = arith.cmpi eq, %d0, %d1 : i32
    attn.yield %e : i1
  }
  return
}
