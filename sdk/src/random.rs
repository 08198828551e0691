//! Unpredictable values from the host's `wasi:random` (every WASI host has it): for codes a
//! caller must not be able to guess, such as a certificate's verification code.

/// `n` random bytes.
pub fn bytes(n: usize) -> Vec<u8> {
    wasi::random::random::get_random_bytes(n as u64)
}

/// Letters and digits that cannot be mistaken for one another on paper (no 0/O, 1/I).
const ALPHABET: &[u8; 32] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";

/// A code of `len` characters a person can read off paper and type in: 5 bits of randomness
/// each (10 characters: 50 bits).
pub fn code(len: usize) -> String {
    bytes(len)
        .into_iter()
        .map(|b| ALPHABET[(b & 31) as usize] as char)
        .collect()
}
