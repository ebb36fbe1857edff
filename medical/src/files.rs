//! Files of any kind (`kakera put`): DICOM studies, MFER waveforms, scanned
//! documents, claim files, each stored as one record.
//!
//! - What each file is (kind, source facility, subject, date, data kind) comes from
//!   flags, which apply to every file, or from a manifest (JSON Lines, one object
//!   per file: `{"path": "ct/0001.dcm", "kind": "image", "patient_id": "0000123",
//!   "date": "2025-04-01", "data_kind": "CT"}`, paths relative to the manifest),
//!   whose fields take precedence over the flags.
//! - Subject: a subject tag (64 hex) or a patient id, which the linkage key turns
//!   into the tag SS-MIX2 ingest gives the same person at the same facility.
//! - Record id: the linkage key's id of (source, `file/<kind>/<name>/<BLAKE3 of the
//!   bytes>`) at the record's date, where `name` is the path as given (a directory
//!   argument's files by their path under it). The same file gives the same id on
//!   every run (idempotent, resumable: run again after an interruption); a changed
//!   file is a new record. The id reveals neither name nor content without the key.
//! - A file that cannot be read, is empty or too large, or whose manifest line is
//!   malformed is reported by name (and line) and skipped; the run goes on.
//! - Memory: one batch of files (at most [`MAX_BATCH_BYTES`], or one file) at a
//!   time; directories are walked as they are read, never listed whole.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::time::Instant;

use kakera_client::NewRecord;
use kakera_client::{Client, Date};
use kakera_proto::{RecordId, RecordKind, RecordMeta, SubjectTag};

use crate::error::MedicalError;
use crate::ingest::{MAX_BATCH_BYTES, Progress, read_record};
use crate::linkage::LinkageKey;
use crate::store::store_stream_absent;
use crate::store::{Tally, store_absent};

/// What a file is, as far as flags or a manifest line say.
#[derive(Debug, Clone, Default)]
pub struct FileMeta {
    /// The record kind.
    pub kind: Option<RecordKind>,
    /// The source facility code.
    pub source: Option<String>,
    /// The subject tag, when known already.
    pub subject: Option<SubjectTag>,
    /// The facility's patient id, turned into the subject tag by the linkage key.
    pub patient_id: Option<String>,
    /// The record's effective date.
    pub date: Option<Date>,
    /// The data kind (A-Z, 0-9, '-'), e.g. `CT`, `ECG`.
    pub data_kind: Option<String>,
}

impl FileMeta {
    /// A description from text fields (a manifest line's, or the flags of `kakera
    /// put`): kind, subject tag and date parsed, the rest as given.
    pub fn parse(
        kind: Option<&str>,
        source: Option<String>,
        subject: Option<&str>,
        patient_id: Option<String>,
        date: Option<&str>,
        data_kind: Option<String>,
    ) -> Result<FileMeta, String> {
        let text = |e: kakera_proto::ProtoError| e.to_string();
        Ok(FileMeta {
            kind: kind.map(RecordKind::parse).transpose().map_err(text)?,
            source,
            subject: subject
                .map(|s| kakera_proto::record::parse_hex::<32>(s, "subject tag").map(SubjectTag))
                .transpose()
                .map_err(text)?,
            patient_id,
            date: date.map(Date::parse).transpose().map_err(text)?,
            data_kind,
        })
    }

    /// `self`'s fields, each falling back to `defaults`'.
    fn or(&self, defaults: &FileMeta) -> FileMeta {
        FileMeta {
            kind: self.kind.or(defaults.kind),
            source: self.source.clone().or_else(|| defaults.source.clone()),
            // A subject given one way on the line overrides both ways of the flags.
            subject: self.subject.or(if self.patient_id.is_none() {
                defaults.subject
            } else {
                None
            }),
            patient_id: self.patient_id.clone().or_else(|| {
                if self.subject.is_none() {
                    defaults.patient_id.clone()
                } else {
                    None
                }
            }),
            date: self.date.or(defaults.date),
            data_kind: self
                .data_kind
                .clone()
                .or_else(|| defaults.data_kind.clone()),
        }
    }

