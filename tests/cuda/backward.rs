//! Backward passes on the device, op by op.

use super::*;

// ---- backward passes on the device --------------------------------------------------------

#[test]
fn activation_gradients_match_the_cpu() -> Result<()> {
    let Some((gpu, seed)) = gpu_and_seed("activation_gradients_match_the_cpu") else {
        return Ok(());
    };
    fn gradients<P: Precision>(gpu: Device, seed: u64) {
        let ops = activations::<P>();
        let tol = composite_tol::<P>();
        for (i, dims) in [&[3usize, 5, 7][..], &[(1 << 16) + 3]].iter().enumerate() {
            let s = seed + i as u64;
            // Over the activations' interesting range and beyond.
            let x = [Tensor::<F32>::randn(*dims, s).mul_scalar(3.0).cast::<P>()];
            for (what, op) in ops {
                let what = format!("{what} {dims:?}");
                agree_grads(&what, gpu, s, tol, &x, &[true], |t| op(&t[0]));
            }
            let pos = [uniform::<P>(dims, 0.05, 4.0, s + 1)];
            let what = format!("sqrt {dims:?}");
            agree_grads(&what, gpu, s, tol, &pos, &[true], |t| Ok(t[0].sqrt()));
            // Of a strided view: the gradient goes back through the view.
            if dims.len() == 3 {
                agree_grads("gelu of a transposed view", gpu, s, tol, &x, &[true], |t| {
                    Ok(t[0].transpose(0, 2)?.gelu())
                });
            }
        }
    }
    in_each_precision!(gradients(gpu, seed));

    // The wide-only functions, in F32.
    let t32 = composite_tol::<F32>();
    let pos = [uniform::<F32>(&[4097], 0.05, 20.0, seed)];
    agree_grads("log", gpu, seed, t32, &pos, &[true], |t| Ok(t[0].log()));
    agree_grads("rsqrt", gpu, seed, t32, &pos, &[true], |t| Ok(t[0].rsqrt()));
    for e in [0.0, 0.5, 1.7, -1.5, 3.0] {
        agree_grads(&format!("pow({e})"), gpu, seed, t32, &pos, &[true], |t| {
            Ok(t[0].pow(e))
        });
    }
    Ok(())
}

#[test]
fn softmax_gradients_match_the_cpu() -> Result<()> {
    let Some((gpu, seed)) = gpu_and_seed("softmax_gradients_match_the_cpu") else {
        return Ok(());
    };
    let tol = composite_tol::<F32>();
    for (i, dims) in [&[1usize, 1][..], &[3, 5000], &[1000, 37], &[4, 9, 130]]
        .iter()
        .enumerate()
    {
        let s = seed + i as u64;
        let x = [Tensor::<F32>::randn(*dims, s).add_scalar(0.5)];
        for d in 0..dims.len() {
            agree_grads(
                &format!("softmax({d}) {dims:?}"),
                gpu,
                s,
                tol,
                &x,
                &[true],
                |t| t[0].softmax(d),
            );
            agree_grads(
                &format!("log_softmax({d}) {dims:?}"),
                gpu,
                s,
                tol,
                &x,
                &[true],
                |t| t[0].log_softmax(d),
            );
        }
        if dims.len() == 2 {
            agree_grads("softmax of a transpose", gpu, s, tol, &x, &[true], |t| {
                t[0].t()?.softmax(-1)
            });
        }
    }
    // Large logits: saturated rows.
    let big = [Tensor::<F32>::randn([8, 100], seed).mul_scalar(300.0)];
    agree_grads(
        "softmax of large logits",
        gpu,
        seed,
        tol,
        &big,
        &[true],
        |t| t[0].softmax(-1),
    );
    agree_grads(
        "log_softmax of large logits",
        gpu,
        seed,
        tol,
        &big,
        &[true],
        |t| t[0].log_softmax(-1),
    );
    Ok(())
}

#[test]
fn norm_gradients_in_every_form_match_the_cpu() -> Result<()> {
    let Some((gpu, seed)) = gpu_and_seed("norm_gradients_in_every_form_match_the_cpu") else {
        return Ok(());
    };
    let tol = 1e-5;
    for (i, (dims, norm)) in [
        (&[4usize, 7, 64][..], &[64usize][..]),
        (&[2, 5, 6, 8], &[6, 8]),
        (&[513, 33], &[33]),
        (&[3, 1000], &[1000]),
        (&[0, 16], &[16]),
    ]
    .into_iter()
    .enumerate()
    {
        let s = seed + 3 * i as u64;
        let xwb = [
            Tensor::<F32>::randn(dims, s)
                .mul_scalar(2.0)
                .add_scalar(1.0),
            Tensor::<F32>::randn(norm, s + 1),
            Tensor::<F32>::randn(norm, s + 2),
        ];
        let name = |op: &str| format!("{op} of {dims:?} over {norm:?}");
        // Which of x, weight, bias record.
        for track in [
            [true, true, true],
            [false, true, true],
            [true, false, false],
            [false, false, true],
        ] {
            let what = name(&format!("layer_norm (tracking {track:?})"));
            agree_grads(&what, gpu, s, tol, &xwb, &track, |t| {
                t[0].layer_norm(norm, Some(&t[1]), Some(&t[2]), 1e-5)
            });
            if track[..2].contains(&true) {
                let what = name(&format!("rms_norm (tracking {track:?})"));
                agree_grads(&what, gpu, s, tol, &xwb[..2], &track[..2], |t| {
                    t[0].rms_norm(norm, Some(&t[1]), 1e-6)
                });
            }
        }
        let x = std::slice::from_ref(&xwb[0]);
        agree_grads(
            &name("layer_norm, weight only"),
            gpu,
            s,
            tol,
            &xwb[..2],
            &[true; 2],
            |t| t[0].layer_norm(norm, Some(&t[1]), None, 1e-5),
        );
        agree_grads(
            &name("layer_norm, bias only"),
            gpu,
            s,
            tol,
            &[xwb[0].clone(), xwb[2].clone()],
            &[true; 2],
            |t| t[0].layer_norm(norm, None, Some(&t[1]), 1e-5),
        );
        agree_grads(
            &name("layer_norm, no affine"),
            gpu,
            s,
            tol,
            x,
            &[true],
            |t| t[0].layer_norm(norm, None, None, 1e-5),
        );
        agree_grads(&name("rms_norm, no weight"), gpu, s, tol, x, &[true], |t| {
            t[0].rms_norm(norm, None, 1e-6)
        });
    }
    // Of a transposed view.
    let xwb = [
        Tensor::<F32>::randn([64, 5], seed),
        Tensor::<F32>::randn([5], seed + 1),
        Tensor::<F32>::randn([5], seed + 2),
    ];
    agree_grads(
        "layer_norm of a transpose",
        gpu,
        seed,
        tol,
        &xwb,
        &[true; 3],
        |t| {
            t[0].t()?
                .layer_norm(&[64], None, None, 1e-5)?
                .t()?
                .layer_norm(&[5], Some(&t[1]), Some(&t[2]), 1e-5)
        },
    );
    Ok(())
}

