//! Authorization in one place: which role may ask for which operation. Nodes call
//! [`authorize`] on every request with the role read from the peer's certificate.

use crate::identity::{Identity, Role};
use crate::message::Operation;

/// Whether `role` may perform `op`. The whole matrix; tested exhaustively.
pub fn is_allowed(role: Role, op: Operation) -> bool {
    match op {
        // Anyone with a certificate from the cluster CA may check liveness and status.
        Operation::Ping | Operation::Status => true,
        // Consensus traffic only between nodes.
        Operation::Raft => role == Role::Node,
        // Only ingest gateways (and jobs writing results) bring shares and commit them.
        Operation::Stage | Operation::Commit => role == Role::Ingest,
        // Only readers open reads (the zone and the grant are checked by the node and
        // again when the ticket is applied).
        Operation::OpenRead => role == Role::Reader,
        // Shares go to readers under read tickets and to auditors under deep audit
        // tickets; the node checks the ticket's purpose and holder.
        Operation::Fetch => matches!(role, Role::Reader | Role::Auditor),
        // Share verification is the auditors' alone.
        Operation::Audit => role == Role::Auditor,
        // Metadata listings: readers find records, auditors and operators check them.
        Operation::List => matches!(role, Role::Reader | Role::Auditor | Role::Operator),
        // The review committee's approvals are entered by operators.
        Operation::GrantChange => role == Role::Operator,
        // Grants: auditors and operators see them all; a reader sees only the grants
        // naming it (the node filters), so a job can learn its own scope.
        Operation::GrantList => matches!(role, Role::Reader | Role::Auditor | Role::Operator),
        Operation::AuditLog => matches!(role, Role::Auditor | Role::Operator),
        // Draining and decommissioning nodes is the operators' job.
        Operation::NodeAdmin => role == Role::Operator,
        // Modes and health: every client (ingest places shares by it).
        Operation::Topology => role != Role::Node,
        // Repair traffic only between nodes; the helpers check the assignment.
        Operation::Repair => role == Role::Node,
        // Erasure (opt-out, a record withdrawn) is an operator's decision.
        Operation::Erase => role == Role::Operator,
        // Whether ids are committed or erased, subjects opted out: ingest needs it to
        // be idempotent; operators and auditors to check.
        Operation::Lookup => matches!(role, Role::Ingest | Role::Operator | Role::Auditor),
        // Backups are the operators' (nodes write them under the config's root).
        Operation::Backup => role == Role::Operator,
        // Revocation lists are the CA's (the node checks the CA's signature); an
        // operator brings them to the cluster.
        Operation::Revoke => role == Role::Operator,
        // Bad shares are reported by whoever reads them: nodes scrubbing, readers,
        // auditors (the leader confirms each with the holder before acting).
        Operation::Report => matches!(role, Role::Node | Role::Reader | Role::Auditor),
    }
}

/// Defence in depth for reads: a reader's certificate must name the high-security
/// zone, and the connection must come from one of that zone's networks in the config.
/// Other roles pass.
pub fn check_reader_origin(
    identity: &Identity,
    remote: std::net::IpAddr,
    config: &kakera_config::ClusterConfig,
) -> Result<(), String> {
    if identity.role != Role::Reader {
        return Ok(());
    }
    let zone = kakera_config::HSZ_ZONE;
    if !identity.in_zone(zone) {
        return Err(format!(
            "reader '{}' has no certificate for zone '{zone}'; records are reconstructed only there",
            identity.name
        ));
    }
    match config.zones.get(zone) {
        Some(z) if z.admits(remote) => Ok(()),
        Some(_) => Err(format!(
            "reader '{}' connects from {remote}, outside the networks of zone '{zone}'",
            identity.name
        )),
        None => Err(format!(
            "the cluster config declares no zone '{zone}', so no reader is admitted"
        )),
    }
}

