//! A fault-injecting TCP proxy for tests.
//!
//! [`FaultProxy::start`] binds `127.0.0.1:0` and forwards every accepted
//! connection to a target address. A test changes what happens to the bytes
//! at any time with [`FaultProxy::set`] (every connection) or
//! [`FaultProxy::set_for`] (connections whose HTTP request path starts with a
//! prefix, e.g. `/v1/operator/audio`), choosing whether the fault applies to
//! the connections already open, to the ones accepted from now on, or both
//! ([`Scope`]).
//!
//! | [`Fault`] | existing connections | new connections |
//! |---|---|---|
//! | `Pass` | forward both ways | forward |
//! | `Delay` | hold each chunk for the direction's delay, order kept | same |
//! | `Stall` | stop reading and writing; sockets stay open (TCP back-pressure builds) | accepted, upstream connected, nothing forwarded |
//! | `BlackHole` | read and discard both ways, never answer (a half-open path) | accepted, never connected upstream, input swallowed |
//! | `Drop` | close both sides cleanly (FIN) | accepted then closed |
//! | `Reset` | close both sides with RST (`SO_LINGER` 0) | accepted then reset |
//! | `Refuse` | no effect | the listener is closed: connects fail with `ECONNREFUSED` |
//!
//! A connection accepted while black-holed never gets an upstream, so it
//! stays a black hole until it is dropped or reset. Bytes swallowed from an
//! established stream are lost: passing it again afterwards usually breaks
//! the framing above TCP, as a real network would not (tests drop such a
//! connection instead of reviving it).
//!
//! The proxy only ever connects to the target it was given (tests pass a
//! loopback address).

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// What the proxy does to the bytes of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Forward unchanged.
    Pass,
    /// Forward each chunk after a delay, per direction.
    Delay {
        /// Client → target.
        to_target: Duration,
        /// Target → client.
        to_client: Duration,
    },
    /// Stop forwarding (and reading) but keep both sockets open.
    Stall,
    /// Read and discard everything both ways; never answer.
    BlackHole,
    /// Close both sides cleanly.
    Drop,
    /// Close both sides with a TCP reset.
    Reset,
    /// New connections only: stop listening (connection refused).
    Refuse,
}

impl Fault {
    /// The same delay both ways.
    pub fn delay_ms(ms: u64) -> Fault {
        Fault::Delay {
            to_target: Duration::from_millis(ms),
            to_client: Duration::from_millis(ms),
        }
    }
}

/// Which connections a fault applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The connections open now.
    Existing,
    /// The connections accepted from now on.
    New,
    /// Both.
    All,
}

impl Scope {
    fn existing(self) -> bool {
        matches!(self, Scope::Existing | Scope::All)
    }
    fn new_ones(self) -> bool {
        matches!(self, Scope::New | Scope::All)
    }
}

/// What the proxy knows about one connection.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// Sequence number, from 1.
    pub id: u64,
    /// The HTTP request path of the first line the client sent, if any.
    pub path: Option<String>,
    /// When it was accepted.
    pub accepted_at: Instant,
    /// The fault currently applied.
    pub fault: Fault,
    /// When the first client → target chunk was swallowed by a black hole.
    pub first_swallowed_at: Option<Instant>,
    /// When the first target → client chunk was swallowed by a black hole.
    pub first_swallowed_to_client_at: Option<Instant>,
    /// Bytes forwarded client → target.
    pub bytes_to_target: u64,
    /// Bytes forwarded target → client.
    pub bytes_to_client: u64,
    /// Whether the proxy is done with it.
    pub closed: bool,
}

#[derive(Debug)]
struct Conn {
    id: u64,
    path: Mutex<Option<String>>,
    accepted_at: Instant,
    mode: watch::Sender<Fault>,
    first_swallowed: Mutex<Option<Instant>>,
    first_swallowed_down: Mutex<Option<Instant>>,
    up: AtomicU64,
    down: AtomicU64,
    closed: AtomicBool,
}

impl Conn {
    fn info(&self) -> ConnInfo {
        ConnInfo {
            id: self.id,
            path: self.path.lock().expect("path lock").clone(),
            accepted_at: self.accepted_at,
            fault: *self.mode.borrow(),
            first_swallowed_at: *self.first_swallowed.lock().expect("swallow lock"),
            first_swallowed_to_client_at: *self.first_swallowed_down.lock().expect("swallow lock"),
            bytes_to_target: self.up.load(Ordering::Relaxed),
            bytes_to_client: self.down.load(Ordering::Relaxed),
            closed: self.closed.load(Ordering::Relaxed),
        }
    }

