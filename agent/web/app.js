// The web view of a vow agent (agent/web.h): reads the JSON under /api/ (docs/cli.md,
// "The web view") and draws it. Pages by the address's #fragment:
//   #/                      pipelines: each DAG, stages coloured by state, job counts
//   #/stage/P/S[?o=N&s=X]   a stage's jobs, failed first, a page at a time
//   #/job/ID                one job: results, attempts, the tail of its logs
//   #/lineage/REF           a result's lineage as a graph, every step, "Verify"
//   #/mesh                  agents, liveness, load, promises, rejected messages
// Live: the page asks again every second (one request at a time) and redraws.
"use strict";

const POLL_MS = 1000;
const PAGE = 100;
const STATES = ["failed", "running", "ready", "done", "superseded"];

// Marks this load of the page: a test can tell an update from a reload.
document.documentElement.dataset.loadId = String(Math.random()).slice(2);

// ---- DOM helpers (text is always set as text: names come from files) ----

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") el.className = v;
    else if (k === "onclick") el.addEventListener("click", v);
    else if (k.startsWith("data-")) el.setAttribute(k, String(v));
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    el.appendChild(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

const SVG = "http://www.w3.org/2000/svg";
function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null) continue;
    if (k === "onclick") el.addEventListener("click", v);
    else el.setAttribute(k, String(v));
  }
  append(el, children);
  return el;
}

function badge(state) {
  return h("span", {class: "badge st-" + state, "data-state": state}, state);
}

function short(hex) { return hex ? hex.slice(0, 12) : ""; }

function duration(ms) {
  if (ms === undefined || ms === null) return "";
  if (ms < 1000) return ms + " ms";
  if (ms < 60000) return (ms / 1000).toFixed(1) + " s";
  const m = Math.floor(ms / 60000);
  return m + " min " + Math.round((ms % 60000) / 1000) + " s";
}

