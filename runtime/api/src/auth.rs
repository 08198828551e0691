//! How a bearer credential is checked, on the admin API and between hosts alike: the
//! `Authorization: Bearer …` header, compared in constant time (`subtle`), so that a secret
//! cannot be found byte by byte from response times.

use subtle::ConstantTimeEq as _;

/// Whether an `Authorization` header value (`None`: none was sent) is `Bearer SECRET`.
pub fn bears(authorization: Option<&[u8]>, secret: &str) -> bool {
    authorization
        .and_then(|v| v.strip_prefix(b"Bearer "))
        .is_some_and(|presented| bool::from(presented.ct_eq(secret.as_bytes())))
}

#[cfg(test)]
mod tests {
    use super::bears;

    #[test]
    fn only_the_exact_secret_passes() {
        assert!(bears(Some(b"Bearer s3cret"), "s3cret"));
        assert!(!bears(Some(b"Bearer s3cre"), "s3cret"));
        assert!(!bears(Some(b"Bearer s3cretx"), "s3cret"));
        assert!(!bears(Some(b"Basic s3cret"), "s3cret"));
        assert!(!bears(Some(b"s3cret"), "s3cret"));
        assert!(!bears(None, "s3cret"));
    }
}
