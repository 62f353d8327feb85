//! Recovery of files whose cross-reference table or stream lengths are
//! missing or wrong: the objects are found by scanning the bytes, and the
//! file is rewritten around them with a fresh table, as PDF viewers do.

use std::collections::BTreeMap;

/// The file rewritten from the `N G obj` objects found in it, with each
/// stream's /Length set to its real length and a fresh cross-reference table
/// and trailer, or `None` when there is nothing to build one from (no
/// objects, no catalog). This is the recovery viewers do for files with a
/// missing or wrong table or lengths.
pub(super) fn with_rebuilt_xref(bytes: &[u8]) -> Option<Vec<u8>> {
    let objects = scan_objects(bytes);
    let max = objects.iter().map(|o| o.number).max()?;
    // Object numbers far beyond the objects found are junk, not a table to build.
    if usize::try_from(max).ok()? > objects.len() * 16 + 1024 {
        return None;
    }
    let trailer = rfind(bytes, b"trailer").map(|at| &bytes[at..]);
    let reference = |key: &[u8]| trailer.and_then(|t| reference_after(t, key));
    let root = reference(b"/Root").or_else(|| {
        objects.iter().find_map(|object| {
            let body = &bytes[object.start..object.end];
            let dictionary = &body[..object.stream.map_or(body.len(), |(keyword, _, _)| keyword)];
            find(dictionary, b"/Catalog").map(|_| (object.number, object.generation))
        })
    })?;

    let mut out = b"%PDF-1.7\n".to_vec();
    let mut offsets: BTreeMap<u32, (usize, u16)> = BTreeMap::new();
    for object in &objects {
        offsets.insert(object.number, (out.len(), object.generation));
        let body = &bytes[object.start..object.end];
        match object.stream {
            Some((keyword, data_start, data_end)) => {
                out.extend_from_slice(&with_length(&body[..keyword], data_end - data_start));
                out.extend_from_slice(b"stream\n");
                out.extend_from_slice(&body[data_start..data_end]);
                out.extend_from_slice(b"\nendstream\nendobj");
            }
            None => out.extend_from_slice(body),
        }
        out.push(b'\n');
    }
    let xref_at = out.len();
    out.extend_from_slice(format!("xref\n0 {}\n", max + 1).as_bytes());
    for number in 0..=max {
        let entry = match offsets.get(&number) {
            Some((offset, generation)) => format!("{offset:010} {generation:05} n\r\n"),
            None if number == 0 => "0000000000 65535 f\r\n".to_string(),
            None => "0000000000 00000 f\r\n".to_string(),
        };
        out.extend_from_slice(entry.as_bytes());
    }
    let mut trailer = format!("trailer\n<< /Size {} /Root {} {} R", max + 1, root.0, root.1);
    for key in ["Info", "Encrypt"] {
        if let Some((number, generation)) = reference(format!("/{key}").as_bytes()) {
            trailer.push_str(&format!(" /{key} {number} {generation} R"));
        }
    }
    trailer.push_str(&format!(" >>\nstartxref\n{xref_at}\n%%EOF\n"));
    out.extend_from_slice(trailer.as_bytes());
    Some(out)
}

/// One `N G obj … endobj` found by scanning a file.
struct ScannedObject {
    number: u32,
    generation: u16,
    /// Byte range of the object, header to `endobj` included.
    start: usize,
    end: usize,
    /// For a stream, relative to `start`: where the `stream` keyword starts
    /// and where its data starts and ends.
    stream: Option<(usize, usize, usize)>,
}

