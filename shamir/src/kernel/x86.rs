//! x86-64 SIMD kernels. The only `unsafe` code in kakera.
//!
//! Each public function checks the CPU features it needs at run time and falls back to
//! the portable kernel when they are missing, so calling it is always sound. The
//! `unsafe` blocks are unaligned loads and stores within bounds the loop conditions
//! establish, and calls into `#[target_feature]` functions after the feature check.
//! Every lookup is a register shuffle or an affine transform: constant time.
#![allow(unsafe_code)]

use core::arch::x86_64::{
    __m256i, __m512i, _mm_loadu_si128, _mm256_and_si256, _mm256_broadcastsi128_si256,
    _mm256_gf2p8affine_epi64_epi8, _mm256_loadu_si256, _mm256_set1_epi8, _mm256_set1_epi64x,
    _mm256_setzero_si256, _mm256_shuffle_epi8, _mm256_srli_epi16, _mm256_storeu_si256,
    _mm256_xor_si256, _mm512_gf2p8affine_epi64_epi8, _mm512_loadu_si512, _mm512_set1_epi64,
    _mm512_setzero_si512, _mm512_storeu_si512, _mm512_xor_si512,
};

use super::{Prepared, portable};

fn has_avx2() -> bool {
    std::arch::is_x86_feature_detected!("avx2")
}

fn has_gfni_avx2() -> bool {
    std::arch::is_x86_feature_detected!("gfni") && std::arch::is_x86_feature_detected!("avx2")
}

fn has_gfni_avx512() -> bool {
    std::arch::is_x86_feature_detected!("gfni")
        && std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx512bw")
}

pub(super) fn lincomb_avx2(consts: &[Prepared], inputs: &[&[u8]], out: &mut [u8]) {
    if !has_avx2() {
        return portable::lincomb(consts, inputs, out);
    }
    // SAFETY: AVX2 is present (checked above); the function's own preconditions are
    // that every input is as long as `out`, which LinComb::apply asserts.
    unsafe { avx2_nibbles(consts, inputs, out) }
}

pub(super) fn lincomb_gfni_avx2(consts: &[Prepared], inputs: &[&[u8]], out: &mut [u8]) {
    if !has_gfni_avx2() {
        return portable::lincomb(consts, inputs, out);
    }
    // SAFETY: GFNI and AVX2 are present (checked above); inputs are as long as `out`.
    unsafe { gfni_avx2(consts, inputs, out) }
}

pub(super) fn lincomb_gfni_avx512(consts: &[Prepared], inputs: &[&[u8]], out: &mut [u8]) {
    if !has_gfni_avx512() {
        return portable::lincomb(consts, inputs, out);
    }
    // SAFETY: GFNI, AVX-512F and AVX-512BW are present (checked above); inputs are as
    // long as `out`.
    unsafe { gfni_avx512(consts, inputs, out) }
}

/// Nibble-table multiply: `c*x = T_lo[x & 15] ^ T_hi[x >> 4]`, both tables in registers.
#[target_feature(enable = "avx2")]
fn avx2_nibbles(consts: &[Prepared], inputs: &[&[u8]], out: &mut [u8]) {
    const W: usize = 32;
    let len = out.len();
    let dst = out.as_mut_ptr();
    let low_nibble = _mm256_set1_epi8(0x0f);
    let mut off = 0;
    while off + 2 * W <= len {
        let mut acc0 = _mm256_setzero_si256();
        let mut acc1 = _mm256_setzero_si256();
        for (p, input) in consts.iter().zip(inputs) {
            // SAFETY: `nibbles` is 32 bytes: two unaligned 16-byte loads within it.
            let (t_lo, t_hi) = unsafe {
                (
                    _mm256_broadcastsi128_si256(_mm_loadu_si128(p.nibbles.as_ptr().cast())),
                    _mm256_broadcastsi128_si256(_mm_loadu_si128(p.nibbles.as_ptr().add(16).cast())),
                )
            };
            let src = input.as_ptr();
            // SAFETY: off + 64 <= len == input.len(), so both 32-byte loads are in bounds.
            let (v0, v1): (__m256i, __m256i) = unsafe {
                (
                    _mm256_loadu_si256(src.add(off).cast()),
                    _mm256_loadu_si256(src.add(off + W).cast()),
                )
            };
            let lo0 = _mm256_and_si256(v0, low_nibble);
            let hi0 = _mm256_and_si256(_mm256_srli_epi16::<4>(v0), low_nibble);
            let lo1 = _mm256_and_si256(v1, low_nibble);
            let hi1 = _mm256_and_si256(_mm256_srli_epi16::<4>(v1), low_nibble);
            acc0 = _mm256_xor_si256(
                acc0,
                _mm256_xor_si256(
                    _mm256_shuffle_epi8(t_lo, lo0),
                    _mm256_shuffle_epi8(t_hi, hi0),
                ),
            );
            acc1 = _mm256_xor_si256(
                acc1,
                _mm256_xor_si256(
                    _mm256_shuffle_epi8(t_lo, lo1),
                    _mm256_shuffle_epi8(t_hi, hi1),
                ),
            );
        }
        // SAFETY: off + 64 <= len == out.len(): both stores are in bounds.
        unsafe {
            _mm256_storeu_si256(dst.add(off).cast(), acc0);
            _mm256_storeu_si256(dst.add(off + W).cast(), acc1);
        }
        off += 2 * W;
    }
    portable::lincomb_from(consts, inputs, out, off);
}

