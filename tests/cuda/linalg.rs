//! Matmul in every form, linear, conv2d, attention.

use super::*;

// ---- matmul, linear, conv, attention -----------------------------------------------------

#[test]
fn matmul_in_every_form_matches_the_cpu() -> Result<()> {
    let Some((gpu, seed)) = gpu_and_seed("matmul_in_every_form_matches_the_cpu") else {
        return Ok(());
    };
    fn matmuls<P: Precision>(gpu: Device, seed: u64) {
        let tol = tol::<P>();
        // 2-D, including sizes that are not multiples of 8 (no Tensor Core
        // tile fits them exactly) and a long k.
        for (i, (m, k, n)) in [
            (1usize, 1usize, 1usize),
            (7, 13, 5),
            (64, 64, 64),
            (129, 67, 33),
            (3, 1000, 24),
            (256, 512, 128),
            (1, 300, 301),
        ]
        .into_iter()
        .enumerate()
        {
            let s = seed + 2 * i as u64;
            let ab = [randn::<P>(&[m, k], s), randn::<P>(&[k, n], s + 1)];
            let what = format!("matmul [{m}, {k}] x [{k}, {n}]");
            agree(&what, gpu, s, tol, &ab, |t| t[0].matmul(&t[1]));
            // Transposed operands (column-major to the GEMM).
            let abt = [randn::<P>(&[k, m], s), randn::<P>(&[n, k], s + 1)];
            agree(
                &format!("{what}, both transposed"),
                gpu,
                s,
                tol,
                &abt,
                |t| t[0].t()?.matmul(&t[1].t()?),
            );
        }
        // Batched, then broadcast on either side.
        let batched: [(&[usize], &[usize]); 4] = [
            (&[5, 17, 9], &[5, 9, 11]),
            (&[4, 6, 10], &[10, 3]),
            (&[6, 10], &[4, 10, 3]),
            (&[2, 1, 7, 12], &[3, 12, 5]),
        ];
        for (da, db) in batched {
            let ab = [randn::<P>(da, seed), randn::<P>(db, seed + 1)];
            let what = format!("matmul {da:?} x {db:?}");
            agree(&what, gpu, seed, tol, &ab, |t| t[0].matmul(&t[1]));
            // bmm: the same batch on both sides, nothing broadcast.
            if da.len() == db.len() {
                agree(&format!("bmm {da:?} x {db:?}"), gpu, seed, tol, &ab, |t| {
                    t[0].bmm(&t[1])
                });
            }
        }
        // Linear with a bias, on a 3-D input, and its gradients.
        let xwb = [
            randn::<P>(&[4, 10, 33], seed),
            randn::<P>(&[17, 33], seed + 1),
            randn::<P>(&[17], seed + 2),
        ];
        let what = "linear [4, 10, 33] by [17, 33] + bias";
        agree(what, gpu, seed, tol, &xwb, |t| {
            t[0].linear(&t[1], Some(&t[2]))
        });
        agree("linear, no bias", gpu, seed, tol, &xwb, |t| {
            t[0].linear(&t[1], None)
        });
        let grad_tol = composite_tol::<P>();
        agree_grads(what, gpu, seed, grad_tol, &xwb, &[true; 3], |t| {
            t[0].linear(&t[1], Some(&t[2]))
        });
    }
    in_each_precision!(matmuls(gpu, seed));
    Ok(())
}

#[test]
fn conv2d_matches_the_cpu() -> Result<()> {
    let Some((gpu, seed)) = gpu_and_seed("conv2d_matches_the_cpu") else {
        return Ok(());
    };
    fn convs<P: Precision>(gpu: Device, seed: u64) {
        let cases = [
            (
                [2usize, 3, 9, 11],
                [4usize, 3, 3, 3],
                Conv2dOptions::default(),
            ),
            (
                [2, 3, 9, 11],
                [5, 3, 3, 3],
                Conv2dOptions {
                    padding: [1, 1],
                    stride: [2, 1],
                    ..Default::default()
                },
            ),
            (
                [1, 4, 12, 12],
                [4, 1, 3, 3],
                Conv2dOptions {
                    padding: [2, 2],
                    dilation: [2, 2],
                    groups: 4,
                    ..Default::default()
                },
            ),
            ([3, 16, 8, 8], [32, 16, 1, 1], Conv2dOptions::default()),
        ];
        for (i, (xd, wd, opts)) in cases.into_iter().enumerate() {
            let s = seed + 3 * i as u64;
            let xwb = [
                randn::<P>(&xd, s),
                randn::<P>(&wd, s + 1),
                randn::<P>(&[wd[0]], s + 2),
            ];
            let what = format!("conv2d {xd:?} * {wd:?} ({opts:?})");
            agree(&what, gpu, s, tol::<P>(), &xwb, |t| {
                t[0].conv2d(&t[1], Some(&t[2]), opts)
            });
            // In the input and the weight.
            let track = [true, true, false];
            agree_grads(&what, gpu, s, composite_tol::<P>(), &xwb, &track, |t| {
                t[0].conv2d(&t[1], Some(&t[2]), opts)
            });
        }
    }
    in_each_precision!(convs(gpu, seed));
    Ok(())
}

#[test]
fn attention_matches_the_cpu() -> Result<()> {
    let Some((gpu, seed)) = gpu_and_seed("attention_matches_the_cpu") else {
        return Ok(());
    };
    fn attention<P: Precision>(gpu: Device, seed: u64) {
        for (i, (l, s_len, e)) in [(17usize, 17usize, 16usize), (64, 64, 64), (5, 33, 8)]
            .into_iter()
            .enumerate()
        {
            let s = seed + 3 * i as u64;
            let qkv = [
                randn::<P>(&[2, 4, l, e], s),
                randn::<P>(&[2, 4, s_len, e], s + 1),
                randn::<P>(&[2, 4, s_len, e], s + 2),
            ];
            for (causal, scale) in [(false, None), (true, None), (false, Some(0.3))] {
                if causal && l != s_len {
                    continue;
                }
                let opts = AttentionOptions { causal, scale };
                let what = format!("attention L {l} S {s_len} E {e} ({opts:?})");
                let tol = composite_tol::<P>();
                agree(&what, gpu, s, tol, &qkv, |t| {
                    t[0].scaled_dot_product_attention(&t[1], &t[2], opts)
                });
                agree_grads(&what, gpu, s, tol, &qkv, &[true; 3], |t| {
                    t[0].scaled_dot_product_attention(&t[1], &t[2], opts)
                });
            }
        }
    }
    in_each_precision!(attention(gpu, seed));
    Ok(())
}
