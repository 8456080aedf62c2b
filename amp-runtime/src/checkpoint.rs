//! Checkpoints: named tensors plus string metadata, saved as safetensors.
//!
//! Models, optimizers (master weights, moments) and the GradScaler write
//! their state into one [`StateDict`] under prefixes, and read it back with
//! every name, dtype and shape checked.
//!
//! Files are [safetensors](https://github.com/huggingface/safetensors): F32,
//! F16 and BF16 tensors stored bit-exactly, metadata in the header's
//! `__metadata__`, readable by PyTorch, JAX and candle. A save never leaves a
//! half-written file behind (it writes a temporary file and renames it over
//! the target); a load checks the whole file before trusting any size in it,
//! and a corrupt or foreign file is an [`Error::Checkpoint`], never a panic.
//!
//! A state is host data: tensors on a GPU are copied to the host when they
//! are inserted, and loading into parameters on a GPU copies the values
//! there (the file format does not know about devices).
//!
//! ```
//! use amp::checkpoint::StateDict;
//! use amp::{Tensor, F16};
//! # fn main() -> amp::Result<()> {
//! let path = std::env::temp_dir().join(format!("amp-doc-ckpt-{}.safetensors", std::process::id()));
//! let w = Tensor::<F16>::randn([4, 3], 0);
//!
//! let mut state = StateDict::new();
//! state.insert("layer.weight", &w);
//! state.insert_meta("step", "1200");
//! state.save(&path)?;
//!
//! let back = StateDict::load(&path)?;
//! assert_eq!(back.get::<F16>("layer.weight", w.shape())?.to_vec(), w.to_vec());
//! assert_eq!(back.meta_parse::<u64>("step")?, 1200);
//! # std::fs::remove_file(&path).ok();
//! # Ok(()) }
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use half::{bf16, f16};
use safetensors::{Dtype, SafeTensorError, SafeTensors};

use crate::cpu::CpuStorage;
use crate::device::Device;
use crate::error::{Error, Result};
use crate::nn::{Module, Parameter};
use crate::precision::{DType, Precision};
use crate::shape::Shape;
use crate::storage::{Storage, TensorCore};
use crate::tensor::Tensor;

/// Named tensors and metadata: what a checkpoint file holds.
///
/// Tensors keep their precision: a tensor inserted as `Tensor<F16>` is saved as
/// F16 and must be read back with [`get::<F16>`](StateDict::get).
#[derive(Clone, Debug, Default)]
pub struct StateDict {
    tensors: BTreeMap<String, TensorCore>,
    meta: BTreeMap<String, String>,
    /// The file this state was loaded from, so that later errors
    /// (`load_module`) can name it.
    source: Option<PathBuf>,
}

impl StateDict {
    /// An empty state.
    pub fn new() -> Self {
        Self::default()
    }

    /// Store `tensor` under `name` (replacing any previous one).
    ///
    /// A tensor on a GPU is copied to the host, which waits for the GPU (a
    /// device failure there panics with the driver's message: this method
    /// returns no `Result`).
    pub fn insert<P: Precision>(&mut self, name: impl Into<String>, tensor: &Tensor<P>) {
        self.tensors
            .insert(name.into(), on_host(tensor.detach().into_core()));
    }

    /// The tensor stored under `name`, which must have precision `P` and
    /// `shape`.
    pub fn get<P: Precision>(&self, name: &str, shape: &Shape) -> Result<Tensor<P>> {
        let Some(core) = self.tensors.get(name) else {
            return Err(Error::invalid(
                "StateDict::get",
                format!(
                    "no tensor named `{name}` in the checkpoint; it holds {} tensors{}",
                    self.tensors.len(),
                    did_you_mean(name, self.tensors.keys())
                ),
            ));
        };
        if core.dtype() != P::DTYPE {
            return Err(Error::invalid(
                "StateDict::get",
                format!(
                    "`{name}` is {:?} in the checkpoint but {:?} is expected; the checkpoint was saved with another precision",
                    core.dtype(),
                    P::DTYPE
                ),
            ));
        }
        if core.shape() != shape {
            return Err(Error::shape_mismatch(
                "StateDict::get",
                shape,
                core.shape(),
                format!(
                    "`{name}` in the checkpoint has another shape than the model's; was it saved from another model configuration?"
                ),
            ));
        }
        Ok(Tensor::from_core(core.clone()))
    }

    /// Whether a tensor named `name` is stored.
    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// The stored tensor names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }

