//! Bulk kernels: `out[b] = sum_j c_j * in_j[b]` over GF(2^8), for public constants `c_j`
//! and secret byte vectors `in_j`.
//!
//! Shamir never multiplies two secrets. Splitting multiplies secret coefficients by the
//! public powers `x^j`; combining, regenerating and checking multiply secret shares by
//! public Lagrange weights. So one operation, a linear combination with public
//! constants, serves every algorithm in the crate, and each implementation of it is
//! constant time with respect to the vectors:
//!
//! - [`Kernel::Portable`]: SWAR on `u64` words. Multiplication by `c` is
//!   `sum_i bit_i(x) * (c * 2^i)`; each bit becomes a byte mask by arithmetic, never a
//!   branch or a table index.
//! - [`Kernel::Avx2`]: two 16-entry tables per constant (`c*n` and `c*(n<<4)`) held in
//!   registers and looked up with `vpshufb`. The tables are built from the public
//!   constant and never live in memory indexed by secret data.
//! - [`Kernel::GfniAvx2`] / [`Kernel::GfniAvx512`]: `gf2p8affineqb` with the 8x8 bit
//!   matrix of "multiply by c" in the 0x11D field (`gf2p8mulb` is hard-wired to the AES
//!   field 0x11B and cannot be used).
//!
//! The kernel is picked at run time ([`Kernel::detect`]); every SIMD kernel is tested
//! against the portable one for every constant and every byte value.

use crate::gf;

mod portable;
#[cfg(target_arch = "x86_64")]
mod x86;

/// One implementation of the bulk linear-combination kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kernel {
    /// Portable, constant-time SWAR code; runs everywhere.
    Portable,
    /// AVX2 with per-constant nibble tables in registers (`vpshufb`).
    Avx2,
    /// GFNI affine transform on 256-bit vectors.
    GfniAvx2,
    /// GFNI affine transform on 512-bit vectors (AVX-512F and AVX-512BW).
    GfniAvx512,
}

impl Kernel {
    /// The fastest kernel this CPU supports. The probe runs once per process, so
    /// calling this often is cheap.
    pub fn detect() -> Kernel {
        Self::available()
            .last()
            .copied()
            .unwrap_or(Kernel::Portable)
    }

    /// Every kernel this CPU can run, slowest first; always starts with `Portable`.
    /// Probed once per process.
    pub fn available() -> &'static [Kernel] {
        static AVAILABLE: std::sync::OnceLock<Vec<Kernel>> = std::sync::OnceLock::new();
        AVAILABLE.get_or_init(Self::probe)
    }

    fn probe() -> Vec<Kernel> {
        let mut out = vec![Kernel::Portable];
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2") {
                out.push(Kernel::Avx2);
            }
            if std::arch::is_x86_feature_detected!("gfni")
                && std::arch::is_x86_feature_detected!("avx2")
            {
                out.push(Kernel::GfniAvx2);
            }
            if std::arch::is_x86_feature_detected!("gfni")
                && std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512bw")
            {
                out.push(Kernel::GfniAvx512);
            }
        }
        out
    }

    /// Whether this CPU can run the kernel.
    pub fn is_available(self) -> bool {
        Self::available().contains(&self)
    }

    /// A short name, for benchmarks and logs.
    pub fn name(self) -> &'static str {
        match self {
            Kernel::Portable => "portable",
            Kernel::Avx2 => "avx2",
            Kernel::GfniAvx2 => "gfni-avx2",
            Kernel::GfniAvx512 => "gfni-avx512",
        }
    }
}

/// A public constant in every form the kernels need, computed once per operation.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Prepared {
    /// `c * 2^i` for bit i, each broadcast to all eight bytes of a `u64` (portable).
    pub(crate) bit_multiples: [u64; 8],
    /// `c * n` for n in 0..16, then `c * (n << 4)` for n in 0..16 (AVX2 nibble tables).
    pub(crate) nibbles: [u8; 32],
    /// The 8x8 bit matrix of `x -> c * x` in `gf2p8affineqb` layout (GFNI).
    pub(crate) matrix: u64,
}

impl Prepared {
    pub(crate) fn new(c: u8) -> Prepared {
        // cols[j] = c * 2^j: multiplication by c maps bit j of x to this byte.
        let mut cols = [0u8; 8];
        let mut p = c;
        for col in cols.iter_mut() {
            *col = p;
            p = gf::xtime(p);
        }
        let mut bit_multiples = [0u64; 8];
        for (bm, &col) in bit_multiples.iter_mut().zip(&cols) {
            *bm = u64::from(col) * 0x0101_0101_0101_0101;
        }
        let mut nibbles = [0u8; 32];
        for n in 1..16usize {
            // Each entry is the XOR of the columns of its set bits.
            let low_bit = n.trailing_zeros() as usize;
            nibbles[n] = nibbles[n & (n - 1)] ^ cols[low_bit];
            nibbles[16 + n] = nibbles[16 + (n & (n - 1))] ^ cols[low_bit + 4];
        }
        // gf2p8affineqb: result bit i = parity(matrix.byte[7 - i] & x). Row i collects
        // bit i of every column.
        let mut matrix = 0u64;
        for i in 0..8 {
            let mut row = 0u8;
            for (j, &col) in cols.iter().enumerate() {
                row |= ((col >> i) & 1) << j;
            }
            matrix |= u64::from(row) << (8 * (7 - i));
        }
        Prepared {
            bit_multiples,
            nibbles,
            matrix,
        }
    }
}

