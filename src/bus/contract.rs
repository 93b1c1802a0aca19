//! The contract every [`Bus`] keeps, as a suite run against each implementation.

use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::time::timeout;

use super::{Bus, Envelope, Inbound, Route, Topic, Undelivered};
use crate::protocol::{ClientId, ConnId, NodeId, RoomId, Stamp, UserId};

pub type Node = (Box<dyn Bus>, mpsc::Receiver<Inbound>, NodeId);

/// Runs the whole contract; `cluster()` must return two fresh nodes of one new cluster.
pub async fn bus_contract<F, Fut>(cluster: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = (Node, Node)>,
{
    no_subscribers(cluster().await).await;
    delivers_once_without_echo(cluster().await).await;
    keeps_order(cluster().await).await;
    unsubscribe_stops_delivery(cluster().await).await;
    subscriptions_hold_once_the_call_returns(cluster().await).await;
    every_route_round_trips(cluster().await).await;
    posts_keep_order_with_publishes(cluster().await).await;
    nodes_hear_their_own_topic(cluster().await).await;
    every_node_hears_the_cluster_topic(cluster().await).await;
    addressed_posts_nobody_got_come_back(cluster().await).await;
}

fn room(name: &str) -> Topic {
    Topic::Room(RoomId::parse(name).unwrap())
}

fn envelope(origin: &NodeId, topic: &Topic, n: usize) -> Envelope {
    let route = match topic {
        Topic::Room(room) => Route::Room {
            room: room.clone(),
            except: ConnId(7),
        },
        Topic::User(user) => Route::User {
            user: user.clone(),
            except: ConnId(7),
        },
        Topic::Node(_) | Topic::Returns => Route::Member {
            room: RoomId::parse("r").unwrap(),
            client: ClientId::parse("c").unwrap(),
            from: ConnId(7),
        },
        Topic::Cluster => Route::Revoke,
    };
    Envelope {
        origin: origin.clone(),
        route,
        payload: Bytes::from(format!(r#"{{"type":"signal","n":{n}}}"#)),
        stamp: Stamp::NONE,
    }
}

async fn next(rx: &mut mpsc::Receiver<Inbound>) -> Inbound {
    timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("inbound item within 5 s")
        .expect("inbound stream open")
}

async fn recv(rx: &mut mpsc::Receiver<Inbound>) -> Envelope {
    match next(rx).await {
        Inbound::Envelope(envelope) => envelope,
        other => panic!("expected an envelope, got {other:?}"),
    }
}

/// Asserts nothing arrives: publishes a marker on a fresh topic and expects it first.
async fn assert_quiet(a: &Node, b: &mut Node) {
    let marker = room("contract-marker");
    b.0.subscribe(&marker).await.unwrap();
    let sent = envelope(&a.2, &marker, usize::MAX);
    assert_eq!(a.0.publish(&marker, sent.clone()).await.unwrap(), 1);
    assert_eq!(
        recv(&mut b.1).await,
        sent,
        "an unexpected envelope arrived first"
    );
}

async fn no_subscribers((a, _b): (Node, Node)) {
    let topic = room("nobody");
    assert_eq!(
        a.0.publish(&topic, envelope(&a.2, &topic, 1))
            .await
            .unwrap(),
        0
    );
}

async fn delivers_once_without_echo((mut a, mut b): (Node, Node)) {
    let topic = Topic::User(UserId::parse("u-1").unwrap());
    a.0.subscribe(&topic).await.unwrap();
    b.0.subscribe(&topic).await.unwrap();
    b.0.subscribe(&topic).await.unwrap();
    let sent = envelope(&a.2, &topic, 1);
    assert_eq!(a.0.publish(&topic, sent.clone()).await.unwrap(), 1);
    assert_eq!(recv(&mut b.1).await, sent);
    assert_quiet(&a, &mut b).await;
    assert!(a.1.try_recv().is_err(), "a node received its own envelope");
}

async fn keeps_order((a, mut b): (Node, Node)) {
    let topic = room("ordered");
    b.0.subscribe(&topic).await.unwrap();
    for n in 0..500 {
        a.0.publish(&topic, envelope(&a.2, &topic, n))
            .await
            .unwrap();
    }
    for n in 0..500 {
        assert_eq!(recv(&mut b.1).await, envelope(&a.2, &topic, n));
    }
}

async fn unsubscribe_stops_delivery((a, mut b): (Node, Node)) {
    let topic = room("leaving");
    b.0.subscribe(&topic).await.unwrap();
    b.0.unsubscribe(&topic).await.unwrap();
    b.0.unsubscribe(&topic).await.unwrap();
    assert_eq!(
        a.0.publish(&topic, envelope(&a.2, &topic, 1))
            .await
            .unwrap(),
        0
    );
    assert_quiet(&a, &mut b).await;
}

/// A subscription is in place when `subscribe` returns, and gone when `unsubscribe` does: the
/// join protocol announces a member only after its node hears the room.
async fn subscriptions_hold_once_the_call_returns((a, b): (Node, Node)) {
    for n in 0..200 {
        let topic = room(&format!("quick-{n}"));
        b.0.subscribe(&topic).await.unwrap();
        let sent = envelope(&a.2, &topic, n);
        assert_eq!(
            a.0.publish(&topic, sent.clone()).await.unwrap(),
            1,
            "subscription {n} was not in place when subscribe returned"
        );
        b.0.unsubscribe(&topic).await.unwrap();
        assert_eq!(
            a.0.publish(&topic, sent).await.unwrap(),
            0,
            "subscription {n} was still in place when unsubscribe returned"
        );
    }
}

async fn every_route_round_trips((a, mut b): (Node, Node)) {
    let topic = Topic::User(UserId::parse("üser:x@y").unwrap());
    b.0.subscribe(&topic).await.unwrap();
    let routes = Route::samples(&a.2);
    for route in routes {
        let sent = Envelope {
            origin: a.2.clone(),
            route,
            payload: Bytes::from_static("{\"sdp\":\"v=0\\r\\n ü\"}".as_bytes()),
            stamp: Stamp::new(1_764_900_000_000_000, 3),
        };
        a.0.publish(&topic, sent.clone()).await.unwrap();
        assert_eq!(recv(&mut b.1).await, sent);
    }
}

async fn posts_keep_order_with_publishes((a, mut b): (Node, Node)) {
    let topic = room("mixed");
    b.0.subscribe(&topic).await.unwrap();
    for n in 0..1000 {
        let sent = envelope(&a.2, &topic, n);
        if n % 100 == 99 {
            assert_eq!(a.0.publish(&topic, sent).await.unwrap(), 1);
        } else {
            a.0.post(topic.clone(), sent).unwrap();
        }
    }
    for n in 0..1000 {
        assert_eq!(recv(&mut b.1).await, envelope(&a.2, &topic, n));
    }
}

async fn every_node_hears_the_cluster_topic((mut a, mut b): (Node, Node)) {
    let topic = Topic::Cluster;
    // Not even a request to stop listening stops it.
    b.0.unsubscribe(&topic).await.unwrap();
    let sent = envelope(&a.2, &topic, 1);
    assert_eq!(a.0.publish(&topic, sent.clone()).await.unwrap(), 1);
    assert_eq!(recv(&mut b.1).await, sent);
    let back = envelope(&b.2, &topic, 2);
    assert_eq!(b.0.publish(&topic, back.clone()).await.unwrap(), 1);
    assert_eq!(recv(&mut a.1).await, back);
}

async fn nodes_hear_their_own_topic((a, mut b): (Node, Node)) {
    let topic = Topic::Node(b.2.clone());
    // Not even a request to stop listening stops it.
    b.0.unsubscribe(&topic).await.unwrap();
    let sent = envelope(&a.2, &topic, 1);
    assert_eq!(a.0.publish(&topic, sent.clone()).await.unwrap(), 1);
    assert_eq!(recv(&mut b.1).await, sent);
    a.0.post(topic, envelope(&a.2, &Topic::Node(b.2.clone()), 2))
        .unwrap();
    assert_eq!(
        recv(&mut b.1).await,
        envelope(&a.2, &Topic::Node(b.2.clone()), 2)
    );
}

async fn addressed_posts_nobody_got_come_back((mut a, mut b): (Node, Node)) {
    let gone = Topic::Node(NodeId::generate());
    let addressed = envelope(&a.2, &gone, 1);
    a.0.post(gone.clone(), addressed.clone()).unwrap();
    assert_eq!(
        next(&mut a.1).await,
        Inbound::Returned(addressed, Undelivered::NoReceiver)
    );
    // A broadcast nobody listens to is not an error: nothing comes back.
    let empty = room("empty");
    a.0.post(empty.clone(), envelope(&a.2, &empty, 2)).unwrap();
    let to_b = Topic::Node(b.2.clone());
    a.0.post(to_b.clone(), envelope(&a.2, &to_b, 3)).unwrap();
    assert_eq!(recv(&mut b.1).await, envelope(&a.2, &to_b, 3));
    let marker = envelope(&a.2, &gone, 4);
    a.0.post(gone.clone(), marker.clone()).unwrap();
    assert_eq!(
        next(&mut a.1).await,
        Inbound::Returned(marker, Undelivered::NoReceiver),
        "only the second addressed post came back"
    );
    // Posted to nobody on purpose: it comes back behind what its sender posted before.
    let (first, second) = (envelope(&a.2, &gone, 5), envelope(&a.2, &Topic::Returns, 6));
    a.0.post(gone, first.clone()).unwrap();
    a.0.post(Topic::Returns, second.clone()).unwrap();
    assert_eq!(
        next(&mut a.1).await,
        Inbound::Returned(first, Undelivered::NoReceiver)
    );
    assert_eq!(
        next(&mut a.1).await,
        Inbound::Returned(second, Undelivered::NoReceiver)
    );
}

#[tokio::test]
async fn memory_bus_keeps_the_contract() {
    use super::memory::MemoryHub;
    bus_contract(|| async {
        let hub = MemoryHub::new();
        let attach = |hub: &MemoryHub| {
            let id = NodeId::generate();
            let (bus, rx) = hub.attach(id.clone());
            (Box::new(bus) as Box<dyn Bus>, rx, id)
        };
        (attach(&hub), attach(&hub))
    })
    .await;
}

/// Runs the contract against the Redis named by `var`, each cluster under its own prefix.
async fn redis_contract(var: &str) {
    let url = std::env::var(var).unwrap_or_else(|_| panic!("{var} is not set: run scripts/test"));
    bus_contract(|| {
        let url = url.clone();
        async move {
            let prefix = format!("contract-{}", uuid::Uuid::new_v4().simple());
            let attach = || async {
                let id = NodeId::generate();
                let (bus, rx) = connect_redis_bus(&url, &prefix, &id).await;
                (Box::new(bus) as Box<dyn Bus>, rx, id)
            };
            (attach().await, attach().await)
        }
    })
    .await;
}

/// A Redis bus for node `id`; its essential tasks run detached.
async fn connect_redis_bus(
    url: &str,
    prefix: &str,
    id: &NodeId,
) -> (
    crate::bus::redis::RedisBus,
    tokio::sync::mpsc::Receiver<crate::bus::Inbound>,
) {
    let target = crate::redis::url::parse(url).unwrap();
    let publisher = crate::redis::client(&target).await.unwrap();
    let subscriber = crate::redis::subscriber(&target).await.unwrap();
    let keys = crate::redis::Keys::new(prefix);
    let mut tasks = crate::tasks::Tasks::default();
    crate::bus::redis::RedisBus::start(
        id.clone(),
        keys,
        target.clustered,
        publisher,
        subscriber,
        &mut tasks,
    )
    .await
    .unwrap()
}

#[tokio::test]
#[ignore = "needs Redis: run scripts/test"]
async fn redis_bus_keeps_the_contract() {
    redis_contract("SWITCHBOARD_TEST_REDIS_URL").await;
}

#[tokio::test]
#[ignore = "needs Redis: run scripts/test"]
async fn redis_cluster_bus_keeps_the_contract() {
    redis_contract("SWITCHBOARD_TEST_REDIS_CLUSTER_URL").await;
}
