// `?` inside `#[autocast]` functions: on amp's own `Result`, converted into a
// user error type with `From`, and on errors that are not amp's.
#![deny(warnings)]
use amp::{DType, F32, Tensor, autocast};

#[derive(Debug)]
enum ModelError {
    Amp(amp::Error),
    Parse(std::num::ParseIntError),
}

impl From<amp::Error> for ModelError {
    fn from(e: amp::Error) -> Self {
        ModelError::Amp(e)
    }
}

impl From<std::num::ParseIntError> for ModelError {
    fn from(e: std::num::ParseIntError) -> Self {
        ModelError::Parse(e)
    }
}

#[autocast]
fn forward(x: &Tensor<F32>, w: &Tensor<F32>, dim: &str) -> Result<Tensor<F32>, ModelError> {
    let d: isize = dim.parse()?;
    let h = x.matmul(w)?;
    let p = (&h + &h)?.softmax(d)?;
    Ok(p)
}

#[autocast(bf16)]
fn boxed(x: &Tensor<F32>, w: &Tensor<F32>) -> Result<f32, Box<dyn std::error::Error>> {
    let y = x.matmul(w)?.sum();
    Ok(y.to_scalar()?)
}

fn main() {
    let x = Tensor::<F32>::randn([2, 4], 0);
    let w = Tensor::<F32>::randn([4, 3], 1);

    let (p, plan) = amp::autocast::record(|| forward(&x, &w, "-1"));
    let p = p.unwrap();
    assert_eq!(p.dtype(), DType::F32);
    let ops: Vec<_> = plan
        .records()
        .iter()
        .map(|r| (r.site.op, r.output))
        .collect();
    assert_eq!(
        ops,
        [
            ("matmul", Some(DType::F16)),
            ("add", Some(DType::F16)),
            ("softmax", Some(DType::F32))
        ]
    );

    // The user's own error converts with `?`.
    assert!(matches!(
        forward(&x, &w, "minus one"),
        Err(ModelError::Parse(e)) if e.to_string().contains("invalid digit")
    ));
    // amp's errors too: a shape mismatch is reported, not a panic.
    let bad = Tensor::<F32>::randn([5, 3], 2);
    assert!(matches!(
        forward(&x, &bad, "-1"),
        Err(ModelError::Amp(amp::Error::ShapeMismatch {
            op: "matmul",
            ..
        }))
    ));
    // And an out-of-range dim in the wide-only op.
    assert!(matches!(
        forward(&x, &w, "7"),
        Err(ModelError::Amp(amp::Error::DimOutOfRange { .. }))
    ));

    let s = boxed(&x, &w).unwrap();
    assert!(s.is_finite());
    assert!(boxed(&x, &bad).is_err());
}
