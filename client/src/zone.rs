//! Zone key custody. `kakera zone keygen` writes the public key (for the cluster
//! config) and either one private key file or, with custodians, m custodian files of
//! which any t rebuild the private key (kakera-shamir over the 32 key bytes). `unseal`
//! rebuilds it in memory for a job and checks it against the public key. Every file
//! holding key material is written with mode 0600 and never overwritten.

use std::path::{Path, PathBuf};

use kakera_shamir::Share;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::error::ClientError;
use crate::files::write_new;
use crate::seal::{ZonePrivateKey, ZonePublicKey};

/// Format version of key and custodian files.
pub const KEY_FILE_VERSION: u32 = 1;
/// The public key file's name.
pub const PUBLIC_FILE: &str = "zone.pub";
/// The private key file's name (without custodians).
pub const PRIVATE_FILE: &str = "zone.key";
/// Most custodians (shares are indexed 1..=255; keep it to a committee's size).
pub const MAX_CUSTODIANS: u8 = 32;

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PrivateFile {
    kakera_zone_key: u32,
    zone: String,
    public: String,
    private: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CustodianFile {
    kakera_zone_custodian: u32,
    zone: String,
    public: String,
    threshold: u8,
    custodians: u8,
    share: String,
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str, path: &Path) -> Result<Zeroizing<Vec<u8>>, ClientError> {
    if !text.len().is_multiple_of(2) || !text.is_ascii() {
        return Err(ClientError::Invalid(format!(
            "{}: a key field is not hex",
            path.display()
        )));
    }
    let mut out = Zeroizing::new(Vec::with_capacity(text.len() / 2));
    for i in (0..text.len()).step_by(2) {
        out.push(u8::from_str_radix(&text[i..i + 2], 16).map_err(|_| {
            ClientError::Invalid(format!("{}: a key field is not hex", path.display()))
        })?);
    }
    Ok(out)
}

fn public_from_hex(text: &str, path: &Path) -> Result<ZonePublicKey, ClientError> {
    let bytes = unhex(text, path)?;
    let raw: [u8; 32] = bytes.as_slice().try_into().map_err(|_| {
        ClientError::Invalid(format!(
            "{}: the public key is not 32 bytes",
            path.display()
        ))
    })?;
    ZonePublicKey::from_bytes(raw)
}

/// What `keygen` wrote.
#[derive(Debug)]
pub struct KeygenOutput {
    /// The public key.
    pub public: ZonePublicKey,
    /// The public key file.
    pub public_file: PathBuf,
    /// The private key file, or the custodian files.
    pub secret_files: Vec<PathBuf>,
}

/// How to keep the private key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Custody {
    /// One private key file.
    Single,
    /// `custodians` files, any `threshold` of which rebuild the key.
    Split {
        /// Files to write (m).
        custodians: u8,
        /// Files needed (t).
        threshold: u8,
    },
}

/// Generates a zone key pair into `dir` for zone `zone`.
pub fn keygen(dir: &Path, zone: &str, custody: Custody) -> Result<KeygenOutput, ClientError> {
    if let Custody::Split {
        custodians,
        threshold,
    } = custody
        && (threshold < 2 || threshold > custodians || custodians > MAX_CUSTODIANS)
    {
        return Err(ClientError::Invalid(format!(
            "custodians {custodians}, threshold {threshold}: need 2 <= threshold <= \
             custodians <= {MAX_CUSTODIANS}"
        )));
    }
    std::fs::create_dir_all(dir).map_err(|source| ClientError::File {
        path: dir.to_path_buf(),
        source,
    })?;
    let (private, public) = ZonePrivateKey::generate();
    let public_file = dir.join(PUBLIC_FILE);
    let mut secret_files = Vec::new();
    // Check every target first so a refusal leaves nothing half-written.
    let targets: Vec<PathBuf> = match custody {
        Custody::Single => vec![dir.join(PRIVATE_FILE)],
        Custody::Split { custodians, .. } => (1..=custodians)
            .map(|i| dir.join(format!("custodian-{i}.key")))
            .collect(),
    };
    for p in targets.iter().chain([&public_file]) {
        if p.exists() {
            return Err(ClientError::Exists { path: p.clone() });
        }
    }
    match custody {
        Custody::Single => {
            write_private(&targets[0], zone, &private)?;
            secret_files.push(targets[0].clone());
        }
        Custody::Split {
            custodians,
            threshold,
        } => {
            let shares = kakera_shamir::split(private.as_bytes(), threshold, custodians)
                .map_err(|e| ClientError::Invalid(format!("splitting the zone key: {e}")))?;
            for (share, path) in shares.iter().zip(&targets) {
                let encoded = Zeroizing::new(share.encode());
                let text = Zeroizing::new(
                    toml::to_string(&CustodianFile {
                        kakera_zone_custodian: KEY_FILE_VERSION,
                        zone: zone.to_string(),
                        public: public.to_hex(),
                        threshold,
                        custodians,
                        share: hex(&encoded),
                    })
                    .map_err(|e| ClientError::Invalid(format!("encoding a custodian file: {e}")))?,
                );
                write_new(
                    path,
                    &format!(
                        "# kakera zone key custodian share {} of {custodians}; {threshold} \
                         rebuild the key. Keep it apart from the others.\n{}",
                        share.x(),
                        text.as_str()
                    ),
                    0o600,
                )?;
                secret_files.push(path.clone());
            }
        }
    }
    write_new(&public_file, &format!("{}\n", public.to_hex()), 0o644)?;
    Ok(KeygenOutput {
        public,
        public_file,
        secret_files,
    })
}

