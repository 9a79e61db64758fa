//! Certificates for the tests: a CA of the test's own and a hub certificate
//! it signed (for `mcc hub --tls-cert/--tls-key` and `mcc join --ca`), and a
//! rustls client that trusts that CA, for raw TLS connections to a hub.

#![allow(dead_code)]

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// PEM files written in a folder: the CA's certificate, the hub's chain and key.
pub struct TestCa {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TestCa {
    /// A CA named `name`, and a certificate it signed for `127.0.0.1`, `::1` and `localhost`.
    pub fn make(dir: &Path, name: &str) -> Self {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(rcgen::DnType::CommonName, name);
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let hub_key = rcgen::KeyPair::generate().unwrap();
        let names = vec!["127.0.0.1".to_owned(), "::1".to_owned(), "localhost".to_owned()];
        let hub_cert = rcgen::CertificateParams::new(names).unwrap().signed_by(&hub_key, &issuer).unwrap();
        let made = Self {
            ca: dir.join(format!("{name}-ca.pem")),
            cert: dir.join(format!("{name}-hub.pem")),
            key: dir.join(format!("{name}-hub.key")),
        };
        std::fs::write(&made.ca, ca_cert.pem()).unwrap();
        std::fs::write(&made.cert, hub_cert.pem()).unwrap();
        std::fs::write(&made.key, hub_key.serialize_pem()).unwrap();
        made
    }

    /// A client config trusting this CA only.
    pub fn client(&self) -> Arc<rustls::ClientConfig> {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::from_pem_file(&self.ca).unwrap()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        Arc::new(
            rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth(),
        )
    }
}

/// A TLS stream to `127.0.0.1:port` (the handshake happens on first use).
pub fn connect(
    port: u16,
    config: &Arc<rustls::ClientConfig>,
) -> Option<rustls::StreamOwned<rustls::ClientConnection, TcpStream>> {
    let tcp = TcpStream::connect(("127.0.0.1", port)).ok()?;
    tcp.set_read_timeout(Some(super::DEADLINE)).ok()?;
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").ok()?;
    let tls = rustls::ClientConnection::new(config.clone(), name.to_owned()).ok()?;
    Some(rustls::StreamOwned::new(tls, tcp))
}
