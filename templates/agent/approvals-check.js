// Exits 0 when OpenClaw's stored exec approvals (its state database, read-only) say what
// argv[1] says: defaults and each agent's settings, allowlists compared by pattern (OpenClaw
// adds ids and usage fields of its own). Run as the agent: the database is the agent's.
const { DatabaseSync } = require("node:sqlite");
const canon = (v) =>
  Array.isArray(v) ? v.map(canon)
  : v && typeof v === "object" ? Object.fromEntries(Object.keys(v).sort().map((k) => [k, canon(v[k])]))
  : v;
const norm = (d) => {
  const agents = {};
  for (const [name, a] of Object.entries(d.agents || {})) {
    const { allowlist, ...rest } = a || {};
    agents[name] = { ...rest, allowlist: (allowlist || []).map((e) => e.pattern).sort() };
  }
  return JSON.stringify(canon({ defaults: d.defaults || {}, agents }));
};
try {
  const db = new DatabaseSync(process.argv[2], { readOnly: true });
  const rows = db.prepare("SELECT raw_json FROM exec_approvals_config").all();
  process.exit(rows.length === 1 && norm(JSON.parse(rows[0].raw_json)) === norm(JSON.parse(process.argv[1])) ? 0 : 1);
} catch {
  process.exit(1);
}
