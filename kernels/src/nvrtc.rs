//! The NVRTC driver: compiles a [`Module`] to a cubin for one real GPU
//! architecture, with the options every amp kernel is built with.
//!
//! NVRTC (`libnvrtc`) is loaded at run time through cudarc, so nothing here
//! needs a CUDA toolkit to build. [`Nvrtc::load`] checks that the library is
//! there (cudarc panics on the first call into a missing library), reads its
//! version and decides how NVRTC finds the CUDA headers the prelude includes
//! ([`Headers`]). [`Nvrtc::compile`] returns the cubin (never PTX: a cubin
//! loads on any driver of the same major version, PTX from a newer NVRTC does
//! not) and the ptxas log, whose per-kernel register and spill figures
//! [`Compiled::resources`] parses.
//!
//! ```no_run
//! use amp_kernels::nvrtc::{Arch, Nvrtc, Options};
//! # fn main() -> Result<(), amp_kernels::nvrtc::KernelError> {
//! let nvrtc = Nvrtc::load()?;
//! let cast = amp_kernels::module("cast").unwrap();
//! let compiled = nvrtc.compile(cast, Arch::sm(80), &Options::default())?;
//! for k in compiled.resources() {
//!     println!("{}: {} registers, {} bytes spilled", k.name, k.registers, k.spill_stores);
//! }
//! # Ok(()) }
//! ```

use std::ffi::{CStr, CString, OsString, c_char, c_int};
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use cudarc::nvrtc::sys;

use crate::Module;

/// The oldest NVRTC amp drives: 11.2 added `nvrtcGetSupportedArchs`, and
/// cubin output (`nvrtcGetCUBIN`, 11.1) and sm_80 (bf16 WMMA, 11.0) are older.
/// cudarc also accepts a `libnvrtc.so.10` or `.9`, which lack those symbols
/// (cudarc would panic on the call), so older versions are refused first.
const MIN_VERSION: (i32, i32) = (11, 2);

/// The first NVRTC that ships the CUDA headers itself
/// (`--use-bundled-headers`), so no toolkit is needed.
const BUNDLED_HEADERS_SINCE: (i32, i32) = (13, 4);

/// A header every include folder must hold: the prelude includes it.
const PROBE_HEADER: &str = "cuda_fp16.h";

/// What went wrong loading NVRTC or compiling a module. Every message names
/// the step that failed and how to fix it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KernelError {
    /// `libnvrtc` could not be loaded.
    #[error(
        "NVRTC not found: none of libnvrtc.so.13, libnvrtc.so.12, libnvrtc.so could be loaded. \
         amp compiles its CUDA kernels at run time with NVRTC: add the folder holding \
         libnvrtc.so.* to LD_LIBRARY_PATH (`pip install nvidia-cuda-nvrtc` installs it into \
         site-packages/nvidia/cu13/lib; a CUDA toolkit has it in lib64)"
    )]
    NvrtcNotFound,
    /// The loaded `libnvrtc` is older than amp supports.
    #[error(
        "NVRTC {major}.{minor} is too old: amp needs 11.2 or newer (13.4+ needs no CUDA toolkit); \
         `pip install nvidia-cuda-nvrtc` and put its lib folder first in LD_LIBRARY_PATH"
    )]
    NvrtcTooOld {
        /// The loaded library's major version.
        major: i32,
        /// Its minor version.
        minor: i32,
    },
    /// An NVRTC call other than the compilation itself failed.
    #[error("NVRTC call {call} failed: {code}")]
    Nvrtc {
        /// The function called (`nvrtcGetCUBIN`).
        call: &'static str,
        /// NVRTC's name for the result code.
        code: String,
    },
    /// NVRTC before 13.4 needs a CUDA toolkit's headers, and none was found.
    #[error(
        "NVRTC {}.{} needs the CUDA headers ({PROBE_HEADER}, mma.h) and none were found; \
         searched: {}. Set CUDA_HOME to a CUDA toolkit (its include folder is used), or use \
         NVRTC 13.4 or newer, which bundles them (`pip install nvidia-cuda-nvrtc`)",
        version.0, version.1, display_paths(searched)
    )]
    HeadersNotFound {
        /// The loaded NVRTC's (major, minor) version.
        version: (i32, i32),
        /// The include folders tried, in order.
        searched: Vec<PathBuf>,
    },
    /// The folder for NVRTC's bundled headers could not be created.
    #[error(
        "cannot create {} for NVRTC's bundled CUDA headers: {source}; point TMPDIR at a writable folder",
        path.display()
    )]
    HeaderDir {
        /// The folder.
        path: PathBuf,
        /// Why it could not be created.
        source: std::io::Error,
    },
    /// An architecture string or compute capability that is not a real GPU
    /// architecture.
    #[error("invalid GPU architecture `{0}`: expected a real architecture such as sm_80 or sm_90a")]
    InvalidArch(String),
    /// The loaded NVRTC cannot generate code for the requested architecture.
    #[error(
        "NVRTC {}.{} cannot compile for {arch}: it supports {}; use an NVRTC that supports this GPU",
        version.0, version.1, display_archs(supported)
    )]
    UnsupportedArch {
        /// The architecture asked for.
        arch: Arch,
        /// The loaded NVRTC's (major, minor) version.
        version: (i32, i32),
        /// The `sm_XY` numbers it supports.
        supported: Vec<u32>,
    },
    /// NVRTC or ptxas rejected a module (boxed: the log is large, and the
    /// error stays one pointer wide on the happy path).
    #[error("{0}")]
    Compile(Box<CompileFailure>),
}

