//! Loopback tests of the blocking WebSocket client (`pushwire::client::WsClient`): against the
//! real server (`/echo`, channels, `pushwire.v1`), and against scripted servers on a thread that
//! send exactly the bytes a case needs (frames glued to the 101, a masked frame, a close, EOF,
//! silence). Every read has a deadline; every scripted server accepts one connection at most.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use pushwire::client::{Error, WsClient, WsOptions};
use pushwire::http1::head::{parse_request_head, HeadScanner};
use pushwire::output::Output;
use pushwire::ws::frame::encode_frame;
use pushwire::ws::handshake::{accept, ServerOptions};
use pushwire::ws::{self, CloseCode, Event, HandshakeError, Message, OpCode, Role, WsConn};

use common::*;

/// Options every test uses: reads give up after the common IO timeout.
fn options() -> WsOptions {
    WsOptions {
        read_timeout: Some(IO_TIMEOUT),
        close_timeout: Duration::from_secs(5),
        ..WsOptions::default()
    }
}

/// The `next` cursor of a channel now, so a subscription with `since` misses nothing published
/// afterwards, whichever of subscribe and publish the server handles first.
fn cursor_now(server: &Server, channel: &str) -> String {
    json_field(&poll(server, channel, None).text(), "next").unwrap().replace(':', "%3A")
}

#[test]
fn echo_text_binary_ping_then_closing_handshake() {
    let server = Server::start(&[]);
    let mut ws = WsClient::connect(&format!("ws://{}/echo", server.addr), &options()).unwrap();
    assert_eq!(ws.protocol(), None);
    for msg in
        [Message::Text("héllo".into()), Message::Binary(vec![0, 1, 2, 255]), Message::Text(String::new())]
    {
        ws.send(&msg).unwrap();
        assert_eq!(ws.recv().unwrap(), Event::Message(msg));
    }
    ws.send_ping(b"are you there").unwrap();
    assert_eq!(ws.recv().unwrap(), Event::Pong(b"are you there".to_vec()));
    ws.close(CloseCode::NORMAL, "done").unwrap();
    assert!(matches!(ws.send(&Message::Text("late".into())), Err(Error::Closed)));
    assert!(matches!(ws.recv(), Err(Error::Closed)));
    // Closing again after a finished handshake is fine.
    ws.close(CloseCode::NORMAL, "").unwrap();
}

#[test]
fn echo_one_mib_message_with_raised_limits() {
    let server = Server::start(&[]);
    let limits = ws::Limits { max_frame_payload_bytes: 1 << 20, max_message_bytes: 1 << 20 };
    let mut ws =
        WsClient::connect(&format!("ws://{}/echo", server.addr), &WsOptions { limits, ..options() }).unwrap();
    let big: Vec<u8> = (0..1 << 20).map(|i: u32| (i % 251) as u8).collect();
    ws.send(&Message::Binary(big.clone())).unwrap();
    assert_eq!(ws.recv().unwrap(), Event::Message(Message::Binary(big)));
    let text = "ab€".repeat((1 << 20) / 5);
    ws.send(&Message::Text(text.clone())).unwrap();
    assert_eq!(ws.recv().unwrap(), Event::Message(Message::Text(text)));
    ws.close(CloseCode::NORMAL, "").unwrap();
}

#[test]
fn rfc6455_10_4_message_over_client_limit_fails_with_1009() {
    let server = Server::start(&[]);
    let limits = ws::Limits { max_frame_payload_bytes: 1024, max_message_bytes: 1024 };
    let mut ws =
        WsClient::connect(&format!("ws://{}/echo", server.addr), &WsOptions { limits, ..options() }).unwrap();
    ws.send(&Message::Binary(vec![7; 2048])).unwrap();
    match ws.recv() {
        Err(Error::Protocol(e)) => assert_eq!(e.close_code(), CloseCode::MESSAGE_TOO_BIG),
        other => panic!("{other:?}"),
    }
    assert!(matches!(ws.recv(), Err(Error::Closed)));
}

#[test]
fn channel_message_published_over_http_arrives_as_a_frame() {
    let server = Server::start(&[]);
    let since = cursor_now(&server, "x");
    let url = format!("ws://{}/channels/x?since={since}", server.addr);
    let mut ws = WsClient::connect(&url, &options()).unwrap();
    publish(&server, "x", "hello channel");
    assert_eq!(ws.recv().unwrap(), Event::Message(Message::Text("hello channel".into())));
    ws.close(CloseCode::NORMAL, "").unwrap();
}