/// GFNI on 256-bit vectors, four vectors (128 bytes) per iteration.
#[target_feature(enable = "gfni,avx2")]
fn gfni_avx2(consts: &[Prepared], inputs: &[&[u8]], out: &mut [u8]) {
    const W: usize = 32;
    const U: usize = 4;
    let len = out.len();
    let dst = out.as_mut_ptr();
    let mut off = 0;
    while off + U * W <= len {
        let mut acc = [_mm256_setzero_si256(); U];
        for (p, input) in consts.iter().zip(inputs) {
            let m = _mm256_set1_epi64x(p.matrix as i64);
            let src = input.as_ptr();
            for (u, a) in acc.iter_mut().enumerate() {
                // SAFETY: off + U*W <= len == input.len(): the load is in bounds.
                let v = unsafe { _mm256_loadu_si256(src.add(off + u * W).cast()) };
                *a = _mm256_xor_si256(*a, _mm256_gf2p8affine_epi64_epi8::<0>(v, m));
            }
        }
        for (u, a) in acc.iter().enumerate() {
            // SAFETY: off + U*W <= len == out.len(): the store is in bounds.
            unsafe { _mm256_storeu_si256(dst.add(off + u * W).cast(), *a) };
        }
        off += U * W;
    }
    portable::lincomb_from(consts, inputs, out, off);
}

/// GFNI on 512-bit vectors, four vectors (256 bytes) per iteration, then single vectors.
#[target_feature(enable = "gfni,avx512f,avx512bw")]
fn gfni_avx512(consts: &[Prepared], inputs: &[&[u8]], out: &mut [u8]) {
    const W: usize = 64;
    const U: usize = 4;
    let len = out.len();
    let dst = out.as_mut_ptr();
    let mut off = 0;
    while off + U * W <= len {
        let mut acc: [__m512i; U] = [_mm512_setzero_si512(); U];
        for (p, input) in consts.iter().zip(inputs) {
            let m = _mm512_set1_epi64(p.matrix as i64);
            let src = input.as_ptr();
            for (u, a) in acc.iter_mut().enumerate() {
                // SAFETY: off + U*W <= len == input.len(): the load is in bounds.
                let v = unsafe { _mm512_loadu_si512(src.add(off + u * W).cast()) };
                *a = _mm512_xor_si512(*a, _mm512_gf2p8affine_epi64_epi8::<0>(v, m));
            }
        }
        for (u, a) in acc.iter().enumerate() {
            // SAFETY: off + U*W <= len == out.len(): the store is in bounds.
            unsafe { _mm512_storeu_si512(dst.add(off + u * W).cast(), *a) };
        }
        off += U * W;
    }
    while off + W <= len {
        let mut acc = _mm512_setzero_si512();
        for (p, input) in consts.iter().zip(inputs) {
            let m = _mm512_set1_epi64(p.matrix as i64);
            // SAFETY: off + W <= len == input.len(): the load is in bounds.
            let v = unsafe { _mm512_loadu_si512(input.as_ptr().add(off).cast()) };
            acc = _mm512_xor_si512(acc, _mm512_gf2p8affine_epi64_epi8::<0>(v, m));
        }
        // SAFETY: off + W <= len == out.len(): the store is in bounds.
        unsafe { _mm512_storeu_si512(dst.add(off).cast(), acc) };
        off += W;
    }
    portable::lincomb_from(consts, inputs, out, off);
}
