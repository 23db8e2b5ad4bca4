//! The lab's error type: expected failures are values with enough context to act on.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// A mistake in an experiment file, pointing at the offending text.
    #[error("{}:{line}:{column}: {message}", path.display())]
    Config { path: PathBuf, line: usize, column: usize, message: String },
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{0}")]
    Usage(String),
    /// Reading, summarizing or drawing a run's files (`qlab-report`'s errors, which
    /// also cover CSV and figure failures).
    #[error(transparent)]
    Report(#[from] qlab_report::ReportError),
    #[error(transparent)]
    Cluster(#[from] qlab_net::cluster::ClusterError),
    #[error(transparent)]
    Net(#[from] qlab_net::runtime::NetError),
}

pub type Result<T> = std::result::Result<T, LabError>;
