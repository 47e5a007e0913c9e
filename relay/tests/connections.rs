//! Slow and idle clients cannot hold the relay (issue 12, finding 4): a client that never
//! finishes its request headers is disconnected, a request whose body stalls is answered
//! `408 request_timeout`, and connections beyond the cap wait in the listen backlog — they are
//! served as soon as a slot frees — instead of exhausting the process's file descriptors.
//! Raw TCP, because an HTTP client would not misbehave on purpose.

use std::time::Duration;

use relay::limits::Limits;
use relay::store::Backend;
use relay::testkit::TestRelay;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Longer than any limit below: how long a test waits before it calls the relay stuck.
const PATIENCE: Duration = Duration::from_secs(15);

fn limits(header: u64, request: u64, connections: usize) -> Limits {
    Limits {
        header_read_timeout: Duration::from_secs(header),
        request_timeout: Duration::from_secs(request),
        max_connections: connections,
        ..Limits::default()
    }
}

async fn connect(relay: &TestRelay) -> TcpStream {
    TcpStream::connect(relay.base.trim_start_matches("http://"))
        .await
        .unwrap()
}

/// Reads until the relay closes the connection; `None` if it has not within [`PATIENCE`].
async fn read_to_close(stream: &mut TcpStream) -> Option<String> {
    let mut answer = Vec::new();
    let read = tokio::time::timeout(PATIENCE, async {
        let mut buffer = [0u8; 4096];
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&buffer[..n]),
            }
        }
    })
    .await;
    read.ok()
        .map(|()| String::from_utf8_lossy(&answer).into_owned())
}

#[tokio::test]
async fn a_client_that_never_finishes_its_headers_is_disconnected() {
    let relay = TestRelay::builder(Backend::Sqlite)
        .limits(limits(1, 30, 64))
        .start()
        .await;
    let mut stream = connect(&relay).await;
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: relay\r\n")
        .await
        .unwrap();
    assert!(
        read_to_close(&mut stream).await.is_some(),
        "the relay kept a connection with unfinished headers open"
    );
    relay.finish().await;
}

#[tokio::test]
async fn a_request_whose_body_stalls_is_answered_408() {
    let relay = TestRelay::builder(Backend::Sqlite)
        .limits(limits(30, 1, 64))
        .start()
        .await;
    let mut stream = connect(&relay).await;
    stream
        .write_all(
            b"POST /v1/viewer/open HTTP/1.1\r\nHost: relay\r\nContent-Type: application/json\r\n\
              Content-Length: 100\r\nConnection: close\r\n\r\n{\"link\": ",
        )
        .await
        .unwrap();
    let answer = read_to_close(&mut stream)
        .await
        .expect("the relay waited for the stalled body without limit");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains(r#""error":"request_timeout""#), "{answer}");
    relay.finish().await;
}

#[tokio::test]
async fn connections_beyond_the_cap_wait_for_a_free_slot() {
    let relay = TestRelay::builder(Backend::Sqlite)
        .limits(limits(30, 30, 2))
        .start()
        .await;
    // Two clients that hold their connections open.
    let mut holders = Vec::new();
    for _ in 0..2 {
        let mut stream = connect(&relay).await;
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\n")
            .await
            .unwrap();
        holders.push(stream);
    }
    let mut third = connect(&relay).await;
    third
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: relay\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut first_byte = [0u8; 1];
    let early = tokio::time::timeout(Duration::from_millis(500), third.read(&mut first_byte)).await;
    assert!(
        early.is_err(),
        "a third connection was served while the cap of two was held"
    );
    drop(holders.pop());
    let answer = read_to_close(&mut third)
        .await
        .expect("the waiting connection was not served after a slot freed");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    relay.finish().await;
}