    /// Number of stored tensors.
    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    /// Whether no tensor is stored (metadata may still be).
    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }

    /// Store a metadata string (scalars such as a step count or a loss scale).
    pub fn insert_meta(&mut self, key: impl Into<String>, value: impl Into<String>) {
        self.meta.insert(key.into(), value.into());
    }

    /// The metadata string under `key`.
    pub fn meta(&self, key: &str) -> Result<&str> {
        self.meta.get(key).map(String::as_str).ok_or_else(|| {
            Error::invalid(
                "StateDict::meta",
                format!(
                    "no metadata `{key}` in the checkpoint{}",
                    did_you_mean(key, self.meta.keys())
                ),
            )
        })
    }

    /// The metadata under `key`, parsed (e.g. as `f32` or `u64`).
    pub fn meta_parse<T: std::str::FromStr>(&self, key: &str) -> Result<T> {
        let s = self.meta(key)?;
        s.parse().map_err(|_| {
            Error::invalid(
                "StateDict::meta",
                format!(
                    "metadata `{key}` is `{s}`, which is not a valid {}",
                    std::any::type_name::<T>()
                ),
            )
        })
    }

    /// The metadata keys, sorted.
    pub fn meta_keys(&self) -> impl Iterator<Item = &str> {
        self.meta.keys().map(String::as_str)
    }

    #[allow(dead_code)] // for optimizer state that iterates its tensors
    pub(crate) fn tensors(&self) -> &BTreeMap<String, TensorCore> {
        &self.tensors
    }

    #[allow(dead_code)] // for optimizer state that iterates its metadata
    pub(crate) fn metadata(&self) -> &BTreeMap<String, String> {
        &self.meta
    }

    // ---- files ----------------------------------------------------------------

    /// Write the state to `path` as a safetensors file, atomically: the data
    /// goes to a temporary file in the same directory, is flushed to disk, and
    /// then renamed over `path`. If anything fails, the temporary file is
    /// removed and an existing file at `path` is left as it was.
    ///
    /// ```
    /// use amp::checkpoint::StateDict;
    /// use amp::{Tensor, BF16, F32};
    /// # fn main() -> amp::Result<()> {
    /// let path = std::env::temp_dir().join(format!("amp-doc-save-{}.safetensors", std::process::id()));
    /// let mut state = StateDict::new();
    /// state.insert("master.w", &Tensor::<F32>::randn([8], 0));
    /// state.insert("w", &Tensor::<BF16>::randn([8], 0));
    /// state.insert_meta("loss_scale", "65536");
    /// state.save(&path)?;
    /// assert_eq!(StateDict::load(&path)?.len(), 2);
    ///
    /// // A directory that does not exist: an error naming it, nothing written.
    /// let bad = std::env::temp_dir().join("amp-no-such-dir").join("x.safetensors");
    /// assert!(state.save(&bad).unwrap_err().to_string().contains("amp-no-such-dir"));
    /// # std::fs::remove_file(&path).ok();
    /// # Ok(()) }
    /// ```
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        const OP: &str = "StateDict::save";
        let path = path.as_ref();
        let encoded = self
            .encode()
            .map_err(|msg| checkpoint_error(OP, path, msg))?;
        let Some(file_name) = path.file_name() else {
            return Err(checkpoint_error(
                OP,
                path,
                "the path names no file; give a file path such as `model.safetensors`",
            ));
        };
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let (tmp, file) = TempFile::create(dir, file_name)?;
        let write_error = |e| io_error(OP, "write", &tmp.path, e);
        let mut w = BufWriter::new(file);
        encoded.write(&mut w).map_err(write_error)?;
        let file = w.into_inner().map_err(|e| write_error(e.into_error()))?;
        // The data must be on disk before the rename makes it the checkpoint,
        // or a crash could leave a renamed but empty file.
        file.sync_all()
            .map_err(|e| io_error(OP, "flush to disk", &tmp.path, e))?;
        drop(file);
        std::fs::rename(&tmp.path, path).map_err(|e| io_error(OP, "replace", path, e))?;
        tmp.keep();
        // Make the rename itself durable. Best effort: not every platform or
        // file system can sync a directory, and the file is complete either way.
        #[cfg(unix)]
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }

    /// Read a safetensors file written by [`save`](StateDict::save) (or by
    /// PyTorch's `safetensors.torch.save_file`, for F32/F16/BF16 tensors).
    ///
    /// The file is read once and checked as a whole before any size in its
    /// header is trusted. Every failure is an error naming the file and what
    /// is wrong with it: missing or unreadable ([`Error::Io`]), empty,
    /// truncated, not safetensors, inconsistent sizes or offsets, or a dtype
    /// amp cannot hold ([`Error::Checkpoint`]).
    ///
    /// ```
    /// use amp::checkpoint::StateDict;
    /// let path = std::env::temp_dir().join(format!("amp-doc-load-{}.safetensors", std::process::id()));
    /// std::fs::write(&path, b"not a checkpoint").unwrap();
    /// let err = StateDict::load(&path).unwrap_err().to_string();
    /// assert!(err.contains("amp-doc-load"), "{err}");
    /// assert!(err.contains("header length"), "{err}");
    /// # std::fs::remove_file(&path).ok();
    /// ```
    pub fn load(path: impl AsRef<Path>) -> Result<StateDict> {
        const OP: &str = "StateDict::load";
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| io_error(OP, "read", path, e))?;
        let mut state = parse(&bytes).map_err(|msg| checkpoint_error(OP, path, msg))?;
        state.source = Some(path.to_path_buf());
        Ok(state)
    }

    /// The state as the bytes of a safetensors file (what
    /// [`save`](StateDict::save) writes).
    ///
    /// ```
    /// use amp::checkpoint::StateDict;
    /// use amp::{Tensor, F32};
    /// # fn main() -> amp::Result<()> {
    /// let mut state = StateDict::new();
    /// state.insert("x", &Tensor::<F32>::ones([2]));
    /// let bytes = state.to_bytes()?;
    /// let back = StateDict::from_bytes(&bytes)?;
    /// assert_eq!(back.get::<F32>("x", &[2].into())?.to_vec(), vec![1.0, 1.0]);
    /// # Ok(()) }
    /// ```
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        const OP: &str = "StateDict::to_bytes";
        let encoded = self
            .encode()
            .map_err(|msg| checkpoint_error(OP, Path::new(IN_MEMORY), msg))?;
        let mut out = Vec::with_capacity(encoded.file_len());
        encoded
            .write(&mut out)
            .map_err(|e| io_error(OP, "write", Path::new(IN_MEMORY), e))?;
        Ok(out)
    }

    /// Parse the bytes of a safetensors file, with the checks of
    /// [`load`](StateDict::load).
    pub fn from_bytes(bytes: &[u8]) -> Result<StateDict> {
        parse(bytes)
            .map_err(|msg| checkpoint_error("StateDict::from_bytes", Path::new(IN_MEMORY), msg))
    }

    /// The header and the tensors in file order.
    fn encode(&self) -> std::result::Result<Encoded<'_>, String> {
        // safetensors' order: widest dtype first, then by name, so that every
        // tensor's data starts at a multiple of its element size.
        let mut order: Vec<(&str, &TensorCore)> =
            self.tensors.iter().map(|(n, c)| (n.as_str(), c)).collect();
        order.sort_by(|(a, x), (b, y)| {
            (st_dtype(y.dtype()).cmp(&st_dtype(x.dtype()))).then(a.cmp(b))
        });
        // Written by hand rather than by the safetensors crate: its metadata
        // map is a HashMap, whose random order would make two saves of the
        // same state differ. This is the JSON serde_json writes for the same
        // header, metadata sorted.
        let mut json = String::from("{");
        if !self.meta.is_empty() {
            push_json_string(&mut json, METADATA_KEY);
            json.push_str(":{");
            for (i, (k, v)) in self.meta.iter().enumerate() {
                if i > 0 {
                    json.push(',');
                }
                push_json_string(&mut json, k);
                json.push(':');
                push_json_string(&mut json, v);
            }
            json.push('}');
        }
        let mut offset = 0usize;
        for (name, core) in &order {
            // The header is one JSON object whose keys are the tensor names
            // plus this one: a tensor under it would corrupt the file.
            if *name == METADATA_KEY {
                return Err(format!(
                    "a tensor is named `{METADATA_KEY}`, which safetensors reserves for metadata; rename it"
                ));
            }
            if json.len() > 1 {
                json.push(',');
            }
            push_json_string(&mut json, name);
            let dims: Vec<String> = core.shape().dims().iter().map(|d| d.to_string()).collect();
            let end = offset + core.shape().numel() * core.dtype().size_in_bytes();
            json.push_str(&format!(
                r#":{{"dtype":"{:?}","shape":[{}],"data_offsets":[{offset},{end}]}}"#,
                st_dtype(core.dtype()),
                dims.join(",")
            ));
            offset = end;
        }
        json.push('}');
        let mut header = json.into_bytes();
        // Padded with spaces so the data starts 8-byte aligned, as safetensors does.
        header.resize(header.len().next_multiple_of(8), b' ');
        if header.len() as u64 > MAX_HEADER_BYTES {
            return Err(format!(
                "the header would be {} bytes, over safetensors' limit of {MAX_HEADER_BYTES}: too many tensors or too much metadata for one file",
                header.len()
            ));
        }
        Ok(Encoded {
            header,
            order: order.into_iter().map(|(_, c)| c).collect(),
            data_len: offset,
        })
    }

    fn source_path(&self) -> &Path {
        self.source.as_deref().unwrap_or(Path::new(IN_MEMORY))
    }

    // ---- modules --------------------------------------------------------------

    /// Store every parameter of `module` under `prefix.name` (or `name` when
    /// `prefix` is empty), the names [`Module::visit`] gives.
    ///
    /// One file can hold a model and its optimizer under different prefixes.
    ///
    /// ```
    /// use amp::checkpoint::StateDict;
    /// use amp::nn::{join, Module, Parameter};
    /// use amp::{Precision, Tensor, F32};
    ///
    /// struct Linear<P: Precision> { weight: Parameter<P>, bias: Parameter<P> }
    ///
    /// impl<P: Precision> Module<P> for Linear<P> {
    ///     fn visit(&self, prefix: &str, f: &mut dyn FnMut(&str, &Parameter<P>)) {
    ///         f(&join(prefix, "weight"), &self.weight);
    ///         f(&join(prefix, "bias"), &self.bias);
    ///     }
    /// }
    ///
    /// # fn main() -> amp::Result<()> {
    /// let model = Linear::<F32> {
    ///     weight: Parameter::new(Tensor::randn([3, 4], 0)),
    ///     bias: Parameter::new(Tensor::zeros([3])),
    /// };
    /// let mut state = StateDict::new();
    /// state.insert_module("model", &model);
    /// state.insert_meta("step", "10");
    /// assert_eq!(state.names().collect::<Vec<_>>(), ["model.bias", "model.weight"]);
    ///
    /// let fresh = Linear::<F32> {
    ///     weight: Parameter::new(Tensor::zeros([3, 4])),
    ///     bias: Parameter::new(Tensor::ones([3])),
    /// };
    /// state.load_module("model", &fresh)?;
    /// assert_eq!(fresh.weight.value().to_vec(), model.weight.value().to_vec());
    /// # Ok(()) }
    /// ```
    pub fn insert_module<P: Precision>(
        &mut self,
        prefix: &str,
        module: &(impl Module<P> + ?Sized),
    ) {
        module.visit(prefix, &mut |name, p| self.insert(name, &p.value()));
    }

    /// Set every parameter of `module` from the tensor stored under its name
    /// (`prefix.name`), strictly, like PyTorch's `load_state_dict(strict=True)`:
    /// every parameter must be present with the module's precision and shape,
    /// and no other tensor may be stored under `prefix` (with an empty prefix:
    /// no other tensor at all). All of this is checked before any parameter is
    /// changed, so a failed load leaves the module as it was; the error lists
    /// every missing, mismatched and unexpected name.
    ///
    /// ```
    /// use amp::checkpoint::StateDict;
    /// use amp::nn::{join, Module, Parameter};
    /// use amp::{Precision, Tensor, F16, F32};
    ///
    /// struct Scale<P: Precision> { w: Parameter<P> }
    /// impl<P: Precision> Module<P> for Scale<P> {
    ///     fn visit(&self, prefix: &str, f: &mut dyn FnMut(&str, &Parameter<P>)) {
    ///         f(&join(prefix, "w"), &self.w);
    ///     }
    /// }
    ///
    /// let mut state = StateDict::new();
    /// state.insert_module("", &Scale { w: Parameter::new(Tensor::<F16>::ones([3])) });
    ///
    /// // An F32 model cannot load F16 weights silently.
    /// let model = Scale { w: Parameter::new(Tensor::<F32>::zeros([3])) };
    /// let err = state.load_module("", &model).unwrap_err().to_string();
    /// assert!(err.contains("`w`") && err.contains("F16"), "{err}");
    /// assert_eq!(model.w.value().to_vec(), vec![0.0; 3]); // unchanged
    /// ```
    pub fn load_module<P: Precision>(
        &self,
        prefix: &str,
        module: &(impl Module<P> + ?Sized),
    ) -> Result<()> {
        const OP: &str = "StateDict::load_module";
        let mut params: Vec<(String, Parameter<P>)> = Vec::new();
        module.visit(prefix, &mut |name, p| {
            params.push((name.to_string(), p.clone()))
        });

        let mut missing = Vec::new();
        let mut mismatched = Vec::new();
        let mut values = Vec::with_capacity(params.len());
        for (name, p) in &params {
            match self.tensors.get(name) {
                None => missing.push(format!("`{name}`")),
                Some(core) if core.dtype() != P::DTYPE => mismatched.push(format!(
                    "`{name}` is {:?} in the checkpoint but the module's is {:?}",
                    core.dtype(),
                    P::DTYPE
                )),
                Some(core) if core.shape() != p.shape() => mismatched.push(format!(
                    "`{name}` has shape {} in the checkpoint but the module's is {}",
                    core.shape(),
                    p.shape()
                )),
                Some(core) => values.push((p, Tensor::<P>::from_core(core.clone()))),
            }
        }
        let expected: BTreeSet<&str> = params.iter().map(|(n, _)| n.as_str()).collect();
        let under = format!("{prefix}.");
        let unexpected: Vec<String> = self
            .tensors
            .keys()
            .filter(|k| prefix.is_empty() || k.starts_with(&under))
            .filter(|k| !expected.contains(k.as_str()))
            .map(|k| format!("`{k}`"))
            .collect();

        if !(missing.is_empty() && mismatched.is_empty() && unexpected.is_empty()) {
            let mut parts = Vec::new();
            if !missing.is_empty() {
                parts.push(format!("missing {}", list(&missing)));
            }
            if !mismatched.is_empty() {
                parts.push(format!("mismatched: {}", list(&mismatched)));
            }
            if !unexpected.is_empty() {
                let whom = if prefix.is_empty() {
                    String::new()
                } else {
                    format!(" under `{prefix}`")
                };
                parts.push(format!(
                    "unexpected{whom} {} (the checkpoint is from another model, or give a prefix that holds only this module's tensors)",
                    list(&unexpected)
                ));
            }
            let mut msg = format!(
                "does not fit the module, nothing was loaded: {}",
                parts.join("; ")
            );
            if values.is_empty()
                && mismatched.is_empty()
                && !missing.is_empty()
                && !self.tensors.is_empty()
            {
                let some: Vec<String> = self
                    .tensors
                    .keys()
                    .take(3)
                    .map(|k| format!("`{k}`"))
                    .collect();
                msg.push_str(&format!(
                    "; no parameter was found under prefix `{prefix}`, the checkpoint holds {}: is the prefix right?",
                    some.join(", ")
                ));
            }
            return Err(checkpoint_error(OP, self.source_path(), msg));
        }
        // Every value goes to its parameter's device before any parameter
        // changes, so a failed upload leaves the module as it was.
        let mut placed = Vec::with_capacity(values.len());
        for (p, v) in values {
            let device = p.value().device();
            placed.push((p, Tensor::<P>::from_core(v.core().to_device(device)?)));
        }
        for (p, v) in placed {
            // Cannot fail: the shapes were checked above.
            p.set(v)?;
        }
        Ok(())
    }
}

