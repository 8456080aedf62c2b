// Generic functions under `#[autocast]`: a type parameter unrelated to tensors,
// and functions generic over the input precision `P: Precision`.
#![deny(warnings)]
use amp::{BF16, DType, F16, F32, Precision, Tensor, autocast};

#[autocast]
fn tagged<T: Copy>(x: &Tensor<F32>, w: &Tensor<F32>, tag: T) -> amp::Result<(Tensor<F16>, T)> {
    Ok((x.matmul(w)?, tag))
}

/// Whatever precision the input has, matmul runs in F16 and softmax in F32.
#[autocast]
fn any_input<P: Precision>(x: &Tensor<P>, w: &Tensor<F32>) -> amp::Result<Tensor<F32>> {
    let h: Tensor<F16> = x.matmul(w)?;
    h.softmax(-1)
}

/// The output precision follows the policy, not `P`.
#[autocast(bf16)]
fn to_bf16<P: Precision, const N: usize>(
    xs: &[Tensor<P>; N],
    w: &Tensor<P>,
) -> amp::Result<Vec<Tensor<BF16>>> {
    xs.iter().map(|x| x.matmul(w)).collect()
}

/// Same-precision arithmetic on `Tensor<P>` keeps compiling: `+` on two
/// `Tensor<P>`s needs no promotion.
#[autocast]
fn residual<P: Precision>(x: &Tensor<P>, w: &Tensor<P>) -> amp::Result<Tensor<P>> {
    let h: Tensor<P> = x.relu();
    &h + w
}

fn main() -> amp::Result<()> {
    let x = Tensor::<F32>::randn([2, 4], 0);
    let w = Tensor::<F32>::randn([4, 3], 1);

    let (y, tag) = tagged(&x, &w, 'k')?;
    assert_eq!((y.dtype(), tag), (DType::F16, 'k'));
    let (_, n) = tagged(&x, &w, 42u8)?;
    assert_eq!(n, 42);

    for (input, dtype) in [(x.clone(), DType::F32)] {
        let (p, plan) = amp::autocast::record(|| any_input(&input, &w));
        assert_eq!(p?.dtype(), DType::F32);
        assert_eq!(plan.records()[0].inputs, [dtype, DType::F32]);
    }
    let (p, plan) = amp::autocast::record(|| any_input(&x.cast::<BF16>(), &w));
    assert_eq!(p?.dims(), &[2, 3]);
    assert_eq!(plan.records()[0].inputs, [DType::BF16, DType::F32]);
    assert_eq!(plan.records()[0].ran_in, [DType::F16, DType::F16]);

    let x16 = x.cast::<F16>();
    let w16 = w.cast::<F16>();
    let ys = to_bf16(&[x16.clone(), x16.clone(), x16], &w16)?;
    assert_eq!(ys.len(), 3);
    assert!(
        ys.iter()
            .all(|y| y.dtype() == DType::BF16 && y.dims() == [2, 3])
    );

    let sq = Tensor::<BF16>::ones([2, 2]);
    let r = residual(&sq, &sq)?;
    assert_eq!(r.dtype(), DType::BF16);
    assert_eq!(r.to_f32_vec(), [2.0; 4]);
    Ok(())
}
