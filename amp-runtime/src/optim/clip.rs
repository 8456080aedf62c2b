//! [`clip_grad_norm`]: PyTorch's `torch.nn.utils.clip_grad_norm_`.

use rayon::prelude::*;

use super::engine::GradData;
use super::optimizer::UnscaledGradientsMut;
use crate::autograd::NodeId;
use crate::cpu::{PAR_CHUNK, PAR_THRESHOLD};
use crate::error::{Error, Result};
use crate::storage::TensorCore;

/// Scale all gradients down so that their joint L2 norm is at most
/// `max_norm`, and return the norm they had before (PyTorch's
/// `clip_grad_norm_` with `norm_type=2`).
///
/// The norm is accumulated in f64 over every gradient in the set; when it
/// exceeds `max_norm`, each gradient is multiplied by
/// `max_norm / (norm + 1e-6)` (so the clipped norm is just under
/// `max_norm`), computed in f32 and rounded once to the gradient's
/// precision. Gradients with an inf or NaN make the norm inf or NaN and are
/// scaled by 0 or NaN, as in PyTorch; the returned norm tells you (a
/// GradScaler skips such steps anyway).
///
/// Takes unscaled gradients only: the result of `backward`, or a
/// GradScaler's unscaled gradients. Scaled gradients do not compile: their
/// norm is the true norm times the loss scale.
///
/// Gradients on a GPU stay there: their squares are summed on the device
/// (in f32, so the norm can differ from the host's f64 sum in the last bits
/// of an f32, and a square above f32's range is inf there), one value per
/// GPU is read back (which waits for the GPU: the host needs the norm to
/// decide), and the scaling runs on the device.
///
/// Errors (and changes nothing) when `max_norm` is negative or not finite;
/// a device failure is an error too, after which some gradients may be
/// scaled.
///
/// ```
/// use amp::optim::clip_grad_norm;
/// use amp::{Tensor, F32};
/// # fn main() -> amp::Result<()> {
/// let x = Tensor::<F32>::from_f32(&[1.0, 2.0], [2])?.requires_grad();
/// let mut grads = x.mul_scalar(10.0).sum().backward()?; // gradient [10, 10]
/// let norm = clip_grad_norm(&mut grads, 1.0)?;
/// assert!((norm - 200f32.sqrt()).abs() < 1e-4);
/// assert!((grads.global_norm() - 1.0).abs() < 1e-5);
/// # Ok(()) }
/// ```
pub fn clip_grad_norm<G: UnscaledGradientsMut + ?Sized>(
    grads: &mut G,
    max_norm: f32,
) -> Result<f32> {
    if !(max_norm.is_finite() && max_norm >= 0.0) {
        return Err(Error::invalid(
            "clip_grad_norm",
            format!(
                "max_norm = {max_norm} must be finite and non-negative; the usual value is 1.0"
            ),
        ));
    }
    let grads = grads.gradients_mut();
    // Sorted, so the f64 sum adds in the same order every run.
    let mut ids: Vec<NodeId> = grads.cores().map(|(id, _)| id).collect();
    ids.sort();
    let mut sum = 0f64;
    for &id in &ids {
        if let Some(g) = grads.core(id)
            && !g.device().is_cuda()
        {
            sum += sum_of_squares(g);
        }
    }
    #[cfg(feature = "cuda")]
    {
        sum += device_sum_of_squares(grads, &ids)?;
    }
    let norm = sum.sqrt();
    let coef = (max_norm as f64 / (norm + 1e-6)) as f32;
    // clamp(max = 1), letting NaN through like torch.clamp.
    if !(coef < 1.0 || coef.is_nan()) {
        return Ok(norm as f32);
    }
    for id in ids {
        if let Some(g) = grads.core_mut(id) {
            #[cfg(feature = "cuda")]
            if g.device().is_cuda() {
                *g = crate::cuda::optim::scale(g, coef)?;
                continue;
            }
            *g = scaled(g, coef);
        }
    }
    Ok(norm as f32)
}

/// Σ g² over the gradients on GPUs, summed on each GPU and read back once
/// per GPU, in the fixed order of `ids`.
#[cfg(feature = "cuda")]
fn device_sum_of_squares(grads: &crate::autograd::Gradients, ids: &[NodeId]) -> Result<f64> {
    use std::collections::BTreeMap;

    use crate::device::Device;

    let mut by_gpu: BTreeMap<usize, Vec<&TensorCore>> = BTreeMap::new();
    for id in ids {
        if let Some(g) = grads.core(*id)
            && let Device::Cuda(n) = g.device()
        {
            by_gpu.entry(n).or_default().push(g);
        }
    }
    let mut sum = 0f64;
    for gs in by_gpu.values() {
        sum += crate::cuda::optim::sum_of_squares(gs, "clip_grad_norm")?;
    }
    Ok(sum)
}

/// Σ g², in f64, in a fixed order (chunks are summed left to right).
fn sum_of_squares(g: &TensorCore) -> f64 {
    let owned;
    let data = match GradData::contiguous(g) {
        Some(d) => d,
        None => {
            owned = g.contiguous_f32();
            GradData::F32(&owned)
        }
    };
    let chunk = |start: usize, len: usize| {
        let mut buf = [0f32; 1024];
        let mut s = 0f64;
        let mut i = start;
        while i < start + len {
            let k = (start + len - i).min(buf.len());
            data.read(i, &mut buf[..k]);
            s += squares(&buf[..k]);
            i += k;
        }
        s
    };
    let n = data.len();
    if n < PAR_THRESHOLD {
        return chunk(0, n);
    }
    let parts: Vec<f64> = (0..n.div_ceil(PAR_CHUNK))
        .into_par_iter()
        .map(|c| {
            let start = c * PAR_CHUNK;
            chunk(start, PAR_CHUNK.min(n - start))
        })
        .collect();
    parts.iter().sum()
}

/// Σ v² in f64, over 8 independent lanes so the adds vectorize (a single
/// f64 accumulator is bound by the add latency, at a quarter of the speed).
fn squares(v: &[f32]) -> f64 {
    let mut lanes = [0f64; 8];
    let mut chunks = v.chunks_exact(8);
    for c in &mut chunks {
        for (l, &x) in lanes.iter_mut().zip(c) {
            *l += (x as f64) * (x as f64);
        }
    }
    let tail: f64 = chunks
        .remainder()
        .iter()
        .map(|&x| (x as f64) * (x as f64))
        .sum();
    lanes.iter().sum::<f64>() + tail
}

/// `g · coef`, computed in f32 and rounded once to `g`'s precision.
fn scaled(g: &TensorCore, coef: f32) -> TensorCore {
    let src = g.contiguous_f32();
    let v: Vec<f32> = if src.len() < PAR_THRESHOLD {
        src.iter().map(|&x| x * coef).collect()
    } else {
        src.par_iter()
            .with_min_len(PAR_CHUNK)
            .map(|&x| x * coef)
            .collect()
    };
    TensorCore::from_f32(v, g.shape().clone(), g.dtype())
}
