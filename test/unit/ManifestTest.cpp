//===- ManifestTest.cpp - bundle manifests and JIT cache records ----------===//
//
// runtime/support/Manifest.h: what is written reads back unchanged, the
// text keeps the layout bundles have always had, and every malformed
// document (truncated, wrong types, missing fields, huge numbers, deep
// nesting, bytes that are not UTF-8, references to payloads that do not
// exist) is an attn::Error("manifest") naming the field, never another
// exception or a crash; Module::load reports them with the bundle's path.
//
//===----------------------------------------------------------------------===//
#include "attn/runtime.h"
#include "lib/Driver/Bundle.h"
#include "runtime/support/Manifest.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>

using namespace attn;
namespace fs = std::filesystem;

namespace {

/// The manifest's first member, as this attnc writes it.
const std::string kFormat =
    "\"format\": " + std::to_string(detail::kBundleFormat);

KernelInfo sampleInfo(const std::string &name, const std::string &target) {
  KernelInfo info;
  info.name = name;
  info.target = target;
  info.dtype = target == "cpu" ? DType::f32 : DType::bf16;
  info.outDType = info.dtype;
  info.headDim = 128;
  info.valueHeadDim = 64;
  info.lse = true;
  info.normalize = "softmax";
  info.blockQ = 64;
  info.blockKV = 32;
  info.compilerVersion = "0.1.0+mlir22";
  info.hasBlockMap = true;
  info.splitKv = 4;
  info.kvDtype = "int8";
  info.kvGroup = 16;
  info.pageSize = 8;
  info.params = {{"w", DType::i32, 8.0},
                 {"temp", DType::f32, 0.125},
                 {"cap", DType::f32, HUGE_VAL},
                 {"floor", DType::f32, -HUGE_VAL},
                 {"odd", DType::f32, std::nan("")},
                 {"rows", DType::i32, std::nullopt}};
  info.captures = {{"doc", DType::i32, {"B", "Skv"}, {"B", "Skv"}},
                   {"tbl", DType::f32, {"Skv / 64"}, {"Skv 64 /"}}};
  return info;
}

/// A manifest with a CPU kernel, an sm_90a kernel with select and its PTX,
/// and a gfx942 kernel.
manifest::BundleManifest sample() {
  manifest::BundleManifest m;
  m.compiler = "0.1.0+mlir22";
  m.source = "catalog.attn";
  manifest::BinaryEntry cpu;
  cpu.target = "cpu";
  cpu.kind = "elf-shared-object";
  cpu.cpu = "x86-64-v3";
  cpu.cpuFeatures = {"avx2", "fma"};
  cpu.offset = 4096;
  cpu.size = 16352;
  cpu.checksum = "424c5291032fcf54";
  manifest::BinaryEntry cubin{"sm_90a", "cubin", "", {}, 20448, 9000,
                              "0123456789abcdef"};
  manifest::BinaryEntry ptx{"sm_90a", "ptx", "", {}, 29448, 70000,
                            "fedcba9876543210"};
  manifest::BinaryEntry hsaco{"gfx942", "amdgpu_code_object", "", {},
                              99448, 12000, "00000000000000ff"};
  m.binaries = {cpu, cubin, ptx, hsaco};

  manifest::KernelEntry c;
  c.info = sampleInfo("window", "cpu");
  c.binary = 0;
  c.entry = "attn_entry_window";
  c.blockMapEntry = "attn_block_map_window";
  c.mergeEntry = "attn_merge_window";

  manifest::KernelEntry h;
  h.info = sampleInfo("hopper", "sm_90a");
  h.info.selectBlock = 64;
  h.info.selectRowsPerItem = 16;
  h.info.packedHeads = false;
  h.binary = 1;
  h.ptxBinary = 2;
  h.entry = "attn_gpu_hopper";
  h.mergeEntry = "attn_gpu_merge_hopper";
  h.gpu = manifest::GpuLaunch{384, 128, 200704, true, "attn_pool_hopper",
                              "attn_select_hopper", 168};
  h.gpu->clusterCtas = 2;

  manifest::KernelEntry a;
  a.info = sampleInfo("mi300", "gfx942");
  a.binary = 3;
  a.entry = "attn_gpu_mi300";
  a.mergeEntry = "attn_gpu_merge_mi300";
  a.gpu = manifest::GpuLaunch{256, 64, 65536, false, "", "", 0};
  m.kernels = {c, h, a};
  return m;
}

/// The error reading `text` as a bundle manifest ("" when it reads).
std::string errorOf(std::string_view text) {
  try {
    manifest::readBundleManifest(text, "t.attnpkg");
  } catch (const Error &e) {
    EXPECT_EQ(e.argument(), "manifest") << e.what();
    return e.what();
  }
  return "";
}

/// `text` with the first occurrence of `from` (in the sample, the one in
/// kernels[0] or binaries[0]) replaced by `to`.
std::string replaced(std::string text, const std::string &from,
                     const std::string &to) {
  size_t at = text.find(from);
  EXPECT_NE(at, std::string::npos) << from;
  if (at != std::string::npos)
    text.replace(at, from.size(), to);
  return text;
}

#define EXPECT_CONTAINS(haystack, needle)                                      \
  EXPECT_NE(std::string(haystack).find(needle), std::string::npos)            \
      << "expected \"" << (needle) << "\" in: " << (haystack)

void expectSameInfo(const KernelInfo &a, const KernelInfo &b) {
  EXPECT_EQ(a.name, b.name);
  EXPECT_EQ(a.target, b.target);
  EXPECT_EQ(a.dtype, b.dtype);
  EXPECT_EQ(a.outDType, b.outDType);
  EXPECT_EQ(a.headDim, b.headDim);
  EXPECT_EQ(a.valueHeadDim, b.valueHeadDim);
  EXPECT_EQ(a.lse, b.lse);
  EXPECT_EQ(a.normalize, b.normalize);
  EXPECT_EQ(a.blockQ, b.blockQ);
  EXPECT_EQ(a.blockKV, b.blockKV);
  EXPECT_EQ(a.compilerVersion, b.compilerVersion);
  EXPECT_EQ(a.hasBlockMap, b.hasBlockMap);
  EXPECT_EQ(a.selectBlock, b.selectBlock);
  EXPECT_EQ(a.selectRowsPerItem, b.selectRowsPerItem);
  EXPECT_EQ(a.packedHeads, b.packedHeads);
  EXPECT_EQ(a.splitKv, b.splitKv);
  EXPECT_EQ(a.kvDtype, b.kvDtype);
  EXPECT_EQ(a.kvGroup, b.kvGroup);
  EXPECT_EQ(a.pageSize, b.pageSize);
  EXPECT_EQ(a.cpu, b.cpu);
  ASSERT_EQ(a.params.size(), b.params.size());
  for (size_t i = 0; i < a.params.size(); ++i) {
    EXPECT_EQ(a.params[i].name, b.params[i].name);
    EXPECT_EQ(a.params[i].type, b.params[i].type);
    ASSERT_EQ(a.params[i].defaultValue.has_value(),
              b.params[i].defaultValue.has_value());
    if (a.params[i].defaultValue && std::isnan(*a.params[i].defaultValue))
      EXPECT_TRUE(std::isnan(*b.params[i].defaultValue));
    else if (a.params[i].defaultValue)
      EXPECT_EQ(*a.params[i].defaultValue, *b.params[i].defaultValue);
  }
  ASSERT_EQ(a.captures.size(), b.captures.size());
  for (size_t i = 0; i < a.captures.size(); ++i) {
    EXPECT_EQ(a.captures[i].name, b.captures[i].name);
    EXPECT_EQ(a.captures[i].dtype, b.captures[i].dtype);
    EXPECT_EQ(a.captures[i].dimText, b.captures[i].dimText);
    EXPECT_EQ(a.captures[i].dimRpn, b.captures[i].dimRpn);
  }
}

TEST(Manifest, RoundTrips) {
  manifest::BundleManifest m = sample();
  std::string text = manifest::writeBundleManifest(m);
  manifest::BundleManifest r = manifest::readBundleManifest(text, "t");
  EXPECT_EQ(manifest::writeBundleManifest(r), text);
  EXPECT_EQ(r.format, int64_t(detail::kBundleFormat));
  EXPECT_EQ(r.compiler, m.compiler);
  EXPECT_EQ(r.source, m.source);
  ASSERT_EQ(r.binaries.size(), 4u);
  for (size_t i = 0; i < 4; ++i) {
    EXPECT_EQ(r.binaries[i].target, m.binaries[i].target);
    EXPECT_EQ(r.binaries[i].kind, m.binaries[i].kind);
    EXPECT_EQ(r.binaries[i].cpu, m.binaries[i].cpu);
    EXPECT_EQ(r.binaries[i].cpuFeatures, m.binaries[i].cpuFeatures);
    EXPECT_EQ(r.binaries[i].offset, m.binaries[i].offset);
    EXPECT_EQ(r.binaries[i].size, m.binaries[i].size);
    EXPECT_EQ(r.binaries[i].checksum, m.binaries[i].checksum);
  }
  ASSERT_EQ(r.kernels.size(), 3u);
  for (size_t i = 0; i < 3; ++i) {
    const manifest::KernelEntry &a = m.kernels[i], &b = r.kernels[i];
    expectSameInfo(a.info, b.info);
    EXPECT_EQ(a.binary, b.binary);
    EXPECT_EQ(a.ptxBinary, b.ptxBinary);
    EXPECT_EQ(a.entry, b.entry);
    EXPECT_EQ(a.mergeEntry, b.mergeEntry);
    EXPECT_EQ(a.blockMapEntry, b.blockMapEntry);
    ASSERT_EQ(a.gpu.has_value(), b.gpu.has_value());
    if (a.gpu) {
      EXPECT_EQ(a.gpu->blockThreads, b.gpu->blockThreads);
      EXPECT_EQ(a.gpu->rowsPerBlock, b.gpu->rowsPerBlock);
      EXPECT_EQ(a.gpu->sharedBytes, b.gpu->sharedBytes);
      EXPECT_EQ(a.gpu->tensorMaps, b.gpu->tensorMaps);
      EXPECT_EQ(a.gpu->clusterCtas, b.gpu->clusterCtas);
      EXPECT_EQ(a.gpu->selectPoolEntry, b.gpu->selectPoolEntry);
      EXPECT_EQ(a.gpu->selectEntry, b.gpu->selectEntry);
      EXPECT_EQ(a.gpu->registers, b.gpu->registers);
    }
  }
  KernelInfo info = sampleInfo("k", "cpu");
  expectSameInfo(manifest::readKernelInfo(manifest::writeKernelInfo(info),
                                          "info"),
                 info);
}

TEST(Manifest, KeepsTheLayoutBundlesHaveAlwaysHad) {
  // One line, ", " and ": ", fields in the order attnc has always written
  // them (tests and people grep manifests for "block_threads": 384).
  std::string text = manifest::writeBundleManifest(sample());
  EXPECT_EQ(text.rfind("{" + kFormat +
                           ", \"compiler\": \"0.1.0+mlir22\", "
                           "\"source\": \"catalog.attn\", \"kernels\": "
                           "[{\"name\": \"window\", \"target\": \"cpu\", ",
                       0),
            0u)
      << text;
  EXPECT_EQ(text.find('\n'), std::string::npos);
  EXPECT_CONTAINS(text, "\"params\": [{\"name\": \"w\", \"type\": \"i32\", "
                        "\"default\": 8}, {\"name\": \"temp\", \"type\": "
                        "\"f32\", \"default\": 0.125}");
  // JSON has no infinities: they are strings, as is NaN.
  EXPECT_CONTAINS(text, "\"default\": \"inf\"}");
  EXPECT_CONTAINS(text, "\"default\": \"-inf\"}");
  EXPECT_CONTAINS(text, "\"default\": \"nan\"}");
  EXPECT_CONTAINS(text, "\"default\": null}");
  EXPECT_CONTAINS(text, "\"binary\": 0, \"entry\": \"attn_entry_window\", "
                        "\"block_map_entry\": \"attn_block_map_window\", "
                        "\"merge_entry\": \"attn_merge_window\"}");
  EXPECT_CONTAINS(text, "\"binary\": 1, \"ptx_binary\": 2, \"entry\": "
                        "\"attn_gpu_hopper\", \"block_threads\": 384, "
                        "\"rows_per_block\": 128, \"shared_bytes\": 200704, "
                        "\"tensor_maps\": true, \"cluster_ctas\": 2, "
                        "\"merge_entry\": "
                        "\"attn_gpu_merge_hopper\", \"select_pool_entry\": "
                        "\"attn_pool_hopper\", \"select_entry\": "
                        "\"attn_select_hopper\", \"registers\": 168}");
  EXPECT_CONTAINS(text, "\"binaries\": [{\"target\": \"cpu\", \"kind\": "
                        "\"elf-shared-object\", \"cpu\": \"x86-64-v3\", "
                        "\"cpu_features\": [\"avx2\", \"fma\"], \"size\": "
                        "16352, \"checksum\": \"424c5291032fcf54\", "
                        "\"offset\": 4096}, {\"target\": \"sm_90a\", "
                        "\"kind\": \"cubin\", \"size\": 9000, ");
}

TEST(Manifest, KernelInfoCarriesTheRowSumProperty) {
  // Written from the normalizer table for readers without it (attn_torch),
  // after "normalize"; a name the table lacks has no row sum.
  KernelInfo info = sampleInfo("k", "cpu");
  for (auto [name, rowSum] :
       {std::pair{"softmax", true}, {"softplus", true}, {"sigmoid", false},
        {"relu", false}, {"laplace", false}, {"from_the_future", false}}) {
    info.normalize = name;
    EXPECT_CONTAINS(manifest::writeKernelInfo(info),
                    "\"normalize\": \"" + std::string(name) +
                        "\", \"row_sum\": " + (rowSum ? "true" : "false"));
  }
  // Not read back: attnrt asks the table, so older bundles without the
  // field read the same and their info gets it.
  std::string text = manifest::writeKernelInfo(sampleInfo("k", "cpu"));
  std::string old = replaced(text, ", \"row_sum\": true", "");
  expectSameInfo(manifest::readKernelInfo(old, "old"),
                 manifest::readKernelInfo(text, "new"));
  EXPECT_EQ(manifest::writeKernelInfo(manifest::readKernelInfo(old, "old")),
            text);
}

TEST(Manifest, ReadsWhatEarlierWritersWrote) {
  // The writer before this one printed non-finite defaults as bare words
  // (not JSON), and fields added after format 1 may be absent.
  std::string text = manifest::writeBundleManifest(sample());
  for (auto [now, then] :
       {std::pair{"\"default\": \"inf\"}", "\"default\": inf}"},
        {"\"default\": \"-inf\"}", "\"default\": -inf}"},
        {"\"default\": \"nan\"}", "\"default\": -nan}"},
        {"\"default\": 8}", "\"default\": 8.0}"}})
    for (size_t at; (at = text.find(now)) != std::string::npos;)
      text.replace(at, std::strlen(now), then);
  for (const char *field :
       {", \"block_map\": true", ", \"select_rows_per_item\": 0",
        ", \"packed_heads\": true", ", \"split_kv\": 4",
        ", \"kv_dtype\": \"int8\"", ", \"kv_group\": 16",
        ", \"page_size\": 8", ", \"registers\": 0"}) {
    size_t at = text.find(field);
    ASSERT_NE(at, std::string::npos) << field;
    text.erase(at, std::strlen(field));
  }
  manifest::BundleManifest r = manifest::readBundleManifest(text, "old");
  const KernelInfo &cpu = r.kernels[0].info;
  EXPECT_FALSE(cpu.hasBlockMap);
  EXPECT_EQ(cpu.splitKv, 0);
  EXPECT_EQ(cpu.kvDtype, "same");
  EXPECT_EQ(cpu.params[0].defaultValue, 8.0);
  EXPECT_EQ(cpu.params[2].defaultValue, HUGE_VAL);
  EXPECT_EQ(cpu.params[3].defaultValue, -HUGE_VAL);
  EXPECT_TRUE(std::isnan(*cpu.params[4].defaultValue));
  EXPECT_FALSE(cpu.params[5].defaultValue);
}

TEST(Manifest, EveryTruncationIsAnError) {
  std::string text = manifest::writeBundleManifest(sample());
  for (size_t n = 0; n < text.size(); ++n) {
    std::string e = errorOf(std::string_view(text).substr(0, n));
    ASSERT_NE(e.find("'t.attnpkg': not valid JSON: "), std::string::npos)
        << n << ": " << e;
  }
  EXPECT_CONTAINS(errorOf(""), "not valid JSON: parse error at line 1, column 1");
}

TEST(Manifest, WrongTypesNameTheField) {
  std::string t = manifest::writeBundleManifest(sample());
  auto err = [&](const std::string &from, const std::string &to) {
    return errorOf(replaced(t, from, to));
  };
  EXPECT_CONTAINS(err(kFormat, "\"format\": \"2\""),
                  "manifest: 't.attnpkg': format: expected an integer from 1 "
                  "to 4294967295, got string \"2\"");
  EXPECT_CONTAINS(err("\"name\": \"window\"", "\"name\": 7"),
                  "kernels[0].name: expected a string, got number 7");
  EXPECT_CONTAINS(err("\"lse\": true", "\"lse\": 1"),
                  "kernels[0].lse: expected true or false, got number 1");
  EXPECT_CONTAINS(err("\"head_dim\": 128", "\"head_dim\": 128.5"),
                  "kernels[0].head_dim: expected an integer from 1 to "
                  "2147483647, got number 128.5");
  EXPECT_CONTAINS(err("\"default\": 0.125", "\"default\": [0.125]"),
                  "kernels[0].params[1].default: expected a number, null (no "
                  "default), \"inf\", \"-inf\" or \"nan\", got an array");
  EXPECT_CONTAINS(err("\"dims_rpn\": [\"Skv 64 /\"]}], \"binary\": 0",
                      "\"dims_rpn\": [\"Skv 64 /\", 3]}], \"binary\": 0"),
                  "kernels[0].captures[1].dims_rpn[1]: expected a string, got "
                  "number 3");
  EXPECT_CONTAINS(err("\"cpu_features\": [\"avx2\", \"fma\"]",
                      "\"cpu_features\": {\"avx2\": true}"),
                  "binaries[0].cpu_features: expected an array, got an object");
  EXPECT_CONTAINS(err("\"dtype\": \"f32\"", "\"dtype\": \"f64\""),
                  "kernels[0].dtype: unknown dtype \"f64\" (expected f32, "
                  "f16, bf16, i32, i8, f8e4m3 or f8e5m2)");
  EXPECT_CONTAINS(err("{\"name\": \"w\", \"type\": \"i32\"",
                      "{\"name\": \"w\", \"type\": \"bf16\""),
                  "kernels[0].params[0].type: expected i32 or f32, got bf16");
  EXPECT_CONTAINS(errorOf("[1, 2]"),
                  "'t.attnpkg': expected a JSON object, got an array");
  EXPECT_CONTAINS(errorOf("\"ATTNPKG1\""),
                  "'t.attnpkg': expected a JSON object, got string "
                  "\"ATTNPKG1\"");
}

TEST(Manifest, MissingFieldsAreNamed) {
  std::string t = manifest::writeBundleManifest(sample());
  // Renaming a member is removing it (unknown members are ignored).
  auto without = [&](const std::string &field) {
    std::string key = field.substr(0, field.find(':'));
    return errorOf(replaced(t, field, key.substr(0, key.size() - 1) + "_\"" +
                                          field.substr(key.size())));
  };
  EXPECT_CONTAINS(without(kFormat),
                  "'t.attnpkg': format: missing; expected an integer from 1 "
                  "to 4294967295");
  EXPECT_CONTAINS(without("\"binaries\": ["),
                  "binaries: missing; expected an array");
  EXPECT_CONTAINS(without("\"kernels\": ["),
                  "kernels: missing; expected an array");
  EXPECT_CONTAINS(without("\"entry\": \"attn_entry_window\""),
                  "kernels[0].entry: missing; expected a string");
  EXPECT_CONTAINS(without("\"block_threads\": 384"),
                  "kernels[1].block_threads: missing; expected an integer "
                  "from 1 to 2147483647");
  EXPECT_CONTAINS(without("\"ptx_binary\": 2"),
                  "kernels[1].ptx_binary: missing; expected an integer");
  EXPECT_CONTAINS(without("\"select_pool_entry\": \"attn_pool_hopper\""),
                  "kernels[1].select_pool_entry: missing; expected a string");
  EXPECT_CONTAINS(without("\"cpu\": \"x86-64-v3\""),
                  "binaries[0].cpu: missing; expected a string");
  EXPECT_CONTAINS(without("\"merge_entry\": \"attn_gpu_merge_mi300\""),
                  "kernels[2].merge_entry: missing; expected a string");
  EXPECT_CONTAINS(without("\"checksum\": \"424c5291032fcf54\""),
                  "binaries[0].checksum: missing; expected a string");
  EXPECT_CONTAINS(errorOf(replaced(t, "\"entry\": \"attn_entry_window\"",
                                   "\"entry\": \"\"")),
                  "kernels[0].entry: expected a non-empty string, got \"\"");
}

TEST(Manifest, HugeAndNegativeNumbersAreRefused) {
  std::string t = manifest::writeBundleManifest(sample());
  auto err = [&](const std::string &from, const std::string &to) {
    return errorOf(replaced(t, from, to));
  };
  auto withHeadDim = [&](const std::string &v) {
    return err("\"head_dim\": 128", "\"head_dim\": " + v);
  };
  EXPECT_CONTAINS(withHeadDim("2147483648"),
                  "kernels[0].head_dim: expected an integer from 1 to "
                  "2147483647, got number 2147483648");
  EXPECT_CONTAINS(withHeadDim("18446744073709551615"),
                  "got number 18446744073709551615");
  EXPECT_CONTAINS(withHeadDim("99999999999999999999999"),
                  "got number 9.9999999999999992e+22");
  // Past a double's range, the parser itself refuses.
  EXPECT_CONTAINS(withHeadDim("1e400"),
                  "not valid JSON: number overflow parsing '1e400'");
  EXPECT_CONTAINS(withHeadDim("0"), "got number 0");
  EXPECT_CONTAINS(withHeadDim("-64"), "got number -64");
  EXPECT_CONTAINS(err("\"offset\": 4096", "\"offset\": -1"),
                  "binaries[0].offset: expected a non-negative integer, got "
                  "number -1");
  EXPECT_CONTAINS(err("\"size\": 16352", "\"size\": 9223372036854775808"),
                  "binaries[0].size: expected a non-negative integer, got "
                  "number 9223372036854775808");
  EXPECT_CONTAINS(err("\"default\": 0.125", "\"default\": -1e999"),
                  "not valid JSON: number overflow parsing '-1e999'");
  EXPECT_CONTAINS(err("\"default\": 0.125", "\"default\": \"Infinity\""),
                  "kernels[0].params[1].default: expected a number, null (no "
                  "default), \"inf\", \"-inf\" or \"nan\", got string "
                  "\"Infinity\"");
  EXPECT_CONTAINS(err(kFormat, "\"format\": 4294967296"),
                  "format: expected an integer from 1 to 4294967295");
  // A huge string or array where a field is expected is reported without
  // quoting it whole.
  std::string longName(1 << 20, 'x');
  std::string e = err("\"name\": \"window\"", "\"name\": [\"" + longName +
                                                  "\"]");
  EXPECT_CONTAINS(e, "kernels[0].name: expected a string, got an array");
  e = err("\"head_dim\": 128", "\"head_dim\": \"" + longName + "\"");
  EXPECT_CONTAINS(e, "got string \"xxxxxxxx");
  EXPECT_LT(e.size(), 200u);
}

TEST(Manifest, DeepNestingIsRefused) {
  // Anywhere in the document, read or not.
  for (int depth : {65, 1000, 1000000}) {
    std::string deep = std::string(depth, '[') + std::string(depth, ']');
    EXPECT_CONTAINS(errorOf("{" + kFormat + ", \"x\": " + deep + "}"),
                    "'t.attnpkg': not a valid manifest: nested deeper than "
                    "64 levels");
    std::string objects;
    for (int i = 0; i < depth; ++i)
      objects += "{\"a\": ";
    objects += "0" + std::string(depth, '}');
    EXPECT_CONTAINS(errorOf(objects), "nested deeper than 64 levels");
  }
  // 64 levels are fine as far as nesting goes.
  std::string ok = std::string(63, '[') + std::string(63, ']');
  EXPECT_CONTAINS(errorOf("{\"x\": " + ok + "}"),
                  "format: missing; expected an integer");
}

TEST(Manifest, BytesThatAreNotUtf8AreRefused) {
  std::string t = manifest::writeBundleManifest(sample());
  std::string e = errorOf(replaced(t, "\"name\": \"window\"",
                                   "\"name\": \"win\xff\xfe\""));
  EXPECT_CONTAINS(e, "not valid JSON: ");
  EXPECT_CONTAINS(e, "ill-formed UTF-8");
  // The message quotes the input, with bytes that are not printable ASCII
  // escaped (it must itself be text: Python decodes it).
  EXPECT_CONTAINS(e, "\\xff");
  for (char c : e)
    EXPECT_TRUE(c >= 0x20 && c < 0x7f) << e;
  // Outside a string, and an overlong encoding of '"', and a NUL.
  EXPECT_CONTAINS(errorOf("{\"format\": \xc3\xa9}"), "not valid JSON");
  EXPECT_CONTAINS(errorOf(replaced(t, "\"source\": \"catalog.attn\"",
                                   "\"source\": \"a\xc0\xa2\"")),
                  "ill-formed UTF-8");
  EXPECT_CONTAINS(errorOf(replaced(t, "\"source\": \"catalog.attn\"",
                                   std::string("\"source\": \"a\0b\"", 15))),
                  "not valid JSON");
  // Escaped text is UTF-8 and reads; the writer replaces bytes that are not
  // UTF-8 (a source file's name) with U+FFFD rather than failing.
  manifest::BundleManifest m = sample();
  m.source = "caf\xc3\xa9\xff.attn";
  std::string written = manifest::writeBundleManifest(m);
  EXPECT_CONTAINS(written, "\"source\": \"caf\xc3\xa9\xef\xbf\xbd.attn\"");
  EXPECT_EQ(manifest::readBundleManifest(written, "t").source,
            "caf\xc3\xa9\xef\xbf\xbd.attn");
}

TEST(Manifest, ReferencesMustHoldTogether) {
  std::string t = manifest::writeBundleManifest(sample());
  auto err = [&](const std::string &from, const std::string &to) {
    return errorOf(replaced(t, from, to));
  };
  EXPECT_CONTAINS(err("\"binary\": 0", "\"binary\": 4"),
                  "kernels[0].binary: names payload 4, but the bundle has 4");
  EXPECT_CONTAINS(err("\"binary\": 0", "\"binary\": 1"),
                  "kernels[0].binary: payload 1 is code for 'sm_90a', but "
                  "the kernel's target is 'cpu'");
  EXPECT_CONTAINS(err("\"ptx_binary\": 2", "\"ptx_binary\": 3"),
                  "kernels[1].ptx_binary: payload 3 is code for 'gfx942', "
                  "but the kernel's target is 'sm_90a'");
  EXPECT_CONTAINS(err("\"name\": \"hopper\"", "\"name\": \"window\""),
                  "kernels[1].name: a second kernel named \"window\"");
  EXPECT_CONTAINS(err("{\"name\": \"temp\"", "{\"name\": \"w\""),
                  "kernels[0].params[1].name: \"w\" is listed twice");
  EXPECT_CONTAINS(err("\"dims_rpn\": [\"B\", \"Skv\"]",
                      "\"dims_rpn\": [\"B\"]"),
                  "kernels[0].captures[0].dims_rpn: expected 2 expressions "
                  "(one per entry of dims), got 1");
  EXPECT_CONTAINS(err("\"dims\": [\"Skv / 64\"], \"dims_rpn\": [\"Skv 64 /\"]",
                      "\"dims\": [], \"dims_rpn\": []"),
                  "kernels[0].captures[1].dims_rpn: expected one expression "
                  "per dimension, got none");
}

/// The sample with a second CPU binary, which kernels[0] falls back to.
manifest::BundleManifest sampleWithTwoCpus() {
  manifest::BundleManifest m = sample();
  manifest::BinaryEntry v2 = m.binaries[0];
  v2.cpu = "x86-64-v2";
  v2.cpuFeatures = {"sse4.2"};
  v2.offset = 111448;
  v2.checksum = "00000000000000aa";
  m.binaries.push_back(v2);
  m.kernels[0].fallbackBinaries = {4};
  return m;
}

TEST(Manifest, FallbackBinariesRoundTrip) {
  manifest::BundleManifest m = sampleWithTwoCpus();
  std::string text = manifest::writeBundleManifest(m);
  EXPECT_CONTAINS(text, "\"binary\": 0, \"fallback_binaries\": [4], ");
  manifest::BundleManifest r = manifest::readBundleManifest(text, "t");
  EXPECT_EQ(manifest::writeBundleManifest(r), text);
  EXPECT_EQ(r.kernels[0].fallbackBinaries, std::vector<int64_t>{4});
  EXPECT_TRUE(r.kernels[1].fallbackBinaries.empty());
  // Without fallbacks the member is not written: the layout of format 2.
  EXPECT_EQ(manifest::writeBundleManifest(sample()).find("fallback"),
            std::string::npos);
  // The loader's choice travels in the kernel info (attn_kernel_info_json).
  KernelInfo info = sampleInfo("k", "cpu");
  EXPECT_EQ(manifest::writeKernelInfo(info).find("\"cpu\":"),
            std::string::npos);
  info.cpu = "x86-64-v3";
  std::string json = manifest::writeKernelInfo(info);
  EXPECT_CONTAINS(json, "\"cpu\": \"x86-64-v3\"");
  expectSameInfo(manifest::readKernelInfo(json, "info"), info);
}

// TMA kernels of bundles before format 4 read unswizzled 16-byte boxes;
// this attnrt encodes swizzled ones, so it refuses them rather than
// launching them with maps they would misread.
TEST(Manifest, OlderTmaKernelsAreRefused) {
  std::string t = manifest::writeBundleManifest(sample());
  EXPECT_CONTAINS(errorOf(replaced(t, kFormat, "\"format\": 3")),
                  "kernels[1].tensor_maps: this TMA kernel was compiled by "
                  "an older attnc for unswizzled tiles (bundle format 3); "
                  "recompile it with this attnc");
  // Kernels without tensor maps still read from format 2 on.
  EXPECT_EQ(errorOf(replaced(replaced(t, kFormat, "\"format\": 2"),
                             "\"tensor_maps\": true",
                             "\"tensor_maps\": false")),
            "");
}

TEST(Manifest, FallbackBinariesMustHoldTogether) {
  std::string t = manifest::writeBundleManifest(sampleWithTwoCpus());
  auto err = [&](const std::string &from, const std::string &to) {
    return errorOf(replaced(t, from, to));
  };
  EXPECT_CONTAINS(err("\"fallback_binaries\": [4]",
                      "\"fallback_binaries\": [5]"),
                  "kernels[0].fallback_binaries[0]: names payload 5, but "
                  "the bundle has 5");
  EXPECT_CONTAINS(err("\"fallback_binaries\": [4]",
                      "\"fallback_binaries\": [1]"),
                  "kernels[0].fallback_binaries[0]: payload 1 is code for "
                  "'sm_90a', but the kernel's target is 'cpu'");
  EXPECT_CONTAINS(err("\"fallback_binaries\": [4]",
                      "\"fallback_binaries\": [4, 0]"),
                  "kernels[0].fallback_binaries[1]: names payload 0 a second "
                  "time for this kernel");
  EXPECT_CONTAINS(err("\"fallback_binaries\": [4]",
                      "\"fallback_binaries\": 4"),
                  "kernels[0].fallback_binaries: expected an array, got "
                  "number 4");
  EXPECT_CONTAINS(err(kFormat, "\"format\": 2"),
                  "kernels[0].fallback_binaries: fallback binaries need "
                  "bundle format 3, but the manifest says format 2");
  EXPECT_CONTAINS(err("\"ptx_binary\": 2",
                      "\"fallback_binaries\": [1], \"ptx_binary\": 2"),
                  "kernels[1].fallback_binaries: only CPU kernels have "
                  "fallback binaries");
}

TEST(Manifest, OnlyAttnErrorsEverLeaveTheReader) {
  // Deterministic mutations of a valid manifest: byte flips, deletions,
  // insertions of JSON's structural characters. Each either reads or
  // throws attn::Error("manifest"); gtest fails on anything else.
  std::string t = manifest::writeBundleManifest(sample());
  std::mt19937 rng(21);
  const std::string inserts = "{}[],:\"0-.e\\\xff\x00 ";
  int errors = 0;
  for (int i = 0; i < 3000; ++i) {
    std::string m = t;
    for (int edits = 1 + int(rng() % 3); edits > 0; --edits) {
      size_t at = rng() % m.size();
      switch (rng() % 3) {
      case 0: m[at] = char(rng()); break;
      case 1: m.erase(at, 1 + rng() % 8); break;
      default: m.insert(at, 1, inserts[rng() % inserts.size()]); break;
      }
    }
    errors += !errorOf(m).empty();
  }
  EXPECT_GT(errors, 2000);
}

//===----------------------------------------------------------------------===//
// JIT cache records
//===----------------------------------------------------------------------===//

TEST(Manifest, CacheRecordsRoundTrip) {
  manifest::CpuCacheRecord c;
  c.compiler = "0.1.0+mlir22";
  c.key = std::string(64, 'a');
  c.entry = "attn_entry_window";
  c.blockMapEntry = "attn_block_map_window";
  c.mergeEntry = "attn_merge_window";
  c.objectSize = 12345;
  c.objectChecksum = "0123456789abcdef";
  c.info = sampleInfo("window", "cpu");
  std::string text = manifest::writeCacheRecord(c);
  EXPECT_EQ(text.rfind("{\"format\": 1, \"compiler\": \"0.1.0+mlir22\", ", 0),
            0u);
  manifest::CpuCacheRecord rc = manifest::readCpuCacheRecord(text, "k.json");
  EXPECT_EQ(manifest::writeCacheRecord(rc), text);
  EXPECT_EQ(rc.objectSize, 12345);
  EXPECT_EQ(rc.blockMapEntry, c.blockMapEntry);
  expectSameInfo(rc.info, c.info);

  manifest::GpuCacheRecord g;
  g.compiler = c.compiler;
  g.key = c.key;
  g.code.chip = "sm_90a";
  g.code.entry = "attn_gpu_hopper";
  g.code.binary = "not written";
  g.code.ptx = "not written either";
  g.code.blockThreads = 384;
  g.code.rowsPerBlock = 128;
  g.code.sharedBytes = 200704;
  g.code.tensorMaps = true;
  g.code.blockKV = 32;
  g.code.clusterCtas = 2;
  g.code.mergeEntry = "attn_gpu_merge_hopper";
  g.code.selectPoolEntry = "attn_pool_hopper";
  g.code.selectEntry = "attn_select_hopper";
  g.binaryChecksum = "0000000000000001";
  g.ptxChecksum = "0000000000000002";
  g.info = sampleInfo("hopper", "sm_90a");
  text = manifest::writeCacheRecord(g);
  EXPECT_EQ(text.find("not written"), std::string::npos);
  manifest::GpuCacheRecord rg = manifest::readGpuCacheRecord(text, "k.json");
  EXPECT_EQ(manifest::writeCacheRecord(rg), text);
  EXPECT_EQ(rg.code.chip, "sm_90a");
  EXPECT_EQ(rg.code.blockKV, 32);
  EXPECT_EQ(rg.code.clusterCtas, 2);
  EXPECT_TRUE(rg.code.tensorMaps);
  EXPECT_EQ(rg.code.selectEntry, "attn_select_hopper");
  EXPECT_TRUE(rg.code.binary.empty());
  expectSameInfo(rg.info, g.info);

  // Backward kernels, and whether they take the param/capture gradient
  // buffers: records without the flag (older code) read as "no".
  g.code.backwardKvEntry = "attn_gpu_hopper_bwd_kv";
  g.code.backwardQEntry = "attn_gpu_hopper_bwd_q";
  g.code.backwardKvThreads = g.code.backwardQThreads = 64;
  g.code.backwardKvRows = g.code.backwardQRows = 64;
  g.code.backwardGradients = true;
  text = manifest::writeCacheRecord(g);
  rg = manifest::readGpuCacheRecord(text, "k.json");
  EXPECT_EQ(manifest::writeCacheRecord(rg), text);
  EXPECT_TRUE(rg.code.backwardGradients);
  const std::string flag = "\"backward_gradients\": true, ";
  size_t at = text.find(flag);
  ASSERT_NE(at, std::string::npos) << text;
  std::string older = text;
  older.erase(at, flag.size());
  rg = manifest::readGpuCacheRecord(older, "k.json");
  EXPECT_EQ(rg.code.backwardKvEntry, "attn_gpu_hopper_bwd_kv");
  EXPECT_FALSE(rg.code.backwardGradients);

  // A CPU record is not a GPU one, a newer format is named, and JSON that
  // is not a record says which field is wrong.
  try {
    manifest::readGpuCacheRecord(manifest::writeCacheRecord(c), "k.json");
    ADD_FAILURE();
  } catch (const Error &e) {
    EXPECT_CONTAINS(e.what(), "'k.json': chip: missing; expected a string");
  }
  try {
    manifest::readCpuCacheRecord(
        replaced(manifest::writeCacheRecord(c), "\"format\": 1",
                 "\"format\": 2"),
        "k.json");
    ADD_FAILURE();
  } catch (const Error &e) {
    EXPECT_CONTAINS(e.what(), "'k.json': format: this attnc reads cache "
                              "records of format 1, got 2");
  }
  EXPECT_THROW(manifest::readCpuCacheRecord("{ nonsense", "k.json"), Error);
}

//===----------------------------------------------------------------------===//
// Module::load
//===----------------------------------------------------------------------===//

std::string freshDir(const std::string &name) {
  fs::path dir = fs::path(::testing::TempDir()) / name;
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir.string();
}

/// A bundle file: the header (format `format`) and `manifest`, no payloads.
std::string writeRawBundle(const std::string &path,
                           const std::string &manifest,
                           uint32_t format = detail::kBundleFormat) {
  std::string bytes(detail::kBundleMagic, 8);
  uint32_t reserved = 0;
  uint64_t size = manifest.size();
  bytes.append(reinterpret_cast<const char *>(&format), 4);
  bytes.append(reinterpret_cast<const char *>(&reserved), 4);
  bytes.append(reinterpret_cast<const char *>(&size), 8);
  bytes += manifest;
  std::ofstream(path, std::ios::binary) << bytes;
  return path;
}

std::pair<std::string, std::string> loadError(const std::string &path) {
  try {
    Module::load(path);
  } catch (const Error &e) {
    return {e.argument(), e.what()};
  }
  return {"", ""};
}

TEST(Manifest, ModuleLoadReportsThePathAndTheField) {
  std::string dir = freshDir("manifest-load");
  const std::string empty = "{" + kFormat +
                            ", \"compiler\": \"x\", \"source\": \"y\", "
                            "\"kernels\": [], \"binaries\": []}";
  EXPECT_TRUE(
      Module::load(writeRawBundle(dir + "/empty.attnpkg", empty))
          .kernelNames()
          .empty());

  std::string path = writeRawBundle(
      dir + "/types.attnpkg", replaced(empty, "\"kernels\": []",
                                       "\"kernels\": {}"));
  auto [arg, what] = loadError(path);
  EXPECT_EQ(arg, "manifest");
  EXPECT_CONTAINS(what, "manifest: '" + path +
                            "': kernels: expected an array, got an object");

  // Junk behind a valid header is not JSON; a junk file is not a bundle.
  path = writeRawBundle(dir + "/junk.attnpkg", "\x7f" "ELF\x02\x01\x01");
  std::tie(arg, what) = loadError(path);
  EXPECT_EQ(arg, "manifest");
  EXPECT_CONTAINS(what, "'" + path + "': not valid JSON: ");
  std::ofstream(dir + "/text.attnpkg") << std::string(100, 'x');
  std::tie(arg, what) = loadError(dir + "/text.attnpkg");
  EXPECT_EQ(arg, "bundle");
  EXPECT_CONTAINS(what, "is not an attnc bundle (.attnpkg)");

  // The header and the manifest must agree on the format.
  path = writeRawBundle(dir + "/formats.attnpkg",
                        replaced(empty, kFormat, "\"format\": 7"));
  std::tie(arg, what) = loadError(path);
  EXPECT_EQ(arg, "bundle");
  EXPECT_CONTAINS(what, "is not a valid attnc bundle: its header says "
                        "format " +
                            std::to_string(detail::kBundleFormat) +
                            " and its manifest format 7");

  // A payload past the end of the file.
  manifest::BundleManifest m = sample();
  m.kernels.resize(1);
  m.binaries.resize(1);
  path = writeRawBundle(dir + "/short.attnpkg",
                        manifest::writeBundleManifest(m));
  std::tie(arg, what) = loadError(path);
  EXPECT_EQ(arg, "bundle");
  EXPECT_CONTAINS(what, "is truncated");
}

TEST(Manifest, ARealBundleReadsBackToTheSameText) {
  // What attnc compile writes, through the schema and back: nothing lost.
  std::string dir = freshDir("manifest-real");
  const char *source = R"(
variant window {
  param w: i32 = 8;
  param cap: f32 = inf;
  tensor bias: f32[Hq];
  score(s, b, h, q, kv) = min(s + bias[h], cap);
  mask(b, h, q, kv) = kv <= q && q - kv < w;
}
variant plain_relu { normalize = relu; }
)";
  Options o;
  o.headDim = 32;
  driver::writeBundle(driver::Source(source, "two.attn"), o, dir + "/two");
  std::ifstream in(dir + "/two.attnpkg", std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  std::string bytes = ss.str();
  uint64_t size;
  std::memcpy(&size, bytes.data() + 16, 8);
  std::string text = bytes.substr(24, size);
  manifest::BundleManifest m = manifest::readBundleManifest(text, "two");
  EXPECT_EQ(manifest::writeBundleManifest(m), text);
  EXPECT_CONTAINS(text, "{\"name\": \"cap\", \"type\": \"f32\", \"default\": "
                        "\"inf\"}");
  ASSERT_EQ(m.kernels.size(), 2u);
  EXPECT_EQ(m.kernels[0].info.name, "window");
  EXPECT_EQ(m.kernels[0].info.params.at(1).defaultValue, HUGE_VAL);
  EXPECT_FALSE(m.kernels[0].gpu);
  EXPECT_EQ(m.binaries.at(0).offset, int64_t(24 + size));
  Kernel k = Module::load(dir + "/two.attnpkg").kernel("window");
  EXPECT_EQ(k.info().params.at(1).defaultValue, HUGE_VAL);
}

} // namespace
