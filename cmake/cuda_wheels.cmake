# CUDA toolkit + the CUDA libraries that a pip torch wheel ships (site-packages/nvidia/*).
#
# Included by CMakeLists.txt when FUSEDRNN_CUDA is on, before enable_language(CUDA) and
# find_package(Torch). A machine may have nvcc (a toolkit without cuBLAS/cuSPARSE/cuSOLVER/
# nvrtc) while the libraries torch's CUDA headers and CMake config need come with the wheel's
# nvidia-* packages. This file:
#  - points CMake at the toolkit (CUDA_HOME, else /usr/local/cuda) when nvcc is a wrapper,
#  - exposes the wheel headers that the toolkit lacks through a symlink folder in the build
#    tree (only missing headers, so the toolkit's own headers always win),
#  - resolves CUDA_nvrtc_LIBRARY (named by torch's config) from the wheel when absent.
# Output: FUSEDRNN_CUDA_EXTRA_INCLUDE (a folder to add as a SYSTEM include of the target) and
# FUSEDRNN_CUBLAS_LIBRARY (to link).

if(NOT DEFINED CUDA_TOOLKIT_ROOT_DIR)
  if(DEFINED ENV{CUDA_HOME} AND EXISTS "$ENV{CUDA_HOME}/bin/nvcc")
    set(CUDA_TOOLKIT_ROOT_DIR "$ENV{CUDA_HOME}")
  elseif(EXISTS "/usr/local/cuda/bin/nvcc")
    set(CUDA_TOOLKIT_ROOT_DIR "/usr/local/cuda")
  endif()
endif()
if(DEFINED CUDA_TOOLKIT_ROOT_DIR AND NOT DEFINED CMAKE_CUDA_COMPILER AND NOT DEFINED ENV{CUDACXX})
  set(CMAKE_CUDA_COMPILER "${CUDA_TOOLKIT_ROOT_DIR}/bin/nvcc")
endif()
message(STATUS "fusedrnn: CUDA toolkit root ${CUDA_TOOLKIT_ROOT_DIR}")

execute_process(
  COMMAND "${Python_EXECUTABLE}" -c
          "import glob, os, torch; s = os.path.dirname(os.path.dirname(torch.__file__)); print(';'.join(sorted(glob.glob(os.path.join(s, 'nvidia', '*')))))"
  OUTPUT_VARIABLE _wheel_roots OUTPUT_STRIP_TRAILING_WHITESPACE)

set(FUSEDRNN_CUDA_EXTRA_INCLUDE "${CMAKE_BINARY_DIR}/cuda-wheel-include")
file(MAKE_DIRECTORY "${FUSEDRNN_CUDA_EXTRA_INCLUDE}")
set(_wheel_libdirs "")
set(_linked 0)
foreach(_root IN LISTS _wheel_roots)
  if(EXISTS "${_root}/lib")
    list(APPEND _wheel_libdirs "${_root}/lib")
  endif()
  if(NOT EXISTS "${_root}/include")
    continue()
  endif()
  file(GLOB _entries RELATIVE "${_root}/include" "${_root}/include/*")
  foreach(_e IN LISTS _entries)
    if(NOT EXISTS "${CUDA_TOOLKIT_ROOT_DIR}/include/${_e}" AND NOT EXISTS "${FUSEDRNN_CUDA_EXTRA_INCLUDE}/${_e}")
      file(CREATE_LINK "${_root}/include/${_e}" "${FUSEDRNN_CUDA_EXTRA_INCLUDE}/${_e}" SYMBOLIC)
      math(EXPR _linked "${_linked} + 1")
    endif()
  endforeach()
endforeach()
message(STATUS "fusedrnn: ${_linked} CUDA wheel headers linked into ${FUSEDRNN_CUDA_EXTRA_INCLUDE}")

if(NOT CUDA_nvrtc_LIBRARY)
  find_library(CUDA_nvrtc_LIBRARY NAMES nvrtc libnvrtc.so.13 libnvrtc.so.12
               HINTS "${CUDA_TOOLKIT_ROOT_DIR}/lib64" ${_wheel_libdirs})
endif()

# cuBLAS: the CUDA backend calls it directly on torch's handle (libtorch_cuda does not export
# at::cuda::blas::gemm). At run time torch has already loaded the same libcublas.
find_library(FUSEDRNN_CUBLAS_LIBRARY NAMES cublas libcublas.so.13 libcublas.so.12
             HINTS "${CUDA_TOOLKIT_ROOT_DIR}/lib64" ${_wheel_libdirs} REQUIRED)
message(STATUS "fusedrnn: cuBLAS ${FUSEDRNN_CUBLAS_LIBRARY}")
