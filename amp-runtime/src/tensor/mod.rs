//! `Tensor<P>`: the typed facade over a dtype-erased [`TensorCore`].

mod indices;
mod view;

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, StandardNormal};

pub use indices::Indices;

use crate::autograd::GradNode;
use crate::cpu::Element;
use crate::device::Device;
use crate::error::{Error, Result};
use crate::precision::{DType, Precision};
use crate::shape::Shape;
use crate::storage::{Storage, TensorCore};

/// An n-dimensional array whose precision `P` is part of its type.
///
/// Ops that are safe in any precision take and return `Tensor<P>` for one `P`;
/// numerically sensitive ops exist only for `Tensor<F32>`; changing precision is
/// an explicit [`cast`](Tensor::cast) (or one that `#[autocast]` inserts).
/// Cloning is cheap: storage is shared, and views (`transpose`, `narrow`, …)
/// share it too.
///
/// ```
/// use amp::{Tensor, F16, F32};
/// # fn main() -> amp::Result<()> {
/// let x = Tensor::<F32>::randn([4, 8], 0);
/// let w = Tensor::<F32>::randn([16, 8], 1);
/// // matmul-like work in F16 (accumulated in F32, rounded once) …
/// let h = x.cast::<F16>().linear(&w.cast::<F16>(), None)?;
/// // … and the sensitive part in F32.
/// let p = h.cast::<F32>().softmax(-1)?;
/// assert_eq!(p.dims(), &[4, 16]);
/// # Ok(()) }
/// ```
pub struct Tensor<P: Precision> {
    core: TensorCore,
    /// The graph node gradients flow through; `None` when untracked.
    node: Option<Arc<GradNode>>,
    _precision: PhantomData<P>,
}

impl<P: Precision> Clone for Tensor<P> {
    fn clone(&self) -> Self {
        Tensor {
            core: self.core.clone(),
            node: self.node.clone(),
            _precision: PhantomData,
        }
    }
}

impl<P: Precision> Tensor<P> {
    /// Wrap a core whose dtype is `P`'s. (Internal invariant, checked in debug.)
    pub(crate) fn from_core(core: TensorCore) -> Self {
        debug_assert_eq!(core.dtype(), P::DTYPE);
        Tensor {
            core,
            node: None,
            _precision: PhantomData,
        }
    }

    /// The graph node, if tracked.
    pub(crate) fn node(&self) -> Option<&Arc<GradNode>> {
        self.node.as_ref()
    }

    /// The same tensor with another graph node.
    pub(crate) fn with_node(mut self, node: Option<Arc<GradNode>>) -> Self {
        self.node = node;
        self
    }

    /// The core, dropping the graph node.
    pub(crate) fn into_core(self) -> TensorCore {
        self.core
    }

    /// Build from f32 values computed by a kernel, rounding once to `P`.
    pub(crate) fn from_f32_values(values: Vec<f32>, shape: impl Into<Shape>) -> Self {
        Tensor::from_core(TensorCore::from_f32(values, shape.into(), P::DTYPE))
    }

    /// The dtype-erased core (what backends see).
    pub fn core(&self) -> &TensorCore {
        &self.core
    }

    // ---- creation -------------------------------------------------------------

    /// A tensor owning `values`, laid out row-major with `shape`.
    ///
    /// ```
    /// use amp::{Tensor, F32};
    /// let t = Tensor::<F32>::from_vec(vec![1.0, 2.0, 3.0, 4.0], [2, 2]).unwrap();
    /// assert_eq!(t.to_vec(), vec![1.0, 2.0, 3.0, 4.0]);
    /// assert!(Tensor::<F32>::from_vec(vec![1.0; 3], [2, 2]).is_err());
    /// ```
    pub fn from_vec(values: Vec<P::Elem>, shape: impl Into<Shape>) -> Result<Self> {
        let shape = shape.into();
        if values.len() != shape.numel() {
            return Err(Error::ElementCount {
                op: "from_vec",
                expected: shape.numel(),
                got: values.len(),
                shape,
            });
        }
        Ok(Tensor::from_core(TensorCore::new(
            Storage::Cpu(<P::Elem as Element>::wrap(values)),
            shape,
        )))
    }

    /// A tensor copied from `values`, laid out row-major with `shape`.
    pub fn from_slice(values: &[P::Elem], shape: impl Into<Shape>) -> Result<Self> {
        Self::from_vec(values.to_vec(), shape)
    }

    /// A tensor from f32 values, rounded to `P` (round-to-nearest-even).
    ///
    /// ```
    /// use amp::{Tensor, F16};
    /// let t = Tensor::<F16>::from_f32(&[1.0, 65504.0, 70000.0], [3]).unwrap();
    /// assert_eq!(t.to_f32_vec(), vec![1.0, 65504.0, f32::INFINITY]);
    /// ```
    pub fn from_f32(values: &[f32], shape: impl Into<Shape>) -> Result<Self> {
        let shape = shape.into();
        if values.len() != shape.numel() {
            return Err(Error::ElementCount {
                op: "from_f32",
                expected: shape.numel(),
                got: values.len(),
                shape,
            });
        }
        Ok(Self::from_f32_values(values.to_vec(), shape))
    }

