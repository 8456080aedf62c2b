fn forward(
    x: &Tensor<F32>,
    w1: &Tensor<F32>,
    b1: &Tensor<F32>,
    w2: &Tensor<F32>,
) -> amp::Result<Tensor<F32>> {
    #[allow(unused_imports)]
    use ::amp::__private::traits::*;
    let __amp_region = ::amp::__private::Region::enter();
    let h = match (
        ::amp::__private::begin(),
        (&&::amp::__private::Arg::new(
            match (
                ::amp::__private::begin(),
                (&&&::amp::__private::Arg::new(&x))
                    .__amp_recv::<
                        ::amp::autocast::F16Policy,
                        <::amp::autocast::F16Policy as ::amp::autocast::Decide<
                            ::amp::ops::kind::linear,
                        >>::Class,
                    >(),
                (&&::amp::__private::Arg::new(w1))
                    .__amp_hold::<
                        ::amp::autocast::F16Policy,
                        <::amp::autocast::F16Policy as ::amp::autocast::Decide<
                            ::amp::ops::kind::linear,
                        >>::Class,
                    >(),
                (&&::amp::__private::Arg::new(Some(b1)))
                    .__amp_hold::<
                        ::amp::autocast::F16Policy,
                        <::amp::autocast::F16Policy as ::amp::autocast::Decide<
                            ::amp::ops::kind::linear,
                        >>::Class,
                    >(),
            ) {
                (__amp_frame, __amp_recv, __amp_a0, __amp_a1) => {
                    let __amp_out = __amp_recv
                        .get()
                        .linear(__amp_a0.get(), __amp_a1.get());
                    __amp_frame
                        .finish(
                            {
                                const __AMP_SITE: ::amp::__private::Site = ::amp::__private::Site::new(
                                    "linear",
                                    true,
                                    ::core::file!(),
                                    ::core::line!(),
                                    ::core::column!(),
                                );
                                &__AMP_SITE
                            },
                            <::amp::autocast::F16Policy as ::amp::autocast::Policy>::NAME,
                        );
                    __amp_out
                }
            }?,
        ))
            .__amp_hold::<
                ::amp::autocast::F16Policy,
                <::amp::autocast::F16Policy as ::amp::autocast::Decide<
                    ::amp::ops::kind::gelu,
                >>::Class,
            >(),
    ) {
        (__amp_frame, __amp_recv) => {
            let __amp_out = __amp_recv.get().gelu();
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
                    <::amp::autocast::F16Policy as ::amp::autocast::Policy>::NAME,
                );
            __amp_out
        }
    };
    let y = match (
        ::amp::__private::begin(),
        (&&&::amp::__private::Arg::new(&h))
            .__amp_recv::<
                ::amp::autocast::F16Policy,
                <::amp::autocast::F16Policy as ::amp::autocast::Decide<
                    ::amp::ops::kind::matmul,
                >>::Class,
            >(),
        (&&::amp::__private::Arg::new(&w2.t()?))
            .__amp_hold::<
                ::amp::autocast::F16Policy,
                <::amp::autocast::F16Policy as ::amp::autocast::Decide<
                    ::amp::ops::kind::matmul,
                >>::Class,
            >(),
    ) {
        (__amp_frame, __amp_recv, __amp_a0) => {
            let __amp_out = __amp_recv.get().matmul(__amp_a0.get());
            __amp_frame
                .finish(
                    {
                        const __AMP_SITE: ::amp::__private::Site = ::amp::__private::Site::new(
                            "matmul",
                            true,
                            ::core::file!(),
                            ::core::line!(),
                            ::core::column!(),
                        );
                        &__AMP_SITE
                    },
                    <::amp::autocast::F16Policy as ::amp::autocast::Policy>::NAME,
                );
            __amp_out
        }
    }?;
    let z = (match (::amp::__private::BinArg::new(&y, &y), ::amp::__private::begin()) {
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
                    <::amp::autocast::F16Policy as ::amp::autocast::Policy>::NAME,
                );
            __amp_out
        }
    })? * 0.5;
    match (
        ::amp::__private::begin(),
        (&&&::amp::__private::Arg::new(&z))
            .__amp_recv::<
                ::amp::autocast::F16Policy,
                <::amp::autocast::F16Policy as ::amp::autocast::Decide<
                    ::amp::ops::kind::log_softmax,
                >>::Class,
            >(),
        -1,
    ) {
        (__amp_frame, __amp_recv, __amp_a0) => {
            let __amp_out = __amp_recv.get().log_softmax(__amp_a0);
            __amp_frame
                .finish(
                    {
                        const __AMP_SITE: ::amp::__private::Site = ::amp::__private::Site::new(
                            "log_softmax",
                            true,
                            ::core::file!(),
                            ::core::line!(),
                            ::core::column!(),
                        );
                        &__AMP_SITE
                    },
                    <::amp::autocast::F16Policy as ::amp::autocast::Policy>::NAME,
                );
            __amp_out
        }
    }
}
