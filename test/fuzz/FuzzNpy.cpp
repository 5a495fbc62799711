//===- FuzzNpy.cpp - libFuzzer: the .npy reader ---------------------------===//
//
// `.npy` files are handed to `attnc run` and the Python module by users.
// Reading may fail only with attn::Error; an array that reads must survive a
// write and a second read unchanged.
//
//===----------------------------------------------------------------------===//
#include "test/fuzz/FuzzSupport.h"

#include "attn/npy.h"

#include <cstddef>
#include <cstdint>
#include <string>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static attn::fuzz::MemoryFile in("fuzz-npy-in"), out("fuzz-npy-out");
  if (size == 0)
    return 0;
  // The first byte picks how uint16 data is read (float16 bits or bf16).
  bool bf16 = data[0] & 1;
  std::string text(reinterpret_cast<const char *>(data + 1), size - 1);
  std::string path = in.write(text.data(), text.size());
  attn::NpyArray array;
  try {
    array = attn::readNpy(path, "q", bf16);
  } catch (const attn::Error &e) {
    if (e.argument() != "q")
      attn::fuzz::finding("npy", std::string("error does not name the "
                                             "argument: ") + e.what(), text);
    return 0;
  } catch (const std::exception &e) {
    attn::fuzz::finding("npy", std::string("unexpected exception: ") + e.what(),
                        text);
  }
  if (array.bytes.size() != size_t(array.numel()) * attn::dtypeSize(array.dtype))
    attn::fuzz::finding("npy", "array bytes do not match its shape", text);
  attn::NpyArray again;
  try {
    attn::writeNpy(out.path(), array, "o");
    again = attn::readNpy(out.path(), "o", bf16);
  } catch (const std::exception &e) {
    attn::fuzz::finding("npy", std::string("round trip failed: ") + e.what(),
                        text);
  }
  if (again.dtype != array.dtype || again.shape != array.shape ||
      again.bytes != array.bytes)
    attn::fuzz::finding("npy", "round trip changed the array", text);
  return 0;
}
