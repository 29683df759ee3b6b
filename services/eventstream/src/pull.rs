//! A durable pull consumer's messages, with every pull request counted before it is sent.
//!
//! async-nats's own message stream (`Consumer::stream`, 0.51) sends its pull requests from
//! a task of its own and counts a request only when that task reports it sent. Messages
//! the server delivers for the request before then are taken off the count of the
//! requests before it, a count that stops at zero: once the request is counted, the stream
//! believes the server still owes it messages, asks for no more, and nothing arrives until
//! the request's expiry and 5 s more, or two missed idle heartbeats. The stalls of 33 – 35
//! s (about 4 s since certledger asked for heartbeats) seen in a few of about a hundred
//! scenario-1 phases on PostgreSQL + NATS fit this; they were not reproduced on demand.
//! Here the consumer's own task counts a request, then sends it, so its messages can only
//! come after.

use async_nats::jetstream::{self, consumer::PullConsumer, consumer::pull::BatchConfig};
use async_nats::{StatusCode, Subject, Subscriber};
use futures::StreamExt;
use std::time::Duration;

/// Why the messages stopped; the consumer opens them again.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error("sending a pull request: {0}")]
    Request(String),
    #[error("no message and no idle heartbeat for {0:?}: the server holds no pull request")]
    MissedHeartbeat(Duration),
    #[error("the subscription ended")]
    Ended,
    #[error("the server answered the pull request with {status}: {description}")]
    Refused {
        status: StatusCode,
        description: String,
    },
}

/// Messages the server still owes the pull requests sent so far.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Owed(usize);

impl Owed {
    /// Whether a request for `batch` more should be sent: when half of one is left.
    pub(crate) fn wants_more(self, batch: usize) -> bool {
        self.0 <= batch / 2
    }

    /// A request for `n` messages, counted before it is sent.
    pub(crate) fn requested(&mut self, n: usize) {
        self.0 = self.0.saturating_add(n);
    }

    pub(crate) fn delivered(&mut self) {
        self.0 = self.0.saturating_sub(1);
    }

    /// A request ended (expired, or ended by the server) with `undelivered` of its
    /// messages not sent.
    pub(crate) fn ended(&mut self, undelivered: usize) {
        self.0 = self.0.saturating_sub(undelivered);
    }
}

/// What a pull request's subscription received.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Received {
    Message,
    Heartbeat,
    /// A request ended with this many messages undelivered (`None`: not said).
    RequestEnded(Option<usize>),
    Refused,
}

pub(crate) fn classify(message: &async_nats::Message) -> Received {
    let undelivered = || {
        message
            .headers
            .as_ref()
            .and_then(|h| h.get("Nats-Pending-Messages"))
            .and_then(|v| v.as_str().parse().ok())
    };
    match message.status {
        None | Some(StatusCode::OK) => Received::Message,
        Some(StatusCode::IDLE_HEARTBEAT) => Received::Heartbeat,
        // The request expired.
        Some(StatusCode::TIMEOUT) => Received::RequestEnded(undelivered()),
        // 409 with a count: the request ended by the server (message size, a new leader);
        // without one it refuses the consumer itself (deleted, a limit exceeded).
        Some(StatusCode::REQUEST_TERMINATED) => match undelivered() {
            Some(n) => Received::RequestEnded(Some(n)),
            None => Received::Refused,
        },
        Some(_) => Received::Refused,
    }
}

/// The messages of one durable pull consumer, on a subscription of its own.
pub(crate) struct Pull {
    consumer: PullConsumer,
    context: jetstream::Context,
    inbox: Subject,
    subscriber: Subscriber,
    request: BatchConfig,
    owed: Owed,
}

impl Pull {
    /// Subscribes to a new inbox for `consumer`'s messages: requests of `batch` messages,
    /// each held by the server for `expires` and kept alive by a heartbeat every
    /// `heartbeat`.
    pub(crate) async fn open(
        context: &jetstream::Context,
        consumer: PullConsumer,
        batch: usize,
        expires: Duration,
        heartbeat: Duration,
    ) -> Result<Self, async_nats::SubscribeError> {
        let client = context.client();
        let inbox = Subject::from(client.new_inbox());
        let subscriber = client.subscribe(inbox.clone()).await?;
        Ok(Self {
            consumer,
            context: context.clone(),
            inbox,
            subscriber,
            request: BatchConfig {
                batch: batch.max(1),
                expires: Some(expires),
                idle_heartbeat: heartbeat,
                ..Default::default()
            },
            owed: Owed::default(),
        })
    }