#[test]
fn channel_with_pushwire_v1_gives_json_envelopes() {
    let server = Server::start(&[]);
    let since = cursor_now(&server, "x");
    let url = format!("http://{}/channels/x?since={since}", server.addr);
    let opts = WsOptions { protocols: vec!["chat".into(), "pushwire.v1".into()], ..options() };
    let mut ws = WsClient::connect(&url, &opts).unwrap();
    assert_eq!(ws.protocol(), Some("pushwire.v1"));
    let Event::Message(Message::Text(open)) = ws.recv().unwrap() else {
        panic!("expected the opening frame")
    };
    assert_eq!(open, format!("{{\"type\":\"open\",\"next\":\"{}\"}}", since.replace("%3A", ":")));
    let id = publish(&server, "x", "enveloped");
    let Event::Message(Message::Text(json)) = ws.recv().unwrap() else { panic!("expected a text frame") };
    assert_eq!(json_field(&json, "id").as_deref(), Some(id.as_str()), "{json}");
    assert_eq!(json_field(&json, "data").as_deref(), Some("enveloped"), "{json}");
    ws.close(CloseCode::NORMAL, "").unwrap();
}

#[test]
fn rfc6455_4_1_refused_upgrade_is_a_handshake_error() {
    let server = Server::start(&[]);
    match WsClient::connect(&format!("ws://{}/nope", server.addr), &options()) {
        Err(Error::Handshake(HandshakeError::UnexpectedStatus(404))) => {}
        other => panic!("{other:?}"),
    }
    // A header that would inject a field is refused before connecting.
    let opts = WsOptions { headers: vec![("X-A".into(), "1\r\nX-B: 2".into())], ..options() };
    assert!(matches!(
        WsClient::connect(&format!("ws://{}/echo", server.addr), &opts),
        Err(Error::Handshake(HandshakeError::InvalidRequestField(_)))
    ));
}

#[test]
fn invalid_urls_and_options_fail_before_connecting() {
    assert!(matches!(WsClient::connect("ws://127.0.0.1:1/#x", &options()), Err(Error::InvalidUrl(_))));
    let zero =
        WsOptions { limits: ws::Limits { max_message_bytes: 0, ..ws::Limits::default() }, ..options() };
    assert!(matches!(WsClient::connect("ws://127.0.0.1:1/", &zero), Err(Error::InvalidOptions(_))));
}

#[test]
fn connection_refused_is_an_io_error() {
    // Bind then drop: the port is very likely free and refuses connections.
    let addr = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let err = WsClient::connect(&format!("ws://{addr}/"), &options()).unwrap_err();
    assert!(matches!(err, Error::Io(_)), "{err:?}");
}

// ----- scripted servers -----

/// A server on a thread that accepts one connection (within the IO timeout), answers the
/// opening handshake with `pushwire::ws::handshake::accept` plus `after_101` glued to the head
/// in the same write, then runs `script`.
fn scripted<T: Send + 'static>(
    after_101: Vec<u8>,
    script: impl FnOnce(&mut TcpStream) -> T + Send + 'static,
) -> (SocketAddr, JoinHandle<T>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    listener.set_nonblocking(true).unwrap();
    let handle = std::thread::spawn(move || {
        let start = Instant::now();
        let mut stream = loop {
            match listener.accept() {
                Ok((stream, _)) => break stream,
                Err(_) if start.elapsed() < IO_TIMEOUT => std::thread::sleep(Duration::from_millis(5)),
                Err(e) => panic!("no client came: {e}"),
            }
        };
        stream.set_nonblocking(false).unwrap();
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
        let limits = pushwire::http1::Limits::default();
        let mut buf = Vec::new();
        let mut scanner = HeadScanner::new();
        let end = loop {
            let mut chunk = [0u8; 1024];
            let n = stream.read(&mut chunk).expect("read the request head");
            assert!(n > 0, "client left before its request head");
            buf.extend_from_slice(&chunk[..n]);
            if let Some(end) = scanner.scan(&buf, &limits).unwrap() {
                break end;
            }
        };
        let head = parse_request_head(&buf[..end], &limits).unwrap();
        let accepted = accept(&head, &ServerOptions::default()).unwrap();
        let mut out = Vec::new();
        accepted.response_head(&mut out);
        out.extend_from_slice(&after_101);
        stream.write_all(&out).unwrap();
        script(&mut stream)
    });
    (addr, handle)
}

