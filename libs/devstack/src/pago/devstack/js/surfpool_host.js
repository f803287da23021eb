// Host a Surfpool surfnet (a Solana JSON-RPC simnet) for the Python devstack.
// Usage: node surfpool_host.js <path to surfpool-sdk.*.node> [startWithConfig JSON]
//
// Prints one JSON line {"rpcUrl","wsUrl","payer","payerSecretKey"} once the surfnet is up.
// Then reads JSON lines {"id", "method", "params"} on stdin, calls that cheat code on the
// surfnet and answers {"id", "result"} or {"id", "error"} on stdout, one line each.
// When stdin closes (the Python parent stopped or died) it stops the surfnet and exits, so
// the simnet never outlives the process that started it.
'use strict';
const readline = require('readline');

const ALLOWED = new Set([
  'fundSol', 'fundSolMany', 'fundToken', 'fundTokenMany', 'getAta', 'setAccount',
  'setTokenAccount', 'setTokenBalance', 'resetAccount', 'timeTravelToSlot',
  'timeTravelToEpoch', 'timeTravelToTimestamp', 'drainEvents', 'instanceId',
]);

const { Surfnet } = require(process.argv[2]);
const config = process.argv[3] ? JSON.parse(process.argv[3]) : null;
const surfnet = config ? Surfnet.startWithConfig(config) : Surfnet.start();

function plain(value) {
  // Typed arrays (secret keys, account data) would serialize as {"0": .., "1": ..}.
  if (ArrayBuffer.isView(value)) return Array.from(value);
  if (typeof value === 'bigint') return value.toString();
  return value;
}

function send(obj) {
  process.stdout.write(JSON.stringify(obj, (_k, v) => plain(v)) + '\n');
}

let stopped = false;
function stop(code) {
  if (!stopped) {
    stopped = true;
    try { surfnet.stop(); } catch (_err) { /* already down */ }
  }
  process.exit(code);
}

process.on('SIGTERM', () => stop(0));
process.on('SIGINT', () => stop(0));

// The SDK queues an event per slot and per transaction until they are drained, and a full
// queue stalls the surfnet for good: undrained, RPC calls time out after ~200k slots×txs
// (~350 deposits at the default slot rate); drained every 0.5 s, 900 deposits over 1,400
// slots ran clean. Nothing here reads the events, so they are dropped.
const drain = setInterval(() => {
  try { surfnet.drainEvents(); } catch (_err) { /* stopping */ }
}, 500);
drain.unref();

send({
  rpcUrl: surfnet.rpcUrl,
  wsUrl: surfnet.wsUrl,
  payer: surfnet.payer,
  payerSecretKey: surfnet.payerSecretKey,
});

const rl = readline.createInterface({ input: process.stdin, terminal: false });
rl.on('line', async (line) => {
  if (!line.trim()) return;
  let id = null;
  try {
    const request = JSON.parse(line);
    id = request.id;
    if (!ALLOWED.has(request.method)) throw new Error(`unknown method ${request.method}`);
    const member = surfnet[request.method];
    const result = typeof member === 'function'
      ? await member.apply(surfnet, request.params || [])
      : member;
    send({ id, result: result === undefined ? null : result });
  } catch (err) {
    send({ id, error: String(err && err.message ? err.message : err) });
  }
});
rl.on('close', () => stop(0));
