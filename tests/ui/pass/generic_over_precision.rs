// Generic code: `P: Precision` for neutral ops, `P: Wide` for sensitive ones.
use amp::{BF16, F16, F32, Precision, Tensor, Wide};

fn project<P: Precision>(x: &Tensor<P>, w: &Tensor<P>) -> amp::Result<Tensor<P>> {
    (&x.linear(w, None)? + x)?.relu().matmul(w)
}

fn normalize<P: Wide>(x: &Tensor<P>) -> amp::Result<Tensor<P>> {
    x.softmax(-1)
}

fn main() -> amp::Result<()> {
    let x = Tensor::<F32>::randn([4, 4], 0);
    let w = Tensor::<F32>::randn([4, 4], 1);
    let y16 = project(&x.cast::<F16>(), &w.cast::<F16>())?;
    let y_bf16 = project(&x.cast::<BF16>(), &w.cast::<BF16>())?;
    let p = normalize(&y16.cast::<F32>())?;
    let q = normalize(&y_bf16.cast::<F32>())?;
    assert_eq!(p.dims(), q.dims());
    Ok(())
}
