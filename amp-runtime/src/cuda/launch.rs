//! Launch configurations and the `Strided` kernel argument. Pure code: unit
//! tested without a GPU.

use std::ffi::c_void;

/// Grid and block of a launch (`cuLaunchKernel`'s dimensions).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct LaunchConfig {
    pub grid_dim: (u32, u32, u32),
    pub block_dim: (u32, u32, u32),
    /// Dynamic shared memory (amp's kernels use none).
    pub shared_mem_bytes: u32,
}

/// A value a kernel takes as a parameter: plain old data with the C layout of
/// the parameter (integers, floats, device addresses as `u64`, `#[repr(C)]`
/// structs mirroring the kernels' own).
///
/// # Safety
/// Every bit pattern of the type's size is what the kernel's parameter type
/// reads, and the type has no padding or pointers to host memory.
pub(crate) unsafe trait KernelArg: Copy + 'static {}

// SAFETY: the C types u64/i64/u32/i32/float/double, same size and layout.
unsafe impl KernelArg for u64 {}
// SAFETY: as above.
unsafe impl KernelArg for i64 {}
// SAFETY: as above.
unsafe impl KernelArg for u32 {}
// SAFETY: as above.
unsafe impl KernelArg for i32 {}
// SAFETY: as above.
unsafe impl KernelArg for f32 {}
// SAFETY: as above.
unsafe impl KernelArg for f64 {}

/// A kernel's arguments, each copied into storage of its own (so an
/// argument may be any expression, temporaries included), handed to the
/// driver as `cuLaunchKernel` takes them: one pointer per argument.
pub(crate) struct Args {
    values: Vec<Box<[u64]>>,
    ptrs: Vec<*mut c_void>,
    sizes: Vec<usize>,
}

impl Args {
    pub(crate) fn new() -> Self {
        Args {
            values: Vec::new(),
            ptrs: Vec::new(),
            sizes: Vec::new(),
        }
    }

    /// Append one argument (its bytes are copied).
    pub(crate) fn push<T: KernelArg>(&mut self, v: T) -> &mut Self {
        let size = std::mem::size_of::<T>();
        // u64 cells: aligned for every KernelArg (none is aligned beyond 8).
        const { assert!(std::mem::align_of::<T>() <= 8) };
        let mut cell = vec![0u64; size.div_ceil(8).max(1)].into_boxed_slice();
        // SAFETY: the cell holds at least `size` bytes, suitably aligned, and
        // `T: KernelArg` is plain old data.
        unsafe { std::ptr::write(cell.as_mut_ptr().cast::<T>(), v) };
        self.ptrs.push(cell.as_mut_ptr().cast());
        self.sizes.push(size);
        // Moving the box does not move its heap cell: the pointer stays valid.
        self.values.push(cell);
        self
    }

    /// The pointers and sizes, valid while `self` lives.
    pub(crate) fn raw(&mut self) -> (&mut [*mut c_void], &[usize]) {
        (&mut self.ptrs, &self.sizes)
    }
}

/// Launch kernel `$name` of module `$module` with the given arguments,
/// mapping a launch failure to an `Error::Cuda` naming `$op`. Each argument
/// is a [`KernelArg`](crate::cuda::launch::KernelArg), copied.
macro_rules! launch {
    ($backend:expr, $module:literal, $name:expr, $op:expr, $cfg:expr; $($arg:expr),* $(,)?) => {{
        let backend: &std::sync::Arc<$crate::cuda::backend::Backend> = $backend;
        let mut args = $crate::cuda::launch::Args::new();
        $(args.push($arg);)*
        let name: &str = &$name;
        // SAFETY: every call site passes the arguments of this kernel's
        // signature in kernels/README.md, in order and with its C types (u64
        // counts and device addresses, u32, f32, f64, `#[repr(C)]` structs by
        // value), and every address points into a live buffer of the backend's
        // device with the extent the kernel reads or writes (the callers size
        // the buffers from the same counts they pass).
        unsafe { backend.launch($module, name, $op, $cfg, &mut args) }?;
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
unsafe impl KernelArg for Strided {}

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
