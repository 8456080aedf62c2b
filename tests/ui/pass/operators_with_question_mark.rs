// `+ - * /` between tensors return `Result` (shapes may not broadcast), so `?`
// unwraps them; scalar operators cannot fail and return the tensor directly.
use amp::{BF16, F16, F32, Tensor};

fn residual(x: &Tensor<F16>, h: &Tensor<F16>) -> amp::Result<Tensor<F16>> {
    let y = (x + h)?;
    let y = (&y * 0.5) - 1.0;
    (&y / x)? - h.clone()
}

fn main() -> amp::Result<()> {
    let x = Tensor::<F16>::full(2.0, [2, 3]);
    let h = Tensor::<F16>::ones([2, 3]);
    let r = residual(&x, &h)?;
    assert_eq!(r.dims(), &[2, 3]);

    let a = Tensor::<BF16>::ones([3]);
    let b = (&a - &a)?;
    assert_eq!(b.to_f32_vec(), vec![0.0; 3]);

    let s = Tensor::<F32>::ones([3]);
    let t = ((&s * &s)? + s.clone())?;
    assert_eq!(t.to_f32_vec(), vec![2.0; 3]);
    Ok(())
}
