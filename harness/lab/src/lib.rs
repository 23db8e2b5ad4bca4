//! # qlab-lab: experiments, workloads, fault schedules, results, figures
//!
//! The lab turns an experiment file into trials on a driver (the simulator or one
//! process per replica over QUIC), judges every trial with the checkers of
//! `qlab-check`, and writes a run directory:
//!
//! ```text
//! results/<experiment>/<run-id>/
//!   experiment.toml   the file as run (provenance)
//!   trials.csv        one row per trial, appended as trials finish
//!   summary.csv       one row per point of the sweep
//!   meta.json         version, git commit, seed, machine, start/end time
//!   figures/*.svg, *.png
//! ```
//!
//! Figures are drawn from `trials.csv` alone, so `qlab plot` can redraw them without
//! re-running anything, and notebooks can read the same CSV.

#[macro_use]
pub mod protocol_list;

pub mod attack;
pub mod attack_chaos;
pub mod attack_spec;
pub mod availability;
pub mod availability_trial;
pub mod case;
pub mod chaos;
pub mod chaos_kind;
pub mod chaos_quic;
pub mod check;
pub mod config;
pub mod counterexample;
pub mod coverage;
pub mod disruption;
pub mod election;
pub mod election_trial;
pub mod error;
pub mod explore;
pub mod kind;
pub mod protocols;
pub mod reads;
pub mod real;
pub mod regions;
pub mod registry;
pub mod run;
pub mod throughput;
pub mod trial;
pub mod workload;

pub use error::{LabError, Result};
/// Results, figures, comparisons, the gallery and the docs' tables: `qlab-report`'s,
/// under the paths the lab always gave them.
pub use qlab_report::{benchmarks, compare, gallery, plot, results, tables};
