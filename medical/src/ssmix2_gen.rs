//! Synthetic SS-MIX2 standard storage trees (`kakera demo-data ssmix2`): no real
//! person, but the shape of the real thing — the directory layout and file names of
//! [`crate::ssmix2`], HL7 v2.5 messages with CR segment terminators, MSH-18/20 naming
//! ISO-2022-JP and MSH-21 the SS-MIX2 profile, Japanese names and addresses encoded
//! in ISO-2022-JP, JLAC10 lab codes, HOT9 drug codes, MDCDX2 diagnoses. Some files
//! are updates (the old version's flag renamed to 0) and some deleted at the source
//! (flag 0 only), as hospitals' storages have them.
//!
//! Deterministic for a given seed, so tests can count what a tree holds.

use std::path::Path;

use crate::error::MedicalError;

/// The SS-MIX2 profile in MSH-21.
pub const MSH21: &str = "SS-MIX2_1.20^SS-MIX2^1.2.392.200250.2.1.100.1.2.120^ISO";

/// What a generated tree holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Generated {
    /// Patients.
    pub patients: usize,
    /// Files written.
    pub files: usize,
    /// Files with condition flag 1.
    pub current: usize,
    /// Files with condition flag 0 (old versions of updates, deletions).
    pub deleted: usize,
    /// Bytes written.
    pub bytes: u64,
}

/// A small deterministic generator (SplitMix64): synthetic data only, never keys.
/// The FHIR generator draws from it too.
pub(crate) struct Mix(pub(crate) u64);

