// Package cuda drives NVIDIA GPUs through the CUDA driver API
// (libcuda.so.1, which every NVIDIA driver installs), loaded at run time
// with purego: no cgo, no CUDA toolkit, cuBLAS or runtime library on the
// user's machine. Kernels are PTX (see package cuda/ptx), compiled by the
// driver for the GPU at hand when a module is loaded.
//
// Loading a shared library needs the system's dynamic loader, so a binary
// that imports this package is linked dynamically against the C library
// (still without cgo). streamguard's default build does not import it and
// stays fully static; the `cuda` build tag adds the GPU backend.
//
// A CUDA context is current per OS thread, while goroutines move between
// threads: every call here locks its goroutine to its thread and makes the
// context current for the duration of the call.
package cuda
