//! One proxied request: pick a backend, rewrite headers, send it over a
//! pooled (or new) keep-alive connection, stream the response back, and
//! splice upgraded connections.

use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{Either, Empty};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request, Response, StatusCode, Uri, Version};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::{watch, Semaphore};

use super::cidr::Cidrs;
use super::{normalize_host, watchdog, Backend, InFlight, Pick, Router, Tunnel};

/// Body of a request sent to a backend: the client's, streamed, or empty
/// when an idempotent request is replayed.
pub(crate) type UpBody = Either<Incoming, Empty<Bytes>>;
/// One keep-alive connection to a backend.
pub(crate) type Sender = hyper::client::conn::http1::SendRequest<UpBody>;
/// The I/O half of a backend connection (hyper's dispatcher).
type Conn = hyper::client::conn::http1::Connection<TokioIo<TcpStream>, UpBody>;

/// Connecting to an instance on the container network takes well under a
/// millisecond; a stopped container's address can hang until the kernel
/// gives up on ARP (~3 s). Give up sooner than a client would.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// A connect not done after this lost its SYN (on the same host the answer
/// takes well under a millisecond): start another attempt.
const CONNECT_HEDGE: Duration = Duration::from_millis(250);
const CONNECT_ATTEMPTS: usize = 3;

/// Holds one request waits through before it gives up (each bounded by
/// `[router] hold_timeout_secs`): a hold follows another only when deploys
/// follow each other back to back.
const MAX_HOLDS: usize = 3;

/// A held request that could not wait longer (or found the queue full).
fn restarting() -> Response<RespBody> {
    let mut r = plain(
        StatusCode::SERVICE_UNAVAILABLE,
        "503 Service Unavailable: the app is restarting; try again\n".into(),
    );
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    r
}

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static FORWARDED: HeaderName = HeaderName::from_static("forwarded");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// What every request of one `serve` shares.
pub(crate) struct Ctx {
    pub(crate) router: Router,
    pub(crate) trusted: Option<Cidrs>,
    /// Turns true (or closes) when `serve` stops: tunnels end.
    pub(crate) stop: watch::Receiver<bool>,
    /// The connection cap; a tunnel takes over a slot from the connection
    /// it was upgraded from.
    pub(crate) slots: Arc<Semaphore>,
}

/// The app a response came from (none: no app serves the host), for the
/// metrics; never sent to the client.
#[derive(Clone)]
pub(crate) struct MetricsApp(pub(crate) String);

/// `resp`, marked as `app`'s for the metrics.
fn tagged(mut resp: Response<RespBody>, app: String) -> Response<RespBody> {
    resp.extensions_mut().insert(MetricsApp(app));
    resp
}

