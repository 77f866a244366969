#![allow(clippy::unwrap_used)]

use super::*;
use futures::channel::mpsc;
use tokio::sync::oneshot;
use weft_policy::DefaultPolicy;

type Reply = oneshot::Sender<Result<ServerStream, tonic::Status>>;

/// A controller the test answers by hand: every `WatchPort` call arrives
/// on `calls` and waits for the test's reply.
struct Fake {
    calls: mpsc::UnboundedSender<(u16, Reply)>,
}

impl Source for Fake {
    fn watch_port(&self, port: u16) -> BoxFuture<'static, Result<ServerStream, tonic::Status>> {
        let (tx, rx) = oneshot::channel();
        let _ = self.calls.unbounded_send((port, tx));
        Box::pin(async move {
            rx.await
                .unwrap_or_else(|_| Err(tonic::Status::unavailable("test dropped the call")))
        })
    }
}

fn settings(default_policy: DefaultPolicy) -> Settings {
    Settings {
        default_policy,
        cluster_networks: weft_policy::parse_networks(weft_policy::DEFAULT_CLUSTER_NETWORKS)
            .unwrap(),
        opaque_ports: PortSet::parse("25").unwrap(),
        trust_loopback: false,
    }
}

fn fake() -> (Arc<dyn Source>, mpsc::UnboundedReceiver<(u16, Reply)>) {
    let (calls, rx) = mpsc::unbounded();
    (Arc::new(Fake { calls }), rx)
}

/// A valid server named `name`.
fn server(name: &str) -> Server {
    let mut s = weft_policy::default_server(DefaultPolicy::AllAuthenticated, &[], false, &[]);
    s.labels = weft_policy::labels("access.smi-spec.io", "serviceaccount", name);
    s
}

/// Answers the next call with a stream the test feeds.
async fn open(
    calls: &mut mpsc::UnboundedReceiver<(u16, Reply)>,
    port: u16,
) -> mpsc::UnboundedSender<Result<Server, tonic::Status>> {
    let (got, reply) = calls.next().await.unwrap();
    assert_eq!(got, port);
    let (tx, rx) = mpsc::unbounded();
    reply.send(Ok(rx.boxed())).map_err(|_| ()).unwrap();
    tx
}

async fn refuse(
    calls: &mut mpsc::UnboundedReceiver<(u16, Reply)>,
    port: u16,
    status: tonic::Status,
) {
    let (got, reply) = calls.next().await.unwrap();
    assert_eq!(got, port);
    reply.send(Err(status)).map_err(|_| ()).unwrap();
}

fn name(p: &PortPolicy) -> String {
    p.rx.borrow().meta.name.to_string()
}

#[tokio::test(start_paused = true)]
async fn default_until_the_first_answer_then_every_update() {
    let (source, mut calls) = fake();
    let policies = PortPolicies::new(settings(DefaultPolicy::Deny), Some(source), [8080]);
    // Declared: watched from start-up.
    let (port, reply) = calls.next().await.unwrap();
    assert_eq!(port, 8080);
    tokio::time::sleep(FIRST_ANSWER_WAIT).await;
    let start = Instant::now();
    let mut p = policies.port(8080).await;
    assert_eq!(
        start.elapsed(),
        Duration::ZERO,
        "past the first-answer wait"
    );
    assert_eq!(name(&p), "deny");
    assert!(!p.rx.borrow().answered);
    drop(reply);

    // The dropped call fails; the watch retries after the backoff.
    let stream = open(&mut calls, 8080).await;
    stream.unbounded_send(Ok(server("web"))).unwrap();
    p.rx.changed().await.unwrap();
    assert_eq!(name(&p), "web");
    assert!(p.rx.borrow().answered);
    stream.unbounded_send(Ok(server("web-v2"))).unwrap();
    p.rx.changed().await.unwrap();
    assert_eq!(name(&p), "web-v2");
}

