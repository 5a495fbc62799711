//===- TileDecode.cpp - decode-shaped and in-place tiles of attn.attention ===//
//
// The AttentionTiler paths for decode-shaped and in-place tiles (see
// TileAttention.cpp's top comment for the loop nest): key tiles computed
// directly on the cache rows, query rows processed in groups, query code
// rows of a K token group, probabilities rounded to codes for P . V, and
// the narrow row widths.
//
//===----------------------------------------------------------------------===//

#include "lib/Transforms/AttentionTiler.h"

namespace mlir::attn::tiler {

void AttentionTiler::emitDirectTile(OpBuilder &b, Value k0, Value kn,
                                    Value fullTile) {
  // The tile's rows in parts that each lie within one page: the whole
  // tile, or one page's rows per part when pages are smaller.
  int64_t partRows =
      op.isPaged() ? std::min<int64_t>(BK, *op.getPageSize()) : BK;
  TileOperands direct;
  direct.qRows = qRowBuf;
  if (op.isPaged()) {
    // Pages sit in any order, which defeats the hardware prefetcher: ask
    // for the rows of the tile after next, page by page, while this one
    // runs. (Contiguous rows: the CPU target prefetches the next tile at
    // each load of its views.)
    Value next = arith::AddIOp::create(b, loc, k0, cIdx(b, kPrefetchTiles * BK));
    Value whole = arith::CmpIOp::create(
        b, loc, arith::CmpIPredicate::ule,
        arith::AddIOp::create(b, loc, next, cIdx(b, BK)), keySlots);
    scf::IfOp::create(b, loc, whole, [&](OpBuilder &b, Location) {
      for (int64_t part = 0; part < BK; part += partRows) {
        auto [nOuter, nRow] =
            locateRow(b, arith::AddIOp::create(b, loc, next, cIdx(b, part)));
        forLoop(b, partRows, [&](OpBuilder &b, Value r) {
          prefetchRow(b, nOuter, arith::AddIOp::create(b, loc, nRow, r));
        });
      }
      scf::YieldOp::create(b, loc);
    });
  }
  // int4 rows stay packed, two codes per byte.
  int64_t perByte = op.getKvQuant() == KVQuant::int4 ? 2 : 1;
  auto cacheParts = [&](OpBuilder &b) {
    SmallVector<Value> parts; // K's, then V's
    for (int64_t part = 0; part < BK; part += partRows) {
      auto [outer, row0] =
          locateRow(b, arith::AddIOp::create(b, loc, k0, cIdx(b, part)));
      parts.push_back(
          cacheRows(b, op.getKey(), outer, row0, partRows, D / perByte));
      parts.push_back(
          cacheRows(b, op.getValue(), outer, row0, partRows, Dv / perByte));
    }
    return parts;
  };
  SmallVector<Value> parts;
  if (!rawPartialTile) {
    parts = cacheParts(b);
  } else {
    // A partial tile's rows are copied, zero-padded, into rawKBuf/rawVBuf
    // (seen through the cache views' types), so one copy of the code
    // below runs every tile; its scores past kn are masked.
    SmallVector<Type> types;
    for (int64_t part = 0; part < BK; part += partRows) {
      types.push_back(cacheRowsType(op.getKey(), k0, partRows, D / perByte));
      types.push_back(cacheRowsType(op.getValue(), k0, partRows, Dv / perByte));
    }
    Value whole = arith::CmpIOp::create(b, loc, arith::CmpIPredicate::eq, kn,
                                        cIdx(b, BK));
    auto rows = scf::IfOp::create(b, loc, types, whole,
                                  /*withElseRegion=*/true);
    {
      OpBuilder::InsertionGuard guard(b);
      b.setInsertionPointToStart(rows.thenBlock());
      scf::YieldOp::create(b, loc, cacheParts(b));
      b.setInsertionPointToStart(rows.elseBlock());
      emitRawKeyRows(b, k0, kn);
      SmallVector<Value> raw;
      for (int64_t part = 0; part < BK; part += partRows) {
        for (Value buf : {rawKBuf, rawVBuf}) {
          auto type = cast<MemRefType>(buf.getType());
          Value view = memref::SubViewOp::create(
              b, loc, buf,
              ArrayRef<OpFoldResult>{b.getIndexAttr(part), b.getIndexAttr(0)},
              ArrayRef<OpFoldResult>{b.getIndexAttr(partRows),
                                     b.getIndexAttr(type.getDimSize(1))},
              ArrayRef<OpFoldResult>{b.getIndexAttr(1), b.getIndexAttr(1)});
          raw.push_back(memref::CastOp::create(
              b, loc, types[raw.size()], view));
        }
      }
      scf::YieldOp::create(b, loc, raw);
    }
    parts.assign(rows.getResults().begin(), rows.getResults().end());
  }
  for (size_t at = 0; at < parts.size(); at += 2) {
    direct.k.push_back(parts[at]);
    direct.v.push_back(parts[at + 1]);
  }
  llvm::SaveAndRestore<Value> compactScores(sTBuf, sTTinyBuf);
  if (!op.getKvQuant()) {
    forEachRowGroup(b, [&](OpBuilder &b) {
      direct.qRows = qRowBuf;
      emitTileCompute(b, k0, kn, fullTile, &direct);
    });
    return;
  }
  // (Keys past kn, in a partial tile, read the tile's first scale and
  // keep 0.)
  forLoop(b, BK, [&](OpBuilder &b, Value j) {
    Value valid =
        arith::CmpIOp::create(b, loc, arith::CmpIPredicate::ult, j, kn);
    Value pos = arith::SelectOp::create(
        b, loc, valid, arith::AddIOp::create(b, loc, k0, j), k0);
    Value scale = memref::LoadOp::create(b, loc, op.getValueScale(),
                                         ValueRange{bIdx, hkvIdx, pos});
    memref::StoreOp::create(
        b, loc, arith::SelectOp::create(b, loc, valid, scale, cF32(b, 0.0)),
        vScaleBuf, ValueRange{j});
  });
  // Q's rows for this tile's K group, recomputed only when the group
  // changes (groups span several tiles).
  Value group = kvRows().keyScaleGroup(b, k0);
  Value stale = arith::CmpIOp::create(
      b, loc, arith::CmpIPredicate::ne,
      memref::LoadOp::create(b, loc, qGroupBuf, ValueRange{cIdx(b, 0)}),
      group);
  scf::IfOp::create(b, loc, stale, [&](OpBuilder &b, Location) {
    emitGroupQueryRows(b, group);
    memref::StoreOp::create(b, loc, group, qGroupBuf, ValueRange{cIdx(b, 0)});
    scf::YieldOp::create(b, loc);
  });
  forEachRowGroup(b, [&](OpBuilder &b) {
    direct.qRows = qCodeBuf ? qCodeBuf : qScaledBuf;
    direct.qRowScale = qRowScaleBuf;
    emitTileCompute(b, k0, kn, fullTile, &direct);
  });
}

void AttentionTiler::emitRawKeyRows(OpBuilder &b, Value k0, Value kn) {
  forLoop(b, BK, [&](OpBuilder &b, Value j) {
    Value valid =
        arith::CmpIOp::create(b, loc, arith::CmpIPredicate::ult, j, kn);
    auto eachBuf = [&](OpBuilder &b,
                       function_ref<void(OpBuilder &, Value cache, Value buf,
                                         Value d)>
                           body) {
      for (auto [cache, buf] : {std::pair(op.getKey(), rawKBuf),
                                std::pair(op.getValue(), rawVBuf)}) {
        int64_t width = cast<MemRefType>(buf.getType()).getDimSize(1);
        forLoop(b, width,
                [&](OpBuilder &b, Value d) { body(b, cache, buf, d); });
      }
    };
    scf::IfOp::create(
        b, loc, valid,
        [&](OpBuilder &b, Location) {
          auto [outer, row] =
              locateRow(b, arith::AddIOp::create(b, loc, k0, j));
          eachBuf(b, [&](OpBuilder &b, Value cache, Value buf, Value d) {
            memref::StoreOp::create(
                b, loc,
                memref::LoadOp::create(b, loc, cache,
                                       ValueRange{outer, hkvIdx, row, d}),
                buf, ValueRange{j, d});
          });
          scf::YieldOp::create(b, loc);
        },
        [&](OpBuilder &b, Location) {
          // Zero codes decode to 0 in every cache dtype: P . V stays finite.
          eachBuf(b, [&](OpBuilder &b, Value, Value buf, Value d) {
            Type elt = cast<MemRefType>(buf.getType()).getElementType();
            memref::StoreOp::create(
                b, loc,
                arith::ConstantOp::create(b, loc, cast<TypedAttr>(
                                                      b.getZeroAttr(elt))),
                buf, ValueRange{j, d});
          });
          scf::YieldOp::create(b, loc);
        });
  });
}

void AttentionTiler::forEachRowGroup(OpBuilder &b,
                                     function_ref<void(OpBuilder &)> body) {
  forLoop(b, cIdx(b, 0), rowGroupCount(b), 1, [&](OpBuilder &b, Value g) {
    Value r0 = arith::MulIOp::create(b, loc, g, cIdx(b, kTinyRows));
    // buf's kTinyRows rows from r0 (all columns of a 2-D buffer).
    auto atGroup = [&](Value buf) -> Value {
      if (!buf)
        return buf;
      auto type = cast<MemRefType>(buf.getType());
      SmallVector<OpFoldResult> offsets = {r0}, sizes = {
                                                    b.getIndexAttr(kTinyRows)};
      SmallVector<OpFoldResult> strides = {b.getIndexAttr(1)};
      if (type.getRank() == 2) {
        offsets.push_back(b.getIndexAttr(0));
        sizes.push_back(b.getIndexAttr(type.getDimSize(1)));
        strides.push_back(b.getIndexAttr(1));
      }
      return memref::SubViewOp::create(b, loc, buf, offsets, sizes, strides);
    };
    SmallVector<Value *> perRow = {&mBuf,         &lBuf,        &mUseBuf,
                                   &alphaBuf,     &accBuf,      &rowHead32Buf,
                                   &rowQ32Buf,    &qRowBuf,     &qScaledBuf,
                                   &qCodeBuf,     &qRowScaleBuf};
    SmallVector<Value> saved;
    for (Value *v : perRow) {
      saved.push_back(*v);
      *v = atGroup(*v);
    }
    llvm::SaveAndRestore<Value> groupRows(rowsUsed, cIdx(b, kTinyRows));
    body(b);
    for (auto [v, old] : llvm::zip(perRow, saved))
      *v = old;
  });
}

void AttentionTiler::emitGroupQueryRows(OpBuilder &b, Value group) {
  Type i32Type = b.getI32Type();
  bool fp8Codes = isFp8(*op.getKvQuant());
  // Every row of the groups the tile's compute will take.
  Value rowsOfGroups =
      arith::MulIOp::create(b, loc, rowGroupCount(b), cIdx(b, kTinyRows));
  forLoop(b, cIdx(b, 0), rowsOfGroups, 1, [&](OpBuilder &b, Value i) {
    // q * K's scales, and for int8 the row's absolute max: |x|'s bits
    // order like |x| (finite or inf), so it is an unsigned max reduction,
    // which LLVM vectorizes (a float max with NaN rules it does not).
    auto scaleLoop = scf::ForOp::create(
        b, loc, cIdx(b, 0), cIdx(b, D), cIdx(b, 1),
        ValueRange{arith::ConstantIntOp::create(b, loc, 0, 32)},
        [&](OpBuilder &b, Location, Value d, ValueRange acc) {
          Value scale = memref::LoadOp::create(
              b, loc, op.getKeyScale(), ValueRange{bIdx, hkvIdx, group, d});
          Value q = memref::LoadOp::create(b, loc, qRowBuf, ValueRange{i, d});
          Value x = arith::MulFOp::create(b, loc, q, scale);
          if (fp8Codes) // as the bf16 dot products read it (CPU, BF16)
            x = arith::ExtFOp::create(
                b, loc, Type(f32),
                arith::TruncFOp::create(b, loc, b.getBF16Type(), x)
                    .getResult());
          memref::StoreOp::create(b, loc, x, qScaledBuf, ValueRange{i, d});
          Value magnitude = arith::AndIOp::create(
              b, loc, arith::BitcastOp::create(b, loc, i32Type, x),
              arith::ConstantIntOp::create(b, loc, 0x7fffffff, 32));
          scf::YieldOp::create(
              b, loc,
              ValueRange{arith::MaxUIOp::create(b, loc, acc[0], magnitude)});
        });
    if (!qCodeBuf)
      return;
    // int8 codes times int8 codes (VNNI dot products on the CPU): the row
    // rounded to int8 against its absolute max; S^T's column is scaled
    // back by max / 127.
    Value amax = arith::BitcastOp::create(b, loc, f32, scaleLoop.getResult(0));
    QueryRowScale rowScale =
        queryRowScale(b, loc, amax, queryCodeLimit(KVQuant::int8));
    memref::StoreOp::create(b, loc, rowScale.scale, qRowScaleBuf,
                            ValueRange{i});
    forLoop(b, D, [&](OpBuilder &b, Value d) {
      Value x = memref::LoadOp::create(b, loc, qScaledBuf, ValueRange{i, d});
      memref::StoreOp::create(b, loc,
                              int8QueryCodes(b, loc, x, rowScale.inverse),
                              qCodeBuf, ValueRange{i, d});
    });
  });
}

void AttentionTiler::emitRoundedProbabilities(OpBuilder &b) {
  // P (V's scales folded in) is never negative: per row, codes
  // round(p * 255 / max p), 16 at a time over the compact [BK, 4] tile.
  auto quadType = VectorType::get({kQuad}, f32);
  auto rowsType = VectorType::get({kTinyRows}, f32);
  Value flat = flatScores(b, sTBuf), flatCodes = flatScores(b, pCodeBuf);
  Value c0 = cIdx(b, 0);
  auto splat = [&](VectorType type, double v) -> Value {
    return arith::ConstantOp::create(
        b, loc, type,
        DenseElementsAttr::get(type, b.getF32FloatAttr(float(v))));
  };
  Value pmax = splat(rowsType, 0.0);
  for (Value key : keysOfQuad(b, maxOfQuads(b, flat, splat(quadType, 0.0))))
    pmax = arith::MaximumFOp::create(b, loc, pmax, key);
  Value nonzero = arith::CmpFOp::create(b, loc, arith::CmpFPredicate::OGT, pmax,
                                        splat(rowsType, 0.0));
  Value inv = arith::SelectOp::create(
      b, loc, nonzero,
      arith::DivFOp::create(b, loc, splat(rowsType, 255.0), pmax),
      splat(rowsType, 0.0));
  vector::StoreOp::create(
      b, loc, arith::MulFOp::create(b, loc, pmax, splat(rowsType, 1.0 / 255.0)),
      pScaleBuf, ValueRange{c0});
  Value invQuad = rowsOverQuad(b, inv);
  forLoop(b, c0, cIdx(b, BK * kTinyRows), kQuad, [&](OpBuilder &b, Value at) {
    Value p = vector::LoadOp::create(b, loc, quadType, flat, ValueRange{at});
    Value code = arith::FPToSIOp::create(
        b, loc, VectorType::get({kQuad}, b.getI32Type()),
        math::RoundEvenOp::create(b, loc,
                                  arith::MulFOp::create(b, loc, p, invQuad)));
    vector::StoreOp::create(
        b, loc,
        arith::TruncIOp::create(
            b, loc, VectorType::get({kQuad}, b.getI8Type()), code),
        flatCodes, ValueRange{at});
  });
}

void AttentionTiler::withRowWidth(
    OpBuilder &b, function_ref<void(OpBuilder &, int64_t)> body) {
  if (!narrow) {
    body(b, BQ);
    return;
  }
  auto narrowOrFull = [&](OpBuilder &b) {
    if (rowWidths == RowWidths::Few) {
      body(b, kNarrowRows);
      return;
    }
    scf::IfOp::create(
        b, loc, narrow,
        [&](OpBuilder &b, Location) {
          body(b, kNarrowRows);
          scf::YieldOp::create(b, loc);
        },
        [&](OpBuilder &b, Location) {
          body(b, BQ);
          scf::YieldOp::create(b, loc);
        });
  };
  if (!stagedTiny) {
    narrowOrFull(b);
    return;
  }
  scf::IfOp::create(
      b, loc, tiny,
      [&](OpBuilder &b, Location) {
        body(b, kTinyRows);
        scf::YieldOp::create(b, loc);
      },
      [&](OpBuilder &b, Location) {
        narrowOrFull(b);
        scf::YieldOp::create(b, loc);
      });
}

/// The first `width` columns (or rows) of a 2-D tile buffer as a static
/// strided view.
Value AttentionTiler::columns(OpBuilder &b, Value buf, int64_t width) {
  auto type = cast<MemRefType>(buf.getType());
  if (width == type.getDimSize(1))
    return buf;
  return memref::SubViewOp::create(
      b, loc, buf, ArrayRef<OpFoldResult>{b.getIndexAttr(0), b.getIndexAttr(0)},
      ArrayRef<OpFoldResult>{b.getIndexAttr(type.getDimSize(0)),
                             b.getIndexAttr(width)},
      ArrayRef<OpFoldResult>{b.getIndexAttr(1), b.getIndexAttr(1)});
}

Value AttentionTiler::rowsOf(OpBuilder &b, Value buf, int64_t width) {
  auto type = cast<MemRefType>(buf.getType());
  if (width == type.getDimSize(0))
    return buf;
  return memref::SubViewOp::create(
      b, loc, buf, ArrayRef<OpFoldResult>{b.getIndexAttr(0), b.getIndexAttr(0)},
      ArrayRef<OpFoldResult>{b.getIndexAttr(width),
                             b.getIndexAttr(type.getDimSize(1))},
      ArrayRef<OpFoldResult>{b.getIndexAttr(1), b.getIndexAttr(1)});
}

} // namespace mlir::attn::tiler
