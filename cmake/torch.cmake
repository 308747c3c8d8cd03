# The torch that fusedrnn is compiled against: the one of the Python running the build.
#
# Included by CMakeLists.txt after find_package(Python). One Python run asks torch and pybind11
# for everything the build needs; if that Python cannot import them (pip's build isolation, or a
# fresh environment) the configure step stops at once saying what to run. Then decides CUDA:
#  - FUSEDRNN_CUDA=1 in the environment (or -DFUSEDRNN_CUDA=ON): CUDA kernels, or a clear error
#    when torch has no CUDA or nvcc is missing / of another CUDA major version than torch's;
#  - FUSEDRNN_CUDA=0 (or -DFUSEDRNN_CUDA=OFF): CPU only, whatever torch and the machine have;
#  - unset: CUDA when torch has CUDA and a matching nvcc is found (nvcc alone never turns it
#    on); a torch with CUDA but no usable nvcc gives a CPU-only build and a warning.
# Outputs: FUSEDRNN_TORCH_VERSION, FUSEDRNN_TORCH_CUDA ("" for a CPU torch), FUSEDRNN_CUDA,
# the `torch` target (TORCH_LIBRARIES), FUSEDRNN_TORCH_PYTHON (libtorch_python) and pybind11 on
# CMAKE_PREFIX_PATH.

execute_process(
  COMMAND "${Python_EXECUTABLE}" -c [=[
import os, torch, pybind11
print(";".join([torch.__version__, torch.version.cuda or "", os.path.dirname(torch.__file__),
                torch.utils.cmake_prefix_path, pybind11.get_cmake_dir(),
                str(int(torch._C._GLIBCXX_USE_CXX11_ABI))]))
]=]
  OUTPUT_VARIABLE _torch_info ERROR_VARIABLE _torch_err RESULT_VARIABLE _torch_rc
  OUTPUT_STRIP_TRAILING_WHITESPACE)
if(NOT _torch_rc EQUAL 0)
  string(REGEX MATCH "[^\n]+\n?$" _torch_err_last "${_torch_err}")
  message(FATAL_ERROR
    "fusedrnn is compiled against the torch of the Python running this build "
    "(${Python_EXECUTABLE}), which cannot import torch and pybind11:\n  ${_torch_err_last}\n"
    "Under pip's build isolation that Python never sees your torch. Install torch in your "
    "environment, then build without isolation:\n"
    "    pip install scikit-build-core pybind11 ninja cmake\n"
    "    pip install --no-build-isolation ${CMAKE_SOURCE_DIR}\n")
endif()
list(GET _torch_info 0 FUSEDRNN_TORCH_VERSION)
list(GET _torch_info 1 FUSEDRNN_TORCH_CUDA)
list(GET _torch_info 2 _torch_dir)
list(GET _torch_info 3 _torch_cmake_prefix)
list(GET _torch_info 4 _pybind11_dir)
list(GET _torch_info 5 _torch_cxx11_abi)
list(APPEND CMAKE_PREFIX_PATH "${_torch_cmake_prefix}" "${_pybind11_dir}")
message(STATUS "fusedrnn: torch ${FUSEDRNN_TORCH_VERSION} (CUDA: ${FUSEDRNN_TORCH_CUDA}) at ${_torch_dir}")

# ---- CUDA on or off ---------------------------------------------------------------------------
# The environment wins over a cached -DFUSEDRNN_CUDA, so FUSEDRNN_CUDA=1 pip install ... always
# does what it says, even in a build folder configured before.
set(_cuda_asked "")
if(DEFINED ENV{FUSEDRNN_CUDA} AND NOT "$ENV{FUSEDRNN_CUDA}" STREQUAL "")
  set(_cuda_asked "$ENV{FUSEDRNN_CUDA}")
elseif(DEFINED FUSEDRNN_CUDA)
  set(_cuda_asked "${FUSEDRNN_CUDA}")
endif()
string(TOUPPER "${_cuda_asked}" _cuda_asked)
if(NOT _cuda_asked MATCHES "^(|0|1|ON|OFF|TRUE|FALSE|YES|NO)$")
  message(FATAL_ERROR "fusedrnn: FUSEDRNN_CUDA must be 1 (build the CUDA kernels), 0 (CPU only) "
                      "or unset (CUDA when torch has CUDA and nvcc is found); got '${_cuda_asked}'")
endif()

