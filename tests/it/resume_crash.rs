//! Sessions that outlive their node: a node killed with SIGKILL mid-call, its sessions taken
//! over by the survivor that reaps it, the signals sent to them meanwhile held in Redis, and
//! resumed by their clients on any node (two survivors in this process, the dying node a
//! `switchboard serve` process, all on one Redis: standalone and Cluster).

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::cluster::{Redis, redis_config};
use crate::resume::{candidate, candidate_number as number};
use crate::support::*;

/// How long a resume may wait for a dead node's session: the lease (1 s) runs out, a survivor
/// reaps it (every half lease) and the client's ask is answered.
const TAKEOVER: Duration = Duration::from_secs(15);

/// The next frame within `limit`, past WebSocket pings.
async fn recv_within(client: &mut Client, limit: Duration) -> Value {
    tokio::time::timeout(limit, client.recv())
        .await
        .expect("a frame within the limit")
}

/// Connects to `/ws` on `node`, sends `resume` for `grant` after `last_seq`, and waits for the
/// answer (a dead node's session is answered once a survivor took it over).
async fn resume_within(
    node: &TestNode,
    grant: &(String, String),
    last_seq: u64,
) -> (Client, Value) {
    let mut client = connect(&node.ws("/ws")).await.expect("upgrade accepted");
    assert_eq!(client.recv().await, json!({"type": "auth_required"}));
    client
        .send(json!({"type": "resume", "session": grant.0, "resume_token": grant.1, "last_seq": last_seq}))
        .await;
    client.last_seq = last_seq;
    let answer = recv_within(&mut client, TAKEOVER).await;
    (client, answer)
}

