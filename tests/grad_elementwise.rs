//! Gradient checks of the elementwise ops.

mod common;

use amp::{Precision, Result, Tensor};
use common::gradcheck::check_all;
use common::seed;

fn add<P: Precision>(xs: &[Tensor<P>]) -> Result<Tensor<P>> {
    xs[0].add(&xs[1])
}

fn mul<P: Precision>(xs: &[Tensor<P>]) -> Result<Tensor<P>> {
    xs[0].mul(&xs[1])
}

#[test]
fn add_and_mul_with_broadcasting() {
    let s = seed();
    for (a, b) in [
        (vec![3, 4], vec![3, 4]),
        (vec![2, 3, 4], vec![4]),
        (vec![3, 1], vec![2, 1, 5]),
    ] {
        let xs = [Tensor::randn(a.clone(), s), Tensor::randn(b.clone(), s + 1)];
        check_all("add", &xs, add, add, add, s);
        check_all("mul", &xs, mul, mul, mul, s);
    }
}
