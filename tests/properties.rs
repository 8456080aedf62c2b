//! Property tests: casts agree with `half` element by element, and
//! broadcasting follows NumPy's rule (commutative, matching an independent
//! reference, and equal to an explicit `broadcast_to` + `contiguous`).

mod common;

use amp::{BF16, F16, F32, Shape, Tensor};
use half::{bf16, f16};
use proptest::prelude::*;

/// Any f32 bit pattern (NaNs, infinities, subnormals included), biased towards
/// the interesting parts of the range half of the time.
fn any_f32() -> impl Strategy<Value = f32> {
    prop_oneof![
        any::<u32>().prop_map(f32::from_bits),
        // Around F16's range and its rounding boundaries.
        (-70000.0f32..70000.0),
        (-1e-4f32..1e-4),
        // Exactly halfway between two F16 / BF16 values (ties).
        any::<u16>().prop_map(|b| f32::from_bits((u32::from(b) << 16) | 0x8000)),
        any::<u16>().prop_map(|b| f16::from_bits(b).to_f32() + f32::EPSILON),
    ]
}

/// A shape of rank 0..=4 with dims 0..=4.
fn shape() -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(0usize..=4, 0..=4)
}

/// A shape that broadcasts with `dims`: a suffix of it with some dims
/// replaced by 1, and maybe extra leading dims.
fn compatible(dims: Vec<usize>) -> impl Strategy<Value = (Vec<usize>, Vec<usize>)> {
    let n = dims.len();
    (
        0..=n,
        prop::collection::vec(any::<bool>(), n),
        prop::collection::vec(1usize..=3, 0..=2),
    )
        .prop_map(move |(drop, ones, lead)| {
            let mut other: Vec<usize> = dims[drop..]
                .iter()
                .zip(&ones[drop..])
                .map(|(&d, &one)| if one { 1 } else { d })
                .collect();
            if drop == 0 {
                let mut l = lead;
                l.extend(other);
                other = l;
            }
            (dims.clone(), other)
        })
}

