//! The node protocol's frame decoder on arbitrary bytes (what any peer on the network can send):
//! nothing may panic or allocate beyond the frame limit, and whatever decodes re-encodes to the
//! same bytes (so a decoded frame means exactly one thing).
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use stratalog::replication::{Message, read_frame};

fuzz_target!(|data: &[u8]| {
    let frame = Bytes::copy_from_slice(data);
    if let Ok((correlation, message, used)) = Message::decode_frame(&frame) {
        let mut out = Vec::new();
        message
            .encode(correlation, &mut out)
            .expect("a decoded message encodes");
        assert_eq!(out[..], data[..used], "decode then encode changed the bytes");
    }
    // The stream reader over the same bytes: frames one after another until an error or the end.
    let mut r = data;
    for _ in 0..64 {
        match read_frame(&mut r) {
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => break,
        }
    }
});
