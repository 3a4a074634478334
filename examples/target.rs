//! A minimal target service: accepts the Lambda-style batches esm-operator POSTs, prints one
//! line per record, optionally appends each record as a JSON line to a file, and answers with
//! an empty partial batch response (every record succeeded).
//!
//! ```sh
//! cargo run --example target -- --addr 127.0.0.1:9000 --records /tmp/records.jsonl
//! ```
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use clap::Parser;
use serde_json::{Value, json};

#[derive(Parser)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:9000")]
    addr: SocketAddr,
    /// Append every record received, as one JSON line, to this file.
    #[arg(long)]
    records: Option<PathBuf>,
}

type Sink = Arc<Mutex<Option<std::fs::File>>>;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let file = match &args.records {
        Some(path) => Some(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)?,
        ),
        None => None,
    };
    let app = Router::new()
        .fallback(post(receive))
        .with_state(Arc::new(Mutex::new(file)));
    let listener = tokio::net::TcpListener::bind(args.addr).await?;
    println!("target listening on http://{}", args.addr);
    axum::serve(listener, app).await?;
    Ok(())
}

async fn receive(State(sink): State<Sink>, Json(event): Json<Value>) -> (StatusCode, Json<Value>) {
    let Some(records) = event["Records"].as_array() else {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "expected {\"Records\": [...]}"})),
        );
    };
    let mut file = sink.lock().expect("sink lock");
    for record in records {
        println!("{}", describe(record));
        if let Some(file) = file.as_mut() {
            let _ = writeln!(file, "{record}");
        }
    }
    (StatusCode::OK, Json(json!({"batchItemFailures": []})))
}

/// One readable line: where the record came from and what it carries.
fn describe(record: &Value) -> String {
    let source = record["eventSource"].as_str().unwrap_or("?");
    match source {
        "aws:sqs" => format!(
            "sqs      {} {}",
            record["messageId"].as_str().unwrap_or("?"),
            record["body"].as_str().unwrap_or("")
        ),
        "aws:kinesis" => format!(
            "kinesis  {} key={} data(base64)={}",
            record["eventID"].as_str().unwrap_or("?"),
            record["kinesis"]["partitionKey"].as_str().unwrap_or("?"),
            record["kinesis"]["data"].as_str().unwrap_or("")
        ),
        "aws:dynamodb" => format!(
            "dynamodb {} {} keys={}",
            record["eventName"].as_str().unwrap_or("?"),
            record["eventID"].as_str().unwrap_or("?"),
            record["dynamodb"]["Keys"]
        ),
        other => format!("{other} {record}"),
    }
}
