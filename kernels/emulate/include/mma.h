// Emulation stand-in for <mma.h>: cuda_emu.h, included before the module, defines
// what the module uses; this file is included inside the module's namespace
// and must stay empty.
