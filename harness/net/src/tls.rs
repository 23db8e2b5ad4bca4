//! Mutual TLS with pinned certificates.
//!
//! At cluster setup every replica and the harness get a self-signed certificate
//! ([`Identity::generate`]). Each side of a connection accepts the other only if its
//! certificate is byte-for-byte one of the pinned ones — there is no CA to compromise
//! and no name to spoof — and TLS still checks the handshake signature, so presenting
//! someone else's certificate without their key fails. A connecting node also checks
//! that the certificate is the one pinned for the *node it dialled*.
//!
//! A refused client's `connect()` can still resolve (QUIC finishes its side of the
//! handshake before the server's verdict arrives); the refusal shows on the first
//! stream operation. So identity is taken from the connection after the handshake
//! ([`Pinned::identify`]), never assumed from a successful connect.

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Application protocol name negotiated by every qlab connection.
pub const ALPN: &[u8] = b"qlab/1";

/// Who is on the other end of a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Principal {
    Node(u32),
    /// The experiment harness: drives clients, collects events, injects faults.
    Harness,
}

impl Principal {
    /// The TLS server name a principal is dialled by.
    pub fn server_name(&self) -> String {
        match self {
            Principal::Node(id) => format!("node-{id}"),
            Principal::Harness => "harness".to_string(),
        }
    }
}

/// A certificate and its PKCS#8 private key, both DER.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Identity {
    pub cert_der: Vec<u8>,
    pub key_der: Vec<u8>,
}

impl Identity {
    pub fn generate(principal: Principal) -> Identity {
        let certified =
            rcgen::generate_simple_self_signed(vec![principal.server_name()]).expect("rcgen makes a self-signed cert");
        Identity { cert_der: certified.cert.der().to_vec(), key_der: certified.signing_key.serialize_der() }
    }

    fn cert(&self) -> CertificateDer<'static> {
        CertificateDer::from(self.cert_der.clone())
    }
    fn key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone()))
    }
}

/// The certificates a cluster accepts, by principal.
#[derive(Clone, Debug, Default)]
pub struct Pinned {
    entries: Vec<(Principal, Vec<u8>)>,
}

impl Pinned {
    pub fn new(entries: Vec<(Principal, Vec<u8>)>) -> Self {
        Pinned { entries }
    }

    /// The principal whose pinned certificate is exactly `der`.
    pub fn principal_of(&self, der: &[u8]) -> Option<Principal> {
        self.entries.iter().find(|(_, pinned)| pinned == der).map(|(p, _)| *p)
    }

    fn cert_of(&self, principal: Principal) -> Option<&[u8]> {
        self.entries.iter().find(|(p, _)| *p == principal).map(|(_, der)| der.as_slice())
    }

    /// The authenticated peer of an established connection.
    pub fn identify(&self, connection: &quinn::Connection) -> Option<Principal> {
        let identity = connection.peer_identity()?;
        let chain = identity.downcast::<Vec<CertificateDer<'static>>>().ok()?;
        self.principal_of(chain.first()?.as_ref())
    }
}

fn provider() -> Arc<CryptoProvider> {
    // One provider, passed explicitly: nothing depends on a process-wide default.
    Arc::new(rustls::crypto::ring::default_provider())
}

#[derive(Debug)]
struct PinnedVerifier {
    pinned: Pinned,
    algorithms: WebPkiSupportedAlgorithms,
}

impl PinnedVerifier {
    fn new(pinned: Pinned) -> Arc<Self> {
        Arc::new(PinnedVerifier { pinned, algorithms: provider().signature_verification_algorithms })
    }
    fn tls13(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }
}

fn unknown_certificate() -> rustls::Error {
    rustls::Error::InvalidCertificate(rustls::CertificateError::ApplicationVerificationFailure)
}

impl ServerCertVerifier for PinnedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // The certificate must be the one pinned for the principal we dialled.
        let dialled = match server_name {
            ServerName::DnsName(name) => name.as_ref().to_string(),
            _ => return Err(unknown_certificate()),
        };
        let expected = self.pinned.principal_of(end_entity.as_ref()).filter(|p| p.server_name() == dialled);
        match expected.and_then(|p| self.pinned.cert_of(p)) {
            Some(_) => Ok(ServerCertVerified::assertion()),
            None => Err(unknown_certificate()),
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("TLS 1.2 is not offered".into()))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

impl ClientCertVerifier for PinnedVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        match self.pinned.principal_of(end_entity.as_ref()) {
            Some(_) => Ok(ClientCertVerified::assertion()),
            None => Err(unknown_certificate()),
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("TLS 1.2 is not offered".into()))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

