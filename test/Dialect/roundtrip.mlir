// RUN: attn-opt %s | attn-opt | FileCheck %s
// RUN: attn-opt %s --mlir-print-op-generic | attn-opt | FileCheck %s

// CHECK-LABEL: func.func @all_regions
func.func @all_regions(%q: memref<?x?x?x64xf32>, %k: memref<?x?x?x64xf32>,
                       %v: memref<?x?x?x32xf32>, %o: memref<?x?x?x32xf32>,
                       %lse: memref<?x?x?xf32>, %w: i32, %t: f32,
                       %doc: memref<?x?xi32>, %bias: memref<?xf16>) {
  // CHECK: attn.attention ins(%{{.*}}, %{{.*}}, %{{.*}} : memref<?x?x?x64xf32>, memref<?x?x?x64xf32>, memref<?x?x?x32xf32>)
  // CHECK-SAME: outs(%{{.*}} : memref<?x?x?x32xf32>) lse(%{{.*}} : memref<?x?x?xf32>)
  // CHECK-SAME: params(%{{.*}}, %{{.*}} : i32, f32) captures(%{{.*}}, %{{.*}} : memref<?x?xi32>, memref<?xf16>)
  // CHECK-SAME: normalize = softmax scale_expr
  attn.attention ins(%q, %k, %v : memref<?x?x?x64xf32>, memref<?x?x?x64xf32>, memref<?x?x?x32xf32>)
      outs(%o : memref<?x?x?x32xf32>) lse(%lse : memref<?x?x?xf32>)
      params(%w, %t : i32, f32) captures(%doc, %bias : memref<?x?xi32>, memref<?xf16>)
      normalize = softmax
  scale_expr {
    // CHECK: %[[SKV:.+]] = attn.dim Skv
    %n = attn.dim Skv
    %f = arith.sitofp %n : i32 to f32
    %r = math.rsqrt %f : f32
    attn.yield %r : f32
  } score {
  // CHECK: ^bb0(%[[S:.+]]: f32, %[[B:.+]]: i32, %[[H:.+]]: i32, %[[Q:.+]]: i32, %[[KV:.+]]: i32):
  ^bb0(%s: f32, %b: i32, %h: i32, %qi: i32, %kv: i32):
    // CHECK: attn.load %{{.*}}[%[[H]]] : memref<?xf16>
    %x = attn.load %bias[%h] : memref<?xf16>
    %xf = arith.extf %x : f16 to f32
    %y = arith.addf %s, %xf : f32
    %z = arith.mulf %y, %t : f32
    attn.yield %z : f32
  } mask {
  ^bb0(%b: i32, %h: i32, %qi: i32, %kv: i32):
    // CHECK: attn.floordiv
    // CHECK: attn.floormod
    %d0 = attn.load %doc[%b, %qi] : memref<?x?xi32>
    %d1 = attn.load %doc[%b, %kv] : memref<?x?xi32>
    %c = arith.cmpi eq, %d0, %d1 : i32
    %g = attn.floordiv %kv, %w
    %m = attn.floormod %g, %w
    %z = arith.constant 0 : i32
    %e = arith.cmpi eq, %m, %z : i32
    %r = arith.andi %c, %e : i1
    attn.yield %r : i1
  } sink {
  // CHECK: ^bb0(%[[SH:.+]]: i32):
  ^bb0(%h: i32):
    %c = arith.constant 1.0 : f32
    attn.yield %c : f32
  }
  return
}

// CHECK-LABEL: func.func @minimal
// CHECK: attn.attention ins({{.*}}) outs({{.*}}) normalize = sigmoid scale = 1.250000e-01{{$}}
func.func @minimal(%q: memref<2x4x8x64xbf16>, %o: memref<2x4x8x64xf32>) {
  attn.attention ins(%q, %q, %q : memref<2x4x8x64xbf16>, memref<2x4x8x64xbf16>, memref<2x4x8x64xbf16>)
      outs(%o : memref<2x4x8x64xf32>) normalize = sigmoid scale = 0.125
  return
}


// Quantized, paged and sparse K/V operands round-trip.
// CHECK-LABEL: func.func @serving
// CHECK: attn.attention ins(%{{.*}}, %{{.*}}, %{{.*}} : memref<?x?x?x128xbf16>, memref<?x?x?x64xi8>, memref<?x?x?x64xi8>)
// CHECK-SAME: kv_scales(%{{.*}}, %{{.*}} : memref<?x?x?x128xf32>, memref<?x?x?xf32>)
// CHECK-SAME: pages(%{{.*}}, %{{.*}} : memref<?x?xi32>, memref<?xi32>)
// CHECK-SAME: kv_index(%{{.*}} : memref<?x?x?xi32>)
// CHECK-SAME: kv_quant int4 group 32 page_size 16
func.func @serving(%q: memref<?x?x?x128xbf16>, %k: memref<?x?x?x64xi8>,
                   %v: memref<?x?x?x64xi8>, %o: memref<?x?x?x128xbf16>,
                   %ks: memref<?x?x?x128xf32>, %vs: memref<?x?x?xf32>,
                   %pt: memref<?x?xi32>, %sl: memref<?xi32>,
                   %idx: memref<?x?x?xi32>) {
  attn.attention ins(%q, %k, %v : memref<?x?x?x128xbf16>, memref<?x?x?x64xi8>, memref<?x?x?x64xi8>)
      outs(%o : memref<?x?x?x128xbf16>)
      kv_scales(%ks, %vs : memref<?x?x?x128xf32>, memref<?x?x?xf32>)
      pages(%pt, %sl : memref<?x?xi32>, memref<?xi32>)
      kv_index(%idx : memref<?x?x?xi32>)
      normalize = softmax kv_quant int4 group 32 page_size 16
  return
}
