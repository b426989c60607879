//! Encryption at rest of kept originals: AES-256-GCM per access unit.
//!
//! Each segment gets its own key, derived with HKDF-SHA256 from the device's originals key and
//! a random 16-byte salt kept in the segment's index row; a frame's nonce is its number in the
//! segment. Nonces therefore never repeat under one key (frame numbers are unique within a
//! segment, and no two segments share a salt), without the 2^32-message limit random nonces
//! would put on a key that seals 30 frames a second for years.

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use hkdf::Hkdf;
use sha2::Sha256;

/// Bytes a sealed frame grows by (the GCM tag).
pub const TAG_BYTES: usize = 16;
pub const SALT_BYTES: usize = 16;

/// The device's originals key (32 bytes). It never leaves the device.
#[derive(Clone)]
pub struct SealKey([u8; 32]);

impl SealKey {
    pub fn from_bytes(bytes: [u8; 32]) -> SealKey {
        SealKey(bytes)
    }
}

impl std::fmt::Debug for SealKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SealKey(..)")
    }
}

/// A fresh random salt for a new segment.
pub fn new_salt() -> Result<[u8; SALT_BYTES], getrandom::Error> {
    let mut salt = [0u8; SALT_BYTES];
    getrandom::getrandom(&mut salt)?;
    Ok(salt)
}

/// One segment's cipher.
pub struct SegmentCipher(Aes256Gcm);

/// A frame failed authentication: damaged, altered, or sealed under another key.
#[derive(Debug)]
pub struct OpenError;

fn nonce(frame: u64) -> Nonce<aes_gcm::aead::consts::U12> {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&frame.to_be_bytes());
    n.into()
}

impl SegmentCipher {
    pub fn new(key: &SealKey, salt: &[u8]) -> SegmentCipher {
        let mut segment_key = [0u8; 32];
        Hkdf::<Sha256>::new(Some(salt), &key.0)
            .expand(b"veil footage segment v1", &mut segment_key)
            .expect("32 bytes is a valid HKDF-SHA256 output length");
        SegmentCipher(Aes256Gcm::new(&segment_key.into()))
    }

    pub fn seal(&self, frame: u64, plain: &[u8]) -> Vec<u8> {
        self.0
            .encrypt(&nonce(frame), plain)
            .expect("AES-GCM encrypts any frame under 64 GiB")
    }

    pub fn open(&self, frame: u64, sealed: &[u8]) -> Result<Vec<u8>, OpenError> {
        self.0.decrypt(&nonce(frame), sealed).map_err(|_| OpenError)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_open_only_with_their_key_number_and_salt() {
        let key = SealKey::from_bytes([7; 32]);
        let (salt_a, salt_b) = (new_salt().unwrap(), new_salt().unwrap());
        assert_ne!(salt_a, salt_b);
        let a = SegmentCipher::new(&key, &salt_a);
        let sealed = a.seal(3, b"frame three");
        assert_eq!(sealed.len(), 11 + TAG_BYTES);
        assert!(!sealed.windows(5).any(|w| w == b"frame"));
        assert_eq!(a.open(3, &sealed).unwrap(), b"frame three");
        // Another frame number, another segment, another device key, a flipped bit: refused.
        assert!(a.open(4, &sealed).is_err());
        assert!(SegmentCipher::new(&key, &salt_b).open(3, &sealed).is_err());
        let other = SegmentCipher::new(&SealKey::from_bytes([8; 32]), &salt_a);
        assert!(other.open(3, &sealed).is_err());
        let mut bent = sealed.clone();
        bent[0] ^= 1;
        assert!(a.open(3, &bent).is_err());
    }
}