/// A module NVRTC or ptxas rejected: what was compiled, how, and NVRTC's log.
#[derive(Debug)]
#[non_exhaustive]
pub struct CompileFailure {
    /// The module (`optim`).
    pub module: String,
    /// The target architecture.
    pub arch: Arch,
    /// The options passed to NVRTC.
    pub options: Vec<String>,
    /// NVRTC's result code.
    pub code: String,
    /// A line on the likely cause, when it can be told from the log (spills
    /// in a hot module); empty otherwise.
    pub hint: String,
    /// NVRTC's program log (front-end errors, ptxas output).
    pub log: String,
}

impl fmt::Display for CompileFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "compiling kernel module `{}` for {} failed ({}){}\noptions: {}\nlog:\n{}",
            self.module,
            self.arch,
            self.code,
            self.hint,
            self.options.join(" "),
            self.log
        )
    }
}

fn display_paths(paths: &[PathBuf]) -> String {
    if paths.is_empty() {
        return "nothing".into();
    }
    let v: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    v.join(", ")
}

fn display_archs(archs: &[u32]) -> String {
    let v: Vec<String> = archs.iter().map(|a| format!("sm_{a}")).collect();
    v.join(", ")
}

/// A real GPU architecture: what ptxas generates machine code (SASS) for.
///
/// ```
/// use amp_kernels::nvrtc::Arch;
/// assert_eq!(Arch::sm(80).to_string(), "sm_80");
/// assert_eq!(Arch::from_compute_capability(9, 0), Arch::sm(90));
/// assert_eq!("sm_90a".parse::<Arch>().unwrap(), Arch::sm_a(90));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Arch {
    /// `10·major + minor` of the compute capability (80 for 8.0).
    number: u32,
    /// The architecture-specific variant (`sm_90a`): its extra instructions
    /// (wgmma) run only on exactly that compute capability.
    specific: bool,
}

impl Arch {
    /// `sm_<number>`, e.g. `Arch::sm(80)` for the A100.
    pub const fn sm(number: u32) -> Arch {
        Arch {
            number,
            specific: false,
        }
    }

    /// The architecture-specific `sm_<number>a`, e.g. `Arch::sm_a(90)`.
    pub const fn sm_a(number: u32) -> Arch {
        Arch {
            number,
            specific: true,
        }
    }

    /// The portable architecture of a device of compute capability
    /// `major.minor` (what `cuDeviceGetAttribute` reports): 9.0 → `sm_90`.
    pub const fn from_compute_capability(major: u32, minor: u32) -> Arch {
        Arch::sm(major * 10 + minor)
    }

    /// `10·major + minor` (80 for `sm_80`).
    pub const fn number(self) -> u32 {
        self.number
    }

    /// Whether this is an architecture-specific variant (`sm_90a`).
    pub const fn is_specific(self) -> bool {
        self.specific
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let suffix = if self.specific { "a" } else { "" };
        write!(f, "sm_{}{suffix}", self.number)
    }
}

impl FromStr for Arch {
    type Err = KernelError;

