"""Does a persistent ElasticMQ keep a FIFO message group's lock across a restart?

SQS hands out nothing more of a message group while one of its messages is in flight (received,
neither deleted nor past its visibility timeout). This receives the first of five messages of a
group (visibility 30 s), restarts ElasticMQ (`hack/emulators.sh restart`, data kept in H2) and
receives again: SQS would answer with none of the group; an emulator that lost the lock hands
out the rest, ahead of the first one's redelivery. Exits 1 when the lock was lost.

    hack/emulators.sh install
    ~/.cache/esm-operator/emulators/venv/bin/python hack/emulators/fifo-lock-after-restart.py

Why it matters: tests/chaos_soak.rs restarts ElasticMQ under a FIFO mapping, and an order
violation the emulator makes this way is not the poller's (docs/reliability.md).
"""

import pathlib
import subprocess
import sys
import tempfile
import time

import boto3

HACK = pathlib.Path(__file__).resolve().parent.parent


def emulators(*args: str) -> str:
    return subprocess.run(
        [str(HACK / "emulators.sh"), *args], capture_output=True, text=True, check=True
    ).stdout


def endpoint_of(exports: str) -> str:
    for line in exports.splitlines():
        name, _, value = line.removeprefix("export ").partition("=")
        if name == "ESM_ELASTICMQ_ENDPOINT":
            return value.strip("'\"")
    sys.exit(f"no ESM_ELASTICMQ_ENDPOINT in what `hack/emulators.sh start` printed:\n{exports}")


def sqs(endpoint: str):
    return boto3.client(
        "sqs",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )


def bodies(answer: dict) -> list[str]:
    return [m["Body"] for m in answer.get("Messages", [])]


def main() -> int:
    state = tempfile.mkdtemp(prefix="esm-fifo-lock.")
    endpoint = endpoint_of(emulators("start", "elasticmq", "--state", state, "--persistent"))
    try:
        client = sqs(endpoint)
        url = client.create_queue(
            QueueName="group-lock.fifo",
            Attributes={
                "FifoQueue": "true",
                "ContentBasedDeduplication": "true",
                "VisibilityTimeout": "30",
            },
        )["QueueUrl"]
        for n in range(1, 6):
            client.send_message(QueueUrl=url, MessageBody=f"g-{n}", MessageGroupId="g")
        in_flight = bodies(client.receive_message(QueueUrl=url, MaxNumberOfMessages=1))
        before = bodies(client.receive_message(QueueUrl=url, MaxNumberOfMessages=10))
        emulators("restart", "elasticmq", "--state", state)
        for attempt in range(10):
            try:
                after = bodies(sqs(endpoint).receive_message(QueueUrl=url, MaxNumberOfMessages=10))
                break
            except Exception as error:  # still starting
                if attempt == 9:
                    raise
                print(f"waiting for ElasticMQ: {error}")
                time.sleep(1)
    finally:
        emulators("stop", "--state", state)
    print(f"in flight: {in_flight}; received before the restart: {before}; after: {after}")
    if before or after:
        print("the group lock was lost: SQS hands out none of the group while g-1 is in flight")
        return 1
    print("the group lock held")
    return 0


if __name__ == "__main__":
    sys.exit(main())
