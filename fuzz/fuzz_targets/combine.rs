//! combine, regenerate and check_consistency on arbitrary share sets: an error or a
//! result, never a panic. A valid split of fuzzer-chosen bytes always recombines.
#![no_main]

use kakera_shamir::{SetId, Share, check_consistency, combine, regenerate, split};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&head, rest)) = data.split_first() else {
        return;
    };
    match head % 2 {
        0 => {
            // Arbitrary shares: [k, x, len, bytes...] records.
            let mut shares = Vec::new();
            let mut input = rest;
            while input.len() >= 3 && shares.len() < 16 {
                let (k, x, len) = (input[0], input[1], usize::from(input[2] % 32));
                input = &input[3..];
                let take = len.min(input.len());
                let set = SetId([head & 0x10; 16]);
                if let Ok(s) = Share::from_parts(set, k, x, input[..take].to_vec()) {
                    shares.push(s);
                }
                input = &input[take..];
            }
            let _ = combine(&shares);
            let _ = regenerate(&shares, head);
            let _ = check_consistency(&shares);
        }
        _ => {
            // A real split of the remaining bytes with fuzzer-chosen parameters.
            let Some((&kn, secret)) = rest.split_first() else {
                return;
            };
            let n = 2 + kn % 8;
            let k = 2 + (kn >> 4) % (n - 1);
            let shares = split(secret, k, n).expect("valid parameters");
            let got = combine(&shares[usize::from(n - k)..]).expect("k shares combine");
            assert_eq!(&got[..], secret);
        }
    }
});