/// Writes a private key file (mode 0600; the file must not exist).
pub fn write_private(path: &Path, zone: &str, private: &ZonePrivateKey) -> Result<(), ClientError> {
    let text = Zeroizing::new(
        toml::to_string(&PrivateFile {
            kakera_zone_key: KEY_FILE_VERSION,
            zone: zone.to_string(),
            public: private.public_key()?.to_hex(),
            private: hex(private.as_bytes()),
        })
        .map_err(|e| ClientError::Invalid(format!("encoding the key file: {e}")))?,
    );
    let body = Zeroizing::new(format!(
        "# kakera zone private key. Keep it inside the HSZ; never copy it out.\n{}",
        text.as_str()
    ));
    write_new(path, &body, 0o600)
}

fn read(path: &Path) -> Result<Zeroizing<String>, ClientError> {
    std::fs::read_to_string(path)
        .map(Zeroizing::new)
        .map_err(|source| ClientError::File {
            path: path.to_path_buf(),
            source,
        })
}

/// toml's own messages quote the offending line; a key file's lines must never be
/// echoed, so the error names only the file.
fn syntax(path: &Path) -> ClientError {
    ClientError::Invalid(format!(
        "{} is not a kakera zone key or custodian file",
        path.display()
    ))
}

/// Reads a private key file and checks it against its public key.
pub fn load_private(path: &Path) -> Result<ZonePrivateKey, ClientError> {
    let text = read(path)?;
    let file: PrivateFile = toml::from_str(&text).map_err(|_| syntax(path))?;
    if file.kakera_zone_key != KEY_FILE_VERSION {
        return Err(ClientError::Invalid(format!(
            "{}: key file version {} (this build reads {KEY_FILE_VERSION})",
            path.display(),
            file.kakera_zone_key
        )));
    }
    let private = ZonePrivateKey::from_bytes(&unhex(&file.private, path)?)?;
    let public = public_from_hex(&file.public, path)?;
    if private.public_key()? != public {
        return Err(ClientError::Invalid(format!(
            "{}: the private key does not match the public key in the file",
            path.display()
        )));
    }
    Ok(private)
}

/// Rebuilds the private key from custodian files (at least the threshold, all from
/// one key) and checks it against the public key they name.
pub fn unseal(paths: &[PathBuf]) -> Result<(ZonePrivateKey, ZonePublicKey), ClientError> {
    let mut shares: Vec<Share> = Vec::with_capacity(paths.len());
    let mut first: Option<(String, String, u8)> = None;
    for path in paths {
        let text = read(path)?;
        let file: CustodianFile = toml::from_str(&text).map_err(|_| syntax(path))?;
        if file.kakera_zone_custodian != KEY_FILE_VERSION {
            return Err(ClientError::Invalid(format!(
                "{}: custodian file version {} (this build reads {KEY_FILE_VERSION})",
                path.display(),
                file.kakera_zone_custodian
            )));
        }
        let this = (file.zone.clone(), file.public.clone(), file.threshold);
        match &first {
            None => first = Some(this),
            Some(f) if *f != this => {
                return Err(ClientError::Invalid(format!(
                    "{} belongs to another zone key than {}",
                    path.display(),
                    paths[0].display()
                )));
            }
            Some(_) => {}
        }
        let share = Share::decode(&unhex(&file.share, path)?).map_err(|e| {
            ClientError::Invalid(format!("{}: unusable custodian share: {e}", path.display()))
        })?;
        if shares.iter().any(|s| s.x() == share.x()) {
            return Err(ClientError::Invalid(format!(
                "{} repeats custodian share {}; each custodian's file counts once",
                path.display(),
                share.x()
            )));
        }
        shares.push(share);
    }
    let Some((_, public_hex, threshold)) = first else {
        return Err(ClientError::Invalid(
            "name the custodian files to unseal with".into(),
        ));
    };
    if shares.len() < usize::from(threshold) {
        return Err(ClientError::Invalid(format!(
            "{} custodian file(s) given; this key needs {threshold}",
            shares.len()
        )));
    }
    let public = public_from_hex(&public_hex, &paths[0])?;
    let bytes = kakera_shamir::combine(&shares)
        .map_err(|e| ClientError::Invalid(format!("combining custodian shares: {e}")))?;
    let private = ZonePrivateKey::from_bytes(&bytes)?;
    if private.public_key()? != public {
        return Err(ClientError::Invalid(
            "the custodian shares do not rebuild the zone key (a file is damaged or from \
             another key)"
                .into(),
        ));
    }
    Ok((private, public))
}

/// Reads a public key file (hex, as `keygen` writes it).
pub fn load_public(path: &Path) -> Result<ZonePublicKey, ClientError> {
    let text = read(path)?;
    public_from_hex(text.trim(), path)
}
