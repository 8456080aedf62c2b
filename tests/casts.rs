//! Casts between precisions, bit for bit, against `tests/data/cast_vectors.txt`
//! (numpy float16 and ml_dtypes bfloat16, round-to-nearest-even) and against
//! `half`; plus the facts in `Precision::INFO`.

mod common;

use amp::{BF16, DType, F16, F32, Precision, Tensor};
use common::{Rng, repro, seed};
use half::{bf16, f16};

const VECTORS: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/data/cast_vectors.txt"
));

/// One line of the file: an f32 and its expected f16 and bf16 bits.
#[derive(Clone, Copy, Debug)]
struct Vector {
    f32_bits: u32,
    f16_bits: u16,
    bf16_bits: u16,
}

fn vectors() -> Vec<Vector> {
    let hex32 = |s: &str| u32::from_str_radix(s, 16).expect("hex f32 bits");
    let hex16 = |s: &str| u16::from_str_radix(s, 16).expect("hex 16-bit value");
    let v: Vec<Vector> = VECTORS
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            assert!(cols.len() >= 3, "malformed line {l:?}");
            Vector {
                f32_bits: hex32(cols[0]),
                f16_bits: hex16(cols[1]),
                bf16_bits: hex16(cols[2]),
            }
        })
        .collect();
    assert!(v.len() > 4000, "the vector file has {} lines", v.len());
    v
}

/// Check `got` (bits) against the file's expected bits for `inputs`; NaN
/// inputs only need a NaN output. `offset` locates the slice in the file.
#[track_caller]
fn check_bits(
    what: &str,
    inputs: &[Vector],
    got: &[u16],
    want: impl Fn(&Vector) -> u16,
    is_nan: impl Fn(u16) -> bool,
) {
    assert_eq!(got.len(), inputs.len(), "{what}: length");
    for (i, (v, &g)) in inputs.iter().zip(got).enumerate() {
        let x = f32::from_bits(v.f32_bits);
        if x.is_nan() {
            assert!(
                is_nan(g),
                "{what}: element {i}: NaN input {:#010x} gave {g:#06x}",
                v.f32_bits
            );
        } else {
            assert_eq!(
                g,
                want(v),
                "{what}: element {i}: {x:e} ({:#010x}) gave {g:#06x}, expected {:#06x}",
                v.f32_bits,
                want(v)
            );
        }
    }
}

fn f16_bits(t: &Tensor<F16>) -> Vec<u16> {
    t.to_vec().iter().map(|h| h.to_bits()).collect()
}

fn bf16_bits(t: &Tensor<BF16>) -> Vec<u16> {
    t.to_vec().iter().map(|h| h.to_bits()).collect()
}

fn f16_nan(b: u16) -> bool {
    f16::from_bits(b).is_nan()
}

fn bf16_nan(b: u16) -> bool {
    bf16::from_bits(b).is_nan()
}

fn check_all(what: &str, vs: &[Vector]) {
    let x = Tensor::<F32>::from_vec(
        vs.iter().map(|v| f32::from_bits(v.f32_bits)).collect(),
        [vs.len()],
    )
    .unwrap();
    check_bits(
        &format!("{what}: cast::<F16>"),
        vs,
        &f16_bits(&x.cast::<F16>()),
        |v| v.f16_bits,
        f16_nan,
    );
    check_bits(
        &format!("{what}: cast::<BF16>"),
        vs,
        &bf16_bits(&x.cast::<BF16>()),
        |v| v.bf16_bits,
        bf16_nan,
    );
}

/// Every line at once, repeated past the parallel threshold (65536 elements).
#[test]
fn vectors_in_one_big_tensor() {
    let v = vectors();
    let reps = (3 * 65536) / v.len() + 1;
    let big: Vec<Vector> = (0..reps).flat_map(|_| v.iter().copied()).collect();
    assert!(big.len() > 3 * 65536);
    check_all("one big tensor", &big);
    // The file once, as one tensor.
    check_all("the file as one tensor", &v);
}

/// Small slices, each its own tensor (the single-threaded path and the
/// vectorized loops' tails).
#[test]
fn vectors_in_small_slices() {
    let v = vectors();
    for size in [1, 2, 3, 7, 8, 15, 16, 17, 31, 64, 1000] {
        for (i, chunk) in v.chunks(size).enumerate() {
            check_all(&format!("slice {i} of size {size}"), chunk);
        }
    }
}

