# -*- Python -*-
import os
import lit.formats

config.name = "attnc"
config.test_format = lit.formats.ShTest(execute_external=False)
config.suffixes = [".mlir", ".attn", ".test"]
config.excludes = ["Inputs", "CMakeLists.txt", "lit.cfg.py", "lit.site.cfg.py"]
config.test_source_root = os.path.dirname(__file__)
config.test_exec_root = os.path.join(config.attn_obj_root, "test")
config.environment["FILECHECK_OPTS"] = "--enable-var-scope"
config.environment["ATTN_NUM_THREADS"] = "2"
# Keep the JIT's disk cache inside the build tree.
config.environment["ATTNC_CACHE_DIR"] = os.environ.get(
    "ATTNC_CACHE_DIR", os.path.join(config.attn_obj_root, "test", "jit-cache"))
config.substitutions.append(("%examples", os.path.join(config.attn_src_root, "examples")))
config.substitutions.append(("%inputs", os.path.join(config.test_source_root, "Inputs")))
path = os.path.pathsep.join([config.attn_tools_dir, config.llvm_tools_dir,
                             config.environment.get("PATH", "")])
config.environment["PATH"] = path
