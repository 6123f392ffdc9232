use super::*;

struct Pages;

fn hello(_: Arc<Pages>) -> RouteFuture {
    Box::pin(async { Response::text(200, "hello\n") })
}

static ROUTES: &[Route<Pages>] = &[Route {
    path: "/hello",
    handler: hello,
}];

/// A server on a free port; the sender stops it when dropped.
async fn start() -> (std::net::SocketAddr, tokio::sync::watch::Sender<bool>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (stop, receiver) = tokio::sync::watch::channel(false);
    let shutdown = Shutdown::from_receiver(receiver);
    tokio::spawn(serve(listener, Arc::new(Pages), ROUTES, shutdown));
    (address, stop)
}

async fn exchange(address: std::net::SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(address).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    answer
}

#[tokio::test]
async fn a_route_answers_and_the_connection_closes() {
    let (address, _stop) = start().await;
    let answer = exchange(address, b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    assert!(answer.contains("Content-Length: 6\r\n"), "{answer}");
    assert!(answer.contains("Connection: close\r\n"), "{answer}");
    assert!(answer.ends_with("\r\n\r\nhello\n"), "{answer}");
}

#[tokio::test]
async fn head_gets_the_length_without_the_body() {
    let (address, _stop) = start().await;
    let answer = exchange(address, b"HEAD /hello HTTP/1.1\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    assert!(answer.contains("Content-Length: 6\r\n"), "{answer}");
    assert!(answer.ends_with("\r\n\r\n"), "{answer}");
}

#[tokio::test]
async fn errors_carry_their_status() {
    let (address, _stop) = start().await;
    let missing = exchange(address, b"GET /nope HTTP/1.1\r\n\r\n").await;
    assert!(
        missing.starts_with("HTTP/1.1 404 Not Found\r\n"),
        "{missing}"
    );
    let post = exchange(
        address,
        b"POST /hello HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
    )
    .await;
    assert!(
        post.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"),
        "{post}"
    );
    assert!(post.contains("Allow: GET, HEAD\r\n"), "{post}");
    let bad = exchange(address, b"GARBAGE\r\n\r\n").await;
    assert!(bad.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{bad}");
}

#[tokio::test]
async fn an_oversized_head_gets_431_without_waiting_for_its_end() {
    let (address, _stop) = start().await;
    // No blank line ever comes: the server must stop reading at the limit.
    let mut request = b"GET /hello HTTP/1.1\r\n".to_vec();
    request.resize(HEAD_BYTES_MAX + 100, b'a');
    let answer = exchange(address, &request).await;
    assert!(answer.starts_with("HTTP/1.1 431 "), "{answer}");
}

#[tokio::test]
async fn a_silent_client_gets_408() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let mut client = TcpStream::connect(address).await.unwrap();
    let (accepted, _) = listener.accept().await.unwrap();
    let timeout = Duration::from_millis(100);
    let server = tokio::spawn(answer(accepted, Arc::new(Pages), ROUTES, timeout));
    client.write_all(b"GET /hello HTTP/1.1\r\n").await.unwrap();
    let mut answer = String::new();
    client.read_to_string(&mut answer).await.unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 408 Request Timeout\r\n"),
        "{answer}"
    );
    server.await.unwrap().unwrap();
}
