// What the generated registration code (build.rs) records per kernel: how to
// call it with a CUDA-style argument array (`void** args`, one pointer per
// parameter, as cuLaunchKernel takes them), and each parameter's size, which a
// launch is checked against.
#pragma once

#include <atomic>
#include <cstddef>
#include <type_traits>
#include <utility>

namespace amp_emu {

struct KernelInfo {
    const char* module;
    const char* name;
    void (*invoke)(void** args);
    const size_t* arg_sizes;
    size_t nargs;
    unsigned launch_bound;  // __launch_bounds__, 0 when none
    std::atomic<unsigned long long> launches{0};
};

void register_kernel(KernelInfo* k);

template <typename F>
struct Params;
template <typename... A>
struct Params<void (*)(A...)> {
    static constexpr size_t count = sizeof...(A);
    // One entry even for a kernel without parameters (no zero-length arrays).
    static constexpr size_t sizes[sizeof...(A) + 1] = {sizeof(std::decay_t<A>)..., 0};

    template <void (*F)(A...), size_t... I>
    static void call(void** args, std::index_sequence<I...>) {
        F(*static_cast<std::decay_t<A>*>(args[I])...);
    }
    template <void (*F)(A...)>
    static void invoke(void** args) {
        call<F>(args, std::index_sequence_for<A...>{});
    }
};

}  // namespace amp_emu

// One KernelInfo per kernel, registered by the module's registration function.
#define AMP_EMU_KERNEL(module, ns, fn, bound)                                                  \
    {                                                                                          \
        using P = ::amp_emu::Params<decltype(&ns::fn)>;                                        \
        static ::amp_emu::KernelInfo info{module, #fn, &P::invoke<&ns::fn>, P::sizes, P::count, \
                                          bound};                                              \
        ::amp_emu::register_kernel(&info);                                                     \
    }