/// A contiguous host copy of `core` (itself when it already is one).
fn on_host(core: TensorCore) -> TensorCore {
    #[cfg(feature = "cuda")]
    if core.device().is_cuda() {
        // The download is contiguous already.
        return crate::storage::device_op(core.to_device(Device::Cpu));
    }
    debug_assert_eq!(core.device(), Device::Cpu);
    core.contiguous()
}

/// Save every parameter of `module` to `path` (names as [`Module::visit`]
/// gives them, no prefix). Shorthand for [`StateDict::insert_module`] with an
/// empty prefix and [`StateDict::save`].
///
/// ```
/// use amp::checkpoint::{load_module, save_module};
/// use amp::nn::{join, Module, Parameter};
/// use amp::{Precision, Tensor, F32};
///
/// struct Scale<P: Precision> { w: Parameter<P> }
/// impl<P: Precision> Module<P> for Scale<P> {
///     fn visit(&self, prefix: &str, f: &mut dyn FnMut(&str, &Parameter<P>)) {
///         f(&join(prefix, "w"), &self.w);
///     }
/// }
///
/// # fn main() -> amp::Result<()> {
/// let path = std::env::temp_dir().join(format!("amp-doc-module-{}.safetensors", std::process::id()));
/// let trained = Scale { w: Parameter::new(Tensor::<F32>::randn([5], 7)) };
/// save_module(&trained, &path)?;
///
/// let model = Scale { w: Parameter::new(Tensor::<F32>::zeros([5])) };
/// load_module(&model, &path)?;
/// assert_eq!(model.w.value().to_vec(), trained.w.value().to_vec());
/// # std::fs::remove_file(&path).ok();
/// # Ok(()) }
/// ```
pub fn save_module<P: Precision>(
    module: &(impl Module<P> + ?Sized),
    path: impl AsRef<Path>,
) -> Result<()> {
    let mut state = StateDict::new();
    state.insert_module("", module);
    state.save(path)
}

