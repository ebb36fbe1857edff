//! Files the client writes: new files only, with a mode, synced before the call
//! returns (key files, exports, job outputs). Nothing is ever overwritten.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use crate::error::ClientError;

/// Writes a file that must not exist yet, with the given mode.
pub fn write_new(path: &Path, contents: &str, mode: u32) -> Result<(), ClientError> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|source| match source.kind() {
            std::io::ErrorKind::AlreadyExists => ClientError::Exists {
                path: path.to_path_buf(),
            },
            _ => ClientError::File {
                path: path.to_path_buf(),
                source,
            },
        })?;
    f.write_all(contents.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|source| ClientError::File {
            path: path.to_path_buf(),
            source,
        })
}
