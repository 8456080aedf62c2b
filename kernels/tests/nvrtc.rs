//! The kernel check: every module compiles for sm_80 and sm_90 with the
//! project's NVRTC driver (register spills in hot modules are errors), the
//! cubins hold every kernel the ABI in `README.md` names, and the Tensor Core
//! modules' machine code uses HMMA.
//!
//! Without NVRTC the compile test prints a skip line and passes, unless
//! `AMP_REQUIRE_NVRTC=1` (CI, `scripts/kernel-check.sh`), where a missing
//! NVRTC or nvdisasm fails it. Cubins go to `$AMP_KERNEL_OUT/<arch>/<module>.cubin`
//! (default: `target/tmp/kernel-cubins`). Run with `--nocapture` for the
//! register/spill table.

const DTYPES: [&str; 3] = ["f32", "f16", "bf16"];

/// Every kernel of `module`, per README.md's table (placeholders expanded).
fn expected_kernels(module: &str) -> Vec<String> {
    let per_dtype = |ops: &[&str]| -> Vec<String> {
        ops.iter()
            .flat_map(|op| DTYPES.iter().map(move |t| format!("{op}_{t}")))
            .collect()
    };
    // The ops amp's types allow in F32 only have an f32 kernel only.
    let wide_only =
        |ops: &[&str]| -> Vec<String> { ops.iter().map(|op| format!("{op}_f32")).collect() };
    match module {
        "cast" => DTYPES
            .iter()
            .flat_map(|s| {
                DTYPES
                    .iter()
                    .filter(move |d| *d != s)
                    .map(move |d| format!("cast_{s}_to_{d}"))
            })
            .collect(),
        "copy" => per_dtype(&["copy_fwd", "fill_fwd"]),
        "binary" => {
            let ops = ["add", "sub", "mul", "div", "maximum", "minimum"];
            let names: Vec<String> = ops
                .iter()
                .flat_map(|op| [format!("{op}_fwd"), format!("{op}_contig_fwd")])
                .collect();
            per_dtype(&names.iter().map(String::as_str).collect::<Vec<_>>())
        }
        "unary" => {
            let ops = [
                "neg",
                "abs",
                "sqrt",
                "sqr",
                "affine",
                "relu",
                "gelu",
                "gelu_tanh",
                "silu",
                "tanh",
                "sigmoid",
                "clamp",
            ];
            let wide = ["exp", "log", "pow", "rsqrt"];
            // The backward kernels: ops whose derivative depends on x (neg,
            // affine and exp have none; their backward is a scalar op or a mul).
            let names = |ops: &[&str]| -> Vec<String> {
                ops.iter()
                    .map(|op| format!("{op}_fwd"))
                    .chain(
                        ops.iter()
                            .filter(|op| !["neg", "affine", "exp"].contains(op))
                            .map(|op| format!("{op}_bwd")),
                    )
                    .collect()
            };
            let (any, f32_only) = (names(&ops), names(&wide));
            let mut v = per_dtype(&any.iter().map(String::as_str).collect::<Vec<_>>());
            v.extend(wide_only(
                &f32_only.iter().map(String::as_str).collect::<Vec<_>>(),
            ));
            v
        }
        "reduce" => {
            let mut v = per_dtype(&["sum_rows_fwd"]);
            v.extend(wide_only(&[
                "softmax_rows_fwd",
                "log_softmax_rows_fwd",
                "softmax_rows_bwd",
                "log_softmax_rows_bwd",
            ]));
            v
        }
        "norm" => wide_only(&[
            "layer_norm_fwd",
            "rms_norm_fwd",
            "layer_norm_bwd",
            "rms_norm_bwd",
            "layer_norm_wgrad",
            "rms_norm_wgrad",
        ]),
        "loss" => wide_only(&["cross_entropy_rows_fwd", "cross_entropy_rows_bwd"]),
        "embedding" => per_dtype(&["embedding_fwd", "embedding_bwd"]),
        "scaler" => per_dtype(&["unscale_fwd"]),
        "optim" => per_dtype(&["adamw_fwd", "sgd_fwd"]),
        "gemm" => vec!["gemm_wmma_fwd_f16".into(), "gemm_wmma_fwd_bf16".into()],
        _ => Vec::new(),
    }
}

