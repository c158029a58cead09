"use strict";
const sat = (msat) => (msat / 1000).toLocaleString("en-US", { maximumFractionDigits: 3 });
const token = () => sessionStorage.getItem("satrouter.admin");

async function api(path) {
  const response = await fetch(path, { headers: { Authorization: "Bearer " + token() } });
  if (response.status === 401) { sessionStorage.removeItem("satrouter.admin"); throw new Error("wrong token"); }
  if (!response.ok) throw new Error(path + ": HTTP " + response.status);
  return response.json();
}

function cell(text, numeric) {
  const td = document.createElement("td");
  td.textContent = text;
  if (numeric) td.className = "num";
  return td;
}

function fillTable(name, rows, columns) {
  const body = document.querySelector(`[data-testid="${name}"] tbody`);
  if (!rows.length) {
    const td = cell("none yet");
    td.colSpan = columns.length;
    td.className = "muted";
    const tr = document.createElement("tr");
    tr.append(td);
    body.replaceChildren(tr);
    return;
  }
  body.replaceChildren(...rows.map((row) => {
    const tr = document.createElement("tr");
    columns.forEach(([get, numeric]) => tr.append(cell(get(row), numeric)));
    return tr;
  }));
}

function drawChart(rows) {
  const svg = document.getElementById("chart");
  const width = svg.clientWidth || 600, height = 180, pad = 24;
  const values = rows.map((r) => r.margin_msat / 1000);
  const top = Math.max(1, ...values.map(Math.abs));
  const step = (width - pad) / Math.max(1, rows.length);
  const ns = "http://www.w3.org/2000/svg";
  svg.replaceChildren();
  rows.forEach((row, i) => {
    const bar = document.createElementNS(ns, "rect");
    const h = Math.max(1, (Math.abs(values[i]) / top) * (height - 2 * pad));
    bar.setAttribute("x", pad + i * step + 2);
    bar.setAttribute("y", height - pad - h);
    bar.setAttribute("width", Math.min(40, Math.max(2, step - 4)));
    bar.setAttribute("height", h);
    bar.setAttribute("fill", values[i] >= 0 ? "#f7931a" : "#c0362c");
    const label = document.createElementNS(ns, "text");
    label.setAttribute("x", pad + i * step + 2);
    label.setAttribute("y", height - 8);
    label.textContent = row.group.slice(11, 13) + "h";
    svg.append(bar, label);
  });
}

function runwayText(hours) {
  if (hours === null) return "no spend";
  const h = Number(hours);
  if (h > 24 * 365) return "over a year";
  return h < 48 ? h.toFixed(1) + " h" : (h / 24).toFixed(1) + " days";
}

