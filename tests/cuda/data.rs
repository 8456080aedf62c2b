//! Moving data: uploads, downloads, casts, copies of views, and indexing.

use super::*;

// ---- moving data --------------------------------------------------------------------------

#[test]
fn uploads_and_downloads_are_bit_exact() -> Result<()> {
    let Some((gpu, seed)) = gpu_and_seed("uploads_and_downloads_are_bit_exact") else {
        return Ok(());
    };
    fn round_trip<P: Precision>(gpu: Device, seed: u64) -> Result<()> {
        // Sizes around the kernels' block and vector widths, and a big one.
        for (i, n) in [1usize, 7, 255, 256, 257, 4099, (1 << 20) + 3]
            .into_iter()
            .enumerate()
        {
            let x = Tensor::<F32>::randn([n], seed + i as u64)
                .mul_scalar(100.0)
                .cast::<P>();
            let on = x.to_device(gpu)?;
            assert_eq!(on.device(), gpu);
            assert_eq!(on.dtype(), P::DTYPE);
            let back = on.to_device(Device::Cpu)?;
            assert_eq!(back.device(), Device::Cpu);
            assert_eq!(back.to_vec(), x.to_vec(), "round trip of {n} [{}]", P::NAME);
            // Reading straight from the GPU gives the same values.
            assert_eq!(on.to_vec(), x.to_vec());
        }
        Ok(())
    }
    in_each_precision!(round_trip(gpu, seed)?);
    // Moving to the device it is on is free.
    let x = Tensor::<F32>::ones([4]).to_device(gpu)?;
    assert!(x.to_device(gpu)?.shares_storage_with(&x));
    // The gradient of a move goes back to where the tensor came from.
    let leaf = Tensor::<F32>::randn([5], seed).requires_grad();
    let grads = leaf.to_device(gpu)?.sqr().sum().backward()?;
    let g = grads.get(&leaf).expect("a gradient for the CPU leaf");
    assert_eq!(g.device(), Device::Cpu);
    let want: Vec<f32> = leaf.to_f32_vec().iter().map(|v| 2.0 * v).collect();
    assert!(rel_l2(&g.to_f32_vec(), &want) < 1e-6, "{}", repro(seed));
    Ok(())
}

#[test]
fn casts_are_bit_exact_including_inf_nan_and_subnormals() -> Result<()> {
    let Some((gpu, seed)) = gpu_and_seed("casts_are_bit_exact_including_inf_nan_and_subnormals")
    else {
        return Ok(());
    };
    let mut rng = Rng::new(seed);
    // F32 specials: zeros, infinities, NaN, F16's and BF16's extremes and
    // subnormals, values on both sides of F16's overflow, rounding ties,
    // F32 subnormals.
    let mut values = vec![
        0.0,
        -0.0,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        -f32::NAN,
        1.0,
        -1.0,
        65504.0,
        65519.99,
        65520.0,
        70000.0,
        -1e6,
        6.1035156e-5,
        6.0e-5,
        5.9604645e-8,
        2.9802322e-8,
        2.9802326e-8,
        1e-8,
        -3.0e-7,
        1.0009766,
        1.0004883,
        1.0014648,
        f32::MAX,
        f32::MIN_POSITIVE,
        1e-39,
        -1e-40,
        1.4e-45,
        3.3895314e38,
        3.4e38,
        // BF16 rounding ties: halfway between two BF16 values (to even).
        1.0 + 1.0 / 256.0,
        1.0 + 3.0 / 256.0,
    ];
    // Random bit patterns: every exponent, every rounding case.
    values.extend((0..100_000).map(|_| f32::from_bits(rng.next_u64() as u32)));
    let x = Tensor::<F32>::from_f32(&values, [values.len()])?;
    let x = std::slice::from_ref(&x);
    agree_bits("F32→F16", gpu, seed, x, |t| Ok(t[0].cast::<F16>()));
    agree_bits("F32→BF16", gpu, seed, x, |t| Ok(t[0].cast::<BF16>()));
    agree_bits("F32→F32", gpu, seed, x, |t| Ok(t[0].cast::<F32>()));

    // Every F16 and every BF16 value, widened and converted across.
    let all16: Vec<u16> = (0..=u16::MAX).collect();
    let h = Tensor::<F16>::from_vec(
        all16.iter().map(|&b| half::f16::from_bits(b)).collect(),
        [1 << 16],
    )?;
    let b = Tensor::<BF16>::from_vec(
        all16.iter().map(|&b| half::bf16::from_bits(b)).collect(),
        [1 << 16],
    )?;
    let h = std::slice::from_ref(&h);
    let b = std::slice::from_ref(&b);
    agree_bits("F16→F32", gpu, seed, h, |t| Ok(t[0].cast::<F32>()));
    agree_bits("F16→BF16", gpu, seed, h, |t| Ok(t[0].cast::<BF16>()));
    agree_bits("BF16→F32", gpu, seed, b, |t| Ok(t[0].cast::<F32>()));
    agree_bits("BF16→F16", gpu, seed, b, |t| Ok(t[0].cast::<F16>()));
    // A cast of a strided view.
    let m = Tensor::<F32>::randn([33, 65], seed);
    agree_bits("F32→F16 of a transposed view", gpu, seed, &[m], |t| {
        Ok(t[0].t()?.narrow(1, 3, 20)?.cast::<F16>())
    });
    Ok(())
}

