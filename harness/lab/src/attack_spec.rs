//! What an attack entry of an experiment file says: one element of a protocol's attack
//! list (`raft = ["forge-log", { name = "delay", delay_ms = 200 }]`), shared by the kinds
//! that run malicious replicas (`attack`, `attack-chaos`) so neither imports the other.
//! Which names a protocol knows is its `LabProtocol::ATTACK_NAMES`.

use crate::config::{Experiment, Point, ProtocolName, Sweep};
use crate::protocols::LabProtocol;
use qlab_core::Nanos;
use serde::{Deserialize, Serialize};
use std::ops::Range;

/// One entry of an `[attack]` list: a name (`"forge-log"`), or a table with the
/// attack's parameters: `{ name = "selective-drop", to = [1] }`, `{ name = "delay",
/// delay_ms = 200 }`, or `{ name = "equivocate", malicious = 2 }` to run one attack with
/// its own number of malicious replicas (f + 1 colluders beside f, say).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct AttackSpec {
    pub name: String,
    /// How many replicas run it (nodes 0, 1, ...); replaces `[attack] malicious` for it.
    pub malicious: Option<u32>,
    /// `selective-drop`: the replicas that hear nothing from the malicious ones.
    pub to: Vec<u32>,
    /// `delay`: how long every message from a malicious replica is held back.
    pub delay_ms: Option<f64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AttackTable {
    name: String,
    malicious: Option<u32>,
    #[serde(default)]
    to: Vec<u32>,
    delay_ms: Option<f64>,
}

impl<'de> Deserialize<'de> for AttackSpec {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match toml::Value::deserialize(deserializer)? {
            toml::Value::String(name) => Ok(AttackSpec { name, ..AttackSpec::default() }),
            table @ toml::Value::Table(_) => {
                let t =
                    AttackTable::deserialize(table).map_err(|e| <D::Error as serde::de::Error>::custom(e.message()))?;
                Ok(AttackSpec { name: t.name, malicious: t.malicious, to: t.to, delay_ms: t.delay_ms })
            }
            other => Err(<D::Error as serde::de::Error>::custom(format!(
                "an attack is a name (\"forge-log\") or a table ({{ name = \"delay\", delay_ms = 200 }}), got a {}",
                other.type_str()
            ))),
        }
    }
}

impl AttackSpec {
    /// The attack as results name it: its name, with the parameters that set it apart
    /// (`selective-drop(to=1+2)`, `delay(200ms)`); the malicious count has its own column.
    pub fn label(&self) -> String {
        match (self.name.as_str(), self.delay_ms) {
            ("selective-drop", _) => {
                let to: Vec<String> = self.to.iter().map(|n| n.to_string()).collect();
                format!("selective-drop(to={})", to.join("+"))
            }
            ("delay", Some(ms)) => format!("delay({ms}ms)"),
            _ => self.name.clone(),
        }
    }

    /// What is wrong with this entry of `protocol`'s list, whose known attacks are
    /// `allowed`: an unknown name, or parameters its attack does not take or lacks.
    pub fn problem(&self, protocol: &str, allowed: &[&str]) -> Option<String> {
        if !allowed.contains(&self.name.as_str()) {
            Some(format!("unknown {protocol} attack {:?}; allowed: {}", self.name, allowed.join(", ")))
        } else if self.name == "selective-drop" && self.to.is_empty() {
            Some("selective-drop needs `to`, the replicas to starve: { name = \"selective-drop\", to = [1] }".into())
        } else if self.name != "selective-drop" && !self.to.is_empty() {
            Some(format!("`to` applies to selective-drop only, not to {:?}", self.name))
        } else if self.name == "delay" && !self.delay_ms.is_some_and(|ms| ms > 0.0) {
            Some("delay needs `delay_ms` > 0: { name = \"delay\", delay_ms = 200 }".into())
        } else if self.name != "delay" && self.delay_ms.is_some() {
            Some(format!("`delay_ms` applies to delay only, not to {:?}", self.name))
        } else {
            None
        }
    }

    /// The parameters the generic attacks take.
    pub fn params(&self) -> qlab_core::adversary::AttackParams {
        qlab_core::adversary::AttackParams {
            drop_to: self.to.iter().map(|n| qlab_core::NodeId(*n)).collect(),
            delay_ns: (self.delay_ms.unwrap_or(0.0) * 1e6).round() as Nanos,
        }
    }
}

/// An attack's `trials.csv` cell: its label.
pub fn serialize_label<S: serde::Serializer>(attack: &AttackSpec, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&attack.label())
}

/// The protocols of the list with attacks to run, as a section's error lists them.
pub fn protocols_with_attacks() -> Vec<String> {
    ProtocolName::ALL
        .iter()
        .filter(|p| !with_protocol!(**p, P => <P as LabProtocol>::ATTACK_NAMES).is_empty())
        .map(|p| format!("`{}`", p.name()))
        .collect()
}

/// Every protocol the file runs has a list in `[section]` (`per_protocol`), and every
/// entry is one of that protocol's attacks with the parameters it takes.
pub fn check_lists(
    experiment: &Experiment,
    section: &str,
    per_protocol: &[(ProtocolName, Sweep<AttackSpec>)],
) -> crate::Result<()> {
    let f = &experiment.file;
    for protocol in &f.cluster.protocol.values {
        let allowed = with_protocol!(*protocol, P => <P as LabProtocol>::ATTACK_NAMES);
        let Some((_, given)) = per_protocol.iter().find(|(p, _)| p == protocol) else {
            return Err(experiment.error_at(
                &f.cluster.protocol.span,
                format!(
                    "[{section}] needs `{}` = [...], the attacks to run against it; allowed: {}",
                    protocol.name(),
                    allowed.join(", ")
                ),
            ));
        };
        for spec in &given.values {
            if let Some(problem) = spec.problem(protocol.name(), allowed) {
                return Err(experiment.error_at(&given.span, problem));
            }
        }
    }
    Ok(())
}

/// A point's attack leaves honest replicas: 1 to nodes - 1 malicious (reported at
/// `malicious_span`), and a selective drop that starves honest ones only (at
/// `list_span`, the protocol's list).
pub fn check_point(
    experiment: &Experiment,
    point: &Point,
    attack: &AttackSpec,
    malicious: u32,
    malicious_span: &Range<usize>,
    list_span: &Range<usize>,
) -> crate::Result<()> {
    if malicious == 0 || malicious >= point.nodes {
        return Err(experiment.error_at(
            malicious_span,
            format!(
                "malicious must be between 1 and nodes - 1 ({} for {} nodes), got {malicious}",
                point.nodes - 1,
                point.nodes
            ),
        ));
    }
    if let Some(target) = attack.to.iter().find(|n| **n < malicious || **n >= point.nodes) {
        return Err(experiment.error_at(
            list_span,
            format!(
                "selective-drop to = {target}: the replicas it starves must be honest ones, {malicious} to {} with \
                 {malicious} malicious of {} nodes",
                point.nodes - 1,
                point.nodes
            ),
        ));
    }
    Ok(())
}
