//! The crate's errors. Every validation problem names the field and, where the text
//! has one, the line.

use std::fmt;
use std::path::PathBuf;

/// One problem found while validating a cluster config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    /// 1-based line in the TOML text, when the problem has a place in it.
    pub line: Option<usize>,
    /// The field, in TOML path form (`nodes[2].rack`, `policy.k`).
    pub field: String,
    /// What is wrong, and what would be right.
    pub message: String,
}

impl fmt::Display for Issue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "line {line}: {}: {}", self.field, self.message),
            None => write!(f, "{}: {}", self.field, self.message),
        }
    }
}

/// Errors of kakera-config.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read cluster config {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The text is not valid TOML, or a field has the wrong type or is unknown.
    #[error("cluster config, line {line}: {message}")]
    Syntax {
        /// 1-based line of the problem.
        line: usize,
        /// The parser's description.
        message: String,
    },
    /// The config parsed but breaks one or more rules; every problem is listed.
    #[error("cluster config has {} problem(s):\n{}", issues.len(), render(issues))]
    Invalid {
        /// Each problem, in file order where it has a line.
        issues: Vec<Issue>,
    },
}

fn render(issues: &[Issue]) -> String {
    issues
        .iter()
        .map(|i| format!("  - {i}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Why placement could not choose n nodes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlacementError {
    /// Not enough live nodes, or racks, to place n shares within the per-rack limit.
    #[error(
        "cannot place {n} shares: the live topology holds at most {capacity} within \
         {max_per_rack} per rack"
    )]
    InsufficientCapacity {
        /// Shares asked for.
        n: usize,
        /// The most shares the live nodes can take under the rack rule.
        capacity: usize,
        /// The per-rack limit.
        max_per_rack: usize,
    },
    /// Two node views share an id.
    #[error("node {id} appears twice in the topology given to placement")]
    DuplicateNode {
        /// The repeated id.
        id: u64,
    },
}
