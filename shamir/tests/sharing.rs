//! Functional tests of kakera-shamir: round trips, the `sharks` oracle, regenerate,
//! consistency, refresh, streaming and every documented error. Guards promise P1
//! (any k of n reconstruct; the math the rest of kakera rests on) and P3 (auditors'
//! consistency check names bad shares).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests: a panic is the failure report

use kakera_shamir::{
    BLOCK_LEN, Consistency, SetId, ShamirError, Share, SplitStream, check_consistency, combine,
    combine_into, default_xs, refresh, regenerate, split, split_into, split_with_rng,
};
use proptest::prelude::*;
use rand_chacha::ChaCha8Rng;
use rand_core::{Infallible, Rng, SeedableRng, TryCryptoRng, TryRng};

fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

fn bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    rng(seed ^ 0xA5A5).fill_bytes(&mut v);
    v
}

/// A "generator" that replays fixed bytes: lets a test choose the coefficients.
struct Replay(Vec<u8>, usize);

impl TryRng for Replay {
    type Error = Infallible;
    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        let mut b = [0u8; 4];
        self.try_fill_bytes(&mut b)?;
        Ok(u32::from_le_bytes(b))
    }
    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        let mut b = [0u8; 8];
        self.try_fill_bytes(&mut b)?;
        Ok(u64::from_le_bytes(b))
    }
    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        for d in dst {
            *d = self.0[self.1];
            self.1 += 1;
        }
        Ok(())
    }
}
impl TryCryptoRng for Replay {}

/// Every k-subset of 0..n, for small n.
fn subsets(n: usize, k: usize) -> Vec<Vec<usize>> {
    (0u32..1 << n)
        .filter(|m| m.count_ones() as usize == k)
        .map(|m| (0..n).filter(|i| m >> i & 1 == 1).collect())
        .collect()
}

fn pick(shares: &[Share], idx: &[usize]) -> Vec<Share> {
    idx.iter().map(|&i| shares[i].clone()).collect()
}

#[test]
fn known_answer_vector_with_chosen_coefficients() {
    // k = 2, secret [0x01, 0x02], coefficients [0x03, 0x80]: y = s + a*x over 0x11D.
    // Hand-computed: 3*2 = 6, 3*3 = 5, 0x80*2 = 0x1D (reduced), 0x80*3 = 0x9D.
    let mut stream = vec![0x11; 16]; // set id
    stream.extend([0x03, 0x80]);
    let shares = split_with_rng(&[0x01, 0x02], 2, &[1, 2, 3], &mut Replay(stream, 0)).unwrap();
    assert_eq!(shares[0].data(), &[0x02, 0x82]);
    assert_eq!(shares[1].data(), &[0x07, 0x1F]);
    assert_eq!(shares[2].data(), &[0x04, 0x9F]);
    assert_eq!(shares[0].set_id(), SetId([0x11; 16]));
    assert_eq!(&combine(&shares[1..]).unwrap()[..], &[0x01, 0x02]);
}

#[test]
fn zero_coefficients_are_drawn_not_skipped() {
    // With all-zero coefficients every share equals the secret. An implementation that
    // rejects or remaps zero (the RUSTSEC-2024-0398 bias) would not produce this.
    let mut stream = vec![0; 16];
    stream.extend([0u8; 4]);
    let shares = split_with_rng(&[9, 8], 3, &[1, 2, 3], &mut Replay(stream, 0)).unwrap();
    for s in &shares {
        assert_eq!(s.data(), &[9, 8]);
    }
}

#[test]
fn seeded_split_is_reproducible_and_os_split_is_not() {
    let secret = bytes(1, 100);
    let a = split_with_rng(&secret, 3, &default_xs(5), &mut rng(7)).unwrap();
    let b = split_with_rng(&secret, 3, &default_xs(5), &mut rng(7)).unwrap();
    assert_eq!(a, b);
    let c = split(&secret, 3, 5).unwrap();
    let d = split(&secret, 3, 5).unwrap();
    assert_ne!(c[0].data(), d[0].data());
    assert_ne!(c[0].set_id(), d[0].set_id());
}

