//! maintd's TLS configurations, all built here: its clients ([`client_config`],
//! [`https_client`]: the RAPI backend and the noded RPC client) and its HTTPS API
//! ([`server_config`], with Ganeti's `rapi.pem`).
//!
//! A server's certificate is checked by pinning: exactly the pinned certificates are
//! accepted, whatever name they carry and whatever their dates, optionally alongside a CA.
//! Ganeti's own certificates (`rapi.pem`, `server.pem`) are self-signed X.509 version 1
//! certificates, which webpki refuses outright; so the public key is read from the DER
//! here and handshake signatures are checked against it directly.

use std::{fmt, sync::Arc};

use rustls::{
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    client::{ResolvesClientCert, WebPkiServerVerifier},
    crypto::{
        verify_tls12_signature, verify_tls13_signature, verify_tls13_signature_with_raw_key,
        CryptoProvider, WebPkiSupportedAlgorithms,
    },
    pki_types::{CertificateDer, PrivateKeyDer, ServerName, SubjectPublicKeyInfoDer, UnixTime},
    sign::CertifiedKey,
    CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use thiserror::Error;
use x509_parser::{
    der_parser::asn1_rs::{Any, FromDer},
    prelude::X509Certificate,
};

/// The server's certificate is not the pinned one (and no CA vouched for it).
struct NotPinned;

impl fmt::Display for NotPinned {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the server's certificate is not the pinned certificate")
    }
}

/// rustls shows the error with `Debug`: make that the message too.
impl fmt::Debug for NotPinned {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl std::error::Error for NotPinned {}

/// The public key of an X.509 certificate: its whole `SubjectPublicKeyInfo`, the DER
/// contents of its `AlgorithmIdentifier`, and the key bits. Read with x509-parser rather
/// than webpki, which refuses version 1 certificates such as the `rapi.pem` Ganeti
/// generates.
fn certificate_public_key(certificate: &[u8]) -> Option<(Vec<u8>, Vec<u8>, Vec<u8>)> {
    let (_, parsed) = X509Certificate::from_der(certificate).ok()?;
    let spki = parsed.public_key();
    // The contents of the AlgorithmIdentifier, the first element of the SPKI sequence:
    // what webpki's algorithms name as their public key algorithm id.
    let (_, outer) = Any::from_der(spki.raw).ok()?;
    let (_, algorithm) = Any::from_der(outer.data).ok()?;
    let bits = &spki.subject_public_key;
    // A key is whole octets: no unused bits in the last one.
    if bits.unused_bits != 0 {
        return None;
    }
    Some((
        spki.raw.to_vec(),
        algorithm.data.to_vec(),
        bits.data.to_vec(),
    ))
}

/// A pinned certificate with its public key.
#[derive(Debug, Clone)]
pub struct Pin {
    certificate: CertificateDer<'static>,
    spki: SubjectPublicKeyInfoDer<'static>,
    algorithm: Vec<u8>,
    public_key: Vec<u8>,
}

impl Pin {
    /// The pin of `certificate`; `None` if it is not an X.509 certificate with a key.
    pub fn new(certificate: CertificateDer<'static>) -> Option<Self> {
        let (spki, algorithm, public_key) = certificate_public_key(certificate.as_ref())?;
        Some(Pin {
            certificate,
            spki: SubjectPublicKeyInfoDer::from(spki),
            algorithm,
            public_key,
        })
    }

    /// Check a TLS 1.3 handshake signature with the pinned key.
    fn verify_tls13(
        &self,
        message: &[u8],
        dss: &DigitallySignedStruct,
        algorithms: &WebPkiSupportedAlgorithms,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature_with_raw_key(message, &self.spki, dss, algorithms)
    }

    /// Check a TLS 1.2 handshake signature with the pinned key, as rustls does with a
    /// certificate's key: each algorithm of the signature scheme for the pin's key type.
    fn verify_tls12(
        &self,
        message: &[u8],
        dss: &DigitallySignedStruct,
        algorithms: &WebPkiSupportedAlgorithms,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let candidates = algorithms
            .mapping
            .iter()
            .find(|(scheme, _)| *scheme == dss.scheme)
            .map(|(_, candidates)| *candidates)
            .unwrap_or_default();
        let verified = candidates
            .iter()
            .filter(|alg| alg.public_key_alg_id().as_ref() == self.algorithm.as_slice())
            .any(|alg| {
                alg.verify_signature(&self.public_key, message, dss.signature())
                    .is_ok()
            });
        if verified {
            Ok(HandshakeSignatureValid::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::BadSignature,
            ))
        }
    }
}

/// Accepts the pinned certificates byte for byte (name and dates not checked: the pin is
/// the trust), else defers to the CA verifier if there is one.
#[derive(Debug)]
pub struct PinnedVerifier {
    pins: Vec<Pin>,
    ca: Option<Arc<WebPkiServerVerifier>>,
    provider: Arc<CryptoProvider>,
}

