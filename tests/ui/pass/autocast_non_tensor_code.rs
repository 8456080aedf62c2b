// Code that uses op names on non-tensors compiles and runs exactly as written
// under `#[autocast]`, and records nothing.
// Expansions must not add warnings to the user's code.
#![deny(warnings)]
use amp::autocast;

#[autocast]
fn stats(v: &[f32], i: usize, j: usize) -> (f32, f32, usize, f32) {
    let total = v.iter().sum::<f32>();
    let n = v.len() as f32;
    let mean = total / n;
    let x = 0.5f32;
    let soft = x.exp() / (x.exp() + 1.0f32.exp());
    let k = i + j * 2 - i / 2;
    let y = (-x).abs().sqrt().max(x.tanh()).mul_add(2.0, x.ln_1p());
    let words: Vec<String> = ["a", "b"].iter().map(|s| s.to_string()).collect();
    let joined = words.concat() + "c";
    assert_eq!(joined, "abc");
    (mean, soft, k, y)
}

/// A user type with methods named like amp ops (and their arities).
#[derive(Clone, Copy, Debug, PartialEq)]
struct Money(i64);

impl Money {
    fn clamp(self, lo: i64, hi: i64) -> Money {
        Money(self.0.clamp(lo, hi))
    }
    fn relu(&self) -> Money {
        Money(self.0.max(0))
    }
    fn matmul(&self, rows: &Money) -> i64 {
        self.0 * rows.0
    }
}

impl std::ops::Mul for Money {
    type Output = Money;
    fn mul(self, rhs: Money) -> Money {
        Money(self.0 * rhs.0)
    }
}

#[autocast(bf16)]
fn money(a: Money, b: Money) -> (Money, Money, i64, Money) {
    (
        Money(12).clamp(0, 10),
        Money(-3).relu(),
        a.matmul(&b),
        a * b,
    )
}

fn main() {
    let ((mean, soft, k, y), plan) = amp::autocast::record(|| stats(&[1.0, 2.0, 3.0, 6.0], 3, 4));
    assert_eq!(mean, 3.0);
    assert!((soft - 0.5f32.exp() / (0.5f32.exp() + 1.0f32.exp())).abs() < 1e-7);
    assert_eq!(k, 3 + 8 - 1);
    let expected = (0.5f32)
        .sqrt()
        .max(0.5f32.tanh())
        .mul_add(2.0, 0.5f32.ln_1p());
    assert_eq!(y, expected);
    assert!(plan.is_empty(), "non-tensor code recorded ops:\n{plan}");

    let (r, plan) = amp::autocast::record(|| money(Money(4), Money(5)));
    assert_eq!(r, (Money(10), Money(0), 20, Money(20)));
    assert!(plan.is_empty());
}
