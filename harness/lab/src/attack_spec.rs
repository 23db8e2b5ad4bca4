//! What an attack entry of an experiment file says: one element of a protocol's attack
//! list (`raft = ["forge-log", { name = "delay", delay_ms = 200 }]`), shared by the kinds
//! that run malicious replicas (`attack`, `attack-chaos`) so neither imports the other.
//! Which names a protocol knows is its `LabProtocol::ATTACK_NAMES`.

use qlab_core::Nanos;
use serde::{Deserialize, Serialize};

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
