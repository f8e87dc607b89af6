// Scenario 3, many documents: DOCS documents, each followed by REPLICAS
// clients and edited RATE times per second (the editing client rotates).
// Clients are CONNS connections in REPLICAS groups; within a group each
// connection carries DOCS / (CONNS / REPLICAS) documents, so every document
// is on one connection of each group. Reports edits that reached every other
// replica per second over the window, and their latency. With PROCS driver
// processes, this one (PROC) takes documents d with d % PROCS == PROC and
// CONNS / PROCS of the connections.
//
//   node manydocs.mjs --target bridge|repo --url WS_URL --docs 1000 --replicas 3
//                     --conns 30 --seconds 15 --rate 1 --settle 5 [--procs P --proc K]
import { cpuPercent, deadline, now, options, out, pool, ready, sleep, waitAllOnServer, exit } from "./common.mjs";
import { connect } from "./clients.mjs";

const opts = { docs: "1000", replicas: "3", conns: "30", seconds: "15", rate: "1", settle: "5", procs: "1", proc: "0", ...options() };
const P = Number(opts.procs);
const K = Number(opts.proc);
const mine = [...Array(Number(opts.docs)).keys()].filter((d) => d % P === K); // global document numbers
const DOCS = mine.length; // below, d is the index into `mine`
const R = Number(opts.replicas);
const perGroup = Math.max(1, Math.round(Number(opts.conns) / P / R));
const seconds = Number(opts.seconds);
deadline(seconds + Number(opts.settle) + 240);

const clients = await pool([...Array(R * perGroup).keys()], 16, (i) => connect(opts.target, opts.url, `many-${i}`));
const conn = (replica, doc) => clients[replica * perGroup + (doc % perGroup)];

// Document references: bridge ids, or automerge URLs created by replica 0's clients.
let refs = mine.map((g) => `many-${g}`);
if (opts.target === "repo") {
  refs = refs.map((_, d) => conn(0, d).create({}).url);
  await waitAllOnServer(opts.url, refs);
}

// Replica r writes only key `s${r}` (how many edits it made to the document),
// so every key has one writer and only grows: an observer that sees
// s{r} = k has edits 1..k of replica r, whatever else was concurrent.
const sentAt = Array.from({ length: DOCS }, () => Array.from({ length: R }, () => [])); // [doc][author][k] -> ms
const reached = Array.from({ length: DOCS }, () => Array.from({ length: R }, () => []));
const seen = Array.from({ length: DOCS }, () => Array.from({ length: R }, () => new Array(R).fill(0))); // [doc][observer][author]
const everyPeer = [];
let deliveredInWindow = 0;
let windowOpen = false;

function observe(d, observer, doc) {
  const t = now();
  for (let author = 0; author < R; author++) {
    if (author === observer) continue;
    const made = doc[`s${author}`] ?? 0;
    for (let k = seen[d][observer][author] + 1; k <= made; k++) {
      if (sentAt[d][author][k] === undefined) continue;
      if (++reached[d][author][k] === R - 1) {
        everyPeer.push(t - sentAt[d][author][k]);
        if (windowOpen) deliveredInWindow++;
      }
    }
    if (made > seen[d][observer][author]) seen[d][observer][author] = made;
  }
}

// sessions[d][r]: replica r's session on document d.
const sessions = Array.from({ length: DOCS }, () => new Array(R));
const jobs = [];
for (let d = 0; d < DOCS; d++) for (let r = 0; r < R; r++) jobs.push([d, r]);
await pool(jobs, 64, async ([d, r]) => {
  sessions[d][r] = await conn(r, d).join(refs[d], (doc) => observe(d, r, doc));
});
await ready();
const cpu0 = process.cpuUsage();
const t0 = now();
windowOpen = true;
const period = 1000 / Number(opts.rate);
const due = Array.from({ length: DOCS }, (_, d) => t0 + (period * d) / DOCS);
const counts = new Array(DOCS).fill(0);
let edits = 0;
while (now() - t0 < seconds * 1000) {
  const t = now();
  for (let d = 0; d < DOCS; d++) {
    if (due[d] > t) continue;
    const by = counts[d]++ % R; // the editing replica rotates
    const k = sentAt[d][by].length || 1;
    sentAt[d][by][k] = now();
    reached[d][by][k] = 0;
    sessions[d][by].change((doc) => {
      doc[`s${by}`] = k;
    });
    due[d] += period;
    edits++;
  }
  await sleep(5);
}
const window = (now() - t0) / 1000;
windowOpen = false;
const driverCpu = cpuPercent(cpu0, t0);
out({ event: "stop" });

const settleUntil = now() + Number(opts.settle) * 1000;
while (everyPeer.length < edits && now() < settleUntil) await sleep(20);
out({
  event: "result",
  docs: DOCS,
  edits,
  delivered: everyPeer.length,
  delivered_in_window: deliveredInWindow,
  window_s: window,
  latencies: everyPeer,
  driver_cpu: driverCpu,
});
await Promise.all(clients.map((c) => Promise.resolve(c.close()).catch(() => {})));
exit(0);
