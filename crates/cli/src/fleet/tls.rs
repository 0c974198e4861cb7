//! TLS to the queue database, as libpq's `sslmode` and `sslrootcert` describe it.
//!
//! tokio-postgres knows only `sslmode=disable|prefer|require` and no `sslrootcert`;
//! managed PostgreSQL services hand out connection strings with
//! `sslmode=verify-full&sslrootcert=…`. This module takes those two keys out of the
//! connection string (URL or `key=value` form) and builds the rustls connector they
//! mean, with libpq's semantics:
//!
//! | `sslmode` | TLS | certificate checked |
//! |---|---|---|
//! | `disable` | never | — |
//! | `allow`, `prefer` (the default) | if the server offers it | only with `sslrootcert` (as `verify-ca`) |
//! | `require` | always | only with `sslrootcert` (as `verify-ca`) |
//! | `verify-ca` | always | chain to a trusted root |
//! | `verify-full` | always | chain and host name |
//!
//! Trusted roots are the PEM file `sslrootcert` names, or Mozilla's roots
//! (webpki-roots) when it is absent or `system`. Client certificates (`sslcert`,
//! `sslkey`) are refused with an error naming the key.

use super::FleetError;
use crate::conninfo::{key_values, percent_decode, url_query};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::path::PathBuf;
use std::sync::Arc;
use tokio_postgres::config::SslMode;
use tokio_postgres_rustls::MakeRustlsConnect;

/// What the connection string asked of TLS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsOptions {
    /// libpq's `sslmode`.
    pub mode: Mode,
    /// libpq's `sslrootcert`: a PEM file, or `None` (also for `system`: Mozilla's roots).
    pub root_cert: Option<PathBuf>,
    /// `sslrootcert=system` was given.
    pub system_roots: bool,
}

/// libpq's `sslmode` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// No TLS.
    Disable,
    /// TLS if the server offers it (`allow` and `prefer`).
    Prefer,
    /// TLS always.
    Require,
    /// TLS, the chain checked.
    VerifyCa,
    /// TLS, the chain and the host name checked.
    VerifyFull,
}

impl TlsOptions {
    /// What tokio-postgres is told (it verifies nothing itself).
    pub fn ssl_mode(&self) -> SslMode {
        match self.mode {
            Mode::Disable => SslMode::Disable,
            Mode::Prefer => SslMode::Prefer,
            Mode::Require | Mode::VerifyCa | Mode::VerifyFull => SslMode::Require,
        }
    }

    /// The connector, or `None` for `sslmode=disable`.
    pub fn connector(&self) -> Result<Option<MakeRustlsConnect>, FleetError> {
        if self.mode == Mode::Disable {
            return Ok(None);
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier: Arc<dyn ServerCertVerifier> = match (self.mode, &self.root_cert) {
            (Mode::Prefer | Mode::Require, None) if !self.system_roots => {
                Arc::new(Unverified { algorithms: provider.signature_verification_algorithms })
            }
            (mode, file) => {
                let roots = Arc::new(self.roots(file.as_ref())?);
                let webpki = rustls::client::WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
                    .build()
                    .map_err(|e| FleetError::Tls(format!("sslrootcert: {e}")))?;
                if mode == Mode::VerifyFull { webpki } else { Arc::new(ChainOnly(webpki)) }
            }
        };
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| FleetError::Tls(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        Ok(Some(MakeRustlsConnect::new(config)))
    }

    fn roots(&self, file: Option<&PathBuf>) -> Result<RootCertStore, FleetError> {
        let Some(file) = file else {
            return Ok(RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() });
        };
        let certs = CertificateDer::pem_file_iter(file)
            .and_then(|it| it.collect::<Result<Vec<_>, _>>())
            .map_err(|e| FleetError::Tls(format!("sslrootcert {}: {e}", file.display())))?;
        let mut roots = RootCertStore::empty();
        let (added, _) = roots.add_parsable_certificates(certs);
        if added == 0 {
            return Err(FleetError::Tls(format!("sslrootcert {}: no usable certificate in the file", file.display())));
        }
        Ok(roots)
    }
}

/// Splits libpq's TLS keys off `queue`: the connection string for tokio-postgres
/// (with `sslmode` and `sslrootcert` removed) and what they asked for.
pub fn split(queue: &str) -> Result<(String, TlsOptions), FleetError> {
    let mut mode = None;
    let mut root = None;
    let mut take = |key: &str, value: &str| -> Result<bool, FleetError> {
        match key {
            "sslmode" => {
                mode = Some(match value {
                    "disable" => Mode::Disable,
                    "allow" | "prefer" => Mode::Prefer,
                    "require" => Mode::Require,
                    "verify-ca" => Mode::VerifyCa,
                    "verify-full" => Mode::VerifyFull,
                    other => {
                        return Err(FleetError::Tls(format!(
                            "sslmode: {other:?} is not one of disable, allow, prefer, require, verify-ca, verify-full"
                        )));
                    }
                });
                Ok(true)
            }
            "sslrootcert" => {
                root = Some(value.to_string());
                Ok(true)
            }
            "sslcert" | "sslkey" | "sslpassword" | "sslcrl" | "sslcrldir" => Err(FleetError::Tls(format!(
                "{key}: client certificates and revocation lists are not supported (use password or trust authentication)"
            ))),
            _ => Ok(false),
        }
    };
    let rest = if let Some((base, query)) = url_query(queue) {
        let mut kept = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let (k, v) = (percent_decode(k), percent_decode(v));
            if !take(&k, &v)? {
                kept.push(pair);
            }
        }
        if kept.is_empty() { base.to_string() } else { format!("{base}?{}", kept.join("&")) }
    } else if queue.contains("://") {
        queue.to_string()
    } else {
        let mut out = String::with_capacity(queue.len());
        let mut last = 0;
        for (start, end, key, value) in key_values(queue).map_err(FleetError::Tls)? {
            if take(&key, &value)? {
                out.push_str(&queue[last..start]);
                last = end;
            }
        }
        out.push_str(&queue[last..]);
        out
    };
    let system_roots = root.as_deref() == Some("system");
    let mode = mode.unwrap_or(Mode::Prefer);
    if system_roots && mode != Mode::VerifyFull {
        return Err(FleetError::Tls("sslrootcert=system needs sslmode=verify-full".into()));
    }
    let root_cert = root.filter(|r| r != "system" && !r.is_empty()).map(PathBuf::from);
    Ok((rest, TlsOptions { mode, root_cert, system_roots }))
}

