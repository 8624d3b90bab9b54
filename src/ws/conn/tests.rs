//! Tests of [`super::WsConn`]: each RFC 6455 rule it enforces, named after its section.

use super::*;
use crate::ws::deflate::Codec;
use crate::ws::CloseCode;

const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// The server role must never ask for a mask key.
fn no_mask() -> [u8; 4] {
    panic!("the server role never masks")
}

/// Deterministic "fresh" keys for the client role.
fn counter_mask() -> impl FnMut() -> [u8; 4] {
    let mut n = 0u32;
    move || {
        n = n.wrapping_add(0x0101_0101);
        n.to_be_bytes()
    }
}

fn server() -> WsConn {
    WsConn::new(Role::Server, Limits::default())
}

fn client() -> WsConn {
    WsConn::new(Role::Client, Limits::default())
}

/// A frame as a client sends it: masked with `KEY`.
fn masked(fin: bool, opcode: OpCode, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    encode_frame(fin, opcode, payload, Some(KEY), &mut out);
    out
}

/// A frame as a server sends it: unmasked.
fn unmasked(fin: bool, opcode: OpCode, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    encode_frame(fin, opcode, payload, None, &mut out);
    out
}

fn close_payload(code: u16, reason: &str) -> Vec<u8> {
    let mut p = code.to_be_bytes().to_vec();
    p.extend_from_slice(reason.as_bytes());
    p
}

/// What a run produced: events, output bytes, and the first error.
type Run = (Vec<Event>, Vec<u8>, Option<Error>);

/// Feeds `chunks` in order to `conn` (keys from `counter_mask` in the client role).
fn feed(conn: &mut WsConn, chunks: &[&[u8]]) -> Run {
    let mut events = Vec::new();
    let mut out = Output::new();
    let mut first_error = None;
    let mut mask = counter_mask();
    for chunk in chunks {
        let result = if conn.role == Role::Server {
            conn.handle_input(chunk, &mut no_mask, &mut Codec::default(), &mut events, &mut out)
        } else {
            conn.handle_input(chunk, &mut mask, &mut Codec::default(), &mut events, &mut out)
        };
        if let Err(e) = result {
            first_error.get_or_insert(e);
        }
    }
    (events, out.take_vec(), first_error)
}

fn feed_server(input: &[u8]) -> Run {
    feed(&mut server(), &[input])
}

/// Decodes the frames a conn wrote: (opcode, unmasked payload, was masked).
fn frames(mut wire: &[u8]) -> Vec<(OpCode, Vec<u8>, bool)> {
    let mut frames = Vec::new();
    while !wire.is_empty() {
        let (h, used) = FrameHeader::parse(wire).unwrap().unwrap();
        let end = used + h.payload_len as usize;
        let mut payload = wire[used..end].to_vec();
        if let Some(key) = h.mask {
            apply_mask(&mut payload, key, 0);
        }
        assert!(h.fin);
        frames.push((h.opcode, payload, h.mask.is_some()));
        wire = &wire[end..];
    }
    frames
}

/// Asserts that `out` is exactly one close frame with `code`.
fn assert_failed_with(run: &Run, code: u16) {
    let (_, out, error) = run;
    let error = error.as_ref().expect("an error");
    assert_eq!(error.close_code(), CloseCode(code));
    let sent = frames(out);
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0].0, OpCode::Close);
    assert_eq!(&sent[0].1[..2], &code.to_be_bytes());
}

// §5.7 examples through a connection.

#[test]
fn rfc6455_5_7_examples_received_by_client() {
    let mut input = vec![0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f];
    input.extend_from_slice(&[0x01, 0x03, 0x48, 0x65, 0x6c, 0x80, 0x02, 0x6c, 0x6f]);
    input.extend_from_slice(&[0x89, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]);
    input.extend_from_slice(&[0x82, 0x7E, 0x01, 0x00]);
    input.extend_from_slice(&[7; 256]);
    input.extend_from_slice(&[0x82, 0x7F, 0, 0, 0, 0, 0, 1, 0, 0]);
    input.extend_from_slice(&[9; 65536]);
    let (events, out, error) = feed(&mut client(), &[&input]);
    assert_eq!(error, None);
    assert_eq!(
        events,
        vec![
            Event::Message(Message::Text("Hello".into())),
            Event::Message(Message::Text("Hello".into())),
            Event::Ping(b"Hello".to_vec()),
            Event::Message(Message::Binary(vec![7; 256])),
            Event::Message(Message::Binary(vec![9; 65536])),
        ]
    );
    // The client's pong is masked, with the ping's payload.
    assert_eq!(frames(&out), vec![(OpCode::Pong, b"Hello".to_vec(), true)]);
}

