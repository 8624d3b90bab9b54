//! The client testee of the Autobahn|Testsuite's `fuzzingserver` (run by
//! `scripts/autobahn.sh`): pushwire's [`WsClient`], permessage-deflate offered, echoing every
//! message of every case.
//!
//! Protocol (README of the suite's Python 3 port): read the case count from
//! `$AUTOBAHN_URL/getCaseCount`; for each case connect to
//! `$AUTOBAHN_URL/runCase?case=N&agent=$AUTOBAHN_AGENT` and echo every message until the server
//! closes; finally connect to `$AUTOBAHN_URL/updateReports?agent=$AUTOBAHN_AGENT`.

use std::time::Duration;

use pushwire::client::{Error, WsClient, WsOptions};
use pushwire::ws::{CloseCode, Event, Limits, Message};

fn options() -> WsOptions {
    // The suite sends messages of up to 16 MiB (cases 9.*).
    let bytes = 16 * 1024 * 1024 + 1024;
    WsOptions {
        limits: Limits { max_frame_payload_bytes: bytes, max_message_bytes: bytes },
        read_timeout: Some(Duration::from_secs(60)),
        close_timeout: Duration::from_secs(5),
        ..WsOptions::default()
    }
}

/// Echoes every message until the connection ends.
fn run_case(url: &str) -> Result<(), Error> {
    let mut ws = WsClient::connect(url, &options())?;
    loop {
        match ws.recv()? {
            Event::Message(message) => {
                if ws.send(&message).is_err() {
                    return Ok(());
                }
            }
            Event::Close(_) => return Ok(()),
            Event::Ping(_) | Event::Pong(_) => {}
        }
    }
}

fn main() {
    let base = std::env::var("AUTOBAHN_URL").unwrap_or_else(|_| "ws://127.0.0.1:9001".into());
    let agent = std::env::var("AUTOBAHN_AGENT").unwrap_or_else(|_| "pushwire".into());
    let count = {
        let mut ws = WsClient::connect(&format!("{base}/getCaseCount"), &options()).expect("getCaseCount");
        let count = match ws.recv().expect("case count") {
            Event::Message(Message::Text(text)) => text.trim().parse::<u32>().expect("a number"),
            other => panic!("unexpected {other:?}"),
        };
        let _ = ws.close(CloseCode::NORMAL, "");
        count
    };
    for case in 1..=count {
        if let Err(e) = run_case(&format!("{base}/runCase?case={case}&agent={agent}")) {
            // A protocol error is the expected outcome of many cases; the report judges it.
            eprintln!("case {case}: {e}");
        }
    }
    let mut ws =
        WsClient::connect(&format!("{base}/updateReports?agent={agent}"), &options()).expect("updateReports");
    while let Ok(event) = ws.recv() {
        if matches!(event, Event::Close(_)) {
            break;
        }
    }
    eprintln!("autobahn_client: {count} cases run");
}
