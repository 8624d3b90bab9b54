// The table of benches/compare.sh: `node benches/compare-table.js RESULTS.jsonl [CONDITIONS.txt]`.
//
// Reads the JSON lines of one comparison run (each a `pushwire bench --json` report with "case"
// and "server" added), prints every figure with pushwire's ratio against each peer, then each
// target: the ratio against the peer the target names, and whether it was met. A ratio is
// always "how many times better pushwire is": peer / pushwire for latency and memory,
// pushwire / peer for rates. A run that failed (missing messages, a dropped connection) or did
// not run never meets a target.
'use strict';
const fs = require('fs');

// The performance issue's targets: a ratio against a named peer (`min`, in "times better" as
// below: p99 "at most half of Nchan's" is Nchan / pushwire >= 2), or an absolute bound on
// pushwire's own figure (`maxAbs`, for idle memory).
const TARGETS = [
  { case: 'echo-32', peer: 'tokio-tungstenite', min: 1.4 },
  { case: 'echo-32', peer: 'mio-raw', min: 0.95 },
  { case: 'echo-16384', peer: 'mio-raw', min: 0.95 },
  { case: 'fanout-ws', peer: 'nchan', min: 3.0 },
  { case: 'fanout-sse', peer: 'nchan', min: 3.0 },
  { case: 'latency-ws', peer: 'nchan', min: 2.0 },
  { case: 'latency-sse', peer: 'nchan', min: 2.0 },
  { case: 'idle-ws', maxAbs: 256 },
  { case: 'idle-sse', maxAbs: 256 },
];

// What each case measures: the figure, whether higher is better, how it is shown.
const CASES = {
  'echo-32': { label: 'echo 32 B, C=100 W=8', metric: 'messages_per_s', higher: true, unit: 'msg/s' },
  'echo-16384': { label: 'echo 16 KiB, C=100 W=8', metric: 'messages_per_s', higher: true, unit: 'msg/s' },
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
// Server CPU time per message echoed or delivered, in microseconds (what the server spent,
// whatever the load generator could drive).
function cpuPerUnit(run) {
  const units = run && (run.mode === 'echo' ? run.messages : run.mode === 'fanout' ? run.deliveries : 0);
  return units > 0 && run.server_cpu_s > 0 ? (run.server_cpu_s * 1e6) / units : undefined;
}
function figure(run, spec) {
  if (!run) return 'not run';
  if (run.error) return `could not run: ${run.error}`;
  const value = run[spec.metric];
  if (value === undefined) return 'no figure';
  let text = `${number(value)} ${spec.unit}`;
  text += spread(run.case, run.server);
  if (run.mode === 'echo') text += `  (p99 ${number(run.latency_p99_us)} us)`;
  if (run.mode === 'fanout') text += `  (p99 ${number(run.latency_p99_us)} us, missing ${run.missing})`;
  if (run.server_bytes_out > 0 && run.deliveries > 0) text += `; ${number(run.server_bytes_out / run.deliveries)} B written per delivery`;
  const cpu = cpuPerUnit(run);
  if (cpu !== undefined) text += `; server CPU ${cpu.toFixed(2)} us/${run.mode === 'echo' ? 'msg' : 'delivery'}`;
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

const lines = [];
if (conditionsPath) lines.push(...fs.readFileSync(conditionsPath, 'utf8').trim().split('\n'), '');
lines.push('| case | server | figure | pushwire is | by server CPU per message |', '|---|---|---|---|---|');
for (const [c, spec] of Object.entries(CASES)) {
  const servers = [...new Set(runs.filter((r) => r.case === c).map((r) => r.server))];
  for (const server of servers) {
    const vs = server === 'pushwire' ? '' : ratioText(c, server);
    const [mine, theirs] = [cpuPerUnit(find(c, 'pushwire')), cpuPerUnit(find(c, server))];
    const byCpu = server !== 'pushwire' && mine && theirs ? `${(theirs / mine).toFixed(2)}x less CPU` : '';
    lines.push(`| ${spec.label} | ${server} | ${figure(find(c, server), spec)} | ${vs} | ${byCpu} |`);
  }
}
lines.push('', '| target | measured | met? |', '|---|---|---|');
for (const t of TARGETS) {
  const spec = CASES[t.case];
  let verdict = 'not measured';
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
console.log(lines.join('\n'));
