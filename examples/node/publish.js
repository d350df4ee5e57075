#!/usr/bin/env node
// Publish "check this URL" jobs to picket's jobs queue, with publisher confirms.
//
// Each argument (or, with none or "-", each line of standard input) is either an
// http(s) URL or a whole job as a JSON object (schema/job.schema.json). A job without
// an "id" gets one, so its result can be matched by "job_id". Every job is checked
// before the first is sent: a bad line sends nothing.
//
// Prints "ID<TAB>URL" for each job the broker confirmed. Exit status: 0 all confirmed,
// 1 the broker refused or could not route them (no such queue, connection failed),
// 2 bad input.
//
//     node publish.js https://www.example.gov/ https://county.example.org/
//     node publish.js --key county-7 https://county.example.org/
//     echo '{"url": "https://www.example.gov/", "expect": {"body_contains": "Welcome"}}' |
//         node publish.js
//
// The broker and the queue come from --amqp-url / --queue, else from the variables the
// worker reads (PICKET__AMQP__URL, PICKET__AMQP__JOBS_QUEUE), else picket's defaults.
'use strict';

const { randomUUID } = require('node:crypto');
const { readFileSync } = require('node:fs');
const { parseArgs } = require('node:util');
const amqp = require('amqplib');

const DEFAULT_AMQP_URL = 'amqp://guest:guest@127.0.0.1:5672/%2f';
const DEFAULT_QUEUE = 'picket.jobs';
// Confirms are awaited in batches: one round trip per job would make a long list slow.
const BATCH = 100;

class BadInput extends Error {}

function options() {
  const { values, positionals } = parseArgs({
    allowPositionals: true,
    options: {
      'amqp-url': { type: 'string', default: process.env.PICKET__AMQP__URL || DEFAULT_AMQP_URL },
      queue: { type: 'string', default: process.env.PICKET__AMQP__JOBS_QUEUE || DEFAULT_QUEUE },
      key: { type: 'string' },
    },
  });
  return { amqpUrl: values['amqp-url'], queue: values.queue, key: values.key, inputs: positionals };
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

// The job a line stands for; throws BadInput naming what is wrong.
function jobOf(line, key) {
  let job;
  if (line.startsWith('{')) {
    try {
      job = JSON.parse(line);
    } catch (e) {
      throw new BadInput(`not valid JSON (${e.message})`);
    }
    if (typeof job.url !== 'string') throw new BadInput('a JSON job needs a "url" string');
  } else {
    let url;
    try {
      url = new URL(line);
    } catch {
      url = null;
    }
    if (!url || !['http:', 'https:'].includes(url.protocol) || !url.hostname) {
      throw new BadInput('not an http(s) URL or a JSON job');
    }
    job = { url: line };
    if (key) job.key = key;
  }
  if (job.id === undefined || job.id === null) job.id = randomUUID().replaceAll('-', '');
  return job;
}

// Every job of the arguments or stdin, all checked before any is sent.
function readJobs(opts) {
  const fromStdin = opts.inputs.length === 0 || (opts.inputs.length === 1 && opts.inputs[0] === '-');
  const lines = fromStdin ? readFileSync(0, 'utf8').split(/\r?\n/) : opts.inputs;
  const jobs = [];
  lines.forEach((raw, i) => {
    const line = raw.trim();
    if (!line || line.startsWith('#')) return;
    try {
      jobs.push(jobOf(line, opts.key));
    } catch (e) {
      const where = fromStdin ? `line ${i + 1}` : `argument ${i + 1}`;
      throw new BadInput(`${where}: ${e.message}: ${JSON.stringify(line.slice(0, 200))}`);
    }
  });
  return jobs;
}

function propertiesOf(job) {
  const props = {
    contentType: 'application/json',
    // Persistent: a job survives a broker restart on a durable queue.
    persistent: true,
    // A job the broker cannot route (its queue is gone) comes back as a 'return'.
    mandatory: true,
  };
  // message_id is an AMQP short string (at most 255 bytes); the body's id is what counts.
  if (Buffer.byteLength(String(job.id)) <= 255) props.messageId = String(job.id);
  return props;
}

async function publish(opts, jobs) {
  let conn;
  try {
    conn = await amqp.connect(opts.amqpUrl);
  } catch (e) {
    throw new Error(`cannot connect to the broker at ${broker(opts.amqpUrl)}: ${e.message}`);
  }
  // Without listeners an 'error' event would crash the process; the awaited calls
  // below report the same failures.
  conn.on('error', () => {});
  try {
    const ch = await conn.createConfirmChannel();
    ch.on('error', () => {});
    const returned = [];
    ch.on('return', (msg) => returned.push(msg.properties.messageId || '(no id)'));
    try {
      // Never declare picket's queue here: the worker declares it with its own
      // arguments (dead-lettering, queue type), which a client must not guess.
      await ch.checkQueue(opts.queue);
    } catch (e) {
      throw new Error(
        `queue ${JSON.stringify(opts.queue)} does not exist: start a picket worker first ` +
          `(it declares its queues) or check --queue (${e.message})`,
      );
    }
    for (let start = 0; start < jobs.length; start += BATCH) {
      const batch = jobs.slice(start, start + BATCH);
      for (const job of batch) {
        ch.sendToQueue(opts.queue, Buffer.from(JSON.stringify(job)), propertiesOf(job));
      }
      // Rejects when the broker nacks any of them.
      await ch.waitForConfirms();
      // The broker sends a return before the confirm of the same message.
      if (returned.length > 0) {
        throw new Error(`the broker could not route ${returned.length} jobs to ${opts.queue}`);
      }
      for (const job of batch) console.log(`${job.id}\t${job.url}`);
    }
  } finally {
    await conn.close().catch(() => {});
  }
}

async function main() {
  let opts;
  let jobs;
  try {
    opts = options();
    jobs = readJobs(opts);
  } catch (e) {
    console.error(`publish: ${e.message}`);
    return 2;
  }
  try {
    await publish(opts, jobs);
  } catch (e) {
    console.error(`publish: ${e.message}`);
    return 1;
  }
  console.error(`publish: ${jobs.length} jobs confirmed on ${opts.queue}`);
  return 0;
}

main().then((code) => {
  process.exitCode = code;
});
