//! Text checkpoint files sealed with a last line `crc32c <hex>` over everything before it
//! (the high-watermark and log-start checkpoints): Kafka's checkpoint layouts carry no
//! checksum, and a flipped digit must not move an offset.

/// `body` followed by its checksum line.
pub fn seal(mut body: String) -> String {
    let checksum = crc32c::crc32c(body.as_bytes());
    body.push_str(&format!("crc32c {checksum:08x}\n"));
    body
}

/// The body of a sealed text, or why it cannot be trusted.
pub fn unseal(text: &str) -> Result<&str, String> {
    let body_end = text
        .trim_end_matches('\n')
        .rfind('\n')
        .ok_or("no checksum")?
        + 1;
    let (body, checksum) = text.split_at(body_end);
    let expected = format!("crc32c {:08x}", crc32c::crc32c(body.as_bytes()));
    if checksum.trim_end() != expected {
        return Err("checksum mismatch".into());
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_body_comes_back_and_any_change_is_caught() {
        let sealed = seal("0\n42\n".to_string());
        assert_eq!(unseal(&sealed), Ok("0\n42\n"));
        assert!(unseal(&sealed.replace("42", "43")).is_err());
        assert!(unseal("0\n42\n").is_err());
        assert!(unseal("").is_err());
    }
}
