//! The 8-bit integer GEMM against an i64 reference: fresh random data of
//! random shapes, strides and zero points, and adversarial data where
//! `vpmaddubsw`'s saturating i16 pair sums would be wrong.

mod common;

use amp::cpu::{Int8, QMatrix, qgemm};
use common::{Rng, repro, seed};

/// `Σ_p (a(i,p) − za(i)) (b(p,j) − zb(j))` in i64, then wrapped to i32 as the
/// GEMM's i32 accumulation wraps.
#[allow(clippy::too_many_arguments)]
fn reference<A: Copy + Into<i64>, B: Copy + Into<i64>>(
    m: usize,
    n: usize,
    k: usize,
    a: &[A],
    (ars, acs): (usize, usize),
    za: &[A],
    b: &[B],
    (brs, bcs): (usize, usize),
    zb: &[B],
) -> Vec<i64> {
    let zero = |z: &[A], i: usize| {
        z.get(if z.len() == 1 { 0 } else { i })
            .map_or(0, |&v| v.into())
    };
    let zerob = |z: &[B], i: usize| {
        z.get(if z.len() == 1 { 0 } else { i })
            .map_or(0, |&v| v.into())
    };
    let mut c = vec![0i64; m * n];
    for i in 0..m {
        for j in 0..n {
            c[i * n + j] = (0..k)
                .map(|p| {
                    (a[i * ars + p * acs].into() - zero(za, i))
                        * (b[p * brs + j * bcs].into() - zerob(zb, j))
                })
                .sum();
        }
    }
    c
}

trait Random: Int8 + Into<i64> {
    fn random(r: &mut Rng) -> Self;
}
impl Random for u8 {
    fn random(r: &mut Rng) -> Self {
        r.next_u64() as u8
    }
}
impl Random for i8 {
    fn random(r: &mut Rng) -> Self {
        r.next_u64() as u8 as i8
    }
}

/// One random product: random shape, B row-major or transposed, A and B with
/// or without zero points (one, or one per row / column), C with a padded
/// leading dimension. Checks every element, and that padding is untouched.
fn random_case<A: Random, B: Random>(rng: &mut Rng, s: u64, max: usize) {
    let (m, n, k) = (1 + rng.below(max), 1 + rng.below(max), 1 + rng.below(max));
    let a: Vec<A> = (0..m * k).map(|_| A::random(rng)).collect();
    let b: Vec<B> = (0..k * n).map(|_| B::random(rng)).collect();
    let transposed = rng.below(2) == 1;
    let bs = if transposed { (1, k) } else { (n, 1) };
    let za: Vec<A> = (0..[0, 1, m][rng.below(3)])
        .map(|_| A::random(rng))
        .collect();
    let zb: Vec<B> = (0..[0, 1, n][rng.below(3)])
        .map(|_| B::random(rng))
        .collect();
    let ldc = n + rng.below(3);
    let mut c = vec![-7i32; m * ldc];
    qgemm(
        m,
        n,
        k,
        QMatrix::row_major(&a, k).with_zero_points(&za),
        QMatrix::new(&b, bs.0, bs.1).with_zero_points(&zb),
        &mut c,
        ldc,
    )
    .unwrap();
    let want = reference(m, n, k, &a, (k, 1), &za, &b, bs, &zb);
    for i in 0..m {
        for j in 0..ldc {
            let got = c[i * ldc + j];
            if j < n {
                assert_eq!(
                    i64::from(got),
                    want[i * n + j],
                    "{m}x{n}x{k} transposed={transposed} za={} zb={} at ({i},{j}); {}",
                    za.len(),
                    zb.len(),
                    repro(s)
                );
            } else {
                assert_eq!(got, -7, "padding column {j} was written; {}", repro(s));
            }
        }
    }
}

#[test]
fn random_products_are_exact_for_every_operand_type() {
    let s = seed();
    let mut rng = Rng::new(s);
    for _ in 0..30 {
        random_case::<u8, i8>(&mut rng, s, 70);
        random_case::<i8, i8>(&mut rng, s, 70);
        random_case::<u8, u8>(&mut rng, s, 70);
        random_case::<i8, u8>(&mut rng, s, 70);
    }
    // Large enough for the threaded paths (by rows, and by columns for few
    // rows) and for several k blocks.
    for _ in 0..3 {
        random_case::<u8, i8>(&mut rng, s, 700);
    }
    for &(m, n, k) in &[(3, 1500, 600), (250, 300, 1100), (1, 4100, 70)] {
        let a: Vec<u8> = (0..m * k).map(|_| u8::random(&mut rng)).collect();
        let b: Vec<i8> = (0..k * n).map(|_| i8::random(&mut rng)).collect();
        let mut c = vec![0; m * n];
        qgemm(
            m,
            n,
            k,
            QMatrix::row_major(&a, k),
            QMatrix::row_major(&b, n),
            &mut c,
            n,
        )
        .unwrap();
        let want = reference(m, n, k, &a, (k, 1), &[], &b, (n, 1), &[]);
        assert!(
            c.iter().zip(&want).all(|(&g, &w)| i64::from(g) == w),
            "{m}x{n}x{k}; {}",
            repro(s)
        );
    }
}

