//! Keepalive, slow consumers, and the drain on shutdown.

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::support::*;

#[tokio::test]
async fn a_client_that_stops_reading_is_closed_as_a_slow_consumer() {
    let mut config = test_config();
    config.outbox_frames = 8;
    let node = spawn_node(config);
    let (mut a, _) = Client::join(&node, "r", "alice", "a1").await;

    // A reader with a tiny receive buffer that does not read.
    let url = node.ws(&format!("/ws/r?token={}&client_id=slow", token("slow")));
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(node.addr).await.unwrap();
    let (mut slow, _) = tokio_tungstenite::client_async(url.into_client_request().unwrap(), stream)
        .await
        .unwrap();
    a.recv_type("user_joined").await;

    let payload = "p".repeat(16 * 1024);
    let sent = 1000;
    for n in 0..sent {
        a.send(json!({"type":"signal","to":"slow","data":{"n":n,"pad":payload}}))
            .await;
    }
    // The slow client reads at last: what was in flight, then the close frame.
    let reader = tokio::spawn(async move {
        let mut received = 0;
        let code = loop {
            match tokio::time::timeout(WAIT, slow.next())
                .await
                .expect("frames")
                .expect("open")
            {
                Ok(Message::Text(_)) => received += 1,
                Ok(Message::Close(frame)) => break frame.map(|f| u16::from(f.code)),
                Ok(_) => {}
                Err(e) => panic!("socket error before the close frame: {e}"),
            }
        };
        (received, code)
    });
    // The sender is unaffected: it learns the slow client left, and later signals to it fail.
    a.send(json!({"type":"ping"})).await;
    let mut left = false;
    loop {
        let frame = a.recv().await;
        match frame["type"].as_str() {
            Some("user_left") => left = true,
            Some("error") => assert_eq!(frame["code"], "peer_not_found"),
            Some("pong") if left => break,
            Some("pong") => a.send(json!({"type":"ping"})).await,
            _ => panic!("unexpected {frame}"),
        }
    }

    let (received, code) = reader.await.unwrap();
    assert_eq!(code, Some(4002));
    assert!(
        received < sent,
        "the outbox must not hold everything: {received}"
    );
}

#[tokio::test]
async fn a_silent_client_is_closed_after_the_idle_timeout() {
    let mut config = test_config();
    config.ping_interval = Duration::from_millis(100);
    config.idle_timeout = Duration::from_millis(300);
    let node = spawn_node(config);
    // A raw TCP client: it completes the handshake and then never answers a ping.
    let mut tcp = tokio::net::TcpStream::connect(node.addr).await.unwrap();
    let request = format!(
        "GET /ws?token={} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        token("alice"),
        node.addr
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut bytes = Vec::new();
    tokio::time::timeout(WAIT, tcp.read_to_end(&mut bytes))
        .await
        .expect("server ends the connection")
        .unwrap();
    let head_end = bytes.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert!(bytes.starts_with(b"HTTP/1.1 101"));
    let frames = server_frames(&bytes[head_end..]);
    assert!(frames.iter().any(|(op, _)| *op == 0x9), "pinged first");
    let (_, close) = frames
        .iter()
        .find(|(op, _)| *op == 0x8)
        .expect("a close frame");
    assert_eq!(u16::from_be_bytes([close[0], close[1]]), 4003);
}

/// Splits unmasked server frames into (opcode, payload).
fn server_frames(mut bytes: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut frames = Vec::new();
    while bytes.len() >= 2 {
        let opcode = bytes[0] & 0x0f;
        let (len, header) = match bytes[1] & 0x7f {
            126 => (u16::from_be_bytes([bytes[2], bytes[3]]) as usize, 4),
            127 => (
                u64::from_be_bytes(bytes[2..10].try_into().unwrap()) as usize,
                10,
            ),
            n => (n as usize, 2),
        };
        frames.push((opcode, bytes[header..header + len].to_vec()));
        bytes = &bytes[header + len..];
    }
    frames
}

#[tokio::test]
async fn a_client_that_answers_pings_stays_connected() {
    let mut config = test_config();
    config.ping_interval = Duration::from_millis(50);
    config.idle_timeout = Duration::from_millis(200);
    let node = spawn_node(config);
    let url = node.ws(&format!("/ws?token={}", token("alice")));
    let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str())
        .await
        .unwrap();
    let mut pings = 0;
    // Reading answers each ping; ten pings span well over the idle timeout.
    while pings < 10 {
        match tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("frames")
            .expect("open")
            .unwrap()
        {
            Message::Ping(_) => pings += 1,
            Message::Close(frame) => panic!("closed: {frame:?}"),
            _ => {}
        }
    }
}