#[test]
fn every_k_subset_reconstructs_for_small_parameters() {
    for (k, n) in [(2u8, 2u8), (2, 3), (3, 5), (4, 6), (5, 9)] {
        let secret = bytes(u64::from(k) * 31 + u64::from(n), 1000);
        let shares = split(&secret, k, n).unwrap();
        for idx in subsets(n.into(), k.into()) {
            let got = combine(&pick(&shares, &idx)).unwrap();
            assert_eq!(&got[..], &secret[..], "k={k} n={n} subset {idx:?}");
        }
    }
}

#[test]
fn empty_and_large_secrets_round_trip() {
    for len in [
        0usize,
        1,
        2,
        BLOCK_LEN - 1,
        BLOCK_LEN,
        BLOCK_LEN + 1,
        3 * BLOCK_LEN + 17,
    ] {
        let secret = bytes(len as u64, len);
        let shares = split(&secret, 2, 3).unwrap();
        assert!(shares.iter().all(|s| s.data().len() == len));
        assert_eq!(
            &combine(&shares[1..]).unwrap()[..],
            &secret[..],
            "len {len}"
        );
    }
}

#[test]
fn a_256_mib_secret_round_trips() {
    let len = 256 << 20;
    let mut secret = vec![0u8; len];
    rng(256).fill_bytes(&mut secret);
    let shares = split(&secret, 2, 3).unwrap();
    let got = combine(&[shares[2].clone(), shares[0].clone()]).unwrap();
    assert!(got[..] == secret[..]);
}

#[test]
fn maximum_parameters_255_of_255_round_trip() {
    let secret = bytes(255, 64);
    let shares = split(&secret, 255, 255).unwrap();
    assert_eq!(&combine(&shares).unwrap()[..], &secret[..]);
    let err = combine(&shares[..254]).unwrap_err();
    assert_eq!(
        err,
        ShamirError::NotEnoughShares {
            have: 254,
            need: 255
        }
    );
}

#[test]
fn sharks_recovers_our_shares_and_we_recover_sharks_shares() {
    // sharks 0.5 is an independent implementation of the same field (0x11D): the
    // oracle that our polynomials are real Shamir polynomials.
    for (k, n) in [(2u8, 3u8), (3, 5), (5, 9), (10, 20)] {
        let secret = bytes(u64::from(n), 777);
        let ours = split(&secret, k, n).unwrap();
        let oracle = sharks::Sharks(k);
        let as_sharks: Vec<sharks::Share> = ours
            .iter()
            .map(|s| {
                let mut raw = vec![s.x()];
                raw.extend_from_slice(s.data());
                sharks::Share::try_from(raw.as_slice()).unwrap()
            })
            .collect();
        let recovered = oracle
            .recover(&as_sharks[n as usize - k as usize..])
            .unwrap();
        assert_eq!(recovered, secret, "sharks recovering ours, k={k} n={n}");

        let mut r = rand_chacha_03::ChaCha8Rng::from_seed_compat(u64::from(k));
        let theirs: Vec<sharks::Share> =
            oracle.dealer_rng(&secret, &mut r).take(n.into()).collect();
        let set = SetId([0; 16]);
        let converted: Vec<Share> = theirs
            .iter()
            .map(|s| {
                let raw = Vec::from(s);
                Share::from_parts(set, k, raw[0], raw[1..].to_vec()).unwrap()
            })
            .collect();
        assert_eq!(&combine(&converted[..k as usize]).unwrap()[..], &secret[..]);
    }
}

/// rand_chacha 0.3 (the version sharks' rand 0.8 takes) seeded from a u64.
trait FromSeedCompat {
    fn from_seed_compat(seed: u64) -> Self;
}
impl FromSeedCompat for rand_chacha_03::ChaCha8Rng {
    fn from_seed_compat(seed: u64) -> Self {
        <Self as rand_chacha_03::rand_core::SeedableRng>::seed_from_u64(seed)
    }
}

