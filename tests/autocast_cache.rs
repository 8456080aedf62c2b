//! The weight-cast cache: one cast per F32 tensor per region, dropped when the
//! outermost region exits, never stale.

use amp::autocast::cast_counts;
use amp::{F32, Tensor, autocast};

#[autocast]
fn layer(x: &Tensor<F32>, w: &Tensor<F32>) -> amp::Result<Tensor<F32>> {
    x.matmul(w)?.cast::<F32>().reshape_infer(&[-1])
}

#[autocast]
fn three_layers(x: &Tensor<F32>, w: &Tensor<F32>) -> amp::Result<Tensor<F32>> {
    // `layer` is a nested region: it shares this region's cache.
    let a = layer(x, w)?;
    let b = layer(x, w)?;
    let c = x.matmul(w)?;
    let c = c.cast::<F32>().reshape_infer(&[-1])?;
    Tensor::cat(&[&a, &b, &c], 0)
}

#[test]
fn a_weight_is_cast_once_per_region() {
    let x = Tensor::<F32>::randn([4, 8], 1);
    let w = Tensor::<F32>::randn([8, 3], 2);
    let before = cast_counts();
    three_layers(&x, &w).unwrap();
    let after = cast_counts();
    // x and w are cast once each; the two later uses of each are cache hits.
    assert_eq!(after.cache_hits - before.cache_hits, 4);
}

#[test]
fn the_cache_is_dropped_when_the_outermost_region_exits() {
    let x = Tensor::<F32>::randn([4, 8], 3);
    let w = Tensor::<F32>::randn([8, 3], 4);
    let c0 = cast_counts();
    layer(&x, &w).unwrap();
    let c1 = cast_counts();
    layer(&x, &w).unwrap();
    let c2 = cast_counts();
    assert_eq!(c1.cache_hits, c0.cache_hits, "a fresh region starts empty");
    assert_eq!(
        c2.cache_hits, c1.cache_hits,
        "the first region's casts are gone"
    );
    assert_eq!(c2.casts - c1.casts, c1.casts - c0.casts);
}

#[autocast]
fn fresh_weights_each_time(x: &Tensor<F32>, seeds: &[u64]) -> amp::Result<Vec<Vec<f32>>> {
    let mut outs = Vec::new();
    for &seed in seeds {
        // Each weight is dropped before the next is made, so the allocator may
        // hand out the same address: the cache must not serve the old cast.
        let w = Tensor::<F32>::randn([8, 3], seed);
        outs.push(x.matmul(&w)?.to_f32_vec());
    }
    Ok(outs)
}

#[test]
fn a_dropped_tensor_never_serves_a_stale_cast() {
    let x = Tensor::<F32>::randn([4, 8], 5);
    let seeds = [10, 11, 12, 13, 14, 15];
    let got = fresh_weights_each_time(&x, &seeds).unwrap();
    for (seed, out) in seeds.iter().zip(&got) {
        let w = Tensor::<F32>::randn([8, 3], *seed);
        let expected = x
            .cast::<amp::F16>()
            .matmul(&w.cast::<amp::F16>())
            .unwrap()
            .to_f32_vec();
        assert_eq!(out, &expected, "seed {seed}");
    }
}

#[test]
fn casts_outside_any_region_are_not_cached() {
    let w = Tensor::<F32>::randn([8, 3], 6);
    let before = cast_counts();
    let a = w.cast::<amp::F16>();
    let b = w.cast::<amp::F16>();
    assert!(!a.shares_storage_with(&b), "plain casts make new tensors");
    assert_eq!(cast_counts().cache_hits, before.cache_hits);
}
