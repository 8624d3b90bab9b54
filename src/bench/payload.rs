//! What the load generator puts in a message: its sequence number and its send time.
//!
//! Implements: a text marker `pwbench:RUN:SEQ:SENT_US;` padded with `x` to the wanted size, found
//! anywhere in whatever the subscriber receives (an SSE event's data, a WebSocket frame, a JSON
//! envelope, an NDJSON line, a poll answer with several messages), so a message is recognized
//! by its own payload and not by a server's message id; and a 16-byte binary header (send time,
//! sequence number, big-endian) for the echo mode.
//!
//! The marker uses only ASCII letters, digits, `:` and `;`, which no JSON, SSE or WebSocket
//! encoding escapes. `RUN` is a random number per run, so messages an earlier run left in a
//! channel's history are not counted; `SENT_US` is microseconds since the run's start (one
//! clock, one process).
//!
//! A JSON variant (`encode_json`) carries the same marker in a document of quotes, tickers and
//! prices, which compresses about as well as real JSON does (unlike `x` padding), for the
//! permessage-deflate fan-out.
//!
//! Does not: checksum the padding (a transport that corrupts bytes would fail its own codec).

/// What starts every text marker.
pub const MARKER: &str = "pwbench:";

/// Bytes of the binary header: send time then sequence number, 8 bytes each.
pub const BINARY_HEADER_BYTES: usize = 16;

/// A text payload of at least `size_bytes` (exactly, when the marker fits).
pub fn encode_text(run: u64, seq: u64, sent_us: u64, size_bytes: usize) -> String {
    let mut text = format!("{MARKER}{run}:{seq}:{sent_us};");
    if text.len() < size_bytes {
        text.extend(std::iter::repeat_n('x', size_bytes - text.len()));
    }
    text
}

/// A JSON text of at least `size_bytes` (exactly, when the marker fits) holding the marker
/// and a list of quotes whose numbers vary with `seq`.
pub fn encode_json(run: u64, seq: u64, sent_us: u64, size_bytes: usize) -> String {
    const SYMBOLS: [&str; 8] = ["AAPL", "MSFT", "GOOG", "AMZN", "NVDA", "TSLA", "META", "ORCL"];
    let mut text = format!("{{\"marker\":\"{MARKER}{run}:{seq}:{sent_us};\",\"quotes\":[");
    // A small linear congruential sequence: varied digits, the same for the same `seq`.
    let mut state = seq.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    let mut i = 0usize;
    // Room for the closing `]}` and one more quote of at most 80 bytes.
    while text.len() + 2 + 80 < size_bytes {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let price = (state >> 33) % 100_000;
        let volume = (state >> 17) % 10_000;
        text.push_str(&format!(
            "{}{{\"id\":{i},\"symbol\":\"{}\",\"price\":{}.{:02},\"volume\":{volume}}}",
            if i == 0 { "" } else { "," },
            SYMBOLS[(state >> 59) as usize % SYMBOLS.len()],
            price / 100,
            price % 100,
        ));
        i += 1;
    }
    // Pad inside the document with spaces (JSON whitespace) to the exact size.
    if text.len() + 2 < size_bytes {
        text.extend(std::iter::repeat_n(' ', size_bytes - text.len() - 2));
    }
    text.push_str("]}");
    text
}

/// Every `(seq, sent_us)` of run `run` marked in `data`, in order.
pub fn find_text(run: u64, data: &[u8]) -> Vec<(u64, u64)> {
    let mut found = Vec::new();
    let mut rest = data;
    while let Some(at) = rest.windows(MARKER.len()).position(|w| w == MARKER.as_bytes()) {
        rest = &rest[at + MARKER.len()..];
        let Some(marked_run) = number_before(&mut rest, b':') else {
            continue;
        };
        let (Some(seq), Some(sent_us)) = (number_before(&mut rest, b':'), number_before(&mut rest, b';'))
        else {
            continue;
        };
        if marked_run == run {
            found.push((seq, sent_us));
        }
    }
    found
}

/// Parses decimal digits up to `end` (at most 20), advancing past `end`.
fn number_before(rest: &mut &[u8], end: u8) -> Option<u64> {
    let len = rest.iter().take(21).position(|&b| b == end)?;
    let text = std::str::from_utf8(&rest[..len]).ok()?;
    let value = if text.bytes().all(|b| b.is_ascii_digit()) { text.parse().ok()? } else { return None };
    *rest = &rest[len + 1..];
    Some(value)
}

/// A binary payload of `size_bytes` (at least [`BINARY_HEADER_BYTES`]).
pub fn encode_binary(seq: u64, sent_us: u64, size_bytes: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; size_bytes.max(BINARY_HEADER_BYTES)];
    bytes[..8].copy_from_slice(&sent_us.to_be_bytes());
    bytes[8..16].copy_from_slice(&seq.to_be_bytes());
    for (i, b) in bytes[BINARY_HEADER_BYTES..].iter_mut().enumerate() {
        *b = i as u8;
    }
    bytes
}

/// `(seq, sent_us)` of a binary payload; `None` when shorter than the header.
pub fn decode_binary(bytes: &[u8]) -> Option<(u64, u64)> {
    let sent_us = u64::from_be_bytes(bytes.get(..8)?.try_into().ok()?);
    let seq = u64::from_be_bytes(bytes.get(8..16)?.try_into().ok()?);
    Some((seq, sent_us))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_markers_are_found_inside_any_envelope() {
        let one = encode_text(42, 7, 123, 40);
        assert_eq!(one.len(), 40);
        assert!(one.starts_with("pwbench:42:7:123;xx"));
        assert_eq!(encode_text(42, 1, 2, 0), "pwbench:42:1:2;");
        let answer = format!(
            "{{\"messages\":[{{\"id\":\"e:1\",\"data\":\"{one}\"}},{{\"id\":\"e:2\",\"data\":\"{}\"}},\
             {{\"id\":\"e:3\",\"data\":\"{}\"}}]}}",
            encode_text(42, 8, 124, 10),
            encode_text(41, 9, 125, 10)
        );
        assert_eq!(find_text(42, answer.as_bytes()), vec![(7, 123), (8, 124)]);
        let broken = b"pwbench:1:1:;pwbench:1:x:1;pwbench:1:99999999999999999999999:1;";
        assert_eq!(find_text(1, broken), vec![]);
        assert_eq!(find_text(1, b"no marker"), vec![]);
    }

    #[test]
    fn binary_header_round_trips() {
        let bytes = encode_binary(5, 99, 64);
        assert_eq!(bytes.len(), 64);
        assert_eq!(decode_binary(&bytes), Some((5, 99)));
        assert_eq!(encode_binary(1, 1, 3).len(), BINARY_HEADER_BYTES);
        assert_eq!(decode_binary(&bytes[..15]), None);
    }

    #[test]
    fn json_payload_is_json_of_the_size_and_carries_the_marker() {
        for size in [64, 100, 1024, 4096] {
            let text = encode_json(7, 3, 99, size);
            assert_eq!(text.len(), size, "{text}");
            let value: serde_json::Value = serde_json::from_str(&text).unwrap();
            assert!(value["quotes"].is_array());
            assert_eq!(find_text(7, text.as_bytes()), [(3, 99)]);
        }
        assert_ne!(encode_json(7, 3, 99, 1024)[40..], encode_json(7, 4, 99, 1024)[40..]);
    }
}
