# Read by llama.cpp's CMake right after its project() call (CMAKE_PROJECT_llama.cpp_INCLUDE, README's
# second command).

# llama-cpp-python forces LLAMA_BUILD_COMMON on, but its bindings load only libllama and libggml: the
# common library and its HTTP client are half of the build's compile time.
set(LLAMA_BUILD_COMMON OFF)

# A native build on an AMX CPU (Sapphire Rapids and later) repacks the quantised weights for AMX tiles,
# and this llama.cpp's AMX matmul crashes on the first decode (ALB-298, ggml-org/llama.cpp#20824).
# Undefining the compiler's macro leaves the AMX code out and keeps every other native instruction;
# the order of the flags does not matter, as a command-line -U acts after the predefined macros.
string(APPEND CMAKE_C_FLAGS " -U__AMX_INT8__")
string(APPEND CMAKE_CXX_FLAGS " -U__AMX_INT8__")
