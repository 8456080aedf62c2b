//! Row ops: reductions, softmax, norms, losses.

use super::*;

// ---- reductions, softmax, norms, losses ----------------------------------------------------

#[test]
fn reductions_and_softmax_match_the_cpu() -> Result<()> {
    let Some((gpu, seed)) = gpu_and_seed("reductions_and_softmax_match_the_cpu") else {
        return Ok(());
    };
    let t32 = tol::<F32>();
    // Short and long rows, few and many of them, an odd 3-D shape.
    for (i, dims) in [
        &[1usize, 1][..],
        &[3, 5000],
        &[1000, 37],
        &[4, 9, 130],
        &[1 << 20],
    ]
    .iter()
    .enumerate()
    {
        let s = seed + i as u64;
        let x = Tensor::<F32>::randn(*dims, s).add_scalar(0.5);
        let x = std::slice::from_ref(&x);
        let name = |op: &str| format!("{op} {dims:?}");
        agree(&name("sum"), gpu, s, t32, x, |t| Ok(t[0].sum()));
        agree(&name("mean"), gpu, s, t32, x, |t| Ok(t[0].mean()));
        if x[0].numel() > 1 {
            agree(&name("var(1)"), gpu, s, t32, x, |t| Ok(t[0].var(1)));
        }
        agree(&name("var(0)"), gpu, s, t32, x, |t| Ok(t[0].var(0)));
        for d in 0..dims.len() {
            for keep in [false, true] {
                let n = |op: &str| format!("{op}({d}, keepdim {keep}) {dims:?}");
                agree(&n("sum_dim"), gpu, s, t32, x, |t| t[0].sum_dim(d, keep));
                agree(&n("mean_dim"), gpu, s, t32, x, |t| t[0].mean_dim(d, keep));
                agree(&n("logsumexp"), gpu, s, t32, x, |t| t[0].logsumexp(d, keep));
                if dims[d] > 1 {
                    agree(&n("var_dim"), gpu, s, t32, x, |t| t[0].var_dim(d, 1, keep));
                }
            }
            agree(&name(&format!("softmax({d})")), gpu, s, t32, x, |t| {
                t[0].softmax(d)
            });
            agree(&name(&format!("log_softmax({d})")), gpu, s, t32, x, |t| {
                t[0].log_softmax(d)
            });
            // A running sum's rounding error grows with its length: long
            // axes would measure the summation order, not the kernel.
            if dims[d] <= 5000 {
                agree(&name(&format!("cumsum({d})")), gpu, s, 1e-4, x, |t| {
                    t[0].cumsum(d)
                });
            }
        }
        // Of a transposed view.
        if dims.len() == 2 {
            agree(&name("softmax of a transpose"), gpu, s, t32, x, |t| {
                t[0].t()?.softmax(-1)
            });
        }
    }
    // Large logits: the max subtraction must be there.
    let big = Tensor::<F32>::randn([8, 100], seed).mul_scalar(300.0);
    let big = std::slice::from_ref(&big);
    agree("softmax of large logits", gpu, seed, t32, big, |t| {
        t[0].softmax(-1)
    });
    agree("logsumexp of large logits", gpu, seed, t32, big, |t| {
        t[0].logsumexp(-1, false)
    });
    // Reductions of low-precision data, widened on the GPU.
    let h = Tensor::<F16>::randn([64, 300], seed);
    agree(
        "sum_dim of an F16 tensor widened",
        gpu,
        seed,
        t32,
        &[h],
        |t| t[0].cast::<F32>().sum_dim(-1, false),
    );
    Ok(())
}