/// The other ways to round f32 to F16/BF16 agree with the vectors: `from_f32`,
/// `full`, and casts of non-contiguous views.
#[test]
fn vectors_through_other_paths() {
    let v = vectors();
    let vals: Vec<f32> = v.iter().map(|v| f32::from_bits(v.f32_bits)).collect();
    let h = Tensor::<F16>::from_f32(&vals, [vals.len()]).unwrap();
    check_bits("F16::from_f32", &v, &f16_bits(&h), |v| v.f16_bits, f16_nan);
    let b = Tensor::<BF16>::from_f32(&vals, [vals.len()]).unwrap();
    check_bits(
        "BF16::from_f32",
        &v,
        &bf16_bits(&b),
        |v| v.bf16_bits,
        bf16_nan,
    );
    for w in v.iter().step_by(97) {
        let x = f32::from_bits(w.f32_bits);
        let h = Tensor::<F16>::full(x, [2]).to_vec()[1].to_bits();
        let b = Tensor::<BF16>::full(x, [2]).to_vec()[1].to_bits();
        if !x.is_nan() {
            assert_eq!(h, w.f16_bits, "F16::full({x:e})");
            assert_eq!(b, w.bf16_bits, "BF16::full({x:e})");
        }
    }
    // A transposed view of the vectors (repeated past the threshold): cast
    // reads it in logical order.
    let n = v.len();
    let reps = 70000 / n + 1;
    let data: Vec<f32> = (0..reps).flat_map(|_| vals.iter().copied()).collect();
    let x = Tensor::<F32>::from_vec(data, [reps, n]).unwrap();
    let xt = x.t().unwrap(); // [n, reps]: row i is vector i repeated
    let expect: Vec<Vector> = v
        .iter()
        .flat_map(|w| std::iter::repeat_n(*w, reps))
        .collect();
    check_bits(
        "cast::<F16> of a transposed view",
        &expect,
        &f16_bits(&xt.cast::<F16>()),
        |v| v.f16_bits,
        f16_nan,
    );
    check_bits(
        "cast::<BF16> of a transposed view",
        &expect,
        &bf16_bits(&xt.cast::<BF16>()),
        |v| v.bf16_bits,
        bf16_nan,
    );
    let nar = x
        .narrow(0, 1, reps - 1)
        .unwrap()
        .narrow(1, 5, n - 10)
        .unwrap();
    let expect: Vec<Vector> = (0..reps - 1)
        .flat_map(|_| v[5..n - 5].iter().copied())
        .collect();
    check_bits(
        "cast::<F16> of a narrowed view",
        &expect,
        &f16_bits(&nar.cast::<F16>()),
        |v| v.f16_bits,
        f16_nan,
    );
    check_bits(
        "cast::<BF16> of a narrowed view",
        &expect,
        &bf16_bits(&nar.cast::<BF16>()),
        |v| v.bf16_bits,
        bf16_nan,
    );
}

/// The vectors themselves agree with `half` (a check on the file and on the
/// reference used by the property tests).
#[test]
fn vectors_agree_with_half() {
    for v in vectors() {
        let x = f32::from_bits(v.f32_bits);
        if x.is_nan() {
            continue;
        }
        assert_eq!(f16::from_f32(x).to_bits(), v.f16_bits, "half f16 of {x:e}");
        assert_eq!(
            bf16::from_f32(x).to_bits(),
            v.bf16_bits,
            "half bf16 of {x:e}"
        );
    }
}

// ---- same precision, widening, round trips -----------------------------------------------------

fn free_cast<P: Precision>() {
    let s = seed();
    let x = Tensor::<P>::randn([4, 5], s);
    let y = x.cast::<P>();
    assert!(
        y.shares_storage_with(&x),
        "cast::<{}>() of a {} tensor must not copy",
        P::NAME,
        P::NAME
    );
    assert_eq!(y.to_f32_vec(), x.to_f32_vec());
    let v = x.t().unwrap();
    let vy = v.cast::<P>();
    assert!(
        vy.shares_storage_with(&x),
        "a same-precision cast of a view is free too"
    );
    assert_eq!(vy.dims(), &[5, 4]);
    assert_eq!(vy.to_f32_vec(), v.to_f32_vec());
}

