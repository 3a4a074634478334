//! An HTTP target for tests: records every event it receives, parsed with the published Lambda
//! types (SQS by default; any event type with [`EventTarget`]), and answers as the test says
//! (success, failure, partial batch responses, garbage).
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_lambda_events::event::sqs::SqsEvent;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::routing::post;
use serde::de::DeserializeOwned;
use tokio::task::JoinHandle;

/// One call the target received.
#[derive(Clone, Debug)]
pub struct Call<E = SqsEvent> {
    pub event: E,
    /// Size of the request body.
    pub bytes: usize,
    /// The request's headers (trace context).
    pub headers: axum::http::HeaderMap,
    /// When the call arrived.
    pub arrived: std::time::Instant,
}

/// The answer to a call: status and body.
pub type Answer = (u16, String);

type Behaviour<E> = dyn Fn(usize, &E) -> Answer + Send + Sync;

struct Shared<E> {
    calls: Arc<Mutex<Vec<Call<E>>>>,
    /// Bodies that were not events of type `E`, with the parse error.
    malformed: Arc<Mutex<Vec<String>>>,
    behaviour: Arc<Behaviour<E>>,
    /// How long each call takes before it is answered.
    latency: Duration,
}

impl<E> Clone for Shared<E> {
    fn clone(&self) -> Self {
        Self {
            calls: self.calls.clone(),
            malformed: self.malformed.clone(),
            behaviour: self.behaviour.clone(),
            latency: self.latency,
        }
    }
}

/// A target receiving Lambda SQS events.
pub type TestTarget = EventTarget<SqsEvent>;

pub struct EventTarget<E> {
    pub url: String,
    shared: Shared<E>,
    server: JoinHandle<()>,
}

impl<E: DeserializeOwned + Clone + Send + Sync + 'static> EventTarget<E> {
    /// Starts a target on a free loopback port; `behaviour(call_index, event)` gives each
    /// answer. A body that is not an `E` is answered 400 and fails [`EventTarget::calls`].
    pub async fn start(behaviour: impl Fn(usize, &E) -> Answer + Send + Sync + 'static) -> Self {
        Self::start_on([127, 0, 0, 1].into(), behaviour).await
    }

    /// [`EventTarget::start`] on a free port of `address` (the e2e tests: the node IP).
    pub async fn start_on(
        address: std::net::IpAddr,
        behaviour: impl Fn(usize, &E) -> Answer + Send + Sync + 'static,
    ) -> Self {
        Self::serve(address, Duration::ZERO, Arc::new(behaviour)).await
    }

    /// A target that accepts everything and takes `latency` over each call: batches stay in
    /// flight that long, and a backlog builds up behind them.
    pub async fn accepting_after(latency: Duration) -> Self {
        Self::serve(
            [127, 0, 0, 1].into(),
            latency,
            Arc::new(|_, _| (200, String::new())),
        )
        .await
    }

    async fn serve(
        address: std::net::IpAddr,
        latency: Duration,
        behaviour: Arc<Behaviour<E>>,
    ) -> Self {
        let shared = Shared {
            calls: Arc::default(),
            malformed: Arc::default(),
            behaviour,
            latency,
        };
        let app = Router::new()
            .route("/", post(handle::<E>))
            .layer(DefaultBodyLimit::max(16 * 1024 * 1024))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind(SocketAddr::new(address, 0))
            .await
            .expect("a free port");
        let url = format!("http://{}/", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            axum::serve(listener, app)
                .await
                .expect("test target serves");
        });
        Self {
            url,
            shared,
            server,
        }
    }

    /// A target that accepts everything.
    pub async fn accepting() -> Self {
        Self::start(|_, _| (200, String::new())).await
    }

    /// The calls so far; fails the test if any body was not an `E`.
    pub fn calls(&self) -> Vec<Call<E>> {
        let malformed = self.shared.malformed.lock().unwrap();
        assert!(
            malformed.is_empty(),
            "the target got malformed events: {malformed:?}"
        );
        self.shared.calls.lock().unwrap().clone()
    }
}

impl<E> Drop for EventTarget<E> {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn handle<E: DeserializeOwned + Clone>(
    State(shared): State<Shared<E>>,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> (StatusCode, String) {
    let event: E = match serde_json::from_slice(&body) {
        Ok(event) => event,
        Err(err) => {
            shared.malformed.lock().unwrap().push(err.to_string());
            return (StatusCode::BAD_REQUEST, err.to_string());
        }
    };
    let index = {
        let mut calls = shared.calls.lock().unwrap();
        calls.push(Call {
            event: event.clone(),
            bytes: body.len(),
            headers,
            arrived: std::time::Instant::now(),
        });
        calls.len() - 1
    };
    let (status, answer) = (shared.behaviour)(index, &event);
    if !shared.latency.is_zero() {
        tokio::time::sleep(shared.latency).await;
    }
    (
        StatusCode::from_u16(status).expect("a valid status"),
        answer,
    )
}

/// A partial batch response listing `ids`.
pub fn batch_item_failures<'a>(ids: impl IntoIterator<Item = &'a str>) -> String {
    let items: Vec<serde_json::Value> = ids
        .into_iter()
        .map(|id| serde_json::json!({ "itemIdentifier": id }))
        .collect();
    serde_json::json!({ "batchItemFailures": items }).to_string()
}