/// Load every parameter of `module` from `path`, strictly (see
/// [`StateDict::load_module`]): the file must hold exactly the module's
/// parameters, with its precision and shapes. On error the module is
/// unchanged.
pub fn load_module<P: Precision>(
    module: &(impl Module<P> + ?Sized),
    path: impl AsRef<Path>,
) -> Result<()> {
    StateDict::load(path)?.load_module("", module)
}

// ---- the format ----------------------------------------------------------------

/// The header key safetensors reserves for string metadata.
const METADATA_KEY: &str = "__metadata__";

/// safetensors' own limit on the JSON header (100 MB).
const MAX_HEADER_BYTES: u64 = 100_000_000;

/// What errors about a state that is not from a file call it.
const IN_MEMORY: &str = "<in memory>";

/// A state laid out as a safetensors file, ready to be written.
struct Encoded<'a> {
    header: Vec<u8>,
    order: Vec<&'a TensorCore>,
    data_len: usize,
}

impl Encoded<'_> {
    fn file_len(&self) -> usize {
        8 + self.header.len() + self.data_len
    }

    /// Stream the file into `w`, one bounded chunk at a time, so that saving
    /// never holds a second copy of the model in memory.
    fn write(&self, w: &mut impl Write) -> std::io::Result<()> {
        w.write_all(&(self.header.len() as u64).to_le_bytes())?;
        w.write_all(&self.header)?;
        for core in &self.order {
            let c = core.contiguous();
            let l = c.layout();
            let range = l.offset()..l.offset() + l.shape().numel();
            // safetensors is little-endian; bits are copied as they are, so
            // NaN payloads, infinities and subnormals survive unchanged.
            match c.dtype() {
                DType::F32 => write_le(w, &c.cpu_slice::<f32>()[range], |x| {
                    x.to_bits().to_le_bytes()
                })?,
                DType::F16 => write_le(w, &c.cpu_slice::<f16>()[range], |x| {
                    x.to_bits().to_le_bytes()
                })?,
                DType::BF16 => write_le(w, &c.cpu_slice::<bf16>()[range], |x| {
                    x.to_bits().to_le_bytes()
                })?,
            }
        }
        Ok(())
    }
}

