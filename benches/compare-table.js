// The table of benches/compare.sh: `node benches/compare-table.js RESULTS.jsonl [CONDITIONS.txt]`.
//
// Reads the JSON lines of one comparison run (each a `pushwire bench --json` report with "case"
// and "server" added), prints every figure with pushwire's ratio against each peer, then each
// target: the ratio against the peer the target names, and whether it was met. A ratio is
// always "how many times better pushwire is": peer / pushwire for latency, memory and CPU,
// pushwire / peer for rates. A run that failed (missing messages, a dropped connection) or did
// not run never meets a target.
//
// Beside each rate: the server's CPU-seconds (user + system, over exactly the measured window,
// from /proc/PID/stat: `pushwire bench --server-pid`) per million messages echoed or deliveries
// made, and pushwire's ratio on that too; it is the fair figure when the load generator, not
// the server, is what saturates (client CPU near one core per client thread). For pushwire's
// fan-out runs, the server's own latency (`--server-metrics`: publish accepted -> each
// subscriber's write, and -> a fan-out's last write; p50/p99 over the window from bucket counts).
'use strict';
const fs = require('fs');

// The performance issue's targets: a ratio against a named peer (`min`, in "times better" as
// below: p99 "at most half of Nchan's" is Nchan / pushwire >= 2), or an absolute bound on
// pushwire's own figure (`maxAbs`, for idle memory).
// `cpuMax` bounds pushwire's server CPU per message as a multiple of the peer's (issue #16).
const TARGETS = [
  { case: 'echo-32', peer: 'mio-raw', cpuMax: 1.1 },
  { case: 'echo-32', peer: 'tokio-tungstenite', cpuMax: 0.6 },
  { case: 'echo-16384', peer: 'mio-raw', cpuMax: 1.05 },
  // Issue #15: "TLS echo at 32 B >= 1.3x tokio-tungstenite+rustls".
  { case: 'echo-tls-32', peer: 'tokio-tungstenite', min: 1.3 },
  { case: 'fanout-ws', peer: 'nchan', min: 10.0 },
  { case: 'fanout-sse', peer: 'nchan', min: 10.0 },
  { case: 'latency-ws', peer: 'nchan', min: 2.0 },
  { case: 'latency-sse', peer: 'nchan', min: 2.0 },
  { case: 'idle-ws', maxAbs: 256 },
  { case: 'idle-sse', maxAbs: 256 },
  // Issue #14: across two nodes on one Redis, ">= 3x Nchan+Redis deliveries/s and p99 <= half
  // of Nchan's" (the p99 of the paced run, as for one node above).
  { case: 'xnode-fanout-ws', peer: 'nchan-redis', min: 3.0 },
  { case: 'xnode-fanout-sse', peer: 'nchan-redis', min: 3.0 },
  { case: 'xnode-latency-ws', peer: 'nchan-redis', min: 2.0 },
  { case: 'xnode-latency-sse', peer: 'nchan-redis', min: 2.0 },
];

