//! What `#[autocast]` expands to. Not a public API: the macro's needs can
//! change freely. Reached as `::amp::__private`.
//!
//! The macro has no type information, so every rewritten call goes through
//! *autoref specialization*: a value is wrapped in [`Arg`], and the method
//! `__amp_hold` is looked up on `&&Arg<T>`. If `T` is a tensor form
//! (`&Tensor<P>`, `Tensor<P>`, `Option<&Tensor<P>>`), the impl on `&Arg<T>`
//! matches first and casts it to the precision the policy names; otherwise the
//! fallback impl on `Arg<T>` hands the value back untouched. So non-tensor
//! code that happens to use an op's name (`iter.sum()`, `x.exp()` on `f32`)
//! compiles exactly as written.

use std::cell::Cell;
use std::ops::{Add, Div, Mul, Sub};

use super::policy::{CastClass, Permitted, Policy, Widest};
use super::{cache, plan};
use crate::error::Result;
use crate::precision::Precision;
use crate::tensor::Tensor;

pub use super::cache::Region;
pub use super::plan::{Frame, Site, begin};

/// A value on its way into an op (see the module docs).
pub struct Arg<T>(Cell<Option<T>>);

impl<T> Arg<T> {
    /// Wrap a value.
    #[inline(always)]
    pub fn new(value: T) -> Self {
        Arg(Cell::new(Some(value)))
    }

    #[inline(always)]
    fn take(&self) -> T {
        self.0
            .take()
            .expect("internal: an autocast argument is taken once")
    }
}

/// A tensor cast for an op; `get` lends it to the call.
pub struct Held<Q: Precision>(Tensor<Q>);

impl<Q: Precision> Held<Q> {
    /// The cast tensor.
    #[inline(always)]
    pub fn get(&self) -> &Tensor<Q> {
        &self.0
    }
}

/// An optional tensor (a bias) cast for an op.
pub struct HeldOpt<Q: Precision>(Option<Tensor<Q>>);

impl<Q: Precision> HeldOpt<Q> {
    /// The cast tensor, if any.
    #[inline(always)]
    pub fn get(&self) -> Option<&Tensor<Q>> {
        self.0.as_ref()
    }
}

/// A value that is not a tensor, passed through untouched.
pub struct Pass<T>(T);

impl<T> Pass<T> {
    /// The value as it was written.
    #[inline(always)]
    pub fn get(self) -> T {
        self.0
    }
}

/// Cast `t` to the precision rule `C` gives it under `Pol`, noting it in the
/// precision plan when one is being recorded.
#[inline(always)]
fn cast_input<Pol: Policy, C: CastClass, P: Precision>(t: &Tensor<P>) -> Tensor<C::Target<Pol, P>> {
    plan::note_input(P::DTYPE, <C::Target<Pol, P> as Precision>::DTYPE, t.dims());
    cache::cast(t)
}

/// Tensor forms: picked first by method lookup on `&&Arg<T>`.
pub trait CastTensor {
    /// What the op call borrows from.
    type Held<Pol: Policy, C: CastClass>;
    /// Cast for the op.
    fn __amp_hold<Pol: Policy, C: CastClass + Permitted<Pol::Low>>(&self) -> Self::Held<Pol, C>;
}

// A borrowed tensor at any reference depth (`&x` where `x: &Tensor`, closure
// parameters over `iter()` of references, ..).
impl<T: TensorOperand> CastTensor for &Arg<&T> {
    type Held<Pol: Policy, C: CastClass> = Held<C::Target<Pol, T::P>>;
    #[inline(always)]
    fn __amp_hold<Pol: Policy, C: CastClass + Permitted<Pol::Low>>(&self) -> Self::Held<Pol, C> {
        Held(cast_input::<Pol, C, T::P>(self.take().tensor()))
    }
}

impl<P: Precision> CastTensor for &Arg<Tensor<P>> {
    type Held<Pol: Policy, C: CastClass> = Held<C::Target<Pol, P>>;
    #[inline(always)]
    fn __amp_hold<Pol: Policy, C: CastClass + Permitted<Pol::Low>>(&self) -> Self::Held<Pol, C> {
        Held(cast_input::<Pol, C, P>(&self.take()))
    }
}

