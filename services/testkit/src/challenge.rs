//! A tiny HTTP server answering ACME HTTP-01 challenges
//! (`/.well-known/acme-challenge/<token>`) from a map the test fills in.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Clone)]
pub struct ChallengeServer {
    pub addr: SocketAddr,
    answers: Arc<Mutex<HashMap<String, String>>>,
}

impl ChallengeServer {
    pub async fn start() -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let answers: Arc<Mutex<HashMap<String, String>>> = Arc::default();
        let map = answers.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let map = map.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 1024];
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let head = String::from_utf8_lossy(&buf).into_owned();
                    let path = head.split_whitespace().nth(1).unwrap_or("").to_owned();
                    let token = path
                        .strip_prefix("/.well-known/acme-challenge/")
                        .unwrap_or("");
                    let answer = map.lock().ok().and_then(|m| m.get(token).cloned());
                    let (status, body) = match answer {
                        Some(body) => ("200 OK", body),
                        None => ("404 Not Found", "no such challenge".to_owned()),
                    };
                    let response = format!(
                        "HTTP/1.1 {status}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = stream.write_all(response.as_bytes()).await;
                    let _ = stream.shutdown().await;
                });
            }
        });
        Ok(Self { addr, answers })
    }

    /// Answers `token` with `body` (the key authorization) from now on.
    pub fn serve(&self, token: &str, body: &str) {
        if let Ok(mut answers) = self.answers.lock() {
            answers.insert(token.to_owned(), body.to_owned());
        }
    }
}
