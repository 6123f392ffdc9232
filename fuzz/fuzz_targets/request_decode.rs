//! Any byte string handed to the request parser must yield a request or an error,
//! never a panic: this is what a hostile client can send after the length prefix.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = gracchus::api::decode_frame(bytes::Bytes::copy_from_slice(data));
});
