// Stand-in for the CUDA toolkit header of the same name when the backend's
// kernels are compiled for the CPU: emu.h declares what they use.
#pragma once
#include "../emu.h"