#[test]
fn rfc6455_5_7_masked_hello_and_pong_received_by_server() {
    let hello = [0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58];
    let pong = [0x8a, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58];
    let (events, out, error) = feed(&mut server(), &[&hello, &pong]);
    assert_eq!(error, None);
    assert_eq!(events, vec![Event::Message(Message::Text("Hello".into())), Event::Pong(b"Hello".to_vec()),]);
    assert!(out.is_empty());
}

#[test]
fn rfc6455_5_7_server_sends_unmasked_examples() {
    let mut conn = server();
    let mut out = Output::new();
    conn.send_message(&Message::Text("Hello".into()), &mut no_mask, &mut out).unwrap();
    conn.send_ping(b"Hello", &mut no_mask, &mut out).unwrap();
    conn.send_message(&Message::Binary(vec![0; 256]), &mut no_mask, &mut out).unwrap();
    let wire = out.take_vec();
    assert_eq!(&wire[..7], &[0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]);
    assert_eq!(&wire[7..14], &[0x89, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]);
    assert_eq!(&wire[14..18], &[0x82, 0x7E, 0x01, 0x00]);
    assert_eq!(wire.len(), 18 + 256);
}

// One test per rule.

#[test]
fn rfc6455_5_2_rsv_bits_without_extension_fail_1002() {
    for rsv in [0x40u8, 0x20, 0x10] {
        let mut frame = masked(true, OpCode::Text, b"x");
        frame[0] |= rsv;
        let run = feed_server(&frame);
        assert_eq!(run.2, Some(Error::ReservedBitsSet));
        assert!(run.0.is_empty());
        assert_failed_with(&run, 1002);
    }
}

#[test]
fn rfc6455_5_2_reserved_opcode_fail_1002() {
    for op in (0x3..=0x7).chain(0xB..=0xF) {
        let run = feed_server(&[0x80 | op, 0x80, 1, 2, 3, 4]);
        assert_eq!(run.2, Some(Error::ReservedOpCode(op)));
        assert_failed_with(&run, 1002);
    }
}

#[test]
fn rfc6455_5_2_payload_length_msb_set_fail_1002() {
    let run = feed_server(&[0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4]);
    assert_eq!(run.2, Some(Error::PayloadLengthMsbSet));
    assert_failed_with(&run, 1002);
}

#[test]
fn rfc6455_5_1_server_fails_unmasked_client_frame_1002() {
    let run = feed_server(&unmasked(true, OpCode::Text, b"Hello"));
    assert_eq!(run.2, Some(Error::UnmaskedClientFrame));
    assert!(run.0.is_empty());
    assert_failed_with(&run, 1002);
}

#[test]
fn rfc6455_5_1_client_fails_masked_server_frame_1002() {
    let run = feed(&mut client(), &[&masked(true, OpCode::Text, b"Hello")]);
    assert_eq!(run.2, Some(Error::MaskedServerFrame));
    assert_failed_with(&run, 1002);
    // The client's close is masked.
    assert!(frames(&run.1)[0].2);
}

#[test]
fn rfc6455_10_4_frame_over_limit_fails_1009_before_allocating() {
    // A header declaring 2^40 bytes and no payload: fails at once, nothing reserved.
    let mut header = Vec::new();
    FrameHeader { fin: true, rsv: 0, opcode: OpCode::Binary, mask: Some(KEY), payload_len: 1 << 40 }
        .encode(&mut header);
    let run = feed_server(&header);
    assert_eq!(run.2, Some(Error::FrameTooLarge { payload_bytes: 1 << 40, max_bytes: 65536 }));
    assert_failed_with(&run, 1009);

    let run = feed_server(&masked(true, OpCode::Binary, &[0; 65537]));
    assert!(matches!(run.2, Some(Error::FrameTooLarge { .. })));
    let run = feed_server(&masked(true, OpCode::Binary, &[0; 65536]));
    assert_eq!(run.2, None);
}

#[test]
fn rfc6455_10_4_message_over_limit_fails_1009() {
    let limits = Limits { max_frame_payload_bytes: 1000, max_message_bytes: 1500 };
    let mut input = masked(false, OpCode::Binary, &[1; 1000]);
    input.extend(masked(true, OpCode::Continuation, &[2; 501]));
    let run = feed(&mut WsConn::new(Role::Server, limits), &[&input]);
    assert_eq!(run.2, Some(Error::MessageTooLarge { message_bytes: 1501, max_bytes: 1500 }));
    assert_failed_with(&run, 1009);

    let mut input = masked(false, OpCode::Binary, &[1; 1000]);
    input.extend(masked(true, OpCode::Continuation, &[2; 500]));
    let run = feed(&mut WsConn::new(Role::Server, limits), &[&input]);
    assert_eq!(run.2, None);
    assert_eq!(run.0.len(), 1);
}

