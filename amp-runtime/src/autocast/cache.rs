//! The weight-cast cache: within one autocast region (the outermost
//! `#[autocast]` call on a thread), an F32 tensor cast to a low precision is
//! cast once and reused.
//!
//! Entries are keyed by the source's storage identity, layout and target
//! precision, and hold only a weak handle on the source:
//! - a source that has been dropped never matches again (its address may be
//!   reused, but its weak handle no longer upgrades), and its cast copy is
//!   freed the next time the cache is touched, so cast activations do not pile
//!   up for the whole region;
//! - amp tensors never change in place, and a buffer with a live weak handle
//!   cannot be mutated through `Arc::get_mut`, so an entry is never stale;
//! - the whole cache is dropped when the outermost region exits.
//!
//! The cache is per thread, like the region: a cast made on another thread is
//! simply made again there.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::sync::{Arc, Weak};

use crate::autograd::{GradNode, NodeId};

use crate::precision::{DType, Precision};
use crate::shape::Layout;
use crate::storage::{Buffer, Storage, TensorCore};
use crate::tensor::Tensor;

/// The graph identity is part of the key: a cast made of an untracked view of
/// a parameter (under `no_grad`) must not be served to a tracked use of it, or
/// the gradient would be lost (PyTorch #158232).
type Key = (*const Storage, Layout, DType, Option<NodeId>);

/// A cast, with the graph node that leads its gradient back to the source.
type Entry = (Weak<Buffer>, TensorCore, Option<Arc<GradNode>>);

#[derive(Default)]
struct Cache {
    entries: HashMap<Key, Entry>,
    casts: usize,
    hits: usize,
}

thread_local! {
    static DEPTH: Cell<usize> = const { Cell::new(0) };
    static CACHE: RefCell<Cache> = RefCell::new(Cache::default());
}

/// An autocast region on this thread; the cache lives until the outermost one
/// is dropped. The macro opens one at the top of every `#[autocast]` function.
#[must_use]
pub struct Region(());

impl Region {
    /// Enter a (possibly nested) region.
    #[inline]
    pub fn enter() -> Region {
        DEPTH.with(|d| d.set(d.get() + 1));
        Region(())
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        let depth = DEPTH.with(|d| {
            let v = d.get() - 1;
            d.set(v);
            v
        });
        if depth == 0 {
            CACHE.with(|c| c.borrow_mut().entries.clear());
        }
    }
}

/// Cast `t` to `Q`, through the cache when inside a region and the cast is an
/// F32 → low-precision one (the casts autocast repeats: weights).
pub(crate) fn cast<P: Precision, Q: Precision>(t: &Tensor<P>) -> Tensor<Q> {
    if P::DTYPE == Q::DTYPE {
        return t.cast();
    }
    if P::DTYPE != DType::F32 || DEPTH.with(Cell::get) == 0 {
        return CACHE.with(|c| {
            c.borrow_mut().casts += 1;
            t.cast()
        });
    }
    let core = t.core();
    let key: Key = (
        core.storage_ptr(),
        core.layout().clone(),
        Q::DTYPE,
        // A cast made under `no_grad` has no graph node even when its
        // source has one: key it like an untracked tensor's.
        t.grad_id().filter(|_| crate::autograd::is_grad_enabled()),
    );
    let hit = CACHE.with(|c| {
        let mut c = c.borrow_mut();
        let cast = match c.entries.get(&key) {
            Some((weak, cast, node)) if weak.upgrade().is_some() => {
                Some((cast.clone(), node.clone()))
            }
            _ => None,
        };
        if cast.is_some() {
            c.hits += 1;
        } else {
            // Forget casts of tensors that no longer exist.
            c.entries.retain(|_, (weak, _, _)| weak.strong_count() > 0);
        }
        cast
    });
    if let Some((cast, node)) = hit {
        return Tensor::from_core(cast).with_node(node);
    }
    // Cast without holding the cache: a large cast runs on rayon, and a rayon
    // worker waiting here may run another autocast job on this very thread.
    let out = t.cast::<Q>();
    CACHE.with(|c| {
        let mut c = c.borrow_mut();
        c.casts += 1;
        c.entries.insert(
            key,
            (core.storage_weak(), out.core().clone(), out.node().cloned()),
        );
    });
    out
}

/// How many autocast casts this thread has made, and how many it served from
/// the weight-cast cache instead (counting since the thread started).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CastCounts {
    /// Casts actually performed (new buffers).
    pub casts: usize,
    /// Casts answered by the region's cache.
    pub cache_hits: usize,
}

/// This thread's [`CastCounts`].
///
/// ```
/// use amp::{autocast, Tensor, F32};
/// #[autocast]
/// fn twice(x: &Tensor<F32>, w: &Tensor<F32>) -> amp::Result<Tensor<F32>> {
///     let a = x.matmul(w)?; // casts x and w to F16
///     let b = x.matmul(w)?; // both served from the cache
///     (&a + &b)?.sum().cast::<F32>().reshape([1])
/// }
/// let (x, w) = (Tensor::<F32>::randn([2, 3], 0), Tensor::<F32>::randn([3, 4], 1));
/// let before = amp::autocast::cast_counts();
/// twice(&x, &w).unwrap();
/// let after = amp::autocast::cast_counts();
/// assert_eq!(after.cache_hits - before.cache_hits, 2);
/// ```
pub fn cast_counts() -> CastCounts {
    CACHE.with(|c| {
        let c = c.borrow();
        CastCounts {
            casts: c.casts,
            cache_hits: c.hits,
        }
    })
}
