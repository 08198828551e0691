//! How an operator's credential is checked on the admin API: the `Authorization: Bearer …`
//! header, and a constant-time comparison (`subtle`), so that a secret cannot be found byte by
//! byte from response times.

use subtle::ConstantTimeEq as _;

/// The credential an `Authorization` header value carries (`None`: none, or not a bearer).
pub fn bearer(authorization: Option<&[u8]>) -> Option<&[u8]> {
    authorization.and_then(|v| v.strip_prefix(b"Bearer "))
}

/// Whether `a` and `b` are equal, in time that does not depend on where they differ.
pub fn same(a: &[u8], b: &[u8]) -> bool {
    bool::from(a.ct_eq(b))
}

#[cfg(test)]
mod tests {
    use super::{bearer, same};

    #[test]
    fn only_a_bearer_header_carries_a_credential() {
        assert_eq!(bearer(Some(b"Bearer s3cret")), Some(&b"s3cret"[..]));
        assert_eq!(bearer(Some(b"Basic s3cret")), None);
        assert_eq!(bearer(Some(b"s3cret")), None);
        assert_eq!(bearer(None), None);
        assert!(same(b"s3cret", b"s3cret"));
        assert!(!same(b"s3cret", b"s3cre"));
        assert!(!same(b"s3cret", b"s3creT"));
    }
}