#[test]
fn rfc6455_5_4_continuation_without_open_message_fail_1002() {
    let run = feed_server(&masked(true, OpCode::Continuation, b"lo"));
    assert_eq!(run.2, Some(Error::UnexpectedContinuation));
    assert_failed_with(&run, 1002);
    // Also right after a complete message.
    let mut input = masked(true, OpCode::Text, b"Hel");
    input.extend(masked(true, OpCode::Continuation, b"lo"));
    let run = feed_server(&input);
    assert_eq!(run.2, Some(Error::UnexpectedContinuation));
    assert_eq!(run.0, vec![Event::Message(Message::Text("Hel".into()))]);
}

#[test]
fn rfc6455_5_4_data_frame_while_message_open_fail_1002() {
    let mut input = masked(false, OpCode::Text, b"Hel");
    input.extend(masked(true, OpCode::Binary, b"lo"));
    let run = feed_server(&input);
    assert_eq!(run.2, Some(Error::ExpectedContinuation));
    assert!(run.0.is_empty());
    assert_failed_with(&run, 1002);
}

#[test]
fn rfc6455_5_4_control_frames_between_fragments() {
    let mut input = masked(false, OpCode::Text, b"Hel");
    input.extend(masked(true, OpCode::Ping, b"p"));
    input.extend(masked(false, OpCode::Continuation, b""));
    input.extend(masked(true, OpCode::Pong, b"q"));
    input.extend(masked(true, OpCode::Continuation, b"lo"));
    let (events, out, error) = feed_server(&input);
    assert_eq!(error, None);
    assert_eq!(
        events,
        vec![
            Event::Ping(b"p".to_vec()),
            Event::Pong(b"q".to_vec()),
            Event::Message(Message::Text("Hello".into())),
        ]
    );
    assert_eq!(frames(&out), vec![(OpCode::Pong, b"p".to_vec(), false)]);
}

#[test]
fn rfc6455_5_5_control_frame_max_125_fail_1002() {
    let mut frame = vec![0x89, 0x80 | 126, 0, 126];
    frame.extend_from_slice(&KEY);
    frame.extend_from_slice(&[0; 126]);
    let run = feed_server(&frame);
    assert_eq!(run.2, Some(Error::ControlFrameTooLong));
    assert_failed_with(&run, 1002);
    // 125 bytes is fine.
    let run = feed_server(&masked(true, OpCode::Ping, &[5; 125]));
    assert_eq!(run.2, None);
    assert_eq!(frames(&run.1), vec![(OpCode::Pong, vec![5; 125], false)]);
}

#[test]
fn rfc6455_5_5_fragmented_control_frame_fail_1002() {
    let run = feed_server(&masked(false, OpCode::Ping, b"x"));
    assert_eq!(run.2, Some(Error::FragmentedControlFrame));
    assert_failed_with(&run, 1002);
}

#[test]
fn rfc6455_8_1_invalid_utf8_fails_fast_1007() {
    // The first fragment holds "κόσμε" then ED A0: the connection fails before the rest.
    let bad = b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80edited";
    let first = masked(false, OpCode::Text, bad);
    let mut conn = server();
    // Feed only the header and the payload up to A0, inside one unfinished frame.
    let header_len = 6;
    let run = feed(&mut conn, &[&first[..header_len + 13]]);
    assert_eq!(run.2, Some(Error::InvalidUtf8));
    assert_failed_with(&run, 1007);
    assert!(conn.is_closed());
}

#[test]
fn rfc6455_8_1_text_ending_inside_code_point_fail_1007() {
    let mut input = masked(false, OpCode::Text, b"\xce\xba\xe1");
    input.extend(masked(true, OpCode::Continuation, b"\xbd"));
    let run = feed_server(&input);
    assert_eq!(run.2, Some(Error::InvalidUtf8));
    assert_failed_with(&run, 1007);
}

#[test]
fn rfc6455_8_1_code_point_split_across_fragments_is_valid() {
    let text = "κόσμε".as_bytes();
    for cut in 0..=text.len() {
        let mut input = masked(false, OpCode::Text, &text[..cut]);
        input.extend(masked(true, OpCode::Continuation, &text[cut..]));
        let run = feed_server(&input);
        assert_eq!(run.2, None, "cut {cut}");
        assert_eq!(run.0, vec![Event::Message(Message::Text("κόσμε".into()))]);
    }
}

#[test]
fn rfc6455_5_5_2_ping_answered_with_pong_same_payload() {
    let mut input = masked(true, OpCode::Ping, b"one");
    input.extend(masked(true, OpCode::Ping, b""));
    let (events, out, error) = feed_server(&input);
    assert_eq!(error, None);
    assert_eq!(events, vec![Event::Ping(b"one".to_vec()), Event::Ping(vec![])]);
    assert_eq!(frames(&out), vec![(OpCode::Pong, b"one".to_vec(), false), (OpCode::Pong, vec![], false)]);
}