#[test]
fn caller_chosen_x_coordinates_work() {
    let secret = bytes(5, 300);
    let xs = [200u8, 7, 255, 31];
    let shares = split_with_rng(&secret, 3, &xs, &mut rng(5)).unwrap();
    assert_eq!(shares.iter().map(Share::x).collect::<Vec<_>>(), xs);
    assert_eq!(&combine(&shares[1..]).unwrap()[..], &secret[..]);
}

#[test]
fn split_into_matches_split_and_checks_buffers() {
    let secret = bytes(9, 20_000);
    let xs = default_xs(5);
    let expected = split_with_rng(&secret, 3, &xs, &mut rng(9)).unwrap();
    let mut bufs = vec![vec![0u8; secret.len()]; 5];
    let mut outs: Vec<&mut [u8]> = bufs.iter_mut().map(Vec::as_mut_slice).collect();
    let id = split_into(&secret, 3, &xs, &mut rng(9), &mut outs).unwrap();
    assert_eq!(id, expected[0].set_id());
    for (b, s) in bufs.iter().zip(&expected) {
        assert_eq!(b.as_slice(), s.data());
    }
    let mut short = vec![vec![0u8; 10]; 5];
    let mut outs: Vec<&mut [u8]> = short.iter_mut().map(Vec::as_mut_slice).collect();
    assert!(matches!(
        split_into(&secret, 3, &xs, &mut rng(9), &mut outs),
        Err(ShamirError::BufferMismatch { .. })
    ));
    let mut out = vec![0u8; 3];
    assert!(matches!(
        combine_into(&expected[..3], &mut out),
        Err(ShamirError::BufferMismatch { .. })
    ));
    let mut out = vec![0u8; secret.len()];
    combine_into(&expected[2..], &mut out).unwrap();
    assert_eq!(out, secret);
}

#[test]
fn invalid_parameters_get_clear_errors() {
    let s = b"x";
    assert!(matches!(
        split(s, 1, 3),
        Err(ShamirError::InvalidThreshold { k: 1, n: 3 })
    ));
    assert!(matches!(
        split(s, 4, 3),
        Err(ShamirError::InvalidThreshold { k: 4, n: 3 })
    ));
    let xs: Vec<u8> = (0..=255).map(|i: u32| (i % 255 + 1) as u8).collect();
    assert!(matches!(
        split_with_rng(s, 2, &xs, &mut rng(0)),
        Err(ShamirError::InvalidThreshold { n: 256, .. })
    ));
    assert_eq!(
        split_with_rng(s, 2, &[1, 0], &mut rng(0)).unwrap_err(),
        ShamirError::ZeroX
    );
    assert_eq!(
        split_with_rng(s, 2, &[3, 3], &mut rng(0)).unwrap_err(),
        ShamirError::DuplicateX { x: 3 }
    );
    assert_eq!(
        Share::from_parts(SetId([0; 16]), 2, 0, vec![]).unwrap_err(),
        ShamirError::ZeroX
    );
}

#[test]
fn combine_refuses_bad_share_sets() {
    let a = split_with_rng(b"record a", 3, &default_xs(5), &mut rng(1)).unwrap();
    let b = split_with_rng(b"record b", 3, &default_xs(5), &mut rng(2)).unwrap();
    assert_eq!(
        combine(&a[..2]).unwrap_err(),
        ShamirError::NotEnoughShares { have: 2, need: 3 }
    );
    assert_eq!(
        combine(&[]).unwrap_err(),
        ShamirError::NotEnoughShares { have: 0, need: 2 }
    );
    assert_eq!(
        combine(&[a[0].clone(), a[1].clone(), b[2].clone()]).unwrap_err(),
        ShamirError::DifferentSets
    );
    assert_eq!(
        combine(&[a[0].clone(), a[0].clone(), a[1].clone()]).unwrap_err(),
        ShamirError::DuplicateX { x: 1 }
    );
    let other_k = Share::from_parts(a[0].set_id(), 4, 9, a[2].data().to_vec()).unwrap();
    assert_eq!(
        combine(&[a[0].clone(), a[1].clone(), other_k]).unwrap_err(),
        ShamirError::ThresholdMismatch {
            expected: 3,
            found: 4
        }
    );
    let short = Share::from_parts(a[0].set_id(), 3, 9, vec![1, 2]).unwrap();
    assert!(matches!(
        combine(&[a[0].clone(), a[1].clone(), short]).unwrap_err(),
        ShamirError::LengthMismatch {
            x: 9,
            expected: 8,
            found: 2
        }
    ));
}

