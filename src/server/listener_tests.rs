//! The real accept loop with a stand-in connection: it greets the client and holds the
//! connection until the client closes it, so "served" means "got a slot".

use std::collections::HashMap;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

use super::*;
use crate::client_quota::rate::RateConfig;
use crate::config::connection_limits::ConnectionLimits;
use crate::controller::client_quotas::{ClientQuotas, QuotaEntity, QuotaName};

const GREETING: &[u8] = b"served";

async fn greet_until_closed(mut stream: TcpStream, _peer: SocketAddr) {
    if stream.write_all(GREETING).await.is_err() {
        return;
    }
    let mut sink = [0u8; 64];
    while matches!(stream.read(&mut sink).await, Ok(read) if read > 0) {}
}

/// Two listeners, `A` and `B`, sharing `max.connections=1`; neither is protected.
async fn two_listeners(shutdown: &Shutdown) -> Vec<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let limits = ConnectionLimits {
        connections_max: 1,
        ..ConnectionLimits::default()
    };
    let slots = Arc::new(ConnectionQuotas::new(
        limits,
        HashMap::new(),
        RateConfig::default(),
        "INTERNAL",
        &["A", "B"],
    ));
    let mut loops = Vec::new();
    for name in ["A", "B"] {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(accept_loop(
            listener,
            Arc::from(name),
            shutdown.clone(),
            slots.clone(),
            greet_until_closed,
        ));
        loops.push((addr, task));
    }
    loops
}

/// Connects and waits up to `wait` for the greeting: the stream if served.
async fn served(addr: SocketAddr, wait: Duration) -> (TcpStream, bool) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut greeting = [0u8; GREETING.len()];
    let read = tokio::time::timeout(wait, stream.read_exact(&mut greeting)).await;
    let ok = matches!(read, Ok(Ok(_))) && greeting == GREETING;
    (stream, ok)
}

#[tokio::test]
async fn an_idle_listener_holds_no_slot_and_a_freed_slot_serves_the_next_client() {
    let (stop, receiver) = watch::channel(false);
    let shutdown = Shutdown::from_receiver(receiver);
    let mut loops = two_listeners(&shutdown).await;
    let (b, b_loop) = loops.pop().unwrap();
    let (a, a_loop) = loops.pop().unwrap();
    let long = Duration::from_secs(5);

    // max.connections=1 with two listeners: the one slot goes to the first client.
    let (first, ok) = served(a, long).await;
    assert!(
        ok,
        "the only client was not served: an idle listener holds the slot"
    );
    drop(first);
    let (second, ok) = served(a, long).await;
    assert!(
        ok,
        "a client was not served after the first one disconnected"
    );

    // The broker is full: a client of the other listener waits, holding its socket...
    let (mut waiting, ok) = served(b, Duration::from_millis(300)).await;
    assert!(!ok, "a second connection was served with max.connections=1");
    // ...and is served as soon as the first closes.
    drop(second);
    let mut greeting = [0u8; GREETING.len()];
    tokio::time::timeout(long, waiting.read_exact(&mut greeting))
        .await
        .expect("the waiting client was not served once the slot freed")
        .unwrap();
    assert_eq!(greeting, GREETING);
    drop(waiting);

    // Shutdown ends a loop waiting for a slot with a socket in hand (the slot stays held
    // by A's client, so only shutdown can end B's wait)...
    let (held, ok) = served(a, long).await;
    assert!(ok);
    let (_waiting, ok) = served(b, Duration::from_millis(300)).await;
    assert!(!ok);
    stop.send(true).unwrap();
    tokio::time::timeout(long, b_loop)
        .await
        .expect("a loop waiting for a slot did not stop at shutdown")
        .unwrap();
    // ...and one waiting in accept, once its connection has drained.
    drop(held);
    tokio::time::timeout(long, a_loop)
        .await
        .expect("a loop waiting in accept did not stop at shutdown")
        .unwrap();
}

/// One listener `A` over `slots`.
async fn one_listener(
    slots: Arc<ConnectionQuotas>,
    shutdown: &Shutdown,
) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(accept_loop(
        listener,
        Arc::from("A"),
        shutdown.clone(),
        slots,
        greet_until_closed,
    ));
    (addr, task)
}

/// Reads until the server closes: true when it closed within `wait` without a greeting.
async fn closed_unserved(stream: &mut TcpStream, wait: Duration) -> bool {
    let mut buffer = [0u8; 16];
    matches!(
        tokio::time::timeout(wait, stream.read(&mut buffer)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

#[tokio::test]
async fn a_connection_over_the_per_ip_limit_is_closed_at_once() {
    let (_stop, receiver) = watch::channel(false);
    let shutdown = Shutdown::from_receiver(receiver);
    let limits = ConnectionLimits {
        per_ip_max: 1,
        ..ConnectionLimits::default()
    };
    let slots = Arc::new(ConnectionQuotas::new(
        limits,
        HashMap::new(),
        RateConfig::default(),
        "INTERNAL",
        &["A"],
    ));
    let (addr, _loop) = one_listener(slots.clone(), &shutdown).await;
    let long = Duration::from_secs(5);
    let (first, ok) = served(addr, long).await;
    assert!(ok);
    let mut second = TcpStream::connect(addr).await.unwrap();
    assert!(closed_unserved(&mut second, long).await);
    assert_eq!(slots.open("A"), (1, 1));
    drop(first);
    // The slot is the address's again once its connection closed.
    let deadline = Instant::now() + long;
    while slots.open("A").0 > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (_third, ok) = served(addr, long).await;
    assert!(ok);
}

#[tokio::test]
async fn a_connection_over_the_ip_creation_rate_is_held_then_closed() {
    let (_stop, receiver) = watch::channel(false);
    let shutdown = Shutdown::from_receiver(receiver);
    let slots = Arc::new(ConnectionQuotas::new(
        ConnectionLimits::default(),
        HashMap::new(),
        RateConfig::default(),
        "INTERNAL",
        &["A"],
    ));
    let entity = QuotaEntity {
        ip: Some(QuotaName::Named("127.0.0.1".into())),
        ..QuotaEntity::default()
    };
    let image: ClientQuotas = [(
        entity,
        [("connection_creation_rate".to_string(), 1.0)].into(),
    )]
    .into();
    slots.update_ip_quotas(&image);
    let (addr, _loop) = one_listener(slots.clone(), &shutdown).await;
    let long = Duration::from_secs(5);
    // A rate of 1/s over 10 windows admits 10 at once; the 11th is throttled.
    let mut admitted = Vec::new();
    for _ in 0..10 {
        let (stream, ok) = served(addr, long).await;
        assert!(ok);
        admitted.push(stream);
    }
    let started = Instant::now();
    let mut throttled = TcpStream::connect(addr).await.unwrap();
    assert!(closed_unserved(&mut throttled, long).await);
    // Held for the throttle time (100 ms at 11/10 of the rate) rather than closed at once.
    assert!(
        started.elapsed() >= Duration::from_millis(50),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(slots.open("A"), (10, 10));
}
