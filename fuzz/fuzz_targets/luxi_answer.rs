//! Luxi answers as luxid sends them: 0x03-framed messages split by `MessageReader`, each
//! decoded by `decode_response` (and a `CancelJob` result by `decode_cancel`).
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use maintd::{
    backend::{
        luxi::{decode_cancel, decode_response},
        BackendError,
    },
    protocol::luxi::{write_message, FrameError, MessageReader},
};
use tokio::runtime::{Builder, Runtime};

const END_OF_MESSAGE: u8 = 3;

fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| Builder::new_current_thread().build().unwrap())
}

fn check_answer(answer: &[u8]) {
    match decode_response(answer) {
        Ok(result) => {
            let _ = decode_cancel(&result);
        }
        Err(e) => {
            let _ = (e.to_string(), e.exception_name(), e.is_transient());
            let _ = BackendError::from(e);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&limit, stream)) = data.split_first() else {
        return;
    };
    // The first byte sets the reader's limit, so that small inputs reach the size checks.
    let max_bytes = usize::from(limit) * 16;
    check_answer(stream);
    runtime().block_on(async {
        let mut reader = MessageReader::new(max_bytes);
        let mut input = stream;
        let mut consumed = 0;
        loop {
            match reader.read_message(&mut input).await {
                Ok(message) => {
                    assert!(message.len() <= max_bytes);
                    let end = consumed + message.len();
                    assert_eq!(&stream[consumed..end], &message[..]);
                    assert_eq!(stream[end], END_OF_MESSAGE);
                    consumed = end + 1;
                    check_answer(&message);
                }
                Err(FrameError::Closed { received }) => {
                    assert_eq!(received, stream.len() - consumed);
                    break;
                }
                Err(FrameError::TooLarge { .. }) => break,
                Err(FrameError::Io(e)) => panic!("reading a slice failed: {e}"),
            }
        }

        // Framing round trip: what `write_message` sends, `MessageReader` gives back.
        let payload: Vec<u8> = stream
            .iter()
            .copied()
            .filter(|&b| b != END_OF_MESSAGE)
            .collect();
        let mut wire = Vec::new();
        write_message(&mut wire, &payload).await.unwrap();
        write_message(&mut wire, b"{}").await.unwrap();
        let mut reader = MessageReader::new(payload.len().max(2));
        let mut input = &wire[..];
        assert_eq!(reader.read_message(&mut input).await.unwrap(), payload);
        assert_eq!(reader.read_message(&mut input).await.unwrap(), b"{}");
        assert!(!reader.has_pending());
    });
});
