//! SS-MIX2 input (paths under a standard storage root, HL7 v2 messages) never makes
//! ingest or the anonymization job panic; a parsed path keeps what it was read from.
#![no_main]

use std::path::Path;

use kakera_medical::anonymize::{Message, ResearchKey, rows_of};
use kakera_medical::ssmix2::parse_relative;
use kakera_proto::{Date, RecordKind, RecordMeta, SubjectTag};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(file) = parse_relative(Path::new(text)) {
            assert!(
                text.contains(&file.patient_id),
                "the patient id comes from the path"
            );
        }
    }
    if Message::parse(data).is_ok() {
        let meta = RecordMeta {
            subject: SubjectTag([0; 32]),
            kind: RecordKind::Ssmix2,
            source: "fuzz".into(),
            effective: Date::new(2026, 1, 1).expect("a valid date"),
            data_kind: None,
        };
        let key = ResearchKey::from_bytes([7; 32]);
        for band_years in [0, 1, 10] {
            let _ = rows_of(&meta, data, &key, band_years);
        }
    }
});
