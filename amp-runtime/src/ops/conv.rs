//! 2-D convolution (NCHW), lowered to one GEMM per image through im2col.
//! Precision-neutral: accumulated in f32, bias added in f32, rounded once.

use rayon::prelude::*;

use crate::cpu::gemm::{self, Operand};
use crate::error::{Error, Result};
use crate::precision::{Precision, SamePrecision};
use crate::tensor::Tensor;

/// Stride, zero padding and dilation of [`Tensor::conv2d`], as `[height, width]`.
///
/// ```
/// use amp::Conv2dOptions;
/// let o = Conv2dOptions { padding: [1, 1], ..Default::default() };
/// assert_eq!(o.stride, [1, 1]);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2dOptions {
    /// Step between output positions.
    pub stride: [usize; 2],
    /// Zeros added on each side.
    pub padding: [usize; 2],
    /// Spacing between kernel taps.
    pub dilation: [usize; 2],
}

impl Default for Conv2dOptions {
    fn default() -> Self {
        Conv2dOptions {
            stride: [1, 1],
            padding: [0, 0],
            dilation: [1, 1],
        }
    }
}

impl<P: Precision> Tensor<P> {
    /// Convolution of `[N, C, H, W]` input with `[O, C, kh, kw]` weight and an
    /// optional `[O]` bias, like `torch.nn.functional.conv2d` (groups = 1).
    ///
    /// ```
    /// use amp::{Conv2dOptions, Tensor, F16};
    /// # fn main() -> amp::Result<()> {
    /// let x = Tensor::<F16>::ones([1, 3, 8, 8]);
    /// let w = Tensor::<F16>::ones([4, 3, 3, 3]);
    /// let opts = Conv2dOptions { padding: [1, 1], ..Default::default() };
    /// let y = x.conv2d(&w, None, opts)?;
    /// assert_eq!(y.dims(), &[1, 4, 8, 8]);
    /// assert_eq!(y.to_f32_vec()[9], 27.0); // an interior pixel sees 3·3·3 ones
    /// # Ok(()) }
    /// ```
    pub fn conv2d<Q: Precision + SamePrecision<P>>(
        &self,
        weight: &Tensor<Q>,
        bias: Option<&Tensor<Q>>,
        opts: Conv2dOptions,
    ) -> Result<Self> {
        const OP: &str = "conv2d";
        self.core().same_device(weight.core(), OP)?;
        if self.rank() != 4 || weight.rank() != 4 {
            return Err(Error::shape_mismatch(
                OP,
                self.shape(),
                weight.shape(),
                "input must be [N, C, H, W] and weight [O, C, kh, kw]",
            ));
        }
        let [n, c, h, w] = [
            self.dims()[0],
            self.dims()[1],
            self.dims()[2],
            self.dims()[3],
        ];
        let [o, wc, kh, kw] = [
            weight.dims()[0],
            weight.dims()[1],
            weight.dims()[2],
            weight.dims()[3],
        ];
        if wc != c {
            return Err(Error::shape_mismatch(
                OP,
                self.shape(),
                weight.shape(),
                format!("input has {c} channels but weight expects {wc}"),
            ));
        }
        if opts.stride.contains(&0) || opts.dilation.contains(&0) {
            return Err(Error::invalid(
                OP,
                format!(
                    "stride {:?} and dilation {:?} must be positive",
                    opts.stride, opts.dilation
                ),
            ));
        }
        if let Some(b) = bias
            && b.dims() != [o]
        {
            return Err(Error::shape_mismatch(
                OP,
                b.shape(),
                weight.shape(),
                format!("bias must be [out_channels] = [{o}]"),
            ));
        }
        let out_size = |size: usize, k: usize, i: usize| -> Option<usize> {
            let span = opts.dilation[i] * (k.checked_sub(1)?) + 1;
            let padded = size + 2 * opts.padding[i];
            padded.checked_sub(span).map(|r| r / opts.stride[i] + 1)
        };
        let (oh, ow) = match (out_size(h, kh, 0), out_size(w, kw, 1)) {
            (Some(oh), Some(ow)) => (oh, ow),
            _ => {
                return Err(Error::shape_mismatch(
                    OP,
                    self.shape(),
                    weight.shape(),
                    format!(
                        "the kernel ({kh}×{kw}, dilation {:?}) is larger than the padded input ({}×{}); add padding or use a smaller kernel",
                        opts.dilation,
                        h + 2 * opts.padding[0],
                        w + 2 * opts.padding[1]
                    ),
                ));
            }
        };
        let x = self.core().contiguous_f32();
        let wt = weight.core().contiguous_f32();
        let (ckk, l) = (c * kh * kw, oh * ow);
        // cols[n][(ci, ky, kx)][(oy, ox)]
        let mut cols = vec![0f32; n * ckk * l];
        if l > 0 {
            cols.par_chunks_mut(l).enumerate().for_each(|(row, dst)| {
                let (b, r) = (row / ckk, row % ckk);
                let (ci, ky, kx) = (r / (kh * kw), (r / kw) % kh, r % kw);
                let plane = &x[(b * c + ci) * h * w..][..h * w];
                for oy in 0..oh {
                    let iy = (oy * opts.stride[0] + ky * opts.dilation[0]) as isize
                        - opts.padding[0] as isize;
                    for ox in 0..ow {
                        let ix = (ox * opts.stride[1] + kx * opts.dilation[1]) as isize
                            - opts.padding[1] as isize;
                        dst[oy * ow + ox] =
                            if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < w {
                                plane[iy as usize * w + ix as usize]
                            } else {
                                0.0
                            };
                    }
                }
            });
        }
        let zero_offsets = vec![0; n];
        let col_offsets: Vec<usize> = (0..n).map(|b| b * ckk * l).collect();
        let mut out = vec![0f32; n * o * l];
        gemm::batched(
            Operand {
                data: &wt,
                batch_offsets: &zero_offsets,
                rs: ckk,
                cs: 1,
            },
            Operand {
                data: &cols,
                batch_offsets: &col_offsets,
                rs: l,
                cs: 1,
            },
            o,
            l,
            ckk,
            &mut out,
        );
        if let (Some(b), true) = (bias, l > 0) {
            let b = b.core().contiguous_f32();
            for (i, plane) in out.chunks_mut(l).enumerate() {
                let bias = b[i % o];
                plane.iter_mut().for_each(|v| *v += bias);
            }
        }
        Ok(Self::from_f32_values(out, [n, o, oh, ow]))
    }
}