fn transport() -> Arc<quinn::TransportConfig> {
    let mut transport = quinn::TransportConfig::default();
    // Liveness of idle peer links is the protocol's business (heartbeats); keep QUIC
    // connections open across quiet periods and notice dead peers within seconds.
    transport.keep_alive_interval(Some(std::time::Duration::from_millis(500)));
    transport.max_idle_timeout(Some(IDLE_TIMEOUT.try_into().expect("3 s fits")));
    // Before a connection has measured its round trip, QUIC assumes 333 ms and waits
    // about three times that to resend a lost first packet. A link to a node that is
    // still starting loses exactly that packet, so every cluster start cost a second
    // (and PBFT backups suspected their primary over it). Assume a LAN's round trip
    // instead; on a WAN the first packet is merely resent a few times sooner.
    transport.initial_rtt(INITIAL_RTT);
    Arc::new(transport)
}

/// Server side: require a pinned client certificate.
pub fn server_config(me: &Identity, pinned: Pinned) -> Result<quinn::ServerConfig, rustls::Error> {
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(PinnedVerifier::new(pinned))
        .with_single_cert(vec![me.cert()], me.key())?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls)
        .map_err(|e| rustls::Error::General(format!("QUIC needs TLS 1.3: {e}")))?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    config.transport_config(transport());
    Ok(config)
}

/// Client side: present our certificate, accept only the pinned one of the dialled peer.
pub fn client_config(me: &Identity, pinned: Pinned) -> Result<quinn::ClientConfig, rustls::Error> {
    let mut tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(PinnedVerifier::new(pinned))
        .with_client_auth_cert(vec![me.cert()], me.key())?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls)
        .map_err(|e| rustls::Error::General(format!("QUIC needs TLS 1.3: {e}")))?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    config.transport_config(transport());
    Ok(config)
}

/// The round trip QUIC assumes before it has measured one (see `transport`).
pub const INITIAL_RTT: std::time::Duration = std::time::Duration::from_millis(20);

/// How long a link may hear nothing (keep-alives included) before it is closed.
pub const IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

/// The key behind QUIC stateless resets, derived from the node's private key so a
/// restarted process has the same one (with the same connection-ID key, below). Then the first packet a peer sends on a
/// connection to the dead process is answered with a reset the peer can verify, and it
/// reconnects at once instead of waiting out the idle timeout.
struct ResetKey([u8; 32]);

impl ResetKey {
    fn derive(me: &Identity) -> Self {
        ResetKey(blake3::derive_key("qlab 2026 QUIC stateless reset key", &me.key_der))
    }
}

impl quinn::crypto::HmacKey for ResetKey {
    fn sign(&self, data: &[u8], signature_out: &mut [u8]) {
        signature_out.copy_from_slice(blake3::keyed_hash(&self.0, data).as_bytes());
    }
    fn signature_len(&self) -> usize {
        32
    }
    fn verify(&self, data: &[u8], signature: &[u8]) -> Result<(), quinn::crypto::CryptoError> {
        // blake3::Hash compares in constant time.
        let expected = blake3::keyed_hash(&self.0, data);
        let given: [u8; 32] = signature.try_into().map_err(|_| quinn::crypto::CryptoError)?;
        if expected == blake3::Hash::from(given) { Ok(()) } else { Err(quinn::crypto::CryptoError) }
    }
}

/// A UDP socket with large buffers (the default ~208 KiB drops packets under load)
/// wrapped in a quinn endpoint that both accepts and dials.
pub fn endpoint(addr: std::net::SocketAddr, me: &Identity, pinned: Pinned) -> std::io::Result<quinn::Endpoint> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    let buffer_bytes = 4 * 1024 * 1024;
    // Best effort: the kernel caps these at net.core.{r,w}mem_max.
    let _ = socket.set_recv_buffer_size(buffer_bytes);
    let _ = socket.set_send_buffer_size(buffer_bytes);
    socket.bind(&addr.into())?;
    let other = |e: rustls::Error| std::io::Error::other(e.to_string());
    let server = server_config(me, pinned.clone()).map_err(other)?;
    let runtime = quinn::default_runtime().ok_or_else(|| std::io::Error::other("no async runtime"))?;
    let mut config = quinn::EndpointConfig::new(Arc::new(ResetKey::derive(me)));
    // Connection IDs carry a keyed checksum that the endpoint verifies before it will
    // answer an unknown connection with a reset; the restarted process must accept the
    // IDs its predecessor issued, so that key is derived from the identity as well.
    let cid_key = u64::from_le_bytes(
        blake3::derive_key("qlab 2026 QUIC connection id key", &me.key_der)[..8].try_into().expect("8 bytes"),
    );
    config.cid_generator(move || Box::new(quinn_proto::HashedConnectionIdGenerator::from_key(cid_key)));
    let mut endpoint = quinn::Endpoint::new(config, Some(server), socket.into(), runtime)?;
    endpoint.set_default_client_config(client_config(me, pinned).map_err(other)?);
    Ok(endpoint)
}
