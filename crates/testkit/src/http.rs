//! The one local HTTP/1.1 test server, standing in for whatever a test cannot reach: OpenAI-compatible chat and
//! embedding servers, re-rankers, the Hugging Face Hub, Python package indexes.
//!
//! A test gives [`Server::start`] a handler, a function from the [`Request`] the server read to the [`Response`] it
//! should give; the routing belongs to the test, the server only speaks HTTP. The server listens on a free port of
//! 127.0.0.1, records every request (for assertions on what a client sent) and stops when dropped.
//!
//! ```
//! use std::io::{Read, Write};
//! use std::net::TcpStream;
//!
//! use knowhow_testkit::http::{Response, Server};
//!
//! let server = Server::start(|request| match request.target.as_str() {
//!     "/health" => Response::ok("text/plain", "fine"),
//!     _ => Response::not_found(),
//! });
//! // Any HTTP client does; std's sockets show what goes over the wire.
//! let mut connection = TcpStream::connect(server.url().trim_start_matches("http://")).unwrap();
//! connection.write_all(b"GET /health HTTP/1.1\r\nHost: test\r\n\r\n").unwrap();
//! let mut answer = String::new();
//! connection.read_to_string(&mut answer).unwrap();
//! assert!(answer.starts_with("HTTP/1.1 200 OK\r\n") && answer.ends_with("\r\n\r\nfine"));
//! assert_eq!(server.requests()[0].header("Host"), Some("test"));
//! ```
//!
//! What it does, and why:
//! - Each connection is served on its own thread, so that a client that gave up on a slow answer can retry while
//!   that answer is still being written. The handler itself is called for one request at a time, in the order the
//!   requests were read, so [`Request::number`] is what a test counts attempts with ("fail the first, then answer").
//! - Every response closes its connection: each attempt of a client is one connection and one recorded request.
//! - Only what clients send is parsed: a request line, headers, and a `Content-Length` body.
//! - A response can be delayed ([`Response::after`]), streamed in chunks with pauses
//!   ([`Response::paced_event_stream`]), cut off mid-stream ([`Response::cut_off`]) or refused altogether
//!   ([`Response::hang_up`]): the failures that timeouts, retries and error messages are tested against.
//! - A handler that panics fails the test when the server is dropped, instead of passing for a dropped connection.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// How long the server waits for a request's bytes: a client that connects and says nothing does not hold a
/// connection thread (and so the server's drop) for longer.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// One request as the server read it.
#[derive(Debug, Clone)]
pub struct Request {
    /// 0-based, in the order the server read the requests: the first attempt of a client is 0, its retry 1.
    pub number: usize,
    pub method: String,
    /// The request target: the path and the query, as in the request line.
    pub target: String,
    /// Header names in lower case; of a repeated header, the last value.
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
}

impl Request {
    /// The value of the header `name`, in any case.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(&name.to_ascii_lowercase()).map(String::as_str)
    }

    /// The body as JSON; panics when it is not.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|error| panic!("the body of {} {} is not JSON ({error})", self.method, self.target))
    }
}

/// What the server does with a request: an HTTP response, delayed or not, whole or streamed, or no answer at all.
#[derive(Debug, Clone)]
pub struct Response {
    delay: Duration,
    answer: Option<Answer>,
}

#[derive(Debug, Clone)]
struct Answer {
    status: u16,
    /// In the order written, after `Content-Type`.
    headers: Vec<(String, String)>,
    body: Body,
}

#[derive(Debug, Clone)]
enum Body {
    /// Written at once, with `Content-Length`.
    Whole(Vec<u8>),
    /// `Transfer-Encoding: chunked`, each piece one chunk written after its pause; when not `complete`, the
    /// connection closes before the terminating chunk.
    Chunked {
        pieces: Vec<(Duration, Vec<u8>)>,
        complete: bool,
    },
}

impl Response {
    /// A response with a whole body.
    pub fn new(status: u16, content_type: &str, body: impl Into<Vec<u8>>) -> Response {
        Response {
            delay: Duration::ZERO,
            answer: Some(Answer {
                status,
                headers: vec![("Content-Type".to_string(), content_type.to_string())],
                body: Body::Whole(body.into()),
            }),
        }
    }

