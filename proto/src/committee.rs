//! The data provision review committee's approval of a grant (issue 22): the
//! canonical bytes a member signs, and the check that `threshold` distinct members
//! signed them. Pure: Ed25519 through ring, no clock, no IO. Members sign offline
//! (`kakera grant sign`); the operator submits the grant with the signatures; the
//! state machine verifies them against the committee recorded in the catalog.

use serde::{Deserialize, Serialize};

use crate::catalog::{Grant, GrantScope};
use crate::error::Result;

/// Prefix of every approval message: a signature over it is good for nothing else.
pub const APPROVAL_DOMAIN: &[u8] = b"kakera grant approval v1\0";
/// Most signatures one grant carries (the committee's size bounds it).
pub const MAX_SIGNATURES: usize = 32;
/// Bytes of an Ed25519 signature.
pub const SIGNATURE_BYTES: usize = 64;
/// Most bytes of a member's name.
pub const MAX_MEMBER_NAME_BYTES: usize = 64;

/// One member's signature over a grant's approval message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitteeSignature {
    /// The member, as the committee lists it.
    pub member: String,
    /// Ed25519 over [`approval_message`].
    pub signature: Vec<u8>,
}

/// The committee as the catalog records it: who may sign and how many must.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Committee {
    /// Signatures a grant needs.
    pub threshold: u8,
    /// Members and their Ed25519 public keys.
    pub members: Vec<(String, [u8; 32])>,
}

/// Why a grant's signatures do not approve it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApprovalRefusal {
    /// A signature names someone the committee does not list.
    #[error("'{member}' is not a member of the review committee")]
    NotAMember {
        /// The name given.
        member: String,
    },
    /// One member signed twice.
    #[error("'{member}' signed twice; each member counts once")]
    Twice {
        /// The member.
        member: String,
    },
    /// A signature does not verify over these terms with the member's key.
    #[error(
        "the signature of '{member}' is not over these terms (job, reader, scope, expiry, \
         approval reference and cluster must all match what was signed)"
    )]
    BadSignature {
        /// The member.
        member: String,
    },
    /// Fewer valid signatures than the threshold.
    #[error("{valid} valid committee signatures; this cluster needs {needed}")]
    TooFew {
        /// Valid, distinct signatures.
        valid: usize,
        /// The threshold.
        needed: u8,
    },
    /// More signatures than any committee has members.
    #[error("{count} signatures; at most {MAX_SIGNATURES}")]
    TooMany {
        /// How many came.
        count: usize,
    },
}

/// The terms a member signs, in a fixed encoding.
#[derive(Serialize)]
struct Terms<'a> {
    cluster_id: &'a str,
    job: &'a str,
    reader: &'a str,
    scope: &'a GrantScope,
    expires_at_ms: u64,
    approval: &'a str,
}

/// The bytes a member signs to approve `grant` on cluster `cluster_id`: the domain
/// prefix and the codec encoding of the cluster id, job, reader, scope, expiry and
/// approval reference (not who creates it or when).
pub fn approval_message(cluster_id: &str, grant: &Grant) -> Result<Vec<u8>> {
    let terms = crate::codec::encode(&Terms {
        cluster_id,
        job: &grant.job,
        reader: &grant.reader,
        scope: &grant.scope,
        expires_at_ms: grant.expires_at_ms,
        approval: &grant.approval,
    })?;
    Ok([APPROVAL_DOMAIN, &terms].concat())
}

impl Committee {
    /// The members who approved `message`, in signature order, if at least
    /// `threshold` distinct members signed it validly. Every signature must be a
    /// member's and valid: one bad signature refuses the grant rather than being
    /// skipped, so a mistake is seen.
    pub fn verify(
        &self,
        message: &[u8],
        signatures: &[CommitteeSignature],
    ) -> std::result::Result<Vec<String>, ApprovalRefusal> {
        if signatures.len() > MAX_SIGNATURES {
            return Err(ApprovalRefusal::TooMany {
                count: signatures.len(),
            });
        }
        let mut signers: Vec<String> = Vec::with_capacity(signatures.len());
        for s in signatures {
            let Some((_, key)) = self.members.iter().find(|(name, _)| *name == s.member) else {
                let mut member = s.member.clone();
                member.truncate(member.floor_char_boundary(MAX_MEMBER_NAME_BYTES));
                return Err(ApprovalRefusal::NotAMember { member });
            };
            if signers.contains(&s.member) {
                return Err(ApprovalRefusal::Twice {
                    member: s.member.clone(),
                });
            }
            let public = ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, key);
            if public.verify(message, &s.signature).is_err() {
                return Err(ApprovalRefusal::BadSignature {
                    member: s.member.clone(),
                });
            }
            signers.push(s.member.clone());
        }
        if signers.len() < usize::from(self.threshold) {
            return Err(ApprovalRefusal::TooFew {
                valid: signers.len(),
                needed: self.threshold,
            });
        }
        Ok(signers)
    }
}