impl PinnedVerifier {
    /// A verifier accepting `pins`, else what `ca` accepts.
    pub fn new(
        pins: Vec<Pin>,
        ca: Option<Arc<WebPkiServerVerifier>>,
        provider: Arc<CryptoProvider>,
    ) -> Self {
        PinnedVerifier { pins, ca, provider }
    }
}

impl PinnedVerifier {
    fn pin_for(&self, certificate: &CertificateDer<'_>) -> Option<&Pin> {
        self.pins
            .iter()
            .find(|pin| pin.certificate.as_ref() == certificate.as_ref())
    }
}

impl ServerCertVerifier for PinnedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if self.pin_for(end_entity).is_some() {
            return Ok(ServerCertVerified::assertion());
        }
        match &self.ca {
            Some(ca) => {
                ca.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
            }
            None => Err(rustls::Error::InvalidCertificate(CertificateError::Other(
                rustls::OtherError(Arc::new(NotPinned)),
            ))),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.provider.signature_verification_algorithms;
        match self.pin_for(cert) {
            Some(pin) => pin.verify_tls12(message, dss, algorithms),
            None => verify_tls12_signature(message, cert, dss, algorithms),
        }
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.provider.signature_verification_algorithms;
        match self.pin_for(cert) {
            Some(pin) => pin.verify_tls13(message, dss, algorithms),
            None => verify_tls13_signature(message, cert, dss, algorithms),
        }
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Always presents one certificate and key. rustls' own `with_client_auth_cert` parses the
/// certificate to match it with the key, and refuses the X.509 v1 certificates Ganeti
/// issues; the server is the one to judge the certificate anyway.
#[derive(Debug)]
struct FixedClientCertificate(Arc<CertifiedKey>);

impl ResolvesClientCert for FixedClientCertificate {
    fn resolve(&self, _: &[&[u8]], _: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// Why a TLS client configuration could not be built. The caller knows which file each
/// part came from, and names it.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TlsError {
    /// Neither a certificate to pin nor a CA: nothing to check the server with.
    #[error("no certificate to pin and no CA to check the server with")]
    NoTrust,
    /// A certificate to pin has no usable public key.
    #[error("not an X.509 certificate with a public key")]
    Pin,
    /// The CA certificates cannot check a server.
    #[error("unusable CA certificate: {0}")]
    Ca(String),
    /// The client's private key cannot sign.
    #[error("unusable private key: {0}")]
    ClientKey(String),
    /// The server's key and certificate file cannot be used.
    #[error("unusable key and certificate {0}")]
    ServerPem(String),
    /// rustls refused the protocol versions.
    #[error("TLS setup: {0}")]
    Protocol(String),
}

/// A rustls client configuration accepting the `pinned` server certificates and, with
/// `ca`, any certificate those CAs vouch for under the server's name; with `client`,
/// presenting that certificate chain and key (noded wants the cluster's client
/// certificate). Every TLS client of maintd is configured here.
pub fn client_config(
    pinned: Vec<CertificateDer<'static>>,
    ca: Option<Vec<CertificateDer<'static>>>,
    client: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
) -> Result<rustls::ClientConfig, TlsError> {
    if pinned.is_empty() && ca.is_none() {
        return Err(TlsError::NoTrust);
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let ca = match ca {
        Some(certificates) => {
            let mut roots = RootCertStore::empty();
            for certificate in certificates {
                roots
                    .add(certificate)
                    .map_err(|e| TlsError::Ca(e.to_string()))?;
            }
            let verifier =
                WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                    .build()
                    .map_err(|e| TlsError::Ca(e.to_string()))?;
            Some(verifier)
        }
        None => None,
    };
    let pins = pinned
        .into_iter()
        .map(|certificate| Pin::new(certificate).ok_or(TlsError::Pin))
        .collect::<Result<Vec<_>, _>>()?;
    let key_provider = provider.key_provider;
    let verifier = PinnedVerifier::new(pins, ca, provider.clone());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Protocol(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier));
    let mut config = match client {
        Some((chain, key)) => {
            let signer = key_provider
                .load_private_key(key)
                .map_err(|e| TlsError::ClientKey(e.to_string()))?;
            builder.with_client_cert_resolver(Arc::new(FixedClientCertificate(Arc::new(
                CertifiedKey::new(chain, signer),
            ))))
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// A rustls server configuration presenting the key and certificate chain of one PEM
/// file, as Ganeti keeps `rapi.pem`: maintd's HTTPS API serves with the same certificate
/// as Ganeti's RAPI.
pub fn server_config(pem: &std::path::Path) -> Result<rustls::ServerConfig, TlsError> {
    use rustls::pki_types::pem::PemObject;
    let unusable = |why: String| TlsError::ServerPem(format!("{}: {why}", pem.display()));
    let chain = pem_certificates(pem).map_err(unusable)?;
    let key = PrivateKeyDer::from_pem_file(pem)
        .map_err(|e| unusable(format!("no usable private key: {e}")))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let signer = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| unusable(format!("unusable private key: {e}")))?;
    // rustls's own check parses the certificate with webpki, which refuses the version 1
    // certificates Ganeti makes: compare the public keys here instead.
    let certificate_key = certificate_public_key(chain[0].as_ref()).map(|(spki, _, _)| spki);
    let signer_key = signer.public_key().map(|spki| spki.as_ref().to_vec());
    if certificate_key.is_none() || certificate_key != signer_key {
        return Err(unusable(
            "the private key does not fit the certificate".into(),
        ));
    }
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Protocol(e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(FixedServerCertificate(Arc::new(
            CertifiedKey::new(chain, signer),
        ))));
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// The one certificate maintd's API presents, whatever name the client asks for.
#[derive(Debug)]
struct FixedServerCertificate(Arc<CertifiedKey>);

impl rustls::server::ResolvesServerCert for FixedServerCertificate {
    fn resolve(&self, _: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

/// The certificates of the PEM file at `path` (other sections, such as a key, are
/// skipped); an error names what is wrong.
pub fn pem_certificates(path: &std::path::Path) -> Result<Vec<CertificateDer<'static>>, String> {
    use rustls::pki_types::pem::PemObject;
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    let found = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("not valid PEM: {e}"))?;
    if found.is_empty() {
        return Err("no CERTIFICATE section".into());
    }
    Ok(found)
}

/// An HTTPS client with `tls`, `timeout` for connecting, the handshake and each request,
/// and no redirects (a redirect could carry credentials elsewhere).
pub fn https_client(tls: rustls::ClientConfig, timeout: std::time::Duration) -> awc::Client {
    let connector = awc::Connector::new()
        .rustls_0_23(Arc::new(tls))
        .timeout(timeout)
        .handshake_timeout(timeout);
    awc::Client::builder()
        .connector(connector)
        .timeout(timeout)
        .disable_redirects()
        .finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_keys_are_read_from_certificates_without_panicking() {
        let made = rcgen::generate_simple_self_signed(vec!["c.example".to_owned()]).unwrap();
        let der = made.cert.der().as_ref().to_vec();
        let (spki, algorithm, key) = certificate_public_key(&der).unwrap();
        assert_eq!(key, made.key_pair.public_key_raw());
        assert!(spki.len() > key.len() + algorithm.len());
        assert!(Pin::new(CertificateDer::from(der.clone())).is_some());
        for end in 0..der.len() {
            assert!(
                certificate_public_key(&der[..end]).is_none(),
                "prefix {end}"
            );
        }
        let mut flipped = der.clone();
        for i in 0..flipped.len() {
            flipped[i] ^= 0xff;
            let _ = certificate_public_key(&flipped);
            flipped[i] ^= 0xff;
        }
        assert!(certificate_public_key(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]).is_none());
        assert!(certificate_public_key(&[]).is_none());
    }

    /// Key and X.509 version 1 certificate in one file, as Ganeti writes `server.pem` and
    /// `client.pem` (made with `openssl x509 -req -signkey`, which adds no extensions).
    const GANETI_STYLE_PEM: &str = include_str!("testdata/ganeti-v1.pem");

    #[test]
    fn version_1_certificates_serve_as_pin_and_as_client_certificate() {
        use rustls::pki_types::pem::PemObject;
        let bytes = GANETI_STYLE_PEM.as_bytes();
        let certificates = CertificateDer::pem_slice_iter(bytes)
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_slice(bytes).unwrap();
        assert_eq!(certificates.len(), 1);
        assert!(Pin::new(certificates[0].clone()).is_some());
        let config = client_config(certificates.clone(), None, Some((certificates, key))).unwrap();
        assert!(config.client_auth_cert_resolver.has_certs());
        let error = client_config(Vec::new(), None, None).unwrap_err();
        assert_eq!(error, TlsError::NoTrust);
        assert!(error.to_string().contains("no certificate"));
        assert_eq!(
            client_config(vec![CertificateDer::from(vec![0x30, 0x00])], None, None).unwrap_err(),
            TlsError::Pin
        );
    }

    #[test]
    fn the_api_serves_with_a_ganeti_style_pem_and_bad_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let both = dir.path().join("rapi.pem");
        std::fs::write(&both, GANETI_STYLE_PEM).unwrap();
        let config = server_config(&both).unwrap();
        assert_eq!(config.alpn_protocols, [b"http/1.1".to_vec()]);

        let certificate_only = dir.path().join("cert.pem");
        let text: String = GANETI_STYLE_PEM
            .split_inclusive('\n')
            .skip_while(|line| !line.starts_with("-----BEGIN CERTIFICATE"))
            .take_while(|line| !line.starts_with("-----BEGIN") || line.contains("CERTIFICATE"))
            .collect();
        std::fs::write(&certificate_only, text).unwrap();
        let error = server_config(&certificate_only).unwrap_err().to_string();
        assert!(
            error.contains("cert.pem") && error.contains("private key"),
            "{error}"
        );
        let error = server_config(&dir.path().join("missing.pem"))
            .unwrap_err()
            .to_string();
        assert!(error.contains("missing.pem"), "{error}");
    }
}
