// Precision-neutral ops take any precision, as long as every operand shares it.
use amp::{AttentionOptions, Conv2dOptions, F16, Tensor};

fn main() -> amp::Result<()> {
    let x = Tensor::<F16>::randn([4, 8], 0);
    let w = Tensor::<F16>::randn([16, 8], 1);
    let b = Tensor::<F16>::zeros([16]);
    let h = x.linear(&w, Some(&b))?;
    let y = h.matmul(&Tensor::<F16>::ones([16, 2]))?;
    assert_eq!(y.dims(), &[4, 2]);

    let z = x.add(&x)?.mul(&x)?.maximum(&x)?;
    assert_eq!(z.dims(), &[4, 8]);

    let img = Tensor::<F16>::ones([1, 3, 8, 8]);
    let k = Tensor::<F16>::ones([4, 3, 3, 3]);
    let opts = Conv2dOptions {
        padding: [1, 1],
        ..Default::default()
    };
    assert_eq!(img.conv2d(&k, None, opts)?.dims(), &[1, 4, 8, 8]);

    let q = Tensor::<F16>::randn([2, 5, 8], 2);
    let att = q.scaled_dot_product_attention(&q, &q, AttentionOptions::default())?;
    assert_eq!(att.dims(), &[2, 5, 8]);

    let parts = Tensor::cat(&[&x, &x], 0)?;
    assert_eq!(parts.dims(), &[8, 8]);
    Ok(())
}
