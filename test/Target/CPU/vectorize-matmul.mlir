// RUN: attn-opt %s -split-input-file --pass-pipeline='builtin.module(func.func(attn-cpu-vectorize-matmul{vector-bits=512 registers=32}))' | FileCheck %s
// RUN: attn-opt %s -split-input-file --pass-pipeline='builtin.module(func.func(attn-cpu-vectorize-matmul{vector-bits=256 registers=16}))' | FileCheck %s --check-prefix=AVX2
// RUN: attn-opt %s -split-input-file --pass-pipeline='builtin.module(func.func(attn-cpu-vectorize-matmul{vector-bits=512 registers=32 byte-dots=vnni}))' | FileCheck %s --check-prefix=DOTS
// RUN: attn-opt %s -split-input-file --pass-pipeline='builtin.module(func.func(attn-cpu-vectorize-matmul{vector-bits=512 registers=32 bf16-dots=1}))' | FileCheck %s --check-prefix=BF16
// RUN: attn-opt %s -split-input-file --pass-pipeline='builtin.module(func.func(attn-cpu-vectorize-matmul{vector-bits=256 registers=16 byte-dots=maddubs}))' | FileCheck %s --check-prefix=MADDUBS
// RUN: attn-opt %s -split-input-file --pass-pipeline='builtin.module(func.func(attn-cpu-vectorize-matmul{vector-bits=256 registers=16 byte-dots=vnni}))' | FileCheck %s --check-prefix=VNNI256
// RUN: not attn-opt %s -split-input-file --pass-pipeline='builtin.module(func.func(attn-cpu-vectorize-matmul{byte-dots=sse}))' 2>&1 | FileCheck %s --check-prefix=BAD
// BAD: unknown byte-dots 'sse' (expected none, vnni or maddubs)

// AVX-512, N = 64: 4 registers per row of C, 6 rows per block (24
// accumulators, 4 for B's row, 1 broadcast), the block held in registers
// across the whole reduction; the 4 rows left over take one block of 4.

// CHECK-LABEL: func.func @plain(
// CHECK-SAME: %[[A:.+]]: memref<64x32xf32>, %[[B:.+]]: memref<32x64xf32>, %[[C:.+]]: memref<64x64xf32>)
// CHECK-NOT: linalg.matmul
// CHECK: scf.for %[[I0:.+]] = %c0{{.*}} to %c60 step %c6 {
// CHECK-COUNT-6: vector.load %[[C]][%{{.+}}, %c0] : memref<64x64xf32>, vector<64xf32>
// CHECK: scf.for %[[K:.+]] = %{{.+}} to %{{.+}} step %{{.+}} iter_args(%{{.+}} = %{{.+}}, %{{.+}} = %{{.+}}, %{{.+}} = %{{.+}}, %{{.+}} = %{{.+}}, %{{.+}} = %{{.+}}, %{{.+}} = %{{.+}}) -> (vector<64xf32>, vector<64xf32>, vector<64xf32>, vector<64xf32>, vector<64xf32>, vector<64xf32>)
// CHECK: %[[BK:.+]] = vector.load %[[B]][%[[K]], %{{.+}}] : memref<32x64xf32>, vector<64xf32>
// CHECK: memref.load %[[A]][%[[I0]], %[[K]]]
// CHECK: vector.broadcast
// CHECK: vector.fma %{{.+}}, %[[BK]], %{{.+}} : vector<64xf32>
// CHECK-COUNT-6: vector.store %{{.+}}, %[[C]]
// CHECK: scf.for %{{.+}} = %c60{{.*}} to %c64 step %c4 {
// CHECK-COUNT-4: vector.load %[[C]][%{{.+}}, %c0{{.*}}] : memref<64x64xf32>, vector<64xf32>
// CHECK-NOT: scf.for %{{.+}} = %c{{[0-9]+}}{{.*}} to %c64 step

// AVX2, N = 64: 12 accumulators, as 6 rows x 2 vectors (four column chunks
// of 16 floats) rather than 2 rows x 4 (8 accumulators); per chunk, ten
// blocks of 6 rows and one of 4.
// AVX2-LABEL: func.func @plain(
// AVX2-COUNT-4: scf.for %{{.+}} = %c0{{.*}} to %c60{{.*}} step %c6{{.*}} {
// AVX2-NOT: vector<32xf32>
// AVX2: scf.for %{{.+}} = %c60{{.*}} to %c64{{.*}} step %c4{{.*}} {
// AVX2: vector<16xf32>
func.func @plain(%a: memref<64x32xf32>, %b: memref<32x64xf32>, %c: memref<64x64xf32>) {
  linalg.matmul ins(%a, %b : memref<64x32xf32>, memref<32x64xf32>) outs(%c : memref<64x64xf32>)
  return
}

// -----

// A read transposed (P^T in the P V product); 11 rows: a block of 8, then
// the remainder in power-of-two blocks (2, then 1).

