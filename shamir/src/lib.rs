//! kakera-shamir: Shamir secret sharing of byte strings over GF(2^8).
//!
//! The field is GF(2^8) with the reduction polynomial 0x11D, the one `sharks` uses, so
//! `sharks` serves as a test oracle. Every byte of the secret is the constant term of
//! its own random polynomial of degree `k - 1`; share `x` holds the evaluations at `x`.
//!
//! # Guarantees
//!
//! - **Unbiased.** Every coefficient is drawn uniformly from all 256 field values, zero
//!   included. (`sharks` 0.5 draws from 1..=255: RUSTSEC-2024-0398. With k = 2 one
//!   share then proves `secret != y`, and re-sharing one secret leaks it.) Any `k - 1`
//!   shares are uniformly distributed whatever the secret; `tests/statistics.rs` checks
//!   this and shows the same test catching the `sharks` bias.
//! - **Constant time with respect to secret data.** The only operation on secret bytes
//!   is a linear combination with *public* constants (powers of x, Lagrange weights), in
//!   [`kernel`]: bit masks, register shuffles or GFNI affine transforms, never a memory
//!   table indexed by a secret byte, never a branch on one. Scalar field arithmetic
//!   (on public values) is table-free too.
//! - **Zeroized.** Random coefficients, buffered secret bytes and share data are wiped
//!   when dropped; [`combine`] returns the secret in a [`Zeroizing`] buffer.
//! - **Pure.** No IO, no clock, no async: callers own buffers and transport.
//!
//! # Example
//!
//! ```
//! let shares = kakera_shamir::split(b"sealed record", 3, 5)?;
//! let secret = kakera_shamir::combine(&shares[1..4])?;
//! assert_eq!(&secret[..], b"sealed record");
//! # Ok::<(), kakera_shamir::ShamirError>(())
//! ```

pub mod error;
mod gf;
pub mod kernel;
pub mod repair;
pub mod rng;
pub mod share;
pub mod stream;

use rand_core::CryptoRng;
use zeroize::Zeroizing;

pub use error::{Result, ShamirError};
pub use kernel::Kernel;
pub use rng::OsSeededRng;
pub use share::{SetId, Share};
pub use stream::{BLOCK_LEN, SplitStream, StreamSummary};

use kernel::LinComb;

/// The default x coordinates for `n` shares: `1..=n`.
pub fn default_xs(n: u8) -> Vec<u8> {
    (1..=n).collect()
}

/// Splits `secret` into `n` shares at x = 1..=n, any `k` of which reconstruct it, with
/// a fresh OS-seeded CSPRNG.
pub fn split(secret: &[u8], k: u8, n: u8) -> Result<Vec<Share>> {
    let mut rng = OsSeededRng::new()?;
    split_with_rng(secret, k, &default_xs(n), &mut rng)
}

/// Splits `secret` into one share per x coordinate in `xs`, threshold `k`, drawing
/// randomness from `rng` (the caller's CSPRNG; a seeded one in tests).
pub fn split_with_rng<R: CryptoRng + ?Sized>(
    secret: &[u8],
    k: u8,
    xs: &[u8],
    rng: &mut R,
) -> Result<Vec<Share>> {
    validate_split(k, xs)?;
    let mut buffers: Vec<Vec<u8>> = vec![vec![0u8; secret.len()]; xs.len()];
    let set_id = {
        let mut outs: Vec<&mut [u8]> = buffers.iter_mut().map(Vec::as_mut_slice).collect();
        split_into(secret, k, xs, rng, &mut outs)?
    };
    xs.iter()
        .zip(buffers)
        .map(|(&x, data)| Share::from_parts(set_id, k, x, data))
        .collect()
}

/// Splits into caller-provided buffers, one per x coordinate, each exactly as long as
/// the secret: no allocation proportional to the secret. Returns the set id the shares
/// must carry (see [`Share::from_parts`]).
pub fn split_into<R: CryptoRng + ?Sized>(
    secret: &[u8],
    k: u8,
    xs: &[u8],
    rng: &mut R,
    outs: &mut [&mut [u8]],
) -> Result<SetId> {
    validate_split(k, xs)?;
    check_buffers(outs, xs.len(), secret.len())?;
    let mut dealer = Dealer::new(k, xs, secret.len(), rng);
    let mut offset = 0;
    for block in secret.chunks(BLOCK_LEN) {
        let end = offset + block.len();
        let mut views: Vec<&mut [u8]> = outs.iter_mut().map(|o| &mut o[offset..end]).collect();
        dealer.deal_block(block, rng, &mut views);
        offset = end;
    }
    Ok(dealer.set_id)
}

