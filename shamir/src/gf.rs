//! Scalar arithmetic in GF(2^8) with the reduction polynomial x^8+x^4+x^3+x^2+1 (0x11D).
//!
//! Every function here is branch-free and table-free, so it is constant time even when
//! an argument is secret. In practice the crate only uses it on public values (x
//! coordinates, their powers, Lagrange weights); bulk secret data goes through
//! [`crate::kernel`].

/// The low byte of the reduction polynomial 0x11D (the x^8 term is implicit).
pub(crate) const POLY_LOW: u8 = 0x1D;

/// Multiplies `a` by the generator 2 (the polynomial `x`), reducing by 0x11D.
#[inline]
pub(crate) const fn xtime(a: u8) -> u8 {
    // mask is 0xFF when the top bit is set, 0x00 otherwise: no branch.
    let mask = 0u8.wrapping_sub(a >> 7);
    (a << 1) ^ (mask & POLY_LOW)
}

/// Field multiplication, constant time (shift-and-add with masks).
#[inline]
pub(crate) const fn mul(a: u8, b: u8) -> u8 {
    let mut acc = 0u8;
    let mut a = a;
    let mut i = 0;
    while i < 8 {
        let mask = 0u8.wrapping_sub((b >> i) & 1);
        acc ^= a & mask;
        a = xtime(a);
        i += 1;
    }
    acc
}

/// `a` raised to `e`, constant time in `a` (square-and-multiply over all 8 bits of `e`).
#[inline]
pub(crate) const fn pow(a: u8, e: u8) -> u8 {
    let mut result = 1u8;
    let mut i = 8;
    while i > 0 {
        i -= 1;
        result = mul(result, result);
        let m = mul(result, a);
        let mask = 0u8.wrapping_sub((e >> i) & 1);
        result = (m & mask) | (result & !mask);
    }
    result
}

/// Multiplicative inverse (a^254). The inverse of 0 is defined as 0; callers never ask
/// for it because x coordinates are validated to be distinct and non-zero.
#[inline]
pub(crate) const fn inv(a: u8) -> u8 {
    pow(a, 254)
}

/// Lagrange weights for evaluating, at `target`, the polynomial of degree < xs.len()
/// through the points at `xs`: `value(target) = sum_i w[i] * y_i`.
///
/// `xs` must be distinct (callers validate this). `target` may be 0 (the secret) or any
/// other point, including one of `xs` (then the weight vector is a unit vector).
pub(crate) fn lagrange_weights(xs: &[u8], target: u8) -> Vec<u8> {
    debug_assert!(!xs.is_empty());
    xs.iter()
        .enumerate()
        .map(|(i, &xi)| {
            let mut num = 1u8;
            let mut den = 1u8;
            for (j, &xj) in xs.iter().enumerate() {
                if i != j {
                    // Subtraction is XOR in characteristic 2.
                    num = mul(num, target ^ xj);
                    den = mul(den, xi ^ xj);
                }
            }
            debug_assert_ne!(den, 0, "x coordinates must be distinct");
            mul(num, inv(den))
        })
        .collect()
}

/// The powers `[1, x, x^2, ..., x^(k-1)]`: the multipliers of the polynomial's
/// coefficients when it is evaluated at `x`.
pub(crate) fn powers(x: u8, k: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(k);
    let mut p = 1u8;
    for _ in 0..k {
        out.push(p);
        p = mul(p, x);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reference: carry-less multiply then reduce, the textbook way.
    fn slow_mul(a: u8, b: u8) -> u8 {
        let mut prod: u16 = 0;
        for i in 0..8 {
            if (b >> i) & 1 == 1 {
                prod ^= (a as u16) << i;
            }
        }
        for bit in (8..16).rev() {
            if (prod >> bit) & 1 == 1 {
                prod ^= 0x11D << (bit - 8);
            }
        }
        prod as u8
    }

    #[test]
    fn mul_matches_textbook_definition_for_all_pairs() {
        for a in 0..=255u8 {
            for b in 0..=255u8 {
                assert_eq!(mul(a, b), slow_mul(a, b), "{a} * {b}");
            }
        }
    }

    #[test]
    fn every_nonzero_element_has_an_inverse() {
        assert_eq!(inv(0), 0);
        for a in 1..=255u8 {
            assert_eq!(mul(a, inv(a)), 1, "inverse of {a}");
        }
    }

    #[test]
    fn two_generates_the_multiplicative_group_of_0x11d() {
        // 0x11D is primitive: the powers of 2 run through all 255 non-zero elements.
        let mut seen = [false; 256];
        let mut p = 1u8;
        for _ in 0..255 {
            assert!(!seen[p as usize]);
            seen[p as usize] = true;
            p = xtime(p);
        }
        assert_eq!(p, 1);
    }

    #[test]
    fn lagrange_weights_reproduce_a_known_polynomial() {
        // f(x) = 7 + 3x + 200x^2
        let f = |x: u8| 7 ^ mul(3, x) ^ mul(200, mul(x, x));
        let xs = [4u8, 9, 250];
        for target in [0u8, 1, 4, 77, 255] {
            let w = lagrange_weights(&xs, target);
            let v = xs
                .iter()
                .zip(&w)
                .fold(0u8, |acc, (&x, &wi)| acc ^ mul(wi, f(x)));
            assert_eq!(v, f(target), "target {target}");
        }
    }
}