    /// The next message. An error ends the messages: the caller opens them again. Not
    /// safe to cancel (a request counted may not have been sent): callers take the
    /// messages through [`Pull::into_stream`], which keeps an unfinished call.
    async fn next(&mut self) -> Result<jetstream::Message, PullError> {
        let silence = self.request.idle_heartbeat * 2;
        loop {
            if self.owed.wants_more(self.request.batch) {
                self.owed.requested(self.request.batch);
                self.consumer
                    .request_batch(self.request.clone(), self.inbox.clone())
                    .await
                    .map_err(|e| PullError::Request(e.to_string()))?;
            }
            let message = tokio::time::timeout(silence, self.subscriber.next())
                .await
                .map_err(|_| PullError::MissedHeartbeat(silence))?
                .ok_or(PullError::Ended)?;
            match classify(&message) {
                Received::Message => {
                    self.owed.delivered();
                    return Ok(jetstream::Message {
                        message,
                        context: self.context.clone(),
                    });
                }
                Received::Heartbeat => {}
                // Not said: taken as the whole request, so that the count can only fall
                // short (a request too many) and never stall.
                Received::RequestEnded(undelivered) => {
                    self.owed.ended(undelivered.unwrap_or(self.request.batch))
                }
                Received::Refused => {
                    return Err(PullError::Refused {
                        status: message.status.unwrap_or(StatusCode::OK),
                        description: message.description.unwrap_or_default(),
                    });
                }
            }
        }
    }

    /// The messages as a stream (ending at the first error, which it yields).
    pub(crate) fn into_stream(
        self,
    ) -> impl futures::Stream<Item = Result<jetstream::Message, PullError>> + Send {
        futures::stream::unfold(Some(self), |pull| async move {
            let mut pull = pull?;
            match pull.next().await {
                Ok(message) => Some((Ok(message), Some(pull))),
                Err(error) => Some((Err(error), None)),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_is_counted_before_its_messages_arrive() {
        // async-nats's stream: 32 owed, a request for 64 sent, 96 messages delivered
        // before the request was counted: it then believed 64 were still owed.
        let mut owed = Owed::default();
        owed.requested(64);
        for _ in 0..32 {
            owed.delivered();
        }
        assert!(owed.wants_more(64));
        owed.requested(64);
        for _ in 0..96 {
            owed.delivered();
        }
        assert_eq!(owed, Owed(0));
        assert!(owed.wants_more(64), "nothing owed: ask again");
    }

    #[test]
    fn an_expired_request_gives_back_what_it_did_not_deliver() {
        let mut owed = Owed::default();
        owed.requested(64);
        for _ in 0..10 {
            owed.delivered();
        }
        assert!(!owed.wants_more(64));
        owed.ended(54);
        assert_eq!(owed, Owed(0));
    }

    fn status(code: u16, pending: Option<&str>) -> async_nats::Message {
        let headers = pending.map(|n| {
            let mut h = async_nats::HeaderMap::new();
            h.insert("Nats-Pending-Messages", n);
            h
        });
        async_nats::Message {
            subject: "_INBOX.x".into(),
            reply: None,
            payload: bytes::Bytes::new(),
            headers,
            status: StatusCode::from_u16(code).ok(),
            description: None,
            length: 0,
        }
    }

    #[test]
    fn statuses_are_told_apart() {
        assert_eq!(classify(&status(200, None)), Received::Message);
        assert_eq!(classify(&status(100, None)), Received::Heartbeat);
        assert_eq!(
            classify(&status(408, Some("7"))),
            Received::RequestEnded(Some(7))
        );
        assert_eq!(classify(&status(408, None)), Received::RequestEnded(None));
        assert_eq!(
            classify(&status(409, Some("3"))),
            Received::RequestEnded(Some(3))
        );
        assert_eq!(classify(&status(409, None)), Received::Refused);
        assert_eq!(classify(&status(503, None)), Received::Refused);
    }

    /// Requests that expire while nothing is published are renewed: a message published
    /// after several expiries still arrives, with no error on the way.
    #[tokio::test]
    async fn expired_requests_are_renewed() -> anyhow::Result<()> {
        use async_nats::jetstream::consumer::pull;
        let nats = certledger_testkit::NatsServer::start().await?;
        let js = jetstream::new(async_nats::connect(nats.url()).await?);
        js.create_stream(jetstream::stream::Config {
            name: "S".into(),
            subjects: vec!["s.>".into()],
            ..Default::default()
        })
        .await?;
        let consumer: PullConsumer = js
            .get_stream("S")
            .await?
            .create_consumer(pull::Config {
                durable_name: Some("c".into()),
                ..Default::default()
            })
            .await?;
        let expires = Duration::from_millis(300);
        let pull = Pull::open(&js, consumer, 4, expires, Duration::from_millis(100)).await?;
        let mut messages = std::pin::pin!(pull.into_stream());
        // Several requests expire while nothing is published: no message, and no error.
        let quiet = tokio::time::timeout(expires * 5, messages.next()).await;
        assert!(quiet.is_err(), "nothing came out: {quiet:?}");
        js.publish("s.one", "late".into()).await?.await?;
        let message = tokio::time::timeout(Duration::from_secs(20), messages.next())
            .await?
            .ok_or_else(|| anyhow::anyhow!("the messages ended"))??;
        assert_eq!(message.payload.as_ref(), b"late");
        Ok(())
    }
}