    fn matches(&self, prefix: Option<&str>) -> bool {
        match prefix {
            None => true,
            Some(p) => self
                .path
                .lock()
                .expect("path lock")
                .as_deref()
                .is_some_and(|path| path.starts_with(p)),
        }
    }
}

#[derive(Debug)]
struct Rule {
    prefix: Option<String>,
    fault: Fault,
}

#[derive(Debug)]
struct Inner {
    target: Mutex<SocketAddr>,
    /// Rules for new connections; the last matching one wins (default pass).
    rules: Mutex<Vec<Rule>>,
    conns: Mutex<HashMap<u64, Arc<Conn>>>,
    next_id: AtomicU64,
    refusing: watch::Sender<bool>,
    accepted: AtomicU64,
}

impl Inner {
    fn new_conn_fault(&self, path: Option<&str>) -> Fault {
        let rules = self.rules.lock().expect("rules lock");
        rules
            .iter()
            .rev()
            .find(|r| match (&r.prefix, path) {
                (None, _) => true,
                (Some(p), Some(path)) => path.starts_with(p.as_str()),
                (Some(_), None) => false,
            })
            .map_or(Fault::Pass, |r| r.fault)
    }

    /// Whether any rule looks at the path (then the first request line is
    /// read before the upstream connection is made).
    fn rules_need_path(&self) -> bool {
        self.rules
            .lock()
            .expect("rules lock")
            .iter()
            .any(|r| r.prefix.is_some())
    }
}

/// A running proxy; stops when dropped.
#[derive(Debug)]
pub struct FaultProxy {
    addr: SocketAddr,
    inner: Arc<Inner>,
    accept: JoinHandle<()>,
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.accept.abort();
        for conn in self.inner.conns.lock().expect("conns lock").values() {
            conn.mode.send_replace(Fault::Drop);
        }
    }
}

/// How long the proxy waits for a client's first bytes when a rule needs
/// the request path.
const FIRST_LINE_WAIT: Duration = Duration::from_secs(2);
/// Chunks queued per direction (delay mode) before reading pauses.
const QUEUE_CHUNKS: usize = 1024;

impl FaultProxy {
    /// Binds `127.0.0.1:0` and forwards to `target`.
    pub async fn start(target: SocketAddr) -> io::Result<FaultProxy> {
        let listener = bind(SocketAddr::from(([127, 0, 0, 1], 0)))?;
        let addr = listener.local_addr()?;
        let inner = Arc::new(Inner {
            target: Mutex::new(target),
            rules: Mutex::new(Vec::new()),
            conns: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            refusing: watch::channel(false).0,
            accepted: AtomicU64::new(0),
        });
        let accept = tokio::spawn(accept_loop(listener, addr, inner.clone()));
        Ok(FaultProxy {
            addr,
            inner,
            accept,
        })
    }

    /// The proxy's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR` of the proxy.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Points new connections at another target.
    pub fn set_target(&self, target: SocketAddr) {
        *self.inner.target.lock().expect("target lock") = target;
    }

    /// Applies `fault` to every connection in `scope`.
    pub fn set(&self, fault: Fault, scope: Scope) {
        self.apply(None, fault, scope);
    }

    /// Applies `fault` to the connections in `scope` whose request path
    /// starts with `path_prefix`. (`Refuse` cannot look at a path: it
    /// refuses every new connection.)
    pub fn set_for(&self, path_prefix: &str, fault: Fault, scope: Scope) {
        self.apply(Some(path_prefix), fault, scope);
    }

    fn apply(&self, prefix: Option<&str>, fault: Fault, scope: Scope) {
        if scope.new_ones() {
            if fault == Fault::Refuse {
                self.inner.refusing.send_replace(true);
            } else {
                self.inner.refusing.send_replace(false);
                let mut rules = self.inner.rules.lock().expect("rules lock");
                if prefix.is_none() {
                    rules.clear();
                } else {
                    rules.retain(|r| r.prefix.as_deref() != prefix);
                }
                rules.push(Rule {
                    prefix: prefix.map(str::to_owned),
                    fault,
                });
            }
        }
        if scope.existing() && fault != Fault::Refuse {
            for conn in self.inner.conns.lock().expect("conns lock").values() {
                if conn.matches(prefix) {
                    conn.mode.send_replace(fault);
                }
            }
        }
    }

