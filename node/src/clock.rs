//! The node's one wall clock. Leader time for entries, ticket expiry, grant checks and
//! backup windows all read [`unix_ms`]; the state machine itself never reads a clock
//! (an entry carries its leader's time, so every node applies it the same way).
//! Intervals and deadlines use `std::time::Instant` / tokio's monotonic clock.

/// Wall-clock Unix milliseconds (0 if the clock is before 1970).
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
