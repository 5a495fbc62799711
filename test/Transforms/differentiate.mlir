// RUN: attn-opt %s -split-input-file -verify-diagnostics --attn-differentiate -cse | FileCheck %s

// A soft-capped score with an ALiBi slope, a learned bias table read at a
// computed index and a hinge, a sink and a scale reading params. Each
// adjoint region recomputes what it needs of its region's values, then
// propagates g back: score_grad yields d/ds and adds the gradients of the
// f32 params (cap) and the captured elements read (slope[h], bias[h, i]);
// integer values (q - kv, the bias index) carry none.

// Every product g * (local derivative) is 0 where g is 0 (select on
// g == 0), so a branch not taken passes no gradient even where its local
// derivative is inf or NaN.

// CHECK-LABEL: func.func @capped(
// CHECK-SAME: %[[CAP:[^:]+]]: f32, %[[TEMP:[^:]+]]: f32, %[[SLOPE:[^:]+]]: memref<?xf32>, %[[BIAS:[^:]+]]: memref<?x?xf32>
// CHECK: } score_grad {
// CHECK-NEXT: ^bb0(%[[S:.+]]: f32, %[[B:.+]]: i32, %[[H:.+]]: i32, %[[Q:.+]]: i32, %[[KV:.+]]: i32, %[[G:.+]]: f32):
//      The forward sweep: s / cap and its tanh, the distance, the index.
// CHECK-NEXT: %[[X:.+]] = arith.divf %[[S]], %[[CAP]] : f32
// CHECK-NEXT: %[[T:.+]] = math.tanh %[[X]] : f32
// CHECK: %[[DIST:.+]] = arith.sitofp %{{.+}} : i32 to f32
// CHECK: %[[IDX:.+]] = arith.minsi
//      No load survives: the reads' values are not needed, only their
//      places.
// CHECK-NOT: attn.load
//      max(s, 0): all of g above 0, half on the tie, none below.
// CHECK: %[[ZERO:.+]] = arith.constant 0.000000e+00 : f32
// CHECK: %[[GT:.+]] = arith.cmpf ogt, %[[S]], %[[ZERO]] : f32
// CHECK: %[[TIE:.+]] = arith.cmpf oeq, %[[S]], %[[ZERO]] : f32
// CHECK: %[[HALF:.+]] = arith.select %[[TIE]], %{{.+}}, %[[ZERO]] : f32
// CHECK: %[[W:.+]] = arith.select %[[GT]], %{{.+}}, %[[HALF]] : f32
// CHECK: %[[GZERO:.+]] = arith.cmpf oeq, %[[G]], %[[ZERO]] : f32
// CHECK: %[[GW:.+]] = arith.mulf %[[G]], %[[W]] : f32
// CHECK: %[[DHINGE:.+]] = arith.select %[[GZERO]], %[[ZERO]], %[[GW]] : f32
//      bias[h, min(|q - kv|, 63)] gets g; slope[h] gets -g (q - kv).
// CHECK: attn.accumulate_grad %[[G]] to %[[BIAS]][%[[H]], %[[IDX]]] : memref<?x?xf32>
// CHECK: %[[NG:.+]] = arith.negf %[[G]] : f32
// CHECK: %[[NGD:.+]] = arith.mulf %[[NG]], %[[DIST]] : f32
// CHECK: %[[DSLOPE:.+]] = arith.select %{{.+}}, %[[ZERO]], %[[NGD]] : f32
// CHECK: attn.accumulate_grad %[[DSLOPE]] to %[[SLOPE]][%[[H]]] : memref<?xf32>
//      cap tanh(s / cap): d/ds = 1 - tanh^2, d/dcap = tanh - (s / cap)(1 - tanh^2).
// CHECK: %[[GTANH:.+]] = arith.mulf %[[G]], %[[T]] : f32
// CHECK: %[[DTANH:.+]] = arith.select %[[GZERO]], %[[ZERO]], %[[GTANH]] : f32
// CHECK: %[[GCAP:.+]] = arith.mulf %[[G]], %[[CAP]] : f32
// CHECK: %[[DCAPT:.+]] = arith.select %[[GZERO]], %[[ZERO]], %[[GCAP]] : f32
// CHECK: %[[T2:.+]] = arith.mulf %[[T]], %[[T]] : f32
// CHECK: %[[SECH2:.+]] = arith.subf %{{.+}}, %[[T2]] : f32
// CHECK: %[[DXM:.+]] = arith.mulf %[[DCAPT]], %[[SECH2]] : f32
// CHECK: %[[DX:.+]] = arith.select %{{.+}}, %[[ZERO]], %[[DXM]] : f32
// CHECK: %[[INV:.+]] = arith.divf %{{.+}}, %[[CAP]] : f32
// CHECK: %[[DXCM:.+]] = arith.mulf %[[DX]], %[[INV]] : f32
// CHECK: %[[DXC:.+]] = arith.select %{{.+}}, %[[ZERO]], %[[DXCM]] : f32
// CHECK: %[[DS:.+]] = arith.addf %[[DHINGE]], %[[DXC]] : f32
// CHECK: %[[R:.+]] = arith.divf %[[X]], %[[CAP]] : f32
// CHECK: %[[NR:.+]] = arith.negf %[[R]] : f32
// CHECK: %[[PM:.+]] = arith.mulf %[[DX]], %[[NR]] : f32
// CHECK: %[[P:.+]] = arith.select %{{.+}}, %[[ZERO]], %[[PM]] : f32
// CHECK: %[[DCAP:.+]] = arith.addf %[[DTANH]], %[[P]] : f32
// CHECK: attn.accumulate_grad %[[DCAP]] to %[[CAP]] : f32
// CHECK: attn.yield %[[DS]] : f32
//      sink(h) = slope[h] * temp.
// CHECK: } sink_grad {
// CHECK-NEXT: ^bb0(%[[SH:.+]]: i32, %[[SG:.+]]: f32):
// CHECK-NEXT: %[[SL:.+]] = attn.load %[[SLOPE]][%[[SH]]] : memref<?xf32>
// CHECK: %[[D1:.+]] = arith.mulf %[[SG]], %[[TEMP]] : f32
// CHECK: %[[D1S:.+]] = arith.select %{{.+}}, %{{.+}}, %[[D1]] : f32
// CHECK: %[[D2:.+]] = arith.mulf %[[SG]], %[[SL]] : f32
// CHECK: %[[D2S:.+]] = arith.select %{{.+}}, %{{.+}}, %[[D2]] : f32
// CHECK-NEXT: attn.accumulate_grad %[[D1S]] to %[[SLOPE]][%[[SH]]] : memref<?xf32>
// CHECK-NEXT: attn.accumulate_grad %[[D2S]] to %[[TEMP]] : f32
// CHECK-NEXT: attn.yield
//      scale = 0.125 temp.
// CHECK: } scale_grad {
// CHECK-NEXT: ^bb0(%[[CG:.+]]: f32):
// CHECK: %[[DT:.+]] = arith.mulf %[[CG]], %{{.+}} : f32
// CHECK: %[[DTS:.+]] = arith.select %{{.+}}, %{{.+}}, %[[DT]] : f32
// CHECK-NEXT: attn.accumulate_grad %[[DTS]] to %[[TEMP]] : f32
// CHECK-NEXT: attn.yield
func.func @capped(%q: memref<?x?x?x64xf32>, %k: memref<?x?x?x64xf32>, %v: memref<?x?x?x64xf32>, %o: memref<?x?x?x64xf32>, %cap: f32, %temp: f32, %slope: memref<?xf32>, %bias: memref<?x?xf32>) {
  attn.attention ins(%q, %k, %v : memref<?x?x?x64xf32>, memref<?x?x?x64xf32>, memref<?x?x?x64xf32>) outs(%o : memref<?x?x?x64xf32>) params(%cap, %temp : f32, f32) captures(%slope, %bias : memref<?xf32>, memref<?x?xf32>) normalize = softmax scale_expr {
    %c = arith.constant 1.250000e-01 : f32
    %0 = arith.mulf %temp, %c : f32
    attn.yield %0 : f32
  } score {
  ^bb0(%s: f32, %b: i32, %h: i32, %qi: i32, %kv: i32):
    %0 = arith.divf %s, %cap : f32
    %1 = math.tanh %0 : f32
    %2 = arith.mulf %cap, %1 : f32
    %3 = attn.load %slope[%h] : memref<?xf32>
    %4 = arith.subi %qi, %kv : i32
    %5 = arith.sitofp %4 : i32 to f32
    %6 = arith.mulf %3, %5 : f32
    %7 = arith.subf %2, %6 : f32
    %9 = math.absi %4 : i32
    %c63 = arith.constant 63 : i32
    %10 = arith.minsi %9, %c63 : i32
    %11 = attn.load %bias[%h, %10] : memref<?x?xf32>
    %12 = arith.addf %7, %11 : f32
    %zero = arith.constant 0.000000e+00 : f32
    %13 = arith.maximumf %s, %zero : f32
    %14 = arith.addf %12, %13 : f32
    attn.yield %14 : f32
  } mask {
  ^bb0(%b: i32, %h: i32, %qi: i32, %kv: i32):
    %0 = arith.cmpi sle, %kv, %qi : i32
    attn.yield %0 : i1
  } sink {
  ^bb0(%h: i32):
    %0 = attn.load %slope[%h] : memref<?xf32>
    %1 = arith.mulf %0, %temp : f32
    attn.yield %1 : f32
  }
  return
}

