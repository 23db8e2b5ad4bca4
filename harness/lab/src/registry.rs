//! The experiment kinds the lab knows, by name: the one list a new kind is added to.
//!
//! [`Registry::builtin`] holds the lab's kinds; [`Registry::with`] adds one more (how
//! the test-only toy kind in `harness/lab/tests/toy_kind.rs` runs end to end without a
//! line in the lab). Everything that runs, plots, compares or replays a run looks its
//! kind up here, by the name in the file or in `meta.json`.

use crate::config::Experiment;
use crate::error::{LabError, Result};
use crate::kind::ExperimentKind;
use crate::protocol_list::ProtocolName;
use crate::protocols::LabProtocol;
use std::path::Path;

#[derive(Clone)]
pub struct Registry {
    kinds: Vec<&'static dyn ExperimentKind>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Registry").field(&self.names()).finish()
    }
}

impl Registry {
    /// The lab's own kinds.
    pub fn builtin() -> Registry {
        Registry {
            kinds: vec![
                &crate::election::ElectionKind,
                &crate::throughput::ThroughputKind,
                &crate::attack::AttackKind,
                &crate::attack_chaos::AttackChaosKind,
                &crate::chaos_kind::ChaosKind,
                &crate::availability::AvailabilityKind,
                &crate::reads::ReadsKind,
                &crate::counterexample::CounterexampleKind,
                &crate::disruption::DisruptionKind,
            ],
        }
    }

    /// These kinds and `kind` (which replaces a kind of the same name).
    pub fn with(mut self, kind: &'static dyn ExperimentKind) -> Registry {
        self.kinds.retain(|k| k.name() != kind.name());
        self.kinds.push(kind);
        self
    }

    pub fn names(&self) -> Vec<&'static str> {
        self.kinds.iter().map(|k| k.name()).collect()
    }

    pub fn get(&self, name: &str) -> Option<&'static dyn ExperimentKind> {
        self.kinds.iter().copied().find(|k| k.name() == name)
    }

    /// The kind `name` names, or an error listing the ones there are.
    pub fn kind(&self, name: &str, context: &Path) -> Result<&'static dyn ExperimentKind> {
        self.get(name).ok_or_else(|| {
            LabError::Usage(format!(
                "{}: unknown experiment kind {name:?} (this qlab knows {})",
                context.display(),
                self.names().join(", ")
            ))
        })
    }

    /// Load and validate an experiment file whose kind must be one of these.
    pub fn load(&self, path: &Path) -> Result<(Experiment, &'static dyn ExperimentKind)> {
        let source = std::fs::read_to_string(path).map_err(|e| LabError::Io { path: path.to_path_buf(), source: e })?;
        self.parse(path, source)
    }

    /// Parse `source` (named `path` in errors) and validate it: what every file needs,
    /// then its sections against its kind's, then the kind's own checks.
    pub fn parse(&self, path: &Path, source: String) -> Result<(Experiment, &'static dyn ExperimentKind)> {
        let mut experiment = Experiment::parse_with_kinds(path, source, Some(&self.names()))?;
        let kind = self.kind(experiment.file.experiment.kind.as_str(), path)?;
        let mut sections: Vec<&str> = kind.sections().to_vec();
        for protocol in ProtocolName::ALL {
            sections.extend(with_protocol!(*protocol, P => <P as LabProtocol>::SECTIONS));
        }
        experiment.check_sections(&sections)?;
        let runs = &experiment.file.cluster.protocol.values;
        let mut protocol_sections = Vec::new();
        for protocol in ProtocolName::ALL {
            for section in with_protocol!(*protocol, P => <P as LabProtocol>::SECTIONS) {
                protocol_sections.push((*section, runs.contains(protocol)));
            }
        }
        experiment.check_keys_read(kind.reads(), &protocol_sections)?;
        for protocol in ProtocolName::ALL {
            with_protocol!(*protocol, P => crate::protocols::read_sections::<P>(&mut experiment))?;
        }
        kind.validate(&experiment)?;
        Ok((experiment, kind))
    }

    /// `qlab compare`'s metrics for the kind `name` names.
    pub fn compare_metrics(&self, name: &str) -> Option<&'static [(&'static str, crate::compare::Aggregate)]> {
        self.get(name).map(|k| k.compare_metrics())
    }

    /// The kind whose rows have these point columns (the columns before `trial` of a
    /// `trials.csv`): how `qlab plot` knows a run whose `meta.json` is gone.
    pub fn of_point_columns(&self, columns: &[&str]) -> Option<&'static dyn ExperimentKind> {
        self.kinds.iter().copied().find(|kind| kind.point_columns() == columns)
    }
}

impl Default for Registry {
    fn default() -> Registry {
        Registry::builtin()
    }
}
