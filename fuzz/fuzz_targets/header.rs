//! The envelope header, binary (72 bytes, the AES-GCM associated data) and JSON: parsing never
//! panics, and whatever parses round-trips to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shared::envelope::Header;

fuzz_target!(|data: &[u8]| {
    if let Ok(header) = Header::from_bytes(data) {
        assert_eq!(header.to_bytes().as_slice(), data);
        let _ = header.validate();
    }
    if let Ok(header) = serde_json::from_slice::<Header>(data) {
        let json = serde_json::to_vec(&header).unwrap();
        assert_eq!(serde_json::from_slice::<Header>(&json).unwrap(), header);
    }
});
