//! The two keys of a backup: the operator's age identity, whose public recipient the cluster
//! encrypts to and whose private half (kept off the cluster) restores; and the cluster's Ed25519
//! signing key, which signs every manifest so that objects planted by someone without the
//! cluster are told apart.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;
use std::str::FromStr as _;

use age::secrecy::ExposeSecret as _;
use ring::rand::SystemRandom;
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair as _, UnparsedPublicKey};

use crate::BackupError;

/// An age X25519 recipient (`age1…`): what backups are encrypted to.
#[derive(Clone)]
pub struct Recipient(age::x25519::Recipient);

impl Recipient {
    /// Parses `age1…`.
    pub fn parse(text: &str) -> Result<Recipient, BackupError> {
        age::x25519::Recipient::from_str(text.trim())
            .map(Recipient)
            .map_err(|e| {
                BackupError::BadKey(format!(
                    "{:?} is not an age recipient (age1…): {e}",
                    text.trim()
                ))
            })
    }

    /// `data` encrypted so that only the matching identity reads it.
    pub fn seal(&self, data: &[u8]) -> Result<Vec<u8>, BackupError> {
        age::encrypt(&self.0, data).map_err(|e| BackupError::Crypto(format!("encrypting: {e}")))
    }
}

impl std::fmt::Display for Recipient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// An age X25519 identity (`AGE-SECRET-KEY-1…`): what restores. Never shown, never logged.
pub struct Identity(age::x25519::Identity);

impl Identity {
    /// A new identity.
    pub fn generate() -> Identity {
        Identity(age::x25519::Identity::generate())
    }

    /// Reads an identity file as `age-keygen` and `doppel backup keygen` write it: comment lines
    /// (`#`) and one `AGE-SECRET-KEY-1…` line.
    pub fn read(path: &Path) -> Result<Identity, BackupError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            BackupError::BadKey(format!("cannot read the identity {}: {e}", path.display()))
        })?;
        Identity::parse(&text, &path.display().to_string())
    }

    /// Reads an identity from the text of such a file; `whence` names it in errors.
    pub fn parse(text: &str, whence: &str) -> Result<Identity, BackupError> {
        let line = text
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty() && !l.starts_with('#'))
            .ok_or_else(|| BackupError::BadKey(format!("{whence} holds no age identity")))?;
        // The parse error could quote the line; it is a secret, so say only where.
        age::x25519::Identity::from_str(line)
            .map(Identity)
            .map_err(|_| {
                BackupError::BadKey(format!(
                    "{whence} does not hold an age X25519 identity (AGE-SECRET-KEY-1…)"
                ))
            })
    }

    /// The secret as text (`AGE-SECRET-KEY-1…`), for keeping it where it belongs: a twin
    /// cluster's own store.
    pub fn secret_text(&self) -> String {
        self.0.to_string().expose_secret().to_string()
    }

    /// Its public recipient.
    pub fn recipient(&self) -> Recipient {
        Recipient(self.0.to_public())
    }

    /// Writes it to a new file `path`, readable by its owner only, as `age-keygen` does.
    pub fn write_new(&self, path: &Path) -> Result<(), BackupError> {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| BackupError::BadKey(format!("cannot create {}: {e}", path.display())))?;
        let text = format!(
            "# created: {}\n# public key: {}\n{}\n",
            crate::rfc3339(crate::now_ms()),
            self.recipient(),
            self.0.to_string().expose_secret()
        );
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        Ok(())
    }

    /// `data` decrypted; `what` names it in the error.
    pub fn open(&self, data: &[u8], what: &str) -> Result<Vec<u8>, BackupError> {
        age::decrypt(&self.0, data).map_err(|e| {
            BackupError::Crypto(format!(
                "cannot decrypt {what} with this identity ({e}); was the backup made for another \
                 recipient?"
            ))
        })
    }
}

/// The cluster's manifest-signing key (Ed25519, PKCS#8 bytes as the store keeps them).
pub struct Signer(Ed25519KeyPair);

impl Signer {
    /// A new key, as PKCS#8 bytes to store.
    pub fn generate() -> Result<Vec<u8>, BackupError> {
        Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
            .map(|doc| doc.as_ref().to_vec())
            .map_err(|_| BackupError::Crypto("cannot generate a signing key".into()))
    }

    /// The key stored as `pkcs8`.
    pub fn from_pkcs8(pkcs8: &[u8]) -> Result<Signer, BackupError> {
        Ed25519KeyPair::from_pkcs8(pkcs8)
            .map(Signer)
            .map_err(|_| BackupError::BadKey("the stored backup signing key is not valid".into()))
    }

    /// Its public key, hex.
    pub fn public_hex(&self) -> String {
        hex::encode(self.0.public_key().as_ref())
    }

    /// The signature of `message`, hex.
    pub fn sign(&self, message: &[u8]) -> String {
        hex::encode(self.0.sign(message).as_ref())
    }
}

/// Whether `signature` (hex) is `public`'s (hex) over `message`.
pub fn verify(public: &str, message: &[u8], signature: &str) -> bool {
    let (Ok(public), Ok(signature)) = (hex::decode(public), hex::decode(signature)) else {
        return false;
    };
    UnparsedPublicKey::new(&ED25519, public)
        .verify(message, &signature)
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_sealed_to_a_recipient_opens_with_its_identity_only() {
        let ours = Identity::generate();
        let theirs = Identity::generate();
        let sealed = ours.recipient().seal(b"citizen record").unwrap();
        assert_eq!(ours.open(&sealed, "x").unwrap(), b"citizen record");
        assert!(theirs.open(&sealed, "x").is_err());
    }

    #[test]
    fn an_identity_file_reads_back_and_is_owner_only() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key.txt");
        let id = Identity::generate();
        id.write_new(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let back = Identity::read(&path).unwrap();
        assert_eq!(back.recipient().to_string(), id.recipient().to_string());
        assert!(
            id.write_new(&path).is_err(),
            "an existing key is never overwritten"
        );
    }

    #[test]
    fn a_signature_holds_for_its_message_only() {
        let signer = Signer::from_pkcs8(&Signer::generate().unwrap()).unwrap();
        let sig = signer.sign(b"manifest");
        assert!(verify(&signer.public_hex(), b"manifest", &sig));
        assert!(!verify(&signer.public_hex(), b"manifesT", &sig));
    }
}
