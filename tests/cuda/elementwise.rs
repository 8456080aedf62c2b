//! Elementwise ops: binary with broadcasting, unary, activations, dropout.

use super::*;

// ---- elementwise ------------------------------------------------------------------------

#[test]
fn binary_ops_with_broadcasting_match_the_cpu() -> Result<()> {
    let Some((gpu, seed)) = gpu_and_seed("binary_ops_with_broadcasting_match_the_cpu") else {
        return Ok(());
    };
    fn binary<P: Precision>(gpu: Device, seed: u64) {
        let shapes: [(&[usize], &[usize]); 7] = [
            (&[4, 5, 6], &[4, 5, 6]),
            (&[4, 5, 6], &[6]),
            (&[4, 1, 6], &[5, 1]),
            (&[1], &[3, 4]),
            (&[2, 3, 1, 7], &[3, 5, 1]),
            (&[1 << 18], &[1 << 18]),
            (&[257, 129], &[129]),
        ];
        for (i, (da, db)) in shapes.iter().enumerate() {
            let s = seed + 10 * i as u64;
            let a = Tensor::<F32>::randn(*da, s).cast::<P>();
            let b = away_from_zero::<P>(db, s + 1);
            let ab = [a, b];
            let tol = tol::<P>();
            let name = |op: &str| format!("{op} {da:?} with {db:?}");
            agree(&name("add"), gpu, s, tol, &ab, |t| t[0].add(&t[1]));
            agree(&name("sub"), gpu, s, tol, &ab, |t| t[0].sub(&t[1]));
            agree(&name("mul"), gpu, s, tol, &ab, |t| t[0].mul(&t[1]));
            agree(&name("div"), gpu, s, tol, &ab, |t| t[0].div(&t[1]));
            agree_bits(&name("maximum"), gpu, s, &ab, |t| t[0].maximum(&t[1]));
            agree_bits(&name("minimum"), gpu, s, &ab, |t| t[0].minimum(&t[1]));
            // The right operand broadcast on the left.
            agree(&name("sub, swapped"), gpu, s, tol, &ab, |t| t[1].sub(&t[0]));
        }
        // Strided (transposed) operands.
        let a = Tensor::<F32>::randn([6, 8], seed).cast::<P>();
        let b = Tensor::<F32>::randn([8, 6], seed + 1).cast::<P>();
        agree(
            "add of a transposed operand",
            gpu,
            seed,
            tol::<P>(),
            &[a, b],
            |t| t[0].add(&t[1].t()?),
        );
    }
    in_each_precision!(binary(gpu, seed));
    Ok(())
}

#[test]
fn unary_ops_and_activations_match_the_cpu() -> Result<()> {
    let Some((gpu, seed)) = gpu_and_seed("unary_ops_and_activations_match_the_cpu") else {
        return Ok(());
    };
    fn unary<P: Precision>(gpu: Device, seed: u64) {
        let more: [(&str, UnaryOp<P>); 5] = [
            ("neg", |t| Ok(t.neg())),
            ("sqrt of |x|", |t| Ok(t.abs().sqrt())),
            ("affine(1.5, -0.25)", |t| Ok(t.affine(1.5, -0.25))),
            ("add_scalar(3)", |t| Ok(t.add_scalar(3.0))),
            ("mul_scalar(-0.5)", |t| Ok(t.mul_scalar(-0.5))),
        ];
        let ops: Vec<_> = activations::<P>().into_iter().chain(more).collect();
        for (i, dims) in [&[3usize, 5, 7][..], &[(1 << 20) + 1]].iter().enumerate() {
            let s = seed + i as u64;
            // Spread over the activations' interesting range and beyond.
            let x = Tensor::<F32>::randn(*dims, s).mul_scalar(3.0).cast::<P>();
            let x = std::slice::from_ref(&x);
            for &(what, op) in &ops {
                agree(&format!("{what} {dims:?}"), gpu, s, tol::<P>(), x, |t| {
                    op(&t[0])
                });
            }
            // On a strided view.
            if dims.len() == 3 {
                agree("gelu of a transposed view", gpu, s, tol::<P>(), x, |t| {
                    Ok(t[0].transpose(0, 2)?.gelu())
                });
            }
        }
    }
    in_each_precision!(unary(gpu, seed));

    // The wide-only functions, in F32.
    let pos = uniform::<F32>(&[4097], 0.05, 20.0, seed);
    let any = Tensor::<F32>::randn([4097], seed + 1).mul_scalar(4.0);
    let t32 = tol::<F32>();
    agree("exp", gpu, seed, t32, std::slice::from_ref(&any), |t| {
        Ok(t[0].exp())
    });
    let pos = std::slice::from_ref(&pos);
    agree("log", gpu, seed, t32, pos, |t| Ok(t[0].log()));
    agree("rsqrt", gpu, seed, t32, pos, |t| Ok(t[0].rsqrt()));
    for e in [2.0, 0.5, 1.7, -1.5, 3.0] {
        agree(&format!("pow({e})"), gpu, seed, t32, pos, |t| {
            Ok(t[0].pow(e))
        });
    }
    Ok(())
}

#[test]
fn dropout_on_the_gpu_masks_and_rescales() -> Result<()> {
    let Some((gpu, seed)) = gpu_and_seed("dropout_on_the_gpu_masks_and_rescales") else {
        return Ok(());
    };
    // The GPU's mask need not be the CPU's; its statistics must be right.
    let n = 1 << 18;
    let p = 0.3f32;
    let x = uniform::<F32>(&[n], 1.0, 2.0, seed);
    let y = x.to_device(gpu)?.dropout(p, seed)?;
    assert_eq!(y.device(), gpu);
    assert_dropout(&x.to_f32_vec(), &y.to_f32_vec(), p, seed);
    Ok(())
}