// What each case measures: the figure, whether higher is better, how it is shown.
const CASES = {
  'echo-32': { label: 'echo 32 B, C=100 W=8', metric: 'messages_per_s', higher: true, unit: 'msg/s' },
  'echo-16384': { label: 'echo 16 KiB, C=100 W=8', metric: 'messages_per_s', higher: true, unit: 'msg/s' },
  'echo-tls-32': { label: 'echo over TLS 32 B, C=100 W=8', metric: 'messages_per_s', higher: true, unit: 'msg/s' },
  'echo-tls-16384': { label: 'echo over TLS 16 KiB, C=100 W=8', metric: 'messages_per_s', higher: true, unit: 'msg/s' },
  'fanout-ws': { label: 'fan-out ws, 64 B back to back', metric: 'deliveries_per_s', higher: true, unit: 'deliveries/s' },
  'fanout-sse': { label: 'fan-out SSE, 64 B back to back', metric: 'deliveries_per_s', higher: true, unit: 'deliveries/s' },
  'latency-ws': { label: 'fan-out ws at 5 msg/s, p99', metric: 'latency_p99_us', higher: false, unit: 'us' },
  'latency-sse': { label: 'fan-out SSE at 5 msg/s, p99', metric: 'latency_p99_us', higher: false, unit: 'us' },
  'idle-ws': { label: 'idle ws, RSS per connection', metric: 'bytes_per_connection', higher: false, unit: 'B' },
  'idle-sse': { label: 'idle SSE, RSS per connection', metric: 'bytes_per_connection', higher: false, unit: 'B' },
  'fanout-ws-json': { label: 'fan-out ws, 1 KiB JSON back to back', metric: 'deliveries_per_s', higher: true, unit: 'deliveries/s' },
  'fanout-ws-json-deflate': { label: 'fan-out ws, 1 KiB JSON, permessage-deflate', metric: 'deliveries_per_s', higher: true, unit: 'deliveries/s' },
  'idle-ws-py': { label: 'idle ws (idle_tls.py), RSS per connection', metric: 'bytes_per_connection', higher: false, unit: 'B' },
  'idle-wss-py': { label: 'idle wss:// (idle_tls.py), RSS per connection', metric: 'bytes_per_connection', higher: false, unit: 'B' },
  // Issue #14: subscribers over two nodes sharing one Redis, publishes into one ("pushwire": two
  // `--redis` nodes; "pushwire-memory": one node without Redis; "nchan-redis": two nginx on it).
  'xnode-fanout-ws': { label: 'two nodes, fan-out ws, 64 B back to back', metric: 'deliveries_per_s', higher: true, unit: 'deliveries/s' },
  'xnode-fanout-sse': { label: 'two nodes, fan-out SSE, 64 B back to back', metric: 'deliveries_per_s', higher: true, unit: 'deliveries/s' },
  'xnode-latency-ws': { label: 'two nodes, fan-out ws at 5 msg/s, p99', metric: 'latency_p99_us', higher: false, unit: 'us' },
  'xnode-latency-sse': { label: 'two nodes, fan-out SSE at 5 msg/s, p99', metric: 'latency_p99_us', higher: false, unit: 'us' },
  // Issue #13 (rooms): one SSE connection per subscriber, one channel or several.
  'rooms-fanout-one': { label: 'rooms: fan-out SSE, one channel (reference)', metric: 'deliveries_per_s', higher: true, unit: 'deliveries/s' },
  'rooms-fanout-random': { label: 'rooms: fan-out SSE, ROOMS_K of ROOMS_CHANNELS channels each, random channels', metric: 'deliveries_per_s', higher: true, unit: 'deliveries/s' },
  'rooms-fanout-turn': { label: 'rooms: fan-out SSE, the same ROOMS_K channels each, in turn', metric: 'deliveries_per_s', higher: true, unit: 'deliveries/s' },
  'rooms-idle-sse-one': { label: 'rooms: idle SSE, /channels/NAME', metric: 'bytes_per_connection', higher: false, unit: 'B' },
  'rooms-idle-sse-multi': { label: 'rooms: idle SSE, /channels?channel=NAME (multi form, 1 channel)', metric: 'bytes_per_connection', higher: false, unit: 'B' },
  'rooms-idle-sse-many': { label: 'rooms: idle SSE, ROOMS_K channels', metric: 'bytes_per_connection', higher: false, unit: 'B' },
  'rooms-idle-ws-one': { label: 'rooms: idle ws (pushwire.v1), /channels/NAME', metric: 'bytes_per_connection', higher: false, unit: 'B' },
  'rooms-idle-ws-multi': { label: 'rooms: idle ws (pushwire.v1), /channels?channel=NAME (1 channel)', metric: 'bytes_per_connection', higher: false, unit: 'B' },
  'rooms-idle-ws-many': { label: 'rooms: idle ws (pushwire.v1), ROOMS_K channels', metric: 'bytes_per_connection', higher: false, unit: 'B' },
};

const [resultsPath, conditionsPath] = process.argv.slice(2);
const runs = fs.readFileSync(resultsPath, 'utf8').split('\n').filter(Boolean).map((line) => JSON.parse(line));
// A server's runs of a case, one per round of compare.sh. `find` gives the median one by the
// case's figure (the lower middle for an even count), so every figure shown for a server comes
// from one run; a failed round is shown instead, and fails the case.
const runsOf = (c, server) => runs.filter((r) => r.case === c && r.server === server);
function find(c, server) {
  const all = runsOf(c, server);
  const failed = all.find((r) => r.error || !r.ok);
  if (all.length === 0 || failed) return failed;
  const metric = CASES[c].metric;
  const sorted = [...all].sort((a, b) => a[metric] - b[metric]);
  return sorted[Math.floor((sorted.length - 1) / 2)];
}
// "median of N, range LO-HI" when a server ran a case more than once.
function spread(c, server) {
  const values = runsOf(c, server).map((r) => r[CASES[c].metric]).filter((v) => v > 0);
  if (values.length < 2) return '';
  return `; median of ${values.length}, range ${number(Math.min(...values))}-${number(Math.max(...values))}`;
}