/// Reconstructs the secret from any `k` or more shares of one sharing.
pub fn combine(shares: &[Share]) -> Result<Zeroizing<Vec<u8>>> {
    let info = validate_set(shares)?;
    let mut out = Zeroizing::new(vec![0u8; info.len]);
    combine_checked(shares, &info, &mut out);
    Ok(out)
}

/// Reconstructs into a caller-provided buffer exactly as long as the shares.
pub fn combine_into(shares: &[Share], out: &mut [u8]) -> Result<()> {
    let info = validate_set(shares)?;
    if out.len() != info.len {
        return Err(ShamirError::BufferMismatch {
            expected: info.len,
            found: out.len(),
        });
    }
    combine_checked(shares, &info, out);
    Ok(())
}

fn combine_checked(shares: &[Share], info: &SetInfo, out: &mut [u8]) {
    let used = &shares[..usize::from(info.k)];
    let xs: Vec<u8> = used.iter().map(Share::x).collect();
    let weights = gf::lagrange_weights(&xs, 0);
    let inputs: Vec<&[u8]> = used.iter().map(Share::data).collect();
    LinComb::new(&weights).apply(&inputs, out);
}

/// Regenerates the share at `x` from `k` other shares of the same sharing: the result
/// is byte for byte the share the dealer produced at `x` (this is how repair restores a
/// lost share and matches the catalog digest).
pub fn regenerate(shares: &[Share], x: u8) -> Result<Share> {
    let info = validate_set(shares)?;
    if x == 0 {
        return Err(ShamirError::ZeroX);
    }
    let helpers: Vec<&Share> = shares
        .iter()
        .filter(|s| s.x() != x)
        .take(usize::from(info.k))
        .collect();
    if helpers.len() < usize::from(info.k) {
        return Err(ShamirError::NotEnoughShares {
            have: helpers.len(),
            need: info.k.into(),
        });
    }
    let xs: Vec<u8> = helpers.iter().map(|s| s.x()).collect();
    let weights = gf::lagrange_weights(&xs, x);
    let inputs: Vec<&[u8]> = helpers.iter().map(|s| s.data()).collect();
    let mut data = vec![0u8; info.len];
    LinComb::new(&weights).apply(&inputs, &mut data);
    Share::from_parts(info.set_id, info.k, x, data)
}

/// The verdict of [`check_consistency`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Consistency {
    /// All shares lie on one polynomial of degree < k (byte for byte).
    Consistent,
    /// A unique largest group of shares lies on one polynomial of degree < k; the
    /// shares at these x coordinates do not.
    Outliers(Vec<u8>),
    /// The shares disagree, but no group is large enough to tell which are wrong (two
    /// groups of k or more shares could each be the true sharing).
    Ambiguous,
}

/// The most k-subsets [`check_consistency`] tries as interpolation bases: a bound on its
/// work for very large n with many bad shares. Small sets (n <= 12) are searched
/// exhaustively within it.
pub const MAX_CONSISTENCY_BASES: usize = 4096;

/// Checks, for more than `k` shares of one sharing, whether all lie on one polynomial of
/// degree < k, and names the shares that do not. Two distinct polynomials of degree < k
/// agree on at most k - 1 points, so a group of g consistent shares out of m is the
/// true one when `2g > m + k - 1`; the shares outside it are named. If no such group
/// exists the answer is [`Consistency::Ambiguous`].
pub fn check_consistency(shares: &[Share]) -> Result<Consistency> {
    let info = validate_set(shares)?;
    let (m, k) = (shares.len(), usize::from(info.k));
    if m <= k {
        return Err(ShamirError::TooFewForCheck { k: info.k, have: m });
    }
    let mut predicted = Zeroizing::new(vec![0u8; info.len]);
    let mut base: Vec<usize> = (0..k).collect();
    for _ in 0..MAX_CONSISTENCY_BASES {
        let xs: Vec<u8> = base.iter().map(|&i| shares[i].x()).collect();
        let inputs: Vec<&[u8]> = base.iter().map(|&i| shares[i].data()).collect();
        let mut outliers = Vec::new();
        for (j, share) in shares.iter().enumerate() {
            if base.contains(&j) {
                continue;
            }
            let weights = gf::lagrange_weights(&xs, share.x());
            LinComb::new(&weights).apply(&inputs, &mut predicted);
            if !kernel::ct_eq(&predicted, share.data()) {
                outliers.push(share.x());
            }
        }
        let group = m - outliers.len();
        if outliers.is_empty() {
            return Ok(Consistency::Consistent);
        }
        if 2 * group > m + k - 1 {
            return Ok(Consistency::Outliers(outliers));
        }
        if !next_combination(&mut base, m) {
            break;
        }
    }
    Ok(Consistency::Ambiguous)
}