    /// `sm_80`, `sm_90a`; a virtual architecture (`compute_80`) is refused:
    /// amp always compiles to machine code.
    fn from_str(s: &str) -> Result<Arch, KernelError> {
        let bad = || KernelError::InvalidArch(s.to_string());
        let rest = s.strip_prefix("sm_").ok_or_else(bad)?;
        let (digits, specific) = match rest.strip_suffix('a') {
            Some(d) => (d, true),
            None => (rest, false),
        };
        // Two or three digits (sm_80 … sm_121), no sign or other noise.
        if !(2..=3).contains(&digits.len()) || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let number: u32 = digits.parse().map_err(|_| bad())?;
        if number < 10 {
            return Err(bad());
        }
        Ok(Arch { number, specific })
    }
}

/// How NVRTC finds the CUDA headers (`cuda_fp16.h`, `cuda_bf16.h`, `mma.h`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Headers {
    /// NVRTC 13.4+ installs its own bundled headers into this writable
    /// folder on first use (`--use-bundled-headers=<dir>`).
    Bundled(PathBuf),
    /// An installed CUDA toolkit's include folder (`--include-path=<dir>`).
    Toolkit(PathBuf),
}

impl Headers {
    /// The NVRTC option that selects these headers.
    pub fn option(&self) -> String {
        match self {
            Headers::Bundled(dir) => format!("--use-bundled-headers={}", dir.display()),
            Headers::Toolkit(dir) => format!("--include-path={}", dir.display()),
        }
    }
}

/// Include folders to try, in order, for an NVRTC without bundled headers:
/// `$CUDA_HOME/include`, `$CUDA_PATH/include`, `$CUDA_INCLUDE_DIR`, then
/// `/usr/local/cuda/include`, the versioned `/usr/local/cuda-X.Y/include`
/// given in `versioned` (newest first), `/opt/cuda/include`, `/usr/include`.
fn include_candidates(
    env: &dyn Fn(&str) -> Option<OsString>,
    versioned: &[PathBuf],
) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let set = |name: &str| env(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    for var in ["CUDA_HOME", "CUDA_PATH"] {
        if let Some(root) = set(var) {
            out.push(root.join("include"));
        }
    }
    if let Some(dir) = set("CUDA_INCLUDE_DIR") {
        out.push(dir);
    }
    out.push(PathBuf::from("/usr/local/cuda/include"));
    out.extend(versioned.iter().map(|root| root.join("include")));
    out.push(PathBuf::from("/opt/cuda/include"));
    out.push(PathBuf::from("/usr/include"));
    out
}

/// The toolkits installed as `/usr/local/cuda-X.Y`, newest first.
fn versioned_toolkits(parent: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return Vec::new();
    };
    let mut found: Vec<(Vec<u32>, PathBuf)> = entries
        .filter_map(|e| {
            let e = e.ok()?;
            let name = e.file_name().into_string().ok()?;
            let version = name.strip_prefix("cuda-")?;
            let key = version.split('.').map(|p| p.parse().unwrap_or(0)).collect();
            Some((key, e.path()))
        })
        .collect();
    found.sort_by(|a, b| b.0.cmp(&a.0));
    found.into_iter().map(|(_, p)| p).collect()
}

/// The header strategy for NVRTC `version`: its bundled headers in
/// `bundled_root/amp-nvrtc-headers-X.Y` from 13.4 on, otherwise the first of
/// `candidates` for which `has_header` holds.
fn choose_headers(
    version: (i32, i32),
    bundled_root: &Path,
    candidates: &[PathBuf],
    has_header: &dyn Fn(&Path) -> bool,
) -> Result<Headers, KernelError> {
    if version >= BUNDLED_HEADERS_SINCE {
        // Versioned: NVRTC refuses a folder holding another version's headers.
        let dir = bundled_root.join(format!("amp-nvrtc-headers-{}.{}", version.0, version.1));
        return Ok(Headers::Bundled(dir));
    }
    candidates
        .iter()
        .find(|dir| has_header(dir))
        .map(|dir| Headers::Toolkit(dir.clone()))
        .ok_or_else(|| KernelError::HeadersNotFound {
            version,
            searched: candidates.to_vec(),
        })
}

/// Choices for one compilation beyond amp's fixed options.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    /// Make register spills a compile error in hot modules ([`Module::hot`]);
    /// default true (the CI check). The runtime turns it off: at run time a
    /// spill costs speed, not correctness.
    pub strict_spills: bool,
    /// Extra NVRTC options appended last (e.g. `-lineinfo` for profiling).
    pub extra: Vec<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            strict_spills: true,
            extra: Vec::new(),
        }
    }
}

