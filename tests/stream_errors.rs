//! Stream error handling end to end, as Lambda handles it: retries, bisection, partial batch
//! responses, record age and on-failure destinations, with real pollers against kinesis-mock,
//! shard leases in a real kube-apiserver, and an HTTP target.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use aws_lambda_events::event::kinesis::KinesisEvent;
use esm_operator::api::SourceKind;
use prometheus::Registry;
use serde_json::{Value, json};
use support::emulators::{shared, unique_name};
use support::records::{assert_complete_and_ordered, first_deliveries, keyed_records};
use support::streams::*;
use support::target::EventTarget;
use support::wait;
use tokio::sync::watch;

#[tokio::test]
async fn kinesis_poison_record_alone_goes_to_an_sqs_destination() {
    let fixture = fixture("kinesis-poison").await;
    let (stream, records, sequences) = poisoned_stream().await;
    let failures = FailureQueue::create().await;
    let target = EventTarget::<KinesisEvent>::start(fail_poison).await;
    fixture
        .mapping(
            "orders",
            json!({
                "source": stream.source(),
                "target": {"url": target.url},
                "startingPosition": "TRIM_HORIZON",
                "batchSize": 10,
                "maximumRetryAttempts": 2,
                "bisectBatchOnTargetError": true,
                "destinationConfig": failures.destination_config(),
            }),
        )
        .await;
    let poller = fixture.start("orders", "replica-a");
    let shard = only_shard(&stream).await;
    fixture
        .wait_for_checkpoints(
            "orders",
            &BTreeMap::from([(shard.clone(), sequences[59].clone())]),
        )
        .await;
    let accepted: Vec<String> = target
        .calls()
        .iter()
        .filter(|call| !poisoned(&call.event))
        .flat_map(|call| kinesis_data(&call.event))
        .collect();
    let expected: Vec<(String, String)> = records
        .iter()
        .filter(|(_, d)| !d.ends_with("poison"))
        .cloned()
        .collect();
    assert_complete_and_ordered(&accepted, &expected);
    let alone = target
        .calls()
        .iter()
        .filter(|call| call.event.records.len() == 1 && poisoned(&call.event))
        .count();
    assert_eq!(alone, 3, "the poison record alone: one call, two retries");

    let received = failures.records().await;
    assert_eq!(received.len(), 1, "one invocation record: {received:?}");
    let record = &received[0];
    let context = &record["requestContext"];
    assert_eq!(context["condition"], "RetryAttemptsExhausted");
    assert_eq!(context["approximateInvokeCount"], 3);
    assert_eq!(
        record["esmOperator"]["mapping"],
        format!("{}/orders", fixture.ns())
    );
    assert!(
        context["functionArn"]
            .as_str()
            .unwrap()
            .starts_with("http://")
    );
    let request_id = context["requestId"].as_str().unwrap();
    assert!(
        request_id.len() == 36 && request_id.matches('-').count() == 4,
        "a UUID: {request_id}"
    );
    assert_eq!(
        record["responseContext"],
        json!({"statusCode": 500, "executedVersion": "$LATEST", "functionError": "Unhandled"})
    );
    assert_eq!(record["version"], "1.0");
    let timestamp = record["timestamp"].as_str().unwrap();
    assert!(
        timestamp.len() == 24 && timestamp.ends_with('Z') && timestamp.as_bytes()[19] == b'.',
        "milliseconds, exactly: {timestamp}"
    );
    let info = &record["KinesisBatchInfo"];
    assert_eq!(info["shardId"], shard.as_str());
    assert_eq!(info["startSequenceNumber"], sequences[25].as_str());
    assert_eq!(info["endSequenceNumber"], sequences[25].as_str());
    assert_eq!(info["batchSize"], 1);
    assert!(
        info["streamArn"]
            .as_str()
            .unwrap()
            .ends_with(&format!("stream/{}", stream.name))
    );
    assert!(info["approximateArrivalOfFirstRecord"].is_string());
    assert_eq!(poller.counter("esm_poller_records_dropped_total"), 1);
    assert_eq!(poller.counter("esm_poller_destination_deliveries_total"), 1);
    poller.stop().await;
}

