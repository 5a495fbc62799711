//===- AttnBase.td - attn dialect definition and enums -----*- tablegen -*-===//
#ifndef ATTN_BASE_TD
#define ATTN_BASE_TD

include "mlir/IR/OpBase.td"
include "mlir/IR/AttrTypeBase.td"
include "mlir/IR/EnumAttr.td"

def Attn_Dialect : Dialect {
  let name = "attn";
  let summary = "Attention variants as one op with score, mask and sink regions";
  let description = [{
    The `attn` dialect holds one attention computation per op. The variant's
    element-wise pieces (score modifier, mask, sink logit, dynamic scale) are
    regions of `arith`/`math` ops, so later passes can analyse them (mask
    classification) and inline them into a tiled loop nest.
  }];
  let cppNamespace = "::mlir::attn";
  let hasConstantMaterializer = 1;
  let dependentDialects = ["::mlir::arith::ArithDialect",
                           "::mlir::math::MathDialect",
                           "::mlir::memref::MemRefDialect"];
}

class Attn_Op<string mnemonic, list<Trait> traits = []>
    : Op<Attn_Dialect, mnemonic, traits>;

// Row normalizers of DSL.md `normalize = ...`.
def Attn_NormalizeKind : I32EnumAttr<"Normalize", "row normalizer", [
  I32EnumAttrCase<"softmax", 0>,
  I32EnumAttrCase<"sigmoid", 1>,
  I32EnumAttrCase<"relu", 2>,
  I32EnumAttrCase<"relu2", 3>,
  I32EnumAttrCase<"softplus", 4>,
  I32EnumAttrCase<"laplace", 5>
]> {
  let cppNamespace = "::mlir::attn";
}

// Rules of DSL.md `select(size = N) = topk(K) | mass(P) | above(T)`.
def Attn_SelectKind : I32EnumAttr<"SelectKind", "block selection rule", [
  I32EnumAttrCase<"topk", 0>,
  I32EnumAttrCase<"mass", 1>,
  I32EnumAttrCase<"above", 2>
]> {
  let cppNamespace = "::mlir::attn";
}

// Quantized K/V codes (DSL.md --kv-dtype): int8 and int4 integer codes
// (int4 packed two per byte, low nibble first), fp8 as OCP e4m3/e5m2 bytes.
def Attn_KVQuantKind : I32EnumAttr<"KVQuant", "quantized K/V code", [
  I32EnumAttrCase<"int8", 0>,
  I32EnumAttrCase<"fp8e4m3", 1>,
  I32EnumAttrCase<"fp8e5m2", 2>,
  I32EnumAttrCase<"int4", 3>
]> {
  let cppNamespace = "::mlir::attn";
}

// Problem sizes a region may read (DSL.md: B, Hq, Hkv, Sq, Skv, D, Dv).
def Attn_SizeKind : I32EnumAttr<"Size", "attention problem size", [
  I32EnumAttrCase<"B", 0>,
  I32EnumAttrCase<"Hq", 1>,
  I32EnumAttrCase<"Hkv", 2>,
  I32EnumAttrCase<"Sq", 3>,
  I32EnumAttrCase<"Skv", 4>,
  I32EnumAttrCase<"D", 5>,
  I32EnumAttrCase<"Dv", 6>
]> {
  let cppNamespace = "::mlir::attn";
}

#endif // ATTN_BASE_TD
