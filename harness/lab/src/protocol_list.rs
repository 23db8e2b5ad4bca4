//! The protocols the lab knows: the one list a protocol is added to.
//!
//! [`protocol_list!`] below is the registry. From it come [`ProtocolName`] (what
//! experiment and cluster files name, with its serde names), each protocol's
//! [`FaultModel`] (how many replicas tolerate f faults), and the `with_protocol!` macro
//! that turns a name into the protocol's type for code generic over
//! [`crate::protocols::LabProtocol`] — every trial runner, the chaos runner, real mode.
//! A protocol's crate and its `LabProtocol` impl supply the rest.

pub use qlab_paxos::Paxos;
pub use qlab_pbft::Pbft;
pub use qlab_raft::Raft;
pub use qlab_unreplicated::Unreplicated;

/// What a protocol tolerates, which fixes the cluster size for `f` faults.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultModel {
    /// f crashed (or cut-off) replicas out of 2f + 1.
    Crash,
    /// f arbitrary (malicious) replicas out of 3f + 1.
    Byzantine,
    /// No fault at all: one server (the baseline).
    None,
}

impl FaultModel {
    /// Replicas needed to tolerate `f` faults (`None` for a model that tolerates none
    /// and `f > 0`).
    pub fn nodes_for_f(self, f: u32) -> Option<u32> {
        match self {
            FaultModel::Crash => Some(2 * f + 1),
            FaultModel::Byzantine => Some(3 * f + 1),
            FaultModel::None => (f == 0).then_some(1),
        }
    }
}

/// Generates the registry's items from its list; `$d` is a `$` handed in so the macro
/// can define `with_protocol!`, which has metavariables of its own.
macro_rules! protocol_list {
    ($d:tt $($variant:ident = $name:literal => $ty:ident, $model:ident;)*) => {
        /// A protocol as experiment and cluster files name it.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Deserialize, serde::Serialize)]
        pub enum ProtocolName {
            $(#[serde(rename = $name)] $variant,)*
        }

        impl ProtocolName {
            pub const ALL: &'static [ProtocolName] = &[$(ProtocolName::$variant),*];
            /// The names, in the list's order (which also gives each its colour in figures).
            pub const NAMES: &'static [&'static str] = &[$($name),*];

            pub fn name(&self) -> &'static str {
                match self {
                    $(ProtocolName::$variant => $name,)*
                }
            }

            pub fn from_name(name: &str) -> Option<ProtocolName> {
                Self::ALL.iter().copied().find(|p| p.name() == name)
            }

            pub fn fault_model(&self) -> FaultModel {
                match self {
                    $(ProtocolName::$variant => FaultModel::$model,)*
                }
            }
        }

        /// Run `$body` with the type `$p` bound to the protocol `$name` (a
        /// [`ProtocolName`]) names: `with_protocol!(point.protocol, P =>
        /// election::run_trial::<P>(...))`.
        #[macro_export]
        macro_rules! with_protocol {
            ($d name:expr, $d p:ident => $d body:expr) => {
                match $d name {
                    $($crate::protocol_list::ProtocolName::$variant => {
                        type $d p = $crate::protocol_list::$ty;
                        $d body
                    })*
                }
            };
        }
    };
}

protocol_list! { $
    Raft = "raft" => Raft, Crash;
    Multipaxos = "multipaxos" => Paxos, Crash;
    Pbft = "pbft" => Pbft, Byzantine;
    Unreplicated = "unreplicated" => Unreplicated, None;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_serde_agrees() {
        for protocol in ProtocolName::ALL {
            assert_eq!(ProtocolName::from_name(protocol.name()), Some(*protocol));
            let quoted = serde_json::to_string(protocol).unwrap();
            assert_eq!(quoted, format!("\"{}\"", protocol.name()));
        }
    }

    #[test]
    fn cluster_sizes_follow_the_fault_model() {
        assert_eq!(ProtocolName::Raft.fault_model().nodes_for_f(2), Some(5));
        assert_eq!(ProtocolName::Pbft.fault_model().nodes_for_f(2), Some(7));
        assert_eq!(ProtocolName::Unreplicated.fault_model().nodes_for_f(0), Some(1));
        assert_eq!(ProtocolName::Unreplicated.fault_model().nodes_for_f(1), None);
    }

    #[test]
    fn with_protocol_binds_each_name_to_its_type() {
        use crate::protocols::LabProtocol;
        for protocol in ProtocolName::ALL {
            let name = with_protocol!(*protocol, P => <P as LabProtocol>::NAME);
            assert_eq!(name, protocol.name());
        }
    }
}