impl<T: TensorOperand> CastTensor for &Arg<Option<&T>> {
    type Held<Pol: Policy, C: CastClass> = HeldOpt<C::Target<Pol, T::P>>;
    #[inline(always)]
    fn __amp_hold<Pol: Policy, C: CastClass + Permitted<Pol::Low>>(&self) -> Self::Held<Pol, C> {
        HeldOpt(self.take().map(|t| cast_input::<Pol, C, T::P>(t.tensor())))
    }
}

/// Everything else: found only when no tensor form matched.
pub trait PassThrough {
    /// The value itself.
    type Held<Pol: Policy, C: CastClass>;
    /// Hand the value back.
    fn __amp_hold<Pol: Policy, C: CastClass>(&self) -> Self::Held<Pol, C>;
}

impl<T> PassThrough for Arg<T> {
    type Held<Pol: Policy, C: CastClass> = Pass<T>;
    #[inline(always)]
    fn __amp_hold<Pol: Policy, C: CastClass>(&self) -> Pass<T> {
        Pass(self.take())
    }
}

// ---- receivers that the macro borrowed --------------------------------------------
//
// A place receiver (`x.relu()`, `self.w.matmul(..)`) is borrowed by the macro
// so it is never moved. Method lookup on `&&&Arg<&T>` then tries, in order:
// a tensor (cast it), a `Copy` value (hand back a copy, so `n.clamp(0, 3)` on
// an `i32` calls `Ord::clamp` on the value as written), anything else (hand
// back the borrow, which serves `&self` methods).

/// Borrowed tensor receivers.
pub trait RecvTensor {
    /// What the op call borrows from.
    type Held<Pol: Policy, C: CastClass>;
    /// Cast for the op.
    fn __amp_recv<Pol: Policy, C: CastClass + Permitted<Pol::Low>>(&self) -> Self::Held<Pol, C>;
}

impl<T: TensorOperand> RecvTensor for &&Arg<&T> {
    type Held<Pol: Policy, C: CastClass> = Held<C::Target<Pol, T::P>>;
    #[inline(always)]
    fn __amp_recv<Pol: Policy, C: CastClass + Permitted<Pol::Low>>(&self) -> Self::Held<Pol, C> {
        Held(cast_input::<Pol, C, T::P>(self.take().tensor()))
    }
}

/// Borrowed `Copy` receivers: a copy, as the unrewritten call would use.
pub trait RecvCopy {
    /// The value.
    type Held<Pol: Policy, C: CastClass>;
    /// Copy the value out.
    fn __amp_recv<Pol: Policy, C: CastClass>(&self) -> Self::Held<Pol, C>;
}

impl<T: Copy> RecvCopy for &Arg<&T> {
    type Held<Pol: Policy, C: CastClass> = Pass<T>;
    #[inline(always)]
    fn __amp_recv<Pol: Policy, C: CastClass>(&self) -> Pass<T> {
        Pass(*self.take())
    }
}

/// Other borrowed receivers: the borrow itself.
pub trait RecvPass {
    /// The borrow.
    type Held<Pol: Policy, C: CastClass>;
    /// Hand the borrow back.
    fn __amp_recv<Pol: Policy, C: CastClass>(&self) -> Self::Held<Pol, C>;
}

impl<T> RecvPass for Arg<T> {
    type Held<Pol: Policy, C: CastClass> = Pass<T>;
    #[inline(always)]
    fn __amp_recv<Pol: Policy, C: CastClass>(&self) -> Pass<T> {
        Pass(self.take())
    }
}

// ---- promotion ------------------------------------------------------------------

/// Both operands of a binary operator (see the module docs).
pub struct BinArg<L, R>(Cell<Option<(L, R)>>);

impl<L, R> BinArg<L, R> {
    /// Wrap both operands.
    #[inline(always)]
    pub fn new(lhs: L, rhs: R) -> Self {
        BinArg(Cell::new(Some((lhs, rhs))))
    }

    #[inline(always)]
    fn take(&self) -> (L, R) {
        self.0
            .take()
            .expect("internal: autocast operands are taken once")
    }
}

/// A tensor operand in any of the forms operators accept.
pub trait TensorOperand {
    /// Its precision.
    type P: Precision;
    /// Borrow it.
    fn tensor(&self) -> &Tensor<Self::P>;
}

impl<P: Precision> TensorOperand for Tensor<P> {
    type P = P;
    #[inline(always)]
    fn tensor(&self) -> &Tensor<P> {
        self
    }
}

impl<T: TensorOperand> TensorOperand for &T {
    type P = T::P;
    #[inline(always)]
    fn tensor(&self) -> &Tensor<T::P> {
        (**self).tensor()
    }
}

