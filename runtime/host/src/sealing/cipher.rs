//! What a service's data key does: seal its keys (deterministically, so a key still finds its
//! record and pages of keys continue after the last one) and its values (with a random nonce,
//! bound to the key they are stored under), and how that data key is kept wrapped under the
//! cluster key.

use aes_siv::siv::Aes256Siv;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use zeroize::Zeroizing;

use super::root::{ClusterKey, derive};

/// The first byte of every sealed value: the format, so that a later one can be told apart.
const VALUE_FORMAT: u8 = 1;
const NONCE: usize = 24;

/// A sealed thing did not open: it was altered, or sealed under another key.
#[derive(Debug, thiserror::Error)]
#[error("does not authenticate (altered, or sealed under another key)")]
pub struct Unopenable;

/// One service's data key, with the keys derived from it for each use.
pub struct ServiceCipher {
    /// AES-SIV (RFC 5297) over the key, with the bucket as associated data.
    keys: Zeroizing<[u8; 64]>,
    values: XChaCha20Poly1305,
}

impl ServiceCipher {
    fn from_secret(secret: &[u8; 32]) -> ServiceCipher {
        let mut keys = Zeroizing::new([0u8; 64]);
        keys[..32].copy_from_slice(derive(secret, "service-keys-mac").as_ref());
        keys[32..].copy_from_slice(derive(secret, "service-keys-ctr").as_ref());
        ServiceCipher {
            keys,
            values: XChaCha20Poly1305::new(derive(secret, "service-values").as_ref().into()),
        }
    }

    fn siv(&self) -> Aes256Siv {
        Aes256Siv::new(self.keys.as_ref().into())
    }

    /// `key` of `bucket` as stored: the same every time, so lookups and cursors work; listing
    /// order is the order of the sealed keys.
    pub fn seal_key(&self, bucket: &str, key: &[u8]) -> Vec<u8> {
        self.siv()
            .encrypt([bucket.as_bytes()], key)
            .expect("AES-SIV seals any length")
    }

    /// A stored key of `bucket` back as the service wrote it.
    pub fn open_key(&self, bucket: &str, sealed: &[u8]) -> Result<Vec<u8>, Unopenable> {
        self.siv()
            .decrypt([bucket.as_bytes()], sealed)
            .map_err(|_| Unopenable)
    }

    /// `value` as stored under the sealed key `at` of `bucket`: moved to another key, it no
    /// longer opens.
    pub fn seal_value(&self, bucket: &str, at: &[u8], value: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE];
        getrandom::fill(&mut nonce).expect("the system's random source works");
        let mut out = Vec::with_capacity(1 + NONCE + value.len() + 16);
        out.push(VALUE_FORMAT);
        out.extend_from_slice(&nonce);
        let aad = place(bucket, at);
        out.extend(
            self.values
                .encrypt(
                    XNonce::from_slice(&nonce),
                    Payload {
                        msg: value,
                        aad: &aad,
                    },
                )
                .expect("XChaCha20-Poly1305 seals any length a value may have"),
        );
        out
    }

    /// A stored value back as the service wrote it.
    pub fn open_value(
        &self,
        bucket: &str,
        at: &[u8],
        sealed: &[u8],
    ) -> Result<Vec<u8>, Unopenable> {
        let (&format, rest) = sealed.split_first().ok_or(Unopenable)?;
        if format != VALUE_FORMAT || rest.len() < NONCE {
            return Err(Unopenable);
        }
        let (nonce, body) = rest.split_at(NONCE);
        let aad = place(bucket, at);
        self.values
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: body,
                    aad: &aad,
                },
            )
            .map_err(|_| Unopenable)
    }
}

/// Associated data naming where a value is stored.
fn place(bucket: &str, at: &[u8]) -> Vec<u8> {
    let mut aad = Vec::with_capacity(2 + bucket.len() + at.len());
    aad.extend_from_slice(&(bucket.len() as u16).to_be_bytes());
    aad.extend_from_slice(bucket.as_bytes());
    aad.extend_from_slice(at);
    aad
}

/// A new data key for `service`: the cipher, and the key wrapped under `root` as the keyring
/// stores it.
pub fn new_service_key(root: &ClusterKey, service: &str) -> (ServiceCipher, Vec<u8>) {
    let mut secret = Zeroizing::new([0u8; 32]);
    getrandom::fill(secret.as_mut()).expect("the system's random source works");
    let wrapped = wrap(root, service.as_bytes(), secret.as_ref());
    (ServiceCipher::from_secret(&secret), wrapped)
}

