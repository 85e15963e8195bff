// Time to the first content event of a stream through two gateways, the
// same pipeline without and with the mask stage, requests alternating
// between them so the machine's load falls on both alike. The body is a
// chat request (argv BODY, JSON) made a stream of 20 events 2 ms apart.
// Prints the median and p90 (ms) of each.
//   node mask-ttft.mjs PORT_WITHOUT PORT_WITH N BODY
import http from 'node:http';

const [pa, pb, n] = process.argv.slice(2, 5).map(Number);
const req = JSON.parse(process.argv[5]);
req.stream = true;
const last = req.messages[req.messages.length - 1];
last.content += ' [[mock:chunks=20 chunk_delay=2]]';
const body = JSON.stringify(req);
const agents = [new http.Agent({ keepAlive: true, maxSockets: 1 }), new http.Agent({ keepAlive: true, maxSockets: 1 })];

function ttft(port, agent) {
  return new Promise((resolve, reject) => {
    const t0 = process.hrtime.bigint();
    let first = -1, text = '';
    const r = http.request({ port, path: '/v1/chat/completions', method: 'POST', agent,
      headers: { 'content-type': 'application/json' } }, (res) => {
      res.on('data', (d) => {
        text += d;
        if (first < 0 && /"content":"[^"]/.test(text)) first = Number(process.hrtime.bigint() - t0) / 1e6;
      });
      res.on('end', () => (res.statusCode === 200 && first >= 0 && text.includes('[DONE]')
        ? resolve(first) : reject(new Error(`status ${res.statusCode}: ${text.slice(0, 200)}`))));
    });
    r.on('error', reject);
    r.end(body);
  });
}

const times = [[], []];
for (let i = 0; i < n; i++) {
  for (const k of i % 2 ? [1, 0] : [0, 1]) times[k].push(await ttft(k ? pb : pa, agents[k]));
}
const q = (a, p) => a.slice().sort((x, y) => x - y)[Math.min(a.length - 1, Math.floor(p * a.length))];
const f = (a) => `median ${q(a, 0.5).toFixed(3)} ms, p90 ${q(a, 0.9).toFixed(3)} ms`;
console.log(`  without mask: ${f(times[0])}`);
console.log(`  with mask:    ${f(times[1])}`);
process.exit(0);