#[test]
fn regenerate_reproduces_every_share_byte_for_byte() {
    let secret = bytes(3, 3 * BLOCK_LEN + 5);
    let shares = split(&secret, 3, 6).unwrap();
    for target in 0..6 {
        let others: Vec<Share> = shares
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != target)
            .map(|(_, s)| s.clone())
            .collect();
        for idx in subsets(5, 3) {
            let helpers = pick(&others, &idx);
            let again = regenerate(&helpers, shares[target].x()).unwrap();
            assert_eq!(again, shares[target], "target x={}", shares[target].x());
            assert_eq!(again.encode(), shares[target].encode());
        }
    }
    // A brand-new coordinate is a valid share too.
    let extra = regenerate(&shares[..3], 77).unwrap();
    assert_eq!(
        &combine(&[extra, shares[4].clone(), shares[5].clone()]).unwrap()[..],
        &secret[..]
    );
    assert_eq!(regenerate(&shares[..3], 0).unwrap_err(), ShamirError::ZeroX);
    // Three shares one of which is the target leave only two helpers.
    assert_eq!(
        regenerate(&shares[..3], shares[0].x()).unwrap_err(),
        ShamirError::NotEnoughShares { have: 2, need: 3 }
    );
}

#[test]
fn consistency_check_accepts_honest_sets_and_names_bad_shares() {
    let secret = bytes(4, 5000);
    let shares = split(&secret, 3, 7).unwrap();
    assert_eq!(check_consistency(&shares).unwrap(), Consistency::Consistent);
    assert_eq!(
        check_consistency(&shares[..4]).unwrap(),
        Consistency::Consistent
    );

    // Every single bad share, at any position, flipped in one byte, is named.
    for bad in 0..7 {
        let mut s = shares.clone();
        s[bad].data_mut()[4321] ^= 0x01;
        assert_eq!(
            check_consistency(&s).unwrap(),
            Consistency::Outliers(vec![shares[bad].x()]),
            "bad share at {bad}"
        );
    }
    // Two bad shares of seven at k = 3: the good five form the unique group.
    let mut s = shares.clone();
    s[1].data_mut()[0] ^= 0xFF;
    s[5].data_mut()[4999] ^= 0x10;
    assert_eq!(
        check_consistency(&s).unwrap(),
        Consistency::Outliers(vec![shares[1].x(), shares[5].x()])
    );
    // k + 1 shares with one bad: detectable, not attributable.
    let mut s = shares[..4].to_vec();
    s[2].data_mut()[10] ^= 1;
    assert_eq!(check_consistency(&s).unwrap(), Consistency::Ambiguous);
    assert_eq!(
        check_consistency(&shares[..3]).unwrap_err(),
        ShamirError::TooFewForCheck { k: 3, have: 3 }
    );
}

#[test]
fn consistency_check_names_a_share_from_another_sharing_with_a_forged_set_id() {
    // A substituted share (another record's data under this record's header) is caught.
    let shares = split(&bytes(1, 64), 2, 4).unwrap();
    let other = split(&bytes(2, 64), 2, 4).unwrap();
    let mut s = shares.clone();
    s[3] = Share::from_parts(shares[3].set_id(), 2, 4, other[3].data().to_vec()).unwrap();
    assert_eq!(
        check_consistency(&s).unwrap(),
        Consistency::Outliers(vec![4])
    );
}