#[test]
fn rfc6455_5_5_3_unsolicited_pong_ignored() {
    let (events, out, error) = feed_server(&masked(true, OpCode::Pong, b"hb"));
    assert_eq!(error, None);
    assert_eq!(events, vec![Event::Pong(b"hb".to_vec())]);
    assert!(out.is_empty());
}

#[test]
fn rfc6455_5_5_1_close_payload_one_byte_fail_1002() {
    let run = feed_server(&masked(true, OpCode::Close, &[3]));
    assert_eq!(run.2, Some(Error::InvalidClosePayload));
    assert_failed_with(&run, 1002);
}

#[test]
fn rfc6455_7_4_invalid_close_code_fail_1002() {
    for code in [0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000] {
        let run = feed_server(&masked(true, OpCode::Close, &close_payload(code, "")));
        assert_eq!(run.2, Some(Error::InvalidCloseCode(code)));
        assert_failed_with(&run, 1002);
    }
}

#[test]
fn rfc6455_5_5_1_close_reason_invalid_utf8_fail_1007() {
    let mut payload = close_payload(1000, "");
    payload.extend_from_slice(b"\xce\xba\xed\xa0\x80");
    let run = feed_server(&masked(true, OpCode::Close, &payload));
    assert_eq!(run.2, Some(Error::InvalidCloseReason));
    assert_failed_with(&run, 1007);
}

#[test]
fn rfc6455_5_5_1_close_echoed_with_same_code() {
    let mut conn = server();
    let run = feed(&mut conn, &[&masked(true, OpCode::Close, &close_payload(4000, "bye"))]);
    assert_eq!(run.2, None);
    assert_eq!(run.0, vec![Event::Close(Some(CloseFrame { code: CloseCode(4000), reason: "bye".into() }))]);
    assert_eq!(frames(&run.1), vec![(OpCode::Close, close_payload(4000, ""), false)]);
    assert!(conn.close_received() && conn.close_sent() && conn.is_closed());
}

#[test]
fn rfc6455_5_5_1_empty_close_echoed_empty() {
    let mut conn = server();
    let run = feed(&mut conn, &[&masked(true, OpCode::Close, b"")]);
    assert_eq!(run.0, vec![Event::Close(None)]);
    assert_eq!(frames(&run.1), vec![(OpCode::Close, vec![], false)]);
    assert!(conn.is_closed());
}

#[test]
fn rfc6455_5_5_1_input_after_close_received_is_ignored() {
    let mut input = masked(true, OpCode::Close, &close_payload(1000, ""));
    input.extend(masked(true, OpCode::Ping, b"late"));
    input.extend(masked(true, OpCode::Text, b"late"));
    input.extend([0xFF; 20]);
    let (events, out, error) = feed_server(&input);
    assert_eq!(error, None);
    assert_eq!(events.len(), 1);
    assert_eq!(frames(&out).len(), 1);
}

#[test]
fn rfc6455_5_5_1_nothing_sent_after_close() {
    let mut conn = server();
    let mut out = Output::new();
    let bye = CloseFrame { code: CloseCode::GOING_AWAY, reason: "restart".into() };
    conn.send_close(Some(bye), &mut no_mask, &mut out).unwrap();
    let text = Message::Text("x".into());
    assert_eq!(conn.send_message(&text, &mut no_mask, &mut out), Err(SendError::CloseSent));
    assert_eq!(conn.send_ping(b"", &mut no_mask, &mut out), Err(SendError::CloseSent));
    assert_eq!(conn.send_close(None, &mut no_mask, &mut out), Err(SendError::CloseSent));
    assert_eq!(conn.send_prepared(Arc::from(&[0x81, 0][..]), &mut out), Err(SendError::CloseSent));
    assert_eq!(frames(&out.take_vec()), vec![(OpCode::Close, close_payload(1001, "restart"), false)]);
    // The peer still talks: messages arrive, pings get no pong, its close no echo.
    let mut input = masked(true, OpCode::Text, b"in flight");
    input.extend(masked(true, OpCode::Ping, b"p"));
    input.extend(masked(true, OpCode::Close, &close_payload(1001, "")));
    let (events, wire, error) = feed(&mut conn, &[&input]);
    assert_eq!(error, None);
    assert_eq!(
        events,
        vec![
            Event::Message(Message::Text("in flight".into())),
            Event::Ping(b"p".to_vec()),
            Event::Close(Some(CloseFrame { code: CloseCode::GOING_AWAY, reason: String::new() })),
        ]
    );
    assert!(wire.is_empty());
    assert!(conn.is_closed());
}

