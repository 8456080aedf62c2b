//! Every op of [`TABLE`](super::TABLE) as a free function, so code (and
//! `#[autocast]`) can write `ops::softmax(&x, -1)` for `x.softmax(-1)`.
//!
//! Each function takes the tensor the method is called on first, then the
//! method's arguments in order, with the same bounds: `Q: SamePrecision<P>` on
//! other operands and `P: Wide` on wide-only ops (in a `where` clause, as on
//! the methods), so a misuse fails to compile with the same message as the
//! method. `cat`, `stack` and `where_cond` mirror their associated functions.

use super::{AttentionOptions, ClassLossOptions, Conv2dOptions, Reduction};
use crate::error::Result;
use crate::precision::{Precision, SamePrecision, Wide};
use crate::shape::Dim;
use crate::tensor::{Indices, Tensor};

// ---- matmul-like: any precision, the same for every operand ------------------------

/// [`Tensor::matmul`] as a function: `ops::matmul(&a, &b)` is `a.matmul(&b)`.
///
/// ```
/// use amp::{ops, Tensor, F32};
/// # fn main() -> amp::Result<()> {
/// let a = Tensor::<F32>::from_f32(&[1., 2., 3., 4.], [2, 2])?;
/// let b = Tensor::<F32>::from_f32(&[1., 0., 0., 1.], [2, 2])?;
/// let y = ops::matmul(&a, &b)?;
/// assert_eq!(y.to_vec(), vec![1., 2., 3., 4.]);
/// # Ok(()) }
/// ```
pub fn matmul<P: Precision, Q: Precision + SamePrecision<P>>(
    x: &Tensor<P>,
    rhs: &Tensor<Q>,
) -> Result<Tensor<P>> {
    x.matmul(rhs)
}

/// [`Tensor::bmm`] as a function.
pub fn bmm<P: Precision, Q: Precision + SamePrecision<P>>(
    x: &Tensor<P>,
    rhs: &Tensor<Q>,
) -> Result<Tensor<P>> {
    x.bmm(rhs)
}

/// [`Tensor::linear`] as a function: `ops::linear(&x, &w, Some(&b))`.
///
/// ```
/// use amp::{ops, Tensor, F16};
/// # fn main() -> amp::Result<()> {
/// let x = Tensor::<F16>::ones([4, 3]);
/// let w = Tensor::<F16>::ones([5, 3]);
/// let b = Tensor::<F16>::full(0.5, [5]);
/// let y = ops::linear(&x, &w, Some(&b))?;
/// assert_eq!(y.dims(), &[4, 5]);
/// assert_eq!(y.to_f32_vec()[0], 3.5);
/// # Ok(()) }
/// ```
pub fn linear<P: Precision, Q: Precision + SamePrecision<P>>(
    x: &Tensor<P>,
    weight: &Tensor<Q>,
    bias: Option<&Tensor<Q>>,
) -> Result<Tensor<P>> {
    x.linear(weight, bias)
}

/// [`Tensor::conv2d`] as a function.
pub fn conv2d<P: Precision, Q: Precision + SamePrecision<P>>(
    x: &Tensor<P>,
    weight: &Tensor<Q>,
    bias: Option<&Tensor<Q>>,
    opts: Conv2dOptions,
) -> Result<Tensor<P>> {
    x.conv2d(weight, bias, opts)
}

/// [`Tensor::scaled_dot_product_attention`] as a function (`x` is the query).
pub fn scaled_dot_product_attention<P: Precision, Q: Precision + SamePrecision<P>>(
    x: &Tensor<P>,
    key: &Tensor<Q>,
    value: &Tensor<Q>,
    opts: AttentionOptions,
) -> Result<Tensor<P>> {
    x.scaled_dot_product_attention(key, value, opts)
}

// ---- elementwise, joins, indexing: any precision ------------------------------------

/// [`Tensor::add`] as a function.
pub fn add<P: Precision, Q: Precision + SamePrecision<P>>(
    x: &Tensor<P>,
    rhs: &Tensor<Q>,
) -> Result<Tensor<P>> {
    x.add(rhs)
}

/// [`Tensor::sub`] as a function.
pub fn sub<P: Precision, Q: Precision + SamePrecision<P>>(
    x: &Tensor<P>,
    rhs: &Tensor<Q>,
) -> Result<Tensor<P>> {
    x.sub(rhs)
}

/// [`Tensor::mul`] as a function.
pub fn mul<P: Precision, Q: Precision + SamePrecision<P>>(
    x: &Tensor<P>,
    rhs: &Tensor<Q>,
) -> Result<Tensor<P>> {
    x.mul(rhs)
}

