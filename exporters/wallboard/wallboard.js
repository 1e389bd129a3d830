// The salespulse wallboard: polls the query API at most once a second and redraws.
// No framework and no build step: this file is served as it is.
"use strict";

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const state = {
  team: params.get("team"),
  window: params.get("window") || "today",
  dlq: null,
  queues: null, // team -> its mapped contact-centre queues (/api/v1/teams)
};
window.salespulseLoadedAt = Date.now(); // the test checks the page is never reloaded

const MISSING = "–";
const NBSP = "\u00a0";
const shown = (v) => typeof v === "number" && Number.isFinite(v);

// Formats by the unit the API gives each KPI (the same rules as projections/display.py).
function duration(seconds) {
  if (!shown(seconds)) return MISSING;
  const sign = seconds < 0 ? "-" : "";
  const left = Math.abs(seconds);
  if (left < 0.95) {
    const tenths = Math.round(left * 10) / 10;
    return tenths === 0 ? "0s" : `${sign}${tenths.toFixed(1)}s`;
  }
  const s = Math.floor(left + 0.5);
  if (s < 60) return `${sign}${s}s`;
  if (s < 3600) return `${sign}${Math.floor(s / 60)}m ${s % 60}s`;
  if (s < 86400) return `${sign}${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
  return `${sign}${Math.floor(s / 86400).toLocaleString("en")}d ${Math.floor((s % 86400) / 3600)}h`;
}

function count(v) {
  if (!shown(v)) return MISSING;
  const digits = Number.isInteger(v) ? 0 : 2;
  return v.toLocaleString("en", { minimumFractionDigits: digits, maximumFractionDigits: digits });
}

function percent(v) {
  return shown(v) ? `${(v * 100).toLocaleString("en", { minimumFractionDigits: 1, maximumFractionDigits: 1 })}${NBSP}%` : MISSING;
}

// Money arrives in minor units: major units, whole ones from 1,000 up (a tile, not a ledger).
function amount(minor, currency) {
  const major = minor / 10 ** currency.exponent;
  const digits = Math.abs(major) >= 1000 ? 0 : currency.exponent;
  return major.toLocaleString("en", { minimumFractionDigits: digits, maximumFractionDigits: digits });
}

const FORMATS = { count, ratio: percent, seconds: duration };

// A value into an element: text, and for money a smaller currency code before the amount.
function render(element, value, unit, currency) {
  if (unit === "money" && currency && shown(value)) {
    const code = document.createElement("span");
    code.className = "currency";
    code.textContent = currency.code;
    element.replaceChildren(code, NBSP + amount(value, currency));
  } else {
    element.textContent = (FORMATS[unit] || count)(value);
  }
}

// A value never wraps: it shrinks to the width of its tile (down to 40 %), then ellipsizes.
function fit(element) {
  element.style.fontSize = "";
  const full = parseFloat(getComputedStyle(element).fontSize);
  let size = full;
  while (element.scrollWidth > element.clientWidth && size > full * 0.4) {
    size = Math.max(full * 0.4, size * 0.9);
    element.style.fontSize = `${size}px`;
  }
}

function fitAll() {
  for (const element of document.querySelectorAll(".tile .value")) fit(element);
}

async function getJson(path) {
  // From the origin, not the page's address: a wallboard opened as http://user:token@host/
  // keeps those credentials in its base URL, and fetch() refuses URLs that hold credentials.
  // Same origin, so the browser still sends the basic auth it used for the page.
  const response = await fetch(new URL(path, location.origin), { cache: "no-store" });
  const body = await response.json();
  if (!response.ok) {
    const error = new Error(body.error ? body.error.message : `HTTP ${response.status}`);
    error.status = response.status;
    throw error;
  }
  return body;
}

function figureOf(kpis, kpi, label) {
  const result = kpis[kpi];
  if (!result) return null;
  return label ? result[label] || null : result;
}

// A team none of whose calls were offered and to which SALESPULSE_QUEUE_TEAMS maps no queue:
// its contact-centre figures are not zero, they are unknown.
function queueUnmapped(kpis) {
  if (!state.queues || !(state.team in state.queues)) return false;
  const offered = kpis.calls_offered;
  return state.queues[state.team].length === 0 && !(offered && offered.value);
}

function drawTiles(answer) {
  const { kpis, units, currency } = answer;
  const unmapped = queueUnmapped(kpis);
  for (const tile of document.querySelectorAll(".tile")) {
    const figure = figureOf(kpis, tile.dataset.kpi, tile.dataset.label);
    const value = figure ? figure.value : null;
    tile.dataset.value = value === null ? "" : String(value);
    const element = tile.querySelector(".value");
    const noQueue = unmapped && tile.hasAttribute("data-contact-centre");
    element.classList.toggle("unmapped", noQueue);
    if (noQueue) element.textContent = "no queue mapped";
    else render(element, value, (units || {})[tile.dataset.kpi], currency);
    tile.classList.remove("met", "missed", "warning", "critical");
    const status = figure && figure.target ? figure.target.status : null;
    if (status) tile.classList.add(status);
  }
  fitAll();
  const oldest = kpis.oldest_untouched_lead_age_seconds;
  $("oldest").textContent = oldest && oldest.value !== null ? `oldest ${duration(oldest.value)}` : "none waiting";
  const quota = kpis.quota_attainment_ratio;
  $("quota").textContent = quota && quota.value !== null ? `${(quota.value * 100).toFixed(0)}${NBSP}% of target` : "no target";
  // Won deals whose amount no source has told: in the win rate, not in this sum.
  const unpriced = kpis.deals_won_without_amount;
  if (unpriced && unpriced.value) $("quota").textContent += ` · ${count(unpriced.value)} won without amount`;
  const revenue = document.querySelector('.tile[data-kpi="revenue_won"]');
  if (quota && quota.target) {
    revenue.classList.remove("met", "missed", "warning", "critical");
    revenue.classList.add(quota.target.status);
  }
}

function drawLeaderboard(board) {
  const body = $("leaderboard").querySelector("tbody");
  body.replaceChildren(
    ...board.rows.map((row) => {
      const tr = document.createElement("tr");
      tr.dataset.rep = row.rep;
      const cells = [[row.rank, "rank"], [row.name || row.rep, "name"], [null, "num"]];
      for (const [text, cls] of cells) {
        const td = document.createElement("td");
        td.className = cls;
        if (cls === "num") render(td, row.value, board.unit, board.currency);
        else td.textContent = text;
        tr.append(td);
      }
      tr.querySelector(".name").title = row.name ? `${row.name} (${row.rep})` : row.rep;
      return tr;
    }),
  );
}

function drawFunnel(kpis) {
  const stages = Object.entries(kpis.lead_stage_share || {}).sort((a, b) => (b[1].value || 0) - (a[1].value || 0));
  $("funnel").replaceChildren(
    ...stages.map(([stage, figure]) => {
      const row = document.createElement("div");
      row.className = "stage";
      const name = document.createElement("span");
      name.textContent = stage;
      const bar = document.createElement("div");
      bar.className = "bar";
      bar.style.width = `${((figure.value || 0) * 100).toFixed(1)}%`;
      const share = document.createElement("span");
      share.className = "num";
      share.textContent = `${figure.numerator}`;
      row.append(name, bar, share);
      return row;
    }),
  );
}

function drawHealth(health) {
  $("lag").textContent = health.consumer_lag === null ? "unknown" : health.consumer_lag.toLocaleString("en");
  $("fresh").textContent = duration(health.newest_event_age_seconds);
  $("commit").textContent = duration(health.last_commit_age_seconds);
  const now = Date.now();
  if (state.dlq && health.dead_letters !== null && now > state.dlq.at) {
    const perMinute = ((health.dead_letters - state.dlq.count) / (now - state.dlq.at)) * 60000;
    $("dlq").textContent = Math.max(0, perMinute).toFixed(0);
  }
  if (health.dead_letters !== null) state.dlq = { count: health.dead_letters, at: now };
  $("late").textContent = (health.too_late || 0).toLocaleString("en");
  $("late").parentElement.classList.toggle("warn", Boolean(health.too_late));
}

function banner(text) {
  const element = $("banner");
  element.hidden = !text;
  element.textContent = text || "";
  document.body.dataset.banner = text ? "shown" : "";
}

function refillingText(health) {
  const waiting = health.consumer_lag === null || health.consumer_lag === undefined
    ? "" : ` (${health.consumer_lag.toLocaleString("en")} events to go)`;
  return `Refilling: the projections lost records and are applying them again from the log${waiting}. ` +
    "Numbers are partial, not live.";
}

async function refresh() {
  if (!state.team) return;
  const team = encodeURIComponent(state.team);
  const win = encodeURIComponent(state.window);
  // Health on its own: when the projections were lost, the team's KPIs may not answer at all.
  const reading = getJson("/api/v1/health").catch((error) => ({ status: "down", error }));
  try {
    const [kpis, board] = await Promise.all([
      getJson(`/api/v1/kpis?scope=team&id=${team}&window=${win}`),
      getJson(`/api/v1/leaderboard?kpi=activities&team=${team}&window=${win}&limit=10`),
    ]);
    const health = await reading;
    drawTiles(kpis);
    drawLeaderboard(board);
    drawFunnel(kpis.kpis);
    if (health.status !== "down") drawHealth(health);
    if (health.status === "refilling" || kpis.projections.status === "refilling") {
      banner(refillingText(health));
    } else if (health.status === "stale") {
      banner(`Engine stale: ${health.consumer_lag.toLocaleString("en")} events waiting, ` +
        `no projection commit for ${duration(health.last_commit_age_seconds)}. Numbers are not live.`);
    } else if (health.status === "rebuilding") {
      banner(`A rebuild is running (${health.rebuild.from} to ${health.rebuild.to}): ` +
        "these numbers are still live; they switch to the rebuilt projections when it ends.");
    } else if (health.status === "down") {
      banner("The exporter cannot read the projections (Redis unreachable). Numbers are not live.");
    } else {
      banner("");
    }
    const at = new Date();
    $("updated").textContent = `updated ${at.toLocaleTimeString("en-GB")}`;
    $("updated").dataset.at = String(at.getTime());
  } catch (error) {
    const health = await reading;
    if (health.status !== "down") drawHealth(health);
    if (health.status === "refilling") {
      banner(refillingText(health));
    } else {
      banner(error.status === 503
        ? "The exporter cannot read the projections (Redis unreachable). Numbers are not live."
        : `Cannot reach the exporter: ${error.message}. Numbers are not live.`);
    }
  }
}

async function loop() {
  const started = Date.now();
  await refresh();
  setTimeout(loop, Math.max(0, 1000 - (Date.now() - started)));
}

async function start() {
  $("window").value = state.window;
  try {
    const { teams } = await getJson("/api/v1/teams");
    state.queues = Object.fromEntries(teams.filter((t) => Array.isArray(t.queues)).map((t) => [t.id, t.queues]));
    $("team").replaceChildren(
      ...teams.map((t) => {
        const option = document.createElement("option");
        option.value = t.id;
        option.textContent = t.id;
        return option;
      }),
    );
    if (!state.team || !teams.some((t) => t.id === state.team)) state.team = teams.length ? teams[0].id : null;
    $("team").value = state.team || "";
  } catch (error) {
    banner(`Cannot load the teams: ${error.message}`);
  }
  for (const id of ["team", "window"]) {
    $(id).addEventListener("change", () => {
      state[id] = $(id).value;
      const query = new URLSearchParams({ team: state.team, window: state.window });
      history.replaceState(null, "", `?${query}`);
      refresh();
    });
  }
  window.addEventListener("resize", fitAll);
  loop();
}

start();
