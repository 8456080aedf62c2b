//! Checkpoints: named tensors plus string metadata, saved as safetensors.
//!
//! Models, optimizers (master weights, moments) and the GradScaler write
//! their state into one [`StateDict`] under prefixes, and read it back with
//! every name, dtype and shape checked.

use std::collections::BTreeMap;

use crate::error::{Error, Result};
use crate::precision::Precision;
use crate::shape::Shape;
use crate::storage::TensorCore;
use crate::tensor::Tensor;

/// Named tensors and metadata: what a checkpoint file holds.
#[derive(Clone, Debug, Default)]
pub struct StateDict {
    tensors: BTreeMap<String, TensorCore>,
    meta: BTreeMap<String, String>,
}

impl StateDict {
    /// An empty state.
    pub fn new() -> Self {
        Self::default()
    }

    /// Store `tensor` under `name` (replacing any previous one).
    pub fn insert<P: Precision>(&mut self, name: impl Into<String>, tensor: &Tensor<P>) {
        self.tensors
            .insert(name.into(), tensor.detach().contiguous().into_core());
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

    #[allow(dead_code)] // read by save (in progress)
    pub(crate) fn tensors(&self) -> &BTreeMap<String, TensorCore> {
        &self.tensors
    }

    #[allow(dead_code)] // read by save (in progress)
    pub(crate) fn metadata(&self) -> &BTreeMap<String, String> {
        &self.meta
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