    /// The record metadata, or what is missing.
    fn resolve(&self, key: &LinkageKey) -> Result<RecordMeta, String> {
        let kind = self.kind.ok_or("no kind (give --kind or \"kind\")")?;
        let source = self
            .source
            .clone()
            .ok_or("no source facility (give --source or \"source\")")?;
        let subject = match (&self.subject, &self.patient_id) {
            (Some(tag), None) => *tag,
            (None, Some(pid)) if !pid.is_empty() => key.subject_tag(&source, pid),
            (Some(_), Some(_)) => return Err("both a subject tag and a patient id".into()),
            _ => {
                return Err(
                    "no subject (give --subject or --patient-id, or \"subject\" or \
                     \"patient_id\")"
                        .into(),
                );
            }
        };
        let effective = self.date.ok_or("no date (give --date or \"date\")")?;
        let meta = RecordMeta {
            subject,
            kind,
            source,
            effective,
            data_kind: self.data_kind.clone(),
        };
        meta.validate().map_err(|e| e.to_string())?;
        Ok(meta)
    }
}

/// Where the files come from.
#[derive(Debug, Clone)]
pub enum Input {
    /// Files and directories (walked), all described by the flags.
    Paths(Vec<PathBuf>),
    /// A manifest (JSON Lines), each line one file.
    Manifest(PathBuf),
}

/// What a run did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct FilesSummary {
    /// Files looked at.
    pub files: usize,
    /// Records stored, skipped as stored before, erased or opted out.
    #[serde(flatten)]
    pub tally: Tally,
    /// Files (or manifest lines) skipped, with the reason.
    pub failed: Vec<(String, String)>,
}

/// One manifest line.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    path: String,
    kind: Option<String>,
    source: Option<String>,
    subject: Option<String>,
    patient_id: Option<String>,
    date: Option<String>,
    data_kind: Option<String>,
}

impl Line {
    fn meta(&self) -> Result<FileMeta, String> {
        FileMeta::parse(
            self.kind.as_deref(),
            self.source.clone(),
            self.subject.as_deref(),
            self.patient_id.clone(),
            self.date.as_deref(),
            self.data_kind.clone(),
        )
    }
}

/// One file to store: where it is, the name its id is derived from, and what the
/// manifest line said of it (or the reason the line is unusable).
struct Found {
    path: PathBuf,
    name: String,
    meta: Result<FileMeta, String>,
}

/// The files of `input`, one at a time: directories walked as they are read, the
/// manifest read a line at a time. Yields `Err((name, reason))` for what cannot be
/// listed.
struct Files {
    /// Arguments not yet started (for `Input::Paths`).
    args: std::vec::IntoIter<PathBuf>,
    /// Open directories of the current argument, with the name prefix of each.
    dirs: Vec<(std::fs::ReadDir, String)>,
    /// The manifest, its directory and the line number.
    manifest: Option<(
        std::io::Lines<std::io::BufReader<std::fs::File>>,
        PathBuf,
        usize,
    )>,
}

impl Files {
    fn open(input: &Input) -> Result<Files, MedicalError> {
        Ok(match input {
            Input::Paths(paths) => Files {
                args: paths.clone().into_iter(),
                dirs: Vec::new(),
                manifest: None,
            },
            Input::Manifest(path) => {
                let file = std::fs::File::open(path).map_err(|source| MedicalError::File {
                    path: path.clone(),
                    source,
                })?;
                let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
                Files {
                    args: Vec::new().into_iter(),
                    dirs: Vec::new(),
                    manifest: Some((std::io::BufReader::new(file).lines(), dir, 0)),
                }
            }
        })
    }
}

