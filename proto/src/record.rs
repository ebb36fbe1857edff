//! Records as the catalog knows them: ids, metadata and digests. No record bytes ever
//! appear here: metadata is what ingest may reveal to every node (an opaque subject
//! tag, a kind, a source facility code, an effective date).

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::ProtoError;

/// A record id: 128 bits, time-ordered (48-bit Unix milliseconds, then 80 random
/// bits), so ids sort by creation time and never collide in practice.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RecordId(pub [u8; 16]);

impl RecordId {
    /// An id from a Unix time in milliseconds and 10 random bytes.
    pub fn from_parts(unix_ms: u64, random: [u8; 10]) -> RecordId {
        let mut id = [0u8; 16];
        id[..6].copy_from_slice(&unix_ms.to_be_bytes()[2..]);
        id[6..].copy_from_slice(&random);
        RecordId(id)
    }

    /// The creation time in Unix milliseconds.
    pub fn unix_ms(&self) -> u64 {
        let mut ms = [0u8; 8];
        ms[2..].copy_from_slice(&self.0[..6]);
        u64::from_be_bytes(ms)
    }

    /// Parses the 32-hex-digit form.
    pub fn parse(text: &str) -> Result<RecordId, ProtoError> {
        parse_hex::<16>(text, "record id").map(RecordId)
    }
}

impl fmt::Display for RecordId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_hex(f, &self.0)
    }
}

impl fmt::Debug for RecordId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RecordId({self})")
    }
}

/// The subject (person) a record belongs to, as an opaque 32-byte tag computed by the
/// linking step (a keyed hash). Nodes can group by it; they cannot reverse it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SubjectTag(pub [u8; 32]);

impl SubjectTag {
    /// Parses the 64-hex-digit form.
    pub fn parse(text: &str) -> Result<SubjectTag, ProtoError> {
        parse_hex::<32>(text, "subject tag").map(SubjectTag)
    }
}

impl fmt::Display for SubjectTag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_hex(f, &self.0)
    }
}

impl fmt::Debug for SubjectTag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SubjectTag({self})")
    }
}

/// What a record is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum RecordKind {
    /// A hospital record from SS-MIX2 standardized storage.
    Ssmix2,
    /// A medical or pharmacy claim (レセプト).
    Claim,
    /// A health checkup result.
    Checkup,
    /// A long-term care record.
    LongTermCare,
    /// A death record.
    Death,
    // Appended (issue 24): the wire form of a variant is its position.
    /// A FHIR R4 resource (JSON); its resource type is the data kind.
    Fhir,
    /// A medical image or signal file (DICOM, MFER, a whole-slide image).
    Image,
    /// Any other file (a scanned document, a report).
    File,
    // Appended (issue 24.3).
    /// One segment (after the first) of a record stored as segments: committed with
    /// and read through its parent, never on its own; no grant's scope covers it.
    Segment,
}

impl RecordKind {
    /// Every kind.
    pub const ALL: [RecordKind; 9] = [
        RecordKind::Ssmix2,
        RecordKind::Claim,
        RecordKind::Checkup,
        RecordKind::LongTermCare,
        RecordKind::Death,
        RecordKind::Fhir,
        RecordKind::Image,
        RecordKind::File,
        RecordKind::Segment,
    ];

    /// The name used on command lines and in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            RecordKind::Ssmix2 => "ssmix2",
            RecordKind::Claim => "claim",
            RecordKind::Checkup => "checkup",
            RecordKind::LongTermCare => "long-term-care",
            RecordKind::Death => "death",
            RecordKind::Fhir => "fhir",
            RecordKind::Image => "image",
            RecordKind::File => "file",
            RecordKind::Segment => "segment",
        }
    }

    /// Parses a name from [`RecordKind::as_str`].
    pub fn parse(text: &str) -> Result<RecordKind, ProtoError> {
        RecordKind::ALL
            .into_iter()
            .find(|k| k.as_str() == text)
            .ok_or_else(|| ProtoError::Invalid {
                reason: format!(
                    "unknown record kind '{text}' (one of ssmix2, claim, checkup, \
                     long-term-care, death, fhir, image, file, segment)"
                ),
            })
    }
}

impl fmt::Display for RecordKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A calendar date (the record's effective date: visit, claim month, checkup day).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Date {
    /// Year (1900..=9999).
    pub year: u16,
    /// Month (1..=12).
    pub month: u8,
    /// Day (1..=days in the month).
    pub day: u8,
}

impl Date {
    /// A checked date.
    pub fn new(year: u16, month: u8, day: u8) -> Result<Date, ProtoError> {
        let leap =
            (year.is_multiple_of(4) && !year.is_multiple_of(100)) || year.is_multiple_of(400);
        let days = match month {
            1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
            4 | 6 | 9 | 11 => 30,
            2 if leap => 29,
            2 => 28,
            _ => 0,
        };
        if !(1900..=9999).contains(&year) || days == 0 || day == 0 || day > days {
            return Err(ProtoError::Invalid {
                reason: format!("{year:04}-{month:02}-{day:02} is not a valid date"),
            });
        }
        Ok(Date { year, month, day })
    }

    /// Parses `YYYY-MM-DD`.
    pub fn parse(text: &str) -> Result<Date, ProtoError> {
        let bad = || ProtoError::Invalid {
            reason: format!("'{text}' is not a date of the form YYYY-MM-DD"),
        };
        let parts: Vec<&str> = text.split('-').collect();
        let [y, m, d] = parts.as_slice() else {
            return Err(bad());
        };
        if y.len() != 4 || m.len() != 2 || d.len() != 2 {
            return Err(bad());
        }
        Date::new(
            y.parse().map_err(|_| bad())?,
            m.parse().map_err(|_| bad())?,
            d.parse().map_err(|_| bad())?,
        )
    }
}

