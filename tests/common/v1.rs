//! A `pushwire.v1` command-mode client for tests (`GET /ws`): replies are matched by `ask`,
//! other frames (messages, `open`, `gap`, `join`, `leave`) kept in arrival order for `next`.

use std::collections::VecDeque;
use std::time::Duration;

use pushwire::ws::OpCode;
use serde_json::Value;

use super::{RawWs, Server};

/// One command-mode connection.
pub struct V1 {
    pub ws: RawWs,
    others: VecDeque<Value>,
}

impl V1 {
    /// Connects to `/ws`, with `?token=` when given; panics unless the answer is 101.
    pub fn connect(server: &Server, token: Option<&str>) -> V1 {
        let path = token.map_or("/ws".to_string(), |t| format!("/ws?token={t}"));
        let (ws, head) = RawWs::connect(server, &path, &["pushwire.v1"]);
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        ws.stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        V1 { ws, others: VecDeque::new() }
    }

    fn frame(&mut self) -> Value {
        serde_json::from_str(&self.ws.recv_text()).unwrap()
    }

    /// Sends a command without waiting.
    pub fn send(&mut self, command: &Value) {
        self.ws.send(OpCode::Text, command.to_string().as_bytes());
    }

    /// Sends `commands` without waiting, every frame in one write (so the server reads them
    /// together).
    pub fn send_in_one_write(&mut self, commands: &[Value]) {
        let mut out = Vec::new();
        for command in commands {
            pushwire::ws::frame::encode_frame(
                true,
                OpCode::Text,
                command.to_string().as_bytes(),
                Some([1, 2, 3, 4]),
                &mut out,
            );
        }
        std::io::Write::write_all(&mut self.ws.stream, &out).unwrap();
    }

    /// Sends `command` and returns its reply (`ok`, `error`, `presence`, `presence_stats`).
    pub fn ask(&mut self, command: Value) -> Value {
        self.send(&command);
        self.reply()
    }

    /// The next reply (`ok`, `error`, `presence`, `presence_stats`) to a command sent before;
    /// other frames are kept for `next`.
    pub fn reply(&mut self) -> Value {
        loop {
            let frame = self.frame();
            if matches!(frame["type"].as_str(), Some("ok" | "error" | "presence" | "presence_stats")) {
                return frame;
            }
            self.others.push_back(frame);
        }
    }

    /// True when no frame received while waiting for a reply is still unread.
    pub fn others_is_empty(&self) -> bool {
        self.others.is_empty()
    }

    /// The next frame that is not a reply (skipping `open` frames).
    pub fn next(&mut self) -> Value {
        loop {
            let frame = self.others.pop_front().unwrap_or_else(|| self.frame());
            if frame["type"] != "open" {
                return frame;
            }
        }
    }

    /// The next channel message (skipping `open`, `join` and `leave` frames).
    pub fn message(&mut self) -> Value {
        loop {
            let frame = self.next();
            if !matches!(frame["type"].as_str(), Some("join" | "leave")) {
                return frame;
            }
        }
    }

    /// The next close frame's code and reason, skipping other frames.
    pub fn close_frame(&mut self) -> (u16, String) {
        loop {
            let (op, payload) = self.ws.recv().expect("a close frame before EOF");
            if op == OpCode::Close {
                let code = u16::from_be_bytes([payload[0], payload[1]]);
                return (code, String::from_utf8_lossy(&payload[2..]).into_owned());
            }
        }
    }
}

/// Commands sent in one write, some answered by the hub (subscribe, publish) and some by the
/// connection itself (a bad command, unsubscribe): the replies come in command order.
pub fn assert_replies_follow_command_order(server: &Server) {
    let mut v1 = V1::connect(server, None);
    let commands = [
        serde_json::json!({"type":"subscribe","channel":"order","req":1}),
        serde_json::json!({"type":"dance","req":2}),
        serde_json::json!({"type":"publish","channel":"elsewhere","data":"x","req":3}),
        serde_json::json!({"type":"unsubscribe","channel":"order","req":4}),
        serde_json::json!({"type":"subscribe","channel":"order","req":5}),
        serde_json::json!({"type":"subscribe","channel":"order","req":6}),
    ];
    v1.send_in_one_write(&commands);
    let reqs: Vec<(u64, String)> = (0..commands.len())
        .map(|_| {
            let frame = v1.reply();
            (frame["req"].as_u64().unwrap(), frame["type"].as_str().unwrap().to_string())
        })
        .collect();
    let expected: Vec<(u64, String)> =
        [(1, "ok"), (2, "error"), (3, "ok"), (4, "ok"), (5, "ok"), (6, "error")]
            .map(|(r, t)| (r, t.to_string()))
            .into();
    assert_eq!(reqs, expected);
}