#[test]
fn refresh_keeps_the_secret_and_breaks_mixing_with_old_shares() {
    let secret = bytes(8, 2 * BLOCK_LEN + 3);
    let old = split(&secret, 3, 5).unwrap();
    let new = refresh(&old, &mut rng(8)).unwrap();
    assert_ne!(new[0].set_id(), old[0].set_id());
    for (o, n) in old.iter().zip(&new) {
        assert_eq!(o.x(), n.x());
        assert_ne!(o.data(), n.data());
    }
    for idx in subsets(5, 3) {
        assert_eq!(&combine(&pick(&new, &idx)).unwrap()[..], &secret[..]);
    }
    assert_eq!(check_consistency(&new).unwrap(), Consistency::Consistent);
    // Mixing is refused by set id...
    assert_eq!(
        combine(&[old[0].clone(), new[1].clone(), new[2].clone()]).unwrap_err(),
        ShamirError::DifferentSets
    );
    // ...and even with the set id forged, the mixture does not yield the secret.
    let forged = Share::from_parts(new[0].set_id(), 3, old[0].x(), old[0].data().to_vec()).unwrap();
    let mixed = combine(&[forged, new[1].clone(), new[2].clone()]).unwrap();
    assert_ne!(&mixed[..], &secret[..]);
}

#[test]
fn streaming_split_matches_one_shot_for_any_chunking() {
    let secret = bytes(11, 5 * BLOCK_LEN + 1234);
    let xs = default_xs(5);
    let expected = split_with_rng(&secret, 3, &xs, &mut rng(11)).unwrap();
    for chunking in [
        1usize,
        7,
        1000,
        BLOCK_LEN - 1,
        BLOCK_LEN,
        BLOCK_LEN + 1,
        3 * BLOCK_LEN,
    ] {
        let mut stream = SplitStream::new(3, &xs, rng(11)).unwrap();
        let mut outs = vec![Vec::new(); 5];
        for piece in secret.chunks(chunking) {
            stream.update(piece, &mut outs).unwrap();
        }
        let shares = stream.into_shares(outs).unwrap();
        assert_eq!(shares, expected, "chunking {chunking}");
    }
    let mut stream = SplitStream::new(3, &xs, rng(1)).unwrap();
    let mut wrong = vec![Vec::new(); 4];
    assert!(matches!(
        stream.update(b"abc", &mut wrong),
        Err(ShamirError::BufferMismatch {
            expected: 5,
            found: 4
        })
    ));
}

#[test]
fn encoded_shares_round_trip_and_corruption_is_detected() {
    let shares = split(&bytes(12, 999), 3, 5).unwrap();
    for s in &shares {
        let enc = s.encode();
        assert_eq!(&Share::decode(&enc).unwrap(), s);
        for pos in [0usize, 5, 6, 8, 30, 32, 500, enc.len() - 1] {
            let mut bad = enc.clone();
            bad[pos] ^= 0x04;
            assert!(Share::decode(&bad).is_err(), "flip at {pos} went unnoticed");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn any_k_of_n_reconstruct(
        seed in any::<u64>(),
        len in 0usize..3000,
        n in 2u8..=20,
        k_frac in 0.0f64..1.0,
        order in any::<u64>(),
    ) {
        let k = 2 + ((f64::from(n - 2)) * k_frac) as u8;
        let secret = bytes(seed, len);
        let shares = split_with_rng(&secret, k, &default_xs(n), &mut rng(seed)).unwrap();
        // A pseudo-random choice of k (and of k + 1, when possible) shares.
        let mut idx: Vec<usize> = (0..n as usize).collect();
        let mut o = order;
        for i in (1..idx.len()).rev() {
            idx.swap(i, (o % (i as u64 + 1)) as usize);
            o = o.rotate_left(7) ^ 0x9E37;
        }
        let chosen = pick(&shares, &idx[..k as usize]);
        prop_assert_eq!(&combine(&chosen).unwrap()[..], &secret[..]);
        if k < n {
            let more = pick(&shares, &idx[..k as usize + 1]);
            prop_assert_eq!(&combine(&more).unwrap()[..], &secret[..]);
            prop_assert_eq!(check_consistency(&more).unwrap(), Consistency::Consistent);
        }
        let fewer = pick(&shares, &idx[..k as usize - 1]);
        prop_assert!(combine(&fewer).is_err(), "k - 1 shares must not combine");
    }

    #[test]
    fn decode_never_panics_on_arbitrary_bytes(data in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = Share::decode(&data);
    }
}
