//! TFRecord framing, as TensorBoard reads event files: each record is its
//! length (u64, little-endian), the masked CRC-32C of those 8 bytes, the
//! data, and the masked CRC-32C of the data.

use anyhow::{bail, Result};

/// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78) of `bytes`.
pub fn crc32c(bytes: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut table = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut crc = i as u32;
            let mut bit = 0;
            while bit < 8 {
                crc = if crc & 1 != 0 {
                    (crc >> 1) ^ 0x82F6_3B78
                } else {
                    crc >> 1
                };
                bit += 1;
            }
            table[i] = crc;
            i += 1;
        }
        table
    };
    let mut crc = !0u32;
    for &b in bytes {
        crc = TABLE[((crc ^ u32::from(b)) & 0xFF) as usize] ^ (crc >> 8);
    }
    !crc
}

/// TensorFlow's masked CRC: rotated right by 15 bits, plus a constant.
pub fn masked_crc32c(bytes: &[u8]) -> u32 {
    crc32c(bytes).rotate_right(15).wrapping_add(0xA282_EAD8)
}

/// `data` framed as one record.
pub fn frame(data: &[u8]) -> Vec<u8> {
    let length = (data.len() as u64).to_le_bytes();
    let mut out = Vec::with_capacity(data.len() + 16);
    out.extend_from_slice(&length);
    out.extend_from_slice(&masked_crc32c(&length).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&masked_crc32c(data).to_le_bytes());
    out
}

/// The records of a whole file, each CRC checked.
pub fn records(bytes: &[u8]) -> Result<Vec<&[u8]>> {
    let mut out = vec![];
    let mut at = 0;
    while at < bytes.len() {
        let Some(header) = bytes.get(at..at + 12) else {
            bail!("the event file ends inside a record header at byte {at}");
        };
        let length_bytes = &header[..8];
        let length = u64::from_le_bytes(length_bytes.try_into().expect("8 bytes"));
        let stored = u32::from_le_bytes(header[8..12].try_into().expect("4 bytes"));
        if stored != masked_crc32c(length_bytes) {
            bail!("the length CRC of the record at byte {at} is wrong");
        }
        let start = at + 12;
        let end = usize::try_from(length)
            .ok()
            .and_then(|l| start.checked_add(l))
            .filter(|&e| e.checked_add(4).is_some_and(|e| e <= bytes.len()));
        let Some(end) = end else {
            bail!("the record at byte {at} claims {length} bytes, more than the file holds");
        };
        let data = &bytes[start..end];
        let stored = u32::from_le_bytes(bytes[end..end + 4].try_into().expect("4 bytes"));
        if stored != masked_crc32c(data) {
            bail!("the data CRC of the record at byte {at} is wrong");
        }
        out.push(data);
        at = end + 4;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_matches_the_standard_check_values() {
        // RFC 3720 B.4 and the usual check value.
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(&[0u8; 32]), 0x8A91_36AA);
        assert_eq!(crc32c(&[0xFFu8; 32]), 0x62A8_AB43);
    }

    #[test]
    fn framed_records_read_back_and_damage_is_found() -> Result<()> {
        let mut file = frame(b"first");
        file.extend(frame(b""));
        file.extend(frame(&[7u8; 300]));
        let back = records(&file)?;
        assert_eq!(back, vec![&b"first"[..], &b""[..], &[7u8; 300][..]]);
        let mut damaged = file.clone();
        damaged[14] ^= 1;
        assert!(records(&damaged).is_err());
        assert!(records(&file[..file.len() - 1]).is_err());
        Ok(())
    }
}
