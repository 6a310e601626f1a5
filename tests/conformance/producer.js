// A producer and status reader in another language, written from docs/protocol.md alone.
//   node producer.js enqueue <redis-url> <type> <lua-dir>   -> JSON of what it enqueued
//   node producer.js status  <redis-url> <type> <id>...      -> JSON {id: record}
'use strict';
const fs = require('fs');
const path = require('path');
const Redis = require('ioredis');

// "the --@include lines are replaced by the files in lua/includes/": each once, an
// include's own includes before it.
function inline(luaDir, text, seen) {
  return text.replace(/^--@include (\w+)\s*$/gm, (_, name) => {
    if (seen.has(name)) return '';
    seen.add(name);
    const inc = fs.readFileSync(path.join(luaDir, 'includes', `${name}.lua`), 'utf8');
    return inline(luaDir, inc, seen);
  });
}

function keys(type) {
  const base = `sj:{${type}}:`;
  return [base + 'stream', base + 'delayed', base + 'stats', base + 'job:'];
}

async function enqueue(redis, type, luaDir) {
  const [stream] = keys(type);
  try {
    await redis.xgroup('CREATE', stream, 'workers', '0', 'MKSTREAM');
  } catch (e) {
    if (!String(e.message).startsWith('BUSYGROUP')) throw e;
  }
  const out = {};
  out.plain = await redis.xadd(stream, '*', 'payload', '{"to":"a@b.c"}');
  out.plainWithId = await redis.xadd(stream, '*', 'payload', '{"to":"a@b.c"}', 'id', 'order-17',
    'max_attempts', '5', 'traceparent', '00-4bf9-01');
  const sha = await redis.script('LOAD', inline(luaDir, fs.readFileSync(
    path.join(luaDir, 'enqueue.lua'), 'utf8'), new Set()));
  const call = (...argv) => redis.evalsha(sha, 4, ...keys(type), ...argv);
  out.script = await call('node-1', '', 0, 0, 1, 'payload', '{"n":1}');
  out.scriptAgain = await call('node-1', '', 0, 0, 1, 'payload', '{"n":1}');
  out.scriptDelayed = await call('node-2', '', 60000, 0, 1, 'payload', '{"n":2}');
  out.scriptBatch = await call('node-3', 'tok-1', 0, 0, 1, 'payload', '3',
    '', '', 0, 0, 2, 'payload', '4', 'traceparent', '00-1');
  out.scriptReplayed = await call('node-3', 'tok-1', 0, 0, 1, 'payload', '3');
  return out;
}

async function status(redis, type, ids) {
  const prefix = keys(type)[3];
  const out = {};
  for (const id of ids) out[id] = await redis.hgetall(prefix + id);
  return out;
}

async function main() {
  const [mode, url, type, ...rest] = process.argv.slice(2);
  const redis = new Redis(url, { maxRetriesPerRequest: 1 });
  try {
    const out = mode === 'enqueue' ? await enqueue(redis, type, rest[0])
      : await status(redis, type, rest);
    process.stdout.write(JSON.stringify(out));
  } finally {
    redis.disconnect();
  }
}

main().catch((e) => { console.error(e); process.exit(1); });