#[test]
fn cast_to_same_precision_is_free() {
    free_cast::<F32>();
    free_cast::<F16>();
    free_cast::<BF16>();
    // Other precisions copy.
    let x = Tensor::<F32>::randn([3], seed());
    assert!(!x.cast::<F16>().shares_storage_with(&x));
    assert!(!x.cast::<BF16>().shares_storage_with(&x));
}

/// All 65536 bit patterns of each 16-bit format.
fn all_f16() -> Tensor<F16> {
    Tensor::from_vec((0..=u16::MAX).map(f16::from_bits).collect(), [65536]).unwrap()
}

fn all_bf16() -> Tensor<BF16> {
    Tensor::from_vec((0..=u16::MAX).map(bf16::from_bits).collect(), [65536]).unwrap()
}

#[test]
fn widening_is_exact() {
    let wide = all_f16().cast::<F32>().to_vec();
    for (b, w) in (0..=u16::MAX).zip(&wide) {
        let h = f16::from_bits(b);
        if h.is_nan() {
            assert!(w.is_nan(), "f16 {b:#06x} (NaN) widened to {w}");
        } else {
            assert_eq!(w.to_bits(), h.to_f32().to_bits(), "f16 {b:#06x} widened");
            assert_eq!(f64::from(*w), h.to_f64(), "f16 {b:#06x} widened");
        }
    }
    let wide = all_bf16().cast::<F32>().to_vec();
    for (b, w) in (0..=u16::MAX).zip(&wide) {
        if bf16::from_bits(b).is_nan() {
            assert!(w.is_nan(), "bf16 {b:#06x} (NaN) widened to {w}");
        } else {
            // bf16 is the top half of an f32.
            assert_eq!(w.to_bits(), u32::from(b) << 16, "bf16 {b:#06x} widened");
        }
    }
    // to_f32_vec widens the same way.
    assert_eq!(
        all_bf16()
            .to_f32_vec()
            .iter()
            .map(|v| v.to_bits())
            .filter(|b| b & 0x7fff_ffff <= 0x7f80_0000)
            .collect::<Vec<_>>(),
        (0..=u16::MAX)
            .filter(|&b| !bf16::from_bits(b).is_nan())
            .map(|b| u32::from(b) << 16)
            .collect::<Vec<_>>()
    );
}

#[test]
fn round_trips() {
    // Narrow -> wide -> narrow is the identity on every non-NaN value.
    let h = all_f16();
    let back = h.cast::<F32>().cast::<F16>();
    for (b, r) in (0..=u16::MAX).zip(back.to_vec()) {
        if f16::from_bits(b).is_nan() {
            assert!(r.is_nan());
        } else {
            assert_eq!(r.to_bits(), b, "f16 {b:#06x} round trip through F32");
        }
    }
    let bfv = all_bf16();
    let back = bfv.cast::<F32>().cast::<BF16>();
    for (b, r) in (0..=u16::MAX).zip(back.to_vec()) {
        if bf16::from_bits(b).is_nan() {
            assert!(r.is_nan());
        } else {
            assert_eq!(r.to_bits(), b, "bf16 {b:#06x} round trip through F32");
        }
    }
    // F16 <-> BF16 go through f32 exactly, so they round once.
    let hb = h.cast::<BF16>().to_vec();
    for (b, r) in (0..=u16::MAX).zip(hb) {
        let want = bf16::from_f32(f16::from_bits(b).to_f32());
        assert!(
            (want.is_nan() && r.is_nan()) || want.to_bits() == r.to_bits(),
            "f16 {b:#06x} -> bf16 gave {:#06x}, expected {:#06x}",
            r.to_bits(),
            want.to_bits()
        );
    }
    let bh = bfv.cast::<F16>().to_vec();
    for (b, r) in (0..=u16::MAX).zip(bh) {
        let want = f16::from_f32(bf16::from_bits(b).to_f32());
        assert!(
            (want.is_nan() && r.is_nan()) || want.to_bits() == r.to_bits(),
            "bf16 {b:#06x} -> f16 gave {:#06x}, expected {:#06x}",
            r.to_bits(),
            want.to_bits()
        );
    }
    // Wide -> narrow -> wide -> narrow: rounding is idempotent.
    let s = seed();
    let mut rng = Rng::new(s);
    let vals: Vec<f32> = (0..100_000)
        .map(|_| f32::from_bits(rng.next_u64() as u32))
        .filter(|v| !v.is_nan())
        .collect();
    let x = Tensor::<F32>::from_f32(&vals, [vals.len()]).unwrap();
    let h1 = x.cast::<F16>();
    let h2 = h1.cast::<F32>().cast::<F16>();
    assert_eq!(f16_bits(&h1), f16_bits(&h2), "{}", repro(s));
    let b1 = x.cast::<BF16>();
    let b2 = b1.cast::<F32>().cast::<BF16>();
    assert_eq!(bf16_bits(&b1), bf16_bits(&b2), "{}", repro(s));
    // And matches half on random bit patterns.
    for ((v, h), b) in vals.iter().zip(h1.to_vec()).zip(b1.to_vec()) {
        assert_eq!(
            h.to_bits(),
            f16::from_f32(*v).to_bits(),
            "f16 of {v:e}; {}",
            repro(s)
        );
        assert_eq!(
            b.to_bits(),
            bf16::from_f32(*v).to_bits(),
            "bf16 of {v:e}; {}",
            repro(s)
        );
    }
}

