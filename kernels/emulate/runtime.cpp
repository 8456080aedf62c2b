// The emulator's runtime: a kernel registry, device memory with guard pages,
// and a launch that runs every CUDA thread of a block as a coroutine on the
// calling OS thread, with real barriers and warp collectives. Exposed to Rust
// through the C functions at the end (kernels/src/emulate.rs).
#include <signal.h>
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <csetjmp>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "cuda_emu.h"
#include "registry.h"

thread_local uint3 threadIdx;
thread_local uint3 blockIdx;
thread_local dim3 blockDim;
thread_local dim3 gridDim;

namespace amp_emu {
namespace {

// ---- device memory ----------------------------------------------------------------------
// Each allocation gets its own pages: an inaccessible page before and after,
// and the buffer placed so that its 256-byte-rounded end touches the page
// after (cudaMalloc aligns to 256 bytes). A kernel that runs past the rounded
// end faults at once (reported as an illegal address, like the device's
// CUDA_ERROR_ILLEGAL_ADDRESS); the slack between the requested size and the
// rounded end holds a canary that is checked after every launch. New memory
// is filled with 0xff bytes, a NaN in f32, f16 and bf16, so an element a
// kernel forgets to write shows up in the results.

constexpr size_t kAlign = 256;
constexpr unsigned char kCanary = 0xa5;

struct Alloc {
    uintptr_t base;   // the first mapped byte (a guard page)
    size_t mapped;    // bytes mapped, guards included
    size_t bytes;     // as requested
    size_t rounded;   // bytes rounded up to kAlign
};

std::mutex g_mem_mutex;
std::map<uintptr_t, Alloc> g_allocs;  // by device address

size_t page_size() {
    static const size_t p = (size_t)sysconf(_SC_PAGESIZE);
    return p;
}

std::string format(const char* fmt, ...) {
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    return buf;
}

// The allocation holding [p, p + n) (n may be 0), if any. Caller holds the lock.
const Alloc* find_alloc(uintptr_t p, size_t n, uintptr_t* start) {
    auto it = g_allocs.upper_bound(p);
    if (it == g_allocs.begin()) return nullptr;
    --it;
    const uintptr_t s = it->first;
    if (p < s || p + n > s + it->second.bytes || p + n < p) return nullptr;
    *start = s;
    return &it->second;
}

// Where `p` lies relative to the allocations, for error messages.
std::string describe_address(uintptr_t p) {
    std::lock_guard<std::mutex> lock(g_mem_mutex);
    std::string best = "not near any device allocation";
    for (const auto& [start, a] : g_allocs) {
        if (p >= a.base && p < a.base + a.mapped) {
            if (p < start)
                return format("%zu bytes before a %zu-byte allocation at 0x%zx", start - p,
                              a.bytes, (size_t)start);
            return format("byte %zu of a %zu-byte allocation at 0x%zx (%zu past its end)",
                          p - start, a.bytes, (size_t)start, p - start - a.bytes);
        }
    }
    return best;
}

// Canary damage anywhere: the first damaged allocation, described.
std::string check_canaries() {
    std::lock_guard<std::mutex> lock(g_mem_mutex);
    for (const auto& [start, a] : g_allocs) {
        const unsigned char* slack = reinterpret_cast<const unsigned char*>(start + a.bytes);
        for (size_t i = 0; i < a.rounded - a.bytes; ++i)
            if (slack[i] != kCanary)
                return format("a kernel wrote %zu bytes past the end of a %zu-byte allocation at 0x%zx",
                              i + 1, a.bytes, (size_t)start);
    }
    return "";
}

// ---- kernels -----------------------------------------------------------------------------

std::vector<KernelInfo*>& registry() {
    static std::vector<KernelInfo*> r;
    return r;
}

KernelInfo* find_kernel(const char* name) {
    for (KernelInfo* k : registry())
        if (std::strcmp(k->name, name) == 0) return k;
    return nullptr;
}

// Every kernel launched in this process is appended once to the file named by
// AMP_EMU_COVERAGE (one name per line), so a run of several test binaries can
// be checked for a kernel nothing launched.
void note_coverage(KernelInfo* k) {
    if (k->launches.fetch_add(1) != 0) return;
    static std::mutex m;
    const char* path = std::getenv("AMP_EMU_COVERAGE");
    if (!path || !*path) return;
    std::lock_guard<std::mutex> lock(m);
    if (FILE* f = std::fopen(path, "a")) {
        std::fprintf(f, "%s %s\n", k->module, k->name);
        std::fclose(f);
    }
}

// ---- context switching -----------------------------------------------------------------
// A switch saves the callee-saved registers and the floating-point control
// words on the current stack and loads another stack's: on x86-64 a few
// instructions (glibc's swapcontext also makes a system call each time);
// elsewhere ucontext.

#if defined(__x86_64__)
extern "C" void amp_emu_switch(void** save_sp, void* new_sp);
extern "C" void amp_emu_trampoline();
asm(R"(
    .text
    .globl amp_emu_switch
    .type amp_emu_switch, @function
amp_emu_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    subq $8, %rsp
    stmxcsr (%rsp)
    fnstcw 4(%rsp)
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    ldmxcsr (%rsp)
    fldcw 4(%rsp)
    addq $8, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size amp_emu_switch, .-amp_emu_switch

    .globl amp_emu_trampoline
    .type amp_emu_trampoline, @function
amp_emu_trampoline:
    movq %r12, %rdi
    callq *%r13
    ud2
    .size amp_emu_trampoline, .-amp_emu_trampoline
    .section .note.GNU-stack,"",@progbits
    .text
)");

struct Ctx {
    void* sp = nullptr;
};

// A context that starts by calling fn(arg) on `stack`.
void ctx_init(Ctx& c, char* stack, size_t size, void (*fn)(void*), void* arg) {
    const uintptr_t top = (reinterpret_cast<uintptr_t>(stack) + size) & ~uintptr_t(15);
    uint64_t* sp = reinterpret_cast<uint64_t*>(top - 80);
    uint32_t mxcsr;
    uint16_t fpucw;
    asm volatile("stmxcsr %0" : "=m"(mxcsr));
    asm volatile("fnstcw %0" : "=m"(fpucw));
    sp[0] = mxcsr | (uint64_t(fpucw) << 32);
    sp[1] = 0;                                       // r15
    sp[2] = 0;                                       // r14
    sp[3] = reinterpret_cast<uint64_t>(fn);          // r13: what the trampoline calls
    sp[4] = reinterpret_cast<uint64_t>(arg);         // r12: its argument
    sp[5] = 0;                                       // rbx
    sp[6] = 0;                                       // rbp
    sp[7] = reinterpret_cast<uint64_t>(&amp_emu_trampoline);  // returned to
    c.sp = sp;
}

inline void ctx_switch(Ctx& from, Ctx& to) { amp_emu_switch(&from.sp, to.sp); }
#else
struct Ctx {
    ucontext_t uc;
};

thread_local void (*t_entry)(void*);
thread_local void* t_entry_arg;
void ctx_entry() { t_entry(t_entry_arg); }

void ctx_init(Ctx& c, char* stack, size_t size, void (*fn)(void*), void* arg) {
    getcontext(&c.uc);
    c.uc.uc_stack.ss_sp = stack;
    c.uc.uc_stack.ss_size = size;
    c.uc.uc_link = nullptr;
    // Only one context is being started at a time on an OS thread.
    t_entry = fn;
    t_entry_arg = arg;
    makecontext(&c.uc, ctx_entry, 0);
}

inline void ctx_switch(Ctx& from, Ctx& to) { swapcontext(&from.uc, &to.uc); }
#endif

// ---- the block scheduler -----------------------------------------------------------------
// Fibers run in order until they block; a barrier or collective that
// completes makes its waiters runnable again (in arrival order). Nothing is
// resumed that cannot progress, so a block costs two switches per thread
// and per synchronisation point.

constexpr size_t kStack = 64 * 1024;

enum class State { Runnable, AtBarrier, AtWarp, Done };

struct Fiber {
    Ctx ctx;
    uint3 tid;
    unsigned linear;
    State state;
    unsigned parity;  // which exchange buffer the next warp collective uses
};

struct WarpState {
    unsigned exists;   // lanes that exist (a partial last warp has fewer)
    unsigned live;     // lanes that have not exited
    unsigned arrived;  // lanes waiting in the current collective
    unsigned mask;     // that collective's mask
    unsigned waiters[32];
    unsigned nwaiters;
    uint64_t slots[2][32];
};

struct LaunchState {
    KernelInfo* kernel;
    void** args;
    std::vector<Fiber> fibers;
    std::vector<unsigned> runq;
    size_t runq_head;
    std::vector<unsigned> bar_waiters;
    WarpState warps[32];
    unsigned live;
    std::string error;
    Fiber* current;
    Ctx sched;
    sigjmp_buf fault_jmp;
    volatile uintptr_t fault_addr;
};

thread_local LaunchState* t_launch = nullptr;

// Stacks for the fibers of one block, kept per OS thread and reused: each has
// an inaccessible page below it, so an overflow faults rather than corrupting
// its neighbour.
struct StackPool {
    std::vector<char*> stacks;
    ~StackPool() {
        for (char* s : stacks) munmap(s - page_size(), kStack + page_size());
    }
    char* get(size_t i) {
        while (stacks.size() <= i) {
            void* m = mmap(nullptr, kStack + page_size(), PROT_READ | PROT_WRITE,
                           MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
            if (m == MAP_FAILED) return nullptr;
            mprotect(m, page_size(), PROT_NONE);
            stacks.push_back(static_cast<char*>(m) + page_size());
        }
        return stacks[i];
    }
};
thread_local StackPool t_stacks;

std::string where(const LaunchState& l, const Fiber* f) {
    if (!f) return format("kernel `%s`", l.kernel->name);
    return format("kernel `%s`, block (%u,%u,%u), thread (%u,%u,%u)", l.kernel->name, blockIdx.x,
                  blockIdx.y, blockIdx.z, f->tid.x, f->tid.y, f->tid.z);
}

// Give the OS thread back to the scheduler until this fiber is runnable again.
void block_current(State why) {
    LaunchState& l = *t_launch;
    Fiber& f = *l.current;
    f.state = why;
    ctx_switch(f.ctx, l.sched);
}

void make_runnable(LaunchState& l, unsigned i) {
    l.fibers[i].state = State::Runnable;
    l.runq.push_back(i);
}

// Everyone at the block barrier goes on (the caller, if any, keeps running).
void release_barrier(LaunchState& l, const Fiber* caller) {
    for (unsigned i : l.bar_waiters)
        if (&l.fibers[i] != caller) make_runnable(l, i);
    l.bar_waiters.clear();
}

[[noreturn]] void fail(const std::string& msg) {
    LaunchState& l = *t_launch;
    if (l.error.empty()) l.error = where(l, l.current) + ": " + msg;
    Fiber& f = *l.current;
    f.state = State::Done;
    ctx_switch(f.ctx, l.sched);  // never resumed
    std::abort();
}

void fiber_main(void*) {
    LaunchState& l = *t_launch;
    l.kernel->invoke(l.args);
    Fiber& f = *l.current;
    f.state = State::Done;
    l.live--;
    WarpState& w = l.warps[f.linear / 32];
    const unsigned bit = 1u << (f.linear % 32);
    w.live &= ~bit;
    if (w.arrived && (w.mask & bit))
        fail(format("this thread exited while other lanes of its warp wait for it in a "
                    "collective (mask 0x%08x)",
                    w.mask));
    // The threads still running may all be waiting at a barrier already.
    if (!l.bar_waiters.empty() && l.bar_waiters.size() == l.live) release_barrier(l, nullptr);
    ctx_switch(f.ctx, l.sched);  // never resumed
    std::abort();
}

void on_fault(int sig, siginfo_t* info, void* uctx) {
    LaunchState* l = t_launch;
    if (!l || !l->current) {
        // Not inside an emulated kernel: let the default action happen.
        signal(sig, SIG_DFL);
        return;
    }
    (void)uctx;
    l->fault_addr = reinterpret_cast<uintptr_t>(info->si_addr);
    siglongjmp(l->fault_jmp, 1);
}

void install_fault_handler() {
    static std::once_flag once;
    std::call_once(once, [] {
        struct sigaction sa;
        std::memset(&sa, 0, sizeof sa);
        sa.sa_sigaction = on_fault;
        sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_NODEFER;
        sigemptyset(&sa.sa_mask);
        sigaction(SIGSEGV, &sa, nullptr);
        sigaction(SIGBUS, &sa, nullptr);
    });
    // A fault on a fiber's guard page has no stack left to run the handler on.
    thread_local bool alt = false;
    if (!alt) {
        static const size_t size = 64 * 1024;
        stack_t ss;
        ss.ss_sp = std::malloc(size);
        ss.ss_size = size;
        ss.ss_flags = 0;
        if (ss.ss_sp && sigaltstack(&ss, nullptr) == 0) alt = true;
    }
}

std::string waits_summary(const LaunchState& l) {
    unsigned at_block = 0, at_warp = 0;
    for (const Fiber& f : l.fibers) {
        if (f.state == State::AtBarrier) at_block++;
        if (f.state == State::AtWarp) at_warp++;
    }
    return format("%u threads wait at __syncthreads and %u in warp collectives, none can proceed",
                  at_block, at_warp);
}

// Run one block to completion (or to its first error).
bool run_block(LaunchState& l, unsigned nthreads) {
    l.fibers.resize(nthreads);
    l.live = nthreads;
    l.bar_waiters.clear();
    l.runq.clear();
    l.runq_head = 0;
    for (unsigned w = 0; w < 32; ++w) {
        const unsigned first = w * 32;
        unsigned exists = 0;
        for (unsigned b = 0; b < 32; ++b)
            if (first + b < nthreads) exists |= 1u << b;
        WarpState& ws = l.warps[w];
        ws.exists = exists;
        ws.live = exists;
        ws.arrived = 0;
        ws.mask = 0;
        ws.nwaiters = 0;
    }
    for (unsigned i = 0; i < nthreads; ++i) {
        Fiber& f = l.fibers[i];
        f.linear = i;
        f.tid = uint3{i % blockDim.x, (i / blockDim.x) % blockDim.y, i / (blockDim.x * blockDim.y)};
        f.state = State::Runnable;
        f.parity = 0;
        char* stack = t_stacks.get(i);
        if (!stack) {
            l.error = where(l, nullptr) + ": could not map a stack for the emulated threads";
            return false;
        }
        ctx_init(f.ctx, stack, kStack, fiber_main, nullptr);
        l.runq.push_back(i);
    }
    while (l.runq_head < l.runq.size()) {
        Fiber& f = l.fibers[l.runq[l.runq_head++]];
        l.current = &f;
        threadIdx = f.tid;
        ctx_switch(l.sched, f.ctx);
        l.current = nullptr;
        if (!l.error.empty()) return false;
    }
    if (l.live > 0) {
        l.error = where(l, nullptr) +
                  format(", block (%u,%u,%u): deadlock: ", blockIdx.x, blockIdx.y, blockIdx.z) +
                  waits_summary(l);
        return false;
    }
    return true;
}

}  // namespace

// ---- what the kernels call (cuda_emu.h) -----------------------------------------------------

unsigned lane() { return t_launch->current->linear % 32; }

void syncthreads() {
    LaunchState& l = *t_launch;
    Fiber& f = *l.current;
    l.bar_waiters.push_back(f.linear);
    if (l.bar_waiters.size() == l.live) {
        release_barrier(l, &f);
        return;
    }
    block_current(State::AtBarrier);
}

namespace {
// Arrive at a collective of the lanes in `mask` of the caller's warp, and
// return once all of them have.
WarpState& warp_sync(unsigned mask, uint64_t mine, bool deposit, unsigned parity) {
    LaunchState& l = *t_launch;
    Fiber& f = *l.current;
    WarpState& w = l.warps[f.linear / 32];
    const unsigned lane = f.linear % 32, bit = 1u << lane;
    if (!(mask & bit))
        fail(format("a warp collective with mask 0x%08x, which leaves out the caller", mask));
    if (mask & ~w.exists)
        fail(format("a warp collective with mask 0x%08x names lanes that do not exist (block of "
                    "%u threads)",
                    mask, blockDim.x * blockDim.y * blockDim.z));
    if (mask & ~w.live)
        fail(format("a warp collective with mask 0x%08x names lanes that have exited", mask));
    if (w.arrived && w.mask != mask)
        fail(format("lanes of one warp are in collectives with different masks (0x%08x and "
                    "0x%08x)",
                    w.mask, mask));
    w.mask = mask;
    w.arrived |= bit;
    if (deposit) w.slots[parity][lane] = mine;
    if ((w.arrived & mask) == mask) {
        for (unsigned k = 0; k < w.nwaiters; ++k) make_runnable(l, w.waiters[k]);
        w.nwaiters = 0;
        w.arrived = 0;
        return w;
    }
    w.waiters[w.nwaiters++] = f.linear;
    block_current(State::AtWarp);
    return w;
}
}  // namespace

void syncwarp(unsigned mask) { warp_sync(mask, 0, false, 0); }

void warp_exchange(unsigned mask, uint64_t mine, uint64_t out[32]) {
    Fiber& f = *t_launch->current;
    const unsigned p = f.parity;
    f.parity ^= 1u;
    WarpState& w = warp_sync(mask, mine, true, p);
    // The next collective writes the other buffer, and the one after can only
    // begin once every lane has left this one: nothing overwrites these yet.
    for (unsigned i = 0; i < 32; ++i)
        if ((mask >> i) & 1u) out[i] = w.slots[p][i];
}

void trap(const char* what) { fail(what); }

void check_wmma(const void* p, unsigned ldm, size_t elem_bytes, const char* what) {
    if (reinterpret_cast<uintptr_t>(p) % 32 != 0)
        fail(format("%s: pointer %p is not 256-bit aligned", what, p));
    if ((ldm * elem_bytes) % 16 != 0)
        fail(format("%s: ldm %u is not a multiple of 16 bytes (%zu-byte elements)", what, ldm,
                    elem_bytes));
}

void register_kernel(KernelInfo* k) { registry().push_back(k); }

}  // namespace amp_emu

// ---- the C interface -------------------------------------------------------------------------

using namespace amp_emu;

extern "C" {

// Registers every module's kernels (generated by build.rs). Idempotent.
void amp_emu_register_all();

static void copy_err(const std::string& msg, char* err, size_t len) {
    if (!err || len == 0) return;
    std::snprintf(err, len, "%s", msg.c_str());
}

// With AMP_EMU_KERNELS set, the registry is written there once per process,
// `module kernel` a line (atomically: a temporary file renamed), for the
// coverage check of scripts/emulate.sh.
static void dump_registry() {
    const char* path = std::getenv("AMP_EMU_KERNELS");
    if (!path || !*path) return;
    const std::string tmp = std::string(path) + format(".%d", (int)getpid());
    FILE* f = std::fopen(tmp.c_str(), "w");
    if (!f) return;
    for (const KernelInfo* k : registry()) std::fprintf(f, "%s %s\n", k->module, k->name);
    std::fclose(f);
    std::rename(tmp.c_str(), path);
}

static void ensure_registered() {
    static std::once_flag once;
    std::call_once(once, [] {
        amp_emu_register_all();
        dump_registry();
    });
}

size_t amp_emu_kernel_count() {
    ensure_registered();
    return registry().size();
}

// Kernel `i`: its name, module, argument count, launch bound (0: none) and
// how many times it has been launched in this process.
int amp_emu_kernel_info(size_t i, const char** name, const char** module, size_t* nargs,
                        unsigned* bound, uint64_t* launches) {
    ensure_registered();
    if (i >= registry().size()) return 1;
    KernelInfo* k = registry()[i];
    *name = k->name;
    *module = k->module;
    *nargs = k->nargs;
    *bound = k->launch_bound;
    *launches = k->launches.load();
    return 0;
}

int amp_emu_malloc(size_t bytes, uint64_t* out, char* err, size_t err_len) {
    const size_t page = page_size();
    const size_t rounded = (bytes + kAlign - 1) / kAlign * kAlign;
    const size_t body = (rounded + page - 1) / page * page;
    const size_t mapped = body + 2 * page;
    void* m = mmap(nullptr, mapped, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) {
        copy_err(format("out of memory: could not map %zu bytes", mapped), err, err_len);
        return 2;  // CUDA_ERROR_OUT_OF_MEMORY
    }
    const uintptr_t base = reinterpret_cast<uintptr_t>(m);
    mprotect(m, page, PROT_NONE);
    mprotect(reinterpret_cast<void*>(base + page + body), page, PROT_NONE);
    const uintptr_t start = base + page + body - rounded;
    std::memset(reinterpret_cast<void*>(start), 0xff, bytes);
    std::memset(reinterpret_cast<void*>(start + bytes), kCanary, rounded - bytes);
    {
        std::lock_guard<std::mutex> lock(g_mem_mutex);
        g_allocs[start] = Alloc{base, mapped, bytes, rounded};
    }
    *out = start;
    return 0;
}

int amp_emu_free(uint64_t ptr, char* err, size_t err_len) {
    Alloc a;
    {
        std::lock_guard<std::mutex> lock(g_mem_mutex);
        auto it = g_allocs.find(ptr);
        if (it == g_allocs.end()) {
            copy_err(format("free of 0x%zx, which is not the start of a device allocation", (size_t)ptr),
                     err, err_len);
            return 1;
        }
        a = it->second;
        g_allocs.erase(it);
    }
    const unsigned char* slack = reinterpret_cast<const unsigned char*>(ptr + a.bytes);
    for (size_t i = 0; i < a.rounded - a.bytes; ++i)
        if (slack[i] != kCanary) {
            munmap(reinterpret_cast<void*>(a.base), a.mapped);
            copy_err(format("a kernel wrote past the end of the %zu-byte allocation at 0x%zx", a.bytes,
                            (size_t)ptr),
                     err, err_len);
            return 1;
        }
    munmap(reinterpret_cast<void*>(a.base), a.mapped);
    return 0;
}

// Whether [ptr, ptr + bytes) lies inside one live allocation.
int amp_emu_check_range(uint64_t ptr, size_t bytes, char* err, size_t err_len) {
    std::lock_guard<std::mutex> lock(g_mem_mutex);
    uintptr_t start;
    if (find_alloc(ptr, bytes, &start)) return 0;
    copy_err(format("[0x%zx, +%zu bytes) is not inside a live device allocation", (size_t)ptr, bytes),
             err, err_len);
    return 1;
}

int amp_emu_launch(const char* name, const unsigned grid[3], const unsigned block[3],
                   unsigned shared_bytes, void** args, const size_t* arg_sizes, size_t nargs,
                   char* err, size_t err_len) {
    ensure_registered();
    KernelInfo* k = find_kernel(name);
    if (!k) {
        copy_err(format("no kernel `%s` in any module (CUDA_ERROR_NOT_FOUND)", name), err, err_len);
        return 500;
    }
    // The driver's launch checks (CUDA_ERROR_INVALID_VALUE).
    const unsigned long long threads = (unsigned long long)block[0] * block[1] * block[2];
    std::string bad;
    if (!grid[0] || !grid[1] || !grid[2] || !block[0] || !block[1] || !block[2])
        bad = "a zero grid or block dimension";
    else if (grid[0] > 0x7fffffffu || grid[1] > 65535 || grid[2] > 65535)
        bad = format("grid (%u,%u,%u) exceeds (2^31-1, 65535, 65535)", grid[0], grid[1], grid[2]);
    else if (block[0] > 1024 || block[1] > 1024 || block[2] > 64 || threads > 1024)
        bad = format("block (%u,%u,%u) exceeds 1024 threads or (1024,1024,64)", block[0], block[1],
                     block[2]);
    else if (k->launch_bound && threads > k->launch_bound)
        bad = format("block of %llu threads exceeds the kernel's __launch_bounds__(%u)", threads,
                     k->launch_bound);
    else if (shared_bytes != 0)
        bad = "dynamic shared memory (amp's kernels use only static shared memory)";
    else if (nargs != k->nargs)
        bad = format("%zu arguments passed, the kernel takes %zu", nargs, k->nargs);
    else
        for (size_t i = 0; i < nargs; ++i)
            if (arg_sizes[i] != k->arg_sizes[i]) {
                bad = format("argument %zu is %zu bytes, the kernel's parameter is %zu", i, arg_sizes[i],
                             k->arg_sizes[i]);
                break;
            }
    if (!bad.empty()) {
        copy_err(format("launch of `%s`: %s", name, bad.c_str()), err, err_len);
        return 1;
    }
    note_coverage(k);
    install_fault_handler();

    LaunchState l;
    l.kernel = k;
    l.args = args;
    l.current = nullptr;
    l.fault_addr = 0;
    LaunchState* outer = t_launch;
    t_launch = &l;
    gridDim = dim3{grid[0], grid[1], grid[2]};
    blockDim = dim3{block[0], block[1], block[2]};
    bool ok = true;
    if (sigsetjmp(l.fault_jmp, 1) != 0) {
        // A fault inside a kernel: the fiber is abandoned with its stack.
        ok = false;
        const Fiber* f = l.current;
        l.current = nullptr;
        l.error = where(l, f) + ": illegal address 0x" + format("%zx", (size_t)l.fault_addr) + " (" +
                  describe_address(l.fault_addr) + ")";
    } else {
        for (unsigned z = 0; z < grid[2] && ok; ++z)
            for (unsigned y = 0; y < grid[1] && ok; ++y)
                for (unsigned x = 0; x < grid[0] && ok; ++x) {
                    blockIdx = uint3{x, y, z};
                    ok = run_block(l, (unsigned)threads);
                }
    }
    t_launch = outer;
    if (ok) {
        const std::string damage = check_canaries();
        if (!damage.empty()) {
            copy_err(format("after `%s`: %s", name, damage.c_str()), err, err_len);
            return 700;
        }
        return 0;
    }
    copy_err(l.error, err, err_len);
    return 700;  // CUDA_ERROR_ILLEGAL_ADDRESS / launch failure
}

// cuBLASLt's strided-batched matmul as amp calls it, computed on the host:
// column-major C[i,j] = Σ_l op(A)[i,l]·op(B)[l,j] (+ bias[i]) per batch
// element, f32 accumulation over l in order, rounded once to the data type
// (0: f32, 1: f16, 2: bf16). Arguments are checked as cuBLASLt checks them
// (CUBLAS_STATUS_INVALID_VALUE), and every matrix must lie inside a live
// allocation: a wrong leading dimension or stride from the runtime is an
// error here, where the library might read neighbouring memory.
static float load_elem(int dtype, uint64_t base, uint64_t i) {
    switch (dtype) {
        case 0: return reinterpret_cast<const float*>(base)[i];
        case 1: return __half2float(reinterpret_cast<const __half*>(base)[i]);
        default: return __bfloat162float(reinterpret_cast<const __nv_bfloat16*>(base)[i]);
    }
}
static void store_elem(int dtype, uint64_t base, uint64_t i, float v) {
    switch (dtype) {
        case 0: reinterpret_cast<float*>(base)[i] = v; break;
        case 1: reinterpret_cast<__half*>(base)[i] = __float2half_rn(v); break;
        default: reinterpret_cast<__nv_bfloat16*>(base)[i] = __float2bfloat16_rn(v); break;
    }
}

static std::string check_matrix(const char* what, uint64_t p, uint64_t rows, uint64_t cols, int64_t ld,
                                int64_t stride, uint64_t batch, size_t elem) {
    if (ld < (int64_t)std::max<uint64_t>(rows, 1))
        return format("%s: leading dimension %lld < %llu rows", what, (long long)ld,
                      (unsigned long long)rows);
    if (stride < 0) return format("%s: negative batch stride %lld", what, (long long)stride);
    if (rows == 0 || cols == 0) return "";
    const uint64_t span = ((cols - 1) * (uint64_t)ld + rows + (batch - 1) * (uint64_t)stride) * elem;
    uintptr_t start;
    std::lock_guard<std::mutex> lock(g_mem_mutex);
    if (!find_alloc(p, span, &start))
        return format("%s: %llu×%llu (ld %lld, batch %llu × stride %lld) at 0x%zx reaches outside its "
                      "allocation",
                      what, (unsigned long long)rows, (unsigned long long)cols, (long long)ld,
                      (unsigned long long)batch, (long long)stride, (size_t)p);
    return "";
}

int amp_emu_gemm(int dtype, int transa, int transb, uint64_t m, uint64_t n, uint64_t k, uint64_t a,
                 int64_t lda, int64_t stride_a, uint64_t b, int64_t ldb, int64_t stride_b, uint64_t c,
                 int64_t ldc, int64_t stride_c, uint64_t batch, uint64_t bias, char* err,
                 size_t err_len) {
    const size_t elem = dtype == 0 ? 4 : 2;
    if (dtype < 0 || dtype > 2 || batch == 0) {
        copy_err("cuBLASLt matmul: invalid data type or batch", err, err_len);
        return 7;
    }
    std::string bad = check_matrix("A", a, transa ? k : m, transa ? m : k, lda, stride_a, batch, elem);
    if (bad.empty()) bad = check_matrix("B", b, transb ? n : k, transb ? k : n, ldb, stride_b, batch, elem);
    if (bad.empty()) bad = check_matrix("C", c, m, n, ldc, stride_c, batch, elem);
    if (bad.empty() && bias) bad = check_matrix("bias", bias, m, 1, (int64_t)std::max<uint64_t>(m, 1), 0, 1, elem);
    if (!bad.empty()) {
        copy_err("cuBLASLt matmul (emulated): " + bad, err, err_len);
        return 7;  // CUBLAS_STATUS_INVALID_VALUE
    }
    for (uint64_t z = 0; z < batch; ++z) {
        const uint64_t az = a + z * (uint64_t)stride_a * elem, bz = b + z * (uint64_t)stride_b * elem;
        const uint64_t cz = c + z * (uint64_t)stride_c * elem;
        for (uint64_t j = 0; j < n; ++j)
            for (uint64_t i = 0; i < m; ++i) {
                float s = 0.0f;
                for (uint64_t l = 0; l < k; ++l) {
                    const float x = load_elem(dtype, az, transa ? l + i * lda : i + l * lda);
                    const float y = load_elem(dtype, bz, transb ? j + l * ldb : l + j * ldb);
                    s += x * y;
                }
                if (bias) s += load_elem(dtype, bias, i);
                store_elem(dtype, cz, i + j * (uint64_t)ldc, s);
            }
    }
    return 0;
}

}  // extern "C"
