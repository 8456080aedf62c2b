//! 2-D convolution (NCHW), lowered through im2col to one GEMM per image and
//! channel group; its backward reuses the same column layout (the weight
//! gradient is a GEMM with the columns, the input gradient a GEMM followed by
//! the inverse scatter, col2im). Precision-neutral: accumulated in f32, bias
//! added in f32, rounded once; so are the gradients.

use rayon::prelude::*;

use crate::cpu::gemm::{self, Operand};
use crate::error::{Error, Result};
use crate::precision::{Precision, SamePrecision};
use crate::tensor::Tensor;

/// Stride, zero padding and dilation of [`Tensor::conv2d`], as `[height, width]`,
/// and its channel groups.
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
    /// Channel groups: input and output channels are split into `groups`
    /// equal parts, each output part seeing only its input part (`groups = C`
    /// is a depthwise convolution). Must divide both channel counts.
    pub groups: usize,
}

impl Default for Conv2dOptions {
    fn default() -> Self {
        Conv2dOptions {
            stride: [1, 1],
            padding: [0, 0],
            dilation: [1, 1],
            groups: 1,
        }
    }
}

impl<P: Precision> Tensor<P> {
    /// Convolution of `[N, C, H, W]` input with `[O, C / groups, kh, kw]`
    /// weight and an optional `[O]` bias, like `torch.nn.functional.conv2d`.
    /// Differentiable in the input, the weight and the bias.
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
    ///
    /// // Depthwise: one 3×3 filter per channel.
    /// let dw = Tensor::<F16>::ones([3, 1, 3, 3]);
    /// let opts = Conv2dOptions { padding: [1, 1], groups: 3, ..Default::default() };
    /// assert_eq!(x.conv2d(&dw, None, opts)?.to_f32_vec()[9], 9.0);
    /// # Ok(()) }
    /// ```
    pub fn conv2d<Q: Precision + SamePrecision<P>>(
        &self,
        weight: &Tensor<Q>,
        bias: Option<&Tensor<Q>>,
        opts: Conv2dOptions,
    ) -> Result<Self> {
        const OP: &str = "conv2d";
        // On a GPU: staged (im2col and its backward run on the host).
        #[cfg(feature = "cuda")]
        {
            let mut cores = vec![self.core(), weight.core()];
            cores.extend(bias.map(Tensor::core));
            if let Some(dev) = super::gpu::gpu(&cores, OP)? {
                return super::gpu::stage2(dev, self, weight, |x, w| {
                    x.conv2d(w, super::gpu::host(bias)?.as_ref(), opts)
                });
            }
        }
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
        let groups = opts.groups;
        if groups == 0 || !c.is_multiple_of(groups) || !o.is_multiple_of(groups) {
            return Err(Error::shape_mismatch(
                OP,
                self.shape(),
                weight.shape(),
                format!(
                    "groups = {groups} must be positive and divide both the input's {c} channels and the weight's {o} output channels"
                ),
            ));
        }
        if wc * groups != c {
            let fix = if groups == 1 {
                format!("input has {c} channels but weight expects {wc}")
            } else {
                format!(
                    "input has {c} channels, so with groups = {groups} the weight's dim 1 must be {} (got {wc})",
                    c / groups
                )
            };
            return Err(Error::shape_mismatch(OP, self.shape(), weight.shape(), fix));
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
        let geo = Geometry {
            n,
            c,
            h,
            w,
            o,
            kh,
            kw,
            oh,
            ow,
            groups,
            opts,
        };
        let x = self.core().contiguous_f32();
        let wt = weight.core().contiguous_f32();
        let cols = geo.im2col(&x);
        let mut out = vec![0f32; n * o * geo.l()];
        let (ckk_g, og, l) = (geo.ckk() / groups, o / groups, geo.l());
        // One product per (image, group): W_g [og, ckk_g] · cols [ckk_g, l].
        let w_offsets: Vec<usize> = (0..n * groups)
            .map(|bi| (bi % groups) * og * ckk_g)
            .collect();
        let col_offsets: Vec<usize> = (0..n * groups).map(|bi| bi * ckk_g * l).collect();
        gemm::batched(
            Operand {
                data: &wt,
                batch_offsets: &w_offsets,
                rs: ckk_g,
                cs: 1,
            },
            Operand {
                data: &cols,
                batch_offsets: &col_offsets,
                rs: l,
                cs: 1,
            },
            og,
            l,
            ckk_g,
            &mut out,
        );
        if let (Some(b), true) = (bias, l > 0) {
            let b = b.core().contiguous_f32();
            for (i, plane) in out.chunks_mut(l).enumerate() {
                let bias = b[i % o];
                plane.iter_mut().for_each(|v| *v += bias);
            }
        }
        let out = Self::from_f32_values(out, [n, o, oh, ow]);
        // `Q` is `P`, so these casts are free and keep the graph nodes.
        let (weight, bias) = (weight.cast::<P>(), bias.map(Tensor::cast::<P>));
        let mut inputs = vec![self, &weight];
        inputs.extend(bias.as_ref());
        let (x, wt) = (self.detach(), weight.detach());
        Ok(out.grad_n("conv2d", &inputs, move |g, need| {
            let dy = g.core().contiguous_f32();
            let mut grads = vec![None, None];
            if need[0] {
                let dx = geo.input_grad(&dy, &wt.core().contiguous_f32());
                grads[0] = Some(Tensor::from_f32_values(dx, x.shape().clone()));
            }
            if need[1] {
                let dw = geo.weight_grad(&dy, &x.core().contiguous_f32());
                grads[1] = Some(Tensor::from_f32_values(dw, wt.shape().clone()));
            }
            if need.len() > 2 {
                let db = need[2].then(|| {
                    let mut db = vec![0f64; o];
                    if l > 0 {
                        for (i, plane) in dy.chunks(l).enumerate() {
                            db[i % o] += plane.iter().map(|&v| v as f64).sum::<f64>();
                        }
                    }
                    Tensor::from_f32_values(db.into_iter().map(|v| v as f32).collect(), [o])
                });
                grads.push(db);
            }
            Ok(grads)
        }))
    }
}

/// Sizes of one convolution, shared by the forward and its backward.
#[derive(Clone, Copy)]
struct Geometry {
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    o: usize,
    kh: usize,
    kw: usize,
    oh: usize,
    ow: usize,
    groups: usize,
    opts: Conv2dOptions,
}

impl Geometry {
    /// Rows of an image's column matrix: every (channel, ky, kx) tap.
    fn ckk(&self) -> usize {
        self.c * self.kh * self.kw
    }

