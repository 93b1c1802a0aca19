//! Redis presence against a real Redis (run by `scripts/test`): the same answers as the
//! in-process reference for the same operations, reaping of a node that stopped renewing, and
//! reconciliation after Redis lost its data.

use std::sync::Arc;
use std::time::{Duration, Instant};

use fred::interfaces::{ClientLike, KeysInterface, SortedSetsInterface};
use fred::prelude::{Builder, Config};
use fred::types::SetOptions;
use fred::types::scan::Scanner;
use futures_util::TryStreamExt;

use crate::presence::memory::MemoryPresence;
use crate::presence::{Hold, Presence, Reaped};
use crate::protocol::Member;
use crate::protocol::{ClientId, ConnId, NodeId, RoomId, UserId};

fn url(var: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| panic!("{var} is not set: run scripts/test"))
}

fn prefix() -> String {
    format!("presence-{}", uuid::Uuid::new_v4().simple())
}

async fn redis(url: &str, prefix: &str, node: &NodeId, ttl: Duration) -> Arc<dyn Presence> {
    let target = crate::redis::url::parse(url).unwrap();
    let client = crate::redis::client(&target).await.unwrap();
    let keys = crate::redis::Keys::new(prefix);
    let presence = super::RedisPresence::start(client, keys, node.clone(), ttl)
        .await
        .unwrap();
    Arc::new(presence)
}

fn member(node: &NodeId, client: &str, user: &str, conn: u64) -> Member {
    Member {
        client_id: ClientId::parse(client).unwrap(),
        user_id: UserId::parse(user).unwrap(),
        username: format!("name-{user}"),
        conn: ConnId(conn),
        node: node.clone(),
    }
}

fn room(name: &str) -> RoomId {
    RoomId::parse(name).unwrap()
}

/// A sequence of operations; the transcript of every answer.
async fn transcript(p: &dyn Presence, node: &NodeId) -> Vec<String> {
    let mut out = Vec::new();
    let mut log = |what: &str, value: &dyn std::fmt::Debug| out.push(format!("{what}: {value:?}"));
    let a1 = member(node, "a", "alice", 1);
    let a2 = member(node, "a", "alice", 2);
    let m3 = member(node, "a", "mallory", 3);
    let b4 = member(node, "b", "bob", 4);
    let c5 = member(node, "c", "carol", 5);
    let (r, r2) = (room("r"), room("r2"));
    log("claim a1", &p.claim(&a1).await.unwrap());
    log("claim a1 again", &p.claim(&a1).await.unwrap());
    log("join a1", &p.join(&r, &a1, 2).await.unwrap());
    log("claim a2", &p.claim(&a2).await.unwrap());
    log("claim m3", &p.claim(&m3).await.unwrap());
    log("devices alice", &p.devices(&a1.user_id).await.unwrap());
    // The replaced connection lingers in its room until evicted; its successor joins anyway.
    log("join a2 cap 1", &p.join(&r, &a2, 1).await.unwrap());
    log("members r", &p.members(&r).await.unwrap());
    log("evict a1", &p.evict(&a1).await.unwrap());
    log("devices alice", &p.devices(&a1.user_id).await.unwrap());
    for m in [&b4, &c5] {
        log("claim", &p.claim(m).await.unwrap());
    }
    log("join b4", &p.join(&r, &b4, 2).await.unwrap());
    log("join b4 again", &p.join(&r, &b4, 2).await.unwrap());
    log("join c5", &p.join(&r, &c5, 2).await.unwrap());
    log("join c5 r2", &p.join(&r2, &c5, 2).await.unwrap());
    log("join a2 r2", &p.join(&r2, &a2, 2).await.unwrap());
    log("member r b", &p.member(&r, &b4.client_id).await.unwrap());
    log("member r c", &p.member(&r, &c5.client_id).await.unwrap());
    log("rooms", &p.rooms().await.unwrap());
    log("leave a2 r", &p.leave(&r, &a2).await.unwrap());
    log("leave a2 r again", &p.leave(&r, &a2).await.unwrap());
    log("members r", &p.members(&r).await.unwrap());
    log("evict a2", &p.evict(&a2).await.unwrap());
    log("evict a2 again", &p.evict(&a2).await.unwrap());
    log("members r2", &p.members(&r2).await.unwrap());
    log("evict b4", &p.evict(&b4).await.unwrap());
    log("rooms", &p.rooms().await.unwrap());
    log("devices alice", &p.devices(&a1.user_id).await.unwrap());
    log("devices carol", &p.devices(&c5.user_id).await.unwrap());
    log("claim m3 now", &p.claim(&m3).await.unwrap());
    let x = "198.51.100.1";
    let first = p.hold_address(x, 2).await;
    log("hold x", &first.is_some());
    log("hold x", &p.hold_address(x, 2).await.is_some());
    log("hold x over the cap", &p.hold_address(x, 2).await.is_some());
    log("x holds", &p.address_connections(x).await.unwrap());
    p.release_address(first.unwrap()).await;
    log("x holds", &p.address_connections(x).await.unwrap());
    log("hold x again", &p.hold_address(x, 2).await.is_some());
    log(
        "hold y",
        &p.hold_address("2001:db8::/64", 1).await.is_some(),
    );
    log(
        "y holds",
        &p.address_connections("2001:db8::/64").await.unwrap(),
    );
    out
}

