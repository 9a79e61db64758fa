//! TLS for the hub and its clients, with rustls (ring as the crypto provider,
//! no OpenSSL): the hub's certificate (given as PEM files, or self-signed
//! once and kept in `.mcc/tls/`), its fingerprint (`sha256:HEX` of the DER
//! certificate, what `hub.json` and `remote.json` carry), and how a client
//! decides to trust a hub ([`Trust`]): a pinned fingerprint for a
//! self-signed certificate, or a chain to a CA (given, or the web's roots).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use sha2::{Digest, Sha256};

use crate::layout::Layout;

/// The folder of `.mcc/` holding a self-signed certificate and its key.
pub const DIR: &str = "tls";
/// The self-signed certificate (PEM), in [`DIR`].
pub const CERT: &str = "cert.pem";
/// Its private key (PEM, 0600), in [`DIR`].
pub const KEY: &str = "key.pem";

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read the TLS {what} {path}: {reason}; give a PEM file with --tls-cert and --tls-key")]
    Pem { what: &'static str, path: PathBuf, reason: String },
    #[error(
        "cannot keep the self-signed certificate in {path}: {reason}; check that .mcc/tls/ is a real folder this user may write"
    )]
    Store { path: PathBuf, reason: String },
    #[error("cannot make a self-signed certificate: {0}")]
    Generate(String),
    #[error("the TLS certificate and key do not go together: {0}; give the key of that certificate")]
    Config(String),
    #[error("`{0}` is not a fingerprint: give it as printed by the hub, sha256: and 64 hex digits")]
    Fingerprint(String),
}

/// Where the hub's certificate comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Certificate {
    /// PEM files (`--tls-cert`, `--tls-key`): a chain, leaf first, and its key.
    Files { cert: PathBuf, key: PathBuf },
    /// Made at first start and kept in `.mcc/tls/` (`--tls-self-signed`).
    SelfSigned,
}

/// What the hub serves TLS with.
#[derive(Clone)]
pub struct ServerTls {
    pub config: Arc<rustls::ServerConfig>,
    /// `sha256:HEX` of the leaf certificate.
    pub fingerprint: String,
    /// True when the certificate was made now (not read from `.mcc/tls/` or given).
    pub made: bool,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls").field("fingerprint", &self.fingerprint).finish_non_exhaustive()
    }
}

/// The crypto every TLS config of mcc uses.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The hub's TLS: read the given files, or read (else make) the
/// self-signed certificate of the project whose state folder is `layout`.
pub fn server(certificate: &Certificate, layout: &Layout, names: &[String]) -> Result<ServerTls, TlsError> {
    let (chain, key, made) = match certificate {
        Certificate::Files { cert, key } => (read_chain(cert)?, read_key(key)?, false),
        Certificate::SelfSigned => self_signed(layout, names)?,
    };
    let fingerprint = fingerprint(&chain[0]);
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    Ok(ServerTls { config: Arc::new(config), fingerprint, made })
}

fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = |reason: String| TlsError::Pem { what: "certificate", path: path.to_owned(), reason };
    let chain = CertificateDer::pem_file_iter(path)
        .map_err(|e| pem(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem(e.to_string()))?;
    if chain.is_empty() {
        return Err(pem("it holds no CERTIFICATE block".to_owned()));
    }
    Ok(chain)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| TlsError::Pem {
        what: "key",
        path: path.to_owned(),
        reason: e.to_string(),
    })
}

/// The self-signed certificate in `.mcc/tls/`, made and kept on first use.
/// Written through the state folder's no-follow handle: a link planted at
/// `.mcc/tls` or at the key is never written through.
fn self_signed(
    layout: &Layout,
    names: &[String],
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>, bool), TlsError> {
    let folder = layout.dir().join(DIR);
    let store = |reason: String| TlsError::Store { path: folder.clone(), reason };
    let tls = layout.open().and_then(|state| state.folder_or_create(DIR)).map_err(|e| store(e.to_string()))?;
    if tls.has(CERT) && tls.has(KEY) {
        let cert = tls.read_bounded(CERT, crate::layout::SMALL_FILE).map_err(|e| store(e.to_string()))?;
        let key = tls.read_bounded(KEY, crate::layout::SMALL_FILE).map_err(|e| store(e.to_string()))?;
        let pem = |what, reason: String| TlsError::Pem { what, path: folder.join(CERT), reason };
        let cert = CertificateDer::from_pem_slice(&cert).map_err(|e| pem("certificate", e.to_string()))?;
        let key = PrivateKeyDer::from_pem_slice(&key).map_err(|e| pem("key", e.to_string()))?;
        return Ok((vec![cert], key, false));
    }
    let rcgen::CertifiedKey { cert, signing_key } =
        rcgen::generate_simple_self_signed(names.to_vec()).map_err(|e| TlsError::Generate(e.to_string()))?;
    // The key first: a certificate is never found without its key.
    tls.write_private(KEY, signing_key.serialize_pem().as_bytes()).map_err(|e| store(e.to_string()))?;
    tls.write_atomic(CERT, cert.pem().as_bytes()).map_err(|e| store(e.to_string()))?;
    let key = PrivateKeyDer::try_from(signing_key.serialize_der()).map_err(|e| TlsError::Generate(e.to_owned()))?;
    Ok((vec![cert.der().clone()], key, true))
}

/// `sha256:HEX` (lowercase) of a DER certificate.
pub fn fingerprint(der: &[u8]) -> String {
    let digest = Sha256::digest(der);
    digest.iter().fold(String::from("sha256:"), |mut text, b| {
        let _ = write!(text, "{b:02x}");
        text
    })
}