#[tokio::test]
async fn shutdown_drains_clients_with_a_reconnect_notice_and_1012() {
    let node = spawn_node(test_config());
    let (mut a, _) = Client::join(&node, "r", "alice", "a1").await;
    let mut b = Client::user(&node, "bob", "b1").await;
    let client = http_client();

    node.state.start_draining();
    let ready = client.get(node.http("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    let body: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(body["code"], "draining");
    let refused = connect(&node.ws(&format!("/ws/r?token={}", token("carol"))))
        .await
        .err()
        .unwrap();
    assert_eq!(refused.status, 503);

    let stopped = tokio::task::spawn_blocking(move || node.shutdown());
    for c in [&mut a, &mut b] {
        let (frames, code) = c.drain_until_close().await;
        assert_eq!(
            frames,
            vec![json!({"type":"reconnect","reason":"shutdown"})]
        );
        assert_eq!(code, 1012);
    }
    tokio::time::timeout(WAIT, stopped)
        .await
        .expect("node stops")
        .unwrap();
}

/// `/readyz` answered by the node's router directly (the listener closes once the node has
/// drained).
async fn readiness(state: &switchboard::state::AppState) -> (u16, serde_json::Value) {
    use tower::ServiceExt;
    let request = axum::http::Request::get("/readyz")
        .body(axum::body::Body::empty())
        .unwrap();
    let response = switchboard::app::router(state.clone())
        .oneshot(request)
        .await
        .unwrap();
    let status = response.status().as_u16();
    let body = axum::body::to_bytes(response.into_body(), 1 << 16)
        .await
        .unwrap();
    (status, serde_json::from_slice(&body).unwrap())
}

#[tokio::test]
async fn a_node_whose_essential_task_ends_turns_unready_drains_and_fails() {
    for task in ["hub-inbound", "presence-reaper"] {
        let node = spawn_node(test_config());
        assert_eq!(
            node.state.supervisor.names(),
            ["hub-inbound", "presence-reaper"]
        );
        let (mut a, _) = Client::join(&node, "r", "alice", "a1").await;
        assert_eq!(readiness(&node.state).await.0, 200);

        assert!(node.state.supervisor.abort(task));
        let (frames, code) = a.drain_until_close().await;
        assert_eq!(
            (frames, code),
            (vec![json!({"type":"reconnect","reason":"shutdown"})], 1012)
        );
        let (status, body) = readiness(&node.state).await;
        assert_eq!((status, body["code"].as_str()), (503, Some("task_failed")));
        assert!(body["detail"].as_str().unwrap().contains(task), "{body}");
        let ended = tokio::task::spawn_blocking(move || node.wait_stopped())
            .await
            .unwrap();
        let error = ended.expect_err("the node fails");
        assert_eq!(error, format!("essential task {task} was cancelled"));
    }
}

/// A drain that comes while a batch is being written to a client that is not reading lets the
/// batch finish (within `write_timeout`): the client, reading again, gets every frame in order,
/// then the `reconnect` notice, then 1012. Nothing popped from the outbox is dropped.
#[tokio::test]
async fn a_drain_during_a_blocked_write_loses_nothing_of_the_batch() {
    const SIGNALS: u32 = 600;
    let node = spawn_node(switchboard::config::Config {
        outbox_frames: 1024,
        ..test_config()
    });
    let (mut alice, _) = Client::join(&node, "r", "alice", "a1").await;
    let (mut bob, _) = Client::join(&node, "r", "bob", "b1").await;
    alice.recv_type("user_joined").await;
    // 600 signals of 60 KB: more than the socket buffers hold, fewer than the outbox.
    let pad = "x".repeat(60_000);
    for n in 0..SIGNALS {
        let signal = json!({"type": "ice_candidate", "to": "b1",
            "candidate": {"candidate": format!("candidate:{n}"), "sdpMid": "0", "pad": pad}});
        alice.send(signal).await;
    }
    alice.expect_quiet().await;
    let state = node.state.clone();
    let stopping = tokio::task::spawn_blocking(move || node.shutdown());
    // Bob reads only once the drain has begun (the node answers not ready).
    let deadline = tokio::time::Instant::now() + WAIT;
    while readiness(&state).await.0 == 200 {
        assert!(tokio::time::Instant::now() < deadline, "never drained");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (frames, code) = bob.drain_until_close().await;
    let numbers: Vec<u32> = frames
        .iter()
        .filter(|f| f["type"] == "ice_candidate")
        .map(|f| {
            let text = f["candidate"]["candidate"].as_str().unwrap();
            text.trim_start_matches("candidate:").parse().unwrap()
        })
        .collect();
    assert_eq!(numbers, (0..SIGNALS).collect::<Vec<_>>());
    assert_eq!(frames.last().unwrap()["type"], "reconnect");
    assert_eq!(code, 1012);
    stopping.await.unwrap();
}