    /// `200 OK` with `body`.
    pub fn ok(content_type: &str, body: impl Into<Vec<u8>>) -> Response {
        Response::new(200, content_type, body)
    }

    /// `200 OK` with `value` as `application/json`; [`Response::with_status`] gives the error bodies.
    pub fn json(value: &serde_json::Value) -> Response {
        Response::ok("application/json", value.to_string())
    }

    /// `404 Not Found`, the answer to a target a test does not serve.
    pub fn not_found() -> Response {
        Response::new(404, "text/plain", "not found")
    }

    /// `200 OK` with `text/event-stream` (Server-Sent Events) in chunked encoding, each piece one chunk, with no
    /// pause between them.
    pub fn event_stream<S: Into<String>>(pieces: impl IntoIterator<Item = S>) -> Response {
        Response::paced_event_stream(pieces.into_iter().map(|piece| (Duration::ZERO, piece)))
    }

    /// As [`Response::event_stream`], each piece written after its pause, the way a server streams tokens as it
    /// generates them; a long pause is a server gone silent mid-answer.
    pub fn paced_event_stream<S: Into<String>>(pieces: impl IntoIterator<Item = (Duration, S)>) -> Response {
        let pieces = pieces
            .into_iter()
            .map(|(pause, piece)| (pause, piece.into().into_bytes()))
            .collect();
        Response {
            delay: Duration::ZERO,
            answer: Some(Answer {
                status: 200,
                headers: vec![
                    ("Content-Type".to_string(), "text/event-stream".to_string()),
                    ("Cache-Control".to_string(), "no-cache".to_string()),
                ],
                body: Body::Chunked { pieces, complete: true },
            }),
        }
    }

    /// No response: the connection closes as soon as the request is read, as when a server crashes or a proxy
    /// drops the connection.
    pub fn hang_up() -> Response {
        Response {
            delay: Duration::ZERO,
            answer: None,
        }
    }

    /// The same response with another status.
    pub fn with_status(mut self, status: u16) -> Response {
        self.answer_mut("with_status").status = status;
        self
    }

    /// The same response with one more header, e.g. `Retry-After`.
    pub fn with_header(mut self, name: &str, value: &str) -> Response {
        self.answer_mut("with_header")
            .headers
            .push((name.to_string(), value.to_string()));
        self
    }

    /// The same response, written after `delay`: a slow server, for timeouts. The delay does not hold up the
    /// other connections.
    pub fn after(mut self, delay: Duration) -> Response {
        self.delay = delay;
        self
    }

    /// The same stream with the connection closed after its last piece, without the terminating chunk: a server
    /// that died mid-answer. Panics on a response that is not streamed.
    pub fn cut_off(mut self) -> Response {
        match &mut self.answer_mut("cut_off").body {
            Body::Chunked { complete, .. } => *complete = false,
            Body::Whole(_) => panic!("cut_off is for streamed responses"),
        }
        self
    }

    fn answer_mut(&mut self, method: &str) -> &mut Answer {
        self.answer
            .as_mut()
            .unwrap_or_else(|| panic!("{method} on Response::hang_up(), which sends nothing"))
    }
}

/// The local test server; see the [module documentation](self). Stops, and waits for the connections it is still
/// answering, when dropped.
pub struct Server {
    addr: SocketAddr,
    url: String,
    requests: Arc<Mutex<Vec<Request>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<bool>>,
}

impl Server {
    /// Serves `handler` until dropped.
    pub fn start(handler: impl FnMut(&Request) -> Response + Send + 'static) -> Server {
        Server::start_with_url(|_| handler)
    }