async function refresh() {
  const [total, hours, models, agents, status, topups] = await Promise.all([
    api("/admin/margins?group_by=total&since=" + new Date().toISOString().slice(0, 10)),
    api("/admin/margins?group_by=hour&since=24h"),
    api("/admin/margins?group_by=model&since=" + new Date().toISOString().slice(0, 10)),
    api("/admin/margins?group_by=agent&since=" + new Date().toISOString().slice(0, 10)),
    api("/admin/status"),
    api("/admin/topups"),
  ]);
  const today = total.rows[0] || { revenue_msat: 0, cost_nusd: 0, margin_msat: 0, margin_pct: null };
  const set = (id, text) => { document.querySelector(`[data-testid="${id}"]`).textContent = text; };
  set("revenue-sat", sat(today.revenue_msat));
  set("cost-usd", "$" + (today.cost_nusd / 1e9).toFixed(6));
  set("margin-sat", sat(today.margin_msat));
  set("margin-pct", today.margin_pct === null ? "" : today.margin_pct + " %");
  set("balance-usd", status.openrouter_balance_usd === null ? "unknown" : "$" + Number(status.openrouter_balance_usd).toFixed(2));
  set("runway-hours", runwayText(status.runway_hours));
  const ledger = document.querySelector('[data-testid="ledger"]');
  ledger.textContent = status.ledger.ok ? "balanced" : "FAILED";
  ledger.className = "value " + (status.ledger.ok ? "good" : "bad");
  const world = document.querySelector('[data-testid="world"]');
  const holdings = Object.entries(status.world.holdings);
  const off = holdings.filter(([, h]) => h.matches === false);
  world.textContent = off.length ? "MISMATCH" : (holdings.some(([, h]) => h.matches === null) ? "partly unknown" : "match");
  world.className = "value " + (off.length ? "bad" : "good");
  set("world-detail", holdings.map(([name, h]) => name + ": " + (h.difference === null ? "unknown" :
    (h.difference >= 0 ? "+" : "") + h.difference + " " + h.unit)).join(" · "));
  const columns = [[(r) => r.group], [(r) => r.tasks, true], [(r) => sat(r.revenue_msat), true], [(r) => sat(r.margin_msat), true]];
  fillTable("models", models.rows.slice(0, 10), columns);
  fillTable("agents", agents.rows.slice(0, 10), columns);
  fillTable("topups", topups.topups.slice(0, 10), [[(t) => new Date(t.created_at * 1000).toLocaleString()], [(t) => t.state], [(t) => t.usd, true], [(t) => t.sats, true]]);
  drawChart(hours.rows.slice().sort((a, b) => a.group.localeCompare(b.group)));
  const budgets = document.querySelector('[data-testid="budgets"]');
  budgets.textContent = status.budgets.length ? status.budgets.map((b) => b.period.split(":")[0] + ": " +
    (b.cap_usd !== null ? "$" + b.spent_usd + " of $" + b.cap_usd : b.spent_sat + " of " + b.cap_sat + " sat")).join(" · ")
    : "No budgets are configured.";
  // Models OpenRouter's catalog no longer has were dropped from the policy at load.
  const routing = document.querySelector('[data-testid="routing"]');
  const r = status.routing;
  const dropped = r ? Object.entries(r.dropped_models).map(([t, ms]) => t + ": " + ms.join(", ")) : [];
  routing.textContent = !r ? "starting" : (r.disabled_tiers.length || dropped.length || r.notes.length)
    ? "Degraded. Disabled tiers: " + (r.disabled_tiers.join(", ") || "none") + ". Dropped models: " +
      (dropped.join("; ") || "none") + (r.notes.length ? ". " + r.notes.join("; ") : "") + "."
    : "All " + r.tiers.length + " tiers have their models.";
  routing.className = r && (r.disabled_tiers.length || dropped.length) ? "bad" : "muted";
  document.getElementById("updated").textContent = "updated " + new Date().toLocaleTimeString();
  document.body.dataset.loaded = "true";
}

async function follow() {
  const response = await fetch("/admin/events", { headers: { Authorization: "Bearer " + token() } });
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  const feed = document.getElementById("feed");
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    const events = buffer.split("\n\n");
    buffer = events.pop();
    for (const event of events) {
      const data = event.split("\n").find((line) => line.startsWith("data: "));
      if (!data) continue;
      const item = JSON.parse(data.slice(6));
      const li = document.createElement("li");
      li.textContent = new Date(item.at * 1000).toLocaleTimeString() + "  " + item.task + "  " + item.status;
      feed.prepend(li);
      if (item.status === "reconciled") refresh().catch(() => {});
    }
  }
}

async function open() {
  document.getElementById("login").hidden = true;
  document.getElementById("dashboard").hidden = false;
  await refresh();
  follow().catch(() => {});
  setInterval(() => refresh().catch(() => {}), 15000);
}

document.getElementById("login").addEventListener("submit", async (event) => {
  event.preventDefault();
  sessionStorage.setItem("satrouter.admin", document.getElementById("token").value);
  try { await open(); } catch (error) {
    document.getElementById("login").hidden = false;
    document.getElementById("dashboard").hidden = true;
    document.getElementById("login-error").textContent = "That token was not accepted.";
  }
});
if (token()) open().catch(() => { document.getElementById("login").hidden = false; });