#[tokio::test]
async fn kinesis_poison_record_holds_the_shard_by_default() {
    let fixture = fixture("kinesis-wait").await;
    let (stream, records, sequences) = poisoned_stream().await;
    let target = EventTarget::<KinesisEvent>::start(fail_poison).await;
    fixture
        .mapping(
            "orders",
            json!({
                "source": stream.source(),
                "target": {"url": target.url},
                "startingPosition": "TRIM_HORIZON",
                "batchSize": 10,
            }),
        )
        .await;
    let poller = fixture.start("orders", "replica-a");
    wait::until("three attempts at the poisoned batch", WAIT, || async {
        (target
            .calls()
            .iter()
            .filter(|call| poisoned(&call.event))
            .count()
            >= 3)
            .then_some(())
    })
    .await;
    let accepted: Vec<String> = target
        .calls()
        .iter()
        .filter(|call| !poisoned(&call.event))
        .flat_map(|call| kinesis_data(&call.event))
        .collect();
    let before: Vec<String> = records[..20].iter().map(|(_, d)| d.clone()).collect();
    assert_eq!(
        first_deliveries(&accepted),
        before,
        "nothing after the failing batch"
    );
    for call in target.calls().iter().filter(|call| poisoned(&call.event)) {
        assert_eq!(call.event.records.len(), 10, "the whole batch is retried");
    }
    let shard = only_shard(&stream).await;
    fixture
        .wait_for_checkpoints("orders", &BTreeMap::from([(shard, sequences[19].clone())]))
        .await;
    poller.stop().await;
}

#[tokio::test]
async fn kinesis_records_past_their_age_are_dropped_counted_and_described() {
    use esm_operator::destination::Destination;
    use esm_operator::poller::checkpoint::KubeShardLeases;
    use esm_operator::poller::metrics::PollerMetrics;
    use esm_operator::poller::status::ProcessingResults;
    use esm_operator::poller::stream::{StreamIdentity, StreamPoller, StreamSettings};
    use esm_operator::sources::kinesis::{KinesisStream, KinesisStreamId};

    let fixture = fixture("kinesis-age").await;
    let stream = create_stream(1).await;
    let records = keyed_records(20, 2, 0);
    let last = stream.put(&records).await;
    let target = EventTarget::<KinesisEvent>::start(|_, _| (503, "down".into())).await;
    let destination = EventTarget::<Value>::start(|_, _| (200, String::new())).await;
    // maximumRecordAgeInSeconds is at least 60 in a mapping; the engine is built here with
    // 2 s so the test does not wait a minute.
    let mapping = fixture
        .mapping(
            "orders",
            json!({
                "source": stream.source(),
                "target": {"url": target.url},
                "startingPosition": "TRIM_HORIZON",
            }),
        )
        .await;
    let mut settings = StreamSettings::from_spec(&mapping.spec, LEASE_DURATION);
    settings.retry.max_record_age = Some(Duration::from_secs(2));
    let registry = Registry::new();
    let metrics =
        PollerMetrics::new(&registry)
            .unwrap()
            .mapping(fixture.ns(), "orders", SourceKind::Kinesis);
    let http = esm_operator::target::HttpTarget::new(
        &esm_operator::target::TargetClient::new().unwrap(),
        &mapping.spec.target,
        fixture.ns(),
    )
    .unwrap();
    let poller = StreamPoller {
        stream: KinesisStream::new(
            &stream._emulator.sdk_config("kinesis"),
            KinesisStreamId::Name(stream.name.clone()),
        ),
        leases: KubeShardLeases::new(
            fixture.client.clone(),
            &mapping,
            "replica-a",
            LEASE_DURATION,
        )
        .unwrap(),
        target: http,
        destination: Some(
            Destination::http(
                &esm_operator::target::TargetClient::new().unwrap(),
                &serde_json::from_value(json!({"url": destination.url})).unwrap(),
                fixture.ns(),
            )
            .unwrap(),
        ),
        filters: Default::default(),
        settings,
        identity: StreamIdentity {
            mapping: format!("{}/orders", fixture.ns()),
            mapping_uid: "record-age".into(),
            target_url: target.url.clone(),
            stream_arn: format!(
                "arn:aws:kinesis:us-east-1:000000000000:stream/{}",
                stream.name
            ),
            invoke_identity: "test".into(),
            kind: esm_operator::api::SourceKind::Kinesis,
        },
        metrics: metrics.clone(),
        results: ProcessingResults::default(),
        spans: Default::default(),
    };
    let (stop, stopped) = watch::channel(false);
    let task = tokio::spawn(poller.run(stopped));
    fixture.wait_for_checkpoints("orders", &last).await;
    assert_eq!(
        metrics.dropped.get(),
        20,
        "every record expired while the target failed"
    );
    let described: Vec<Value> = destination
        .calls()
        .into_iter()
        .map(|call| call.event)
        .collect();
    assert!(!described.is_empty());
    let mut sizes = 0;
    for record in &described {
        assert_eq!(record["requestContext"]["condition"], "RecordAgeExceeded");
        assert!(record.get("responseContext").is_none(), "{record}");
        assert!(record["requestContext"]["approximateInvokeCount"].as_u64() >= Some(1));
        sizes += record["KinesisBatchInfo"]["batchSize"].as_u64().unwrap();
    }
    assert_eq!(sizes, 20);
    stop.send(true).unwrap();
    task.await.unwrap();
}

