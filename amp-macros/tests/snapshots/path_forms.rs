fn mix(a: &Tensor<F16>, b: &Tensor<F32>) -> amp::Result<Tensor<F32>> {
    #[allow(unused_imports)]
    use ::amp::__private::traits::*;
    let __amp_region = ::amp::__private::Region::enter();
    let c = match (::amp::__private::begin(), a, b, 0) {
        (__amp_frame, __amp_e0, __amp_e1, __amp_r0) => {
            let __amp_out = {
                let __amp_p = ::amp::__private::Promoter::new()
                    .with(__amp_e0)
                    .with(__amp_e1);
                Tensor::cat(
                    &[&__amp_p.cast(__amp_e0), &__amp_p.cast(__amp_e1)],
                    __amp_r0,
                )
            };
            __amp_frame
                .finish(
                    {
                        const __AMP_SITE: ::amp::__private::Site = ::amp::__private::Site::new(
                            "cat",
                            true,
                            ::core::file!(),
                            ::core::line!(),
                            ::core::column!(),
                        );
                        &__AMP_SITE
                    },
                    <::amp::autocast::BF16Policy as ::amp::autocast::Policy>::NAME,
                );
            __amp_out
        }
    }?;
    let g = match (
        ::amp::__private::begin(),
        (&&::amp::__private::Arg::new(&c))
            .__amp_hold::<::amp::autocast::BF16Policy, ::amp::autocast::Full>(),
    ) {
        (__amp_frame, __amp_recv) => {
            let __amp_out = amp::ops::gelu(__amp_recv.get());
            __amp_frame
                .finish(
                    {
                        const __AMP_SITE: ::amp::__private::Site = ::amp::__private::Site::new(
                            "gelu",
                            true,
                            ::core::file!(),
                            ::core::line!(),
                            ::core::column!(),
                        );
                        &__AMP_SITE
                    },
                    <::amp::autocast::BF16Policy as ::amp::autocast::Policy>::NAME,
                );
            __amp_out
        }
    };
    match (
        ::amp::__private::begin(),
        (&&::amp::__private::Arg::new(&g))
            .__amp_hold::<
                ::amp::autocast::BF16Policy,
                <::amp::autocast::BF16Policy as ::amp::autocast::Decide<
                    ::amp::ops::kind::softmax,
                >>::Class,
            >(),
        -1,
    ) {
        (__amp_frame, __amp_recv, __amp_a0) => {
            let __amp_out = amp::ops::softmax(__amp_recv.get(), __amp_a0);
            __amp_frame
                .finish(
                    {
                        const __AMP_SITE: ::amp::__private::Site = ::amp::__private::Site::new(
                            "softmax",
                            true,
                            ::core::file!(),
                            ::core::line!(),
                            ::core::column!(),
                        );
                        &__AMP_SITE
                    },
                    <::amp::autocast::BF16Policy as ::amp::autocast::Policy>::NAME,
                );
            __amp_out
        }
    }
}
