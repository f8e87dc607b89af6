// Scenario 2, live typing: N clients on one document, each appending to its
// own text field at RATE characters per second. The clients can be spread over
// PROCS driver processes (this one hosts clients i with i % PROCS == PROC);
// each reports when its authors typed and when its observers saw each edit,
// on the machine's clock, and the harness joins them into edit-to-every-peer
// latencies.
//
//   node typing.mjs --target bridge|repo --url WS_URL --doc DOC_ID_OR_URL --clients N
//                   --seconds S --rate 6 --settle 5 [--procs P --proc K]
import { absNow, cpuPercent, deadline, now, options, out, pool, ready, sleep, withTimeout, exit } from "./common.mjs";
import { connect, typeChar } from "./clients.mjs";

const opts = { rate: "6", settle: "5", seconds: "10", procs: "1", proc: "0", ...options() };
const N = Number(opts.clients);
const P = Number(opts.procs);
const K = Number(opts.proc);
const seconds = Number(opts.seconds);
deadline(seconds + Number(opts.settle) + 180);

const mine = [...Array(N).keys()].filter((i) => i % P === K); // client indexes hosted here
const sent = {}; // author -> [absolute ms per seq]
const arrivals = {}; // "author:seq" -> [observers here that have it, latest arrival (absolute ms)]
const seen = {}; // observer -> [chars seen per author]

function observe(observer, doc) {
  const t = absNow();
  const mySeen = seen[observer];
  if (!mySeen) return; // still setting up
  for (let author = 0; author < N; author++) {
    if (author === observer) continue;
    const len = doc[`t${author}`]?.length ?? 0;
    for (let seq = mySeen[author]; seq < len; seq++) {
      const key = `${author}:${seq}`;
      const a = (arrivals[key] ??= [0, 0]);
      a[0] += 1;
      a[1] = Math.max(a[1], t);
    }
    if (len > mySeen[author]) mySeen[author] = len;
  }
}

const clients = await pool(mine, 16, (i) => connect(opts.target, opts.url, `typist-${i}`));
const sessions = await pool(clients, 16, (c, n) => c.join(opts.doc, (doc) => observe(mine[n], doc)));
sessions.forEach((s, n) => s.change((d) => (d[`t${mine[n]}`] = "")));
const allFields = (doc) => [...Array(N).keys()].every((j) => typeof doc[`t${j}`] === "string");
await withTimeout((async () => { while (!sessions.every((s) => allFields(s.doc()))) await sleep(20); })(), 90000, "setup");
mine.forEach((i, n) => (seen[i] = [...Array(N).keys()].map((j) => sessions[n].doc()[`t${j}`].length)));

const frames = () => {
  const total = {};
  for (const c of clients) for (const [t, v] of Object.entries(c.peer?.framesIn ?? {})) total[t] = (total[t] ?? 0) + v;
  return total;
};
await ready();
const framesBefore = frames();
const cpu0 = process.cpuUsage();
const t0 = now();
let typing = true;
const interval = 1000 / Number(opts.rate);
const timers = sessions.map((s, n) => {
  const i = mine[n];
  sent[i] = [];
  return setTimeout(function tick() {
    if (!typing) return;
    sent[i][s.doc()[`t${i}`].length] = absNow();
    s.change((d) => typeChar(d, `t${i}`));
    timers[n] = setTimeout(tick, interval);
  }, Math.random() * interval);
});
await sleep(seconds * 1000);
typing = false;
timers.forEach(clearTimeout);
const typedFor = (now() - t0) / 1000;
const driverCpu = cpuPercent(cpu0, t0);
out({ event: "stop" });
const framesAfter = frames();

// Settle: until nothing has arrived here for a while (typing has stopped
// everywhere, so quiet means delivered or stuck), within the settle bound.
const settleUntil = now() + Number(opts.settle) * 1000;
let lastCount = -1;
let quietSince = now();
while (now() < settleUntil && now() - quietSince < 750) {
  const count = Object.values(arrivals).reduce((n, [c]) => n + c, 0);
  if (count !== lastCount) [lastCount, quietSince] = [count, now()];
  await sleep(50);
}
const frameDelta = {};
for (const t of Object.keys(framesAfter)) frameDelta[t] = framesAfter[t] - (framesBefore[t] ?? 0);
const applied = clients.reduce((n, c) => n + (c.peer?.applied ?? 0), 0);
const applyMs = clients.reduce((n, c) => n + (c.peer?.applyMs ?? 0), 0);
out({ event: "result", proc: K, typed_s: typedFor, sent, arrivals, driver_cpu: driverCpu, frames: frameDelta, applied, apply_ms: applyMs });
await Promise.all(clients.map((c) => Promise.resolve(c.close()).catch(() => {})));
exit(0);
