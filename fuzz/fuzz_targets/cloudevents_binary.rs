//! Binary-mode CloudEvents. Input layout: the first line is the content type (empty =
//! none), then `name:value` header lines up to an empty line, then the body.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tidegate_core::event::{parse_binary, parse_structured};

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    let mut lines = Vec::new();
    while let Some(nl) = rest.iter().position(|b| *b == b'\n') {
        let line = &rest[..nl];
        rest = &rest[nl + 1..];
        if line.is_empty() && !lines.is_empty() {
            break;
        }
        lines.push(line);
    }
    let Some((ct, headers)) = lines.split_first() else {
        return;
    };
    let content_type = std::str::from_utf8(ct).ok().filter(|s| !s.is_empty());
    let headers: Vec<(&str, &[u8])> = headers
        .iter()
        .filter_map(|l| {
            let colon = l.iter().position(|b| *b == b':')?;
            Some((std::str::from_utf8(&l[..colon]).ok()?, &l[colon + 1..]))
        })
        .collect();
    for prefix in ["ce-", "ce_"] {
        if let Ok(event) = parse_binary(prefix, headers.iter().copied(), content_type, rest) {
            parse_structured(&event.to_json()).expect("normalised event must parse again");
        }
    }
});
