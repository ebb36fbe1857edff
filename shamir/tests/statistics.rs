//! Promise P1, information-theoretically: any k - 1 shares are distributed the same way
//! whatever the secret. Each byte position of a long secret is an independent sharing,
//! so one split of an L-byte constant secret yields L samples of the joint distribution
//! of the k - 1 share bytes at that position.
//!
//! The test compares the histograms for two different secrets with a chi-square test
//! of homogeneity, and each against the uniform distribution. The same test is run on
//! `sharks` 0.5, which draws coefficients from 1..=255 (RUSTSEC-2024-0398), to show
//! that it catches that bias: a test that passes for everything would guard nothing.
//!
//! Generators are seeded, so the statistics are deterministic; the thresholds (|z| < 5
//! for "same distribution", z > 10 for "caught") are far from where either side lands.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests: a panic is the failure report

use kakera_shamir::{Share, split_with_rng};
use rand_chacha::ChaCha8Rng;
use rand_core::SeedableRng;

/// Converts a chi-square statistic with `df` degrees of freedom into an approximate
/// standard normal score (Wilson–Hilferty), so thresholds read the same for any df.
fn z_score(chi2: f64, df: f64) -> f64 {
    let t = (chi2 / df).powf(1.0 / 3.0);
    let mean = 1.0 - 2.0 / (9.0 * df);
    let sd = (2.0 / (9.0 * df)).sqrt();
    (t - mean) / sd
}

/// Chi-square test of homogeneity for two histograms with equal totals.
fn homogeneity_z(a: &[u64], b: &[u64]) -> f64 {
    assert_eq!(a.iter().sum::<u64>(), b.iter().sum::<u64>());
    let mut chi2 = 0.0;
    let mut bins = 0usize;
    for (&x, &y) in a.iter().zip(b) {
        if x + y > 0 {
            let d = x as f64 - y as f64;
            chi2 += d * d / (x + y) as f64;
            bins += 1;
        }
    }
    z_score(chi2, (bins - 1) as f64)
}

/// Chi-square goodness of fit against the uniform distribution.
fn uniformity_z(a: &[u64]) -> f64 {
    let total: u64 = a.iter().sum();
    let expected = total as f64 / a.len() as f64;
    let chi2: f64 = a
        .iter()
        .map(|&o| (o as f64 - expected).powi(2) / expected)
        .sum();
    z_score(chi2, (a.len() - 1) as f64)
}

/// Histogram of the joint value of the first `k - 1` shares' bytes.
fn joint_histogram(share_data: &[&[u8]]) -> Vec<u64> {
    let dims = share_data.len();
    let mut hist = vec![0u64; 1 << (8 * dims)];
    for pos in 0..share_data[0].len() {
        let mut bin = 0usize;
        for d in share_data {
            bin = (bin << 8) | usize::from(d[pos]);
        }
        hist[bin] += 1;
    }
    hist
}

fn kakera_histogram(secret_byte: u8, k: u8, len: usize, seed: u64) -> Vec<u64> {
    let secret = vec![secret_byte; len];
    let xs: Vec<u8> = (1..=k).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let shares: Vec<Share> = split_with_rng(&secret, k, &xs, &mut rng).unwrap();
    let data: Vec<&[u8]> = shares[..usize::from(k) - 1]
        .iter()
        .map(Share::data)
        .collect();
    joint_histogram(&data)
}

fn sharks_histogram(secret_byte: u8, k: u8, len: usize, seed: u64) -> Vec<u64> {
    let secret = vec![secret_byte; len];
    let mut rng =
        <rand_chacha_03::ChaCha8Rng as rand_chacha_03::rand_core::SeedableRng>::seed_from_u64(seed);
    let shares: Vec<Vec<u8>> = sharks::Sharks(k)
        .dealer_rng(&secret, &mut rng)
        .take(usize::from(k) - 1)
        .map(|s| Vec::from(&s)[1..].to_vec())
        .collect();
    let data: Vec<&[u8]> = shares.iter().map(Vec::as_slice).collect();
    joint_histogram(&data)
}

/// Samples per histogram bin: 400 for one share (256 bins), 8 for two (65,536 bins).
fn sample_len(k: u8) -> usize {
    match k {
        2 => 256 * 400,
        3 => 65_536 * 8,
        _ => unreachable!("the test covers k = 2 and k = 3"),
    }
}

#[test]
fn k_minus_1_shares_are_independent_of_the_secret() {
    for k in [2u8, 3] {
        let len = sample_len(k);
        let a = kakera_histogram(0x00, k, len, 1);
        let b = kakera_histogram(0xA7, k, len, 2);
        let same = homogeneity_z(&a, &b);
        assert!(same.abs() < 5.0, "k={k}: homogeneity z = {same:.2}");
        for (name, h) in [("0x00", &a), ("0xA7", &b)] {
            let u = uniformity_z(h);
            assert!(u.abs() < 5.0, "k={k}, secret {name}: uniformity z = {u:.2}");
        }
    }
}

#[test]
fn the_same_test_catches_the_sharks_rustsec_2024_0398_bias() {
    for k in [2u8, 3] {
        let len = sample_len(k);
        let a = sharks_histogram(0x00, k, len, 1);
        let b = sharks_histogram(0xA7, k, len, 2);
        let z = homogeneity_z(&a, &b);
        assert!(
            z > 10.0,
            "k={k}: the biased dealer was not caught (z = {z:.2})"
        );
    }
}

#[test]
fn with_k_2_a_biased_share_excludes_the_secret_and_ours_does_not() {
    // The concrete leak: sharks' share never equals the secret, so each share rules one
    // value out. Ours equals it about 1/256 of the time, like any other value.
    let len = 256 * 400;
    let theirs = sharks_histogram(0x42, 2, len, 3);
    assert_eq!(
        theirs[0x42], 0,
        "sharks 0.5 should never produce y == secret"
    );
    let ours = kakera_histogram(0x42, 2, len, 3);
    assert!(
        (300..=500).contains(&ours[0x42]),
        "y == secret {} times",
        ours[0x42]
    );
}