pub(crate) async fn handle(
    ctx: Arc<Ctx>,
    peer: SocketAddr,
    mut req: Request<Incoming>,
) -> Result<Response<RespBody>, Infallible> {
    if req.method() == Method::CONNECT {
        return Ok(plain(
            StatusCode::METHOD_NOT_ALLOWED,
            "CONNECT is not supported\n".into(),
        ));
    }
    let Some(host) = request_host(&req) else {
        return Ok(plain(
            StatusCode::BAD_REQUEST,
            "missing Host header\n".into(),
        ));
    };
    let key = host.to_str().map(normalize_host).unwrap_or_default();
    let (mut guard, app) = match pick_or_wait(&ctx, &key).await {
        Ok(g) => g,
        Err(resp) => return Ok(resp),
    };

    let upgrade = upgrade_protocol(req.headers());
    let client_upgrade = upgrade.is_some().then(|| hyper::upgrade::on(&mut req));
    let (parts, body) = req.into_parts();
    let trusted = ctx.trusted.as_ref().is_some_and(|c| c.contains(peer.ip()));
    let headers = forward_headers(parts.headers, host, peer.ip(), trusted, upgrade.as_ref());
    let uri = parts
        .uri
        .path_and_query()
        .and_then(|pq| Uri::try_from(pq.as_str()).ok())
        .unwrap_or_else(|| Uri::from_static("/"));
    // Replayable after it was (maybe) sent: no body and no side effects.
    let replay = (is_idempotent(&parts.method) && body.is_end_stream())
        .then(|| (parts.method.clone(), uri.clone(), headers.clone()));
    let mut pending = build(parts.method, uri, headers, Either::Left(body));

    let mut retried = false;
    let (resp, sender, mut driver) = loop {
        match send(guard.backend(), pending, upgrade.is_some()).await {
            Ok(x) => break x,
            Err(fail) => {
                let again = match fail.request {
                    // Never written: safe to send anywhere, whatever the method.
                    Some(r) => Some(r),
                    None => replay.as_ref().map(|(m, u, h)| {
                        build(m.clone(), u.clone(), h.clone(), Either::Right(Empty::new()))
                    }),
                };
                let failed = guard.backend().addr();
                crate::metrics::backend_connect_failure(&app);
                if let (false, Some(r)) = (retried, again) {
                    let timed_out = fail
                        .error
                        .downcast_ref::<std::io::Error>()
                        .is_some_and(|e| e.kind() == std::io::ErrorKind::TimedOut);
                    // A refused connect is retried even on the same (sole)
                    // backend: it may just have restarted. One that timed
                    // out is not: the client would wait twice as long.
                    let retry = match ctx.router.pick(&key, Some(failed)) {
                        Pick::Backend(g, _) if !(timed_out && g.backend().addr() == failed) => {
                            Some(g)
                        }
                        _ => None,
                    };
                    if let Some(g) = retry {
                        tracing::debug!(backend = %failed, retry = %g.backend().addr(), error = %fail.error, "backend failed; retrying once");
                        guard = g;
                        pending = r;
                        retried = true;
                        continue;
                    }
                }
                tracing::warn!(host = %printable(&key), backend = %failed, error = %fail.error, "proxy request failed");
                let text = "502 Bad Gateway: the app did not answer\n".into();
                return Ok(tagged(plain(StatusCode::BAD_GATEWAY, text), app));
            }
        }
    };

    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        let resp = switch_protocols(ctx, guard, resp, client_upgrade, upgrade);
        return Ok(tagged(resp, app));
    }

    // The connection goes back to the pool once this response is read,
    // unless the backend closes it (busybox httpd does after every response):
    // then the response body drives it to its end, in this task.
    if !closes(&resp) {
        if let Some(d) = driver.take() {
            d.spawn(guard.backend().addr());
        }
        let backend = guard.backend().clone();
        tokio::spawn(async move {
            let mut sender = sender;
            if sender.ready().await.is_ok() {
                backend.checkin(sender);
            }
        });
    }
    let (mut parts, body) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    parts.extensions.insert(MetricsApp(app));
    Ok(Response::from_parts(
        parts,
        RespBody::proxied(body, guard, driver),
    ))
}

/// The backend for a request to `key`: waits while the app is held (a
/// stop-first rollout), else the answer when there is none.
async fn pick_or_wait(ctx: &Ctx, key: &str) -> Result<(InFlight, String), Response<RespBody>> {
    let mut holds = 0;
    loop {
        match ctx.router.pick(key, None) {
            Pick::Backend(g, app) => return Ok((g, app)),
            // Held while the app's single web instance is swapped: wait
            // for the new one (a few holds in a row at most).
            Pick::Held(w) if holds < MAX_HOLDS => {
                holds += 1;
                if !w.wait(ctx.router.hold_limits().timeout).await {
                    return Err(restarting());
                }
            }
            Pick::Held(_) | Pick::HoldFull => return Err(restarting()),
            Pick::NoApp => {
                return Err(plain(
                    StatusCode::NOT_FOUND,
                    format!("404 Not Found: no app is served at {}\n", printable(key)),
                ));
            }
            Pick::NoBackend(app) => {
                let text =
                    format!("503 Service Unavailable: app {app} has no running web process\n");
                return Err(tagged(plain(StatusCode::SERVICE_UNAVAILABLE, text), app));
            }
        }
    }
}

/// A backend's `101 Switching Protocols`: answers the client in kind and
/// splices the two upgraded connections on a task of their own (the
/// backend's slot becomes a tunnel).
fn switch_protocols(
    ctx: Arc<Ctx>,
    guard: InFlight,
    mut resp: Response<Incoming>,
    client_upgrade: Option<hyper::upgrade::OnUpgrade>,
    upgrade: Option<HeaderValue>,
) -> Response<RespBody> {
    let Some(client_upgrade) = client_upgrade else {
        return plain(
            StatusCode::BAD_GATEWAY,
            "502 Bad Gateway: unexpected 101 from the app\n".into(),
        );
    };
    let upstream_upgrade = hyper::upgrade::on(&mut resp);
    let (mut parts, _) = resp.into_parts();
    let protocol = parts.headers.get(header::UPGRADE).cloned();
    strip_hop_by_hop(&mut parts.headers);
    parts
        .headers
        .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    if let Some(p) = protocol.or(upgrade) {
        parts.headers.insert(header::UPGRADE, p);
    }
    let tunnel = guard.into_tunnel();
    tokio::spawn(splice(ctx, tunnel, client_upgrade, upstream_upgrade));
    Response::from_parts(parts, RespBody::empty())
}