#[tokio::test(start_paused = true)]
async fn an_outage_keeps_the_last_policy_and_reconnects_with_backoff() {
    let (source, mut calls) = fake();
    let policies = PortPolicies::new(
        settings(DefaultPolicy::AllUnauthenticated),
        Some(source),
        [8080],
    );
    let stream = open(&mut calls, 8080).await;
    stream.unbounded_send(Ok(server("web"))).unwrap();
    let mut p = policies.port(8080).await;
    assert_eq!(name(&p), "web", "the first answer came within the wait");

    // The stream breaks: the policy stays, reconnection after 500 ms.
    stream
        .unbounded_send(Err(tonic::Status::unavailable("controller gone")))
        .unwrap();
    let broke = Instant::now();
    refuse(&mut calls, 8080, tonic::Status::unavailable("still gone")).await;
    assert_eq!(broke.elapsed(), MIN_BACKOFF);
    refuse(&mut calls, 8080, tonic::Status::unavailable("still gone")).await;
    assert_eq!(broke.elapsed(), MIN_BACKOFF * 3, "doubled");
    assert_eq!(name(&p), "web");
    assert!(!p.rx.has_changed().unwrap());

    // Back: a valid message resets the backoff and replaces the policy.
    let stream = open(&mut calls, 8080).await;
    stream.unbounded_send(Ok(server("web-v2"))).unwrap();
    p.rx.changed().await.unwrap();
    assert_eq!(name(&p), "web-v2");
    drop(stream);
    let ended = Instant::now();
    let _stream = open(&mut calls, 8080).await;
    assert_eq!(ended.elapsed(), MIN_BACKOFF);
    assert_eq!(name(&p), "web-v2");
}

#[tokio::test(start_paused = true)]
async fn an_invalid_message_keeps_the_last_valid_policy() {
    let (source, mut calls) = fake();
    let policies = PortPolicies::new(settings(DefaultPolicy::Deny), Some(source), [8080]);
    let stream = open(&mut calls, 8080).await;
    stream.unbounded_send(Ok(server("web"))).unwrap();
    let mut p = policies.port(8080).await;
    assert_eq!(name(&p), "web");
    let mut invalid = server("evil");
    invalid.labels.remove("name");
    stream.unbounded_send(Ok(invalid)).unwrap();
    let mut no_networks = server("evil");
    no_networks.authorizations[0].networks.clear();
    stream.unbounded_send(Ok(no_networks)).unwrap();
    stream.unbounded_send(Ok(server("web-v2"))).unwrap();
    p.rx.changed().await.unwrap();
    assert_eq!(name(&p), "web-v2", "the invalid ones were skipped");
}

#[tokio::test(start_paused = true)]
async fn silent_streams_are_reconnected() {
    let (source, mut calls) = fake();
    let policies = PortPolicies::new(settings(DefaultPolicy::Deny), Some(source), [8080]);
    let stream = open(&mut calls, 8080).await;
    stream.unbounded_send(Ok(server("web"))).unwrap();
    let p = policies.port(8080).await;
    let quiet = Instant::now();
    let _again = open(&mut calls, 8080).await;
    assert_eq!(quiet.elapsed(), STREAM_IDLE_TIMEOUT + MIN_BACKOFF);
    assert_eq!(name(&p), "web");
}

#[tokio::test(start_paused = true)]
async fn undeclared_ports_wait_at_most_a_second_for_the_first_answer() {
    let (source, mut calls) = fake();
    let policies = PortPolicies::new(settings(DefaultPolicy::Deny), Some(source), []);
    assert!(policies.is_empty());

    // Answered after 300 ms: the connection waited exactly that long.
    let start = Instant::now();
    let (p, _stream) = tokio::join!(policies.port(9090), async {
        let stream = open(&mut calls, 9090).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        stream.unbounded_send(Ok(server("web"))).unwrap();
        stream
    });
    assert_eq!(start.elapsed(), Duration::from_millis(300));
    assert_eq!(name(&p), "web");

    // Never answered: the default after one second, and later
    // connections do not wait again.
    let start = Instant::now();
    let p = policies.port(9191).await;
    assert_eq!(start.elapsed(), FIRST_ANSWER_WAIT);
    assert_eq!(name(&p), "deny");
    let again = Instant::now();
    let _p2 = policies.port(9191).await;
    assert_eq!(again.elapsed(), Duration::ZERO);
    assert_eq!(policies.len(), 2);
    drop(calls);
}

