//! A history of puts and reads and its linearizability check.
//!
//! Each record is a write-once register: one put makes it present, reads see it
//! present or absent. Linearizability is local (Herlihy & Wing, 1990: a history is
//! linearizable iff its restriction to each object is), so the check runs per record.
//! For one record with put `w` and reads `r`, a linearization exists iff some instant
//! `p` (the put taking effect) satisfies
//!
//! - `p > invoke(w)` (nothing is visible before its put begins);
//! - `p < complete(w)` when the put was acknowledged (an acknowledged put has taken
//!   effect); an unacknowledged one may take effect at any later time, or never;
//! - `p < complete(r)` for every read that saw the record (it was present by then);
//! - `p > invoke(r)` for every read that did not see it (it was absent when it began).
//!
//! That is: `max(invoke(w), invoke of every absent read) < min(complete(w) if acked,
//! complete of every present read)`. A put whose outcome was never learned and that no
//! read saw may also never have happened: always fine. Reads that failed say nothing
//! and are left out. A read that returned bytes other than the put's is a violation on
//! its own. Times are microseconds on one monotonic clock, taken just before a request
//! is sent and just after its answer arrives, so the real interval lies inside.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Instant;

use kakera_proto::RecordId;

/// What a read found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// The record, with the bytes that were put.
    Present,
    /// Not there (the cluster said not found).
    Absent,
    /// The record with other bytes than were put.
    Corrupt,
}

#[derive(Debug, Default)]
struct RecordOps {
    /// The put: invoked, and completed if acknowledged.
    put: Option<(u64, Option<u64>)>,
    /// Completed reads: invoked, completed, what they saw.
    reads: Vec<(u64, u64, Seen)>,
}

/// A shared, append-only history.
pub struct History {
    start: Instant,
    records: Mutex<BTreeMap<RecordId, RecordOps>>,
}

impl Default for History {
    fn default() -> History {
        History {
            start: Instant::now(),
            records: Mutex::new(BTreeMap::new()),
        }
    }
}

/// A violation found by [`History::check`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub record: RecordId,
    pub what: String,
}

/// Counts of what a history holds.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub puts_acked: u64,
    pub puts_unknown: u64,
    pub reads_present: u64,
    pub reads_absent: u64,
}

impl History {
    /// Microseconds since the history began.
    pub fn now(&self) -> u64 {
        self.start.elapsed().as_micros() as u64
    }

    /// Records that a put of `record` was invoked at `invoked` (before it is sent, so
    /// readers may ask for the record while the put is in flight).
    pub fn put(&self, record: RecordId, invoked: u64) {
        let mut r = self.records.lock().unwrap();
        let ops = r.entry(record).or_default();
        assert!(ops.put.is_none(), "two puts of one record in a history");
        ops.put = Some((invoked, None));
    }

    /// Records that the put of `record` was acknowledged at `completed`.
    pub fn ack(&self, record: RecordId, completed: u64) {
        let mut r = self.records.lock().unwrap();
        let put = r.get_mut(&record).and_then(|o| o.put.as_mut());
        let put = put.expect("an acknowledgement of a put never invoked");
        put.1 = Some(completed);
    }

    /// Records a completed read.
    pub fn read(&self, record: RecordId, invoked: u64, completed: u64, seen: Seen) {
        let mut r = self.records.lock().unwrap();
        r.entry(record)
            .or_default()
            .reads
            .push((invoked, completed, seen));
    }

    /// Every record put (acknowledged or not).
    pub fn records(&self) -> Vec<RecordId> {
        self.records.lock().unwrap().keys().copied().collect()
    }

    pub fn counts(&self) -> Counts {
        let r = self.records.lock().unwrap();
        let mut c = Counts::default();
        for ops in r.values() {
            match ops.put {
                Some((_, Some(_))) => c.puts_acked += 1,
                Some((_, None)) => c.puts_unknown += 1,
                None => {}
            }
            for (_, _, seen) in &ops.reads {
                match seen {
                    Seen::Present => c.reads_present += 1,
                    Seen::Absent => c.reads_absent += 1,
                    Seen::Corrupt => {}
                }
            }
        }
        c
    }

    /// The longest time, in microseconds, in which no put was acknowledged: between
    /// consecutive acknowledgements, and from the first put's start to the first
    /// acknowledgement (0 without acknowledgements).
    pub fn longest_ack_gap_us(&self) -> u64 {
        let r = self.records.lock().unwrap();
        let mut acks: Vec<u64> = r
            .values()
            .filter_map(|o| o.put.and_then(|(_, done)| done))
            .collect();
        acks.sort_unstable();
        let first_invoke = r.values().filter_map(|o| o.put.map(|(i, _)| i)).min();
        let mut gap = match (first_invoke, acks.first()) {
            (Some(i), Some(a)) => a.saturating_sub(i),
            _ => 0,
        };
        for w in acks.windows(2) {
            gap = gap.max(w[1] - w[0]);
        }
        gap
    }

    /// Every violation of linearizability in the history.
    pub fn check(&self) -> Vec<Violation> {
        let r = self.records.lock().unwrap();
        let mut out = Vec::new();
        for (id, ops) in r.iter() {
            let violation = |what: String| Violation { record: *id, what };
            let Some((put_invoked, put_completed)) = ops.put else {
                if ops.reads.iter().any(|(_, _, s)| *s != Seen::Absent) {
                    out.push(violation("seen without ever being put".into()));
                }
                continue;
            };
            if ops.reads.iter().any(|(_, _, s)| *s == Seen::Corrupt) {
                out.push(violation(
                    "a read returned other bytes than were put".into(),
                ));
            }
            let present_by = ops
                .reads
                .iter()
                .filter(|(_, _, s)| *s == Seen::Present)
                .map(|(_, c, _)| *c)
                .min();
            if put_completed.is_none() && present_by.is_none() {
                continue; // may never have happened
            }
            let lo = ops
                .reads
                .iter()
                .filter(|(_, _, s)| *s == Seen::Absent)
                .map(|(i, _, _)| *i)
                .chain([put_invoked])
                .max()
                .unwrap_or(put_invoked);
            let hi = [put_completed, present_by].into_iter().flatten().min();
            if let Some(hi) = hi
                && lo >= hi
            {
                out.push(violation(format!(
                    "no instant for the put to take effect: it must follow {lo} us (its \
                     start or a read that did not see it) and precede {hi} us (its \
                     acknowledgement or a read that saw it)"
                )));
            }
        }
        out
    }
}
