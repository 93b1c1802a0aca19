//! Malformed and hostile frames: each gets a clear error, the connection stays usable (except
//! over the size limit), and nobody else notices.

use serde_json::json;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

use crate::support::*;

#[tokio::test]
async fn every_bad_frame_gets_its_error_code_and_the_connection_survives() {
    let node = spawn_node(test_config());
    let (mut a, _) = Client::join(&node, "r", "alice", "a1").await;
    let (mut b, _) = Client::join(&node, "r", "bob", "b1").await;
    a.recv_type("user_joined").await;

    let deep = format!(
        "{{\"type\":\"offer\",\"offer\":{}1{}}}",
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    let cases: Vec<(String, &str)> = vec![
        ("\u{0}\u{1}\u{2}garbage".into(), "invalid_json"),
        ("".into(), "invalid_json"),
        ("[1,2,3]".into(), "invalid_json"),
        ("null".into(), "invalid_json"),
        ("{\"type\":\"offer\"".into(), "invalid_json"),
        (deep, "invalid_json"),
        ("{}".into(), "missing_field"),
        (r#"{"type":null}"#.into(), "missing_field"),
        (r#"{"type":["offer"]}"#.into(), "invalid_field"),
        (r#"{"type":"launch_missiles"}"#.into(), "unknown_type"),
        (
            format!(r#"{{"type":"{}"}}"#, "x".repeat(50_000)),
            "unknown_type",
        ),
        (
            r#"{"type":"join","room":"ünïcödé"}"#.into(),
            "invalid_field",
        ),
        (r#"{"type":"join","room":12}"#.into(), "invalid_field"),
        (r#"{"type":"join"}"#.into(), "missing_field"),
        (
            r#"{"type":"offer","to":{"$ne":null}}"#.into(),
            "invalid_field",
        ),
        (
            r#"{"type":"offer","to":"../../etc"}"#.into(),
            "invalid_field",
        ),
        (
            r#"{"type":"webrtc_offer","target_user_id":42}"#.into(),
            "invalid_field",
        ),
        (
            r#"{"type":"webrtc_offer","target_user_id":""}"#.into(),
            "invalid_field",
        ),
        (
            r#"{"type":"webrtc_offer","data":{}}"#.into(),
            "missing_field",
        ),
    ];
    for (frame, code) in cases {
        a.send_text(&frame).await;
        let e = a.expect_error(code).await;
        assert!(
            e["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty() && m.len() < 300),
            "{e}"
        );
    }
    a.send_raw(Message::binary(vec![0u8, 159, 146, 150])).await;
    a.expect_error("binary_not_supported").await;

    // Still a working connection, and the peer saw none of it.
    a.send(json!({"type":"offer","offer":{"sdp":"ok"},"to":"b1"}))
        .await;
    assert_eq!(b.recv_type("offer").await["offer"]["sdp"], "ok");
    b.expect_quiet().await;
}

#[tokio::test]
async fn text_that_is_not_utf8_closes_with_1007() {
    let node = spawn_node(test_config());
    let (mut a, _) = Client::join(&node, "r", "alice", "a1").await;
    let (mut b, _) = Client::join(&node, "r", "bob", "b1").await;
    a.recv_type("user_joined").await;
    let frame = Frame::message(vec![b'{', 0xff, 0xfe, b'}'], OpCode::Data(Data::Text), true);
    b.send_raw(Message::Frame(frame)).await;
    let (frames, code) = b.drain_until_close().await;
    assert_eq!(code, 1007);
    assert!(
        frames.iter().all(|f| f["code"] == "invalid_json"),
        "{frames:?}"
    );
    assert_eq!(a.recv_type("user_left").await["client_id"], "b1");
    a.expect_quiet().await;
}

#[tokio::test]
async fn a_frame_over_the_limit_closes_with_1009_and_others_carry_on() {
    let node = spawn_node(test_config());
    let (mut a, _) = Client::join(&node, "r", "alice", "a1").await;
    let (mut b, _) = Client::join(&node, "r", "bob", "b1").await;
    let (mut c, _) = Client::join(&node, "r", "carol", "c1").await;
    a.recv_type("user_joined").await;
    a.recv_type("user_joined").await;
    b.recv_type("user_joined").await;

    // Just under the limit is relayed.
    let sdp = "a".repeat(60 * 1024);
    a.send(json!({"type":"offer","offer":{"sdp":sdp},"to":"b1"}))
        .await;
    assert_eq!(
        b.recv_type("offer").await["offer"]["sdp"]
            .as_str()
            .unwrap()
            .len(),
        sdp.len()
    );

    let huge = format!(r#"{{"type":"offer","offer":"{}"}}"#, "x".repeat(200 * 1024));
    a.send_text(&huge).await;
    assert_eq!(a.expect_close().await, 1009);
    assert_eq!(b.recv_type("user_left").await["client_id"], "a1");
    b.send(json!({"type":"answer","answer":{},"to":"c1"})).await;
    assert_eq!(c.recv_type("user_left").await["client_id"], "a1");
    assert_eq!(c.recv_type("answer").await["from"], "b1");
}

#[tokio::test]
async fn forged_sender_fields_are_overwritten() {
    let node = spawn_node(test_config());
    let (mut a, _) = Client::join(&node, "r", "alice", "a1").await;
    let (mut b, _) = Client::join(&node, "r", "bob", "b1").await;
    a.recv_type("user_joined").await;
    a.send(json!({"type":"signal","to":"b1","from":"admin","user_id":"root","username":"root","room":"r","data":"x"}))
        .await;
    let got = b.recv_type("signal").await;
    assert_eq!(
        (
            got["from"].as_str(),
            got["user_id"].as_str(),
            got["username"].as_str()
        ),
        (Some("a1"), Some("alice"), Some("name-alice"))
    );
    a.send(json!({"type":"webrtc_offer","target_user_id":"bob","sender_user_id":"root","from_user_id":"root","data":{}}))
        .await;
    let got = b.recv_type("webrtc_offer").await;
    assert_eq!(
        (got["sender_user_id"].as_str(), got["from_user_id"].as_str()),
        (Some("alice"), Some("alice"))
    );
}

/// A WebSocket whose TCP receive buffer is small, so that once it stops reading the server's
/// writes to it block soon.
async fn unread_socket(
    node: &TestNode,
    path: &str,
) -> tokio_tungstenite::WebSocketStream<tokio::net::TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(node.addr).await.unwrap();
    let (ws, _) = tokio_tungstenite::client_async(node.ws(path), stream)
        .await
        .unwrap();
    ws
}

/// Sends `frame` on `ws` without ever reading, until the server stops reading too (a send
/// waits over a second) or `limit` frames went out.
async fn flood_without_reading(
    ws: &mut tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>,
    frame: &str,
    limit: usize,
) {
    use futures_util::SinkExt;
    for _ in 0..limit {
        let sent = tokio::time::timeout(
            std::time::Duration::from_secs(1),
            ws.send(Message::text(frame)),
        );
        match sent.await {
            Ok(Ok(())) => {}
            Ok(Err(_)) | Err(_) => return,
        }
    }
}

/// Waits until `node` holds no WebSocket (every connection task ended); the limit is generous,
/// as the flood before it competes with the rest of the suite for the machine.
async fn all_connections_end(node: &TestNode, within: std::time::Duration) {
    let deadline = tokio::time::Instant::now() + within;
    while node.state.slots.held() > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "a connection that never reads is still held"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

fn write_bounded() -> switchboard::config::Config {
    switchboard::config::Config {
        write_timeout: std::time::Duration::from_millis(500),
        auth_timeout: std::time::Duration::from_secs(120),
        ..test_config()
    }
}

#[tokio::test]
async fn junk_before_authentication_from_a_client_that_never_reads_is_dropped() {
    let node = spawn_node(write_bounded());
    let mut ws = unread_socket(&node, "/ws").await;
    // Each junk frame gets an error frame the client never reads.
    flood_without_reading(&mut ws, "x", 200_000).await;
    all_connections_end(&node, std::time::Duration::from_secs(30)).await;
    // The node goes on serving others.
    let (mut a, _) = Client::join(&node, "r", "alice", "a1").await;
    a.send(json!({"type": "ping"})).await;
    a.recv_type("pong").await;
}

#[tokio::test]
async fn a_ping_flood_from_a_client_that_never_reads_is_dropped() {
    let node = spawn_node(write_bounded());
    let mut ws = unread_socket(&node, &format!("/ws?token={}", token("mallory"))).await;
    flood_without_reading(&mut ws, r#"{"type":"ping"}"#, 400_000).await;
    all_connections_end(&node, std::time::Duration::from_secs(30)).await;
    let (mut a, _) = Client::join(&node, "r", "alice", "a1").await;
    a.send(json!({"type": "ping"})).await;
    a.recv_type("pong").await;
}

/// Reads `stream` until the server closes it; `false` when it is still open after `within`.
async fn closed_within(stream: &mut tokio::net::TcpStream, within: std::time::Duration) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 1024];
    let drained = tokio::time::timeout(within, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    });
    drained.await.is_ok()
}

#[tokio::test]
async fn a_request_head_that_never_ends_is_cut_off() {
    use tokio::io::AsyncWriteExt;
    let node = spawn_node(switchboard::config::Config {
        header_read_timeout: std::time::Duration::from_millis(300),
        ..test_config()
    });
    // A connection that sends nothing, and one that trickles a header every 100 ms.
    let mut silent = tokio::net::TcpStream::connect(node.addr).await.unwrap();
    let mut trickle = tokio::net::TcpStream::connect(node.addr).await.unwrap();
    trickle
        .write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let (mut reader, mut writer) = trickle.into_split();
    let trickling = tokio::spawn(async move {
        for n in 0..100 {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            let line = format!("X-Slow-{n}: 1\r\n");
            if writer.write_all(line.as_bytes()).await.is_err() {
                return;
            }
        }
    });
    let within = std::time::Duration::from_secs(5);
    assert!(
        closed_within(&mut silent, within).await,
        "a silent connection stays open"
    );
    let ended = tokio::time::timeout(within, async {
        use tokio::io::AsyncReadExt;
        let mut buf = [0u8; 1024];
        while let Ok(n) = reader.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    });
    assert!(ended.await.is_ok(), "a trickling connection stays open");
    trickling.abort();
    // Whole requests are served as before.
    assert_eq!(http_get(node.http("/healthz")).await.unwrap().status(), 200);
}
