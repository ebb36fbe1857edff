//! kakera-shamir against `sharks` 0.5 in the same run: split and combine of 1 KiB,
//! 64 KiB and 1 MiB secrets at (k, n) = (3, 5) and (5, 9).
//!
//! Group names are `split_{k}of{n}_{size}` and `combine_{k}of{n}_{size}`; functions:
//! - `kakera`: the allocating API (`split`, `combine`) with a fresh OS-seeded CSPRNG
//!   per split, as a caller uses it;
//! - `kakera_into`: the buffer-reusing API (`split_into`, `combine_into`);
//! - `sharks`: `Sharks::dealer(..).take(n)` and `Sharks::recover`;
//! - `sharks_chacha8`: `Sharks::dealer_rng` with a ChaCha8 generator, sharks' fastest
//!   split (its `dealer` pays for `thread_rng`), so ratios can be read against both.
//!
//! `scripts/bench-shamir.sh` runs this with short measurement times and prints ratios.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)] // a bench: a panic is the failure report

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use kakera_shamir::{OsSeededRng, combine, combine_into, default_xs, split, split_into};
use rand_core::Rng;

const SIZES: [(usize, &str); 3] = [(1 << 10, "1KiB"), (64 << 10, "64KiB"), (1 << 20, "1MiB")];
const PARAMS: [(u8, u8); 2] = [(3, 5), (5, 9)];

fn secret(len: usize) -> Vec<u8> {
    let mut s = vec![0u8; len];
    OsSeededRng::new().unwrap().fill_bytes(&mut s);
    s
}

fn bench_split(c: &mut Criterion) {
    for (k, n) in PARAMS {
        for (len, label) in SIZES {
            let secret = secret(len);
            let xs = default_xs(n);
            let mut group = c.benchmark_group(format!("split_{k}of{n}_{label}"));
            group.throughput(Throughput::Bytes(len as u64));
            group.bench_function("kakera", |b| {
                b.iter(|| split(black_box(&secret), k, n).unwrap())
            });
            let mut buffers = vec![vec![0u8; len]; usize::from(n)];
            group.bench_function("kakera_into", |b| {
                b.iter(|| {
                    let mut rng = OsSeededRng::new().unwrap();
                    let mut outs: Vec<&mut [u8]> =
                        buffers.iter_mut().map(Vec::as_mut_slice).collect();
                    split_into(black_box(&secret), k, &xs, &mut rng, &mut outs).unwrap()
                })
            });
            let sharks = sharks::Sharks(k);
            group.bench_function("sharks", |b| {
                b.iter(|| {
                    sharks
                        .dealer(black_box(&secret))
                        .take(usize::from(n))
                        .collect::<Vec<_>>()
                })
            });
            let mut chacha =
                <rand_chacha_03::ChaCha8Rng as rand_chacha_03::rand_core::SeedableRng>::seed_from_u64(1);
            group.bench_function("sharks_chacha8", |b| {
                b.iter(|| {
                    sharks
                        .dealer_rng(black_box(&secret), &mut chacha)
                        .take(usize::from(n))
                        .collect::<Vec<_>>()
                })
            });
            group.finish();
        }
    }
}

fn bench_combine(c: &mut Criterion) {
    for (k, n) in PARAMS {
        for (len, label) in SIZES {
            let secret = secret(len);
            let ours = split(&secret, k, n).unwrap();
            let kk = usize::from(k);
            let mut group = c.benchmark_group(format!("combine_{k}of{n}_{label}"));
            group.throughput(Throughput::Bytes(len as u64));
            group.bench_function("kakera", |b| {
                b.iter(|| combine(black_box(&ours[..kk])).unwrap())
            });
            let mut out = vec![0u8; len];
            group.bench_function("kakera_into", |b| {
                b.iter(|| combine_into(black_box(&ours[..kk]), &mut out).unwrap())
            });
            let sharks = sharks::Sharks(k);
            let theirs: Vec<sharks::Share> = sharks.dealer(&secret).take(usize::from(n)).collect();
            group.bench_function("sharks", |b| {
                b.iter(|| sharks.recover(black_box(&theirs[..kk])).unwrap())
            });
            group.finish();
        }
    }
}

criterion_group!(benches, bench_split, bench_combine);
criterion_main!(benches);