#[test]
fn cross_entropy_gradients_in_edge_cases_match_the_cpu() -> Result<()> {
    let Some((gpu, seed)) = gpu_and_seed("cross_entropy_gradients_in_edge_cases_match_the_cpu")
    else {
        return Ok(());
    };
    let logits = Tensor::<F32>::randn([6, 9], seed).mul_scalar(3.0);
    // Every target ignored: the mean is NaN, and no row gets a gradient.
    let ignored = Indices::from_slice(&[4; 6]);
    let opts = ClassLossOptions {
        ignore_index: Some(4),
        label_smoothing: 0.1,
        ..Default::default()
    };
    let l = std::slice::from_ref(&logits);
    let (g, w) = both("cross_entropy, every target ignored", gpu, seed, l, |t| {
        let leaf = t[0].detach().requires_grad();
        let grads = leaf.cross_entropy_with(&ignored, opts)?.backward()?;
        Ok(grads.get(&leaf).expect("a gradient"))
    });
    assert_bits(
        "cross_entropy gradient, every target ignored",
        gpu,
        &g,
        &w,
        seed,
    );
    // Unreduced, with an explicit gradient holding a zero, of a transpose.
    let targets = Indices::from_slice(&[0, 5, 3, 3, 1, 4, 2, 5, 0]);
    let none = ClassLossOptions {
        reduction: Reduction::None,
        ..Default::default()
    };
    let (g, w) = both(
        "cross_entropy of a transpose, unreduced",
        gpu,
        seed,
        l,
        |t| {
            let leaf = t[0].detach().requires_grad();
            let loss = leaf.t()?.cross_entropy_with(&targets, none)?;
            let mut upstream = Tensor::<F32>::randn([9], seed + 1).to_vec();
            upstream[4] = 0.0;
            let upstream = Tensor::<F32>::from_f32(&upstream, [9])?.to_device(leaf.device())?;
            let grads = loss.backward_with(&upstream)?;
            Ok(grads.get(&leaf).expect("a gradient"))
        },
    );
    assert_close(
        "cross_entropy gradient of a transpose, unreduced",
        gpu,
        &g,
        &w,
        composite_tol::<F32>(),
        seed,
    );
    Ok(())
}

#[test]
fn attention_gradients_with_broadcast_batches_and_offset_masks_match_the_cpu() -> Result<()> {
    let Some((gpu, seed)) =
        gpu_and_seed("attention_gradients_with_broadcast_batches_and_offset_masks_match_the_cpu")
    else {
        return Ok(());
    };
    fn attention<P: Precision>(gpu: Device, seed: u64) {
        let tol = composite_tol::<P>();
        for (causal, scale) in [(false, None), (true, None), (true, Some(0.3))] {
            let opts = AttentionOptions { causal, scale };
            // Keys and values shared by every batch; more keys than queries
            // (the causal mask is top-left aligned) and fewer.
            for (l, s_len) in [(5usize, 33usize), (12, 7)] {
                let qkv = [
                    randn::<P>(&[2, 4, l, 8], seed),
                    randn::<P>(&[4, s_len, 8], seed + 1),
                    randn::<P>(&[4, s_len, 6], seed + 2),
                ];
                let what = format!("attention L {l} S {s_len}, shared k/v ({opts:?})");
                agree(&what, gpu, seed, tol, &qkv, |t| {
                    t[0].scaled_dot_product_attention(&t[1], &t[2], opts)
                });
                agree_grads(&what, gpu, seed, tol, &qkv, &[true; 3], |t| {
                    t[0].scaled_dot_product_attention(&t[1], &t[2], opts)
                });
            }
            // Plain matrices, no batch.
            let qkv = [
                randn::<P>(&[6, 8], seed),
                randn::<P>(&[6, 8], seed + 1),
                randn::<P>(&[6, 3], seed + 2),
            ];
            let what = format!("attention of matrices ({opts:?})");
            agree_grads(&what, gpu, seed, tol, &qkv, &[true; 3], |t| {
                t[0].scaled_dot_product_attention(&t[1], &t[2], opts)
            });
        }
    }
    in_each_precision!(attention(gpu, seed));
    Ok(())
}
