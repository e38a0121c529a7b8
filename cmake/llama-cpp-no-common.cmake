# Read by llama.cpp's CMake right after its project() call (CMAKE_PROJECT_llama.cpp_INCLUDE, README's
# second command). llama-cpp-python forces LLAMA_BUILD_COMMON on, but its bindings load only libllama
# and libggml: the common library and its HTTP client are half of the build's compile time.
set(LLAMA_BUILD_COMMON OFF)
