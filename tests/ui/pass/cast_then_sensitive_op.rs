// Sensitive ops on low-precision tensors are legal after an explicit cast to F32.
use amp::{BF16, F16, F32, Indices, Reduction, Tensor};

fn main() -> amp::Result<()> {
    let logits16 = Tensor::<F16>::randn([4, 10], 0);
    let logits = logits16.cast::<F32>();
    let probs = logits.softmax(-1)?;
    let _log_probs = logits.log_softmax(-1)?;
    let _exp = logits.exp();
    let targets = Indices::from_slice(&[0, 3, 9, 1]);
    let loss = logits.cross_entropy(&targets)?;
    assert!(loss.to_scalar()?.is_finite());
    let total = probs.sum().to_scalar()?;
    assert!((total - 4.0).abs() < 1e-4);

    let h_bf16 = Tensor::<BF16>::randn([4, 64], 1);
    let h = h_bf16.cast::<F32>().layer_norm(&[64], None, None, 1e-5)?;
    // Back to BF16 for the next matmul-like op.
    let _h_bf16: Tensor<BF16> = h.cast();

    let pred = Tensor::<BF16>::ones([16]).cast::<F32>();
    let target = Tensor::<BF16>::zeros([16]).cast::<F32>();
    assert_eq!(pred.mse_loss(&target, Reduction::Mean)?.to_scalar()?, 1.0);

    let p = Tensor::<F16>::full(0.25, [8]).cast::<F32>();
    let y = Tensor::<F32>::ones([8]);
    assert!(p.binary_cross_entropy(&y, Reduction::Sum)?.to_scalar()? > 0.0);
    Ok(())
}