proptest! {
    // A modest number of cases keeps the suite fast; failures print the
    // minimal failing input (nothing is persisted to disk).
    #![proptest_config(ProptestConfig {
        cases: 64,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// f32 -> F16 -> f32 equals `half::f16::from_f32` per element, on tensors
    /// of any length (small ones and ones past the threading threshold).
    #[test]
    fn cast_f16_matches_half(values in prop::collection::vec(any_f32(), 0..300), reps in prop_oneof![Just(1usize), Just(300usize)]) {
        let data: Vec<f32> = (0..reps).flat_map(|_| values.iter().copied()).collect();
        let x = Tensor::<F32>::from_f32(&data, [data.len()]).unwrap();
        let h = x.cast::<F16>();
        let back = h.cast::<F32>().to_vec();
        for ((v, r), hb) in data.iter().zip(&back).zip(h.to_vec()) {
            let want = f16::from_f32(*v);
            if want.is_nan() {
                prop_assert!(r.is_nan() && hb.is_nan(), "{v:e} -> {r}");
            } else {
                prop_assert_eq!(hb.to_bits(), want.to_bits(), "f16 bits of {:e}", v);
                prop_assert_eq!(r.to_bits(), want.to_f32().to_bits(), "round trip of {:e}", v);
            }
        }
    }

    /// f32 -> BF16 matches `half::bf16::from_f32` for every non-NaN input.
    #[test]
    fn cast_bf16_matches_half(values in prop::collection::vec(any_f32(), 0..300), reps in prop_oneof![Just(1usize), Just(300usize)]) {
        let data: Vec<f32> = (0..reps).flat_map(|_| values.iter().copied()).collect();
        let x = Tensor::<F32>::from_f32(&data, [data.len()]).unwrap();
        let b = x.cast::<BF16>().to_vec();
        let back = x.cast::<BF16>().cast::<F32>().to_vec();
        for ((v, got), r) in data.iter().zip(b).zip(back) {
            if v.is_nan() {
                prop_assert!(got.is_nan() && r.is_nan());
            } else {
                let want = bf16::from_f32(*v);
                prop_assert_eq!(got.to_bits(), want.to_bits(), "bf16 bits of {:e}", v);
                prop_assert_eq!(r.to_bits(), want.to_f32().to_bits(), "round trip of {:e}", v);
            }
        }
    }

    /// A cast of a transposed view equals the cast of its contiguous copy.
    #[test]
    fn cast_of_view_is_cast_of_copy(rows in 1usize..20, cols in 1usize..20, seed in any::<u64>()) {
        let x = Tensor::<F32>::randn([rows, cols], seed).mul_scalar(1000.0);
        let v = x.t().unwrap();
        prop_assert_eq!(v.cast::<F16>().to_vec(), v.contiguous().cast::<F16>().to_vec());
        prop_assert_eq!(v.cast::<BF16>().to_vec(), v.contiguous().cast::<BF16>().to_vec());
    }

    /// `broadcast_with` is commutative and agrees with the reference rule,
    /// on arbitrary (often incompatible) shape pairs.
    #[test]
    fn broadcast_rule(a in shape(), b in shape()) {
        let (sa, sb) = (Shape::from(a.clone()), Shape::from(b.clone()));
        let ab = sa.broadcast_with(&sb, "add");
        let ba = sb.broadcast_with(&sa, "add");
        match common::broadcast_shapes(&a, &b) {
            Some(want) => {
                prop_assert_eq!(ab.unwrap().dims().to_vec(), want.clone());
                prop_assert_eq!(ba.unwrap().dims().to_vec(), want);
            }
            None => {
                let (ea, eb) = (ab.unwrap_err().to_string(), ba.unwrap_err().to_string());
                prop_assert!(ea.contains("add") && ea.contains(&sa.to_string()) && ea.contains(&sb.to_string()), "{}", ea);
                prop_assert!(eb.contains("add"), "{}", eb);
            }
        }
    }

    /// Compatible pairs broadcast to the larger rank, and each side's
    /// `broadcast_to` of the result succeeds.
    #[test]
    fn broadcast_compatible((a, b) in shape().prop_flat_map(compatible)) {
        let (sa, sb) = (Shape::from(a.clone()), Shape::from(b.clone()));
        let out = sa.broadcast_with(&sb, "add").unwrap();
        prop_assert_eq!(out.clone(), sb.broadcast_with(&sa, "add").unwrap());
        prop_assert_eq!(out.rank(), a.len().max(b.len()));
        prop_assert_eq!(out.dims(), &common::broadcast_shapes(&a, &b).unwrap()[..]);
        let ta = Tensor::<F32>::zeros(a.clone());
        let tb = Tensor::<F32>::zeros(b.clone());
        prop_assert_eq!(ta.broadcast_to(out.clone()).unwrap().shape().clone(), out.clone());
        prop_assert_eq!(tb.broadcast_to(out.clone()).unwrap().shape().clone(), out);
    }

    /// `a + b` with implicit broadcasting equals the sum of the explicitly
    /// broadcast, contiguous operands (exactly: the same f32 additions), in
    /// every precision; likewise for the other binary ops.
    #[test]
    fn add_broadcast_equals_explicit((a, b) in shape().prop_flat_map(compatible), seed in any::<u64>(), swap in any::<bool>()) {
        let (a, b) = if swap { (b, a) } else { (a, b) };
        let out = Shape::from(a.clone()).broadcast_with(&Shape::from(b.clone()), "add").unwrap();
        macro_rules! check {
            ($p:ty) => {{
                let x = Tensor::<$p>::randn(a.clone(), seed);
                let y = Tensor::<$p>::randn(b.clone(), seed ^ 1);
                let xe = x.broadcast_to(out.clone()).unwrap().contiguous();
                let ye = y.broadcast_to(out.clone()).unwrap().contiguous();
                prop_assert!(xe.is_contiguous() && ye.is_contiguous());
                let implicit = (&x + &y).unwrap();
                let explicit = (&xe + &ye).unwrap();
                prop_assert_eq!(implicit.dims(), out.dims());
                prop_assert_eq!(implicit.to_vec(), explicit.to_vec());
                prop_assert_eq!((&x * &y).unwrap().to_vec(), (&xe * &ye).unwrap().to_vec());
                prop_assert_eq!(x.maximum(&y).unwrap().to_vec(), xe.maximum(&ye).unwrap().to_vec());
                // And against the f64 reference on the same rounded values.
                let want = common::Arr::of(&x).zip(&common::Arr::of(&y), |p, q| p + q);
                prop_assert!(common::rel_err(&implicit.to_f32_vec(), &want.data) < common::tol::<$p>());
            }};
        }
        check!(F32);
        check!(F16);
        check!(BF16);
    }
}
