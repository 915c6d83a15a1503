// The interface between the stand-in driver (fakecuda.cc) and the CUDA
// sources compiled for the CPU (source.cc), for builds with -DSTANDIN_SOURCE.
#pragma once
#include <cstddef>
#include <vector>

struct SourceKernel {
	const char *name;
	std::vector<size_t> sizes; // the signature's parameter sizes
	void (*run)(void **params, const unsigned grid[3], const unsigned block[3]);
};

// sourceKernel returns the kernel of the CUDA sources named name, or null.
const SourceKernel *sourceKernel(const char *name);
