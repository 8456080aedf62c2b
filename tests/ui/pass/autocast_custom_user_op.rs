// `custom(my_op = lower|f32|keep)`: the tensor arguments of the user's own
// functions and methods are cast (PyTorch's `custom_fwd(cast_inputs=..)`);
// their other arguments pass through untouched.
#![deny(warnings)]
use amp::{BF16, DType, F16, F32, Precision, Tensor, autocast};

/// A fused op written for F16 only.
fn fused_f16(x: &Tensor<F16>, w: &Tensor<F16>, scale: f32) -> amp::Result<Tensor<F16>> {
    Ok(x.matmul(w)?.mul_scalar(scale).relu())
}

/// A numerically sensitive op written for F32 only.
fn my_norm(x: &Tensor<F32>, eps: f32) -> amp::Result<Tensor<F32>> {
    let var = x.sqr().mean_dim(-1, true)?;
    x.div(&var.add_scalar(eps).sqrt())
}

/// Any precision: `keep` leaves it as it comes.
fn describe<P: Precision>(x: &Tensor<P>, name: &str) -> String {
    format!("{name}:{:?}", x.dtype())
}

struct Scaler {
    factor: f32,
}

impl Scaler {
    fn apply(&self, x: &Tensor<F16>) -> Tensor<F16> {
        x.mul_scalar(self.factor)
    }
}

#[autocast(custom(fused_f16 = lower, my_norm = f32, describe = keep, apply = lower))]
fn forward(x: &Tensor<F32>, w: &Tensor<BF16>, s: &Scaler) -> amp::Result<(Tensor<F32>, String)> {
    let h: Tensor<F16> = fused_f16(x, w, 0.5)?;
    let h: Tensor<F16> = s.apply(&h);
    let label = describe(&h, "h");
    let y: Tensor<F32> = my_norm(&h, 1e-5)?;
    Ok((y, label))
}

fn main() -> amp::Result<()> {
    let x = Tensor::<F32>::randn([2, 4], 0);
    let w = Tensor::<F32>::randn([4, 3], 1).cast::<BF16>();
    let s = Scaler { factor: 2.0 };
    let (r, plan) = amp::autocast::record(|| forward(&x, &w, &s));
    let (y, label) = r?;
    assert_eq!(label, "h:F16");
    assert_eq!(y.dims(), &[2, 3]);
    let ran: Vec<_> = plan
        .records()
        .iter()
        .map(|r| (r.site.op, r.inputs.clone(), r.ran_in.clone()))
        .collect();
    assert_eq!(
        ran,
        [
            // Only the tensors are noted: `0.5` passed through.
            (
                "fused_f16",
                vec![DType::F32, DType::BF16],
                vec![DType::F16; 2]
            ),
            // The receiver `s` is not a tensor: only `&h` is cast.
            ("apply", vec![DType::F16], vec![DType::F16]),
            ("describe", vec![DType::F16], vec![DType::F16]),
            ("my_norm", vec![DType::F16], vec![DType::F32]),
        ]
    );
    Ok(())
}
