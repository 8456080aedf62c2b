// Attention with F16 queries and F32 keys/values.
use amp::{AttentionOptions, F16, F32, Tensor};

fn main() {
    let q = Tensor::<F16>::ones([2, 5, 8]);
    let k = Tensor::<F32>::ones([2, 5, 8]);
    let v = Tensor::<F32>::ones([2, 5, 8]);
    let _y = q.scaled_dot_product_attention(&k, &v, AttentionOptions::default());
}
