//! Compile-time precision rules, checked through the compiler's own output.
//!
//! `tests/ui/fail/*.rs` each make one numerically unsafe mistake and must fail
//! to compile with amp's diagnostic (the `.stderr` snapshots next to them);
//! `tests/ui/pass/*.rs` show the legal forms and must compile and run.
//!
//! Regenerate the snapshots after a deliberate wording change with
//! `TRYBUILD=overwrite cargo test --test ui`, then review every `.stderr`.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/fail/*.rs");
    t.pass("tests/ui/pass/*.rs");
}