/// Hand-computable rounding cases.
#[test]
fn rounding_by_hand() {
    let x = Tensor::<F32>::from_f32(
        &[
            1.0 + 1.0 / 2048.0, // tie in F16: to even (1.0)
            1.0 + 3.0 / 2048.0, // tie in F16: to even (1 + 2/1024)
            65504.0,            // F16 max
            65520.0,            // halfway to 2^16: overflows to inf
            -65520.0,
            2f32.powi(-25),       // half the smallest subnormal: to 0
            2f32.powi(-25) * 1.5, // above half: the smallest subnormal
            -0.0,
        ],
        [8],
    )
    .unwrap();
    let h = x.cast::<F16>().to_f32_vec();
    assert_eq!(h[0], 1.0);
    assert_eq!(h[1], 1.0 + 2.0 / 1024.0);
    assert_eq!(h[2], 65504.0);
    assert_eq!(h[3], f32::INFINITY);
    assert_eq!(h[4], f32::NEG_INFINITY);
    assert_eq!(h[5], 0.0);
    assert_eq!(h[6], 2f32.powi(-24));
    assert!(h[7] == 0.0 && h[7].is_sign_negative());
    let b = Tensor::<F32>::from_f32(
        &[1.0 + 1.0 / 256.0, 1.0 + 3.0 / 256.0, f32::MAX, 1e-40],
        [4],
    )
    .unwrap()
    .cast::<BF16>()
    .to_f32_vec();
    assert_eq!(b[0], 1.0);
    assert_eq!(b[1], 1.0 + 2.0 / 128.0);
    assert_eq!(b[2], f32::INFINITY, "f32::MAX rounds up past BF16's max");
    assert!(b[3] > 0.0 && b[3] < 2e-40, "BF16 keeps F32's subnormals");
}

// ---- precision facts -----------------------------------------------------------------------------

fn pow2(e: i32) -> f32 {
    // Exact: 2^e is an f64 normal for every e used here, and an f32 (perhaps
    // subnormal) power of two.
    2f64.powi(e) as f32
}

#[test]
fn precision_info_f16() {
    let i = F16::INFO;
    assert_eq!((i.bits, i.exponent_bits, i.mantissa_bits), (16, 5, 10));
    assert_eq!(i.mantissa_bits + 1, f16::MANTISSA_DIGITS);
    assert_eq!(i.max, f16::MAX.to_f32());
    assert_eq!(i.max, 65504.0);
    assert_eq!(i.max, (2.0 - pow2(-10)) * pow2(15));
    assert_eq!(i.smallest_normal, f16::MIN_POSITIVE.to_f32());
    assert_eq!(i.smallest_normal, pow2(-14));
    assert!((i.smallest_normal - 6.1035e-5).abs() < 1e-9);
    assert_eq!(i.smallest_subnormal, f16::MIN_POSITIVE_SUBNORMAL.to_f32());
    assert_eq!(i.smallest_subnormal, pow2(-24));
    assert!((i.smallest_subnormal - 5.96e-8).abs() < 1e-10);
    assert_eq!(i.epsilon, f16::EPSILON.to_f32());
    assert_eq!(i.epsilon, pow2(-10));
    assert_eq!(F16::DTYPE, DType::F16);
    assert_eq!(DType::F16.info(), i);
    assert_eq!(DType::F16.size_in_bytes(), 2);
}

