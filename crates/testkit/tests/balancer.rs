//! The cluster tests' load balancer ([`TempBalancer`], haproxy) is real and
//! not sticky: consecutive HTTP requests and WebSocket connections from one
//! client spread over both nodes, and a node whose `/healthz` fails leaves
//! the rotation within seconds. SKIPs without haproxy.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use audin_testkit::balancer::{self, TempBalancer};
use futures_util::{SinkExt as _, StreamExt as _};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;

/// A tiny node called `name` on loopback: `/healthz` (200, or 503 while
/// `healthy` is false, as a draining node), `/who` (its name) and `/ws` (a
/// WebSocket that sends its name, then stays open).
async fn backend(name: &'static str, healthy: Arc<AtomicBool>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((conn, _)) = listener.accept().await {
            tokio::spawn(serve(conn, name, healthy.clone()));
        }
    });
    addr
}

/// One request per connection (`Connection: close`): enough for haproxy,
/// which opens a new server connection when the old one is closed.
async fn serve(mut conn: TcpStream, name: &'static str, healthy: Arc<AtomicBool>) {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match conn.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let reply = |status: &str, body: &str| {
        format!(
            "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    };
    let response = match head.split_whitespace().nth(1).unwrap_or("") {
        "/healthz" if healthy.load(Ordering::SeqCst) => reply("200 OK", "ok"),
        "/healthz" => reply("503 Service Unavailable", "draining"),
        "/who" => reply("200 OK", name),
        "/ws" => {
            let Some(key) = head.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.trim()
                    .eq_ignore_ascii_case("sec-websocket-key")
                    .then(|| v.trim().to_owned())
            }) else {
                return;
            };
            let accept = derive_accept_key(key.as_bytes());
            let upgrade = format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
                 Connection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
            );
            if conn.write_all(upgrade.as_bytes()).await.is_err() {
                return;
            }
            let mut ws = WebSocketStream::from_raw_socket(conn, Role::Server, None).await;
            let _ = ws.send(Message::text(name)).await;
            while let Some(Ok(_)) = ws.next().await {}
            return;
        }
        _ => reply("404 Not Found", ""),
    };
    let _ = conn.write_all(response.as_bytes()).await;
    let _ = conn.shutdown().await;
}

/// Which node answered `GET /who` through the balancer.
async fn who(http: &reqwest::Client, lb: &TempBalancer) -> String {
    let resp = http.get(format!("{}/who", lb.url())).send().await.unwrap();
    assert!(resp.status().is_success(), "{resp:?}\n{}", lb.log());
    resp.text().await.unwrap()
}

/// Opens a WebSocket through the balancer: the node's name and the socket
/// (kept open by the caller, as a client's would be).
async fn ws_who(
    lb: &TempBalancer,
) -> (
    String,
    WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>,
) {
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/ws", lb.addr()))
        .await
        .unwrap_or_else(|e| panic!("ws through the balancer: {e}\n{}", lb.log()));
    let msg = ws.next().await.unwrap().unwrap();
    (msg.to_text().unwrap().to_owned(), ws)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_without_stickiness_and_health_checks() {
    let test = "round_robin_without_stickiness_and_health_checks";
    if !balancer::available_or_skip(test) {
        return;
    }
    let b_healthy = Arc::new(AtomicBool::new(true));
    let a = backend("a", Arc::new(AtomicBool::new(true))).await;
    let b = backend("b", b_healthy.clone()).await;
    let lb = TempBalancer::start(&[a, b]).unwrap();
    // One client, connection pool and all: a sticky balancer would pin it.
    let http = reqwest::Client::new();

    let mut seen = Vec::new();
    for _ in 0..10 {
        seen.push(who(&http, &lb).await);
    }
    let on_a = seen.iter().filter(|n| *n == "a").count();
    assert!(
        (4..=6).contains(&on_a) && seen.iter().any(|n| n == "b"),
        "10 requests should alternate between both nodes: {seen:?}\n{}",
        lb.log()
    );

    let mut sockets = Vec::new();
    let mut ws_seen = Vec::new();
    for _ in 0..4 {
        let (name, ws) = ws_who(&lb).await;
        ws_seen.push(name);
        sockets.push(ws);
    }
    assert!(
        ws_seen.iter().any(|n| n == "a") && ws_seen.iter().any(|n| n == "b"),
        "4 WebSockets should land on both nodes: {ws_seen:?}\n{}",
        lb.log()
    );

    // b drains: once its checks fail (2 × 500 ms), everything goes to a.
    // Six `a` in a row cannot happen while round robin still includes b.
    b_healthy.store(false, Ordering::SeqCst);
    let drained = Instant::now();
    let mut streak = 0;
    while streak < 6 {
        assert!(
            drained.elapsed() < Duration::from_secs(3),
            "b still in rotation 3 s after its /healthz went 503\n{}",
            lb.log()
        );
        streak = if who(&http, &lb).await == "a" {
            streak + 1
        } else {
            0
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for _ in 0..10 {
        assert_eq!(who(&http, &lb).await, "a", "{}", lb.log());
    }
    for _ in 0..2 {
        assert_eq!(ws_who(&lb).await.0, "a", "{}", lb.log());
    }
    eprintln!("{test}: b out of rotation after {:?}", drained.elapsed());
}