    /// As [`Server::start`], for a handler that needs the server's own URL, e.g. to write absolute links into the
    /// pages it serves: `make_handler` gets [`Server::url`] before the first request.
    pub fn start_with_url<H>(make_handler: impl FnOnce(&str) -> H) -> Server
    where
        H: FnMut(&Request) -> Response + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port of 127.0.0.1");
        let addr = listener.local_addr().expect("the bound address");
        let url = format!("http://{addr}");
        let handler = Arc::new(Mutex::new(make_handler(&url)));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (requests, stop) = (requests.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut connections = Vec::new();
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let (requests, handler) = (requests.clone(), handler.clone());
                    connections.push(std::thread::spawn(move || serve(stream, &requests, &handler)));
                }
                // Every connection thread joined (none left writing after the drop), then whether one panicked,
                // i.e. whether a handler did.
                let panics = connections.into_iter().filter_map(|c| c.join().err()).count();
                panics > 0
            })
        };
        Server {
            addr,
            url,
            requests,
            stop,
            thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:PORT`, without a trailing slash.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The requests read so far, in order ([`Request::number`] is the index).
    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop, blocked until a connection comes, so that it sees the flag.
        let _ = TcpStream::connect(self.addr);
        let Some(thread) = self.thread.take() else { return };
        let handler_panicked = thread.join().unwrap_or(true);
        if handler_panicked && !std::thread::panicking() {
            panic!(
                "a handler of the test server at {} panicked (its message is above)",
                self.url
            );
        }
    }
}

/// `http://127.0.0.1:PORT` where nothing listens (the port was free a moment ago): a server that is down, for
/// tests of connection errors, or an endpoint a hermetic test must not reach.
pub fn closed_url() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port of 127.0.0.1");
    format!("http://{}", listener.local_addr().expect("the bound address"))
}

/// Reads one request from `stream`, records it, and writes what the handler makes of it.
fn serve<H>(mut stream: TcpStream, requests: &Mutex<Vec<Request>>, handler: &Mutex<H>)
where
    H: FnMut(&Request) -> Response,
{
    let Some(mut request) = read_request(&mut stream) else {
        return;
    };
    let response = {
        // Holding the handler while numbering and recording keeps `number` the order of both; the records
        // are not held while the handler runs, so that they can still be read after a handler panicked.
        let mut handler = handler.lock().unwrap();
        {
            let mut requests = requests.lock().unwrap();
            request.number = requests.len();
            requests.push(request.clone());
        }
        handler(&request)
    };
    std::thread::sleep(response.delay);
    if let Some(answer) = response.answer {
        // The client may have given up already (a timeout test): a failed write is then what the test expects.
        let _ = write_answer(&mut stream, answer);
    }
    let _ = stream.shutdown(Shutdown::Both);
}

/// The request on `stream`, not yet numbered; `None` when the connection closes or stalls before a whole request
/// arrived (as the connection that wakes a stopping server does).
fn read_request(stream: &mut TcpStream) -> Option<Request> {
    stream.set_read_timeout(Some(READ_TIMEOUT)).ok()?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let target = parts.next()?.to_string();
    let mut headers = HashMap::new();
    loop {
        line.clear();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':')?;
        headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_string());
    }
    let length = headers.get("content-length").map_or(Some(0), |v| v.parse().ok())?;
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some(Request {
        number: 0,
        method,
        target,
        headers,
        body,
    })
}

fn write_answer(stream: &mut TcpStream, answer: Answer) -> std::io::Result<()> {
    let mut head = format!("HTTP/1.1 {} {}\r\n", answer.status, reason(answer.status));
    for (name, value) in &answer.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    match &answer.body {
        Body::Whole(body) => head.push_str(&format!("Content-Length: {}\r\n", body.len())),
        Body::Chunked { .. } => head.push_str("Transfer-Encoding: chunked\r\n"),
    }
    head.push_str("Connection: close\r\n\r\n");
    stream.write_all(head.as_bytes())?;
    match answer.body {
        Body::Whole(body) => stream.write_all(&body)?,
        Body::Chunked { pieces, complete } => {
            // The head goes first on its own, as a streaming server sends it before it has generated anything.
            stream.flush()?;
            for (pause, piece) in pieces {
                std::thread::sleep(pause);
                write!(stream, "{:x}\r\n", piece.len())?;
                stream.write_all(&piece)?;
                stream.write_all(b"\r\n")?;
                stream.flush()?;
            }
            if complete {
                stream.write_all(b"0\r\n\r\n")?;
            }
        }
    }
    stream.flush()
}

