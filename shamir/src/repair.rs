//! Masked repair: regenerate the share at `x` on a new holder from `k` helpers so that
//! no party — the new holder included — ever sees more than what it ends up holding.
//!
//! The share at `x` is a linear combination of any `k` shares `s_1..s_k` (at distinct
//! `x_1..x_k`): `s_x = sum_i l_i * s_i`, with the Lagrange weights `l_i` of the `x_i`
//! evaluated at `x`. If each helper sent its term `l_i * s_i` in the clear, the new
//! holder could divide by `l_i` (public) and recover `s_i`: `k` shares, the record.
//!
//! So each pair of helpers `i < j` shares a random pad `r_ij` (expanded from a 32-byte
//! seed that helper `i` draws and sends to helper `j` directly, never through the new
//! holder); helper `i` sends `m_i = l_i * s_i + sum_{j != i} r_ij`. In GF(2^8) addition
//! is XOR, so every pad appears twice in `sum_i m_i` and cancels: the new holder adds
//! the `k` masked terms and gets `s_x`. What it receives is `k` values, uniformly
//! random subject to their sum being `s_x` — one share, which is independent of the
//! record for `k >= 2`. A helper sees only its own share and its seeds. (Laing and
//! Stinson's survey of repairable threshold schemes; the pairwise-pad form of the
//! proactive recovery in Herzberg, Jarecki, Krawczyk and Yung, 1995.)
//!
//! What this does not protect against: the new holder colluding with a helper (the
//! pair can strip that helper's pads). The promise is about any single node.
//!
//! Pure: no IO; the caller carries seeds and terms between nodes.

use zeroize::Zeroizing;

use crate::error::{Result, ShamirError};
use crate::gf;
use crate::kernel::LinComb;
use crate::rng::OsSeededRng;
use crate::share::{SetId, Share};

/// Length of a pad seed.
pub const SEED_BYTES: usize = 32;

/// A pad seed shared by two helpers. Zeroized on drop; never printed.
#[derive(Clone)]
pub struct PadSeed(Zeroizing<[u8; SEED_BYTES]>);

impl std::fmt::Debug for PadSeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PadSeed(..)")
    }
}

impl PadSeed {
    /// A fresh seed from the operating system.
    pub fn random() -> Result<PadSeed> {
        let mut s = Zeroizing::new([0u8; SEED_BYTES]);
        getrandom::fill(s.as_mut_slice()).map_err(|e| ShamirError::Rng(e.to_string()))?;
        Ok(PadSeed(s))
    }

    /// A seed received from the other helper.
    pub fn from_bytes(bytes: [u8; SEED_BYTES]) -> PadSeed {
        PadSeed(Zeroizing::new(bytes))
    }

    /// The seed's bytes, to send to the other helper over an authenticated channel.
    pub fn as_bytes(&self) -> &[u8; SEED_BYTES] {
        &self.0
    }

    /// The seed for one share of a batched session: keyed BLAKE3 of `label` (the
    /// record id) under this seed. Two helpers holding the same session seed derive
    /// the same per-record seed, so one pad exchange masks every share of a batch,
    /// each with its own keystream.
    pub fn derive(&self, label: &[u8]) -> PadSeed {
        let mut hash = blake3::Hasher::new_keyed(&self.0);
        hash.update(b"kakera 2026-12 batched repair pad");
        hash.update(label);
        let mut out = Zeroizing::new([0u8; SEED_BYTES]);
        hash.finalize_xof().fill(out.as_mut());
        PadSeed(out)
    }

    /// XORs this seed's pad (AES-256-CTR keystream under the seed) into `buf`.
    fn xor_pad_into(&self, buf: &mut [u8]) {
        use rand_core::Rng;
        let mut stream = OsSeededRng::keyed(&self.0);
        let mut pad = Zeroizing::new(vec![0u8; buf.len()]);
        stream.fill_bytes(&mut pad);
        for (b, p) in buf.iter_mut().zip(pad.iter()) {
            *b ^= p;
        }
    }
}