struct SendFail {
    /// The request, when it was never written to a connection.
    request: Option<Request<UpBody>>,
    error: anyhow::Error,
}

/// Drives a new backend connection from the task of the request that opened
/// it, instead of a task of its own: no spawn and no wake-up of another
/// worker thread per connection, which is most of what a request costs
/// against a backend that closes every connection. Polled without
/// `shutdown`: the connection is dropped (and reset, see `send`) once the
/// exchange is over, without first sending a FIN the reset makes useless.
struct Driver {
    conn: Conn,
    done: bool,
}

impl Driver {
    fn poll(&mut self, cx: &mut Context<'_>) {
        if self.done {
            return;
        }
        if let Poll::Ready(r) = self.conn.poll_without_shutdown(cx) {
            self.done = true;
            if let Err(e) = r {
                tracing::debug!(error = %e, "backend connection ended");
            }
        }
    }

    /// Hands a connection kept alive (pooled) to a task of its own.
    fn spawn(mut self, addr: SocketAddr) {
        if self.done {
            return;
        }
        tokio::spawn(async move {
            if let Err(e) = std::future::poll_fn(|cx| self.conn.poll_without_shutdown(cx)).await {
                tracing::debug!(backend = %addr, error = %e, "backend connection ended");
            }
        });
    }
}

/// Sends on a pooled connection, else a new one. A pooled connection that
/// the backend closed meanwhile hands the request back unsent; try the next.
/// A new connection comes back with its `Driver`, unless `upgrade` (a 101
/// needs hyper's upgrade machinery, which runs in a task of its own).
async fn send(
    backend: &Backend,
    mut req: Request<UpBody>,
    upgrade: bool,
) -> Result<(Response<Incoming>, Sender, Option<Box<Driver>>), SendFail> {
    while let Some(mut sender) = backend.checkout() {
        match sender.try_send_request(req).await {
            Ok(resp) => return Ok((resp, sender, None)),
            Err(mut e) => match e.take_message() {
                Some(r) => req = r,
                None => {
                    return Err(SendFail {
                        request: None,
                        error: e.into_error().into(),
                    })
                }
            },
        }
    }
    let stream = match connect(backend.addr()).await {
        Ok(s) => s,
        Err(e) => {
            return Err(SendFail {
                request: Some(req),
                error: anyhow::Error::new(e).context("connect"),
            })
        }
    };
    let _ = stream.set_nodelay(true);
    // Close with a reset, never a FIN. The side that closes first keeps the
    // address pair in TIME_WAIT for a minute; here that is the router, which
    // reads a `Connection: close` response and closes at once, so against a
    // backend that closes every connection (busybox httpd) the ~28k
    // ephemeral ports to one instance run out at ~470 requests/s. The router
    // only closes a backend connection when its exchange is over (or the
    // client gave up), so a reset loses nothing.
    let _ = stream.set_zero_linger();
    let (mut sender, conn) = match hyper::client::conn::http1::Builder::new()
        .handshake(TokioIo::new(stream))
        .await
    {
        Ok(x) => x,
        Err(e) => {
            return Err(SendFail {
                request: Some(req),
                error: e.into(),
            })
        }
    };
    let sent = if upgrade {
        let addr = backend.addr();
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(backend = %addr, error = %e, "backend connection ended");
            }
        });
        (sender.try_send_request(req).await, None)
    } else {
        let mut driver = Box::new(Driver { conn, done: false });
        let mut response = std::pin::pin!(sender.try_send_request(req));
        let r = std::future::poll_fn(|cx| {
            driver.poll(cx);
            response.as_mut().poll(cx)
        })
        .await;
        (r, Some(driver))
    };
    match sent {
        (Ok(resp), driver) => Ok((resp, sender, driver)),
        (Err(mut e), _) => Err(SendFail {
            request: e.take_message(),
            error: e.into_error().into(),
        }),
    }
}