/// An unmasked frame, as a server sends it.
fn frame(opcode: OpCode, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    encode_frame(true, opcode, payload, None, &mut out);
    out
}

/// Reads the client's frames with a server-role core until `want` events arrived or the client
/// closed TCP; checks that they were masked (the server core fails otherwise).
fn read_client_events(stream: &mut TcpStream, want: usize) -> Vec<Event> {
    let mut conn = WsConn::new(Role::Server, ws::Limits::default());
    let mut events = Vec::new();
    let mut out = Output::new();
    while events.len() < want {
        let mut chunk = [0u8; 1024];
        let n = stream.read(&mut chunk).expect("read the client's frames");
        if n == 0 {
            break;
        }
        conn.handle_input(
            &chunk[..n],
            &mut || [0; 4],
            &mut pushwire::ws::deflate::Codec::default(),
            &mut events,
            &mut out,
        )
        .expect("client frames are valid");
    }
    events
}

/// True when the client closes TCP within the IO timeout.
fn client_closes_tcp(stream: &mut TcpStream) -> bool {
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest).is_ok()
}

#[test]
fn rfc6455_4_1_frames_glued_to_the_101_are_not_lost() {
    let mut glued = frame(OpCode::Text, b"early");
    glued.extend(frame(OpCode::Ping, b"p"));
    let (addr, server) = scripted(glued, |s| read_client_events(s, 1));
    let mut ws = WsClient::connect(&format!("ws://{addr}/"), &options()).unwrap();
    assert_eq!(ws.recv().unwrap(), Event::Message(Message::Text("early".into())));
    assert_eq!(ws.recv().unwrap(), Event::Ping(b"p".to_vec()));
    // The pong went out on its own, masked.
    assert_eq!(server.join().unwrap(), vec![Event::Pong(b"p".to_vec())]);
}

#[test]
fn rfc6455_5_1_masked_server_frame_fails_with_1002() {
    let mut masked = Vec::new();
    encode_frame(true, OpCode::Text, b"masked", Some([1, 2, 3, 4]), &mut masked);
    let (addr, server) = scripted(masked, |s| {
        let events = read_client_events(s, 1);
        (events, client_closes_tcp(s))
    });
    let mut ws = WsClient::connect(&format!("ws://{addr}/"), &options()).unwrap();
    match ws.recv() {
        Err(Error::Protocol(ws::Error::MaskedServerFrame)) => {}
        other => panic!("{other:?}"),
    }
    assert!(matches!(ws.recv(), Err(Error::Closed)));
    let (events, closed) = server.join().unwrap();
    let Some(Event::Close(Some(close))) = events.first() else { panic!("{events:?}") };
    assert_eq!(close.code, CloseCode::PROTOCOL_ERROR);
    assert!(closed, "the client closes TCP after failing");
}