/// The NVRTC options for `module` on `arch`.
fn build_options(headers: &Headers, module: &Module, arch: Arch, opts: &Options) -> Vec<String> {
    let mut o = vec![
        // A real architecture, so NVRTC runs ptxas and a cubin comes out.
        format!("--gpu-architecture={arch}"),
        "--std=c++17".to_string(),
        // No fused multiply-adds: the optimizer kernels must round like the
        // CPU code (a separate multiply and add), per the kernel ABI.
        "--fmad=false".to_string(),
        "-default-device".to_string(),
        headers.option(),
        // Register and spill figures per kernel in the log (`resources`).
        "--ptxas-options=-v".to_string(),
    ];
    if module.hot && opts.strict_spills {
        o.push("--ptxas-options=--warn-on-spills".to_string());
        o.push("--ptxas-options=--warning-as-error".to_string());
    }
    o.extend(opts.extra.iter().cloned());
    o
}

/// One kernel's resource use, from ptxas's `-v` output.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KernelResources {
    /// The kernel's (unmangled, `extern "C"`) name.
    pub name: String,
    /// Registers per thread.
    pub registers: u32,
    /// Bytes of stack frame per thread.
    pub stack_frame: u32,
    /// Bytes of register spill stores per thread.
    pub spill_stores: u32,
    /// Bytes of register spill loads per thread.
    pub spill_loads: u32,
}

/// The number before `unit` in `line` (`"… 8 bytes spill stores"`).
fn number_before(line: &str, unit: &str) -> Option<u32> {
    let at = line.find(unit)?;
    line[..at].split_whitespace().next_back()?.parse().ok()
}

/// Per-kernel figures from a ptxas `-v` log:
///
/// ```text
/// ptxas info    : Compiling entry function 'foo' for 'sm_80'
/// ptxas info    : Function properties for foo
/// ptxas         .     256 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
/// ptxas info    : Used 128 registers, used 0 barriers, 256 bytes cumulative stack size, …
/// ```
///
/// Properties of non-inlined device functions are listed too; they are
/// attributed only to a kernel of the same name.
fn parse_resources(log: &str) -> Vec<KernelResources> {
    let mut out: Vec<KernelResources> = Vec::new();
    // The function the last "Function properties for" line named.
    let mut properties_of: Option<String> = None;
    for line in log.lines() {
        if let Some(rest) = line.split("Compiling entry function '").nth(1) {
            let name = rest.split('\'').next().unwrap_or_default();
            out.push(KernelResources {
                name: name.to_string(),
                ..Default::default()
            });
            properties_of = None;
        } else if let Some(rest) = line.split("Function properties for ").nth(1) {
            properties_of = Some(rest.trim().to_string());
        } else if line.contains("bytes stack frame") {
            if let Some(k) = out.last_mut()
                && properties_of.as_deref() == Some(k.name.as_str())
            {
                k.stack_frame = number_before(line, "bytes stack frame").unwrap_or(0);
                k.spill_stores = number_before(line, "bytes spill stores").unwrap_or(0);
                k.spill_loads = number_before(line, "bytes spill loads").unwrap_or(0);
            }
        } else if let Some(rest) = line.split("Used ").nth(1)
            && let Some(regs) = number_before(rest, "registers")
            && let Some(k) = out.last_mut()
        {
            k.registers = regs;
        }
    }
    out
}

/// A compiled module: the cubin and NVRTC's log.
#[derive(Clone, Debug)]
pub struct Compiled {
    /// The module's name.
    pub module: &'static str,
    /// The architecture the cubin is for.
    pub arch: Arch,
    /// The ELF cubin (machine code for `arch`), ready for `cuModuleLoadData`.
    pub cubin: Vec<u8>,
    /// NVRTC's log: ptxas's per-kernel figures, and any warnings.
    pub log: String,
}

impl Compiled {
    /// Registers, stack and spills of each kernel, in ptxas's order.
    pub fn resources(&self) -> Vec<KernelResources> {
        parse_resources(&self.log)
    }
}

