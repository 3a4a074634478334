"""Creates the quickstart's AWS resources on the emulators and puts records in.

  seed.py create   -> prints `export NAME=VALUE` lines (queue URLs, stream ARNs)
  seed.py put      -> sends the records each mapping should deliver

Endpoints come from ESM_MOTO_ENDPOINT, ESM_KINESIS_ENDPOINT, ESM_DYNAMODB_ENDPOINT.
"""
import json
import os
import sys
import time

import boto3

REGION = "us-east-1"
PREFIX = os.environ.get("QUICKSTART_PREFIX", "quickstart")
RECORDS = 10


def client(service, endpoint_variable):
    return boto3.client(
        service,
        region_name=REGION,
        endpoint_url=os.environ[endpoint_variable],
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )


def sqs():
    return client("sqs", "ESM_MOTO_ENDPOINT")


def create():
    queue = sqs().create_queue(QueueName=f"{PREFIX}-orders", Attributes={"VisibilityTimeout": "60"})
    fifo = sqs().create_queue(
        QueueName=f"{PREFIX}-payments.fifo",
        Attributes={"FifoQueue": "true", "VisibilityTimeout": "60"},
    )
    print(f"export QUICKSTART_SQS_URL={queue['QueueUrl']}")
    print(f"export QUICKSTART_FIFO_URL={fifo['QueueUrl']}")

    if os.environ.get("ESM_KINESIS_ENDPOINT"):
        kinesis = client("kinesis", "ESM_KINESIS_ENDPOINT")
        stream = f"{PREFIX}-clicks"
        kinesis.create_stream(StreamName=stream, ShardCount=2)
        kinesis.get_waiter("stream_exists").wait(StreamName=stream, WaiterConfig={"Delay": 1})
        arn = kinesis.describe_stream_summary(StreamName=stream)["StreamDescriptionSummary"]["StreamARN"]
        print(f"export QUICKSTART_KINESIS_ARN={arn}")

    if os.environ.get("ESM_DYNAMODB_ENDPOINT"):
        dynamodb = client("dynamodb", "ESM_DYNAMODB_ENDPOINT")
        table = f"{PREFIX}-carts"
        description = dynamodb.create_table(
            TableName=table,
            AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
            KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
            BillingMode="PAY_PER_REQUEST",
            StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
        )["TableDescription"]
        # DynamoDB Local names its own region in the ARN: read it, never build it.
        print(f"export QUICKSTART_DYNAMODB_STREAM_ARN={description['LatestStreamArn']}")


def put():
    queue_url = os.environ["QUICKSTART_SQS_URL"]
    fifo_url = os.environ["QUICKSTART_FIFO_URL"]
    for i in range(RECORDS):
        sqs().send_message(QueueUrl=queue_url, MessageBody=json.dumps({"order": i, "item": "book"}))
        sqs().send_message(
            QueueUrl=fifo_url,
            MessageBody=json.dumps({"payment": i}),
            MessageGroupId=f"customer-{i % 2}",
            MessageDeduplicationId=f"payment-{i}",
        )
    if os.environ.get("QUICKSTART_KINESIS_ARN"):
        kinesis = client("kinesis", "ESM_KINESIS_ENDPOINT")
        for i in range(RECORDS):
            kinesis.put_record(
                StreamARN=os.environ["QUICKSTART_KINESIS_ARN"],
                Data=json.dumps({"click": i}).encode(),
                PartitionKey=f"user-{i % 3}",
            )
    if os.environ.get("QUICKSTART_DYNAMODB_STREAM_ARN"):
        dynamodb = client("dynamodb", "ESM_DYNAMODB_ENDPOINT")
        table = f"{PREFIX}-carts"
        # Four items inserted, two of them changed, one removed: 4 INSERT, 2 MODIFY, 1 REMOVE.
        for i in range(4):
            dynamodb.put_item(TableName=table, Item={"id": {"S": f"cart-{i}"}, "items": {"N": "1"}})
        for i in range(2):
            dynamodb.put_item(TableName=table, Item={"id": {"S": f"cart-{i}"}, "items": {"N": "2"}})
        dynamodb.delete_item(TableName=table, Key={"id": {"S": "cart-3"}})


if __name__ == "__main__":
    {"create": create, "put": put}[sys.argv[1]]()