impl Mix {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

const FAMILY: [(&str, &str); 10] = [
    ("佐藤", "サトウ"),
    ("鈴木", "スズキ"),
    ("高橋", "タカハシ"),
    ("田中", "タナカ"),
    ("伊藤", "イトウ"),
    ("渡辺", "ワタナベ"),
    ("山本", "ヤマモト"),
    ("中村", "ナカムラ"),
    ("小林", "コバヤシ"),
    ("加藤", "カトウ"),
];
const GIVEN_F: [(&str, &str); 4] = [
    ("花子", "ハナコ"),
    ("美咲", "ミサキ"),
    ("陽子", "ヨウコ"),
    ("恵子", "ケイコ"),
];
const GIVEN_M: [(&str, &str); 4] = [
    ("太郎", "タロウ"),
    ("一郎", "イチロウ"),
    ("健太", "ケンタ"),
    ("誠", "マコト"),
];
/// Prefecture, city, postal code: few enough that some groups are small (the
/// anonymization job's k-anonymity check has something to find).
const PLACES: [(&str, &str, &str); 6] = [
    ("東京都", "千代田区", "1000001"),
    ("東京都", "新宿区", "1600022"),
    ("大阪府", "大阪市北区", "5300001"),
    ("神奈川県", "横浜市西区", "2200011"),
    ("愛知県", "名古屋市中区", "4600008"),
    ("北海道", "札幌市中央区", "0600001"),
];
/// JLAC10 code, name, unit, low, high (reference range).
const LABS: [(&str, &str, &str, u32, u32); 5] = [
    ("3D010000002327101", "グルコース", "mg/dL", 70, 109),
    ("3B035000002327201", "AST", "U/L", 10, 40),
    ("3B045000002327201", "ALT", "U/L", 5, 45),
    ("3C015000002327101", "クレアチニン", "mg/dL", 6, 11),
    ("3F015000002327101", "HbA1c", "%", 46, 62),
];
/// HOT9 code, drug name.
const DRUGS: [(&str, &str); 3] = [
    ("103835401", "アムロジピン錠５ｍｇ"),
    ("110626901", "メトホルミン塩酸塩錠２５０ｍｇ"),
    ("105271807", "ロキソプロフェンナトリウム錠６０ｍｇ"),
];
/// MDCDX2 code, name, ICD-10.
const DIAGNOSES: [(&str, &str, &str); 3] = [
    ("20058231", "高血圧症", "I10"),
    ("20063137", "２型糖尿病", "E11"),
    ("20083965", "脂質異常症", "E785"),
];

struct Patient {
    id: String,
    family: (&'static str, &'static str),
    given: (&'static str, &'static str),
    sex: &'static str,
    birth: String,
    place: (&'static str, &'static str, &'static str),
}

fn msh(facility: &str, ts: &str, kind: &str, control: &str) -> String {
    format!(
        "MSH|^~\\&|HIS|{facility}|SSMIX2|{facility}|{ts}||{kind}|{control}|P|2.5||||||~ISO IR87||ISO 2022-1994|{MSH21}"
    )
}

fn pid(p: &Patient) -> String {
    format!(
        "PID|0001||{id}^^^^PI||{f}^{g}^^^^^L^I~{fk}^{gk}^^^^^L^P||{birth}|{sex}|||^^{city}^{pref}^{zip}^JPN^H",
        id = p.id,
        f = p.family.0,
        g = p.given.0,
        fk = p.family.1,
        gk = p.given.1,
        birth = p.birth,
        sex = p.sex,
        city = p.place.1,
        pref = p.place.0,
        zip = p.place.2,
    )
}

/// One message: segments joined and terminated by CR, encoded in ISO-2022-JP.
fn encode(segments: &[String]) -> Result<Vec<u8>, MedicalError> {
    let mut text = String::new();
    for s in segments {
        text.push_str(s);
        text.push('\r');
    }
    let (bytes, _, unmappable) = encoding_rs::ISO_2022_JP.encode(&text);
    if unmappable {
        return Err(MedicalError::Invalid(
            "a generated message has characters ISO-2022-JP cannot carry".into(),
        ));
    }
    Ok(bytes.into_owned())
}

struct Writer<'a> {
    root: &'a Path,
    out: Generated,
}

impl Writer<'_> {
    #[allow(clippy::too_many_arguments)] // the parts of an SS-MIX2 file name, named
    fn file(
        &mut self,
        pid: &str,
        date: &str,
        kind: &str,
        order: &str,
        ts: &str,
        dept: &str,
        flag: u8,
        body: &[u8],
    ) -> Result<(), MedicalError> {
        let dir = self
            .root
            .join(&pid[..3])
            .join(&pid[3..6])
            .join(pid)
            .join(date)
            .join(kind);
        std::fs::create_dir_all(&dir).map_err(|source| MedicalError::File {
            path: dir.clone(),
            source,
        })?;
        let path = dir.join(format!("{pid}_{date}_{kind}_{order}_{ts}_{dept}_{flag}"));
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|source| MedicalError::File {
                path: path.clone(),
                source,
            })?;
        f.write_all(body).map_err(|source| MedicalError::File {
            path: path.clone(),
            source,
        })?;
        self.out.files += 1;
        self.out.bytes += body.len() as u64;
        if flag == 1 {
            self.out.current += 1;
        } else {
            self.out.deleted += 1;
        }
        Ok(())
    }
}