#[test]
fn rfc6455_7_1_1_server_initiated_close_is_echoed_and_server_closes_first() {
    let mut payload = 1001u16.to_be_bytes().to_vec();
    payload.extend_from_slice(b"going away");
    let (addr, server) = scripted(frame(OpCode::Close, &payload), |s| {
        let events = read_client_events(s, 1);
        // The server closes TCP first (dropping the stream); the client is waiting for that.
        events
    });
    let mut ws = WsClient::connect(&format!("ws://{addr}/"), &options()).unwrap();
    let started = Instant::now();
    match ws.recv().unwrap() {
        Event::Close(Some(frame)) => {
            assert_eq!(frame.code, CloseCode::GOING_AWAY);
            assert_eq!(frame.reason, "going away");
        }
        other => panic!("{other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(4), "did not wait out the close timeout");
    let events = server.join().unwrap();
    let Some(Event::Close(Some(echo))) = events.first() else { panic!("{events:?}") };
    assert_eq!(echo.code, CloseCode::GOING_AWAY);
    assert!(matches!(ws.recv(), Err(Error::Closed)));
    assert!(matches!(ws.send(&Message::Text("x".into())), Err(Error::Closed)));
}

#[test]
fn rfc6455_7_1_5_eof_without_close_frame_is_abnormal_closure() {
    let (addr, server) = scripted(frame(OpCode::Text, b"last"), |_| ());
    let mut ws = WsClient::connect(&format!("ws://{addr}/"), &options()).unwrap();
    server.join().unwrap(); // the stream is dropped: EOF
    assert_eq!(ws.recv().unwrap(), Event::Message(Message::Text("last".into())));
    assert!(matches!(ws.recv(), Err(Error::AbnormalClosure)));
    assert!(matches!(ws.recv(), Err(Error::Closed)));
}

#[test]
fn read_timeout_leaves_the_connection_usable() {
    let (addr, server) = scripted(Vec::new(), |s| {
        std::thread::sleep(Duration::from_millis(300));
        s.write_all(&frame(OpCode::Binary, b"later")).unwrap();
        read_client_events(s, 1)
    });
    let opts = WsOptions { read_timeout: Some(Duration::from_millis(50)), ..options() };
    let mut ws = WsClient::connect(&format!("ws://{addr}/"), &opts).unwrap();
    assert!(matches!(ws.recv(), Err(Error::Timeout { .. })));
    ws.set_read_timeout(Some(IO_TIMEOUT));
    assert_eq!(ws.recv().unwrap(), Event::Message(Message::Binary(b"later".to_vec())));
    ws.send(&Message::Text("ack".into())).unwrap();
    assert_eq!(server.join().unwrap(), vec![Event::Message(Message::Text("ack".into()))]);
}

#[test]
fn rfc6455_7_1_2_close_without_answer_times_out_and_closes_tcp() {
    let (addr, server) = scripted(Vec::new(), |s| {
        // Reads the client's close but never answers; waits for the client to give up.
        let events = read_client_events(s, 1);
        (events, client_closes_tcp(s))
    });
    let opts = WsOptions { close_timeout: Duration::from_millis(200), ..options() };
    let mut ws = WsClient::connect(&format!("ws://{addr}/"), &opts).unwrap();
    let started = Instant::now();
    assert!(matches!(ws.close(CloseCode::NORMAL, "bye"), Err(Error::Timeout { .. })));
    assert!(started.elapsed() < Duration::from_secs(3));
    let (events, closed) = server.join().unwrap();
    let Some(Event::Close(Some(close))) = events.first() else { panic!("{events:?}") };
    assert_eq!((close.code, close.reason.as_str()), (CloseCode::NORMAL, "bye"));
    assert!(closed);
}

#[test]
fn rfc6455_4_1_wrong_accept_fails_the_handshake() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        let mut buf = [0u8; 1024];
        let _ = s.read(&mut buf).unwrap();
        s.write_all(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n",
        )
        .unwrap();
    });
    match WsClient::connect(&format!("ws://{addr}/"), &options()) {
        Err(Error::Handshake(HandshakeError::AcceptMismatch)) => {}
        other => panic!("{other:?}"),
    }
    server.join().unwrap();
}

#[test]
fn silent_server_times_out_the_handshake() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let opts = WsOptions { connect_timeout: Duration::from_millis(200), ..options() };
    let started = Instant::now();
    // The listener's backlog completes the TCP handshake; nobody answers the request.
    let err = WsClient::connect(&format!("ws://{addr}/"), &opts).unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(3));
    drop(listener);
}

#[test]
fn rfc6455_7_1_7_message_before_a_faulty_frame_is_delivered_and_echoed_before_the_failure() {
    // Autobahn 3.2: a valid text message, then a frame with RSV2 set, in one write. The
    // application gets the message first and can echo it; then the failure (1002) follows.
    let mut after_101 = frame(OpCode::Text, b"Hello, world!");
    let mut bad = frame(OpCode::Text, b"Hello, world!");
    bad[0] |= 0x20;
    after_101.extend_from_slice(&bad);
    after_101.extend_from_slice(&frame(OpCode::Ping, b""));
    let (addr, server) = scripted(after_101, |s| read_client_events(s, 2));
    let mut ws = WsClient::connect(&format!("ws://{addr}/"), &options()).unwrap();
    let message = ws.recv().unwrap();
    assert_eq!(message, Event::Message(Message::Text("Hello, world!".into())));
    let Event::Message(message) = message else { unreachable!() };
    ws.send(&message).expect("the echo goes out before the failure");
    match ws.recv() {
        Err(Error::Protocol(ws::Error::ReservedBitsSet)) => {}
        other => panic!("{other:?}"),
    }
    let events = server.join().unwrap();
    assert_eq!(events[0], Event::Message(Message::Text("Hello, world!".into())));
    let Event::Close(Some(close)) = &events[1] else { panic!("{events:?}") };
    assert_eq!(close.code, CloseCode::PROTOCOL_ERROR);
}