// CHECK-LABEL: func.func @transposed_a(
// CHECK-SAME: %[[A:.+]]: memref<16x11xf32>
// CHECK: scf.for %[[I0:.+]] = %c0{{.*}} to %c8 step %c8{{.*}} {
// CHECK: scf.for %[[K:.+]] = {{.*}} iter_args
// CHECK: memref.load %[[A]][%[[K]], %[[I0]]]
// CHECK: scf.for %{{.+}} = %c8{{.*}} to %c10 step %c2{{.*}} {
// CHECK: scf.for %{{.+}} = %c10{{.*}} to %c11 step %c1{{.*}} {
#mapA = affine_map<(m, n, k) -> (k, m)>
#mapB = affine_map<(m, n, k) -> (k, n)>
#mapC = affine_map<(m, n, k) -> (m, n)>
func.func @transposed_a(%a: memref<16x11xf32>, %b: memref<16x40xf32>, %c: memref<11x40xf32>) {
  linalg.matmul indexing_maps = [#mapA, #mapB, #mapC]
      ins(%a, %b : memref<16x11xf32>, memref<16x40xf32>) outs(%c : memref<11x40xf32>)
  return
}

// -----

// A zero fill of C right before the matmul (a tile's S = K Q^T) is dropped:
// the sums start from zero vectors instead of loading C back.

// CHECK-LABEL: func.func @zero_filled(
// CHECK-SAME: %[[C:[a-z0-9]+]]: memref<64x64xf32>)
// CHECK-NOT: linalg.fill
// CHECK: scf.for
// CHECK: arith.constant dense<0.000000e+00> : vector<64xf32>
// CHECK-NOT: vector.load %[[C]]
// CHECK: vector.store %{{.+}}, %[[C]]
func.func @zero_filled(%a: memref<64x32xf32>, %b: memref<32x64xf32>, %c: memref<64x64xf32>) {
  %zero = arith.constant 0.0 : f32
  linalg.fill ins(%zero : f32) outs(%c : memref<64x64xf32>)
  linalg.matmul ins(%a, %b : memref<64x32xf32>, memref<32x64xf32>) outs(%c : memref<64x64xf32>)
  return
}

// -----

// A fill of another value stays, and C is loaded.

// CHECK-LABEL: func.func @one_filled(
// CHECK-SAME: %[[C:[a-z0-9]+]]: memref<64x64xf32>)
// CHECK: linalg.fill
// CHECK: vector.load %[[C]]
func.func @one_filled(%a: memref<64x32xf32>, %b: memref<32x64xf32>, %c: memref<64x64xf32>) {
  %one = arith.constant 1.0 : f32
  linalg.fill ins(%one : f32) outs(%c : memref<64x64xf32>)
  linalg.matmul ins(%a, %b : memref<64x32xf32>, memref<32x64xf32>) outs(%c : memref<64x64xf32>)
  return
}

// -----

// Dynamic shapes are left for the generic lowering.
// CHECK-LABEL: func.func @dynamic(
// CHECK: linalg.matmul
func.func @dynamic(%a: memref<?x?xf32>, %b: memref<?x?xf32>, %c: memref<?x?xf32>) {
  linalg.matmul ins(%a, %b : memref<?x?xf32>, memref<?x?xf32>) outs(%c : memref<?x?xf32>)
  return
}

// -----

// B transposed (decode's Q.K^T against 4 query rows): vectors along k,
// 4 x 4 accumulators per block of 4 rows (as many as lanes), summed
// together by a tree of shuffles and adds (8 + 4 + 2 + 1 vectors) into one
// vector holding the block's 16 dot products.

// CHECK-LABEL: func.func @dot(
// CHECK-SAME: %[[A:.+]]: memref<64x128xf32>, %[[B:.+]]: memref<4x128xf32>, %[[C:.+]]: memref<64x4xf32, strided<[16, 1]>>)
// CHECK-NOT: linalg.matmul
// CHECK: scf.for %[[I0:.+]] = %c0{{.*}} to %c64{{.*}} step %c4
// CHECK: scf.for %[[K:.+]] = %c0{{.*}} to %c128{{.*}} step %c16{{.*}} iter_args(
// CHECK-COUNT-4: vector.load %[[A]][%{{.+}}, %[[K]]] : memref<64x128xf32>, vector<16xf32>
// CHECK-COUNT-4: vector.load %[[B]][%{{.+}}, %[[K]]] : memref<4x128xf32>, vector<16xf32>
// CHECK-COUNT-16: vector.fma
// CHECK-COUNT-30: vector.shuffle
// CHECK-NOT: vector.reduction
// CHECK: vector.extract_strided_slice %{{.+}} {offsets = [0], sizes = [4], strides = [1]} : vector<16xf32> to vector<4xf32>
// CHECK: vector.load %[[C]][%[[I0]], %c0{{.*}}] : memref<64x4xf32, strided<[16, 1]>>, vector<4xf32>
// CHECK: vector.store %{{.+}}, %[[C]]
func.func @dot(%a: memref<64x128xf32>, %b: memref<4x128xf32>, %c: memref<64x4xf32, strided<[16, 1]>>) {
  linalg.matmul indexing_maps = [affine_map<(m, n, k) -> (m, k)>, affine_map<(m, n, k) -> (n, k)>, affine_map<(m, n, k) -> (m, n)>]
      ins(%a, %b : memref<64x128xf32>, memref<4x128xf32>) outs(%c : memref<64x4xf32, strided<[16, 1]>>)
  return
}

// -----

// int8 codes read in place (decode over a quantized cache): A is a strided
// view into the cache and B (P V's V) too; both are loaded as i8 vectors
// and converted in registers, scalars likewise.

// CHECK-LABEL: func.func @int8_in_place(
// CHECK-SAME: %[[K:[^:]+]]: memref<32x64xi8, strided<[?, 1], offset: ?>>, %[[Q:[^:]+]]: memref<4x64xf32>
// CHECK-NOT: linalg.matmul
// CHECK: %[[KV:.+]] = vector.load %[[K]][%{{.+}}, %{{.+}}] : memref<32x64xi8, strided<[?, 1], offset: ?>>, vector<16xi8>
// CHECK-NEXT: arith.sitofp %[[KV]] : vector<16xi8> to vector<16xf32>
// CHECK: vector.load %[[Q]][%{{.+}}, %{{.+}}] : memref<4x64xf32>, vector<16xf32>
// CHECK: vector.fma
// CHECK: %[[VV:.+]] = vector.load %{{.+}}[%{{.+}}, %{{.+}}] : memref<32x64xi8, strided<[?, 1], offset: ?>>, vector<64xi8>
// CHECK-NEXT: arith.sitofp %[[VV]] : vector<64xi8> to vector<64xf32>
#dotA = affine_map<(m, n, k) -> (m, k)>
#dotB = affine_map<(m, n, k) -> (n, k)>
#dotC = affine_map<(m, n, k) -> (m, n)>
#pvA = affine_map<(m, n, k) -> (k, m)>
#pvB = affine_map<(m, n, k) -> (k, n)>
func.func @int8_in_place(%k: memref<32x64xi8, strided<[?, 1], offset: ?>>, %q: memref<4x64xf32>, %s: memref<32x4xf32>,
                         %v: memref<32x64xi8, strided<[?, 1], offset: ?>>, %o: memref<4x64xf32>) {
  linalg.matmul indexing_maps = [#dotA, #dotB, #dotC]
      ins(%k, %q : memref<32x64xi8, strided<[?, 1], offset: ?>>, memref<4x64xf32>) outs(%s : memref<32x4xf32>)
  linalg.matmul indexing_maps = [#pvA, #pvB, #dotC]
      ins(%s, %v : memref<32x4xf32>, memref<32x64xi8, strided<[?, 1], offset: ?>>) outs(%o : memref<4x64xf32>)
  return
}

// -----

// fp8 codes read in place: the matmul names their format and each loaded
// vector of codes is decoded by bit moves into an f16 (e4m3: the codes
// sign-extended, shifted left by 7 and masked with 0xBF80: magnitude << 7,
// sign at bit 15: the value times 2^-8), converted to f32 (vcvtph2ps) and
// scaled by 2^8.

// CHECK-LABEL: func.func @fp8_in_place(
// CHECK: %[[C:.+]] = vector.load %{{.+}} : memref<32x64xi8, strided<[?, 1], offset: ?>>, vector<16xi8>
// CHECK-NEXT: %[[S:.+]] = arith.extsi %[[C]] : vector<16xi8> to vector<16xi16>
// CHECK-NEXT: %[[SEVEN:.+]] = arith.constant dense<7> : vector<16xi16>
// CHECK-NEXT: %[[SH:.+]] = arith.shli %[[S]], %[[SEVEN]] : vector<16xi16>
// CHECK-NEXT: %[[MASK:.+]] = arith.constant dense<-16512> : vector<16xi16>
// CHECK-NEXT: %[[BITS:.+]] = arith.andi %[[SH]], %[[MASK]] : vector<16xi16>
// CHECK-NEXT: arith.bitcast %[[BITS]] : vector<16xi16> to vector<16xf16>
// CHECK: arith.extf %{{.+}} : vector<16xf16> to vector<16xf32>
// CHECK: arith.mulf %{{.+}}, %{{.+}} : vector<16xf32>
// CHECK: vector.fma
#fp8A = affine_map<(m, n, k) -> (m, k)>
#fp8B = affine_map<(m, n, k) -> (n, k)>
#fp8C = affine_map<(m, n, k) -> (m, n)>
func.func @fp8_in_place(%k: memref<32x64xi8, strided<[?, 1], offset: ?>>, %q: memref<4x64xf32>, %s: memref<32x4xf32>) {
  linalg.matmul indexing_maps = [#fp8A, #fp8B, #fp8C]
      ins(%k, %q : memref<32x64xi8, strided<[?, 1], offset: ?>>, memref<4x64xf32>) outs(%s : memref<32x4xf32>) {attn.kv_codes = "fp8e4m3"}
  return
}

// -----

// int8 codes times int8 codes (decode's K codes . Q's rounded rows) with
// byte-dots=vnni: 64 bytes per step, K made unsigned by flipping its sign bit,
// four byte products per i32 lane by vpdpbusd; 128 * sum(q) per column
// comes off in i32 before the sums turn f32. Without byte-dots the codes
// are converted to f32 as for any int8 operand.

// DOTS-LABEL: func.func @int8_dots(
// DOTS-SAME: %[[K:[^:]+]]: memref<32x128xi8, strided<[?, 1], offset: ?>>, %[[Q:[^:]+]]: memref<4x128xi8>
// DOTS-NOT: linalg.matmul
// DOTS: %[[SIGN:.+]] = arith.constant dense<-128> : vector<64xi8>
//      The offsets, once per column of Q.
// DOTS: %[[QB:.+]] = vector.load %[[Q]][%{{.+}}, %{{.+}}] : memref<4x128xi8>, vector<64xi8>
// DOTS: llvm.call_intrinsic "llvm.x86.avx512.vpdpbusd.512"(%{{.+}}, %[[SIGN]], %[[QB]]) : (vector<16xi32>, vector<64xi8>, vector<64xi8>) -> vector<16xi32>
// DOTS: %[[OFFSETS:.+]] = vector.from_elements {{.+}} : vector<4xi32>
//      Four rows of K against the four rows of Q.
// DOTS: %[[KB:.+]] = vector.load %[[K]][%{{.+}}, %{{.+}}] : memref<32x128xi8, strided<[?, 1], offset: ?>>, vector<64xi8>
// DOTS-NEXT: %[[KU:.+]] = arith.xori %[[KB]], %[[SIGN]] : vector<64xi8>
// DOTS: llvm.call_intrinsic "llvm.x86.avx512.vpdpbusd.512"(%{{.+}}, %[[KU]], %{{.+}}) : (vector<16xi32>, vector<64xi8>, vector<64xi8>) -> vector<16xi32>
//      Sums across lanes, minus the offsets, as f32.
// DOTS: vector.shuffle {{.+}} : vector<16xi32>, vector<16xi32>
// DOTS: arith.addi {{.+}} : vector<16xi32>
// DOTS: %[[EXACT:.+]] = arith.subi %{{.+}}, %[[OFFSETS]] : vector<4xi32>
// DOTS-NEXT: arith.sitofp %[[EXACT]] : vector<4xi32> to vector<4xf32>
// Without VNNI (on AVX2, whose vpmaddubsw pair sums saturate), K's codes
// go in as |k| (unsigned, at most 128) and Q's with k's sign (vpsignb): no
// offsets, exact for Q's codes in [-127, 127].
// MADDUBS-LABEL: func.func @int8_dots(
// MADDUBS-NOT: vpdpbusd
// MADDUBS: %[[KB:.+]] = vector.load %{{.+}} : memref<32x128xi8, strided<[?, 1], offset: ?>>, vector<32xi8>
// MADDUBS: %[[NEG:.+]] = arith.cmpi slt, %[[KB]], %{{.+}} : vector<32xi8>
// MADDUBS: %[[MINUS:.+]] = arith.subi %{{.+}}, %[[KB]] : vector<32xi8>
// MADDUBS: %[[ABS:.+]] = arith.select %[[NEG]], %[[MINUS]], %[[KB]] : vector<32xi1>, vector<32xi8>
// MADDUBS: %[[QB:.+]] = vector.load %{{.+}} : memref<4x128xi8>, vector<32xi8>
// MADDUBS: %[[QS:.+]] = llvm.call_intrinsic "llvm.x86.avx2.psign.b"(%[[QB]], %[[KB]])
// MADDUBS: %[[PAIRS:.+]] = llvm.call_intrinsic "llvm.x86.avx2.pmadd.ub.sw"(%[[ABS]], %[[QS]]) : (vector<32xi8>, vector<32xi8>) -> vector<16xi16>
// MADDUBS: arith.constant dense<1> : vector<16xi16>
// MADDUBS: llvm.call_intrinsic "llvm.x86.avx2.pmadd.wd"(%[[PAIRS]], %{{.+}}) : (vector<16xi16>, vector<16xi16>) -> vector<8xi32>
// MADDUBS-NOT: arith.subi {{.+}} : vector<4xi32>
// MADDUBS: arith.sitofp {{.+}} : vector<4xi32> to vector<4xf32>
// With AVX-VNNI, the same vpdpbusd as AVX-512 VNNI, on ymm.
// VNNI256-LABEL: func.func @int8_dots(
// VNNI256: llvm.call_intrinsic "llvm.x86.avx512.vpdpbusd.256"(%{{.+}}, %{{.+}}, %{{.+}}) : (vector<8xi32>, vector<32xi8>, vector<32xi8>) -> vector<8xi32>
// CHECK-LABEL: func.func @int8_dots(
// CHECK-NOT: vpdpbusd
// CHECK: arith.sitofp {{.+}} : vector<16xi8> to vector<16xf32>
#i8A = affine_map<(m, n, k) -> (m, k)>
#i8B = affine_map<(m, n, k) -> (n, k)>
#i8C = affine_map<(m, n, k) -> (m, n)>
func.func @int8_dots(%k: memref<32x128xi8, strided<[?, 1], offset: ?>>, %q: memref<4x128xi8>, %s: memref<32x4xf32>) {
  linalg.matmul indexing_maps = [#i8A, #i8B, #i8C]
      ins(%k, %q : memref<32x128xi8, strided<[?, 1], offset: ?>>, memref<4x128xi8>) outs(%s : memref<32x4xf32>)
  return
}

// -----

// fp8 codes times f32 rows with bf16-dots: Q's rows become bf16 once (times
// 2^60 for e4m3), each 32 codes become bf16 by bit moves (magnitude << 4,
// sign << 8: the value times 2^-120) and vdpbf16ps sums pairs; the sums
// get the other 2^60 back.

// BF16-LABEL: func.func @fp8_dots(
// BF16-SAME: %[[K:[^:]+]]: memref<32x128xi8, strided<[?, 1], offset: ?>>, %[[Q:[^:]+]]: memref<4x128xf32>
// BF16: %[[QB:.+]] = memref.alloca() {alignment = 64 : i64} : memref<4x128xbf16>
// BF16: arith.constant dense<1.1529215E+18> : vector<32xf32>
// BF16: arith.truncf {{.+}} : vector<32xf32> to vector<32xbf16>
// BF16: %[[C:.+]] = vector.load %[[K]][%{{.+}}, %{{.+}}] : memref<32x128xi8, strided<[?, 1], offset: ?>>, vector<32xi8>
// BF16: %[[CS:.+]] = arith.extsi %[[C]] : vector<32xi8> to vector<32xi16>
// BF16: %[[CSH:.+]] = arith.shli %[[CS]], %{{.+}} : vector<32xi16>
// BF16: %[[CB:.+]] = arith.andi %[[CSH]], %{{.+}} : vector<32xi16>
// BF16: arith.bitcast %[[CB]] : vector<32xi16> to vector<32xbf16>
// BF16: vector.load %[[QB]][%{{.+}}, %{{.+}}] : memref<4x128xbf16>, vector<32xbf16>
// BF16: llvm.call_intrinsic "llvm.x86.avx512bf16.dpbf16ps.512"(%{{.+}}, %{{.+}}, %{{.+}}) : (vector<16xf32>, vector<32xbf16>, vector<32xbf16>) -> vector<16xf32>
// BF16: arith.constant dense<1.1529215E+18> : vector<4xf32>
// Without bf16-dots (here 8 lanes), fp8 codes become f32 through f16
// (vcvtph2ps): e4m3's magnitude << 7 and sign at bit 15 (the codes
// sign-extended, shifted and masked with 0xBF80) read as the value times
// 2^-8, so the f32 is scaled by 256.
// AVX2-LABEL: func.func @fp8_dots(
// AVX2: %[[C8:.+]] = arith.extsi %{{.+}} : vector<8xi8> to vector<8xi16>
// AVX2: %[[SH8:.+]] = arith.shli %[[C8]], %{{.+}} : vector<8xi16>
// AVX2: %[[M8:.+]] = arith.andi %[[SH8]], %{{.+}} : vector<8xi16>
// AVX2: %[[H:.+]] = arith.bitcast %[[M8]] : vector<8xi16> to vector<8xf16>
// AVX2: %[[F:.+]] = arith.extf %[[H]] : vector<8xf16> to vector<8xf32>
// AVX2: arith.mulf %[[F]], %{{.+}} : vector<8xf32>
#f8A = affine_map<(m, n, k) -> (m, k)>
#f8B = affine_map<(m, n, k) -> (n, k)>
#f8C = affine_map<(m, n, k) -> (m, n)>
func.func @fp8_dots(%k: memref<32x128xi8, strided<[?, 1], offset: ?>>, %q: memref<4x128xf32>, %s: memref<32x4xf32>) {
  linalg.matmul indexing_maps = [#f8A, #f8B, #f8C]
      ins(%k, %q : memref<32x128xi8, strided<[?, 1], offset: ?>>, memref<4x128xf32>) outs(%s : memref<32x4xf32>) {attn.kv_codes = "fp8e4m3"}
  return
}

// -----

// P . V on codes (decode's P rounded to 0..255, marked attn.unsigned_lhs,
// times V's int8 codes) with byte-dots=vnni: per 4 keys and 64 columns, V's
// rows are interleaved into 4-code lanes within 128-bit lanes (x86
// unpacks: bytes of row pairs, then 16-bit pairs), P's 4 x 4 block is
// transposed by one shuffle, and each row's 4 codes (broadcast) meet the
// lanes in vpdpbusd; the 4 accumulators of a row of C (column 16 L + 4 j +
// i in lane 4 L + i of accumulator j) are put back in column order by a
// transpose of 128-bit blocks. Without byte-dots, P's codes convert as
// unsigned.

// DOTS-LABEL: func.func @int8_p_v(
// DOTS-SAME: %[[O:[^:]+]]: memref<4x128xf32>
// DOTS: vector.shuffle {{.+}} [0, 64, 1, 65, 2, 66, 3, 67, 4, 68, 5, 69, 6, 70, 7, 71, 16, 80, {{.+}} : vector<64xi8>, vector<64xi8>
// DOTS: vector.shuffle {{.+}} [8, 72, 9, 73, {{.+}} : vector<64xi8>, vector<64xi8>
// DOTS: vector.shuffle {{.+}} [0, 32, 1, 33, 2, 34, 3, 35, 8, 40, {{.+}} : vector<32xi16>, vector<32xi16>
// DOTS: %[[P:.+]] = vector.load %{{.+}} : memref<32x4xi8>, vector<16xi8>
// DOTS: vector.shuffle %[[P]], %[[P]] [0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15] : vector<16xi8>, vector<16xi8>
// DOTS: llvm.call_intrinsic "llvm.x86.avx512.vpdpbusd.512"
// DOTS: %[[S0:.+]] = arith.sitofp {{.+}} : vector<16xi32> to vector<16xf32>
// DOTS: %[[S1:.+]] = arith.sitofp {{.+}} : vector<16xi32> to vector<16xf32>
// DOTS: vector.shuffle %[[S0]], %[[S1]] [0, 1, 2, 3, 16, 17, 18, 19, 4, 5, 6, 7, 20, 21, 22, 23] : vector<16xf32>, vector<16xf32>
// DOTS: vector.store %{{.+}}, %[[O]][%{{.+}}, %{{.+}}] : memref<4x128xf32>, vector<16xf32>
// Without VNNI, P's codes (0..255) times V's (-128..127) would saturate
// vpmaddubsw's pair sums: on AVX2 both go in as 16-bit words, a pair of
// keys per vpmaddwd (exact in i32). V's rows k and k + 1 are sign-extended
// 16 columns at a time and unpacked word by word (the 4 operands of a
// 32-column chunk); P's two rows, column by column and zero-extended, give
// each row of C one i32 of its two codes to broadcast. 16 registers hold
// two rows of C's 4 accumulators (rows of C in groups of 2); the 128-bit
// lanes of operands 0/1 and 2/3 are columns 0..15 and 16..31 of the chunk.
// MADDUBS-LABEL: func.func @int8_p_v(
// MADDUBS-SAME: %[[P:[^:]+]]: memref<32x4xi8>, %[[V:[^:]+]]: memref<32x128xi8, strided<[?, 1], offset: ?>>, %[[O:[^:]+]]: memref<4x128xf32>
// MADDUBS-NOT: pmadd.ub.sw
// MADDUBS: scf.for %[[K:.+]] = %{{.+}} to %c32 step %c2 iter_args({{.+}}) -> (vector<8xi32>, vector<8xi32>, vector<8xi32>, vector<8xi32>, vector<8xi32>, vector<8xi32>, vector<8xi32>, vector<8xi32>)
// MADDUBS: %[[R0:.+]] = vector.load %[[V]][%[[K]], %{{.+}}] : memref<32x128xi8, strided<[?, 1], offset: ?>>, vector<16xi8>
// MADDUBS: %[[W0:.+]] = arith.extsi %[[R0]] : vector<16xi8> to vector<16xi16>
// MADDUBS: %[[R1:.+]] = vector.load %[[V]][%{{.+}}, %{{.+}}] : memref<32x128xi8, strided<[?, 1], offset: ?>>, vector<16xi8>
// MADDUBS: %[[W1:.+]] = arith.extsi %[[R1]] : vector<16xi8> to vector<16xi16>
// MADDUBS: %[[OP0:.+]] = vector.shuffle %[[W0]], %[[W1]] [0, 16, 1, 17, 2, 18, 3, 19, 8, 24, 9, 25, 10, 26, 11, 27] : vector<16xi16>, vector<16xi16>
// MADDUBS: vector.shuffle %[[W0]], %[[W1]] [4, 20, 5, 21, 6, 22, 7, 23, 12, 28, 13, 29, 14, 30, 15, 31] : vector<16xi16>, vector<16xi16>
// MADDUBS: %[[PB:.+]] = vector.load %[[P]][%[[K]], %{{.+}}] : memref<32x4xi8>, vector<8xi8>
// MADDUBS: %[[PC:.+]] = vector.shuffle %[[PB]], %[[PB]] [0, 4, 1, 5, 2, 6, 3, 7] : vector<8xi8>, vector<8xi8>
// MADDUBS: %[[PW:.+]] = arith.extui %[[PC]] : vector<8xi8> to vector<8xi16>
// MADDUBS: %[[PAIRS:.+]] = vector.bitcast %[[PW]] : vector<8xi16> to vector<4xi32>
// MADDUBS: %[[P0:.+]] = vector.extract %[[PAIRS]][0] : i32 from vector<4xi32>
// MADDUBS: %[[B0:.+]] = vector.broadcast %[[P0]] : i32 to vector<8xi32>
// MADDUBS: %[[BW0:.+]] = vector.bitcast %[[B0]] : vector<8xi32> to vector<16xi16>
// MADDUBS: %[[PROD:.+]] = llvm.call_intrinsic "llvm.x86.avx2.pmadd.wd"(%[[BW0]], %[[OP0]]) : (vector<16xi16>, vector<16xi16>) -> vector<8xi32>
// MADDUBS: arith.addi %{{.+}}, %[[PROD]] : vector<8xi32>
// MADDUBS-COUNT-3: llvm.call_intrinsic "llvm.x86.avx2.pmadd.wd"(%[[BW0]], %{{.+}})
// MADDUBS: vector.extract %[[PAIRS]][1] : i32 from vector<4xi32>
// MADDUBS-COUNT-4: llvm.call_intrinsic "llvm.x86.avx2.pmadd.wd"
// MADDUBS: scf.yield
// MADDUBS: %[[S0:.+]] = arith.sitofp {{.+}} : vector<8xi32> to vector<8xf32>
// MADDUBS: %[[S1:.+]] = arith.sitofp {{.+}} : vector<8xi32> to vector<8xf32>
// MADDUBS: %[[S2:.+]] = arith.sitofp {{.+}} : vector<8xi32> to vector<8xf32>
// MADDUBS: %[[S3:.+]] = arith.sitofp {{.+}} : vector<8xi32> to vector<8xf32>
// MADDUBS: %[[LO:.+]] = vector.shuffle %[[S0]], %[[S1]] [0, 1, 2, 3, 8, 9, 10, 11, 4, 5, 6, 7, 12, 13, 14, 15] : vector<8xf32>, vector<8xf32>
// MADDUBS: %[[OLD:.+]] = vector.load %[[O]][%{{.+}}, %{{.+}}] : memref<4x128xf32>, vector<16xf32>
// MADDUBS: %[[SUM:.+]] = arith.addf %[[OLD]], %[[LO]] : vector<16xf32>
// MADDUBS: vector.store %[[SUM]], %[[O]][%{{.+}}, %{{.+}}] : memref<4x128xf32>, vector<16xf32>
// MADDUBS: vector.shuffle %[[S2]], %[[S3]] [0, 1, 2, 3, 8, 9, 10, 11, 4, 5, 6, 7, 12, 13, 14, 15] : vector<8xf32>, vector<8xf32>
// MADDUBS: scf.for {{.+}} step %c2 iter_args({{.+}}) -> (vector<8xi32>, vector<8xi32>, vector<8xi32>, vector<8xi32>, vector<8xi32>, vector<8xi32>, vector<8xi32>, vector<8xi32>)
// CHECK-LABEL: func.func @int8_p_v(
// CHECK: arith.uitofp %{{.+}} : i8 to f32
#pvA2 = affine_map<(m, n, k) -> (k, m)>
#pvB2 = affine_map<(m, n, k) -> (k, n)>
#pvC2 = affine_map<(m, n, k) -> (m, n)>
func.func @int8_p_v(%p: memref<32x4xi8>, %v: memref<32x128xi8, strided<[?, 1], offset: ?>>, %o: memref<4x128xf32>) {
  linalg.matmul indexing_maps = [#pvA2, #pvB2, #pvC2]
      ins(%p, %v : memref<32x4xi8>, memref<32x128xi8, strided<[?, 1], offset: ?>>) outs(%o : memref<4x128xf32>) {attn.unsigned_lhs}
  return
}

// -----

// P . V on fp8 codes (decode's P rounded to bf16 times V's e4m3 codes) with
// bf16-dots: first each key pair's P values, times 2^60, become one 32-bit
// bf16 pair per row of C in a [K / 2, M] buffer (once per matmul, not per
// chunk of columns); then per key pair and 64 columns, the two rows' codes
// are sign-extended to 16 bits and interleaved column by column, become
// bf16 pairs by a shift and a mask, and meet each row's pair (one
// broadcast load) in vdpbf16ps; the sums come back by 2^60 into C.
// Without bf16-dots, P converts from bf16 and the codes decode to f32.

// BF16-LABEL: func.func @fp8_p_v(
// BF16: %[[PAIRS:.+]] = memref.alloca() {alignment = 64 : i64} : memref<16x4xi32>
// BF16: scf.for %[[PK:.+]] = %{{.+}} to %c16{{.*}} step %c1
// BF16: %[[P:.+]] = vector.load %{{.+}} : memref<32x4xbf16>, vector<8xbf16>
// BF16: arith.extf %[[P]] : vector<8xbf16> to vector<8xf32>
// BF16: vector.shuffle %{{.+}}, %{{.+}} [0, 4, 1, 5, 2, 6, 3, 7] : vector<8xbf16>, vector<8xbf16>
// BF16: vector.store %{{.+}}, %[[PAIRS]][%[[PK]], %{{.+}}] : memref<16x4xi32>, vector<4xi32>
// BF16: scf.for %[[KP:.+]] = %{{.+}} to %c16{{.*}} step %c1
// BF16: %[[R0:.+]] = arith.extsi %{{.+}} : vector<64xi8> to vector<64xi16>
// BF16: %[[R1:.+]] = arith.extsi %{{.+}} : vector<64xi8> to vector<64xi16>
// BF16: %[[W:.+]] = vector.shuffle %[[R0]], %[[R1]] [0, 64, 1, 65, 2, 66
// BF16: %[[WSH:.+]] = arith.shli %[[W]], %{{.+}} : vector<128xi16>
// BF16: arith.andi %[[WSH]], %{{.+}} : vector<128xi16>
// BF16: vector.bitcast %{{.+}} : vector<32xi16> to vector<32xbf16>
// BF16: %[[PM:.+]] = memref.load %[[PAIRS]][%[[KP]], %{{.+}}] : memref<16x4xi32>
// BF16: vector.broadcast %[[PM]] : i32 to vector<16xi32>
// BF16: llvm.call_intrinsic "llvm.x86.avx512bf16.dpbf16ps.512"
// BF16: vector.fma
// CHECK-LABEL: func.func @fp8_p_v(
// CHECK: arith.extf %{{.+}} : bf16 to f32
// CHECK: vector.fma
#pvA3 = affine_map<(m, n, k) -> (k, m)>
#pvB3 = affine_map<(m, n, k) -> (k, n)>
#pvC3 = affine_map<(m, n, k) -> (m, n)>
func.func @fp8_p_v(%p: memref<32x4xbf16>, %v: memref<32x128xi8, strided<[?, 1], offset: ?>>, %o: memref<4x128xf32>) {
  linalg.matmul indexing_maps = [#pvA3, #pvB3, #pvC3]
      ins(%p, %v : memref<32x4xbf16>, memref<32x128xi8, strided<[?, 1], offset: ?>>) outs(%o : memref<4x128xf32>) {attn.kv_codes = "fp8e4m3"}
  return
}

// -----

// int4 K codes packed two per byte against int8 query codes (the
// attn.int4_pairs form attn-tile emits) with byte-dots=vnni, D = 128: the
// query rows de-interleaved once (each 128-code step: its 64 even columns,
// then its 64 odd ones); per step, a K row's 64 packed bytes get both sign
// bits flipped (xor 0x88: nibbles read as code + 8), the low nibbles by an
// and, the high ones by a 16-bit shift and an and, and they meet the even
// and odd query columns in two vpdpbusd; 8 * sum(q) per column comes off.
// Without byte-dots the tile is unpacked into bytes and converted.

// DOTS-LABEL: func.func @int4_dots(
// DOTS-SAME: %[[K:[^:]+]]: memref<32x64xi8, strided<[?, 1], offset: ?>>, %[[Q:[^:]+]]: memref<4x128xi8>
// DOTS-NOT: linalg.generic
// DOTS: %[[EIGHT:.+]] = arith.constant dense<8> : vector<64xi8>
// DOTS: llvm.call_intrinsic "llvm.x86.avx512.vpdpbusd.512"(%{{.+}}, %[[EIGHT]], %{{.+}})
// DOTS: %[[OFFSETS:.+]] = vector.from_elements {{.+}} : vector<4xi32>
// DOTS: %[[QD:.+]] = memref.alloca() {alignment = 64 : i64} : memref<4x128xi8>
// DOTS: %[[QROW:.+]] = vector.load %[[Q]][%{{.+}}, %{{.+}}] : memref<4x128xi8>, vector<128xi8>
// DOTS: vector.shuffle %[[QROW]], %[[QROW]] [0, 2, 4,
// DOTS-SAME: 126, 1, 3,
// DOTS: scf.for %{{.+}} = %c0{{.*}} to %c128{{.*}} step %c128{{.*}} iter_args(
// DOTS: %[[PACKED:.+]] = vector.load %[[K]][%{{.+}}, %{{.+}}] : memref<32x64xi8, strided<[?, 1], offset: ?>>, vector<64xi8>
// DOTS: %[[FLIPPED:.+]] = arith.xori %[[PACKED]], %cst{{.*}} : vector<64xi8>
// DOTS: arith.shrui %{{.+}}, %cst{{.*}} : vector<32xi16>
// DOTS: %[[LO:.+]] = arith.andi %[[FLIPPED]], %{{.+}} : vector<64xi8>
// DOTS: %[[HI:.+]] = arith.andi %{{.+}}, %{{.+}} : vector<64xi8>
// DOTS: %[[QEVEN:.+]] = vector.load %[[QD]][%{{.+}}, %{{.+}}] : memref<4x128xi8>, vector<64xi8>
// DOTS: %[[QODD:.+]] = vector.load %[[QD]][%{{.+}}, %{{.+}}] : memref<4x128xi8>, vector<64xi8>
// DOTS: %[[D0:.+]] = llvm.call_intrinsic "llvm.x86.avx512.vpdpbusd.512"(%{{.+}}, %[[LO]], %[[QEVEN]])
// DOTS-NEXT: llvm.call_intrinsic "llvm.x86.avx512.vpdpbusd.512"(%[[D0]], %[[HI]], %[[QODD]])
// DOTS: %[[EXACT:.+]] = arith.subi %{{.+}}, %[[OFFSETS]] : vector<4xi32>
// DOTS-NEXT: arith.sitofp %[[EXACT]] : vector<4xi32> to vector<4xf32>
// CHECK-LABEL: func.func @int4_dots(
// CHECK-NOT: linalg.generic
// CHECK: memref.alloca() {alignment = 64 : i64} : memref<32x128xi8>
// CHECK: arith.shli %{{.+}}, %c4_i8 : i8
// CHECK: arith.sitofp {{.+}} : vector<16xi8> to vector<16xf32>
#k4A = affine_map<(m, n, k) -> (m, k)>
#k4B = affine_map<(m, n, k) -> (n, k)>
#k4C = affine_map<(m, n, k) -> (m, n)>
func.func @int4_dots(%k: memref<32x64xi8, strided<[?, 1], offset: ?>>, %q: memref<4x128xi8>, %s: memref<32x4xf32>) {
  %qe = memref.subview %q[0, 0] [4, 64] [1, 2] : memref<4x128xi8> to memref<4x64xi8, strided<[128, 2]>>
  %qo = memref.subview %q[0, 1] [4, 64] [1, 2] : memref<4x128xi8> to memref<4x64xi8, strided<[128, 2], offset: 1>>
  linalg.generic {indexing_maps = [#k4A, #k4B, #k4B, #k4C], iterator_types = ["parallel", "parallel", "reduction"]}
      ins(%k, %qe, %qo : memref<32x64xi8, strided<[?, 1], offset: ?>>, memref<4x64xi8, strided<[128, 2]>>, memref<4x64xi8, strided<[128, 2], offset: 1>>)
      outs(%s : memref<32x4xf32>) attrs = {attn.int4_pairs} {
  ^bb0(%a: i8, %x: i8, %y: i8, %acc: f32):
    %c4 = arith.constant 4 : i8
    %shl = arith.shli %a, %c4 : i8
    %lo = arith.shrsi %shl, %c4 : i8
    %hi = arith.shrsi %a, %c4 : i8
    %lof = arith.sitofp %lo : i8 to f32
    %xf = arith.sitofp %x : i8 to f32
    %p0 = arith.mulf %lof, %xf : f32
    %hif = arith.sitofp %hi : i8 to f32
    %yf = arith.sitofp %y : i8 to f32
    %p1 = arith.mulf %hif, %yf : f32
    %sum = arith.addf %p0, %p1 : f32
    %r = arith.addf %acc, %sum : f32
    linalg.yield %r : f32
  }
  return
}

// -----

// P codes times int4 V codes packed two per byte, with byte-dots=vnni: each V
// row's 32 packed bytes (64 columns) become the chunk's 32 even columns,
// then its 32 odd ones, back to signed (- 8), then the int8 path's 4-key
// interleave and vpdpbusd; after the int8 path's block transpose, the
// blocks of even and odd columns are interleaved back into column order
// as they are added to C.

// DOTS-LABEL: func.func @int4_p_v(
// DOTS-SAME: %[[P:[^:]+]]: memref<32x4xi8>, %[[V:[^:]+]]: memref<32x64xi8, strided<[?, 1], offset: ?>>, %[[O:[^:]+]]: memref<4x128xf32>
// DOTS-NOT: linalg.generic
// DOTS: %[[ROW:.+]] = vector.load %[[V]][%{{.+}}, %c0{{.*}}] : memref<32x64xi8, strided<[?, 1], offset: ?>>, vector<32xi8>
// DOTS: arith.xori %[[ROW]], %{{.+}} : vector<32xi8>
// DOTS: %[[HALVES:.+]] = vector.shuffle %{{.+}}, %{{.+}} [0, 1, 2,
// DOTS-SAME: 63] : vector<32xi8>, vector<32xi8>
// DOTS: arith.subi %[[HALVES]], %{{.+}} : vector<64xi8>
// DOTS: llvm.call_intrinsic "llvm.x86.avx512.vpdpbusd.512"
// DOTS: arith.sitofp %{{.+}} : vector<16xi32> to vector<16xf32>
// DOTS: %[[EVEN:.+]] = vector.shuffle %{{.+}}, %{{.+}} [0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23]
// DOTS: %[[ODD:.+]] = vector.shuffle %{{.+}}, %{{.+}} [0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23]
// DOTS: vector.shuffle %[[EVEN]], %[[ODD]] [0, 16, 1, 17, 2, 18,
// DOTS: vector.store %{{.+}}, %[[O]][%{{.+}}, %c0{{.*}}] : memref<4x128xf32>, vector<32xf32>
// CHECK-LABEL: func.func @int4_p_v(
// CHECK-NOT: linalg.generic
// CHECK: memref.alloca() {alignment = 64 : i64} : memref<32x128xi8>
// CHECK: arith.uitofp %{{.+}} : i8 to f32
#v4A = affine_map<(m, n, k) -> (k, m)>
#v4B = affine_map<(m, n, k) -> (k, n)>
#v4C = affine_map<(m, n, k) -> (m, n)>
func.func @int4_p_v(%p: memref<32x4xi8>, %v: memref<32x64xi8, strided<[?, 1], offset: ?>>, %o: memref<4x128xf32>) {
  %oe = memref.subview %o[0, 0] [4, 64] [1, 2] : memref<4x128xf32> to memref<4x64xf32, strided<[128, 2]>>
  %oo = memref.subview %o[0, 1] [4, 64] [1, 2] : memref<4x128xf32> to memref<4x64xf32, strided<[128, 2], offset: 1>>
  linalg.generic {indexing_maps = [#v4A, #v4B, #v4C, #v4C], iterator_types = ["parallel", "parallel", "reduction"]}
      ins(%p, %v : memref<32x4xi8>, memref<32x64xi8, strided<[?, 1], offset: ?>>)
      outs(%oe, %oo : memref<4x64xf32, strided<[128, 2]>>, memref<4x64xf32, strided<[128, 2], offset: 1>>) attrs = {attn.int4_pairs} {
  ^bb0(%pc: i8, %b: i8, %ce: f32, %co: f32):
    %pf = arith.uitofp %pc : i8 to f32
    %c4 = arith.constant 4 : i8
    %shl = arith.shli %b, %c4 : i8
    %lo = arith.shrsi %shl, %c4 : i8
    %hi = arith.shrsi %b, %c4 : i8
    %lof = arith.sitofp %lo : i8 to f32
    %e = arith.mulf %pf, %lof : f32
    %re = arith.addf %ce, %e : f32
    %hif = arith.sitofp %hi : i8 to f32
    %od = arith.mulf %pf, %hif : f32
    %ro = arith.addf %co, %od : f32
    linalg.yield %re, %ro : f32, f32
  }
  return
}

// -----

// A zero fill of C right before the P . V codes product goes away: the
// sums are stored, not added to C's zeros (without byte dots too: the
// codes converted to f32 take the outer-product kernel, which starts
// from zero).

// DOTS-LABEL: func.func @int8_p_v_after_zero_fill(
// DOTS-SAME: %[[O:[^:]+]]: memref<4x128xf32>
// DOTS-NOT: linalg.fill
// DOTS: llvm.call_intrinsic "llvm.x86.avx512.vpdpbusd.512"
// DOTS-NOT: vector.load %[[O]]
// DOTS: vector.store %{{.+}}, %[[O]]
// CHECK-LABEL: func.func @int8_p_v_after_zero_fill(
// CHECK-SAME: %[[O:[^:]+]]: memref<4x128xf32>
// CHECK-NOT: linalg.fill
// CHECK: arith.uitofp %{{.+}} : i8 to f32
// CHECK-NOT: vector.load %[[O]]
// CHECK: vector.store %{{.+}}, %[[O]]
#pvA5 = affine_map<(m, n, k) -> (k, m)>
#pvB5 = affine_map<(m, n, k) -> (k, n)>
#pvC5 = affine_map<(m, n, k) -> (m, n)>
func.func @int8_p_v_after_zero_fill(%p: memref<32x4xi8>, %v: memref<32x128xi8, strided<[?, 1], offset: ?>>, %o: memref<4x128xf32>) {
  %zero = arith.constant 0.0 : f32
  linalg.fill ins(%zero : f32) outs(%o : memref<4x128xf32>)
  linalg.matmul indexing_maps = [#pvA5, #pvB5, #pvC5]
      ins(%p, %v : memref<32x4xi8>, memref<32x128xi8, strided<[?, 1], offset: ?>>) outs(%o : memref<4x128xf32>) {attn.unsigned_lhs}
  return
}

// -----

// Rows read in place (views of the kernel's arguments, with a static row
// count) are prefetched one tile on (here 32 rows) at each load: decode
// streams its cache and its dot loops stalled on the loads. Views placed
// by a value loaded from memory (a page table) are not: the rows after a
// page belong to another sequence.

// CHECK-LABEL: func.func @prefetch_next_tile(
// CHECK: %[[VIEW:.+]] = memref.subview
// CHECK: scf.for %[[K:.+]] = %{{.+}} to %c64{{.*}} step %c16
// CHECK: %[[AHEAD:.+]] = arith.addi %[[ROW:.+]], %c32{{.*}} : index
// CHECK-NEXT: memref.prefetch %[[VIEW]][%[[AHEAD]], %[[K]]], read, locality<3>, data
// CHECK-NEXT: vector.load %[[VIEW]][%[[ROW]], %[[K]]]
// CHECK-LABEL: func.func @paged_rows_not_prefetched(
// CHECK-NOT: memref.prefetch %subview
// CHECK: return
#pfA = affine_map<(m, n, k) -> (m, k)>
#pfB = affine_map<(m, n, k) -> (n, k)>
#pfC = affine_map<(m, n, k) -> (m, n)>
func.func @prefetch_next_tile(%k: memref<?x64xf32>, %q: memref<4x64xf32>, %s: memref<32x4xf32>, %k0: index) {
  %view = memref.subview %k[%k0, 0] [32, 64] [1, 1] : memref<?x64xf32> to memref<32x64xf32, strided<[64, 1], offset: ?>>
  linalg.matmul indexing_maps = [#pfA, #pfB, #pfC]
      ins(%view, %q : memref<32x64xf32, strided<[64, 1], offset: ?>>, memref<4x64xf32>) outs(%s : memref<32x4xf32>)
  return
}
func.func @paged_rows_not_prefetched(%pool: memref<?x32x64xf32>, %table: memref<?xindex>, %q: memref<4x64xf32>, %s: memref<32x4xf32>, %i: index) {
  %page = memref.load %table[%i] : memref<?xindex>
  %view = memref.subview %pool[%page, 0, 0] [1, 32, 64] [1, 1, 1] : memref<?x32x64xf32> to memref<32x64xf32, strided<[64, 1], offset: ?>>
  linalg.matmul indexing_maps = [#pfA, #pfB, #pfC]
      ins(%view, %q : memref<32x64xf32, strided<[64, 1], offset: ?>>, memref<4x64xf32>) outs(%s : memref<32x4xf32>)
  return
}

// -----

// A choice (scf.if) between the cache's rows and a copy of a partial tile,
// as decode's tiles are, is prefetched too: one side reads the cache.

// CHECK-LABEL: func.func @prefetch_through_choice(
// CHECK: %[[ROWS:.+]] = scf.if
// CHECK: memref.prefetch %[[ROWS]][%{{.+}}, %{{.+}}], read, locality<3>, data
// CHECK-NEXT: vector.load %[[ROWS]]
#chA = affine_map<(m, n, k) -> (m, k)>
#chB = affine_map<(m, n, k) -> (n, k)>
#chC = affine_map<(m, n, k) -> (m, n)>
func.func @prefetch_through_choice(%k: memref<?x64xf32>, %q: memref<4x64xf32>, %s: memref<32x4xf32>, %k0: index, %whole: i1) {
  %rows = scf.if %whole -> (memref<32x64xf32, strided<[64, 1], offset: ?>>) {
    %view = memref.subview %k[%k0, 0] [32, 64] [1, 1] : memref<?x64xf32> to memref<32x64xf32, strided<[64, 1], offset: ?>>
    scf.yield %view : memref<32x64xf32, strided<[64, 1], offset: ?>>
  } else {
    %copy = memref.alloca() : memref<32x64xf32>
    %cast = memref.cast %copy : memref<32x64xf32> to memref<32x64xf32, strided<[64, 1], offset: ?>>
    scf.yield %cast : memref<32x64xf32, strided<[64, 1], offset: ?>>
  }
  linalg.matmul indexing_maps = [#chA, #chB, #chC]
      ins(%rows, %q : memref<32x64xf32, strided<[64, 1], offset: ?>>, memref<4x64xf32>) outs(%s : memref<32x4xf32>)
  return
}