/// Promote both operands to their widest precision.
#[inline(always)]
fn promote_pair<A: Precision + Widest<B>, B: Precision>(
    a: &Tensor<A>,
    b: &Tensor<B>,
) -> (Tensor<A::Out>, Tensor<A::Out>) {
    let out = <A::Out as Precision>::DTYPE;
    plan::note_input(A::DTYPE, out, a.dims());
    plan::note_input(B::DTYPE, out, b.dims());
    (cache::cast(a), cache::cast(b))
}

macro_rules! promoted_operator {
    ($tensor_trait:ident, $fallback_trait:ident, $std:ident, $method:ident, $op:ident) => {
        /// Tensor operands: promoted, then the op.
        pub trait $tensor_trait {
            /// The op's result.
            type Output;
            /// Promote and apply.
            fn $method(&self) -> Self::Output;
        }

        impl<L: TensorOperand, R: TensorOperand> $tensor_trait for &BinArg<L, R>
        where
            L::P: Widest<R::P>,
        {
            type Output = Result<Tensor<<L::P as Widest<R::P>>::Out>>;
            #[inline(always)]
            fn $method(&self) -> Self::Output {
                let (l, r) = self.take();
                let (l, r) = promote_pair(l.tensor(), r.tensor());
                l.$op(&r)
            }
        }

        /// Anything else: the operator as written.
        pub trait $fallback_trait {
            /// The operator's result.
            type Output;
            /// Apply the operator.
            fn $method(&self) -> Self::Output;
        }

        impl<L: $std<R>, R> $fallback_trait for BinArg<L, R> {
            type Output = L::Output;
            #[inline(always)]
            fn $method(&self) -> L::Output {
                let (l, r) = self.take();
                $std::$op(l, r)
            }
        }
    };
}

promoted_operator!(PromoteAdd, PlainAdd, Add, __amp_add, add);
promoted_operator!(PromoteSub, PlainSub, Sub, __amp_sub, sub);
promoted_operator!(PromoteMul, PlainMul, Mul, __amp_mul, mul);
promoted_operator!(PromoteDiv, PlainDiv, Div, __amp_div, div);

/// Promotion over a list (`cat`, `stack`, `where_cond`): fold the widest
/// precision with [`with`](Promoter::with), then [`cast`](Promoter::cast) each.
pub struct Promoter<W>(std::marker::PhantomData<W>);

/// The start of a fold: the first tensor's precision wins.
#[derive(Clone, Copy, Debug, Default)]
pub struct Start;

/// The precision after folding `Q` into the accumulated `Self`.
pub trait Fold<Q: Precision> {
    /// The accumulated precision.
    type Out: Precision;
}

impl<Q: Precision> Fold<Q> for Start {
    type Out = Q;
}

impl<W: Precision + Widest<Q>, Q: Precision> Fold<Q> for W {
    type Out = <W as Widest<Q>>::Out;
}

impl Promoter<Start> {
    /// An empty fold.
    #[inline(always)]
    pub fn new() -> Self {
        Promoter(std::marker::PhantomData)
    }
}

impl Default for Promoter<Start> {
    fn default() -> Self {
        Self::new()
    }
}

impl<W> Promoter<W> {
    /// Fold in one more tensor's precision.
    #[inline(always)]
    pub fn with<Q: Precision>(self, _: &Tensor<Q>) -> Promoter<<W as Fold<Q>>::Out>
    where
        W: Fold<Q>,
    {
        Promoter(std::marker::PhantomData)
    }
}

impl<W: Precision> Promoter<W> {
    /// Cast one of the folded tensors to the widest precision.
    #[inline(always)]
    pub fn cast<Q: Precision>(&self, t: &Tensor<Q>) -> Tensor<W> {
        plan::note_input(Q::DTYPE, W::DTYPE, t.dims());
        cache::cast(t)
    }
}

/// The helper traits, imported anonymously at the top of every `#[autocast]`
/// function so their methods resolve without adding names to the user's scope.
pub mod traits {
    pub use super::{
        CastTensor as _, PassThrough as _, PlainAdd as _, PlainDiv as _, PlainMul as _,
        PlainSub as _, PromoteAdd as _, PromoteDiv as _, PromoteMul as _, PromoteSub as _,
        RecvCopy as _, RecvPass as _, RecvTensor as _,
    };
}
