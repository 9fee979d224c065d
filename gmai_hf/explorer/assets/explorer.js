// GMAI-MMBench explorer: plain JavaScript over the document embedded in the page (docs/explorer.md).
"use strict";
(function () {
  const data = JSON.parse(document.getElementById("explorer-data").textContent);
  const NONE = "(none)";
  const PAGE = 100;
  const Z = 1.959963984540054;
  // viridis, 9 stops: colour-blind safe and readable in greyscale
  const VIRIDIS = ["#440154", "#472c7a", "#3b518b", "#2c718e", "#21908d", "#27ad81", "#5cc863", "#aadc32", "#fde725"];
  const state = { view: data.views[0], sort: "accuracy", keywords: [], which: "all", wrong: "", node: [], expanded: new Set(), shown: PAGE };
  const $ = (id) => document.getElementById(id);
  const esc = (s) => String(s === null || s === undefined ? "" : s).replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" })[c]);
  const val = (v) => (v === null || v === undefined || v === "" ? NONE : String(v));
  const pct = (x) => (x === null || x === undefined ? "—" : (100 * x).toFixed(1) + "%");
  const runs = data.runs;

  function wilson(correct, total) {  // as gmai_hf/scoring.py wilson_interval
    const p = correct / total, d = 1 + Z * Z / total;
    const centre = (p + Z * Z / (2 * total)) / d;
    const half = Z * Math.sqrt(p * (1 - p) / total + Z * Z / (4 * total * total)) / d;
    return [correct === 0 ? 0 : centre - half, correct === total ? 1 : centre + half];
  }
  function colour(acc) {
    const i = Math.min(VIRIDIS.length - 1, Math.floor(acc * VIRIDIS.length));
    return `background:${VIRIDIS[i]};color:${i < 5 ? "#fff" : "#000"}`;
  }
  // per question, lower-cased text the keywords search (question + options), as --keywords does
  for (const q of data.questions) {
    q.text = [q.question || "", ...Object.values(q.options || {})].join("\n").toLowerCase();
  }

  function passes(q) {
    if (state.keywords.length && !state.keywords.some((k) => q.text.includes(k))) return false;
    const rs = q.runs.filter((r) => r);
    if (state.which === "disagree" && new Set(rs.map((r) => r[1])).size < 2) return false;
    if (state.which === "judge" && !rs.some((r) => r[2] === "judge")) return false;
    if (state.which === "unmatched" && !rs.some((r) => r[1] === null)) return false;
    if (state.wrong !== "") { const r = q.runs[+state.wrong]; if (!r || r[3] !== false) return false; }
    return true;
  }
  const path = (q) => [val(q[state.view]), val(q.modality), val(q.category)];
  const inNode = (q) => state.node.every((v, i) => path(q)[i] === v);

  function stats(qs) {  // per run: correct, total, accuracy, ci95; unmatched answers count as wrong
    const out = runs.map(() => ({ correct: 0, total: 0 }));
    let chance = 0, withChance = 0;
    for (const q of qs) {
      q.runs.forEach((r, i) => { if (r) { out[i].total += 1; if (r[3] === true) out[i].correct += 1; } });
      if (q.chance !== null && q.chance !== undefined) { chance += q.chance; withChance += 1; }
    }
    for (const s of out) {
      s.accuracy = data.has_answers && s.total ? s.correct / s.total : null;
      s.ci = data.has_answers && s.total ? wilson(s.correct, s.total) : null;
    }
    return { runs: out, n: qs.length, chance: withChance === qs.length && qs.length ? chance / withChance : null };
  }

  function group(qs, level) {
    const groups = new Map();
    for (const q of qs) { const k = path(q)[level]; if (!groups.has(k)) groups.set(k, []); groups.get(k).push(q); }
    return groups;
  }
  function comparisonNode(keys) {
    const c = data.comparison;
    if (!c || state.keywords.length || state.which !== "all" || state.wrong !== "") return null;
    let node = { children: c.tree[state.view] };
    for (const k of keys) { node = node && node.children ? node.children[k] : null; }
    return node || null;
  }
  function sortKey(s) {
    if (state.sort === "size") return -s.n;
    if (state.sort === "difference") return -(runs.length > 1 && s.runs[0].accuracy !== null ? Math.abs(s.runs[0].accuracy - s.runs[1].accuracy) : 0);
    return s.runs[0].accuracy === null ? 0 : s.runs[0].accuracy;
  }

  function header() {
    let h = `<tr><th>${esc(state.view.replace(/_/g, " "))} › modality › label</th><th>n</th>`;
    for (const r of runs) h += `<th>${esc(r.label)}</th><th class="ci">95% CI</th>`;
    h += "<th>chance</th>";
    if (runs.length > 1) h += `<th>${esc(runs[0].label)} − ${esc(runs[1].label)}</th>`;
    if (data.comparison) h += "<th>p (adjusted)</th>";
    return h + "</tr>";
  }
  function row(keys, s, level, expandable) {
    const id = JSON.stringify(keys);
    const selected = JSON.stringify(state.node) === id ? " selected" : "";
    let h = `<tr class="level-${level}${selected}" data-node='${esc(id)}'><td>`;
    h += expandable ? `<span class="toggle">${state.expanded.has(id) ? "▾" : "▸"}</span>` : '<span class="toggle"></span>';
    h += `<span class="node-name">${esc(keys[keys.length - 1])}</span></td><td>${s.n}</td>`;
    for (const r of s.runs) {
      if (r.accuracy === null) { h += `<td>n=${r.total}</td><td></td>`; continue; }
      h += `<td><span class="acc" style="${colour(r.accuracy)}">&nbsp;${pct(r.accuracy)}&nbsp;</span></td>`;
      h += `<td class="ci">${pct(r.ci[0])}–${pct(r.ci[1])}</td>`;
    }
    h += `<td>${pct(s.chance)}</td>`;
    if (runs.length > 1) {
      const a = s.runs[0].accuracy, b = s.runs[1].accuracy;
      h += `<td>${a === null || b === null ? "—" : ((a - b) * 100 >= 0 ? "+" : "") + ((a - b) * 100).toFixed(1)}</td>`;
    }
    if (data.comparison) {
      const c = comparisonNode(keys);
      h += c && c.p_adjusted !== null && c.p_adjusted !== undefined
        ? `<td class="${c.significant ? "sig" : "muted"}">${c.p_adjusted.toPrecision(2)}${c.significant ? " *" : ""}</td>` : "<td>—</td>";
    }
    return h + "</tr>";
  }
  function treeRows(qs, keys, level) {
    const entries = [...group(qs, level)].map(([k, g]) => [k, g, stats(g)]);
    entries.sort((x, y) => sortKey(x[2]) - sortKey(y[2]) || (x[0] < y[0] ? -1 : 1));
    let h = "";
    for (const [k, g, s] of entries) {
      const here = [...keys, k];
      h += row(here, s, level, level < 2);
      if (level < 2 && state.expanded.has(JSON.stringify(here))) h += treeRows(g, here, level + 1);
    }
    return h;
  }

  function answerCell(r, q) {
    if (!r) return "<td class=muted>not asked</td>";
    const how = r[2] || "unmatched";
    const mark = r[3] === true ? '<span class="hit">hit</span>' : r[3] === false ? '<span class="miss">miss</span>' : "";
    return `<td><div>${esc(r[0])}</div><div class="muted">→ ${esc(r[1] || "none")} (${esc(how)}) ${mark}</div></td>`;
  }
  function renderQuestions(qs) {
    $("question-count").textContent = `(${qs.length})`;
    let h = "";
    for (const q of qs.slice(0, state.shown)) {
      const img = q.thumb ? `<img loading="lazy" src="${esc(q.thumb)}" data-full="${esc(q.full || q.thumb)}" alt="question ${q.index}">` : "";
      const options = Object.entries(q.options || {}).map(([k, v]) => `<span class="${k === q.answer ? "correct" : ""}">${esc(k)}. ${esc(v)}</span>`).join("");
      let answers = "<table><tr>" + runs.map((r) => `<th>${esc(r.label)}</th>`).join("") + "</tr><tr>";
      answers += q.runs.map((r) => answerCell(r, q)).join("") + "</tr></table>";
      h += `<li data-index="${q.index}">${img}<div><div class="muted">#${q.index} · ${esc(q.modality)} · ${esc(q.category)}</div>`;
      h += `<div class="question">${esc(q.question === null || q.question === undefined ? "(question text not available)" : q.question)}</div>`;
      h += `<div class="options">${options}</div>${data.has_answers ? `<div>correct answer: <b>${esc(q.answer)}</b></div>` : ""}${answers}</div></li>`;
    }
    $("question-list").innerHTML = h;
    $("more").style.display = qs.length > state.shown ? "" : "none";
    let d = "";
    if (!data.has_answers) {  // test split: what the runs answered, and how often
      d = runs.map((r, i) => {
        const counts = {};
        for (const q of qs) { const a = q.runs[i]; if (a) { const k = a[1] || "none"; counts[k] = (counts[k] || 0) + 1; } }
        return `<div>${esc(r.label)}: ` + Object.keys(counts).sort().map((k) => `${esc(k)} ${counts[k]} (${pct(counts[k] / qs.length)})`).join(", ") + "</div>";
      }).join("");
    }
    $("distribution").innerHTML = d;
  }

  function render() {
    const qs = data.questions.filter(passes);
    $("tree").tHead.innerHTML = header();
    $("tree").tBodies[0].innerHTML = treeRows(qs, [], 0);
    const selected = qs.filter(inNode);
    const s = stats(selected);
    $("summary").innerHTML = `${selected.length} questions` + (state.node.length ? ` in ${esc(state.node.join(" › "))}` : "") + ": " +
      runs.map((r, i) => `<span data-run="${i}">${esc(r.label)} ${s.runs[i].accuracy === null ? "n=" + s.runs[i].total : `${pct(s.runs[i].accuracy)} (${s.runs[i].correct}/${s.runs[i].total})`}</span>`).join("; ");
    $("node-filter").innerHTML = state.node.length ? `node: ${esc(state.node.join(" › "))} <button id="clear-node" type="button">all</button>` : "";
    renderQuestions(selected);
  }

  function honesty() {
    const md = (s) => esc(s).replace(/\*\*(.+?)\*\*/g, "<strong>$1</strong>");
    let h = "", table = [];
    const flush = () => { if (table.length) { h += "<table>" + table.filter((r) => !/^\|[\s:|-]+\|$/.test(r)).map((r, i) => "<tr>" + r.slice(1, -1).split(" | ").map((c) => `<${i ? "td" : "th"}>${md(c.trim())}</${i ? "td" : "th"}>`).join("") + "</tr>").join("") + "</table>"; table = []; } };
    for (const line of data.honesty) {
      if (line.startsWith("|")) { table.push(line); continue; }
      flush();
      if (line.trim()) h += `<p>${md(line.replace(/^> ?/, ""))}</p>`;
    }
    flush();
    h += data.notes.map((n) => `<p class="muted">${esc(n)}</p>`).join("");
    $("honesty").innerHTML = h;
  }

  function setup() {
    honesty();
    $("view").innerHTML = data.views.map((v) => `<option value="${esc(v)}">${esc(v.replace(/_/g, " "))}</option>`).join("");
    $("wrong").innerHTML += runs.map((r, i) => `<option value="${i}">${esc(r.label)}</option>`).join("");
    if (!data.has_answers) { $("wrong").disabled = true; }
    $("view").onchange = (e) => { state.view = e.target.value; state.node = []; state.expanded.clear(); render(); };
    $("sort").onchange = (e) => { state.sort = e.target.value; render(); };
    $("which").onchange = (e) => { state.which = e.target.value; render(); };
    $("wrong").onchange = (e) => { state.wrong = e.target.value; render(); };
    $("keywords").oninput = (e) => { state.keywords = e.target.value.toLowerCase().split(/\s+/).filter(Boolean); state.shown = PAGE; render(); };
    $("more").onclick = () => { state.shown += PAGE; render(); };
    document.addEventListener("click", (e) => {
      const t = e.target;
      if (t.id === "clear-node") { state.node = []; render(); return; }
      const tr = t.closest("tr[data-node]");
      if (tr && t.classList.contains("toggle")) {
        const id = tr.dataset.node;
        if (state.expanded.has(id)) state.expanded.delete(id); else state.expanded.add(id);
        render();
      } else if (tr && t.classList.contains("node-name")) {
        state.node = JSON.parse(tr.dataset.node); state.expanded.add(tr.dataset.node); state.shown = PAGE; render();
      } else if (t.tagName === "IMG" && t.dataset.full) {
        $("viewer-image").src = t.dataset.full; $("viewer").showModal();
      }
    });
    render();
    window.explorerReady = true;
  }
  setup();
})();