function when(ms) {
  if (!ms) return "";
  const d = new Date(ms);
  const pad = (n, w = 2) => String(n).padStart(w, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
         `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.` +
         pad(d.getMilliseconds(), 3);
}

function hashFor(...parts) {
  return "#/" + parts.map(encodeURIComponent).join("/");
}

// ---- talking to the agent ----

class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

async function api(path, params) {
  const q = new URLSearchParams(params || {}).toString();
  const res = await fetch("api/" + path + (q ? "?" + q : ""), {
    headers: {"Accept": "application/json"}, credentials: "same-origin", cache: "no-store"});
  let body;
  try { body = await res.json(); } catch (e) { body = {error: res.status + " " + res.statusText}; }
  if (!res.ok || (body && body.error)) {
    throw new ApiError(res.status, (body && body.error) || res.statusText);
  }
  return body;
}

// ---- the loop: one page at a time, redrawn from fresh data every second ----

let current = null;  // {key, render, poll, timer}
let updates = 0;

function route() {
  const raw = location.hash.replace(/^#\/?/, "");
  const [path, query] = raw.split("?");
  const parts = path.split("/").filter(p => p !== "").map(decodeURIComponent);
  const params = new URLSearchParams(query || "");
  for (const a of document.querySelectorAll("header nav a")) a.classList.remove("here");
  if (parts[0] === "stage" && parts.length >= 3) {
    return {key: raw, load: () => stagePage(parts[1], parts.slice(2).join("/"), params), poll: true};
  }
  if (parts[0] === "job" && parts[1]) return {key: raw, load: () => jobPage(parts[1]), poll: true};
  if (parts[0] === "lineage" && parts[1]) {
    return {key: raw, load: () => lineagePage(parts.slice(1).join("/")), poll: false};
  }
  if (parts[0] === "mesh") {
    document.getElementById("nav-mesh").classList.add("here");
    return {key: raw, load: meshPage, poll: true};
  }
  document.getElementById("nav-pipelines").classList.add("here");
  return {key: raw, load: pipelinesPage, poll: true};
}

async function show() {
  const r = route();
  if (current && current.timer) clearTimeout(current.timer);
  current = r;
  await refresh(r, true);
}

async function refresh(r, first) {
  const live = document.getElementById("live");
  try {
    const view = await r.load();
    if (current !== r) return;  // the user went elsewhere meanwhile
    const main = document.getElementById("main");
    // Keep what the user typed or scrolled to: only the view is replaced.
    const scroll = window.scrollY;
    main.replaceChildren(view);
    if (!first) window.scrollTo(0, scroll);
    updates++;
    main.dataset.updates = String(updates);
    live.textContent = "live · " + new Date().toLocaleTimeString();
    live.classList.remove("stale");
  } catch (e) {
    if (current !== r) return;
    if (e instanceof ApiError && e.status !== 503) {
      document.getElementById("main").replaceChildren(
        h("p", {class: "error", id: "error"}, e.message));
      if (e.status === 401 || e.status === 403 || e.status === 404 || e.status === 400) {
        live.textContent = "";
        return;  // asking again would not change the answer
      }
    } else {
      live.textContent = "agent not answering: " + e.message;
      live.classList.add("stale");
    }
  }
  if (r.poll && current === r) r.timer = setTimeout(() => refresh(r, false), POLL_MS);
}

window.addEventListener("hashchange", show);
window.addEventListener("DOMContentLoaded", show);

// ---- layered graph layout (sources and upstream on the left) ----

// nodes: [{id, ...}], edges: [{from, to}]. Sets node.x, node.y; returns {width, height}.
function layout(nodes, edges, w, hgt, gapX, gapY) {
  const byId = new Map(nodes.map(n => [n.id, n]));
  const ins = new Map(nodes.map(n => [n.id, []]));
  for (const e of edges) if (ins.has(e.to) && byId.has(e.from)) ins.get(e.to).push(e.from);
  const layer = new Map();
  const depth = (id, seen) => {
    if (layer.has(id)) return layer.get(id);
    if (seen.has(id)) return 0;  // a cycle cannot happen in a DAG; stay safe anyway
    seen.add(id);
    let d = 0;
    for (const p of ins.get(id)) d = Math.max(d, depth(p, seen) + 1);
    layer.set(id, d);
    return d;
  };
  for (const n of nodes) depth(n.id, new Set());
  const layers = [];
  for (const n of nodes) (layers[layer.get(n.id)] ||= []).push(n);
  // Order each layer by the mean position of its inputs (fewer crossings).
  const pos = new Map();
  layers.forEach((ls, i) => {
    if (i === 0) ls.sort((a, b) => String(a.label || a.id).localeCompare(String(b.label || b.id)));
    if (i > 0) {
      const key = n => {
        const ps = ins.get(n.id).filter(p => pos.has(p));
        return ps.length ? ps.reduce((a, p) => a + pos.get(p), 0) / ps.length : 0;
      };
      ls.sort((a, b) => key(a) - key(b) || String(a.label || a.id).localeCompare(String(b.label || b.id)));
    }
    ls.forEach((n, j) => pos.set(n.id, j));
  });
  const tallest = Math.max(1, ...layers.map(l => (l || []).length));
  const height = tallest * (hgt + gapY) - gapY + 2 * gapY;
  layers.forEach((ls, i) => {
    const span = ls.length * (hgt + gapY) - gapY;
    const top = (height - span) / 2;
    ls.forEach((n, j) => { n.x = gapX / 2 + i * (w + gapX); n.y = top + j * (hgt + gapY); });
  });
  return {width: layers.length * (w + gapX), height};
}

function drawGraph(nodes, edges, w, hgt, drawNode, edgeClass) {
  const size = layout(nodes, edges, w, hgt, 56, 22);
  const svg = s("svg", {width: size.width, height: size.height,
                        viewBox: `0 0 ${size.width} ${size.height}`, role: "img"});
  svg.appendChild(s("defs", {}, s("marker", {id: "arrow", viewBox: "0 0 10 10", refX: 10,
      refY: 5, markerWidth: 8, markerHeight: 8, markerUnits: "userSpaceOnUse",
      orient: "auto-start-reverse"},
      s("path", {d: "M 0 0 L 10 5 L 0 10 z", class: "arrow"}))));
  const byId = new Map(nodes.map(n => [n.id, n]));
  for (const e of edges) {
    const a = byId.get(e.from), b = byId.get(e.to);
    if (!a || !b) continue;
    const x1 = a.x + w, y1 = a.y + hgt / 2, x2 = b.x, y2 = b.y + hgt / 2, mx = (x1 + x2) / 2;
    svg.appendChild(s("path", {d: `M ${x1} ${y1} C ${mx} ${y1}, ${mx} ${y2}, ${x2} ${y2}`,
                               class: "edge " + (edgeClass ? edgeClass(e) : ""),
                               "marker-end": "url(#arrow)"}));
  }
  for (const n of nodes) {
    const g = drawNode(n);
    g.setAttribute("transform", `translate(${n.x},${n.y})`);
    svg.appendChild(g);
  }
  return h("div", {class: "graph"}, svg);
}

// ---- #/ pipelines ----

async function pipelinesPage() {
  const data = await api("pipelines");
  document.getElementById("agent").textContent = "agent " + (data.agent.name || short(data.agent.id));
  const view = h("div", {id: "pipelines"});
  view.appendChild(h("h1", {}, "Pipelines"));
  if (!data.pipelines.length) {
    view.appendChild(h("p", {class: "muted"}, "No pipeline is known to this agent yet."));
  }
  view.appendChild(h("div", {class: "legend"}, "States: ",
      ["pending", "running", "done", "failed", "blocked", "superseded", "conflict"].map(badge)));
  for (const p of data.pipelines) view.appendChild(pipelineView(p));
  return view;
}

function pipelineView(p) {
  const box = h("section", {class: "pipeline", "data-pipeline": p.name});
  box.appendChild(h("h2", {}, p.name, " ", h("span", {class: "muted mono"}, short(p.digest))));
  const nodes = [], edges = [];
  for (const src of p.sources) nodes.push({id: "source:" + src.name, source: src});
  for (const st of p.stages) {
    nodes.push({id: "stage:" + st.name, stage: st});
    for (const i of st.inputs) {
      edges.push({from: (i.source ? "source:" : "stage:") + i.from, to: "stage:" + st.name,
                  foreach: i.foreach});
    }
  }
  const W = 212, H = 62;
  box.appendChild(drawGraph(nodes, edges, W, H, n => {
    if (n.source) {
      const who = n.source.providers.length ? "from " + n.source.providers.join(", ")
                                            : "no agent provides it";
      return s("g", {class: "node source", "data-source": n.source.name},
               s("rect", {width: W, height: H, class: "frame"}),
               s("text", {x: 10, y: 24}, n.source.name),
               s("text", {x: 10, y: 44, class: "sub"}, "source · " + who));
    }
    const st = n.stage, c = st.jobs, total = Math.max(st.total, 1);
    const g = s("g", {class: "node link st-" + st.state, "data-stage": st.name,
                      "data-state": st.state,
                      onclick: () => { location.hash = hashFor("stage", p.name, st.name); }},
                s("title", {}, `${p.name}/${st.name}: ${st.state}` +
                               (st.reason ? ` (${st.reason})` : "")),
                s("rect", {width: W, height: H, class: "frame"}),
                s("text", {x: 10, y: 20}, st.name),
                s("text", {x: W - 10, y: 20, class: "sub", "text-anchor": "end"}, st.state),
                s("text", {x: 10, y: 38, class: "sub"},
                  `${c.done}/${st.total} done` +
                  (c.running ? ` · ${c.running} running` : "") +
                  (c.failed ? ` · ${c.failed} failed` : "")));
    // A bar of the jobs: done, running, failed.
    const bw = W - 20;
    g.appendChild(s("rect", {x: 10, y: 46, width: bw, height: 6, class: "bar-bg"}));
    let x = 10;
    for (const k of ["done", "running", "failed"]) {
      const part = bw * (c[k] || 0) / total;
      if (part > 0) g.appendChild(s("rect", {x, y: 46, width: part, height: 6, class: "bar-" + k}));
      x += part;
    }
    return g;
  }, e => e.foreach ? "foreach" : ""));
  const rows = p.stages.map(st => h("tr", {"data-stage": st.name, "data-state": st.state},
      h("td", {}, h("a", {href: hashFor("stage", p.name, st.name)}, st.name)),
      h("td", {}, badge(st.state)),
      STATES.map(k => h("td", {class: "num", "data-count": k}, st.jobs[k] || 0)),
      h("td", {}, st.promised_by.map(a => a.name + "×" + a.capacity).join(", ") || "nobody"),
      h("td", {class: "muted"}, st.reason || "")));
  box.appendChild(h("table", {class: "stages"},
      h("thead", {}, h("tr", {}, h("th", {}, "stage"), h("th", {}, "state"),
        STATES.map(k => h("th", {class: "num"}, k)), h("th", {}, "promised by"),
        h("th", {}, "why"))),
      h("tbody", {}, rows)));
  return box;
}

// ---- #/stage/P/S ----

async function stagePage(pipeline, stage, params) {
  const offset = Math.max(0, parseInt(params.get("o") || "0", 10) || 0);
  const state = params.get("s") || "";
  const args = {pipeline, stage, offset, limit: PAGE};
  if (state) args.state = state;
  const d = await api("stage", args);
  const view = h("div", {id: "stage", "data-pipeline": pipeline, "data-stage": stage});
  view.appendChild(h("h1", {}, h("a", {href: "#/"}, pipeline), " / ", stage, " ",
                     d.plan_state ? badge(d.plan_state) : ""));
  if (d.reason) view.appendChild(h("p", {class: "muted", id: "reason"}, d.reason));
  // Where a waiting job can go: who promises the stage, how busy, how alive.
  view.appendChild(h("p", {id: "promised"}, "Promised by: ",
    d.promised_by.length ? d.promised_by.map((a, i) => [i ? ", " : "",
      h("span", {"data-agent": a.name}, `${a.name} (${a.liveness}` +
        (a.running !== undefined ? `, running ${a.running} job${a.running === 1 ? "" : "s"}` : "") +
        `, capacity ${a.capacity} here)`)])
      : h("span", {class: "error"}, "no agent: its jobs wait until one promises it")));
  const link = (o, st) => {
    const q = new URLSearchParams();
    if (o) q.set("o", o);
    if (st) q.set("s", st);
    const qs = q.toString();
    return hashFor("stage", pipeline, stage) + (qs ? "?" + qs : "");
  };
  const total = Object.values(d.counts).reduce((a, b) => a + b, 0);
  view.appendChild(h("p", {class: "filters"},
      h("button", {class: state ? "" : "on", onclick: () => { location.hash = link(0, ""); }},
        `all ${total}`),
      STATES.map(k => h("button", {class: state === k ? "on" : "", "data-filter": k,
                                   onclick: () => { location.hash = link(0, k); }},
                        `${k} ${d.counts[k] || 0}`))));
  const rows = d.jobs.map(j => h("tr", {"data-job": j.id, "data-state": j.state},
      h("td", {class: "mono"}, h("a", {href: hashFor("job", j.id)}, short(j.id))),
      h("td", {}, j.shard || h("span", {class: "muted"}, "—")),
      h("td", {}, badge(j.state)),
      h("td", {}, j.agent || ""),
      h("td", {class: "num"}, j.epoch ?? ""),
      h("td", {class: "num"}, j.attempts + (j.failed_attempts ? ` (${j.failed_attempts} failed)` : "")),
      h("td", {class: "num"}, j.duration_ms !== undefined ? duration(j.duration_ms)
                              : j.running_ms !== undefined ? duration(j.running_ms) + "…" : ""),
      h("td", {class: "muted"}, j.error || (j.exit_status ? "exit " + j.exit_status : ""))));
  view.appendChild(h("table", {class: "jobs"},
      h("thead", {}, h("tr", {}, ["job", "shard", "state", "agent", "epoch", "attempts",
                                   "duration", ""].map(t => h("th", {}, t)))),
      h("tbody", {}, rows)));
  if (!d.jobs.length) view.appendChild(h("p", {class: "muted"}, "No job here."));
  const last = Math.min(d.total, offset + d.jobs.length);
  view.appendChild(h("p", {class: "pager"},
      h("button", {disabled: offset === 0, onclick: () => {
        location.hash = link(Math.max(0, offset - PAGE), state); }}, "← previous"),
      h("button", {disabled: last >= d.total, onclick: () => {
        location.hash = link(offset + PAGE, state); }}, "next →"),
      h("span", {class: "muted", id: "page"},
        d.total ? ` jobs ${offset + 1}–${last} of ${d.total}` : "")));
  return view;
}

// ---- #/job/ID ----

async function jobPage(id) {
  const j = await api("job", {id});
  const view = h("div", {id: "job", "data-job": j.id, "data-state": j.state});
  view.appendChild(h("h1", {}, "Job ", h("span", {class: "mono"}, short(j.id)), " ", badge(j.state)));
  const canonical = j.results.find(r => r.canonical);
  view.appendChild(h("dl", {class: "facts"},
      h("dt", {}, "stage"),
      h("dd", {}, h("a", {href: hashFor("stage", j.pipeline, j.stage)}, j.pipeline + "/" + j.stage)),
      h("dt", {}, "shard"), h("dd", {}, j.shard || "—"),
      h("dt", {}, "job id"), h("dd", {class: "mono"}, j.id),
      h("dt", {}, "stage digest"), h("dd", {class: "mono"}, j.stage_digest),
      h("dt", {}, "attempts"), h("dd", {}, `${j.attempts} (${j.failed_attempts} failed)`),
      j.executor ? [h("dt", {}, "executor"), h("dd", {}, j.executor.name || j.executor.id)] : null,
      j.duration_ms !== undefined ? [h("dt", {}, "duration"), h("dd", {}, duration(j.duration_ms))]
                                  : null,
      canonical ? [h("dt", {}, "lineage"),
                   h("dd", {}, h("a", {href: hashFor("lineage", j.id), id: "lineage-link"},
                                 "the steps behind this result"))] : null));
  if (j.inputs && Object.keys(j.inputs).length) {
    view.appendChild(h("h2", {}, "Inputs"));
    view.appendChild(h("table", {}, h("tbody", {}, Object.entries(j.inputs).map(([k, v]) =>
        h("tr", {}, h("td", {}, k), h("td", {class: "mono"}, v.digest), h("td", {}, v.kind),
          h("td", {class: "num"}, v.size_bytes + " bytes"))))));
  }
  view.appendChild(h("h2", {}, "Claims"));
  view.appendChild(h("table", {}, h("thead", {}, h("tr", {},
      ["agent", "epoch", "live", "released"].map(t => h("th", {}, t)))),
    h("tbody", {}, j.claims.map(c => h("tr", {}, h("td", {}, c.name || short(c.id)),
      h("td", {class: "num"}, c.epoch), h("td", {}, c.live ? "yes" : ""),
      h("td", {}, c.released ? "yes" : ""))))));
  view.appendChild(h("h2", {}, "Results"));
  if (!j.results.length) view.appendChild(h("p", {class: "muted"}, "None yet."));
  else {
    view.appendChild(h("table", {}, h("thead", {}, h("tr", {},
        ["agent", "epoch", "outcome", "exit", "started", "ended", "duration", "outputs"]
          .map(t => h("th", {}, t)))),
      h("tbody", {}, j.results.map(r => h("tr", {"data-result": r.statement},
        h("td", {}, r.name || short(r.id)), h("td", {class: "num"}, r.epoch),
        h("td", {}, r.ok ? (r.canonical ? "ok, canonical" : "ok") : h("span", {class: "error"},
                                                                    "failed" + (r.error ? ": " + r.error : ""))),
        h("td", {class: "num"}, r.exit_status), h("td", {}, when(r.started_unix_ms)),
        h("td", {}, when(r.ended_unix_ms)), h("td", {class: "num"}, duration(r.duration_ms)),
        h("td", {class: "mono"}, Object.entries(r.outputs).map(([k, v]) =>
          h("div", {}, k + " ", h("a", {href: hashFor("lineage", v)}, short(v))))))))));
  }
  view.appendChild(h("h2", {}, "Log tail"));
  const logs = j.logs || {};
  if (logs.stdout === undefined && logs.stderr === undefined) {
    view.appendChild(h("p", {class: "muted"}, "This agent holds no log of this job."));
  }
  for (const k of ["stdout", "stderr"]) {
    if (logs[k] === undefined) continue;
    view.appendChild(h("h3", {}, k));
    view.appendChild(h("pre", {id: "log-" + k}, logs[k] || "(empty)"));
  }
  return view;
}

// ---- #/lineage/REF ----

async function lineagePage(ref) {
  const d = await api("lineage", {ref});
  const view = h("div", {id: "lineage", "data-ref": ref});
  view.appendChild(h("h1", {}, "Lineage of ", h("span", {class: "mono"}, ref.length === 64 ? short(ref) : ref)));
  view.appendChild(h("p", {class: "muted"}, `${d.steps.length} steps back to the source versions; ` +
                                            `result ${d.artifacts.map(short).join(", ")}`));
  // Upstream first: by when each step was signed.
  const at = st => st.ended_unix_ms || st.signed_unix_ms || 0;
  d.steps.sort((a, b) => at(a) - at(b));
  const nodes = d.steps.map(st => ({id: st.id, step: st,
    label: st.kind === "source" ? st.source : st.stage + " " + (st.shard || "")}));
  const W = 210, H = 56;
  view.appendChild(drawGraph(nodes, d.edges, W, H, n => {
    const st = n.step;
    const title = st.kind === "source" ? `${st.source} v${st.version}`
                                       : st.stage + (st.shard ? ` [${st.shard}]` : "");
    const sub = st.kind === "source" ? "source · signed by " + (st.signer.name || short(st.signer.id))
                                     : "ran on " + (st.executor.name || short(st.executor.id));
    return s("g", {class: "node " + (st.kind === "source" ? "source" : "st-done link"),
                   "data-step": st.id, "data-kind": st.kind,
                   onclick: st.kind === "job" ? () => { location.hash = hashFor("job", st.job); }
                                              : undefined},
             s("rect", {width: W, height: H, class: "frame"}),
             s("text", {x: 10, y: 22}, title),
             s("text", {x: 10, y: 42, class: "sub"}, sub));
  }));
  const result = h("span", {id: "verify-result"});
  const button = h("button", {class: "verify", id: "verify", onclick: async () => {
    button.disabled = true;
    result.className = "muted";
    result.textContent = " checking…";
    try {
      const v = await api("verify", {ref});
      result.className = v.ok ? "ok" : "error";
      result.dataset.ok = String(v.ok);
      result.replaceChildren(
        ` ${v.ok ? "verified" : "FAILED"}: ${v.signatures} signatures, ${v.attestations} ` +
        `attestations, ${v.links} links over ${v.steps} steps`,
        v.problems.length ? h("ul", {}, v.problems.map(p => h("li", {}, p))) : "");
    } catch (e) {
      result.className = "error";
      result.textContent = " " + e.message;
    }
    button.disabled = false;
  }}, "Verify");
  view.appendChild(h("p", {}, button, result,
      h("span", {class: "muted"}, "  the checks of vow verify on these steps: signatures, attestations, links")));
  view.appendChild(h("h2", {}, "Steps"));
  view.appendChild(h("table", {class: "steps"},
    h("thead", {}, h("tr", {}, ["step", "what", "executor", "signer", "started", "ended",
                                 "inputs", "outputs", "attestation"].map(t => h("th", {}, t)))),
    h("tbody", {}, d.steps.map(st => h("tr", {class: "step-" + st.kind, "data-step": st.id},
      h("td", {class: "mono"}, st.kind === "job" ? h("a", {href: hashFor("job", st.job)}, st.id.replace(/^(.{10}).*(\/\d+)$/, "$1…$2"))
                                                  : st.id.replace(/^(.{10}).*(\/\d+)$/, "$1…$2")),
      h("td", {}, st.kind === "source" ? `source ${st.pipeline}/${st.source} v${st.version}`
                                       : `${st.pipeline}/${st.stage}` + (st.shard ? ` [${st.shard}]` : "") +
                                         ` epoch ${st.epoch}`),
      h("td", {}, st.executor ? (st.executor.name || short(st.executor.id)) : ""),
      h("td", {}, st.signer.name || short(st.signer.id)),
      h("td", {}, when(st.started_unix_ms || st.signed_unix_ms)),
      h("td", {}, when(st.ended_unix_ms)),
      h("td", {class: "mono"}, Object.entries(st.inputs || {}).map(([k, v]) => h("div", {}, k + " " + short(v)))),
      h("td", {class: "mono"}, st.kind === "source" ? short(st.output.digest)
        : Object.entries(st.outputs || {}).map(([k, v]) => h("div", {}, k + " " + short(v)))),
      h("td", {class: "mono"}, short(st.attestation) || h("span", {class: "muted"}, "none")))))));
  return view;
}

// ---- #/mesh ----

async function meshPage() {
  const d = await api("mesh");
  const view = h("div", {id: "mesh"});
  view.appendChild(h("h1", {}, "Mesh"));
  view.appendChild(h("h2", {}, "Agents"));
  const peers = new Map(d.peers.map(p => [p.id, p]));
  view.appendChild(h("table", {class: "agents"},
    h("thead", {}, h("tr", {}, ["agent", "id", "liveness", "running", "last heard", "endpoint",
                                 "statements"].map(t => h("th", {}, t)))),
    h("tbody", {}, d.agents.map(a => {
      const p = peers.get(a.id) || {};
      const liveness = a.self ? "self" : (a.liveness || (a.alive ? "alive" : "dead"));
      return h("tr", {"data-agent": a.name, "data-liveness": liveness},
        h("td", {}, a.name), h("td", {class: "mono"}, short(a.id)),
        h("td", {}, h("span", {class: "badge st-" + (liveness === "alive" || liveness === "self" ? "done"
                                                   : liveness === "suspected" ? "conflict" : "failed")}, liveness)),
        h("td", {class: "num"}, a.running + (a.capacity !== undefined ? " / " + a.capacity : "")),
        h("td", {class: "num"}, a.self ? "" : a.last_seen_ms < 0 ? "never" : duration(a.last_seen_ms) + " ago"),
        h("td", {class: "mono"}, p.endpoint || (a.self ? d.agent.advertise : "")),
        h("td", {class: "num"}, p.statements ?? ""));
    }))));
  view.appendChild(h("h2", {}, "Promises"));
  view.appendChild(h("table", {class: "promises"},
    h("thead", {}, h("tr", {}, ["agent", "runs", "provides"].map(t => h("th", {}, t)))),
    h("tbody", {}, d.promises.map(a => h("tr", {"data-agent": a.name},
      h("td", {}, a.name),
      h("td", {}, a.promises.map(p => h("div", {}, `${p.pipeline}/${p.stage} ×${p.capacity}`))),
      h("td", {}, a.sources.map(x => h("div", {}, `${x.pipeline}/${x.source}`))))))));
  view.appendChild(h("h2", {}, "Rejected messages"));
  const rejected = Object.entries(d.rejected);
  const total = rejected.reduce((a, [, n]) => a + n, 0);
  view.appendChild(h("p", {class: total ? "error" : "muted"},
    total ? `${total} messages dropped` : "None dropped."));
  view.appendChild(h("table", {class: "rejected"}, h("tbody", {}, rejected.map(([k, n]) =>
    h("tr", {"data-reason": k}, h("td", {}, k), h("td", {class: "num" + (n ? " error" : "")}, n))))));
  view.appendChild(h("p", {class: "muted"}, `Statements: ${d.statements.received} received, ` +
                                            `${d.statements.persisted} persisted, ${d.statements.duplicates} duplicates.`));
  return view;
}
