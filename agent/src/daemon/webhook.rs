//! The approvals webhook: a JSON POST for each new request and each
//! decision, sent by a task of its own so that a slow or dead endpoint never
//! holds up a decision or enforcement.
//!
//! A deliberately small HTTP/1.1 client over a TCP stream: `http://` only
//! (no TLS), one request per connection, success is any 2xx status. Each
//! notification is tried up to [`ATTEMPTS`] times, each attempt bounded by
//! [`TIMEOUT`], with a doubling pause in between. A notification that is
//! finally given up (or finds the queue full) is a [`WebhookFailure`]: the agent
//! records it in the audit log and shows the last one in `status`.

use std::{
    fmt,
    sync::{Arc, Mutex},
    time::Duration,
};

use serde::{Deserialize, Serialize};

use crate::{config::WebhookUrl, control::proto::WebhookFailure};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    sync::mpsc,
};

/// Attempts per notification.
pub(super) const ATTEMPTS: u32 = 4;
/// Bound on one attempt (connect, send, read the status line).
pub(super) const TIMEOUT: Duration = Duration::from_secs(3);
/// Pause after the first failed attempt; doubled after each.
pub(super) const BACKOFF: Duration = Duration::from_millis(250);
/// Notifications queued at most; beyond, new ones are dropped (and logged).
const QUEUE: usize = 256;

/// One POST: the status code.
async fn post(url: &WebhookUrl, body: &[u8]) -> std::io::Result<u16> {
    let mut stream = TcpStream::connect((url.host.as_str(), url.port)).await?;
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: geowall/{}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        url.path,
        url.host,
        geowall_common::VERSION,
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body).await?;
    // The status line is all we need: "HTTP/1.1 204 No Content".
    let mut buf = Vec::with_capacity(64);
    let mut chunk = [0u8; 256];
    while !buf.contains(&b'\n') && buf.len() < 1024 {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let line = String::from_utf8_lossy(&buf);
    line.split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .filter(|_| line.starts_with("HTTP/1."))
        .ok_or_else(|| std::io::Error::other("not an HTTP response"))
}

/// Delivers `body` to `url`, retrying; when every attempt failed, the
/// number of attempts and the last error.
async fn deliver(url: &WebhookUrl, body: &[u8]) -> Result<(), (u32, String)> {
    let mut pause = BACKOFF;
    let mut why = String::new();
    for attempt in 1..=ATTEMPTS {
        let outcome = tokio::time::timeout(TIMEOUT, post(url, body)).await;
        why = match outcome {
            Ok(Ok(code)) if (200..300).contains(&code) => return Ok(()),
            Ok(Ok(code)) => format!("status {code}"),
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer within {}s", TIMEOUT.as_secs()),
        };
        tracing::warn!(webhook = %url, attempt, error = %why, "approvals webhook failed");
        if attempt < ATTEMPTS {
            tokio::time::sleep(pause).await;
            pause *= 2;
        }
    }
    Err((ATTEMPTS, why))
}

/// A notification given up: after [`ATTEMPTS`] failed attempts, or at once
/// when the queue was full (`attempts` 0).
fn failure(
    url: &WebhookUrl,
    payload: &serde_json::Value,
    attempts: u32,
    error: String,
) -> WebhookFailure {
    WebhookFailure {
        url: url.to_string(),
        event: payload["event"].as_str().unwrap_or_default().to_owned(),
        request_id: payload["request"]["id"].as_u64(),
        attempts,
        error,
        time: crate::vocab::clock::rfc3339(crate::vocab::clock::unix_now_ns()),
    }
}

/// What `status` shows of the webhook.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Health {
    /// Notifications given up since the agent started.
    pub failures: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failure: Option<WebhookFailure>,
}

/// Called with each failure (from the sending task, or from `send` when the
/// queue is full); must not wait long.
type OnFailure = Arc<dyn Fn(&WebhookFailure) + Send + Sync>;

/// The sending side, kept by the agent's state.
#[derive(Clone)]
pub(super) struct Notifier {
    tx: mpsc::Sender<(WebhookUrl, serde_json::Value)>,
    health: Arc<Mutex<Health>>,
    on_failure: OnFailure,
}