/// The reason phrase of the statuses tests use; clients read only the code.
fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        401 => "Unauthorized",
        404 => "Not Found",
        413 => "Payload Too Large",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    /// Sends `GET target` and returns the connection, to read the answer from.
    fn send(server: &Server, target: &str) -> TcpStream {
        let mut connection = TcpStream::connect(server.addr).unwrap();
        write!(connection, "GET {target} HTTP/1.1\r\nHost: test\r\n\r\n").unwrap();
        connection
    }

    fn answer(mut connection: TcpStream) -> String {
        let mut answer = String::new();
        connection.read_to_string(&mut answer).unwrap();
        answer
    }

    #[test]
    fn a_slow_answer_does_not_hold_up_the_next_connection() {
        let server = Server::start(|request| match request.number {
            0 => Response::ok("text/plain", "slow").after(Duration::from_secs(2)),
            _ => Response::ok("text/plain", "quick"),
        });
        let started = Instant::now();
        let slow = send(&server, "/first");
        // The first request must be read, and so numbered, before the second one is sent.
        while server.requests().is_empty() {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(answer(send(&server, "/second")).ends_with("\r\n\r\nquick"));
        assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
        assert!(answer(slow).ends_with("\r\n\r\nslow"));
        let targets: Vec<_> = server.requests().into_iter().map(|r| (r.number, r.target)).collect();
        assert_eq!(targets, [(0, "/first".to_string()), (1, "/second".to_string())]);
    }

    #[test]
    fn streams_in_chunks_and_cuts_off_or_hangs_up_on_request() {
        let server = Server::start(|request| match request.target.as_str() {
            "/stream" => Response::event_stream(["data: a\n\n", "data: bc\n\n"]),
            "/cut" => Response::event_stream(["data: a\n\n"]).cut_off(),
            "/late" => Response::json(&serde_json::json!({"error": "busy"}))
                .with_status(503)
                .with_header("Retry-After", "1"),
            _ => Response::hang_up(),
        });
        let stream = answer(send(&server, "/stream"));
        assert!(stream.contains("Content-Type: text/event-stream\r\n"), "{stream}");
        assert!(
            stream.ends_with("\r\n\r\n9\r\ndata: a\n\n\r\na\r\ndata: bc\n\n\r\n0\r\n\r\n"),
            "{stream:?}"
        );
        assert!(answer(send(&server, "/cut")).ends_with("\r\n\r\n9\r\ndata: a\n\n\r\n"));
        let late = answer(send(&server, "/late"));
        assert!(late.starts_with("HTTP/1.1 503 Service Unavailable\r\n"), "{late}");
        assert!(late.contains("\r\nRetry-After: 1\r\n") && late.ends_with("{\"error\":\"busy\"}"));
        assert_eq!(answer(send(&server, "/gone")), "");
    }

    #[test]
    fn a_request_body_is_read_by_its_length() {
        let server = Server::start(|_| Response::ok("text/plain", ""));
        let mut connection = TcpStream::connect(server.addr).unwrap();
        connection
            .write_all(
                b"POST /v1/embeddings HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: 9\r\n\r\n[1, 2, 3]",
            )
            .unwrap();
        answer(connection);
        let request = &server.requests()[0];
        assert_eq!(
            (request.method.as_str(), request.target.as_str()),
            ("POST", "/v1/embeddings")
        );
        assert_eq!(request.header("content-TYPE"), Some("application/json"));
        assert_eq!(request.json(), serde_json::json!([1, 2, 3]));
    }

    #[test]
    fn a_panicking_handler_fails_the_test_when_the_server_is_dropped() {
        let dropped = std::panic::catch_unwind(|| {
            let server = Server::start(|_| panic!("the handler's own bug"));
            assert_eq!(answer(send(&server, "/")), "");
            assert_eq!(server.requests().len(), 1);
        });
        assert!(dropped.is_err());
    }
}
