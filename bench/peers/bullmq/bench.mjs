#!/usr/bin/env node
// BullMQ (Node) peer driver for the streamjobs benchmarks.
//
// Protocol (shared with the Python peers, see bench/peers/_common.py):
//   node bench/peers/bullmq/bench.mjs --url redis://127.0.0.1:PORT/0 --workload NAME --n N
//        [--rate R] [--duration S] [--concurrency C]
// Logs go to stderr; exactly one JSON object is printed as the last line of stdout.
// Every wait is bounded; the process always exits by itself.
import { randomBytes } from 'node:crypto';
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import process from 'node:process';

import { Queue, Worker } from 'bullmq';
import IORedis from 'ioredis';

const PEER = 'bullmq';
const WORKLOADS = [
  'enqueue_latency',
  'enqueue_single',
  'enqueue_bulk',
  'drain_noop',
  'drain_sleep1ms',
  'drain_fail_once',
  'e2e',
  'enqueue_concurrent',
  'drain_io10ms',
  'drain_10kb',
];
const DRAINS = ['drain_noop', 'drain_sleep1ms', 'drain_fail_once', 'drain_io10ms', 'drain_10kb'];
const IN_FLIGHT = 100; // enqueue_concurrent: callers each awaiting their own add
const PAD = 'x'.repeat(10240); // drain_10kb
const DEFAULT_CONCURRENCY = 100;
const BULK_CHUNK = 1000;
const DEADLINE_S = Number(process.env.BENCH_DRIVER_DEADLINE || '280');

// Anything a library prints with console.log must not land on stdout: stdout carries
// only the one result line.
console.log = (...a) => console.error(...a);
console.info = (...a) => console.error(...a);

function log(...a) {
  process.stderr.write(`[bullmq] ${a.join(' ')}\n`);
}

function readVersion(pkg) {
  try {
    const p = new URL(`./node_modules/${pkg}/package.json`, import.meta.url);
    return JSON.parse(readFileSync(p, 'utf8')).version;
  } catch {
    return 'unknown';
  }
}
const VERSION = readVersion('bullmq');
const IOREDIS_VERSION = readVersion('ioredis');

// ---------------------------------------------------------------- arguments
function parseArgs(argv) {
  const a = {
    url: null,
    workload: null,
    n: 20000,
    rate: 500,
    duration: 10,
    concurrency: 0,
    workers: 1,
    role: 'main',
    queue: null,
  };
  for (let i = 0; i < argv.length; i++) {
    let key = argv[i];
    let val;
    if (!key.startsWith('--')) throw new Error(`unexpected argument ${key}`);
    key = key.slice(2);
    const eq = key.indexOf('=');
    if (eq >= 0) {
      val = key.slice(eq + 1);
      key = key.slice(0, eq);
    } else {
      val = argv[++i];
    }
    if (val === undefined) throw new Error(`--${key} needs a value`);
    switch (key) {
      case 'url': a.url = val; break;
      case 'workload': a.workload = val; break;
      case 'n': a.n = parseInt(val, 10); break;
      case 'rate': a.rate = Number(val); break;
      case 'duration': a.duration = Number(val); break;
      case 'concurrency': a.concurrency = parseInt(val, 10); break;
      case 'workers': a.workers = parseInt(val, 10); break;
      case 'role': a.role = val; break;
      case 'queue': a.queue = val; break; // internal: e2e producer child
      default: throw new Error(`unknown option --${key}`);
    }
  }
  if (!a.url) throw new Error('--url is required');
  if (!WORKLOADS.includes(a.workload)) throw new Error(`--workload must be one of ${WORKLOADS.join(',')}`);
  if (!Number.isInteger(a.n) || a.n < 0 || (a.n === 0 && a.workload !== 'e2e')) {
    throw new Error('--n must be a positive integer (e2e ignores it)');
  }
  if (!(a.rate > 0)) throw new Error('--rate must be > 0');
  if (!(a.duration > 0)) throw new Error('--duration must be > 0');
  if (!['main', 'producer'].includes(a.role)) throw new Error('--role must be main or producer');
  return a;
}