// -----

// A score read twice from one table adds both reads' gradients; a score
// that ignores s yields d/ds = 0. Nothing flows into i32 params, masks or
// f16 tables (only f32 captures get gradients): exp(lo) where lo is an
// f16 read extended to f32 stops at the extension.

// CHECK-LABEL: func.func @twice(
// CHECK-SAME: %[[W:[^:]+]]: i32, %[[T:[^:]+]]: memref<?xf32>, %[[HALF:[^:]+]]: memref<?xf16>
// CHECK: } score_grad {
// CHECK-NEXT: ^bb0(%{{.+}}: f32, %{{.+}}: i32, %[[H:.+]]: i32, %[[Q:.+]]: i32, %[[KV:.+]]: i32, %[[G:.+]]: f32):
// CHECK: %[[ZERO:.+]] = arith.constant 0.000000e+00 : f32
// CHECK-NOT: accumulate_grad {{.+}} to %[[W]]
// CHECK-NOT: accumulate_grad {{.+}} to %[[HALF]]
// CHECK-DAG: attn.accumulate_grad %{{.+}} to %[[T]][%[[Q]]] : memref<?xf32>
// CHECK-DAG: attn.accumulate_grad %{{.+}} to %[[T]][%[[KV]]] : memref<?xf32>
// CHECK: attn.yield %[[ZERO]] : f32
func.func @twice(%q: memref<?x?x?x64xf32>, %k: memref<?x?x?x64xf32>, %v: memref<?x?x?x64xf32>, %o: memref<?x?x?x64xf32>, %w: i32, %t: memref<?xf32>, %half: memref<?xf16>) {
  attn.attention ins(%q, %k, %v : memref<?x?x?x64xf32>, memref<?x?x?x64xf32>, memref<?x?x?x64xf32>) outs(%o : memref<?x?x?x64xf32>) params(%w : i32) captures(%t, %half : memref<?xf32>, memref<?xf16>) normalize = sigmoid score {
  ^bb0(%s: f32, %b: i32, %h: i32, %qi: i32, %kv: i32):
    %0 = attn.load %t[%qi] : memref<?xf32>
    %1 = attn.load %t[%kv] : memref<?xf32>
    %2 = arith.mulf %0, %1 : f32
    %3 = attn.load %half[%h] : memref<?xf16>
    %4 = arith.extf %3 : f16 to f32
    %5 = math.exp %4 : f32
    %6 = arith.addf %2, %5 : f32
    %7 = arith.sitofp %w : i32 to f32
    %8 = arith.addf %6, %7 : f32
    attn.yield %8 : f32
  }
  return
}