/// README.md's module table: (module, the rest of its row).
fn readme_rows() -> Vec<(String, String)> {
    include_str!("../README.md")
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix("| `")?;
            let (name, row) = rest.split_once("` |")?;
            Some((name.to_string(), row.to_string()))
        })
        .collect()
}

/// The list above and README.md describe the same modules and kernels, and
/// lib.rs compiles exactly those modules (no NVRTC needed).
#[test]
fn expected_kernels_follow_the_readme() {
    let rows = readme_rows();
    let readme: Vec<&str> = rows.iter().map(|(n, _)| n.as_str()).collect();
    let listed: Vec<&str> = amp_kernels::MODULES.iter().map(|m| m.name).collect();
    assert_eq!(
        readme, listed,
        "README.md's table and lib.rs's MODULES differ"
    );
    for (module, row) in &rows {
        let kernels = expected_kernels(module);
        assert!(
            !kernels.is_empty(),
            "no expected kernels listed for `{module}`"
        );
        for k in kernels {
            // The operation word: the name without its dtype and direction.
            let stem = k.trim_end_matches(|c: char| c != '_').trim_end_matches('_');
            let op = stem
                .trim_end_matches("_fwd")
                .trim_end_matches("_bwd")
                .trim_end_matches("_contig");
            let found = if module == "cast" {
                row.contains("cast_<s>_to_<d>")
            } else {
                // A listed op (`for op in add, sub`) or a name's stem
                // (`sum_rows_fwd_<t>`); a backward kernel's row must also
                // give the backward's signature (`<op>_bwd_<t>`).
                let prefix = format!("{op}_");
                let words =
                    || row.split(|c: char| !(c.is_ascii_alphanumeric() || "_<>".contains(c)));
                let named = words().any(|w| w == op || w.starts_with(&prefix));
                let backward = !stem.ends_with("_bwd") || words().any(|w| w.contains("_bwd_"));
                named && backward
            };
            assert!(
                found,
                "README.md's `{module}` row does not name `{k}` (op `{op}`)"
            );
        }
    }
}

#[cfg(feature = "nvrtc")]
mod check {
    use std::collections::{BTreeMap, BTreeSet};
    use std::path::{Path, PathBuf};
    use std::process::Command;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::{Duration, Instant};

    use amp_kernels::nvrtc::{Arch, Compiled, KernelError, Nvrtc, Options};
    use amp_kernels::{MODULES, Module};

    use super::expected_kernels;

    const ARCHS: [Arch; 2] = [Arch::sm(80), Arch::sm(90)];

    fn required() -> bool {
        std::env::var("AMP_REQUIRE_NVRTC").is_ok_and(|v| v == "1")
    }

    /// `$AMP_KERNEL_OUT`, else `target/tmp/kernel-cubins`.
    fn out_dir() -> PathBuf {
        match std::env::var_os("AMP_KERNEL_OUT") {
            Some(d) if !d.is_empty() => PathBuf::from(d),
            _ => Path::new(env!("CARGO_TARGET_TMPDIR")).join("kernel-cubins"),
        }
    }

    /// nvdisasm: `$AMP_NVDISASM`, else on PATH, else in `../bin` of a
    /// `LD_LIBRARY_PATH` folder (the layout of the NVIDIA wheels and toolkits).
    fn find_nvdisasm() -> Result<PathBuf, String> {
        if let Some(p) = std::env::var_os("AMP_NVDISASM").filter(|p| !p.is_empty()) {
            let p = PathBuf::from(p);
            return if p.is_file() {
                Ok(p)
            } else {
                Err(format!("AMP_NVDISASM={} is not a file", p.display()))
            };
        }
        let dirs = |var: &str| -> Vec<PathBuf> {
            std::env::var_os(var)
                .map(|v| std::env::split_paths(&v).collect())
                .unwrap_or_default()
        };
        let on_path = dirs("PATH").into_iter().map(|d| d.join("nvdisasm"));
        let by_lib = dirs("LD_LIBRARY_PATH")
            .into_iter()
            .map(|d| d.join("../bin/nvdisasm"));
        on_path.chain(by_lib).find(|p| p.is_file()).ok_or_else(|| {
            "nvdisasm not found (AMP_NVDISASM, PATH, ../bin of LD_LIBRARY_PATH); \
             `pip install nvidia-cuda-nvdisasm` provides it"
                .to_string()
        })
    }

