//! Authentication (§4 of the OSDI paper, with ed25519 signatures instead of MACs):
//! the keys a run derives from its seed, what each signature covers, the memo that
//! verifies each signature once, and the certificates built from signed messages —
//! a pre-prepare, a prepared certificate (the pre-prepare and 2f prepares) and a
//! stable-checkpoint proof (2f + 1 checkpoint votes).

use super::*;

/// A node's or client's ed25519 secret, derived from the run's key seed so a whole
/// cluster's keys can be made reproducibly at setup.
pub fn node_secret(key_seed: u64, node: u32) -> [u8; 32] {
    *blake3::Hasher::new()
        .update(b"qlab-pbft node key")
        .update(&key_seed.to_le_bytes())
        .update(&node.to_le_bytes())
        .finalize()
        .as_bytes()
}

pub fn client_secret(key_seed: u64, client: u64) -> [u8; 32] {
    *blake3::Hasher::new()
        .update(b"qlab-pbft client key")
        .update(&key_seed.to_le_bytes())
        .update(&client.to_le_bytes())
        .finalize()
        .as_bytes()
}

/// The ed25519 public key of a secret.
pub fn public_of(secret: &[u8; 32]) -> [u8; 32] {
    SigningKey::from_bytes(secret).verifying_key().to_bytes()
}

/// What a signature covers: a domain tag and the fields, fed to blake3.
pub trait Signable {
    fn feed(&self, hasher: &mut blake3::Hasher);
    fn signing_digest(&self) -> [u8; 32] {
        let mut hasher = blake3::Hasher::new();
        self.feed(&mut hasher);
        *hasher.finalize().as_bytes()
    }
}

/// Key of the verified-signature memo: who signed, what, and the signature bytes.
fn verification_memo(who: &[u8], id: u64, digest: &[u8; 32], signature: &[u8]) -> [u8; 32] {
    *blake3::Hasher::new().update(who).update(&id.to_le_bytes()).update(digest).update(signature).finalize().as_bytes()
}

impl Pbft {
    pub(crate) fn sign<T: Signable>(&mut self, body: T) -> Signed<T> {
        self.stats.signatures_made += 1;
        let signature = self.key.sign(&body.signing_digest()).to_bytes().to_vec();
        Signed { body, signer: self.id, signature }
    }

    pub(crate) fn sign_phase(&mut self, phase: &'static [u8], vote: Vote) -> Signed<Vote> {
        self.stats.signatures_made += 1;
        let signature = self.key.sign(&Phase(phase, &vote).signing_digest()).to_bytes().to_vec();
        Signed { body: vote, signer: self.id, signature }
    }

    pub(crate) fn verify_digest(&mut self, signer: NodeId, digest: &[u8; 32], signature: &[u8]) -> bool {
        let key = self.node_keys.get(signer.0 as usize).copied();
        self.verify_with(key, b"node", signer.0 as u64, digest, signature)
    }

    pub(crate) fn verify_with(
        &mut self,
        key: Option<VerifyingKey>,
        who: &[u8],
        id: u64,
        digest: &[u8; 32],
        signature: &[u8],
    ) -> bool {
        let memo = verification_memo(who, id, digest, signature);
        if self.verified.contains(&memo) {
            return true;
        }
        self.stats.signatures_verified += 1;
        let ok =
            key.is_some_and(|key| Signature::from_slice(signature).is_ok_and(|sig| key.verify(digest, &sig).is_ok()));
        if ok {
            self.remember_verified(memo);
        } else {
            self.stats.bad_signatures += 1;
        }
        ok
    }

    pub(crate) fn remember_verified(&mut self, memo: [u8; 32]) {
        if self.verified.len() >= 200_000 {
            self.verified.clear();
        }
        self.verified.insert(memo);
    }

    pub(crate) fn verify<T: Signable>(&mut self, signed: &Signed<T>) -> bool {
        let digest = signed.body.signing_digest();
        self.verify_digest(signed.signer, &digest, &signed.signature)
    }

    pub(crate) fn verify_phase(&mut self, phase: &'static [u8], signed: &Signed<Vote>) -> bool {
        let digest = Phase(phase, &signed.body).signing_digest();
        self.verify_digest(signed.signer, &digest, &signed.signature)
    }

