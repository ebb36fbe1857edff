//! The portable kernel: constant-time SWAR over `u64` words. It is also the reference
//! every SIMD kernel is tested against, and the tail handler for lengths that are not a
//! multiple of a vector width.

use super::Prepared;

const LOW_BITS: u64 = 0x0101_0101_0101_0101;

/// `c * w` for the eight bytes of `w` at once.
#[inline(always)]
fn mul_word(w: u64, p: &Prepared) -> u64 {
    let mut acc = 0u64;
    for (i, &multiple) in p.bit_multiples.iter().enumerate() {
        // Each byte becomes 0xFF when its bit i is set, else 0x00. The product of a
        // 0/1 byte by 0xFF never carries into the next byte.
        let mask = ((w >> i) & LOW_BITS) * 0xFF;
        acc ^= mask & multiple;
    }
    acc
}

fn load(bytes: &[u8]) -> u64 {
    let mut w = [0u8; 8];
    w[..bytes.len()].copy_from_slice(bytes);
    u64::from_le_bytes(w)
}

pub(super) fn lincomb(consts: &[Prepared], inputs: &[&[u8]], out: &mut [u8]) {
    lincomb_from(consts, inputs, out, 0);
}

/// Like [`lincomb`], for the bytes from `start` on only (the SIMD kernels' tails).
pub(super) fn lincomb_from(consts: &[Prepared], inputs: &[&[u8]], out: &mut [u8], start: usize) {
    let mut offset = start;
    for chunk in out[start..].chunks_mut(8) {
        let end = offset + chunk.len();
        let mut acc = 0u64;
        for (p, input) in consts.iter().zip(inputs) {
            acc ^= mul_word(load(&input[offset..end]), p);
        }
        chunk.copy_from_slice(&acc.to_le_bytes()[..chunk.len()]);
        offset = end;
    }
}