#[test]
fn rfc6455_7_1_7_input_discarded_after_fail() {
    let mut conn = server();
    let mut bad = unmasked(true, OpCode::Text, b"x");
    bad.extend(masked(true, OpCode::Ping, b"p"));
    let (events, out, error) = feed(&mut conn, &[&bad]);
    assert_eq!(error, Some(Error::UnmaskedClientFrame));
    assert!(events.is_empty());
    assert_eq!(frames(&out).len(), 1);
    assert!(conn.is_closed());
    // Later input, even a valid close, is not processed and nothing more is sent.
    let later =
        [masked(true, OpCode::Ping, b"p"), masked(true, OpCode::Close, &close_payload(1000, ""))].concat();
    let (events, out, error) = feed(&mut conn, &[&later]);
    assert_eq!((events, out, error), (vec![], vec![], None));
    assert!(!conn.close_received());
}

#[test]
fn rfc6455_7_1_7_fail_after_close_sent_sends_no_second_close() {
    let mut conn = server();
    let mut out = Output::new();
    conn.send_close(None, &mut no_mask, &mut out).unwrap();
    out.take_vec();
    let run = feed(&mut conn, &[&masked(true, OpCode::Close, &[1])]);
    assert_eq!(run.2, Some(Error::InvalidClosePayload));
    assert!(run.1.is_empty());
    assert!(conn.is_closed());
}

#[test]
fn rfc6455_7_4_1_never_send_1005_1006_1015() {
    for code in [1005, 1006, 1015, 0, 999, 5000] {
        let mut conn = server();
        let mut out = Output::new();
        let frame = CloseFrame { code: CloseCode(code), reason: String::new() };
        assert_eq!(
            conn.send_close(Some(frame), &mut no_mask, &mut out),
            Err(SendError::InvalidCloseCode(code))
        );
        assert!(out.is_empty() && !conn.close_sent());
    }
}

#[test]
fn rfc6455_5_5_control_payload_limits_on_send() {
    let mut conn = server();
    let mut out = Output::new();
    assert_eq!(conn.send_ping(&[0; 126], &mut no_mask, &mut out), Err(SendError::ControlPayloadTooLong));
    let long = CloseFrame { code: CloseCode::NORMAL, reason: "x".repeat(124) };
    assert_eq!(conn.send_close(Some(long), &mut no_mask, &mut out), Err(SendError::ControlPayloadTooLong));
    assert!(out.is_empty());
    conn.send_ping(&[0; 125], &mut no_mask, &mut out).unwrap();
}

#[test]
fn rfc6455_5_3_prepared_frames_are_server_only() {
    let mut shared = Vec::new();
    encode_frame(true, OpCode::Text, b"fan-out", None, &mut shared);
    let shared: Arc<[u8]> = Arc::from(shared);
    let mut conn = server();
    let mut out = Output::new();
    conn.send_prepared(shared.clone(), &mut out).unwrap();
    assert_eq!(out.take_vec(), shared.to_vec());
    assert_eq!(client().send_prepared(shared, &mut out), Err(SendError::PreparedFrameInClientRole));
}

/// A conversation from a client covering every frame kind, fragments and a split code point.
fn conversation() -> Vec<u8> {
    let text = "héllo κόσμε".as_bytes();
    let mut input = masked(false, OpCode::Text, &text[..2]);
    input.extend(masked(true, OpCode::Ping, b"p1"));
    input.extend(masked(false, OpCode::Continuation, &text[2..9]));
    input.extend(masked(true, OpCode::Continuation, &text[9..]));
    input.extend(masked(true, OpCode::Binary, &[0xB0; 300]));
    input.extend(masked(true, OpCode::Pong, b"hb"));
    input.extend(masked(true, OpCode::Text, b""));
    input.extend(masked(true, OpCode::Ping, b""));
    input.extend(masked(true, OpCode::Close, &close_payload(1000, "bye")));
    input.extend([0x81, 0x00, 0xFF]);
    input
}

fn assert_split_invariant(input: &[u8]) -> Run {
    let whole = feed_server(input);
    let bytes: Vec<&[u8]> = input.chunks(1).collect();
    assert_eq!(feed(&mut server(), &bytes), whole, "byte by byte");
    for size in 2..=17 {
        let chunks: Vec<&[u8]> = input.chunks(size).collect();
        assert_eq!(feed(&mut server(), &chunks), whole, "chunks of {size}");
    }
    for cut in 0..=input.len() {
        let (a, b) = input.split_at(cut);
        assert_eq!(feed(&mut server(), &[a, b]), whole, "cut {cut}");
    }
    whole
}