fn check_session(helper_xs: &[u8], target_x: u8, k: u8) -> Result<()> {
    if target_x == 0 || helper_xs.contains(&0) {
        return Err(ShamirError::ZeroX);
    }
    if helper_xs.len() != usize::from(k) {
        return Err(ShamirError::NotEnoughShares {
            have: helper_xs.len(),
            need: k.into(),
        });
    }
    let mut seen = [false; 256];
    for &x in helper_xs.iter().chain(std::iter::once(&target_x)) {
        if seen[usize::from(x)] {
            return Err(ShamirError::DuplicateX { x });
        }
        seen[usize::from(x)] = true;
    }
    Ok(())
}

/// One helper's masked term: `l_i * share + (the pads it shares with every other
/// helper)`. `helper_xs` are the `k` helpers' x (the share's among them), `target_x`
/// the share being regenerated, `seeds` the seeds this helper shares with each other
/// helper (`k - 1` of them).
pub fn masked_term(
    share: &Share,
    helper_xs: &[u8],
    target_x: u8,
    seeds: &[PadSeed],
) -> Result<Zeroizing<Vec<u8>>> {
    check_session(helper_xs, target_x, share.threshold())?;
    let pos =
        helper_xs
            .iter()
            .position(|&x| x == share.x())
            .ok_or(ShamirError::BufferMismatch {
                expected: helper_xs.len(),
                found: 0,
            })?;
    if seeds.len() + 1 != helper_xs.len() {
        return Err(ShamirError::BufferMismatch {
            expected: helper_xs.len() - 1,
            found: seeds.len(),
        });
    }
    let weight = gf::lagrange_weights(helper_xs, target_x)[pos];
    let mut out = Zeroizing::new(vec![0u8; share.data().len()]);
    LinComb::new(&[weight]).apply(&[share.data()], &mut out);
    for s in seeds {
        s.xor_pad_into(&mut out);
    }
    Ok(out)
}

