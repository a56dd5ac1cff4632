//! Confd-style HMAC signing of JSON messages with the cluster's `hmac.key`.
//!
//! Ganeti's confd wraps each message as `{"msg": <JSON text>, "salt": <text>, "hmac":
//! <hex>}`, where `hmac` is the lowercase hex HMAC-SHA1 of the key over the UTF-8 bytes of
//! `salt` followed by `msg`. The key is the raw content of `/var/lib/ganeti/hmac.key`,
//! **trailing newline included**: Ganeti never trims it, so neither may we, or no
//! signature would ever match Ganeti's.
//!
//! The salt is what makes a signature fresh: a request's salt is the sender's Unix time in
//! seconds (checked with [`check_time_salt`]), a reply's salt is a value the requester
//! chose (checked by comparing it with the one sent).

use std::{fmt, path::Path};

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha1::Sha1;
use sha2::Sha256;
use thiserror::Error;

type HmacSha1 = Hmac<Sha1>;
type HmacSha256 = Hmac<Sha256>;

/// Confd's maximum clock skew for time salts, in seconds (`confdMaxClockSkew = 2 * 150`).
pub const MAX_CLOCK_SKEW_SECS: u64 = 300;

/// Length of a hex HMAC-SHA1 digest.
const HEX_DIGEST_LEN: usize = 40;

/// Longest salt [`salt_is_valid`] accepts.
pub const MAX_SALT_LEN: usize = 64;

/// The cluster's HMAC key: the raw bytes of `hmac.key`.
#[derive(Clone, PartialEq, Eq)]
pub struct HmacKey(Vec<u8>);

/// Why a key could not be loaded.
#[derive(Debug, Error)]
pub enum KeyError {
    /// The file could not be read.
    #[error("cannot read the HMAC key {path}: {source}")]
    Unreadable {
        /// The key file.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The file (or the given bytes) is empty; an empty key would sign nothing worth
    /// trusting.
    #[error("the HMAC key {path} is empty")]
    Empty {
        /// The key file, or `<bytes>` for in-memory keys.
        path: String,
    },
}

impl HmacKey {
    /// The key in `path`: its raw bytes, trailing newline included.
    pub fn from_file(path: &Path) -> Result<Self, KeyError> {
        let bytes = std::fs::read(path).map_err(|source| KeyError::Unreadable {
            path: path.display().to_string(),
            source,
        })?;
        if bytes.is_empty() {
            return Err(KeyError::Empty {
                path: path.display().to_string(),
            });
        }
        Ok(HmacKey(bytes))
    }

    /// A key from bytes held in memory (used as given; not trimmed).
    pub fn from_bytes(bytes: impl Into<Vec<u8>>) -> Result<Self, KeyError> {
        let bytes = bytes.into();
        if bytes.is_empty() {
            return Err(KeyError::Empty {
                path: "<bytes>".into(),
            });
        }
        Ok(HmacKey(bytes))
    }

    fn mac(&self, salt: &str, msg: &str) -> HmacSha1 {
        // HMAC accepts keys of any length, so this cannot fail; fall back to the empty key
        // rather than panic should the library ever change its mind.
        let mut mac = HmacSha1::new_from_slice(&self.0)
            .unwrap_or_else(|_| <HmacSha1 as Mac>::new(&Default::default()));
        mac.update(salt.as_bytes());
        mac.update(msg.as_bytes());
        mac
    }
}

/// Lowercase hex HMAC-SHA256 of `key` over `parts`, one after the other: the signature of
/// the webhook notifications (see `notify`), which share this key type for its loading
/// rules and its log-safe `Debug`.
pub fn hmac_sha256_hex(key: &HmacKey, parts: &[&[u8]]) -> String {
    // As for HMAC-SHA1: any key length is valid, so the fallback is never taken.
    let mut mac = HmacSha256::new_from_slice(&key.0)
        .unwrap_or_else(|_| <HmacSha256 as Mac>::new(&Default::default()));
    for part in parts {
        mac.update(part);
    }
    hex::encode(mac.finalize().into_bytes())
}

impl fmt::Debug for HmacKey {
    /// Never shows the key itself, so that it cannot leak into logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HmacKey(<{} bytes>)", self.0.len())
    }
}