/// `sslmode=require|prefer` without a root certificate: encrypted, the server
/// not authenticated (libpq's meaning). Handshake signatures are still checked.
#[derive(Debug)]
struct Unverified {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for Unverified {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
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

/// `verify-ca`: the chain must lead to a trusted root; the host name is not checked.
#[derive(Debug)]
struct ChainOnly(Arc<rustls::client::WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // webpki checks the chain before the name: a name error means the chain held.
        match self.0.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_keys_are_taken_out_and_the_rest_kept() {
        let (rest, tls) = split(
            "postgres://u:p%40ss@db.example:5432/app?sslmode=verify-full&sslrootcert=%2Ftmp%2Fca.pem&connect_timeout=5",
        )
        .unwrap();
        assert_eq!(rest, "postgres://u:p%40ss@db.example:5432/app?connect_timeout=5");
        assert_eq!(tls.mode, Mode::VerifyFull);
        assert_eq!(tls.root_cert, Some(PathBuf::from("/tmp/ca.pem")));
        assert_eq!(tls.ssl_mode(), SslMode::Require);
        let (rest, tls) = split("postgresql://h/db?sslmode=require").unwrap();
        assert_eq!((rest.as_str(), tls.mode, tls.root_cert), ("postgresql://h/db", Mode::Require, None));
        let (rest, tls) = split("postgres://h/db").unwrap();
        assert_eq!((rest.as_str(), tls.mode), ("postgres://h/db", Mode::Prefer));
    }

    #[test]
    fn key_value_strings_keep_everything_else_byte_for_byte() {
        let (rest, tls) =
            split(r"host=db port=5432 sslmode = 'verify-ca' password='it\'s' sslrootcert='/a b/ca.pem' user=x")
                .unwrap();
        assert_eq!(rest, r"host=db port=5432  password='it\'s'  user=x");
        assert_eq!((tls.mode, tls.root_cert), (Mode::VerifyCa, Some(PathBuf::from("/a b/ca.pem"))));
    }

    #[test]
    fn bad_values_name_the_key() {
        for (queue, key) in [
            ("postgres://h/db?sslmode=verify", "sslmode"),
            ("postgres://h/db?sslcert=/c.pem", "sslcert"),
            ("host=h sslkey=/k.pem", "sslkey"),
            ("postgres://h/db?sslrootcert=system&sslmode=require", "sslrootcert=system"),
            ("host=h sslmode='require", "sslmode"),
        ] {
            let e = split(queue).expect_err(queue).to_string();
            assert!(e.contains(key), "{queue}: {e}");
        }
    }

    #[test]
    fn a_root_file_without_certificates_is_refused_with_its_name() {
        let dir = std::env::temp_dir().join(format!("runware-tls-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("empty.pem");
        std::fs::write(&file, "not a certificate\n").unwrap();
        let tls = TlsOptions { mode: Mode::VerifyFull, root_cert: Some(file.clone()), system_roots: false };
        let e = tls.connector().err().expect("refused").to_string();
        assert!(e.contains("empty.pem"), "{e}");
        let missing = TlsOptions { mode: Mode::VerifyCa, root_cert: Some(dir.join("nope.pem")), system_roots: false };
        assert!(missing.connector().err().expect("refused").to_string().contains("nope.pem"));
        let _ = std::fs::remove_dir_all(&dir);
        // Mozilla's roots, and the unverified mode, build.
        let system = TlsOptions { mode: Mode::VerifyFull, root_cert: None, system_roots: true };
        assert!(system.connector().unwrap().is_some());
        let plain = TlsOptions { mode: Mode::Require, root_cert: None, system_roots: false };
        assert!(plain.connector().unwrap().is_some());
        let off = TlsOptions { mode: Mode::Disable, root_cert: None, system_roots: false };
        assert!(off.connector().unwrap().is_none());
    }
}