// -----

// where(s > 0, sqrt(s), 0): below 0 the sqrt branch gets a zero gradient,
// and its local derivative (0.5 / sqrt(s): NaN there) is not multiplied in.

// CHECK-LABEL: func.func @guarded_sqrt(
// CHECK: } score_grad {
// CHECK-NEXT: ^bb0(%[[S:.+]]: f32, %{{.+}}: i32, %{{.+}}: i32, %{{.+}}: i32, %{{.+}}: i32, %[[G:.+]]: f32):
// CHECK: %[[C:.+]] = arith.cmpf ogt, %[[S]], %[[ZERO:.+]] : f32
// CHECK: %[[ROOT:.+]] = math.sqrt %[[S]] : f32
// CHECK: %[[GB:.+]] = arith.select %[[C]], %[[G]], %[[ZERO]] : f32
// CHECK: %[[LOCAL:.+]] = arith.divf %{{.+}}, %[[ROOT]] : f32
// CHECK: %[[NOG:.+]] = arith.cmpf oeq, %[[GB]], %[[ZERO]] : f32
// CHECK: %[[PROD:.+]] = arith.mulf %[[GB]], %[[LOCAL]] : f32
// CHECK: %[[DS:.+]] = arith.select %[[NOG]], %[[ZERO]], %[[PROD]] : f32
// CHECK: attn.yield %[[DS]] : f32
func.func @guarded_sqrt(%q: memref<?x?x?x64xf32>, %k: memref<?x?x?x64xf32>, %v: memref<?x?x?x64xf32>, %o: memref<?x?x?x64xf32>) {
  attn.attention ins(%q, %k, %v : memref<?x?x?x64xf32>, memref<?x?x?x64xf32>, memref<?x?x?x64xf32>) outs(%o : memref<?x?x?x64xf32>) normalize = softmax score {
  ^bb0(%s: f32, %b: i32, %h: i32, %qi: i32, %kv: i32):
    %zero = arith.constant 0.000000e+00 : f32
    %c = arith.cmpf ogt, %s, %zero : f32
    %r = math.sqrt %s : f32
    %0 = arith.select %c, %r, %zero : f32
    attn.yield %0 : f32
  }
  return
}

// -----

// Ops without a derivative rule are an error naming them; the op is left
// without adjoint regions.

func.func @no_rule(%q: memref<?x?x?x64xf32>, %k: memref<?x?x?x64xf32>, %v: memref<?x?x?x64xf32>, %o: memref<?x?x?x64xf32>) {
  // expected-error @+1 {{cannot differentiate 'math.sin' in a region (no derivative rule)}}
  attn.attention ins(%q, %k, %v : memref<?x?x?x64xf32>, memref<?x?x?x64xf32>, memref<?x?x?x64xf32>) outs(%o : memref<?x?x?x64xf32>) normalize = softmax score {
  ^bb0(%s: f32, %b: i32, %h: i32, %qi: i32, %kv: i32):
    %0 = math.sin %s : f32
    attn.yield %0 : f32
  }
  return
}
