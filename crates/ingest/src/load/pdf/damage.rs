//! Damage that no repair undoes: compressed page content whose bytes fail
//! their checksum.

use lopdf::{Document, Object, ObjectId};

/// Whether a page's compressed content fails its zlib checksum: its bytes
/// are not the ones written, so what inflates from them cannot be trusted.
/// (Wrong lengths and tables are bookkeeping, repaired in [`parse`](super::parse); this is
/// the data itself.)
pub(super) fn has_damaged_content(document: &Document, page_id: ObjectId) -> bool {
    document.get_page_contents(page_id).into_iter().any(|id| {
        let Ok(stream) = document.get_object(id).and_then(Object::as_stream) else {
            return false;
        };
        let only_flate = stream
            .filters()
            .is_ok_and(|filters| filters == [b"FlateDecode".as_slice()]);
        if !only_flate || stream.dict.has(b"DecodeParms") {
            return false;
        }
        let raw = stream.content.trim_ascii_end();
        let (Some(expected), Ok(inflated)) = (raw.last_chunk::<4>(), stream.decompressed_content()) else {
            return false;
        };
        adler32(&inflated) != u32::from_be_bytes(*expected)
    })
}

/// The Adler-32 checksum that ends every zlib stream (RFC 1950).
pub(super) fn adler32(data: &[u8]) -> u32 {
    const MOD: u32 = 65_521;
    let (mut a, mut b) = (1u32, 0u32);
    // 5552 bytes is the most that can be summed before `b` could overflow.
    for chunk in data.chunks(5552) {
        for &byte in chunk {
            a += u32::from(byte);
            b += a;
        }
        a %= MOD;
        b %= MOD;
    }
    (b << 16) | a
}