#[cfg(test)]
mod tests {
    use ring::signature::{Ed25519KeyPair, KeyPair};

    use super::*;
    use crate::record::RecordKind;

    fn member(seed: u8) -> Ed25519KeyPair {
        Ed25519KeyPair::from_seed_unchecked(&[seed; 32]).unwrap_or_else(|e| panic!("{e}"))
    }

    fn grant(kinds: Vec<RecordKind>) -> Grant {
        Grant {
            job: "study-1".into(),
            reader: "anon-job".into(),
            scope: GrantScope {
                kinds,
                ..GrantScope::default()
            },
            expires_at_ms: 1_900_000_000_000,
            approval: "IRB-2026-042".into(),
            created_at_ms: 0,
            created_by: String::new(),
            revoked: None,
        }
    }

    fn sign(key: &Ed25519KeyPair, name: &str, message: &[u8]) -> CommitteeSignature {
        CommitteeSignature {
            member: name.into(),
            signature: key.sign(message).as_ref().to_vec(),
        }
    }

    /// Issue 22: t valid signatures of distinct members approve a grant; t - 1, a
    /// signature over another scope, a member twice and a non-member do not.
    #[test]
    fn a_grant_needs_t_distinct_valid_member_signatures() {
        let (a, b, c, outsider) = (member(1), member(2), member(3), member(9));
        let key = |k: &Ed25519KeyPair| -> [u8; 32] {
            k.public_key()
                .as_ref()
                .try_into()
                .unwrap_or_else(|_| panic!("32 bytes"))
        };
        let committee = Committee {
            threshold: 2,
            members: vec![
                ("sato".into(), key(&a)),
                ("tanaka".into(), key(&b)),
                ("ito".into(), key(&c)),
            ],
        };
        let g = grant(vec![RecordKind::Claim]);
        let msg = approval_message("kakera-test", &g).unwrap_or_else(|e| panic!("{e}"));
        let ok = committee.verify(&msg, &[sign(&a, "sato", &msg), sign(&c, "ito", &msg)]);
        assert_eq!(ok, Ok(vec!["sato".to_string(), "ito".to_string()]));

        assert_eq!(
            committee.verify(&msg, &[sign(&a, "sato", &msg)]),
            Err(ApprovalRefusal::TooFew {
                valid: 1,
                needed: 2
            })
        );
        let wider = approval_message(
            "kakera-test",
            &grant(vec![RecordKind::Claim, RecordKind::Death]),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            committee.verify(&msg, &[sign(&a, "sato", &msg), sign(&b, "tanaka", &wider)]),
            Err(ApprovalRefusal::BadSignature {
                member: "tanaka".into()
            })
        );
        assert_eq!(
            committee.verify(&msg, &[sign(&a, "sato", &msg), sign(&a, "sato", &msg)]),
            Err(ApprovalRefusal::Twice {
                member: "sato".into()
            })
        );
        assert_eq!(
            committee.verify(
                &msg,
                &[sign(&a, "sato", &msg), sign(&outsider, "mallory", &msg)]
            ),
            Err(ApprovalRefusal::NotAMember {
                member: "mallory".into()
            })
        );
        // A member's key under another member's name is that name's bad signature.
        assert!(matches!(
            committee.verify(&msg, &[sign(&a, "sato", &msg), sign(&a, "tanaka", &msg)]),
            Err(ApprovalRefusal::BadSignature { .. })
        ));
        // Signed for another cluster: not these terms.
        let elsewhere = approval_message("other-cluster", &g).unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(
            committee.verify(
                &msg,
                &[sign(&a, "sato", &elsewhere), sign(&b, "tanaka", &msg)]
            ),
            Err(ApprovalRefusal::BadSignature { .. })
        ));
    }
}