// ---------------------------------------------------------------- results
let resultPrinted = false;
function emit(obj) {
  if (resultPrinted) return;
  resultPrinted = true;
  process.stdout.write(JSON.stringify(obj) + '\n');
}

function round(x, d) {
  const f = 10 ** d;
  return Math.round(x * f) / f;
}

// Same pick as _common.percentiles: s[min(len-1, max(0, round(q*len)-1))].
function percentiles(values) {
  if (!values.length) return { p50_ms: null, p99_ms: null, max_ms: null, samples: 0 };
  const s = Float64Array.from(values).sort();
  const pick = (q) => s[Math.min(s.length - 1, Math.max(0, Math.round(q * s.length) - 1))];
  return {
    p50_ms: round(pick(0.5), 3),
    p99_ms: round(pick(0.99), 3),
    max_ms: round(s[s.length - 1], 3),
    samples: s.length,
  };
}

function rateResult(n, seconds) {
  const jps = seconds > 0 ? n / seconds : null;
  return {
    seconds: round(seconds, 4),
    jobs_per_s: jps ? round(jps, 1) : null,
    jobs_per_min: jps ? Math.round(jps * 60) : null,
  };
}

const hrNowS = () => Number(process.hrtime.bigint()) / 1e9;
// Wall clock with sub-ms resolution, comparable across processes on this machine.
const wallMs = () => performance.timeOrigin + performance.now();

// ---------------------------------------------------------------- redis / bullmq
const conns = [];

function connect(url, { blocking = false } = {}) {
  // Queue (producer) connections keep ioredis' default maxRetriesPerRequest so a dead
  // server fails fast; the Worker connection must use null as BullMQ requires.
  const opts = { lazyConnect: false, enableOfflineQueue: true };
  if (blocking) opts.maxRetriesPerRequest = null;
  const c = new IORedis(url, opts);
  c.on('error', (e) => log(`redis error: ${e.message}`));
  conns.push(c);
  return c;
}

