// Holds N concurrent paced streams through the gateway and reports the
// gateway's peak RSS (KiB). Usage: node streams.mjs PORT PID N
import http from 'node:http';
import { readFileSync } from 'node:fs';
const [port, pid, n] = process.argv.slice(2).map(Number);
const agent = new http.Agent({ keepAlive: true, maxSockets: n });
const rss = () => Number(readFileSync(`/proc/${pid}/status`, 'utf8').match(/VmRSS:\s+(\d+)/)[1]);
let peak = 0, done = 0, ok = 0;
const timer = setInterval(() => { peak = Math.max(peak, rss()); }, 100);
const body = JSON.stringify({ model: 'gpt-4o', stream: true,
  messages: [{ role: 'user', content: 'paced [[mock:chunks=30 chunk_delay=100]]' }] });
await new Promise((resolve) => {
  for (let i = 0; i < n; i++) {
    const req = http.request({ port, path: '/v1/chat/completions', method: 'POST', agent,
      headers: { 'content-type': 'application/json' } }, (res) => {
      let text = '';
      res.on('data', (d) => { text += d; });
      res.on('end', () => { if (text.includes('[DONE]')) ok++; if (++done === n) resolve(); });
    });
    req.on('error', () => { if (++done === n) resolve(); });
    req.end(body);
  }
});
clearInterval(timer);
console.log(JSON.stringify({ peak_rss_kib: peak, completed: ok, of: n }));
process.exit(0);
