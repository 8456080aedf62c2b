// The text NVRTC compiles for one module: the prelude, then the module's own
// file, with a `#line` so diagnostics name the `.cu` file. Included by lib.rs
// and by build.rs (the emulator compiles exactly this text).

/// The full program text of module `name` with file contents `body`.
pub fn module_source(prelude: &str, name: &str, body: &str) -> String {
    format!("{prelude}\n#line 1 \"{name}.cu\"\n{body}")
}