#[test]
fn split_invariance_of_a_conversation() {
    let (events, out, error) = assert_split_invariant(&conversation());
    assert_eq!(error, None);
    assert_eq!(
        events,
        vec![
            Event::Ping(b"p1".to_vec()),
            Event::Message(Message::Text("héllo κόσμε".into())),
            Event::Message(Message::Binary(vec![0xB0; 300])),
            Event::Pong(b"hb".to_vec()),
            Event::Message(Message::Text(String::new())),
            Event::Ping(vec![]),
            Event::Close(Some(CloseFrame { code: CloseCode::NORMAL, reason: "bye".into() })),
        ]
    );
    assert_eq!(
        frames(&out),
        vec![
            (OpCode::Pong, b"p1".to_vec(), false),
            (OpCode::Pong, vec![], false),
            (OpCode::Close, close_payload(1000, ""), false),
        ]
    );
}

#[test]
fn split_invariance_of_a_failing_conversation() {
    let mut input = masked(true, OpCode::Text, b"ok");
    input.extend(masked(true, OpCode::Ping, b"p"));
    input.extend(masked(false, OpCode::Text, b"\xce\xba\xed\xa0\x80 and more"));
    input.extend(masked(true, OpCode::Continuation, b"tail"));
    let run = assert_split_invariant(&input);
    assert_eq!(run.2, Some(Error::InvalidUtf8));
    assert_eq!(run.0, vec![Event::Message(Message::Text("ok".into())), Event::Ping(b"p".to_vec())]);
    let sent = frames(&run.1);
    assert_eq!(sent.len(), 2);
    assert_eq!(sent[1].0, OpCode::Close);
    assert_eq!(&sent[1].1[..2], &1007u16.to_be_bytes());
}

/// What an owner driving [`WsConn::handle_input_until_message`] saw: messages and control
/// events in order, the bytes written, the first error, and how many messages came
/// unmasked in place.
#[derive(Debug, Default)]
struct OwnerRun {
    events: Vec<Event>,
    out: Vec<u8>,
    error: Option<Error>,
    in_place: usize,
}

/// An owner fed `chunks` (each copied, as from a socket) message by message; with `echo` it
/// sends every message back where it ended (as `/echo` does).
fn message_owner(chunks: &[&[u8]], echo: bool) -> OwnerRun {
    let mut conn = server();
    let mut out = Output::new();
    let mut events = Vec::new();
    let mut run = OwnerRun::default();
    for chunk in chunks {
        let mut input = chunk.to_vec();
        let mut pos = 0;
        while pos < input.len() {
            let result = conn.handle_input_until_message(
                &mut input[pos..],
                &mut no_mask,
                &mut Codec::default(),
                &mut events,
                &mut out,
            );
            run.events.append(&mut events);
            match result {
                Ok((used, message)) => {
                    pos += used;
                    if let Some(message) = message {
                        run.in_place += usize::from(matches!(message, Incoming::InPlace(_)));
                        run.events.push(Event::Message(message.as_message_ref().to_message()));
                        if echo {
                            let _ = conn.send_message(message.as_message_ref(), &mut no_mask, &mut out);
                        }
                    }
                }
                Err(e) => {
                    run.error = Some(e);
                    run.out = out.take_vec();
                    return run;
                }
            }
        }
    }
    run.out = out.take_vec();
    run
}

/// An echo owner: the bytes it writes and the first error.
fn echo_owner(chunks: &[&[u8]]) -> (Vec<u8>, Option<Error>) {
    let run = message_owner(chunks, true);
    (run.out, run.error)
}

/// Whole unfragmented frames of several sizes and kinds, with control frames between.
fn whole_frames() -> Vec<u8> {
    let mut input = masked(true, OpCode::Binary, &[0xAB; 32]);
    input.extend(masked(true, OpCode::Text, "κόσμε".as_bytes()));
    input.extend(masked(true, OpCode::Ping, b"p"));
    input.extend(masked(true, OpCode::Binary, &(0..1000).map(|i| i as u8).collect::<Vec<_>>()));
    input.extend(masked(true, OpCode::Text, b""));
    input.extend(masked(true, OpCode::Binary, &[7; 126]));
    input.extend(masked(true, OpCode::Text, &[b'x'; 125]));
    input
}

