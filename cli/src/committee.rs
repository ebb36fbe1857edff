//! Review committee members' keys (issue 22): the key file `kakera grant keygen`
//! writes and `kakera grant sign` (and the demo) read, and signing a grant's terms.

use std::path::Path;

use kakera_proto::catalog::Grant;
use kakera_proto::committee::{CommitteeSignature, approval_message};

use crate::error::CliError;

/// The `kind` of a committee member's key file.
pub const MEMBER_KEY_KIND: &str = "kakera-committee-member-key";

/// Bytes of hex text (either case); `None` if it is not hex.
pub fn unhex(text: &str) -> Option<Vec<u8>> {
    let text = text.trim();
    if !text.len().is_multiple_of(2) || !text.is_ascii() {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok())
        .collect()
}

/// A member's name and signing key from its key file.
pub fn load_member_key(path: &Path) -> Result<(String, ring::signature::Ed25519KeyPair), CliError> {
    let bad = |why: &str| CliError::Invalid(format!("{}: {why}", path.display()));
    let text = zeroize::Zeroizing::new(std::fs::read_to_string(path).map_err(|e| {
        CliError::Invalid(format!(
            "{}: cannot read the member key: {e}",
            path.display()
        ))
    })?);
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|_| bad("not a member key file (JSON)"))?;
    if v["kind"] != MEMBER_KEY_KIND {
        return Err(bad("not a member key file from `kakera grant keygen`"));
    }
    let member = v["member"]
        .as_str()
        .ok_or_else(|| bad("the key file names no member"))?
        .to_string();
    let pkcs8 = zeroize::Zeroizing::new(
        v["pkcs8"]
            .as_str()
            .and_then(unhex)
            .ok_or_else(|| bad("the key is not hex"))?,
    );
    let pair = ring::signature::Ed25519KeyPair::from_pkcs8(&pkcs8)
        .map_err(|_| bad("the key is not an Ed25519 PKCS#8 key"))?;
    Ok((member, pair))
}

/// The signature of the member whose key file is `key` over `grant`'s terms on
/// cluster `cluster_id`.
pub fn sign_grant(
    key: &Path,
    cluster_id: &str,
    grant: &Grant,
) -> Result<CommitteeSignature, CliError> {
    let (member, pair) = load_member_key(key)?;
    let message = approval_message(cluster_id, grant)?;
    Ok(CommitteeSignature {
        member,
        signature: pair.sign(&message).as_ref().to_vec(),
    })
}
