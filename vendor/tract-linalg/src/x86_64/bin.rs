//! f32 binary kernels, by scalar and unicast, on AVX (patched for facegate, see PATCHED.md).
//!
//! The published crate has no x86-64 kernel for these (but `mul_by_scalar` for the `MulByScalar`
//! parameter form), so every `Min`/`Max`/`Add`/`Mul`/`Sub` of a model ran the generic loops,
//! which a baseline x86-64 build compiles to 4-wide SSE. These are the same loops compiled with
//! AVX enabled: 8 lanes, the same per-element expression, so the same values bit for bit
//! (`f32::min`/`max` keep their NaN rule: the non-NaN operand wins).

macro_rules! avx_by_scalar {
    ($ker:ident, $run:ident, $op:ident, |$px:ident, $s:ident| $body:expr) => {
        routine_by_scalar_rust!(x86_64;
            f32,
            $ker,
            8,
            8,
            fn run(x: &mut [f32], s: f32) {
                debug_assert!(x.len() % Self::nr() == 0);
                unsafe { $run(x, s) }
            },
            op($op),
            bin,
            isa(X86_64Avx)
        );

        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx")]
        unsafe fn $run(x: &mut [f32], $s: f32) {
            x.iter_mut().for_each(|$px| *$px = $body)
        }
    };
}

macro_rules! avx_unicast {
    ($ker:ident, $run:ident, $op:ident, |$a:ident, $b:ident| $body:expr) => {
        routine_unicast_rust!(x86_64;
            f32,
            $ker,
            8,
            8,
            fn run(a: &mut [f32], b: &[f32]) {
                debug_assert!(a.len() == b.len());
                debug_assert!(a.len() % Self::nr() == 0);
                unsafe { $run(a, b) }
            },
            op($op),
            isa(X86_64Avx)
        );

        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx")]
        unsafe fn $run(a: &mut [f32], b: &[f32]) {
            a.iter_mut().zip(b.iter()).for_each(|($a, $b)| *$a = $body)
        }
    };
}

avx_by_scalar!(x86_64_avx_f32_min_by_scalar_8n, min_by_scalar_run, Min, |px, s| px.min(s));
avx_by_scalar!(x86_64_avx_f32_max_by_scalar_8n, max_by_scalar_run, Max, |px, s| px.max(s));
avx_by_scalar!(x86_64_avx_f32_add_by_scalar_8n, add_by_scalar_run, Add, |px, s| *px + s);
avx_by_scalar!(x86_64_avx_f32_mul_by_scalar_8n, mul_by_scalar_run, Mul, |px, s| *px * s);
avx_by_scalar!(x86_64_avx_f32_sub_by_scalar_8n, sub_by_scalar_run, Sub, |px, s| *px - s);
avx_by_scalar!(x86_64_avx_f32_subf_by_scalar_8n, subf_by_scalar_run, SubF, |px, s| s - *px);

avx_unicast!(x86_64_avx_f32_unicast_min_8n, unicast_min_run, Min, |a, b| a.min(*b));
avx_unicast!(x86_64_avx_f32_unicast_max_8n, unicast_max_run, Max, |a, b| a.max(*b));
avx_unicast!(x86_64_avx_f32_unicast_add_8n, unicast_add_run, Add, |a, b| *a + *b);
avx_unicast!(x86_64_avx_f32_unicast_mul_8n, unicast_mul_run, Mul, |a, b| *a * *b);
avx_unicast!(x86_64_avx_f32_unicast_sub_8n, unicast_sub_run, Sub, |a, b| *a - *b);
avx_unicast!(x86_64_avx_f32_unicast_subf_8n, unicast_subf_run, SubF, |a, b| *b - *a);