impl fmt::Debug for Notifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Notifier").finish_non_exhaustive()
    }
}

impl Notifier {
    /// Starts the sending task (on the current tokio runtime); `on_failure`
    /// hears of every notification given up.
    pub(super) fn start(on_failure: impl Fn(&WebhookFailure) + Send + Sync + 'static) -> Notifier {
        let (tx, mut rx) = mpsc::channel::<(WebhookUrl, serde_json::Value)>(QUEUE);
        let notifier = Notifier {
            tx,
            health: Arc::default(),
            on_failure: Arc::new(on_failure),
        };
        let sender = notifier.clone();
        tokio::spawn(async move {
            while let Some((url, payload)) = rx.recv().await {
                let body = serde_json::to_vec(&payload).unwrap_or_default();
                if let Err((attempts, error)) = deliver(&url, &body).await {
                    tracing::error!(webhook = %url, payload = %payload, "approvals webhook: notification dropped after {attempts} attempts");
                    sender.failed(failure(&url, &payload, attempts, error));
                }
            }
        });
        notifier
    }

    /// Queues a notification; never waits.
    pub(super) fn send(&self, url: &WebhookUrl, payload: serde_json::Value) {
        if let Err(e) = self.tx.try_send((url.clone(), payload)) {
            tracing::error!(webhook = %url, "approvals webhook: queue full, notification dropped");
            let (_, payload) = e.into_inner();
            let why = format!("queue full ({QUEUE} notifications waiting)");
            self.failed(failure(url, &payload, 0, why));
        }
    }

    fn failed(&self, failure: WebhookFailure) {
        (self.on_failure)(&failure);
        let mut health = self.health.lock().expect("webhook health lock");
        health.failures += 1;
        health.last_failure = Some(failure);
    }

    /// Failures so far.
    pub(super) fn health(&self) -> Health {
        self.health.lock().expect("webhook health lock").clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn posts_json_and_retries_until_a_2xx() {
        use tokio::net::TcpListener;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            let mut seen = Vec::new();
            for status in ["500 Oops", "200 OK"] {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut buf = vec![0u8; 4096];
                let mut got = Vec::new();
                while !String::from_utf8_lossy(&got).contains("{\"a\":1}") {
                    let n = s.read(&mut buf).await.unwrap();
                    got.extend_from_slice(&buf[..n]);
                }
                seen.push(String::from_utf8_lossy(&got).into_owned());
                s.write_all(format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n").as_bytes())
                    .await
                    .unwrap();
            }
            seen
        });
        let url: WebhookUrl = format!("http://127.0.0.1:{port}/hook").parse().unwrap();
        assert_eq!(deliver(&url, br#"{"a":1}"#).await, Ok(()));
        let seen = server.await.unwrap();
        assert_eq!(seen.len(), 2);
        assert!(
            seen[1].starts_with("POST /hook HTTP/1.1\r\n"),
            "{}",
            seen[1]
        );
        assert!(seen[1].contains("Content-Type: application/json\r\n"));
        assert!(seen[1].contains("Content-Length: 7\r\n"));
    }

    #[tokio::test]
    async fn a_notification_given_up_is_a_failure_with_the_last_error() {
        // A port nobody listens on: every attempt is refused at once.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let url: WebhookUrl = format!("http://127.0.0.1:{port}/").parse().unwrap();
        let heard = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&heard);
        let notifier = Notifier::start(move |f| seen.lock().unwrap().push(f.clone()));
        notifier.send(
            &url,
            serde_json::json!({"event": "approved", "request": {"id": 7}}),
        );
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while heard.lock().unwrap().is_empty() {
            assert!(std::time::Instant::now() < deadline, "no failure reported");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let failure = heard.lock().unwrap()[0].clone();
        assert_eq!(failure.url, url.to_string());
        assert_eq!(failure.event, "approved");
        assert_eq!(failure.request_id, Some(7));
        assert_eq!(failure.attempts, ATTEMPTS);
        assert!(failure.error.contains("refused"), "{}", failure.error);
        let health = notifier.health();
        assert_eq!(health.failures, 1);
        assert_eq!(health.last_failure, Some(failure));
    }
}