    pub(crate) fn verify_request(&mut self, request: &Request) -> bool {
        let key = self.client_keys.get(request.client.0 as usize).copied().flatten();
        self.verify_with(key, b"client", request.client.0, &request.digest().0, &request.signature)
    }

    /// Every request's client signature, checked together. Client signatures are most of
    /// a replica's verification work (one per request at every replica, against a few per
    /// batch for the protocol messages), and ed25519 batch verification costs well under
    /// half of one-at-a-time (`cargo bench -p qlab-pbft --bench crypto`). Its random
    /// coefficients are derived from the batch itself, so every replica that checks the
    /// same batch reaches the same answer. If the batch fails, each request is checked
    /// alone so the bad ones are found and counted. Returns whether all were valid.
    pub(crate) fn verify_requests(&mut self, requests: &[Arc<Request>]) -> bool {
        self.check_requests(requests).iter().all(|ok| *ok)
    }

    /// `verify_requests`, request by request.
    pub(crate) fn check_requests(&mut self, requests: &[Arc<Request>]) -> Vec<bool> {
        let mut memos = Vec::new();
        let mut messages = Vec::new();
        let mut signatures = Vec::new();
        let mut keys = Vec::new();
        for request in requests {
            let digest = request.digest().0;
            let memo = verification_memo(b"client", request.client.0, &digest, &request.signature);
            if self.verified.contains(&memo) {
                continue;
            }
            let key = self.client_keys.get(request.client.0 as usize).copied().flatten();
            match (key, Signature::from_slice(&request.signature)) {
                (Some(key), Ok(signature)) => {
                    memos.push(memo);
                    messages.push(digest);
                    signatures.push(signature);
                    keys.push(key);
                }
                _ => return requests.iter().map(|r| self.verify_request(r)).collect(),
            }
        }
        let message_refs: Vec<&[u8]> = messages.iter().map(|m| m.as_slice()).collect();
        if memos.len() < 2 || ed25519_dalek::verify_batch(&message_refs, &signatures, &keys).is_err() {
            return requests.iter().map(|r| self.verify_request(r)).collect();
        }
        self.stats.signatures_verified += memos.len() as u64;
        for memo in memos {
            self.remember_verified(memo);
        }
        vec![true; requests.len()]
    }

    /// A pre-prepare's own checks: signed by its view's primary, digest of its batch,
    /// every request signed by its client.
    pub(crate) fn valid_pre_prepare(&mut self, pp: &Signed<PrePrepare>) -> bool {
        if pp.signer != self.primary_of(pp.body.view) || batch_digest(&pp.body.batch) != pp.body.digest {
            return false;
        }
        if !self.verify(pp) {
            return false;
        }
        self.verify_requests(&pp.body.batch)
    }

    pub(crate) fn valid_cert(&mut self, cert: &PreparedCert) -> bool {
        if !self.valid_pre_prepare(&cert.pre_prepare) {
            return false;
        }
        let pp = &cert.pre_prepare.body;
        let primary = cert.pre_prepare.signer;
        let mut signers = BTreeSet::new();
        for p in &cert.prepares {
            if p.body.view != pp.view || p.body.seq != pp.seq || p.body.digest != pp.digest || p.signer == primary {
                return false;
            }
            if !self.verify_phase(b"prepare", p) {
                return false;
            }
            signers.insert(p.signer);
        }
        signers.len() >= self.prepares_needed()
    }

    /// Prepares (besides the pre-prepare) that make a request prepared: 2f.
    pub(crate) fn prepares_needed(&self) -> usize {
        if self.config.ablate.prepare_quorum_2f { 2 * self.f as usize - 1 } else { 2 * self.f as usize }
    }

    pub(crate) fn valid_checkpoint_proof(&mut self, seq: Seq, proof: &[Signed<CheckpointVote>]) -> Option<Digest> {
        if seq == 0 {
            return Some(Digest::GENESIS);
        }
        let state = proof.first()?.body.state;
        let mut signers = BTreeSet::new();
        for c in proof {
            if c.body.seq != seq || c.body.state != state || !self.verify(c) {
                return None;
            }
            signers.insert(c.signer);
        }
        (signers.len() >= self.quorum()).then_some(state)
    }
}
