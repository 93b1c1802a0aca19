//! Resuming a session on another node of a cluster (three nodes on Redis, standalone and
//! Cluster): the node that holds the session hands it over, and the client gets every signal
//! after its `last_seq` once and in order, while its peers keep signalling it and see no
//! `user_left` or `user_joined`. Also: a session still live on its node taken over remotely, a
//! remote resume as the first frame after a URL token, a draining node handing all its sessions
//! over, a storm of 1,000 remote resumes, and refusals asked remotely (bad tokens, no session,
//! a window that ended).

use std::time::{Duration, Instant};

use serde_json::json;

use crate::cluster::{Redis, redis_config, spawn_cluster};
use crate::resume::{candidate, candidate_number as number, parked, resume};
use crate::support::*;

/// Waits until `node` holds `n` connections (a handed-over session's old one lets go).
async fn connections(node: &TestNode, n: usize) {
    let deadline = Instant::now() + WAIT;
    while node.state.hub.registry.connections() != n {
        assert!(Instant::now() < deadline, "not {n} connections");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Alice sends candidates `from..=to`, a few at a time, while the caller goes on.
fn keep_sending(mut alice: Client, from: u32, to: u32) -> tokio::task::JoinHandle<Client> {
    tokio::spawn(async move {
        for n in from..=to {
            alice.send(candidate(n)).await;
            if n % 4 == 0 {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
        alice
    })
}

/// Reads Bob's frames until he has candidates up to `to`, `signals` room broadcasts and
/// `offers` user-addressed offers; returns the candidates' numbers.
async fn collect(bob: &mut Client, to: u32, signals: usize, offers: usize) -> Vec<u32> {
    let mut candidates = Vec::new();
    let (mut s, mut o) = (0, 0);
    while candidates.last() != Some(&to) || s < signals || o < offers {
        let frame = bob.recv().await;
        match frame["type"].as_str() {
            Some("ice_candidate") => candidates.push(number(&frame)),
            Some("signal") => s += 1,
            Some("webrtc_offer") => o += 1,
            _ => panic!("unexpected {frame}"),
        }
    }
    assert_eq!((s, o), (signals, offers), "once each");
    candidates
}

/// Bob drops on node 0 mid-negotiation and resumes on node 1 while Alice (node 1) keeps
/// sending and Carol (node 2) broadcasts and signals him by user; then drops again and resumes
/// on node 2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Redis: run scripts/test"]
async fn a_dropped_session_resumes_on_another_node_then_on_a_third() {
    for redis in [Redis::Standalone, Redis::Cluster] {
        let nodes = spawn_cluster(3, &redis_config(&redis.url()));
        let (mut bob, _) = Client::join(&nodes[0], "r", "bob", "b1").await;
        let (mut alice, _) = Client::join(&nodes[1], "r", "alice", "a1").await;
        let (mut carol, _) = Client::join(&nodes[2], "r", "carol", "c1").await;
        bob.recv_type("user_joined").await;
        bob.recv_type("user_joined").await;
        alice.recv_type("user_joined").await;
        let grant = bob.resume.clone().unwrap();
        alice.send(candidate(1)).await;
        assert_eq!(number(&bob.recv_type("ice_candidate").await), 1);
        let last_seq = bob.last_seq;
        drop(bob);
        parked(&nodes[0], 1).await;

        for n in 2..=20 {
            alice.send(candidate(n)).await;
        }
        carol
            .send(json!({"type": "signal", "data": {"note": "from carol"}}))
            .await;
        carol
            .send(json!({"type": "webrtc_offer", "target_user_id": "bob", "data": {"type": "offer", "sdp": "v=0"}}))
            .await;
        assert_eq!(
            alice.recv_type("signal").await["data"]["note"],
            "from carol"
        );

        // Alice goes on sending while Bob resumes on her node.
        let sending = keep_sending(alice, 21, 120);
        let (mut bob, answer) = resume(&nodes[1], "/ws", &grant, last_seq).await;
        assert_eq!(
            answer,
            json!({"type": "resumed", "session": grant.0, "client_id": "b1", "rooms": ["r"]})
        );
        let mut alice = sending.await.unwrap();
        carol
            .send(json!({"type": "signal", "data": {"note": "after"}}))
            .await;
        assert_eq!(alice.recv_type("signal").await["data"]["note"], "after");
        let got = collect(&mut bob, 120, 2, 1).await;
        assert_eq!(got, (2..=120).collect::<Vec<_>>(), "all, once, in order");
        connections(&nodes[0], 0).await;
        assert_eq!(nodes[0].state.resumes.parked(), 0);
        bob.expect_quiet().await;
        alice.expect_quiet().await;
        carol.expect_quiet().await;

        // It is the same session: peers reach it by client id and user, and it reaches them.
        carol
            .send(json!({"type": "offer", "to": "b1", "offer": {"type": "offer", "sdp": "v=0"}}))
            .await;
        assert_eq!(bob.recv_type("offer").await["from"], "c1");
        bob.send(json!({"type": "answer", "to": "a1", "answer": {"type": "answer", "sdp": "v=0"}}))
            .await;
        assert_eq!(alice.recv_type("answer").await["from"], "b1");
        bob.send(json!({"type": "signal", "data": {"note": "from bob"}}))
            .await;
        assert_eq!(carol.recv_type("signal").await["data"]["note"], "from bob");
        assert_eq!(alice.recv_type("signal").await["data"]["note"], "from bob");

        // Again, from node 1 to node 2.
        let last_seq = bob.last_seq;
        drop(bob);
        parked(&nodes[1], 1).await;
        for n in 121..=140 {
            alice.send(candidate(n)).await;
        }
        let sending = keep_sending(alice, 141, 200);
        let (mut bob, answer) = resume(&nodes[2], "/ws", &grant, last_seq).await;
        assert_eq!(answer["type"], "resumed", "{answer}");
        let mut alice = sending.await.unwrap();
        let got = collect(&mut bob, 200, 0, 0).await;
        assert_eq!(got, (121..=200).collect::<Vec<_>>(), "all, once, in order");
        connections(&nodes[1], 1).await;
        bob.expect_quiet().await;
        alice.expect_quiet().await;
        carol.expect_quiet().await;
        for node in nodes {
            node.shutdown();
        }
    }
}

/// The client vanishes again while its session is being handed to node 1 (it sends `resume`
/// and drops at once): node 1 takes the session and parks it, with everything, and the client
/// resumes it on node 2 from the same `last_seq`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Redis: run scripts/test"]
async fn a_client_gone_during_its_hand_off_resumes_on_a_third_node_with_all_of_it() {
    let nodes = spawn_cluster(3, &redis_config(&Redis::Standalone.url()));
    let (mut bob, _) = Client::join(&nodes[0], "r", "bob", "b1").await;
    let (mut alice, _) = Client::join(&nodes[2], "r", "alice", "a1").await;
    bob.recv_type("user_joined").await;
    let grant = bob.resume.clone().unwrap();
    alice.send(candidate(1)).await;
    assert_eq!(number(&bob.recv_type("ice_candidate").await), 1);
    let last_seq = bob.last_seq;
    drop(bob);
    parked(&nodes[0], 1).await;
    for n in 2..=10 {
        alice.send(candidate(n)).await;
    }

    // The resume reaches node 1, and the client is gone before its answer.
    let mut gone = connect(&nodes[1].ws("/ws"))
        .await
        .expect("upgrade accepted");
    assert_eq!(gone.recv().await, json!({"type": "auth_required"}));
    gone.send(json!({"type": "resume", "session": grant.0, "resume_token": grant.1, "last_seq": last_seq}))
        .await;
    drop(gone);
    // Node 1 took it over from node 0, and holds it parked.
    parked(&nodes[1], 1).await;
    connections(&nodes[0], 0).await;
    assert_eq!(nodes[0].state.resumes.parked(), 0);
    for n in 11..=20 {
        alice.send(candidate(n)).await;
    }

    let (mut bob, answer) = resume(&nodes[2], "/ws/r", &grant, last_seq).await;
    assert_eq!(answer["type"], "resumed", "{answer}");
    let got = collect(&mut bob, 20, 0, 0).await;
    assert_eq!(got, (2..=20).collect::<Vec<_>>(), "all, once, in order");
    bob.expect_quiet().await;
    alice.expect_quiet().await;
    assert_eq!(nodes[1].state.resumes.parked(), 0);
    for node in nodes {
        node.shutdown();
    }
}

/// A draining node goes on relaying what a client sent before it read the `reconnect` notice:
/// what Bob sends as the drain begins reaches Alice on another node, all of it, in order, and
/// Bob's session resumes there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Redis: run scripts/test"]
async fn what_a_client_sent_before_it_read_the_drain_notice_still_arrives() {
    let mut nodes = spawn_cluster(2, &redis_config(&Redis::Standalone.url()));
    let draining = nodes.remove(0);
    let (mut bob, _) = Client::join(&draining, "r", "bob", "b1").await;
    let (mut alice, _) = Client::join(&nodes[0], "r", "alice", "a1").await;
    bob.recv_type("user_joined").await;
    let state = draining.state.clone();
    let stopped = tokio::task::spawn_blocking(move || draining.shutdown());
    let deadline = Instant::now() + WAIT;
    while !state.is_draining() {
        assert!(Instant::now() < deadline, "the node never drained");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    // Bob has not read the notice yet: he sends on.
    for n in 1..=30 {
        let to_alice = json!({"type": "ice_candidate", "to": "a1", "candidate": {"candidate": format!("candidate:{n}"), "sdpMid": "0"}});
        bob.send(to_alice).await;
    }
    for n in 1..=30 {
        assert_eq!(number(&alice.recv_type("ice_candidate").await), n);
    }
    // Then he reads the notice and resumes on Alice's node.
    loop {
        if bob.recv().await["type"] == "reconnect" {
            break;
        }
    }
    let grant = bob.resume.clone().unwrap();
    let (mut bob, answer) = resume(&nodes[0], "/ws", &grant, bob.last_seq).await;
    assert_eq!(answer["type"], "resumed", "{answer}");
    bob.expect_quiet().await;
    alice.expect_quiet().await;
    stopped.await.unwrap();
    for node in nodes {
        node.shutdown();
    }
}

/// A client that connects afresh after a drain's notice (it does not resume) takes its client
/// id back on another node: the session the drain parked for it ends at once, not when the
/// draining node stops waiting for resumes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Redis: run scripts/test"]
async fn a_drained_session_ends_when_its_client_connects_afresh_elsewhere() {
    let mut nodes = spawn_cluster(2, &redis_config(&Redis::Standalone.url()));
    let draining = nodes.remove(0);
    let (mut bob, _) = Client::join(&draining, "r", "bob", "b1").await;
    let (_alice, _) = Client::join(&nodes[0], "r", "alice", "a1").await;
    bob.recv_type("user_joined").await;
    let state = draining.state.clone();
    let stopped = tokio::task::spawn_blocking(move || draining.shutdown());
    let (_, code) = bob.drain_until_close().await;
    assert_eq!(code, 1012);
    let deadline = Instant::now() + WAIT;
    while state.resumes.parked() != 1 {
        assert!(Instant::now() < deadline, "the session was not parked");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Bob comes back afresh, with his client id, on Alice's node.
    let (mut bob, _) = Client::join(&nodes[0], "r", "bob", "b1").await;
    let claimed = Instant::now();
    while state.resumes.parked() != 0 {
        // The draining node gives up on resumes 3 s after its last connection ended.
        assert!(
            claimed.elapsed() < Duration::from_secs(2),
            "the parked session lingered"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    stopped.await.unwrap();
    bob.expect_quiet().await;
    for node in nodes {
        node.shutdown();
    }
}

/// Asked remotely: a forged token and another session's token are `invalid_token` (the session
/// stays parked and resumes afterwards), a session nobody holds is `expired`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Redis: run scripts/test"]
async fn remote_resumes_with_bad_tokens_or_no_session_are_refused() {
    for redis in [Redis::Standalone, Redis::Cluster] {
        let nodes = spawn_cluster(3, &redis_config(&redis.url()));
        let (bob, _) = Client::join(&nodes[0], "r", "bob", "b1").await;
        let (mut alice, _) = Client::join(&nodes[1], "r", "alice", "a1").await;
        let grant = bob.resume.clone().unwrap();
        let other = alice.resume.clone().unwrap();
        let last_seq = bob.last_seq;
        drop(bob);
        parked(&nodes[0], 1).await;

        let forged = (grant.0.clone(), "A".repeat(43));
        let (_, answer) = resume(&nodes[2], "/ws", &forged, last_seq).await;
        assert_eq!(answer["type"], "resume_failed", "{answer}");
        assert_eq!(answer["reason"], "invalid_token");
        let others = (grant.0.clone(), other.1.clone());
        let (_, answer) = resume(&nodes[1], "/ws", &others, last_seq).await;
        assert_eq!(answer["reason"], "invalid_token", "{answer}");
        let nobody = ("A".repeat(22), grant.1.clone());
        let (_, answer) = resume(&nodes[2], "/ws", &nobody, last_seq).await;
        assert_eq!(answer["reason"], "expired", "{answer}");
        assert_eq!(nodes[0].state.resumes.parked(), 1);

        alice.send(candidate(1)).await;
        let (mut bob, answer) = resume(&nodes[2], "/ws", &grant, last_seq).await;
        assert_eq!(answer["type"], "resumed", "{answer}");
        // Alice's arrival went out before the drop, unread: replayed.
        assert_eq!(bob.recv_type("user_joined").await["client_id"], "a1");
        assert_eq!(number(&bob.recv_type("ice_candidate").await), 1);
        alice.expect_quiet().await;
        for node in nodes {
            node.shutdown();
        }
    }
}

/// A storm: 1,000 sessions parked on node 0 resume at once, half on node 1 and half on node
/// 2; each gets exactly the two signals it missed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Redis: run scripts/test"]
async fn a_storm_of_remote_resumes_each_gets_exactly_what_it_missed() {
    const CLIENTS: usize = 1000;
    for redis in [Redis::Standalone, Redis::Cluster] {
        let nodes = spawn_cluster(3, &redis_config(&redis.url()));
        let (mut alice, _) = Client::join(&nodes[1], "storm", "alice", "a1").await;
        let mut grants = Vec::with_capacity(CLIENTS);
        for n in 0..CLIENTS {
            let id = format!("c{n}");
            let mut client = Client::user(&nodes[0], &format!("user{n}"), &id).await;
            grants.push((id, client.resume.take().unwrap()));
            drop(client);
        }
        parked(&nodes[0], CLIENTS).await;
        for (id, _) in &grants {
            for n in 0..2 {
                alice
                    .send(json!({"type": "webrtc_ice_candidate", "target_user_id": format!("user{}", &id[1..]), "data": {"n": n}}))
                    .await;
            }
        }
        alice.expect_quiet().await;
        let tasks: Vec<_> = grants
            .into_iter()
            .enumerate()
            .map(|(n, (id, grant))| {
                let url = nodes[1 + n % 2].ws("/ws");
                tokio::spawn(async move {
                    let mut client = connect(&url).await.expect("upgrade accepted");
                    client.recv_type("auth_required").await;
                    client
                        .send(json!({"type": "resume", "session": grant.0, "resume_token": grant.1, "last_seq": 0}))
                        .await;
                    let answer = client.recv_type("resumed").await;
                    assert_eq!(answer["client_id"], id.as_str());
                    for n in 0..2 {
                        let frame = client.recv_type("webrtc_ice_candidate").await;
                        assert_eq!(frame["data"]["n"], n);
                    }
                    client.expect_quiet().await;
                    client
                })
            })
            .collect();
        let mut clients = Vec::with_capacity(CLIENTS);
        for task in tasks {
            clients.push(task.await.unwrap());
        }
        connections(&nodes[0], 0).await;
        assert_eq!(nodes[0].state.resumes.parked(), 0);
        let moved =
            nodes[1].state.hub.registry.connections() + nodes[2].state.hub.registry.connections();
        assert_eq!(moved, CLIENTS + 1);
        drop(clients);
        for node in nodes {
            node.shutdown();
        }
    }
}

/// Node 0 drains with 200 clients while Alice (node 1) signals each of them: every client
/// gets the `reconnect` notice with its session, resumes on node 1 or 2, and has every signal
/// once and in order across its two connections; Alice sees nobody leave or join.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Redis: run scripts/test"]
async fn a_draining_node_hands_every_session_to_the_nodes_its_clients_resume_on() {
    const CLIENTS: usize = 200;
    for redis in [Redis::Standalone, Redis::Cluster] {
        let mut nodes = spawn_cluster(3, &redis_config(&redis.url()));
        let draining = nodes.remove(0);
        let mut alice = Client::user(&nodes[0], "alice", "a1").await;
        let mut clients = Vec::with_capacity(CLIENTS);
        for n in 0..CLIENTS {
            let client = Client::user(&draining, &format!("user{n}"), &format!("c{n}")).await;
            clients.push(client);
        }
        let signal = |n: usize, k: usize| json!({"type": "webrtc_ice_candidate", "target_user_id": format!("user{n}"), "data": {"k": k}});
        for n in 0..CLIENTS {
            alice.send(signal(n, 0)).await;
        }
        let stopped = tokio::task::spawn_blocking(move || draining.shutdown());
        // Alice goes on while the node drains and its clients move.
        let sending = tokio::spawn(async move {
            for k in 1..=3 {
                for n in 0..CLIENTS {
                    alice.send(signal(n, k)).await;
                }
            }
            alice
        });
        let tasks: Vec<_> = clients
            .into_iter()
            .enumerate()
            .map(|(n, mut client)| {
                let url = nodes[n % 2].ws("/ws");
                tokio::spawn(async move {
                    let (frames, code) = client.drain_until_close().await;
                    assert_eq!(code, 1012);
                    // The notice, then whatever was queued behind it.
                    let notice = frames.iter().find(|f| f["type"] == "reconnect");
                    let notice = notice.unwrap_or_else(|| panic!("no notice in {frames:?}"));
                    assert_eq!(notice["reason"], "shutdown");
                    let mut got: Vec<u64> = frames
                        .iter()
                        .filter(|f| f["type"] == "webrtc_ice_candidate")
                        .map(|f| f["data"]["k"].as_u64().unwrap())
                        .collect();
                    let grant = client.resume.clone().unwrap();
                    let mut again = connect(&url).await.expect("upgrade accepted");
                    again.recv_type("auth_required").await;
                    again
                        .send(json!({"type": "resume", "session": grant.0, "resume_token": grant.1, "last_seq": client.last_seq}))
                        .await;
                    again.last_seq = client.last_seq;
                    assert_eq!(again.recv_type("resumed").await["client_id"], format!("c{n}"));
                    while got.len() < 4 {
                        let frame = again.recv().await;
                        match frame["type"].as_str() {
                            Some("webrtc_ice_candidate") => {
                                got.push(frame["data"]["k"].as_u64().unwrap());
                            }
                            _ => panic!("unexpected {frame}"),
                        }
                    }
                    assert_eq!(got, vec![0, 1, 2, 3], "client {n}: all, once, in order");
                    again
                })
            })
            .collect();
        let mut moved = Vec::with_capacity(CLIENTS);
        for task in tasks {
            moved.push(task.await.unwrap());
        }
        let mut alice = sending.await.unwrap();
        stopped.await.unwrap();
        for client in &mut moved {
            client.expect_quiet().await;
        }
        alice.expect_quiet().await;
        let held =
            nodes[0].state.hub.registry.connections() + nodes[1].state.hub.registry.connections();
        assert_eq!(held, CLIENTS + 1);
        for node in nodes {
            node.shutdown();
        }
    }
}

/// A session still live on node 0 (its client saw the connection die first) is taken over from
/// node 1: the old connection is let go (4001) and what it was written after `last_seq` is
/// replayed. Then, parked on node 1, it is resumed on node 2 by a connection that carried a
/// token in its URL (`resume` as its first frame).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Redis: run scripts/test"]
async fn a_live_session_is_taken_over_remotely_and_a_url_token_may_resume_remotely() {
    for redis in [Redis::Standalone, Redis::Cluster] {
        let nodes = spawn_cluster(3, &redis_config(&redis.url()));
        let (mut old, _) = Client::join(&nodes[0], "r", "bob", "b1").await;
        let (mut alice, _) = Client::join(&nodes[1], "r", "alice", "a1").await;
        old.recv_type("user_joined").await;
        let grant = old.resume.clone().unwrap();
        alice.send(candidate(1)).await;
        assert_eq!(number(&old.recv_type("ice_candidate").await), 1);
        let last_seq = old.last_seq;
        alice.send(candidate(2)).await;
        alice.send(candidate(3)).await;
        alice.expect_quiet().await;

        let (mut bob, answer) = resume(&nodes[1], "/ws", &grant, last_seq).await;
        assert_eq!(answer["type"], "resumed", "{answer}");
        assert_eq!(collect(&mut bob, 3, 0, 0).await, vec![2, 3]);
        let (_, code) = old.drain_until_close().await;
        assert_eq!(code, 4001);
        connections(&nodes[0], 0).await;
        alice.send(candidate(4)).await;
        assert_eq!(number(&bob.recv_type("ice_candidate").await), 4);

        let last_seq = bob.last_seq;
        drop(bob);
        parked(&nodes[1], 1).await;
        alice.send(candidate(5)).await;
        let url = format!("{}?token={}", nodes[2].ws("/ws"), token("bob"));
        let mut bob = connect(&url).await.expect("upgrade accepted");
        assert_eq!(bob.recv().await["type"], "auth_success");
        bob.send(json!({"type": "resume", "session": grant.0, "resume_token": grant.1, "last_seq": last_seq}))
            .await;
        bob.last_seq = last_seq;
        let answer = bob.recv().await;
        assert_eq!(
            answer,
            json!({"type": "resumed", "session": grant.0, "client_id": "b1", "rooms": ["r"]})
        );
        assert_eq!(number(&bob.recv_type("ice_candidate").await), 5);
        bob.send(json!({"type": "answer", "to": "a1", "answer": {"type": "answer", "sdp": "v=0"}}))
            .await;
        assert_eq!(alice.recv_type("answer").await["from"], "b1");
        alice.expect_quiet().await;
        bob.expect_quiet().await;
        for node in nodes {
            node.shutdown();
        }
    }
}

/// Past its window a session parked on node 0 has left (its peers saw `user_left`), and a
/// resume on node 1 is `expired`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Redis: run scripts/test"]
async fn past_the_window_a_remote_resume_is_expired() {
    for redis in [Redis::Standalone, Redis::Cluster] {
        let mut config = redis_config(&redis.url());
        config.resume_window = Duration::from_millis(300);
        let nodes = spawn_cluster(2, &config);
        let (bob, _) = Client::join(&nodes[0], "r", "bob", "b1").await;
        let (mut alice, _) = Client::join(&nodes[1], "r", "alice", "a1").await;
        let grant = bob.resume.clone().unwrap();
        let last_seq = bob.last_seq;
        drop(bob);
        assert_eq!(alice.recv_type("user_left").await["client_id"], "b1");
        let (_, answer) = resume(&nodes[1], "/ws", &grant, last_seq).await;
        assert_eq!(answer["type"], "resume_failed", "{answer}");
        assert_eq!(answer["reason"], "expired");
        alice.expect_quiet().await;
        for node in nodes {
            node.shutdown();
        }
    }
}