/// Values where `vpmaddubsw`'s i16 pair sums saturate: 255·127 + 255·127 =
/// 64 770 > 32 767 (and 255·(−128)·2 < −32 768) in every pair, and zero
/// points that widen the operands to ±255.
#[test]
fn adversarial_values_that_saturate_pmaddubsw_are_exact() {
    let (m, n, k) = (67, 45, 1031);
    let cases: [(u8, i8); 4] = [(255, 127), (255, -128), (0, -128), (128, 127)];
    for (av, bv) in cases {
        let a = vec![av; m * k];
        let b = vec![bv; k * n];
        let pair = 2 * i64::from(av) * i64::from(bv);
        let saturates = !(-32768..=32767).contains(&pair);
        let mut c = vec![0; m * n];
        qgemm(
            m,
            n,
            k,
            QMatrix::row_major(&a, k),
            QMatrix::row_major(&b, n),
            &mut c,
            n,
        )
        .unwrap();
        let exact = k as i64 * i64::from(av) * i64::from(bv);
        assert!(
            c.iter().all(|&v| i64::from(v) == exact),
            "{av}×{bv}: {} vs {exact}",
            c[0]
        );
        // What a saturating pair sum would have given, to show the check bites.
        let saturated = (k as i64 / 2) * pair.clamp(-32768, 32767)
            + (k as i64 % 2) * i64::from(av) * i64::from(bv);
        assert_eq!(saturates, saturated != exact, "{av}×{bv}");
    }
    // Alternating extremes and zero points that make |a − za| = |b − zb| = 255.
    let a: Vec<u8> = (0..m * k)
        .map(|i| if i % 3 == 0 { 0 } else { 255 })
        .collect();
    let b: Vec<u8> = (0..k * n)
        .map(|i| if i % 5 == 0 { 255 } else { 0 })
        .collect();
    let (za, zb) = ([255u8], [0u8]);
    let mut c = vec![0; m * n];
    qgemm(
        m,
        n,
        k,
        QMatrix::row_major(&a, k).with_zero_points(&za),
        QMatrix::row_major(&b, n).with_zero_points(&zb),
        &mut c,
        n,
    )
    .unwrap();
    let want = reference(m, n, k, &a, (k, 1), &za, &b, (n, 1), &zb);
    assert!(c.iter().zip(&want).all(|(&g, &w)| i64::from(g) == w));
}

/// Past i32 the sum wraps, as ONNX Runtime's does: equal to the i64 sum
/// modulo 2³².
#[test]
fn sums_beyond_i32_wrap_like_onnx_runtime() {
    let k = 70_000;
    let a = vec![255u8; 2 * k];
    let b = vec![-128i8; k * 3];
    let mut c = vec![0; 6];
    qgemm(
        2,
        3,
        k,
        QMatrix::row_major(&a, k),
        QMatrix::row_major(&b, 3),
        &mut c,
        3,
    )
    .unwrap();
    let exact = -(k as i64) * 255 * 128;
    assert!(exact < i64::from(i32::MIN));
    assert!(c.iter().all(|&v| v == exact as i32));
}

#[test]
fn bad_shapes_are_errors_not_panics() {
    let a = [1u8; 6];
    let b = [1i8; 6];
    let mut c = [0i32; 4];
    let mm = |m, n, k, ldc, c: &mut [i32]| {
        qgemm(
            m,
            n,
            k,
            QMatrix::row_major(&a, k),
            QMatrix::row_major(&b, n),
            c,
            ldc,
        )
    };
    let err = mm(2, 2, 4, 2, &mut c).unwrap_err().to_string();
    assert!(err.contains("qgemm") && err.contains("A is 2×4"), "{err}");
    assert!(mm(2, 2, 3, 1, &mut c).is_err(), "ldc < n");
    assert!(mm(2, 3, 2, 3, &mut c).is_err(), "C too small");
    let zp = [0u8; 3];
    let err = qgemm(
        2,
        2,
        3,
        QMatrix::row_major(&a, 3).with_zero_points(&zp),
        QMatrix::row_major(&b, 2),
        &mut c,
        2,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("zero points"), "{err}");
    // Empty products are fine; k = 0 gives zeros.
    let mut c = [5i32; 4];
    qgemm(
        2,
        2,
        0,
        QMatrix::row_major(&a, 0),
        QMatrix::row_major(&b, 2),
        &mut c,
        2,
    )
    .unwrap();
    assert_eq!(c, [0; 4]);
    qgemm(
        0,
        2,
        3,
        QMatrix::row_major(&a, 3),
        QMatrix::row_major(&b, 2),
        &mut c,
        2,
    )
    .unwrap();
}
