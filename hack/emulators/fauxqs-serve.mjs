// Starts fauxqs (SQS/SNS/S3 emulator) for hack/emulators.sh.
//
// Differences from `npx fauxqs`:
//  * request logging is off unless FAUXQS_LOGGER=true (the CLI hard-codes it on,
//    which costs time and log space under load);
//  * unless ESM_FAUXQS_PATCH=0, two SQS fixes that make it behave like AWS:
//    - queue URLs are http://<host the client used>/<account>/<name> (fauxqs 1.9.2
//      hands out http://sqs.<region>.localhost:<port>/..., a name that does not
//      resolve everywhere), like moto does;
//    - a queue is found by any URL naming its account and name (fauxqs looks queues
//      up by the exact URL string it created them with; AWS parses the URL).
// Port from FAUXQS_PORT. hack/emulators.sh runs this with --require loopback.cjs so
// that it listens on 127.0.0.1 only.
// Usage: node fauxqs-serve.mjs /path/to/node_modules/fauxqs/dist
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

const dist = process.argv[2];
const load = (rel) => import(pathToFileURL(join(dist, rel)).href);

if (process.env.ESM_FAUXQS_PATCH !== '0') {
  const { SqsStore } = await load('sqs/sqsStore.js');
  const { DEFAULT_ACCOUNT_ID } = await load('common/types.js');
  const lookup = (store, url) => {
    const exact = store.queues.get(url);
    if (exact || typeof url !== 'string') return exact;
    try {
      const parts = new URL(url).pathname.split('/').filter(Boolean);
      if (parts.length === 2) {
        const q = store.queuesByName.get(parts[1]);
        if (q && q.url.endsWith(`/${parts[0]}/${parts[1]}`)) return q;
      }
    } catch {
      // not a URL: unknown queue
    }
    return undefined;
  };
  const origDelete = SqsStore.prototype.deleteQueue;
  SqsStore.prototype.getQueue = function getQueue(url) {
    return lookup(this, url);
  };
  SqsStore.prototype.deleteQueue = function deleteQueue(url) {
    const q = lookup(this, url);
    return q ? origDelete.call(this, q.url) : false;
  };
  SqsStore.prototype.buildQueueUrl = function buildQueueUrl(queueName, _port, requestHost) {
    return `http://${requestHost}/${DEFAULT_ACCOUNT_ID}/${queueName}`;
  };
}

const { startFauxqs } = await load('app.js');
const server = await startFauxqs({ logger: process.env.FAUXQS_LOGGER === 'true' });
console.log(`fauxqs listening at ${server.address}`);
for (const sig of ['SIGTERM', 'SIGINT']) {
  process.on(sig, () => {
    server.stop().finally(() => process.exit(0));
  });
}