#[test]
fn contiguous_copies_of_views_are_bit_exact() -> Result<()> {
    let Some((gpu, seed)) = gpu_and_seed("contiguous_copies_of_views_are_bit_exact") else {
        return Ok(());
    };
    fn views<P: Precision>(gpu: Device, seed: u64) {
        let x = Tensor::<F32>::randn([5, 7, 9], seed).cast::<P>();
        type View<P> = fn(&Tensor<P>) -> Result<Tensor<P>>;
        let cases: [(&str, View<P>); 9] = [
            ("transpose(0, 2)", |t| t.transpose(0, 2)),
            ("t() of a 2-D slice", |t| t.select(1, 3)?.t()),
            ("narrow(1, 2, 4)", |t| t.narrow(1, 2, 4)),
            ("narrow(2, 1, 7) then transpose(0, 1)", |t| {
                t.narrow(2, 1, 7)?.transpose(0, 1)
            }),
            ("permute([2, 0, 1])", |t| t.permute(&[2, 0, 1])),
            ("select(0, 4)", |t| t.select(0, 4)),
            ("broadcast_to of a row", |t| {
                t.select(0, 1)?
                    .select(0, 2)?
                    .unsqueeze(0)?
                    .broadcast_to([6, 9])
            }),
            ("slice then reshape", |t| t.slice(0, 1..3)?.reshape([2, 63])),
            ("unsqueeze/squeeze", |t| {
                t.unsqueeze(1)?.squeeze(1)?.transpose(1, 2)
            }),
        ];
        for (what, view) in cases {
            agree_bits(what, gpu, seed, std::slice::from_ref(&x), |t| {
                Ok(view(&t[0])?.contiguous())
            });
        }
    }
    in_each_precision!(views(gpu, seed));
    Ok(())
}

// ---- indexing ------------------------------------------------------------------------------

#[test]
fn embedding_index_select_cat_and_stack_are_bit_exact() -> Result<()> {
    let Some((gpu, seed)) = gpu_and_seed("embedding_index_select_cat_and_stack_are_bit_exact")
    else {
        return Ok(());
    };
    fn indexing<P: Precision>(gpu: Device, seed: u64) -> Result<()> {
        let mut rng = Rng::new(seed);
        let table = Tensor::<F32>::randn([97, 24], seed).cast::<P>();
        let ids = Indices::new((0..6 * 11).map(|_| rng.below(97)).collect(), [6, 11])?;
        let table = std::slice::from_ref(&table);
        agree_bits("embedding [6, 11] from [97, 24]", gpu, seed, table, |t| {
            t[0].embedding(&ids)
        });
        let rows = Indices::from_slice(&[3, 3, 0, 96, 50]);
        let cols = Indices::from_slice(&[23, 0, 5, 5]);
        agree_bits("index_select(0)", gpu, seed, table, |t| {
            t[0].index_select(0, &rows)
        });
        agree_bits("index_select(1)", gpu, seed, table, |t| {
            t[0].index_select(1, &cols)
        });
        agree_bits("index_select of a transpose", gpu, seed, table, |t| {
            t[0].t()?.index_select(1, &rows)
        });

        let parts = [
            Tensor::<F32>::randn([2, 3, 4], seed + 1).cast::<P>(),
            Tensor::<F32>::randn([2, 3, 4], seed + 2).cast::<P>(),
            Tensor::<F32>::randn([2, 3, 4], seed + 3).cast::<P>(),
        ];
        for d in 0..3 {
            agree_bits(&format!("cat({d})"), gpu, seed, &parts, |t| {
                Tensor::cat(&[&t[0], &t[1], &t[2]], d)
            });
            agree_bits(&format!("stack({d})"), gpu, seed, &parts, |t| {
                Tensor::stack(&[&t[0], &t[1], &t[2]], d)
            });
        }
        agree_bits("cat of views", gpu, seed, &parts, |t| {
            Tensor::cat(
                &[
                    &t[0].transpose(1, 2)?,
                    &t[1].transpose(1, 2)?.narrow(1, 1, 2)?,
                ],
                1,
            )
        });
        // The gradient of an embedding scatters into repeated rows.
        let tol = composite_tol::<P>();
        agree_grads("embedding", gpu, seed, tol, table, &[true], |t| {
            t[0].embedding(&ids)
        });
        Ok(())
    }
    in_each_precision!(indexing(gpu, seed)?);
    Ok(())
}