/// Connects, starting another attempt when one has not completed after
/// `CONNECT_HEDGE`: a SYN dropped because the backend's accept queue was
/// full (busybox httpd listens with a backlog of 9) is otherwise resent only
/// after the kernel's 1 s initial timeout. The first attempt to succeed
/// wins; the others are dropped. Fails with the last error once every
/// attempt failed (a refused connect fails at once: nothing to hedge), or
/// after `CONNECT_TIMEOUT`.
///
/// On the same host a connect is done long before the first hedge, so that
/// path arms no tokio timer (see `watchdog`); the rare slow one does.
async fn connect(addr: SocketAddr) -> std::io::Result<TcpStream> {
    use futures::stream::{FuturesUnordered, StreamExt};
    let first = TcpStream::connect(addr);
    tokio::pin!(first);
    tokio::select! {
        biased;
        r = &mut first => return r,
        _ = watchdog::after(CONNECT_HEDGE) => {}
    }
    let give_up = tokio::time::sleep(CONNECT_TIMEOUT.saturating_sub(CONNECT_HEDGE));
    tokio::pin!(give_up);
    let mut first_pending = true;
    let mut more = FuturesUnordered::new();
    more.push(TcpStream::connect(addr));
    let mut started = 2;
    loop {
        tokio::select! {
            r = &mut first, if first_pending => match r {
                Ok(s) => return Ok(s),
                Err(e) if more.is_empty() => return Err(e),
                Err(_) => first_pending = false,
            },
            Some(r) = more.next(), if !more.is_empty() => match r {
                Ok(s) => return Ok(s),
                Err(e) if more.is_empty() && !first_pending => return Err(e),
                Err(_) => {}
            },
            _ = tokio::time::sleep(CONNECT_HEDGE), if started < CONNECT_ATTEMPTS => {
                more.push(TcpStream::connect(addr));
                started += 1;
            }
            _ = &mut give_up => {
                return Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "timed out"));
            }
        }
    }
}

/// Splices an upgraded client connection to the upgraded backend
/// connection until either side closes, `drain` gives up on the backend, or
/// the router stops.
async fn splice(
    ctx: Arc<Ctx>,
    tunnel: Tunnel,
    client: hyper::upgrade::OnUpgrade,
    upstream: hyper::upgrade::OnUpgrade,
) {
    let backend = tunnel.backend().addr();
    let Ok(_slot) = ctx.slots.clone().try_acquire_owned() else {
        tracing::debug!(%backend, "tunnel refused: too many connections");
        return;
    };
    let (client, upstream) = match tokio::try_join!(client, upstream) {
        Ok(x) => x,
        Err(e) => {
            tracing::debug!(%backend, error = %e, "upgrade failed");
            return;
        }
    };
    let (mut client, mut upstream) = (TokioIo::new(client), TokioIo::new(upstream));
    let mut closed = tunnel.backend().tunnel_closer();
    let mut stop = ctx.stop.clone();
    tokio::select! {
        r = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {
            if let Err(e) = r {
                tracing::debug!(%backend, error = %e, "tunnel ended");
            }
        }
        _ = super::serve::stopped(&mut closed) => tracing::debug!(%backend, "tunnel closed: backend drained"),
        _ = super::serve::stopped(&mut stop) => {}
    }
    drop(tunnel);
}

fn build(method: Method, uri: Uri, headers: HeaderMap, body: UpBody) -> Request<UpBody> {
    let mut req = Request::new(body);
    *req.method_mut() = method;
    *req.uri_mut() = uri;
    *req.version_mut() = Version::HTTP_11;
    *req.headers_mut() = headers;
    req
}

/// The host the client asked for: an absolute-form target's authority wins
/// over the `Host` header (RFC 9112 §3.2.2).
fn request_host<B>(req: &Request<B>) -> Option<HeaderValue> {
    if let Some(a) = req.uri().authority() {
        return HeaderValue::from_str(a.as_str().rsplit('@').next().unwrap_or_default()).ok();
    }
    req.headers()
        .get(header::HOST)
        .filter(|h| !h.is_empty())
        .cloned()
}