/// Advances `c` (a strictly increasing k-subset of 0..m) to the next one in
/// lexicographic order; false after the last.
fn next_combination(c: &mut [usize], m: usize) -> bool {
    let k = c.len();
    let mut i = k;
    while i > 0 {
        i -= 1;
        if c[i] < m - k + i {
            c[i] += 1;
            for j in i + 1..k {
                c[j] = c[j - 1] + 1;
            }
            return true;
        }
    }
    false
}

/// Re-randomizes shares: adds to each a share of a fresh random polynomial whose
/// constant term is 0. The secret is unchanged; the new shares get a new set id and
/// are independent of the old ones, so old and new shares do not combine.
pub fn refresh<R: CryptoRng + ?Sized>(shares: &[Share], rng: &mut R) -> Result<Vec<Share>> {
    let info = validate_set(shares)?;
    let xs: Vec<u8> = shares.iter().map(Share::x).collect();
    let mut dealer = Dealer::new(info.k, &xs, info.len, rng);
    let mut buffers: Vec<Vec<u8>> = vec![vec![0u8; info.len]; shares.len()];
    let mut offset = 0;
    while offset < info.len {
        let end = (offset + BLOCK_LEN).min(info.len);
        let bases: Vec<&[u8]> = shares.iter().map(|s| &s.data()[offset..end]).collect();
        let mut views: Vec<&mut [u8]> = buffers.iter_mut().map(|b| &mut b[offset..end]).collect();
        dealer.deal_block_per_share(&bases, rng, &mut views);
        offset = end;
    }
    xs.iter()
        .zip(buffers)
        .map(|(&x, data)| Share::from_parts(dealer.set_id, info.k, x, data))
        .collect()
}

/// Checks `2 <= k <= n <= 255` and that the x coordinates are non-zero and distinct.
pub(crate) fn validate_split(k: u8, xs: &[u8]) -> Result<()> {
    let n = xs.len();
    if k < 2 || usize::from(k) > n || n > 255 {
        return Err(ShamirError::InvalidThreshold { k: k.into(), n });
    }
    check_xs(xs.iter().copied())
}

/// Checks that x coordinates are non-zero and distinct.
fn check_xs(xs: impl IntoIterator<Item = u8>) -> Result<()> {
    let mut seen = [false; 256];
    for x in xs {
        if x == 0 {
            return Err(ShamirError::ZeroX);
        }
        if std::mem::replace(&mut seen[usize::from(x)], true) {
            return Err(ShamirError::DuplicateX { x });
        }
    }
    Ok(())
}

fn check_buffers(outs: &[&mut [u8]], n: usize, len: usize) -> Result<()> {
    if outs.len() != n {
        return Err(ShamirError::BufferMismatch {
            expected: n,
            found: outs.len(),
        });
    }
    if let Some(bad) = outs.iter().find(|o| o.len() != len) {
        return Err(ShamirError::BufferMismatch {
            expected: len,
            found: bad.len(),
        });
    }
    Ok(())
}

/// What every share of a valid set agrees on.
struct SetInfo {
    set_id: SetId,
    k: u8,
    len: usize,
}

