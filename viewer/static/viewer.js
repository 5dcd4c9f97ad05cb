// bft view: the page's script. Written for bft. Every text from the data goes in with textContent,
// never as HTML: documents are written by strangers (see viewer/server.py).
"use strict";

const PAGE = 50;
const SHOWN_ELSEWHERE = new Set(["document", "instruction", "response", "provenance", "flags"]);
const FILTERS = ["status", "stage", "reason", "flag", "min_score", "max_score", "q"];
let summary = null;
let charts = null;

const $ = (id) => document.getElementById(id);

function el(tag, text, attrs) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, value);
  return node;
}

function row(cells, attrs) {
  const tr = el("tr", null, attrs);
  for (const cell of cells) tr.appendChild(cell instanceof Node ? wrap(cell) : el("td", cell));
  return tr;
}

function wrap(node) {
  const td = el("td");
  td.appendChild(node);
  return td;
}

async function api(path, params) {
  const query = new URLSearchParams(params || {}).toString();
  const response = await fetch(`/api/${path}${query ? "?" + query : ""}`);
  const body = await response.json();
  if (!response.ok) throw new Error(body.error || response.statusText);
  return body;
}

function showError(error) {
  const box = $("error");
  box.textContent = String(error.message || error);
  box.hidden = false;
}

function route() {
  const [view, query] = (location.hash.slice(1) || "summary").split("?");
  return { view, params: new URLSearchParams(query || "") };
}

function go(view, params) {
  document.body.dataset.ready = ""; // at once: whoever waits for the page sees the next render, not this one
  location.hash = `${view}?${new URLSearchParams(params).toString()}`;
}

function show(view) {
  for (const name of ["summary", "records", "record"]) $(`${name}-view`).hidden = name !== view;
  $("error").hidden = true;
  document.body.dataset.view = view;
}

function partOf(params) {
  const [config, split] = (params.get("part") || defaultPart()).split("/");
  return { config, split: split || "train" };
}

function defaultPart() {
  const order = ["rewritten", "distilled", "curated", "sft", "backtranslated", "rejected"];
  const parts = summary.parts.filter((p) => p.rows > 0);
  for (const name of order) {
    const found = parts.find((p) => p.config === name);
    if (found) return `${found.config}/${found.split}`;
  }
  const first = parts[0] || summary.parts[0];
  return `${first.config}/${first.split}`;
}

// -- summary --------------------------------------------------------------------------------------

async function renderSummary() {
  show("summary");
  const stages = $("stages").tBodies[0];
  const reasons = $("reasons").tBodies[0];
  const parts = $("parts").tBodies[0];
  stages.replaceChildren();
  reasons.replaceChildren();
  parts.replaceChildren();
  for (const [name, s] of Object.entries(summary.stages)) {
    const retries = Object.values(s.retries_by_cause || {}).reduce((a, b) => a + b, 0);
    stages.appendChild(
      row([name, s.entered, s.kept, s.rejected, s.requests, retries, s.completion_tokens], { "data-stage": name })
    );
    for (const [reason, count] of Object.entries(s.rejected_by_reason || {})) {
      const where = rejectedRecords(name, reason);
      const link = where ? el("a", reason, { href: "#" }) : reason;
      if (where) {
        link.addEventListener("click", (event) => {
          event.preventDefault();
          go("records", where);
        });
      }
      reasons.appendChild(row([name, link, count], { "data-stage": name, "data-reason": reason }));
    }
  }
  if (!reasons.rows.length) reasons.appendChild(row(["-", "nothing was rejected", 0]));
  for (const p of summary.parts) {
    const link = el("a", p.config, { href: `#records?part=${encodeURIComponent(p.config + "/" + p.split)}` });
    parts.appendChild(row([link, p.split, p.rows], { "data-config": p.config }));
  }
  if (!charts) charts = await api("charts"); // computed once by the server, over every row group
  Charts.draw(charts);
  $("charts").setAttribute("aria-busy", "false");
  $("charts-status").hidden = true;
}

// Where the records a stage rejected for a reason are listed: a generate output's `rejected` config;
// in a built dataset, the candidates curation rejected (`backtranslated`, status rejected).
function rejectedRecords(stage, reason) {
  const has = (config) => summary.parts.some((p) => p.config === config && p.split === "train");
  if (has("rejected")) return { part: "rejected/train", stage, reason };
  if (stage === "curate" && has("backtranslated")) return { part: "backtranslated/train", status: "rejected", reason };
  return null;
}

// -- the list -------------------------------------------------------------------------------------

function fillSelect(select, values, chosen, label) {
  select.replaceChildren(el("option", label || "any", { value: "" }));
  for (const [value, count] of values) {
    const option = el("option", count === undefined ? value : `${value} (${count})`, { value });
    if (value === chosen) option.selected = true;
    select.appendChild(option);
  }
}