const number = (x) => Math.round(x).toLocaleString('en-US');
// Server CPU-seconds per million messages echoed or deliveries made (= microseconds each):
// what the server spent, whatever the load generator could drive.
function cpuPerUnit(run) {
  if (!run) return undefined;
  const v = run.server_cpu_s_per_million_messages ?? run.server_cpu_s_per_million_deliveries;
  return v > 0 ? v : undefined;
}
const cpuText = (run) => {
  const v = cpuPerUnit(run);
  if (v === undefined) return run && run.mode !== 'idle' && !run.error ? 'n/a' : '';
  return `${v.toFixed(2)}${run.client_cpu_s !== undefined ? ` (client ${run.client_cpu_s.toFixed(1)} CPU-s in ${run.window_s.toFixed(1)} s)` : ''}`;
};
const us = (x) => (x === null || x === undefined ? 'n/a' : `${number(x)}`);
// pushwire's own delivery latency over the window, from its /metrics histograms.
function serverSide(run) {
  if (!run || run.server_delivery_writes === undefined) return '';
  return `each write ${us(run.server_delivery_write_p50_us)} / ${us(run.server_delivery_write_p99_us)} us; ` +
    `last write ${us(run.server_fanout_last_write_p50_us)} / ${us(run.server_fanout_last_write_p99_us)} us`;
}
function figure(run, spec) {
  if (!run) return 'not run';
  if (run.error) return `could not run: ${run.error}`;
  const value = run[spec.metric];
  if (value === undefined) return 'no figure';
  let text = `${number(value)} ${spec.unit}`;
  text += spread(run.case, run.server);
  if (run.mode === 'echo') text += `  (p50 ${number(run.latency_p50_us)}, p99 ${number(run.latency_p99_us)} us)`;
  if (run.mode === 'fanout') {
    text += `  (p50 ${number(run.latency_p50_us)}, p99 ${number(run.latency_p99_us)} us, missing ${run.missing})`;
  }
  if (run.server_bytes_out > 0 && run.deliveries > 0) text += `; ${number(run.server_bytes_out / run.deliveries)} B written per delivery`;
  // Across nodes: redis-server's own CPU over the whole run (counted in the server CPU too).
  if (run.redis_cpu_s !== undefined) text += `; redis-server ${run.redis_cpu_s.toFixed(2)} CPU-s`;
  if (!run.ok) text += '  FAILED';
  return text;
}
// How many times better pushwire is than `peer` on this case; undefined if either did not run.
function ratio(c, peer) {
  const spec = CASES[c];
  const mine = find(c, 'pushwire');
  const theirs = find(c, peer);
  const a = mine && mine[spec.metric];
  const b = theirs && theirs[spec.metric];
  if (!(a > 0 && b > 0)) return undefined;
  return spec.higher ? a / b : b / a;
}
const ratioText = (c, peer) => {
  const r = ratio(c, peer);
  const [num, den] = CASES[c].higher ? ['pushwire', peer] : [peer, 'pushwire'];
  return r === undefined ? `${num} / ${den} = n/a` : `${num} / ${den} = ${r.toFixed(2)}x`;
};
// pushwire's server CPU per message as a multiple of the peer's (lower is better).
function cpuRatio(c, peer) {
  const [mine, theirs] = [cpuPerUnit(find(c, 'pushwire')), cpuPerUnit(find(c, peer))];
  return mine && theirs ? mine / theirs : undefined;
}