/// Checks that the shares belong to one sharing, have one threshold and length,
/// distinct non-zero x, and number at least k.
fn validate_set(shares: &[Share]) -> Result<SetInfo> {
    let Some(first) = shares.first() else {
        return Err(ShamirError::NotEnoughShares { have: 0, need: 2 });
    };
    let info = SetInfo {
        set_id: first.set_id(),
        k: first.threshold(),
        len: first.data().len(),
    };
    for s in shares {
        if s.set_id() != info.set_id {
            return Err(ShamirError::DifferentSets);
        }
        if s.threshold() != info.k {
            return Err(ShamirError::ThresholdMismatch {
                expected: info.k,
                found: s.threshold(),
            });
        }
        if s.data().len() != info.len {
            return Err(ShamirError::LengthMismatch {
                x: s.x(),
                expected: info.len,
                found: s.data().len(),
            });
        }
    }
    check_xs(shares.iter().map(Share::x))?;
    if shares.len() < usize::from(info.k) {
        return Err(ShamirError::NotEnoughShares {
            have: shares.len(),
            need: info.k.into(),
        });
    }
    Ok(info)
}

/// Evaluates fresh random polynomials block by block. For each block it draws the
/// `k - 1` random coefficient vectors in one call, in order, so the consumption of the
/// generator depends only on block boundaries (shared by one-shot and streaming).
pub(crate) struct Dealer {
    pub(crate) k: u8,
    pub(crate) xs: Vec<u8>,
    pub(crate) set_id: SetId,
    /// One combination per share: constants `[1, x, x^2, ..., x^(k-1)]`.
    evaluators: Vec<LinComb>,
    /// The random coefficients of the current block; zeroized on drop.
    coefs: Zeroizing<Vec<u8>>,
}

impl Dealer {
    /// Draws the set id from `rng` and prepares the evaluators for secrets of up to
    /// `len_hint` bytes per block (the scratch is sized to `min(len_hint, BLOCK_LEN)`,
    /// so small secrets neither allocate nor wipe a whole block). Inputs are validated.
    pub(crate) fn new<R: CryptoRng + ?Sized>(
        k: u8,
        xs: &[u8],
        len_hint: usize,
        rng: &mut R,
    ) -> Dealer {
        let mut id = [0u8; 16];
        rng.fill_bytes(&mut id);
        Dealer {
            k,
            xs: xs.to_vec(),
            set_id: SetId(id),
            evaluators: xs
                .iter()
                .map(|&x| LinComb::new(&gf::powers(x, k.into())))
                .collect(),
            coefs: Zeroizing::new(vec![0u8; (usize::from(k) - 1) * len_hint.min(BLOCK_LEN)]),
        }
    }

    /// Deals one block of one secret to every share.
    pub(crate) fn deal_block<R: CryptoRng + ?Sized>(
        &mut self,
        secret: &[u8],
        rng: &mut R,
        outs: &mut [&mut [u8]],
    ) {
        self.deal(|_| secret, secret.len(), rng, outs);
    }

    /// Adds one block of a sharing of zero to each share's own base (refresh).
    fn deal_block_per_share<R: CryptoRng + ?Sized>(
        &mut self,
        bases: &[&[u8]],
        rng: &mut R,
        outs: &mut [&mut [u8]],
    ) {
        let len = bases.first().map_or(0, |b| b.len());
        self.deal(|i| bases[i], len, rng, outs);
    }

    fn deal<'a, R: CryptoRng + ?Sized>(
        &mut self,
        base: impl Fn(usize) -> &'a [u8],
        len: usize,
        rng: &mut R,
        outs: &mut [&mut [u8]],
    ) {
        assert!(
            len <= BLOCK_LEN && (usize::from(self.k) - 1) * len <= self.coefs.len(),
            "a block fits the scratch the dealer was sized for"
        );
        assert_eq!(outs.len(), self.evaluators.len(), "one output per share");
        let degree = usize::from(self.k) - 1;
        let coefs = &mut self.coefs[..degree * len];
        rng.fill_bytes(coefs);
        let coefs = &*coefs;
        let mut inputs: Vec<&[u8]> = Vec::with_capacity(degree + 1);
        for (i, (eval, out)) in self.evaluators.iter().zip(outs.iter_mut()).enumerate() {
            inputs.clear();
            inputs.push(base(i));
            inputs.extend(coefs.chunks_exact(len.max(1)).take(degree));
            if len == 0 {
                continue;
            }
            debug_assert_eq!(inputs.len(), eval.arity());
            eval.apply(&inputs, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_combination_enumerates_all_subsets_once() {
        let mut c = vec![0, 1, 2];
        let mut count = 1;
        while next_combination(&mut c, 6) {
            assert!(c.windows(2).all(|w| w[0] < w[1]));
            count += 1;
        }
        assert_eq!(count, 20); // C(6, 3)
    }
}
