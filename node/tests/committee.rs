//! Issue 22 (no single insider): with a review committee in the config, a grant takes
//! effect only with the committee's threshold of valid, distinct member signatures
//! over its terms. One operator alone, fewer signatures, a signature over other
//! terms, one member twice and a non-member are each refused by the cluster; the
//! audit entry of an approved grant names its signers.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests: a panic is the failure report

mod common;

use std::time::{Duration, Instant};

use common::{clients, start_with};
use kakera_client::ClientError;
use kakera_net::NetError;
use kakera_proto::audit::{AuditAction, AuditQuery};
use kakera_proto::catalog::{Grant, GrantScope};
use kakera_proto::committee::{CommitteeSignature, approval_message};
use kakera_proto::{ErrorKind, RecordKind};
use ring::signature::{Ed25519KeyPair, KeyPair};

fn member(seed: u8) -> Ed25519KeyPair {
    Ed25519KeyPair::from_seed_unchecked(&[seed; 32]).unwrap()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn grant(job: &str, kinds: Vec<RecordKind>) -> Grant {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    Grant {
        job: job.into(),
        reader: "anon-job".into(),
        scope: GrantScope {
            kinds,
            ..GrantScope::default()
        },
        expires_at_ms: now + 3_600_000,
        approval: "IRB-2026-077".into(),
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

fn forbidden_saying(r: Result<(), ClientError>, words: &str) {
    match r {
        Err(ClientError::Net(NetError::Refused {
            kind: ErrorKind::Forbidden,
            message,
            ..
        })) => assert!(message.contains(words), "{message}"),
        other => panic!("expected a refusal saying '{words}', got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_takes_effect_only_with_the_committees_signatures() {
    let (sato, tanaka, ito, mallory) = (member(1), member(2), member(3), member(9));
    let mut section = String::from("[committee]\nthreshold = 2\n");
    for (name, key) in [("sato", &sato), ("tanaka", &tanaka), ("ito", &ito)] {
        section.push_str(&format!(
            "[[committee.members]]\nname = \"{name}\"\npublic_key = \"{}\"\n",
            hex(key.public_key().as_ref())
        ));
    }
    let dir = tempfile::tempdir().unwrap();
    let cluster = start_with(dir.path(), 5, &section).await;
    let (operator, _ingest, _reader) = clients(&cluster);
    let cluster_id = cluster.config().cluster_id;

    // One operator alone: refused, whether or not the committee is recorded yet.
    let g = grant("study-77", vec![RecordKind::Claim]);
    forbidden_saying(operator.create_grant(g.clone()).await, "2 signatures");

    let msg = approval_message(&cluster_id, &g).unwrap();
    let other_terms = approval_message(
        &cluster_id,
        &grant("study-77", vec![RecordKind::Claim, RecordKind::Death]),
    )
    .unwrap();
    // The committee is recorded by the leader shortly after it starts.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match operator
            .create_signed_grant(g.clone(), vec![sign(&sato, "sato", &msg)])
            .await
        {
            Err(ClientError::Net(NetError::Refused {
                kind: ErrorKind::Forbidden,
                message,
                ..
            })) => {
                assert!(
                    message.contains("1 valid committee signatures"),
                    "{message}"
                );
                break;
            }
            other => assert!(
                Instant::now() < deadline,
                "the committee was never recorded: {other:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    forbidden_saying(
        operator
            .create_signed_grant(
                g.clone(),
                vec![
                    sign(&sato, "sato", &msg),
                    sign(&tanaka, "tanaka", &other_terms),
                ],
            )
            .await,
        "not over these terms",
    );
    forbidden_saying(
        operator
            .create_signed_grant(
                g.clone(),
                vec![sign(&sato, "sato", &msg), sign(&sato, "sato", &msg)],
            )
            .await,
        "signed twice",
    );
    forbidden_saying(
        operator
            .create_signed_grant(
                g.clone(),
                vec![sign(&sato, "sato", &msg), sign(&mallory, "mallory", &msg)],
            )
            .await,
        "not a member",
    );
    assert!(
        !operator
            .grants()
            .await
            .unwrap()
            .iter()
            .any(|x| x.job == "study-77"),
        "a refused grant exists"
    );

    // Two members: the grant takes effect, and the audit log names them.
    operator
        .create_signed_grant(
            g.clone(),
            vec![sign(&sato, "sato", &msg), sign(&ito, "ito", &msg)],
        )
        .await
        .unwrap();
    assert!(
        operator
            .grants()
            .await
            .unwrap()
            .iter()
            .any(|x| x.job == "study-77")
    );
    let auditor = common::auditor(&cluster);
    let (trail, _) = auditor
        .audit_log(
            AuditQuery {
                job: Some("study-77".into()),
                ..AuditQuery::default()
            },
            100,
        )
        .await
        .unwrap();
    let signers: Vec<&Vec<String>> = trail
        .iter()
        .filter_map(|e| match &e.action {
            AuditAction::CreateSignedGrant { signers, .. } if !signers.is_empty() => Some(signers),
            _ => None,
        })
        .collect();
    assert_eq!(signers, vec![&vec!["sato".to_string(), "ito".to_string()]]);
    // Every refusal above is in the trail too.
    assert!(trail.len() >= 5, "{} entries", trail.len());
}
