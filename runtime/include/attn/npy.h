//===- attn/npy.h - read and write NumPy .npy files -----------------------===//
#ifndef ATTN_NPY_H
#define ATTN_NPY_H

#include "attn/runtime.h"

#include <string>
#include <vector>

namespace attn {

/// An owned array loaded from or written to a .npy file.
struct NpyArray {
  DType dtype = DType::f32; // bf16 arrays are stored as uint16 ('<u2')
  std::vector<int64_t> shape;
  std::vector<uint8_t> bytes;

  int64_t numel() const;
  TensorRef ref() { return TensorRef(bytes.data(), dtype, shape); }
};

/// Reads a .npy file. `bf16` says how to read uint16 data. Throws
/// attn::Error naming `argument` on a missing file or an unsupported format.
NpyArray readNpy(const std::string &path, const std::string &argument,
                 bool uint16IsBF16 = false);
/// Writes an array; throws attn::Error on I/O failure.
void writeNpy(const std::string &path, const NpyArray &array,
              const std::string &argument);

} // namespace attn

#endif // ATTN_NPY_H
