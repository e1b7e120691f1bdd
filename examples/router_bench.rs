//! Drives `rack::router` for `bench/router/run.sh`.
//!
//!     router_bench proxy LISTEN HOST BACKEND...   # the router, one app
//!     router_bench tls LISTEN HTTPS_LISTEN HOST CERT KEY BACKEND...
//!                                                 # the same with HTTPS (PEM files)
//!     router_bench hello LISTEN                   # a tiny keep-alive hyper backend
//!
//! Each prints `ready ADDR` (`tls`: `ready HTTP_ADDR HTTPS_ADDR`) on stdout once listening and run until killed.
//! `ROUTER_THREADS` sets the router's threads (`[router] threads`; default
//! 0, one per CPU).

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

fn usage() -> ! {
    eprintln!(
        "usage: router_bench proxy LISTEN HOST BACKEND... | router_bench tls LISTEN HTTPS_LISTEN HOST CERT KEY BACKEND... | router_bench hello LISTEN"
    );
    std::process::exit(2)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("proxy") if args.len() >= 4 => {
            let listener = TcpListener::bind(&args[1]).await?;
            let router = rack::router::Router::new();
            let backends = args[3..]
                .iter()
                .map(|a| a.parse::<SocketAddr>())
                .collect::<Result<Vec<_>, _>>()?;
            router.set_app("bench", vec![args[2].clone()], backends);
            println!("ready {}", listener.local_addr()?);
            let threads = match std::env::var("ROUTER_THREADS") {
                Ok(n) => n.parse()?,
                Err(_) => 0,
            };
            let (_keep, shutdown) = tokio::sync::watch::channel(false);
            rack::router::serve(
                listener,
                router,
                None,
                shutdown,
                threads,
                // The benchmark's clients all come from one address.
                rack::router::RouterLimits {
                    max_connections_per_ip: usize::MAX,
                    ..Default::default()
                },
            )
            .await
        }
        Some("tls") if args.len() >= 7 => {
            let http = TcpListener::bind(&args[1]).await?;
            let https = TcpListener::bind(&args[2]).await?;
            let router = rack::router::Router::new();
            let backends = args[6..]
                .iter()
                .map(|a| a.parse::<SocketAddr>())
                .collect::<Result<Vec<_>, _>>()?;
            router.set_app("bench", vec![args[3].clone()], backends);
            let chain = std::fs::read_to_string(&args[4])?;
            let key = std::fs::read_to_string(&args[5])?;
            let bundle = rack::certs::bundle::load(&chain, &key)?;
            router.tls().set_cert(&args[3], bundle.key);
            println!("ready {} {}", http.local_addr()?, https.local_addr()?);
            let threads = match std::env::var("ROUTER_THREADS") {
                Ok(n) => n.parse()?,
                Err(_) => 0,
            };
            let (_keep, shutdown) = tokio::sync::watch::channel(false);
            let listeners = rack::router::Listeners {
                http,
                https: Some(https),
            };
            let limits = rack::router::RouterLimits {
                max_connections_per_ip: usize::MAX,
                ..Default::default()
            };
            rack::router::serve_listeners(listeners, router, None, shutdown, threads, limits).await
        }
        Some("hello") if args.len() == 2 => {
            let listener = TcpListener::bind(&args[1]).await?;
            println!("ready {}", listener.local_addr()?);
            loop {
                let (socket, _) = listener.accept().await?;
                let _ = socket.set_nodelay(true);
                tokio::spawn(async move {
                    let svc =
                        hyper::service::service_fn(|_req: Request<hyper::body::Incoming>| async {
                            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(
                                b"hello from the bench backend\n",
                            ))))
                        });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(socket), svc)
                        .await;
                });
            }
        }
        _ => usage(),
    }
}