function(_fusedrnn_find_nvcc out_path out_version)
  set(_nvcc "")
  if(DEFINED ENV{CUDACXX} AND EXISTS "$ENV{CUDACXX}")
    set(_nvcc "$ENV{CUDACXX}")
  else()
    find_program(_fusedrnn_nvcc nvcc HINTS "$ENV{CUDA_HOME}/bin" /usr/local/cuda/bin)
    if(_fusedrnn_nvcc)
      set(_nvcc "${_fusedrnn_nvcc}")
    endif()
  endif()
  set(_ver "")
  if(_nvcc)
    execute_process(COMMAND "${_nvcc}" --version OUTPUT_VARIABLE _out ERROR_QUIET)
    string(REGEX MATCH "release ([0-9]+\\.[0-9]+)" _m "${_out}")
    set(_ver "${CMAKE_MATCH_1}")
  endif()
  set(${out_path} "${_nvcc}" PARENT_SCOPE)
  set(${out_version} "${_ver}" PARENT_SCOPE)
endfunction()

# Why CUDA cannot be built with this torch and this machine, or "" when it can.
set(_cuda_blocker "")
if(NOT FUSEDRNN_TORCH_CUDA)
  set(_cuda_blocker "torch ${FUSEDRNN_TORCH_VERSION} has no CUDA")
else()
  _fusedrnn_find_nvcc(_nvcc _nvcc_version)
  string(REGEX MATCH "^[0-9]+" _torch_cuda_major "${FUSEDRNN_TORCH_CUDA}")
  string(REGEX MATCH "^[0-9]+" _nvcc_major "${_nvcc_version}")
  if(NOT _nvcc)
    set(_cuda_blocker "no nvcc found (set CUDA_HOME or CUDACXX)")
  elseif(NOT _nvcc_major STREQUAL _torch_cuda_major)
    set(_cuda_blocker
        "${_nvcc} is CUDA ${_nvcc_version} but torch was built with CUDA ${FUSEDRNN_TORCH_CUDA}")
  endif()
endif()

if(_cuda_asked STREQUAL "")
  if(_cuda_blocker STREQUAL "")
    message(STATUS "fusedrnn: torch has CUDA ${FUSEDRNN_TORCH_CUDA} and nvcc is ${_nvcc}: CUDA on")
    set(_cuda_on ON)
  else()
    if(FUSEDRNN_TORCH_CUDA)
      message(WARNING "fusedrnn: building the CPU kernels only: ${_cuda_blocker}. "
                      "FUSEDRNN_CUDA=0 silences this; FUSEDRNN_CUDA=1 makes it an error.")
    endif()
    set(_cuda_on OFF)
  endif()
elseif(_cuda_asked)
  if(NOT _cuda_blocker STREQUAL "")
    message(FATAL_ERROR "fusedrnn: FUSEDRNN_CUDA=${_cuda_asked} asks for the CUDA kernels, but "
                        "${_cuda_blocker}.")
  endif()
  set(_cuda_on ON)
else()
  set(_cuda_on OFF)
endif()
# A normal variable: the cache keeps only what the user passed with -D.
set(FUSEDRNN_CUDA ${_cuda_on})

# ---- the torch target -------------------------------------------------------------------------
if(NOT FUSEDRNN_CUDA)
  # Not torch's CMake config: for a torch built with CUDA it requires the CUDA toolkit and its
  # libraries even when nothing here uses them ("Caffe2 uses CUDA but cannot find the CUDA
  # libraries"), so the default (CUDA) torch wheels could not get a CPU-only build. The CPU
  # extension needs only the headers and c10 / torch_cpu / torch (what cpp_extension links).
  add_library(torch INTERFACE IMPORTED)
  target_include_directories(torch SYSTEM INTERFACE
    "${_torch_dir}/include" "${_torch_dir}/include/torch/csrc/api/include")
  target_compile_definitions(torch INTERFACE _GLIBCXX_USE_CXX11_ABI=${_torch_cxx11_abi})
  foreach(_lib c10 torch_cpu torch)
    find_library(FUSEDRNN_LIB_${_lib} ${_lib} PATHS "${_torch_dir}/lib" NO_DEFAULT_PATH REQUIRED)
    target_link_libraries(torch INTERFACE "${FUSEDRNN_LIB_${_lib}}")
  endforeach()
  set(TORCH_LIBRARIES torch)
endif()
# The Python half of libtorch (tensors to and from Python objects), CPU and CUDA builds alike.
find_library(FUSEDRNN_TORCH_PYTHON torch_python PATHS "${_torch_dir}/lib" NO_DEFAULT_PATH
             REQUIRED)