/// NVRTC's name for a result code.
fn code_name(r: sys::nvrtcResult) -> String {
    // SAFETY: nvrtcGetErrorString takes any result code and returns a
    // pointer to a static NUL-terminated string (or null, checked).
    let p = unsafe { sys::nvrtcGetErrorString(r) };
    if p.is_null() {
        return format!("{r:?}");
    }
    // SAFETY: non-null, NUL-terminated and static, per the NVRTC docs.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

/// `Ok` for NVRTC_SUCCESS, else the error naming `call`.
fn check(call: &'static str, r: sys::nvrtcResult) -> Result<(), KernelError> {
    match r {
        sys::nvrtcResult::NVRTC_SUCCESS => Ok(()),
        _ => Err(KernelError::Nvrtc {
            call,
            code: code_name(r),
        }),
    }
}

/// An NVRTC program, destroyed on drop whatever happened to it.
struct Program(sys::nvrtcProgram);

impl Drop for Program {
    fn drop(&mut self) {
        // SAFETY: self.0 came from a successful nvrtcCreateProgram and is
        // destroyed exactly once, here. A failure cannot be reported from a
        // drop and leaves nothing to clean up.
        let _ = unsafe { sys::nvrtcDestroyProgram(&mut self.0) };
    }
}

impl Program {
    /// NVRTC's log for the program (empty if it cannot be read).
    fn log(&self) -> String {
        let mut size = 0usize;
        // SAFETY: self.0 is a live program; size is a valid out-pointer.
        let r = unsafe { sys::nvrtcGetProgramLogSize(self.0, &mut size) };
        if r != sys::nvrtcResult::NVRTC_SUCCESS || size == 0 {
            return String::new();
        }
        let mut buf = vec![0u8; size];
        // SAFETY: buf holds the `size` bytes (NUL included) NVRTC reported.
        let r = unsafe { sys::nvrtcGetProgramLog(self.0, buf.as_mut_ptr().cast::<c_char>()) };
        if r != sys::nvrtcResult::NVRTC_SUCCESS {
            return String::new();
        }
        let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        String::from_utf8_lossy(&buf[..end]).into_owned()
    }

    /// The compiled cubin.
    fn cubin(&self) -> Result<Vec<u8>, KernelError> {
        let mut size = 0usize;
        // SAFETY: self.0 is a live, compiled program; size is a valid out-pointer.
        check("nvrtcGetCUBINSize", unsafe {
            sys::nvrtcGetCUBINSize(self.0, &mut size)
        })?;
        let mut buf = vec![0u8; size];
        // SAFETY: buf holds the `size` bytes NVRTC reported for the cubin.
        check("nvrtcGetCUBIN", unsafe {
            sys::nvrtcGetCUBIN(self.0, buf.as_mut_ptr().cast::<c_char>())
        })?;
        Ok(buf)
    }
}

/// A loaded NVRTC: its version, supported architectures and header strategy.
/// Load once and share (it holds no NVRTC state; compilations are independent).
#[derive(Clone, Debug)]
pub struct Nvrtc {
    version: (i32, i32),
    supported: Vec<u32>,
    headers: Headers,
}

impl Nvrtc {
    /// Load `libnvrtc` (through `LD_LIBRARY_PATH` and the system's library
    /// path), check its version and choose how it finds the CUDA headers.
    ///
    /// Errors, never panics, when the library is missing or too old, or when
    /// an NVRTC older than 13.4 finds no CUDA toolkit headers.
    pub fn load() -> Result<Nvrtc, KernelError> {
        // SAFETY: is_culib_present only tries to dlopen the library's
        // candidate names; it calls nothing in it.
        if !unsafe { sys::is_culib_present() } {
            return Err(KernelError::NvrtcNotFound);
        }
        let (mut major, mut minor) = (0 as c_int, 0 as c_int);
        // SAFETY: the library is present (checked above, so cudarc's loader
        // does not panic); nvrtcVersion exists in every NVRTC and writes two ints.
        check("nvrtcVersion", unsafe {
            sys::nvrtcVersion(&mut major, &mut minor)
        })?;
        let version = (major, minor);
        if version < MIN_VERSION {
            return Err(KernelError::NvrtcTooOld { major, minor });
        }
        let supported = supported_archs()?;
        let env = |name: &str| std::env::var_os(name);
        let candidates = include_candidates(&env, &versioned_toolkits(Path::new("/usr/local")));
        let headers = choose_headers(version, &std::env::temp_dir(), &candidates, &|dir| {
            dir.join(PROBE_HEADER).is_file()
        })?;
        if let Headers::Bundled(dir) = &headers {
            std::fs::create_dir_all(dir).map_err(|source| KernelError::HeaderDir {
                path: dir.clone(),
                source,
            })?;
        }
        Ok(Nvrtc {
            version,
            supported,
            headers,
        })
    }

    /// NVRTC's (major, minor) version.
    pub fn version(&self) -> (i32, i32) {
        self.version
    }

    /// The `sm_XY` numbers this NVRTC generates code for (80 for `sm_80`).
    pub fn supported_archs(&self) -> &[u32] {
        &self.supported
    }

    /// How this NVRTC finds the CUDA headers.
    pub fn headers(&self) -> &Headers {
        &self.headers
    }

    /// The options [`compile`](Nvrtc::compile) passes for `module` on `arch`.
    pub fn options(&self, module: &Module, arch: Arch, opts: &Options) -> Vec<String> {
        build_options(&self.headers, module, arch, opts)
    }

    /// Compile `module` (prelude included) to a cubin for `arch`.
    ///
    /// A module NVRTC or ptxas rejects (including, for a hot module with
    /// [`Options::strict_spills`], a kernel that spills registers) is a
    /// [`KernelError::Compile`] carrying the options and the full log.
    pub fn compile(
        &self,
        module: &Module,
        arch: Arch,
        opts: &Options,
    ) -> Result<Compiled, KernelError> {
        if !self.supported.contains(&arch.number()) {
            return Err(KernelError::UnsupportedArch {
                arch,
                version: self.version,
                supported: self.supported.clone(),
            });
        }
        let options = self.options(module, arch, opts);
        let fail = |code: String, hint: String, log: String| {
            KernelError::Compile(Box::new(CompileFailure {
                module: module.name.to_string(),
                arch,
                options: options.clone(),
                code,
                hint,
                log,
            }))
        };
        let no_nul = |what: &str| {
            fail(
                "invalid input".into(),
                format!(": {what} contains a NUL byte"),
                String::new(),
            )
        };
        let source = CString::new(module.source()).map_err(|_| no_nul("the source"))?;
        let file =
            CString::new(format!("{}.cu", module.name)).map_err(|_| no_nul("the module name"))?;
        let c_options = options
            .iter()
            .map(|o| CString::new(o.as_str()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| no_nul("an option"))?;
        let option_ptrs: Vec<*const c_char> = c_options.iter().map(|o| o.as_ptr()).collect();

        let mut raw: sys::nvrtcProgram = std::ptr::null_mut();
        // SAFETY: source and file are NUL-terminated and outlive the program
        // (dropped after `program` below); no headers are passed (0, null).
        check("nvrtcCreateProgram", unsafe {
            sys::nvrtcCreateProgram(
                &mut raw,
                source.as_ptr(),
                file.as_ptr(),
                0,
                std::ptr::null(),
                std::ptr::null(),
            )
        })?;
        let program = Program(raw);
        let n_options = c_int::try_from(option_ptrs.len()).unwrap_or(c_int::MAX);
        // SAFETY: program is live; option_ptrs holds n_options pointers to
        // NUL-terminated strings kept alive by c_options.
        let r = unsafe { sys::nvrtcCompileProgram(program.0, n_options, option_ptrs.as_ptr()) };
        let log = program.log();
        if r != sys::nvrtcResult::NVRTC_SUCCESS {
            return Err(fail(code_name(r), failure_hint(module, &log), log));
        }
        let cubin = program.cubin()?;
        Ok(Compiled {
            module: module.name,
            arch,
            cubin,
            log,
        })
    }
}

/// Why a compilation probably failed, when the log shows it: ptxas prints
/// spills as ordinary figures, and `--warning-as-error` turns them into a
/// failure without a message of its own.
fn failure_hint(module: &Module, log: &str) -> String {
    let spilling: Vec<String> = parse_resources(log)
        .into_iter()
        .filter(|k| k.spill_stores > 0 || k.spill_loads > 0)
        .map(|k| {
            format!(
                "{} ({} bytes stored, {} loaded)",
                k.name, k.spill_stores, k.spill_loads
            )
        })
        .collect();
    if module.hot && !spilling.is_empty() {
        format!(
            ": register spills are errors in hot modules, and these kernels spill: {}; \
             reduce their live state (or compile with Options::strict_spills = false)",
            spilling.join(", ")
        )
    } else {
        String::new()
    }
}

/// The architectures the loaded NVRTC supports.
fn supported_archs() -> Result<Vec<u32>, KernelError> {
    let mut n: c_int = 0;
    // SAFETY: the library is loaded and at least 11.2 (checked by the
    // caller), where this function exists; n is a valid out-pointer.
    check("nvrtcGetNumSupportedArchs", unsafe {
        sys::nvrtcGetNumSupportedArchs(&mut n)
    })?;
    let mut archs: Vec<c_int> = vec![0; usize::try_from(n).unwrap_or(0)];
    // SAFETY: archs holds the `n` ints NVRTC reported.
    check("nvrtcGetSupportedArchs", unsafe {
        sys::nvrtcGetSupportedArchs(archs.as_mut_ptr())
    })?;
    Ok(archs
        .into_iter()
        .filter_map(|a| u32::try_from(a).ok())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOT: Module = Module {
        name: "hot",
        body: "",
        tensor_cores: false,
        hot: true,
    };
    const COLD: Module = Module {
        name: "cold",
        body: "",
        tensor_cores: true,
        hot: false,
    };

    #[test]
    fn options_name_a_real_arch_and_the_fixed_flags() {
        let h = Headers::Bundled(PathBuf::from("/tmp/h"));
        let o = build_options(&h, &COLD, Arch::sm(80), &Options::default());
        assert_eq!(
            o,
            [
                "--gpu-architecture=sm_80",
                "--std=c++17",
                "--fmad=false",
                "-default-device",
                "--use-bundled-headers=/tmp/h",
                "--ptxas-options=-v",
            ]
        );
    }

    #[test]
    fn hot_modules_make_spills_errors_unless_relaxed() {
        let h = Headers::Toolkit(PathBuf::from("/usr/local/cuda/include"));
        let strict = build_options(&h, &HOT, Arch::sm_a(90), &Options::default());
        assert!(strict.contains(&"--gpu-architecture=sm_90a".to_string()));
        assert!(strict.contains(&"--include-path=/usr/local/cuda/include".to_string()));
        assert!(strict.ends_with(&[
            "--ptxas-options=--warn-on-spills".to_string(),
            "--ptxas-options=--warning-as-error".to_string()
        ]));
        let relaxed = Options {
            strict_spills: false,
            extra: vec!["-lineinfo".into()],
        };
        let o = build_options(&h, &HOT, Arch::sm(90), &relaxed);
        assert!(
            !o.iter()
                .any(|o| o.contains("spills") || o.contains("warning-as-error"))
        );
        assert_eq!(o.last().map(String::as_str), Some("-lineinfo"));
    }

    #[test]
    fn arch_parses_and_displays() {
        assert_eq!(Arch::sm(80).to_string(), "sm_80");
        assert_eq!(Arch::sm_a(90).to_string(), "sm_90a");
        assert_eq!(Arch::from_compute_capability(8, 6), Arch::sm(86));
        assert_eq!(Arch::from_compute_capability(12, 0).to_string(), "sm_120");
        for s in ["sm_80", "sm_90a", "sm_121", "sm_100a"] {
            assert_eq!(s.parse::<Arch>().unwrap().to_string(), s);
        }
        for s in [
            "compute_80",
            "sm80",
            "sm_",
            "sm_8",
            "sm_+80",
            "sm_80b",
            "sm_1000",
            "sm_09",
            "80",
        ] {
            assert!(s.parse::<Arch>().is_err(), "{s}");
        }
    }

    #[test]
    fn bundled_headers_from_13_4_in_a_versioned_folder() {
        let tmp = Path::new("/tmp");
        let none = |_: &Path| false;
        for v in [(13, 4), (13, 5), (14, 0)] {
            let h = choose_headers(v, tmp, &[], &none).unwrap();
            let want = format!("/tmp/amp-nvrtc-headers-{}.{}", v.0, v.1);
            assert_eq!(h, Headers::Bundled(PathBuf::from(&want)));
            assert_eq!(h.option(), format!("--use-bundled-headers={want}"));
        }
    }

    #[test]
    fn older_nvrtc_uses_the_first_toolkit_with_headers() {
        let env = |name: &str| match name {
            "CUDA_HOME" => Some(OsString::from("/opt/cuda-home")),
            "CUDA_PATH" => Some(OsString::new()), // set but empty: ignored
            "CUDA_INCLUDE_DIR" => Some(OsString::from("/inc")),
            _ => None,
        };
        let versioned = [
            PathBuf::from("/usr/local/cuda-12.9"),
            PathBuf::from("/usr/local/cuda-12.4"),
        ];
        let c = include_candidates(&env, &versioned);
        let want: Vec<PathBuf> = [
            "/opt/cuda-home/include",
            "/inc",
            "/usr/local/cuda/include",
            "/usr/local/cuda-12.9/include",
            "/usr/local/cuda-12.4/include",
            "/opt/cuda/include",
            "/usr/include",
        ]
        .iter()
        .map(PathBuf::from)
        .collect();
        assert_eq!(c, want);

        let has = |d: &Path| {
            d == Path::new("/usr/local/cuda-12.9/include") || d == Path::new("/usr/include")
        };
        let h = choose_headers((12, 8), Path::new("/tmp"), &c, &has).unwrap();
        assert_eq!(
            h,
            Headers::Toolkit(PathBuf::from("/usr/local/cuda-12.9/include"))
        );
        assert_eq!(h.option(), "--include-path=/usr/local/cuda-12.9/include");

        let err = choose_headers((13, 3), Path::new("/tmp"), &c, &|_| false).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("NVRTC 13.3") && msg.contains("/usr/local/cuda-12.4/include"),
            "{msg}"
        );
        assert!(msg.contains("CUDA_HOME"), "{msg}");
    }

    #[test]
    fn versioned_toolkits_sort_newest_first() {
        let root = std::env::temp_dir().join(format!("amp-kernels-test-{}", std::process::id()));
        for d in ["cuda-12.4", "cuda-12.10", "cuda-11.8", "cudnn", "other"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        let found = versioned_toolkits(&root);
        std::fs::remove_dir_all(&root).unwrap();
        let names: Vec<_> = found
            .iter()
            .map(|p| p.file_name().unwrap().to_owned())
            .collect();
        assert_eq!(names, ["cuda-12.10", "cuda-12.4", "cuda-11.8"]);
    }

    const LOG: &str = "\
ptxas info    : 0 bytes gmem
ptxas info    : Compiling entry function 'adamw_fwd_f32' for 'sm_80'
ptxas info    : Function properties for adamw_fwd_f32
ptxas         .     0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 22 registers, used 0 barriers, 420 bytes cmem[0]
ptxas info    : Function properties for helper
ptxas         .     16 bytes stack frame, 4 bytes spill stores, 4 bytes spill loads
ptxas info    : Compiling entry function 'big' for 'sm_80'
ptxas info    : Function properties for big
ptxas         .     1168 bytes stack frame, 1080 bytes spill stores, 1200 bytes spill loads
ptxas info    : Used 32 registers, used 1 barriers, 1168 bytes cumulative stack size
ptxas info    : Compile time = 60.545 ms
";

    #[test]
    fn ptxas_figures_per_kernel() {
        let r = parse_resources(LOG);
        assert_eq!(
            r,
            [
                KernelResources {
                    name: "adamw_fwd_f32".into(),
                    registers: 22,
                    stack_frame: 0,
                    spill_stores: 0,
                    spill_loads: 0,
                },
                KernelResources {
                    name: "big".into(),
                    registers: 32,
                    stack_frame: 1168,
                    spill_stores: 1080,
                    spill_loads: 1200,
                },
            ]
        );
        assert!(parse_resources("").is_empty());
        assert!(parse_resources("garbage\nUsed x registers\n").is_empty());
    }

    #[test]
    fn spill_failures_say_why() {
        let hint = failure_hint(&HOT, LOG);
        assert!(
            hint.contains("big (1080 bytes stored, 1200 loaded)"),
            "{hint}"
        );
        assert!(!hint.contains("adamw"), "{hint}");
        assert_eq!(failure_hint(&COLD, LOG), "");
    }

    #[test]
    fn errors_name_the_fix() {
        let msg = KernelError::NvrtcNotFound.to_string();
        assert!(msg.contains("LD_LIBRARY_PATH") && msg.contains("pip install nvidia-cuda-nvrtc"));
        let msg = KernelError::UnsupportedArch {
            arch: Arch::sm(70),
            version: (13, 5),
            supported: vec![75, 80],
        }
        .to_string();
        assert!(
            msg.contains("cannot compile for sm_70: it supports sm_75, sm_80"),
            "{msg}"
        );
    }
}