fn write_le<T: Copy, const N: usize>(
    w: &mut impl Write,
    values: &[T],
    bytes: impl Fn(T) -> [u8; N],
) -> std::io::Result<()> {
    const CHUNK: usize = 1 << 14;
    let mut buf = Vec::with_capacity(CHUNK.min(values.len()) * N);
    for chunk in values.chunks(CHUNK) {
        buf.clear();
        for &x in chunk {
            buf.extend_from_slice(&bytes(x));
        }
        w.write_all(&buf)?;
    }
    Ok(())
}

fn st_dtype(d: DType) -> Dtype {
    match d {
        DType::F32 => Dtype::F32,
        DType::F16 => Dtype::F16,
        DType::BF16 => Dtype::BF16,
    }
}

/// `s` as a JSON string, escaped as serde_json escapes it.
fn push_json_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Parse a whole safetensors file; the error is the message, without the path.
fn parse(bytes: &[u8]) -> std::result::Result<StateDict, String> {
    check_header(bytes)?;
    // Validates the header against the file: offsets contiguous and in
    // range, data lengths equal to shape × dtype size, no overflow, and the
    // last tensor ending exactly at the end of the file.
    let (n, header) = SafeTensors::read_metadata(bytes).map_err(|e| explain(e, bytes.len()))?;
    let data = bytes.get(8 + n..).unwrap_or_default();
    let mut state = StateDict::new();
    for (name, info) in header.tensors() {
        let shape = Shape::from(info.shape.clone());
        let (start, end) = info.data_offsets;
        // Checked by safetensors already; `get` keeps a corrupt file from
        // ever becoming a panic should that change.
        let Some(raw) = data.get(start..end.max(start)) else {
            return Err(format!(
                "tensor `{name}` has data offsets {start}..{end} outside the {} data bytes",
                data.len()
            ));
        };
        let storage = match info.dtype {
            Dtype::F32 => {
                let (words, _) = raw.as_chunks::<4>();
                CpuStorage::F32(
                    words
                        .iter()
                        .map(|w| f32::from_bits(u32::from_le_bytes(*w)))
                        .collect(),
                )
            }
            Dtype::F16 => {
                let (words, _) = raw.as_chunks::<2>();
                CpuStorage::F16(
                    words
                        .iter()
                        .map(|w| f16::from_bits(u16::from_le_bytes(*w)))
                        .collect(),
                )
            }
            Dtype::BF16 => {
                let (words, _) = raw.as_chunks::<2>();
                CpuStorage::BF16(
                    words
                        .iter()
                        .map(|w| bf16::from_bits(u16::from_le_bytes(*w)))
                        .collect(),
                )
            }
            other => {
                return Err(format!(
                    "tensor `{name}` is {other:?}; amp reads F32, F16 and BF16 tensors only (convert it when saving, e.g. `t.float()` in PyTorch)"
                ));
            }
        };
        if storage.len() * storage.dtype().size_in_bytes() != raw.len()
            || storage.len() != shape.numel()
        {
            return Err(format!(
                "tensor `{name}` has shape {shape} ({} elements of {:?}) but {} bytes of data",
                shape.numel(),
                info.dtype,
                raw.len()
            ));
        }
        state
            .tensors
            .insert(name, TensorCore::new(Storage::Cpu(storage), shape));
    }
    if let Some(meta) = header.metadata() {
        state.meta = meta.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    }
    Ok(state)
}

