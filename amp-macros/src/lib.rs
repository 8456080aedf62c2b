//! Procedural macros of amp: `#[autocast]` and `#[policy]`. Use them through
//! the facade crate (`amp::autocast`, `amp::policy`), whose docs describe them.
//!
//! Passes, as in dtolnay's macro crates: `attr` parses arguments into plain
//! data and validates them (collecting every error), `expand` generates code.
//! On an error the original item is emitted beside `compile_error!`, so the user
//! sees one error instead of a cascade.

mod attr;
mod expand;
mod ops;

use proc_macro::TokenStream;
use proc_macro2::TokenStream as TokenStream2;
use quote::quote;

/// See `amp::autocast`.
#[proc_macro_attribute]
pub fn autocast(args: TokenStream, item: TokenStream) -> TokenStream {
    autocast_impl(args.into(), item.into()).into()
}

/// See `amp::policy`.
#[proc_macro_attribute]
pub fn policy(args: TokenStream, item: TokenStream) -> TokenStream {
    policy_impl(args.into(), item.into()).into()
}

/// The op names the macro knows, for the test that checks them against
/// `amp::ops::TABLE`.
#[doc(hidden)]
#[proc_macro]
pub fn __op_names(_: TokenStream) -> TokenStream {
    let names = ops::OPS.iter().map(|op| op.name);
    quote!(&[#(#names),*]).into()
}

fn autocast_impl(args: TokenStream2, item: TokenStream2) -> TokenStream2 {
    let func = match syn::parse2::<syn::ItemFn>(item.clone()) {
        Ok(f) => f,
        Err(_) => {
            let msg = match syn::parse2::<syn::TraitItemFn>(item.clone()) {
                Ok(f) if f.default.is_none() => {
                    "#[autocast] needs a function body to rewrite: put it on the implementations of this trait method (or give the method a default body)"
                }
                _ => {
                    "#[autocast] applies to a function with a body (a free fn, a method, or a trait impl method)"
                }
            };
            let err = syn::Error::new_spanned(first_tokens(&item), msg);
            return with_fallback(err, item);
        }
    };
    let mut errors = attr::Errors::default();
    if let Some(c) = &func.sig.constness {
        errors.push(syn::Error::new_spanned(
            c,
            "#[autocast] cannot apply to a `const fn`: tensor ops run at run time",
        ));
    }
    let cfg = match attr::parse_autocast(args) {
        Ok(cfg) => Some(cfg),
        Err(e) => {
            errors.push(e);
            None
        }
    };
    match (errors.finish(), cfg) {
        (Ok(()), Some(cfg)) => expand::autocast(&cfg, func),
        (Err(e), _) => with_fallback(e, item),
        (Ok(()), None) => item,
    }
}

fn policy_impl(args: TokenStream2, item: TokenStream2) -> TokenStream2 {
    let strukt = match syn::parse2::<syn::ItemStruct>(item.clone()) {
        Ok(s) if matches!(s.fields, syn::Fields::Unit) && s.generics.params.is_empty() => s,
        _ => {
            let err = syn::Error::new_spanned(
                first_tokens(&item),
                "#[amp::policy] applies to a unit struct without generics: `pub struct MyPolicy;`",
            );
            return with_fallback(err, item);
        }
    };
    match attr::parse_policy(args) {
        Ok(cfg) => expand::policy(&cfg, &strukt),
        Err(e) => with_fallback(e, item),
    }
}

/// The item's first tokens (for spanning an error at what the user wrote).
fn first_tokens(item: &TokenStream2) -> TokenStream2 {
    item.clone().into_iter().take(3).collect()
}

fn with_fallback(err: syn::Error, item: TokenStream2) -> TokenStream2 {
    let err = err.to_compile_error();
    quote!(#err #item)
}

#[cfg(test)]
mod snapshots {
    //! Expansion snapshots: the code `#[autocast]` generates for a few
    //! representative functions, reviewed and pinned in `tests/snapshots/`.
    //! Regenerate with `AMP_SNAPSHOTS=overwrite cargo test -p amp-macros`, then
    //! review the diff.

    use quote::quote;

    fn check(name: &str, attr: proc_macro2::TokenStream, item: proc_macro2::TokenStream) {
        let out = super::autocast_impl(attr, item);
        let file: syn::File = syn::parse2(out).expect("the expansion parses as Rust");
        let pretty = prettyplease::unparse(&file);
        let path = format!("{}/tests/snapshots/{name}.rs", env!("CARGO_MANIFEST_DIR"));
        if std::env::var("AMP_SNAPSHOTS").as_deref() == Ok("overwrite") {
            std::fs::write(&path, &pretty).unwrap();
        }
        let pinned = std::fs::read_to_string(&path).unwrap_or_else(|_| {
            panic!("missing snapshot {path}; run with AMP_SNAPSHOTS=overwrite")
        });
        assert_eq!(
            pretty, pinned,
            "expansion of `{name}` changed; review and regenerate {path}"
        );
    }

    #[test]
    fn method_and_operator_forms() {
        check(
            "mlp_forward",
            quote!(),
            quote! {
                fn forward(x: &Tensor<F32>, w1: &Tensor<F32>, b1: &Tensor<F32>, w2: &Tensor<F32>) -> amp::Result<Tensor<F32>> {
                    let h = x.linear(w1, Some(b1))?.gelu();
                    let y = h.matmul(&w2.t()?)?;
                    let z = (&y + &y)? * 0.5;
                    z.log_softmax(-1)
                }
            },
        );
    }

    #[test]
    fn path_forms_overrides_and_promotion_lists() {
        check(
            "path_forms",
            quote!(bf16, overrides(gelu = f32)),
            quote! {
                fn mix(a: &Tensor<F16>, b: &Tensor<F32>) -> amp::Result<Tensor<F32>> {
                    let c = Tensor::cat(&[a, b], 0)?;
                    let g = amp::ops::gelu(&c);
                    amp::ops::softmax(&g, -1)
                }
            },
        );
    }

    #[test]
    fn non_tensor_code_passes_through() {
        check(
            "non_tensor",
            quote!(f32),
            quote! {
                fn count(v: &[f32]) -> f32 {
                    let n = v.len() as f32;
                    v.iter().sum::<f32>() / n + helper(n) * 2.0
                }
            },
        );
    }
}
