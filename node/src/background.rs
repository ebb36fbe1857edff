//! Background passes give way to the data path. A node's scrubber walks the whole
//! catalog and never rests at 10^7 records; while the node answers stage, commit,
//! open-read or fetch requests it runs at a quarter of its idle pace
//! ([`BUSY_SLOWDOWN`]), never less, so under a load that never stops a pass still
//! ends, in at most four times its idle time. (The leader's repair scan keeps its
//! pace; it slows down only when no share can need a move:
//! `crate::repair::scan_pages_per_tick`.)
//!
//! Pure: the server counts requests ([`Foreground::answered`]); each pass asks, step
//! by step, whether any came since its last step ([`ForegroundWatch::busy`]).

use std::sync::atomic::{AtomicU64, Ordering};

/// How much slower a background pass runs while the node serves the data path.
pub const BUSY_SLOWDOWN: u64 = 4;

/// Data-path requests this node has been asked (stage, commit, open read, fetch).
#[derive(Debug, Default)]
pub struct Foreground {
    asked: AtomicU64,
}

impl Foreground {
    /// Counts one data-path request.
    pub fn asked(&self) {
        self.asked.fetch_add(1, Ordering::Relaxed);
    }

    /// A watch that reports requests from now on.
    pub fn watch(&self) -> ForegroundWatch {
        ForegroundWatch {
            seen: self.asked.load(Ordering::Relaxed),
        }
    }

    /// Whether `op` is on the data path: what background passes give way to.
    pub fn is_data_path(op: kakera_proto::message::Operation) -> bool {
        use kakera_proto::message::Operation;
        matches!(
            op,
            Operation::Stage | Operation::Commit | Operation::OpenRead | Operation::Fetch
        )
    }
}

/// One pass's view of [`Foreground`].
#[derive(Debug)]
pub struct ForegroundWatch {
    seen: u64,
}

impl ForegroundWatch {
    /// Whether data-path requests came since the last call (or since the watch was
    /// made).
    pub fn busy(&mut self, foreground: &Foreground) -> bool {
        let now = foreground.asked.load(Ordering::Relaxed);
        let busy = now != self.seen;
        self.seen = now;
        busy
    }
}

/// What a step that read `cost` counts against its pass's budget: [`BUSY_SLOWDOWN`]
/// times as much while the node is busy, so the pass's rate drops to a quarter.
pub fn step_cost(cost: u64, busy: bool) -> u64 {
    if busy {
        cost.saturating_mul(BUSY_SLOWDOWN)
    } else {
        cost
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pass sees a request that came since its last step, once.
    #[test]
    fn a_watch_reports_requests_since_its_last_step() {
        let fg = Foreground::default();
        fg.asked();
        let mut w = fg.watch();
        assert!(!w.busy(&fg), "a request before the watch does not count");
        fg.asked();
        fg.asked();
        assert!(w.busy(&fg));
        assert!(!w.busy(&fg));
    }

    /// Busy, a step costs four times its bytes (a quarter of the pace, never a
    /// stop); idle, its bytes.
    #[test]
    fn background_passes_slow_down_but_never_stop() {
        assert_eq!(step_cost(1 << 20, false), 1 << 20);
        assert_eq!(step_cost(1 << 20, true), 4 << 20);
        assert_eq!(step_cost(u64::MAX, true), u64::MAX);
        // At 10 MB/s (a bucket of 10 MB), after eight pages of 1 MiB of budget at
        // once, a busy node's scrubber waits before its ninth where an idle one does
        // not (crate::repair::pace_wait_ms).
        let page = 1u64 << 20;
        let at = |busy| crate::repair::pace_wait_ms(8 * page, step_cost(page, busy), 0, 10);
        assert_eq!(at(false), 0);
        assert!(at(true) > 0);
    }

    #[test]
    fn the_data_path_is_stage_commit_open_read_and_fetch() {
        use kakera_proto::message::Operation;
        for op in [
            Operation::Stage,
            Operation::Commit,
            Operation::OpenRead,
            Operation::Fetch,
        ] {
            assert!(Foreground::is_data_path(op));
        }
        for op in [
            Operation::Ping,
            Operation::Raft,
            Operation::Status,
            Operation::Repair,
        ] {
            assert!(!Foreground::is_data_path(op));
        }
    }
}