/// Checks made before handing the bytes to safetensors: a clearer message
/// for the common failures (empty, truncated, not safetensors), and a guard
/// against header numbers so large that safetensors' own size arithmetic
/// would overflow.
fn check_header(bytes: &[u8]) -> std::result::Result<(), String> {
    let len = bytes.len();
    let Some(head) = bytes.first_chunk::<8>() else {
        return Err(format!(
            "the file is {len} bytes long, shorter than the 8-byte header length that starts every safetensors file: it is empty or truncated"
        ));
    };
    let n = u64::from_le_bytes(*head);
    if n > MAX_HEADER_BYTES {
        return Err(format!(
            "the header length field says {n} bytes, more than safetensors' limit of {MAX_HEADER_BYTES}: this is not a safetensors file, or its first bytes are corrupt"
        ));
    }
    let rest = (len - 8) as u64;
    if n > rest {
        return Err(format!(
            "the header length field says {n} bytes but only {rest} bytes follow it: the file is truncated, or not a safetensors file"
        ));
    }
    let header = &bytes[8..8 + n as usize];
    // Shapes and offsets are the only numbers in a safetensors header.
    // safetensors adds the last offset to the header length unchecked, so a
    // number near usize::MAX would overflow there; no real tensor comes close
    // to half the address space, so such a number is corruption.
    if let Some(big) = largest_number(header)
        && big > (usize::MAX / 2) as u128
    {
        return Err(format!(
            "the header holds the number {}, an absurd shape or data offset: the file is corrupt",
            if big == u128::MAX {
                "above 2^128".to_string()
            } else {
                big.to_string()
            }
        ));
    }
    Ok(())
}

