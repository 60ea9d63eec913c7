//! Fixed little-endian layouts shared by corefn's binary messages: the
//! core ↔ worker dispatch and completion (`workers::protocol`) and the
//! metrics datagram (`scheduler::metrics`). Readers check the length of a
//! message once against its layout, then read fields at fixed offsets.
//!
//! Pure functions; a field outside the slice is a broken invariant (the
//! caller checked the length) and panics.

pub fn u16_at(bytes: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([bytes[at], bytes[at + 1]])
}

pub fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

pub fn u64_at(bytes: &[u8], at: usize) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(word)
}

pub fn put_u16(bytes: &mut [u8], at: usize, value: u16) {
    bytes[at..at + 2].copy_from_slice(&value.to_le_bytes());
}

pub fn put_u32(bytes: &mut [u8], at: usize, value: u32) {
    bytes[at..at + 4].copy_from_slice(&value.to_le_bytes());
}

pub fn put_u64(bytes: &mut [u8], at: usize, value: u64) {
    bytes[at..at + 8].copy_from_slice(&value.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_round_trip_at_their_offsets() {
        let mut bytes = [0u8; 16];
        put_u16(&mut bytes, 0, 0xbeef);
        put_u32(&mut bytes, 2, 0xdead_beef);
        put_u64(&mut bytes, 6, u64::MAX - 1);
        assert_eq!(u16_at(&bytes, 0), 0xbeef);
        assert_eq!(u32_at(&bytes, 2), 0xdead_beef);
        assert_eq!(u64_at(&bytes, 6), u64::MAX - 1);
        assert_eq!(bytes[14..], [0, 0]);
    }
}