    /// Every element equal to `value` (rounded to `P`).
    pub fn full(value: f32, shape: impl Into<Shape>) -> Self {
        let shape = shape.into();
        let v = <P::Elem as Element>::from_f32(value);
        let storage = <P::Elem as Element>::wrap(vec![v; shape.numel()]);
        Tensor::from_core(TensorCore::new(Storage::Cpu(storage), shape))
    }

    /// All zeros.
    pub fn zeros(shape: impl Into<Shape>) -> Self {
        Self::full(0.0, shape)
    }

    /// All ones.
    pub fn ones(shape: impl Into<Shape>) -> Self {
        Self::full(1.0, shape)
    }

    /// Zeros with the shape of `self`, on `self`'s device.
    pub fn zeros_like(&self) -> Self {
        #[cfg(feature = "cuda")]
        if let Some(dev) = self.cuda_device() {
            return crate::storage::device_op(Self::full_on(0.0, self.shape().clone(), dev));
        }
        Self::zeros(self.shape().clone())
    }

    /// Every element equal to `value` (rounded to `P`), on `device`: a fill
    /// kernel on a GPU, no host buffer.
    pub(crate) fn full_on(value: f32, shape: impl Into<Shape>, device: Device) -> Result<Self> {
        match device {
            Device::Cpu => Ok(Self::full(value, shape)),
            #[cfg(feature = "cuda")]
            Device::Cuda(n) => Ok(Tensor::from_core(crate::cuda::ops::full(
                n,
                P::DTYPE,
                shape.into(),
                value,
            )?)),
            #[cfg(not(feature = "cuda"))]
            Device::Cuda(_) => Err(crate::device::not_built("full")),
        }
    }

    /// A single-element tensor of shape `[]`.
    pub fn scalar(value: f32) -> Self {
        Self::full(value, ())
    }

    /// `start, start + step, …` up to but excluding `end`, like `torch.arange`.
    ///
    /// ```
    /// use amp::{Tensor, F32};
    /// let t = Tensor::<F32>::arange(0.0, 1.0, 0.25).unwrap();
    /// assert_eq!(t.to_vec(), vec![0.0, 0.25, 0.5, 0.75]);
    /// ```
    pub fn arange(start: f32, end: f32, step: f32) -> Result<Self> {
        if step == 0.0 || !step.is_finite() || !start.is_finite() || !end.is_finite() {
            return Err(Error::invalid(
                "arange",
                format!(
                    "start {start}, end {end} and step {step} must be finite with a non-zero step"
                ),
            ));
        }
        let n = ((end as f64 - start as f64) / step as f64).ceil().max(0.0) as usize;
        let values = (0..n)
            .map(|i| (start as f64 + i as f64 * step as f64) as f32)
            .collect();
        Ok(Self::from_f32_values(values, [n]))
    }

    /// Uniform samples in `[0, 1)` from a generator seeded with `seed`; the same
    /// seed gives the same tensor on every machine.
    pub fn rand(shape: impl Into<Shape>, seed: u64) -> Self {
        let shape = shape.into();
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let values = (0..shape.numel()).map(|_| rng.random::<f32>()).collect();
        Self::from_f32_values(values, shape)
    }

    /// Standard normal samples from a generator seeded with `seed`.
    ///
    /// ```
    /// use amp::{Tensor, F32};
    /// let a = Tensor::<F32>::randn([1000], 7);
    /// assert_eq!(a.to_vec(), Tensor::<F32>::randn([1000], 7).to_vec());
    /// let mean = a.mean().to_scalar().unwrap();
    /// assert!(mean.abs() < 0.1);
    /// ```
    pub fn randn(shape: impl Into<Shape>, seed: u64) -> Self {
        let shape = shape.into();
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let values = (0..shape.numel())
            .map(|_| StandardNormal.sample(&mut rng))
            .collect();
        Self::from_f32_values(values, shape)
    }

    // ---- facts ------------------------------------------------------------------

    /// The shape.
    pub fn shape(&self) -> &Shape {
        self.core.shape()
    }

    /// The dims as a slice.
    pub fn dims(&self) -> &[usize] {
        self.core.shape().dims()
    }

    /// Number of dims.
    pub fn rank(&self) -> usize {
        self.core.shape().rank()
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.core.shape().numel()
    }

    /// The runtime dtype (always `P::DTYPE`).
    pub fn dtype(&self) -> DType {
        P::DTYPE
    }

    /// Where the data lives.
    pub fn device(&self) -> Device {
        self.core.device()
    }

    /// Whether the elements are laid out row-major without gaps.
    pub fn is_contiguous(&self) -> bool {
        self.core.layout().is_contiguous()
    }

    /// Bytes of element data this tensor addresses (`numel × size`).
    pub fn size_in_bytes(&self) -> usize {
        self.numel() * P::DTYPE.size_in_bytes()
    }

    // ---- reading out -------------------------------------------------------------

