//! TLS for the broker connection: rustls (ring) trusting only the configured CA file, with an
//! optional client certificate. Every failure names the file and what is wrong with it.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use veil_core::{Error, ErrorKind};

fn read(path: &Path, what: &str) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(|e| {
        Error::wrap(
            ErrorKind::NotConfigured,
            format!("mqtt: cannot read the {what} {}", path.display()),
            e,
        )
    })
}

fn certificates(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>, Error> {
    let pem = read(path, what)?;
    let certs = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::invalid_input(format!("mqtt: {} is not PEM: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(Error::invalid_input(format!(
            "mqtt: {} holds no certificate (expected -----BEGIN CERTIFICATE-----)",
            path.display()
        )));
    }
    Ok(certs)
}

/// The client configuration for `ca_file` and, optionally, a client certificate and key.
pub fn client_config(
    ca_file: &Path,
    client: Option<(&Path, &Path)>,
) -> Result<Arc<rustls::ClientConfig>, Error> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in certificates(ca_file, "CA file")? {
        roots.add(cert).map_err(|e| {
            Error::invalid_input(format!(
                "mqtt: a certificate in {} cannot be a trust anchor: {e}",
                ca_file.display()
            ))
        })?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::internal(format!("mqtt: TLS setup: {e}")))?
        .with_root_certificates(roots);
    let config = match client {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let chain = certificates(cert, "client certificate")?;
            let pem = read(key, "client key")?;
            let key_der: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut pem.as_slice())
                .map_err(|e| {
                    Error::invalid_input(format!("mqtt: {} is not PEM: {e}", key.display()))
                })?
                .ok_or_else(|| {
                    Error::invalid_input(format!(
                        "mqtt: {} holds no private key (PKCS#8, SEC1 or RSA PEM)",
                        key.display()
                    ))
                })?;
            builder.with_client_auth_cert(chain, key_der).map_err(|e| {
                Error::invalid_input(format!(
                    "mqtt: client certificate {} and key {} do not go together: {e}",
                    cert.display(),
                    key.display()
                ))
            })?
        }
    };
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unreadable_or_wrong_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.pem");
        let e = client_config(&missing, None).unwrap_err();
        assert!(
            e.message().contains("cannot read the CA file") && e.message().contains("nope.pem"),
            "{e}"
        );
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "hello").unwrap();
        let e = client_config(&junk, None).unwrap_err();
        assert!(e.message().contains("holds no certificate"), "{e}");
    }
}