/// An SQS queue on fauxqs receiving a mapping's invocation records.
struct FailureQueue {
    emulator: std::sync::Arc<support::emulators::Emulators>,
    sqs: aws_sdk_sqs::Client,
    url: String,
}

impl FailureQueue {
    async fn create() -> Self {
        let emulator = shared("fauxqs");
        let sqs = aws_sdk_sqs::Client::new(&emulator.sdk_config("fauxqs"));
        let url = sqs
            .create_queue()
            .queue_name(unique_name("failures"))
            .send()
            .await
            .unwrap()
            .queue_url
            .unwrap();
        Self { emulator, sqs, url }
    }

    /// The mapping's `destinationConfig` naming this queue.
    fn destination_config(&self) -> Value {
        json!({"onFailure": {"sqs": {
            "queueUrl": self.url,
            "region": "us-east-1",
            "endpointUrl": self.emulator.endpoint("fauxqs"),
            "credentialsSecretRef": {"name": "aws"},
        }}})
    }

    /// The invocation records waiting in the queue (up to 10).
    async fn records(&self) -> Vec<Value> {
        self.sqs
            .receive_message()
            .queue_url(&self.url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .send()
            .await
            .unwrap()
            .messages
            .unwrap_or_default()
            .iter()
            .map(|message| serde_json::from_str(message.body.as_deref().unwrap()).unwrap())
            .collect()
    }
}

/// Kinesis records with their sequence numbers, from the calls a target saw.
fn sequences_by_data(target: &EventTarget<KinesisEvent>) -> BTreeMap<String, String> {
    target
        .calls()
        .iter()
        .flat_map(|call| call.event.records.clone())
        .map(|record| {
            let data = String::from_utf8(record.kinesis.data.0.clone()).unwrap();
            (data, record.kinesis.sequence_number.clone())
        })
        .collect()
}

/// AWS treats a 2xx `[]` as a full success for streams: the shard moves on (it was held
/// forever, retrying the first batch).
#[tokio::test]
async fn kinesis_an_empty_array_answer_is_success() {
    let fixture = fixture("kinesis-empty-array").await;
    let stream = create_stream(1).await;
    let records = keyed_records(20, 2, 0);
    let last = stream.put(&records).await;
    let target = EventTarget::<KinesisEvent>::start(|_, _| (200, "[]".into())).await;
    fixture
        .mapping(
            "orders",
            json!({
                "source": stream.source(),
                "target": {"url": target.url},
                "startingPosition": "TRIM_HORIZON",
                "batchSize": 5,
                "targetResponseTypes": ["ReportBatchItemFailures"],
            }),
        )
        .await;
    let poller = fixture.start("orders", "replica-a");
    fixture.wait_for_checkpoints("orders", &last).await;
    assert_complete_and_ordered(&delivered(&target), &records);
    assert_eq!(poller.counter("esm_poller_records_failed_total"), 0);
    poller.stop().await;
}

/// Recorded on AWS: 6 records, batch size 3, MaximumRetryAttempts 3, a target that always lists
/// the 5th record: it is delivered 5 times (the call that moved the checkpoint past the 4th
/// does not count), and the destination is told of it alone after 4 calls.
#[tokio::test]
async fn kinesis_partial_failures_count_retries_as_aws_does() {
    let fixture = fixture("kinesis-budget").await;
    let stream = create_stream(1).await;
    let records = keyed_records(6, 1, 0);
    let last = stream.put(&records).await;
    let failing = records[4].1.clone();
    let listed = failing.clone();
    let target = EventTarget::<KinesisEvent>::start(move |_, event: &KinesisEvent| {
        let ids = event
            .records
            .iter()
            .filter(|r| r.kinesis.data.0 == listed.as_bytes())
            .map(|r| r.kinesis.sequence_number.as_str());
        (200, support::target::batch_item_failures(ids))
    })
    .await;
    let failures = FailureQueue::create().await;
    fixture
        .mapping(
            "orders",
            json!({
                "source": stream.source(),
                "target": {"url": target.url},
                "startingPosition": "TRIM_HORIZON",
                "batchSize": 3,
                "maximumRetryAttempts": 3,
                "targetResponseTypes": ["ReportBatchItemFailures"],
                "destinationConfig": failures.destination_config(),
            }),
        )
        .await;
    let poller = fixture.start("orders", "replica-a");
    fixture.wait_for_checkpoints("orders", &last).await;
    poller.stop().await;

    let deliveries = delivered(&target);
    assert_complete_and_ordered(&deliveries, &records);
    let failed_deliveries = deliveries.iter().filter(|d| **d == failing).count();
    assert!(
        failed_deliveries >= 5,
        "one call that made progress and 4 of its own, at least: {failed_deliveries}"
    );
    let sequence = &sequences_by_data(&target)[&failing];
    let described = failures.records().await;
    assert!(!described.is_empty(), "the destination was told");
    for record in &described {
        assert_eq!(
            record["requestContext"]["condition"],
            "RetryAttemptsExhausted"
        );
        assert_eq!(record["requestContext"]["approximateInvokeCount"], 4);
        let info = &record["KinesisBatchInfo"];
        assert_eq!(info["batchSize"], 1, "only the failed record: {record}");
        assert_eq!(info["startSequenceNumber"], sequence.as_str());
        assert_eq!(info["endSequenceNumber"], sequence.as_str());
        assert!(
            record["responseContext"]["functionError"].is_null(),
            "{record}"
        );
    }
}

/// A mapping on a poisoned stream that gives the poison record up after its first failed call,
/// with `destination` as its on-failure destination. Returns the mapping's UID.
async fn poisoned_mapping(
    fixture: &Fixture,
    stream: &TestStream,
    target: &EventTarget<KinesisEvent>,
    destination: Value,
) -> String {
    let mapping = fixture
        .mapping(
            "orders",
            json!({
                "source": stream.source(),
                "target": {"url": target.url},
                "startingPosition": "TRIM_HORIZON",
                "batchSize": 10,
                "maximumRetryAttempts": 0,
                "bisectBatchOnTargetError": true,
                "destinationConfig": {"onFailure": destination},
            }),
        )
        .await;
    mapping.metadata.uid.expect("a created mapping has a UID")
}

/// moto's connection fields for a destination.
fn moto_connection(moto: &support::emulators::Emulators) -> Value {
    json!({
        "region": "us-east-1",
        "endpointUrl": moto.endpoint("moto"),
        "credentialsSecretRef": {"name": "aws"},
    })
}

fn with_connection(mut destination: Value, connection: Value) -> Value {
    let fields = destination.as_object_mut().unwrap();
    fields.extend(connection.as_object().unwrap().clone());
    destination
}

#[tokio::test]
async fn kinesis_discarded_batch_is_published_to_an_sns_topic() {
    let fixture = fixture("kinesis-sns").await;
    let (stream, _, sequences) = poisoned_stream().await;
    let moto = shared("moto");
    let config = moto.sdk_config("moto");
    let sns = aws_sdk_sns::Client::new(&config);
    let sqs = aws_sdk_sqs::Client::new(&config);
    let topic = sns
        .create_topic()
        .name(unique_name("failures"))
        .send()
        .await
        .unwrap()
        .topic_arn
        .unwrap();
    let queue = sqs
        .create_queue()
        .queue_name(unique_name("subscriber"))
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    let queue_arn = sqs
        .get_queue_attributes()
        .queue_url(&queue)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
        .send()
        .await
        .unwrap()
        .attributes
        .unwrap()[&aws_sdk_sqs::types::QueueAttributeName::QueueArn]
        .clone();
    sns.subscribe()
        .topic_arn(&topic)
        .protocol("sqs")
        .endpoint(&queue_arn)
        .attributes("RawMessageDelivery", "true")
        .send()
        .await
        .unwrap();
    let target = EventTarget::<KinesisEvent>::start(fail_poison).await;
    let destination = with_connection(json!({"topicArn": topic}), moto_connection(&moto));
    poisoned_mapping(&fixture, &stream, &target, json!({"sns": destination})).await;
    let poller = fixture.start("orders", "replica-a");
    let shard = only_shard(&stream).await;
    fixture
        .wait_for_checkpoints("orders", &BTreeMap::from([(shard, sequences[59].clone())]))
        .await;
    poller.stop().await;
    let received = wait::until("the invocation record through the topic", WAIT, || async {
        let messages = sqs
            .receive_message()
            .queue_url(&queue)
            .wait_time_seconds(1)
            .send()
            .await
            .unwrap()
            .messages
            .unwrap_or_default();
        (!messages.is_empty()).then_some(messages)
    })
    .await;
    let record: Value = serde_json::from_str(received[0].body.as_deref().unwrap()).unwrap();
    assert_eq!(
        record["requestContext"]["condition"],
        "RetryAttemptsExhausted"
    );
    let info = &record["KinesisBatchInfo"];
    assert_eq!(info["batchSize"], 1);
    assert_eq!(info["startSequenceNumber"], sequences[25].as_str());
    assert!(record.get("payload").is_none(), "only S3 keeps the records");
}

#[tokio::test]
async fn kinesis_discarded_batch_is_kept_in_s3_and_replays_to_a_target() {
    let fixture = fixture("kinesis-s3").await;
    let (stream, _, sequences) = poisoned_stream().await;
    let moto = shared("moto");
    let s3 = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&moto.sdk_config("moto"))
            .force_path_style(true)
            .build(),
    );
    let bucket = unique_name("failed").to_lowercase().replace('_', "-");
    s3.create_bucket().bucket(&bucket).send().await.unwrap();
    let target = EventTarget::<KinesisEvent>::start(fail_poison).await;
    let destination = with_connection(
        json!({"bucketArn": format!("arn:aws:s3:::{bucket}"), "prefix": "failed/"}),
        moto_connection(&moto),
    );
    let uid = poisoned_mapping(&fixture, &stream, &target, json!({"s3": destination})).await;
    let poller = fixture.start("orders", "replica-a");
    let shard = only_shard(&stream).await;
    fixture
        .wait_for_checkpoints(
            "orders",
            &BTreeMap::from([(shard.clone(), sequences[59].clone())]),
        )
        .await;
    poller.stop().await;

    let objects = s3
        .list_objects_v2()
        .bucket(&bucket)
        .prefix("failed/")
        .send()
        .await
        .unwrap()
        .contents
        .unwrap_or_default();
    assert_eq!(
        objects.len(),
        1,
        "one object per discarded batch: {objects:?}"
    );
    let key = objects[0].key.clone().unwrap();
    let prefix = format!("failed/aws/lambda/{uid}/{shard}/");
    assert!(key.starts_with(&prefix), "{key} starts with {prefix}");
    let name = &key[prefix.len()..];
    // YYYY/MM/DD/YYYY-MM-DDTHH.MM.SS-<uuid>
    assert_eq!(&name[10..11], "/", "{name}");
    assert_eq!(&name[..10].replace('/', "-"), &name[11..21], "{name}");
    assert_eq!(&name[24..25], ".", "{name}");
    let object = s3
        .get_object()
        .bucket(&bucket)
        .key(&key)
        .send()
        .await
        .unwrap();
    let body: Value =
        serde_json::from_slice(&object.body.collect().await.unwrap().into_bytes()).unwrap();
    assert_eq!(body["KinesisBatchInfo"]["batchSize"], 1);
    let kept = &body["payload"]["Records"];
    assert_eq!(kept.as_array().map(Vec::len), Some(1), "{body}");
    assert_eq!(kept[0]["kinesis"]["sequenceNumber"], sequences[25].as_str());

    // The records replay to a target that now takes them.
    let fixed = EventTarget::<KinesisEvent>::accepting().await;
    let replay = |args: Vec<String>| {
        // On a blocking thread: the target answers on this test's runtime meanwhile.
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_esm-operator"))
                .arg("replay")
                .args(args)
                .env("AWS_ACCESS_KEY_ID", "test")
                .env("AWS_SECRET_ACCESS_KEY", "test")
                .output()
                .expect("esm-operator replay runs")
        })
    };
    let output = replay(
        [
            &format!("s3://{bucket}/{key}"),
            "--target-url",
            &fixed.url,
            "--endpoint-url",
            moto.endpoint("moto"),
            "--region",
            "us-east-1",
        ]
        .map(str::to_owned)
        .to_vec(),
    )
    .await
    .unwrap();
    let printed = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "replay failed: {printed} {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(printed.starts_with("replayed 1 record(s)"), "{printed}");
    let replayed = delivered(&fixed);
    assert_eq!(replayed.len(), 1);
    assert!(replayed[0].ends_with("/poison"), "{replayed:?}");

    // An object without records is refused, naming it.
    let refused = replay(
        ["/dev/null", "--target-url", &fixed.url]
            .map(str::to_owned)
            .to_vec(),
    )
    .await
    .unwrap();
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr)
            .contains("/dev/null is not an S3 on-failure object")
    );
}