/// [`Tensor::div`] as a function.
pub fn div<P: Precision, Q: Precision + SamePrecision<P>>(
    x: &Tensor<P>,
    rhs: &Tensor<Q>,
) -> Result<Tensor<P>> {
    x.div(rhs)
}

/// [`Tensor::maximum`] as a function.
pub fn maximum<P: Precision, Q: Precision + SamePrecision<P>>(
    x: &Tensor<P>,
    rhs: &Tensor<Q>,
) -> Result<Tensor<P>> {
    x.maximum(rhs)
}

/// [`Tensor::minimum`] as a function.
pub fn minimum<P: Precision, Q: Precision + SamePrecision<P>>(
    x: &Tensor<P>,
    rhs: &Tensor<Q>,
) -> Result<Tensor<P>> {
    x.minimum(rhs)
}

/// [`Tensor::where_cond`] as a function: `ops::where_cond(&cond, &a, &b)`.
pub fn where_cond<P: Precision, C: Precision, Q: Precision + SamePrecision<P>>(
    cond: &Tensor<C>,
    on_true: &Tensor<P>,
    on_false: &Tensor<Q>,
) -> Result<Tensor<P>> {
    Tensor::where_cond(cond, on_true, on_false)
}

/// [`Tensor::cat`] as a function: `ops::cat(&[&a, &b], dim)`.
///
/// ```
/// use amp::{ops, Tensor, F32};
/// # fn main() -> amp::Result<()> {
/// let a = Tensor::<F32>::ones([2, 2]);
/// let b = Tensor::<F32>::zeros([1, 2]);
/// let y = ops::cat(&[&a, &b], 0)?;
/// assert_eq!(y.dims(), &[3, 2]);
/// assert_eq!(y.to_vec(), vec![1., 1., 1., 1., 0., 0.]);
/// # Ok(()) }
/// ```
pub fn cat<P: Precision>(tensors: &[&Tensor<P>], dim: impl Dim) -> Result<Tensor<P>> {
    Tensor::cat(tensors, dim)
}

/// [`Tensor::stack`] as a function: `ops::stack(&[&a, &b], dim)`.
pub fn stack<P: Precision>(tensors: &[&Tensor<P>], dim: impl Dim) -> Result<Tensor<P>> {
    Tensor::stack(tensors, dim)
}

/// [`Tensor::neg`] as a function.
pub fn neg<P: Precision>(x: &Tensor<P>) -> Tensor<P> {
    x.neg()
}

/// [`Tensor::abs`] as a function.
pub fn abs<P: Precision>(x: &Tensor<P>) -> Tensor<P> {
    x.abs()
}

/// [`Tensor::sqrt`] as a function.
pub fn sqrt<P: Precision>(x: &Tensor<P>) -> Tensor<P> {
    x.sqrt()
}

/// [`Tensor::sqr`] as a function.
pub fn sqr<P: Precision>(x: &Tensor<P>) -> Tensor<P> {
    x.sqr()
}

/// [`Tensor::affine`] as a function.
pub fn affine<P: Precision>(x: &Tensor<P>, mul: f32, add: f32) -> Tensor<P> {
    x.affine(mul, add)
}

/// [`Tensor::add_scalar`] as a function.
pub fn add_scalar<P: Precision>(x: &Tensor<P>, s: f32) -> Tensor<P> {
    x.add_scalar(s)
}

/// [`Tensor::mul_scalar`] as a function.
pub fn mul_scalar<P: Precision>(x: &Tensor<P>, s: f32) -> Tensor<P> {
    x.mul_scalar(s)
}

/// [`Tensor::relu`] as a function.
pub fn relu<P: Precision>(x: &Tensor<P>) -> Tensor<P> {
    x.relu()
}

/// [`Tensor::gelu`] as a function.
pub fn gelu<P: Precision>(x: &Tensor<P>) -> Tensor<P> {
    x.gelu()
}

/// [`Tensor::gelu_tanh`] as a function.
pub fn gelu_tanh<P: Precision>(x: &Tensor<P>) -> Tensor<P> {
    x.gelu_tanh()
}

/// [`Tensor::silu`] as a function.
pub fn silu<P: Precision>(x: &Tensor<P>) -> Tensor<P> {
    x.silu()
}

/// [`Tensor::tanh`] as a function.
pub fn tanh<P: Precision>(x: &Tensor<P>) -> Tensor<P> {
    x.tanh()
}

