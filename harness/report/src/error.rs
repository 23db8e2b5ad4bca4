//! The reporting crate's error type: a file that cannot be read, parsed or drawn, with
//! its path (and, in a listing of tables, its line and column).

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// A mistake in a listing file (`results/tables.toml`), pointing at the text.
    #[error("{}:{line}:{column}: {message}", path.display())]
    Config { path: PathBuf, line: usize, column: usize, message: String },
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{}: {source}", path.display())]
    Csv { path: PathBuf, source: csv::Error },
    #[error("{0}")]
    Usage(String),
    #[error("drawing {}: {message}", path.display())]
    Plot { path: PathBuf, message: String },
}

pub type Result<T> = std::result::Result<T, ReportError>;

/// Byte offset → 1-based (line, column), columns counted in characters.
pub fn line_column(source: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(source.len());
    let before = &source[..offset];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}
