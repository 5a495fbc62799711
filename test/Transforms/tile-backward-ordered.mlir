// RUN: attn-opt %s -split-input-file -verify-diagnostics --pass-pipeline='builtin.module(func.func(attn-classify-mask),attn-tile-backward{block-q=32 block-kv=64 ordered-dq=1},func.func(canonicalize,cse))' | FileCheck %s

// ordered-dq: the function gains dq_accum (f32) and dq_progress (i32, a
// 64-byte line per phase-0 item). Phase 0 computes each kept pair's dQ into
// a stack tile (the fifth tile product); unless its key tile is the last,
// it waits until the next key tile's item has passed this pair of the walk
// (acquire loads in a loop, skipped when the count last seen is already
// past it), adds its rows to dq_accum, and publishes the pairs it passed
// (a release store); an EMPTY pair waits and publishes but adds nothing.
// Phase 1 converts dq_accum to dq's dtype: no S, dP or dQ products there.

// CHECK: func.func private @sched_yield() -> i32
// CHECK-LABEL: func.func @causal(
// CHECK-SAME: %[[DQ:[a-z0-9]+]]: memref<?x?x?x64xbf16>, %{{[a-z0-9]+}}: memref<?x?x?x64xbf16>, %{{[a-z0-9]+}}: memref<?x?x?x32xbf16>, %{{[a-z0-9]+}}: i32, %[[ACC:[a-z0-9]+]]: memref<?x?x?x64xf32> {attn.name = "dq_accum"}, %[[PROGRESS:[a-z0-9]+]]: memref<?x?x?x16xi32> {attn.name = "dq_progress"})
// CHECK: %[[SEEN:.+]] = memref.alloca() : memref<1xi32>
// CHECK: linalg.matmul indexing_maps = [#map, #map1, #map2] ins(%{{.+}}, %{{.+}} : memref<64x32xf32>, memref<64x64xf32>) outs(%[[PART:.+]] : memref<32x64xf32>)
// CHECK: %[[LAST_SEEN:.+]] = memref.load %[[SEEN]]
// CHECK: %[[BEHIND:.+]] = arith.cmpi sle, %[[LAST_SEEN]], %[[POS:.+]] : i32
// CHECK: scf.if %[[BEHIND]] {
// CHECK: memref.extract_aligned_pointer_as_index %[[PROGRESS]]
// CHECK: %[[NEXT:.+]] = llvm.inttoptr
// CHECK: scf.while
// CHECK-NEXT: %[[COUNT:.+]] = llvm.load %[[NEXT]] atomic acquire
// CHECK-NEXT: %[[WAIT:.+]] = arith.cmpi sle, %[[COUNT]], %[[POS]]
// CHECK-NEXT: scf.condition(%[[WAIT]]) %[[COUNT]]
//      Every 64 reads the waiting thread yields its core.
// CHECK: arith.andi %{{.+}}, %c63_i32
// CHECK: func.call @sched_yield() : () -> i32
// CHECK: memref.store %{{.+}}, %[[SEEN]]
// CHECK: memref.load %[[PART]]
// CHECK: memref.load %[[ACC]]
// CHECK: memref.store %{{.+}}, %[[ACC]]
// CHECK: %[[PASSED:.+]] = arith.addi %[[POS]], %c1_i32
// CHECK: %[[MINE:.+]] = llvm.inttoptr
// CHECK: llvm.store %[[PASSED]], %[[MINE]] atomic release
// CHECK: } else {
// CHECK: llvm.load %{{.+}} atomic acquire
// CHECK: llvm.store %{{.+}} atomic release
//      Every pair passed at the item's end.
// CHECK: llvm.store %{{.+}} atomic release
// CHECK: } else {
// CHECK-NOT: linalg.matmul
// CHECK: memref.load %[[ACC]]
// CHECK: arith.truncf
// CHECK: memref.store %{{.+}}, %[[DQ]]

func.func @causal(%q: memref<?x?x?x64xbf16>, %k: memref<?x?x?x64xbf16>, %v: memref<?x?x?x32xbf16>, %o: memref<?x?x?x32xbf16>, %lse: memref<?x?x?xf32>, %do: memref<?x?x?x32xbf16>, %dq: memref<?x?x?x64xbf16>, %dk: memref<?x?x?x64xbf16>, %dv: memref<?x?x?x32xbf16>, %phase: i32) {
  attn.attention ins(%q, %k, %v : memref<?x?x?x64xbf16>, memref<?x?x?x64xbf16>, memref<?x?x?x32xbf16>) outs(%o : memref<?x?x?x32xbf16>) lse(%lse : memref<?x?x?xf32>) backward(%do, %dq, %dk, %dv : memref<?x?x?x32xbf16>, memref<?x?x?x64xbf16>, memref<?x?x?x64xbf16>, memref<?x?x?x32xbf16>) phase(%phase) normalize = softmax mask {
  ^bb0(%b: i32, %h: i32, %qi: i32, %kv: i32):
    %m = arith.cmpi sge, %qi, %kv : i32
    attn.yield %m : i1
  }
  return
}

