// Ops inside closures, nested blocks, `if`/`match`/loops and iterator chains
// are rewritten too; the closure keeps the function's policy wherever it runs.
#![deny(warnings)]
use amp::{DType, F16, F32, Tensor, autocast};

#[autocast]
fn forward(xs: &[Tensor<F32>], w: &Tensor<F32>, deep: bool) -> amp::Result<Vec<Tensor<F32>>> {
    let project = |x: &Tensor<F32>| -> amp::Result<Tensor<F16>> { x.matmul(w) };
    let mut out = Vec::new();
    for x in xs {
        let h = {
            let inner = project(x)?;
            if deep {
                let again = { inner.matmul(&w.t()?)? };
                again.matmul(w)?
            } else {
                inner
            }
        };
        let y = match h.dims() {
            [_, 3] => h.softmax(-1)?,
            _ => unreachable!(),
        };
        out.push(y);
    }
    Ok(out)
}

/// A closure built under autocast and run on another thread keeps its policy.
#[autocast(bf16)]
fn make_scorer(w: Tensor<F32>) -> impl Fn(&Tensor<F32>) -> amp::Result<Tensor<F32>> + Send {
    move |x| x.matmul(&w)?.log_softmax(-1)
}

fn main() -> amp::Result<()> {
    let xs: Vec<_> = (0..3).map(|s| Tensor::<F32>::randn([2, 4], s)).collect();
    let w = Tensor::<F32>::randn([4, 3], 9);

    let (ys, plan) = amp::autocast::record(|| forward(&xs, &w, false));
    let ys = ys?;
    assert_eq!(ys.len(), 3);
    assert!(ys.iter().all(|y| y.dtype() == DType::F32));
    let matmuls: Vec<_> = plan.of("matmul").map(|r| r.output).collect();
    assert_eq!(matmuls, [Some(DType::F16); 3]);
    assert_eq!(plan.of("softmax").count(), 3);

    let (ys, plan) = amp::autocast::record(|| forward(&xs, &w, true));
    assert_eq!(ys?.len(), 3);
    assert_eq!(plan.of("matmul").count(), 9);
    assert!(
        plan.of("matmul")
            .all(|r| r.ran_in.iter().all(|d| *d == DType::F16))
    );

    let score = make_scorer(w.clone());
    let x = xs[0].clone();
    let (y, plan) = std::thread::spawn(move || amp::autocast::record(|| score(&x)))
        .join()
        .unwrap();
    assert_eq!(y?.dims(), &[2, 3]);
    let ops: Vec<_> = plan
        .records()
        .iter()
        .map(|r| (r.site.op, r.site.policy, r.output))
        .collect();
    assert_eq!(
        ops,
        [
            ("matmul", "bf16", Some(DType::BF16)),
            ("log_softmax", "bf16", Some(DType::F32))
        ]
    );
    Ok(())
}
