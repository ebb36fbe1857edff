//! SS-MIX2 standard storage (JAMI, Ver.1.2) as kakera reads it: the path layout, the
//! file name, and a walker. Pure except for the walker's directory reads; the
//! generator of synthetic trees is in [`crate::ssmix2_gen`].
//!
//! `<root>/<pid[0:3]>/<pid[3:6]>/<pid>/<date YYYYMMDD or ->/<data kind>/<file>`, file
//! `<pid>_<date|->_<kind>_<order no, 15 digits or ->_<timestamp YYYYMMDDHHMMSSfff>_<dept|->_<flag>`
//! with no extension. Flag `1` is the current version; `0` marks data the source
//! deleted (an update renames the old version's flag to `0` and adds a new file).

use std::path::{Path, PathBuf};

use kakera_proto::Date;

/// Most directory levels below the root (the layout has six).
const MAX_DEPTH: usize = 6;
/// Longest patient id accepted.
const MAX_PATIENT_ID: usize = 64;
/// Longest department code accepted.
const MAX_DEPT: usize = 16;

/// The condition flag of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    /// `1`: the current version.
    Current,
    /// `0`: deleted at the source (or superseded by an update).
    Deleted,
}

/// One file of a standard storage tree, as its path describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ssmix2File {
    /// The patient id at the facility (never leaves the linking step in clear).
    pub patient_id: String,
    /// The visit date, or `None` for data not tied to a visit (`-`).
    pub date: Option<Date>,
    /// The data kind (`ADT-00`, `OML-11`, ...).
    pub kind: String,
    /// The order number (15 digits), if the data has one.
    pub order_no: Option<String>,
    /// The source timestamp `YYYYMMDDHHMMSSfff` (Japan time).
    pub timestamp: String,
    /// The department code, if any.
    pub dept: Option<String>,
    /// The condition flag.
    pub condition: Condition,
    /// The file name without its condition flag: the same data across flag renames.
    pub stem: String,
}

impl Ssmix2File {
    /// The record's effective date: the visit date, else the timestamp's date.
    pub fn effective(&self) -> Date {
        self.date.unwrap_or_else(|| {
            // The timestamp was checked to start with a valid date when parsed.
            parse_date8(&self.timestamp[..8]).unwrap_or(Date {
                year: 1900,
                month: 1,
                day: 1,
            })
        })
    }

    /// The timestamp as Unix milliseconds (the source's clock, Japan time UTC+9).
    pub fn unix_ms(&self) -> u64 {
        timestamp_ms(&self.timestamp).unwrap_or(0)
    }
}

fn parse_date8(s: &str) -> Option<Date> {
    if s.len() != 8 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Date::new(
        s[..4].parse().ok()?,
        s[4..6].parse().ok()?,
        s[6..8].parse().ok()?,
    )
    .ok()
}

/// `YYYYMMDDHHMMSSfff` (Japan time) to Unix ms.
fn timestamp_ms(ts: &str) -> Option<u64> {
    if ts.len() != 17 || !ts.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let d = parse_date8(&ts[..8])?;
    let num = |r: std::ops::Range<usize>| ts[r].parse::<u16>().ok();
    let (h, m, s, ms) = (num(8..10)?, num(10..12)?, num(12..14)?, num(14..17)?);
    let date = time::Date::from_calendar_date(
        i32::from(d.year),
        time::Month::try_from(d.month).ok()?,
        d.day,
    )
    .ok()?;
    let t = time::Time::from_hms_milli(h as u8, m as u8, s as u8, ms).ok()?;
    let jst = time::UtcOffset::from_hms(9, 0, 0).ok()?;
    let at = time::PrimitiveDateTime::new(date, t).assume_offset(jst);
    u64::try_from(at.unix_timestamp_nanos() / 1_000_000).ok()
}

fn is_kind(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 6
        && b[..3].iter().all(u8::is_ascii_uppercase)
        && b[3] == b'-'
        && b[4..].iter().all(u8::is_ascii_digit)
}