const lines = [];
if (conditionsPath) lines.push(...fs.readFileSync(conditionsPath, 'utf8').trim().split('\n'), '');
lines.push(
  '| case | server | figure (client-side latency) | server CPU-s per 1M msgs/deliveries | server-side p50 / p99 | pushwire is | pushwire CPU / peer CPU |',
  '|---|---|---|---|---|---|---|',
);
for (const [c, spec] of Object.entries(CASES)) {
  const servers = [...new Set(runs.filter((r) => r.case === c).map((r) => r.server))];
  for (const server of servers) {
    const run = find(c, server);
    const vs = server === 'pushwire' ? '' : ratioText(c, server);
    const r = cpuRatio(c, server);
    const byCpu = server === 'pushwire' ? '' : r === undefined ? 'n/a' : `${r.toFixed(2)}x`;
    lines.push(`| ${spec.label} | ${server} | ${figure(run, spec)} | ${cpuText(run)} | ${serverSide(run)} | ${vs} | ${byCpu} |`);
  }
}
lines.push('', '| target | measured | met? |', '|---|---|---|');
for (const t of TARGETS) {
  const spec = CASES[t.case];
  let verdict = 'not measured';
  if (t.cpuMax !== undefined) {
    const r = cpuRatio(t.case, t.peer);
    const runsOk = ['pushwire', t.peer].every((s) => find(t.case, s) && find(t.case, s).ok);
    if (r !== undefined) verdict = !runsOk ? 'no (a run failed)' : r <= t.cpuMax ? 'met' : 'NOT met';
    const measured = r === undefined ? 'n/a' : `${r.toFixed(2)}x`;
    lines.push(`| ${spec.label}: server CPU per message <= ${t.cpuMax.toFixed(2)}x ${t.peer}'s | ${measured} | ${verdict} |`);
    continue;
  }
  if (t.maxAbs !== undefined) {
    const mine = find(t.case, 'pushwire');
    const v = mine && mine[spec.metric];
    if (v > 0) verdict = !mine.ok ? 'no (the run failed)' : v <= t.maxAbs ? 'met' : 'NOT met';
    lines.push(`| ${spec.label}: target <= ${t.maxAbs} ${spec.unit} | ${v > 0 ? `${v} ${spec.unit}` : 'n/a'} | ${verdict} |`);
    continue;
  }
  const r = ratio(t.case, t.peer);
  const runsOk = ['pushwire', t.peer].every((s) => find(t.case, s) && find(t.case, s).ok);
  if (r !== undefined) verdict = !runsOk ? 'no (a run failed)' : r >= t.min ? 'met' : 'NOT met';
  lines.push(`| ${spec.label}: target >= ${t.min.toFixed(2)}x ${t.peer} | ${ratioText(t.case, t.peer)} | ${verdict} |`);
}
// Issue #15: deflated fan-out costs at most 1.2x the server CPU of plain fan-out (compressed once).
{
  const [plain, deflated] = [cpuPerUnit(find('fanout-ws-json', 'pushwire')), cpuPerUnit(find('fanout-ws-json-deflate', 'pushwire'))];
  const r = plain && deflated ? deflated / plain : undefined;
  lines.push(`| fan-out 1 KiB JSON: server CPU per delivery with deflate <= 1.20x without | ${r === undefined ? 'n/a' : `${r.toFixed(2)}x`} | ${r === undefined ? 'not measured' : r <= 1.2 ? 'met' : 'NOT met'} |`);
}
// Issue #13: rooms against one channel in the same run, and bytes per idle subscription beyond
// a connection's first: (K channels - the multi form's one) / (K - 1), target <= 64 B (K is
// compare.sh's ROOMS_K, passed in the environment).
{
  const one = find('rooms-fanout-one', 'pushwire');
  for (const c of ['rooms-fanout-random', 'rooms-fanout-turn']) {
    const run = find(c, 'pushwire');
    if (!one || !run || one.error || run.error) continue;
    const cpu = cpuPerUnit(run) && cpuPerUnit(one) ? `${(cpuPerUnit(run) / cpuPerUnit(one)).toFixed(2)}x` : 'n/a';
    lines.push(`| ${CASES[c].label}: against one channel | ${(run.deliveries_per_s / one.deliveries_per_s).toFixed(2)}x deliveries/s, ${(run.latency_p99_us / one.latency_p99_us).toFixed(2)}x p99, ${cpu} server CPU per delivery | (no target) |`);
  }
  const k = Number(process.env.ROOMS_K || 10);
  for (const t of ['sse', 'ws']) {
    const [multi, many] = [find(`rooms-idle-${t}-multi`, 'pushwire'), find(`rooms-idle-${t}-many`, 'pushwire')];
    const ok = multi && many && multi.ok && many.ok;
    const beyond = ok ? (many.bytes_per_connection - multi.bytes_per_connection) / (k - 1) : undefined;
    const verdict = beyond === undefined ? 'not measured' : beyond <= 64 ? 'met' : 'NOT met';
    lines.push(`| rooms: idle ${t}, bytes per subscription beyond the first <= 64 B | ${beyond === undefined ? 'n/a' : `${beyond.toFixed(0)} B`} | ${verdict} |`);
  }
}
console.log(lines.join('\n'));
