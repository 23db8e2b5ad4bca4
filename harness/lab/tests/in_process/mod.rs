//! What the in-process real-mode tests share: the keys of a cluster whose nodes run as
//! tasks of the test.

use qlab_net::tls::{Identity, Pinned, Principal};

/// Each node's identity, the harness's, and the pinned certificates every endpoint checks.
pub fn keys(nodes: u32) -> (Vec<Identity>, Identity, Pinned) {
    let identities: Vec<Identity> = (0..nodes).map(|i| Identity::generate(Principal::Node(i))).collect();
    let harness_identity = Identity::generate(Principal::Harness);
    let mut pinned_entries: Vec<(Principal, Vec<u8>)> =
        identities.iter().enumerate().map(|(i, id)| (Principal::Node(i as u32), id.cert_der.clone())).collect();
    pinned_entries.push((Principal::Harness, harness_identity.cert_der.clone()));
    (identities, harness_identity, Pinned::new(pinned_entries))
}