/// Waits until the killed process has exited (its sockets are closed).
async fn dead(node: &mut NodeProcess) {
    let deadline = Instant::now() + WAIT;
    while node.exited().is_none() {
        assert!(Instant::now() < deadline, "the node did not die");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Waits until the survivors hold `n` sessions taken over from the dead node.
async fn adopted(survivors: &[TestNode], n: usize) {
    let deadline = Instant::now() + TAKEOVER;
    loop {
        let parked: usize = survivors.iter().map(|s| s.state.resumes.parked()).sum();
        if parked == n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{parked} sessions taken over, not {n}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the process at `addr` is ready (`/readyz` answers 200).
async fn ready(addr: std::net::SocketAddr) {
    let deadline = Instant::now() + TAKEOVER;
    loop {
        let ready = http_client()
            .get(format!("http://{addr}/readyz"))
            .send()
            .await;
        if ready.is_ok_and(|r| r.status() == 200) {
            return;
        }
        assert!(Instant::now() < deadline, "the node did not get ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A `switchboard serve` process on `config`'s Redis and prefix (lease 1 s), ready; and its
/// address.
async fn dying_node(
    redis: &Redis,
    config: &switchboard::config::Config,
) -> (NodeProcess, std::net::SocketAddr) {
    let url = redis.url();
    let env = [
        ("SWITCHBOARD_LISTEN", "127.0.0.1:0"),
        ("SWITCHBOARD_REDIS_URL", url.as_str()),
        ("SWITCHBOARD_REDIS_PREFIX", config.redis.prefix.as_str()),
        ("SWITCHBOARD_LEASE_TTL", "1s"),
        ("SWITCHBOARD_IP_UPGRADE_BURST", "200"),
        ("SWITCHBOARD_IP_CONNECTIONS", "200"),
    ];
    let mut node = NodeProcess::start(&env);
    let addr = node.address();
    ready(addr).await;
    (node, addr)
}

/// A cluster config on `redis` whose dead nodes are taken over soon (lease 1 s).
fn crash_config(redis: &Redis) -> switchboard::config::Config {
    let mut config = redis_config(&redis.url());
    config.lease_ttl = Duration::from_secs(1);
    config
}

/// `survivors` nodes in this process and a `switchboard serve` process to kill (and its
/// address), all on `config`.
async fn killable_cluster(
    redis: &Redis,
    config: &switchboard::config::Config,
    survivors: usize,
) -> (Vec<TestNode>, NodeProcess, std::net::SocketAddr) {
    let nodes = crate::cluster::spawn_cluster(survivors, config);
    let (dying, addr) = dying_node(redis, config).await;
    (nodes, dying, addr)
}

/// Joins `room` on the process at `addr` as `user` with `client_id`.
async fn join_process(
    addr: std::net::SocketAddr,
    room: &str,
    user: &str,
    client_id: &str,
) -> Client {
    let url = format!(
        "ws://{addr}/ws/{room}?token={}&client_id={client_id}",
        token(user)
    );
    let mut client = connect(&url).await.expect("upgrade accepted");
    client.recv_type("auth_success").await;
    client.client_id = client_id.to_owned();
    client.recv_type("users_in_room").await;
    client
}

/// Bob (room `r`) and Dave (room `d`) are on a node that is killed with SIGKILL mid-call; Alice
/// and Carol are on the survivors. Alice signals Bob at once (before anyone reaped the dead
/// node: held), Bob resumes on a survivor at once (his resume waits for the takeover); Dave only
/// after the takeover, and gets what Carol sent him meanwhile. Each resumes with his client id
/// and room, gets every signal sent after the node died once and in order, and nobody sees
/// anyone leave or join or gets an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Redis: run scripts/test"]
async fn sessions_of_a_node_killed_mid_call_resume_on_the_survivors() {
    for redis in [Redis::Standalone, Redis::Cluster] {
        let (survivors, mut dying, addr) = killable_cluster(&redis, &crash_config(&redis), 2).await;
        let mut bob = join_process(addr, "r", "bob", "b1").await;
        let mut dave = join_process(addr, "d", "dave", "d1").await;
        let (mut alice, _) = Client::join(&survivors[0], "r", "alice", "a1").await;
        let (mut carol, _) = Client::join(&survivors[1], "d", "carol", "c1").await;
        bob.recv_type("user_joined").await;
        dave.recv_type("user_joined").await;
        // Mid-call: an offer each way, then the node dies.
        alice.send(candidate(0)).await;
        assert_eq!(number(&bob.recv_type("ice_candidate").await), 0);
        let to_dave = |n: u32| {
            let mut c = candidate(n);
            c["to"] = json!("d1");
            c
        };
        carol.send(to_dave(0)).await;
        assert_eq!(number(&dave.recv_type("ice_candidate").await), 0);
        dying.signal("KILL");
        dead(&mut dying).await;

        // Alice goes on: her signals wait in Redis for whoever takes Bob's session over, and
        // so does an offer to Bob by user.
        for n in 1..=10 {
            alice.send(candidate(n)).await;
        }
        let offer = json!({"type": "webrtc_offer", "target_user_id": "bob", "data": {"sdp": "o"}});
        alice.send(offer).await;
        // Bob at once: his resume waits until a survivor took his session over.
        let grant = bob.resume.clone().unwrap();
        let (mut bob2, answer) = resume_within(&survivors[1], &grant, bob.last_seq).await;
        assert_eq!(answer["type"], "resumed", "{answer}");
        assert_eq!(answer["client_id"], "b1");
        assert_eq!(answer["rooms"], json!(["r"]));
        for n in 11..=20 {
            alice.send(candidate(n)).await;
        }
        // The candidates in order, and the offer once (it came by another path).
        let (mut candidates, mut offers) = (Vec::new(), 0);
        while candidates.len() < 20 || offers < 1 {
            let frame = bob2.recv().await;
            match frame["type"].as_str() {
                Some("ice_candidate") => candidates.push(number(&frame)),
                Some("webrtc_offer") => {
                    assert_eq!(frame["from_user_id"], "alice", "{frame}");
                    offers += 1;
                }
                _ => panic!("unexpected {frame}"),
            }
        }
        assert_eq!(candidates, (1..=20).collect::<Vec<_>>());

        // Dave after the takeover: what Carol sent meanwhile waited for him.
        adopted(&survivors, 1).await;
        for n in 1..=10 {
            carol.send(to_dave(n)).await;
        }
        carol.expect_quiet().await;
        let grant = dave.resume.clone().unwrap();
        // The survivor holding his session knows only its token's hash, and checks it.
        let forged = (grant.0.clone(), "A".repeat(43));
        let (_, answer) = resume_within(&survivors[0], &forged, dave.last_seq).await;
        assert_eq!(answer["reason"], "invalid_token", "{answer}");
        let (mut dave2, answer) = resume_within(&survivors[0], &grant, dave.last_seq).await;
        assert_eq!(answer["type"], "resumed", "{answer}");
        assert_eq!(answer["client_id"], "d1");
        assert_eq!(answer["rooms"], json!(["d"]));
        for n in 1..=10 {
            assert_eq!(number(&dave2.recv_type("ice_candidate").await), n);
        }
        carol.send(to_dave(11)).await;
        assert_eq!(number(&dave2.recv_type("ice_candidate").await), 11);

        // Nobody left or joined, nothing came twice, nothing was refused.
        for client in [&mut alice, &mut carol, &mut bob2, &mut dave2] {
            client.expect_quiet().await;
        }
        adopted(&survivors, 0).await;
        for node in survivors {
            node.shutdown();
        }
    }
}

/// A session of a killed node that its client never resumes is taken over, then leaves when
/// the survivor's window ends: its room hears `user_left` once, after the window, and nothing
/// of it remains.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Redis: run scripts/test"]
async fn a_session_of_a_killed_node_leaves_when_its_window_ends() {
    let redis = Redis::Standalone;
    let mut config = crash_config(&redis);
    config.resume_window = Duration::from_secs(2);
    let (mut survivors, dying, addr) = killable_cluster(&redis, &config, 1).await;
    let survivor = survivors.remove(0);
    let _bob = join_process(addr, "r", "bob", "b1").await;
    let (mut alice, _) = Client::join(&survivor, "r", "alice", "a1").await;
    let killed = Instant::now();
    dying.signal("KILL");
    adopted(std::slice::from_ref(&survivor), 1).await;
    let left = recv_within(&mut alice, TAKEOVER).await;
    assert_eq!(
        left,
        json!({"type":"user_left","room":"r","client_id":"b1","username":"name-bob","user_id":"bob"})
    );
    assert!(
        killed.elapsed() >= config.resume_window,
        "left {:?} after the kill, within the window",
        killed.elapsed()
    );
    adopted(std::slice::from_ref(&survivor), 0).await;
    let (_, body) = crate::cluster::get(&survivor, "/api/rooms/r", "alice").await;
    assert_eq!(crate::cluster::member_ids(&body), ["a1"]);
    let (_, body) = crate::cluster::get(&survivor, "/api/users/bob/presence", "bob").await;
    assert_eq!(body, json!({"user_id":"bob","online":false,"devices":0}));
    alice.expect_quiet().await;
    survivor.shutdown();
}

/// Sessions taken over while signals keep coming: 24 pairs, each Bob on a node killed with
/// SIGKILL, each Alice on a survivor signalling him without pause from before the kill until
/// after the takeover. What reaches a survivor while it registers a session (presence points at
/// it a moment before) waits for the registration. Each Bob resumes and gets every candidate
/// once and in order, and no Alice gets an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Redis: run scripts/test"]
async fn signals_sent_through_a_takeover_wait_for_the_session() {
    const PAIRS: usize = 24;
    let redis = Redis::Standalone;
    let (survivors, mut dying, addr) = killable_cluster(&redis, &crash_config(&redis), 2).await;
    let (mut alices, mut bobs) = (Vec::new(), Vec::new());
    for i in 0..PAIRS {
        let room = format!("r{i}");
        let mut bob = join_process(addr, &room, &format!("bob{i}"), &format!("b{i}")).await;
        let node = &survivors[i % 2];
        let (alice, _) = Client::join(node, &room, &format!("alice{i}"), &format!("a{i}")).await;
        bob.recv_type("user_joined").await;
        alices.push(alice);
        bobs.push(bob);
    }
    dying.signal("KILL");
    dead(&mut dying).await;

    // A candidate to each Bob every 10 ms (fewer than the 256 held for a session in the
    // lease's time), through the takeover and 30 more after it.
    let (mut n, mut after) = (0, 0);
    let deadline = Instant::now() + TAKEOVER;
    while after < 30 {
        assert!(Instant::now() < deadline, "never taken over");
        n += 1;
        for (i, alice) in alices.iter_mut().enumerate() {
            let mut c = candidate(n);
            c["to"] = json!(format!("b{i}"));
            alice.send(c).await;
        }
        let parked: usize = survivors.iter().map(|s| s.state.resumes.parked()).sum();
        after += usize::from(parked == PAIRS);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for (i, bob) in bobs.iter().enumerate() {
        let grant = bob.resume.clone().unwrap();
        let (mut bob2, answer) = resume_within(&survivors[i % 2], &grant, bob.last_seq).await;
        assert_eq!(answer["type"], "resumed", "{answer}");
        let mut got = Vec::new();
        while got.last() != Some(&n) {
            let Some(frame) = bob2.try_recv(Duration::from_secs(3)).await else {
                break;
            };
            assert_eq!(
                frame["type"], "ice_candidate",
                "b{i} after {got:?}: {frame}"
            );
            got.push(number(&frame));
        }
        assert_eq!(got, (1..=n).collect::<Vec<_>>(), "b{i}");
        bob2.expect_quiet().await;
    }
    for alice in &mut alices {
        alice.expect_quiet().await;
    }
    for node in survivors {
        node.shutdown();
    }
}

/// Room broadcasts reach the sessions of a node that died. Bob (on a node killed with SIGKILL),
/// Alice and Carol (each on a survivor) share a room; Alice broadcasts before the takeover and
/// after it. Bob resumes and gets every broadcast once and in order; Carol, who heard each at
/// once, gets none twice; nobody gets an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Redis: run scripts/test"]
async fn room_broadcasts_reach_the_sessions_of_a_killed_node() {
    for redis in [Redis::Standalone, Redis::Cluster] {
        let (survivors, mut dying, addr) = killable_cluster(&redis, &crash_config(&redis), 2).await;
        let mut bob = join_process(addr, "r", "bob", "b1").await;
        let (mut alice, _) = Client::join(&survivors[0], "r", "alice", "a1").await;
        let (mut carol, _) = Client::join(&survivors[1], "r", "carol", "c1").await;
        bob.recv_type("user_joined").await;
        bob.recv_type("user_joined").await;
        alice.recv_type("user_joined").await;
        let broadcast = |n: u32| {
            let mut c = candidate(n);
            c.as_object_mut().unwrap().remove("to");
            c
        };
        alice.send(broadcast(0)).await;
        assert_eq!(number(&bob.recv_type("ice_candidate").await), 0);
        assert_eq!(number(&carol.recv_type("ice_candidate").await), 0);
        dying.signal("KILL");
        dead(&mut dying).await;

        for n in 1..=10 {
            alice.send(broadcast(n)).await;
            assert_eq!(number(&carol.recv_type("ice_candidate").await), n);
        }
        adopted(&survivors, 1).await;
        for n in 11..=20 {
            alice.send(broadcast(n)).await;
            assert_eq!(number(&carol.recv_type("ice_candidate").await), n);
        }
        let grant = bob.resume.clone().unwrap();
        let (mut bob2, answer) = resume_within(&survivors[0], &grant, bob.last_seq).await;
        assert_eq!(answer["type"], "resumed", "{answer}");
        for n in 1..=20 {
            let frame = bob2.recv_type("ice_candidate").await;
            assert_eq!(number(&frame), n, "{frame}");
            assert_eq!(frame["from"], "a1");
        }
        for client in [&mut alice, &mut carol, &mut bob2] {
            client.expect_quiet().await;
        }
        for node in survivors {
            node.shutdown();
        }
    }
}
