//===- Import.h - checked AST to the attn dialect -------------------------===//
#ifndef ATTN_FRONTEND_IMPORT_H
#define ATTN_FRONTEND_IMPORT_H

#include "lib/Frontend/AST.h"
#include "lib/Frontend/Diagnostics.h"

#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/OwningOpRef.h"

namespace attn::fe {

/// Quantized K/V codes (DSL.md --kv-dtype); None keeps K/V in `dtype`.
enum class KVQuant { None, Int8, Fp8E4M3, Fp8E5M2, Int4 };

/// The static part of a kernel's signature (DSL.md compile options).
struct KernelShape {
  int64_t headDim = 64;      // D
  int64_t valueHeadDim = 64; // Dv
  DType dtype = DType::F32;  // q, k, v
  bool lse = false;          // also write lse
  KVQuant kvQuant = KVQuant::None;
  int64_t kvGroup = 64;  // tokens per K scale group
  int64_t pageSize = 0;  // > 0: K/V read through a page table
  bool backward = false; // also import <variant>__backward (gradients)
};

/// Element type of `o` for a variant under `shape`.
DType outputDType(const Variant &v, const KernelShape &shape);

/// Adds `func.func @<variant>(q, k, v, o, [lse], params..., captures...)`
/// holding one `attn.attention` to `module`, and for a masked variant
/// `@<variant>__block_map(..., block_map)`. Returns false (and reports to
/// `diags`) when the options do not fit the variant.
/// The error for asking a variant without a row sum for lse (at its
/// normalize declaration), said the same by the import and the Driver's
/// early option check.
void reportLseUnavailable(const Variant &v, Diagnostics &diags);

bool importVariant(mlir::ModuleOp module, const Variant &v,
                   const KernelShape &shape, const SourceFile &file,
                   Diagnostics &diags);

/// Whether a variant's kernel walks a block map (masks and select; not
/// kv_index, whose positions are data).
bool hasBlockMap(const Variant &v);

/// The function computing a masked variant's tile classes (see
/// attn.attention's block_map operand), imported next to the kernel.
std::string blockMapFunctionName(const std::string &variant);
/// The function merging a kernel's split-KV parts (attn.merge_splits).
std::string mergeFunctionName(const std::string &variant);
/// The function computing gradients (KernelShape::backward): arguments
/// q, k, v, o, [lse: softmax, softplus], params..., captures..., do, dq,
/// dk, dv, one memref<1xf32> per f32 param, one f32 memref per f32
/// captured tensor (its rank), phase (i32: 0 dk/dv, 1 dq); docs/backward.md.
std::string backwardFunctionName(const std::string &variant);

/// Registers the dialects the import produces.
void registerImportDialects(mlir::MLIRContext &ctx);

} // namespace attn::fe

#endif // ATTN_FRONTEND_IMPORT_H
