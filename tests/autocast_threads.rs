//! The autocast policy is part of the compiled code, not thread-local state.
//!
//! PyTorch keeps "autocast on, dtype X" in thread-local state, and lost it
//! whenever work moved to another thread or ran later:
//!
//! - pytorch/pytorch#125186: a custom backward run by autograd on another
//!   thread saw autocast off (or the wrong dtype);
//! - pytorch/pytorch#71124: activation checkpointing recomputed the forward
//!   outside the autocast region, in other precisions than the first pass;
//! - pytorch/pytorch#38487: `DataParallel` worker threads ran without the
//!   caller's autocast state.
//!
//! With `#[autocast]` the precisions are types decided when the function is
//! compiled: closures it hands to other threads are rewritten too, and a
//! function behaves the same on every thread, at every call, whatever policy
//! its caller has. (Only *recording* a plan is per thread: each thread that
//! wants one calls `amp::autocast::record` itself.)

use std::sync::Barrier;
use std::thread;

use amp::autocast::{OpRecord, PrecisionPlan, record};
use amp::{BF16, DType, F16, F32, Precision, Tensor};
use rayon::prelude::*;

// ---- helpers ----------------------------------------------------------------------

/// The exact bits of a tensor's values (widening F16/BF16 to f32 is exact, so
/// equal bits here means equal bits in the tensor's own precision).
fn bits<P: Precision>(t: &Tensor<P>) -> Vec<u32> {
    t.to_f32_vec().iter().map(|v| v.to_bits()).collect()
}

/// A record without its call site: (op, policy, inputs, ran in, output).
type Step = (
    &'static str,
    &'static str,
    Vec<DType>,
    Vec<DType>,
    Option<DType>,
);

fn steps(plan: &PrecisionPlan) -> Vec<Step> {
    plan.records()
        .iter()
        .map(|r: &OpRecord| {
            (
                r.site.op,
                r.site.policy,
                r.inputs.clone(),
                r.ran_in.clone(),
                r.output,
            )
        })
        .collect()
}

fn step(
    op: &'static str,
    policy: &'static str,
    inputs: &[DType],
    ran_in: &[DType],
    output: Option<DType>,
) -> Step {
    (op, policy, inputs.to_vec(), ran_in.to_vec(), output)
}

use DType::{BF16 as Bf, F16 as Hf, F32 as Fl};

// ---- (a) threads spawned inside an autocast function --------------------------------

/// One block: the single-threaded reference.
#[amp::autocast(bf16)]
fn block(x: &Tensor<F32>, w: &Tensor<F32>) -> amp::Result<(Tensor<BF16>, Tensor<F32>)> {
    let h: Tensor<BF16> = x.matmul(w)?.gelu();
    let p: Tensor<F32> = h.softmax(-1)?;
    Ok((h, p))
}

type BlockOut = (Tensor<BF16>, Tensor<F32>, PrecisionPlan, thread::ThreadId);