/// [`Tensor::sigmoid`] as a function.
pub fn sigmoid<P: Precision>(x: &Tensor<P>) -> Tensor<P> {
    x.sigmoid()
}

/// [`Tensor::dropout`] as a function.
pub fn dropout<P: Precision>(x: &Tensor<P>, p: f32, seed: u64) -> Result<Tensor<P>> {
    x.dropout(p, seed)
}

/// [`Tensor::clamp`] as a function.
pub fn clamp<P: Precision>(x: &Tensor<P>, min: f32, max: f32) -> Result<Tensor<P>> {
    x.clamp(min, max)
}

/// [`Tensor::index_select`] as a function.
pub fn index_select<P: Precision>(
    x: &Tensor<P>,
    dim: impl Dim,
    indices: &Indices,
) -> Result<Tensor<P>> {
    x.index_select(dim, indices)
}

/// [`Tensor::embedding`] as a function (`x` is the `[vocab, dim]` table).
pub fn embedding<P: Precision>(x: &Tensor<P>, ids: &Indices) -> Result<Tensor<P>> {
    x.embedding(ids)
}

/// [`Tensor::argmax`] as a function.
pub fn argmax<P: Precision>(x: &Tensor<P>, dim: impl Dim, keepdim: bool) -> Result<Indices> {
    x.argmax(dim, keepdim)
}

// ---- wide-only: `P: Wide` (F32) -----------------------------------------------------

/// [`Tensor::exp`] as a function.
pub fn exp<P>(x: &Tensor<P>) -> Tensor<P>
where
    P: Precision + Wide,
{
    x.exp()
}

/// [`Tensor::log`] as a function.
pub fn log<P>(x: &Tensor<P>) -> Tensor<P>
where
    P: Precision + Wide,
{
    x.log()
}

/// [`Tensor::pow`] as a function.
pub fn pow<P>(x: &Tensor<P>, exponent: f32) -> Tensor<P>
where
    P: Precision + Wide,
{
    x.pow(exponent)
}

/// [`Tensor::rsqrt`] as a function.
pub fn rsqrt<P>(x: &Tensor<P>) -> Tensor<P>
where
    P: Precision + Wide,
{
    x.rsqrt()
}

/// [`Tensor::sum`] as a function.
pub fn sum<P>(x: &Tensor<P>) -> Tensor<P>
where
    P: Precision + Wide,
{
    x.sum()
}

/// [`Tensor::sum_dim`] as a function.
pub fn sum_dim<P>(x: &Tensor<P>, dim: impl Dim, keepdim: bool) -> Result<Tensor<P>>
where
    P: Precision + Wide,
{
    x.sum_dim(dim, keepdim)
}

/// [`Tensor::mean`] as a function.
pub fn mean<P>(x: &Tensor<P>) -> Tensor<P>
where
    P: Precision + Wide,
{
    x.mean()
}

/// [`Tensor::mean_dim`] as a function.
pub fn mean_dim<P>(x: &Tensor<P>, dim: impl Dim, keepdim: bool) -> Result<Tensor<P>>
where
    P: Precision + Wide,
{
    x.mean_dim(dim, keepdim)
}

/// [`Tensor::var`] as a function.
pub fn var<P>(x: &Tensor<P>, correction: usize) -> Tensor<P>
where
    P: Precision + Wide,
{
    x.var(correction)
}

/// [`Tensor::var_dim`] as a function.
pub fn var_dim<P>(
    x: &Tensor<P>,
    dim: impl Dim,
    correction: usize,
    keepdim: bool,
) -> Result<Tensor<P>>
where
    P: Precision + Wide,
{
    x.var_dim(dim, correction, keepdim)
}

/// [`Tensor::softmax`] as a function: `ops::softmax(&x, -1)` is `x.softmax(-1)`.
///
/// ```
/// use amp::{ops, Tensor, F32};
/// # fn main() -> amp::Result<()> {
/// let x = Tensor::<F32>::from_f32(&[1., 2., 3., 1000., 1000., 1000.], [2, 3])?;
/// let p = ops::softmax(&x, -1)?;
/// assert_eq!(p.to_vec(), x.softmax(-1)?.to_vec());
/// let rows = ops::sum_dim(&p, -1, false)?.to_vec();
/// assert!(rows.iter().all(|r| (r - 1.0).abs() < 1e-6));
/// # Ok(()) }
/// ```
///
/// Like the method, it exists only for wide precisions:
///
/// ```compile_fail,E0277
/// use amp::{ops, Tensor, F16};
/// let x = Tensor::<F16>::zeros([2, 3]);
/// let _ = ops::softmax(&x, -1); // error: `F16` is too narrow for this op
/// ```
pub fn softmax<P>(x: &Tensor<P>, dim: impl Dim) -> Result<Tensor<P>>
where
    P: Precision + Wide,
{
    x.softmax(dim)
}