    /// The elements in row-major order.
    pub fn to_vec(&self) -> Vec<P::Elem> {
        self.core.to_vec()
    }

    /// The elements in row-major order, widened to f32 (exact).
    pub fn to_f32_vec(&self) -> Vec<f32> {
        self.core.contiguous_f32().into_owned()
    }

    /// The value of a one-element tensor.
    ///
    /// ```
    /// use amp::{Tensor, F32};
    /// assert_eq!(Tensor::<F32>::scalar(2.5).to_scalar().unwrap(), 2.5);
    /// assert!(Tensor::<F32>::zeros([2]).to_scalar().is_err());
    /// ```
    pub fn to_scalar(&self) -> Result<f32> {
        if self.numel() != 1 {
            return Err(Error::invalid(
                "to_scalar",
                format!(
                    "needs exactly one element, the tensor has shape {}; reduce it first (e.g. `.sum()`)",
                    self.shape()
                ),
            ));
        }
        Ok(self.to_f32_vec()[0])
    }

    // ---- precision ------------------------------------------------------------

    /// The same values in precision `Q`: round-to-nearest-even when narrowing
    /// (overflow gives ±inf, NaN stays NaN), exact when widening, and free — no
    /// copy — when `Q` is `P`.
    ///
    /// ```
    /// use amp::{Tensor, BF16, F16, F32};
    /// let x = Tensor::<F32>::from_f32(&[1.0, 1.0 + 1.0 / 2048.0, 1e-8], [3]).unwrap();
    /// // 1 + 2^-11 is a tie in F16: it rounds to even (1.0); 1e-8 underflows.
    /// assert_eq!(x.cast::<F16>().to_f32_vec(), vec![1.0, 1.0, 0.0]);
    /// // BF16 keeps F32's range, so 1e-8 survives (approximately).
    /// assert!(x.cast::<BF16>().to_f32_vec()[2] > 0.0);
    /// ```
    pub fn cast<Q: Precision>(&self) -> Tensor<Q> {
        if P::DTYPE == Q::DTYPE {
            return Tensor::from_core(self.core.clone()).with_node(self.node.clone());
        }
        // The gradient goes back the way the value came: cast to `P`.
        Tensor::<Q>::from_core(self.core.cast(Q::DTYPE)).grad1("cast", self, |g| Ok(g.cast::<P>()))
    }

    /// A contiguous tensor with the same values (`self` if already contiguous).
    pub fn contiguous(&self) -> Self {
        Tensor::from_core(self.core.contiguous()).with_node(self.node.clone())
    }

    // ---- devices ----------------------------------------------------------------

    /// The same values on `device`: a copy (or `self` when already there).
    /// Differentiable: the gradient goes back to this tensor's device.
    ///
    /// ```
    /// use amp::{Device, Tensor, F16};
    /// # fn main() -> amp::Result<()> {
    /// let x = Tensor::<F16>::ones([2, 3]);
    /// assert_eq!(x.to_device(Device::Cpu)?.device(), Device::Cpu);
    /// // On a machine with a GPU (and the `cuda` feature) this moves it there;
    /// // without one, it is an error that says why.
    /// match Device::cuda(0) {
    ///     Ok(gpu) => assert_eq!(x.to_device(gpu)?.to_f32_vec(), vec![1.0; 6]),
    ///     Err(e) => assert!(e.to_string().contains("CUDA")),
    /// }
    /// # Ok(()) }
    /// ```
    pub fn to_device(&self, device: Device) -> Result<Self> {
        let from = self.device();
        if from == device {
            return Ok(self.clone());
        }
        let out = Tensor::from_core(self.core.to_device(device)?);
        Ok(out.grad1("to_device", self, move |g| g.to_device(from)))
    }

    /// The GPU this tensor is on, if any.
    pub(crate) fn cuda_device(&self) -> Option<Device> {
        self.device().is_cuda().then(|| self.device())
    }

    /// A host copy for ops without a device kernel (differentiable, like
    /// [`to_device`](Tensor::to_device)).
    #[cfg(feature = "cuda")]
    pub(crate) fn to_host(&self) -> Result<Self> {
        self.to_device(Device::Cpu)
    }

    /// Whether two tensors share storage (e.g. a free cast or a view).
    pub fn shares_storage_with<Q: Precision>(&self, other: &Tensor<Q>) -> bool {
        self.core.storage_ptr() == other.core.storage_ptr()
    }
}

impl<P: Precision> fmt::Debug for Tensor<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v = self.to_f32_vec();
        write!(f, "Tensor<{}>{} {:?}", P::NAME, self.shape(), Preview(&v))
    }
}

impl<P: Precision> fmt::Display for Tensor<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// Up to 8 leading values, then an ellipsis.
struct Preview<'a>(&'a [f32]);

impl fmt::Debug for Preview<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[")?;
        for (i, v) in self.0.iter().take(8).enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{v}")?;
        }
        if self.0.len() > 8 {
            write!(f, ", … ({} total)", self.0.len())?;
        }
        f.write_str("]")
    }
}