/// A linear combination with fixed public constants, ready to apply to many blocks.
#[derive(Debug, Clone)]
pub(crate) struct LinComb {
    kernel: Kernel,
    consts: Vec<Prepared>,
}

impl LinComb {
    /// Prepares `out = sum_j consts[j] * in_j` for the detected kernel.
    pub(crate) fn new(consts: &[u8]) -> LinComb {
        Self::with_kernel(Kernel::detect(), consts)
    }

    /// Prepares the combination for a given kernel. Falls back to the portable kernel
    /// when the CPU cannot run the one asked for, so the result is always correct.
    pub(crate) fn with_kernel(kernel: Kernel, consts: &[u8]) -> LinComb {
        let kernel = if kernel.is_available() {
            kernel
        } else {
            Kernel::Portable
        };
        LinComb {
            kernel,
            consts: consts.iter().map(|&c| Prepared::new(c)).collect(),
        }
    }

    /// Number of input vectors the combination takes.
    pub(crate) fn arity(&self) -> usize {
        self.consts.len()
    }

    /// Writes `out[b] = sum_j c_j * inputs[j][b]`. Every input must be exactly as long
    /// as `out`; callers guarantee it (checked by assertion: a violation is a bug here,
    /// not bad input).
    pub(crate) fn apply(&self, inputs: &[&[u8]], out: &mut [u8]) {
        assert_eq!(inputs.len(), self.consts.len(), "one input per constant");
        assert!(
            inputs.iter().all(|i| i.len() == out.len()),
            "inputs and output have one length"
        );
        match self.kernel {
            Kernel::Portable => portable::lincomb(&self.consts, inputs, out),
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => x86::lincomb_avx2(&self.consts, inputs, out),
            #[cfg(target_arch = "x86_64")]
            Kernel::GfniAvx2 => x86::lincomb_gfni_avx2(&self.consts, inputs, out),
            #[cfg(target_arch = "x86_64")]
            Kernel::GfniAvx512 => x86::lincomb_gfni_avx512(&self.consts, inputs, out),
            #[cfg(not(target_arch = "x86_64"))]
            _ => portable::lincomb(&self.consts, inputs, out),
        }
    }
}

/// Constant-time equality of two byte strings of one length: no early exit, so the time
/// does not tell where the first difference is.
pub(crate) fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut diff = 0u64;
    let mut ca = a.chunks_exact(8);
    let mut cb = b.chunks_exact(8);
    for (x, y) in (&mut ca).zip(&mut cb) {
        let mut wx = [0u8; 8];
        let mut wy = [0u8; 8];
        wx.copy_from_slice(x);
        wy.copy_from_slice(y);
        diff |= u64::from_ne_bytes(wx) ^ u64::from_ne_bytes(wy);
    }
    for (x, y) in ca.remainder().iter().zip(cb.remainder()) {
        diff |= u64::from(x ^ y);
    }
    diff == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_bytes() -> Vec<u8> {
        (0..=255u8).collect()
    }

    #[test]
    fn every_kernel_multiplies_every_byte_by_every_constant_correctly() {
        let xs = all_bytes();
        for &kernel in Kernel::available() {
            for c in 0..=255u8 {
                let comb = LinComb::with_kernel(kernel, &[c]);
                let mut out = vec![0u8; 256];
                comb.apply(&[&xs], &mut out);
                for (x, got) in xs.iter().zip(&out) {
                    assert_eq!(*got, gf::mul(c, *x), "{kernel:?}: {c} * {x}");
                }
            }
        }
    }

    #[test]
    fn simd_kernels_agree_with_portable_on_every_length_and_arity() {
        // Lengths around every vector width and unroll factor exercise main loops and
        // tails; arities 1..=6 exercise the accumulation.
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed as u8
        };
        for arity in 1..=6usize {
            let consts: Vec<u8> = (0..arity).map(|_| next()).collect();
            let reference = LinComb::with_kernel(Kernel::Portable, &consts);
            for len in (0..=300).chain([511, 512, 513, 1023, 4096, 4097]) {
                let inputs: Vec<Vec<u8>> = (0..arity)
                    .map(|_| (0..len).map(|_| next()).collect())
                    .collect();
                let refs: Vec<&[u8]> = inputs.iter().map(Vec::as_slice).collect();
                let mut expected = vec![0u8; len];
                reference.apply(&refs, &mut expected);
                for &kernel in Kernel::available() {
                    let mut got = vec![0xAAu8; len];
                    LinComb::with_kernel(kernel, &consts).apply(&refs, &mut got);
                    assert_eq!(got, expected, "{kernel:?} arity {arity} len {len}");
                }
            }
        }
    }

    #[test]
    fn unavailable_kernel_falls_back_to_a_correct_one() {
        for kernel in [
            Kernel::Portable,
            Kernel::Avx2,
            Kernel::GfniAvx2,
            Kernel::GfniAvx512,
        ] {
            let comb = LinComb::with_kernel(kernel, &[3]);
            let mut out = [0u8; 1];
            comb.apply(&[&[7]], &mut out);
            assert_eq!(out[0], gf::mul(3, 7));
        }
    }

    #[test]
    fn ct_eq_matches_slice_equality() {
        let a: Vec<u8> = (0..37).collect();
        let mut b = a.clone();
        assert!(ct_eq(&a, &b));
        for i in 0..a.len() {
            b[i] ^= 1;
            assert!(!ct_eq(&a, &b), "difference at {i}");
            b[i] ^= 1;
        }
        assert!(!ct_eq(&a, &a[..36]));
    }
}
