//! Generating code: the `#[autocast]` body rewrite and `#[policy]` impls.
//!
//! Every rewritten call asks the policy *type* for the precision, through
//! helpers in `::amp::__private`; the macro itself never knows a type. See the
//! runtime's `autocast::private` for how non-tensor values pass through.

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::visit_mut::{self, VisitMut};
use syn::{BinOp, Expr, ExprCall, ExprMethodCall, Ident, ItemFn, Lit};

use crate::attr::{Class, Config, PolicyConfig};
use crate::ops::{self, Arg, Shape};

/// Rewrite an `#[autocast]` function.
pub fn autocast(cfg: &Config, mut item: ItemFn) -> TokenStream {
    let krate = &cfg.krate;
    let mut rewriter = Rewriter {
        cfg,
        policy: cfg.policy_tokens(),
    };
    rewriter.visit_block_mut(&mut item.block);
    let stmts = &item.block.stmts;
    let attrs = &item.attrs;
    let vis = &item.vis;
    let sig = &item.sig;
    quote! {
        #(#attrs)*
        #vis #sig {
            #[allow(unused_imports)]
            use #krate::__private::traits::*;
            let __amp_region = #krate::__private::Region::enter();
            #(#stmts)*
        }
    }
}

struct Rewriter<'a> {
    cfg: &'a Config,
    policy: TokenStream,
}

/// What a call site is: a known op, or a user op named in `custom(..)`.
enum Target {
    Known(&'static ops::Op),
    Custom(Class),
}

impl Rewriter<'_> {
    fn target(&self, name: &Ident) -> Option<Target> {
        if let Some(c) = self.cfg.custom.iter().find(|c| c.name == *name) {
            return Some(Target::Custom(c.class));
        }
        ops::find(&name.to_string()).map(Target::Known)
    }