// -----

// A score reading an f32 param: phase 0's items add its gradient to a slot
// of their own, item (b, kv head, key tile) at (b Hkv + hkv) tiles + tile,
// which the runtime sums in item order (lane sums from lane 0).

// CHECK-LABEL: func.func @capped(
// CHECK-SAME: %[[DCAP:[a-z0-9]+]]: memref<?xf32>, %{{[a-z0-9]+}}: i32, %{{.+}} {attn.name = "dq_accum"}
// CHECK: %[[OLD:.+]] = memref.load %[[DCAP]][%[[SLOT:.+]]] : memref<?xf32>
// CHECK: scf.for %{{.+}} = %c0 to %c32 step %c1 iter_args(%{{.+}} = %[[OLD]])
// CHECK: memref.store %{{.+}}, %[[DCAP]][%[[SLOT]]]
func.func @capped(%q: memref<?x?x?x64xf32>, %lse: memref<?x?x?xf32>, %cap: f32, %dcap: memref<?xf32>, %phase: i32) {
  attn.attention ins(%q, %q, %q : memref<?x?x?x64xf32>, memref<?x?x?x64xf32>, memref<?x?x?x64xf32>) outs(%q : memref<?x?x?x64xf32>) lse(%lse : memref<?x?x?xf32>) params(%cap : f32) backward(%q, %q, %q, %q : memref<?x?x?x64xf32>, memref<?x?x?x64xf32>, memref<?x?x?x64xf32>, memref<?x?x?x64xf32>) phase(%phase) param_grads(%dcap : memref<?xf32>) normalize = softmax score {
  ^bb0(%s: f32, %b: i32, %h: i32, %qi: i32, %kv: i32):
    %x = arith.mulf %s, %cap : f32
    attn.yield %x : f32
  }
  return
}

// -----

// A score reading an f32 captured tensor adds to its gradient per entry in
// phase 0, whose items ordered dQ runs without per-group gradient copies:
// rejected (the driver keeps such variants on the recomputing phase 1).
func.func @biased(%q: memref<?x?x?x64xf32>, %lse: memref<?x?x?xf32>, %bias: memref<?xf32>, %dbias: memref<?xf32>, %phase: i32) {
  // expected-error @+1 {{ordered dQ needs score and scale expressions that add no captured-tensor gradients}}
  attn.attention ins(%q, %q, %q : memref<?x?x?x64xf32>, memref<?x?x?x64xf32>, memref<?x?x?x64xf32>) outs(%q : memref<?x?x?x64xf32>) lse(%lse : memref<?x?x?xf32>) captures(%bias : memref<?xf32>) backward(%q, %q, %q, %q : memref<?x?x?x64xf32>, memref<?x?x?x64xf32>, memref<?x?x?x64xf32>, memref<?x?x?x64xf32>) phase(%phase) capture_grads(%dbias : memref<?xf32>) normalize = softmax score {
  ^bb0(%s: f32, %b: i32, %h: i32, %qi: i32, %kv: i32):
    %x = attn.load %bias[%h] : memref<?xf32>
    %y = arith.addf %s, %x : f32
    attn.yield %y : f32
  }
  return
}

// -----

// select's choices are constants of the backward: the forward's block map
// comes in as tile_classes [B, Hq, query tiles, key tiles] (Kernel::blockMap)
// and gives each pair's class instead of the classifier (phase 0 here; with
// ordered dQ, phase 1 visits no pairs).

// CHECK-LABEL: func.func @moba(
// CHECK-SAME: %[[MAP:[a-z0-9]+]]: memref<?x?x?x?xi8>
// CHECK: %[[QT:.+]] = arith.divui %{{.+}}, %c32
// CHECK: %[[KT:.+]] = arith.divui %{{.+}}, %c64
// CHECK: %[[CLS8:.+]] = memref.load %[[MAP]][%{{.+}}, %{{.+}}, %[[QT]], %[[KT]]] : memref<?x?x?x?xi8>
// CHECK: %[[CLS:.+]] = arith.extui %[[CLS8]] : i8 to i32
// CHECK: arith.cmpi ne, %[[CLS]], %c0_i32
func.func @moba(%q: memref<?x?x?x64xf32>, %lse: memref<?x?x?xf32>, %k: i32, %map: memref<?x?x?x?xi8>, %phase: i32) {
  attn.attention ins(%q, %q, %q : memref<?x?x?x64xf32>, memref<?x?x?x64xf32>, memref<?x?x?x64xf32>) outs(%q : memref<?x?x?x64xf32>) lse(%lse : memref<?x?x?xf32>) tile_classes(%map : memref<?x?x?x?xi8>) params(%k : i32) backward(%q, %q, %q, %q : memref<?x?x?x64xf32>, memref<?x?x?x64xf32>, memref<?x?x?x64xf32>, memref<?x?x?x64xf32>) phase(%phase) normalize = softmax select topk block 64 select_arg {
    %f = arith.sitofp %k : i32 to f32
    attn.yield %f : f32
  }
  return
}
