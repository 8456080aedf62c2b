// The same precision-neutral ops in BF16, with batched matmul.
use amp::{BF16, Tensor};

fn main() -> amp::Result<()> {
    let a = Tensor::<BF16>::ones([3, 4, 5]);
    let b = Tensor::<BF16>::ones([3, 5, 2]);
    let c = a.bmm(&b)?;
    assert_eq!(c.dims(), &[3, 4, 2]);
    assert_eq!(c.to_f32_vec()[0], 5.0);

    let x = Tensor::<BF16>::randn([4, 5], 0);
    let w = Tensor::<BF16>::randn([6, 5], 1);
    let y = x.linear(&w, None)?.gelu();
    assert_eq!(y.dims(), &[4, 6]);

    let d = x.sub(&x)?.div(&Tensor::<BF16>::full(2.0, [4, 5]))?;
    assert!(d.to_f32_vec().iter().all(|&v| v == 0.0));
    let m = x.minimum(&x)?;
    assert_eq!(m.to_f32_vec(), x.to_f32_vec());
    Ok(())
}