    /// The cast class of a known op: a per-function override, else the policy's.
    fn class(&self, op: &ops::Op, span: Span) -> TokenStream {
        let krate = &self.cfg.krate;
        if let Some(o) = self.cfg.overrides.iter().find(|o| o.name == op.name) {
            return o.class.tokens(krate);
        }
        let policy = &self.policy;
        let kind = Ident::new(op.name, span);
        quote_spanned!(span=> <#policy as #krate::autocast::Decide<#krate::ops::kind::#kind>>::Class)
    }

    /// The call site as a constant, plus the policy's name (not part of the
    /// constant: a generic policy parameter cannot appear in a `const`).
    fn site(&self, name: &str, span: Span) -> TokenStream {
        let krate = &self.cfg.krate;
        let policy = &self.policy;
        let tensor_out = name != "argmax";
        quote_spanned! {span=> {
            const __AMP_SITE: #krate::__private::Site = #krate::__private::Site::new(
                #name,
                #tensor_out,
                ::core::file!(),
                ::core::line!(),
                ::core::column!(),
            );
            &__AMP_SITE
        }, <#policy as #krate::autocast::Policy>::NAME}
    }

    fn hold(&self, value: TokenStream, class: &TokenStream, span: Span) -> TokenStream {
        let krate = &self.cfg.krate;
        let policy = &self.policy;
        quote_spanned!(span=> (&&#krate::__private::Arg::new(#value)).__amp_hold::<#policy, #class>())
    }

    /// Hold a receiver. One the macro borrowed (a place) goes through
    /// `__amp_recv`, which also hands back `Copy` values by value, so
    /// non-tensor calls keep their meaning (`n.clamp(0, 3)` on an `i32`).
    fn hold_receiver(
        &self,
        (value, borrowed): (TokenStream, bool),
        class: &TokenStream,
        span: Span,
    ) -> TokenStream {
        if !borrowed {
            return self.hold(value, class, span);
        }
        let krate = &self.cfg.krate;
        let policy = &self.policy;
        quote_spanned!(span=> (&&&#krate::__private::Arg::new(#value)).__amp_recv::<#policy, #class>())
    }

    /// `match (begin, inputs..) { (frame, bindings..) => { call; finish } }`.
    /// The result passes through a plain `let`, so inference still flows from
    /// the surrounding code into the call (`let n: f32 = it.sum();`).
    fn wrap(
        &self,
        name: &str,
        span: Span,
        inputs: Vec<TokenStream>,
        bindings: Vec<Ident>,
        call: TokenStream,
    ) -> TokenStream {
        let krate = &self.cfg.krate;
        let site = self.site(name, span);
        quote_spanned! {span=>
            match (#krate::__private::begin(), #(#inputs,)*) {
                (__amp_frame, #(#bindings,)*) => {
                    let __amp_out = #call;
                    __amp_frame.finish(#site);
                    __amp_out
                }
            }
        }
    }

    /// Rewrite `receiver.op(args)`, or `None` to leave it as written.
    fn method_call(&self, mc: &ExprMethodCall) -> Option<TokenStream> {
        let target = self.target(&mc.method)?;
        let span = mc.method.span();
        let name = mc.method.to_string();
        let method = &mc.method;
        let turbofish = &mc.turbofish;
        let receiver = receiver_tokens(&mc.receiver);
        let args: Vec<&Expr> = mc.args.iter().map(unparen).collect();
        match target {
            Target::Custom(class) => {
                let class = class.tokens(&self.cfg.krate);
                let mut inputs = vec![self.hold_receiver(receiver, &class, span)];
                inputs.extend(args.iter().map(|a| self.hold(quote!(#a), &class, span)));
                let (recv, binds) = bindings(args.len(), span);
                let call = quote_spanned!(span=> #recv.get().#method #turbofish(#(#binds.get()),*));
                Some(self.wrap(
                    &name,
                    span,
                    inputs,
                    std::iter::once(recv).chain(binds).collect(),
                    call,
                ))
            }
            Target::Known(op) => {
                if args.len() != op.args.len() {
                    return None; // another method that shares the name
                }
                match op.shape {
                    Shape::PerInput => {
                        let class = self.class(op, span);
                        Some(self.per_input(op, &name, span, receiver, &args, &class, |recv, rest| {
                            quote_spanned!(span=> #recv.#method #turbofish(#(#rest),*))
                        }))
                    }
                    Shape::Promote => {
                        Some(self.promote_pair(op, span, receiver.0, quote!(#(#args)*)))
                    }
                    Shape::PromoteList | Shape::PromoteWhere => None,
                }
            }
        }
    }

    /// Rewrite `path::op(args)` (path form), or `None` to leave it.
    fn path_call(&self, call: &ExprCall) -> Option<TokenStream> {
        let Expr::Path(func) = &*call.func else {
            return None;
        };
        let segments: Vec<_> = func.path.segments.iter().collect();
        let last = segments.last()?;
        let target = self.target(&last.ident)?;
        let span = last.ident.span();
        let name = last.ident.to_string();
        let path = &func.path;
        let args: Vec<&Expr> = call.args.iter().map(unparen).collect();
        match target {
            Target::Custom(class) => {
                let class = class.tokens(&self.cfg.krate);
                let inputs = args
                    .iter()
                    .map(|a| self.hold(quote!(#a), &class, span))
                    .collect();
                let (_, binds) = bindings(args.len(), span);
                let call = quote_spanned!(span=> #path(#(#binds.get()),*));
                Some(self.wrap(&name, span, inputs, binds, call))
            }
            Target::Known(op) => {
                // Only `ops::op(..)` and `Tensor::op(..)`: a bare `softmax(..)`
                // may be the user's own function.
                let parent = segments.iter().rev().nth(1)?.ident.to_string();
                if parent != "ops" && parent != "Tensor" {
                    return None;
                }
                match op.shape {
                    Shape::PerInput => {
                        let (first, rest) = args.split_first()?;
                        if rest.len() != op.args.len() {
                            return None;
                        }
                        let class = self.class(op, span);
                        Some(self.per_input(
                            op,
                            &name,
                            span,
                            (quote!(#first), false),
                            rest,
                            &class,
                            |recv, rest| quote_spanned!(span=> #path(#recv, #(#rest),*)),
                        ))
                    }
                    Shape::Promote => {
                        let [a, b] = args.as_slice() else { return None };
                        let method = Ident::new(op.name, span);
                        let inputs = vec![quote!(#a), quote!(#b)];
                        let binds = vec![format_ident!("__amp_a"), format_ident!("__amp_b")];
                        let krate = &self.cfg.krate;
                        let call = quote_spanned! {span=> {
                            let __amp_p = #krate::__private::Promoter::new().with(__amp_a).with(__amp_b);
                            __amp_p.cast(__amp_a).#method(&__amp_p.cast(__amp_b))
                        }};
                        Some(self.wrap(&name, span, inputs, binds, call))
                    }
                    Shape::PromoteWhere => {
                        let [c, a, b] = args.as_slice() else {
                            return None;
                        };
                        let krate = &self.cfg.krate;
                        let inputs = vec![quote!(#c), quote!(#a), quote!(#b)];
                        let binds = vec![
                            format_ident!("__amp_c"),
                            format_ident!("__amp_a"),
                            format_ident!("__amp_b"),
                        ];
                        let call = quote_spanned! {span=> {
                            let __amp_p = #krate::__private::Promoter::new().with(__amp_a).with(__amp_b);
                            #path(__amp_c, &__amp_p.cast(__amp_a), &__amp_p.cast(__amp_b))
                        }};
                        Some(self.wrap(&name, span, inputs, binds, call))
                    }
                    Shape::PromoteList => {
                        let [list, rest @ ..] = args.as_slice() else {
                            return None;
                        };
                        let Expr::Reference(r) = list else {
                            return None;
                        };
                        let Expr::Array(arr) = &*r.expr else {
                            return None;
                        };
                        let krate = &self.cfg.krate;
                        let elems: Vec<&Expr> = arr.elems.iter().map(unparen).collect();
                        let elem_binds: Vec<Ident> = (0..elems.len())
                            .map(|i| format_ident!("__amp_e{i}"))
                            .collect();
                        let rest_binds: Vec<Ident> = (0..rest.len())
                            .map(|i| format_ident!("__amp_r{i}"))
                            .collect();
                        let mut inputs: Vec<TokenStream> =
                            elems.iter().map(|e| quote!(#e)).collect();
                        inputs.extend(rest.iter().map(|e| quote!(#e)));
                        let call = quote_spanned! {span=> {
                            let __amp_p = #krate::__private::Promoter::new() #(.with(#elem_binds))*;
                            #path(&[#(&__amp_p.cast(#elem_binds)),*], #(#rest_binds),*)
                        }};
                        let all = elem_binds.iter().chain(&rest_binds).cloned().collect();
                        Some(self.wrap(&name, span, inputs, all, call))
                    }
                }
            }
        }
    }

    /// A per-input op: the receiver and every tensor argument held (cast),
    /// other arguments evaluated in order and passed as they are.
    #[allow(clippy::too_many_arguments)]
    fn per_input(
        &self,
        op: &ops::Op,
        name: &str,
        span: Span,
        receiver: (TokenStream, bool),
        args: &[&Expr],
        class: &TokenStream,
        call: impl FnOnce(TokenStream, Vec<TokenStream>) -> TokenStream,
    ) -> TokenStream {
        let mut inputs = vec![self.hold_receiver(receiver, class, span)];
        let (recv, binds) = bindings(args.len(), span);
        let mut uses = Vec::new();
        for ((arg, kind), bind) in args.iter().zip(op.args).zip(&binds) {
            let literal_none = matches!(arg, Expr::Path(p) if p.path.is_ident("None"));
            match kind {
                Arg::T | Arg::Opt if !literal_none => {
                    inputs.push(self.hold(quote!(#arg), class, span));
                    uses.push(quote_spanned!(span=> #bind.get()));
                }
                _ => {
                    inputs.push(quote!(#arg));
                    uses.push(quote_spanned!(span=> #bind));
                }
            }
        }
        let call = call(quote_spanned!(span=> #recv.get()), uses);
        self.wrap(
            name,
            span,
            inputs,
            std::iter::once(recv).chain(binds).collect(),
            call,
        )
    }

    /// `a.add(&b)` / `a + b`: both operands promoted together (autoref
    /// specialization falls back to the plain operator for non-tensors).
    fn promote_pair(
        &self,
        op: &ops::Op,
        span: Span,
        lhs: TokenStream,
        rhs: TokenStream,
    ) -> TokenStream {
        let krate = &self.cfg.krate;
        let method = format_ident!("__amp_{}", op.name, span = span);
        let site = self.site(op.name, span);
        match op.name {
            "add" | "sub" | "mul" | "div" => quote_spanned! {span=>
                match (#krate::__private::BinArg::new(#lhs, #rhs), #krate::__private::begin()) {
                    (__amp_b, __amp_frame) => {
                        let __amp_out = (&&__amp_b).#method();
                        __amp_frame.finish(#site);
                        __amp_out
                    }
                }
            },
            _ => {
                let m = Ident::new(op.name, span);
                let call = quote_spanned! {span=> {
                    let __amp_p = #krate::__private::Promoter::new().with(__amp_a).with(__amp_b);
                    __amp_p.cast(__amp_a).#m(&__amp_p.cast(__amp_b))
                }};
                let inputs = vec![quote!(&(#lhs)), rhs];
                self.wrap(
                    op.name,
                    span,
                    inputs,
                    vec![format_ident!("__amp_a"), format_ident!("__amp_b")],
                    call,
                )
            }
        }
    }

    fn binary(&self, b: &syn::ExprBinary) -> Option<TokenStream> {
        let name = match b.op {
            BinOp::Add(_) => "add",
            BinOp::Sub(_) => "sub",
            BinOp::Mul(_) => "mul",
            BinOp::Div(_) => "div",
            _ => return None,
        };
        // A literal is never a tensor: `x * 0.5` keeps its plain meaning.
        if is_literal(&b.left) || is_literal(&b.right) {
            return None;
        }
        let op = ops::find(name)?;
        let (l, r) = (unparen(&b.left), unparen(&b.right));
        Some(self.promote_pair(op, b.op.span(), quote!(#l), quote!(#r)))
    }
}

/// The names the rewritten call binds its inputs to, spanned at the op's name
/// so a bound the op's signature puts on an input is reported there.
fn bindings(n: usize, span: Span) -> (Ident, Vec<Ident>) {
    (
        format_ident!("__amp_recv", span = span),
        (0..n)
            .map(|i| format_ident!("__amp_a{i}", span = span))
            .collect(),
    )
}

/// A place (`x`, `self.w`, `v[i]`) is borrowed, so using it as a receiver never
/// moves it; any other receiver is a temporary and is passed by value.
fn receiver_tokens(e: &Expr) -> (TokenStream, bool) {
    let e = unparen(e);
    if is_place(e) {
        (quote!(&#e), true)
    } else {
        (quote!(#e), false)
    }
}

/// `(e)` as `e`: user expressions become arguments of the generated calls,
/// where their parentheses would draw `unused_parens` warnings pointing at
/// the user's code.
fn unparen(e: &Expr) -> &Expr {
    match e {
        Expr::Paren(p) => unparen(&p.expr),
        _ => e,
    }
}

fn is_place(e: &Expr) -> bool {
    match e {
        Expr::Path(_) | Expr::Field(_) | Expr::Index(_) => true,
        Expr::Unary(u) if matches!(u.op, syn::UnOp::Deref(_)) => true,
        Expr::Paren(p) => is_place(&p.expr),
        _ => false,
    }
}

fn is_literal(e: &Expr) -> bool {
    match e {
        Expr::Lit(l) => matches!(l.lit, Lit::Int(_) | Lit::Float(_)),
        Expr::Unary(u) => is_literal(&u.expr),
        Expr::Paren(p) => is_literal(&p.expr),
        _ => false,
    }
}

impl VisitMut for Rewriter<'_> {
    fn visit_expr_mut(&mut self, e: &mut Expr) {
        visit_mut::visit_expr_mut(self, e);
        let rewritten = match e {
            Expr::MethodCall(mc) => self.method_call(mc),
            Expr::Call(c) => self.path_call(c),
            Expr::Binary(b) => self.binary(b),
            _ => None,
        };
        if let Some(tokens) = rewritten {
            *e = Expr::Verbatim(tokens);
        }
    }

    // Nested items are functions of their own (with their own `#[autocast]`,
    // if any); macro bodies are left exactly as written.
    fn visit_item_mut(&mut self, _: &mut syn::Item) {}
    fn visit_macro_mut(&mut self, _: &mut syn::Macro) {}
}

/// The impls behind `#[policy(...)] struct Name;`.
pub fn policy(cfg: &PolicyConfig, item: &syn::ItemStruct) -> TokenStream {
    let krate = &cfg.krate;
    let name = &item.ident;
    let low = Ident::new(cfg.low, Span::call_site());
    let label = name.to_string();
    let impls = ops::OPS.iter().map(|op| {
        let kind = Ident::new(op.name, Span::call_site());
        let class = match cfg.overrides.iter().find(|o| o.name == op.name) {
            Some(o) => o.class.tokens(krate),
            None => quote!(<#krate::ops::kind::#kind as #krate::autocast::OpKind>::Rule),
        };
        quote! {
            impl #krate::autocast::Decide<#krate::ops::kind::#kind> for #name {
                type Class = #class;
            }
        }
    });
    quote! {
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
        #item
        impl #krate::autocast::Policy for #name {
            type Low = #krate::#low;
            const NAME: &'static str = #label;
        }
        #(#impls)*
    }
}