impl Iterator for Files {
    type Item = Result<Found, (String, String)>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some((lines, dir, n)) = &mut self.manifest {
            // Bounded: each turn consumes a line.
            loop {
                *n += 1;
                let at = *n;
                let line = match lines.next()? {
                    Ok(l) => l,
                    Err(e) => return Some(Err((format!("manifest line {at}"), e.to_string()))),
                };
                if line.trim().is_empty() {
                    continue;
                }
                let parsed: Line = match serde_json::from_str(&line) {
                    Ok(l) => l,
                    Err(e) => {
                        return Some(Err((format!("manifest line {at}"), e.to_string())));
                    }
                };
                let path = dir.join(&parsed.path);
                return Some(Ok(Found {
                    path,
                    meta: parsed
                        .meta()
                        .map_err(|e| format!("manifest line {at}: {e}")),
                    name: parsed.path,
                }));
            }
        }
        // Bounded: each turn consumes a directory entry, a directory or an argument.
        loop {
            if let Some((dir, prefix)) = self.dirs.last_mut() {
                let prefix = prefix.clone();
                match dir.next() {
                    None => {
                        self.dirs.pop();
                    }
                    Some(Err(e)) => return Some(Err((prefix, e.to_string()))),
                    Some(Ok(entry)) => {
                        let name = format!("{prefix}/{}", entry.file_name().to_string_lossy());
                        let path = entry.path();
                        if path.is_dir() {
                            match std::fs::read_dir(&path) {
                                Ok(rd) => self.dirs.push((rd, name)),
                                Err(e) => return Some(Err((name, e.to_string()))),
                            }
                            continue;
                        }
                        return Some(Ok(Found {
                            path,
                            name,
                            meta: Ok(FileMeta::default()),
                        }));
                    }
                }
                continue;
            }
            let arg = self.args.next()?;
            let name = arg
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_else(|| arg.display().to_string());
            if arg.is_dir() {
                match std::fs::read_dir(&arg) {
                    Ok(rd) => self.dirs.push((rd, name)),
                    Err(e) => return Some(Err((arg.display().to_string(), e.to_string()))),
                }
                continue;
            }
            return Some(Ok(Found {
                path: arg,
                name,
                meta: Ok(FileMeta::default()),
            }));
        }
    }
}

/// The files under `paths` (directories walked as they are read), or what could
/// not be listed, as `(where, why)`.
pub(crate) fn walk_paths(
    paths: &[PathBuf],
) -> impl Iterator<Item = Result<PathBuf, (String, String)>> {
    Files {
        args: Vec::from(paths).into_iter(),
        dirs: Vec::new(),
        manifest: None,
    }
    .map(|f| f.map(|f| f.path))
}

/// The record id of a file: see the module doc.
pub fn file_record_id(
    key: &LinkageKey,
    meta: &RecordMeta,
    name: &str,
    data: &[u8],
) -> Result<RecordId, MedicalError> {
    file_record_id_of_digest(key, meta, name, &blake3::hash(data))
}

/// BLAKE3 of a file's bytes, read a buffer at a time.
fn hash_file(path: &Path) -> Result<blake3::Hash, String> {
    let mut hasher = blake3::Hasher::new();
    hasher
        .update_reader(std::fs::File::open(path).map_err(|e| e.to_string())?)
        .map_err(|e| e.to_string())?;
    Ok(hasher.finalize())
}

/// [`file_record_id`] of a file whose bytes hash to `digest`.
fn file_record_id_of_digest(
    key: &LinkageKey,
    meta: &RecordMeta,
    name: &str,
    digest: &blake3::Hash,
) -> Result<RecordId, MedicalError> {
    let at_ms = date_ms(meta.effective)?;
    Ok(key.record_id(
        &meta.source,
        &format!("file/{}/{name}/{}", meta.kind.as_str(), digest.to_hex()),
        at_ms,
    ))
}

/// Midnight UTC of `date`, in Unix ms, for the time a record id begins with; 0 for
/// a date before 1970 (ids cannot begin earlier: a birth date, an old document).
pub(crate) fn date_ms(date: Date) -> Result<u64, MedicalError> {
    let bad = || MedicalError::Invalid(format!("{date} is not a date kakera can place in time"));
    let month = time::Month::try_from(date.month).map_err(|_| bad())?;
    let d =
        time::Date::from_calendar_date(i32::from(date.year), month, date.day).map_err(|_| bad())?;
    let ms = d.midnight().assume_utc().unix_timestamp_nanos() / 1_000_000;
    u64::try_from(ms.max(0)).map_err(|_| bad())
}