/// Writes a tree of `patients` synthetic patients of `facility` under `root` (which
/// must not hold files of the same names). Deterministic for `seed`.
pub fn generate(
    root: &Path,
    patients: usize,
    facility: &str,
    seed: u64,
) -> Result<Generated, MedicalError> {
    let mut rng = Mix(seed);
    let mut w = Writer {
        root,
        out: Generated {
            patients,
            ..Generated::default()
        },
    };
    for i in 0..patients {
        let female = rng.below(2) == 0;
        let p = Patient {
            id: format!("{:010}", 1_000_000 + i * 7 + rng.below(7) as usize),
            family: *rng.pick(&FAMILY),
            given: if female {
                *rng.pick(&GIVEN_F)
            } else {
                *rng.pick(&GIVEN_M)
            },
            sex: if female { "F" } else { "M" },
            birth: format!(
                "{}{:02}{:02}",
                1935 + rng.below(60),
                1 + rng.below(12),
                1 + rng.below(28)
            ),
            place: *rng.pick(&PLACES),
        };
        let ctl = |n: usize| format!("{:010}{n:04}", i);
        // Patient information, not tied to a visit.
        let ts0 = format!("2024010{}0900000{:02}", 1 + i % 9, i % 60);
        let body = encode(&[
            msh(facility, &ts0[..14], "ADT^A08^ADT_A01", &ctl(0)),
            "EVN||".to_string() + &ts0[..14],
            pid(&p),
            "PV1|0001|N".to_string(),
        ])?;
        w.file(&p.id, "-", "ADT-00", "-", &ts0, "-", 1, &body)?;
        // Diagnoses.
        let (code, name, icd) = *rng.pick(&DIAGNOSES);
        let body = encode(&[
            msh(facility, &ts0[..14], "PPR^ZD1^PPR_ZD1", &ctl(1)),
            pid(&p),
            "PV1|0001|O".to_string(),
            format!(
                "PRB|AD|{}|{code}^{name}^MDCDX2~{icd}^^I10|{:04}||||{}",
                &ts0[..8],
                i,
                &ts0[..8]
            ),
        ])?;
        w.file(&p.id, "-", "PPR-01", "-", &ts0, "-", 1, &body)?;
        let visits = 2 + rng.below(3) as usize;
        for v in 0..visits {
            let month = 1 + (v * 3 + i) % 12;
            let day = 1 + (i + v * 5) % 28;
            let date = format!("2025{month:02}{day:02}");
            let ts = |hh: usize, n: usize| format!("{date}{hh:02}{:02}00{:03}", (i + v) % 60, n);
            let order = |n: usize| format!("{date}{:07}", i * 10 + v * 3 + n);
            if v == 0 && i % 3 == 0 {
                let t = ts(8, 0);
                let body = encode(&[
                    msh(facility, &t[..14], "ADT^A01^ADT_A01", &ctl(10 + v)),
                    "EVN|A01|".to_string() + &t[..14],
                    pid(&p),
                    format!("PV1|0001|I|01^^^^^^^^内科|||||||||||||||||{}", &t[..14]),
                ])?;
                w.file(&p.id, &date, "ADT-22", "-", &t, "01", 1, &body)?;
            }
            // Lab results: every fifth patient's first result was corrected (the old
            // version renamed to flag 0, a later one current).
            let (lab, lname, unit, lo, hi) = *rng.pick(&LABS);
            let value = lo + rng.below(u64::from(hi - lo) * 2) as u32;
            let flag = if value > hi { "H" } else { "N" };
            let lab_body = |value: u32, flag: &str, t: &str| {
                encode(&[
                    msh(facility, &t[..14], "OUL^R22^OUL_R22", &ctl(20 + v)),
                    pid(&p),
                    "PV1|0001|O|01^^^^^^^^内科".to_string(),
                    "SPM|1|||023^血清^JC10".to_string(),
                    format!(
                        "OBR|1|{o}|{o}|{lab}^{lname}^JC10|||{}",
                        &t[..12],
                        o = order(0)
                    ),
                    format!("ORC|SC|{o}|{o}||CM", o = order(0)),
                    format!("OBX|1|NM|{lab}^{lname}^JC10||{value}|{unit}|{lo}-{hi}|{flag}|||F"),
                ])
            };
            if v == 0 && i % 5 == 0 {
                let old = ts(10, 0);
                w.file(
                    &p.id,
                    &date,
                    "OML-11",
                    &order(0),
                    &old,
                    "01",
                    0,
                    &lab_body(value + 1, flag, &old)?,
                )?;
            }
            let t = ts(11, 0);
            w.file(
                &p.id,
                &date,
                "OML-11",
                &order(0),
                &t,
                "01",
                1,
                &lab_body(value, flag, &t)?,
            )?;
            // A prescription; every seventh patient's last one was cancelled.
            let (hot, drug) = *rng.pick(&DRUGS);
            let t = ts(12, 0);
            let body = encode(&[
                msh(facility, &t[..14], "RDE^O11^RDE_O11", &ctl(30 + v)),
                pid(&p),
                "PV1|0001|O|01^^^^^^^^内科".to_string(),
                format!("ORC|NW|{o}|||||||{}", &t[..14], o = order(1)),
                format!("RXE||{hot}^{drug}^HOT|1||TAB^錠^MR9P|||||28|DAY^日^MR9P"),
            ])?;
            let cancelled = v + 1 == visits && i % 7 == 0;
            w.file(
                &p.id,
                &date,
                "OMP-01",
                &order(1),
                &t,
                "01",
                u8::from(!cancelled),
                &body,
            )?;
            // A physiology result on some visits.
            if (i + v) % 4 == 0 {
                let t = ts(14, 0);
                let hr = 55 + rng.below(40);
                let body = encode(&[
                    msh(facility, &t[..14], "ORU^R01^ORU_R01", &ctl(40 + v)),
                    pid(&p),
                    "PV1|0001|O|01^^^^^^^^内科".to_string(),
                    format!("OBR|1|{o}|{o}|60^心電図^JC10|||{}", &t[..12], o = order(2)),
                    format!("OBX|1|NM|9A010000000000001^心拍数^JC10||{hr}|/min|50-100|N|||F"),
                ])?;
                w.file(&p.id, &date, "OMG-13", &order(2), &t, "01", 1, &body)?;
            }
        }
    }
    Ok(w.out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests: a panic is the failure report

    use super::*;
    use crate::ssmix2::{Condition, parse_relative, walk};

    /// The generator's trees are what the ingest parser accepts: every path parses,
    /// the counts add up, every file is ISO-2022-JP HL7 with CR terminators, the
    /// SS-MIX2 profile in MSH-21, and the patient id of its path in PID-3.
    #[test]
    fn generated_trees_are_standard_storage() {
        let dir = tempfile::tempdir().unwrap();
        let g = generate(dir.path(), 12, "1310000001", 7).unwrap();
        assert_eq!(g.files, g.current + g.deleted);
        assert!(g.deleted >= 2, "updates and deletions are present: {g:?}");
        let mut files = Vec::new();
        walk(
            dir.path(),
            |p, _| files.push(p),
            |p, e| panic!("{p:?}: {e}"),
        );
        assert_eq!(files.len(), g.files);
        let mut kinds = std::collections::BTreeSet::new();
        let mut deleted = 0;
        for rel in &files {
            let f = parse_relative(rel).unwrap();
            kinds.insert(f.kind.clone());
            if f.condition == Condition::Deleted {
                deleted += 1;
            }
            let raw = std::fs::read(dir.path().join(rel)).unwrap();
            assert!(raw.contains(&0x1b), "ISO-2022-JP escapes present");
            assert!(!raw.contains(&b'\n'), "segments end with CR only");
            let (text, _, bad) = encoding_rs::ISO_2022_JP.decode(&raw);
            assert!(!bad);
            let segs: Vec<&str> = text.split('\r').filter(|s| !s.is_empty()).collect();
            let msh: Vec<&str> = segs[0].split('|').collect();
            assert_eq!(msh[0], "MSH");
            assert_eq!(msh[11], "2.5");
            assert_eq!(msh[17], "~ISO IR87");
            assert_eq!(msh[19], "ISO 2022-1994");
            assert_eq!(msh[20], MSH21);
            let pid = segs.iter().find(|s| s.starts_with("PID|")).unwrap();
            let pid3 = pid.split('|').nth(3).unwrap();
            assert_eq!(pid3.split('^').next().unwrap(), f.patient_id);
        }
        assert_eq!(deleted, g.deleted);
        for k in ["ADT-00", "ADT-22", "PPR-01", "OMP-01", "OML-11", "OMG-13"] {
            assert!(kinds.contains(k), "{k} missing: {kinds:?}");
        }
        let again = tempfile::tempdir().unwrap();
        assert_eq!(generate(again.path(), 12, "1310000001", 7).unwrap(), g);
        assert!(
            generate(dir.path(), 12, "1310000001", 7).is_err(),
            "no overwrite"
        );
    }
}
