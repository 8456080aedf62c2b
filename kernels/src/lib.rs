//! The CUDA C sources of amp's kernels, embedded as strings, and (with the
//! `nvrtc` feature) the NVRTC driver that compiles them to cubins.
//!
//! Nothing here needs a CUDA toolkit to build: sources are plain text, and NVRTC
//! is loaded at run time. The runtime (`amp-runtime`, feature `cuda`) compiles
//! each [`Module`] at first use for the device's own architecture and caches it
//! per device. The kernel ABI (names, arguments, launch rules) is in this crate's
//! `README.md`.
//!
//! ```
//! let cast = amp_kernels::module("cast").unwrap();
//! // What NVRTC compiles: the prelude, then the module's own file.
//! assert!(cast.source().starts_with(amp_kernels::PRELUDE));
//! assert!(cast.source().ends_with(cast.body));
//! assert!(amp_kernels::MODULES.iter().any(|m| m.tensor_cores));
//! ```

#[cfg(feature = "emulate")]
pub mod emulate;
#[cfg(feature = "nvrtc")]
pub mod nvrtc;

include!("source_text.rs");

/// Prepended to every module: includes, `u64`/`i64`, conversions, `Strided`.
pub const PRELUDE: &str = include_str!("prelude.cuh");

/// One NVRTC program: a `.cu` file of related kernels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Module {
    /// The file stem (`cast` for `cast.cu`), also the cache key.
    pub name: &'static str,
    /// The source without the prelude.
    pub body: &'static str,
    /// Kernels meant for Tensor Cores: the CI check asserts HMMA in their SASS.
    pub tensor_cores: bool,
    /// On the training step's hot path: register spills are a compile error.
    pub hot: bool,
}

impl Module {
    /// The full program text NVRTC compiles: the prelude, then the body.
    pub fn source(&self) -> String {
        module_source(PRELUDE, self.name, self.body)
    }
}

macro_rules! modules {
    ($($name:literal: tensor_cores = $tc:literal, hot = $hot:literal;)*) => {
        /// Every kernel module, in the order the CI check compiles them.
        pub const MODULES: &[Module] = &[
            $(Module {
                name: $name,
                body: include_str!(concat!($name, ".cu")),
                tensor_cores: $tc,
                hot: $hot,
            },)*
        ];
    };
}

modules! {
    "cast": tensor_cores = false, hot = true;
    "copy": tensor_cores = false, hot = true;
    "binary": tensor_cores = false, hot = true;
    "unary": tensor_cores = false, hot = true;
    "reduce": tensor_cores = false, hot = true;
    "norm": tensor_cores = false, hot = true;
    "loss": tensor_cores = false, hot = true;
    "embedding": tensor_cores = false, hot = true;
    "scaler": tensor_cores = false, hot = true;
    "optim": tensor_cores = false, hot = true;
    "gemm": tensor_cores = true, hot = false;
}

/// The module called `name`.
pub fn module(name: &str) -> Option<&'static Module> {
    MODULES.iter().find(|m| m.name == name)
}
