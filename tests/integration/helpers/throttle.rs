//! A proxy on 127.0.0.1 in front of a loopback registry that throttles: the first manifest
//! GETs it gets are answered `429 Too Many Requests` with the registry API's error body
//! (`TOOMANYREQUESTS`, as Docker Hub's rate limit answers), everything else goes through to
//! the registry. Each request is forwarded on a connection of its own (`Connection: close`),
//! so no HTTP parsing beyond a request's head is needed; anything that is not an HTTP request
//! (the daemon first tries TLS) is piped through as it is, and the registry answers it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;

pub struct ThrottlingProxy {
    /// `127.0.0.1:PORT`, to put in an image reference in place of the registry's.
    pub address: String,
    throttled: Arc<AtomicUsize>,
}

impl ThrottlingProxy {
    /// Forwards to `upstream` (`127.0.0.1:PORT`), after answering the first `manifests`
    /// manifest GETs with 429.
    pub fn start(upstream: &str, manifests: usize) -> ThrottlingProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
        let address = listener.local_addr().unwrap().to_string();
        let throttled = Arc::new(AtomicUsize::new(0));
        let shared = Arc::clone(&throttled);
        let upstream = upstream.to_string();
        thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let (upstream, throttled) = (upstream.clone(), Arc::clone(&shared));
                thread::spawn(move || {
                    let _ = serve(client, &upstream, &throttled, manifests);
                });
            }
        });
        ThrottlingProxy { address, throttled }
    }

    /// How many requests it answered with 429.
    pub fn throttled(&self) -> usize {
        self.throttled.load(Ordering::SeqCst)
    }
}

fn serve(
    client: TcpStream,
    upstream: &str,
    throttled: &AtomicUsize,
    limit: usize,
) -> std::io::Result<()> {
    let mut start = [0u8; 5];
    let n = client.peek(&mut start)?;
    if !(start[..n].starts_with(b"GET ") || start[..n].starts_with(b"HEAD ")) {
        return pipe(client, TcpStream::connect(upstream)?);
    }
    let mut reader = BufReader::new(client.try_clone()?);
    let mut head = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" {
            break;
        }
        head.push(line);
    }
    let mut words = head
        .first()
        .map(|l| l.split_whitespace())
        .into_iter()
        .flatten();
    let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let mut client = client;
    // A GET: the daemon takes a failed HEAD as a hint to GET, as it does with Docker Hub.
    if method == "GET"
        && path.contains("/manifests/")
        && throttled
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < limit).then_some(n + 1)
            })
            .is_ok()
    {
        let body = r#"{"errors":[{"code":"TOOMANYREQUESTS","message":"slow down: the test's rate limit"}]}"#;
        write!(
            client,
            "HTTP/1.1 429 Too Many Requests\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )?;
        return client.shutdown(Shutdown::Both);
    }
    let mut registry = TcpStream::connect(upstream)?;
    for line in &head {
        if !line.to_ascii_lowercase().starts_with("connection:") {
            registry.write_all(line.as_bytes())?;
        }
    }
    registry.write_all(b"Connection: close\r\n\r\n")?;
    std::io::copy(&mut registry, &mut client)?;
    client.shutdown(Shutdown::Both)
}

/// Copies both ways until either side closes.
fn pipe(client: TcpStream, registry: TcpStream) -> std::io::Result<()> {
    let (mut client_in, mut registry_out) = (client.try_clone()?, registry.try_clone()?);
    let forward = thread::spawn(move || {
        let _ = std::io::copy(&mut client_in, &mut registry_out);
        let _ = registry_out.shutdown(Shutdown::Write);
    });
    let (mut registry_in, mut client_out) = (registry, client);
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = registry_in.read(&mut buf)?;
        if n == 0 {
            break;
        }
        client_out.write_all(&buf[..n])?;
    }
    let _ = client_out.shutdown(Shutdown::Both);
    let _ = forward.join();
    Ok(())
}
