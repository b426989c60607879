//! The HTTPS certificate of the local page: made self-signed at first boot (ECDSA P-256,
//! kept in `state/`), or one an admin installs. Its SHA-256 fingerprint is printed on the
//! console and shown in the status API so a technician can check what the browser warns about.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};
use veil_core::{Error, ErrorKind};

pub const CERT_FILE: &str = "https-cert.pem";
pub const KEY_FILE: &str = "https-key.pem";

/// A certificate chain and its key, checked to belong together.
pub struct Identity {
    pub cert_pem: String,
    pub key_pem: String,
    /// SHA-256 of the leaf certificate, `AA:BB:…`.
    pub fingerprint: String,
    pub config: Arc<rustls::ServerConfig>,
}

pub fn fingerprint(der: &[u8]) -> String {
    Sha256::digest(der)
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn invalid(what: impl Into<String>) -> Error {
    Error::new(ErrorKind::InvalidInput, what.into())
}

/// Parses and checks a PEM certificate chain and private key; the answer says what is
/// wrong in words (no chain, no key, a key of another certificate).
pub fn identity(cert_pem: &str, key_pem: &str) -> Result<Identity, Error> {
    let certs = rustls_pemfile::certs(&mut cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(format!("the certificate is not valid PEM: {e}")))?;
    let Some(leaf) = certs.first() else {
        return Err(invalid(
            "no certificate found: paste a PEM block starting with -----BEGIN CERTIFICATE-----",
        ));
    };
    let fp = fingerprint(leaf);
    let key = rustls_pemfile::private_key(&mut key_pem.as_bytes())
        .map_err(|e| invalid(format!("the private key is not valid PEM: {e}")))?
        .ok_or_else(|| {
            invalid(
                "no private key found: paste a PEM block starting with -----BEGIN PRIVATE KEY-----",
            )
        })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::internal(format!("TLS versions: {e}")))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| invalid(format!("the key does not fit the certificate: {e}")))?;
    let mut config = config;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Identity {
        cert_pem: cert_pem.into(),
        key_pem: key_pem.into(),
        fingerprint: fp,
        config: Arc::new(config),
    })
}

fn paths(state: &Path) -> (PathBuf, PathBuf) {
    (state.join(CERT_FILE), state.join(KEY_FILE))
}

/// The installed certificate, or a new self-signed one for `names` (host names and
/// addresses the page is reached by) when none is there yet.
pub fn load_or_create(
    state: &Path,
    common_name: &str,
    names: &[String],
) -> Result<Identity, Error> {
    let (cert_path, key_path) = paths(state);
    if cert_path.exists() || key_path.exists() {
        let read = |p: &Path| {
            std::fs::read_to_string(p).map_err(|e| {
                Error::wrap(
                    ErrorKind::Unavailable,
                    format!("cannot read {}", p.display()),
                    e,
                )
            })
        };
        return identity(&read(&cert_path)?, &read(&key_path)?).map_err(|e| {
            Error::new(
                ErrorKind::InvalidInput,
                format!(
                    "{} / {}: {e} (delete both files to make a new self-signed certificate)",
                    cert_path.display(),
                    key_path.display()
                ),
            )
        });
    }
    let mut params = rcgen::CertificateParams::new(names.to_vec())
        .map_err(|e| invalid(format!("certificate names: {e}")))?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, common_name);
    let now = std::time::SystemTime::now();
    params.not_before = (now - std::time::Duration::from_secs(86_400)).into();
    // Ten years: a device on a wall outlives any renewal someone would remember to do.
    params.not_after = (now + std::time::Duration::from_secs(10 * 365 * 86_400)).into();
    let key = rcgen::KeyPair::generate().map_err(|e| Error::internal(format!("key: {e}")))?;
    let cert = params
        .self_signed(&key)
        .map_err(|e| Error::internal(format!("self-signed certificate: {e}")))?;
    let identity = identity(&cert.pem(), &key.serialize_pem())?;
    install(state, &identity)?;
    Ok(identity)
}

/// Writes a checked identity as the device's certificate (key 0600, then certificate,
/// each replaced atomically).
pub fn install(state: &Path, identity: &Identity) -> Result<(), Error> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let (cert_path, key_path) = paths(state);
    for (path, body, mode) in [
        (&key_path, &identity.key_pem, 0o600),
        (&cert_path, &identity.cert_pem, 0o644),
    ] {
        let tmp = path.with_extension("tmp");
        let _ = std::fs::remove_file(&tmp);
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)
            .and_then(|mut f| {
                f.write_all(body.as_bytes())?;
                f.sync_all()
            })
            .and_then(|_| std::fs::rename(&tmp, path))
            .map_err(|e| {
                Error::wrap(
                    ErrorKind::Unavailable,
                    format!("cannot write {}", path.display()),
                    e,
                )
            })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_self_signed_certificate_is_made_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let names = vec!["veil.local".to_string(), "127.0.0.1".to_string()];
        let first = load_or_create(dir.path(), "Veil dev-1", &names).unwrap();
        assert_eq!(first.fingerprint.len(), 32 * 3 - 1);
        let again = load_or_create(dir.path(), "Veil dev-1", &names).unwrap();
        assert_eq!(first.fingerprint, again.fingerprint);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join(KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn mismatched_or_missing_parts_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let a =
            load_or_create(&dir.path().join("a").tap_mkdir(), "a", &["a.local".into()]).unwrap();
        let b =
            load_or_create(&dir.path().join("b").tap_mkdir(), "b", &["b.local".into()]).unwrap();
        let e = identity(&a.cert_pem, &b.key_pem).err().unwrap().to_string();
        assert!(e.contains("does not fit"), "{e}");
        let e = identity("hello", &a.key_pem).err().unwrap().to_string();
        assert!(e.contains("no certificate"), "{e}");
        let e = identity(&a.cert_pem, "").err().unwrap().to_string();
        assert!(e.contains("no private key"), "{e}");
        std::fs::write(dir.path().join("a").join(CERT_FILE), "junk").unwrap();
        let e = load_or_create(&dir.path().join("a"), "a", &[])
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("delete both files"), "{e}");
    }

    trait TapMkdir {
        fn tap_mkdir(self) -> Self;
    }
    impl TapMkdir for PathBuf {
        fn tap_mkdir(self) -> Self {
            std::fs::create_dir_all(&self).unwrap();
            self
        }
    }
}
