//! A tiny HTTP/1.1 client over std TCP for talking to the router: enough
//! for Host routing, keep-alive and Content-Length bodies.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

pub struct Response {
    pub status: u16,
    pub body: String,
}

/// One request on a fresh connection (`Connection: close`).
pub fn get(port: u16, host: &str, path: &str) -> std::io::Result<Response> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )?;
    let mut r = BufReader::new(s);
    let (status, len) = read_head(&mut r)?;
    let mut body = Vec::new();
    match len {
        Some(n) => {
            body.resize(n, 0);
            r.read_exact(&mut body)?;
        }
        None => {
            r.read_to_end(&mut body)?;
        }
    }
    Ok(Response {
        status,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

/// A keep-alive connection sending many requests; like any HTTP/1.1
/// client it opens a new connection after a `Connection: close` response.
pub struct KeepAlive {
    r: BufReader<TcpStream>,
    host: String,
    port: u16,
    closed: bool,
}

impl KeepAlive {
    pub fn connect(port: u16, host: &str) -> std::io::Result<KeepAlive> {
        let s = TcpStream::connect(("127.0.0.1", port))?;
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
        Ok(KeepAlive {
            r: BufReader::new(s),
            host: host.to_string(),
            port,
            closed: false,
        })
    }

    pub fn get(&mut self, path: &str) -> std::io::Result<Response> {
        if self.closed {
            *self = KeepAlive::connect(self.port, &self.host)?;
        }
        write!(
            self.r.get_mut(),
            "GET {path} HTTP/1.1\r\nHost: {}\r\n\r\n",
            self.host
        )?;
        let (status, len, close) = read_head_close(&mut self.r)?;
        self.closed = close;
        let n =
            len.ok_or_else(|| std::io::Error::other("no Content-Length on a keep-alive response"))?;
        let mut body = vec![0; n];
        self.r.read_exact(&mut body)?;
        Ok(Response {
            status,
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    }
}

fn read_head(r: &mut impl BufRead) -> std::io::Result<(u16, Option<usize>)> {
    read_head_close(r).map(|(s, l, _)| (s, l))
}

/// The status, Content-Length and whether the server said `Connection: close`.
fn read_head_close(r: &mut impl BufRead) -> std::io::Result<(u16, Option<usize>, bool)> {
    let mut close = false;
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "connection closed before a response",
        ));
    }
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line {line:?}")))?;
    let mut len = None;
    loop {
        line.clear();
        r.read_line(&mut line)?;
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                len = v.trim().parse().ok();
            }
            if k.eq_ignore_ascii_case("connection") && v.trim().eq_ignore_ascii_case("close") {
                close = true;
            }
        }
    }
    Ok((status, len, close))
}