async function withTimeout(promise, ms, what) {
  let t;
  const timer = new Promise((_, rej) => {
    t = setTimeout(() => rej(new Error(`${what}: timed out after ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([promise, timer]);
  } finally {
    clearTimeout(t);
  }
}

function jobOpts(workload) {
  const o = { removeOnComplete: true, removeOnFail: true };
  if (workload === 'drain_fail_once') o.attempts = 2; // no backoff: retried at once
  return o;
}

async function bulkAdd(queue, workload, n, tag = 'job') {
  const opts = jobOpts(workload);
  for (let start = 0; start < n; start += BULK_CHUNK) {
    const end = Math.min(n, start + BULK_CHUNK);
    const batch = [];
    for (let i = start; i < end; i++) {
      batch.push({ name: tag, data: workload === 'drain_10kb' ? { i, pad: PAD } : { i }, opts });
    }
    await queue.addBulk(batch);
  }
}

// ---------------------------------------------------------------- workloads
async function enqueueLatency(ctx) {
  const { queue, args } = ctx;
  const opts = jobOpts(args.workload);
  const lat = new Array(args.n);
  const t0 = hrNowS();
  for (let i = 0; i < args.n; i++) {
    const s = process.hrtime.bigint();
    await queue.add('job', { i }, opts);
    lat[i] = Number(process.hrtime.bigint() - s) / 1e6;
  }
  const secs = hrNowS() - t0;
  return {
    ...percentiles(lat),
    ...rateResult(args.n, secs),
    config: 'producers=1 awaited queue.add removeOnComplete=true removeOnFail=true',
    method: 'per-call process.hrtime.bigint() around each awaited queue.add',
  };
}

async function enqueueSingle(ctx) {
  const { queue, args } = ctx;
  const opts = jobOpts(args.workload);
  const t0 = hrNowS();
  for (let i = 0; i < args.n; i++) await queue.add('job', { i }, opts);
  const secs = hrNowS() - t0;
  return {
    ...rateResult(args.n, secs),
    config: 'producers=1 awaited queue.add removeOnComplete=true removeOnFail=true',
    method: 'first add..last add resolved',
  };
}

async function enqueueConcurrent(ctx) {
  const { queue, args } = ctx;
  const opts = jobOpts(args.workload);
  await Promise.all(Array.from({ length: 20 }, (_, i) => queue.add('job', { i: -i - 1 }, opts)));
  const lat = [];
  const caller = async (k) => {
    for (let i = k; i < args.n; i += IN_FLIGHT) {
      const s = process.hrtime.bigint();
      await queue.add('job', { i }, opts);
      lat.push(Number(process.hrtime.bigint() - s) / 1e6);
    }
  };
  const t0 = hrNowS();
  await Promise.all(Array.from({ length: IN_FLIGHT }, (_, k) => caller(k)));
  const secs = hrNowS() - t0;
  return {
    ...percentiles(lat),
    ...rateResult(args.n, secs),
    in_flight: IN_FLIGHT,
    concurrency_model: `Promise.all of ${IN_FLIGHT} async callers on one event loop`,
    config: 'one Queue (one ioredis connection), awaited queue.add removeOnComplete=true removeOnFail=true',
    method: 'first add..last add resolved; per-call process.hrtime.bigint()',
  };
}

async function enqueueBulk(ctx) {
  const { queue, args } = ctx;
  const t0 = hrNowS();
  await bulkAdd(queue, args.workload, args.n);
  const secs = hrNowS() - t0;
  return {
    ...rateResult(args.n, secs),
    config: `addBulk chunk=${BULK_CHUNK} awaited sequentially removeOnComplete=true removeOnFail=true`,
    method: 'first addBulk..last addBulk resolved',
  };
}

function makeRecorder(expected) {
  const rec = {
    expected,
    firstStart: null,
    lastDone: null,
    starts: 0,
    done: 0,
    failedOnce: 0,
    seen: new Set(),
    latMs: [],
    latDateMs: [],
    resolve: null,
  };
  rec.finished = new Promise((r) => { rec.resolve = r; });
  return rec;
}

function makeProcessor(workload, rec) {
  const sleepMs = { drain_sleep1ms: 1, drain_io10ms: 10 }[workload] || 0;
  const failOnce = workload === 'drain_fail_once';
  const e2e = workload === 'e2e';
  return async (job) => {
    if (rec.firstStart === null) rec.firstStart = hrNowS();
    rec.starts++;
    const d = job.data;
    if (e2e) {
      rec.latMs.push(wallMs() - d.t_hr);
      rec.latDateMs.push(Date.now() - d.t_ms);
    }
    if (failOnce && !rec.seen.has(d.i)) {
      rec.seen.add(d.i);
      rec.failedOnce++;
      throw new Error('fail once (bench)');
    }
    if (sleepMs) await sleep(sleepMs);
    return null;
  };
}

function startWorker(ctx, rec) {
  const { args } = ctx;
  const concurrency = args.concurrency > 0 ? args.concurrency : DEFAULT_CONCURRENCY;
  const wconn = connect(args.url, { blocking: true });
  const worker = new Worker(ctx.queueName, makeProcessor(args.workload, rec), {
    connection: wconn,
    concurrency,
    autorun: true,
  });
  worker.on('error', (e) => log(`worker error: ${e && e.message}`));
  // 'completed' fires after the job was moved to completed (here: removed) in Redis.
  worker.on('completed', () => {
    rec.lastDone = hrNowS();
    rec.done++;
    if (rec.done >= rec.expected) rec.resolve();
  });
  let finalFailures = 0;
  worker.on('failed', (job) => {
    if (job && job.opts && job.attemptsMade >= (job.opts.attempts || 1)) {
      finalFailures++;
      if (finalFailures <= 5) log(`job ${job.id} failed for good: ${job.failedReason}`);
    }
  });
  ctx.worker = worker;
  return { worker, concurrency, finalFailures: () => finalFailures };
}

async function drain(ctx) {
  const { queue, args } = ctx;
  const tEnq = hrNowS();
  await bulkAdd(queue, args.workload, args.n);
  log(`enqueued ${args.n} jobs with addBulk in ${(hrNowS() - tEnq).toFixed(2)} s (untimed)`);
  const rec = makeRecorder(args.n);
  const w = startWorker(ctx, rec);
  const budgetMs = Math.max(30000, (DEADLINE_S - 20) * 1000 - (hrNowS() - ctx.t0) * 1000);
  try {
    await withTimeout(rec.finished, budgetMs, `drain (${rec.done}/${rec.expected} done)`);
  } catch (e) {
    return { error: e.message, completed: rec.done, attempts: rec.starts };
  }
  const secs = rec.lastDone - rec.firstStart;
  const cfg = [`concurrency=${w.concurrency}`, 'workers=1 (in-process)', 'removeOnComplete=true', 'removeOnFail=true'];
  if (args.workload === 'drain_fail_once') cfg.push('attempts=2 backoff=none');
  if (args.workload === 'drain_sleep1ms') cfg.push('handler awaits setTimeout 1ms');
  if (args.workload === 'drain_io10ms') cfg.push('handler awaits setTimeout 10ms');
  if (args.workload === 'drain_10kb') cfg.push('10 KB payloads');
  return {
    ...rateResult(rec.done, secs),
    completed: rec.done,
    attempts: rec.starts,
    config: cfg.join(' '),
    method: "in-process first-start..last-done (worker 'completed' event)",
  };
}

// e2e: a producer child process (this script, --role producer) sends at a fixed rate
// while the worker runs here, as the Python peers do.
async function produceE2E(ctx) {
  const { queue, args } = ctx;
  const total = Math.floor(args.rate * args.duration);
  const opts = jobOpts('e2e');
  const t0 = hrNowS();
  let late = 0;
  for (let i = 0; i < total; i++) {
    const due = t0 + i / args.rate;
    const delay = due - hrNowS();
    if (delay > 0.0005) await sleep(delay * 1000);
    else if (delay < -0.005) late++;
    await queue.add('job', { i, t_ms: Date.now(), t_hr: wallMs() }, opts);
  }
  const secs = hrNowS() - t0;
  log(`producer: sent ${total} jobs in ${secs.toFixed(2)} s (${late} sent >5 ms late)`);
  return { sent: total, ...rateResult(total, secs), late };
}

async function e2e(ctx) {
  const { args } = ctx;
  const expected = Math.floor(args.rate * args.duration);
  const rec = makeRecorder(expected);
  const w = startWorker(ctx, rec);
  await withTimeout(w.worker.waitUntilReady(), 10000, 'worker ready');
  await sleep(1000); // let the worker settle into its blocking fetch, like _common.spawn_producer
  const script = fileURLToPath(import.meta.url);
  const child = spawn(process.execPath, [
    script, '--url', args.url, '--workload', 'e2e', '--n', String(args.n),
    '--rate', String(args.rate), '--duration', String(args.duration),
    '--role', 'producer', '--queue', ctx.queueName,
  ], { stdio: ['ignore', 'pipe', 'inherit'] });
  let childOut = '';
  child.stdout.on('data', (b) => { childOut += b; });
  const childDone = new Promise((r) => child.on('exit', (code) => r(code)));
  ctx.child = child;
  const budgetMs = (args.duration + 30) * 1000;
  let err = null;
  try {
    await withTimeout(rec.finished, budgetMs, `e2e (${rec.done}/${expected} done)`);
  } catch (e) {
    err = e.message;
  }
  const code = await withTimeout(childDone, 10000, 'producer exit').catch((e) => e.message);
  let prod = {};
  try {
    prod = JSON.parse(childOut.trim().split('\n').pop());
  } catch {
    prod = { error: `producer gave no result (exit ${code})` };
  }
  if (prod.error && !err) err = `producer: ${prod.error}`;
  const pct = percentiles(rec.latMs);
  const pctDate = percentiles(rec.latDateMs);
  log(`e2e Date.now()-based cross-check: p50=${pctDate.p50_ms} p99=${pctDate.p99_ms} max=${pctDate.max_ms} ms`);
  const out = {
    ...pct,
    n: rec.latMs.length,
    sent: prod.sent ?? null,
    completed: rec.done,
    rate: args.rate,
    duration: args.duration,
    producer_late: prod.late ?? null,
    config: `rate=${args.rate}/s duration=${args.duration}s concurrency=${w.concurrency} producers=1 (separate process, awaited queue.add) workers=1 removeOnComplete=true`,
    method: 'handler start - send, wall clock performance.timeOrigin+performance.now() (sub-ms), producer in a child process',
  };
  if (err) out.error = err;
  return out;
}

async function teardown(ctx, obliterate) {
  const step = async (what, fn, ms) => {
    try {
      await withTimeout(Promise.resolve().then(fn), ms, what);
    } catch (e) {
      log(`teardown: ${e.message}`);
    }
  };
  const child = ctx.child;
  if (child && child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
  if (ctx.worker) await step('worker.close', () => ctx.worker.close(), 10000);
  if (obliterate && ctx.queue && ctx.connected) {
    await step('obliterate', () => ctx.queue.obliterate({ force: true }), 30000);
  }
  if (ctx.queue) await step('queue.close', () => ctx.queue.close(), 10000);
  for (const c of conns) {
    await step('redis quit', () => c.quit(), 3000);
    c.disconnect();
  }
}

// ---------------------------------------------------------------- main
async function main() {
  let args;
  const base = { peer: PEER, version: VERSION, workload: null, n: null };
  try {
    args = parseArgs(process.argv.slice(2));
  } catch (e) {
    const w = process.argv.indexOf('--workload');
    base.workload = w >= 0 ? process.argv[w + 1] ?? null : null;
    emit({ ...base, error: `bad arguments: ${e.message}` });
    process.exit(2);
  }
  base.workload = args.workload;
  base.n = args.n;

  const watchdog = setTimeout(() => {
    emit({ ...base, error: `driver deadline ${DEADLINE_S}s exceeded` });
    process.exit(3);
  }, DEADLINE_S * 1000);

  if (args.workers !== 1) {
    emit({ ...base, error: 'only --workers 1 is supported by the bullmq driver' });
    process.exit(2);
  }

  const ctx = {
    args,
    t0: hrNowS(),
    queueName: args.queue || `bench-${args.workload}-${randomBytes(4).toString('hex')}`,
  };
  const qconn = connect(args.url);
  const queue = new Queue(ctx.queueName, { connection: qconn });
  queue.on('error', (e) => log(`queue error: ${e && e.message}`));
  ctx.queue = queue;

  let res;
  try {
    await withTimeout(queue.waitUntilReady(), 10000, 'redis connect');
    ctx.connected = true;
    log(`bullmq ${VERSION} ioredis ${IOREDIS_VERSION} node ${process.version} queue=${ctx.queueName} role=${args.role}`);
    if (args.role === 'producer') {
      res = await produceE2E(ctx);
    } else if (args.workload === 'enqueue_latency') res = await enqueueLatency(ctx);
    else if (args.workload === 'enqueue_single') res = await enqueueSingle(ctx);
    else if (args.workload === 'enqueue_bulk') res = await enqueueBulk(ctx);
    else if (args.workload === 'enqueue_concurrent') res = await enqueueConcurrent(ctx);
    else if (DRAINS.includes(args.workload)) res = await drain(ctx);
    else res = await e2e(ctx);
  } catch (e) {
    res = { error: String((e && e.message) || e) };
  }

  // Teardown, untimed: stop the producer child and the worker, close the queue, drop the
  // queue's keys (main role only), then quit every connection.
  await teardown(ctx, args.role === 'main');

  const out = { ...base, ...res };
  if (args.role === 'main' && args.workload === 'e2e' && res && typeof res.n === 'number') out.n = res.n;
  clearTimeout(watchdog);
  emit(out);
  process.exit(out.error ? 1 : 0);
}

main().catch((e) => {
  emit({ peer: PEER, version: VERSION, error: String(e && e.message) });
  process.exit(1);
});