#[test]
fn rfc6455_5_3_unmasking_in_place_is_split_invariant() {
    let mut failing = whole_frames();
    failing.extend(masked(true, OpCode::Text, b"\xce\xba\xed\xa0\x80 invalid"));
    failing.extend(masked(true, OpCode::Binary, b"never read"));
    let mut too_big = masked(true, OpCode::Binary, b"fits");
    too_big.extend(masked(true, OpCode::Binary, &vec![0; 70_000]));
    for input in [whole_frames(), conversation(), failing, too_big] {
        // In place, the same messages, events, output and error as reassembling everything
        // (`handle_input` never unmasks in place).
        let whole = message_owner(&[&input], false);
        let reassembled = feed_server(&input);
        assert_eq!(
            (&whole.events, &whole.out, &whole.error),
            (&reassembled.0, &reassembled.1, &reassembled.2)
        );
        // And the same however the input is split; byte by byte, nothing is in place.
        let bytes: Vec<&[u8]> = input.chunks(1).collect();
        let by_byte = message_owner(&bytes, false);
        assert_eq!(
            (&by_byte.events, &by_byte.out, &by_byte.error),
            (&whole.events, &whole.out, &whole.error)
        );
        assert_eq!(by_byte.in_place, 0);
        for cut in 0..=input.len() {
            let (a, b) = input.split_at(cut);
            let run = message_owner(&[a, b], false);
            assert_eq!(
                (&run.events, &run.out, &run.error),
                (&whole.events, &whole.out, &whole.error),
                "cut {cut}"
            );
        }
    }
    // Fed whole, every unfragmented data frame is handed out in place.
    let run = message_owner(&[&whole_frames()], false);
    assert_eq!(run.error, None);
    assert_eq!(run.in_place, 6);
    assert_eq!(run.events[0], Event::Message(Message::Binary(vec![0xAB; 32])));
    assert_eq!(run.events[1], Event::Message(Message::Text("κόσμε".into())));
    assert_eq!(run.events[2], Event::Ping(b"p".to_vec()));
    // A fragmented message is reassembled; a whole frame after it is in place again.
    let conversation = message_owner(&[&conversation()], false);
    assert_eq!(conversation.in_place, 2);
}

#[test]
fn rfc6455_5_3_unmasking_in_place_touches_only_the_frame_returned() {
    let first = masked(true, OpCode::Binary, b"first");
    let second = masked(true, OpCode::Text, b"second");
    let input = [first.clone(), second.clone()].concat();
    let mut conn = server();
    let (mut events, mut out) = (Vec::new(), Output::new());
    let mut bytes = input.clone();
    let (used, message) = conn
        .handle_input_until_message(&mut bytes, &mut no_mask, &mut Codec::default(), &mut events, &mut out)
        .unwrap();
    assert_eq!(used, first.len());
    assert_eq!(message, Some(Incoming::InPlace(MessageRef::Binary(b"first"))));
    assert_eq!(&bytes[used..], &second[..]);
    // A partial frame is copied into the message buffer, its input left as it was.
    let mut partial = second[..4].to_vec();
    let (used, message) = conn
        .handle_input_until_message(&mut partial, &mut no_mask, &mut Codec::default(), &mut events, &mut out)
        .unwrap();
    assert_eq!((used, message), (4, None));
    assert_eq!(partial, second[..4]);
    let mut rest = second[4..].to_vec();
    let (_, message) = conn
        .handle_input_until_message(&mut rest, &mut no_mask, &mut Codec::default(), &mut events, &mut out)
        .unwrap();
    assert_eq!(message, Some(Incoming::Assembled(Message::Text("second".into()))));
    assert!(events.is_empty() && out.is_empty());
}

#[test]
fn rfc6455_7_1_7_message_before_fault_is_returned_before_the_close() {
    let first = masked(true, OpCode::Text, b"ok");
    let mut bad = masked(true, OpCode::Text, b"rsv");
    bad[0] |= 0x20; // RSV2
    let input = [first.clone(), bad, masked(true, OpCode::Ping, b"p")].concat();
    let mut conn = server();
    let mut out = Output::new();
    let mut events = Vec::new();
    let mut bytes = input.clone();
    let (used, message) = conn
        .handle_input_until_message(&mut bytes, &mut no_mask, &mut Codec::default(), &mut events, &mut out)
        .unwrap();
    assert_eq!(used, first.len());
    assert_eq!(message, Some(Incoming::InPlace(MessageRef::Text("ok"))));
    assert!(events.is_empty() && out.is_empty() && !conn.close_sent());
    let error = conn.handle_input_until_message(
        &mut bytes[used..],
        &mut no_mask,
        &mut Codec::default(),
        &mut events,
        &mut out,
    );
    assert_eq!(error, Err(Error::ReservedBitsSet));
    assert!(events.is_empty());
    assert_failed_with(&(events, out.take_vec(), error.err()), 1002);
}

