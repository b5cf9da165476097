# RANKMESH_CUDA=AUTO|ON|OFF -> RANKMESH_HAVE_CUDA: whether the CUDA backend (lib/cuda), the GPU
# tests and the CUDA parts of the examples are built. A fresh Debian machine has no toolkit
# (AUTO then builds without them); these machines carry one at /usr/local/cuda.
set(RANKMESH_HAVE_CUDA OFF)
if(NOT RANKMESH_CUDA STREQUAL "OFF")
  if(NOT DEFINED CMAKE_CUDA_COMPILER AND NOT DEFINED ENV{CUDACXX} AND EXISTS /usr/local/cuda/bin/nvcc)
    set(CMAKE_CUDA_COMPILER /usr/local/cuda/bin/nvcc)
  endif()
  include(CheckLanguage)
  check_language(CUDA)
  if(CMAKE_CUDA_COMPILER)
    # Hopper (the H200 of the GPU host): sm_90 code plus compute_90 PTX for newer chips.
    if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
      set(CMAKE_CUDA_ARCHITECTURES 90)
    endif()
    set(CMAKE_CUDA_STANDARD 17)  # CMake 3.25 knows no CUDA 20 dialect for nvcc; kernels need none
    set(CMAKE_CUDA_STANDARD_REQUIRED ON)
    # Targets name the runtime themselves (CUDA::cudart_static): CMake's implicit
    # -lcudart_static would reach the C++ linker of mixed targets without the toolkit's path.
    set(CMAKE_CUDA_RUNTIME_LIBRARY None)
    enable_language(CUDA)
    find_package(CUDAToolkit)
  endif()
  if(CMAKE_CUDA_COMPILER AND CUDAToolkit_FOUND)
    set(RANKMESH_HAVE_CUDA ON)
    message(STATUS "rankmesh: CUDA backend on (${CMAKE_CUDA_COMPILER}, CUDA ${CUDAToolkit_VERSION}, architectures ${CMAKE_CUDA_ARCHITECTURES})")
  elseif(RANKMESH_CUDA STREQUAL "ON")
    message(FATAL_ERROR "RANKMESH_CUDA=ON, but no CUDA toolkit was found (set CUDACXX or CMAKE_CUDA_COMPILER)")
  else()
    message(STATUS "rankmesh: CUDA backend off (no CUDA toolkit found)")
  endif()
else()
  message(STATUS "rankmesh: CUDA backend off (RANKMESH_CUDA=OFF)")
endif()
