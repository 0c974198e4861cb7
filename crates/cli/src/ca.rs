//! `--ca-cert FILE` (`RUNWARE_CA_CERT`): extra trusted CA certificates, PEM (one or more)
//! or DER, for the WebSocket and the image downloads — a TLS-inspecting corporate proxy's
//! CA, or a private endpoint's. Loaded once per run, before any connection.

use super::error::CliError;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use std::path::Path;
use std::sync::OnceLock;

static ROOTS: OnceLock<Vec<Vec<u8>>> = OnceLock::new();

/// Reads `path` and keeps its certificates for the rest of the run.
pub fn load(path: &Path) -> Result<(), CliError> {
    let bytes = std::fs::read(path).map_err(|e| CliError::Read { path: path.to_path_buf(), source: e })?;
    let roots = parse(&bytes).map_err(|reason| CliError::Usage(format!("--ca-cert {}: {reason}", path.display())))?;
    let _ = ROOTS.set(roots);
    Ok(())
}

/// The certificates `--ca-cert` gave (none without it), DER.
pub fn roots() -> &'static [Vec<u8>] {
    ROOTS.get().map(Vec::as_slice).unwrap_or_default()
}

fn parse(bytes: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    if bytes.windows(11).any(|w| w == b"-----BEGIN ") {
        let certs: Vec<Vec<u8>> = CertificateDer::pem_slice_iter(bytes)
            .map(|c| c.map(|c| c.as_ref().to_vec()))
            .collect::<Result<_, _>>()
            .map_err(|e| format!("not a readable PEM file: {e}"))?;
        if certs.is_empty() {
            return Err("the PEM file holds no CERTIFICATE block".into());
        }
        return Ok(certs);
    }
    // A DER certificate is an ASN.1 SEQUENCE.
    if bytes.first() == Some(&0x30) && bytes.len() > 64 {
        return Ok(vec![bytes.to_vec()]);
    }
    Err("neither a PEM file with CERTIFICATE blocks nor a DER certificate".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_der_and_junk() {
        assert!(parse(b"hello").unwrap_err().contains("neither"));
        assert!(
            parse(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
                .unwrap_err()
                .contains("no CERTIFICATE")
        );
        let der = vec![0x30; 100];
        assert_eq!(parse(&der).unwrap(), vec![der.clone()]);
    }
}