/// A signed message as on confd's wire: `{"msg", "salt", "hmac"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedMessage {
    /// The payload, usually JSON text.
    pub msg: String,
    /// The salt the signature covers before `msg`.
    pub salt: String,
    /// Lowercase hex HMAC-SHA1(key, salt ‖ msg).
    pub hmac: String,
}

/// Why a signed message was refused.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum SignatureError {
    /// `hmac` is not 40 lowercase hex digits.
    #[error("the signature is not 40 lowercase hex digits: {0:?}")]
    MalformedHmac(String),
    /// The signature does not match the message, salt and key.
    #[error("the signature does not match (wrong key, or the message was altered)")]
    Mismatch,
    /// The salt should be decimal Unix seconds and is not.
    #[error("the salt is not a Unix time in seconds: {0:?}")]
    SaltNotTime(String),
    /// The time salt is older than the allowed skew.
    #[error(
        "stale request: salt time {salt} is {age} s before now ({now}), more than {max_skew} s"
    )]
    Stale {
        /// The salt's time.
        salt: u64,
        /// Our time.
        now: u64,
        /// How far behind.
        age: u64,
        /// The limit.
        max_skew: u64,
    },
    /// The time salt is further in the future than the allowed skew.
    #[error("request from the future: salt time {salt} is {ahead} s after now ({now}), more than {max_skew} s")]
    Future {
        /// The salt's time.
        salt: u64,
        /// Our time.
        now: u64,
        /// How far ahead.
        ahead: u64,
        /// The limit.
        max_skew: u64,
    },
}

/// Sign `msg` with `salt`.
pub fn sign(key: &HmacKey, salt: &str, msg: &str) -> SignedMessage {
    let digest = key.mac(salt, msg).finalize().into_bytes();
    SignedMessage {
        msg: msg.to_owned(),
        salt: salt.to_owned(),
        hmac: hex::encode(digest),
    }
}

/// Check the signature of `message` (in constant time). Freshness of the salt is the
/// caller's business: see [`check_time_salt`].
pub fn verify(key: &HmacKey, message: &SignedMessage) -> Result<(), SignatureError> {
    let expected = from_hex(&message.hmac)
        .ok_or_else(|| SignatureError::MalformedHmac(message.hmac.clone()))?;
    key.mac(&message.salt, &message.msg)
        .verify_slice(&expected)
        .map_err(|_| SignatureError::Mismatch)
}

/// The time salt for `now_secs` (Unix seconds): its decimal form.
pub fn unix_salt(now_secs: u64) -> String {
    now_secs.to_string()
}

/// Check that a time salt (decimal Unix seconds) lies within `max_skew` seconds of `now`,
/// in either direction.
pub fn check_time_salt(salt: &str, now: u64, max_skew: u64) -> Result<(), SignatureError> {
    // Digits only: `u64::from_str` would also take a leading `+`.
    let time =
        if !salt.is_empty() && salt.len() <= 20 && salt.bytes().all(|b| b.is_ascii_digit()) {
            salt.parse::<u64>().ok()
        } else {
            None
        }
        .ok_or_else(|| SignatureError::SaltNotTime(salt.to_owned()))?;
    if time < now && now - time > max_skew {
        return Err(SignatureError::Stale {
            salt: time,
            now,
            age: now - time,
            max_skew,
        });
    }
    if time > now && time - now > max_skew {
        return Err(SignatureError::Future {
            salt: time,
            now,
            ahead: time - now,
            max_skew,
        });
    }
    Ok(())
}

