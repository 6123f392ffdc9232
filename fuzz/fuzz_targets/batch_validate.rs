//! Produce payloads are client bytes: batch validation must reject garbage with an
//! error, never panic, and whatever it accepts must re-parse to the same headers.
//! Each input is tried as it is and with the first batch's length and CRC-32C made
//! consistent, so the fuzzer gets past the checksum into the header checks.
#![no_main]

use gracchus::log::{BatchHeader, validate_batches};
use libfuzzer_sys::fuzz_target;

fn check(data: &[u8]) {
    if let Ok(headers) = validate_batches(data, 1 << 20) {
        let mut position = 0usize;
        for header in &headers {
            let reparsed = BatchHeader::parse(&data[position..]).expect("accepted batch re-parses");
            assert_eq!(&reparsed, header);
            position += header.total_bytes();
        }
        assert_eq!(
            position,
            data.len(),
            "accepted batches cover the whole payload"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    check(data);
    if data.len() >= 61 && data.len() < i32::MAX as usize {
        let mut fixed = data.to_vec();
        fixed[16] = 2;
        let length = (fixed.len() - 12) as i32;
        fixed[8..12].copy_from_slice(&length.to_be_bytes());
        let crc = crc32c::crc32c(&fixed[21..]);
        fixed[17..21].copy_from_slice(&crc.to_be_bytes());
        check(&fixed);
    }
});
