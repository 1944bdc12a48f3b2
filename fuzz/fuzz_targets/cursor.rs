//! Cursors / `Last-Event-ID`: never panics; an accepted cursor encodes to a string
//! that parses back to the same cursor.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tidegate_core::Cursor;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(c) = Cursor::parse(text) {
        let again = Cursor::parse(&c.encode()).expect("an encoded cursor must parse");
        assert_eq!(again, c);
    }
});