#[test]
fn layer_norm_and_rms_norm_match_the_cpu() -> Result<()> {
    let Some((gpu, seed)) = gpu_and_seed("layer_norm_and_rms_norm_match_the_cpu") else {
        return Ok(());
    };
    let t32 = tol::<F32>();
    for (i, (dims, norm)) in [
        (&[4usize, 7, 64][..], &[64usize][..]),
        (&[3, 1000], &[1000]),
        (&[2, 5, 6, 8], &[6, 8]),
        (&[513, 33], &[33]),
    ]
    .into_iter()
    .enumerate()
    {
        let s = seed + 3 * i as u64;
        let x = Tensor::<F32>::randn(dims, s)
            .mul_scalar(2.0)
            .add_scalar(1.0);
        let w = Tensor::<F32>::randn(norm, s + 1);
        let b = Tensor::<F32>::randn(norm, s + 2);
        let xwb = [x, w, b];
        let name = |op: &str| format!("{op} of {dims:?} over {norm:?}");
        agree(&name("layer_norm"), gpu, s, t32, &xwb, |t| {
            t[0].layer_norm(norm, Some(&t[1]), Some(&t[2]), 1e-5)
        });
        agree(&name("layer_norm, no affine"), gpu, s, t32, &xwb, |t| {
            t[0].layer_norm(norm, None, None, 1e-5)
        });
        agree(&name("rms_norm"), gpu, s, t32, &xwb, |t| {
            t[0].rms_norm(norm, Some(&t[1]), 1e-6)
        });
        agree(&name("rms_norm, no weight"), gpu, s, t32, &xwb, |t| {
            t[0].rms_norm(norm, None, 1e-6)
        });
    }
    // Their gradients, in the input, the weight and the bias.
    let xwb = [
        Tensor::<F32>::randn([6, 48], seed),
        Tensor::<F32>::randn([48], seed + 1),
        Tensor::<F32>::randn([48], seed + 2),
    ];
    agree_grads("layer_norm", gpu, seed, 1e-5, &xwb, &[true; 3], |t| {
        t[0].layer_norm(&[48], Some(&t[1]), Some(&t[2]), 1e-5)
    });
    agree_grads("rms_norm", gpu, seed, 1e-5, &xwb[..2], &[true; 2], |t| {
        t[0].rms_norm(&[48], Some(&t[1]), 1e-6)
    });
    Ok(())
}

#[test]
fn cross_entropy_and_nll_match_the_cpu_with_ignore_index_and_smoothing() -> Result<()> {
    let Some((gpu, seed)) =
        gpu_and_seed("cross_entropy_and_nll_match_the_cpu_with_ignore_index_and_smoothing")
    else {
        return Ok(());
    };
    let mut rng = Rng::new(seed);
    let t32 = tol::<F32>();
    for (i, (n, c)) in [(1usize, 2usize), (64, 10), (300, 1000), (7, 50257)]
        .into_iter()
        .enumerate()
    {
        let s = seed + i as u64;
        let logits = Tensor::<F32>::randn([n, c], s).mul_scalar(3.0);
        let ignore = c / 2;
        let targets: Vec<usize> = (0..n)
            .map(|k| if k % 5 == 4 { ignore } else { rng.below(c) })
            .collect();
        let targets = Indices::new(targets, [n])?;
        let variants = [
            ("mean", ClassLossOptions::default()),
            (
                "ignore_index",
                ClassLossOptions {
                    ignore_index: Some(ignore),
                    ..Default::default()
                },
            ),
            (
                "label smoothing 0.1",
                ClassLossOptions {
                    label_smoothing: 0.1,
                    ..Default::default()
                },
            ),
            (
                "ignore_index + smoothing, sum",
                ClassLossOptions {
                    reduction: Reduction::Sum,
                    ignore_index: Some(ignore),
                    label_smoothing: 0.2,
                },
            ),
            (
                "no reduction",
                ClassLossOptions {
                    reduction: Reduction::None,
                    ..Default::default()
                },
            ),
        ];
        let l = std::slice::from_ref(&logits);
        for (what, opts) in variants {
            if n == 1 && opts.ignore_index.is_some() {
                continue; // the one target is not ignored; nothing new
            }
            let name = format!("cross_entropy ({what}) [{n}, {c}]");
            agree(&name, gpu, s, t32, l, |t| {
                t[0].cross_entropy_with(&targets, opts)
            });
            // Its gradient in the logits.
            let (g, w) = both(&format!("{name} gradient"), gpu, s, l, |t| {
                let leaf = t[0].detach().requires_grad();
                let loss = leaf.cross_entropy_with(&targets, opts)?;
                let loss = if loss.numel() > 1 { loss.sum() } else { loss };
                let grads = loss.backward()?;
                Ok(grads.get(&leaf).expect("a gradient"))
            });
            assert_close(&format!("{name} gradient"), gpu, &g, &w, t32, s);
            let log_p = std::slice::from_ref(&logits);
            let nll = ClassLossOptions {
                label_smoothing: 0.0,
                ..opts
            };
            agree(
                &format!("nll_loss ({what}) [{n}, {c}]"),
                gpu,
                s,
                t32,
                log_p,
                |t| t[0].log_softmax(-1)?.nll_loss_with(&targets, nll),
            );
        }
    }
    Ok(())
}
