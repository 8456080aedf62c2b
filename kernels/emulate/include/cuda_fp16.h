// Emulation stand-in for <cuda_fp16.h>: cuda_emu.h, included before the module, defines
// what the module uses; this file is included inside the module's namespace
// and must stay empty.