/// Counts the files of `input` and their bytes (for the progress display), without
/// keeping them.
pub fn count(input: &Input) -> Result<(usize, u64), MedicalError> {
    let mut files = 0;
    let mut bytes = 0;
    for found in Files::open(input)?.flatten() {
        files += 1;
        bytes += std::fs::metadata(&found.path).map_or(0, |m| m.len());
    }
    Ok((files, bytes))
}

/// Stores the files of `input` with `client` (an ingest certificate), described by
/// `defaults` and the manifest, `batch_files` at a time; `progress` is called after
/// each batch. Errors only when the cluster fails or the manifest cannot be opened
/// (a re-run resumes).
pub async fn put_files(
    client: &Client,
    key: &LinkageKey,
    input: &Input,
    defaults: &FileMeta,
    batch_files: usize,
    mut progress: impl FnMut(&Progress),
) -> Result<FilesSummary, MedicalError> {
    let (files_total, bytes_total) = count(input)?;
    let batch_files = batch_files.clamp(1, client.batch_records());
    let mut summary = FilesSummary::default();
    let mut state = Progress {
        files_done: 0,
        files_total,
        bytes_done: 0,
        bytes_total,
        started: Instant::now(),
    };
    let mut batch: Vec<(RecordId, NewRecord)> = Vec::new();
    let mut batch_bytes = 0u64;
    for found in Files::open(input)? {
        summary.files += 1;
        state.files_done += 1;
        let found = match found {
            Ok(f) => f,
            Err(failed) => {
                summary.failed.push(failed);
                continue;
            }
        };
        let meta = match found.meta.and_then(|m| m.or(defaults).resolve(key)) {
            Ok(m) => m,
            Err(why) => {
                summary.failed.push((found.name, why));
                continue;
            }
        };
        let size = std::fs::metadata(&found.path).map_or(0, |m| m.len());
        if size > client.segment_bytes() {
            // Larger than one segment: hashed, then streamed from the file (never
            // held whole in memory), stored as segments.
            state.bytes_done += size;
            let path = found.path.clone();
            let digest = tokio::task::spawn_blocking(move || hash_file(&path))
                .await
                .map_err(|e| MedicalError::Invalid(format!("hashing task failed: {e}")))?;
            let digest = match digest {
                Ok(d) => d,
                Err(why) => {
                    summary.failed.push((found.path.display().to_string(), why));
                    continue;
                }
            };
            let id = file_record_id_of_digest(key, &meta, &found.name, &digest)?;
            if let Err(why) =
                store_stream_absent(client, id, meta, &found.path, &mut summary.tally).await?
            {
                summary.failed.push((found.path.display().to_string(), why));
            }
            progress(&state);
            continue;
        }
        let data = match read_record(&found.path) {
            Ok(d) => d,
            Err(why) => {
                summary.failed.push((found.path.display().to_string(), why));
                continue;
            }
        };
        let len = data.len() as u64;
        if !batch.is_empty() && (batch.len() == batch_files || batch_bytes + len > MAX_BATCH_BYTES)
        {
            store_absent(client, std::mem::take(&mut batch), &mut summary.tally).await?;
            batch_bytes = 0;
            progress(&state);
        }
        let id = file_record_id(key, &meta, &found.name, &data)?;
        batch_bytes += len;
        state.bytes_done += len;
        batch.push((id, NewRecord { meta, data }));
    }
    store_absent(client, batch, &mut summary.tally).await?;
    progress(&state);
    Ok(summary)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn key() -> LinkageKey {
        LinkageKey::from_bytes([5; 32])
    }

    fn defaults() -> FileMeta {
        FileMeta {
            kind: Some(RecordKind::Image),
            source: Some("1310000001".into()),
            patient_id: Some("0000123".into()),
            date: Some(Date::new(2025, 4, 1).unwrap()),
            ..FileMeta::default()
        }
    }

    /// Idempotent ingest: the same file gives the same id; another name, other
    /// bytes or another source give another.
    #[test]
    fn file_ids_are_stable_and_depend_on_name_bytes_and_source() {
        let k = key();
        let meta = defaults().resolve(&k).unwrap();
        let a = file_record_id(&k, &meta, "ct/1.dcm", b"abc").unwrap();
        assert_eq!(a, file_record_id(&k, &meta, "ct/1.dcm", b"abc").unwrap());
        assert_ne!(a, file_record_id(&k, &meta, "ct/2.dcm", b"abc").unwrap());
        assert_ne!(a, file_record_id(&k, &meta, "ct/1.dcm", b"abd").unwrap());
        let mut other = meta.clone();
        other.source = "1310000002".into();
        assert_ne!(a, file_record_id(&k, &other, "ct/1.dcm", b"abc").unwrap());
        // Ids begin with the record's date, as every record id begins with a time;
        // a document from before 1970 still gets one.
        assert_eq!(a.unix_ms(), date_ms(meta.effective).unwrap());
        assert_eq!(date_ms(Date::new(1965, 3, 1).unwrap()).unwrap(), 0);
    }

    /// The same patient at the same facility links to one subject whether the
    /// record came as a file or through SS-MIX2.
    #[test]
    fn a_patient_id_links_through_the_linkage_key() {
        let k = key();
        let meta = defaults().resolve(&k).unwrap();
        assert_eq!(meta.subject, k.subject_tag("1310000001", "0000123"));
    }

    /// Missing or conflicting fields are named; a manifest line's fields win over
    /// the flags.
    #[test]
    fn metadata_errors_name_what_is_missing() {
        let k = key();
        let none = FileMeta::default();
        assert!(none.resolve(&k).unwrap_err().contains("no kind"));
        let mut no_date = defaults();
        no_date.date = None;
        assert!(no_date.resolve(&k).unwrap_err().contains("no date"));
        let line = FileMeta {
            subject: Some(SubjectTag([9; 32])),
            kind: Some(RecordKind::File),
            ..FileMeta::default()
        };
        let merged = line.or(&defaults()).resolve(&k).unwrap();
        assert_eq!(
            merged.subject,
            SubjectTag([9; 32]),
            "the line's tag, not the flag's id"
        );
        assert_eq!(merged.kind, RecordKind::File);
        let mut bad = defaults();
        bad.data_kind = Some("ct scan".into());
        assert!(bad.resolve(&k).unwrap_err().contains("data kind"));
    }

    /// Directories are walked to every file with its path under the argument as its
    /// name; manifest lines resolve against the manifest's directory and report
    /// their line when malformed.
    #[test]
    fn inputs_walk_trees_and_read_manifests_line_by_line() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("study/series")).unwrap();
        std::fs::write(dir.path().join("study/a.dcm"), b"a").unwrap();
        std::fs::write(dir.path().join("study/series/b.dcm"), b"b").unwrap();
        let mut names: Vec<String> = Files::open(&Input::Paths(vec![dir.path().join("study")]))
            .unwrap()
            .map(|f| f.unwrap().name)
            .collect();
        names.sort();
        assert_eq!(names, ["study/a.dcm", "study/series/b.dcm"]);

        let manifest = dir.path().join("m.jsonl");
        std::fs::write(
            &manifest,
            "{\"path\": \"study/a.dcm\", \"kind\": \"image\"}\n\n{\"path\": 3}\n\
             {\"path\": \"x\", \"date\": \"2025-13-01\"}\n",
        )
        .unwrap();
        let got: Vec<_> = Files::open(&Input::Manifest(manifest)).unwrap().collect();
        assert_eq!(got.len(), 3);
        let first = got[0].as_ref().unwrap();
        assert_eq!(first.path, dir.path().join("study/a.dcm"));
        assert_eq!(first.meta.as_ref().unwrap().kind, Some(RecordKind::Image));
        assert_eq!(got[1].as_ref().err().unwrap().0, "manifest line 3");
        let third = got[2].as_ref().unwrap();
        assert!(
            third
                .meta
                .as_ref()
                .unwrap_err()
                .starts_with("manifest line 4")
        );
    }
}