async function renderRecords(params, sample) {
  show("records");
  const { config, split } = partOf(params);
  const part = `${config}/${split}`;
  fillSelect($("part"), summary.parts.map((p) => [`${p.config}/${p.split}`, p.rows]), part, "config");
  $("part").firstChild.remove();
  const facets = await api("facets", { config, split });
  for (const name of ["status", "stage", "reason", "flag"]) {
    fillSelect($(name), Object.entries(facets[name] || {}), params.get(name) || "");
  }
  for (const name of ["min_score", "max_score", "q"]) $(name).value = params.get(name) || "";
  const query = { config, split };
  for (const name of FILTERS) if (params.get(name)) query[name] = params.get(name);
  const offset = Number(params.get("offset") || 0);
  const page = sample
    ? await api("sample", { ...query, n: 10 })
    : await api("rows", { ...query, offset, limit: PAGE });
  const count = $("count");
  count.dataset.total = page.total;
  count.textContent = page.sample
    ? `${page.rows.length} rows drawn at random from ${page.total} matching`
    : page.total
      ? `rows ${offset + 1}–${offset + page.rows.length} of ${page.total}`
      : "no rows match";
  const head = $("rows").tHead;
  const body = $("rows").tBodies[0];
  head.replaceChildren(row(["row", ...page.columns].map((c) => el("th", c))));
  body.replaceChildren();
  for (const r of page.rows) {
    const cells = [String(r._row)];
    for (const column of page.columns) {
      const value = r[column];
      cells.push(Array.isArray(value) ? value.join(", ") : value === null || value === undefined ? "" : value);
    }
    const tr = row(cells, { "data-row": r._row, class: "record-row" });
    tr.addEventListener("click", () => go("record", { ...Object.fromEntries(params), part, row: r._row }));
    body.appendChild(tr);
  }
  $("prev").disabled = sample || offset === 0;
  $("next").disabled = sample || offset + PAGE >= page.total;
  $("prev").onclick = () => go("records", { ...Object.fromEntries(params), part, offset: Math.max(0, offset - PAGE) });
  $("next").onclick = () => go("records", { ...Object.fromEntries(params), part, offset: offset + PAGE });
}

function filtersFromForm() {
  const params = { part: $("part").value };
  for (const name of FILTERS) if ($(name).value) params[name] = $(name).value;
  return params;
}

// -- one record -----------------------------------------------------------------------------------

async function renderRecord(params) {
  show("record");
  const { config, split } = partOf(params);
  const view = await api("record", { config, split, row: params.get("row") || 0 });
  const record = view.record;
  const back = new URLSearchParams(params);
  back.delete("row");
  $("back").href = `#records?${back.toString()}`;
  $("record-title").textContent = `${config}/${split} row ${view.row}: ${record.id ?? ""}`;
  $("document").textContent = record.document ?? "(no document in this config)";
  $("instruction").textContent = record.instruction ?? (record.prompt ? JSON.stringify(record.prompt, null, 1) : "");
  const response = $("response");
  response.replaceChildren();
  if (view.response_segments) {
    for (const [text, shared] of view.response_segments) {
      response.appendChild(shared ? el("mark", text) : document.createTextNode(text));
    }
  } else {
    response.textContent = record.response ?? (record.completion ? JSON.stringify(record.completion, null, 1) : "");
  }
  $("grounding").textContent =
    record.grounding !== null && record.grounding !== undefined
      ? `grounding ${record.grounding} (highlighted: words in a trigram the document also has)`
      : view.response_segments ? "(highlighted: words in a trigram the document also has)" : "";
  const outcome = $("outcome"); // headed by the stage that rejected the record, as the record says
  outcome.hidden = !view.rejected_by;
  outcome.textContent = view.rejected_by ? `Rejected at ${view.rejected_by}${record.reason ? ": " + record.reason : ""}` : "";
  outcome.dataset.stage = view.rejected_by || "";
  const score = [];
  if (record.score !== null && record.score !== undefined) score.push(`score ${record.score}`);
  if (record.expected_score !== null && record.expected_score !== undefined) score.push(`expected ${record.expected_score}`);
  const scored = score.length > 0;
  if (scored && record.status && !view.rejected_by) score.push(record.status);
  $("score").textContent = score.join(" · ");
  const curation = $("curation");
  curation.replaceChildren();
  for (const reply of view.curation) {
    curation.appendChild(el("pre", reply.raw_output || "", { class: "text reply" }));
  }
  $("curation-block").hidden = !view.curation.length && !scored;
  const flags = $("flags");
  flags.replaceChildren();
  for (const flag of record.flags || []) flags.appendChild(el("li", flag));
  if (!(record.flags || []).length) flags.appendChild(el("li", "none"));
  const provenance = record.provenance || [];
  const columns = ["stage", "model_id", "server", "mode", "template", "sampling", "finish_reason", "parse_status", "prompt_tokens", "completion_tokens", "attempts"];
  $("provenance").tHead.replaceChildren(row(columns.map((c) => el("th", c))));
  $("provenance").tBodies[0].replaceChildren(...provenance.map((p) => row(columns.map((c) => p[c] ?? ""))));
  const fields = $("fields").tBodies[0];
  fields.replaceChildren();
  for (const [key, value] of Object.entries(record)) {
    if (SHOWN_ELSEWHERE.has(key)) continue;
    fields.appendChild(row([el("th", key), typeof value === "object" && value !== null ? JSON.stringify(value) : String(value ?? "")]));
  }
}

// -- wiring ---------------------------------------------------------------------------------------

async function render(sample) {
  try {
    if (!summary) {
      summary = await api("summary");
      $("folder").textContent = summary.folder;
    }
    const { view, params } = route();
    if (view === "records") await renderRecords(params, sample);
    else if (view === "record") await renderRecord(params);
    else await renderSummary();
  } catch (error) {
    showError(error);
  }
  document.body.dataset.route = location.hash;
  document.body.dataset.ready = "yes";
}

window.addEventListener("hashchange", () => {
  document.body.dataset.ready = "";
  render(false);
});

window.addEventListener("DOMContentLoaded", () => {
  $("filters").addEventListener("submit", (event) => {
    event.preventDefault();
    go("records", filtersFromForm());
  });
  $("part").addEventListener("change", () => go("records", { part: $("part").value }));
  $("random").addEventListener("click", () => {
    document.body.dataset.ready = "";
    const params = filtersFromForm();
    history.replaceState(null, "", `#records?${new URLSearchParams(params).toString()}`);
    render(true);
  });
  render(false);
});
