// Clients retry money movements over flaky networks; an idempotency key lets
// a retry return the original result instead of moving the money twice, and
// the request fingerprint catches a key being reused for a different request.

use sha2::{Digest, Sha256};

use crate::error::LedgerError;

/// Longest idempotency key accepted, in characters.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 128;

/// A client-chosen key of 1..=128 printable ASCII characters, no whitespace.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    pub fn parse(input: &str) -> Result<IdempotencyKey, LedgerError> {
        // Printable ASCII is one byte per character, so byte length is char length.
        let valid = (1..=MAX_IDEMPOTENCY_KEY_LEN).contains(&input.len())
            && input.bytes().all(|b| b.is_ascii_graphic());
        if !valid {
            return Err(LedgerError::BadInput(
                "idempotencyKey must be 1 to 128 printable characters without spaces".into(),
            ));
        }
        Ok(IdempotencyKey(input.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Hex SHA-256 over the request's parts. Each part is prefixed with its byte
/// length so that different splits of the same text ("ab","c" vs "a","bc")
/// never collide.
pub fn request_fingerprint(parts: &[&str]) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part.as_bytes());
    }
    hex::encode(hasher.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MESSAGE: &str = "idempotencyKey must be 1 to 128 printable characters without spaces";

    // LedgerError has no PartialEq, so tests compare variant and message.
    fn bad_input<T: std::fmt::Debug>(result: Result<T, LedgerError>) -> String {
        match result {
            Err(LedgerError::BadInput(message)) => message,
            other => panic!("expected BadInput, got {other:?}"),
        }
    }

    #[test]
    fn accepts_printable_ascii_keys_up_to_128_characters() {
        for input in [
            "a",
            "550e8400-e29b-41d4-a716-446655440000",
            "order:42/retry#1~!@$%^&*()_+={}[]|\\;'\",.<>?`",
            &"k".repeat(128),
        ] {
            let key = IdempotencyKey::parse(input).unwrap();
            assert_eq!(key.as_str(), input);
        }
    }

    #[test]
    fn rejects_an_empty_key() {
        assert_eq!(bad_input(IdempotencyKey::parse("")), MESSAGE);
    }

    #[test]
    fn rejects_a_key_longer_than_128_characters() {
        assert_eq!(bad_input(IdempotencyKey::parse(&"k".repeat(129))), MESSAGE);
    }

    #[test]
    fn rejects_whitespace_control_and_non_ascii_characters() {
        for input in [
            " ", "a b", " key", "key ", "key\n", "a\tb", "a\u{0}b", "a\u{7f}", "clé", "🔑",
        ] {
            assert_eq!(
                bad_input(IdempotencyKey::parse(input)),
                MESSAGE,
                "{input:?}"
            );
        }
    }

    #[test]
    fn fingerprint_is_lowercase_hex_sha256() {
        let fingerprint = request_fingerprint(&["transfer", "12.30"]);
        assert_eq!(fingerprint.len(), 64);
        assert!(
            fingerprint
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        );
        // No parts means nothing hashed: SHA-256 of the empty input.
        assert_eq!(
            request_fingerprint(&[]),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn fingerprint_is_stable_for_the_same_parts() {
        assert_eq!(
            request_fingerprint(&["a", "b", "c"]),
            request_fingerprint(&["a", "b", "c"])
        );
    }

    #[test]
    fn fingerprint_differs_when_the_same_text_is_split_differently() {
        assert_ne!(
            request_fingerprint(&["ab", "c"]),
            request_fingerprint(&["a", "bc"])
        );
        assert_ne!(
            request_fingerprint(&["abc"]),
            request_fingerprint(&["ab", "c"])
        );
        assert_ne!(request_fingerprint(&["a"]), request_fingerprint(&["a", ""]));
        assert_ne!(request_fingerprint(&[""]), request_fingerprint(&[]));
    }

    #[test]
    fn fingerprint_differs_when_any_part_or_the_order_changes() {
        let base = request_fingerprint(&["acct-1", "acct-2", "10.00"]);
        assert_ne!(base, request_fingerprint(&["acct-1", "acct-2", "10.01"]));
        assert_ne!(base, request_fingerprint(&["acct-2", "acct-1", "10.00"]));
    }
}