    /// Every connection seen, oldest first (closed ones included).
    pub fn connections(&self) -> Vec<ConnInfo> {
        let mut all: Vec<ConnInfo> = self
            .inner
            .conns
            .lock()
            .expect("conns lock")
            .values()
            .map(|c| c.info())
            .collect();
        all.sort_by_key(|c| c.id);
        all
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> u64 {
        self.inner.accepted.load(Ordering::Relaxed)
    }

    /// The open connections whose path starts with `prefix`.
    pub fn open_connections(&self, prefix: &str) -> Vec<ConnInfo> {
        self.connections()
            .into_iter()
            .filter(|c| !c.closed && c.path.as_deref().is_some_and(|p| p.starts_with(prefix)))
            .collect()
    }
}

fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

async fn accept_loop(listener: TcpListener, addr: SocketAddr, inner: Arc<Inner>) {
    let mut refusing = inner.refusing.subscribe();
    let mut listener = Some(listener);
    loop {
        if *refusing.borrow_and_update() {
            listener = None;
            if refusing.changed().await.is_err() {
                return;
            }
            continue;
        }
        let l = match &listener {
            Some(l) => l,
            None => {
                // Refusal is over: listen on the same port again.
                let mut tries = 0;
                loop {
                    match bind(addr) {
                        Ok(l) => break listener.insert(l),
                        Err(_) if tries < 100 => {
                            tries += 1;
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                        Err(_) => return,
                    }
                }
            }
        };
        tokio::select! {
            changed = refusing.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            accepted = l.accept() => {
                if let Ok((stream, _)) = accepted {
                    inner.accepted.fetch_add(1, Ordering::Relaxed);
                    tokio::spawn(handle(stream, inner.clone()));
                }
            }
        }
    }
}

fn request_path(first: &[u8]) -> Option<String> {
    let line_end = first.iter().position(|&b| b == b'\r' || b == b'\n')?;
    let line = std::str::from_utf8(&first[..line_end]).ok()?;
    let mut parts = line.split(' ');
    let _method = parts.next()?;
    parts.next().map(str::to_owned)
}

fn reset(stream: &TcpStream) {
    let _ = socket2::SockRef::from(stream).set_linger(Some(Duration::ZERO));
}

async fn handle(mut client: TcpStream, inner: Arc<Inner>) {
    let _ = client.set_nodelay(true);
    let id = inner.next_id.fetch_add(1, Ordering::Relaxed);
    let mut first = Vec::new();
    if inner.rules_need_path() {
        let mut buf = vec![0u8; 8 * 1024];
        if let Ok(Ok(n)) = tokio::time::timeout(FIRST_LINE_WAIT, client.read(&mut buf)).await {
            first.extend_from_slice(&buf[..n]);
        }
    }
    let path = request_path(&first);
    let fault = inner.new_conn_fault(path.as_deref());
    let conn = Arc::new(Conn {
        id,
        path: Mutex::new(path),
        accepted_at: Instant::now(),
        mode: watch::channel(fault).0,
        first_swallowed: Mutex::new(None),
        first_swallowed_down: Mutex::new(None),
        up: AtomicU64::new(0),
        down: AtomicU64::new(0),
        closed: AtomicBool::new(false),
    });
    inner
        .conns
        .lock()
        .expect("conns lock")
        .insert(id, conn.clone());
    run_conn(client, first, &inner, &conn).await;
    conn.closed.store(true, Ordering::Relaxed);
}

async fn run_conn(mut client: TcpStream, first: Vec<u8>, inner: &Inner, conn: &Arc<Conn>) {
    let mut mode = conn.mode.subscribe();
    let initial = *mode.borrow_and_update();
    match initial {
        Fault::Drop => return,
        Fault::Reset => return reset(&client),
        Fault::BlackHole => {
            if !first.is_empty() {
                conn.first_swallowed
                    .lock()
                    .expect("swallow lock")
                    .get_or_insert_with(Instant::now);
            }
            return black_hole(client, conn, &mut mode).await;
        }
        _ => {}
    }
    let target = *inner.target.lock().expect("target lock");
    let mut server = match TcpStream::connect(target).await {
        Ok(s) => s,
        // The target is down: the client sees a reset, like a refused
        // connection one hop further.
        Err(_) => return reset(&client),
    };
    let _ = server.set_nodelay(true);
    let end = {
        let (mut cr, mut cw) = client.split();
        let (mut sr, mut sw) = server.split();
        let up = pump(
            &mut cr,
            &mut sw,
            first,
            conn,
            Dir::ToTarget,
            conn.mode.subscribe(),
        );
        let down = pump(
            &mut sr,
            &mut cw,
            Vec::new(),
            conn,
            Dir::ToClient,
            conn.mode.subscribe(),
        );
        tokio::select! {
            _ = async { tokio::join!(up, down) } => Fault::Drop,
            end = wait_for_end(&mut mode) => end,
        }
    };
    if end == Fault::Reset {
        reset(&client);
        reset(&server);
    }
}

/// Resolves with `Drop` or `Reset` once the connection's fault becomes one.
async fn wait_for_end(mode: &mut watch::Receiver<Fault>) -> Fault {
    loop {
        let m = *mode.borrow_and_update();
        if matches!(m, Fault::Drop | Fault::Reset) {
            return m;
        }
        if mode.changed().await.is_err() {
            return Fault::Drop;
        }
    }
}

async fn black_hole(mut client: TcpStream, conn: &Conn, mode: &mut watch::Receiver<Fault>) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        tokio::select! {
            end = wait_for_end(mode) => {
                if end == Fault::Reset {
                    reset(&client);
                }
                return;
            }
            n = client.read(&mut buf) => match n {
                Ok(0) | Err(_) => return,
                Ok(_) => {
                    conn.first_swallowed
                        .lock()
                        .expect("swallow lock")
                        .get_or_insert_with(Instant::now);
                }
            },
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dir {
    ToTarget,
    ToClient,
}

fn delay_of(fault: Fault, dir: Dir) -> Duration {
    match (fault, dir) {
        (Fault::Delay { to_target, .. }, Dir::ToTarget) => to_target,
        (Fault::Delay { to_client, .. }, Dir::ToClient) => to_client,
        _ => Duration::ZERO,
    }
}

/// Waits while the fault is `Stall`; returns the first other fault.
async fn not_stalled(mode: &mut watch::Receiver<Fault>) -> Fault {
    loop {
        let m = *mode.borrow_and_update();
        if m != Fault::Stall {
            return m;
        }
        if mode.changed().await.is_err() {
            return Fault::Drop;
        }
    }
}

/// Moves one direction's bytes, applying the connection's fault.
async fn pump<R, W>(
    src: &mut R,
    dst: &mut W,
    first: Vec<u8>,
    conn: &Conn,
    dir: Dir,
    mode: watch::Receiver<Fault>,
) where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let (tx, mut rx) = mpsc::channel::<(Instant, Vec<u8>)>(QUEUE_CHUNKS);
    let mut read_mode = mode.clone();
    let mut write_mode = mode;
    let swallow = |conn: &Conn| {
        let slot = match dir {
            Dir::ToTarget => &conn.first_swallowed,
            Dir::ToClient => &conn.first_swallowed_down,
        };
        slot.lock()
            .expect("swallow lock")
            .get_or_insert_with(Instant::now);
    };
    let reader = async move {
        if !first.is_empty() {
            let m = *read_mode.borrow();
            let _ = tx.send((Instant::now() + delay_of(m, dir), first)).await;
        }
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let m = not_stalled(&mut read_mode).await;
            if matches!(m, Fault::Drop | Fault::Reset) {
                return;
            }
            tokio::select! {
                _ = read_mode.changed() => continue,
                n = src.read(&mut buf) => match n {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        if dir == Dir::ToTarget {
                            let mut path = conn.path.lock().expect("path lock");
                            if path.is_none() {
                                *path = request_path(&buf[..n]);
                            }
                        }
                        let m = *read_mode.borrow();
                        if m == Fault::BlackHole {
                            swallow(conn);
                            continue;
                        }
                        let release = Instant::now() + delay_of(m, dir);
                        if tx.send((release, buf[..n].to_vec())).await.is_err() {
                            return;
                        }
                    }
                },
            }
        }
    };
    let writer = async {
        while let Some((release, chunk)) = rx.recv().await {
            tokio::time::sleep_until(release).await;
            let m = not_stalled(&mut write_mode).await;
            match m {
                Fault::Drop | Fault::Reset => return,
                Fault::BlackHole => {
                    swallow(conn);
                    continue;
                }
                _ => {}
            }
            if dst.write_all(&chunk).await.is_err() {
                return;
            }
            let counter = match dir {
                Dir::ToTarget => &conn.up,
                Dir::ToClient => &conn.down,
            };
            counter.fetch_add(chunk.len() as u64, Ordering::Relaxed);
        }
        // The source ended: pass the half-close on, unless the path is a
        // black hole or stalled (then the FIN is lost too, until the fault
        // changes).
        loop {
            let m = *write_mode.borrow_and_update();
            match m {
                Fault::Drop | Fault::Reset => return,
                Fault::BlackHole | Fault::Stall => {
                    if write_mode.changed().await.is_err() {
                        return;
                    }
                }
                _ => break,
            }
        }
        let _ = dst.shutdown().await;
    };
    tokio::join!(reader, writer);
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn echo_server() -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        addr
    }

    async fn round_trip(s: &mut TcpStream, msg: &[u8], wait: Duration) -> Option<Vec<u8>> {
        s.write_all(msg).await.ok()?;
        let mut buf = vec![0u8; msg.len()];
        match tokio::time::timeout(wait, s.read_exact(&mut buf)).await {
            Ok(Ok(_)) => Some(buf),
            _ => None,
        }
    }

    #[tokio::test]
    async fn pass_delay_stall_blackhole_drop_reset_refuse() {
        let proxy = FaultProxy::start(echo_server().await).await.unwrap();
        let short = Duration::from_millis(300);
        let mut a = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(round_trip(&mut a, b"ping", short).await.unwrap(), b"ping");

        proxy.set(Fault::delay_ms(100), Scope::Existing);
        let t = Instant::now();
        assert!(
            round_trip(&mut a, b"slow", Duration::from_secs(2))
                .await
                .is_some()
        );
        assert!(
            t.elapsed() >= Duration::from_millis(200),
            "{:?}",
            t.elapsed()
        );

        proxy.set(Fault::Stall, Scope::Existing);
        assert!(round_trip(&mut a, b"held", short).await.is_none());
        proxy.set(Fault::Pass, Scope::Existing);
        let mut buf = [0u8; 4];
        tokio::time::timeout(short, a.read_exact(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&buf, b"held", "stalled bytes are delivered after the stall");

        proxy.set(Fault::BlackHole, Scope::Existing);
        assert!(round_trip(&mut a, b"lost", short).await.is_none());
        assert!(proxy.connections()[0].first_swallowed_at.is_some());

        proxy.set(Fault::Drop, Scope::Existing);
        let n = tokio::time::timeout(short, a.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(n, 0, "clean close");

        let mut b = TcpStream::connect(proxy.addr()).await.unwrap();
        assert!(round_trip(&mut b, b"new!", short).await.is_some());
        proxy.set(Fault::Reset, Scope::Existing);
        let r = tokio::time::timeout(short, b.read(&mut buf)).await.unwrap();
        assert_eq!(r.unwrap_err().kind(), io::ErrorKind::ConnectionReset);

        proxy.set(Fault::Refuse, Scope::New);
        tokio::time::sleep(Duration::from_millis(50)).await;
        let e = TcpStream::connect(proxy.addr()).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused);
        proxy.set(Fault::Pass, Scope::New);
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut c = TcpStream::connect(proxy.addr()).await.unwrap();
        assert!(round_trip(&mut c, b"back", short).await.is_some());

        proxy.set(Fault::BlackHole, Scope::New);
        let mut d = TcpStream::connect(proxy.addr()).await.unwrap();
        assert!(round_trip(&mut d, b"void", short).await.is_none());
        assert!(
            round_trip(&mut c, b"old!", short).await.is_some(),
            "existing untouched"
        );
    }

    #[tokio::test]
    async fn path_rules_pick_connections() {
        let proxy = FaultProxy::start(echo_server().await).await.unwrap();
        proxy.set_for("/audio", Fault::BlackHole, Scope::New);
        let short = Duration::from_millis(300);
        let mut audio = TcpStream::connect(proxy.addr()).await.unwrap();
        assert!(
            round_trip(&mut audio, b"GET /audio HTTP/1.1\r\n", short)
                .await
                .is_none()
        );
        let mut other = TcpStream::connect(proxy.addr()).await.unwrap();
        assert!(
            round_trip(&mut other, b"GET /presence HTTP/1.1\r\n", short)
                .await
                .is_some()
        );
        assert_eq!(proxy.open_connections("/presence").len(), 1);
        proxy.set_for("/presence", Fault::Drop, Scope::Existing);
        let mut buf = [0u8; 1];
        let n = tokio::time::timeout(short, other.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(n, 0);
    }
}
