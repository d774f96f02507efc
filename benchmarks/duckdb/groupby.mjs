// DuckDB's GROUP BY over tilestream's offline-log Parquet files: the
// speed-of-light reference for the healer (benchmarks/README.md). Run by
// BenchmarkPeers; by hand:
//
//   node groupby.mjs --glob '/tmp/x/txn/date=*/*.parquet' --key user_id \
//     --ts ts --value amount --threads 2 --runs 3
//
// For each grain (day, then minute) it materialises
//
//   SELECT key, date_trunc(grain, ts), count(*), sum(v), min(v), max(v)
//   FROM read_parquet(glob) GROUP BY ALL
//
// into a temporary table `runs` times and prints one JSON object: DuckDB's
// version, the threads, per grain the wall and CPU milliseconds of each run,
// the groups and the events counted; and the process's peak RSS (VmHWM).
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { DuckDBInstance } from '@duckdb/node-api';

const { values: a } = parseArgs({
  options: {
    glob: { type: 'string' },
    key: { type: 'string', default: 'user_id' },
    ts: { type: 'string', default: 'ts' },
    value: { type: 'string', default: 'amount' },
    threads: { type: 'string', default: '2' },
    runs: { type: 'string', default: '3' },
  },
});
if (!a.glob) {
  console.error('groupby.mjs: --glob is required');
  process.exit(2);
}
const ident = (s) => '"' + s.replaceAll('"', '""') + '"';
const literal = (s) => "'" + s.replaceAll("'", "''") + "'";

const db = await DuckDBInstance.create(':memory:', { threads: a.threads });
const con = await db.connect();
const version = (await con.runAndReadAll('SELECT version()')).getRows()[0][0];
const out = { duckdb: version, threads: Number(a.threads), grains: [] };

for (const grain of ['day', 'minute']) {
  const sql = `CREATE OR REPLACE TEMP TABLE agg AS
    SELECT ${ident(a.key)} AS k, date_trunc('${grain}', ${ident(a.ts)}) AS t,
           count(*) AS c, sum(${ident(a.value)}) AS s,
           min(${ident(a.value)}) AS lo, max(${ident(a.value)}) AS hi
    FROM read_parquet(${literal(a.glob)}, hive_partitioning = false)
    GROUP BY ALL`;
  const g = { grain, wall_ms: [], cpu_ms: [] };
  for (let i = 0; i < Number(a.runs); i++) {
    const cpu = process.cpuUsage();
    const t0 = process.hrtime.bigint();
    await con.run(sql);
    g.wall_ms.push(Number(process.hrtime.bigint() - t0) / 1e6);
    const c = process.cpuUsage(cpu);
    g.cpu_ms.push((c.user + c.system) / 1e3);
  }
  const [groups, events] = (await con.runAndReadAll('SELECT count(*), sum(c) FROM agg')).getRows()[0];
  g.groups = Number(groups);
  g.events = Number(events);
  out.grains.push(g);
}
// VmHWM, not resourceUsage().maxRSS: getrusage counts the peak of the
// parent's memory too when the parent started us from a vfork (Go does).
const hwm = readFileSync('/proc/self/status', 'utf8').match(/^VmHWM:\s+(\d+) kB/m);
out.max_rss_kb = hwm ? Number(hwm[1]) : process.resourceUsage().maxRSS;
console.log(JSON.stringify(out));
