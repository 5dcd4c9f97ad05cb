// bft view: the summary's charts, drawn as inline SVG from /api/charts (bins and counts the server
// computed; viewer/charts.py). Written for bft. Every chart is a <figure> with a caption, an SVG
// with a <title> and a <desc> that state its numbers, a <title> per bar, and the numbers as a table.
// Text from the data goes in with textContent; no style attribute (the page's CSP allows none).
"use strict";

const Charts = (() => {
  const SVG = "http://www.w3.org/2000/svg";
  const WIDTH = 460;
  let drawn = 0; // numbers the ids of each chart's <title> and <desc>

  function svg(tag, attrs, text) {
    const node = document.createElementNS(SVG, tag);
    for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, String(value));
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function html(tag, text, attrs) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, String(value));
    return node;
  }

  function number(value) {
    return Number(value).toLocaleString("en-US");
  }

  function plural(count, word) {
    return `${number(count)} ${word}${count === 1 ? "" : "s"}`;
  }

  // A figure: caption, then (when there is something to draw) the SVG and its numbers as a table.
  function figure(container, { id, kind, title, note, attrs }) {
    const node = html("figure", null, { id, class: "chart", "data-chart": kind, ...(attrs || {}) });
    const caption = html("figcaption", title);
    if (note) caption.appendChild(html("small", ` ${note}`));
    node.appendChild(caption);
    container.appendChild(node);
    return node;
  }

  function empty(node, text) {
    node.appendChild(html("p", text, { class: "chart-empty" }));
  }

  function canvas(node, height, label, description) {
    drawn += 1;
    const picture = svg("svg", {
      viewBox: `0 0 ${WIDTH} ${height}`,
      width: WIDTH,
      height,
      role: "img",
      "aria-labelledby": `chart-title-${drawn} chart-desc-${drawn}`,
    });
    picture.appendChild(svg("title", { id: `chart-title-${drawn}` }, label));
    picture.appendChild(svg("desc", { id: `chart-desc-${drawn}` }, description));
    node.appendChild(picture);
    return picture;
  }

  function table(node, headers, rows) {
    const details = html("details");
    details.appendChild(html("summary", "the numbers"));
    const grid = html("table", null, { class: "chart-data" });
    const head = html("tr");
    for (const name of headers) head.appendChild(html("th", name));
    grid.appendChild(html("thead")).appendChild(head);
    const body = grid.appendChild(html("tbody"));
    for (const cells of rows) {
      const tr = body.appendChild(html("tr"));
      for (const cell of cells) tr.appendChild(html("td", cell));
    }
    details.appendChild(grid);
    node.appendChild(details);
  }

  // Horizontal bars, one row each: [{label, parts: [{value, cls}], text, title, attrs}], scaled to `max`.
  function rows(node, items, max, label, description) {
    const labelWidth = 190, valueWidth = 110, height = 24;
    const picture = canvas(node, items.length * height + 6, label, description);
    const span = WIDTH - labelWidth - valueWidth;
    items.forEach((item, index) => {
      const y = 3 + index * height;
      const group = svg("g", { class: "bar", ...item.attrs });
      group.appendChild(svg("title", {}, item.title));
      group.appendChild(svg("text", { x: labelWidth - 8, y: y + 16, "text-anchor": "end", class: "bar-label" }, item.label));
      for (const part of item.parts) {
        const width = max > 0 ? Math.max(part.value > 0 ? 1 : 0, (span * part.value) / max) : 0;
        group.appendChild(svg("rect", { x: labelWidth, y: y + 3, width: width.toFixed(1), height: height - 6, class: part.cls }));
      }
      const widest = Math.max(...item.parts.map((p) => p.value));
      const end = labelWidth + (max > 0 ? (span * widest) / max : 0);
      group.appendChild(svg("text", { x: end + 6, y: y + 16, class: "bar-value" }, item.text));
      picture.appendChild(group);
    });
  }

  // Columns, one per bin: [{label, count, low, high}]; labels thinned out so that they never overlap.
  function columns(node, bins, label, description, unit) {
    const max = Math.max(1, ...bins.map((b) => b.count));
    const left = 12 + 6.5 * number(max).length, right = 26, top = 16, bottom = 34, height = 190;
    const picture = canvas(node, height, label, description);
    const plot = WIDTH - left - right, tall = height - top - bottom;
    const step = plot / bins.length;
    const widest = Math.max(...bins.map((b) => b.label.length)) * 6.5 + 6;
    const every = Math.max(1, Math.ceil(widest / step));
    picture.appendChild(svg("line", { x1: left, y1: top + tall, x2: WIDTH - right, y2: top + tall, class: "axis" }));
    picture.appendChild(svg("text", { x: left - 6, y: top + 4, "text-anchor": "end", class: "tick" }, number(max)));
    picture.appendChild(svg("text", { x: left - 6, y: top + tall, "text-anchor": "end", class: "tick" }, 0));
    bins.forEach((bin, index) => {
      const x = left + index * step;
      const h = (tall * bin.count) / max;
      const attrs = { class: "bar", "data-label": bin.label, "data-value": bin.count };
      if (bin.low !== null && bin.low !== undefined) attrs["data-low"] = bin.low;
      if (bin.high !== null && bin.high !== undefined) attrs["data-high"] = bin.high;
      const group = svg("g", attrs);
      group.appendChild(svg("title", {}, `${bin.label}${unit ? " " + unit : ""}: ${bin.count}`));
      group.appendChild(svg("rect", { x: (x + 1).toFixed(1), y: (top + tall - h).toFixed(1), width: Math.max(1, step - 2).toFixed(1), height: h.toFixed(1), class: "bar-fill" }));
      if (bin.count > 0 && step >= 6.5 * number(bin.count).length + 2) { // a count is written where it fits
        group.appendChild(svg("text", { x: (x + step / 2).toFixed(1), y: (top + tall - h - 3).toFixed(1), "text-anchor": "middle", class: "bar-count" }, number(bin.count)));
      }
      if (index % every === 0) {
        group.appendChild(svg("text", { x: (x + step / 2).toFixed(1), y: top + tall + 14, "text-anchor": "middle", class: "tick" }, bin.label));
      }
      picture.appendChild(group);
    });
    if (unit) picture.appendChild(svg("text", { x: left + plot / 2, y: height - 4, "text-anchor": "middle", class: "tick" }, unit));
  }

  function binList(bins) {
    return bins.map((b) => `${b.label}: ${b.count}`).join(", ");
  }

  // -- the charts ----------------------------------------------------------------------------------

  function funnel(container, stages) {
    const node = figure(container, { id: "chart-funnel", kind: "funnel", title: "Stage funnel", note: "(documents entering each stage and kept by it; stats.json)" });
    if (!stages.length) return empty(node, "No stats.json in this folder: the run's counters are not known.");
    const described = stages.map((s) => `${s.stage}: ${s.entered} entered, ${s.kept} kept, ${s.rejected} rejected`);
    const items = stages.map((s, index) => ({
      label: s.stage,
      parts: [{ value: s.entered, cls: "bar-entered" }, { value: s.kept, cls: "bar-kept" }],
      text: `${number(s.kept)} of ${number(s.entered)}`,
      title: described[index],
      attrs: { "data-stage": s.stage, "data-entered": s.entered, "data-kept": s.kept, "data-rejected": s.rejected },
    }));
    rows(node, items, Math.max(...stages.map((s) => s.entered)), "Stage funnel", described.join("; "));
    table(node, ["stage", "entered", "kept", "rejected"], stages.map((s) => [s.stage, s.entered, s.kept, s.rejected]));
  }

  function reasons(container, found, counted) {
    const node = figure(container, { id: "chart-reasons", kind: "reasons", title: "Rejected, by reason", note: "(documents; stats.json)" });
    if (!counted) return empty(node, "No stats.json in this folder: the run's counters are not known.");
    if (!found.length) return empty(node, "Nothing was rejected.");
    const described = found.map((r) => `${r.stage} ${r.reason}: ${r.count}`);
    const items = found.map((r, index) => ({
      label: `${r.stage} · ${r.reason}`,
      parts: [{ value: r.count, cls: "bar-rejected" }],
      text: number(r.count),
      title: described[index],
      attrs: { "data-stage": r.stage, "data-reason": r.reason, "data-value": r.count },
    }));
    rows(node, items, Math.max(...found.map((r) => r.count)), "Rejected documents by stage and reason", described.join("; "));
    table(node, ["stage", "reason", "documents"], found.map((r) => [r.stage, r.reason, r.count]));
  }

  function histogram(container, { id, kind, title, note, summary, unit, attrs, missing }) {
    const node = figure(container, { id, kind, title, note, attrs });
    if (!summary || !summary.bins || !summary.bins.length) return empty(node, missing);
    const facts = summary.mean !== undefined ? ` (${plural(summary.count, "row")}, mean ${summary.mean}, median ${summary.median})` : "";
    columns(node, summary.bins, `${title}${facts}`, `${title}${facts}: ${binList(summary.bins)}`, unit);
    table(node, [unit || "value", "count"], summary.bins.map((b) => [b.label, b.count]));
  }

  function scores(container, found) {
    const parsed = found.parsed || {};
    const counted = parsed.unparsed ? `, ${parsed.unparsed} unparsed` : "";
    histogram(container, {
      id: "chart-scores", kind: "scores", title: "Curation scores", summary: parsed,
      note: `(the score each candidate was given; ${plural(parsed.count || 0, "candidate")}${counted})`,
      missing: "No curation scores in this folder.",
    });
  }

  function expected(container, found) {
    const summary = found.expected || {};
    if (!summary.count) return;
    histogram(container, {
      id: "chart-expected", kind: "expected", title: "Expected scores", summary,
      note: `(sum of p(k)·k from the score token's probabilities; ${plural(summary.count, "candidate")})`,
      missing: "",
    });
  }

  function lengths(container, found) {
    const names = { instruction: "instruction", response: "response", prompt: "prompt", completion: "completion" };
    let index = 0;
    for (const entry of found.configs) {
      for (const [field, summary] of Object.entries(entry.fields)) {
        index += 1;
        histogram(container, {
          id: `chart-length-${index}`,
          kind: "length",
          attrs: { "data-config": entry.config, "data-field": field },
          title: `${entry.config}: ${names[field] || field} length`,
          note: summary.count ? `(${found.unit}; ${plural(summary.count, "row")}, median ${summary.median})` : "",
          summary,
          unit: found.unit,
          missing: "No rows with this field.",
        });
      }
    }
    if (!index) empty(container, "No config with instructions and responses here.");
  }

  function draw(data) {
    const places = ["funnel-chart", "reasons-chart", "scores-chart", "expected-chart", "length-charts"];
    for (const id of places) document.getElementById(id).replaceChildren();
    drawn = 0;
    funnel(document.getElementById("funnel-chart"), data.funnel);
    reasons(document.getElementById("reasons-chart"), data.reasons, data.funnel.length > 0);
    scores(document.getElementById("scores-chart"), data.scores);
    expected(document.getElementById("expected-chart"), data.scores);
    lengths(document.getElementById("length-charts"), data.lengths);
    document.getElementById("lengths-note").textContent =
      `(${data.lengths.unit} per row, as str.split counts them; every config on the same bins, the longest 1% in the last)`;
  }

  return { draw };
})();