#[tokio::test(start_paused = true)]
async fn an_unknown_pod_is_answered_with_the_default_but_never_replaces_a_policy() {
    let (source, mut calls) = fake();
    let policies = PortPolicies::new(settings(DefaultPolicy::Audit), Some(source), []);
    let start = Instant::now();
    let (p, ()) = tokio::join!(
        policies.port(9090),
        refuse(
            &mut calls,
            9090,
            tonic::Status::not_found("unknown pod shop/web-0")
        )
    );
    assert_eq!(start.elapsed(), Duration::ZERO, "NotFound is an answer");
    assert_eq!(name(&p), "audit");
    assert!(p.rx.borrow().answered);

    // The pod appears: its policy arrives on the retried watch.
    let stream = open(&mut calls, 9090).await;
    stream.unbounded_send(Ok(server("web"))).unwrap();
    let mut rx = p.rx.clone();
    rx.wait_for(|p| &*p.meta.name == "web").await.unwrap();
    // The controller forgets it: the policy stays.
    drop(stream);
    refuse(&mut calls, 9090, tonic::Status::not_found("unknown pod")).await;
    refuse(
        &mut calls,
        9090,
        tonic::Status::unimplemented("no inbound API"),
    )
    .await;
    assert_eq!(name(&p), "web");
}

#[tokio::test(start_paused = true)]
async fn idle_undeclared_ports_are_evicted_declared_ones_never() {
    let (source, mut calls) = fake();
    // Answers every call with a silent stream, remembering its sender.
    type Streams = Arc<Mutex<Vec<(u16, mpsc::UnboundedSender<Result<Server, tonic::Status>>)>>>;
    let streams: Streams = Arc::default();
    let opened = streams.clone();
    tokio::spawn(async move {
        while let Some((port, reply)) = calls.next().await {
            let (tx, rx) = mpsc::unbounded();
            opened.lock().unwrap().push((port, tx));
            let _ = reply.send(Ok(rx.boxed()));
        }
    });
    let open = |port: u16| {
        let streams = streams.lock().unwrap();
        streams
            .iter()
            .filter(|(p, tx)| *p == port && !tx.is_closed())
            .count()
    };
    let policies = PortPolicies::new(settings(DefaultPolicy::Deny), Some(source), [8080]);
    let held = policies.port(9000).await;
    drop(policies.port(9001).await);
    assert_eq!(policies.len(), 3);

    tokio::time::sleep(IDLE_EVICT).await;
    // The next lookup sweeps: 9001 has no connection and was unused.
    let other = policies.port(9002).await;
    assert_eq!(policies.len(), 3, "8080, 9000 (held), 9002");
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert_eq!(open(9001), 0, "the evicted port's stream is closed");
    assert_eq!((open(9000), open(8080), open(9002)), (1, 1, 1));

    drop((held, other));
    tokio::time::sleep(IDLE_EVICT + SWEEP_EVERY).await;
    let _more = policies.port(9003).await;
    // 9000 and 9002 are idle now; the declared port stays.
    assert_eq!(policies.len(), 2, "8080 and 9003");
}

#[tokio::test(start_paused = true)]
async fn the_number_of_watched_ports_is_bounded() {
    // No controller: nothing to wait for, and no task per port.
    let policies = PortPolicies::new(settings(DefaultPolicy::Deny), None, []);
    let mut held = Vec::new();
    for port in 1..=MAX_PORTS {
        let p = policies.port(u16::try_from(port).unwrap()).await;
        assert!(!p.rx.borrow().answered);
        held.push(p);
    }
    assert_eq!(policies.len(), MAX_PORTS);
    let start = Instant::now();
    let extra = policies.port(60000).await;
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(name(&extra), "deny", "unwatched ports get the default");
    assert_eq!(policies.len(), MAX_PORTS);
    // Opaque ports get an opaque default.
    assert!(held[24].rx.borrow().is_opaque(), "port 25");
    assert!(!held[0].rx.borrow().is_opaque());
}

#[tokio::test(start_paused = true)]
async fn audit_lines_are_rate_limited() {
    let log = AuditLog::new();
    assert!(log.allow());
    assert!(!log.allow());
    tokio::time::sleep(Duration::from_millis(999)).await;
    assert!(!log.allow());
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert!(log.allow());
    assert!(!log.allow());
}