async fn same_answers_as_memory(var: &str) {
    let node = NodeId::generate();
    let expected = transcript(&MemoryPresence::new(), &node).await;
    let p = redis(&url(var), &prefix(), &node, Duration::from_secs(3)).await;
    assert_eq!(transcript(p.as_ref(), &node).await, expected);
}

#[tokio::test]
#[ignore = "needs Redis: run scripts/test"]
async fn redis_presence_answers_like_memory() {
    same_answers_as_memory("SWITCHBOARD_TEST_REDIS_URL").await;
}

#[tokio::test]
#[ignore = "needs Redis: run scripts/test"]
async fn redis_cluster_presence_answers_like_memory() {
    same_answers_as_memory("SWITCHBOARD_TEST_REDIS_CLUSTER_URL").await;
}

/// Runs every survivor's periodic `reap` until one of them returns something, for at most
/// `limit`; returns everything returned.
async fn reap_until(survivors: &[Arc<dyn Presence>], limit: Duration) -> Vec<(RoomId, Member)> {
    let deadline = Instant::now() + limit;
    loop {
        let rounds = futures_util::future::join_all(survivors.iter().map(|p| p.reap())).await;
        let gone: Vec<_> = rounds.into_iter().flat_map(|r| r.unwrap().gone).collect();
        if !gone.is_empty() || Instant::now() > deadline {
            return gone;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
#[ignore = "needs Redis: run scripts/test"]
async fn a_node_that_stops_renewing_is_reaped_once() {
    let (url, prefix, ttl) = (
        url("SWITCHBOARD_TEST_REDIS_CLUSTER_URL"),
        prefix(),
        Duration::from_secs(1),
    );
    let (dead, alive) = (NodeId::generate(), NodeId::generate());
    let d = redis(&url, &prefix, &dead, ttl).await;
    let survivors = [
        redis(&url, &prefix, &alive, ttl).await,
        redis(&url, &prefix, &NodeId::generate(), ttl).await,
    ];
    let (ghost, live) = (
        member(&dead, "g", "ghost", 1),
        member(&alive, "l", "live", 2),
    );
    d.claim(&ghost).await.unwrap();
    d.join(&room("r"), &ghost, 5).await.unwrap();
    let address = "203.0.113.9";
    for _ in 0..2 {
        assert!(d.hold_address(address, 3).await.is_some());
    }
    assert!(survivors[0].hold_address(address, 3).await.is_some());
    assert!(
        survivors[1].hold_address(address, 3).await.is_none(),
        "at the cap"
    );
    survivors[0].claim(&live).await.unwrap();
    survivors[0].join(&room("r"), &live, 5).await.unwrap();

    // `d` never renews again; of the two survivors, exactly one reaps it.
    let started = Instant::now();
    let gone = reap_until(&survivors, 3 * ttl).await;
    assert!(
        started.elapsed() < 2 * ttl,
        "reaped after {:?}",
        started.elapsed()
    );
    assert_eq!(gone, vec![(room("r"), ghost.clone())]);
    assert_eq!(survivors[0].members(&room("r")).await.unwrap(), vec![live]);
    assert_eq!(survivors[1].devices(&ghost.user_id).await.unwrap(), 0);
    let held = survivors[1].address_connections(address).await.unwrap();
    assert_eq!(
        held, 1,
        "the dead node's connections of the address are released"
    );
    assert_eq!(survivors[1].reap().await.unwrap(), Reaped::default());
}

/// Loses every key of `prefix` on the standalone Redis at `url`, as a restart without
/// persistence does.
async fn forget_everything(url: &str, prefix: &str) {
    let client = Builder::from_config(Config::from_url(url).unwrap())
        .build()
        .unwrap();
    client.init().await.unwrap();
    let mut scan = client.scan(format!("{{{prefix}:*"), Some(1000), None);
    while let Some(mut page) = scan.try_next().await.unwrap() {
        if let Some(keys) = page.take_results() {
            let _: i64 = client.del(keys).await.unwrap();
        }
    }
}

#[tokio::test]
#[ignore = "needs Redis: run scripts/test"]
async fn a_client_id_taken_while_redis_was_away_closes_the_older_connection() {
    let (url, prefix) = (url("SWITCHBOARD_TEST_REDIS_URL"), prefix());
    let (here, there) = (NodeId::generate(), NodeId::generate());
    let p = redis(&url, &prefix, &here, Duration::from_secs(3)).await;
    let q = redis(&url, &prefix, &there, Duration::from_secs(3)).await;
    let (old, bob) = (member(&here, "a", "alice", 1), member(&here, "b", "bob", 2));
    for m in [&old, &bob] {
        p.claim(m).await.unwrap();
        p.join(&room("x"), m, 5).await.unwrap();
    }

    // Redis loses everything; alice's other device takes her client id on the other node
    // before this node writes its members back.
    forget_everything(&url, &prefix).await;
    let new = member(&there, "a", "alice", 7);
    assert_eq!(q.claim(&new).await.unwrap(), crate::presence::Claim::Fresh);
    q.join(&room("x"), &new, 5).await.unwrap();

    let reaped = p.reap().await.unwrap();
    assert_eq!(
        reaped,
        Reaped {
            replaced: vec![old.conn],
            ..Reaped::default()
        }
    );
    assert_eq!(p.members(&room("x")).await.unwrap(), vec![new, bob]);
    assert_eq!(p.reap().await.unwrap(), Reaped::default(), "reported once");
    assert!(p.evict(&old).await.unwrap().is_empty());
}

#[tokio::test]
#[ignore = "needs Redis: run scripts/test"]
async fn a_node_writes_its_members_back_after_redis_lost_them() {
    let (url, prefix) = (url("SWITCHBOARD_TEST_REDIS_URL"), prefix());
    let node = NodeId::generate();
    let p = redis(&url, &prefix, &node, Duration::from_secs(3)).await;
    let (a, b) = (member(&node, "a", "alice", 1), member(&node, "b", "bob", 2));
    for (m, rooms) in [(&a, ["x", "y"]), (&b, ["y", "x"])] {
        p.claim(m).await.unwrap();
        for r in rooms {
            p.join(&room(r), m, 5).await.unwrap();
        }
    }
    p.leave(&room("x"), &b).await.unwrap();
    let address = "198.51.100.50";
    let holds = [
        p.hold_address(address, 5).await.unwrap(),
        p.hold_address(address, 5).await.unwrap(),
        p.hold_address(address, 5).await.unwrap(),
    ];

    forget_everything(&url, &prefix).await;
    assert_eq!(p.address_connections(address).await.unwrap(), 0);
    assert!(p.members(&room("y")).await.unwrap().is_empty());

    assert!(
        p.reap().await.unwrap() == Reaped::default(),
        "a restore announces no departures"
    );
    assert_eq!(p.members(&room("x")).await.unwrap(), vec![a.clone()]);
    assert_eq!(
        p.members(&room("y")).await.unwrap(),
        vec![a.clone(), b.clone()]
    );
    assert_eq!(p.devices(&a.user_id).await.unwrap(), 1);
    assert_eq!(p.address_connections(address).await.unwrap(), 3);
    let [first, ..] = holds;
    p.release_address(first).await;
    assert_eq!(p.address_connections(address).await.unwrap(), 2);
    let claimed = p.claim(&member(&node, "a", "mallory", 3)).await.unwrap();
    assert_eq!(claimed, crate::presence::Claim::Taken);
}

/// Moves the lease of every incarnation of `node` into the past, as a stall or a cut-off from
/// Redis longer than the lease does.
async fn expire_lease(url: &str, prefix: &str, node: &NodeId) {
    let target = crate::redis::url::parse(url).unwrap();
    let client = Builder::from_config(target.config).build().unwrap();
    client.init().await.unwrap();
    let leases = crate::redis::Keys::new(prefix).leases();
    let all: Vec<String> = client
        .zrange(&leases, 0, -1, None, false, None, false)
        .await
        .unwrap();
    let mine: Vec<_> = all
        .into_iter()
        .filter(|inc| inc.starts_with(&format!("{node}/")))
        .collect();
    assert_eq!(mine.len(), 1, "one live incarnation of {node}");
    let _: i64 = client
        .zadd(
            &leases,
            Some(SetOptions::XX),
            None,
            false,
            false,
            (1.0, mine[0].clone()),
        )
        .await
        .unwrap();
}

#[tokio::test]
#[ignore = "needs Redis: run scripts/test"]
async fn a_late_node_keeps_its_members_and_a_reaped_one_is_evicted() {
    let (url, prefix, ttl) = (
        url("SWITCHBOARD_TEST_REDIS_CLUSTER_URL"),
        prefix(),
        Duration::from_secs(1),
    );
    let (late, alive) = (NodeId::generate(), NodeId::generate());
    let l = redis(&url, &prefix, &late, ttl).await;
    let survivor = redis(&url, &prefix, &alive, ttl).await;
    let a = member(&late, "a", "alice", 1);
    l.claim(&a).await.unwrap();
    l.join(&room("r"), &a, 5).await.unwrap();
    let address = "198.51.100.77";
    let old_hold = l.hold_address(address, 5).await.unwrap();

    // Expired, but the node renews before anyone takes its lease over: nothing was reaped and
    // nothing is announced; the survivor finds nothing dead.
    expire_lease(&url, &prefix, &late).await;
    assert_eq!(l.reap().await.unwrap(), Reaped::default());
    assert_eq!(survivor.reap().await.unwrap(), Reaped::default());
    assert_eq!(survivor.members(&room("r")).await.unwrap(), vec![a.clone()]);

    // Expired and reaped first: the survivor announces alice gone; the node learns that it
    // was evicted, and starts over holding nothing (its connections are to reconnect).
    expire_lease(&url, &prefix, &late).await;
    let reaped = survivor.reap().await.unwrap();
    assert_eq!(reaped.gone, vec![(room("r"), a.clone())]);
    assert_eq!(
        l.reap().await.unwrap(),
        Reaped {
            evicted: true,
            ..Reaped::default()
        }
    );
    assert_eq!(l.reap().await.unwrap(), Reaped::default(), "evicted once");
    // The reaper released the address; a hold from before is void, so giving it back after
    // a new connection was counted leaves that one counted.
    assert_eq!(survivor.address_connections(address).await.unwrap(), 0);
    let _new_hold = l.hold_address(address, 5).await.unwrap();
    l.release_address(old_hold).await;
    assert_eq!(survivor.address_connections(address).await.unwrap(), 1);
    assert!(survivor.members(&room("r")).await.unwrap().is_empty());
    assert_eq!(
        survivor.reap().await.unwrap(),
        Reaped::default(),
        "the new incarnation lives"
    );

    // Alice's connection closes; her reconnection joins under the new incarnation.
    assert!(
        l.evict(&a).await.unwrap().is_empty(),
        "the reaper removed her"
    );
    let again = member(&late, "a", "alice", 2);
    assert_eq!(
        l.claim(&again).await.unwrap(),
        crate::presence::Claim::Fresh
    );
    l.join(&room("r"), &again, 5).await.unwrap();
    assert_eq!(survivor.members(&room("r")).await.unwrap(), vec![again]);
}

#[tokio::test]
#[ignore = "needs Redis: run scripts/test"]
async fn rooms_that_emptied_leave_the_room_index_without_a_listing() {
    for var in [
        "SWITCHBOARD_TEST_REDIS_URL",
        "SWITCHBOARD_TEST_REDIS_CLUSTER_URL",
    ] {
        let (url, prefix, node) = (url(var), prefix(), NodeId::generate());
        let target = crate::redis::url::parse(&url).unwrap();
        let client = crate::redis::client(&target).await.unwrap();
        let keys = crate::redis::Keys::new(&prefix);
        let mut p = super::RedisPresence::start(
            client.clone(),
            keys.clone(),
            node.clone(),
            Duration::from_secs(3),
        )
        .await
        .unwrap();
        p.store.room_grace_s = 0;
        // A client joining and leaving rooms of random names, and one room that stays.
        let m = member(&node, "m", "mallory", 1);
        p.claim(&m).await.unwrap();
        for n in 0..600 {
            let r = room(&format!("random-{n}"));
            p.join(&r, &m, 5).await.unwrap();
            p.leave(&r, &m).await.unwrap();
        }
        let a = member(&node, "a", "alice", 2);
        p.claim(&a).await.unwrap();
        p.join(&room("kept"), &a, 5).await.unwrap();
        let indexed = || async {
            let n: i64 = client.zcard(keys.rooms()).await.unwrap();
            n
        };
        assert_eq!(indexed().await, 601, "{var}");
        // Lease periods sweep it, a batch each, without anyone listing rooms.
        for _ in 0..4 {
            p.reap().await.unwrap();
        }
        assert_eq!(
            indexed().await,
            1,
            "{var}: only the room with a member stays"
        );
        assert_eq!(
            p.rooms().await.unwrap(),
            vec![crate::presence::RoomSummary {
                room: room("kept"),
                members: 1
            }]
        );
    }
}

/// A dead node's resumable sessions are taken over by exactly one survivor: written back under
/// it (seats in place, claim, device) with the frames held for them, and not announced; a resumable one whose client id went
/// to another connection, and one that cannot resume, are removed and announced. Once the
/// survivor lets its adopted session go, nothing of it remains.
#[tokio::test]
#[ignore = "needs Redis: run scripts/test"]
async fn a_dead_nodes_resumable_sessions_are_taken_over_once() {
    use crate::presence::{Adopted, Resumable};
    let (url, prefix, ttl) = (
        url("SWITCHBOARD_TEST_REDIS_CLUSTER_URL"),
        prefix(),
        Duration::from_secs(1),
    );
    let (dead, first, second) = (NodeId::generate(), NodeId::generate(), NodeId::generate());
    let d = redis(&url, &prefix, &dead, ttl).await;
    let survivors = [
        redis(&url, &prefix, &first, ttl).await,
        redis(&url, &prefix, &second, ttl).await,
    ];
    let session = |id: &str| Resumable {
        id: id.to_owned(),
        record: format!("{{\"record\":\"{id}\"}}"),
    };
    let (kept, plain, taken) = (
        member(&dead, "k", "kim", 1),
        member(&dead, "p", "pat", 2),
        member(&dead, "t", "tom", 3),
    );
    let r = room("r");
    let early = member(&first, "e", "eve", 4);
    survivors[0].claim(&early).await.unwrap();
    survivors[0].join(&r, &early, 9).await.unwrap();
    d.claim_resumable(&kept, &session("s-kim")).await.unwrap();
    d.claim(&plain).await.unwrap();
    d.claim_resumable(&taken, &session("s-tom")).await.unwrap();
    for m in [&kept, &plain, &taken] {
        d.join(&r, m, 9).await.unwrap();
    }
    assert!(survivors[1].session_known("s-kim").await);
    // Tom connected afresh elsewhere before the takeover: his client id is not his old one's.
    survivors[1]
        .claim(&member(&second, "t", "tom", 30))
        .await
        .unwrap();
    // Signals for Kim wait for whoever takes her over; Pat's session cannot resume.
    for frame in ["one", "two"] {
        assert_eq!(survivors[1].hold(&kept, frame).await.unwrap(), Hold::Held);
    }
    assert_eq!(
        survivors[1].hold(&plain, "lost").await.unwrap(),
        Hold::Refused
    );

    let deadline = Instant::now() + 3 * ttl;
    let mut found = Reaped::default();
    let mut adopter = None;
    while found.adopted.is_empty() && found.gone.is_empty() {
        assert!(Instant::now() < deadline, "never reaped");
        tokio::time::sleep(Duration::from_millis(100)).await;
        for (n, p) in survivors.iter().enumerate() {
            let tick = p.reap().await.unwrap();
            if !tick.adopted.is_empty() {
                adopter = Some(n);
            }
            found.adopted.extend(tick.adopted);
            found.gone.extend(tick.gone);
        }
    }
    let n = adopter.expect("one survivor took the session over");
    let survivor = &survivors[n];
    let ours = survivor.members(&r).await.unwrap();
    let kim = ours.iter().find(|m| m.client_id == kept.client_id).unwrap();
    assert_eq!(
        found.adopted,
        vec![Adopted {
            member: kim.clone(),
            rooms: vec![r.clone()],
            session: session("s-kim"),
            held: vec!["one".to_owned(), "two".to_owned()],
            overflowed: false,
        }]
    );
    // Taken over: nothing more is held for her; she is reached where she is now.
    assert_eq!(
        survivors[1].hold(&kept, "late").await.unwrap(),
        Hold::Moved([&first, &second][n].clone())
    );
    // By user: held for each resumable connection of the user (when no node that listens
    // holds one); a node that stayed up takes back what was held for it.
    let kai = member(&dead, "k2", "kai", 9);
    d.claim_resumable(&kai, &session("s-kai")).await.unwrap();
    assert_eq!(
        survivors[1]
            .hold_user(&kai.user_id, "by-user")
            .await
            .unwrap(),
        1
    );
    assert_eq!(d.take_held(kai.conn).await.unwrap(), ["by-user"]);
    assert!(d.take_held(kai.conn).await.unwrap().is_empty());
    d.evict(&kai).await.unwrap();
    assert_ne!(kim.node, dead, "the seat points at the survivor");
    let mut gone: Vec<_> = found
        .gone
        .iter()
        .map(|(_, m)| m.client_id.as_str())
        .collect();
    gone.sort_unstable();
    assert_eq!(gone, ["p", "t"]);
    // Join order holds: Eve first, then Kim where she sat.
    let order: Vec<_> = ours.iter().map(|m| m.client_id.as_str()).collect();
    assert_eq!(order, ["e", "k"]);
    assert_eq!(survivors[1 - n].devices(&kept.user_id).await.unwrap(), 1);
    assert!(survivors[1 - n].session_known("s-kim").await);
    assert!(!survivors[1 - n].session_known("s-tom").await);
    // Reported once.
    for p in &survivors {
        assert_eq!(p.reap().await.unwrap(), Reaped::default());
    }
    // The survivor lets it go (its window ended): nothing of it remains.
    survivor.evict(kim).await.unwrap();
    assert_eq!(survivors[1 - n].members(&r).await.unwrap(), vec![early]);
    assert_eq!(survivors[1 - n].devices(&kept.user_id).await.unwrap(), 0);
    assert!(!survivors[1 - n].session_known("s-kim").await);
}

/// What cannot be held for a session whose node died (over the frame cap) marks it: the
/// survivor takes it over with what was held, as one that cannot be resumed whole.
#[tokio::test]
#[ignore = "needs Redis: run scripts/test"]
async fn signals_over_the_cap_mark_a_dead_nodes_session_overflowed() {
    use crate::presence::Resumable;
    let (url, prefix, ttl) = (
        url("SWITCHBOARD_TEST_REDIS_URL"),
        prefix(),
        Duration::from_secs(1),
    );
    let (dead, alive) = (NodeId::generate(), NodeId::generate());
    let d = redis(&url, &prefix, &dead, ttl).await;
    let survivor = redis(&url, &prefix, &alive, ttl).await;
    let zed = member(&dead, "z", "zed", 1);
    let session = Resumable {
        id: "s-zed".to_owned(),
        record: "{}".to_owned(),
    };
    d.claim_resumable(&zed, &session).await.unwrap();
    for n in 0..super::queries::HELD_FRAMES {
        assert_eq!(
            survivor.hold(&zed, &format!("f{n}")).await.unwrap(),
            Hold::Held
        );
    }
    assert_eq!(
        survivor.hold(&zed, "one too many").await.unwrap(),
        Hold::Refused
    );
    let deadline = Instant::now() + 3 * ttl;
    let adopted = loop {
        let tick = survivor.reap().await.unwrap();
        if let Some(adopted) = tick.adopted.into_iter().next() {
            break adopted;
        }
        assert!(Instant::now() < deadline, "never taken over");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(adopted.overflowed);
    assert_eq!(adopted.held.len(), super::queries::HELD_FRAMES);
    assert_eq!(adopted.held[0], "f0");
}