/// [`is_allowed`] as a result with a sentence a person can act on.
pub fn authorize(role: Role, op: Operation) -> Result<(), String> {
    if is_allowed(role, op) {
        Ok(())
    } else {
        Err(format!(
            "a certificate with role '{role}' may not perform '{}'",
            op.as_str()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn who(role: Role, zone: Option<&str>) -> Identity {
        Identity {
            name: "job".into(),
            role,
            zone: zone.map(str::to_string),
            fingerprint: crate::Fingerprint([0; 32]),
        }
    }

    /// P7 (defence in depth): a reader must hold an hsz certificate and connect from
    /// an hsz network; other roles are not affected.
    #[test]
    fn readers_come_from_the_zone_and_its_networks() {
        let config = kakera_config::ClusterConfig::parse(
            r#"
            cluster_id = "c"
            ca_cert = "ca.pem"
            racks = ["a", "b", "c"]
            [policy]
            k = 2
            n = 3
            [zones.dc]
            [zones.hsz]
            networks = ["10.9.0.0/16"]
            [[nodes]]
            id = 1
            name = "n1"
            rack = "a"
            zone = "dc"
            addr = "127.0.0.1:1"
            data_dir = "d1"
            [[nodes]]
            id = 2
            name = "n2"
            rack = "b"
            zone = "dc"
            addr = "127.0.0.1:2"
            data_dir = "d2"
            [[nodes]]
            id = 3
            name = "n3"
            rack = "c"
            zone = "dc"
            addr = "127.0.0.1:3"
            data_dir = "d3"
            "#,
        )
        .unwrap();
        let inside: std::net::IpAddr = "10.9.1.2".parse().unwrap();
        let mapped: std::net::IpAddr = "::ffff:10.9.1.2".parse().unwrap();
        let outside: std::net::IpAddr = "10.8.1.2".parse().unwrap();
        let reader = who(Role::Reader, Some("hsz"));
        assert!(check_reader_origin(&reader, inside, &config).is_ok());
        assert!(check_reader_origin(&reader, mapped, &config).is_ok());
        assert!(check_reader_origin(&reader, outside, &config).is_err());
        assert!(check_reader_origin(&who(Role::Reader, Some("dc")), inside, &config).is_err());
        assert!(check_reader_origin(&who(Role::Reader, None), inside, &config).is_err());
        assert!(check_reader_origin(&who(Role::Operator, None), outside, &config).is_ok());
    }

    #[test]
    fn the_matrix_is_exactly_this() {
        // Every (role, operation) pair, spelled out, so a change to the matrix is a
        // change to this table too.
        let expected = |role: Role, op: Operation| match (role, op) {
            (_, Operation::Ping) | (_, Operation::Status) => true,
            (Role::Node, Operation::Raft) => true,
            (Role::Ingest | Role::Reader | Role::Auditor | Role::Operator, Operation::Raft) => {
                false
            }
            (Role::Ingest, Operation::Stage | Operation::Commit) => true,
            (
                Role::Node | Role::Reader | Role::Auditor | Role::Operator,
                Operation::Stage | Operation::Commit,
            ) => false,
            (Role::Reader, Operation::OpenRead) => true,
            (Role::Node | Role::Ingest | Role::Auditor | Role::Operator, Operation::OpenRead) => {
                false
            }
            (Role::Reader | Role::Auditor, Operation::Fetch) => true,
            (Role::Node | Role::Ingest | Role::Operator, Operation::Fetch) => false,
            (Role::Auditor, Operation::Audit) => true,
            (Role::Node | Role::Ingest | Role::Reader | Role::Operator, Operation::Audit) => false,
            (Role::Reader | Role::Auditor | Role::Operator, Operation::List) => true,
            (Role::Node | Role::Ingest, Operation::List) => false,
            (Role::Operator, Operation::GrantChange) => true,
            (Role::Node | Role::Ingest | Role::Reader | Role::Auditor, Operation::GrantChange) => {
                false
            }
            (Role::Reader | Role::Auditor | Role::Operator, Operation::GrantList) => true,
            (Role::Node | Role::Ingest, Operation::GrantList) => false,
            (Role::Auditor | Role::Operator, Operation::AuditLog) => true,
            (Role::Node | Role::Ingest | Role::Reader, Operation::AuditLog) => false,
            (Role::Operator, Operation::NodeAdmin) => true,
            (Role::Node | Role::Ingest | Role::Reader | Role::Auditor, Operation::NodeAdmin) => {
                false
            }
            (Role::Node, Operation::Topology) => false,
            (Role::Ingest | Role::Reader | Role::Auditor | Role::Operator, Operation::Topology) => {
                true
            }
            (Role::Node, Operation::Repair) => true,
            (Role::Ingest | Role::Reader | Role::Auditor | Role::Operator, Operation::Repair) => {
                false
            }
            (Role::Operator, Operation::Erase) => true,
            (Role::Node | Role::Ingest | Role::Reader | Role::Auditor, Operation::Erase) => false,
            (Role::Ingest | Role::Operator | Role::Auditor, Operation::Lookup) => true,
            (Role::Node | Role::Reader, Operation::Lookup) => false,
            (Role::Operator, Operation::Backup) => true,
            (Role::Node | Role::Ingest | Role::Reader | Role::Auditor, Operation::Backup) => false,
            (Role::Operator, Operation::Revoke) => true,
            (Role::Node | Role::Ingest | Role::Reader | Role::Auditor, Operation::Revoke) => false,
            (Role::Node | Role::Reader | Role::Auditor, Operation::Report) => true,
            (Role::Ingest | Role::Operator, Operation::Report) => false,
        };
        for role in Role::ALL {
            for op in Operation::ALL {
                assert_eq!(is_allowed(role, op), expected(role, op), "{role} {op:?}");
                assert_eq!(authorize(role, op).is_ok(), expected(role, op));
            }
        }
    }
}
