// Preloaded (node --require) into the Node-based emulators by hack/emulators.sh.
// fauxqs and kinesis-mock hard-code a listen on 0.0.0.0; rewrite every wildcard
// listen address to ESM_EMULATOR_BIND (default 127.0.0.1, loopback only).
'use strict';
const net = require('net');
const BIND = process.env.ESM_EMULATOR_BIND || '127.0.0.1';
const WILDCARD = new Set([undefined, null, '', '0.0.0.0', '::', '::0']);
const origListen = net.Server.prototype.listen;
net.Server.prototype.listen = function (...args) {
  const a = args[0];
  if (a !== null && typeof a === 'object' && !Array.isArray(a) && a.path === undefined && a.fd === undefined && a._handle === undefined && a.handle === undefined) {
    if (WILDCARD.has(a.host)) args[0] = { ...a, host: BIND };
  } else if (typeof a === 'number' || (typeof a === 'string' && /^\d+$/.test(a))) {
    if (typeof args[1] === 'function' || args.length < 2) {
      args.splice(1, 0, BIND);
    } else if (WILDCARD.has(args[1])) {
      args[1] = BIND;
    }
  }
  return origListen.apply(this, args);
};
