//! Authorization in one place: which role may ask for which operation. Nodes call
//! [`authorize`] on every request with the role read from the peer's certificate.

use crate::identity::Role;
use crate::message::Operation;

/// Whether `role` may perform `op`. The whole matrix; tested exhaustively.
pub fn is_allowed(role: Role, op: Operation) -> bool {
    match op {
        // Anyone with a certificate from the cluster CA may check liveness and status.
        Operation::Ping | Operation::Status => true,
        // Consensus traffic only between nodes.
        Operation::Raft => role == Role::Node,
        // Only ingest gateways (and jobs writing results) bring shares.
        Operation::Stage => role == Role::Ingest,
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
            (Role::Ingest, Operation::Stage) => true,
            (Role::Node | Role::Reader | Role::Auditor | Role::Operator, Operation::Stage) => false,
        };
        for role in Role::ALL {
            for op in Operation::ALL {
                assert_eq!(is_allowed(role, op), expected(role, op), "{role} {op:?}");
                assert_eq!(authorize(role, op).is_ok(), expected(role, op));
            }
        }
    }
}