/// A fingerprint as a person may type it (`sha256:` optional, any case,
/// colons between bytes), as [`fingerprint`] writes it.
pub fn parse_fingerprint(given: &str) -> Result<String, TlsError> {
    let trimmed = given.trim();
    let hex = trimmed.strip_prefix("sha256:").or_else(|| trimmed.strip_prefix("SHA256:")).unwrap_or(trimmed);
    let hex: String = hex.chars().filter(|c| *c != ':').collect::<String>().to_ascii_lowercase();
    if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(format!("sha256:{hex}"))
    } else {
        Err(TlsError::Fingerprint(given.to_owned()))
    }
}

/// How a client decides that the hub it reached is the right one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trust {
    /// The certificate must be exactly this one (`sha256:HEX`): a self-signed hub.
    Pinned(String),
    /// A chain to the CA certificate(s) in this PEM file (`--ca`).
    Ca(PathBuf),
    /// A chain to the web's public roots (a hub behind a real certificate).
    WebRoots,
}

/// What a TLS connection to the hub presented, kept by the verifier so a
/// refusal can name the expected and the presented fingerprint.
#[derive(Debug, Default, Clone)]
pub struct Presented(Arc<Mutex<Option<String>>>);

impl Presented {
    /// The fingerprint of the certificate the hub presented, if it got that far.
    pub fn fingerprint(&self) -> Option<String> {
        self.0.lock().ok()?.clone()
    }

    fn record(&self, der: &[u8]) {
        if let Ok(mut slot) = self.0.lock() {
            *slot = Some(fingerprint(der));
        }
    }
}

/// The client's TLS config for `trust`; the verifier records what the hub presents in `presented`.
pub fn client(trust: &Trust, presented: &Presented) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let provider = provider();
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let chain = |roots: rustls::RootCertStore| {
        rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .build()
            .map(Check::Chain)
            .map_err(|e| TlsError::Config(e.to_string()))
    };
    let check = match trust {
        Trust::Pinned(expected) => Check::Pin(expected.clone()),
        Trust::Ca(path) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in read_chain(path)? {
                roots.add(cert).map_err(|e| TlsError::Pem {
                    what: "CA certificate",
                    path: path.clone(),
                    reason: e.to_string(),
                })?;
            }
            chain(roots)?
        }
        Trust::WebRoots => chain(rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() })?,
    };
    let verifier =
        Verifier { check, presented: presented.clone(), algorithms: provider.signature_verification_algorithms };
    Ok(Arc::new(builder.dangerous().with_custom_certificate_verifier(Arc::new(verifier)).with_no_client_auth()))
}

/// How the hub's certificate is judged.
#[derive(Debug)]
enum Check {
    /// The leaf certificate must hash to the pin; names and dates do not
    /// matter (the pin is stronger than both).
    Pin(String),
    /// The usual chain check up to the given roots.
    Chain(Arc<rustls::client::WebPkiServerVerifier>),
}

/// The client's verifier: judges by its [`Check`] and records the presented
/// leaf for messages. Either way the handshake's signature must be made by
/// the presented certificate's key.
#[derive(Debug)]
struct Verifier {
    check: Check,
    presented: Presented,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.presented.record(end_entity);
        match &self.check {
            Check::Pin(expected) if fingerprint(end_entity) == *expected => Ok(ServerCertVerified::assertion()),
            Check::Pin(_) => {
                Err(rustls::Error::InvalidCertificate(rustls::CertificateError::ApplicationVerificationFailure))
            }
            Check::Chain(chain) => chain.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fingerprint_is_read_however_a_person_types_it() {
        let hex = "ab".repeat(32);
        let canonical = format!("sha256:{hex}");
        assert_eq!(parse_fingerprint(&canonical).unwrap(), canonical);
        assert_eq!(parse_fingerprint(&hex.to_uppercase()).unwrap(), canonical);
        let colons = hex.as_bytes().chunks(2).map(|c| std::str::from_utf8(c).unwrap()).collect::<Vec<_>>().join(":");
        assert_eq!(parse_fingerprint(&format!("SHA256:{colons}")).unwrap(), canonical);
        assert!(parse_fingerprint("sha256:abc").is_err());
        assert!(parse_fingerprint(&"zz".repeat(32)).is_err());
    }

    #[test]
    fn the_self_signed_certificate_is_made_once_with_a_private_key_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::of_root(dir.path());
        layout.create().unwrap();
        let names = vec!["localhost".to_owned()];
        let first = server(&Certificate::SelfSigned, &layout, &names).unwrap();
        assert!(first.made);
        assert!(first.fingerprint.starts_with("sha256:") && first.fingerprint.len() == 71, "{}", first.fingerprint);
        let again = server(&Certificate::SelfSigned, &layout, &names).unwrap();
        assert!(!again.made);
        assert_eq!(again.fingerprint, first.fingerprint, "the kept certificate is reused");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(layout.dir().join(DIR).join(KEY)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "the key is readable by its owner only");
        }
        let cert = std::fs::read(layout.dir().join(DIR).join(CERT)).unwrap();
        let der = CertificateDer::from_pem_slice(&cert).unwrap();
        assert_eq!(fingerprint(&der), first.fingerprint, "the fingerprint is of the DER certificate kept");
    }

    #[cfg(unix)]
    #[test]
    fn a_link_planted_at_the_tls_folder_is_not_written_through() {
        let dir = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        let layout = Layout::of_root(dir.path());
        layout.create().unwrap();
        std::os::unix::fs::symlink(elsewhere.path(), layout.dir().join(DIR)).unwrap();
        let error = server(&Certificate::SelfSigned, &layout, &["localhost".to_owned()]).unwrap_err();
        assert!(matches!(error, TlsError::Store { .. }), "{error}");
        assert_eq!(std::fs::read_dir(elsewhere.path()).unwrap().count(), 0, "nothing was written where the link leads");
    }
}