/// The largest run of decimal digits outside JSON strings (saturating), or
/// `None` if there is none. Exact for valid JSON; for invalid JSON the
/// answer does not matter, since the JSON parser rejects it anyway.
fn largest_number(json: &[u8]) -> Option<u128> {
    let mut largest = None;
    let mut in_string = false;
    let mut escaped = false;
    let mut current: Option<u128> = None;
    for &b in json {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        if b.is_ascii_digit() {
            let d = u128::from(b - b'0');
            current = Some(
                current
                    .unwrap_or(0)
                    .checked_mul(10)
                    .and_then(|v| v.checked_add(d))
                    .unwrap_or(u128::MAX),
            );
            continue;
        }
        if let Some(v) = current.take() {
            largest = largest.max(Some(v));
        }
        in_string = b == b'"';
    }
    largest.max(current)
}

/// safetensors' error, said in terms of the file.
fn explain(e: SafeTensorError, len: usize) -> String {
    match e {
        SafeTensorError::HeaderTooSmall => format!(
            "the file is {len} bytes long, too short for a safetensors header: it is empty or truncated"
        ),
        SafeTensorError::HeaderTooLarge => {
            "the header length field is larger than safetensors' 100 MB limit: the file is not safetensors, or is corrupt".to_string()
        }
        SafeTensorError::InvalidHeaderLength => {
            "the header length points past the end of the file: the file is truncated".to_string()
        }
        SafeTensorError::InvalidHeader(e) => {
            format!("the header is not UTF-8 text ({e}): the file is not safetensors, or is corrupt")
        }
        SafeTensorError::InvalidHeaderStart => {
            "the header does not start with `{`: the file is not safetensors, or is corrupt".to_string()
        }
        SafeTensorError::InvalidHeaderDeserialization(e) | SafeTensorError::JsonError(e) => format!(
            "the header is not a valid safetensors JSON header ({e}): the file is corrupt, or was written by something else"
        ),
        SafeTensorError::InvalidOffset(name) => format!(
            "tensor `{name}` has data offsets that do not start where the previous tensor's data ends (overlapping, duplicated or out of order): the header is corrupt"
        ),
        SafeTensorError::TensorInvalidInfo => {
            "a tensor's data offsets do not span its shape × dtype size in bytes: the header is corrupt".to_string()
        }
        SafeTensorError::ValidationOverflow => {
            "a tensor's shape has more elements (or bytes) than fit in memory: the header is corrupt".to_string()
        }
        SafeTensorError::MetadataIncompleteBuffer => format!(
            "the tensors in the header do not cover the {} data bytes after it exactly: the file is truncated, or has extra bytes appended",
            len.saturating_sub(8)
        ),
        SafeTensorError::MisalignedSlice => {
            "a tensor of a sub-byte dtype does not fill whole bytes; amp reads F32, F16 and BF16 tensors only".to_string()
        }
        SafeTensorError::TensorNotFound(name) => format!("tensor `{name}` is listed but cannot be found"),
        other => format!("not a valid safetensors file: {other}"),
    }
}

// ---- atomic writes -------------------------------------------------------------

/// A temporary file next to the target, removed on drop unless kept.
struct TempFile {
    path: PathBuf,
    keep: bool,
}

