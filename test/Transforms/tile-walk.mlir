// RUN: attn-opt %s -split-input-file --pass-pipeline='builtin.module(func.func(attn-classify-mask,attn-tile))' | FileCheck %s

// The CPU walks key tiles by bisection (lib/Transforms/TileWalk.h): a stack
// of tile ranges [lo, hi) starting with the item's whole range; each range
// popped is classified once (the classifier on its key span [lo * BK,
// min(hi * BK, Skv) - 1]); FULL ranges and single PARTIAL tiles are visited
// tile by tile (FULL without the mask), PARTIAL ranges of several tiles
// split in two, EMPTY ones are dropped.

// CHECK-LABEL: func.func @causal(
// CHECK: memref.alloca() : memref<index>
// CHECK: scf.while
// CHECK: } do {
// CHECK: %[[TOP:.+]] = arith.subi
// CHECK: %[[LO:.+]] = memref.load %[[LOS:[a-z0-9_]+]][%[[TOP]]] : memref<64xindex>
// CHECK: %[[HI:.+]] = memref.load %[[HIS:[a-z0-9_]+]][%[[TOP]]] : memref<64xindex>
// CHECK: arith.muli %[[LO]], %c64
// CHECK: arith.muli %[[HI]], %c64
//      The inlined classifier of the causal mask: EMPTY (0), FULL (2) or
//      PARTIAL (1).
// CHECK: %[[CLS:.+]] = arith.select %{{.+}}, %c0_i32{{.*}}, %{{.+}} : i32
// CHECK: %[[FULL:.+]] = arith.cmpi eq, %[[CLS]], %c2_i32
// CHECK: %[[PARTIAL:.+]] = arith.cmpi eq, %[[CLS]], %c1_i32
// CHECK: %[[N:.+]] = arith.subi %[[HI]], %[[LO]]
// CHECK: %[[SINGLE:.+]] = arith.cmpi eq, %[[N]], %c1{{.*}} : index
// CHECK: %[[PSINGLE:.+]] = arith.andi %[[PARTIAL]], %[[SINGLE]]
// CHECK: %[[VISIT:.+]] = arith.ori %[[FULL]], %[[PSINGLE]]
// CHECK: %[[SEVERAL:.+]] = arith.xori %[[SINGLE]], %true{{.*}} : i1
// CHECK: %[[SPLIT:.+]] = arith.andi %[[PARTIAL]], %[[SEVERAL]]
// CHECK: scf.if %[[VISIT]] {
// CHECK: scf.for %{{.+}} = %[[LO]] to %[[HI]] step
//      Without the mask on FULL tiles:
// CHECK: scf.if %[[FULL]] {
// CHECK: scf.if %[[SPLIT]] {
// CHECK: %[[SUM:.+]] = arith.addi %[[LO]], %[[HI]]
// CHECK: %[[MID:.+]] = arith.divui %[[SUM]], %c2{{.*}} : index
// CHECK: memref.store %[[MID]], %[[LOS]][%[[TOP]]]
// CHECK: memref.store %[[HI]], %[[HIS]][%[[TOP]]]
// CHECK: memref.store %[[LO]], %[[LOS]]
// CHECK: memref.store %[[MID]], %[[HIS]]
func.func @causal(%q: memref<?x?x?x64xf32>, %k: memref<?x?x?x64xf32>,
                  %v: memref<?x?x?x32xf32>, %o: memref<?x?x?x32xf32>) {
  attn.attention ins(%q, %k, %v : memref<?x?x?x64xf32>, memref<?x?x?x64xf32>, memref<?x?x?x32xf32>)
      outs(%o : memref<?x?x?x32xf32>) normalize = softmax mask {
  ^bb0(%b: i32, %h: i32, %i: i32, %j: i32):
    %c = arith.cmpi sle, %j, %i : i32
    attn.yield %c : i1
  }
  return
}

// -----

// No mask and no map: nothing to classify, every tile in order.

// CHECK-LABEL: func.func @dense(
// CHECK-NOT: scf.while
// CHECK: scf.parallel
// CHECK: %[[NKT:.+]] = arith.ceildivui %{{.+}}, %c64
// CHECK: scf.for %[[T:.+]] = %c0{{.*}} to %[[NKT]] step %c1
// CHECK: arith.muli %[[T]], %c64
// CHECK-NOT: scf.while
func.func @dense(%q: memref<?x?x?x64xf32>, %k: memref<?x?x?x64xf32>,
                 %v: memref<?x?x?x32xf32>, %o: memref<?x?x?x32xf32>) {
  attn.attention ins(%q, %k, %v : memref<?x?x?x64xf32>, memref<?x?x?x64xf32>, memref<?x?x?x32xf32>)
      outs(%o : memref<?x?x?x32xf32>) normalize = softmax
  return
}

// -----

// A tile_classes map (when it has key tiles) classifies a range by a scan
// of its entries: EMPTY if all are, FULL if all are, else PARTIAL; an
// empty map falls back to the classifier.

// CHECK-LABEL: func.func @mapped(
// CHECK-SAME: %[[MAP:[a-z0-9]+]]: memref<?x?x?x?xi8>
// CHECK: scf.while
// CHECK: %[[NK:.+]] = memref.dim %[[MAP]], %c3
// CHECK: %[[HAVE:.+]] = arith.cmpi ugt, %[[NK]], %c0
// CHECK: scf.if %[[HAVE]] -> (i32) {
// CHECK: %[[SCAN:.+]]:2 = scf.for %[[T:.+]] = %{{.+}} to %{{.+}} step %c1{{.*}} iter_args(%{{.+}} = %false{{.*}}, %{{.+}} = %true{{.*}})
// CHECK: %[[E:.+]] = memref.load %[[MAP]][%{{.+}}, %{{.+}}, %{{.+}}, %[[T]]]
// CHECK: arith.cmpi eq, %[[E]], %c0_i8
// CHECK: arith.cmpi eq, %[[E]], %c2_i8
// CHECK: %[[FP:.+]] = arith.select %[[SCAN]]#1, %c2_i32{{.*}}, %c1_i32
// CHECK: %[[C:.+]] = arith.select %[[SCAN]]#0, %[[FP]], %c0_i32
// CHECK: scf.yield %[[C]]
// CHECK: } else {
// CHECK: arith.cmpi sle
func.func @mapped(%q: memref<?x?x?x64xf32>, %o: memref<?x?x?x64xf32>,
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
