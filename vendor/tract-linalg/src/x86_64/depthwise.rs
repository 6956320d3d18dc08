/// Depthwise convolution along an axis the output is contiguous on: `len` output points, each
/// the bias plus every `taps[t] * input[offsets[t] + i * in_stride]`.
///
/// Same contract as the aarch64 and wasm kernels. The arithmetic is the scalar walk's, in the
/// same order: the bias, then one multiply and one add per tap. It uses no FMA, so every output
/// is bit-identical to the scalar path and a plan gives the same results with or without this
/// kernel. `in_stride == 1` is vectorised at any tap count, `in_stride == 2` (a stride-2
/// convolution) too where the CPU has AVX2; any other stride stays scalar.
///
/// # Safety
/// `input.offset(offsets[t] + i * in_stride)` must be readable for every tap and every `i` below
/// `len`, and `len` output points writable from `output`. The CPU must support AVX.
#[cfg(target_arch = "x86_64")]
pub unsafe fn depthwise_w_f32(
    input: *const f32,
    output: *mut f32,
    taps: &[f32],
    offsets: &[isize],
    bias: f32,
    len: usize,
    in_stride: isize,
) {
    unsafe {
        match in_stride {
            1 => contiguous(input, output, taps, offsets, bias, len),
            2 if std::is_x86_feature_detected!("avx2") => {
                stride2(input, output, taps, offsets, bias, len)
            }
            _ => scalar(input, output, taps, offsets, bias, 0, len, in_stride),
        }
    }
}

/// The `in_stride == 1` case, with the tap count taken at runtime.
///
/// Taps are the outer loop and 32 output points the inner one: four 8-lane accumulators give
/// the adder independent chains, and each tap's broadcast is paid once per 32 points. Real 3x3,
/// 7x7 or 9x9 kernels reach here with 9, 49 or 81 taps.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
unsafe fn contiguous(
    input: *const f32,
    output: *mut f32,
    taps: &[f32],
    offsets: &[isize],
    bias: f32,
    len: usize,
) {
    use std::arch::x86_64::*;
    unsafe {
        let biasv = _mm256_set1_ps(bias);
        let mut i = 0usize;
        while i + 32 <= len {
            let mut a0 = biasv;
            let mut a1 = biasv;
            let mut a2 = biasv;
            let mut a3 = biasv;
            for (tap, offset) in taps.iter().zip(offsets) {
                let k = _mm256_set1_ps(*tap);
                let p = input.offset(*offset).add(i);
                a0 = _mm256_add_ps(a0, _mm256_mul_ps(_mm256_loadu_ps(p), k));
                a1 = _mm256_add_ps(a1, _mm256_mul_ps(_mm256_loadu_ps(p.add(8)), k));
                a2 = _mm256_add_ps(a2, _mm256_mul_ps(_mm256_loadu_ps(p.add(16)), k));
                a3 = _mm256_add_ps(a3, _mm256_mul_ps(_mm256_loadu_ps(p.add(24)), k));
            }
            _mm256_storeu_ps(output.add(i), a0);
            _mm256_storeu_ps(output.add(i + 8), a1);
            _mm256_storeu_ps(output.add(i + 16), a2);
            _mm256_storeu_ps(output.add(i + 24), a3);
            i += 32;
        }
        while i + 8 <= len {
            let mut acc = biasv;
            for (tap, offset) in taps.iter().zip(offsets) {
                let x = _mm256_loadu_ps(input.offset(*offset).add(i));
                acc = _mm256_add_ps(acc, _mm256_mul_ps(x, _mm256_set1_ps(*tap)));
            }
            _mm256_storeu_ps(output.add(i), acc);
            i += 8;
        }
        if i < len {
            // The last one to seven points in masked lanes (a masked-off lane is neither read nor
            // written, so nothing past the contract's last input is touched): a row of a 14- or
            // 7-wide layer is mostly tail, which ran scalar before.
            let mask = tail_mask(len - i);
            let mut acc = biasv;
            for (tap, offset) in taps.iter().zip(offsets) {
                let x = _mm256_maskload_ps(input.offset(*offset).add(i), mask);
                acc = _mm256_add_ps(acc, _mm256_mul_ps(x, _mm256_set1_ps(*tap)));
            }
            _mm256_maskstore_ps(output.add(i), mask, acc);
        }
    }
}

