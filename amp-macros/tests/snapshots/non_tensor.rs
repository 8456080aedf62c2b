fn count(v: &[f32]) -> f32 {
    #[allow(unused_imports)]
    use ::amp::__private::traits::*;
    let __amp_region = ::amp::__private::Region::enter();
    let n = v.len() as f32;
    match (
        ::amp::__private::BinArg::new(
            match (
                ::amp::__private::BinArg::new(
                    match (
                        ::amp::__private::begin(),
                        (&&::amp::__private::Arg::new(v.iter()))
                            .__amp_hold::<
                                ::amp::autocast::F32Policy,
                                <::amp::autocast::F32Policy as ::amp::autocast::Decide<
                                    ::amp::ops::kind::sum,
                                >>::Class,
                            >(),
                    ) {
                        (__amp_frame, __amp_recv) => {
                            let __amp_out = __amp_recv.get().sum::<f32>();
                            __amp_frame
                                .finish(
                                    {
                                        const __AMP_SITE: ::amp::__private::Site = ::amp::__private::Site::new(
                                            "sum",
                                            true,
                                            ::core::file!(),
                                            ::core::line!(),
                                            ::core::column!(),
                                        );
                                        &__AMP_SITE
                                    },
                                    <::amp::autocast::F32Policy as ::amp::autocast::Policy>::NAME,
                                );
                            __amp_out
                        }
                    },
                    n,
                ),
                ::amp::__private::begin(),
            ) {
                (__amp_b, __amp_frame) => {
                    let __amp_out = (&&__amp_b).__amp_div();
                    __amp_frame
                        .finish(
                            {
                                const __AMP_SITE: ::amp::__private::Site = ::amp::__private::Site::new(
                                    "div",
                                    true,
                                    ::core::file!(),
                                    ::core::line!(),
                                    ::core::column!(),
                                );
                                &__AMP_SITE
                            },
                            <::amp::autocast::F32Policy as ::amp::autocast::Policy>::NAME,
                        );
                    __amp_out
                }
            },
            helper(n) * 2.0,
        ),
        ::amp::__private::begin(),
    ) {
        (__amp_b, __amp_frame) => {
            let __amp_out = (&&__amp_b).__amp_add();
            __amp_frame
                .finish(
                    {
                        const __AMP_SITE: ::amp::__private::Site = ::amp::__private::Site::new(
                            "add",
                            true,
                            ::core::file!(),
                            ::core::line!(),
                            ::core::column!(),
                        );
                        &__AMP_SITE
                    },
                    <::amp::autocast::F32Policy as ::amp::autocast::Policy>::NAME,
                );
            __amp_out
        }
    }
}
