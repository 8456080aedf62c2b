//! One forward pass, written once, run under several policies: the policy is a
//! type parameter bounded by `DefaultRules`.

use amp::autocast::{BF16Policy, DefaultRules, F16Policy, F32Policy, Policy};
use amp::{DType, F32, Precision, Tensor, autocast};

#[autocast(policy = Pol)]
fn forward<Pol: DefaultRules>(
    x: &Tensor<F32>,
    w: &Tensor<F32>,
    b: &Tensor<F32>,
) -> amp::Result<(Tensor<Pol::Low>, Tensor<F32>)> {
    let h = x.linear(w, Some(b))?.gelu(); // Tensor<Pol::Low>
    let h2 = (&h + &h)?; // promotion of equal precisions stays low
    let mixed = (&h2 + &x.matmul(&w.t()?)?.cast::<F32>())?; // low + F32 promotes to F32
    let p = mixed.softmax(-1)?; // F32
    Ok((h2, p))
}

/// (op, policy, output precision) of each recorded call.
type Steps = Vec<(&'static str, &'static str, Option<DType>)>;

fn run<Pol: DefaultRules>() -> (DType, Steps) {
    let x = Tensor::<F32>::randn([4, 8], 0);
    let w = Tensor::<F32>::randn([6, 8], 1);
    let b = Tensor::<F32>::randn([6], 2);
    let (out, plan) = amp::autocast::record(|| forward::<Pol>(&x, &w, &b));
    let (h, p) = out.unwrap();
    assert_eq!(p.dtype(), DType::F32);
    let ops = plan
        .records()
        .iter()
        .map(|r| (r.site.op, r.site.policy, r.output))
        .collect();
    (h.dtype(), ops)
}

#[test]
fn one_generic_forward_runs_under_every_builtin_policy() {
    for (low, name, (h, ops)) in [
        (DType::F16, F16Policy::NAME, run::<F16Policy>()),
        (DType::BF16, BF16Policy::NAME, run::<BF16Policy>()),
        (DType::F32, F32Policy::NAME, run::<F32Policy>()),
    ] {
        assert_eq!(h, low, "policy {name}");
        let expected = [
            ("linear", name, Some(low)),
            ("gelu", name, Some(low)),
            ("add", name, Some(low)),
            ("matmul", name, Some(low)),
            ("add", name, Some(DType::F32)),
            ("softmax", name, Some(DType::F32)),
        ];
        assert_eq!(ops, expected, "policy {name}");
    }
}

#[test]
fn the_low_type_is_the_policys() {
    fn low<Pol: Policy>() -> DType {
        <Pol::Low as Precision>::DTYPE
    }
    assert_eq!(low::<F16Policy>(), DType::F16);
    assert_eq!(low::<BF16Policy>(), DType::BF16);
}
