//! Parsing `#[autocast(...)]` and `#[policy(...)]` arguments into plain data,
//! collecting every error (each spanned at the user's tokens).

use proc_macro2::{Span, TokenStream};
use quote::{ToTokens, quote};
use syn::parse::{Parse, ParseStream};
use syn::punctuated::Punctuated;
use syn::{Ident, Path, Token, parenthesized};

use crate::ops;

pub const AUTOCAST_FORMS: &str = "accepted forms: `#[autocast]`, `#[autocast(f16)]`, `#[autocast(bf16)]`, `#[autocast(f32)]` (off), `#[autocast(policy = path::MyPolicy)]`, plus `overrides(op = lower|f32|keep, ..)`, `custom(my_op = lower|f32|keep, ..)` and `crate = path::to::amp`";

/// Where an op's inputs go under an override.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    Lower,
    Full,
    Keep,
}

impl Class {
    pub fn tokens(self, krate: &TokenStream) -> TokenStream {
        match self {
            Class::Lower => quote!(#krate::autocast::Lower),
            Class::Full => quote!(#krate::autocast::Full),
            Class::Keep => quote!(#krate::autocast::Keep),
        }
    }
}

/// `name = class`.
pub struct Entry {
    pub name: Ident,
    pub class: Class,
}

/// The policy an `#[autocast]` function runs under.
pub enum PolicyChoice {
    Builtin(&'static str),
    Path(Path),
}

/// Everything `#[autocast(...)]` says.
pub struct Config {
    pub policy: PolicyChoice,
    pub krate: TokenStream,
    pub overrides: Vec<Entry>,
    pub custom: Vec<Entry>,
}

impl Config {
    pub fn policy_tokens(&self) -> TokenStream {
        let krate = &self.krate;
        match &self.policy {
            PolicyChoice::Builtin(name) => {
                let ident = Ident::new(name, Span::call_site());
                quote!(#krate::autocast::#ident)
            }
            PolicyChoice::Path(p) => p.to_token_stream(),
        }
    }
}

/// One raw argument, before validation.
enum RawArg {
    Flag(Ident),
    KeyPath(Ident, Path),
    List(Ident, Vec<(Ident, Ident)>),
}

impl Parse for RawArg {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let key: Ident = if input.peek(Token![crate]) {
            let t: Token![crate] = input.parse()?;
            Ident::new("crate", t.span)
        } else {
            input.parse().map_err(|e| {
                syn::Error::new(
                    e.span(),
                    format!("expected a policy or option; {AUTOCAST_FORMS}"),
                )
            })?
        };
        if input.peek(Token![=]) {
            let eq: Token![=] = input.parse()?;
            let path: Path = input.parse().map_err(|e| {
                let msg = format!("expected a path after `{key} =`");
                // Nothing after `=`: syn reports the end of the attribute (the
                // whole `#[..]`); point at `key =` instead.
                if input.is_empty() {
                    syn::Error::new_spanned(quote!(#key #eq), msg)
                } else {
                    syn::Error::new(e.span(), msg)
                }
            })?;
            return Ok(RawArg::KeyPath(key, path));
        }
        if input.peek(syn::token::Paren) {
            let content;
            parenthesized!(content in input);
            let entries: Punctuated<(Ident, Ident), Token![,]> =
                content.parse_terminated(parse_entry, Token![,])?;
            return Ok(RawArg::List(key, entries.into_iter().collect()));
        }
        Ok(RawArg::Flag(key))
    }
}

fn parse_entry(input: ParseStream) -> syn::Result<(Ident, Ident)> {
    let name: Ident = input.parse()?;
    input.parse::<Token![=]>().map_err(|e| {
        syn::Error::new(
            e.span(),
            format!("expected `{name} = lower`, `{name} = f32` or `{name} = keep`"),
        )
    })?;
    let class: Ident = input.parse()?;
    Ok((name, class))
}

/// Collects errors so the user sees all of them at once.
#[derive(Default)]
pub struct Errors(Option<syn::Error>);

impl Errors {
    pub fn push(&mut self, e: syn::Error) {
        match &mut self.0 {
            Some(all) => all.combine(e),
            None => self.0 = Some(e),
        }
    }

    pub fn finish(self) -> syn::Result<()> {
        self.0.map_or(Ok(()), Err)
    }
}

fn parse_class(class: &Ident, errors: &mut Errors) -> Option<Class> {
    match class.to_string().as_str() {
        "lower" => Some(Class::Lower),
        "f32" => Some(Class::Full),
        "keep" => Some(Class::Keep),
        other => {
            errors.push(syn::Error::new(
                class.span(),
                format!("unknown precision class `{other}`; use `lower` (the policy's low precision), `f32` or `keep` (no cast)"),
            ));
            None
        }
    }
}

/// Check `op = class` entries naming amp ops.
pub fn op_overrides(entries: Vec<(Ident, Ident)>, errors: &mut Errors) -> Vec<Entry> {
    let mut out: Vec<Entry> = Vec::new();
    for (name, class) in entries {
        let n = name.to_string();
        match ops::find(&n) {
            None => {
                let hint = ops::closest(&n)
                    .map(|c| format!("; did you mean `{c}`?"))
                    .unwrap_or_default();
                errors.push(syn::Error::new(
                    name.span(),
                    format!("unknown op `{n}` in overrides{hint} (the ops are listed in `amp::ops::TABLE`; name your own ops with `custom(..)`)"),
                ));
                continue;
            }
            Some(op) if op.shape != ops::Shape::PerInput => {
                errors.push(syn::Error::new(
                    name.span(),
                    format!("`{n}` promotes its inputs to the widest among them; its precision follows its inputs and cannot be overridden"),
                ));
                continue;
            }
            Some(_) => {}
        }
        if out.iter().any(|e| e.name == name) {
            errors.push(syn::Error::new(
                name.span(),
                format!("`{n}` is overridden twice"),
            ));
            continue;
        }
        if let Some(class) = parse_class(&class, errors) {
            out.push(Entry { name, class });
        }
    }
    out
}

/// Parse and validate `#[autocast(...)]`.
pub fn parse_autocast(args: TokenStream) -> syn::Result<Config> {
    let raw: Punctuated<RawArg, Token![,]> =
        syn::parse::Parser::parse2(Punctuated::parse_terminated, args)?;
    let mut errors = Errors::default();
    let mut policy: Option<(Span, PolicyChoice)> = None;
    let mut krate: Option<Path> = None;
    let mut overrides = None;
    let mut custom = None;
    let mut set_policy = |span: Span, choice: PolicyChoice, errors: &mut Errors| {
        if policy.is_some() {
            errors.push(syn::Error::new(
                span,
                "the policy is given twice; keep one of `f16`, `bf16`, `f32` or `policy = ..`",
            ));
        } else {
            policy = Some((span, choice));
        }
    };
    for arg in raw {
        match arg {
            RawArg::Flag(k) => match k.to_string().as_str() {
                "f16" => set_policy(k.span(), PolicyChoice::Builtin("F16Policy"), &mut errors),
                "bf16" => set_policy(k.span(), PolicyChoice::Builtin("BF16Policy"), &mut errors),
                "f32" => set_policy(k.span(), PolicyChoice::Builtin("F32Policy"), &mut errors),
                "policy" | "crate" => errors.push(syn::Error::new(
                    k.span(),
                    format!(
                        "`{k}` needs a path: `{k} = {}`",
                        if k == "policy" {
                            "path::MyPolicy"
                        } else {
                            "path::to::amp"
                        }
                    ),
                )),
                "overrides" | "custom" => errors.push(syn::Error::new(
                    k.span(),
                    format!(
                        "`{k}` needs a list: `{k}({} = lower|f32|keep, ..)`",
                        if k == "overrides" { "op" } else { "my_op" }
                    ),
                )),
                other => {
                    let hint = match other {
                        "fp16" | "half" | "F16" | "float16" => " (did you mean `f16`?)",
                        "BF16" | "bfloat16" => " (did you mean `bf16`?)",
                        "F32" | "float32" | "fp32" | "off" => " (did you mean `f32`?)",
                        _ => "",
                    };
                    errors.push(syn::Error::new(
                        k.span(),
                        format!("unknown autocast policy `{other}`{hint}; {AUTOCAST_FORMS}"),
                    ));
                }
            },
            RawArg::KeyPath(k, path) => match k.to_string().as_str() {
                "policy" => set_policy(k.span(), PolicyChoice::Path(path), &mut errors),
                "crate" if krate.is_none() => krate = Some(path),
                "crate" => errors.push(syn::Error::new(k.span(), "`crate` is given twice")),
                other => errors.push(syn::Error::new(
                    k.span(),
                    format!("unknown option `{other} = ..`; {AUTOCAST_FORMS}"),
                )),
            },
            RawArg::List(k, entries) => match k.to_string().as_str() {
                "overrides" if overrides.is_none() => {
                    overrides = Some(op_overrides(entries, &mut errors))
                }
                "custom" if custom.is_none() => {
                    let mut list: Vec<Entry> = Vec::new();
                    for (name, class) in entries {
                        if ops::find(&name.to_string()).is_some() {
                            errors.push(syn::Error::new(
                                name.span(),
                                format!("`{name}` is an amp op; change its precision with `overrides({name} = ..)` instead of `custom`"),
                            ));
                        } else if list.iter().any(|e| e.name == name) {
                            errors.push(syn::Error::new(
                                name.span(),
                                format!("`{name}` is named twice"),
                            ));
                        } else if let Some(class) = parse_class(&class, &mut errors) {
                            list.push(Entry { name, class });
                        }
                    }
                    custom = Some(list);
                }
                "overrides" | "custom" => errors.push(syn::Error::new(
                    k.span(),
                    format!("`{k}(..)` is given twice"),
                )),
                other => errors.push(syn::Error::new(
                    k.span(),
                    format!("unknown option `{other}(..)`; {AUTOCAST_FORMS}"),
                )),
            },
        }
    }
    errors.finish()?;
    Ok(Config {
        policy: policy.map_or(PolicyChoice::Builtin("F16Policy"), |(_, p)| p),
        krate: krate.map_or_else(|| quote!(::amp), |p| p.to_token_stream()),
        overrides: overrides.unwrap_or_default(),
        custom: custom.unwrap_or_default(),
    })
}

pub const POLICY_FORMS: &str = "accepted form: `#[amp::policy(low = f16|bf16|f32, overrides(op = lower|f32|keep, ..))]` on a unit struct, with an optional `crate = path::to::amp`";

/// Everything `#[policy(...)]` says.
pub struct PolicyConfig {
    pub low: &'static str,
    pub krate: TokenStream,
    pub overrides: Vec<Entry>,
}

/// Parse and validate `#[policy(...)]`.
pub fn parse_policy(args: TokenStream) -> syn::Result<PolicyConfig> {
    let raw: Punctuated<RawArg, Token![,]> =
        syn::parse::Parser::parse2(Punctuated::parse_terminated, args.clone())?;
    let mut errors = Errors::default();
    let mut low = None;
    // Whether `low = ..` was written at all (even with an invalid value), so
    // a bad value is not reported a second time as missing.
    let mut low_given = false;
    let mut krate = None;
    let mut overrides = None;
    for arg in raw {
        match arg {
            RawArg::KeyPath(k, _) if k == "low" && low_given => {
                errors.push(syn::Error::new(k.span(), "`low` is given twice"))
            }
            RawArg::KeyPath(k, path) if k == "low" => {
                low_given = true;
                let name = path.get_ident().map(|i| i.to_string()).unwrap_or_default();
                match name.as_str() {
                    "f16" | "F16" => low = Some("F16"),
                    "bf16" | "BF16" => low = Some("BF16"),
                    "f32" | "F32" => low = Some("F32"),
                    _ => errors.push(syn::Error::new_spanned(
                        &path,
                        "the low precision is `f16`, `bf16` or `f32`",
                    )),
                }
            }
            RawArg::Flag(k) if k == "low" => {
                low_given = true;
                errors.push(syn::Error::new(
                    k.span(),
                    "`low` needs a precision: `low = f16`, `low = bf16` or `low = f32`",
                ))
            }
            RawArg::KeyPath(k, _) if k == "crate" && krate.is_some() => {
                errors.push(syn::Error::new(k.span(), "`crate` is given twice"))
            }
            RawArg::KeyPath(k, path) if k == "crate" => krate = Some(path),
            RawArg::List(k, _) if k == "overrides" && overrides.is_some() => {
                errors.push(syn::Error::new(k.span(), "`overrides(..)` is given twice"))
            }
            RawArg::List(k, entries) if k == "overrides" => {
                overrides = Some(op_overrides(entries, &mut errors))
            }
            RawArg::Flag(k) | RawArg::KeyPath(k, _) | RawArg::List(k, _) => errors.push(
                syn::Error::new(k.span(), format!("unexpected `{k}`; {POLICY_FORMS}")),
            ),
        }
    }
    if !low_given {
        errors.push(syn::Error::new_spanned(
            args,
            format!("missing `low = ..`; {POLICY_FORMS}"),
        ));
    }
    errors.finish()?;
    Ok(PolicyConfig {
        low: low.unwrap_or("F16"),
        krate: krate.map_or_else(|| quote!(::amp), |p| p.to_token_stream()),
        overrides: overrides.unwrap_or_default(),
    })
}
