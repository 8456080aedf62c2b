//! Procedural macros of amp. `#[autocast]` arrives with the autocast issue; the
//! crate exists now so the workspace has its final shape.
