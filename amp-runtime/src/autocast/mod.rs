//! Autocast: compile-time policies and the runtime support of `#[autocast]`.
//!
//! A [`Policy`] is a type that decides, for every op, the precision its inputs
//! are cast to: the policy's low precision for matmul-like ops ([`Lower`]),
//! F32 for numerically sensitive ones ([`Full`]), the widest input precision
//! for mixed arithmetic ([`Promote`]), or no cast ([`Keep`]). `#[autocast]`
//! rewrites a function body into calls that ask the policy, so every precision
//! decision is made by the type checker, and nothing is thread-local: code the
//! function runs on other threads keeps its policy.

mod cache;
mod plan;
mod policy;
#[doc(hidden)]
pub mod private;

pub use crate::ops::DefaultRules;
pub use cache::{CastCounts, cast_counts};
pub use plan::{OpRecord, PrecisionPlan, Site, record};
pub use policy::{
    BF16Policy, CastClass, Decide, F16Policy, F32Policy, Full, Keep, LowPrecision, Lower, OpKind,
    Permitted, Policy, Promote, Refused, Target, Widest,
};
