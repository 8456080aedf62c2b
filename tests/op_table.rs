//! One op table: the macro's op list, the runtime's `ops::TABLE`, the op kinds
//! policies decide, and the free functions all name the same ops.

use amp::ops::{AutocastRule, OpClass, TABLE};

#[test]
fn macro_knows_exactly_the_runtime_ops() {
    let mut runtime: Vec<&str> = TABLE.iter().map(|op| op.name).collect();
    let mut macro_ops: Vec<&str> = amp::__MACRO_OP_NAMES.to_vec();
    runtime.sort_unstable();
    macro_ops.sort_unstable();
    assert_eq!(
        runtime, macro_ops,
        "amp-macros/src/ops.rs and amp::ops::TABLE disagree"
    );
}

#[test]
fn op_names_are_unique() {
    let mut names: Vec<&str> = TABLE.iter().map(|op| op.name).collect();
    names.sort_unstable();
    let before = names.len();
    names.dedup();
    assert_eq!(
        before,
        names.len(),
        "an op is listed twice in amp::ops::TABLE"
    );
}

#[test]
fn wide_only_ops_never_run_in_low_precision() {
    // A wide-only op must be cast to F32 (or refused), never lowered or kept:
    // otherwise `#[autocast]` would hand it a Tensor<F16> and not compile.
    for op in TABLE.iter().filter(|op| op.class == OpClass::WideOnly) {
        assert!(
            matches!(op.autocast, AutocastRule::Full | AutocastRule::Refused),
            "{} is wide-only but its autocast rule is {:?}",
            op.name,
            op.autocast
        );
    }
}