/// Every object of a file in order, found by its header rather than through
/// the cross-reference table. A stream's data is skipped over, so headers
/// inside binary data are not mistaken for objects.
fn scan_objects(bytes: &[u8]) -> Vec<ScannedObject> {
    let mut objects = Vec::new();
    let mut from = 0;
    while let Some(found) = find(&bytes[from..], b"obj") {
        let at = from + found;
        from = at + 3;
        let delimited = bytes
            .get(at + 3)
            .is_none_or(|b| b.is_ascii_whitespace() || b"<[(/%".contains(b));
        let Some((number, generation, start)) = object_header_before(bytes, at).filter(|_| delimited) else {
            continue;
        };
        let body = &bytes[at + 3..];
        let endobj = find(body, b"endobj");
        let stream_keyword = find(body, b"stream").filter(|&k| endobj.is_none_or(|e| k < e));
        let (end, stream) = match stream_keyword {
            Some(keyword) => {
                let mut data_start = keyword + b"stream".len();
                if body[data_start..].starts_with(b"\r\n") {
                    data_start += 2;
                } else if body[data_start..].starts_with(b"\n") || body[data_start..].starts_with(b"\r") {
                    data_start += 1;
                }
                let Some(endstream) = find(&body[data_start..], b"endstream").map(|e| data_start + e) else {
                    break;
                };
                let data = &body[data_start..endstream];
                let data_end = data_start
                    + data
                        .strip_suffix(b"\r\n")
                        .or_else(|| data.strip_suffix(b"\n"))
                        .or_else(|| data.strip_suffix(b"\r"))
                        .unwrap_or(data)
                        .len();
                let after = endstream + b"endstream".len();
                let end = find(&body[after..], b"endobj").map_or(after, |e| after + e + b"endobj".len());
                let offset = at + 3 - start;
                (end, Some((keyword + offset, data_start + offset, data_end + offset)))
            }
            None => (endobj.map_or(body.len(), |e| e + b"endobj".len()), None),
        };
        from = at + 3 + end;
        objects.push(ScannedObject {
            number,
            generation,
            start,
            end: at + 3 + end,
            stream,
        });
    }
    objects
}

/// A stream dictionary's text with its /Length set to `length`.
fn with_length(dictionary: &[u8], length: usize) -> Vec<u8> {
    let key = (0..dictionary.len()).find(|&i| {
        dictionary[i..].starts_with(b"/Length") && dictionary.get(i + 7).is_none_or(|b| !b.is_ascii_alphanumeric())
    });
    let Some(key) = key else {
        let open = find(dictionary, b"<<").map_or(0, |o| o + 2);
        return [
            &dictionary[..open],
            format!(" /Length {length} ").as_bytes(),
            &dictionary[open..],
        ]
        .concat();
    };
    // The old value: a number, or an `N G R` reference.
    let value_start = key + 7;
    let mut value_end = value_start;
    let mut tokens = 0;
    let mut i = value_start;
    while tokens < 3 && i < dictionary.len() {
        while i < dictionary.len() && dictionary[i].is_ascii_whitespace() {
            i += 1;
        }
        let token_start = i;
        while i < dictionary.len() && (dictionary[i].is_ascii_digit() || dictionary[i] == b'R') {
            i += 1;
        }
        if i == token_start {
            break;
        }
        tokens += 1;
        if tokens == 1 || dictionary[token_start] == b'R' {
            value_end = i;
        }
        if dictionary[token_start] == b'R' {
            break;
        }
    }
    [
        &dictionary[..value_start],
        format!(" {length}").as_bytes(),
        &dictionary[value_end..],
    ]
    .concat()
}

/// Reads `N G` backwards from just before an `obj` keyword at `at`: the
/// object number, generation and the offset where the header starts.
fn object_header_before(bytes: &[u8], at: usize) -> Option<(u32, u16, usize)> {
    let digits_before = |end: usize| {
        let start = bytes[..end]
            .iter()
            .rposition(|b| !b.is_ascii_digit())
            .map_or(0, |p| p + 1);
        (start < end).then_some(start)
    };
    let spaces_before = |end: usize| {
        let start = bytes[..end]
            .iter()
            .rposition(|b| !b.is_ascii_whitespace())
            .map_or(0, |p| p + 1);
        (start < end).then_some(start)
    };
    let generation_end = spaces_before(at)?;
    let generation_start = digits_before(generation_end)?;
    let number_end = spaces_before(generation_start)?;
    let number_start = digits_before(number_end)?;
    if number_start > 0 && !bytes[number_start - 1].is_ascii_whitespace() {
        return None;
    }
    let number = std::str::from_utf8(&bytes[number_start..number_end])
        .ok()?
        .parse()
        .ok()?;
    let generation = std::str::from_utf8(&bytes[generation_start..generation_end])
        .ok()?
        .parse()
        .ok()?;
    Some((number, generation, number_start))
}

/// The `N G R` reference that follows `key` in a dictionary's text.
fn reference_after(text: &[u8], key: &[u8]) -> Option<(u32, u16)> {
    let rest = &text[find(text, key)? + key.len()..];
    let rest = std::str::from_utf8(&rest[..rest.len().min(64)])
        .unwrap_or_else(|e| std::str::from_utf8(&rest[..e.valid_up_to()]).unwrap_or_default());
    let mut words = rest.split_ascii_whitespace();
    let number = words.next()?.parse().ok()?;
    let generation = words.next()?.parse().ok()?;
    words.next()?.starts_with('R').then_some((number, generation))
}

pub(super) fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

pub(super) fn rfind(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).rposition(|w| w == needle)
}