impl fmt::Display for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }
}

/// Most bytes of a source facility code.
pub const MAX_SOURCE_BYTES: usize = 64;
/// Most bytes of a data kind ([`RecordMeta::data_kind`]): FHIR R4's longest resource
/// type, `MedicinalProductAuthorization`, is 32 in this form (issue 24; was 16).
pub const MAX_DATA_KIND_BYTES: usize = 40;

/// What every node may know about a record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordMeta {
    /// The person, as an opaque tag.
    pub subject: SubjectTag,
    /// What the record is.
    pub kind: RecordKind,
    /// The source facility (e.g. a 10-digit medical institution code).
    pub source: String,
    /// The record's effective date.
    pub effective: Date,
    /// The kind within the source's own scheme, if it has one: for SS-MIX2 the data
    /// kind (`ADT-00`, `OML-11`, ...), for FHIR the resource type
    /// (`MEDICATION-REQUEST`). 1 to [`MAX_DATA_KIND_BYTES`] of A-Z, 0-9, '-'.
    pub data_kind: Option<String>,
}

impl RecordMeta {
    /// Checks the parts a constructor cannot: the source code's form.
    pub fn validate(&self) -> Result<(), ProtoError> {
        let ok = !self.source.is_empty()
            && self.source.len() <= MAX_SOURCE_BYTES
            && self
                .source
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
        if !ok {
            return Err(ProtoError::Invalid {
                reason: format!(
                    "source '{}' must be 1 to {MAX_SOURCE_BYTES} characters of A-Z, a-z, \
                     0-9, '-', '_', '.'",
                    self.source.escape_debug()
                ),
            });
        }
        if let Some(dk) = &self.data_kind {
            let ok = !dk.is_empty()
                && dk.len() <= MAX_DATA_KIND_BYTES
                && dk
                    .bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'-');
            if !ok {
                return Err(ProtoError::Invalid {
                    reason: format!(
                        "data kind '{}' must be 1 to {MAX_DATA_KIND_BYTES} characters of A-Z, \
                         0-9, '-'",
                        dk.escape_debug()
                    ),
                });
            }
        }
        Ok(())
    }
}

/// A BLAKE3-256 digest (of a sealed record or an encoded share).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Digest(pub [u8; 32]);

impl Digest {
    /// The BLAKE3 digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Digest {
        Digest(*blake3::hash(bytes).as_bytes())
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_hex(f, &self.0)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({self})")
    }
}

fn write_hex(f: &mut fmt::Formatter<'_>, bytes: &[u8]) -> fmt::Result {
    for b in bytes {
        write!(f, "{b:02x}")?;
    }
    Ok(())
}

/// Parses exactly `N` bytes of hex.
pub fn parse_hex<const N: usize>(text: &str, what: &str) -> Result<[u8; N], ProtoError> {
    let bad = || ProtoError::Invalid {
        reason: format!("a {what} is {} hex digits", 2 * N),
    };
    if text.len() != 2 * N || !text.is_ascii() {
        return Err(bad());
    }
    let mut out = [0u8; N];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_ids_order_by_time_and_round_trip_through_text() {
        let a = RecordId::from_parts(1_700_000_000_000, [0xff; 10]);
        let b = RecordId::from_parts(1_700_000_000_001, [0; 10]);
        assert!(a < b);
        assert_eq!(a.unix_ms(), 1_700_000_000_000);
        assert_eq!(RecordId::parse(&a.to_string()).unwrap(), a);
        assert!(RecordId::parse("xyz").is_err());
        assert!(RecordId::parse(&"g".repeat(32)).is_err());
    }

    #[test]
    fn dates_are_checked() {
        assert_eq!(Date::parse("2024-02-29").unwrap().to_string(), "2024-02-29");
        for bad in [
            "2023-02-29",
            "2024-13-01",
            "2024-00-10",
            "24-01-01",
            "2024-1-1",
            "x",
        ] {
            assert!(Date::parse(bad).is_err(), "{bad}");
        }
        assert!(Date::new(1900, 2, 29).is_err());
        assert!(Date::new(2000, 2, 29).is_ok());
    }

    #[test]
    fn kinds_and_sources_parse_or_explain() {
        for k in RecordKind::ALL {
            assert_eq!(RecordKind::parse(k.as_str()).unwrap(), k);
        }
        let e = RecordKind::parse("xray").unwrap_err().to_string();
        assert!(e.contains("ssmix2"), "{e}");
        let meta = |source: &str| RecordMeta {
            subject: SubjectTag([1; 32]),
            kind: RecordKind::Claim,
            source: source.into(),
            effective: Date::new(2024, 4, 1).unwrap(),
            data_kind: None,
        };
        assert!(meta("1312345678").validate().is_ok());
        let mut m = meta("1312345678");
        m.data_kind = Some("OML-11".into());
        assert!(m.validate().is_ok());
        m.data_kind = Some("oml 11".into());
        assert!(m.validate().is_err());
        m.data_kind = Some(String::new());
        assert!(m.validate().is_err());
        assert!(meta("").validate().is_err());
        assert!(meta("a b").validate().is_err());
        assert!(meta(&"9".repeat(65)).validate().is_err());
    }
}