/// The new holder's step: adds the `k` masked terms into the share at `target_x` of
/// the sharing `set_id` with threshold `k`.
pub fn assemble(terms: &[&[u8]], set_id: SetId, k: u8, target_x: u8) -> Result<Share> {
    if target_x == 0 {
        return Err(ShamirError::ZeroX);
    }
    if terms.len() != usize::from(k) {
        return Err(ShamirError::NotEnoughShares {
            have: terms.len(),
            need: k.into(),
        });
    }
    let len = terms[0].len();
    if let Some(bad) = terms.iter().find(|t| t.len() != len) {
        return Err(ShamirError::LengthMismatch {
            x: target_x,
            expected: len,
            found: bad.len(),
        });
    }
    let mut data = vec![0u8; len];
    for t in terms {
        for (d, b) in data.iter_mut().zip(t.iter()) {
            *d ^= b;
        }
    }
    Share::from_parts(set_id, k, target_x, data)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests: a panic is the failure report
mod tests {
    use super::*;

    /// All pairwise seeds of a session of `k` helpers: `seeds[i]` is helper i's list.
    fn session_seeds(k: usize) -> Vec<Vec<PadSeed>> {
        let mut per: Vec<Vec<PadSeed>> = vec![Vec::new(); k];
        for i in 0..k {
            for j in i + 1..k {
                let s = PadSeed::random().unwrap();
                per[i].push(s.clone());
                per[j].push(s);
            }
        }
        per
    }

    fn masked_repair(shares: &[Share], helpers: &[usize], x: u8) -> (Vec<Vec<u8>>, Share) {
        let xs: Vec<u8> = helpers.iter().map(|&h| shares[h].x()).collect();
        let seeds = session_seeds(helpers.len());
        let terms: Vec<Vec<u8>> = helpers
            .iter()
            .zip(&seeds)
            .map(|(&h, s)| masked_term(&shares[h], &xs, x, s).unwrap().to_vec())
            .collect();
        let refs: Vec<&[u8]> = terms.iter().map(Vec::as_slice).collect();
        let k = shares[0].threshold();
        let share = assemble(&refs, shares[0].set_id(), k, x).unwrap();
        (terms, share)
    }

    /// P4 (batched repair): one pad exchange serves every record of a batch; each
    /// record's pads are derived from the session seeds with its id, so every
    /// record's terms still sum to its exact share, and two records never share a
    /// pad (a term of one does not unmask a term of another).
    #[test]
    fn derived_pads_regenerate_every_share_of_a_batch() {
        let k = 3usize;
        let seeds = session_seeds(k);
        let records: Vec<(Vec<Share>, [u8; 16])> = (0..4u8)
            .map(|r| {
                let secret: Vec<u8> = (0..777u32).map(|i| (i as u8) ^ r).collect();
                (crate::split(&secret, 3, 5).unwrap(), [r; 16])
            })
            .collect();
        for (shares, id) in &records {
            let helpers = [0usize, 2, 3];
            let xs: Vec<u8> = helpers.iter().map(|&h| shares[h].x()).collect();
            let terms: Vec<Vec<u8>> = helpers
                .iter()
                .zip(&seeds)
                .map(|(&h, s)| {
                    let derived: Vec<PadSeed> = s.iter().map(|p| p.derive(id)).collect();
                    masked_term(&shares[h], &xs, shares[4].x(), &derived)
                        .unwrap()
                        .to_vec()
                })
                .collect();
            let refs: Vec<&[u8]> = terms.iter().map(Vec::as_slice).collect();
            let got = assemble(&refs, shares[0].set_id(), 3, shares[4].x()).unwrap();
            assert_eq!(got.encode(), shares[4].encode());
        }
        let seed = &seeds[0][0];
        assert_ne!(
            seed.derive(&[0; 16]).as_bytes(),
            seed.derive(&[1; 16]).as_bytes()
        );
        assert_ne!(seed.derive(&[0; 16]).as_bytes(), seed.as_bytes());
    }

    /// P4: the share regenerated through masked terms is byte for byte the dealer's
    /// (so it matches the catalog digest), for several k and helper sets.
    #[test]
    fn masked_repair_regenerates_the_exact_share() {
        for (k, n) in [(2u8, 3u8), (3, 5), (4, 7), (5, 9)] {
            let secret: Vec<u8> = (0..1000u32).map(|i| (i * 7 + 3) as u8).collect();
            let shares = crate::split(&secret, k, n).unwrap();
            let lost = usize::from(n) - 1;
            let helpers: Vec<usize> = (0..usize::from(k)).collect();
            let (_, got) = masked_repair(&shares, &helpers, shares[lost].x());
            assert_eq!(got.encode(), shares[lost].encode(), "k = {k}, n = {n}");
            assert_eq!(
                got.encode(),
                crate::regenerate(&shares[..usize::from(k)], shares[lost].x())
                    .unwrap()
                    .encode()
            );
        }
    }

    /// Without the pads a term is `l_i * s_i`, from which the new holder would recover
    /// the helper's share; with them it is not. (Guards against a regression that
    /// drops the masking.)
    #[test]
    fn terms_do_not_reveal_helper_shares() {
        let shares = crate::split(&[0x5au8; 4096], 3, 5).unwrap();
        let xs = [1u8, 2, 3];
        let seeds = session_seeds(3);
        let term = masked_term(&shares[0], &xs, 5, &seeds[0]).unwrap();
        let unmasked = masked_term(&shares[0], &[1, 2, 3], 5, &[]).err();
        assert!(unmasked.is_some(), "a term without its pads is refused");
        let w = gf::lagrange_weights(&xs, 5)[0];
        let mut bare = vec![0u8; 4096];
        LinComb::new(&[w]).apply(&[shares[0].data()], &mut bare);
        let equal = term.iter().zip(&bare).filter(|(a, b)| a == b).count();
        // Independent uniform bytes agree about 1 time in 256.
        assert!(equal < 64, "{equal} of 4096 bytes unmasked");
    }

    /// P4: what the new holder receives is independent of the record. Over many
    /// repairs of a one-byte record that is 0x00 and one that is 0xff, the holder's
    /// view (k = 3 masked terms) is uniform in every term and every pair of terms, for
    /// both records alike (chi-square, 255 degrees of freedom, p ~ 1e-6 threshold).
    #[test]
    fn the_new_holder_view_is_independent_of_the_record() {
        const TRIALS: usize = 40_000;
        // chi-square 255 dof: mean 255, sd ~22.6; 400 is beyond 6 sd.
        const LIMIT: f64 = 400.0;
        let chi = |counts: &[u64; 256]| {
            let e = TRIALS as f64 / 256.0;
            counts
                .iter()
                .map(|&c| (c as f64 - e).powi(2) / e)
                .sum::<f64>()
        };
        let mut views: Vec<Vec<[u8; 3]>> = Vec::new();
        for secret in [0x00u8, 0xff] {
            let mut view = Vec::with_capacity(TRIALS);
            for _ in 0..TRIALS {
                let shares = crate::split(&[secret], 3, 5).unwrap();
                let (terms, _) = masked_repair(&shares, &[0, 1, 2], 5);
                view.push([terms[0][0], terms[1][0], terms[2][0]]);
            }
            for f in [
                |v: &[u8; 3]| v[0],
                |v: &[u8; 3]| v[1],
                |v: &[u8; 3]| v[2],
                |v: &[u8; 3]| v[0] ^ v[1],
                |v: &[u8; 3]| v[1] ^ v[2],
                |v: &[u8; 3]| v[0] ^ v[2],
                // The sum of all three is the regenerated share: uniform too (k >= 2).
                |v: &[u8; 3]| v[0] ^ v[1] ^ v[2],
            ] {
                let mut counts = [0u64; 256];
                for v in &view {
                    counts[usize::from(f(v))] += 1;
                }
                assert!(
                    chi(&counts) < LIMIT,
                    "secret {secret:#x}: chi2 {}",
                    chi(&counts)
                );
            }
            // The attack unmasked terms allow: divide each by its public weight and
            // interpolate at 0. Without pads this is the secret every time.
            let (to_x, to_0) = (
                gf::lagrange_weights(&[1, 2, 3], 5),
                gf::lagrange_weights(&[1, 2, 3], 0),
            );
            let mut counts = [0u64; 256];
            for v in &view {
                let guess = (0..3).fold(0u8, |acc, i| {
                    acc ^ gf::mul(gf::mul(v[i], gf::inv(to_x[i])), to_0[i])
                });
                counts[usize::from(guess)] += 1;
            }
            assert!(
                chi(&counts) < LIMIT,
                "secret {secret:#x}: the terms reveal it (chi2 {})",
                chi(&counts)
            );
            views.push(view);
        }
        // Two-sample test on the first term's value: same distribution for both records.
        let (mut a, mut b) = ([0u64; 256], [0u64; 256]);
        for (va, vb) in views[0].iter().zip(&views[1]) {
            a[usize::from(va[0] ^ va[1])] += 1;
            b[usize::from(vb[0] ^ vb[1])] += 1;
        }
        let two: f64 = a
            .iter()
            .zip(&b)
            .filter(|(x, y)| **x + **y > 0)
            .map(|(&x, &y)| (x as f64 - y as f64).powi(2) / (x + y) as f64)
            .sum();
        assert!(two < LIMIT, "two-sample chi2 {two}");
    }

    /// Bad sessions are refused with an error, never a panic.
    #[test]
    fn bad_sessions_are_refused() {
        let shares = crate::split(b"abc", 3, 5).unwrap();
        let seeds = session_seeds(3);
        assert_eq!(
            masked_term(&shares[0], &[1, 2, 3], 0, &seeds[0]).unwrap_err(),
            ShamirError::ZeroX
        );
        assert_eq!(
            masked_term(&shares[0], &[1, 2, 2], 5, &seeds[0]).unwrap_err(),
            ShamirError::DuplicateX { x: 2 }
        );
        assert_eq!(
            masked_term(&shares[0], &[1, 2, 3], 3, &seeds[0]).unwrap_err(),
            ShamirError::DuplicateX { x: 3 }
        );
        assert!(masked_term(&shares[0], &[2, 3, 4], 5, &seeds[0]).is_err());
        assert!(masked_term(&shares[0], &[1, 2], 5, &seeds[0]).is_err());
        assert!(assemble(&[b"ab", b"abc", b"abc"], shares[0].set_id(), 3, 5).is_err());
        assert!(assemble(&[b"abc", b"abc"], shares[0].set_id(), 3, 5).is_err());
    }
}