#[test]
fn precision_info_bf16() {
    let i = BF16::INFO;
    assert_eq!((i.bits, i.exponent_bits, i.mantissa_bits), (16, 8, 7));
    assert_eq!(i.mantissa_bits + 1, bf16::MANTISSA_DIGITS);
    assert_eq!(i.max, bf16::MAX.to_f32());
    assert_eq!(i.max, (2.0 - pow2(-7)) * pow2(127));
    assert!((f64::from(i.max) - 3.39e38).abs() < 0.01e38);
    assert_eq!(i.smallest_normal, bf16::MIN_POSITIVE.to_f32());
    assert_eq!(i.smallest_normal, pow2(-126));
    assert!((i.smallest_normal - 1.18e-38).abs() < 0.01e-38);
    assert_eq!(i.smallest_subnormal, bf16::MIN_POSITIVE_SUBNORMAL.to_f32());
    assert_eq!(i.smallest_subnormal, pow2(-133));
    assert_eq!(i.epsilon, bf16::EPSILON.to_f32());
    assert_eq!(i.epsilon, pow2(-7));
    assert_eq!(BF16::DTYPE, DType::BF16);
    assert_eq!(DType::BF16.info(), i);
    assert_eq!(DType::BF16.size_in_bytes(), 2);
}

#[test]
fn precision_info_f32() {
    let i = F32::INFO;
    assert_eq!((i.bits, i.exponent_bits, i.mantissa_bits), (32, 8, 23));
    assert_eq!(i.mantissa_bits + 1, f32::MANTISSA_DIGITS);
    assert_eq!(i.max, f32::MAX);
    assert_eq!(i.max, (2.0 - pow2(-23)) * pow2(127));
    assert_eq!(i.smallest_normal, f32::MIN_POSITIVE);
    assert_eq!(i.smallest_normal, pow2(-126));
    assert_eq!(i.smallest_subnormal, f32::from_bits(1));
    assert_eq!(i.smallest_subnormal, pow2(-149));
    assert_eq!(i.epsilon, f32::EPSILON);
    assert_eq!(i.epsilon, pow2(-23));
    assert_eq!(F32::DTYPE, DType::F32);
    assert_eq!(DType::F32.info(), i);
    assert_eq!(DType::F32.size_in_bytes(), 4);
}

/// The facts describe what the tensors do: max survives a cast, the next
/// value up overflows, the smallest subnormal survives, half of it does not,
/// and 1 + epsilon is the next value after 1.
fn info_matches_behaviour<P: Precision>() {
    let i = P::INFO;
    let vals = [
        i.max,
        i.max * (1.0 + i.epsilon),
        i.smallest_normal,
        i.smallest_subnormal,
        i.smallest_subnormal / 2.0,
        1.0 + i.epsilon,
        1.0 + i.epsilon / 2.0,
    ];
    let t = Tensor::<F32>::from_f32(&vals, [vals.len()])
        .unwrap()
        .cast::<P>()
        .to_f32_vec();
    let what = P::NAME;
    assert_eq!(t[0], i.max, "{what}: max");
    assert_eq!(t[1], f32::INFINITY, "{what}: past max");
    assert_eq!(t[2], i.smallest_normal, "{what}: smallest normal");
    assert_eq!(t[3], i.smallest_subnormal, "{what}: smallest subnormal");
    assert_eq!(
        t[4], 0.0,
        "{what}: half the smallest subnormal (a tie, to even)"
    );
    assert_eq!(t[5], 1.0 + i.epsilon, "{what}: 1 + eps");
    assert_eq!(t[6], 1.0, "{what}: 1 + eps/2 (a tie, to even)");
}

#[test]
fn precision_info_matches_behaviour() {
    info_matches_behaviour::<F16>();
    info_matches_behaviour::<BF16>();
    // F32: the cast is the identity, but the facts still hold of f32 itself.
    let i = F32::INFO;
    assert_eq!(i.max * (1.0 + i.epsilon), f32::INFINITY);
    assert_eq!(i.smallest_subnormal / 2.0, 0.0);
    assert_eq!(1.0 + i.epsilon / 2.0, 1.0);
    assert!(1.0 + i.epsilon > 1.0);
}
