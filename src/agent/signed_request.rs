//! The checks every signed request to the agent passes before its content is read
//! (`POST /1/repair`, `PUT /1/maintd-state`): the body is a signed message, signed with
//! the cluster key, whose salt is a Unix time close to the agent's clock. What the message
//! must then hold is up to each request ([`super::repair::RequestError`],
//! [`super::replica::PushError`]).

use thiserror::Error;

use crate::signing::{self, HmacKey, SignatureError, SignedMessage};

/// Why a signed request failed the checks common to every signed request.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum SignedRequestError {
    /// The body is not a signed message.
    #[error("the body is not a signed message: {0}")]
    NotSigned(String),
    /// The signature is wrong.
    #[error("bad signature: {0}")]
    Signature(SignatureError),
    /// The time salt is not within the allowed skew.
    #[error("stale or future request: {0}")]
    Time(SignatureError),
}

impl SignedRequestError {
    /// 403 for anything about authenticity, 400 for a body that is no signed message.
    pub fn http_status(&self) -> u16 {
        match self {
            SignedRequestError::Signature(_) | SignedRequestError::Time(_) => 403,
            SignedRequestError::NotSigned(_) => 400,
        }
    }
}

/// The signed message of `body`, once it is known to come from a holder of `key` and to
/// be fresh: its salt a Unix time within `max_skew_secs` of `now_secs`. The signature is
/// checked before the salt is believed.
pub fn open_signed_request(
    key: &HmacKey,
    body: &[u8],
    now_secs: u64,
    max_skew_secs: u64,
) -> Result<SignedMessage, SignedRequestError> {
    let signed: SignedMessage =
        serde_json::from_slice(body).map_err(|e| SignedRequestError::NotSigned(e.to_string()))?;
    signing::verify(key, &signed).map_err(SignedRequestError::Signature)?;
    signing::check_time_salt(&signed.salt, now_secs, max_skew_secs)
        .map_err(SignedRequestError::Time)?;
    Ok(signed)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_700_000_000;

    fn key() -> HmacKey {
        HmacKey::from_bytes(b"k\n".to_vec()).unwrap()
    }

    fn open(key_used: &HmacKey, body: &[u8]) -> Result<SignedMessage, SignedRequestError> {
        open_signed_request(key_used, body, NOW, signing::MAX_CLOCK_SKEW_SECS)
    }

    #[test]
    fn only_fresh_messages_signed_with_the_key_open() {
        let body = |salt: &str| serde_json::to_vec(&signing::sign(&key(), salt, "{}")).unwrap();
        let opened = open(&key(), &body("1700000100")).unwrap();
        assert_eq!(
            (opened.salt.as_str(), opened.msg.as_str()),
            ("1700000100", "{}")
        );

        let other = HmacKey::from_bytes(b"other\n".to_vec()).unwrap();
        let error = open(&other, &body("1700000000")).unwrap_err();
        assert_eq!(
            error,
            SignedRequestError::Signature(SignatureError::Mismatch)
        );
        assert_eq!(error.http_status(), 403);
        for stale in ["1699999000", "1700001000", "now"] {
            let error = open(&key(), &body(stale)).unwrap_err();
            assert!(
                matches!(error, SignedRequestError::Time(_)),
                "{stale}: {error}"
            );
            assert_eq!(error.http_status(), 403);
        }
        for garbage in [&b""[..], b"{}", b"[1]", b"{\"msg\": 1}"] {
            let error = open(&key(), garbage).unwrap_err();
            assert!(matches!(error, SignedRequestError::NotSigned(_)), "{error}");
            assert_eq!(error.http_status(), 400);
        }
    }
}