/// The same block for every weight, each on its own scoped thread, written
/// inline in the closures: `#[autocast]` rewrites closure bodies too, so the
/// workers run BF16 matmuls although no state was handed to them.
#[amp::autocast(bf16)]
fn blocks_on_threads(x: &Tensor<F32>, ws: &[Tensor<F32>]) -> amp::Result<Vec<BlockOut>> {
    thread::scope(|s| {
        let handles: Vec<_> = ws
            .iter()
            .map(|w| {
                s.spawn(move || {
                    let (r, plan) = record(|| -> amp::Result<(Tensor<BF16>, Tensor<F32>)> {
                        let h: Tensor<BF16> = x.matmul(w)?.gelu();
                        let p: Tensor<F32> = h.softmax(-1)?;
                        Ok((h, p))
                    });
                    let (h, p) = r?;
                    Ok((h, p, plan, thread::current().id()))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("worker panicked"))
            .collect()
    })
}

fn block_steps() -> Vec<Step> {
    vec![
        step("matmul", "bf16", &[Fl, Fl], &[Bf, Bf], Some(Bf)),
        step("gelu", "bf16", &[Bf], &[Bf], Some(Bf)),
        step("softmax", "bf16", &[Bf], &[Fl], Some(Fl)),
    ]
}

#[test]
fn closures_on_scoped_threads_keep_the_functions_policy() {
    let x = Tensor::<F32>::randn([6, 16], 0);
    let ws: Vec<Tensor<F32>> = (0..4).map(|i| Tensor::randn([16, 12], 10 + i)).collect();

    let (out, parent_plan) = record(|| blocks_on_threads(&x, &ws));
    let out = out.unwrap();
    assert_eq!(out.len(), ws.len());
    // Recording is per thread: every op ran on a worker, none on this one.
    assert!(
        parent_plan.is_empty(),
        "the spawning thread ran no op\n{parent_plan}"
    );

    let main = thread::current().id();
    let mut ids = Vec::new();
    for (i, (w, (h, p, plan, id))) in ws.iter().zip(&out).enumerate() {
        // Statically BF16 and F32 (the annotations in `BlockOut`), and so at run time.
        assert_eq!(h.dtype(), DType::BF16);
        assert_eq!(p.dtype(), DType::F32);
        let (h_ref, p_ref) = block(&x, w).unwrap();
        assert_eq!(bits(h), bits(&h_ref), "worker {i}: hidden state differs");
        assert_eq!(bits(p), bits(&p_ref), "worker {i}: probabilities differ");
        assert_eq!(steps(plan), block_steps(), "worker {i}\n{plan}");
        for r in plan.records() {
            assert!(r.site.file.ends_with("autocast_threads.rs"));
            assert!(r.site.line > 0);
        }
        assert_ne!(*id, main, "worker {i} ran on the test's thread");
        ids.push(*id);
    }
    ids.sort_by_key(|id| format!("{id:?}"));
    ids.dedup();
    assert_eq!(ids.len(), ws.len(), "every block ran on its own thread");

    // And the single-threaded reference records the same plan as a worker.
    let (r, plan) = record(|| block(&x, &ws[0]));
    r.unwrap();
    assert_eq!(steps(&plan), block_steps());
}

/// A backward step built inside an autocast function and run later, on another
/// thread, after the function returned (pytorch#125186: PyTorch's autograd
/// thread ran custom backwards without the forward's autocast state).
#[amp::autocast(bf16)]
fn make_backward(
    w: Tensor<F32>,
) -> impl Fn(&Tensor<F32>) -> amp::Result<Tensor<BF16>> + Send + 'static {
    move |grad: &Tensor<F32>| grad.matmul(&w.t()?)
}

#[test]
fn a_closure_run_later_on_another_thread_keeps_the_policy() {
    let w = Tensor::<F32>::randn([16, 12], 1);
    let grad = Tensor::<F32>::randn([6, 12], 2);
    let backward = make_backward(w.clone());
    let (here, plan_here) = record(|| backward(&grad));
    let here: Tensor<BF16> = here.unwrap();

    let g = grad.clone();
    let (there, plan_there) = thread::spawn(move || record(|| backward(&g)))
        .join()
        .unwrap();
    let there: Tensor<BF16> = there.unwrap();

    assert_eq!(bits(&here), bits(&there));
    let want = vec![step("matmul", "bf16", &[Fl, Fl], &[Bf, Bf], Some(Bf))];
    assert_eq!(steps(&plan_here), want, "{plan_here}");
    assert_eq!(plan_there, plan_here, "same call site, same precisions");
    // Written by hand: the same BF16 product, bit for bit.
    let by_hand = grad
        .cast::<BF16>()
        .matmul(&w.t().unwrap().cast::<BF16>())
        .unwrap();
    assert_eq!(bits(&there), bits(&by_hand));
}

// ---- (b) data-parallel workers -------------------------------------------------------

struct Model {
    w1: Tensor<F32>, // [64, 32]
    b1: Tensor<F32>, // [64]
    g: Tensor<F32>,  // [64]
    w2: Tensor<F32>, // [10, 64]
}

impl Model {
    fn new() -> Self {
        Model {
            w1: Tensor::randn([64, 32], 100),
            b1: Tensor::randn([64], 101),
            g: Tensor::randn([64], 102),
            w2: Tensor::randn([10, 64], 103),
        }
    }
}

/// The model's forward, what each data-parallel replica runs on its shard.
/// Shapes are small enough that no op splits its own work across rayon
/// threads, so a worker never steals another replica's job mid-op (which
/// would put that job's ops into this thread's recording).
#[amp::autocast(f16)]
fn forward(x: &Tensor<F32>, m: &Model) -> amp::Result<Tensor<F32>> {
    let h: Tensor<F16> = x.linear(&m.w1, Some(&m.b1))?.gelu();
    let h: Tensor<F32> = h.layer_norm(&[64], Some(&m.g), None, 1e-5)?;
    let logits: Tensor<F16> = h.linear(&m.w2, None)?;
    logits.log_softmax(-1)
}

fn forward_steps() -> Vec<Step> {
    vec![
        step("linear", "f16", &[Fl, Fl, Fl], &[Hf, Hf, Hf], Some(Hf)),
        step("gelu", "f16", &[Hf], &[Hf], Some(Hf)),
        step("layer_norm", "f16", &[Hf, Fl], &[Fl, Fl], Some(Fl)),
        step("linear", "f16", &[Fl, Fl], &[Hf, Hf], Some(Hf)),
        step("log_softmax", "f16", &[Hf], &[Fl], Some(Fl)),
    ]
}

fn shards() -> Vec<Tensor<F32>> {
    (0..4).map(|i| Tensor::randn([8, 32], 200 + i)).collect()
}

/// Each shard's output and plan, computed on the test's thread.
fn single_threaded(model: &Model, shards: &[Tensor<F32>]) -> Vec<(Vec<u32>, PrecisionPlan)> {
    shards
        .iter()
        .map(|x| {
            let (y, plan) = record(|| forward(x, model));
            (bits(&y.unwrap()), plan)
        })
        .collect()
}

#[test]
fn data_parallel_workers_on_std_threads_run_the_same_precisions() {
    let model = Model::new();
    let shards = shards();
    let reference = single_threaded(&model, &shards);
    assert_eq!(
        steps(&reference[0].1),
        forward_steps(),
        "{}",
        reference[0].1
    );
    for (y, plan) in &reference[1..] {
        assert_eq!(plan, &reference[0].1, "same code, same plan on every shard");
        assert_ne!(y, &reference[0].0, "shards differ, so outputs must");
    }

    const ROUNDS: usize = 10;
    let start = Barrier::new(shards.len());
    let results: Vec<Vec<(Vec<u32>, PrecisionPlan)>> = thread::scope(|s| {
        let handles: Vec<_> = shards
            .iter()
            .map(|x| {
                let (model, start) = (&model, &start);
                s.spawn(move || {
                    start.wait(); // all replicas run at once
                    (0..ROUNDS)
                        .map(|_| {
                            let (y, plan) = record(|| forward(x, model));
                            (bits(&y.unwrap()), plan)
                        })
                        .collect()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (i, rounds) in results.iter().enumerate() {
        assert_eq!(rounds.len(), ROUNDS);
        for (round, (y, plan)) in rounds.iter().enumerate() {
            assert_eq!(y, &reference[i].0, "replica {i}, round {round}: output");
            assert_eq!(plan, &reference[i].1, "replica {i}, round {round}\n{plan}");
        }
    }
}

#[test]
fn data_parallel_workers_on_a_rayon_pool_run_the_same_precisions() {
    let model = Model::new();
    let shards = shards();
    let reference = single_threaded(&model, &shards);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(4)
        .build()
        .unwrap();
    let results: Vec<(usize, Option<usize>, Vec<u32>, PrecisionPlan)> = pool.install(|| {
        (0..32)
            .into_par_iter()
            .map(|i| {
                let (y, plan) = record(|| forward(&shards[i % shards.len()], &model));
                (i, rayon::current_thread_index(), bits(&y.unwrap()), plan)
            })
            .collect()
    });
    assert_eq!(results.len(), 32);
    for (i, worker, y, plan) in &results {
        assert!(worker.is_some(), "job {i} ran outside the pool");
        let (y_ref, plan_ref) = &reference[i % shards.len()];
        assert_eq!(y, y_ref, "job {i}: output");
        assert_eq!(plan, plan_ref, "job {i}: plan\n{plan}");
        assert_eq!(steps(plan), forward_steps(), "job {i}");
    }

    // The global pool too (its size is the machine's).
    let global: Vec<(Vec<u32>, PrecisionPlan)> = shards
        .par_iter()
        .map(|x| {
            let (y, plan) = record(|| forward(x, &model));
            (bits(&y.unwrap()), plan)
        })
        .collect();
    assert_eq!(global, reference);
}

// ---- (c) recomputation (activation checkpointing) -----------------------------------

/// A checkpointed segment: its activations are dropped after the forward and
/// recomputed during the backward.
#[amp::autocast(bf16)]
fn segment(x: &Tensor<F32>, m: &Model) -> amp::Result<Tensor<BF16>> {
    let h: Tensor<BF16> = x.linear(&m.w1, Some(&m.b1))?.silu();
    let h: Tensor<F32> = h.rms_norm(&[64], Some(&m.g), 1e-6)?;
    h.linear(&m.w2, None)
}

fn segment_steps() -> Vec<Step> {
    vec![
        step("linear", "bf16", &[Fl, Fl, Fl], &[Bf, Bf, Bf], Some(Bf)),
        step("silu", "bf16", &[Bf], &[Bf], Some(Bf)),
        step("rms_norm", "bf16", &[Bf, Fl], &[Fl, Fl], Some(Fl)),
        step("linear", "bf16", &[Fl, Fl], &[Bf, Bf], Some(Bf)),
    ]
}

/// The backward pass: autocast off (like PyTorch's backward, which runs
/// outside the `autocast` region), recomputing the segment on another thread
/// (like autograd's device threads).
#[amp::autocast(f32)]
fn backward_recomputing(
    x: &Tensor<F32>,
    m: &Model,
    upstream: &Tensor<F32>,
) -> amp::Result<(Tensor<BF16>, PrecisionPlan, PrecisionPlan)> {
    let (y, plan) = thread::scope(|s| s.spawn(|| record(|| segment(x, m))).join().unwrap());
    let y: Tensor<BF16> = y?;
    // The backward's own ops follow this function's F32 policy.
    let ((), own) = record(|| {
        let g: Tensor<F32> = (upstream * &y).unwrap();
        assert_eq!(g.dtype(), DType::F32);
    });
    Ok((y, plan, own))
}

#[test]
fn recomputing_a_checkpointed_segment_on_another_thread_is_bit_identical() {
    let model = Model::new();
    let x = Tensor::<F32>::randn([8, 32], 300);
    let upstream = Tensor::<F32>::randn([8, 10], 301);

    let (first, plan) = record(|| segment(&x, &model));
    let first: Tensor<BF16> = first.unwrap();
    assert_eq!(steps(&plan), segment_steps(), "{plan}");

    let (again, again_plan, backward_plan) = backward_recomputing(&x, &model, &upstream).unwrap();
    assert_eq!(bits(&again), bits(&first), "recomputation differs");
    assert_eq!(again_plan, plan, "recomputation ran other precisions");
    assert_eq!(
        steps(&backward_plan),
        vec![step("mul", "f32", &[Fl, Bf], &[Fl, Fl], Some(Fl))]
    );

    // Many recomputations at once, from threads that never ran the forward.
    thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| s.spawn(|| record(|| segment(&x, &model))))
            .collect();
        for h in handles {
            let (y, p) = h.join().unwrap();
            assert_eq!(bits(&y.unwrap()), bits(&first));
            assert_eq!(p, plan);
        }
    });
}

// ---- (d) two policies at once ------------------------------------------------------

#[amp::autocast(f16)]
fn head_f16(x: &Tensor<F32>, w: &Tensor<F32>) -> amp::Result<(Tensor<F16>, Tensor<F32>)> {
    let h: Tensor<F16> = x.matmul(w)?.tanh();
    let p: Tensor<F32> = h.log_softmax(-1)?;
    Ok((h, p))
}

#[amp::autocast(bf16)]
fn head_bf16(x: &Tensor<F32>, w: &Tensor<F32>) -> amp::Result<(Tensor<BF16>, Tensor<F32>)> {
    let h: Tensor<BF16> = x.matmul(w)?.tanh();
    let p: Tensor<F32> = h.log_softmax(-1)?;
    Ok((h, p))
}

fn head_steps(policy: &'static str, low: DType) -> Vec<Step> {
    vec![
        step("matmul", policy, &[Fl, Fl], &[low, low], Some(low)),
        step("tanh", policy, &[low], &[low], Some(low)),
        step("log_softmax", policy, &[low], &[Fl], Some(Fl)),
    ]
}

#[test]
fn f16_and_bf16_functions_on_concurrent_threads_never_mix() {
    let x = Tensor::<F32>::randn([16, 48], 400);
    let w = Tensor::<F32>::randn([48, 24], 401);
    let (r16, plan16) = record(|| head_f16(&x, &w));
    let (h16, p16) = r16.unwrap();
    let (rbf, planbf) = record(|| head_bf16(&x, &w));
    let (hbf, pbf) = rbf.unwrap();
    assert_eq!(steps(&plan16), head_steps("f16", Hf));
    assert_eq!(steps(&planbf), head_steps("bf16", Bf));
    // The two policies really compute differently.
    assert_ne!(bits(&h16), bits(&hbf));
    assert_ne!(bits(&p16), bits(&pbf));

    const ROUNDS: usize = 50;
    let start = Barrier::new(4);
    thread::scope(|s| {
        let mut handles = Vec::new();
        for t in 0..4 {
            let (x, w, start) = (&x, &w, &start);
            let (h16, p16, hbf, pbf) = (&h16, &p16, &hbf, &pbf);
            let (plan16, planbf) = (&plan16, &planbf);
            handles.push(s.spawn(move || {
                start.wait();
                for round in 0..ROUNDS {
                    // Threads 0 and 2 start with f16, 1 and 3 with bf16, and
                    // each alternates, so both policies run at every moment.
                    if (t + round) % 2 == 0 {
                        let (r, plan) = record(|| head_f16(x, w));
                        let (h, p): (Tensor<F16>, Tensor<F32>) = r.unwrap();
                        assert_eq!(bits(&h), bits(h16), "thread {t} round {round}");
                        assert_eq!(bits(&p), bits(p16), "thread {t} round {round}");
                        assert_eq!(&plan, plan16, "thread {t} round {round}\n{plan}");
                    } else {
                        let (r, plan) = record(|| head_bf16(x, w));
                        let (h, p): (Tensor<BF16>, Tensor<F32>) = r.unwrap();
                        assert_eq!(bits(&h), bits(hbf), "thread {t} round {round}");
                        assert_eq!(bits(&p), bits(pbf), "thread {t} round {round}");
                        assert_eq!(&plan, planbf, "thread {t} round {round}\n{plan}");
                    }
                }
            }));
        }
        for h in handles {
            h.join().unwrap();
        }
    });
}

// ---- (e) nested autocast functions ---------------------------------------------------

/// F16 policy, calling a BF16 function, which calls an F32 one.
#[amp::autocast(f16)]
fn outer(x: &Tensor<F32>, w: &Tensor<F32>) -> amp::Result<Tensor<F32>> {
    // A nested item is a function of its own: no `#[autocast]`, no rewrite,
    // so this relu is not in the plan.
    fn unrecorded(t: &Tensor<F16>) -> Tensor<F16> {
        t.relu()
    }
    let h: Tensor<F16> = x.matmul(w)?;
    let h: Tensor<F16> = unrecorded(&h);
    let m: Tensor<BF16> = middle(&h, w)?;
    let s: Tensor<F32> = (&h + &m)?; // F16 + BF16: promoted to F32
    s.softmax(-1)
}

#[amp::autocast(bf16)]
fn middle(h: &Tensor<F16>, w: &Tensor<F32>) -> amp::Result<Tensor<BF16>> {
    // A nested item with a policy of its own.
    #[amp::autocast(f32)]
    fn inner(a: &Tensor<BF16>, w: &Tensor<F32>) -> amp::Result<Tensor<F32>> {
        let y: Tensor<F32> = a.matmul(w)?;
        Ok(y.gelu())
    }
    let a: Tensor<BF16> = h.matmul(w)?;
    let f: Tensor<F32> = inner(&a, w)?;
    let g: Tensor<BF16> = f.matmul(w)?;
    Ok(g.relu())
}

fn nested_steps() -> Vec<Step> {
    vec![
        step("matmul", "f16", &[Fl, Fl], &[Hf, Hf], Some(Hf)),
        step("matmul", "bf16", &[Hf, Fl], &[Bf, Bf], Some(Bf)),
        step("matmul", "f32", &[Bf, Fl], &[Fl, Fl], Some(Fl)),
        step("gelu", "f32", &[Fl], &[Fl], Some(Fl)),
        step("matmul", "bf16", &[Fl, Fl], &[Bf, Bf], Some(Bf)),
        step("relu", "bf16", &[Bf], &[Bf], Some(Bf)),
        step("add", "f16", &[Hf, Bf], &[Fl, Fl], Some(Fl)),
        step("softmax", "f16", &[Fl], &[Fl], Some(Fl)),
    ]
}

#[test]
fn nested_autocast_functions_each_keep_their_own_policy() {
    let x = Tensor::<F32>::randn([4, 8], 500);
    let w = Tensor::<F32>::randn([8, 8], 501);
    let (y, plan) = record(|| outer(&x, &w));
    let y = y.unwrap();
    assert_eq!(y.dims(), &[4, 8]);
    assert_eq!(steps(&plan), nested_steps(), "\n{plan}");
    // Each record is a distinct call site, in the function that wrote it.
    let sites: Vec<(u32, u32)> = plan
        .records()
        .iter()
        .map(|r| (r.site.line, r.site.column))
        .collect();
    let mut distinct = sites.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(
        distinct.len(),
        sites.len(),
        "each record is its own call site"
    );

    // The same on another thread, and with the caller under another policy.
    let (y2, plan2) = thread::scope(|s| s.spawn(|| record(|| outer(&x, &w))).join().unwrap());
    assert_eq!(bits(&y2.unwrap()), bits(&y));
    assert_eq!(plan2, plan);
    let (y3, plan3) = record(|| caller_with_bf16_policy(&x, &w));
    assert_eq!(bits(&y3.unwrap()), bits(&y));
    assert_eq!(plan3, plan);
}

/// Calling an autocast function from one under another policy changes nothing.
#[amp::autocast(bf16)]
fn caller_with_bf16_policy(x: &Tensor<F32>, w: &Tensor<F32>) -> amp::Result<Tensor<F32>> {
    outer(x, w)
}

/// Large casts run on rayon; a rayon worker that waits inside one may steal
/// another autocast job on the same thread. The weight-cast cache must not be
/// held across that wait (it would be borrowed twice and panic). A stress
/// test: whether a worker steals at that moment depends on timing.
#[test]
fn autocast_jobs_inside_rayon_with_large_casts_do_not_reenter_the_cache() {
    use rayon::prelude::*;

    #[amp::autocast]
    fn big(x: &Tensor<F32>, w: &Tensor<F32>) -> amp::Result<Tensor<F32>> {
        // A 2048×512 input: its cast runs as 64 rayon chunks.
        x.matmul(w)?.cast::<F32>().sum_dim(1, false)
    }

    let x = Tensor::<F32>::randn([2048, 512], 40);
    let w = Tensor::<F32>::randn([512, 4], 41);
    let expected = big(&x, &w).unwrap().to_vec();
    let outs: Vec<Vec<f32>> = (0..64)
        .into_par_iter()
        .map(|_| big(&x, &w).unwrap().to_vec())
        .collect();
    for out in outs {
        assert_eq!(out, expected);
    }
}
