//===- Npy.cpp - .npy reading and writing ---------------------------------===//
#include "attn/npy.h"

#include <cstdint>
#include <algorithm>
#include <cstring>
#include <fstream>
#include <sstream>

namespace attn {

int64_t NpyArray::numel() const {
  int64_t n = 1;
  for (int64_t d : shape)
    if (__builtin_mul_overflow(n, d, &n))
      throw Error("", "the array has more elements than fit in 64 bits");
  return n;
}

namespace {

std::string descrOf(DType t) {
  switch (t) {
  case DType::f32: return "<f4";
  case DType::f16: return "<f2";
  case DType::bf16: return "<u2";
  case DType::i32: return "<i4";
  case DType::i8: return "|i1";
  case DType::f8e4m3: // code bytes, as numpy has no fp8
  case DType::f8e5m2: return "|u1";
  }
  return "";
}

/// Value of `'key': ...` in the header dict, up to the next top-level comma.
std::string headerField(const std::string &header, const std::string &key) {
  size_t k = header.find("'" + key + "'");
  if (k == std::string::npos)
    return "";
  size_t colon = header.find(':', k);
  if (colon == std::string::npos)
    return "";
  size_t i = colon + 1;
  while (i < header.size() && header[i] == ' ')
    ++i;
  if (i < header.size() && header[i] == '(') {
    size_t end = header.find(')', i);
    return end == std::string::npos ? "" : header.substr(i, end - i + 1);
  }
  size_t end = header.find_first_of(",}", i);
  return header.substr(i, end == std::string::npos ? std::string::npos
                                                   : end - i);
}

std::string trimQuotes(std::string s) {
  while (!s.empty() && (s.back() == ' ' || s.back() == '\''))
    s.pop_back();
  size_t b = 0;
  while (b < s.size() && (s[b] == ' ' || s[b] == '\''))
    ++b;
  return s.substr(b);
}

} // namespace

NpyArray readNpy(const std::string &path, const std::string &argument,
                 bool uint16IsBF16) {
  std::ifstream in(path, std::ios::binary);
  if (!in)
    throw Error(argument, "cannot open '" + path + "'");
  char magic[8];
  if (!in.read(magic, 8) || std::memcmp(magic, "\x93NUMPY", 6) != 0)
    throw Error(argument, "'" + path + "' is not a .npy file");
  uint32_t headerLen = 0;
  if (magic[6] == 1) {
    unsigned char len[2];
    if (!in.read(reinterpret_cast<char *>(len), 2))
      throw Error(argument, "'" + path + "': truncated header");
    headerLen = len[0] | (len[1] << 8);
  } else if (magic[6] == 2 || magic[6] == 3) {
    unsigned char len[4];
    if (!in.read(reinterpret_cast<char *>(len), 4))
      throw Error(argument, "'" + path + "': truncated header");
    headerLen = len[0] | (len[1] << 8) | (len[2] << 16) | (uint32_t(len[3]) << 24);
  } else {
    throw Error(argument, "'" + path + "': unsupported .npy version " +
                              std::to_string(int(magic[6])));
  }
  if (headerLen > (1u << 20))
    throw Error(argument, "'" + path + "': header too large");
  std::string header(headerLen, '\0');
  if (!in.read(header.data(), headerLen))
    throw Error(argument, "'" + path + "': truncated header");

  NpyArray a;
  std::string descr = trimQuotes(headerField(header, "descr"));
  if (descr == "<f4" || descr == "=f4")
    a.dtype = DType::f32;
  else if (descr == "<f2" || descr == "=f2")
    a.dtype = DType::f16;
  else if (descr == "<i4" || descr == "=i4")
    a.dtype = DType::i32;
  else if (descr == "|i1")
    a.dtype = DType::i8;
  else if ((descr == "<u2" || descr == "=u2") && uint16IsBF16)
    a.dtype = DType::bf16;
  else if (descr == "<u2" || descr == "=u2")
    throw Error(argument, "'" + path +
                              "' holds uint16 (<u2) data, which is read as "
                              "bf16 bit patterns only for bf16 inputs (attnc "
                              "run: add --dtype bf16); otherwise expected "
                              "float32 (<f4), float16 (<f2) or int32 (<i4)");
  else
    throw Error(argument,
                "'" + path + "' holds dtype '" + descr +
                    "'; expected float32 (<f4), float16 (<f2), int32 (<i4)" +
                    (uint16IsBF16 ? ", or uint16 bf16 bits (<u2)" : ""));
  std::string fortran = trimQuotes(headerField(header, "fortran_order"));
  if (fortran != "False")
    throw Error(argument, "'" + path + "' is in Fortran order; save a "
                                       "C-contiguous array");
  std::string shape = headerField(header, "shape");
  if (shape.size() < 2 || shape.front() != '(')
    throw Error(argument, "'" + path + "': malformed shape in header");
  std::istringstream ss(shape.substr(1, shape.size() - 2));
  std::string dim;
  while (std::getline(ss, dim, ',')) {
    dim = trimQuotes(dim);
    if (dim.empty())
      continue;
    char *end = nullptr;
    long long v = std::strtoll(dim.c_str(), &end, 10);
    if (*end != '\0' && *end != 'L')
      throw Error(argument, "'" + path + "': malformed shape in header");
    if (v < 0 || v > (1ll << 40))
      throw Error(argument, "'" + path + "': bad dimension " + dim);
    a.shape.push_back(v);
  }
  // Checked: a header's dimensions (each up to 2^40) can multiply past
  // 64 bits, which wrapped to an array that claimed a shape it had no
  // data for.
  int64_t bytes = static_cast<int64_t>(dtypeSize(a.dtype));
  for (int64_t d : a.shape)
    if (__builtin_mul_overflow(bytes, d, &bytes))
      bytes = INT64_MAX;
  // A zero dimension makes the data empty, but the other dimensions must
  // still multiply within 64 bits (fuzz_npy: (0, 2^40, 2^40) read as an
  // empty array whose numel() then threw).
  int64_t nonzero = 1;
  for (int64_t d : a.shape)
    if (d != 0 && __builtin_mul_overflow(nonzero, d, &nonzero))
      throw Error(argument, "'" + path + "' is too large");
  if (bytes > (int64_t(1) << 40))
    throw Error(argument, "'" + path + "' is too large");
  // The header's shape is only a claim: check the file holds that much data
  // before allocating it (a 200-byte file claiming 1 TiB found by
  // fuzz_npy).
  std::streamoff dataStart = in.tellg();
  in.seekg(0, std::ios::end);
  std::streamoff available = in.tellg() - dataStart;
  in.seekg(dataStart);
  if (!in || available < bytes)
    throw Error(argument, "'" + path + "' is truncated: expected " +
                              std::to_string(bytes) + " bytes of data, found " +
                              std::to_string(std::max<std::streamoff>(
                                  available, 0)));
  a.bytes.resize(static_cast<size_t>(bytes));
  if (bytes > 0 && !in.read(reinterpret_cast<char *>(a.bytes.data()), bytes))
    throw Error(argument, "'" + path + "' is truncated: expected " +
                              std::to_string(bytes) + " bytes of data");
  return a;
}

void writeNpy(const std::string &path, const NpyArray &a,
              const std::string &argument) {
  std::string shape = "(";
  for (size_t i = 0; i < a.shape.size(); ++i)
    shape += std::to_string(a.shape[i]) + (a.shape.size() == 1 || i + 1 < a.shape.size() ? "," : "");
  shape += ")";
  std::string header = "{'descr': '" + descrOf(a.dtype) +
                       "', 'fortran_order': False, 'shape': " + shape + ", }";
  // Pad so that the data starts at a multiple of 64 bytes.
  size_t total = 10 + header.size() + 1;
  header += std::string((64 - total % 64) % 64, ' ') + "\n";
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out)
    throw Error(argument, "cannot write '" + path + "'");
  out.write("\x93NUMPY\x01\x00", 8);
  unsigned char len[2] = {static_cast<unsigned char>(header.size() & 0xff),
                          static_cast<unsigned char>(header.size() >> 8)};
  out.write(reinterpret_cast<char *>(len), 2);
  out.write(header.data(), header.size());
  out.write(reinterpret_cast<const char *>(a.bytes.data()), a.bytes.size());
  if (!out)
    throw Error(argument, "failed writing '" + path + "'");
}

} // namespace attn