/// Whether `salt` is acceptable as a caller-chosen salt: 1 to [`MAX_SALT_LEN`] characters
/// of `[A-Za-z0-9-]` (enough for a UUID or a decimal time, nothing that needs escaping).
pub fn salt_is_valid(salt: &str) -> bool {
    !salt.is_empty()
        && salt.len() <= MAX_SALT_LEN
        && salt.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// Decode exactly [`HEX_DIGEST_LEN`] lowercase hex digits (Ganeti only ever writes
/// lowercase, so anything else is not one of its signatures).
fn from_hex(text: &str) -> Option<Vec<u8>> {
    if text.len() != HEX_DIGEST_LEN || text.bytes().any(|b| b.is_ascii_uppercase()) {
        return None;
    }
    hex::decode(text).ok()
}

/// Where a process got the cluster key from.
#[derive(Debug)]
pub enum KeySource {
    /// Loaded from the file.
    Loaded(HmacKey),
    /// No key configured (empty path).
    NotConfigured,
    /// The default key file does not exist: this node is probably not (yet) in a cluster.
    DefaultMissing,
}

/// Load the cluster key from `path`. An empty path means no key. A missing file at the
/// documented default is tolerated (`required` false): the caller then runs without
/// signatures. Any other problem is an error, since a key that was asked for and
/// silently not used would turn signing off without anyone noticing.
pub fn load_key(path: &str, required: bool) -> Result<KeySource, KeyError> {
    if path.is_empty() {
        return Ok(KeySource::NotConfigured);
    }
    match HmacKey::from_file(std::path::Path::new(path)) {
        Ok(key) => Ok(KeySource::Loaded(key)),
        Err(KeyError::Unreadable { source, .. })
            if !required && source.kind() == std::io::ErrorKind::NotFound =>
        {
            Ok(KeySource::DefaultMissing)
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The key of the test vectors below, with its trailing newline (their digests are
    /// Ganeti's `Sha1Hmac` of `lib/utils/hash.py`).
    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef01234567\n";
    const REQUEST: &str =
        r#"{"protocol":1,"type":3,"query":null,"rsalt":"5e0b6f2a-1c1d-4d3e-9a70-3b3f0c2d9e11"}"#;
    const REPLY: &str = r#"{"protocol":1,"status":0,"answer":"node1.example.com","serial":42}"#;
    const RSALT: &str = "5e0b6f2a-1c1d-4d3e-9a70-3b3f0c2d9e11";

    fn key() -> HmacKey {
        HmacKey::from_bytes(KEY).unwrap()
    }

    #[test]
    fn confd_request_vector() {
        let signed = sign(&key(), "1700000000", REQUEST);
        assert_eq!(signed.hmac, "5a9c6d5aeecd629a545b9609552f80deae1202da");
        verify(&key(), &signed).unwrap();
        // The wire form is confd's object.
        let wire: SignedMessage = serde_json::from_str(
            r#"{"msg":"{\"protocol\":1,\"type\":3,\"query\":null,\"rsalt\":\"5e0b6f2a-1c1d-4d3e-9a70-3b3f0c2d9e11\"}","salt":"1700000000","hmac":"5a9c6d5aeecd629a545b9609552f80deae1202da"}"#,
        )
        .unwrap();
        assert_eq!(wire, signed);
    }

    #[test]
    fn confd_reply_vector() {
        let signed = sign(&key(), RSALT, REPLY);
        assert_eq!(signed.hmac, "f5be5edae86b544e1a49c267158347f66dc3b556");
        verify(&key(), &signed).unwrap();
    }

    #[test]
    fn key_file_keeps_the_trailing_newline() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hmac.key");
        std::fs::write(&path, KEY).unwrap();
        let from_file = HmacKey::from_file(&path).unwrap();
        assert_eq!(from_file, key());
        assert_eq!(
            sign(&from_file, "1700000000", REQUEST).hmac,
            "5a9c6d5aeecd629a545b9609552f80deae1202da"
        );
        // Trimming the newline gives a different key, and so a different signature.
        let trimmed = HmacKey::from_bytes(&KEY[..KEY.len() - 1]).unwrap();
        assert!(verify(&trimmed, &sign(&from_file, "1", "x")).is_err());
    }

    #[test]
    fn key_file_errors() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty");
        std::fs::write(&empty, b"").unwrap();
        assert!(matches!(
            HmacKey::from_file(&empty),
            Err(KeyError::Empty { .. })
        ));
        let missing = dir.path().join("missing");
        let err = HmacKey::from_file(&missing).unwrap_err();
        assert!(matches!(err, KeyError::Unreadable { .. }));
        assert!(err.to_string().contains("missing"), "{err}");
        assert!(HmacKey::from_bytes(Vec::new()).is_err());
    }

    #[test]
    fn hmac_sha256_matches_rfc_4231() {
        // RFC 4231, test case 2.
        let key = HmacKey::from_bytes(b"Jefe".to_vec()).unwrap();
        assert_eq!(
            hmac_sha256_hex(&key, &[b"what do ya want ", b"for nothing?"]),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn debug_does_not_show_the_key() {
        let shown = format!("{:?}", key());
        assert!(!shown.contains("0123456789abcdef"), "{shown}");
        assert!(shown.contains("41 bytes"), "{shown}");
    }

    #[test]
    fn tampering_is_detected() {
        let signed = sign(&key(), RSALT, REPLY);
        let mut msg = signed.clone();
        msg.msg = msg.msg.replace("node1", "node2");
        assert_eq!(verify(&key(), &msg), Err(SignatureError::Mismatch));
        let mut salt = signed.clone();
        salt.salt = "5e0b6f2a-1c1d-4d3e-9a70-3b3f0c2d9e12".into();
        assert_eq!(verify(&key(), &salt), Err(SignatureError::Mismatch));
        let mut hmac = signed.clone();
        hmac.hmac.replace_range(0..1, "0");
        assert_eq!(verify(&key(), &hmac), Err(SignatureError::Mismatch));
        let other = HmacKey::from_bytes(b"another key\n".to_vec()).unwrap();
        assert_eq!(verify(&other, &signed), Err(SignatureError::Mismatch));
    }

    #[test]
    fn malformed_signatures_are_refused() {
        let signed = sign(&key(), RSALT, REPLY);
        let upper = SignedMessage {
            hmac: signed.hmac.to_uppercase(),
            ..signed.clone()
        };
        assert!(matches!(
            verify(&key(), &upper),
            Err(SignatureError::MalformedHmac(_))
        ));
        let short = SignedMessage {
            hmac: signed.hmac[..38].to_owned(),
            ..signed.clone()
        };
        assert!(matches!(
            verify(&key(), &short),
            Err(SignatureError::MalformedHmac(_))
        ));
        let not_hex = SignedMessage {
            hmac: "g".repeat(40),
            ..signed
        };
        assert!(matches!(
            verify(&key(), &not_hex),
            Err(SignatureError::MalformedHmac(_))
        ));
    }

    #[test]
    fn time_salts() {
        assert_eq!(unix_salt(1_700_000_000), "1700000000");
        let now = 1_700_000_000;
        check_time_salt("1700000000", now, 300).unwrap();
        check_time_salt("1699999700", now, 300).unwrap();
        check_time_salt("1700000300", now, 300).unwrap();
        assert!(matches!(
            check_time_salt("1699999699", now, 300),
            Err(SignatureError::Stale { age: 301, .. })
        ));
        assert!(matches!(
            check_time_salt("1700000301", now, 300),
            Err(SignatureError::Future { ahead: 301, .. })
        ));
        for bad in [
            "",
            "+1700000000",
            "17e8",
            "abc",
            "-5",
            " 1700000000",
            "1".repeat(21).as_str(),
        ] {
            assert!(
                matches!(
                    check_time_salt(bad, now, 300),
                    Err(SignatureError::SaltNotTime(_))
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn caller_salts() {
        assert!(salt_is_valid(RSALT));
        assert!(salt_is_valid("1700000000"));
        assert!(salt_is_valid(&"a".repeat(64)));
        assert!(!salt_is_valid(""));
        assert!(!salt_is_valid(&"a".repeat(65)));
        for bad in ["a b", "a/b", "a\"b", "é", "a_b", "a.b"] {
            assert!(!salt_is_valid(bad), "{bad:?}");
        }
    }

    #[test]
    fn key_loading_policy() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("hmac.key").display().to_string();
        assert!(matches!(load_key("", true), Ok(KeySource::NotConfigured)));
        assert!(matches!(
            load_key(&missing, false),
            Ok(KeySource::DefaultMissing)
        ));
        assert!(load_key(&missing, true).is_err());
        std::fs::write(&missing, b"").unwrap();
        // An empty default key is a broken key, not a missing one.
        assert!(load_key(&missing, false).is_err());
        std::fs::write(&missing, b"k\n").unwrap();
        assert!(matches!(load_key(&missing, true), Ok(KeySource::Loaded(_))));
    }
}
