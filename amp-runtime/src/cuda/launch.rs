//! Launch configurations and the `Strided` kernel argument. Pure code: unit
//! tested without a GPU.

use cudarc::driver::{DeviceRepr, LaunchConfig};

/// Launch kernel `$name` of module `$module` with the given arguments (a macro
/// so each argument keeps its own type for cudarc's `arg`), mapping a launch
/// failure to an `Error::Cuda` naming `$op`. Arguments must be places (locals),
/// not temporaries: the launch builder keeps a reference to each until the
/// launch.
macro_rules! launch {
    ($backend:expr, $module:literal, $name:expr, $op:expr, $cfg:expr; $($arg:expr),* $(,)?) => {{
        use cudarc::driver::PushKernelArg as _;
        let backend: &std::sync::Arc<$crate::cuda::backend::Backend> = $backend;
        let f = backend.function($module, &$name, $op)?;
        let mut l = backend.stream.launch_builder(&f);
        $(l.arg(&$arg);)*
        // SAFETY: every call site passes the arguments of this kernel's
        // signature in kernels/README.md, in order and with its C types (u64
        // counts and device addresses, u32, f32, f64, `#[repr(C)]` structs by
        // value), and every address points into a live buffer of the backend's
        // device with the extent the kernel reads or writes (the callers size
        // the buffers from the same counts they pass).
        unsafe { l.launch($cfg) }.map_err($crate::cuda::backend::driver_err($op))?;
    }};
}
pub(crate) use launch;

/// Threads per block for every amp kernel (row kernels reduce across it).
pub(crate) const BLOCK: u32 = 256;

/// The most dims a strided kernel indexes (after merging).
pub(crate) const MAX_RANK: usize = 8;

/// A grid-stride elementwise launch over `n` elements: enough blocks to fill
/// the GPU several times over (or to cover `n`, if fewer), never zero.
pub(crate) fn elementwise(n: usize, sm_count: u32) -> LaunchConfig {
    let needed = n.div_ceil(BLOCK as usize).max(1);
    let cap = (sm_count.max(1) as usize) * 32;
    LaunchConfig {
        grid_dim: (needed.min(cap) as u32, 1, 1),
        block_dim: (BLOCK, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// One block per row (kernels loop over rows with a grid stride, so very many
/// rows are fine).
pub(crate) fn rows(rows: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (rows.clamp(1, 65_535 * 16) as u32, 1, 1),
        block_dim: (BLOCK, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// `struct Strided` of the kernels' prelude: element `i` of a contiguous index
/// space over `dims` reads `x[Σ coord_d(i) · strides[d]]`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Strided {
    pub rank: i32,
    pub pad: i32,
    pub dims: [i64; MAX_RANK],
    pub strides: [i64; MAX_RANK],
}

// SAFETY: `Strided` is `repr(C)`, plain old data, laid out exactly like the
// prelude's `struct Strided { int rank; int pad; i64 dims[8]; i64 strides[8]; }`.
unsafe impl DeviceRepr for Strided {}

/// Merge dims for strided kernels: drop size-1 dims and fuse neighbours that
/// are contiguous with each other in *every* operand (each operand's strides
/// are given over the same `dims`). Returns the merged dims and, per operand,
/// its merged strides; `None` when more than [`MAX_RANK`] dims remain.
pub(crate) fn merge(dims: &[usize], strides: &[&[usize]]) -> Option<(Vec<usize>, Vec<Vec<usize>>)> {
    let keep: Vec<usize> = (0..dims.len()).filter(|&d| dims[d] != 1).collect();
    let mut out_dims: Vec<usize> = Vec::new();
    let mut out_strides: Vec<Vec<usize>> = vec![Vec::new(); strides.len()];
    for &d in &keep {
        let fusable = !out_dims.is_empty()
            && strides.iter().enumerate().all(|(o, s)| {
                let prev = *out_strides[o].last().expect("non-empty");
                prev == s[d] * dims[d]
            });
        if fusable {
            *out_dims.last_mut().expect("non-empty") *= dims[d];
            for (o, s) in strides.iter().enumerate() {
                *out_strides[o].last_mut().expect("non-empty") = s[d];
            }
        } else {
            out_dims.push(dims[d]);
            for (o, s) in strides.iter().enumerate() {
                out_strides[o].push(s[d]);
            }
        }
    }
    if out_dims.is_empty() {
        out_dims.push(1);
        out_strides.iter_mut().for_each(|s| s.push(0));
    }
    (out_dims.len() <= MAX_RANK).then_some((out_dims, out_strides))
}

impl Strided {
    /// The argument for merged `dims` and one operand's `strides`.
    pub(crate) fn new(dims: &[usize], strides: &[usize]) -> Strided {
        debug_assert!(dims.len() <= MAX_RANK && dims.len() == strides.len());
        let mut s = Strided {
            rank: dims.len() as i32,
            pad: 0,
            dims: [1; MAX_RANK],
            strides: [0; MAX_RANK],
        };
        for (d, (&n, &st)) in dims.iter().zip(strides).enumerate() {
            s.dims[d] = n as i64;
            s.strides[d] = st as i64;
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elementwise_grid_covers_small_and_caps_large() {
        assert_eq!(elementwise(0, 132).grid_dim.0, 1);
        assert_eq!(elementwise(1000, 132).grid_dim.0, 4);
        assert_eq!(elementwise(1 << 30, 132).grid_dim.0, 132 * 32);
        assert_eq!(elementwise(1 << 30, 132).block_dim.0, BLOCK);
    }

    #[test]
    fn row_grid_is_never_zero_and_capped() {
        assert_eq!(rows(0).grid_dim.0, 1);
        assert_eq!(rows(7).grid_dim.0, 7);
        assert_eq!(rows(usize::MAX).grid_dim.0, 65_535 * 16);
    }

    #[test]
    fn merging_fuses_contiguous_dims_and_keeps_broadcasts() {
        // [2,3,4] contiguous and a [4] bias broadcast over it.
        let (d, s) = merge(&[2, 3, 4], &[&[12, 4, 1], &[0, 0, 1]]).unwrap();
        assert_eq!(d, vec![6, 4]);
        assert_eq!(s, vec![vec![4, 1], vec![0, 1]]);
        // Both contiguous: one dim.
        let (d, s) = merge(&[2, 3, 4], &[&[12, 4, 1], &[12, 4, 1]]).unwrap();
        assert_eq!((d, s), (vec![24], vec![vec![1], vec![1]]));
        // A transpose does not fuse; size-1 dims vanish.
        let (d, s) = merge(&[3, 1, 2], &[&[1, 6, 3]]).unwrap();
        assert_eq!((d, s), (vec![3, 2], vec![vec![1, 3]]));
        // A scalar.
        let (d, s) = merge(&[], &[&[]]).unwrap();
        assert_eq!((d, s), (vec![1], vec![vec![0]]));
    }

    #[test]
    fn too_many_dims_is_refused_not_truncated() {
        let dims = [2usize; 9];
        // Reversed strides (a full transpose): no two neighbours fuse.
        let strides: Vec<usize> = (0..9).map(|d| 1 << d).collect();
        assert!(merge(&dims, &[&strides]).is_none());
    }

    #[test]
    fn strided_matches_the_c_layout() {
        assert_eq!(std::mem::size_of::<Strided>(), 8 + 8 * 8 * 2);
        let s = Strided::new(&[6, 4], &[4, 1]);
        assert_eq!(
            (s.rank, s.dims[..2].to_vec(), s.strides[..2].to_vec()),
            (2, vec![6, 4], vec![4, 1])
        );
    }
}
