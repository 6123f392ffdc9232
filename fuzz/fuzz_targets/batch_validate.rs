//! Produce payloads are client bytes: batch validation must reject garbage with an
//! error, never panic, and whatever it accepts must re-parse to the same headers.
#![no_main]

use kafkaesque::log::{BatchHeader, validate_batches};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(headers) = validate_batches(data, 1 << 20) {
        let mut position = 0usize;
        for header in &headers {
            let reparsed = BatchHeader::parse(&data[position..]).expect("accepted batch re-parses");
            assert_eq!(&reparsed, header);
            position += header.total_bytes();
        }
        assert_eq!(position, data.len(), "accepted batches cover the whole payload");
    }
});
