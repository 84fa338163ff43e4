//! A real HTTP/1.1 file server on 127.0.0.1 for the download tests, with scripted faults:
//! each request takes the next behaviour of its path's script (the last one repeats).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;

#[derive(Debug, Clone)]
pub enum Reply {
    /// The file, honouring `Range: bytes=N-`.
    File(Arc<Vec<u8>>),
    /// Announce the whole file, send half, close.
    CutHalfWay(Arc<Vec<u8>>),
    Status(u16),
    /// Announce the whole file, send a little, then say nothing for a minute.
    Stall(Arc<Vec<u8>>),
}

#[derive(Default)]
struct State {
    scripts: HashMap<String, Vec<Reply>>,
    /// (path, Range header) of every request.
    seen: Vec<(String, Option<String>)>,
}

pub struct Server {
    pub port: u16,
    state: Arc<Mutex<State>>,
}

impl Server {
    pub fn start() -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(Mutex::new(State::default()));
        let shared = Arc::clone(&state);
        thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let state = Arc::clone(&shared);
                thread::spawn(move || serve(stream, &state));
            }
        });
        Server { port, state }
    }

    pub fn script(&self, path: &str, replies: Vec<Reply>) {
        self.state
            .lock()
            .unwrap()
            .scripts
            .insert(path.to_string(), replies);
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn requests(&self, path: &str) -> Vec<Option<String>> {
        let state = self.state.lock().unwrap();
        state
            .seen
            .iter()
            .filter(|(p, _)| p == path)
            .map(|(_, r)| r.clone())
            .collect()
    }
}

fn serve(stream: TcpStream, state: &Mutex<State>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    let path = request_line
        .split_whitespace()
        .nth(1)
        .unwrap_or("/")
        .to_string();
    let mut range = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            if k.eq_ignore_ascii_case("range") {
                range = Some(v.trim().to_string());
            }
        }
    }
    let reply = {
        let mut s = state.lock().unwrap();
        s.seen.push((path.clone(), range.clone()));
        match s.scripts.get_mut(&path) {
            Some(script) if script.len() > 1 => Some(script.remove(0)),
            Some(script) => script.first().cloned(),
            None => None,
        }
    };
    let mut out = stream;
    let _ = match reply.unwrap_or(Reply::Status(404)) {
        Reply::Status(code) => write!(
            out,
            "HTTP/1.1 {code} Scripted\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        ),
        Reply::CutHalfWay(body) => {
            let _ = write!(
                out,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nAccept-Ranges: bytes\r\nConnection: close\r\n\r\n",
                body.len()
            );
            out.write_all(&body[..body.len() / 2])
        }
        Reply::Stall(body) => {
            let _ = write!(
                out,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = out.write_all(&body[..1024.min(body.len())]);
            let _ = out.flush();
            thread::sleep(std::time::Duration::from_secs(60));
            Ok(())
        }
        Reply::File(body) => {
            let start = range
                .as_deref()
                .and_then(|r| r.strip_prefix("bytes="))
                .and_then(|r| r.strip_suffix('-'))
                .and_then(|n| n.parse::<usize>().ok())
                .filter(|n| *n < body.len());
            match start {
                Some(n) => {
                    let _ = write!(
                        out,
                        "HTTP/1.1 206 Partial Content\r\nContent-Length: {}\r\nContent-Range: bytes {n}-{}/{}\r\nConnection: close\r\n\r\n",
                        body.len() - n,
                        body.len() - 1,
                        body.len()
                    );
                    out.write_all(&body[n..])
                }
                None => {
                    let _ = write!(
                        out,
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nAccept-Ranges: bytes\r\nConnection: close\r\n\r\n",
                        body.len()
                    );
                    out.write_all(&body)
                }
            }
        }
    };
    let _ = out.flush();
    let _ = out.shutdown(std::net::Shutdown::Both);
}
