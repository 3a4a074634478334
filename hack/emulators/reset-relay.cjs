// Preloaded (node --require, after loopback.cjs) into kinesis-local by hack/emulators.sh.
// kinesis-mock 0.6.2 stops listening for good when a client resets a connection (TCP RST)
// while it reads the request: one killed client, or one Toxiproxy reset_peer, and every later
// connection is refused (hack/emulators/README.md). A client that closes cleanly (FIN) does no
// harm. So the ports listed in ESM_EMULATOR_RELAY_PORTS are served by a relay in this process:
// the emulator listens on a free port of the same host instead, each connection is passed
// through byte for byte, and when the client's side fails the emulator's side is ended cleanly.
'use strict';
const net = require('net');

const RELAYED = new Set(
  (process.env.ESM_EMULATOR_RELAY_PORTS || '').split(',').filter(Boolean).map(Number),
);
const previousListen = net.Server.prototype.listen;

// The port and host of listen(port[, host][, backlog][, cb]) or listen({port, host}, cb).
function address(args) {
  const first = args[0];
  if (first !== null && typeof first === 'object') return { port: Number(first.port), host: first.host };
  return { port: Number(first), host: typeof args[1] === 'string' ? args[1] : undefined };
}

function relay(port, host, upstreamPort) {
  const server = net.createServer((client) => {
    const upstream = net.connect(upstreamPort, host);
    client.pipe(upstream);
    upstream.pipe(client);
    client.on('error', () => upstream.end());
    upstream.on('error', () => client.destroy());
    upstream.on('close', () => client.destroy());
  });
  server.on('error', (err) => {
    process.stderr.write(`reset-relay: cannot listen on ${host}:${port}: ${err.message}\n`);
    process.exit(1);
  });
  previousListen.call(server, port, host);
}

net.Server.prototype.listen = function (...args) {
  const { port, host } = address(args);
  if (!RELAYED.has(port)) return previousListen.apply(this, args);
  RELAYED.delete(port);
  if (typeof args[0] === 'object') args[0] = { ...args[0], port: 0 };
  else args[0] = 0;
  this.once('listening', () => {
    const bound = this.address();
    relay(port, bound.address, bound.port);
  });
  return previousListen.apply(this, args);
};