/// `Some(protocol)` for `Connection: upgrade` + `Upgrade: protocol`.
fn upgrade_protocol(headers: &HeaderMap) -> Option<HeaderValue> {
    let wants = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    if wants {
        headers.get(header::UPGRADE).cloned()
    } else {
        None
    }
}

/// Removes the headers that describe one connection rather than the
/// message: the fixed list and whatever `Connection` names.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [
        &header::CONNECTION,
        &KEEP_ALIVE,
        &PROXY_CONNECTION,
        &header::TE,
        &header::TRAILER,
        &header::TRANSFER_ENCODING,
        &header::UPGRADE,
    ] {
        headers.remove(name);
    }
}

/// The headers sent to the backend: hop-by-hop ones removed, `Host` as the
/// client asked, and `X-Forwarded-For/Proto/Host` set (a trusted proxy's
/// are kept, its address appended to `X-Forwarded-For`).
fn forward_headers(
    mut h: HeaderMap,
    host: HeaderValue,
    peer: IpAddr,
    trusted: bool,
    upgrade: Option<&HeaderValue>,
) -> HeaderMap {
    strip_hop_by_hop(&mut h);
    // hyper already answered `Expect: 100-continue` when it read the body.
    h.remove(header::EXPECT);
    h.insert(header::HOST, host.clone());
    let peer = peer.to_canonical().to_string();
    let xff = if trusted && h.contains_key(&X_FORWARDED_FOR) {
        let prior: Vec<&str> = h
            .get_all(&X_FORWARDED_FOR)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        format!("{}, {peer}", prior.join(", "))
    } else {
        peer
    };
    if let Ok(v) = HeaderValue::from_str(&xff) {
        h.insert(X_FORWARDED_FOR.clone(), v);
    }
    if !(trusted && h.contains_key(&X_FORWARDED_PROTO)) {
        h.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static("http"));
    }
    if !(trusted && h.contains_key(&X_FORWARDED_HOST)) {
        h.insert(X_FORWARDED_HOST.clone(), host);
    }
    if !trusted {
        h.remove(&FORWARDED);
    }
    if let Some(p) = upgrade {
        h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        h.insert(header::UPGRADE, p.clone());
    }
    h
}

/// Whether the backend ends the connection with this response:
/// `Connection: close`, or HTTP/1.0 without `Connection: keep-alive`.
fn closes<B>(resp: &Response<B>) -> bool {
    let has = |token: &str| {
        resp.headers()
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    };
    has("close") || (resp.version() == Version::HTTP_10 && !has("keep-alive"))
}

fn is_idempotent(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

/// A host name safe to echo: printable ASCII, bounded.
fn printable(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_graphic())
        .take(253)
        .collect()
}

pub(crate) fn plain(status: StatusCode, body: String) -> Response<RespBody> {
    let mut resp = Response::new(RespBody::full(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

/// A response body: the backend's, streamed, holding its request's place in
/// flight until it ends; or a short body of our own.
pub(crate) struct RespBody(Kind);

enum Kind {
    /// The backend's body, its request's place in flight (until the body
    /// ends) and the connection it arrives on when this body drives it.
    Proxied(Incoming, Option<InFlight>, Option<Box<Driver>>),
    Full(Option<Bytes>),
}

impl RespBody {
    fn proxied(body: Incoming, guard: InFlight, driver: Option<Box<Driver>>) -> RespBody {
        RespBody(Kind::Proxied(body, Some(guard), driver))
    }

    pub(crate) fn full(b: Bytes) -> RespBody {
        RespBody(Kind::Full(Some(b)))
    }

    fn empty() -> RespBody {
        RespBody(Kind::Full(None))
    }
}

impl Body for RespBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match &mut self.get_mut().0 {
            Kind::Proxied(body, guard, driver) => {
                if let Some(d) = driver {
                    d.poll(cx);
                }
                let polled = Pin::new(body).poll_frame(cx);
                if matches!(polled, Poll::Ready(None) | Poll::Ready(Some(Err(_)))) {
                    // The exchange is over: close the connection now.
                    driver.take();
                    guard.take();
                }
                polled
            }
            Kind::Full(b) => Poll::Ready(b.take().map(|d| Ok(Frame::data(d)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.0 {
            Kind::Proxied(body, ..) => body.is_end_stream(),
            Kind::Full(b) => b.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.0 {
            Kind::Proxied(body, ..) => body.size_hint(),
            Kind::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
        }
    }
}

#[cfg(test)]
mod tests;
