#!/usr/bin/env node
// Print the verdict changes picket publishes on its changes exchange.
//
// A result whose verdict changed for its check ("changed": true) is published to the
// changes exchange (a durable topic exchange, picket.changes by default) with routing
// key PREVIOUS.VERDICT: up.down, down.up, up.degraded, ... This binds a private queue
// to it with the given binding keys ("#", every change, by default; "#.down" for
// everything that went down, "*.up" for recoveries) and prints one line per change:
//
//     CHECKED_AT  PREVIOUS.VERDICT  URL  REASON: DETAIL
//
// (--json prints the whole result instead). The queue is exclusive: it lives as long as
// this process, and changes published while nobody listens are not kept for it; an
// alerting service that must see every change binds a durable queue of its own.
//
//     node subscribe.js                  # every change
//     node subscribe.js '#.down'         # only what went down
//     node subscribe.js --count 1 '*.*'  # wait for one change, then exit
//
// Stops on SIGINT/SIGTERM (exit 0), after --count changes (exit 0), or when the broker
// closes the connection (exit 1). The broker and the exchange come from --amqp-url /
// --exchange, else PICKET__AMQP__URL / PICKET__AMQP__CHANGES_EXCHANGE, else the defaults.
'use strict';

const { parseArgs } = require('node:util');
const amqp = require('amqplib');

const DEFAULT_AMQP_URL = 'amqp://guest:guest@127.0.0.1:5672/%2f';
const DEFAULT_EXCHANGE = 'picket.changes';

class BadInput extends Error {}

function options() {
  const { values, positionals } = parseArgs({
    allowPositionals: true,
    options: {
      'amqp-url': { type: 'string', default: process.env.PICKET__AMQP__URL || DEFAULT_AMQP_URL },
      exchange: {
        type: 'string',
        default: process.env.PICKET__AMQP__CHANGES_EXCHANGE || DEFAULT_EXCHANGE,
      },
      count: { type: 'string', default: '0' },
      json: { type: 'boolean', default: false },
    },
  });
  const count = Number(values.count);
  if (!Number.isInteger(count) || count < 0) {
    throw new BadInput('--count must be 0 (no limit) or more');
  }
  return {
    amqpUrl: values['amqp-url'],
    exchange: values.exchange,
    count,
    json: values.json,
    keys: positionals.length > 0 ? positionals : ['#'],
  };
}

// host:port of an AMQP URL, without the credentials, for error messages.
function broker(url) {
  try {
    const u = new URL(url);
    return `${u.hostname}:${u.port || 5672}`;
  } catch {
    return '(an unparsable URL)';
  }
}

// One readable line for a change; a body that is not a JSON object is shown as such.
function describe(routingKey, body) {
  let result = null;
  try {
    result = JSON.parse(body.toString('utf8'));
  } catch {
    result = null;
  }
  if (result === null || typeof result !== 'object' || Array.isArray(result)) {
    return `-  ${routingKey}  (not a JSON result: ${body.length} bytes)`;
  }
  const show = (v) => (v === undefined || v === null ? '-' : String(v));
  return [
    show(result.checked_at),
    routingKey,
    show(result.url),
    `${show(result.reason)}: ${result.detail ?? ''}`,
  ].join('  ');
}

// Prints changes; resolves with the exit code: 0 when --count is reached or on a
// signal, 1 when the broker closes the connection.
async function listen(opts) {
  let conn;
  try {
    conn = await amqp.connect(opts.amqpUrl);
  } catch (e) {
    throw new Error(`cannot connect to the broker at ${broker(opts.amqpUrl)}: ${e.message}`);
  }
  let done = false;
  let finish;
  const finished = new Promise((resolve) => {
    finish = resolve;
  });
  const stop = (code) => {
    if (done) return;
    done = true;
    conn.close().catch(() => {});
    finish(code);
  };
  conn.on('error', (e) => console.error(`subscribe: ${e.message}`));
  conn.on('close', () => {
    if (!done) console.error('subscribe: the broker closed the connection');
    stop(1);
  });
  process.on('SIGINT', () => stop(0));
  process.on('SIGTERM', () => stop(0));
  try {
    await subscribe(conn, opts, stop, () => done);
  } catch (e) {
    // Stopped while subscribing: the error is only the closing connection's.
    if (done) return finished;
    done = true;
    await conn.close().catch(() => {});
    throw e;
  }
  return finished;
}

// Binds a private queue to the exchange and prints what arrives; `stop(code)` ends it,
// `stopping()` tells whether it has.
async function subscribe(conn, opts, stop, stopping) {
  const ch = await conn.createChannel();
  ch.on('error', (e) => console.error(`subscribe: ${e.message}`));
  await ch.prefetch(64);
  // Declared exactly as the worker declares it (durable topic), so this may start
  // before any worker has run; an exchange of another kind is refused by the broker.
  await ch.assertExchange(opts.exchange, 'topic', { durable: true });
  const { queue } = await ch.assertQueue('', { exclusive: true }); // server-named, ours alone
  for (const key of opts.keys) await ch.bindQueue(queue, opts.exchange, key);
  let seen = 0;
  await ch.consume(queue, (msg) => {
    if (msg === null) {
      console.error('subscribe: the broker cancelled the subscription');
      stop(1);
      return;
    }
    // Stopping: leave it unacked; the broker takes it back with the queue.
    if (stopping()) return;
    const line = opts.json ? msg.content.toString('utf8') : describe(msg.fields.routingKey, msg.content);
    console.log(line);
    // Acked after printing: a change is never taken without being shown.
    ch.ack(msg);
    seen += 1;
    if (opts.count > 0 && seen >= opts.count) stop(0);
  });
  // Said once the subscription is in place: a change published after this line is seen.
  console.error(`subscribe: listening on ${opts.exchange} for ${opts.keys.join(' ')}`);
}

async function main() {
  let opts;
  try {
    opts = options();
  } catch (e) {
    console.error(`subscribe: ${e.message}`);
    return 2;
  }
  try {
    return await listen(opts);
  } catch (e) {
    console.error(`subscribe: ${e.message}`);
    return 1;
  }
}

main().then((code) => {
  process.exitCode = code;
});
