//! The confd-style signed message (`{"msg", "salt", "hmac"}`) of `maintd::signing`: its
//! wire form, the signature check (hex decoding) and the time-salt check.
#![no_main]

use libfuzzer_sys::fuzz_target;
use maintd::signing::{
    check_time_salt, salt_is_valid, sign, verify, HmacKey, SignatureError, SignedMessage,
    MAX_CLOCK_SKEW_SECS, MAX_SALT_LEN,
};

const NOW: u64 = 1_700_000_000;

fn key() -> HmacKey {
    HmacKey::from_bytes(&b"fuzz-cluster-hmac-key\n"[..]).unwrap()
}

fuzz_target!(|data: &[u8]| {
    let key = key();
    // The wire form, as a peer sends it.
    if let Ok(message) = serde_json::from_slice::<SignedMessage>(data) {
        let verdict = verify(&key, &message);
        let resigned = sign(&key, &message.salt, &message.msg);
        assert_eq!(verify(&key, &resigned), Ok(()));
        // A signature is accepted exactly when it is the one we would have made.
        assert_eq!(
            verdict.is_ok(),
            resigned.hmac == message.hmac,
            "{message:?}"
        );
        let text = serde_json::to_vec(&message).unwrap();
        assert_eq!(
            serde_json::from_slice::<SignedMessage>(&text).unwrap(),
            message
        );
        let _ = check_time_salt(&message.salt, NOW, MAX_CLOCK_SKEW_SECS);
        let _ = salt_is_valid(&message.salt);
    }

    // The text as a signature, a salt and a key.
    if let Ok(text) = std::str::from_utf8(data) {
        let forged = SignedMessage {
            msg: "{}".into(),
            salt: "1700000000".into(),
            hmac: text.to_owned(),
        };
        match verify(&key, &forged) {
            Ok(()) => assert_eq!(forged.hmac, sign(&key, &forged.salt, &forged.msg).hmac),
            Err(SignatureError::MalformedHmac(_)) => assert!(
                text.len() != 40
                    || !text
                        .bytes()
                        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            ),
            Err(_) => {}
        }
        if salt_is_valid(text) {
            assert!(!text.is_empty() && text.len() <= MAX_SALT_LEN);
        }
        // Salt checks against a clock and skew taken from the input's first 16 bytes.
        let (now, skew, salt) = if data.len() >= 16 {
            (
                u64::from_le_bytes(data[..8].try_into().unwrap()),
                u64::from_le_bytes(data[8..16].try_into().unwrap()),
                std::str::from_utf8(&data[16..]).unwrap_or(text),
            )
        } else {
            (NOW, MAX_CLOCK_SKEW_SECS, text)
        };
        if check_time_salt(salt, now, skew).is_ok() {
            let time: u64 = salt.parse().expect("an accepted time salt is a number");
            assert!(time.abs_diff(now) <= skew);
        }
        // A message signed with the text as key verifies under it and not under ours.
        if let Ok(other) = HmacKey::from_bytes(data) {
            let signed = sign(&other, salt, text);
            assert_eq!(verify(&other, &signed), Ok(()));
            // HMAC pads short keys with zero bytes: such keys are one and the same.
            let unpadded = &data[..data.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1)];
            if unpadded != b"fuzz-cluster-hmac-key\n" {
                assert_eq!(verify(&key, &signed), Err(SignatureError::Mismatch));
            }
        }
    }
});
