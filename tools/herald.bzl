"""One macro for every shared library herald_tf builds (TFRA keeps one macro per op library)."""

def herald_shared_library(name, srcs = [], hdrs = [], deps = [], tensorflow = False):
    """A linkshared cc_binary; with tensorflow=True it compiles against and links the pip TF.

    Args:
      name: output file name (e.g. "_herald_ops.so").
      srcs: C++ sources.
      hdrs: headers of srcs.
      deps: cc_library dependencies.
      tensorflow: whether the sources include TensorFlow headers.
    """
    extra_deps = ["@local_tensorflow//:framework"] if tensorflow else []
    native.cc_binary(
        name = name,
        srcs = srcs + hdrs,
        deps = deps + extra_deps,
        linkshared = 1,
        copts = ["-DEIGEN_MAX_ALIGN_BYTES=64", "-D_GLIBCXX_USE_CXX11_ABI=1", "-Wno-deprecated-declarations"] if tensorflow else [],
        linkopts = ["-Wl,-rpath,$$ORIGIN/../../tensorflow", "-Wl,-soname," + name] if tensorflow else ["-Wl,-soname," + name],
    )