/// A mask whose first `n` (at most 8) 32-bit lanes are set.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
unsafe fn tail_mask(n: usize) -> std::arch::x86_64::__m256i {
    const ONES_THEN_ZEROS: [i32; 16] = [-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0];
    debug_assert!(n <= 8);
    unsafe {
        std::arch::x86_64::_mm256_loadu_si256(ONES_THEN_ZEROS.as_ptr().add(8 - n.min(8)).cast())
    }
}

/// The `in_stride == 2` case (a stride-2 convolution along its contiguous axis), any tap count.
///
/// Output `i` reads input `2 i` (plus the tap's offset): eight outputs take the even elements of
/// fifteen consecutive inputs. They are read as two overlapping loads, `p[0..8]` and `p[7..15]`,
/// and one in-lane shuffle keeps `p0 p2 p8 p10 | p4 p6 p12 p14`, so no load reaches past the
/// last input the contract makes readable (`p[14]` for the eighth output). Every accumulator holds
/// its outputs in the order 0 1 4 5 2 3 6 7; one cross-lane permute per eight outputs restores it
/// before the store. The arithmetic is `scalar`'s, in the same order: bit-identical outputs.
///
/// Added to the published 0.23.9 kernel for facegate (see PATCHED.md): without it a stride-2
/// depthwise layer ran scalar, about ten times slower per output than a stride-1 one.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx,avx2")]
unsafe fn stride2(
    input: *const f32,
    output: *mut f32,
    taps: &[f32],
    offsets: &[isize],
    bias: f32,
    len: usize,
) {
    use std::arch::x86_64::*;
    #[inline(always)]
    unsafe fn even8(p: *const f32) -> __m256 {
        unsafe {
            let lo = _mm256_loadu_ps(p);
            let hi = _mm256_loadu_ps(p.add(7));
            // Per 128-bit lane: lo[0], lo[2], hi[1], hi[3].
            _mm256_shuffle_ps::<0b11_01_10_00>(lo, hi)
        }
    }
    #[inline(always)]
    unsafe fn in_order(v: __m256) -> __m256 {
        // 64-bit pairs (0 1) (4 5) (2 3) (6 7) -> (0 1) (2 3) (4 5) (6 7).
        unsafe { _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(_mm256_castps_pd(v))) }
    }
    unsafe {
        let biasv = _mm256_set1_ps(bias);
        let mut i = 0usize;
        while i + 32 <= len {
            let mut a0 = biasv;
            let mut a1 = biasv;
            let mut a2 = biasv;
            let mut a3 = biasv;
            for (tap, offset) in taps.iter().zip(offsets) {
                let k = _mm256_set1_ps(*tap);
                let p = input.offset(*offset + 2 * i as isize);
                a0 = _mm256_add_ps(a0, _mm256_mul_ps(even8(p), k));
                a1 = _mm256_add_ps(a1, _mm256_mul_ps(even8(p.add(16)), k));
                a2 = _mm256_add_ps(a2, _mm256_mul_ps(even8(p.add(32)), k));
                a3 = _mm256_add_ps(a3, _mm256_mul_ps(even8(p.add(48)), k));
            }
            _mm256_storeu_ps(output.add(i), in_order(a0));
            _mm256_storeu_ps(output.add(i + 8), in_order(a1));
            _mm256_storeu_ps(output.add(i + 16), in_order(a2));
            _mm256_storeu_ps(output.add(i + 24), in_order(a3));
            i += 32;
        }
        while i + 8 <= len {
            let mut acc = biasv;
            for (tap, offset) in taps.iter().zip(offsets) {
                let x = even8(input.offset(*offset + 2 * i as isize));
                acc = _mm256_add_ps(acc, _mm256_mul_ps(x, _mm256_set1_ps(*tap)));
            }
            _mm256_storeu_ps(output.add(i), in_order(acc));
            i += 8;
        }
        if i < len {
            // One to seven outputs left: their inputs are the first 2 n - 1 from `p`, read as in
            // `even8` with the lanes past them masked off (so never touched), then shuffled the
            // same way; the lanes of outputs past `len` hold junk and are not stored.
            let n = len - i;
            let lo_mask = tail_mask((2 * n - 1).min(8));
            let hi_mask = tail_mask((2 * n - 1).saturating_sub(7));
            let mut acc = biasv;
            for (tap, offset) in taps.iter().zip(offsets) {
                let p = input.offset(*offset + 2 * i as isize);
                let lo = _mm256_maskload_ps(p, lo_mask);
                let hi = _mm256_maskload_ps(p.wrapping_add(7), hi_mask);
                let x = _mm256_shuffle_ps::<0b11_01_10_00>(lo, hi);
                acc = _mm256_add_ps(acc, _mm256_mul_ps(x, _mm256_set1_ps(*tap)));
            }
            _mm256_maskstore_ps(output.add(i), tail_mask(n), in_order(acc));
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
unsafe fn scalar(
    input: *const f32,
    output: *mut f32,
    taps: &[f32],
    offsets: &[isize],
    bias: f32,
    from: usize,
    len: usize,
    in_stride: isize,
) {
    unsafe {
        for i in from..len {
            let mut sum = bias;
            for (tap, offset) in taps.iter().zip(offsets) {
                sum += tap * *input.offset(*offset + i as isize * in_stride);
            }
            *output.add(i) = sum;
        }
    }
}

bail_stub!(x86_64; pub unsafe fn depthwise_w_f32(
    *const f32, *mut f32, &[f32], &[isize], f32, usize, isize
));

submit_routine!(x86_64; DepthwiseWF32, DepthwiseW, "x86_64_avx_depthwise_w_f32", depthwise_w_f32,
    isa(X86_64Avx));

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;

    fn reference(
        input: &[f32],
        taps: &[f32],
        offsets: &[isize],
        bias: f32,
        len: usize,
        in_stride: isize,
        center: usize,
    ) -> Vec<f32> {
        (0..len)
            .map(|i| {
                taps.iter().zip(offsets).fold(bias, |sum, (tap, offset)| {
                    sum + tap * input[(center as isize + offset + i as isize * in_stride) as usize]
                })
            })
            .collect()
    }

    fn compare(taps: usize, len: usize, in_stride: isize) {
        if !std::is_x86_feature_detected!("avx") {
            return;
        }
        let k: Vec<f32> = (0..taps).map(|t| (t as f32 * 0.7).sin()).collect();
        let offsets: Vec<isize> = (0..taps as isize).map(|t| t - taps as isize / 2).collect();
        let center = taps;
        let input: Vec<f32> = (0..center * 2 + len * in_stride as usize + 1)
            .map(|i| (i as f32 * 0.37).cos())
            .collect();
        let expected = reference(&input, &k, &offsets, 0.25, len, in_stride, center);
        let mut output = vec![0f32; len];
        unsafe {
            depthwise_w_f32(
                input.as_ptr().add(center),
                output.as_mut_ptr(),
                &k,
                &offsets,
                0.25,
                len,
                in_stride,
            )
        };
        // Same operations in the same order: the results must match bit for bit.
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&output), bits(&expected), "taps {taps} len {len} stride {in_stride}");
    }

    /// Strides 1 and 2 on a buffer that ends exactly at the last input the contract makes
    /// readable, into an output with guard values after its `len` points (run under valgrind to
    /// see that no load reaches past the input; the guards, that no store reaches past `len`).
    #[test]
    fn tails_touch_nothing_past_the_last_input_or_output() {
        if !std::is_x86_feature_detected!("avx2") {
            return;
        }
        for stride in [1usize, 2] {
            for taps in [3, 9, 25] {
                for len in [1, 2, 3, 4, 5, 6, 7, 8, 9, 12, 14, 15, 16, 31, 32, 33, 40, 54, 64, 80] {
                    let offsets: Vec<isize> = (0..taps as isize).collect();
                    let k: Vec<f32> = (0..taps).map(|t| (t as f32 * 0.3).cos()).collect();
                    let n = taps - 1 + stride * (len - 1) + 1;
                    let input: Vec<f32> = (0..n).map(|i| (i as f32 * 0.11).sin()).collect();
                    let expected = reference(&input, &k, &offsets, -0.5, len, stride as isize, 0);
                    let mut output = vec![7f32; len + 8];
                    unsafe {
                        depthwise_w_f32(
                            input.as_ptr(),
                            output.as_mut_ptr(),
                            &k,
                            &offsets,
                            -0.5,
                            len,
                            stride as isize,
                        )
                    };
                    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                    assert_eq!(
                        bits(&output[..len]),
                        bits(&expected),
                        "stride {stride} taps {taps} len {len}"
                    );
                    assert!(output[len..].iter().all(|&x| x == 7.0), "stored past len {len}");
                }
            }
        }
    }

    #[test]
    fn matches_scalar_bit_for_bit() {
        for taps in [1, 2, 3, 4, 5, 9, 25, 49, 81] {
            for len in [0, 1, 7, 8, 9, 31, 32, 33, 64, 100, 224] {
                compare(taps, len, 1);
                compare(taps, len, 2);
            }
        }
    }
}
