//! Streaming split for records too large to hold whole.
//!
//! The dealer works in blocks of [`BLOCK_LEN`] bytes of absolute offset, and draws the
//! random coefficients of each block from the generator in one fixed order. One-shot
//! splitting uses the same blocks, so for the same generator stream a streaming split
//! gives byte-identical shares however the input is cut into pieces.

use rand_core::CryptoRng;
use zeroize::{Zeroize, Zeroizing};

use crate::error::{Result, ShamirError};
use crate::share::{SetId, Share};
use crate::{Dealer, validate_split};

/// The block size the dealer draws coefficients for. Part of the "same shares for the
/// same generator stream" contract between one-shot and streaming splits.
pub const BLOCK_LEN: usize = 8 * 1024;

/// Splits a secret that arrives in pieces. Call [`SplitStream::update`] with each piece
/// and [`SplitStream::finish`] at the end; share bytes are appended to one output vector
/// per x coordinate as whole blocks become ready.
pub struct SplitStream<R: CryptoRng> {
    dealer: Dealer,
    rng: R,
    /// Secret bytes waiting for a whole block. Zeroized on drop.
    pending: Zeroizing<Vec<u8>>,
    /// Output of one block per share, reused.
    block_out: Vec<Vec<u8>>,
    total_len: u64,
}

impl<R: CryptoRng> std::fmt::Debug for SplitStream<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SplitStream")
            .field("k", &self.dealer.k)
            .field("n", &self.dealer.xs.len())
            .field("total_len", &self.total_len)
            .finish_non_exhaustive()
    }
}

/// What a finished streaming split produced, besides the share data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamSummary {
    /// The set id every share carries.
    pub set_id: SetId,
    /// The secret's length, which is every share's length.
    pub len: u64,
}

impl<R: CryptoRng> SplitStream<R> {
    /// Starts a streaming split with threshold `k` at coordinates `xs`. Draws the set id
    /// from `rng` first, as the one-shot split does.
    pub fn new(k: u8, xs: &[u8], mut rng: R) -> Result<Self> {
        validate_split(k, xs)?;
        let dealer = Dealer::new(k, xs, BLOCK_LEN, &mut rng);
        Ok(SplitStream {
            block_out: vec![vec![0u8; BLOCK_LEN]; xs.len()],
            dealer,
            rng,
            pending: Zeroizing::new(Vec::with_capacity(BLOCK_LEN)),
            total_len: 0,
        })
    }

    /// The set id of the shares being produced.
    pub fn set_id(&self) -> SetId {
        self.dealer.set_id
    }

    /// Feeds the next piece of the secret. Appends to `outs[i]` the share bytes for
    /// `xs[i]` of every block completed so far.
    pub fn update(&mut self, mut input: &[u8], outs: &mut [Vec<u8>]) -> Result<()> {
        self.check_outs(outs)?;
        self.total_len += input.len() as u64;
        if !self.pending.is_empty() {
            let take = (BLOCK_LEN - self.pending.len()).min(input.len());
            self.pending.extend_from_slice(&input[..take]);
            input = &input[take..];
            if self.pending.len() == BLOCK_LEN {
                let block = std::mem::take(&mut *self.pending);
                self.emit(&block, outs);
                *self.pending = block;
                // Vec::zeroize wipes the bytes and clears the vector.
                self.pending.zeroize();
            }
        }
        // Whole blocks straight from the input, without copying them.
        while input.len() >= BLOCK_LEN {
            let (block, rest) = input.split_at(BLOCK_LEN);
            self.emit(block, outs);
            input = rest;
        }
        self.pending.extend_from_slice(input);
        Ok(())
    }

    /// Deals the last, partial block and returns the summary.
    pub fn finish(mut self, outs: &mut [Vec<u8>]) -> Result<StreamSummary> {
        self.check_outs(outs)?;
        if !self.pending.is_empty() {
            let block = std::mem::take(&mut *self.pending);
            let block = Zeroizing::new(block);
            self.emit(&block, outs);
        }
        Ok(StreamSummary {
            set_id: self.dealer.set_id,
            len: self.total_len,
        })
    }

    /// Convenience: turns the finished outputs into [`Share`]s.
    pub fn into_shares(self, mut outs: Vec<Vec<u8>>) -> Result<Vec<Share>> {
        let (k, xs) = (self.dealer.k, self.dealer.xs.clone());
        let summary = self.finish(&mut outs)?;
        xs.iter()
            .zip(outs)
            .map(|(&x, data)| Share::from_parts(summary.set_id, k, x, data))
            .collect()
    }

    fn check_outs(&self, outs: &[Vec<u8>]) -> Result<()> {
        if outs.len() != self.dealer.xs.len() {
            return Err(ShamirError::BufferMismatch {
                expected: self.dealer.xs.len(),
                found: outs.len(),
            });
        }
        Ok(())
    }

    fn emit(&mut self, block: &[u8], outs: &mut [Vec<u8>]) {
        debug_assert!(block.len() <= BLOCK_LEN);
        let len = block.len();
        let mut views: Vec<&mut [u8]> = self.block_out.iter_mut().map(|b| &mut b[..len]).collect();
        self.dealer.deal_block(block, &mut self.rng, &mut views);
        for (out, produced) in outs.iter_mut().zip(&self.block_out) {
            out.extend_from_slice(&produced[..len]);
        }
    }
}