#[test]
fn split_invariance_of_an_echo_owner_answers_before_later_frames() {
    let mut failing = masked(true, OpCode::Text, b"ok");
    failing.extend(masked(true, OpCode::Ping, b"p"));
    failing.extend(masked(false, OpCode::Text, b"\xce\xba\xed\xa0\x80 and more"));
    failing.extend(masked(true, OpCode::Continuation, b"tail"));
    for input in [conversation(), failing] {
        let whole = echo_owner(&[&input]);
        let bytes: Vec<&[u8]> = input.chunks(1).collect();
        assert_eq!(echo_owner(&bytes), whole, "byte by byte");
        for cut in 0..=input.len() {
            let (a, b) = input.split_at(cut);
            assert_eq!(echo_owner(&[a, b]), whole, "cut {cut}");
        }
    }
    // Each echo sits where its message ended: before the pong of a later ping, and before
    // the close that fails the connection.
    let (out, error) =
        echo_owner(&[&[masked(true, OpCode::Text, b"ok"), masked(true, OpCode::Ping, b"p")].concat()]);
    assert_eq!(error, None);
    assert_eq!(
        frames(&out),
        vec![(OpCode::Text, b"ok".to_vec(), false), (OpCode::Pong, b"p".to_vec(), false)]
    );
    let mut input = masked(true, OpCode::Text, b"ok");
    input.extend(masked(true, OpCode::Continuation, b"stray"));
    let (out, error) = echo_owner(&[&input]);
    assert_eq!(error, Some(Error::UnexpectedContinuation));
    let sent = frames(&out);
    assert_eq!(sent.len(), 2);
    assert_eq!(sent[0], (OpCode::Text, b"ok".to_vec(), false));
    assert_eq!((sent[1].0, &sent[1].1[..2]), (OpCode::Close, &1002u16.to_be_bytes()[..]));
}

#[test]
fn client_round_trip_with_server() {
    let mut c = client();
    let mut s = server();
    let mut mask = counter_mask();
    let mut to_server = Output::new();
    let messages =
        [Message::Text("κόσμε".into()), Message::Binary(vec![1; 70_000 - 1]), Message::Binary(vec![])];
    let limits = Limits { max_frame_payload_bytes: 70_000, max_message_bytes: 70_000 };
    s.limits = limits;
    for m in &messages {
        c.send_message(m, &mut mask, &mut to_server).unwrap();
    }
    c.send_ping(b"are you there", &mut mask, &mut to_server).unwrap();
    c.send_close(None, &mut mask, &mut to_server).unwrap();
    let wire = to_server.take_vec();
    // Every client frame is masked, each with its own key.
    let keys: Vec<_> = {
        let mut keys = Vec::new();
        let mut rest = &wire[..];
        while let Some((h, used)) = FrameHeader::parse(rest).unwrap() {
            keys.push(h.mask.expect("client frames are masked"));
            rest = &rest[used + h.payload_len as usize..];
        }
        keys
    };
    assert_eq!(keys.len(), 5);
    assert!(keys.windows(2).all(|w| w[0] != w[1]));

    let (events, to_client, error) = feed(&mut s, &[&wire]);
    assert_eq!(error, None);
    let mut expected: Vec<Event> = messages.iter().cloned().map(Event::Message).collect();
    expected.push(Event::Ping(b"are you there".to_vec()));
    expected.push(Event::Close(None));
    assert_eq!(events, expected);
    assert!(s.is_closed());

    // The server's pong and close echo, decoded by the client.
    let (events, out, error) = feed(&mut c, &[&to_client]);
    assert_eq!(error, None);
    assert_eq!(events, vec![Event::Pong(b"are you there".to_vec()), Event::Close(None)]);
    assert!(out.is_empty());
    assert!(c.is_closed());
}

#[test]
fn rfc6455_10_4_16_mib_message_allowed_with_16_mib_limit() {
    const SIXTEEN_MIB: usize = 16 << 20;
    let limits =
        Limits { max_frame_payload_bytes: SIXTEEN_MIB as u64, max_message_bytes: SIXTEEN_MIB as u64 };
    let payload: Vec<u8> = (0..SIXTEEN_MIB).map(|i| (i % 251) as u8).collect();
    let mut c = WsConn::new(Role::Client, limits);
    let mut wire = Output::new();
    c.send_message(&Message::Binary(payload.clone()), &mut counter_mask(), &mut wire).unwrap();
    let wire = wire.take_vec();
    let mut s = WsConn::new(Role::Server, limits);
    // Fed in 64 KiB reads, as a socket would deliver it.
    let chunks: Vec<&[u8]> = wire.chunks(65536).collect();
    let (events, _, error) = feed(&mut s, &chunks);
    assert_eq!(error, None);
    assert_eq!(events, vec![Event::Message(Message::Binary(payload))]);

    // One byte more, in two fragments, is too big.
    let mut input = masked(false, OpCode::Binary, &vec![0; SIXTEEN_MIB / 2]);
    input.extend(masked(true, OpCode::Continuation, &vec![0; SIXTEEN_MIB / 2 + 1]));
    let run = feed(&mut WsConn::new(Role::Server, limits), &[&input]);
    assert!(matches!(run.2, Some(Error::MessageTooLarge { .. })));
    assert_failed_with(&run, 1009);
}

#[test]
fn reserve_bounded_never_exceeds_the_limit() {
    let mut data = Vec::new();
    for _ in 0..10 {
        let needed = data.len() + 100;
        reserve_bounded(&mut data, needed, 1000);
        data.resize(needed, 0);
        assert!(data.capacity() <= 1000);
    }
}