/// Parses a file's path relative to the storage root. The error says what is wrong
/// in words (it names the path's parts, which the operator already has).
pub fn parse_relative(rel: &Path) -> Result<Ssmix2File, String> {
    let parts: Vec<&str> = rel
        .components()
        .map(|c| c.as_os_str().to_str().ok_or("the path is not UTF-8"))
        .collect::<Result<_, _>>()?;
    let [d1, d2, pid_dir, date_dir, kind_dir, name] = parts.as_slice() else {
        return Err(format!(
            "expected <pid[0:3]>/<pid[3:6]>/<pid>/<date>/<kind>/<file>, found {} levels",
            parts.len()
        ));
    };
    let fields: Vec<&str> = name.split('_').collect();
    let [pid, date, kind, order, ts, dept, flag] = fields.as_slice() else {
        return Err(format!(
            "the file name has {} '_'-separated fields; SS-MIX2 names have 7",
            fields.len()
        ));
    };
    let pid_ok = pid.len() >= 6
        && pid.len() <= MAX_PATIENT_ID
        && pid.bytes().all(|b| b.is_ascii_alphanumeric());
    if !pid_ok {
        return Err(format!(
            "patient id must be 6 to {MAX_PATIENT_ID} letters or digits"
        ));
    }
    if *d1 != &pid[..3] || *d2 != &pid[3..6] || pid_dir != pid {
        return Err("the directories do not match the patient id in the file name".into());
    }
    if date_dir != date {
        return Err(format!(
            "the date directory '{date_dir}' differs from the file's date '{date}'"
        ));
    }
    let date = match *date {
        "-" => None,
        d => Some(parse_date8(d).ok_or_else(|| format!("'{d}' is not a date YYYYMMDD or '-'"))?),
    };
    if !is_kind(kind) {
        return Err(format!("'{kind}' is not a data kind like ADT-00"));
    }
    if kind_dir != kind {
        return Err(format!(
            "the kind directory '{kind_dir}' differs from the file's kind '{kind}'"
        ));
    }
    let order_no = match *order {
        "-" => None,
        o if o.len() == 15 && o.bytes().all(|b| b.is_ascii_digit()) => Some(o.to_string()),
        o => return Err(format!("order number '{o}' is not 15 digits or '-'")),
    };
    if timestamp_ms(ts).is_none() {
        return Err(format!(
            "timestamp '{ts}' is not a valid YYYYMMDDHHMMSSfff time"
        ));
    }
    let dept = match *dept {
        "-" => None,
        d if !d.is_empty()
            && d.len() <= MAX_DEPT
            && d.bytes().all(|b| b.is_ascii_alphanumeric()) =>
        {
            Some(d.to_string())
        }
        d => return Err(format!("department '{d}' is not a code or '-'")),
    };
    let condition = match *flag {
        "1" => Condition::Current,
        "0" => Condition::Deleted,
        f => return Err(format!("condition flag '{f}' is not 0 or 1")),
    };
    let stem = name[..name.len() - flag.len() - 1].to_string();
    Ok(Ssmix2File {
        patient_id: pid.to_string(),
        date,
        kind: kind.to_string(),
        order_no,
        timestamp: ts.to_string(),
        dept,
        condition,
        stem,
    })
}