/// [`Tensor::log_softmax`] as a function.
pub fn log_softmax<P>(x: &Tensor<P>, dim: impl Dim) -> Result<Tensor<P>>
where
    P: Precision + Wide,
{
    x.log_softmax(dim)
}

/// [`Tensor::logsumexp`] as a function.
pub fn logsumexp<P>(x: &Tensor<P>, dim: impl Dim, keepdim: bool) -> Result<Tensor<P>>
where
    P: Precision + Wide,
{
    x.logsumexp(dim, keepdim)
}

/// [`Tensor::cumsum`] as a function.
pub fn cumsum<P>(x: &Tensor<P>, dim: impl Dim) -> Result<Tensor<P>>
where
    P: Precision + Wide,
{
    x.cumsum(dim)
}

/// [`Tensor::layer_norm`] as a function.
pub fn layer_norm<P>(
    x: &Tensor<P>,
    normalized_shape: &[usize],
    weight: Option<&Tensor<P>>,
    bias: Option<&Tensor<P>>,
    eps: f32,
) -> Result<Tensor<P>>
where
    P: Precision + Wide,
{
    x.layer_norm(normalized_shape, weight, bias, eps)
}

/// [`Tensor::rms_norm`] as a function.
pub fn rms_norm<P>(
    x: &Tensor<P>,
    normalized_shape: &[usize],
    weight: Option<&Tensor<P>>,
    eps: f32,
) -> Result<Tensor<P>>
where
    P: Precision + Wide,
{
    x.rms_norm(normalized_shape, weight, eps)
}

/// [`Tensor::cross_entropy`] as a function (`x` holds the `[N, C]` logits).
pub fn cross_entropy<P>(x: &Tensor<P>, targets: &Indices) -> Result<Tensor<P>>
where
    P: Precision + Wide,
{
    x.cross_entropy(targets)
}

/// [`Tensor::cross_entropy_with`] as a function.
pub fn cross_entropy_with<P>(
    x: &Tensor<P>,
    targets: &Indices,
    opts: ClassLossOptions,
) -> Result<Tensor<P>>
where
    P: Precision + Wide,
{
    x.cross_entropy_with(targets, opts)
}

/// [`Tensor::nll_loss`] as a function (`x` holds the `[N, C]` log-probabilities).
pub fn nll_loss<P>(x: &Tensor<P>, targets: &Indices) -> Result<Tensor<P>>
where
    P: Precision + Wide,
{
    x.nll_loss(targets)
}

/// [`Tensor::nll_loss_with`] as a function.
pub fn nll_loss_with<P>(
    x: &Tensor<P>,
    targets: &Indices,
    opts: ClassLossOptions,
) -> Result<Tensor<P>>
where
    P: Precision + Wide,
{
    x.nll_loss_with(targets, opts)
}

/// [`Tensor::mse_loss`] as a function.
pub fn mse_loss<P, Q: Precision + SamePrecision<P>>(
    x: &Tensor<P>,
    target: &Tensor<Q>,
    reduction: Reduction,
) -> Result<Tensor<P>>
where
    P: Precision + Wide,
{
    x.mse_loss(target, reduction)
}

/// [`Tensor::l1_loss`] as a function.
pub fn l1_loss<P, Q: Precision + SamePrecision<P>>(
    x: &Tensor<P>,
    target: &Tensor<Q>,
    reduction: Reduction,
) -> Result<Tensor<P>>
where
    P: Precision + Wide,
{
    x.l1_loss(target, reduction)
}

/// [`Tensor::binary_cross_entropy_with_logits`] as a function.
pub fn binary_cross_entropy_with_logits<P, Q: Precision + SamePrecision<P>>(
    x: &Tensor<P>,
    target: &Tensor<Q>,
    reduction: Reduction,
) -> Result<Tensor<P>>
where
    P: Precision + Wide,
{
    x.binary_cross_entropy_with_logits(target, reduction)
}

/// [`Tensor::binary_cross_entropy`] as a function (refused by `#[autocast]`
/// under low-precision policies, like the method).
pub fn binary_cross_entropy<P, Q: Precision + SamePrecision<P>>(
    x: &Tensor<P>,
    target: &Tensor<Q>,
    reduction: Reduction,
) -> Result<Tensor<P>>
where
    P: Precision + Wide,
{
    x.binary_cross_entropy(target, reduction)
}