impl TempFile {
    /// Create a fresh, uniquely named file in `dir` (never one that exists:
    /// two saves at once, or a stale file from a crash, cannot collide).
    fn create(dir: &Path, target: &OsStr) -> Result<(TempFile, File)> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let mut last = None;
        for _ in 0..64 {
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let mut name = OsStr::new(".").to_os_string();
            name.push(target);
            name.push(format!(".{}-{n}.tmp", std::process::id()));
            let path = dir.join(name);
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(file) => return Ok((TempFile { path, keep: false }, file)),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last = Some(e),
                Err(e) => {
                    return Err(io_error(
                        "StateDict::save",
                        "create a temporary file in",
                        dir,
                        e,
                    ));
                }
            }
        }
        Err(io_error(
            "StateDict::save",
            "create a temporary file in",
            dir,
            last.unwrap_or_else(|| std::io::Error::other("no free temporary name")),
        ))
    }

    fn keep(mut self) {
        self.keep = true;
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

// ---- errors --------------------------------------------------------------------

fn checkpoint_error(op: &'static str, path: &Path, msg: impl Into<String>) -> Error {
    Error::Checkpoint {
        op,
        path: path.to_path_buf(),
        msg: msg.into(),
    }
}

fn io_error(op: &'static str, action: &'static str, path: &Path, e: std::io::Error) -> Error {
    Error::Io {
        op,
        action,
        path: path.to_path_buf(),
        kind: e.kind(),
        msg: e.to_string(),
    }
}

/// `a, b, c` or `a, b, c and 7 more`: error lists stay readable for big models.
fn list(items: &[String]) -> String {
    const SHOWN: usize = 8;
    let head = items[..items.len().min(SHOWN)].join(", ");
    if items.len() > SHOWN {
        format!("{head} and {} more", items.len() - SHOWN)
    } else {
        head
    }
}

fn did_you_mean<'a>(name: &str, names: impl Iterator<Item = &'a String>) -> String {
    let near: Vec<&String> = names
        .filter(|n| n.ends_with(name.rsplit('.').next().unwrap_or(name)))
        .take(3)
        .collect();
    if near.is_empty() {
        String::new()
    } else {
        format!(
            " (similar: {})",
            near.iter()
                .map(|n| format!("`{n}`"))
                .collect::<Vec<_>>()
                .join(", ")
        )
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;
    use std::collections::HashMap;

    use safetensors::View;

    use super::*;
    use crate::precision::{BF16, F16, F32};

    struct Ref<'a>(&'a TensorCore);

    impl View for Ref<'_> {
        fn dtype(&self) -> Dtype {
            st_dtype(self.0.dtype())
        }
        fn shape(&self) -> &[usize] {
            self.0.shape().dims()
        }
        fn data(&self) -> Cow<'_, [u8]> {
            let bytes: Vec<u8> = match self.0.dtype() {
                DType::F32 => self
                    .0
                    .to_vec::<f32>()
                    .iter()
                    .flat_map(|x| x.to_le_bytes())
                    .collect(),
                DType::F16 => self
                    .0
                    .to_vec::<f16>()
                    .iter()
                    .flat_map(|x| x.to_le_bytes())
                    .collect(),
                DType::BF16 => self
                    .0
                    .to_vec::<bf16>()
                    .iter()
                    .flat_map(|x| x.to_le_bytes())
                    .collect(),
            };
            Cow::Owned(bytes)
        }
        fn data_len(&self) -> usize {
            self.0.shape().numel() * self.0.dtype().size_in_bytes()
        }
    }

    /// The hand-written header is byte for byte what the safetensors crate
    /// writes (with at most one metadata entry, where its order is fixed).
    #[test]
    fn files_match_the_safetensors_writer() {
        let mut state = StateDict::new();
        state.insert("z.f16", &Tensor::<F16>::randn([3, 2], 1));
        state.insert("a.bf16", &Tensor::<BF16>::randn([5], 2));
        state.insert("m.f32", &Tensor::<F32>::randn([2, 1, 3], 3));
        state.insert("scalar", &Tensor::<F32>::scalar(2.5));
        state.insert("empty", &Tensor::<F16>::zeros([0, 4]));
        state.insert(
            "odd \"name\"\\ \u{1}\u{1f} \u{7f} \n\t é \u{1F600}",
            &Tensor::<F32>::ones([1]),
        );
        for meta in [None, Some(("key \"q\"\u{8}\u{c}\r", "v\\al\u{2}ue ü"))] {
            let mut state = state.clone();
            if let Some((k, v)) = meta {
                state.insert_meta(k, v);
            }
            let ours = state.to_bytes().unwrap();
            let theirs = safetensors::serialize(
                state.tensors.iter().map(|(n, c)| (n.as_str(), Ref(c))),
                meta.map(|(k, v)| HashMap::from([(k.to_string(), v.to_string())])),
            )
            .unwrap();
            assert_eq!(
                String::from_utf8_lossy(&ours),
                String::from_utf8_lossy(&theirs)
            );
            assert_eq!(ours, theirs);
        }
    }

    #[test]
    fn largest_number_skips_strings() {
        assert_eq!(largest_number(br#"{"a":[1,23],"b":"999\"9"}"#), Some(23));
        assert_eq!(largest_number(br#"{"99":"x"}"#), None);
        assert_eq!(
            largest_number(b"[340282366920938463463374607431768211456]"),
            Some(u128::MAX)
        );
    }
}