    /// Output positions per image.
    fn l(&self) -> usize {
        self.oh * self.ow
    }

    /// The input position a tap reads for an output position, if inside the
    /// image (outside is zero padding).
    fn source(&self, oy: usize, ox: usize, ky: usize, kx: usize) -> Option<usize> {
        let o = &self.opts;
        let iy = (oy * o.stride[0] + ky * o.dilation[0]).checked_sub(o.padding[0])?;
        let ix = (ox * o.stride[1] + kx * o.dilation[1]).checked_sub(o.padding[1])?;
        (iy < self.h && ix < self.w).then_some(iy * self.w + ix)
    }

    /// `cols[n][(ci, ky, kx)][(oy, ox)]`: the input value each tap reads at
    /// each output position. A group's rows are contiguous.
    fn im2col(&self, x: &[f32]) -> Vec<f32> {
        let (ckk, l, kk) = (self.ckk(), self.l(), self.kh * self.kw);
        let mut cols = vec![0f32; self.n * ckk * l];
        if l > 0 {
            cols.par_chunks_mut(l).enumerate().for_each(|(row, dst)| {
                let (b, r) = (row / ckk, row % ckk);
                let (ci, ky, kx) = (r / kk, (r / self.kw) % self.kh, r % self.kw);
                let plane = &x[(b * self.c + ci) * self.h * self.w..][..self.h * self.w];
                for oy in 0..self.oh {
                    for ox in 0..self.ow {
                        dst[oy * self.ow + ox] =
                            self.source(oy, ox, ky, kx).map_or(0.0, |i| plane[i]);
                    }
                }
            });
        }
        cols
    }

    /// `dx` from `dy`: `dcols = W_gᵀ · dy` per (image, group), then each
    /// column entry added back to the input position it was read from.
    fn input_grad(&self, dy: &[f32], wt: &[f32]) -> Vec<f32> {
        let (ckk, l, g) = (self.ckk(), self.l(), self.groups);
        let (ckk_g, og) = (ckk / g, self.o / g);
        let mut dcols = vec![0f32; self.n * ckk * l];
        let w_offsets: Vec<usize> = (0..self.n * g).map(|bi| (bi % g) * og * ckk_g).collect();
        let dy_offsets: Vec<usize> = (0..self.n * g).map(|bi| bi * og * l).collect();
        gemm::batched(
            Operand {
                data: wt,
                batch_offsets: &w_offsets,
                rs: 1,
                cs: ckk_g,
            },
            Operand {
                data: dy,
                batch_offsets: &dy_offsets,
                rs: l,
                cs: 1,
            },
            ckk_g,
            l,
            og,
            &mut dcols,
        );
        let (hw, kk) = (self.h * self.w, self.kh * self.kw);
        let mut dx = vec![0f32; self.n * self.c * hw];
        if hw > 0 && l > 0 {
            // One input plane per task: the taps that read it are its own rows.
            dx.par_chunks_mut(hw).enumerate().for_each(|(plane, dst)| {
                let rows = &dcols[plane * kk * l..][..kk * l];
                for (r, row) in rows.chunks(l).enumerate() {
                    let (ky, kx) = (r / self.kw, r % self.kw);
                    for oy in 0..self.oh {
                        for ox in 0..self.ow {
                            if let Some(i) = self.source(oy, ox, ky, kx) {
                                dst[i] += row[oy * self.ow + ox];
                            }
                        }
                    }
                }
            });
        }
        dx
    }

    /// `dW_g = Σ_images dy_g · cols_gᵀ`, as `[O, C/groups, kh, kw]`.
    fn weight_grad(&self, dy: &[f32], x: &[f32]) -> Vec<f32> {
        let (ckk, l, g) = (self.ckk(), self.l(), self.groups);
        let (ckk_g, og) = (ckk / g, self.o / g);
        let cols = self.im2col(x);
        let batches = self.n * g;
        let dy_offsets: Vec<usize> = (0..batches).map(|bi| bi * og * l).collect();
        let col_offsets: Vec<usize> = (0..batches).map(|bi| bi * ckk_g * l).collect();
        // Per (image, group) products, summed over images below.
        let mut per = vec![0f32; batches * og * ckk_g];
        gemm::batched(
            Operand {
                data: dy,
                batch_offsets: &dy_offsets,
                rs: l,
                cs: 1,
            },
            Operand {
                data: &cols,
                batch_offsets: &col_offsets,
                rs: 1,
                cs: l,
            },
            og,
            ckk_g,
            l,
            &mut per,
        );
        let size = self.o * ckk_g;
        let mut dw = vec![0f32; size];
        for image in per.chunks(size.max(1)).take(self.n) {
            dw.iter_mut().zip(image).for_each(|(d, v)| *d += v);
        }
        dw
    }
}