/// The cipher of a data key the keyring holds for `service`, unwrapped with `root`.
pub fn unwrap_service_key(
    root: &ClusterKey,
    service: &str,
    wrapped: &[u8],
) -> Result<ServiceCipher, Unopenable> {
    let secret = unwrap(root, service.as_bytes(), wrapped)?;
    let secret: &[u8; 32] = secret.as_slice().try_into().map_err(|_| Unopenable)?;
    Ok(ServiceCipher::from_secret(secret))
}

/// Another cluster's key (a twin's primary), wrapped under this cluster's for table `keyroots`.
pub fn wrap_foreign_root(root: &ClusterKey, name: &str, foreign: &ClusterKey) -> Vec<u8> {
    wrap(root, format!("keyroot:{name}").as_bytes(), foreign.expose())
}

/// A `keyroots` entry opened.
pub fn unwrap_foreign_root(
    root: &ClusterKey,
    name: &str,
    wrapped: &[u8],
) -> Result<ClusterKey, Unopenable> {
    let secret = unwrap(root, format!("keyroot:{name}").as_bytes(), wrapped)?;
    ClusterKey::from_bytes(&secret).ok_or(Unopenable)
}

/// A secret of the cluster's own (a twin's identity), sealed under the cluster key and bound to
/// `what` it is.
pub fn seal_cluster_secret(root: &ClusterKey, what: &str, secret: &[u8]) -> Vec<u8> {
    wrap(root, format!("secret:{what}").as_bytes(), secret)
}

/// What [`seal_cluster_secret`] made.
pub fn open_cluster_secret(
    root: &ClusterKey,
    what: &str,
    sealed: &[u8],
) -> Result<Zeroizing<Vec<u8>>, Unopenable> {
    unwrap(root, format!("secret:{what}").as_bytes(), sealed)
}

/// `secret` wrapped under a key derived from `root`, bound to `aad`.
fn wrap(root: &ClusterKey, aad: &[u8], secret: &[u8]) -> Vec<u8> {
    let wrapper = XChaCha20Poly1305::new(root.derive("keyring").as_ref().into());
    let mut nonce = [0u8; NONCE];
    getrandom::fill(&mut nonce).expect("the system's random source works");
    let mut wrapped = nonce.to_vec();
    wrapped.extend(
        wrapper
            .encrypt(XNonce::from_slice(&nonce), Payload { msg: secret, aad })
            .expect("wrapping 32 bytes cannot fail"),
    );
    wrapped
}

fn unwrap(root: &ClusterKey, aad: &[u8], wrapped: &[u8]) -> Result<Zeroizing<Vec<u8>>, Unopenable> {
    if wrapped.len() < NONCE {
        return Err(Unopenable);
    }
    let wrapper = XChaCha20Poly1305::new(root.derive("keyring").as_ref().into());
    let (nonce, body) = wrapped.split_at(NONCE);
    wrapper
        .decrypt(XNonce::from_slice(nonce), Payload { msg: body, aad })
        .map(Zeroizing::new)
        .map_err(|_| Unopenable)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> ClusterKey {
        ClusterKey::generate()
    }

    #[test]
    fn keys_seal_the_same_each_time_and_open_back() {
        let (cipher, _) = new_service_key(&root(), "registry");
        let a = cipher.seal_key("people", b"anna@example.de");
        assert_eq!(a, cipher.seal_key("people", b"anna@example.de"));
        assert_ne!(a, cipher.seal_key("other", b"anna@example.de"));
        assert!(!a.windows(4).any(|w| w == b"anna"));
        assert_eq!(cipher.open_key("people", &a).unwrap(), b"anna@example.de");
        assert!(cipher.open_key("other", &a).is_err());
    }

    #[test]
    fn a_value_opens_only_where_it_was_stored_and_unaltered() {
        let (cipher, _) = new_service_key(&root(), "registry");
        let at = cipher.seal_key("people", b"anna");
        let sealed = cipher.seal_value("people", &at, b"born 1990");
        assert_ne!(sealed, cipher.seal_value("people", &at, b"born 1990"));
        assert_eq!(
            cipher.open_value("people", &at, &sealed).unwrap(),
            b"born 1990"
        );
        let elsewhere = cipher.seal_key("people", b"bert");
        assert!(cipher.open_value("people", &elsewhere, &sealed).is_err());
        let mut flipped = sealed.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert!(cipher.open_value("people", &at, &flipped).is_err());
    }

    #[test]
    fn a_wrapped_key_opens_with_its_root_and_its_service_only() {
        let root = root();
        let (cipher, wrapped) = new_service_key(&root, "registry");
        let again = unwrap_service_key(&root, "registry", &wrapped).unwrap();
        assert_eq!(cipher.seal_key("b", b"k"), again.seal_key("b", b"k"));
        assert!(unwrap_service_key(&root, "permits", &wrapped).is_err());
        let other = ClusterKey::generate();
        assert!(unwrap_service_key(&other, "registry", &wrapped).is_err());
    }
}