/// Calls `f` with the path relative to `root`, and the size, of every regular file
/// under `root` (at most [`MAX_DEPTH`] levels; deeper files are reported as found,
/// and the parser refuses them), in name order per directory. Unreadable directories
/// go to `on_error`; the walk goes on.
pub fn walk(
    root: &Path,
    mut f: impl FnMut(PathBuf, u64),
    mut on_error: impl FnMut(PathBuf, String),
) {
    // Each stack element is a directory to read and its depth.
    let mut stack: Vec<(PathBuf, usize)> = vec![(root.to_path_buf(), 0)];
    // Bounded by the tree's size: each directory is pushed once.
    while let Some((dir, depth)) = stack.pop() {
        let mut entries: Vec<(PathBuf, std::fs::FileType, u64)> = match std::fs::read_dir(&dir) {
            Ok(rd) => rd
                .filter_map(|e| e.ok())
                .filter_map(|e| {
                    let md = e.metadata().ok()?;
                    Some((e.path(), md.file_type(), md.len()))
                })
                .collect(),
            Err(e) => {
                on_error(dir, e.to_string());
                continue;
            }
        };
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        let mut dirs = Vec::new();
        for (path, kind, size) in entries {
            let rel = path.strip_prefix(root).unwrap_or(&path).to_path_buf();
            if kind.is_dir() {
                if depth + 1 < MAX_DEPTH {
                    dirs.push((path, depth + 1));
                } else {
                    on_error(rel, "a directory deeper than the SS-MIX2 layout".into());
                }
            } else if kind.is_file() {
                f(rel, size);
            }
        }
        // Popped in name order.
        stack.extend(dirs.into_iter().rev());
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests: a panic is the failure report

    use super::*;

    const GOOD: &str = "000/001/0000012345/20250601/OML-11/0000012345_20250601_OML-11_202506010000001_20250601093015123_01_1";

    #[test]
    fn a_standard_path_parses() {
        let f = parse_relative(Path::new(GOOD)).unwrap();
        assert_eq!(f.patient_id, "0000012345");
        assert_eq!(f.date, Some(Date::new(2025, 6, 1).unwrap()));
        assert_eq!(f.kind, "OML-11");
        assert_eq!(f.order_no.as_deref(), Some("202506010000001"));
        assert_eq!(f.dept.as_deref(), Some("01"));
        assert_eq!(f.condition, Condition::Current);
        assert!(f.stem.ends_with("_01"));
        // 2025-06-01 09:30:15.123 JST = 00:30:15.123 UTC.
        assert_eq!(f.unix_ms(), 1_748_737_815_123);
        let adt = parse_relative(Path::new(
            "123/456/1234567/-/ADT-00/1234567_-_ADT-00_-_20240101120000000_-_0",
        ))
        .unwrap();
        assert_eq!(adt.date, None);
        assert_eq!(adt.effective(), Date::new(2024, 1, 1).unwrap());
        assert_eq!(adt.condition, Condition::Deleted);
        assert_eq!(adt.order_no, None);
    }

    /// Malformed paths are refused with a reason, never a panic.
    #[test]
    fn malformed_paths_say_why() {
        let cases = [
            ("000/001/0000012345/20250601/OML-11", "levels"),
            (
                "000/002/0000012345/20250601/OML-11/0000012345_20250601_OML-11_202506010000001_20250601093015123_01_1",
                "directories",
            ),
            (
                "000/001/0000012345/20250602/OML-11/0000012345_20250601_OML-11_202506010000001_20250601093015123_01_1",
                "date directory",
            ),
            (
                "000/001/0000012345/20250601/OML-11/0000012345_20250601_OML-11_202506010000001_20250601093015123_01_2",
                "condition flag",
            ),
            (
                "000/001/0000012345/20250601/OML-11/0000012345_20250601_OML-11_2025_20250601093015123_01_1",
                "order number",
            ),
            (
                "000/001/0000012345/20250601/OML-11/0000012345_20250601_OML-11_202506010000001_20251301093015123_01_1",
                "timestamp",
            ),
            (
                "000/001/0000012345/20250601/oml11/0000012345_20250601_oml11_202506010000001_20250601093015123_01_1",
                "data kind",
            ),
            ("000/001/0000012345/20250601/OML-11/notes.txt", "7"),
            (
                "12/345/12345/-/ADT-00/12345_-_ADT-00_-_20240101120000000_-_1",
                "patient id",
            ),
            (
                "000/001/0000012345/20250230/OML-11/0000012345_20250230_OML-11_202506010000001_20250601093015123_01_1",
                "not a date",
            ),
        ];
        for (path, why) in cases {
            let e = parse_relative(Path::new(path)).unwrap_err();
            assert!(e.contains(why), "{path}: {e}");
        }
    }

    #[test]
    fn the_walk_visits_every_file_once_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for p in ["b/x/1", "a/y/2", "a/3"] {
            let path = root.join(p);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, b"12").unwrap();
        }
        let mut seen = Vec::new();
        walk(root, |p, size| seen.push((p, size)), |_, _| {});
        let names: Vec<String> = seen.iter().map(|(p, _)| p.display().to_string()).collect();
        assert_eq!(names, ["a/3", "a/y/2", "b/x/1"]);
        assert!(seen.iter().all(|(_, s)| *s == 2));
    }
}
