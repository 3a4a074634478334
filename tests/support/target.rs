//! An HTTP target for tests: records every event it receives, parsed with the published Lambda
//! types, and answers as the test says (success, failure, partial batch responses, garbage).
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use aws_lambda_events::event::sqs::SqsEvent;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::routing::post;
use tokio::task::JoinHandle;

/// One call the target received.
#[derive(Clone, Debug)]
pub struct Call {
    pub event: SqsEvent,
    /// Size of the request body.
    pub bytes: usize,
}

/// The answer to a call: status and body.
pub type Answer = (u16, String);

type Behaviour = dyn Fn(usize, &SqsEvent) -> Answer + Send + Sync;

#[derive(Clone)]
struct Shared {
    calls: Arc<Mutex<Vec<Call>>>,
    /// Bodies that were not Lambda SQS events, with the parse error.
    malformed: Arc<Mutex<Vec<String>>>,
    behaviour: Arc<Behaviour>,
}

pub struct TestTarget {
    pub url: String,
    shared: Shared,
    server: JoinHandle<()>,
}

impl TestTarget {
    /// Starts a target on a free loopback port; `behaviour(call_index, event)` gives each
    /// answer. A body that is not a Lambda SQS event is answered 400 and fails [`TestTarget::calls`].
    pub async fn start(
        behaviour: impl Fn(usize, &SqsEvent) -> Answer + Send + Sync + 'static,
    ) -> Self {
        let shared = Shared {
            calls: Arc::default(),
            malformed: Arc::default(),
            behaviour: Arc::new(behaviour),
        };
        let app = Router::new()
            .route("/", post(handle))
            .layer(DefaultBodyLimit::max(16 * 1024 * 1024))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .expect("a loopback port");
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

    /// The calls so far; fails the test if any body was not a Lambda SQS event.
    pub fn calls(&self) -> Vec<Call> {
        let malformed = self.shared.malformed.lock().unwrap();
        assert!(
            malformed.is_empty(),
            "the target got malformed events: {malformed:?}"
        );
        self.shared.calls.lock().unwrap().clone()
    }
}

impl Drop for TestTarget {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn handle(State(shared): State<Shared>, body: Bytes) -> (StatusCode, String) {
    let event: SqsEvent = match serde_json::from_slice(&body) {
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
        });
        calls.len() - 1
    };
    let (status, answer) = (shared.behaviour)(index, &event);
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
