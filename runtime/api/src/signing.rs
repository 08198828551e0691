//! Signed modules on the wire: the cluster's trust policy (`/v1/trust`) and the release version
//! a signed component may carry.
//!
//! | method and path | body | answer |
//! |---|---|---|
//! | `GET /v1/trust` | | [`TrustPolicy`] |
//! | `POST /v1/trust/signers` | [`AddSigner`] | [`SignerInfo`] |
//! | `DELETE /v1/trust/signers/{name}` | | [`SignerInfo`] of the removed key |
//! | `PUT /v1/trust/required` | [`RequireSignatures`] | [`TrustPolicy`] |

use std::cmp::Ordering;
use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The custom section in which `doppel sign --release` records a component's release version
/// (its payload is the version as text). The signature covers it like every other section.
pub const RELEASE_SECTION: &str = "doppel-release";

/// How a signing key is shown: `ed25519:` and the first 16 hex digits of the SHA-256 of the raw
/// 32-byte public key.
pub fn fingerprint(raw_public_key: &[u8]) -> String {
    let hash = Sha256::digest(raw_public_key);
    let hex: String = hash[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("ed25519:{hex}")
}

/// A key the cluster trusts to sign components.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignerInfo {
    /// The name it was added under (what deploys and `doppel ls` say signed a component).
    pub name: String,
    /// `ed25519:` and the first 16 hex digits of the SHA-256 of the public key.
    pub fingerprint: String,
    /// When it was added, in milliseconds since the Unix epoch.
    pub added_ms: u64,
    /// The credential that added it.
    pub added_by: String,
}

/// Everything the cluster trusts, and whether every deploy must be signed.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TrustPolicy {
    /// Whether every component deployed to this cluster must be signed by a trusted key.
    pub signatures_required: bool,
    /// The keys trusted to sign.
    pub signers: Vec<SignerInfo>,
}

/// Body of `POST /v1/trust/signers`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddSigner {
    /// A name for the key: 1–63 of `a-z A-Z 0-9 . _ -`.
    pub name: String,
    /// The Ed25519 public key, PEM (what `doppel keygen` writes to `NAME.pub`), DER or raw.
    pub public_key: String,
}

/// Body of `PUT /v1/trust/required`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequireSignatures {
    /// Whether every deploy must be signed by a trusted key from now on.
    pub required: bool,
}

/// A release version: one to four dot-separated numbers (`2`, `1.4`, `1.4.2`), compared number
/// by number, a missing number counting as zero (`1.4` = `1.4.0`).
#[derive(Clone, Debug, Eq)]
pub struct Release(Vec<u64>);

impl Release {
    /// Reads a release version; why not, in words.
    pub fn parse(text: &str) -> Result<Release, String> {
        let parts: Result<Vec<u64>, _> = text.split('.').map(str::parse::<u64>).collect();
        match parts {
            Ok(parts)
                if (1..=4).contains(&parts.len())
                    && text
                        .split('.')
                        .all(|p| p.bytes().all(|b| b.is_ascii_digit())) =>
            {
                Ok(Release(parts))
            }
            _ => Err(format!(
                "{text:?} is not a release version: use one to four dot-separated numbers, e.g. 1.4.2"
            )),
        }
    }

    fn part(&self, n: usize) -> u64 {
        self.0.get(n).copied().unwrap_or(0)
    }
}

impl Ord for Release {
    fn cmp(&self, other: &Self) -> Ordering {
        (0..4)
            .map(|n| self.part(n).cmp(&other.part(n)))
            .find(|o| o.is_ne())
            .unwrap_or(Ordering::Equal)
    }
}

impl PartialOrd for Release {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Release {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other).is_eq()
    }
}

impl fmt::Display for Release {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text: Vec<String> = self.0.iter().map(u64::to_string).collect();
        f.write_str(&text.join("."))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn releases_compare_number_by_number() {
        let r = |t: &str| Release::parse(t).unwrap();
        assert!(r("1.10.0") > r("1.9.9"));
        assert!(r("2") > r("1.99"));
        assert_eq!(r("1.4"), r("1.4.0"));
        assert!(r("1.4.0.1") > r("1.4"));
        assert_eq!(r("01.2").to_string(), "1.2");
        for bad in [
            "",
            "1.",
            ".1",
            "1..2",
            "v1",
            "1.2.3.4.5",
            "-1",
            "+1",
            "1.2-rc1",
            " 1",
        ] {
            assert!(Release::parse(bad).is_err(), "{bad:?} must be refused");
        }
    }
}
