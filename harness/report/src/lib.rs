//! # qlab-report: what a run directory says, read from its files alone
//!
//! A run writes `trials.csv` (one typed row per trial), `summary.csv`, `meta.json` and
//! `figures/`. This crate is everything that reads or redraws those: the CSV table and
//! row helpers ([`results`]), the per-kind summaries and figures ([`plot`]), the
//! comparison of two runs with bootstrap intervals ([`compare`]), the README gallery
//! ([`gallery`]), the docs' tables generated from committed CSVs ([`tables`]) and
//! criterion's measurements imported as one of those CSVs ([`benchmarks`]). It
//! knows no simulator, protocol or cluster: a kind that owns a concept (a case's
//! description, the protocols' order) hands it in, so `qlab plot`, `qlab compare` and
//! the notebooks see exactly what the files hold.

pub mod benchmarks;
pub mod compare;
pub mod error;
pub mod gallery;
pub mod plot;
pub mod results;
pub mod sequence;
pub mod tables;

pub use error::{ReportError, Result};