    /// Each kernel's SASS, from nvdisasm's listing (one `.text.<kernel>`
    /// section per kernel).
    fn kernels_sass(nvdisasm: &Path, cubin: &Path) -> Result<BTreeMap<String, String>, String> {
        let out = Command::new(nvdisasm)
            .arg(cubin)
            .output()
            .map_err(|e| format!("running {}: {e}", nvdisasm.display()))?;
        if !out.status.success() {
            return Err(format!(
                "{} {} failed: {}",
                nvdisasm.display(),
                cubin.display(),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(split_sass(&String::from_utf8_lossy(&out.stdout)))
    }

    /// nvdisasm's listing cut into kernels: the lines of each `.text.<kernel>`
    /// section.
    fn split_sass(text: &str) -> BTreeMap<String, String> {
        let mut kernels: BTreeMap<String, String> = BTreeMap::new();
        let mut current: Option<String> = None;
        for line in text.lines() {
            let t = line.trim_start();
            // `.section <name>,…` starts a section (not `.sectioninfo`/`.sectionflags`).
            if let Some(rest) = t
                .strip_prefix(".section")
                .filter(|r| r.starts_with([' ', '\t']))
            {
                current = rest
                    .trim_start()
                    .strip_prefix(".text.")
                    .and_then(|r| r.split(',').next())
                    .map(str::to_string);
                if let Some(name) = &current {
                    kernels.entry(name.clone()).or_default();
                }
            } else if let Some(name) = &current {
                let sass = kernels.entry(name.clone()).or_default();
                sass.push_str(t);
                sass.push('\n');
            }
        }
        kernels
    }

    #[test]
    fn sass_listing_splits_per_kernel() {
        let listing = "\
\t.section\t.nv.info.k1,\"\",@\"SHT_CUDA_INFO\"
\t.sectionflags\t@\"\"
        /*0000*/ HMMA.16816.F32 R0, R2, R4, R0 ;
\t.section\t.text.k1,\"ax\",@progbits
\t.sectioninfo\t@\"SHI_REGISTERS=126\"
        /*0000*/ HMMA.16816.F32.BF16 R0, R2, R4, R0 ;
\t.section\t.text.k2,\"ax\",@progbits
        /*0000*/ EXIT ;
\t.section\t.nv.shared.k1,\"aw\",@nobits
        /*0000*/ HMMA.16816.F32 R0, R2, R4, R0 ;
";
        let k = split_sass(listing);
        assert_eq!(k.keys().collect::<Vec<_>>(), ["k1", "k2"]);
        assert_eq!(k["k1"].matches("HMMA").count(), 1);
        assert!(!k["k2"].contains("HMMA") && k["k2"].contains("EXIT"));
    }

    type Outcome = (Module, Arch, Duration, Result<Compiled, KernelError>);

    /// Compile every (module, arch) on all cores, in MODULES × ARCHS order.
    fn compile_all(nvrtc: &Nvrtc) -> Vec<Outcome> {
        let jobs: Vec<(Module, Arch)> = MODULES
            .iter()
            .flat_map(|m| ARCHS.iter().map(move |a| (*m, *a)))
            .collect();
        let next = AtomicUsize::new(0);
        let results: Mutex<Vec<Option<Outcome>>> =
            Mutex::new((0..jobs.len()).map(|_| None).collect());
        let workers = std::thread::available_parallelism()
            .map_or(2, |n| n.get())
            .min(jobs.len());
        std::thread::scope(|s| {
            for _ in 0..workers {
                s.spawn(|| {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(&(module, arch)) = jobs.get(i) else {
                            break;
                        };
                        let start = Instant::now();
                        let r = nvrtc.compile(&module, arch, &Options::default());
                        let outcome = (module, arch, start.elapsed(), r);
                        results.lock().unwrap()[i] = Some(outcome);
                    }
                });
            }
        });
        results
            .into_inner()
            .unwrap()
            .into_iter()
            .map(|o| o.expect("every job ran"))
            .collect()
    }

    /// The resource table: one row per kernel, registers and spills per arch.
    fn print_table(outcomes: &[Outcome]) {
        let mut rows: BTreeMap<(usize, String), BTreeMap<Arch, String>> = BTreeMap::new();
        for (module, arch, _, r) in outcomes {
            let Ok(c) = r else { continue };
            let order = MODULES
                .iter()
                .position(|m| m.name == module.name)
                .unwrap_or(usize::MAX);
            for k in c.resources() {
                let spill = if k.spill_stores + k.spill_loads == 0 {
                    "0".to_string()
                } else {
                    format!("{}/{}", k.spill_stores, k.spill_loads)
                };
                let cell = format!("{:>4} {:>7}", k.registers, spill);
                rows.entry((order, k.name)).or_default().insert(*arch, cell);
            }
        }
        let mut header = format!("{:<10} {:<30}", "module", "kernel");
        for a in ARCHS {
            header.push_str(&format!(" | {:<6} regs  spills", a.to_string()));
        }
        println!("\n{header}\n{}", "-".repeat(header.len()));
        for ((order, kernel), cells) in &rows {
            let module = MODULES.get(*order).map_or("?", |m| m.name);
            let mut line = format!("{module:<10} {kernel:<30}");
            for a in ARCHS {
                let cell = cells.get(&a).map_or("     -       -", String::as_str);
                line.push_str(&format!(" |       {cell}"));
            }
            println!("{line}");
        }
        println!("(spills: bytes stored/loaded per thread)\n");
        for (module, arch, took, r) in outcomes {
            let status = if r.is_ok() { "ok" } else { "FAILED" };
            println!(
                "compiled {:<10} for {arch}: {status} in {:.2}s",
                module.name,
                took.as_secs_f64()
            );
        }
    }

    #[test]
    fn every_module_compiles_and_holds_its_kernels() {
        let nvrtc = match Nvrtc::load() {
            Ok(n) => n,
            Err(e) if required() => panic!("AMP_REQUIRE_NVRTC=1, but NVRTC cannot be used: {e}"),
            Err(KernelError::NvrtcNotFound) => {
                println!("skipped: NVRTC not found (set AMP_REQUIRE_NVRTC=1 to fail instead)");
                return;
            }
            Err(e) => {
                println!("skipped: {e} (set AMP_REQUIRE_NVRTC=1 to fail instead)");
                return;
            }
        };
        let (major, minor) = nvrtc.version();
        println!(
            "NVRTC {major}.{minor}, headers: {}",
            nvrtc.headers().option()
        );
        let start = Instant::now();
        let outcomes = compile_all(&nvrtc);
        println!(
            "compiled {} programs in {:.1}s",
            outcomes.len(),
            start.elapsed().as_secs_f64()
        );
        print_table(&outcomes);

        let mut problems: Vec<String> = Vec::new();
        let out = out_dir();
        let mut written: Vec<(Module, Arch, PathBuf)> = Vec::new();
        for (module, arch, _, r) in &outcomes {
            match r {
                Ok(c) => {
                    let dir = out.join(arch.to_string());
                    let path = dir.join(format!("{}.cubin", module.name));
                    let w =
                        std::fs::create_dir_all(&dir).and_then(|_| std::fs::write(&path, &c.cubin));
                    match w {
                        Ok(()) => written.push((*module, *arch, path)),
                        Err(e) => problems.push(format!("writing {}: {e}", path.display())),
                    }
                }
                Err(e) => problems.push(e.to_string()),
            }
        }
        println!("cubins in {}", out.display());

        match find_nvdisasm() {
            Ok(nvdisasm) => {
                let mut hmma: Vec<String> = Vec::new();
                // The kernels of the sm_90 cubins, one `module kernel` a line:
                // the emulator's coverage check compares what it ran with it.
                let mut listed: BTreeSet<String> = BTreeSet::new();
                for (module, arch, path) in &written {
                    let kernels = match kernels_sass(&nvdisasm, path) {
                        Ok(k) => k,
                        Err(e) => {
                            problems.push(e);
                            continue;
                        }
                    };
                    let have: BTreeSet<&str> = kernels.keys().map(String::as_str).collect();
                    if *arch == Arch::sm(90) {
                        listed.extend(have.iter().map(|k| format!("{} {k}", module.name)));
                    }
                    for want in expected_kernels(module.name) {
                        if !have.contains(want.as_str()) {
                            problems.push(format!(
                                "{arch} `{}`: kernel `{want}` (README.md) is missing from the cubin",
                                module.name
                            ));
                        }
                    }
                    if module.tensor_cores {
                        for (name, sass) in &kernels {
                            let n = sass.matches("HMMA").count();
                            if n == 0 {
                                problems.push(format!(
                                    "{arch} `{}`: kernel `{name}` has no HMMA/HGMMA instruction: \
                                     it does not use the Tensor Cores",
                                    module.name
                                ));
                            } else {
                                hmma.push(format!("{arch} {name}: {n} HMMA"));
                            }
                        }
                    }
                }
                println!(
                    "nvdisasm {}: Tensor Core check: {}",
                    nvdisasm.display(),
                    hmma.join(", ")
                );
                let list = out.join("kernels.txt");
                let text: String = listed.iter().map(|l| format!("{l}\n")).collect();
                match std::fs::write(&list, text) {
                    Ok(()) => println!("{} kernels listed in {}", listed.len(), list.display()),
                    Err(e) => problems.push(format!("writing {}: {e}", list.display())),
                }
            }
            Err(e) if required() => problems.push(format!("AMP_REQUIRE_NVRTC=1: {e}")),
            Err(e) => println!("skipped the SASS checks: {e}"),
        }
        assert!(
            problems.is_empty(),
            "kernel check failed:\n\n{}",
            problems.join("\n\n")
        );
    }

    /// A program NVRTC rejects comes back as an error naming the module,
    /// the architecture and the options, with NVRTC's log; a hot module that
    /// spills fails under the strict options and compiles without them.
    #[test]
    fn failures_name_module_arch_options_and_log() {
        let Ok(nvrtc) = Nvrtc::load() else {
            println!("skipped: NVRTC not found");
            return;
        };
        let broken = Module {
            name: "broken",
            body: "extern \"C\" __global__ void k() { undeclared(); }",
            tensor_cores: false,
            hot: false,
        };
        let e = nvrtc
            .compile(&broken, Arch::sm(80), &Options::default())
            .unwrap_err();
        let msg = e.to_string();
        for part in ["`broken`", "sm_80", "--fmad=false", "undeclared"] {
            assert!(msg.contains(part), "{part} missing from: {msg}");
        }

        // A local array indexed at run time lives in local memory, and a
        // register cap forces spills.
        let spilling = Module {
            name: "spilling",
            body: r#"extern "C" __global__ void spill(float* x, int n) {
                float a[64];
                for (int j = 0; j < 64; ++j) a[j] = x[j * n + threadIdx.x];
                float s = 0.0f;
                for (int j = 0; j < 64; ++j) s += a[(j * threadIdx.x) & 63] * a[j];
                x[threadIdx.x] = s;
            }"#,
            tensor_cores: false,
            hot: true,
        };
        let capped = |strict_spills| Options {
            strict_spills,
            extra: vec!["--maxrregcount=32".into()],
        };
        let e = nvrtc
            .compile(&spilling, Arch::sm(80), &capped(true))
            .unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("register spills are errors in hot modules") && msg.contains("spill ("),
            "{msg}"
        );
        let ok = nvrtc
            .compile(&spilling, Arch::sm(80), &capped(false))
            .unwrap();
        let r = ok.resources();
        assert_eq!(r.len(), 1);
        assert!(r[0].spill_stores > 0 && r[0].registers <= 32, "{r:?}");
        assert!(ok.cubin.starts_with(b"\x7fELF"), "a cubin is an ELF file");

        let e = nvrtc
            .compile(&spilling, Arch::sm(10), &Options::default())
            .unwrap_err();
        assert!(e.to_string().contains("cannot compile for sm_10"), "{e}");
    }
}
